"""strata.ops.storage_info against real mounts: a zfs-fuse dataset, a tmpfs, the trap.

Builds the kind validator shape under a unique dataset ``strata-testbed/sf-<random>`` mounted
in pytest's tmp dir:

    <mnt>                 dataset  .../sf-x            (stands for /srv)
    <mnt>/solana          plain directory on it        (the /srv/solana trap)
    <mnt>/kind            dataset  .../sf-x/kind       (/srv/kind)
    <mnt>/kind/ramdisk    tmpfs, size=16m              (/srv/kind/solana/ramdisk)

Without zfs or the pool the tests fail when CI=true and are skipped otherwise.
"""

import os
import subprocess
import uuid

import pytest

from .conftest import (
    POOL,
    adhoc_result,
    assert_clean_failure,
    destroy_tree,
    run_adhoc,
    run_module,
    skip_or_fail,
    zfs,
)

pytestmark = pytest.mark.needs("zfs")


def run(*argv):
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError("{} failed: {}".format(" ".join(argv), proc.stderr))
    return proc


@pytest.fixture(scope="module")
def layout(zfs_pool, tmp_path_factory):
    skip_or_fail("mounting a tmpfs needs root" if os.geteuid() != 0 else None)
    name = f"{zfs_pool}/sf-{uuid.uuid4().hex[:8]}"
    mnt = str(tmp_path_factory.mktemp("storage") / "srv")
    ramdisk = os.path.join(mnt, "kind", "ramdisk")
    try:
        zfs("create", "-o", f"mountpoint={mnt}", name)
        zfs("create", name + "/kind")
        os.makedirs(os.path.join(mnt, "solana"))
        os.makedirs(ramdisk)
        run("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", ramdisk)
        yield {"dataset": name, "mnt": mnt, "ramdisk": ramdisk}
    finally:
        if os.path.ismount(ramdisk):
            run("umount", ramdisk)
        destroy_tree(name)


def facts(paths, check_mode=False):
    result = run_module("storage_info", {"paths": paths}, check_mode=check_mode)
    assert result.get("failed") is not True, result
    assert result["changed"] is False
    return result["paths"]


def test_zfs_dataset_path(layout):
    kind = os.path.join(layout["mnt"], "kind")
    info = facts([kind])[kind]
    assert info["kind"] == "zfs"
    assert info["fstype"] == "fuse.zfs"
    assert info["dataset"] == layout["dataset"] + "/kind"
    assert info["parent_dataset"] == layout["dataset"]
    assert info["mount_point"] == kind


def test_tmpfs_size(layout):
    info = facts([layout["ramdisk"]], check_mode=True)[layout["ramdisk"]]
    assert info["kind"] == "tmpfs"
    assert info["size_bytes"] == 16 * 1024 * 1024
    assert "size=16384k" in info["mount_options"]
    assert info["fstab"] is None


def test_plain_directory_on_parent_dataset(layout):
    trap = os.path.join(layout["mnt"], "solana")
    info = facts([trap])[trap]
    assert info["kind"] == "directory"
    assert info["parent_mount"]["mount_point"] == layout["mnt"]
    assert info["parent_mount"]["dataset"] == layout["dataset"]
    assert info["dataset"] == layout["dataset"]


def test_missing_path(layout):
    missing = os.path.join(layout["mnt"], "kind", "nothing", "here")
    info = facts([missing])[missing]
    assert info["kind"] == "missing"
    assert info["nearest_existing"] == os.path.join(layout["mnt"], "kind")


def test_many_paths_and_root(layout):
    paths = [layout["mnt"], layout["ramdisk"], "/"]
    result = facts(paths)
    assert [result[p]["kind"] for p in paths] == ["zfs", "tmpfs", "other"]
    assert result[layout["mnt"]]["parent_dataset"] == POOL


def test_through_ansible_cli(layout):
    proc = run_adhoc("storage_info", {"paths": [layout["ramdisk"]]})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
    assert "tmpfs" in proc.stdout


# --- expect: what a new dataset or tmpfs would hide or displace (layers 2 and 4) --------------


