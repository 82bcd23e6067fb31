"""The libzfs_core (pyzfs) write path of module_utils/zfs/, against fakes of pyzfs and of an
OpenZFS host's zfs/zpool commands that share one dataset table.

There is no kernel ZFS here, so pyzfs cannot run. ``FakeLibzfsCore`` mirrors the parts of
OpenZFS' pyzfs (contrib/pyzfs/libzfs_core in openzfs/zfs) that the backend calls, with the same
names, arguments and exceptions:

* ``lzc_create(name, ds_type='zfs', props=None, key=None)`` and ``lzc_destroy(name)`` (from
  ``_libzfs_core.py``), whose errno results become exceptions as ``_error_translation.py``'s
  ``lzc_create_translate_error`` / ``lzc_destroy_translate_error`` make them: EEXIST ->
  ``FilesystemExists``, ENOENT -> ``ParentNotFound`` (create, also for a missing pool) or
  ``FilesystemNotFound`` (destroy), EINVAL -> ``FilesystemNameInvalid`` / ``NameTooLong`` for a
  bad name, else ``PropertyInvalid``; ``lzc_exists(name) -> bool``;
* the exception classes of ``exceptions.py`` (``ZFSError`` with ``errno``/``message``/``name``,
  ``DatasetExists`` <- ``FilesystemExists``, ...), reachable as ``libzfs_core.exceptions``;
* names are ``bytes`` (cffi refuses ``str`` with TypeError), properties a dict of bytes to
  kernel values: ints for number and index properties, bytes for strings (pyzfs' own tests:
  ``{b"atime": 0}`` works, ``{b"recordsize": b"128k"}`` and ``{b"atime": 20}`` raise
  ``PropertyInvalid``).

lzc_create, like the ioctl behind it, never mounts and never creates parents.
"""

import errno
import string
import sys
import types

import pytest

from ansible_collections.strata.ops.plugins.module_utils import zfs
from ansible_collections.strata.ops.plugins.module_utils.zfs import backend as zfs_backend
from ansible_collections.strata.ops.plugins.module_utils.zfs import ensure as zfs_ensure

MAXNAMELEN = 255  # libzfs_core/_constants.py
_NAME_CHARS = set(
    string.ascii_letters + string.digits + "-_.: "
)  # _error_translation._is_valid_name_component


def _exceptions_module():
    """libzfs_core.exceptions, for the classes the create/exists/destroy paths raise."""
    mod = types.ModuleType("libzfs_core.exceptions")

    class ZFSError(Exception):
        errno = None
        message = None
        name = None

        def __str__(self):
            if self.name is not None:
                return f"[Errno {self.errno}] {self.message}: '{self.name}'"
            return f"[Errno {self.errno}] {self.message}"

    class ZFSGenericError(ZFSError):
        def __init__(self, errno_, name, message):
            self.errno = errno_
            self.message = message
            self.name = name

    def named(cls_name, base, code, message):
        def __init__(self, name):
            self.name = name

        return type(cls_name, (base,), {"errno": code, "message": message, "__init__": __init__})

    mod.ZFSError = ZFSError
    mod.ZFSGenericError = ZFSGenericError
    mod.DatasetNotFound = named("DatasetNotFound", ZFSError, errno.ENOENT, "Dataset not found")
    mod.DatasetExists = named("DatasetExists", ZFSError, errno.EEXIST, "Dataset already exists")
    mod.FilesystemExists = named(
        "FilesystemExists", mod.DatasetExists, errno.EEXIST, "Filesystem already exists"
    )
    mod.FilesystemNotFound = named(
        "FilesystemNotFound", mod.DatasetNotFound, errno.ENOENT, "Filesystem not found"
    )
    mod.ParentNotFound = named("ParentNotFound", ZFSError, errno.ENOENT, "Parent not found")
    mod.WrongParent = named("WrongParent", ZFSError, 1024 + 9, "Parent dataset is not a filesystem")
    mod.NameInvalid = named("NameInvalid", ZFSError, errno.EINVAL, "Invalid name")
    mod.FilesystemNameInvalid = named(
        "FilesystemNameInvalid", mod.NameInvalid, errno.EINVAL, "Invalid name for filesystem or volume"
    )
    mod.NameTooLong = named("NameTooLong", ZFSError, errno.ENAMETOOLONG, "Dataset name is too long")
    mod.PropertyInvalid = named(
        "PropertyInvalid", ZFSError, errno.EINVAL, "Invalid property or property value"
    )
    mod.DatasetTypeInvalid = named(
        "DatasetTypeInvalid", ZFSError, errno.EINVAL, "Specified dataset type is unknown"
    )
    return mod


