# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What backs a storage path: /proc/self/mountinfo and /etc/fstab parsing, path classification.

The logic behind ``strata.ops.storage_info`` (the module file holds only its documentation,
argument spec and a call to ``storage_report``), including the refusal layers 2 and 4 share:
a path that holds something a new dataset or tmpfs would hide or displace. Parsers are pure
functions over file text; ``describe_path`` takes ``stat``/``statvfs`` callables so it is
testable without real mounts.
Helpers raise ``MountsError``; the module's ``main()`` catches it once.
"""

import os

from ansible_collections.strata.ops.plugins.module_utils.common import StrataError
from ansible_collections.strata.ops.plugins.module_utils.host import stat_summary
from ansible_collections.strata.ops.plugins.module_utils.zfs.properties import parent_of

MOUNTINFO = "/proc/self/mountinfo"
FSTAB = "/etc/fstab"
MEMINFO = "/proc/meminfo"
ZFS_FSTYPES = ("zfs", "fuse.zfs")
SYSTEMD_LIST_OPTIONS = {
    "x-systemd.requires": "requires",
    "x-systemd.after": "after",
    "x-systemd.before": "before",
    "x-systemd.wants": "wants",
    "x-systemd.requires-mounts-for": "requires_mounts_for",
    "x-systemd.wanted-by": "wanted_by",
    "x-systemd.required-by": "required_by",
}
_SIZE_SUFFIX = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5, "e": 1024**6}


class MountsError(StrataError):
    """A path or mount table that cannot be read or used."""


def unescape(field):
    """Undo the octal escapes of mountinfo and fstab (\\040 is a space)."""
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        chunk = field[i : i + 4]
        if len(chunk) == 4 and chunk[0] == "\\" and chunk[1:].isdigit():
            out.append(chr(int(chunk[1:], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text):
    """Parse /proc/self/mountinfo into a list of dicts, in mount order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields or len(fields) < 10:
            continue
        sep = fields.index("-", 6)
        major, _colon, minor = fields[2].partition(":")
        tags = dict(tag.split(":", 1) for tag in fields[6:sep] if ":" in tag)
        mounts.append(
            {
                "mount_id": int(fields[0]),
                "parent_id": int(fields[1]),
                "device": fields[2],
                "major": int(major),
                "minor": int(minor),
                "root": unescape(fields[3]),
                "mount_point": unescape(fields[4]),
                "mount_options": fields[5].split(","),
                "optional": fields[6:sep],
                "fstype": fields[sep + 1],
                "source": unescape(fields[sep + 2]),
                "super_options": fields[sep + 3].split(",") if len(fields) > sep + 3 else [],
                # peer groups: this mount's own (shared) and the one it receives mounts from (master)
                "shared": int(tags["shared"]) if "shared" in tags else None,
                "master": int(tags["master"]) if "master" in tags else None,
            }
        )
    return mounts


def parse_fstab_options(options):
    """systemd ordering and flags from fstab options."""
    systemd = dict((key, []) for key in SYSTEMD_LIST_OPTIONS.values())
    systemd["automount"] = False
    systemd["nofail"] = False
    systemd["noauto"] = False
    for option in options:
        key, _eq, value = option.partition("=")
        if key in SYSTEMD_LIST_OPTIONS and value:
            systemd[SYSTEMD_LIST_OPTIONS[key]].extend(v for v in value.split() if v)
        elif key == "x-systemd.automount":
            systemd["automount"] = True
        elif key in ("nofail", "noauto"):
            systemd[key] = True
    return systemd


def parse_fstab(text):
    """Parse fstab into a list of entries (comments and blank lines skipped)."""
    entries = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split()
        if len(fields) < 3:
            continue
        options = fields[3].split(",") if len(fields) > 3 else ["defaults"]
        entries.append(
            {
                "source": unescape(fields[0]),
                "mount_point": unescape(fields[1]),
                "fstype": fields[2],
                "options": options,
                "dump": int(fields[4]) if len(fields) > 4 and fields[4].isdigit() else 0,
                "passno": int(fields[5]) if len(fields) > 5 and fields[5].isdigit() else 0,
                "line": stripped,
                "systemd": parse_fstab_options(options),
            }
        )
    return entries


def option_size(options):
    """tmpfs size=... option to bytes (None when absent or a percentage)."""
    for option in options:
        if option.startswith("size="):
            value = option[5:].strip().lower()
            if value.endswith("%"):
                return None
            if value and value[-1] in _SIZE_SUFFIX:
                return int(float(value[:-1]) * _SIZE_SUFFIX[value[-1]])
            if value.isdigit():
                return int(value)
    return None


def is_below(path, mount_point):
    return mount_point in ("/", path) or path.startswith(mount_point.rstrip("/") + "/")


def read_mountinfo(mountinfo=MOUNTINFO):
    """The mounts of this mount namespace (OSError when mountinfo cannot be read)."""
    with open(mountinfo) as handle:
        return parse_mountinfo(handle.read())


