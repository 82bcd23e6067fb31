"""Unit tests for plugins/module_utils/zfs/: parsing both CLI dialects, planning, backend."""

import os
import sys
import threading

import pytest
import yaml

from ansible_collections.strata.ops.plugins.module_utils import zfs
from ansible_collections.strata.ops.plugins.module_utils.zfs import backend as zfs_backend
from ansible_collections.strata.ops.plugins.module_utils.zfs import ensure as zfs_ensure
from ansible_collections.strata.ops.plugins.module_utils.zfs import plan as zfs_plan
from ansible_collections.strata.ops.plugins.module_utils.zfs import properties as zfs_props

with open(os.path.join(os.path.dirname(__file__), "test_zfs.yaml")) as _handle:
    DATA = yaml.safe_load(_handle)


def state_of(output):
    return zfs_plan.ZfsState(zfs_backend.parse_get_output(DATA["outputs"][output]))


# -- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", DATA["parse"], ids=lambda c: "{}:{}".format(c["output"], c["name"]))
def test_parse_get_output(case):
    state = state_of(case["output"])
    entry = state.get(case["name"])
    assert entry is not None
    assert entry["type"] == case["type"]
    for prop, expected in case["properties"].items():
        assert entry["properties"][prop] == expected
    if "children" in case:
        assert state.children(case["name"]) == case["children"]
    if "snapshots" in case:
        assert state.snapshots(case["name"]) == case["snapshots"]


def test_parse_rejects_garbage():
    with pytest.raises(zfs.ZfsError):
        zfs_backend.parse_get_output("not zfs output\n")


@pytest.mark.parametrize(
    "source, kind",
    [
        ("local", "local"),
        ("default", "default"),
        ("inherited from tank/a", "inherited"),
        ("-", "none"),
        ("received", "received"),
        ("temporary", "temporary"),
    ],
)
def test_source_kind(source, kind):
    assert zfs_props.source_kind(source) == kind


@pytest.mark.parametrize("prop, value, expected", DATA["normalize"])
def test_normalize_value(prop, value, expected):
    assert zfs_props.normalize_value(prop, value) == expected


@pytest.mark.parametrize("name", DATA["names"]["valid"])
def test_valid_names(name):
    assert zfs_props.validate_dataset_name(name) is None


@pytest.mark.parametrize("name", DATA["names"]["invalid"])
def test_invalid_names(name):
    assert zfs_props.validate_dataset_name(name)


@pytest.mark.parametrize("dialect, prop, value", DATA["values"]["valid"])
def test_values_the_cli_takes(dialect, prop, value):
    assert zfs_props.value_problem(prop, value, dialect) is None


@pytest.mark.parametrize("dialect, prop, value, message", DATA["values"]["invalid"])
def test_values_the_cli_refuses(dialect, prop, value, message):
    problem = zfs_props.value_problem(prop, value, dialect)
    assert problem is not None, (prop, value)
    assert message in problem


def test_value_length_limits():
    assert zfs_props.value_problem("com.example:x", "a" * 4095, "openzfs") is None
    assert "too long" in zfs_props.value_problem("com.example:x", "a" * 4096, "openzfs")
    assert "too long" in zfs_props.value_problem("mountpoint", "/" + "a" * 256, "openzfs")
    assert zfs_props.property_name_problem("com.example:" + "a" * 243) is None  # 255 characters
    assert "too long" in zfs_props.property_name_problem("com.example:" + "a" * 244)


@pytest.mark.parametrize("dialect, prop", DATA["property_names"]["valid"])
def test_property_names_the_cli_takes(dialect, prop):
    assert zfs_props.property_name_problem(prop, dialect) is None


@pytest.mark.parametrize("dialect, prop, message", DATA["property_names"]["invalid"])
def test_property_names_the_cli_refuses(dialect, prop, message):
    problem = zfs_props.property_name_problem(prop, dialect)
    assert problem is not None and message in problem, problem


