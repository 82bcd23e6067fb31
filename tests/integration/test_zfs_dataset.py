"""strata.ops.zfs_dataset against the real zfs-fuse pool of the test bed.

Every test works below its own uniquely named dataset ``strata-testbed/it-<random>`` with
mountpoints under pytest's tmp dir, and destroys it afterwards. Without zfs or the pool the
tests fail when CI=true and are skipped otherwise.
"""

import os
import uuid

import pytest

from .conftest import POOL, adhoc_result, assert_clean_failure, destroy_tree, run_adhoc, run_module, zfs

pytestmark = pytest.mark.needs("zfs")


def prop(name, key):
    return zfs("get", "-Hp", "-o", "value,source", key, name).stdout.strip().split("\t")


def exists(name):
    return zfs("list", "-H", "-o", "name", "-t", "filesystem,snapshot", name, check=False).returncode == 0


def ensure(args, check_mode=False, diff=False):
    return run_module("zfs_dataset", args, check_mode=check_mode, diff=diff)


@pytest.fixture
def root(zfs_pool, tmp_path):
    name = f"{zfs_pool}/it-{uuid.uuid4().hex[:8]}"
    mnt = tmp_path / "mnt"
    zfs("create", "-o", f"mountpoint={mnt}", name)
    yield name, str(mnt)
    destroy_tree(name)


def test_create_many_then_idempotent(root):
    name, mnt = root
    args = {
        "pool": POOL,
        "datasets": [
            {"name": name + "/kind", "properties": {"mountpoint": mnt + "/kind", "compression": "on"}},
            {"name": name + "/kind/solana", "properties": {"quota": "64M", "atime": False}},
            {
                "name": name + "/kind/solana/ledger",
                "properties": {"recordsize": "64K", "com.strata:role": "ledger"},
            },
        ],
    }
    first = ensure(args)
    assert first.get("failed") is not True, first
    assert first["changed"] is True
    assert [d["action"] for d in first["datasets"]] == ["created"] * 3
    assert first["write_path"] == "cli"  # zfs-fuse has no /dev/zfs
    assert first["dialect"] == "zfs-fuse"
    assert "/dev/zfs" in first["write_path_reason"]
    assert prop(name + "/kind", "compression") == ["on", "local"]
    assert prop(name + "/kind/solana", "quota") == [str(64 * 1024**2), "local"]
    assert prop(name + "/kind/solana", "atime") == ["off", "local"]
    assert prop(name + "/kind/solana/ledger", "recordsize") == ["65536", "local"]
    assert prop(name + "/kind/solana/ledger", "com.strata:role") == ["ledger", "local"]
    assert os.path.ismount(mnt + "/kind/solana/ledger")

    second = ensure(args)
    assert second["changed"] is False, second
    assert [d["action"] for d in second["datasets"]] == ["unchanged"] * 3


def test_property_change(root):
    name, _mnt = root
    zfs("create", "-o", "quota=32M", name + "/data")
    result = ensure(
        {"datasets": [{"name": name + "/data", "properties": {"quota": "48M", "compression": "on"}}]},
    )
    assert result["changed"] is True, result
    (item,) = result["datasets"]
    assert item["action"] == "updated"
    assert item["changed_properties"]["quota"]["before"] == str(32 * 1024**2)
    assert item["changed_properties"]["quota"]["after"] == str(48 * 1024**2)
    assert item["changed_properties"]["compression"]["before_source"] == "default"
    assert prop(name + "/data", "quota") == [str(48 * 1024**2), "local"]
    assert prop(name + "/data", "compression") == ["on", "local"]


def test_check_mode_and_diff_change_nothing(root):
    name, _mnt = root
    zfs("create", "-o", "quota=32M", name + "/keep")
    zfs("create", name + "/old")
    args = {
        "datasets": [
            {"name": name + "/new", "properties": {"compression": "on"}},
            {"name": name + "/keep", "properties": {"quota": "40M"}},
            {"name": name + "/old", "state": "absent"},
        ]
    }
    result = ensure(args, check_mode=True, diff=True)
    assert result["changed"] is True, result
    assert [d["action"] for d in result["datasets"]] == ["created", "updated", "destroyed"]
    assert not any("write_path" in d for d in result["datasets"])
    assert not exists(name + "/new")
    assert exists(name + "/old")
    assert prop(name + "/keep", "quota") == [str(32 * 1024**2), "local"]
    diffs = dict((d["before_header"], d) for d in result["diff"])
    assert diffs[name + "/new"]["before"] == {"state": "absent"}
    assert diffs[name + "/new"]["after"] == {"state": "present", "properties": {"compression": "on"}}
    assert diffs[name + "/keep"]["before"]["properties"] == {"quota": str(32 * 1024**2)}
    assert diffs[name + "/keep"]["after"]["properties"] == {"quota": str(40 * 1024**2)}
    assert diffs[name + "/old"]["after"] == {"state": "absent"}