# Kernel encodings of the properties the fake accepts at create (zfs_prop.c): index values as
# numbers, sizes as numbers, strings as bytes.
_KERNEL_INDEX = {
    "atime": (0, 1),
    "compression": tuple(range(0, 16)),
    "utf8only": (0, 1),
    "canmount": (0, 1, 2),
}
_KERNEL_NUMBER = ("quota", "recordsize", "reservation")
_KERNEL_STRING = ("mountpoint",)


class FakeLibzfsCore(types.ModuleType):
    """pyzfs' ``libzfs_core`` over a FakeZfsHost's dataset table."""

    def __init__(self, host):
        super().__init__("libzfs_core")
        self.host = host
        self.exceptions = _exceptions_module()
        self.calls = []

    @staticmethod
    def _name(name):
        if not isinstance(name, bytes):
            raise TypeError(
                f"initializer for ctype 'char *' must be a bytes or list or tuple, not {type(name)}"
            )
        return name.decode()

    def _validate_fs_name(self, name):
        # _error_translation._validate_fs_name
        if not name or any(not part or not set(part) <= _NAME_CHARS for part in name.split("/")):
            raise self.exceptions.FilesystemNameInvalid(name.encode())
        if len(name) > MAXNAMELEN:
            raise self.exceptions.NameTooLong(name.encode())

    def lzc_create(self, name, ds_type="zfs", props=None, key=None):
        text = self._name(name)
        self.calls.append(("lzc_create", name, ds_type, props, key))
        if ds_type not in ("zfs", "zvol"):
            raise self.exceptions.DatasetTypeInvalid(ds_type)
        for prop, value in (props or {}).items():
            if not isinstance(prop, bytes) or isinstance(value, str):
                raise TypeError("Unsupported value type str")  # pyzfs' nvlist_in takes bytes/int/bool
            key_ = prop.decode()
            if key_ in _KERNEL_INDEX and value in _KERNEL_INDEX[key_] and isinstance(value, int):
                continue
            if (key_ in _KERNEL_NUMBER and isinstance(value, int)) or (
                key_ in _KERNEL_STRING and isinstance(value, bytes)
            ):
                continue
            raise self.exceptions.PropertyInvalid(name)  # EINVAL with a valid name
        self._validate_fs_name(text)
        if text in self.host.datasets:
            raise self.exceptions.FilesystemExists(name)
        parent = text.rsplit("/", 1)[0] if "/" in text else None
        if parent is None or parent not in self.host.datasets:
            raise self.exceptions.ParentNotFound(name)
        if self.host.datasets[parent]["type"] != "filesystem":
            raise self.exceptions.WrongParent(parent.encode())
        local = dict(
            (p.decode(), v.decode() if isinstance(v, bytes) else str(v)) for p, v in (props or {}).items()
        )
        self.host.add(text, **local)

    def lzc_exists(self, name):
        return self._name(name) in self.host.datasets

    def lzc_destroy(self, name):
        text = self._name(name)
        self.calls.append(("lzc_destroy", name))
        if text not in self.host.datasets:
            raise self.exceptions.FilesystemNotFound(name)
        if any(other.startswith(text + "/") or other.startswith(text + "@") for other in self.host.datasets):
            raise self.exceptions.ZFSGenericError(errno.EEXIST, name, "Failed to destroy dataset")
        if text in self.host.mounted:
            raise self.exceptions.ZFSGenericError(errno.EBUSY, name, "Failed to destroy dataset")
        del self.host.datasets[text]


# Properties an OpenZFS `zfs get all` prints for a filesystem (the ones the tests touch), with
# their defaults and whether children inherit them.
DEFAULTS = {
    "compression": ("off", True),
    "atime": ("on", True),
    "recordsize": ("131072", True),
    "quota": ("0", False),
    "reservation": ("0", False),
    "canmount": ("on", False),
    "acltype": ("off", True),
}
ONE_TIME = {"casesensitivity": "sensitive", "utf8only": "off", "normalization": "none"}


