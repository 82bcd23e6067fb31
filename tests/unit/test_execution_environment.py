"""execution-environment.yml agrees with the rest of the project (no Docker needed):
its ansible-core and ansible-runner are the venv's pins, its collection artifacts are strata.ops
and exactly what galaxy.yml depends on (with their own dependencies), tests/ee/build packs those
same collections, and the collection's EE metadata names files that exist."""

import json
import os
import re
from pathlib import Path

import ansible_collections
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _yaml(name):
    return yaml.safe_load((REPO / name).read_text())


def _lock_pins():
    pins = {}
    for line in (REPO / "requirements" / "lock.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.lower()] = version.strip()
    return pins


@pytest.mark.parametrize("part", ["ansible_core", "ansible_runner"])
def test_ansible_pins_match_the_lock(part):
    name, version = _yaml("execution-environment.yml")["dependencies"][part]["package_pip"].split("==")
    assert _lock_pins()[name.lower()] == version, (
        f"execution-environment.yml pins {name} {version}: keep it at the lock's"
    )


def _artifact_names():
    collections = _yaml("execution-environment.yml")["dependencies"]["galaxy"]["collections"]
    assert all(entry["type"] == "file" for entry in collections)
    return {re.fullmatch(r"collections/(.+)\.tar\.gz", entry["name"]).group(1) for entry in collections}


def _installed_dependencies(name):
    """A collection's own dependencies, from its MANIFEST.json in the venv."""
    namespace, collection = name.split(".")
    for base in ansible_collections.__path__:
        manifest = Path(base, namespace, collection, "MANIFEST.json")
        if manifest.is_file():
            return json.loads(manifest.read_text())["collection_info"]["dependencies"]
    raise AssertionError(f"{name} is not in the venv")


def test_artifacts_are_strata_ops_and_its_dependency_closure():
    wanted, queue = set(), list(_yaml("galaxy.yml")["dependencies"])
    while queue:
        name = queue.pop()
        if name not in wanted:
            wanted.add(name)
            queue.extend(_installed_dependencies(name))
    assert _artifact_names() == {"strata-ops"} | {name.replace(".", "-") for name in wanted}


def test_build_script_packs_every_dependency_artifact():
    script = (REPO / "tests" / "ee" / "build").read_text()
    packed = re.search(r"^DEPENDENCY_COLLECTIONS=\((.*)\)$", script, re.MULTILINE).group(1).split()
    assert {name.replace("/", "-") for name in packed} == _artifact_names() - {"strata-ops"}


def test_collection_metadata_names_existing_files():
    meta = _yaml("meta/execution-environment.yml")
    for path in meta["dependencies"].values():
        assert (REPO / path).is_file(), path
    ignored = _yaml("galaxy.yml").get("build_ignore", [])
    for path in ["meta/execution-environment.yml", *meta["dependencies"].values()]:
        assert path not in ignored and os.path.basename(path) not in ignored, (
            f"{path} must ship in the collection"
        )