def test_absent_refuses_children_and_snapshots_unless_recursive(root):
    name, _mnt = root
    zfs("create", "-p", name + "/tree/child")
    zfs("create", name + "/snapped")
    zfs("snapshot", name + "/snapped@s1")
    refused = ensure(
        {
            "datasets": [
                {"name": name + "/tree", "state": "absent"},
                {"name": name + "/snapped", "state": "absent"},
            ]
        },
    )
    assert refused["failed"] is True
    assert f"children ({name}/tree/child)" in refused["msg"]
    assert f"snapshots ({name}/snapped@s1)" in refused["msg"]
    assert "recursive: true" in refused["msg"]
    assert exists(name + "/tree/child") and exists(name + "/snapped@s1")

    done = ensure(
        {
            "datasets": [
                {"name": name + "/tree", "state": "absent", "recursive": True},
                {"name": name + "/snapped", "state": "absent", "recursive": True},
            ]
        },
    )
    assert done.get("failed") is not True, done
    assert done["changed"] is True
    assert done["datasets"][0]["destroys"] == [name + "/tree", name + "/tree/child"]
    assert not exists(name + "/tree") and not exists(name + "/snapped")
    again = ensure({"datasets": [{"name": name + "/tree", "state": "absent"}]})
    assert again["changed"] is False


def test_recursive_absent_refuses_clone_outside(root):
    name, _mnt = root
    zfs("create", name + "/src")
    zfs("snapshot", name + "/src@s1")
    zfs("clone", name + "/src@s1", name + "/clone")
    result = ensure({"datasets": [{"name": name + "/src", "state": "absent", "recursive": True}]})
    assert result["failed"] is True
    assert name + "/clone" in result["msg"]
    assert exists(name + "/src@s1") and exists(name + "/clone")


def test_missing_pool(zfs_pool):
    result = ensure({"datasets": [{"name": f"strata-nopool-{uuid.uuid4().hex[:6]}/x"}]})
    assert result["failed"] is True
    assert "does not exist on this host" in result["msg"]
    assert "zpool create" in result["msg"]
    assert result.get("changed", False) is False


def test_outside_pool_and_bad_names_change_nothing(root):
    name, _mnt = root
    result = ensure(
        {
            "pool": POOL,
            "datasets": [
                {"name": name + "/fine"},
                {"name": "elsewhere/x"},
                {"name": name + "/bad name"},
            ],
        },
    )
    assert result["failed"] is True
    assert "'elsewhere/x' is outside pool 'strata-testbed'" in result["msg"]
    assert "invalid component 'bad name'" in result["msg"]
    assert not exists(name + "/fine")  # validation happens before any change


def test_read_only_property(root):
    name, _mnt = root
    for bad in ({"used": "1M"}, {"volblocksize": "8K"}, {"creation": "0"}):
        result = ensure({"datasets": [{"name": name + "/ro", "properties": bad}]})
        assert result["failed"] is True
        assert "is read-only" in result["msg"], result["msg"]
    assert not exists(name + "/ro")


def test_through_ansible_cli(root):
    """The collection resolves through ansible.cfg's collections_path (check + diff)."""
    name, _mnt = root
    args = {"datasets": [{"name": name + "/cli", "properties": {"compression": "on"}}]}
    proc = run_adhoc("zfs_dataset", args, "--check", "--diff")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CHANGED" in proc.stdout
    assert "created" in proc.stdout
    assert not exists(name + "/cli")


# --- every value is checked before the first change; bad input fails cleanly (issue 13) -------


def assert_refused_cleanly(result):
    assert_clean_failure(result)
    assert "Module failed:" not in result["msg"], result["msg"]
    assert result.get("changed", False) is False, result
    assert "nothing was changed" in result["msg"], result["msg"]


def test_bad_value_beside_a_good_one_changes_nothing(root):
    name, _mnt = root
    zfs("create", name + "/data")
    result = adhoc_result(
        "zfs_dataset", {"datasets": [{"name": name + "/data", "properties": {"atime": "off", "quota": -1}}]}
    )
    assert_refused_cleanly(result)
    assert (
        f"dataset '{name}/data': quota=-1 is refused by this ZFS (zfs-fuse): bad numeric value '-1'"
        in result["msg"]
    )
    assert prop(name + "/data", "atime") == ["on", "default"]


