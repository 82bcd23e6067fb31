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
# "none" is a value of these (zfs_prop.c: "<size> | none"); quota and refquota refuse 0 instead.
NONE_SIZE_PROPERTIES = frozenset(["quota", "refquota", "reservation", "refreservation"])
# Counts: a number or "none" (unlimited), printed as "none" by ``zfs get -p``.
COUNT_PROPERTIES = frozenset(["filesystem_limit", "snapshot_limit"])

# -- What the zfs CLI accepts as a property value, per dialect ----------------------------------
# Index properties take exactly one of these strings (libzfs zprop_string_to_index compares
# case-sensitively). OpenZFS: the tables of module/zcommon/zfs_prop.c, as the union over its
# releases (a release that does not know a newer value refuses it when applied, and the result
# then says what was done). zfs-fuse: the values its `zfs set` usage lists (pool v23), checked
# on the test bed.
_ON_OFF = ("on", "off")
_GZIP = ("gzip", *("gzip-%d" % level for level in range(1, 10)))
_ZSTD_FAST_LEVELS = [*range(1, 11), *range(20, 101, 10), 500, 1000]
_ZSTD = (
    "zstd",
    "zstd-fast",
    *("zstd-%d" % level for level in range(1, 20)),
    *("zstd-fast-%d" % level for level in _ZSTD_FAST_LEVELS),
)
_INDEX_COMMON = {
    "aclinherit": ("discard", "noallow", "restricted", "passthrough", "secure", "passthrough-x"),
    "atime": _ON_OFF,
    "canmount": ("on", "off", "noauto"),
    "casesensitivity": ("sensitive", "insensitive", "mixed"),
    "copies": ("1", "2", "3"),
    "devices": _ON_OFF,
    "exec": _ON_OFF,
    "logbias": ("latency", "throughput"),
    "nbmand": _ON_OFF,
    "normalization": ("none", "formC", "formD", "formKC", "formKD"),
    "primarycache": ("all", "none", "metadata"),
    "readonly": _ON_OFF,
    "secondarycache": ("all", "none", "metadata"),
    "setuid": _ON_OFF,
    "utf8only": _ON_OFF,
    "vscan": _ON_OFF,
    "zoned": _ON_OFF,
}
INDEX_VALUES = {
    DIALECT_ZFS_FUSE: dict(
        _INDEX_COMMON,
        aclmode=("discard", "groupmask", "passthrough"),
        checksum=("on", "off", "fletcher2", "fletcher4", "sha256"),
        compression=("on", "off", "lzjb", *_GZIP, "zle"),
        dedup=("on", "off", "verify", "sha256", "sha256,verify"),
        snapdir=("hidden", "visible"),
        version=("1", "2", "3", "4", "current"),
        xattr=_ON_OFF,
    ),
    DIALECT_OPENZFS: dict(
        _INDEX_COMMON,
        aclmode=("discard", "groupmask", "passthrough", "restricted"),
        acltype=("off", "nfsv4", "posix", "disabled", "noacl", "posixacl"),
        checksum=(
            "on",
            "off",
            "fletcher2",
            "fletcher4",
            "sha256",
            "noparity",
            "sha512",
            "skein",
            "edonr",
            "blake3",
        ),
        compression=("on", "off", "lzjb", *_GZIP, "zle", "lz4", *_ZSTD),
        dedup=(
            "on",
            "off",
            "verify",
            "sha256",
            "sha256,verify",
            "sha512",
            "sha512,verify",
            "skein",
            "skein,verify",
            "edonr,verify",
            "blake3",
            "blake3,verify",
        ),
        dnodesize=("legacy", "auto", "1k", "2k", "4k", "8k", "16k"),
        encryption=(
            "on",
            "off",
            *("aes-%d-%s" % (bits, mode) for mode in ("ccm", "gcm") for bits in (128, 192, 256)),
        ),
        jailed=_ON_OFF,
        keyformat=("none", "raw", "hex", "passphrase"),
        overlay=_ON_OFF,
        redundant_metadata=("all", "most", "some", "none"),
        relatime=_ON_OFF,
        snapdev=("hidden", "visible"),
        snapdir=("hidden", "visible", "disabled"),
        sync=("standard", "always", "disabled"),
        version=("1", "2", "3", "4", "5", "current"),
        volmode=("default", "full", "geom", "dev", "none"),
        xattr=("on", "off", "sa", "dir"),
    ),
}
# How the CLI's usage names the long lists (zfs_prop.c registration strings).
_INDEX_USAGE = {
    (DIALECT_ZFS_FUSE, "compression"): "on | off | lzjb | gzip | gzip-[1-9] | zle",
    (DIALECT_OPENZFS, "compression"): "on | off | lzjb | gzip | gzip-[1-9] | zle | lz4 | zstd | zstd-[1-19]"
    " | zstd-fast | zstd-fast-[1-10,20,30,40,50,60,70,80,90,100,500,1000]",
}
# Largest recordsize: SPA_OLD_MAXBLOCKSIZE (128K) on pool v23; SPA_MAXBLOCKSIZE (16M) with
# OpenZFS' large_blocks feature (a pool without it refuses more than 128K when applied).
MAX_RECORDSIZE = {DIALECT_ZFS_FUSE: 128 * 1024, DIALECT_OPENZFS: 16 * 1024 * 1024}
# Settable name@id properties (zfs_userquota_prop_prefixes); zfs-fuse knows the first two.
QUOTA_AT_PREFIXES = {
    DIALECT_ZFS_FUSE: ("userquota@", "groupquota@"),
    DIALECT_OPENZFS: (
        "userquota@",
        "groupquota@",
        "userobjquota@",
        "groupobjquota@",
        "projectquota@",
        "projectobjquota@",
    ),
}
READ_ONLY_AT_PREFIXES = ("userused@", "groupused@", "userobjused@", "groupobjused@", "projectused@")
READ_ONLY_AT_PREFIXES += ("projectobjused@", "written@", "written#")
ZFS_MAXPROPLEN = 4096  # MAXPATHLEN: longest value libzfs accepts ("... is too long")
ZAP_MAXNAMELEN = 256  # longest property name + 1 (user properties)

_COMPONENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_NATIVE_PROPERTY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# A user property: lowercase letters, digits and - _ . : with at least one ':' (zfs_prop_user).
_USER_PROPERTY_RE = re.compile(r"^[a-z0-9_.:-]*:[a-z0-9_.:-]*$")
# zfs_nicestrtonum (libzfs_util.c): a number, then an optional suffix of B K M G T P E Z, where
# K..Z may be followed by B or (OpenZFS only) iB, case-insensitively.
_NUMBER_RE = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(.*)$")
_SUFFIX_RE = {
    DIALECT_OPENZFS: re.compile(r"^(?:B|[KMGTPEZ](?:I?B)?)?$", re.IGNORECASE),
    DIALECT_ZFS_FUSE: re.compile(r"^(?:B|[KMGTPEZ]B?)?$", re.IGNORECASE),
}
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
    """Parse a ZFS size ("10G", "1.5T", ".5M", "131072", 4096) to bytes; None when not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    match = _NUMBER_RE.match(str(value).strip())
    if not match or not _SUFFIX_RE[DIALECT_OPENZFS].match(match.group(2)):
        return None
    number, suffix = match.groups()
    unit = suffix[:1].upper()
    factor = 1024 ** (_UNITS.index(unit) + 1) if unit and unit != "B" else 1
    if "." in number:
        return int(float(number) * factor)
    return int(number) * factor


def normalize_value(prop, value):
    """Normalise a desired property value to the form ``zfs get -Hp`` prints."""
    if isinstance(value, bool):  # YAML turns on/off into booleans
        return "on" if value else "off"
    text = str(value).strip()
    if prop in SIZE_PROPERTIES or prop in COUNT_PROPERTIES:
        if text == "none" and prop in SIZE_PROPERTIES:
            return "0"
        size = parse_size(text)
        if size is not None:
            return str(size)
    if prop == "mountpoint" and len(text) > 1 and text.endswith("/"):
        return text.rstrip("/")
    return text


def _shown(value):
    """A requested value as the operator wrote it (YAML booleans as on/off)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return "null" if value is None else str(value)


