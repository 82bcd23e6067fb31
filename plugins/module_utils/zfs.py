# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ZFS backend for strata.ops modules.

Reads the state of every requested dataset in one ``zfs get -Hp`` pass, plans the changes as
pure data (so check mode and diff are exact), then applies them either through pyzfs'
``libzfs_core`` (when it imports and a kernel ZFS answers on /dev/zfs) or the ``zfs`` CLI.

The CLI speaks two dialects:

* ``openzfs``: OpenZFS on Linux/FreeBSD; accepts ``zfs list -p`` and ``zfs set a=1 b=2 ds``.
* ``zfs-fuse``: Debian's zfs-fuse (pool v23); refuses ``zfs list -p`` and takes one
  ``property=value`` per ``zfs set``. ``zfs get -Hp`` works on both.

Helpers raise ``ZfsError`` (or a subclass); a module's ``main()`` catches it once.
Commands run through a ``run_command(argv) -> (rc, stdout, stderr)`` callable, normally
``AnsibleModule.run_command``, so everything here is testable without ZFS.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import time

DIALECT_OPENZFS = "openzfs"
DIALECT_ZFS_FUSE = "zfs-fuse"
WRITE_PATH_LZC = "libzfs_core"
WRITE_PATH_CLI = "cli"

# Properties nobody can set (the dataset reports them). Checked by name first; for datasets
# we have read, a native property whose source is "-" is read-only too (except create-only).
READ_ONLY_PROPERTIES = frozenset(
    [
        "available",
        "avail",
        "clones",
        "compressratio",
        "createtxg",
        "creation",
        "defer_destroy",
        "encryptionroot",
        "filesystem_count",
        "guid",
        "inconsistent",
        "keystatus",
        "logicalreferenced",
        "logicalused",
        "lrefer",
        "lused",
        "mounted",
        "name",
        "objsetid",
        "origin",
        "ratio",
        "receive_resume_token",
        "redact_snaps",
        "refcompressratio",
        "refer",
        "referenced",
        "snapshot_count",
        "snapshots_changed",
        "type",
        "unique",
        "used",
        "usedbychildren",
        "usedbydataset",
        "usedbyrefreservation",
        "usedbysnapshots",
        "userrefs",
        "volblocksize",
        "written",
    ]
)

# Settable only when the dataset is created (zfs create -o); later they are fixed.
CREATE_ONLY_PROPERTIES = frozenset(
    ["casesensitivity", "normalization", "utf8only", "encryption", "keyformat", "pbkdf2iters"]
)

# Settable properties that 'zfs get' shows with source "-" (so the "-" rule must skip them).
SETTABLE_WITHOUT_SOURCE = frozenset(["version", "mlslabel"])

# Properties whose values are byte sizes: "10G", 1024, "128k" are normalised to bytes, as
# ``zfs get -p`` prints them. "none" means 0 for the quota/reservation family.
SIZE_PROPERTIES = frozenset(
    [
        "quota",
        "refquota",
        "reservation",
        "refreservation",
        "recordsize",
        "volsize",
        "special_small_blocks",
    ]
)

_COMPONENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_PROPERTY_RE = re.compile(r"^[A-Za-z0-9_.:@+-]+$")
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTPEZ]?)(?:I?B)?\s*$", re.IGNORECASE)
_MISSING_RE = re.compile(r"^cannot open '([^']+)': dataset does not exist$")
_UNITS = "KMGTPEZ"
MAX_NAME_LENGTH = 255


class ZfsError(Exception):
    """An error an operator can act on; ``details`` go into the module result."""

    def __init__(self, msg, **details):
        super(ZfsError, self).__init__(msg)
        self.msg = msg
        self.details = details


class ZfsValidationError(ZfsError):
    """The request is invalid; nothing was changed."""


