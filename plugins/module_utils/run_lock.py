# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run lock of a host: one changing strata.ops run at a time (strata.ops.run_lock).

A lock is a small JSON file (0600) ``<lock_dir>/<name>.json`` naming its holder: build_lock's owner
record of one ansible-playbook process (controller host name, boot id, pid, the pid's start time,
so a reused pid is never taken for the old run), its token, the play and the user. The default
directory is under /run, a tmpfs: a reboot ends every run, and their locks with it.

Taking, releasing and breaking go through ``fcntl.flock`` on ``<lock_dir>/.guard``, so two runs
that look at the same moment never both see the lock free. A holder takes its own lock again
(the plays of one site.yml run); a release or a break names the token it removes, so a run never
removes a lock another run has taken since. Several names are taken together, all or none, under
one guard (site.yml holds the host's and the workload's for its whole run).
"""

import errno
import fcntl
import json
import os
import re
from contextlib import contextmanager

from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument, StrataError
from ansible_collections.strata.ops.plugins.module_utils.state import atomic_write_bytes

LOCK_DIR = "/run/strata-ops/locks"


def default_lock_dir(uid=None, runtime_root="/run/user", temp_root="/tmp"):
    """Where a user's run locks live when the play gives no lock_dir: /run/strata-ops/locks for
    root (the playbooks become root); for another user (an execution environment runs as uid
    1000) its runtime directory, else a directory of its own under /tmp. Like /run, both end with
    a reboot."""
    uid = os.getuid() if uid is None else uid
    if uid == 0:
        return LOCK_DIR
    runtime = os.path.join(runtime_root, str(uid))
    if os.path.isdir(runtime):
        return os.path.join(runtime, "strata-ops", "locks")
    return os.path.join(temp_root, f"strata-ops-{uid}", "locks")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class RunLockError(StrataError):
    """The lock directory or file cannot be used."""


def lock_path(lock_dir, name):
    if not _NAME.match(name or ""):
        raise InvalidArgument(
            f"name {name!r} is not a lock name: use letters, digits, '.', '_' and '-' (at most 100), "
            "e.g. strata-ops or workload-validator"
        )
    if not os.path.isabs(lock_dir):
        raise InvalidArgument(f"lock_dir must be an absolute path, got {lock_dir!r}")
    return os.path.join(lock_dir, f"{name}.json")


@contextmanager
def _guarded(lock_dir, create):
    """The guard flock, held while a lock file is read and changed. Without ``create`` (check mode)
    a missing directory is simply a free lock: nothing is created."""
    if create:
        try:
            os.makedirs(lock_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise RunLockError(
                f"cannot make the lock directory {lock_dir}: {exc.strerror}; give lock_dir a writable path"
            ) from None
        info = os.lstat(lock_dir)
        if not os.path.isdir(lock_dir) or os.path.islink(lock_dir) or info.st_uid != os.getuid():
            # a directory another user made (under /tmp) could be used to fake or hide a lock
            raise RunLockError(
                f"the lock directory {lock_dir} is not a directory of this user (uid {os.getuid()}); "
                "remove it or give lock_dir another path"
            )
    guard = os.path.join(lock_dir, ".guard")
    try:
        fd = os.open(guard, (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY, 0o600)
    except FileNotFoundError:
        yield
        return
    except OSError as exc:
        raise RunLockError(f"cannot open {guard}: {exc.strerror}; check lock_dir") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_holder(path):
    """The holder recorded in ``path``; None when free. A file that is not a holder (torn by an
    editor, written by something else) is named, never silently taken over."""
    try:
        with open(path, encoding="utf-8") as handle:
            holder = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RunLockError(
            f"the lock file {path} cannot be read ({exc}); if no strata.ops run is going on, remove it"
        ) from None
    if not isinstance(holder, dict) or not holder.get("token"):
        raise RunLockError(
            f"the lock file {path} names no holder; if no strata.ops run is going on, remove it"
        )
    return holder


def acquire(lock_dir, names, holder, check_mode=False):
    """(taken, the holder in the way or ours, the lock file in the way or None): the locks of
    ``names`` (a list) are taken when each is free or already ours, none of them when one is
    another run's. In check mode nothing is written; ``taken`` says whether it would be."""
    paths = [lock_path(lock_dir, name) for name in names]
    with _guarded(lock_dir, create=not check_mode):
        free = []
        for path in paths:
            current = read_holder(path)
            if current is not None and current["token"] != holder["token"]:
                return False, current, path
            if current is None:
                free.append(path)
        if not check_mode:
            for path in free:
                atomic_write_bytes(path, json.dumps(holder, sort_keys=True).encode(), mode=0o600)
        return True, holder, None


def remove(lock_dir, names, token, check_mode=False):
    """Removes each lock of ``names`` that ``token`` holds: (whether one was, the first holder
    found: ``token``'s, another run's, or None when all are free)."""
    removed, found = False, None
    with _guarded(lock_dir, create=False):
        for path in [lock_path(lock_dir, name) for name in names]:
            current = read_holder(path)
            found = found or current
            if current is None or current["token"] != token:
                continue
            removed = True
            if not check_mode:
                try:
                    os.unlink(path)
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise RunLockError(f"cannot remove {path}: {exc.strerror}") from None
    return removed, found


def describe(holder):
    """One line for an operator: who holds it, since when."""
    return (
        f"play {holder.get('play')!r} run by {holder.get('user')}@{holder.get('host')} "
        f"(ansible-playbook pid {holder.get('pid')}) since {holder.get('started')}"
    )