@pytest.mark.parametrize("check", [False, True], ids=["apply", "check-mode"])
def test_one_bad_compression_among_twenty_datasets_creates_nothing(root, check):
    name, _mnt = root
    datasets = [{"name": f"{name}/many/d{i:02d}", "properties": {"compression": "on"}} for i in range(20)]
    datasets[10]["properties"]["compression"] = "lz5"
    result = adhoc_result(
        "zfs_dataset", {"pool": POOL, "datasets": datasets}, *(["--check"] if check else [])
    )
    assert_refused_cleanly(result)
    assert f"dataset '{name}/many/d10': compression=lz5 is refused" in result["msg"]
    assert "'compression' must be one of 'on | off | lzjb | gzip | gzip-[1-9] | zle'" in result["msg"]
    assert not exists(name + "/many")


@pytest.mark.parametrize(
    "properties, message",
    [
        pytest.param(
            {"compression": "lz4"},
            "compression=lz4 is refused by this ZFS (zfs-fuse): 'compression' must be one of",
            id="compression=lz4",
        ),
        pytest.param(
            {"recordsize": "1M"}, "'recordsize' must be a power of 2 from 512 to 128K", id="recordsize=1M"
        ),
        pytest.param({"recordsize": "96K"}, "'recordsize' must be a power of 2", id="recordsize=96K"),
        pytest.param({"quota": 0}, "use 'none' to disable quota/refquota", id="quota=0"),
        pytest.param({"quota": "64KiB"}, "invalid numeric suffix 'KiB'", id="quota=64KiB"),
        pytest.param(
            {"quota": None},
            "quota=null is refused by this ZFS (zfs-fuse): needs a string, number or boolean",
            id="quota=None",
        ),
        pytest.param({"quota": [1]}, "needs a string, number or boolean", id="quota=[1]"),
        pytest.param(
            {"mountpoint": "srv/x"},
            "'mountpoint' must be an absolute path, 'none', or 'legacy'",
            id="mountpoint=srv/x",
        ),
        pytest.param({"atime": "yes"}, "'atime' must be one of 'on | off'", id="atime=yes"),
        pytest.param({"Compression": "on"}, "native properties are lowercase", id="Compression=on"),
        pytest.param(
            {"COM.EXAMPLE:x": "y"}, "use lowercase letters, digits and - _ . : only", id="COM.EXAMPLE:x=y"
        ),
        pytest.param({"sync": "always"}, "'sync' is not supported by this ZFS", id="sync=always"),
    ],
)
def test_values_the_zfs_cli_refuses_are_refused_before_any_change(root, properties, message):
    name, _mnt = root
    result = adhoc_result(
        "zfs_dataset",
        {"datasets": [{"name": name + "/p/ok"}, {"name": name + "/p/bad", "properties": properties}]},
    )
    assert_refused_cleanly(result)
    assert message in result["msg"], result["msg"]
    assert not exists(name + "/p")


def test_failure_part_way_says_exactly_what_was_done(root):
    """A quota below the space already used is refused by zfs only when it is set: atime (set
    first, zfs-fuse takes one property per call) stays set, and the result says so."""
    name, _mnt = root
    zfs("create", name + "/used")
    result = adhoc_result(
        "zfs_dataset", {"datasets": [{"name": name + "/used", "properties": {"atime": "off", "quota": "1K"}}]}
    )
    assert result["failed"] is True, result
    assert "Module failed:" not in result["msg"]
    assert result["changed"] is True
    assert result["properties_set"] == {name + "/used": {"atime": "off"}}
    assert result["done"] == [f"set atime=off on {name}/used"]
    assert result["created"] == [] and result["destroyed"] == []
    assert "size is less than current used or reserved space" in result["msg"]
    assert f"done before the failure: set atime=off on {name}/used" in result["msg"]
    assert prop(name + "/used", "atime") == ["off", "local"]
    assert prop(name + "/used", "quota") == ["0", "default"]


def test_missing_parents_are_created_mounted_and_reported(root):
    name, mnt = root
    result = ensure({"datasets": [{"name": name + "/a/b/c", "properties": {"atime": "off"}}]})
    assert result.get("failed") is not True, result
    (item,) = result["datasets"]
    assert item["parents"] == [name + "/a", name + "/a/b"]
    for path in ("/a", "/a/b", "/a/b/c"):
        assert os.path.ismount(mnt + path), path
    assert prop(name + "/a", "atime") == ["on", "default"]
    assert prop(name + "/a/b/c", "atime") == ["off", "local"]