class ZfsCommandError(ZfsError):
    """A zfs/zpool command failed."""

    def __init__(self, msg, cmd=None, rc=None, stdout="", stderr=""):
        super(ZfsCommandError, self).__init__(msg, cmd=cmd, rc=rc, stdout=stdout, stderr=stderr)
        self.cmd = cmd
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr


# --------------------------------------------------------------------------------------------
# Pure helpers: names, values, parsing
# --------------------------------------------------------------------------------------------


def pool_of(name):
    return name.split("/", 1)[0].split("@", 1)[0]


def parent_of(name):
    """Parent dataset of a filesystem (None for a pool root)."""
    if "@" in name:
        return name.split("@", 1)[0]
    return name.rsplit("/", 1)[0] if "/" in name else None


def is_within(name, root):
    """True when ``name`` (dataset or snapshot) is ``root`` or lies below it."""
    base = name.split("@", 1)[0]
    return base == root or base.startswith(root + "/")


def validate_dataset_name(name):
    """Return an error string for an invalid filesystem name, or None."""
    if not isinstance(name, str) or not name:
        return "dataset name must be a non-empty string"
    if len(name) > MAX_NAME_LENGTH:
        return "dataset name %r is longer than %d characters" % (name, MAX_NAME_LENGTH)
    if "@" in name or "#" in name:
        return "dataset name %r names a snapshot or bookmark; give a filesystem name (pool/a/b)" % name
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "dataset name %r must look like pool/a/b: no leading, trailing or double '/'" % name
    for component in name.split("/"):
        if component in (".", "..") or not _COMPONENT_RE.match(component):
            return (
                "dataset name %r has an invalid component %r: use letters, digits and _ . : -,"
                " starting with a letter or digit" % (name, component)
            )
    return None


