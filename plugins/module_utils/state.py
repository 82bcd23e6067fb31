# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""State files of reversible operations (runner isolation, ...): JSON, 0600, atomic, locked.

* ``StateFile(path).lock()`` is a context manager holding an exclusive ``fcntl.flock`` on
  ``<path>.lock`` (created 0600), so two runs of the same operation never interleave. It waits
  up to ``timeout`` seconds and raises ``StateLockedError`` after that. With ``create=False``
  (check mode, "nothing to restore") it creates neither the directory nor the lock file: when
  there is no lock file it yields without one, since such a run writes nothing.
* The lock file may be removed by its holder (``remove()`` does): a run that got the lock on a
  lock file that is no longer at ``<path>.lock`` (same device and inode) lets it go and tries
  again, so two runs never hold two different files.
* ``write(data)`` writes JSON to a temporary file in the same directory (created 0600 with
  ``O_EXCL``), fsyncs it, renames it over ``path`` and fsyncs the directory: a reader (or a run
  after ``kill -9``) sees the old file or the new one, never a torn one.
* ``read()`` returns the decoded data, or None when there is no file.
* ``remove()`` deletes the file and its lock file (call it holding the lock) and fsyncs the
  directory; gone already is fine. The directory stays: it may hold other state files.

Helpers raise ``StateError`` (or a subclass); a module's ``main()`` catches it once.
"""

import errno
import fcntl
import json
import os
import time
from contextlib import contextmanager, suppress

from ansible_collections.strata.ops.plugins.module_utils.common import StrataError

FORMAT_VERSION = 1


def flock_until(fd, deadline, poll):
    """An exclusive flock on ``fd``, tried until time.monotonic() reaches ``deadline``: True when
    taken, False when another holder kept it; OSError for anything else."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)


class StateError(StrataError):
    """A state file cannot be read, written or locked."""


class StateLockedError(StateError):
    """Another run holds the lock."""


def _fsync_dir(path):
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class StateFile:
    def __init__(self, path, kind="state"):
        self.path = os.path.abspath(path)
        self.kind = kind
        self.lock_path = self.path + ".lock"

    @property
    def directory(self):
        return os.path.dirname(self.path)

    def exists(self):
        return os.path.exists(self.path)

    def ensure_directory(self):
        if not os.path.isdir(self.directory):
            try:
                os.makedirs(self.directory, 0o700)
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise StateError(f"cannot create {self.directory}: {exc}") from None

    @contextmanager
    def lock(self, timeout=30.0, poll=0.1, create=True):
        if create:
            self.ensure_directory()
        deadline = time.monotonic() + timeout
        while True:
            fd = self._open_lock(create)
            if fd is None:
                yield self  # no lock file and none may be made: nothing to exclude
                return
            try:
                self._flock(fd, deadline, poll, timeout)
                if self._is_current_lock(fd):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # its holder removed that lock file meanwhile: lock the new one
        try:
            yield self
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _open_lock(self, create):
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            return os.open(self.lock_path, flags, 0o600)
        except OSError as exc:
            if not create and exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise StateError(f"cannot open the lock file {self.lock_path}: {exc}") from None

    def _flock(self, fd, deadline, poll, timeout):
        try:
            taken = flock_until(fd, deadline, poll)
        except OSError as exc:
            raise StateError(f"cannot lock {self.lock_path}: {exc}") from None
        if not taken:
            raise StateLockedError(
                f"{self.lock_path} is locked by another run (waited {timeout:.0f} s): wait for it to finish"
            )

    def _is_current_lock(self, fd):
        try:
            now = os.stat(self.lock_path)
        except OSError:
            return False
        held = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)

    def read(self):
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise StateError(f"cannot read the {self.kind} file {self.path}: {exc}") from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError as exc:
            raise StateError(
                f"the {self.kind} file {self.path} is not valid JSON ({exc}): "
                "it was not written by this collection, or edited by hand"
            ) from None
        if not isinstance(data, dict):
            raise StateError(f"the {self.kind} file {self.path} does not hold a JSON object")
        return data

    def write(self, data):
        self.ensure_directory()
        payload = json.dumps(data, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        tmp = f"{self.path}.tmp.{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise StateError(f"cannot create {tmp}: {exc}") from None
            os.unlink(tmp)  # left by a killed run with the same pid
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            os.unlink(tmp)
            raise StateError(f"cannot write {tmp}: {exc}") from None
        os.close(fd)
        try:
            os.rename(tmp, self.path)
        except OSError as exc:
            os.unlink(tmp)
            raise StateError(f"cannot rename {tmp} to {self.path}: {exc}") from None
        _fsync_dir(self.directory)

    def remove_lock(self):
        """Remove the lock file (its holder does, while holding it: a waiter then locks a new one)."""
        with suppress(FileNotFoundError):
            os.unlink(self.lock_path)

    def remove(self):
        """Remove the state file and then its lock file; True when the state file was there."""
        removed = False
        for path in (self.path, self.lock_path):
            try:
                os.unlink(path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise StateError(f"cannot remove the {self.kind} file {path}: {exc}") from None
            else:
                removed = removed or path == self.path
        _fsync_dir(self.directory)
        return removed


def atomic_write_bytes(path, data, mode=None):
    """Replace ``path`` with ``data`` through a temporary file and a rename, keeping the
    existing file's mode, owner and group (or ``mode`` for a new file)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(path)
    except OSError:
        st = None
    tmp = f"{path}.strata-tmp.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if st is not None:
                os.fchmod(fd, st.st_mode & 0o7777)
                with suppress(OSError):  # not root: the file stays ours, which it already was
                    os.fchown(fd, st.st_uid, st.st_gid)
            elif mode is not None:
                os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as exc:
        with suppress(OSError):
            os.unlink(tmp)
        raise StateError(f"cannot write {path}: {exc}") from None
    _fsync_dir(directory)