def test_missing_from_stderr():
    err = "cannot open 'tank/a': dataset does not exist\ncannot open 'x/y': dataset does not exist\n"
    assert zfs_backend.missing_from_stderr(err) == ["tank/a", "x/y"]
    assert zfs_backend.missing_from_stderr("permission denied\n") is None


# -- planning ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", DATA["plan"], ids=lambda c: c["id"])
def test_plan(case):
    requests = [zfs_plan.normalize_request(r) for r in case["requests"]]
    state = state_of(case["output"])
    args = dict(
        pools=case["pools"],
        pool=case.get("pool"),
        origins=case.get("origins"),
        dialect=case.get("dialect", "openzfs"),
    )
    if "error" in case or "errors" in case:
        with pytest.raises(zfs.ZfsValidationError) as info:
            zfs_plan.plan(requests, state, **args)
        assert "nothing was changed" in info.value.msg
        if "error" in case:
            assert case["error"] in info.value.msg
        if "errors" in case:
            assert len(info.value.details["errors"]) == case["errors"], info.value.details["errors"]
        return
    actions = dict((a["name"], a) for a in zfs_plan.plan(requests, state, **args))
    for name, expected in case["expect"].items():
        assert actions[name]["action"] == expected["action"], actions[name]
        assert sorted(actions[name]["changed_properties"]) == expected["changed"]
        if "destroys" in expected:
            assert actions[name]["destroys"] == expected["destroys"]
        if "parents" in expected:
            assert actions[name]["parents"] == expected["parents"]


def test_diff_shows_before_and_after():
    state = state_of("openzfs")
    requests = [zfs_plan.normalize_request({"name": "tank/data", "properties": {"compression": "zstd"}})]
    (action,) = zfs_plan.plan(requests, state, pools=["tank"])
    diff = zfs_plan.action_diff(action, state)
    assert diff["before"] == {"state": "present", "properties": {"compression": "lz4"}}
    assert diff["after"] == {"state": "present", "properties": {"compression": "zstd"}}
    assert diff["before_header"] == "tank/data"


# -- backend with a fake runner --------------------------------------------------------------


class FakeZfs:
    """Answers zfs/zpool commands like one dialect would; records every call."""

    def __init__(self, dialect, output, pools=("tank",), fail=None):
        self.dialect = dialect
        self.output = output
        self.pools = list(pools)
        self.calls = []
        self.fail = fail or {}

    def __call__(self, argv):
        self.calls.append(list(argv))
        key = " ".join(argv[:2])
        if key in self.fail:
            answer = self.fail[key]
            if isinstance(answer, list):
                return answer.pop(0) if len(answer) > 1 else answer[0]
            return answer
        if argv[0] == "zpool":
            return 0, "".join(p + "\n" for p in self.pools), ""
        if argv[1] == "list" and "-p" in argv:
            if self.dialect == zfs.DIALECT_ZFS_FUSE:
                return 2, "", "invalid option 'p'\nusage:\n\tlist [-rH][-d max] ...\n"
            return 0, "tank\n", ""
        if argv[1] == "get":
            names = argv[8:]
            missing = [n for n in names if (f"{n}\t") not in self.output]
            err = "".join(f"cannot open '{n}': dataset does not exist\n" for n in missing)
            answer = self.named(argv[7]) if argv[3] == "-d" else self.output
            return (1 if missing else 0), answer, err
        if argv[1] == "list" and argv[3:5] == ["-o", "name"]:  # which of these exist
            found = [n for n in argv[5:] if f"{n}\t" in self.output]
            err = "".join(f"cannot open '{n}': dataset does not exist\n" for n in argv[5:] if n not in found)
            return (1 if err else 0), "".join(n + "\n" for n in found), err
        if argv[1] == "list":
            return 0, "tank\t-\n", ""
        return 0, "", ""

    def named(self, wanted):
        """The answer to ``zfs get`` of ``wanted``: each dataset's rows in that order, "-" from "-"
        for a property it does not have (as both CLIs print an unset user property or volsize)."""
        if wanted == "all":
            return self.output
        rows = {}
        for line in self.output.splitlines():
            name, prop = line.split("\t")[:2]
            rows.setdefault(name, {})[prop] = line
        return "".join(
            (props.get(prop) or f"{name}\t{prop}\t-\t-") + "\n"
            for name, props in rows.items()
            for prop in wanted.split(",")
        )

    def writes(self):
        return [c for c in self.calls if c[0] == "zfs" and c[1] in ("create", "set", "destroy", "mount")]