def parse_size(value):
    """Parse a ZFS size ("10G", "1.5T", "131072", 4096) to bytes; None when not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        return None
    number, unit = match.groups()
    factor = 1024 ** (_UNITS.index(unit.upper()) + 1) if unit else 1
    return int(float(number) * factor)


def normalize_value(prop, value):
    """Normalise a desired property value to the form ``zfs get -Hp`` prints."""
    if isinstance(value, bool):  # YAML turns on/off into booleans
        return "on" if value else "off"
    text = str(value).strip()
    if prop in SIZE_PROPERTIES:
        if text.lower() == "none":
            return "0"
        size = parse_size(text)
        if size is not None:
            return str(size)
    if prop == "mountpoint" and len(text) > 1 and text.endswith("/"):
        return text.rstrip("/")
    return text


def source_kind(source):
    """'local', 'default', 'inherited', 'received', 'temporary' or 'none' (for '-')."""
    if source.startswith("inherited"):
        return "inherited"
    if source in ("-", ""):
        return "none"
    return source


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
            raise ZfsError("unexpected line in 'zfs get' output: %r" % line)
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


class ZfsState:
    """What one ``zfs get`` pass saw."""

    def __init__(self, datasets):
        self.datasets = datasets

    def exists(self, name):
        return name in self.datasets

    def get(self, name):
        return self.datasets.get(name)

    def children(self, name):
        prefix = name + "/"
        return sorted(n for n in self.datasets if n.startswith(prefix) and "@" not in n)

    def snapshots(self, name):
        prefix = name + "@"
        return sorted(n for n in self.datasets if n.startswith(prefix))

    def property(self, name, prop):
        entry = self.datasets.get(name)
        if entry is None:
            return None
        return entry["properties"].get(prop)


# --------------------------------------------------------------------------------------------
# Planning (pure): requests + state -> actions
# --------------------------------------------------------------------------------------------


def normalize_request(item):
    return {
        "name": item["name"],
        "state": item.get("state") or "present",
        "properties": dict(item.get("properties") or {}),
        "recursive": bool(item.get("recursive", False)),
    }


def validate_requests(requests, pools, pool=None):
    """Syntax and pool membership of every request; raise one error listing all problems."""
    errors = []
    seen = set()
    if pool is not None and pool not in pools:
        raise ZfsValidationError(
            "ZFS pool %r does not exist on this host (pools: %s). Create or import it first"
            " (zpool create / zpool import %s); nothing was changed."
            % (pool, ", ".join(pools) or "none", pool),
            pools=pools,
        )
    for req in requests:
        name = req["name"]
        problem = validate_dataset_name(name)
        if problem:
            errors.append(problem)
            continue
        if name in seen:
            errors.append("dataset %r is listed more than once" % name)
        seen.add(name)
        if pool is not None and pool_of(name) != pool:
            errors.append("dataset %r is outside pool %r: names must start with '%s/'" % (name, pool, pool))
        elif pool_of(name) not in pools:
            errors.append(
                "pool %r of dataset %r does not exist on this host (pools: %s); create or import"
                " it first (zpool create / zpool import)" % (pool_of(name), name, ", ".join(pools) or "none")
            )
        if req["state"] == "absent":
            if req["properties"]:
                errors.append("dataset %r: properties make no sense with state=absent" % name)
            if "/" not in name:
                errors.append("dataset %r is a pool root; destroying pools is not done here" % name)
        for prop in req["properties"]:
            if not isinstance(prop, str) or not _PROPERTY_RE.match(prop):
                errors.append("dataset %r: invalid property name %r" % (name, prop))
            elif prop.lower() in READ_ONLY_PROPERTIES:
                errors.append(
                    "dataset %r: property %r is read-only (ZFS reports it, nobody sets it);"
                    " remove it from properties" % (name, prop)
                )
    absent = [r["name"] for r in requests if r["state"] == "absent"]
    for req in requests:
        if req["state"] != "present":
            continue
        for other in absent:
            if other != req["name"] and is_within(req["name"], other):
                errors.append(
                    "dataset %r is requested present below %r which is requested absent"
                    % (req["name"], other)
                )
    if errors:
        raise ZfsValidationError(
            "invalid datasets request, nothing was changed: " + "; ".join(errors), errors=errors
        )


def _reference_properties(state, name):
    """A dataset whose property list tells which native properties exist and are settable."""
    for candidate in (name, pool_of(name)):
        entry = state.get(candidate)
        if entry is not None and entry["type"] in ("filesystem", "volume"):
            return entry
    return None


def plan(requests, state, pools, pool=None, origins=None):
    """Validate and compute one action per request.

    Each action: ``{"name", "state", "action": created|updated|destroyed|unchanged,
    "recursive", "properties" (desired, normalised), "changed_properties": {p: {before, after}},
    "destroys": [...]}``. Raises ZfsValidationError before anything changes.
    """
    validate_requests(requests, pools, pool)
    absent_names = set(r["name"] for r in requests if r["state"] == "absent")
    errors = []
    actions = []
    for req in requests:
        name = req["name"]
        entry = state.get(name)
        action = {
            "name": name,
            "state": req["state"],
            "recursive": req["recursive"],
            "properties": {},
            "changed_properties": {},
            "destroys": [],
        }
        if req["state"] == "present":
            reference = _reference_properties(state, name)
            for prop, raw in sorted(req["properties"].items()):
                desired = normalize_value(prop, raw)
                action["properties"][prop] = desired
                current = entry["properties"].get(prop) if entry else None
                native = ":" not in prop and "@" not in prop
                if native and reference is not None:
                    ref = reference["properties"].get(prop)
                    if ref is None and prop not in SIZE_PROPERTIES:
                        errors.append(
                            "dataset %r: property %r is not supported by this ZFS"
                            " (it is not in 'zfs get all' of %s)" % (name, prop, reference["name"])
                        )
                        continue
                    if (
                        ref is not None
                        and ref["source"] == "-"
                        and prop not in CREATE_ONLY_PROPERTIES
                        and prop not in SETTABLE_WITHOUT_SOURCE
                    ):
                        errors.append(
                            "dataset %r: property %r is read-only on this ZFS; remove it" % (name, prop)
                        )
                        continue
                if entry is None:
                    action["changed_properties"][prop] = {"before": None, "after": desired}
                    continue
                if (
                    current is not None
                    and current["value"] == desired
                    and (
                        source_kind(current["source"]) in ("local", "received")
                        or (prop in CREATE_ONLY_PROPERTIES and current["source"] == "-")
                    )
                ):
                    continue
                if prop in CREATE_ONLY_PROPERTIES:
                    errors.append(
                        "dataset %r: property %r can only be set when the dataset is created"
                        " (it is %r); recreate the dataset or drop the property"
                        % (name, prop, current["value"] if current else None)
                    )
                    continue
                action["changed_properties"][prop] = {
                    "before": current["value"] if current else None,
                    "before_source": current["source"] if current else None,
                    "after": desired,
                }
            if entry is None:
                action["action"] = "created"
            elif action["changed_properties"]:
                action["action"] = "updated"
            else:
                action["action"] = "unchanged"
        elif entry is None:
            action["action"] = "unchanged"
        else:
            children = [c for c in state.children(name) if c not in absent_names]
            snapshots = state.snapshots(name)
            if not req["recursive"] and (children or snapshots):
                errors.append(
                    "dataset %r has %s; set recursive: true to destroy it with everything below"
                    " it (zfs destroy -r)"
                    % (
                        name,
                        " and ".join(
                            part
                            for part in (
                                children and "children (%s)" % ", ".join(children),
                                snapshots and "snapshots (%s)" % ", ".join(snapshots),
                            )
                            if part
                        ),
                    )
                )
                continue
            if req["recursive"] and origins is not None:
                outside = sorted(
                    clone
                    for clone, origin in origins.items()
                    if origin not in ("-", "") and is_within(origin, name) and not is_within(clone, name)
                )
                if outside:
                    errors.append(
                        "dataset %r has snapshots with clones outside it (%s); zfs destroy -R would"
                        " destroy them too, which is never done here: promote or destroy those"
                        " clones first" % (name, ", ".join(outside))
                    )
                    continue
                action["destroys"] = sorted(n for n in origins if is_within(n, name))
            else:
                action["destroys"] = [name]
            action["action"] = "destroyed"
        actions.append(action)
    if errors:
        raise ZfsValidationError(
            "invalid datasets request, nothing was changed: " + "; ".join(errors), errors=errors
        )
    return actions


def action_diff(action, state):
    """Ansible diff (before/after) for one action."""
    name = action["name"]
    entry = state.get(name)
    before = {"state": "present" if entry else "absent"}
    after = {"state": action["state"]}
    if action["state"] == "present":
        props = sorted(action["properties"])
        if entry:
            before["properties"] = dict((p, (entry["properties"].get(p) or {}).get("value")) for p in props)
        after["properties"] = dict((p, action["properties"][p]) for p in props)
    elif action["destroys"]:
        before["destroys"] = action["destroys"]
    return {"before_header": name, "after_header": name, "before": before, "after": after}


# --------------------------------------------------------------------------------------------
# Backend: commands
# --------------------------------------------------------------------------------------------


def load_libzfs_core(dev_zfs="/dev/zfs"):
    """Return (module, None) when pyzfs can be used, else (None, reason)."""
    if not os.path.exists(dev_zfs):
        return None, "%s is missing (no kernel ZFS, e.g. zfs-fuse)" % dev_zfs
    try:
        import libzfs_core  # noqa: PLC0415 - optional dependency, checked at run time

        # pyzfs loads libzfs_core.so lazily on some versions: touch a function to be sure.
        libzfs_core.lzc_create  # noqa: B018
    except (ImportError, OSError, AttributeError) as exc:
        return None, "libzfs_core (pyzfs) is not usable: %s" % exc
    return libzfs_core, None


class ZfsBackend:
    """Runs zfs/zpool. ``run_command(argv) -> (rc, out, err)``."""

    def __init__(self, run_command, zfs="zfs", zpool="zpool", lzc=None, lzc_reason=None):
        self._run = run_command
        self.zfs = zfs
        self.zpool = zpool
        self.lzc = lzc
        self.lzc_reason = lzc_reason
        self._dialect = None
        self.commands = []
        self.busy_retries = 8
        self.busy_delay = 0.25
        self._sleep = time.sleep

    @property
    def write_path(self):
        return WRITE_PATH_LZC if self.lzc is not None else WRITE_PATH_CLI

    def run(self, argv, check=True, what=None):
        rc, out, err = self._run(argv)
        self.commands.append(argv)
        if check and rc != 0:
            raise ZfsCommandError(
                "%s failed (rc=%s): %s" % (what or " ".join(argv), rc, (err or out).strip()),
                cmd=argv,
                rc=rc,
                stdout=out,
                stderr=err,
            )
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

    def read(self, names, depth=1):
        """One ``zfs get -Hp -d DEPTH all`` pass over names (missing ones are simply absent).

        Depth 1 shows each dataset's direct children and snapshots (enough to refuse a
        non-recursive destroy) without walking whole trees.
        """
        roots = sorted(set(names))
        if not roots:
            return ZfsState({})
        argv = [self.zfs, "get", "-Hp", "-d", str(depth), "-o", "name,property,value,source", "all"]
        rc, out, err = self.run(argv + roots, check=False)
        if rc != 0:
            missing = missing_from_stderr(err)
            if missing is None:
                raise ZfsCommandError(
                    "zfs get failed (rc=%s): %s" % (rc, err.strip()), cmd=argv + roots, rc=rc, stderr=err
                )
        return ZfsState(parse_get_output(out))

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

    # -- writes ------------------------------------------------------------------------------

    def create(self, name, properties, state=None):
        """Create ``name`` (and missing parents) with properties. Returns the path used."""
        if self.lzc is not None:
            try:
                return self._lzc_create(name, properties, state)
            except ZfsError:
                raise
            except Exception as exc:  # pyzfs raises its own ZFSError family
                raise ZfsError("libzfs_core create of %r failed: %s" % (name, exc)) from exc
        argv = [self.zfs, "create", "-p"]
        for prop, value in sorted(properties.items()):
            argv += ["-o", "%s=%s" % (prop, value)]
        self.run([*argv, name])
        return WRITE_PATH_CLI

    def _lzc_create(self, name, properties, state):
        # lzc_create neither creates parents nor mounts, and wants properties in kernel form:
        # create the chain bare, set properties with the CLI, then mount like zfs create does.
        chain = []
        current = name
        while current is not None and (state is None or not state.exists(current)) and "/" in current:
            chain.append(current)
            current = parent_of(current)
        for item in reversed(chain):
            self.lzc.lzc_create(item.encode("utf-8"))
        if properties:
            self.set(name, properties, cli=True)
        _rc, out, _err = self.run(
            [self.zfs, "get", "-H", "-o", "value", "canmount,mountpoint", name], what="zfs get mountpoint"
        )
        values = out.split()
        if len(values) == 2 and values[0] == "on" and values[1].startswith("/"):
            self.run([self.zfs, "mount", name])
        return WRITE_PATH_LZC

    def set(self, name, properties, cli=False):
        if not properties:
            return WRITE_PATH_CLI
        items = ["%s=%s" % (prop, value) for prop, value in sorted(properties.items())]
        if self.dialect() == DIALECT_OPENZFS:
            self.run([self.zfs, "set", *items, name])
        else:
            for item in items:  # zfs-fuse takes one property=value per call
                self.run([self.zfs, "set", item, name])
        return WRITE_PATH_CLI

    def destroy(self, name, recursive=False):
        if self.lzc is not None and not recursive:
            self.run([self.zfs, "unmount", name], check=False)
            try:
                self.lzc.lzc_destroy(name.encode("utf-8"))
            except Exception as exc:
                raise ZfsError("libzfs_core destroy of %r failed: %s" % (name, exc)) from exc
            return WRITE_PATH_LZC
        argv = [self.zfs, "destroy"] + (["-r"] if recursive else []) + [name]
        # zfs-fuse answers "dataset is busy" while it is still releasing just-unmounted
        # datasets; each try gets further, so retry a few times before giving up.
        for attempt in range(self.busy_retries + 1):
            rc, out, err = self.run(argv, check=False)
            if rc == 0:
                return WRITE_PATH_CLI
            if "dataset is busy" not in err or attempt == self.busy_retries:
                break
            self._sleep(self.busy_delay * (attempt + 1))
        raise ZfsCommandError(
            "%s failed (rc=%s): %s" % (" ".join(argv), rc, (err or out).strip()),
            cmd=argv,
            rc=rc,
            stdout=out,
            stderr=err,
        )


# --------------------------------------------------------------------------------------------
# Orchestration used by the zfs_dataset module
# --------------------------------------------------------------------------------------------


def _apply(backend, actions, state):
    """Destroy deepest first, then create/update shallowest first."""
    done = []
    destroys = sorted((a for a in actions if a["action"] == "destroyed"), key=lambda a: -a["name"].count("/"))
    writes = sorted(
        (a for a in actions if a["action"] in ("created", "updated")), key=lambda a: a["name"].count("/")
    )
    try:
        for action in destroys:
            action["write_path"] = backend.destroy(action["name"], recursive=action["recursive"])
            done.append("%s %s" % (action["action"], action["name"]))
        for action in writes:
            if action["action"] == "created":
                action["write_path"] = backend.create(action["name"], action["properties"], state)
            else:
                changed = dict((p, action["properties"][p]) for p in action["changed_properties"])
                action["write_path"] = backend.set(action["name"], changed)
            done.append("%s %s" % (action["action"], action["name"]))
    except ZfsError as exc:
        # Say what already happened: the run stopped part way.
        exc.details["changed"] = bool(done)
        exc.details["done"] = done
        raise


def ensure_datasets(backend, items, pool=None, check_mode=False, want_diff=False):
    """Converge many datasets in one call. Returns the module result (without 'failed')."""
    requests = [normalize_request(item) for item in items]
    pools = backend.pools()
    validate_requests(requests, pools, pool)
    names = [r["name"] for r in requests] + sorted(set(pool_of(r["name"]) for r in requests))
    state = backend.read(names)
    origins = None
    if any(r["state"] == "absent" and r["recursive"] and state.exists(r["name"]) for r in requests):
        origins = backend.origins(set(pool_of(r["name"]) for r in requests))
    actions = plan(requests, state, pools, pool=pool, origins=origins)
    dialect = backend.dialect(pools[0] if pools else None)
    changed = any(a["action"] != "unchanged" for a in actions)
    if not check_mode:
        _apply(backend, actions, state)
    datasets = []
    for action in actions:
        item = {
            "name": action["name"],
            "state": action["state"],
            "action": action["action"],
            "changed_properties": action["changed_properties"],
        }
        if action["state"] == "present":
            item["properties"] = action["properties"]
        if action["action"] == "destroyed":
            item["destroys"] = action["destroys"]
        if "write_path" in action:
            item["write_path"] = action["write_path"]
        datasets.append(item)
    result = {
        "changed": changed,
        "datasets": datasets,
        "write_path": backend.write_path,
        "dialect": dialect,
    }
    if backend.lzc_reason:
        result["write_path_reason"] = backend.lzc_reason
    if want_diff:
        result["diff"] = [action_diff(a, state) for a in actions if a["action"] != "unchanged"]
    return result