def mount_points_now(mountinfo=MOUNTINFO):
    """The mount points of this mount namespace. Unlike os.path.ismount this also sees a bind
    mount of a directory of the same file system."""
    return set(m["mount_point"] for m in read_mountinfo(mountinfo))


def shared_submounts(path, mounts):
    """Mounts strictly below ``path`` whose parent mount is shared.

    A recursive bind of ``path`` copies them into their parents' peer groups, so unmounting
    that copy unmounts them too, on the host: runc does exactly that (bind, then detach) in the
    host's mount namespace while it prepares a checkpoint restore. On systemd hosts every mount
    is shared.
    """
    by_id = dict((m["mount_id"], m) for m in mounts)
    return [
        m
        for m in mounts
        if m["mount_point"] != path
        and is_below(m["mount_point"], path)
        and (by_id.get(m["parent_id"]) or {}).get("shared")
    ]


def find_mount(mounts, path, major, minor):
    """The mount holding ``path`` with device major:minor: the last (topmost) mount whose
    mount point is the longest ancestor of path and whose device matches."""
    best = None
    for mount in mounts:
        if (mount["major"], mount["minor"]) != (major, minor) or not is_below(path, mount["mount_point"]):
            continue
        if best is None or len(mount["mount_point"]) >= len(best["mount_point"]):
            best = mount
    return best


def _mount_summary(mount):
    summary = {
        "mount_point": mount["mount_point"],
        "fstype": mount["fstype"],
        "source": mount["source"],
        "mount_options": mount["mount_options"]
        + [o for o in mount["super_options"] if o not in ("rw", "ro")],
    }
    if mount["fstype"] in ZFS_FSTYPES:
        summary["dataset"] = mount["source"]
        summary["parent_dataset"] = parent_of(mount["source"])
    return summary


def describe_path(path, mounts, fstab_entries, stat=os.stat, statvfs=os.statvfs):
    """Everything storage_info reports for one path."""
    resolved = os.path.realpath(path)
    # Every key is always there (null when it does not apply), so playbooks can test
    # fact.dataset or fact.mount_point on any kind without 'default'.
    info = {
        "path": path,
        "resolved": resolved,
        "kind": None,
        "fstype": None,
        "source": None,
        "mount_point": None,
        "mount_options": [],
        "dataset": None,
        "parent_dataset": None,
        "size_bytes": None,
        "parent_mount": None,
        "device": None,
        "nearest_existing": None,
        "fstab": None,
        "file_type": None,
        "mode": None,
        "owner": None,
        "group": None,
    }
    for entry in fstab_entries:
        if entry["mount_point"] in (path, resolved) or entry["mount_point"].rstrip("/") == resolved:
            info["fstab"] = dict((k, v) for k, v in entry.items() if k != "mount_point")
    try:
        st = stat(resolved)
    except OSError:
        info["kind"] = "missing"
        ancestor = os.path.dirname(resolved)
        while ancestor != "/" and not os.path.exists(ancestor):
            ancestor = os.path.dirname(ancestor)
        info["nearest_existing"] = ancestor
        return info
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    info["device"] = f"{major}:{minor}"
    # stat follows links, so the type is file, directory or other.
    summary = stat_summary(st)
    info.update(file_type=summary.pop("type"), **summary)
    mount = find_mount(mounts, resolved, major, minor)
    if mount is None:
        info["kind"] = "other"
        info["warning"] = f"no mountinfo entry has device {info['device']} above this path"
        return info
    summary = _mount_summary(mount)
    if mount["mount_point"] != resolved:
        info["kind"] = "directory"
        info["parent_mount"] = summary
        info["fstype"] = summary["fstype"]
        info["source"] = summary["source"]
        info["mount_point"] = summary["mount_point"]
        info["mount_options"] = summary["mount_options"]
        if "dataset" in summary:
            info["dataset"] = summary["dataset"]
            info["parent_dataset"] = summary["parent_dataset"]
        return info
    info.update(summary)
    if mount["fstype"] in ZFS_FSTYPES:
        info["kind"] = "zfs"
    elif mount["fstype"] == "tmpfs":
        info["kind"] = "tmpfs"
        try:
            vfs = statvfs(resolved)
            info["size_bytes"] = vfs.f_blocks * vfs.f_frsize
        except OSError:
            info["size_bytes"] = option_size(mount["super_options"])
    else:
        info["kind"] = "other"
    return info


