# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ZFS names and property values as the zfs CLI of each dialect accepts them (OpenZFS zfs_prop.c,
zfs_namecheck.c, libzfs_util.c's zfs_nicestrtonum; zfs-fuse as measured on the test bed)."""

import re

from ansible_collections.strata.ops.plugins.module_utils.zfs import DIALECT_OPENZFS, DIALECT_ZFS_FUSE

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

_GZIP = ("gzip", *(f"gzip-{level}" for level in range(1, 10)))

_ZSTD_FAST_LEVELS = [*range(1, 11), *range(20, 101, 10), 500, 1000]

_ZSTD = (
    "zstd",
    "zstd-fast",
    *(f"zstd-{level}" for level in range(1, 20)),
    *(f"zstd-fast-{level}" for level in _ZSTD_FAST_LEVELS),
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
            *(f"aes-{bits}-{mode}" for mode in ("ccm", "gcm") for bits in (128, 192, 256)),
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

READ_ONLY_AT_PREFIXES = (
    "userused@",
    "groupused@",
    "userobjused@",
    "groupobjused@",
    "projectused@",
    "projectobjused@",
    "written@",
    "written#",
)

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

_UNITS = "KMGTPEZ"

MAX_NAME_LENGTH = 255


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
        return f"dataset name {name!r} is longer than {MAX_NAME_LENGTH} characters"
    if "@" in name or "#" in name:
        return f"dataset name {name!r} names a snapshot or bookmark; give a filesystem name (pool/a/b)"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return f"dataset name {name!r} must look like pool/a/b: no leading, trailing or double '/'"
    for component in name.split("/"):
        if component in (".", "..") or not _COMPONENT_RE.match(component):
            return (
                f"dataset name {name!r} has an invalid component {component!r}:"
                " use letters, digits and _ . : -, starting with a letter or digit"
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
        return f"invalid property name {prop!r}"
    if "@" in prop or "#" in prop:
        prefix = prop.split("@", 1)[0] + "@" if "@" in prop else prop
        if prop.startswith(READ_ONLY_AT_PREFIXES):
            return f"property {prop!r} is read-only (ZFS reports it, nobody sets it); remove it"
        settable = QUOTA_AT_PREFIXES[dialect or DIALECT_OPENZFS]
        if prefix not in settable or prop == prefix:
            names = ", ".join(p + "<user|group|project>" for p in settable)
            return f"invalid property name {prop!r}: of the name@id properties this ZFS sets only {names}"
        return None
    if ":" in prop:
        if not _USER_PROPERTY_RE.match(prop):
            return (
                f"invalid user property name {prop!r}: use lowercase letters, digits and - _ . : only"
                " (for example com.example:owner)"
            )
        if len(prop) >= ZAP_MAXNAMELEN:
            return f"user property name {prop!r} is too long (at most {ZAP_MAXNAMELEN - 1} characters)"
        return None
    if not _NATIVE_PROPERTY_RE.match(prop):
        return f"invalid property name {prop!r}: native properties are lowercase (for example compression)"
    if prop in READ_ONLY_PROPERTIES:
        return f"property {prop!r} is read-only (ZFS reports it, nobody sets it); remove it from properties"
    return None


def _nice(size):
    """128K, 16M: a power-of-two size as zfs prints it."""
    for unit in reversed(_UNITS):
        factor = 1024 ** (_UNITS.index(unit) + 1)
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _size_problem(prop, text, dialect):
    """Why zfs_nicestrtonum and zfs_valid_proplist (libzfs) refuse ``text`` for a number property."""
    if text == "none":
        if prop in NONE_SIZE_PROPERTIES or prop in COUNT_PROPERTIES or "@" in prop:
            return None
        return f"'{prop}' takes a number, not 'none'"
    match = _NUMBER_RE.match(text)
    if not match:
        return f"bad numeric value {text!r}: give a whole number of bytes or a size such as 64K, 10G"
    if not _SUFFIX_RE[dialect].match(match.group(2)):
        accepted = (
            " (this zfs takes B, K, M, G, T, P, E, Z, optionally followed by B)"
            if dialect == DIALECT_ZFS_FUSE
            else " (use B, K, M, G, T, P, E or Z, optionally followed by B or iB)"
        )
        return f"invalid numeric suffix {match.group(2)!r}{accepted}"
    size = parse_size(text)
    if size >= 2**64:
        return f"numeric value {text!r} is too large"
    if prop in ("quota", "refquota") and size == 0:
        return "use 'none' to disable quota/refquota"
    if prop == "recordsize":
        largest = MAX_RECORDSIZE[dialect]
        if size < 512 or size > largest or size & (size - 1):
            return f"'recordsize' must be a power of 2 from 512 to {_nice(largest)}"
    return None


def value_problem(prop, value, dialect):
    """Why this dialect's ``zfs set PROP=VALUE`` would refuse ``value`` (None when it would not).

    The rules are libzfs' (zprop_parse_value, zfs_valid_proplist) for the properties listed in
    INDEX_VALUES, the number properties and mountpoint; other native properties are checked by
    the CLI when applied.
    """
    if value is None or isinstance(value, (dict, list)):
        return f"needs a string, number or boolean value, got {value!r}"
    text = ("on" if value else "off") if isinstance(value, bool) else str(value).strip()
    if not text:
        return "the value is empty"
    if "\n" in text or "\r" in text:
        return "the value has a line break ('zfs get -H' prints one line per property)"
    if len(text) >= ZFS_MAXPROPLEN:
        return f"the value is too long (at most {ZFS_MAXPROPLEN - 1} characters)"
    if ":" in prop:
        return None
    choices = INDEX_VALUES[dialect].get(prop)
    if choices is not None:
        if text in choices:
            return None
        usage = _INDEX_USAGE.get((dialect, prop)) or " | ".join(choices)
        return f"'{prop}' must be one of '{usage}'"
    if prop in SIZE_PROPERTIES or prop in COUNT_PROPERTIES or "@" in prop:
        return _size_problem(prop, text, dialect)
    if prop == "mountpoint" and text not in ("none", "legacy"):
        if not text.startswith("/"):
            return "'mountpoint' must be an absolute path, 'none', or 'legacy'"
        if any(len(part) >= ZAP_MAXNAMELEN for part in text.split("/")):
            return f"a component of mountpoint {text!r} is too long"
    return None


def source_kind(source):
    """'local', 'default', 'inherited', 'received', 'temporary' or 'none' (for '-')."""
    if source.startswith("inherited"):
        return "inherited"
    if source in ("-", ""):
        return "none"
    return source