class FakeZfsHost:
    """An OpenZFS host's ``zfs`` and ``zpool`` as a run_command over one dataset table: enough
    of create/get/list/set/mount/unmount/destroy, with inheritance and mounting as OpenZFS does
    them (``zfs create`` mounts a filesystem whose canmount is on and mountpoint is a path)."""

    def __init__(self, pool="tank"):
        self.pool = pool
        self.datasets = {}
        self.mounted = set()
        self.calls = []
        self.refuse = {}  # "zfs set quota" -> stderr: make that command fail like the CLI would
        self.refuse_property = {}  # property -> stderr of a `zfs set` that reaches it
        self.busy = set()  # datasets zfs destroy finds busy
        self.add(pool, mountpoint="none")

    def add(self, name, mounted=False, **local):
        self.datasets[name] = {"type": "filesystem", "local": dict(local), "onetime": dict(ONE_TIME)}
        for prop in list(local):
            if prop in ONE_TIME:
                self.datasets[name]["onetime"][prop] = local.pop(prop)
        if mounted:
            self.mounted.add(name)

    # -- property values ---------------------------------------------------------------------

    def value(self, name, prop):
        """(value, source) as `zfs get -Hp` prints them."""
        entry = self.datasets[name]
        if prop in entry["onetime"]:
            return entry["onetime"][prop], "-"
        if prop == "type":
            return entry["type"], "-"
        if prop == "mounted":
            return ("yes" if name in self.mounted else "no"), "-"
        if prop in entry["local"]:
            return entry["local"][prop], "local"
        if prop == "mountpoint":
            parent = name.rsplit("/", 1)[0] if "/" in name else None
            if parent is None:
                return "/" + name, "default"
            value, source = self.value(parent, "mountpoint")
            origin = parent if source == "local" else source.replace("inherited from ", "")
            if value in ("none", "legacy"):
                return value, "inherited from " + origin
            if source == "default":
                return "/" + name, "default"
            return value.rstrip("/") + "/" + name.rsplit("/", 1)[1], "inherited from " + origin
        default, inherits = DEFAULTS.get(prop, (None, False))
        if ":" in prop:
            inherits = True
        parent = name.rsplit("/", 1)[0] if "/" in name else None
        if inherits and parent is not None:
            value, source = self.value(parent, prop)
            if value is not None and source != "default":
                origin = parent if source == "local" else source.replace("inherited from ", "")
                return value, "inherited from " + origin
        return default, "default"

    def _props(self, name):
        props = ["type", "mounted", "mountpoint", *DEFAULTS, *ONE_TIME]
        props += sorted(set(p for entry in self.datasets.values() for p in entry["local"] if ":" in p))
        return [p for p in props if self.value(name, p)[0] is not None]

    # -- commands ----------------------------------------------------------------------------

    def __call__(self, argv):
        self.calls.append(list(argv))
        key = " ".join(argv[:3])
        if key in self.refuse:
            return 1, "", self.refuse[key]
        if argv[0] == "zpool":
            return 0, self.pool + "\n", ""
        handler = getattr(self, "_zfs_" + argv[1])
        return handler(argv[2:])

    @staticmethod
    def _missing(name):
        return f"cannot open '{name}': dataset does not exist\n"

    def _zfs_list(self, args):
        if "-p" in args or "-d" in args:  # the dialect probe: OpenZFS takes -p
            return 0, self.pool + "\n", ""
        if "-r" in args:  # zfs list -H -r -o name,origin -t ... POOLS (no clones here)
            return 0, "".join(f"{n}\t-\n" for n in sorted(self.datasets) if n.split("/")[0] in args), ""
        names = [a for a in args if not a.startswith("-") and a not in ("name",)]
        out, err = "", ""
        for name in names:
            if name in self.datasets:
                out += name + "\n"
            else:
                err += self._missing(name)
        return (1 if err else 0), out, err

    def _zfs_get(self, args):
        if args[:2] == ["-H", "-o"]:  # zfs get -H -o value PROPS NAME
            props, name = args[3].split(","), args[4]
            if name not in self.datasets:
                return 1, "", self._missing(name)
            return 0, "".join(self.value(name, p)[0] + "\n" for p in props), ""
        if "-d" in args:  # zfs get -Hp -d 1 -o name,property,value,source all|PROPS NAMES
            wanted, names = args[5], args[6:]
            out, err = "", ""
            for name in names:
                if name not in self.datasets:
                    err += self._missing(name)
                    continue
                depth = name.count("/") + 1
                shown = [
                    n
                    for n in sorted(self.datasets)
                    if n == name or (n.startswith(name + "/") and n.count("/") == depth)
                ]
                for item in shown:
                    for prop in self._props(item) if wanted == "all" else wanted.split(","):
                        # a named property that is not set prints "-" "-", as zfs does
                        value, source = self.value(item, prop)
                        value, source = ("-", "-") if value is None else (value, source)
                        out += "\t".join([item, prop, value, source]) + "\n"
            return (1 if err else 0), out, err
        # zfs get -Hp -o property,value,source PROPS NAME
        props, name = args[3].split(","), args[4]
        return 0, "".join("\t".join((p, *self.value(name, p))) + "\n" for p in props), ""

    def _set_one(self, name, prop, value):
        if prop in ONE_TIME:
            return f"cannot set property for '{name}': '{prop}' is readonly\n"
        if prop in self.refuse_property:
            return f"cannot set property for '{name}': {self.refuse_property[prop]}\n"
        self.datasets[name]["local"][prop] = value
        return ""

    def _zfs_set(self, args):
        *items, name = args
        if name not in self.datasets:
            return 1, "", self._missing(name)
        for item in items:
            prop, _eq, value = item.partition("=")
            err = self._set_one(name, prop, value)
            if err:
                return 1, "", err
        return 0, "", ""

    def _mountable(self, name):
        return self.value(name, "canmount")[0] == "on" and self.value(name, "mountpoint")[0].startswith("/")

    def _zfs_mount(self, args):
        (name,) = args
        if not self.value(name, "mountpoint")[0].startswith("/"):
            return 1, "", f"cannot mount '{name}': no mountpoint set\n"
        self.mounted.add(name)
        return 0, "", ""

    def _zfs_unmount(self, args):
        self.mounted.discard(args[-1])
        return 0, "", ""

    def _zfs_create(self, args):
        name, options, parents = args[-1], {}, "-p" in args
        for i, arg in enumerate(args[:-1]):
            if arg == "-o":
                prop, _eq, value = args[i + 1].partition("=")
                options[prop] = value
        chain = [name]
        while parents and "/" in chain[-1] and chain[-1].rsplit("/", 1)[0] not in self.datasets:
            chain.append(chain[-1].rsplit("/", 1)[0])
        if name in self.datasets:
            return (0, "", "") if parents else (1, "", f"cannot create '{name}': dataset already exists\n")
        if chain[-1].rsplit("/", 1)[0] not in self.datasets:
            return 1, "", f"cannot create '{name}': parent does not exist\n"
        for item in reversed(chain):
            self.add(item, **(options if item == name else {}))
            if self._mountable(item):
                self.mounted.add(item)
        return 0, "", ""

    def _zfs_destroy(self, args):
        name = args[-1]
        doomed = [n for n in self.datasets if n == name or ("-r" in args and n.startswith(name + "/"))]
        for item in sorted(doomed, key=lambda n: -n.count("/")):  # children first, as zfs destroy -r
            if item in self.busy:
                return 1, "", f"cannot destroy '{item}': dataset is busy\n"
            del self.datasets[item]
            self.mounted.discard(item)
        return 0, "", ""

    # -- views for assertions ----------------------------------------------------------------

    def tree(self):
        """Everything an operator would compare: datasets, local properties, mounts."""
        return dict(
            (name, (sorted(entry["local"].items()), sorted(entry["onetime"].items()), name in self.mounted))
            for name, entry in self.datasets.items()
        )


