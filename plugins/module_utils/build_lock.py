# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A lock file that records its owner, and is taken over when that owner is gone.

The data-miner operators build their image under ``/tmp/data-miner_build.lock`` ("delete if builds
get stuck"): a build killed mid-way left the file behind and every later build hung. This lock
holds its owner as JSON (pid, the process start time of ``/proc/<pid>/stat`` field 22, boot id,
host name, command, started), so a later run can tell:

* alive   same host, same boot, the pid runs with the same start time: wait (poll, up to ``timeout``),
          then ``LockHeld`` naming the owner and what to do;
* dead    the pid is gone (or a zombie), runs with another start time (a reused pid), or the
          record is from another boot: take the lock over; ``taken_over_from`` holds the dead
          owner's record so the module warns;
* foreign another host name (a /tmp shared over NFS): never taken over, only waited for;
* unowned an empty file or not our JSON (an older tool touched it): waited for, then
          ``LockUnowned`` naming the file, its age and mtime; taken over only with
          ``takeover_unowned``.

Atomicity: a lock is written to a private file (``O_CREAT|O_EXCL``, 0600) first, so nobody ever
reads a half-written one. A free lock is published with ``link()``, which fails when the lock
exists. A stale one is replaced with ``rename()`` while holding ``flock`` on its inode and after
checking that the path still names that inode: the path never goes missing, and a second taker
either waits for the flock or finds the inode replaced and reads the winner's live record, so
exactly one wins. Release, under the same flock, removes the file only while it holds our token.

    with BuildLock(path, "docker build data-miner:latest", timeout=300) as lock:
        ...  # lock.taken_over_from: the dead owner's record, or None
"""

import errno
import json
import os
import socket
import time
import uuid
from contextlib import suppress

from ansible_collections.strata.ops.plugins.module_utils.common import StrataError, utc_iso
from ansible_collections.strata.ops.plugins.module_utils.state import flock_until

FORMAT = "strata.ops/build_lock/1"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
ALIVE, DEAD, FOREIGN, UNOWNED = "alive", "dead", "foreign", "unowned"


class LockError(StrataError):
    """The lock file cannot be created, read or removed."""


class LockHeld(LockError):
    """A live (or foreign, or busy) owner kept the lock past the timeout."""

    error_kind = "lock_held"


class LockUnowned(LockError):
    """The lock file holds no owner record (empty, or another tool's)."""

    error_kind = "lock_unowned"


def boot_id():
    with open(BOOT_ID_PATH) as handle:
        return handle.read().strip()


def process_start(pid):
    """(start time in clock ticks since boot, state letter) of ``pid`` from /proc/<pid>/stat, or
    None when there is no such process."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as handle:
            raw = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: the fields after the last ")" start at 3
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[22 - 3]), fields[0]


def owner_record(pid=None, command="", token=None):
    """The record that names process ``pid`` (default this one) as the owner."""
    pid = os.getpid() if pid is None else pid
    start = process_start(pid)
    if start is None:
        raise LockError(f"process {pid} does not exist: it cannot own a lock")
    return {
        "format": FORMAT,
        "pid": pid,
        "start_time": start[0],
        "boot_id": boot_id(),
        "host": socket.gethostname(),
        "command": command,
        "started": utc_iso(),
        "token": token or uuid.uuid4().hex,
    }


def parse_record(raw):
    """The owner record in a lock file's bytes, or None when they are not one of ours."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except ValueError:
        return None
    return checked_record(record)


def checked_record(record):
    """``record`` when it is an owner record (the keys owner_state judges, well typed), else None."""
    if not isinstance(record, dict):
        return None
    typed = {"pid": int, "start_time": int, "boot_id": str, "host": str}
    for key, kind in typed.items():
        if not isinstance(record.get(key), kind) or isinstance(record[key], bool):  # JSON true is no pid
            return None
    if record["pid"] <= 0:
        return None
    return record


def owner_state(record, here, start_of=process_start):
    """(state, why) of a parsed record: ``here`` is {host, boot_id} of this machine, ``start_of``
    maps a pid to (start time, state) or None."""
    if record is None:
        return UNOWNED, "it holds no strata.ops owner record"
    if record["host"] != here["host"]:
        return FOREIGN, f"its owner runs on host {record['host']}, this is {here['host']}"
    if record["boot_id"] != here["boot_id"]:
        return DEAD, "it was taken before the last reboot"
    running = start_of(record["pid"])
    if running is None:
        return DEAD, f"process {record['pid']} is gone"
    if running[1] == "Z":
        return DEAD, f"process {record['pid']} has exited (a zombie)"
    if running[0] != record["start_time"]:
        return DEAD, f"pid {record['pid']} now belongs to another process (another start time)"
    return ALIVE, f"process {record['pid']} still runs"


def age_text(seconds):
    seconds = max(0, int(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60)):
        if seconds >= size:
            rest = (seconds % size) // sub_size
            return f"{seconds // size} {unit}" + (f" {rest} {sub}" if rest else "")
    return f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s"


def describe_owner(record):
    """pid 123 (docker build x) on host h since 2025-...Z, for messages."""
    what = f" ({record['command']})" if record.get("command") else ""
    since = f" since {record['started']}" if record.get("started") else ""
    return f"pid {record['pid']}{what} on host {record['host']}{since}"


class _Found:
    """What the lock path held when looked at under flock."""

    def __init__(self, raw, stat):
        self.raw = raw
        self.mtime = stat.st_mtime
        self.record = parse_record(raw)


class BuildLock:
    """The lock at ``path`` for ``command``; a context manager (``acquire`` / ``release``)."""

    def __init__(self, path, command, timeout=300.0, poll=0.5, takeover_unowned=False):
        self.path = os.path.abspath(path)
        self.command = command
        self.timeout = timeout
        self.poll = poll
        self.takeover_unowned = takeover_unowned
        self.record = None  # ours, while held
        self.taken_over_from = None  # the dead owner's record (or the unowned file's mtime)
        self.warnings = []

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *_exc):
        self.release()

    def here(self):
        return {"host": socket.gethostname(), "boot_id": boot_id()}

    # ---------------------------------------------------------------- acquire

    def acquire(self):
        deadline = time.monotonic() + self.timeout
        record = owner_record(command=self.command)
        here = {"host": record["host"], "boot_id": record["boot_id"]}
        while True:
            if self._publish(record):
                self.record = record
                return self
            fd = self._open_existing()
            if fd is None:
                continue  # removed meanwhile: try to create it again
            try:
                found = self._examine(fd)
                if found is None:
                    state, why = "busy", "another process holds a flock on it"
                elif found is False:
                    continue  # replaced meanwhile: look at the new one
                else:
                    state, why = owner_state(found.record, here)
                    if state == DEAD or (state == UNOWNED and self.takeover_unowned):
                        # renamed over while we hold its flock: the path never goes missing, so a
                        # second taker finds our record (or waits for the flock), never a gap
                        self._replace(record)
                        self.record = record
                        self.taken_over_from = found.record or {
                            "unowned": True,
                            "modified": utc_iso(found.mtime),
                        }
                        self.warnings.append(self._takeover_warning(found, why))
                        return self
            finally:
                os.close(fd)
            if time.monotonic() >= deadline:
                raise self._held_error(state, why, found)
            time.sleep(self.poll)

    def _publish(self, record):
        """Write ``record`` to a private file and link it to the lock path: False when a lock exists."""
        tmp = self._private(record)
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP):
                raise self._os_error("create", self.path, exc) from None
        finally:
            with suppress(OSError):
                os.unlink(tmp)
        # no hard links on this file system: O_EXCL on the path itself (briefly empty)
        try:
            self._write_new(self.path, record)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise self._os_error("create", self.path, exc) from None

    def _replace(self, record):
        tmp = self._private(record)
        try:
            os.rename(tmp, self.path)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(tmp)
            raise self._os_error("replace", self.path, exc) from None

    def _private(self, record):
        """A new file beside the lock holding ``record``, named by its token."""
        tmp = f"{self.path}.{record['token']}.new"
        try:
            self._write_new(tmp, record)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(tmp)
            raise self._os_error("create", self.path, exc) from None
        return tmp

    @staticmethod
    def _write_new(path, record):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, json.dumps(record, sort_keys=True).encode("utf-8") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _open_existing(self):
        try:
            return os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._os_error("read", self.path, exc) from None

    def _examine(self, fd, patience=0.0):
        """Under flock: _Found, False when the path no longer names this inode, None when another
        process holds a flock on it for longer than ``patience`` seconds."""
        try:
            taken = flock_until(fd, time.monotonic() + patience, 0.05)
        except OSError as exc:
            raise self._os_error("lock", self.path, exc) from None
        if not taken:
            return None
        held = os.fstat(fd)
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            return False
        raw = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return _Found(raw, held)
            raw += chunk

    def _unlink(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._os_error("remove", self.path, exc) from None

    def _os_error(self, verb, path, exc):
        hint = {
            errno.ENOENT: f"create {os.path.dirname(path)} or set another lock path",
            errno.EACCES: "run as the user that owns it (or root), or set another lock path",
            errno.EPERM: "run as the user that owns it (or root), or set another lock path",
        }.get(exc.errno, "check the lock path")
        return LockError(f"cannot {verb} the build lock {path}: {exc.strerror}; {hint}", lock_path=self.path)

    def _takeover_warning(self, found, why):
        if found.record is None:
            return (
                f"took over the build lock {self.path}: it held no owner record (last modified "
                f"{utc_iso(found.mtime)}) and takeover_unowned is set"
            )
        return (
            f"took over the build lock {self.path} from a dead owner: {describe_owner(found.record)} "
            f"({why}); that build did not finish"
        )

    def _held_error(self, state, why, found):
        waited = f"waited {self.timeout:g} s"
        details = {"lock": {"path": self.path, "held_by": found.record if found else None}}
        if state == UNOWNED:
            age = time.time() - found.mtime
            what = "empty" if not found.raw.strip() else "no owner record in it"
            return LockUnowned(
                f"the build lock {self.path} is not a strata.ops lock ({what}); "
                f"last modified {utc_iso(found.mtime)}, {age_text(age)} ago; {waited}. Another tool (the "
                f"operators' build script) may be building: if no build runs, delete it (rm {self.path}) "
                "or set takeover_unowned: true",
                **details,
            )
        if state == "busy":
            return LockHeld(
                f"the build lock {self.path} is held: {why} ({waited}). Wait for that process (fuser "
                f"{self.path} names it), or raise lock_timeout",
                **details,
            )
        owner = describe_owner(found.record)
        if state == FOREIGN:
            return LockHeld(
                f"the build lock {self.path} is held by {owner} ({why}); {waited}. This host cannot tell "
                f"whether it still runs: wait for it, or check on {found.record['host']} and delete "
                f"{self.path} if no build runs there",
                **details,
            )
        return LockHeld(
            f"the build lock {self.path} is held by {owner} ({why}); {waited}. Wait for that build to "
            f"finish and run again (or raise lock_timeout), or stop it (kill {found.record['pid']}): "
            "its lock is then taken over",
            **details,
        )

    # ---------------------------------------------------------------- release

    def release(self):
        """Remove the lock file if it still holds our record; True when removed."""
        record, self.record = self.record, None
        if record is None:
            return False
        fd = self._open_existing()
        if fd is None:
            self.warnings.append(f"the build lock {self.path} was removed by someone else while held")
            return False
        try:
            found = self._examine(fd, patience=10.0)  # takers hold the flock only for a moment
            ours = bool(found) and (found.record or {}).get("token") == record["token"]
            if ours:
                self._unlink()
            elif found is None:
                self.warnings.append(f"the build lock {self.path} stays: another process holds a flock on it")
            elif found:
                other = describe_owner(found.record) if found.record else "another tool"
                self.warnings.append(f"the build lock {self.path} is now {other}'s: left in place")
            return ours
        finally:
            os.close(fd)

    # ---------------------------------------------------------------- check mode

    def inspect(self):
        """{state: free|alive|dead|foreign|unowned, why, held_by, modified}: a look, no lock taken."""
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
                mtime = os.fstat(handle.fileno()).st_mtime
        except FileNotFoundError:
            return {"state": "free", "why": "no lock file", "held_by": None}
        except OSError as exc:
            raise self._os_error("read", self.path, exc) from None
        record = parse_record(raw)
        state, why = owner_state(record, self.here())
        return {"state": state, "why": why, "held_by": record, "modified": utc_iso(mtime)}