@pytest.mark.parametrize(
    "dialect, expected",
    [(zfs.DIALECT_OPENZFS, "openzfs"), (zfs.DIALECT_ZFS_FUSE, "zfs-fuse")],
)
def test_dialect_probe_runs_once(dialect, expected):
    fake = FakeZfs(dialect, DATA["outputs"]["openzfs"])
    backend = zfs_backend.ZfsBackend(fake)
    assert backend.dialect("tank") == expected
    assert backend.dialect("tank") == expected
    assert len([c for c in fake.calls if "-p" in c]) == 1


def test_set_uses_one_call_on_openzfs_and_one_per_property_on_zfs_fuse():
    for dialect, calls in ((zfs.DIALECT_OPENZFS, 1), (zfs.DIALECT_ZFS_FUSE, 2)):
        fake = FakeZfs(dialect, DATA["outputs"]["openzfs"])
        zfs_backend.ZfsBackend(fake).set("tank/a", {"atime": "off", "compression": "lz4"})
        sets = [c for c in fake.calls if c[1] == "set"]
        assert len(sets) == calls
        assert sets[0][-1] == "tank/a"


def test_read_tolerates_missing_datasets_only():
    fake = FakeZfs(zfs.DIALECT_OPENZFS, DATA["outputs"]["openzfs"])
    state = zfs_backend.ZfsBackend(fake).read(["tank/data", "tank/nope", "tank"])
    assert state.exists("tank/data")
    assert not state.exists("tank/nope")
    get = next(c for c in fake.calls if c[1] == "get")
    assert get[:8] == ["zfs", "get", "-Hp", "-d", "1", "-o", "name,property,value,source", "all"]
    fake = FakeZfs(zfs.DIALECT_OPENZFS, "", fail={"zfs get": (1, "", "permission denied\n")})
    with pytest.raises(zfs.ZfsCommandError, match="permission denied"):
        zfs_backend.ZfsBackend(fake).read(["tank/data"])


def test_create_cli_creates_missing_parents_then_the_dataset_with_its_properties():
    fake = FakeZfs(zfs.DIALECT_ZFS_FUSE, "")
    backend = zfs_backend.ZfsBackend(fake)
    path = backend.create("tank/a/b", {"mountpoint": "/srv/b", "quota": "1024"}, parents=["tank/a"])
    assert path == "cli"
    assert fake.writes() == [
        ["zfs", "create", "tank/a"],
        ["zfs", "create", "-o", "mountpoint=/srv/b", "-o", "quota=1024", "tank/a/b"],
    ]
    assert [(e["action"], e["name"]) for e in backend.journal] == [
        ("created", "tank/a"),
        ("created", "tank/a/b"),
    ]


def test_create_that_could_not_mount_is_journaled_as_created():
    not_mounted = (1, "", "filesystem successfully created, but not mounted\n")
    fake = FakeZfs(zfs.DIALECT_OPENZFS, "", fail={"zfs create": not_mounted})
    backend = zfs_backend.ZfsBackend(fake)
    with pytest.raises(zfs.ZfsCommandError, match="not mounted"):
        backend.create("tank/a", {"atime": "off"})
    assert backend.journal == [{"action": "created", "name": "tank/a", "properties": {"atime": "off"}}]


