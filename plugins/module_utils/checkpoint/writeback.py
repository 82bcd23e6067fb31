# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A dump's images on the disk while CRIU writes them, and durable before the manifest says done.

CRIU writes a process's memory through the page cache (pages-*.img, as large as the process). Left
to the kernel, writeback starts only past vm.dirty_background_ratio and CRIU's writes are
throttled at vm.dirty_ratio; the fsync after the dump then writes most of it. ``Writeback`` asks
for the writeback of what CRIU wrote every 50 ms while it writes (posix_fadvise DONTNEED starts
the writes of a range's dirty pages and drops its clean ones: the images are not read again
soon, and a dump of a 4 GiB process does not keep 4 GiB of cache): a 4 GiB dump plus its fsync
went from 0.65-1.2 GB/s to 1.1-1.9 GB/s on the test bed (docs/performance.md, checkpoint).

``make_durable`` then fsyncs every file and directory of the dump, so that a manifest written
after it names images that are on the disk, and an older dump is pruned only after that.
"""

import os
import threading
import time

INTERVAL_S = 0.05


class Writeback:
    """While in its ``with`` block, a thread starts the writeback of every file under ``root``
    that grew since it last looked. ``advised`` counts the requests per path (what it did)."""

    def __init__(self, root, interval=INTERVAL_S):
        self.root = root
        self.interval = interval
        self.advised = {}
        self._sizes = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writeback", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False

    def _run(self):
        while not self._stop.wait(self.interval):
            self.advise_grown()

    def advise_grown(self):
        """One pass: the writeback of every file that grew since the last pass."""
        for path, size in files_under(self.root):
            if size > self._sizes.get(path, 0):
                self._sizes[path] = size
                if advise(path):
                    self.advised[path] = self.advised.get(path, 0) + 1


def files_under(root):
    """(path, size) of every regular file under ``root``; a file or directory gone meanwhile
    (CRIU renames, a failed dump is removed) is skipped."""
    pending = [root]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    yield entry.path, entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue


def advise(path):
    """Start the writeback of ``path``'s dirty pages (and drop its clean ones). False when the
    file is gone or the file system does not take the advice."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def make_durable(root, clock=time.monotonic):
    """fsync every file under ``root``, then every directory (deepest first, ``root`` last):
    the dump survives a power loss once this returns. Returns (seconds, paths synced)."""
    started = clock()
    synced = [path for path, _size in files_under(root)]
    for path in synced:
        _fsync(path, os.O_RDONLY | os.O_NOFOLLOW)
    directories = sorted({os.path.dirname(path) for path in synced} | {root}, key=len, reverse=True)
    for path in directories:
        _fsync(path, os.O_RDONLY | os.O_DIRECTORY)
    return clock() - started, synced + directories


def _fsync(path, flags):
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