def expectation_conflict(fact, want, listdir=os.listdir):
    """Why the path of ``fact`` (a describe_path result) cannot become what ``want`` says without
    hiding or displacing what is there now; None when it can.

    ``want`` is ``{"kind": "zfs", "dataset": NAME}`` or ``{"kind": "tmpfs"}``. A plain directory
    is a conflict only when it holds something (mounting over it would hide that); a missing
    path or an empty directory is not.
    """
    path, kind = fact["path"], fact["kind"]
    dataset = want.get("dataset")
    should = f"should be the ZFS dataset {dataset}" if want["kind"] == "zfs" else "should be a tmpfs"
    if kind == "directory":
        parent = fact["parent_mount"]
        on = parent.get("dataset") or parent["mount_point"]
        try:
            held = listdir(fact["resolved"])
        except OSError as exc:
            reason = exc.strerror or exc
            return f"{path} is a plain directory on {on} that cannot be listed ({reason}) but {should}"
        if not held:
            return None
        if want["kind"] == "zfs":
            return f"{path} is a plain directory with files on {on} but {should}"
        return f"{path} is a plain directory with files on {on} that a tmpfs mounted there would hide"
    mounted_here = fact["mount_point"] == fact["resolved"]
    if want["kind"] == "zfs":
        if kind == "zfs" and fact["dataset"] != dataset:
            return f"{path} is the ZFS dataset {fact['dataset']} but should be {dataset}"
        if kind in ("tmpfs", "other") and mounted_here:
            return f"{path} is a {fact['fstype']} mount but {should}"
    elif kind in ("zfs", "other") and mounted_here:
        return f"{path} is already used by {fact['fstype']} {fact['source']} but {should}"
    return None


def memory_total_bytes(meminfo_path=MEMINFO):
    """The host's MemTotal in bytes (what a tmpfs's size is measured against); None when
    /proc/meminfo cannot tell. proc(5): ``MemTotal:  <n> kB``, where kB means KiB."""
    for line in _read(meminfo_path).splitlines():
        name, _sep, value = line.partition(":")
        fields = value.split()
        if name == "MemTotal" and len(fields) == 2 and fields[0].isdigit() and fields[1] == "kB":
            return int(fields[0]) * 1024
    return None


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def storage_report(paths, expect=(), mountinfo_path=MOUNTINFO, fstab_path=FSTAB, listdir=os.listdir):
    """What storage_info returns: ``{"paths": {path: fact}, "conflicts": [...]}`` for ``paths``
    and the paths of ``expect`` (``[{"path", "kind": zfs|tmpfs, "dataset"}]``), with one
    conflict message per expected path that holds something else (see expectation_conflict)."""
    paths = list(paths)
    paths += [item["path"] for item in expect if item["path"] not in paths]
    facts = describe_paths(paths, mountinfo_path, fstab_path)
    conflicts = [expectation_conflict(facts[item["path"]], item, listdir) for item in expect]
    return {"paths": facts, "conflicts": [c for c in conflicts if c]}


def describe_paths(paths, mountinfo_path=MOUNTINFO, fstab_path=FSTAB):
    """``{path: describe_path(path)}`` for absolute ``paths``, reading mountinfo and fstab once.

    Raises MountsError for a relative path or an unreadable mountinfo; a missing fstab is
    an empty one.
    """
    relative = [p for p in paths if not os.path.isabs(p)]
    if relative:
        raise MountsError(f"paths must be absolute; got {', '.join(relative)}")
    try:
        with open(mountinfo_path) as handle:
            mountinfo = handle.read()
    except OSError as exc:
        reason = exc.strerror or exc
        raise MountsError(
            f"{mountinfo_path} is not readable ({reason}): storage_info needs Linux with /proc mounted"
        ) from None
    mounts = parse_mountinfo(mountinfo)
    fstab_entries = parse_fstab(_read(fstab_path))
    return dict((path, describe_path(path, mounts, fstab_entries)) for path in paths)


def under_root(path, root):
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/") or root == "/"


def kind_node_path(host_path, host_path_root, kind_mount_root):
    """Where a host path under host_path_root is seen inside the kind node (None if outside):
    /srv/kind/solana/ledger with /srv/kind -> /mnt gives /mnt/solana/ledger."""
    host_path = os.path.normpath(host_path)
    root = os.path.normpath(host_path_root)
    if not under_root(host_path, root):
        return None
    rel = host_path[len(root) :].lstrip("/")
    base = os.path.normpath(kind_mount_root)
    return base if not rel else base.rstrip("/") + "/" + rel


def pool_states(names, run_command, zpool):
    """``{pool: {"health": ONLINE|DEGRADED|..., "error": None}}`` from ``zpool list``, one call
    per pool so that a pool that is not imported gets zpool's own words in ``error`` (health
    null). ``zpool`` is the command's path, None where it is not installed."""
    states = {}
    for name in names:
        if zpool is None:
            states[name] = {
                "health": None,
                "error": "the zpool command is not installed (layer 1 installs ZFS)",
            }
            continue
        rc, out, err = run_command([zpool, "list", "-H", "-o", "name,health", name])
        fields = out.strip().split("\t")
        if rc == 0 and len(fields) == 2:
            states[name] = {"health": fields[1], "error": None}
        else:
            states[name] = {"health": None, "error": (err or out).strip() or f"zpool list {name}: rc={rc}"}
    return states