def world(lzc=True):
    """tank/DATA/srv mounted at /srv, as on a host where layer 2 ran before, and tank/home."""
    host = FakeZfsHost()
    host.add("tank/DATA", mountpoint="none")
    host.add("tank/DATA/srv", mountpoint="/srv", mounted=True)
    host.add("tank/home", mountpoint="/home", mounted=True)
    lib = FakeLibzfsCore(host) if lzc else None
    return host, lib, zfs_backend.ZfsBackend(host, lzc=lib)


# -- the fake itself behaves like pyzfs ---------------------------------------------------------


def test_fake_lzc_errors_match_pyzfs():
    host, lib, _backend = world()
    exc = lib.exceptions
    with pytest.raises(exc.FilesystemExists) as info:
        lib.lzc_create(b"tank/DATA/srv")
    assert info.value.errno == errno.EEXIST
    assert isinstance(info.value, exc.DatasetExists)
    with pytest.raises(exc.ParentNotFound) as info:
        lib.lzc_create(b"tank/DATA/srv/kind/solana")
    assert info.value.errno == errno.ENOENT
    with pytest.raises(exc.ParentNotFound):
        lib.lzc_create(b"no-such-pool/fs")
    with pytest.raises(exc.PropertyInvalid):
        lib.lzc_create(b"tank/x", "zfs", {b"recordsize": b"128k"})
    with pytest.raises(exc.PropertyInvalid):
        lib.lzc_create(b"tank/x", "zfs", {b"atime": 20})
    with pytest.raises(exc.DatasetTypeInvalid):
        lib.lzc_create(b"tank/x", ds_type="wrong")
    with pytest.raises(exc.FilesystemNameInvalid):
        lib.lzc_create(b"tank/bad!name")
    with pytest.raises(TypeError):
        lib.lzc_create("tank/x")
    lib.lzc_create(b"tank/x", "zfs", {b"atime": 0})
    assert lib.lzc_exists(b"tank/x") and not lib.lzc_exists(b"tank/y")
    assert "tank/x" not in host.mounted  # lzc_create never mounts
    with pytest.raises(exc.FilesystemNotFound):
        lib.lzc_destroy(b"tank/y")
    assert str(exc.FilesystemExists(b"tank/a")) == "[Errno 17] Filesystem already exists: 'b'tank/a''"


