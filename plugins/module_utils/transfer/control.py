# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a download has written so far (byte ranges in the control file), its status file, and space.

The control file ``<tmp>.ctl`` (JSON, replaced atomically after the data is synced) lists the
byte ranges already in the temporary file, so a run after any interruption fetches only the rest."""

import contextlib
import errno
import json
import os
import time

from ansible_collections.strata.ops.plugins.module_utils.transfer.errors import DiskSpaceError

CONTROL_VERSION = 1

# Room the control file needs beside the data: itself and its replacement while it is swapped.
CONTROL_FILE_SPACE = 2 * 64 * 1024

_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class RangeSet:
    """Sorted, merged half-open byte ranges [start, end)."""

    def __init__(self, ranges=()):
        self.ranges = []
        for start, end in ranges:
            self.add(start, end)

    def add(self, start, end):
        if end <= start:
            return
        merged = []
        placed = False
        for s, e in self.ranges:
            if e < start or s > end:
                if s > end and not placed:
                    merged.append([start, end])
                    placed = True
                merged.append([s, e])
            else:
                start, end = min(s, start), max(e, end)
        if not placed:
            merged.append([start, end])
        merged.sort()
        self.ranges = merged

    def total(self):
        return sum(e - s for s, e in self.ranges)

    def missing(self, length):
        out, pos = [], 0
        for s, e in self.ranges:
            if s > pos:
                out.append([pos, min(s, length)])
            pos = max(pos, e)
        if pos < length:
            out.append([pos, length])
        return [r for r in out if r[1] > r[0]]

    def covers(self, length):
        return not self.missing(length)


def control_path(tmp_path):
    return tmp_path + ".ctl"


def load_control(tmp_path, name, length):
    """The ranges recorded for this temporary file, or an empty set when nothing is usable.

    A control file for another archive or length, or without its data file, is ignored.
    """
    ctl = control_path(tmp_path)
    if not os.path.exists(tmp_path) or not os.path.exists(ctl):
        return RangeSet(), 0
    try:
        with open(ctl) as handle:
            state = json.load(handle)
        if (
            state.get("version") != CONTROL_VERSION
            or state.get("name") != name
            or state.get("length") != length
        ):
            return RangeSet(), 0
        ranges = RangeSet((int(s), int(e)) for s, e in state.get("done", []))
    except (OSError, ValueError, TypeError):
        return RangeSet(), 0
    size = os.path.getsize(tmp_path)
    usable = RangeSet((s, min(e, size)) for s, e in ranges.ranges)
    return usable, int(state.get("fetched_bytes", 0))


def save_control(tmp_path, name, length, done, fetched_bytes):
    ctl = control_path(tmp_path)
    state = dict(
        version=CONTROL_VERSION,
        name=name,
        length=length,
        done=done.ranges,
        fetched_bytes=fetched_bytes,
        updated=time.time(),
    )
    with open(ctl + ".new", "w") as handle:
        json.dump(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(ctl + ".new", ctl)


class RateHistory:
    """The download rate over time for the status file, bounded: one sample per ``interval``
    seconds, ``[seconds since start, bytes/s]``; past ``max_points`` neighbours are merged
    pairwise (mean rate) and the interval doubles, so a download of any length keeps its whole
    shape in at most ``max_points`` samples."""

    def __init__(self, started, interval=1.0, max_points=300):
        self.started = started
        self.interval = interval
        self.max_points = max(2, max_points)
        self.samples = []

    def record(self, now, rate):
        """Add a sample unless the last one is less than ``interval`` old; the samples."""
        at = round(now - self.started, 1)
        if self.samples and at - self.samples[-1][0] < self.interval:
            return self.samples
        self.samples.append([at, int(rate)])
        if len(self.samples) > self.max_points:
            pairs = zip(self.samples[::2], self.samples[1::2])
            merged = [[a[0], (a[1] + b[1]) // 2] for a, b in pairs]
            if len(self.samples) % 2:
                merged.append(self.samples[-1])
            self.samples = merged
            self.interval *= 2
        return self.samples

    def as_status(self):
        """The status file's keys: rate_history (the samples), its interval and start time."""
        return dict(
            rate_history=[list(s) for s in self.samples],
            rate_history_interval_s=self.interval,
            rate_history_started=self.started,
        )


def write_status(path, status):
    """Atomically replace a small JSON status file another task can read."""
    if not path:
        return
    tmp = path + ".new"
    try:
        with open(tmp, "w") as handle:
            json.dump(status, handle, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass  # progress reporting never breaks the download


def free_bytes(directory):
    vfs = os.statvfs(directory)
    return vfs.f_bavail * vfs.f_frsize


def _unlink_quietly(path):
    with contextlib.suppress(OSError):  # gone already, or nothing more can be done about it here
        os.unlink(path)


def _free_or_none(directory):
    try:
        return free_bytes(directory)
    except OSError:
        return None


def prepare_space(directory, needed, reserve=0):
    """Raise DiskSpaceError unless ``needed + reserve`` bytes are free in ``directory``."""
    free = free_bytes(directory)
    if free < needed + reserve:
        raise DiskSpaceError(
            f"{directory} has {free} bytes free, the download needs {needed} more"
            f" (the archives and their control files, plus {reserve} reserved); nothing was written:"
            " free space there (older snapshots, keep=1) or grow the dataset",
            free_bytes=free,
            needed_bytes=needed,
        )
    return free


def discard(tmp_path):
    for path in (tmp_path, control_path(tmp_path), control_path(tmp_path) + ".new"):
        try:
            os.unlink(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
