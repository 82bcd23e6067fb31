"""The release: tests/release/build on a temporary copy of the tree (the checkout is never
touched), the tarball installed into a clean collections path and run from there, and the
ansible-core range meta/runtime.yml claims (tests/release/core_range, cached by tree and venv).

The collection is built once per test module; every test that installs it uses its own clean
collections path, and ANSIBLE_COLLECTIONS_PATH holds only that path and the venv's site-packages
(the dependency collections of the `ansible` package), with sys.path scanning off."""

import glob
import json
import os
import subprocess
import sys
import tarfile

import pytest

from .conftest import REPO, lab_lock, skip_or_fail
from .k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import

sys.path.insert(0, os.path.join(REPO, "tests", "release"))
import releaselib

# What a tarball may never hold: the test bed, the venv, build output, caches, the link back to
# the checkout.
NEVER = (".venv/", ".collections/", "tests/testbed/", "build/", "bench/", "molecule/", ".tmp/", ".ansible/")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """{tree, version, tarball, seconds, checkout_before}: tests/release/build in a copy."""
    before = releaselib.tree_hash()
    work = tmp_path_factory.mktemp("release")
    tree = releaselib.copy_tree(str(work / "tree"))
    version = releaselib.next_version(tree)
    tarball, seconds = releaselib.build(tree, version, str(work / "dist"))
    return {"tree": tree, "version": version, "tarball": tarball, "seconds": seconds, "before": before}


def members(tarball):
    with tarfile.open(tarball) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_build_leaves_the_checkout_alone_and_releases_the_version(release):
    assert releaselib.tree_hash() == release["before"], "the release steps changed the checkout"
    assert os.path.basename(release["tarball"]) == f"strata-ops-{release['version']}.tar.gz"
    with open(os.path.join(release["tree"], "CHANGELOG.rst")) as handle:
        changelog = handle.read()
    assert f"v{release['version']}\n" in changelog, changelog[:2000]
    # antsibull-changelog moved every fragment into changelog.yaml (keep_fragments: false)
    assert not glob.glob(os.path.join(release["tree"], "changelogs", "fragments", "*.yml"))
    assert release["seconds"] < 120, release["seconds"]


def test_tarball_holds_what_ships_and_nothing_else(release):
    names = members(release["tarball"])
    for required in (
        "MANIFEST.json",
        "FILES.json",
        "COPYING",
        "README.md",
        "CHANGELOG.rst",
        "meta/runtime.yml",
    ):
        assert required in names, required
    for prefix in (
        "plugins/modules/",
        "plugins/module_utils/",
        "roles/health_check/",
        "playbooks/",
        "tests/unit/",
    ):
        assert any(n.startswith(prefix) for n in names), prefix
    bad = [n for n in names if n.startswith(NEVER) or "__pycache__" in n or n.endswith((".pyc", ".tar.gz"))]
    assert not bad, bad
    assert "changelogs/.plugin-cache.yaml" not in names
    with tarfile.open(release["tarball"]) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))["collection_info"]
        copying = tar.extractfile("COPYING").read().decode()
    assert manifest["version"] == release["version"]
    assert manifest["license_file"] == "COPYING"
    assert "GNU GENERAL PUBLIC LICENSE" in copying and "Version 3, 29 June 2007" in copying
    for key in ("repository", "documentation", "homepage", "issues"):
        assert manifest[key].startswith("https://example.invalid/strata/ops"), (key, manifest[key])
    assert os.path.getsize(release["tarball"]) < 3 * 1024 * 1024


@pytest.fixture
def installed(release, tmp_path):
    """(runner, installed collection dir) for a fresh clean collections path."""
    clean = str(tmp_path / "collections")
    path = releaselib.install(release["tarball"], clean)
    runner = releaselib.Runner(releaselib.VENV_BIN, clean, str(tmp_path / "run"))
    releaselib.assert_resolves_to(runner, path, release["version"])
    return runner, path


def test_installed_copy_runs_a_module_on_localhost(installed):
    runner, path = installed
    releaselib.localhost_flow(runner, path)


@pytest.mark.needs("k8s")
@pytest.mark.needs("docker")
def test_installed_copy_runs_health_check_by_fqcn_on_the_lab(installed, lab_cluster, tmp_path):
    runner, path = installed
    report_dir = tmp_path / "reports"
    report_dir.mkdir()
    with lab_lock():
        proc = releaselib.lab_flow(runner, path, str(report_dir))
    assert "changed=0" in proc.stdout.split("PLAY RECAP")[-1], proc.stdout[-2000:]


def test_core_range_passes_on_the_claimed_oldest_and_newest_core():
    """tests/release/core_range: cached venvs (keyed by their pinned set) and a record per core and
    tree, so an unchanged tree costs seconds; a cold run builds two venvs from the index."""
    script = os.path.join(REPO, "tests", "release", "core_range")
    lab = "yes" if os.environ.get("CI") == "true" else "auto"
    proc = subprocess.run(
        [sys.executable, script, "--lab", lab], capture_output=True, text=True, timeout=3600, check=False
    )
    if proc.returncode == 2:
        skip_or_fail(f"core_range could not run: {proc.stderr[-2000:]}")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "failed: none" in proc.stdout, proc.stdout[-3000:]