def test_load_libzfs_core_takes_a_module_with_pyzfs_api(tmp_path, monkeypatch):
    dev = tmp_path / "zfs"
    dev.write_text("")
    lib = FakeLibzfsCore(FakeZfsHost())
    monkeypatch.setitem(sys.modules, "libzfs_core", lib)
    assert zfs_backend.load_libzfs_core(str(dev)) == (lib, None)


# -- creating below an existing grandparent (issue 13) ------------------------------------------


def test_lzc_creates_only_the_missing_parents_below_an_existing_grandparent():
    host, lib, backend = world()
    result = zfs_ensure.ensure_datasets(backend, [{"name": "tank/DATA/srv/kind/solana"}], pool="tank")
    assert [c[1] for c in lib.calls] == [b"tank/DATA/srv/kind", b"tank/DATA/srv/kind/solana"]
    assert all(c[2] == "zfs" for c in lib.calls)
    (item,) = result["datasets"]
    assert item["action"] == "created"
    assert item["parents"] == ["tank/DATA/srv/kind"]
    assert item["write_path"] == "libzfs_core"
    assert {"tank/DATA/srv/kind", "tank/DATA/srv/kind/solana"} <= host.mounted
    assert host.value("tank/DATA/srv/kind/solana", "mountpoint") == (
        "/srv/kind/solana",
        "inherited from tank/DATA/srv",
    )


@pytest.mark.parametrize(
    "request_",
    [
        [{"name": "tank/DATA/srv/kind/solana", "properties": {"compression": "lz4", "quota": "1G"}}],
        [
            {"name": "tank/DATA/srv/kind", "properties": {"mountpoint": "/srv/kind"}},
            {"name": "tank/DATA/srv/kind/solana/ledger", "properties": {"com.example:role": "ledger"}},
            {"name": "tank/DATA/srv/kind/solana/log"},
        ],
        [{"name": "tank/new/a/b", "properties": {"mountpoint": "/srv/b"}}, {"name": "tank/new/c"}],
        [{"name": "tank/DATA/srv/x", "properties": {"canmount": "off"}}],
        [{"name": "tank/DATA/srv/y", "properties": {"casesensitivity": "mixed", "utf8only": "on"}}],
        [{"name": "tank/y", "properties": {"casesensitivity": "mixed", "mountpoint": "/y"}}],
        [{"name": "tank/home/a/b"}],
    ],
    ids=[
        "properties",
        "shared-parents",
        "below-unmounted-root",
        "canmount-off",
        "create-only",
        "create-only-below-pool",
        "parent-mounted",
    ],
)
def test_lzc_and_cli_paths_leave_the_same_tree(request_):
    cli_host, _none, cli = world(lzc=False)
    lzc_host, _lib, lzc = world()
    zfs_ensure.ensure_datasets(cli, request_)
    zfs_ensure.ensure_datasets(lzc, request_)
    assert lzc_host.tree() == cli_host.tree()
    again = zfs_ensure.ensure_datasets(lzc, request_)
    assert again["changed"] is False


