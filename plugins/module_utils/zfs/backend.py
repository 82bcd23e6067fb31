# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Talking to ZFS: the zfs/zpool CLI in either dialect, or pyzfs' libzfs_core when it imports and
a kernel ZFS answers on /dev/zfs. Every change it makes is recorded (``journal``)."""

import os
import re
import time

from ansible_collections.strata.ops.plugins.module_utils.zfs import (
    DIALECT_OPENZFS,
    DIALECT_ZFS_FUSE,
    WRITE_PATH_CLI,
    WRITE_PATH_LZC,
    ZfsCommandError,
    ZfsError,
)
from ansible_collections.strata.ops.plugins.module_utils.zfs.plan import ZfsState
from ansible_collections.strata.ops.plugins.module_utils.zfs.properties import CREATE_ONLY_PROPERTIES

_MISSING_RE = re.compile(r"^cannot open '([^']+)': dataset does not exist$")


def parse_get_output(text):
    """Parse ``zfs get -Hp -o name,property,value,source`` output.

    Returns ``{name: {"type": ..., "properties": {prop: {"value": v, "source": s}}}}``.
    Works for both dialects (OpenZFS and zfs-fuse print the same four tab-separated fields).
    """
    datasets = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 4:
            raise ZfsError(f"unexpected line in 'zfs get' output: {line!r}")
        name, prop, source = fields[0], fields[1], fields[-1]
        value = "\t".join(fields[2:-1])
        entry = datasets.setdefault(name, {"name": name, "type": None, "properties": {}})
        entry["properties"][prop] = {"value": value, "source": source}
        if prop == "type":
            entry["type"] = value
    for name, entry in datasets.items():
        if entry["type"] is None:
            entry["type"] = "snapshot" if "@" in name else "filesystem"
    return datasets


def missing_from_stderr(stderr):
    """Names zfs reported as missing; raises when stderr holds any other error."""
    missing = []
    for raw in stderr.splitlines():
        line = raw.strip()
        if not line:
            continue
        match = _MISSING_RE.match(line)
        if not match:
            return None
        missing.append(match.group(1))
    return missing


def command_failed(argv, rc, out, err, what=None):
    """The error for a zfs/zpool command that failed, with its own output."""
    return ZfsCommandError(
        f"{what or ' '.join(argv)} failed (rc={rc}): {(err or out).strip()}",
        cmd=argv,
        rc=rc,
        stdout=out,
        stderr=err,
    )


def load_libzfs_core(dev_zfs="/dev/zfs"):
    """Return (module, None) when pyzfs can be used, else (None, reason)."""
    if not os.path.exists(dev_zfs):
        return None, f"{dev_zfs} is missing (no kernel ZFS, e.g. zfs-fuse)"
    try:
        import libzfs_core  # noqa: PLC0415 - optional dependency, checked at run time

        # pyzfs loads libzfs_core.so lazily on some versions: touch what we use to be sure.
        libzfs_core.lzc_create  # noqa: B018
        libzfs_core.exceptions.ZFSError  # noqa: B018
    except (ImportError, OSError, AttributeError) as exc:
        return None, f"libzfs_core (pyzfs) is not usable: {exc}"
    return libzfs_core, None


class ZfsBackend:
    """Runs zfs/zpool. ``run_command(argv) -> (rc, out, err)``.

    Every change that succeeded is appended to ``journal`` (``{"action": created|set|destroyed,
    "name", "properties"}``), so a run that stops part way can say exactly what it did.
    """

    def __init__(self, run_command, zfs="zfs", zpool="zpool", lzc=None, lzc_reason=None):
        self._run = run_command
        self.zfs = zfs
        self.zpool = zpool
        self.lzc = lzc
        self.lzc_reason = lzc_reason
        self._dialect = None
        self.commands = []
        self.journal = []
        self.busy_retries = 8
        self.busy_delay = 0.25
        self._sleep = time.sleep
        self.parallel = 1  # creates and updates at once (zfs/ensure.py)

    @property
    def write_path(self):
        return WRITE_PATH_LZC if self.lzc is not None else WRITE_PATH_CLI

    def _did(self, action, name, properties=None):
        self.journal.append({"action": action, "name": name, "properties": dict(properties or {})})

    def run(self, argv, check=True, what=None):
        rc, out, err = self._run(argv)
        self.commands.append(argv)
        if check and rc != 0:
            raise command_failed(argv, rc, out, err, what)
        return rc, out, err

    def pools(self):
        _rc, out, _err = self.run([self.zpool, "list", "-H", "-o", "name"], what="zpool list")
        return [line.strip() for line in out.splitlines() if line.strip()]

    def dialect(self, probe_target=None):
        """'openzfs' or 'zfs-fuse', probed once: zfs-fuse refuses ``zfs list -p``."""
        if self._dialect is None:
            argv = [self.zfs, "list", "-H", "-p", "-o", "name"]
            if probe_target:
                argv += ["-d", "0", probe_target]
            rc, _out, err = self.run(argv, check=False)
            if rc != 0 and "invalid option" in (err or ""):
                self._dialect = DIALECT_ZFS_FUSE
            else:
                self._dialect = DIALECT_OPENZFS
        return self._dialect

    def read(self, names, depth=1, properties=None):
        """One ``zfs get -Hp -d DEPTH`` pass over names (missing ones are simply absent): of
        ``all`` properties, or of ``type`` and ``properties`` only (on zfs-fuse, ``all`` costs
        about 5x as much as a few named ones).

        Depth 1 shows each dataset's direct children and snapshots (enough to refuse a
        non-recursive destroy) without walking whole trees.
        """
        roots = sorted(set(names))
        if not roots:
            return ZfsState({})
        wanted = "all" if properties is None else ",".join(["type", *sorted(set(properties) - {"type"})])
        argv = [self.zfs, "get", "-Hp", "-d", str(depth), "-o", "name,property,value,source", wanted]
        rc, out, err = self.run(argv + roots, check=False)
        if rc != 0:
            missing = missing_from_stderr(err)
            if missing is None:
                raise ZfsCommandError(
                    f"zfs get failed (rc={rc}): {err.strip()}", cmd=argv + roots, rc=rc, stderr=err
                )
        datasets = parse_get_output(out)
        if properties is not None:
            # A named user property that is not set reads "-" from "-"; `all` leaves it out.
            for entry in datasets.values():
                props = entry["properties"]
                for prop in [p for p in props if ":" in p and props[p] == {"value": "-", "source": "-"}]:
                    del props[prop]
        return ZfsState(datasets)

    def existing(self, names):
        """The subset of ``names`` that exist, from one ``zfs list``."""
        argv = [self.zfs, "list", "-H", "-o", "name", *sorted(set(names))]
        rc, out, err = self.run(argv, check=False)
        if rc != 0 and missing_from_stderr(err) is None:
            raise ZfsCommandError(f"zfs list failed (rc={rc}): {err.strip()}", cmd=argv, rc=rc, stderr=err)
        return set(line.strip() for line in out.splitlines() if line.strip())

    def origins(self, pools):
        """{dataset or snapshot: origin} for everything in the pools (finds clones)."""
        argv = [self.zfs, "list", "-H", "-r", "-o", "name,origin", "-t", "filesystem,volume,snapshot"]
        _rc, out, _err = self.run(argv + sorted(pools), what="zfs list (origins)")
        result = {}
        for line in out.splitlines():
            if line.strip():
                name, _sep, origin = line.partition("\t")
                result[name] = origin.strip()
        return result

    def own_snapshots(self, datasets):
        """From one ``zfs get -Hp -d 1``: ({dataset: [(creation seconds, snapshot), ...] oldest
        first}, {dataset: type}, [datasets that do not exist])."""
        names = sorted(set(datasets))
        argv = [self.zfs, "get", "-Hp", "-d", "1", "-o", "name,property,value,source", "creation,type"]
        argv += names
        rc, out, err = self.run(argv, check=False)
        missing = []
        if rc != 0:
            missing = missing_from_stderr(err)
            if missing is None:
                raise ZfsCommandError(f"zfs get failed (rc={rc}): {err.strip()}", cmd=argv, rc=rc, stderr=err)
        found = parse_get_output(out)
        result = {}
        for name in names:
            if name in missing or name not in found:
                continue
            own = [
                (int(entry["properties"]["creation"]["value"]), snap)
                for snap, entry in found.items()
                if snap.startswith(name + "@") and "creation" in entry["properties"]
            ]
            result[name] = sorted(own)
        return result, {n: found[n]["type"] for n in result}, sorted(set(names) - set(result))

    # -- writes ------------------------------------------------------------------------------

    def create(self, name, properties, parents=()):
        """Create the missing ``parents`` (shallowest first, bare and mounted, as ``zfs create -p``
        makes them), then ``name`` with ``properties``. Returns the path that created ``name``."""
        for parent in parents:
            self._create_one(parent, {})
        return self._create_one(name, properties)

    def _create_one(self, name, properties):
        # lzc_create takes properties only in the kernel's encoding (index values as numbers,
        # zfs_prop.c) and encryption keys as raw bytes: a dataset with create-only properties
        # is created by `zfs create -o`, which encodes them and reads keys, so none is ever
        # set afterwards.
        if self.lzc is not None and not CREATE_ONLY_PROPERTIES.intersection(properties):
            return self._lzc_create(name, properties)
        argv = [self.zfs, "create"]
        for prop, value in sorted(properties.items()):
            argv += ["-o", f"{prop}={value}"]
        argv.append(name)
        rc, out, err = self.run(argv, check=False)
        # "filesystem successfully created, but not mounted": it exists all the same.
        if rc == 0 or "successfully created" in err:
            self._did("created", name, properties)
        if rc != 0:
            raise command_failed(argv, rc, out, err)
        return WRITE_PATH_CLI

    def _lzc_create(self, name, properties):
        # lzc_create makes a bare filesystem and never mounts it (zfs create does both): set
        # the properties through the CLI, which encodes them, then mount it as zfs create would.
        try:
            self.lzc.lzc_create(name.encode("utf-8"), "zfs", {})
        except self.lzc.exceptions.ZFSError as exc:
            raise ZfsError(f"libzfs_core create of {name!r} failed: {_lzc_reason(exc)}") from exc
        self._did("created", name)
        self.set(name, properties)
        self._mount_like_create(name)
        return WRITE_PATH_LZC

    def _mount_like_create(self, name):
        # zfs create mounts a new filesystem whose canmount is on and whose mountpoint is a path
        # (zfs_main.c zfs_do_create; zfs_mount skips none and legacy).
        _rc, out, _err = self.run(
            [self.zfs, "get", "-H", "-o", "value", "canmount,mountpoint", name],
            what="zfs get canmount,mountpoint",
        )
        values = out.splitlines()
        if len(values) == 2 and values[0] == "on" and values[1].startswith("/"):
            self.run([self.zfs, "mount", name])

    def mount(self, name):
        """Mount an existing filesystem (zfs mount), as zfs create would have."""
        self.run([self.zfs, "mount", name])
        self._did("mounted", name)
        return WRITE_PATH_CLI

    def snapshot(self, name):
        """Take the snapshot ``name`` (dataset@snap) through the CLI."""
        self.run([self.zfs, "snapshot", name])
        self._did("created", name)
        return WRITE_PATH_CLI

    def set(self, name, properties):
        if not properties:
            return WRITE_PATH_CLI
        items = sorted(properties.items())
        if self.dialect() == DIALECT_ZFS_FUSE:
            for prop, value in items:  # zfs-fuse takes one property=value per call
                self.run([self.zfs, "set", f"{prop}={value}", name])
                self._did("set", name, {prop: value})
            return WRITE_PATH_CLI
        try:
            self.run([self.zfs, "set"] + [f"{prop}={value}" for prop, value in items] + [name])
        except ZfsCommandError:
            # The kernel applies a list one property at a time (zfs_set_prop_nvlist) and may
            # stop part way: journal the properties that now have their new value.
            self._journal_set(name, properties)
            raise
        self._did("set", name, properties)
        return WRITE_PATH_CLI

    def _journal_set(self, name, properties):
        argv = [self.zfs, "get", "-Hp", "-o", "property,value,source", ",".join(sorted(properties)), name]
        rc, out, _err = self.run(argv, check=False)
        if rc != 0:
            return
        now = {}
        for line in out.splitlines():
            fields = line.split("\t")
            if len(fields) >= 3 and fields[-1] == "local":
                now[fields[0]] = "\t".join(fields[1:-1])
        done = dict((p, v) for p, v in properties.items() if now.get(p) == v)
        if done:
            self._did("set", name, done)

    def _journal_destroyed(self, names):
        # zfs destroy -r goes child by child and may stop part way: journal what is gone.
        names = list(names)
        try:
            left = self.existing(names)
        except ZfsError:
            return
        for gone in names:
            if gone not in left:
                self._did("destroyed", gone)

    def destroy(self, name, recursive=False, destroys=None):
        """Destroy ``name`` (with everything below it when recursive; ``destroys`` lists those,
        to journal what went when a recursive destroy stops part way)."""
        if self.lzc is not None and not recursive:
            self.run([self.zfs, "unmount", name], check=False)
            try:
                self.lzc.lzc_destroy(name.encode("utf-8"))
            except self.lzc.exceptions.ZFSError as exc:
                raise ZfsError(f"libzfs_core destroy of {name!r} failed: {_lzc_reason(exc)}") from exc
            self._did("destroyed", name)
            return WRITE_PATH_LZC
        argv = [self.zfs, "destroy"] + (["-r"] if recursive else []) + [name]
        # zfs-fuse answers "dataset is busy" while it is still releasing just-unmounted
        # datasets; each try gets further, so retry a few times before giving up.
        for attempt in range(self.busy_retries + 1):
            rc, out, err = self.run(argv, check=False)
            if rc == 0:
                self._did("destroyed", name)
                return WRITE_PATH_CLI
            if "dataset is busy" not in err or attempt == self.busy_retries:
                break
            self._sleep(self.busy_delay * (attempt + 1))
        if recursive and destroys:
            self._journal_destroyed(d for d in destroys if "@" not in d)
        raise command_failed(argv, rc, out, err)


def _lzc_reason(exc):
    """pyzfs' exceptions (libzfs_core/exceptions.py) carry a message and an errno."""
    message = getattr(exc, "message", None) or str(exc)
    return f"{message} (errno {getattr(exc, 'errno', '?')})"
