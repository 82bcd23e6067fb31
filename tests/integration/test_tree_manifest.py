"""strata.ops.tree_manifest and playbooks/transfer_verify.yml on real trees: here, and on the lab
hosts strata-lab-1 (the source) and strata-lab-2 (the copy), each hashing its own tree.

The tree has what a data set copied with rsync -aH holds: many small files, a larger one, an empty
and a sparse file, names with spaces and non-ASCII letters, a symlink and a hard link.
"""

import json
import os
import subprocess
import uuid

import pytest

from .conftest import run_module
from .k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .k8s_fixtures import recap, run_playbook


def make_tree(root):
    os.makedirs(os.path.join(root, "frames", "día 1"))
    for index in range(40):
        with open(os.path.join(root, "frames", f"f{index:03d}.bin"), "wb") as handle:
            handle.write(os.urandom(1000 + index * 37))
    with open(os.path.join(root, "frames", "día 1", "clip with spaces.mp4"), "wb") as handle:
        handle.write(os.urandom(3 << 20))
    open(os.path.join(root, "empty"), "wb").close()
    with open(os.path.join(root, "sparse.img"), "wb") as handle:
        handle.truncate(64 << 20)
        handle.seek(32 << 20)
        handle.write(b"middle")
    os.symlink("frames/f000.bin", os.path.join(root, "latest"))
    os.link(os.path.join(root, "frames", "f001.bin"), os.path.join(root, "hardlink.bin"))


def test_manifest_of_a_tree_then_only_changed_files_are_hashed_again(tmp_path):
    root = tmp_path / "tree"
    make_tree(str(root))
    kept = tmp_path / "kept" / "manifest.json"
    args = {"path": str(root), "manifest_path": str(kept), "workers": 4}
    first = run_module("tree_manifest", args)
    assert first.get("failed") is not True, first
    entries = first["manifest"]["entries"]
    assert entries["latest"] == {"type": "link", "target": "frames/f000.bin"}
    assert entries["frames/día 1"] == {"type": "dir"}
    assert entries["empty"]["size"] == 0 and entries["sparse.img"]["size"] == 64 << 20
    assert entries["hardlink.bin"]["hash"] == entries["frames/f001.bin"]["hash"]
    assert first["stats"]["files"] == 44 and first["stats"]["hashed"] == 44 and first["stats"]["reused"] == 0
    assert first["changed"] is False and oct(kept.stat().st_mode & 0o777) == "0o600"

    kept_before = (kept.read_bytes(), kept.stat().st_mtime_ns)
    again = run_module("tree_manifest", args)
    assert again["stats"]["hashed"] == 0 and again["stats"]["reused"] == 44
    assert again["manifest"]["entries"] == entries
    # Nothing changed: the kept manifest is not written again (no fsync on a no-op verify).
    assert (kept.read_bytes(), kept.stat().st_mtime_ns) == kept_before

    (root / "frames" / "f002.bin").write_bytes(b"rewritten")
    third = run_module("tree_manifest", args)
    assert third["stats"]["hashed"] == 1 and third["stats"]["hashed_bytes"] == len(b"rewritten")
    assert json.loads(kept.read_text())["entries"]["frames/f002.bin"]["size"] == len(b"rewritten")


def test_check_mode_keeps_no_manifest_and_bad_input_is_named(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    kept = tmp_path / "kept.json"
    result = run_module("tree_manifest", {"path": str(root), "manifest_path": str(kept)}, check_mode=True)
    assert result.get("failed") is not True and not kept.exists()
    inside = run_module("tree_manifest", {"path": str(root), "manifest_path": str(root / "m.json")})
    assert inside["failed"] is True and "is inside path" in inside["msg"]
    missing = run_module("tree_manifest", {"path": str(tmp_path / "nope")})
    assert missing["failed"] is True and f"path {tmp_path / 'nope'} is not a directory" in missing["msg"]
    xxh = run_module("tree_manifest", {"path": str(root), "algorithm": "xxh128"})
    if xxh.get("failed"):  # the package is optional: its absence is named with the fix
        assert "the Python package xxhash is not installed" in xxh["msg"]


def lab(host, *argv, data=None):
    return subprocess.run(
        ["docker", "exec", "-i", host, *argv], input=data, capture_output=True, check=True
    ).stdout


@pytest.fixture
def lab_trees(lab_cluster, tmp_path):  # lab_cluster: the lab hosts are up and converged
    """The same tree on strata-lab-1 (source) and strata-lab-2 (copy), copied with tar (-aH as
    rsync keeps it); both removed afterwards."""
    local = tmp_path / "tree"
    make_tree(str(local))
    archive = subprocess.run(
        ["tar", "-C", str(local), "-cf", "-", "."], capture_output=True, check=True
    ).stdout
    path = f"/srv/strata-verify-{uuid.uuid4().hex[:6]}"
    for host in ("strata-lab-1", "strata-lab-2"):
        lab(host, "mkdir", "-p", path)
        lab(host, "tar", "-C", path, "-xpf", "-", data=archive)
    yield path
    for host in ("strata-lab-1", "strata-lab-2"):
        lab(host, "rm", "-rf", path)


def verify(path, *extra):
    extra_vars = {
        "data_transfer_source_host": "strata-lab-1",
        "data_transfer_source_path": path,
        "data_transfer_dest_host": "strata-lab-2",
        "data_transfer_dest_path": path,
    }
    return run_playbook("transfer_verify.yml", "-e", json.dumps(extra_vars), *extra)


def test_verify_playbook_names_every_difference_between_two_lab_hosts(lab_trees):
    path = lab_trees
    same = verify(path)
    assert same.returncode == 0, same.stdout[-3000:]
    assert "(44 files, " in same.stdout and "identical" in same.stdout
    assert recap(same.stdout)["localhost"]["changed"] == 0

    # the copy goes wrong in every way verify must name
    lab("strata-lab-2", "rm", f"{path}/frames/f010.bin")
    lab("strata-lab-2", "sh", "-c", f"echo extra > '{path}/frames/día 1/stray.txt'")
    lab("strata-lab-2", "sh", "-c", f"head -c 1037 /dev/zero > {path}/frames/f001.bin")  # same size
    lab("strata-lab-2", "ln", "-sfn", "frames/f999.bin", f"{path}/latest")
    # and the source changes after the copy was made
    lab("strata-lab-1", "sh", "-c", f"echo more >> {path}/empty")
    differ = verify(path)
    assert differ.returncode != 0
    out = " ".join(differ.stdout.split())  # the default callback wraps long lines
    assert "missing 1: frames/f010.bin" in out
    assert "extra 1: frames/día 1/stray.txt" in out
    assert "differing 4: empty, frames/f001.bin, hardlink.bin, latest" in out  # f001's hard link too
    assert "is not identical to the source" in out

    reported = verify(path, "-e", "data_transfer_verify_fail=false")
    assert reported.returncode == 0 and "differing 4:" in reported.stdout