def test_destroy_retries_busy_then_fails_with_the_message():
    busy = (1, "", "cannot destroy 'tank/a': dataset is busy\n")
    fake = FakeZfs(zfs.DIALECT_ZFS_FUSE, "", fail={"zfs destroy": [busy, busy, (0, "", "")]})
    backend = zfs_backend.ZfsBackend(fake)
    backend._sleep = lambda _s: None
    assert backend.destroy("tank/a", recursive=True) == "cli"
    assert len(fake.writes()) == 3
    assert fake.writes()[0] == ["zfs", "destroy", "-r", "tank/a"]
    fake = FakeZfs(zfs.DIALECT_ZFS_FUSE, "", fail={"zfs destroy": [busy]})
    backend = zfs_backend.ZfsBackend(fake)
    backend._sleep = lambda _s: None
    with pytest.raises(zfs.ZfsCommandError, match="dataset is busy"):
        backend.destroy("tank/a")


def test_ensure_check_mode_changes_nothing_and_reports_diff():
    fake = FakeZfs(zfs.DIALECT_OPENZFS, DATA["outputs"]["openzfs"])
    result = zfs_ensure.ensure_datasets(
        zfs_backend.ZfsBackend(fake),
        [
            {"name": "tank/data", "properties": {"compression": "zstd"}},
            {"name": "tank/new"},
            {"name": "tank/leaf", "state": "absent"},
        ],
        check_mode=True,
        want_diff=True,
    )
    assert fake.writes() == []
    assert result["changed"] is True
    assert [d["action"] for d in result["datasets"]] == ["updated", "created", "destroyed"]
    assert len(result["diff"]) == 3
    assert result["write_path"] == "cli"


def test_ensure_applies_in_order_and_reports_partial_failure():
    fake = FakeZfs(
        zfs.DIALECT_OPENZFS,
        DATA["outputs"]["openzfs"],
        fail={"zfs create": (1, "", "cannot create 'tank/new': out of space\n")},
    )
    with pytest.raises(zfs.ZfsError) as info:
        zfs_ensure.ensure_datasets(
            zfs_backend.ZfsBackend(fake),
            [{"name": "tank/new"}, {"name": "tank/leaf", "state": "absent"}],
        )
    assert info.value.details["changed"] is True
    assert info.value.details["done"] == ["destroyed tank/leaf"]
    assert info.value.details["destroyed"] == ["tank/leaf"]
    assert info.value.details["created"] == []
    assert "out of space" in info.value.msg
    assert "done before the failure: destroyed tank/leaf." in info.value.msg


def test_failure_on_zfs_fuse_after_some_properties_reports_exactly_those():
    """zfs-fuse takes one property per `zfs set`: the ones before the refused one are set."""
    refused = (1, "", "cannot set property for 'strata-testbed/srv': size is less than current used\n")
    fake = FakeZfs(zfs.DIALECT_ZFS_FUSE, DATA["outputs"]["zfs-fuse"], pools=["strata-testbed"])
    fake.fail = {"zfs set": [(0, "", ""), refused]}
    with pytest.raises(zfs.ZfsError) as info:
        zfs_ensure.ensure_datasets(
            zfs_backend.ZfsBackend(fake),
            [
                {"name": "strata-testbed/srv", "properties": {"atime": "off", "quota": "512M"}},
                {"name": "strata-testbed/srv/kind", "properties": {"com.example:note": "x"}},
            ],
        )
    details = info.value.details
    assert details["changed"] is True
    assert details["properties_set"] == {"strata-testbed/srv": {"atime": "off"}}
    assert details["done"] == ["set atime=off on strata-testbed/srv"]
    assert "size is less than current used" in info.value.msg
    assert [c for c in fake.writes() if c[1] == "set"] == [
        ["zfs", "set", "atime=off", "strata-testbed/srv"],
        ["zfs", "set", "quota=536870912", "strata-testbed/srv"],
    ]


def test_nothing_done_says_so():
    fake = FakeZfs(
        zfs.DIALECT_OPENZFS, DATA["outputs"]["openzfs"], fail={"zfs set": (1, "", "pool is busy\n")}
    )
    with pytest.raises(zfs.ZfsError) as info:
        zfs_ensure.ensure_datasets(
            zfs_backend.ZfsBackend(fake), [{"name": "tank/data", "properties": {"compression": "zstd"}}]
        )
    assert info.value.details["changed"] is False
    assert info.value.msg.endswith("-- nothing was changed.")