def property_name_problem(prop, dialect=None):
    """Why ``prop`` is no property name the zfs CLI would take (None when it is one)."""
    if not isinstance(prop, str) or not prop:
        return "invalid property name %r" % (prop,)
    if "@" in prop or "#" in prop:
        prefix = prop.split("@", 1)[0] + "@" if "@" in prop else prop
        if prop.startswith(READ_ONLY_AT_PREFIXES):
            return "property %r is read-only (ZFS reports it, nobody sets it); remove it" % prop
        settable = QUOTA_AT_PREFIXES[dialect or DIALECT_OPENZFS]
        if prefix not in settable or prop == prefix:
            return "invalid property name %r: of the name@id properties this ZFS sets only %s" % (
                prop,
                ", ".join(p + "<user|group|project>" for p in settable),
            )
        return None
    if ":" in prop:
        if not _USER_PROPERTY_RE.match(prop):
            return (
                "invalid user property name %r: use lowercase letters, digits and - _ . : only"
                " (for example com.example:owner)" % prop
            )
        if len(prop) >= ZAP_MAXNAMELEN:
            return "user property name %r is too long (at most %d characters)" % (prop, ZAP_MAXNAMELEN - 1)
        return None
    if not _NATIVE_PROPERTY_RE.match(prop):
        return "invalid property name %r: native properties are lowercase (for example compression)" % prop
    if prop in READ_ONLY_PROPERTIES:
        return "property %r is read-only (ZFS reports it, nobody sets it); remove it from properties" % prop
    return None


