# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""CRIU backend for strata.ops.pod_checkpoint.

Everything CRIU is asked to do is derived from facts read on the host, never guessed:

* the CRIU version (``criu --version``); versions below 4.0 are refused (see ``MIN_VERSION``);
* the external mounts, from ``/proc/PID/mountinfo`` of the target (``external_mounts()``);
* the process tree (``/proc/PID/task/*/children``) and whether any of it uses CUDA;
* CRIU's own statistics after the dump (``stats-dump``), decoded by ``crit`` when it is
  installed and by the small protobuf reader below otherwise (both are compared when both work).

Helpers raise ``CriuError`` (or a subclass); a module's ``main()`` catches it once. Commands
run through a ``run_command(argv) -> (rc, stdout, stderr)`` callable, normally
``AnsibleModule.run_command``, so the logic is testable without CRIU.
"""

import json
import os
import re
import struct

from ansible_collections.strata.ops.plugins.module_utils import protowire as pw
from ansible_collections.strata.ops.plugins.module_utils.common import StrataError
from ansible_collections.strata.ops.plugins.module_utils.mounts import is_below

MIN_VERSION = (4, 0)
MIN_VERSION_REASON = (
    "CRIU 3.x cannot dump on current kernels (criu check: 'vdso: Unexpected rt vDSO area bounds', "
    "measured with Debian bookworm's 3.17) and lacks the --external mnt[] spelling used here"
)
# Key runc uses for the container's network namespace and the mount keys it passes on restore:
# images written with the same keys restore with `docker start --checkpoint` / `runc restore`.
RUNC_NETNS_KEY = "extRootNetNS"

# File systems CRIU recreates itself (contents of tmpfs are tarred into the images). A mount of
# one of these whose root is "/" is internal; everything else (disk file systems, binds of a
# sub-directory from outside the container) must be declared external.
VIRTUAL_FSTYPES = frozenset(
    [
        "proc",
        "sysfs",
        "tmpfs",
        "devpts",
        "mqueue",
        "cgroup",
        "cgroup2",
        "binfmt_misc",
        "securityfs",
        "debugfs",
        "tracefs",
        "pstore",
        "bpf",
        "fusectl",
        "configfs",
        "devtmpfs",
        "hugetlbfs",
    ]
)

# stats-dump: service magic, STATS magic, then one size-prefixed stats_entry protobuf.
IMG_SERVICE_MAGIC = 0x55105940
STATS_MAGIC = 0x57093306
DUMP_STATS_FIELDS = {
    1: "freezing_time",
    2: "frozen_time",
    3: "memdump_time",
    4: "memwrite_time",
    5: "pages_scanned",
    6: "pages_skipped_parent",
    7: "pages_written",
    8: "irmap_resolve",
    9: "pages_lazy",
    10: "page_pipes",
    11: "page_pipe_bufs",
    12: "shpages_scanned",
    13: "shpages_skipped_parent",
    14: "shpages_written",
}
RESTORE_STATS_FIELDS = {
    1: "pages_compared",
    2: "pages_skipped_cow",
    3: "forking_time",
    4: "restore_time",
    5: "pages_restored",
}


class CriuError(StrataError):
    """Base of the CRIU errors."""


class CriuNotFound(CriuError):
    pass


class CriuTooOld(CriuError):
    pass


class CriuDumpFailed(CriuError):
    pass


class TargetGone(CriuError):
    """The target process exited before or during the dump."""


class NoSpace(CriuError):
    pass


class PreDumpUnsupported(CriuError):
    """Iterative pre-dump asked for where it cannot work."""


class GpuError(CriuError):
    pass


# ---------------------------------------------------------------------------------------------
# version


def parse_version(text):
    """``criu --version`` output to a tuple of ints: 'Version: 4.1.1' -> (4, 1, 1)."""
    match = re.search(r"Version:\s*(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not match:
        raise CriuError(f"cannot read a CRIU version from {(text or '').strip()[:200]!r}")
    return tuple(int(part) for part in match.groups() if part is not None)


def version_string(version):
    return ".".join(str(part) for part in version)


def check_version(run_command, criu):
    """Run ``criu --version``; return the version tuple or raise CriuTooOld/CriuNotFound."""
    version = read_version(run_command, criu)
    if version[:2] < MIN_VERSION:
        raise CriuTooOld(
            f"{criu} is CRIU {version_string(version)}; "
            f"pod_checkpoint needs CRIU >= {version_string(MIN_VERSION)} because {MIN_VERSION_REASON}. "
            "Install CRIU 4.x (Debian trixie's criu, or upstream) and set criu_path to it."
        )
    return version


def read_version(run_command, criu):
    """``criu --version`` as a tuple; CriuNotFound when it does not run, CriuError when it says none."""
    try:
        rc, out, err = run_command([criu, "--version"])
    except OSError as exc:
        raise CriuNotFound(f"cannot run {criu}: {exc}") from None
    if rc != 0:
        output = (err or out).strip()[:300]
        raise CriuNotFound(
            f"{criu} --version failed (rc={rc}): {output}. "
            f"Point criu_path at a working CRIU >= {version_string(MIN_VERSION)}"
        )
    return parse_version(out)


def check_dirty_tracking(run_command, criu):
    """Pre-dump needs the kernel's soft-dirty bits (CONFIG_MEM_SOFT_DIRTY); CRIU's own probe says
    whether they work (``criu check --feature mem_dirty_track``, criu/cr-check.c)."""
    rc, out, err = run_command([criu, "check", "--feature", "mem_dirty_track"])
    if rc != 0:
        said = " ".join((err or out).split())[:300]
        raise PreDumpUnsupported(
            f"pre_dumps needs memory dirty tracking, which this kernel lacks: `{criu} check --feature "
            f"mem_dirty_track` says: {said or f'rc={rc}'}. Use a kernel built with CONFIG_MEM_SOFT_DIRTY "
            "(most distribution kernels are) or set pre_dumps: 0 for one plain dump"
        )


def find_executable(name, path_env=None, extra_dirs=()):
    """First executable ``name`` on PATH (plus extra_dirs), or None."""
    if os.path.sep in name:
        return name if os.access(name, os.X_OK) and os.path.isfile(name) else None
    dirs = (path_env if path_env is not None else os.environ.get("PATH", "")).split(os.pathsep)
    for directory in list(dirs) + list(extra_dirs):
        candidate = os.path.join(directory, name)
        if directory and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def locate(configured=None):
    """``configured`` or the first criu on PATH (or in /usr/sbin, /sbin); CriuNotFound otherwise."""
    path = configured or find_executable("criu", extra_dirs=("/usr/sbin", "/sbin"))
    if not path or not os.path.exists(path):
        where = f" at {path}" if path else " on PATH"
        raise CriuNotFound(
            f"criu not found{where}: install CRIU >= {version_string(MIN_VERSION)} "
            "(Debian trixie's criu package) or set criu_path"
        )
    return path


# ---------------------------------------------------------------------------------------------
# mountinfo -> external mounts


def classify_mounts(mounts):
    """Split the target's mounts into (root, internal, external) lists.

    External, i.e. provided by the host and re-provided by whoever restores:
      * any mount of a disk/network/fuse file system other than the root mount;
      * a mount whose root is a sub-directory of a file system that no other mount in the
        same namespace shows from a covering root (a bind from outside: cgroup v1 binds of
        /docker/<id>, /etc/hosts from the Docker root, host directories, /dev/null masks
        from the host's devtmpfs ...).
      * a mount that receives propagation from a peer group no mount of the namespace belongs
        to (master:N with no shared:N inside): it came from the host, as a tmpfs mounted on the
        host under a HostToContainer (rslave) volume does. CRIU refuses to dump such a mount as
        its own ("has unreachable sharing") and must not copy it: the host provides it again.
    Internal: virtual file systems mounted from their root, and binds of mounts that are
    themselves in the namespace (/proc/sys from /proc, /proc/keys from /dev's tmpfs).
    """
    if not mounts:
        return None, [], []
    root = next((m for m in mounts if m["mount_point"] == "/"), mounts[0])
    peer_groups = set(m.get("shared") for m in mounts if m.get("shared"))
    internal, external = [], []
    for mount in mounts:
        if mount is root:
            continue
        if mount.get("master") and mount["master"] not in peer_groups:
            external.append(dict(mount, propagated=True))
            continue
        if mount["fstype"] not in VIRTUAL_FSTYPES:
            external.append(mount)
            continue
        if mount["root"] == "/":
            internal.append(mount)
            continue
        covered = any(
            other is not mount
            and other["device"] == mount["device"]
            and is_below(mount["root"], other["root"])
            and other["root"] != mount["root"]
            for other in mounts
        )
        (internal if covered else external).append(mount)
    return root, internal, external


def host_path(mount, host_mounts):
    """Where the host shows the file system part a container mount shows: the mount point of a
    host mount of the same device whose root covers the container mount's root, plus the rest.
    None when the host shows none (the module must run in the host's mount namespace)."""
    for host in host_mounts:
        if host["device"] == mount["device"] and is_below(mount["root"], host["root"]):
            rest = mount["root"][len(host["root"].rstrip("/")) :].lstrip("/")
            return os.path.join(host["mount_point"], rest) if rest else host["mount_point"]
    return None


def external_mount_args(external, mode="facts", version=(4, 0)):
    """CRIU arguments for the external mounts.

    mode 'facts': one ``--external mnt[PATH]:PATH`` per external mount; the key is the mount
    point inside the container, which is what runc maps on restore. mode 'auto': CRIU's own
    autodetection (``--external mnt[]``; its older spelling ``--ext-mount-map auto`` for CRIU
    before 3.0), which restores only where the same sources exist.
    """
    if mode == "auto":
        return ["--external", "mnt[]"] if tuple(version) >= (3, 0) else ["--ext-mount-map", "auto"]
    args = []
    seen = set()
    for mount in external:
        path = mount["mount_point"]
        if path in seen:
            continue
        seen.add(path)
        args += ["--external", f"mnt[{path}]:{path}"]
    return args


def build_dump_args(
    criu,
    pid,
    images_dir,
    external_args,
    *,
    leave_running=True,
    manage_cgroups=True,
    tcp_established=False,
    netns_inode=None,
    empty_netns=False,
    shell_job=False,
    plugin_dir=None,
    log_file="dump.log",
    pre_dump=False,
    prev_images_dir=None,
    extra=(),
):
    """The full ``criu dump`` (or, with ``pre_dump``, ``criu pre-dump``) argv.

    An iterative dump (CRIU's "memory changes tracking", criu(8)): each ``pre-dump`` and the final
    ``dump`` run with ``--track-mem``; all but the first name the previous images with
    ``--prev-images-dir``, a path relative to their own ``--images-dir``. A pre-dump always
    leaves the tree running, so it takes no ``--leave-running``."""
    action = "pre-dump" if pre_dump else "dump"
    argv = [criu, action, "--tree", str(pid), "--images-dir", images_dir, "--log-file", log_file, "-v4"]
    if leave_running and not pre_dump:
        argv.append("--leave-running")
    if pre_dump or prev_images_dir:
        argv.append("--track-mem")
    if prev_images_dir:
        argv += ["--prev-images-dir", prev_images_dir]
    if manage_cgroups:
        argv.append("--manage-cgroups")
    if tcp_established:
        argv.append("--tcp-established")
    if shell_job:
        argv.append("--shell-job")
    if empty_netns:
        argv += ["--empty-ns", "net"]
    elif netns_inode:
        argv += ["--external", f"net[{netns_inode}]:{RUNC_NETNS_KEY}"]
    if plugin_dir:
        argv += ["--libdir", plugin_dir]
    argv += list(external_args) + list(extra)
    return argv


# ---------------------------------------------------------------------------------------------
# processes


def process_tree(pid, proc="/proc"):
    """PIDs of ``pid`` and all its descendants (threads' children included), root first."""
    tree, todo = [], [int(pid)]
    while todo:
        current = todo.pop(0)
        if current in tree:
            continue
        tree.append(current)
        task_dir = os.path.join(proc, str(current), "task")
        try:
            tasks = os.listdir(task_dir)
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(os.path.join(task_dir, tid, "children")) as handle:
                    todo.extend(int(child) for child in handle.read().split())
            except OSError:
                continue
    return tree


def alive(pid, proc="/proc"):
    try:
        with open(os.path.join(proc, str(pid), "stat")) as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def status_bytes(pids, fields, proc="/proc"):
    """The sum over ``pids`` of the kB ``fields`` of /proc/PID/status, in bytes (a pid gone: 0)."""
    keys = tuple(f"{field}:" for field in fields)
    total = 0
    for pid in pids:
        try:
            with open(os.path.join(proc, str(pid), "status")) as handle:
                for line in handle:
                    if line.startswith(keys):
                        total += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return total


def rss_bytes(pids, proc="/proc"):
    return status_bytes(pids, ("VmRSS",), proc)


def dumped_memory_bytes(pids, proc="/proc"):
    """About what a dump of ``pids`` writes of their memory: their anonymous and shared memory
    resident (RssAnon, RssShmem; proc(5)). CRIU writes those pages and never the clean pages of
    file mappings (RssFile: the libraries), which it maps again from the files on restore."""
    return status_bytes(pids, ("RssAnon", "RssShmem"), proc)


def descriptors(pid, proc="/proc"):
    """What runc stores as descriptors.json: the targets of fds 0, 1, 2 of the root task."""
    out = []
    for fd in range(3):
        try:
            out.append(os.readlink(os.path.join(proc, str(pid), "fd", str(fd))))
        except OSError:
            out.append("/dev/null")
    return out


# ---------------------------------------------------------------------------------------------
# stats-dump


def parse_stats(data):
    """Decode CRIU's stats-dump / stats-restore file (bytes) into {'dump': {...}} etc."""
    if len(data) < 12:
        raise CriuError(f"stats file is too short ({len(data)} bytes): the dump did not finish")
    magic1, magic2 = struct.unpack_from("<II", data, 0)
    pos = 8 if magic1 == IMG_SERVICE_MAGIC else 4
    magic = magic2 if magic1 == IMG_SERVICE_MAGIC else magic1
    if magic != STATS_MAGIC:
        raise CriuError(f"not a CRIU stats file (magic 0x{magic:08x})")
    (size,) = struct.unpack_from("<I", data, pos)
    try:
        entry = pw.singular(data[pos + 4 : pos + 4 + size])
        out = {}
        for number, name, names in ((1, "dump", DUMP_STATS_FIELDS), (2, "restore", RESTORE_STATS_FIELDS)):
            if number in entry:
                fields = pw.singular(entry[number])
                out[name] = dict((names[k], v) for k, v in sorted(fields.items()) if k in names)
    except (ValueError, struct.error) as exc:
        raise CriuError(f"corrupt CRIU stats file: {exc}") from None
    return out


# files.img and remap-fpath.img: the common magic, the image's own (criu/include/magic.h), then
# entries, each a u32 size and a protobuf message (criu/protobuf.c).
IMG_COMMON_MAGIC = 0x54564319
FILES_MAGIC = 0x56303138
REMAP_FPATH_MAGIC = 0x59133954
FD_TYPE_REG = 1  # images/fdinfo.proto fd_types: REG, a regular file or directory opened by its path


def _image_entries(data, magic, what):
    """The messages (bytes) of a CRIU image's ``data``; [] for None (the dump has no such image)."""
    if data is None:
        return []
    if len(data) < 8 or struct.unpack_from("<II", data, 0) != (IMG_COMMON_MAGIC, magic):
        raise CriuError(f"{what} is not the CRIU image it should be (wrong magic): the dump is damaged")
    entries, pos = [], 8
    while pos < len(data):
        (size,) = struct.unpack_from("<I", data, pos) if pos + 4 <= len(data) else (len(data),)
        if pos + 4 + size > len(data):
            raise CriuError(f"{what} is truncated: the dump is damaged")
        entries.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return entries


def reopened_files(files_img, remap_fpath_img=None):
    """The regular files and directories of a dump that ``criu restore`` opens again by their path
    (open, mapped, a cwd or root), from the bytes of its files.img and remap-fpath.img (None: not in
    the dump): [{"path", "size", "mode"}], paths as the dumped processes saw them, each once.
    CRIU refuses the restore when one is missing, or when its mode or its size (``size``; None where
    CRIU does not check it: write-only O_APPEND files such as logs) is not what it was at the dump
    (criu/files-reg.c open_path). Files CRIU brings back itself are left out: deleted ones (ghost
    files, carried in the dump) and renamed ones (linked remaps), both in remap-fpath.img."""
    try:
        remaps = _image_entries(remap_fpath_img, REMAP_FPATH_MAGIC, "remap-fpath.img")
        remapped = {pw.singular(e).get(1) for e in remaps}
        found = {}
        for entry in _image_entries(files_img, FILES_MAGIC, "files.img"):
            fields = pw.singular(entry)
            if fields.get(1) != FD_TYPE_REG or 3 not in fields:
                continue
            reg = pw.singular(fields[3])  # images/regfile.proto: id 1, name 6, size 8, mode 10
            name = reg.get(6, b"").decode("utf-8", "surrogateescape")
            if reg.get(1) in remapped or not name.startswith("/"):
                continue
            found.setdefault(name, {"path": name, "size": reg.get(8), "mode": reg.get(10)})
    except (ValueError, TypeError, AttributeError, struct.error) as exc:
        raise CriuError(f"files.img cannot be read ({exc}): the dump is damaged") from None
    return sorted(found.values(), key=lambda f: f["path"])


def parse_crit_stats(text):
    """``crit decode -i stats-dump`` JSON to the same shape as parse_stats()."""
    doc = json.loads(text)
    out = {}
    for entry in doc.get("entries", []):
        for key in ("dump", "restore"):
            if key in entry:
                out[key] = dict((k, int(v)) for k, v in entry[key].items())
    return out


def summarize_dump_stats(stats):
    """The numbers the manifest reports, with units."""
    dump = stats.get("dump", {})
    frozen_us = dump.get("frozen_time")
    return {
        "frozen_s": round(frozen_us / 1e6, 6) if frozen_us is not None else None,
        "freezing_time_us": dump.get("freezing_time"),
        "frozen_time_us": dump.get("frozen_time"),
        "memdump_time_us": dump.get("memdump_time"),
        "memwrite_time_us": dump.get("memwrite_time"),
        "pages_scanned": dump.get("pages_scanned"),
        "pages_written": dump.get("pages_written"),
        "pages_written_bytes": dump.get("pages_written", 0) * os.sysconf("SC_PAGE_SIZE")
        if dump.get("pages_written") is not None
        else None,
    }


def read_stats(run_command, images_dir, crit=None, name="stats-dump"):
    """Stats of a finished dump: (stats, source, check).

    source is 'crit' when crit decoded it, else 'builtin'. check says whether both decoders
    agree ('match'), disagree (a message) or only one was available.
    """
    path = os.path.join(images_dir, name)
    try:
        with open(path, "rb") as handle:
            builtin = parse_stats(handle.read())
    except OSError as exc:
        raise CriuError(f"CRIU wrote no {name} in {images_dir}: {exc}") from None
    if not crit:
        return builtin, "builtin", "crit not installed: decoded by the built-in reader"
    rc, out, err = run_command([crit, "decode", "-i", path])
    if rc != 0:
        return (
            builtin,
            "builtin",
            f"crit decode failed ({(err or out).strip()[:200]}): built-in reader used",
        )
    try:
        decoded = parse_crit_stats(out)
    except ValueError:
        return builtin, "builtin", "crit printed no JSON: built-in reader used"
    if decoded != builtin:
        return decoded, "crit", f"MISMATCH with the built-in reader: {builtin}"
    return decoded, "crit", "match"


def _crit_decode(run_command, crit, images_dir, image):
    rc, out, err = run_command([crit, "decode", "-i", os.path.join(images_dir, image)])
    if rc != 0:
        raise CriuDumpFailed(
            f"crit cannot read {image} in {images_dir}: {(err or out).strip()} (the dump is unusable)"
        )
    try:
        return json.loads(out).get("entries", [])
    except ValueError:
        raise CriuDumpFailed(f"crit printed no JSON for {image} in {images_dir}") from None


def crit_check_images(run_command, crit, images_dir, root_pid_ns=1):
    """Decode pstree.img and inventory.img with crit: the image set is readable, its root task is
    known, and the plugins the restore will need (CRIU records them in the inventory) are listed."""
    if not crit:
        return {"checked": False, "reason": "crit not installed"}
    entries = _crit_decode(run_command, crit, images_dir, "pstree.img")
    if not entries:
        raise CriuDumpFailed(f"pstree.img in {images_dir} has no tasks (the dump is unusable)")
    inventory = _crit_decode(run_command, crit, images_dir, "inventory.img")
    plugins = ((inventory[0] if inventory else {}).get("plugins_entry") or {}).get("plugins") or []
    return {
        "checked": True,
        "tasks": len(entries),
        "root_pid_in_ns": entries[0].get("pid", root_pid_ns),
        "plugins": sorted(plugins),
    }


def dir_size(path):
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def classify_dump_failure(log_text, stderr, pid_alive):
    """Turn a failed ``criu dump`` into the right typed error message part."""
    text = (log_text or "") + "\n" + (stderr or "")
    if "No space left on device" in text or "ENOSPC" in text:
        return NoSpace
    # A task that vanished under CRIU: ESRCH from ptrace/seize ("No such process"), or gone now.
    if not pid_alive or "No such process" in text or "Can't seize" in text:
        return TargetGone
    return CriuDumpFailed


def log_tail(path, lines=12):
    """The last ``lines`` error lines of CRIU's log at ``path`` (else its last lines), a message
    repeated in a row (CRIU retries: "zombie ... found while seizing" ten times a second until its
    timeout) shown once with how often; "" when it cannot be read."""
    try:
        with open(path, errors="replace") as handle:
            content = handle.read().splitlines()
    except OSError:
        return ""
    errors = [line for line in content if "Error" in line or "error" in line]
    runs = []  # [first line, count, message] per run of one message (the text after its "(SS.ssssss) ")
    for line in errors or content:
        message = line.split(") ", 1)[-1] if line.startswith("(") else line
        if runs and runs[-1][2] == message:
            runs[-1][1] += 1
        else:
            runs.append([line, 1, message])
    return "\n".join(line + (f" [{count} times]" if count > 1 else "") for line, count, _m in runs[-lines:])