# -- every value is checked before the first change (issue 13) ---------------------------------


def test_bad_value_beside_a_good_one_changes_nothing():
    fake = FakeZfs(zfs.DIALECT_ZFS_FUSE, DATA["outputs"]["zfs-fuse"], pools=["strata-testbed"])
    with pytest.raises(zfs.ZfsValidationError) as info:
        zfs_ensure.ensure_datasets(
            zfs_backend.ZfsBackend(fake),
            [{"name": "strata-testbed/srv", "properties": {"atime": "off", "quota": -1}}],
        )
    assert fake.writes() == []
    assert "nothing was changed" in info.value.msg
    assert "quota=-1 is refused by this ZFS (zfs-fuse): bad numeric value '-1'" in info.value.msg
    assert "changed" not in info.value.details


@pytest.mark.parametrize("check_mode", [False, True])
def test_one_bad_compression_among_twenty_datasets_creates_none(check_mode):
    fake = FakeZfs(zfs.DIALECT_OPENZFS, DATA["outputs"]["openzfs"])
    items = [{"name": f"tank/new/d{i:02d}", "properties": {"compression": "lz4"}} for i in range(20)]
    items[10]["properties"]["compression"] = "lz5"
    with pytest.raises(zfs.ZfsValidationError) as info:
        zfs_ensure.ensure_datasets(zfs_backend.ZfsBackend(fake), items, check_mode=check_mode)
    assert fake.writes() == []
    assert "dataset 'tank/new/d10': compression=lz5 is refused" in info.value.msg
    assert len(info.value.details["errors"]) == 1


def test_values_follow_the_dialect():
    fake = FakeZfs(zfs.DIALECT_ZFS_FUSE, DATA["outputs"]["zfs-fuse"], pools=["strata-testbed"])
    with pytest.raises(zfs.ZfsValidationError, match=r"compression=lz4 is refused by this ZFS \(zfs-fuse\)"):
        zfs_ensure.ensure_datasets(
            zfs_backend.ZfsBackend(fake),
            [{"name": "strata-testbed/new", "properties": {"compression": "lz4"}}],
        )
    fake = FakeZfs(zfs.DIALECT_OPENZFS, DATA["outputs"]["openzfs"])
    result = zfs_ensure.ensure_datasets(
        zfs_backend.ZfsBackend(fake), [{"name": "tank/new", "properties": {"compression": "lz4"}}]
    )
    assert result["datasets"][0]["action"] == "created"


def test_created_datasets_report_the_parents_they_create():
    fake = FakeZfs(zfs.DIALECT_OPENZFS, DATA["outputs"]["openzfs"])
    result = zfs_ensure.ensure_datasets(
        zfs_backend.ZfsBackend(fake),
        [{"name": "tank/new/a/x"}, {"name": "tank/new/b"}, {"name": "tank/data/c"}],
    )
    parents = dict((d["name"], d["parents"]) for d in result["datasets"])
    assert parents == {"tank/new/a/x": ["tank/new/a"], "tank/new/b": ["tank/new"], "tank/data/c": []}
    assert [c for c in fake.writes() if c[1] == "create"] == [
        ["zfs", "create", "tank/new"],
        ["zfs", "create", "tank/new/b"],
        ["zfs", "create", "tank/data/c"],
        ["zfs", "create", "tank/new/a"],
        ["zfs", "create", "tank/new/a/x"],
    ]


def test_ensure_validates_before_reading():
    fake = FakeZfs(zfs.DIALECT_OPENZFS, DATA["outputs"]["openzfs"])
    with pytest.raises(zfs.ZfsValidationError, match="pool 'biscayne'"):
        zfs_ensure.ensure_datasets(zfs_backend.ZfsBackend(fake), [{"name": "biscayne/x"}])
    assert [c[0] for c in fake.calls] == ["zpool"]


# -- libzfs_core path ------------------------------------------------------------------------


def test_load_libzfs_core_without_dev_zfs(tmp_path):
    lzc, reason = zfs_backend.load_libzfs_core(str(tmp_path / "zfs"))
    assert lzc is None
    assert "missing" in reason


