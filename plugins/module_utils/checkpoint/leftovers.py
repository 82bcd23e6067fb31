# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copy of a checkpoint that containerd leaves behind after every restore.

containerd's tasks service (``plugins/services/tasks/local.go``, ``Create``; 1.6 to 2.3) extracts
the checkpoint it is asked to restore from into ``os.MkdirTemp(os.Getenv("XDG_RUNTIME_DIR"),
"ctrd-checkpoint")`` and hands that directory to the runtime, but never removes it
(containerd/containerd#10166). pod_checkpoint's Docker restore goes through it (``docker start
--checkpoint``: dockerd passes the dump to its containerd as a checkpoint), so each would leave a
full copy of the process's memory in the temporary directory of containerd, often a tmpfs: RAM.
(method=containerd restores from the dump directory itself and makes no copy.)

A restore therefore notes the copies present before its call and, once the call has returned,
removes the one that appeared meanwhile holding the checkpoint's files (same names and sizes). Two
such copies mean another restore of the same checkpoint ran at the same moment, which may still be
reading its own: both are left and named.
"""

import os
import shutil
import stat

from ansible_collections.strata.ops.plugins.module_utils.checkpoint.runtime_criu import containerd_processes

PREFIX = "ctrd-checkpoint"


def containerd_temp_dirs(proc="/proc"):
    """{path as this process reaches it: path as containerd sees it} of the directories running
    containerd processes make their restore copies in: Go's os.MkdirTemp(XDG_RUNTIME_DIR), that is
    XDG_RUNTIME_DIR, else TMPDIR, else /tmp. Reached through /proc/PID/root, so a containerd in
    another mount namespace (a snap's private /tmp) is found too; one directory is listed once."""
    found, seen = {}, set()
    for pid, env in containerd_processes(proc):
        try:
            own = (env.get(b"XDG_RUNTIME_DIR") or env.get(b"TMPDIR") or b"/tmp").decode()
            reach = os.path.join(proc, pid, "root", own.lstrip("/"))
            info = os.stat(reach)
            key = (info.st_dev, info.st_ino)
        except (OSError, UnicodeDecodeError):
            continue  # gone meanwhile, or not ours to read
        if key not in seen:
            seen.add(key)
            found[reach] = own
    return found


def dir_files(path):
    """{relative path: size} of the regular files under ``path``."""
    files = {}
    for root, _dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            info = os.lstat(full)
            if stat.S_ISREG(info.st_mode):
                files[os.path.relpath(full, path)] = info.st_size
    return files


def copies_in(dirs):
    """The paths of containerd's restore copies in ``dirs`` (paths as this process reaches them)."""
    present = set()
    for reach in dirs:
        try:
            present.update(os.path.join(reach, n) for n in os.listdir(reach) if n.startswith(PREFIX))
        except OSError:
            continue
    return present


class RestoreCopies:
    """containerd's copies of one checkpoint: note them before a restore call, remove the new one
    after it (see the module's doc)."""

    def __init__(self, files, proc="/proc"):
        self.files = files
        self.dirs = containerd_temp_dirs(proc)
        self.before = copies_in(self.dirs)

    def _shown(self, path):
        reach = os.path.dirname(path)
        return os.path.join(self.dirs[reach], os.path.basename(path))

    def remove(self):
        """(removed, left): containerd's paths of the copy removed and of the copies left."""
        matching = []
        for path in sorted(copies_in(self.dirs) - self.before):
            try:
                if dir_files(path) == self.files:
                    matching.append(path)
            except OSError:
                continue
        if len(matching) == 1:
            shutil.rmtree(matching[0], ignore_errors=True)
            if not os.path.exists(matching[0]):
                return [self._shown(matching[0])], []
        return [], [self._shown(p) for p in matching]

    def result(self):
        """The restore's result keys: the copy removed (or None), a warning naming copies left."""
        removed, left = self.remove()
        found = {"containerd_copy_removed": removed[0] if removed else None}
        if left:
            found["warnings"] = [
                f"containerd left copies of this checkpoint in {', '.join(left)} (could not be removed, "
                "or a restore of the same checkpoint ran at the same time and may still read one): "
                "remove them once no restore runs"
            ]
        return found