def test_create_only_properties_are_never_set_after_creation():
    host, lib, backend = world()
    result = zfs_ensure.ensure_datasets(
        backend,
        [{"name": "tank/DATA/srv/ci/data", "properties": {"casesensitivity": "mixed", "atime": "off"}}],
    )
    # the parent through libzfs_core, the dataset with its create-only property through zfs create
    assert [c[1] for c in lib.calls] == [b"tank/DATA/srv/ci"]
    assert [
        "zfs",
        "create",
        "-o",
        "atime=off",
        "-o",
        "casesensitivity=mixed",
        "tank/DATA/srv/ci/data",
    ] in host.calls
    assert not any(c[:2] == ["zfs", "set"] for c in host.calls)
    assert host.value("tank/DATA/srv/ci/data", "casesensitivity") == ("mixed", "-")
    assert result["datasets"][0]["write_path"] == "cli"


def test_lzc_failure_part_way_says_what_was_done():
    host, _lib, backend = world()
    host.refuse["zfs set compression=lz4"] = (
        "cannot set property for 'tank/DATA/srv/a/b': pool I/O is suspended\n"
    )
    with pytest.raises(zfs.ZfsError) as info:
        zfs_ensure.ensure_datasets(
            backend, [{"name": "tank/DATA/srv/a/b", "properties": {"compression": "lz4"}}]
        )
    details = info.value.details
    assert details["changed"] is True
    assert details["created"] == ["tank/DATA/srv/a", "tank/DATA/srv/a/b"]
    assert details["properties_set"] == {}
    assert "pool I/O is suspended" in info.value.msg
    assert "done before the failure: created tank/DATA/srv/a; created tank/DATA/srv/a/b" in info.value.msg


def test_lzc_errors_become_zfs_errors():
    host, _lib, backend = world()
    host.add("tank/DATA/srv/taken")  # appears after the plan was made (another admin)
    with pytest.raises(
        zfs.ZfsError, match=r"libzfs_core create of 'tank/DATA/srv/taken' failed: Filesystem already"
    ):
        backend.create("tank/DATA/srv/taken", {})
    assert backend.journal == []
    with pytest.raises(zfs.ZfsError, match=r"Filesystem not found \(errno 2\)"):
        backend.destroy("tank/DATA/srv/gone")


def test_lzc_destroy_unmounts_first_and_is_journaled():
    host, lib, backend = world()
    host.add("tank/DATA/srv/old", mounted=True)
    result = zfs_ensure.ensure_datasets(backend, [{"name": "tank/DATA/srv/old", "state": "absent"}])
    assert result["datasets"][0]["write_path"] == "libzfs_core"
    assert ("lzc_destroy", b"tank/DATA/srv/old") in lib.calls
    assert "tank/DATA/srv/old" not in host.datasets
    assert backend.journal == [{"action": "destroyed", "name": "tank/DATA/srv/old", "properties": {}}]


# -- the CLI on the same OpenZFS host: what a run that stops part way did ----------------------


def test_openzfs_set_that_stops_part_way_journals_what_changed():
    """OpenZFS takes all properties in one `zfs set`, but the kernel applies them one at a time:
    after a refusal the properties are read back and those now set are reported."""
    host, _none, backend = world(lzc=False)
    host.refuse_property["quota"] = "size is less than current used or reserved space"
    with pytest.raises(zfs.ZfsError) as info:
        zfs_ensure.ensure_datasets(
            backend, [{"name": "tank/home", "properties": {"atime": "off", "quota": "1K"}}]
        )
    details = info.value.details
    assert details["changed"] is True
    assert details["properties_set"] == {"tank/home": {"atime": "off"}}
    assert ["zfs", "set", "atime=off", "quota=1024", "tank/home"] in host.calls
    assert host.value("tank/home", "atime") == ("off", "local")


def test_recursive_destroy_that_stops_part_way_journals_what_is_gone():
    host, _none, backend = world(lzc=False)
    backend._sleep = lambda _seconds: None
    for child in ("tank/home/old", "tank/home/old/a", "tank/home/old/b"):
        host.add(child)
    host.busy.add("tank/home/old/b")
    with pytest.raises(zfs.ZfsError, match="dataset is busy") as info:
        zfs_ensure.ensure_datasets(backend, [{"name": "tank/home/old", "state": "absent", "recursive": True}])
    assert info.value.details["destroyed"] == ["tank/home/old/a"]
    assert info.value.details["changed"] is True