def test_expect_reports_what_would_be_hidden_or_displaced(layout):
    mnt, ds = layout["mnt"], layout["dataset"]
    trap = os.path.join(mnt, "solana")
    empty = os.path.join(mnt, "kind", "empty")
    os.makedirs(empty, exist_ok=True)
    with open(os.path.join(trap, "validator-keypair.json"), "w") as handle:
        handle.write("{}")
    try:
        result = run_module(
            "storage_info",
            {
                "paths": [mnt],
                "expect": [
                    {"path": trap, "dataset": ds + "/solana"},
                    {"path": os.path.join(mnt, "kind"), "dataset": ds + "/other"},
                    {"path": os.path.join(mnt, "kind"), "dataset": ds + "/kind"},
                    {"path": layout["ramdisk"], "kind": "tmpfs"},
                    {"path": os.path.join(mnt, "kind"), "kind": "tmpfs"},
                    {"path": empty, "dataset": ds + "/kind/empty"},
                    {"path": os.path.join(mnt, "missing", "x"), "dataset": ds + "/missing/x"},
                ],
            },
            check_mode=True,
        )
    finally:
        os.remove(os.path.join(trap, "validator-keypair.json"))
        os.rmdir(empty)
    assert result.get("failed") is not True, result
    assert result["changed"] is False
    assert result["conflicts"] == [
        f"{trap} is a plain directory with files on {ds} but should be the ZFS dataset {ds}/solana",
        f"{mnt}/kind is the ZFS dataset {ds}/kind but should be {ds}/other",
        f"{mnt}/kind is already used by fuse.zfs {ds}/kind but should be a tmpfs",
    ]
    assert set(result["paths"]) >= {mnt, trap, layout["ramdisk"], empty}


def test_expect_of_another_dataset_where_one_is_mounted(layout):
    kind = os.path.join(layout["mnt"], "kind")
    result = run_module("storage_info", {"expect": [{"path": kind, "dataset": layout["dataset"] + "/x"}]})
    assert result["conflicts"] == [
        f"{kind} is the ZFS dataset {layout['dataset']}/kind but should be {layout['dataset']}/x"
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(
            {"expect": [{"path": "/srv/kind"}]},
            "kind is zfs but all of the following are missing: dataset",
            id="no-dataset",
        ),
        pytest.param(
            {"expect": [{"path": "srv/kind", "dataset": "a/b"}]},
            "paths must be absolute; got srv/kind",
            id="relative",
        ),
        pytest.param(
            {"expect": [{"path": "/x", "kind": "nfs"}]},
            "value of kind must be one of: zfs, tmpfs",
            id="bad-kind",
        ),
    ],
)
def test_bad_expect_fails_cleanly(zfs_pool, args, message):
    result = adhoc_result("storage_info", args)
    assert_clean_failure(result)
    assert "Module failed:" not in result["msg"], result["msg"]
    assert message in result["msg"], result["msg"]


def test_the_old_name_still_runs_with_a_deprecation(layout):
    """storage_facts is routed to storage_info (meta/runtime.yml) until 2.0.0."""
    proc = run_adhoc("storage_facts", {"paths": [layout["ramdisk"]]})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "storage_facts" in proc.stderr and "deprecated" in proc.stderr.lower(), proc.stderr
    assert '"kind": "tmpfs"' in proc.stdout or "kind: tmpfs" in proc.stdout, proc.stdout


def test_usage_of_a_real_dataset_tmpfs_and_pool(layout):
    """usage: zfs get -Hp and zpool list on zfs-fuse, statvfs on a real tmpfs with 4 MiB in it."""
    kind = os.path.join(layout["mnt"], "kind")
    with open(os.path.join(layout["ramdisk"], "fill"), "wb") as handle:
        handle.write(b"\0" * 4 * 1024 * 1024)
    try:
        result = run_module(
            "storage_info", {"paths": [kind, layout["ramdisk"]], "pools": [POOL], "usage": True}
        )
    finally:
        os.unlink(os.path.join(layout["ramdisk"], "fill"))
    assert result.get("failed") is not True, result
    ramdisk = result["paths"][layout["ramdisk"]]["usage"]
    assert ramdisk["size_bytes"] == 16 * 1024 * 1024 and ramdisk["used_bytes"] >= 4 * 1024 * 1024
    assert ramdisk["percent"] == round(100.0 * ramdisk["used_bytes"] / ramdisk["size_bytes"], 1)
    dataset = result["paths"][kind]["usage"]
    assert dataset["used_bytes"] > 0 and dataset["available_bytes"] > 0
    assert dataset["quota_bytes"] is None and dataset["refquota_bytes"] is None
    pool = result["pools"][POOL]
    assert pool["health"] == "ONLINE" and pool["size_bytes"] > pool["free_bytes"] > 0
    assert 0 <= pool["capacity_percent"] <= 100