def test_load_libzfs_core_import_error(tmp_path, monkeypatch):
    dev = tmp_path / "zfs"
    dev.write_text("")
    monkeypatch.setitem(sys.modules, "libzfs_core", None)  # import raises ImportError
    lzc, reason = zfs_backend.load_libzfs_core(str(dev))
    assert lzc is None
    assert "not usable" in reason


# -- one read of the requested properties; writes a few at a time (issue 21) ---------------------


def gets(fake):
    return [c[7] for c in fake.calls if c[1] == "get"]


def test_read_names_only_the_requested_properties():
    fake = FakeZfs(zfs.DIALECT_OPENZFS, DATA["outputs"]["openzfs"])
    result = zfs_ensure.ensure_datasets(
        zfs_backend.ZfsBackend(fake),
        [{"name": "tank/data", "properties": {"atime": "off", "com.example:note": "x"}}],
    )
    assert gets(fake) == ["type,atime,canmount,com.example:note,mounted,mountpoint"]
    (dataset,) = result["datasets"]
    # An unset user property is absent, as in a read of all: before is None, not "-".
    assert dataset["changed_properties"] == {
        "com.example:note": {"before": None, "before_source": None, "after": "x"}
    }


@pytest.mark.parametrize(
    "properties, why",
    [
        ({"volsize": "1G"}, "is not supported by this ZFS"),  # "-" from "-" on a filesystem
        ({"userquota@bob": "1G"}, None),  # not in a read of all: read all, as before
    ],
)
def test_read_of_all_when_the_named_read_cannot_answer(properties, why):
    fake = FakeZfs(zfs.DIALECT_OPENZFS, DATA["outputs"]["openzfs"])
    backend = zfs_backend.ZfsBackend(fake)
    if why:
        with pytest.raises(zfs.ZfsValidationError, match=why):
            zfs_ensure.ensure_datasets(backend, [{"name": "tank/data", "properties": properties}])
        assert gets(fake) == ["type," + ",".join(sorted({*properties, *zfs_plan.MOUNT_PROPERTIES})), "all"]
    else:
        zfs_ensure.ensure_datasets(
            backend, [{"name": "tank/data", "properties": properties}], check_mode=True
        )
        assert gets(fake) == ["all"]


def test_read_of_all_when_zfs_refuses_the_property_list():
    refused = (2, "", "bad property list: invalid property 'relatime'\nusage:\n")
    output = DATA["outputs"]["openzfs"]
    fake = FakeZfs(zfs.DIALECT_OPENZFS, output, fail={"zfs get": [refused, (0, output, "")]})
    requests = [zfs_plan.normalize_request({"name": "tank/data", "properties": {"atime": "off"}})]
    state = zfs_ensure._read_state(zfs_backend.ZfsBackend(fake), ["tank/data"], requests)
    assert gets(fake) == ["type,atime,canmount,mounted,mountpoint", "all"]
    assert state.property("tank/data", "guid") == {"value": "1234567891", "source": "-"}


