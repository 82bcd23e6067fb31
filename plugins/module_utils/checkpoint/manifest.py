# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Dump directories and their manifest.json: names, lookup, atomic writes, retention."""

import json
import os
import re
import shutil

from ansible_collections.strata.ops.plugins.module_utils import mounts as mnt
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import BadCheckpoint
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument, utc_iso

MANIFEST = "manifest.json"


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
    """Write manifest.json last and atomically: a dump directory without one is no dump."""
    tmp = os.path.join(dump_dir, MANIFEST + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
    os.rename(tmp, os.path.join(dump_dir, MANIFEST))


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