def _nice(size):
    """128K, 16M: a power-of-two size as zfs prints it."""
    for unit in reversed(_UNITS):
        factor = 1024 ** (_UNITS.index(unit) + 1)
        if size >= factor and size % factor == 0:
            return "%d%s" % (size // factor, unit)
    return str(size)


def _size_problem(prop, text, dialect):
    """Why zfs_nicestrtonum and zfs_valid_proplist (libzfs) refuse ``text`` for a number property."""
    if text == "none":
        if prop in NONE_SIZE_PROPERTIES or prop in COUNT_PROPERTIES or "@" in prop:
            return None
        return "'%s' takes a number, not 'none'" % prop
    match = _NUMBER_RE.match(text)
    if not match:
        return "bad numeric value %r: give a whole number of bytes or a size such as 64K, 10G" % text
    if not _SUFFIX_RE[dialect].match(match.group(2)):
        return "invalid numeric suffix %r%s" % (
            match.group(2),
            " (this zfs takes B, K, M, G, T, P, E, Z, optionally followed by B)"
            if dialect == DIALECT_ZFS_FUSE
            else " (use B, K, M, G, T, P, E or Z, optionally followed by B or iB)",
        )
    size = parse_size(text)
    if size >= 2**64:
        return "numeric value %r is too large" % text
    if prop in ("quota", "refquota") and size == 0:
        return "use 'none' to disable quota/refquota"
    if prop == "recordsize":
        largest = MAX_RECORDSIZE[dialect]
        if size < 512 or size > largest or size & (size - 1):
            return "'recordsize' must be a power of 2 from 512 to %s" % _nice(largest)
    return None


def value_problem(prop, value, dialect):
    """Why this dialect's ``zfs set PROP=VALUE`` would refuse ``value`` (None when it would not).

    The rules are libzfs' (zprop_parse_value, zfs_valid_proplist) for the properties listed in
    INDEX_VALUES, the number properties and mountpoint; other native properties are checked by
    the CLI when applied.
    """
    if value is None or isinstance(value, (dict, list)):
        return "needs a string, number or boolean value, got %r" % (value,)
    text = ("on" if value else "off") if isinstance(value, bool) else str(value).strip()
    if not text:
        return "the value is empty"
    if "\n" in text or "\r" in text:
        return "the value has a line break ('zfs get -H' prints one line per property)"
    if len(text) >= ZFS_MAXPROPLEN:
        return "the value is too long (at most %d characters)" % (ZFS_MAXPROPLEN - 1)
    if ":" in prop:
        return None
    choices = INDEX_VALUES[dialect].get(prop)
    if choices is not None:
        if text in choices:
            return None
        return "'%s' must be one of '%s'" % (prop, _INDEX_USAGE.get((dialect, prop)) or " | ".join(choices))
    if prop in SIZE_PROPERTIES or prop in COUNT_PROPERTIES or "@" in prop:
        return _size_problem(prop, text, dialect)
    if prop == "mountpoint" and text not in ("none", "legacy"):
        if not text.startswith("/"):
            return "'mountpoint' must be an absolute path, 'none', or 'legacy'"
        if any(len(part) >= ZAP_MAXNAMELEN for part in text.split("/")):
            return "a component of mountpoint %r is too long" % text
    return None


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
    """What one ``zfs get`` pass saw, plus names known to exist from a ``zfs list``."""

    def __init__(self, datasets):
        self.datasets = datasets
        self.known = set()

    def add_existing(self, names):
        self.known.update(names)

    def exists(self, name):
        return name in self.datasets or name in self.known

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


def validate_requests(requests, pools, pool=None, dialect=None):
    """Syntax and pool membership of every request; raise one error listing all problems.

    Without a dialect, property names are checked against OpenZFS' (the larger set).
    """
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
            problem = property_name_problem(prop, dialect)
            if problem:
                errors.append("dataset %r: %s" % (name, problem))
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


def plan(requests, state, pools, pool=None, origins=None, *, dialect=DIALECT_OPENZFS):
    """Validate and compute one action per request.

    Each action: ``{"name", "state", "action": created|updated|destroyed|unchanged,
    "recursive", "properties" (desired, normalised), "changed_properties": {p: {before, after}},
    "destroys": [...], "parents": [...]}``; ``parents`` are the missing ancestors a created
    dataset brings with it (``state`` must know which ancestors exist, see ZfsState.add_existing).
    Property values are checked with ``dialect``'s rules. Raises ZfsValidationError before
    anything changes.
    """
    validate_requests(requests, pools, pool, dialect)
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
            "parents": [],
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
                    if ref is None:
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
                problem = value_problem(prop, raw, dialect)
                if problem:
                    errors.append(
                        "dataset %r: %s=%s is refused by this ZFS (%s): %s"
                        % (name, prop, _shown(raw), dialect, problem)
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
    _assign_parents(actions, state)
    return actions


def ancestors(name):
    """The datasets between the pool root and ``name``, shallowest first (both excluded)."""
    parts = name.split("/")
    return ["/".join(parts[:depth]) for depth in range(2, len(parts))]


def _apply_order(actions):
    """Destroys deepest first, then creates and updates shallowest first."""
    destroys = sorted((a for a in actions if a["action"] == "destroyed"), key=lambda a: -a["name"].count("/"))
    writes = sorted(
        (a for a in actions if a["action"] in ("created", "updated")), key=lambda a: a["name"].count("/")
    )
    return destroys + writes


def _assign_parents(actions, state):
    """Give each created dataset the missing ancestors it creates first (as ``zfs create -p``
    would), in apply order, so that each missing ancestor is created exactly once."""
    requested = set(a["name"] for a in actions if a["state"] == "present")
    claimed = set()
    for action in _apply_order(actions):
        if action["action"] != "created":
            continue
        action["parents"] = [
            anc
            for anc in ancestors(action["name"])
            if not state.exists(anc) and anc not in requested | claimed
        ]
        claimed.update(action["parents"])


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

        # pyzfs loads libzfs_core.so lazily on some versions: touch what we use to be sure.
        libzfs_core.lzc_create  # noqa: B018
        libzfs_core.exceptions.ZFSError  # noqa: B018
    except (ImportError, OSError, AttributeError) as exc:
        return None, "libzfs_core (pyzfs) is not usable: %s" % exc
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

    @property
    def write_path(self):
        return WRITE_PATH_LZC if self.lzc is not None else WRITE_PATH_CLI

    def _did(self, action, name, properties=None):
        self.journal.append({"action": action, "name": name, "properties": dict(properties or {})})

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

    def existing(self, names):
        """The subset of ``names`` that exist, from one ``zfs list``."""
        argv = [self.zfs, "list", "-H", "-o", "name", *sorted(set(names))]
        rc, out, err = self.run(argv, check=False)
        if rc != 0 and missing_from_stderr(err) is None:
            raise ZfsCommandError(
                "zfs list failed (rc=%s): %s" % (rc, err.strip()), cmd=argv, rc=rc, stderr=err
            )
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
            argv += ["-o", "%s=%s" % (prop, value)]
        argv.append(name)
        rc, out, err = self.run(argv, check=False)
        # "filesystem successfully created, but not mounted": it exists all the same.
        if rc == 0 or "successfully created" in err:
            self._did("created", name, properties)
        if rc != 0:
            raise ZfsCommandError(
                "%s failed (rc=%s): %s" % (" ".join(argv), rc, (err or out).strip()),
                cmd=argv,
                rc=rc,
                stdout=out,
                stderr=err,
            )
        return WRITE_PATH_CLI

    def _lzc_create(self, name, properties):
        # lzc_create makes a bare filesystem and never mounts it (zfs create does both): set
        # the properties through the CLI, which encodes them, then mount it as zfs create would.
        try:
            self.lzc.lzc_create(name.encode("utf-8"), "zfs", {})
        except self.lzc.exceptions.ZFSError as exc:
            raise ZfsError("libzfs_core create of %r failed: %s" % (name, _lzc_reason(exc))) from exc
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

    def set(self, name, properties):
        if not properties:
            return WRITE_PATH_CLI
        items = sorted(properties.items())
        if self.dialect() == DIALECT_ZFS_FUSE:
            for prop, value in items:  # zfs-fuse takes one property=value per call
                self.run([self.zfs, "set", "%s=%s" % (prop, value), name])
                self._did("set", name, {prop: value})
            return WRITE_PATH_CLI
        try:
            self.run([self.zfs, "set"] + ["%s=%s" % item for item in items] + [name])
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
                raise ZfsError("libzfs_core destroy of %r failed: %s" % (name, _lzc_reason(exc))) from exc
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
        raise ZfsCommandError(
            "%s failed (rc=%s): %s" % (" ".join(argv), rc, (err or out).strip()),
            cmd=argv,
            rc=rc,
            stdout=out,
            stderr=err,
        )


def _lzc_reason(exc):
    """pyzfs' exceptions (libzfs_core/exceptions.py) carry a message and an errno."""
    message = getattr(exc, "message", None) or str(exc)
    return "%s (errno %s)" % (message, getattr(exc, "errno", "?"))


# --------------------------------------------------------------------------------------------
# Orchestration used by the zfs_dataset module
# --------------------------------------------------------------------------------------------


def journal_details(journal):
    """Result keys that say what a run changed: ``changed``, ``done`` (one line per change, in
    order), ``created``, ``destroyed`` and ``properties_set`` ({dataset: {property: value}})."""
    details = {"changed": bool(journal), "done": [], "created": [], "destroyed": [], "properties_set": {}}
    for entry in journal:
        name, props = entry["name"], entry["properties"]
        listed = ", ".join("%s=%s" % item for item in sorted(props.items()))
        if entry["action"] == "set":
            details["done"].append("set %s on %s" % (listed, name))
        else:
            details["done"].append("%s %s%s" % (entry["action"], name, " (%s)" % listed if listed else ""))
            details[entry["action"]].append(name)
        if props:
            details["properties_set"].setdefault(name, {}).update(props)
    return details


def _apply(backend, actions):
    """Apply in _apply_order; on a failure, say exactly what was done before it."""
    try:
        for action in _apply_order(actions):
            name = action["name"]
            if action["action"] == "destroyed":
                action["write_path"] = backend.destroy(name, action["recursive"], action["destroys"])
            elif action["action"] == "created":
                action["write_path"] = backend.create(name, action["properties"], action["parents"])
            else:
                changed = dict((p, action["properties"][p]) for p in action["changed_properties"])
                action["write_path"] = backend.set(name, changed)
    except ZfsError as exc:
        details = journal_details(backend.journal)
        exc.details.update(details)
        exc.msg += (
            " -- stopped part way; done before the failure: %s." % "; ".join(details["done"])
            if details["done"]
            else " -- nothing was changed."
        )
        raise


def ensure_datasets(backend, items, pool=None, check_mode=False, want_diff=False):
    """Converge many datasets in one call. Returns the module result (without 'failed')."""
    requests = [normalize_request(item) for item in items]
    pools = backend.pools()
    validate_requests(requests, pools, pool)
    dialect = backend.dialect(pools[0] if pools else None)
    names = [r["name"] for r in requests] + sorted(set(pool_of(r["name"]) for r in requests))
    state = backend.read(names)
    # Which ancestors of datasets to be created exist: the plan creates the missing ones.
    unknown = set(
        anc
        for r in requests
        if r["state"] == "present" and not state.exists(r["name"])
        for anc in ancestors(r["name"])
        if not state.exists(anc)
    )
    if unknown:
        state.add_existing(backend.existing(unknown))
    origins = None
    if any(r["state"] == "absent" and r["recursive"] and state.exists(r["name"]) for r in requests):
        origins = backend.origins(set(pool_of(r["name"]) for r in requests))
    actions = plan(requests, state, pools, pool=pool, origins=origins, dialect=dialect)
    changed = any(a["action"] != "unchanged" for a in actions)
    if not check_mode:
        _apply(backend, actions)
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
        if action["action"] == "created":
            item["parents"] = action["parents"]
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