class SlowParentZfs(FakeZfs):
    """Creating a parent takes a while, so a child started before it is done would be seen."""

    def __init__(self, *args, slow=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.slow = set(slow)
        self.made = set()
        self.orphans = []

    def __call__(self, argv):
        if argv[:2] == ["zfs", "create"]:
            name = argv[-1]
            parent = name.rsplit("/", 1)[0]
            if "/" in parent and parent not in self.made and f"{parent}\t" not in self.output:
                self.orphans.append(name)
            if name in self.slow:
                threading.Event().wait(0.05)
            answer = super().__call__(argv)
            if answer[0] == 0:
                self.made.add(name)
            return answer
        return super().__call__(argv)


def test_parallel_creates_wait_for_their_parents():
    fake = SlowParentZfs(zfs.DIALECT_ZFS_FUSE, DATA["outputs"]["openzfs"], slow={"tank/new", "tank/new/a"})
    backend = zfs_backend.ZfsBackend(fake)
    backend.parallel = 4
    items = [{"name": f"tank/new/a/d{i:02d}", "properties": {"atime": "off"}} for i in range(12)]
    items += [{"name": f"tank/new/b{i}"} for i in range(3)] + [
        {"name": "tank/data", "properties": {"atime": "on"}}
    ]
    result = zfs_ensure.ensure_datasets(backend, items)
    assert fake.orphans == []
    created = [c[-1] for c in fake.writes() if c[1] == "create"]
    assert sorted(created) == sorted(["tank/new", "tank/new/a"] + [i["name"] for i in items[:-1]])
    assert sorted(e["name"] for e in backend.journal) == sorted([*created, "tank/data"])
    assert [d["action"] for d in result["datasets"]] == ["created"] * 15 + ["updated"]


def test_parallel_failure_stops_new_writes_and_reports_all_done():
    refused = (1, "", "cannot create 'tank/new/d03': out of space\n")

    class FailOne(SlowParentZfs):
        def __call__(self, argv):
            if argv[:2] == ["zfs", "create"] and argv[-1] == "tank/new/d03":
                self.calls.append(list(argv))
                return refused
            return super().__call__(argv)

    fake = FailOne(zfs.DIALECT_ZFS_FUSE, DATA["outputs"]["openzfs"], slow={"tank/new"})
    backend = zfs_backend.ZfsBackend(fake)
    backend.parallel = 2
    items = [{"name": f"tank/new/d{i:02d}"} for i in range(40)]
    with pytest.raises(zfs.ZfsCommandError) as info:
        zfs_ensure.ensure_datasets(backend, items)
    created = [c[-1] for c in fake.writes() if c[1] == "create" and c[-1] != "tank/new/d03"]
    assert len(created) < 40  # nothing new started after the failure
    assert sorted(info.value.details["created"]) == sorted(created)
    assert "out of space" in info.value.msg
    assert "stopped part way" in info.value.msg


def test_parallel_write_that_crashes_is_raised_not_lost():
    """A bug in a writer thread (not a ZfsError) must end the run as a crash, never pass silently."""

    class Crash(SlowParentZfs):
        def __call__(self, argv):
            if argv[:2] == ["zfs", "create"] and argv[-1] == "tank/new/d01":
                raise RuntimeError("boom in a writer thread")
            return super().__call__(argv)

    backend = zfs_backend.ZfsBackend(Crash(zfs.DIALECT_ZFS_FUSE, DATA["outputs"]["openzfs"]))
    backend.parallel = 2
    with pytest.raises(RuntimeError, match="boom in a writer thread"):
        zfs_ensure.ensure_datasets(backend, [{"name": f"tank/new/d{i:02d}"} for i in range(6)])


def test_an_existing_filesystem_left_unmounted_is_mounted():
    """A create killed between its create and its mount (or an unmount by hand) leaves a dataset
    that exists unmounted: present means mounted when canmount is on and the mountpoint a path."""
    out = "".join(
        f"{name}\t{prop}\t{value}\t{source}\n"
        for name, mountpoint, mounted in (("tank", "/tank", "yes"), ("tank/data", "/tank/data", "no"))
        for prop, value, source in (
            ("type", "filesystem", "-"),
            ("canmount", "on", "default"),
            ("mounted", mounted, "-"),
            ("mountpoint", mountpoint, "default"),
        )
    )
    fake = FakeZfs(zfs.DIALECT_ZFS_FUSE, out)
    backend = zfs_backend.ZfsBackend(fake)
    planned = zfs_ensure.ensure_datasets(backend, [{"name": "tank/data"}], check_mode=True)
    assert planned["changed"] and planned["datasets"][0]["changed_properties"] == {
        "mounted": {"before": "no", "after": "yes"}
    }
    assert fake.writes() == []
    result = zfs_ensure.ensure_datasets(backend, [{"name": "tank/data"}])
    assert [c[1:] for c in fake.writes()] == [["mount", "tank/data"]]
    assert result["datasets"][0]["action"] == "updated" and backend.journal == [
        {"action": "mounted", "name": "tank/data", "properties": {}}
    ]
