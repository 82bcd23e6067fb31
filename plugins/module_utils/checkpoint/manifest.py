# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dump directories and their manifest.json: names, lookup, atomic writes, retention."""

import json
import os
import re
import shutil
import socket

from ansible_collections.strata.ops.plugins.module_utils import build_lock, criu
from ansible_collections.strata.ops.plugins.module_utils import mounts as mnt
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import BadCheckpoint
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument, utc_iso

MANIFEST = "manifest.json"
# Who is writing a dump directory (build_lock's owner record): a run killed mid-dump leaves one
# behind, so the next run can tell its remains from a dump another run is still writing.
OWNER = ".strata-dump-owner"


# A dump directory's name: NAME-STAMP (stamp() below).
DUMP_DIR = re.compile(r"^(?P<name>.+)-(?P<stamp>\d{8}T\d{6}\.\d{3}Z)$")


def stamp(wall=None):
    """UTC time as the suffix of a dump directory: 20250101T000000.000Z (sorts by time)."""
    return utc_iso(wall).replace("-", "").replace(":", "")


def dumps_of(images_dir, name):
    """Dump directories of exactly ``name`` in images_dir (NAME-STAMP with a manifest), oldest
    first: the dumps of ``app-2`` are never counted (or pruned) as dumps of ``app``."""
    try:
        entries = os.listdir(images_dir)
    except OSError:
        return []
    found = []
    for entry in entries:
        match = DUMP_DIR.match(entry)
        path = os.path.join(images_dir, entry)
        if match and match.group("name") == name and os.path.isfile(os.path.join(path, MANIFEST)):
            found.append(path)
    return sorted(found)


# File systems that cannot hold a dump: the kernel's views (/proc, /sys, /dev ...), never disks.
KERNEL_FSTYPES = frozenset(
    [
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "securityfs",
        "debugfs",
        "tracefs",
        "pstore",
        "bpf",
        "configfs",
        "fusectl",
        "binfmt_misc",
        "mqueue",
        "hugetlbfs",
    ]
)


def check_images_dir(path, read_mountinfo=mnt.read_mountinfo):
    """Refuse an images_dir that cannot hold dump directories, before anything is done."""
    real = os.path.realpath(path)
    if os.path.exists(real) and not os.path.isdir(real):
        raise InvalidArgument(
            f"images_dir {path} is not a directory (it is a file): point images_dir at a directory (it is "
            "created when missing) on a file system with room for the process's memory"
        )
    holder = None
    for mount in read_mountinfo():
        if mnt.is_below(real, mount["mount_point"]) and (
            holder is None or len(mount["mount_point"]) >= len(holder["mount_point"])
        ):
            holder = mount
    if holder and holder["fstype"] in KERNEL_FSTYPES:
        raise InvalidArgument(
            f"images_dir {path} is on {holder['mount_point']} ({holder['fstype']}), a kernel file system "
            "that cannot hold a dump: point images_dir at a directory on a disk file system with room "
            "for the process's memory"
        )


def make_images_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument(
            f"cannot create images_dir {path}: {exc.strerror}. Create it or choose another directory"
        ) from None


def mount_view(mount):
    view = dict((k, mount[k]) for k in ("mount_point", "fstype", "source", "root"))
    if mount.get("propagated"):
        view.update(propagated=True, host_path=mount.get("host_path"))
    return view


def choose(checkpoint, images_dir, name):
    """The dump directory to restore: ``checkpoint``, or the newest dump of ``name``."""
    if not checkpoint:
        if not images_dir or not name:
            raise InvalidArgument(
                "state=restored needs checkpoint, or images_dir and name to pick the newest dump"
            )
        dumps = dumps_of(images_dir, name)
        if not dumps:
            raise InvalidArgument(f"no dump of {name!r} in {images_dir} (no {name}-*/{MANIFEST})")
        checkpoint = dumps[-1]
    return checkpoint.rstrip("/")


def load(checkpoint):
    try:
        with open(os.path.join(checkpoint, MANIFEST)) as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise BadCheckpoint(f"{checkpoint} is not a pod_checkpoint dump ({MANIFEST}: {exc})") from None


def write(dump_dir, manifest):
    """Write manifest.json last, atomically and durably: a dump directory without one is no dump,
    and one with it survives a power loss (its images were synced before)."""
    tmp = os.path.join(dump_dir, MANIFEST + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(tmp, os.path.join(dump_dir, MANIFEST))
    directory = os.open(dump_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def check_free_space(images_dir, pids, proc="/proc"):
    """Refuse a dump into ``images_dir`` when it has less room than the memory a dump of ``pids``
    writes (criu.dumped_memory_bytes), before anything is frozen or written."""
    vfs = os.statvfs(images_dir)
    free = vfs.f_bavail * vfs.f_frsize
    needed = criu.dumped_memory_bytes(pids, proc)
    if free < needed:
        raise criu.NoSpace(
            f"{images_dir} has {free} bytes free but the dump of the process tree writes about {needed} "
            "bytes (its anonymous and shared memory, RssAnon + RssShmem): free space there or point "
            "images_dir at a larger file system"
        )


def size_problem(archive, manifest):
    """Why ``archive`` is not the archive the dump wrote (its size differs from the manifest's
    sizes.images_bytes), or None."""
    size, want = os.path.getsize(archive), (manifest.get("sizes") or {}).get("images_bytes")
    if want is not None and size != want:
        return f"{archive} has {size} bytes, the dump wrote {want}: it is truncated or changed"
    return None


def start(dump_dir):
    """Make the dump directory, owned by this process until finish()."""
    os.makedirs(dump_dir)
    try:
        with open(os.path.join(dump_dir, OWNER), "w") as handle:
            json.dump(build_lock.owner_record(command="pod_checkpoint dump"), handle)
    except BaseException:
        shutil.rmtree(dump_dir, ignore_errors=True)  # e.g. a full disk: no half-made directory
        raise


def finish(dump_dir, manifest):
    """The manifest (the dump is complete), then no owner any more."""
    write(dump_dir, manifest)
    os.unlink(os.path.join(dump_dir, OWNER))


def remove_abandoned(images_dir, name):
    """Remove the unfinished dumps of ``name`` whose writer is dead (killed mid-dump: its images,
    as large as the process's memory, would stay forever); an empty one too (killed before it
    recorded itself). Dumps being written by a live process and foreign directories stay.
    Returns the removed paths."""
    here = {"host": socket.gethostname(), "boot_id": build_lock.boot_id()}
    removed = []
    try:
        entries = sorted(os.listdir(images_dir))
    except OSError:
        return removed
    for entry in entries:
        match = DUMP_DIR.match(entry)
        path = os.path.join(images_dir, entry)
        if not match or match.group("name") != name or os.path.exists(os.path.join(path, MANIFEST)):
            continue
        try:
            with open(os.path.join(path, OWNER), "rb") as handle:
                record = build_lock.parse_record(handle.read())
        except FileNotFoundError:
            record = None
            if not os.path.isdir(path) or os.listdir(path):
                continue  # not ours to judge: no owner record and not empty
        except OSError:
            continue
        if record is None or build_lock.owner_state(record, here)[0] == build_lock.DEAD:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def prune(images_dir, name, keep, current):
    """Remove the oldest dumps of ``name`` beyond ``keep`` (0 keeps all); never ``current``."""
    pruned = []
    dumps = dumps_of(images_dir, name)
    if keep > 0 and len(dumps) > keep:
        for old in dumps[: len(dumps) - keep]:
            if old != current:
                shutil.rmtree(old)
                pruned.append(old)
    return pruned
