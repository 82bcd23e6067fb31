# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ranged, multi-source, resumable HTTP download (what aria2c does for snapshots), stdlib only.

* Every source must serve the same bytes (the same archive name and length).
* The missing part of the file is cut into one piece per connection (none under
  ``min_split_size``); up to ``connections_per_server`` connections per source and ``split``
  in all fetch pieces with ``Range`` requests over kept-alive connections and write them in
  place (``os.pwrite``) into a temporary file of the final length.
* When nothing is left to hand out, an idle connection takes over the end of the range in
  flight that would finish last, cut so that both finish together at the rates seen
  (``Scheduler``): the connections of a fast mirror take work from a slow one, and all of them
  stay busy to the end instead of a few finishing the last pieces alone.
* A control file next to the temporary file (``<tmp>.ctl``, JSON, replaced atomically about
  twice a second after the data is synced) records the byte ranges already written. After an
  interruption (even ``kill -9``) a new run fetches only the ranges it does not list.
* A source whose rate stays below ``min_speed`` after a grace period is dropped and its pieces
  go back to the queue for the others. A source that keeps failing is dropped too.
* A source without Range support can only be used alone, as one stream from byte 0; its answer
  must announce the archive's length (``Content-Length``), and a body that ends early is a
  failed attempt, never a shorter file.
* A write that fails (a full disk: ENOSPC, EDQUOT) stops the whole download at once with
  ``DiskSpaceError``: the bytes recorded in the control file stay for the next run.

Helpers raise ``TransferError`` (or a subclass); a module's ``main()`` catches it once.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time

try:
    import http.client as httplib
    from urllib.parse import urljoin, urlsplit
except ImportError:  # pragma: no cover - Python 2 is not a target
    httplib = urljoin = urlsplit = None

CONTROL_VERSION = 1
CHUNK = 256 * 1024  # one read: a connection's share of the file advances by this much at most
MIB = 1024 * 1024
STEAL_MIN_BYTES = MIB  # smallest range handed over to an idle connection near the end
STEAL_SECONDS = 0.25  # a range is split only when that ends it this much sooner
SYNC_INTERVAL = 0.5  # seconds between data syncs and control file updates
# Room the control file needs beside the data: itself and its replacement while it is swapped.
CONTROL_FILE_SPACE = 2 * 64 * 1024
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
USER_AGENT = "strata.ops-transfer/1"


class TransferError(Exception):
    def __init__(self, msg, **details):
        super(TransferError, self).__init__(msg)
        self.msg = msg
        self.details = details


class SourceError(TransferError):
    """One source failed (status, length mismatch, no Range support when needed, I/O)."""


class TooSlowError(TransferError):
    """Every source was dropped for being slower than min_speed."""


class DiskSpaceError(TransferError):
    pass


class LocalWriteError(TransferError):
    """Writing the temporary or control file failed for another reason than space (EIO, EROFS ...)."""


class IntegrityError(TransferError):
    pass


# --- HTTP helpers ----------------------------------------------------------------------------


def _connect(url, timeout):
    """A connection for ``url``; SourceError for a URL no request can go to (a redirect may name one)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise SourceError("%s: only http:// and https:// sources are supported" % url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # a port out of range
        raise SourceError("%s: %s" % (url, exc)) from None
    if not host:
        raise SourceError("%s: no host in the URL" % url)
    cls = httplib.HTTPSConnection if parts.scheme == "https" else httplib.HTTPConnection
    return cls(host, port, timeout=timeout)


def _path(url):
    parts = urlsplit(url)
    return (parts.path or "/") + ("?" + parts.query if parts.query else "")


def request(url, method="GET", headers=None, timeout=10.0):
    """Send one request; return (connection, response). The caller closes the connection."""
    conn = _connect(url, timeout)
    hdrs = {"User-Agent": USER_AGENT}
    hdrs.update(headers or {})
    try:
        conn.request(method, _path(url), headers=hdrs)
        return conn, conn.getresponse()
    except (OSError, httplib.HTTPException) as exc:
        conn.close()
        raise SourceError(
            "%s: %s request failed: %s" % (url, method, exc or exc.__class__.__name__)
        ) from None


def resolve_redirect(url, timeout=10.0):
    """HEAD ``url`` without following; return the absolute Location of a 3xx answer.

    RPC nodes answer ``/snapshot.tar.bz2`` and ``/incremental-snapshot.tar.bz2`` this way
    (303 to ``/snapshot-<slot>-<hash>.tar.zst``). Raises SourceError for any other answer.
    """
    conn, resp = request(url, "HEAD", timeout=timeout)
    try:
        location = resp.getheader("Location")
        if resp.status in (301, 302, 303, 307, 308) and location:
            return urljoin(url, location)
        raise SourceError("%s: expected a redirect to a snapshot archive, got HTTP %d" % (url, resp.status))
    finally:
        conn.close()


_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")


def probe(url, timeout=10.0, redirects=5):
    """Ask for byte 0 only: returns dict(url, length, ranges). Follows plain redirects."""
    for _hop in range(redirects + 1):
        conn, resp = request(url, "GET", {"Range": "bytes=0-0"}, timeout)
        try:
            location = resp.getheader("Location")
            if resp.status in (301, 302, 303, 307, 308) and location:
                url = urljoin(url, location)
                continue
            if resp.status == 206:
                match = _CONTENT_RANGE.match(resp.getheader("Content-Range") or "")
                if not match or match.group(3) == "*":
                    raise SourceError("%s: 206 answer without a usable Content-Range" % url)
                return dict(url=url, length=int(match.group(3)), ranges=True)
            if resp.status == 200:
                length = resp.getheader("Content-Length")
                if length is None or not length.isdigit():
                    raise SourceError("%s: no Content-Length, cannot check the size" % url)
                return dict(url=url, length=int(length), ranges=False)
            raise SourceError("%s: HTTP %d %s" % (url, resp.status, resp.reason), status=resp.status)
        finally:
            conn.close()
    raise SourceError("%s: more than %d redirects" % (url, redirects))


def measure_speed(url, length, connections=1, seconds=2.0, timeout=10.0):
    """Read from ``connections`` ranged streams at spread offsets for ``seconds``; bytes/s.

    The rate a download would see from this source with that many connections.
    """
    counts = [0] * connections
    errors = []
    deadline = time.time() + seconds

    def reader(i):
        start = (length // connections) * i
        try:
            conn, resp = request(url, "GET", {"Range": "bytes=%d-%d" % (start, length - 1)}, timeout)
            try:
                if resp.status not in (200, 206):
                    errors.append("HTTP %d" % resp.status)
                    return
                while time.time() < deadline:
                    data = resp.read(64 * 1024)
                    if not data:
                        break
                    counts[i] += len(data)
            finally:
                conn.close()
        except (OSError, httplib.HTTPException, SourceError) as exc:
            errors.append(str(exc))

    started = time.time()
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(connections)]
    for t in threads:
        t.daemon = True
        t.start()
    for t in threads:
        t.join(seconds + timeout)
    elapsed = max(time.time() - started, 1e-3)
    if errors and not sum(counts):
        raise SourceError("%s: speed test failed: %s" % (url, errors[0]))
    return sum(counts) / elapsed


def fetch_small(url, limit=4096, timeout=10.0):
    """GET a small text (a checksum file); None when the source has none (4xx)."""
    conn, resp = request(url, "GET", timeout=timeout)
    try:
        if resp.status >= 400:
            return None
        if resp.status != 200:
            raise SourceError("%s: HTTP %d" % (url, resp.status))
        return resp.read(limit).decode("utf-8", "replace")
    finally:
        conn.close()


# --- byte ranges and the control file --------------------------------------------------------


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


# --- the download ----------------------------------------------------------------------------


class _Source:
    def __init__(self, url):
        self.url = url
        self.bytes = 0
        self.active = 0
        self.errors = 0
        self.dropped = None
        self.started = None
        self.samples = []  # (time, bytes) for the recent rate
        self.connects = 0
        self.requests = 0

    def rate(self, now, window):
        while len(self.samples) > 1 and self.samples[1][0] <= now - window:
            self.samples.pop(0)
        if not self.samples:
            return None
        t0, b0 = self.samples[0]
        return (self.bytes - b0) / max(now - t0, 1e-3)

    def connection_rate(self, now, window):
        """The recent rate of one of this source's connections (None before there is one)."""
        rate = self.rate(now, window) if self.active else None
        return rate / self.active if rate else None


class _Task:
    """One connection's range [pos, end); ``pos`` moves as bytes are written, ``end`` may shrink."""

    __slots__ = ("end", "p0", "pos", "t0")

    def __init__(self, start, end):
        self.pos = start
        self.end = end
        self.t0 = None  # when its bytes began to arrive
        self.p0 = start

    def remaining(self):
        return self.end - self.pos

    def rate(self, now, settle=0.5):
        if self.t0 is None or now - self.t0 < settle:
            return None
        return (self.pos - self.p0) / (now - self.t0)

    def __repr__(self):
        return "_Task(%d, %d)" % (self.pos, self.end)


class Scheduler:
    """Which bytes a connection fetches next; the caller holds the download's lock.

    * The missing ranges are handed out front to back in pieces of ``piece_size`` (see
      ``piece_size_for``: one piece per connection, none under ``min_split``); a remainder
      under half of ``min_split`` stays with the piece before it.
    * When nothing is left to hand out, an idle connection takes over the end of the range in
      flight that would take longest to finish, cut where both parts finish together at the
      rates seen (in halves while no rate is known yet), so that no connection idles while
      another still has seconds of work: the tail of the download keeps every connection
      busy. Neither part may be under ``min_share`` bytes, and the split must end the range at
      least ``steal_seconds`` sooner (a new request costs a round trip: not worth it for less).
    """

    def __init__(
        self,
        missing,
        piece_size,
        *,
        min_split=0,
        min_share=None,
        steal_seconds=STEAL_SECONDS,
        steal=True,
    ):
        self.pending = sorted([int(s), int(e)] for s, e in missing if e > s)
        self.piece_size = max(1, int(piece_size))
        self.merge_below = min_split // 2
        self.min_share = max(CHUNK, int(STEAL_MIN_BYTES if min_share is None else min_share))
        self.steal_seconds = steal_seconds
        self.steal_enabled = steal
        self.active = set()
        self.steals = 0

    @staticmethod
    def piece_size_for(missing_bytes, split, min_split):
        """Pieces of at least ``min_split`` bytes, ``split`` of them when the bytes allow it."""
        if missing_bytes <= 0:
            return max(1, min_split)
        return max(1, min_split, -(-missing_bytes // max(1, split)))

    def busy(self):
        return bool(self.pending or self.active)

    def take(self, now=None, rate=None):
        """The next task for a connection whose own rate is ``rate`` (bytes/s, None: unknown)."""
        if self.pending:
            start, end = self.pending.pop(0)
            if end - start > self.piece_size + self.merge_below:
                self.pending.insert(0, [start + self.piece_size, end])
                end = start + self.piece_size
            task = _Task(start, end)
            self.active.add(task)
            return task
        if not self.steal_enabled:
            return None
        return self._steal(time.time() if now is None else now, rate)

    def _steal(self, now, rate):
        rates = dict((t, t.rate(now)) for t in self.active)
        known = sorted(r for r in rates.values() if r)
        typical = known[len(known) // 2] if known else rate or 1.0  # 1.0: bytes stand for seconds
        mine = rate or typical
        best = None
        for task in self.active:
            left = task.remaining()
            if left < 2 * self.min_share:
                continue
            # a stalled connection (0 bytes/s) gives nearly all it has left
            theirs = typical if rates[task] is None else max(rates[task], 1.0)
            share = int(left * mine / (theirs + mine))  # both parts end together at these rates
            share = min(max(share, self.min_share), left - self.min_share)
            saved = left / theirs - max(share / mine, (left - share) / theirs)
            if saved < self.steal_seconds:
                continue  # a new request costs a round trip: not worth it for less
            key = (left / theirs, left, -task.pos)  # the range that would end last
            if best is None or key > best[0]:
                best = (key, task, share)
        if best is None:
            return None
        _key, victim, share = best
        mid = victim.end - share
        if (mid - mid % 4096) - victim.pos >= self.min_share:
            mid -= mid % 4096  # page-aligned writes when it can
        task = _Task(mid, victim.end)
        victim.end = mid
        self.active.add(task)
        self.steals += 1
        return task

    def release(self, task):
        """A connection is done with ``task``: what it did not fetch goes back to be handed out."""
        self.active.discard(task)
        if task.pos < task.end:
            self.pending.append([task.pos, task.end])
            self.pending.sort()


class Download:
    """Download one archive from several sources into ``tmp_path`` (see the module docstring)."""

    def __init__(
        self,
        sources,
        tmp_path,
        name,
        length,
        *,
        connections_per_server=4,
        split=16,
        min_split_size=50 * MIB,
        min_speed=0,
        speed_grace=5.0,
        speed_window=3.0,
        timeout=15.0,
        max_errors=3,
        progress=None,
        sync_interval=SYNC_INTERVAL,
    ):
        ranged = [s for s in sources if s.get("ranges")]
        self.single_stream = not ranged
        chosen = ranged or sources[:1]
        self.ignored = dict(
            (s["url"], "no Range support (another source has it)") for s in sources if s not in chosen
        )
        self.sources = [_Source(s["url"]) for s in chosen]
        self.tmp_path = tmp_path
        self.name = name
        self.length = length
        self.per_server = max(1, connections_per_server)
        self.split = max(1, split)
        self.min_split = max(CHUNK, min_split_size)
        self.min_speed = min_speed
        self.speed_grace = speed_grace
        self.speed_window = speed_window
        self.timeout = timeout
        self.max_errors = max_errors
        self.progress = progress
        self.sync_interval = sync_interval
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.running = 0
        self.sched = Scheduler([], self.min_split)
        self.done = RangeSet()
        self.fetched = 0
        self.discarded = 0
        self.fd = None
        self.write_error = None  # the OSError of a failed local write: stops every connection

    def _drop(self, source, reason):
        if not source.dropped:
            source.dropped = reason

    # -- one connection --
    def _worker(self, source):
        conn = None
        buf = memoryview(bytearray(CHUNK))
        try:
            while True:
                with self.lock:
                    task = None
                    stopped = source.dropped or self.write_error is not None
                    if not stopped:
                        now = time.time()
                        task = self.sched.take(now, source.connection_rate(now, self.speed_window))
                    idle_but_needed = task is None and not stopped and self.sched.busy()
                    if task is not None:
                        if source.active == 0:  # idle time is not slowness: measure from here
                            source.started = time.time()
                            source.samples = [(source.started, source.bytes)]
                        source.active += 1
                if task is None:
                    if idle_but_needed:  # a range in flight may become worth splitting
                        time.sleep(0.05)
                        continue
                    return
                try:
                    conn = self._fetch(source, task, conn, buf)
                except (OSError, httplib.HTTPException, SourceError) as exc:
                    if conn is not None:
                        conn.close()
                    conn = None
                    with self.lock:
                        source.errors += 1
                        if source.errors >= self.max_errors:
                            self._drop(source, "failed %d times, last: %s" % (source.errors, exc))
                    time.sleep(0.2)
                finally:
                    with self.lock:
                        source.active -= 1
                        self.sched.release(task)
        finally:
            if conn is not None:
                conn.close()
            with self.lock:
                self.running -= 1
                if not self.running:
                    self.finished.set()

    def _stop(self, exc):
        """A local write failed: every connection stops; the source is not to blame."""
        with self.lock:
            if self.write_error is None:
                self.write_error = exc
        self.finished.set()

    def _fetch(self, source, task, conn, buf):
        """Fetch ``task`` over ``conn`` (a new one when None); return the connection to reuse."""
        headers = {"User-Agent": USER_AGENT}
        if not self.single_stream:
            headers["Range"] = "bytes=%d-%d" % (task.pos, task.end - 1)
        if conn is None:
            conn = _connect(source.url, self.timeout)
            source.connects += 1
        source.requests += 1
        conn.request("GET", _path(source.url), headers=headers)
        resp = conn.getresponse()
        if self.single_stream:
            if resp.status != 200:
                raise SourceError("%s: HTTP %d" % (source.url, resp.status))
            announced = resp.getheader("Content-Length") or ""
            if not announced.isdigit() or int(announced) != self.length:
                self._drop(
                    source,
                    "answers with Content-Length %s, not the %d bytes the archive has"
                    % (announced or "(none)", self.length),
                )
                raise SourceError("%s: wrong Content-Length" % source.url)
        else:
            match = _CONTENT_RANGE.match(resp.getheader("Content-Range") or "")
            if resp.status != 206 or not match or int(match.group(1)) != task.pos:
                raise SourceError(
                    "%s: asked for bytes %d-%d, got HTTP %d %s"
                    % (source.url, task.pos, task.end - 1, resp.status, resp.getheader("Content-Range") or "")
                )
            if int(match.group(3)) != self.length:
                self._drop(source, "now serves %s bytes, not %d" % (match.group(3), self.length))
                raise SourceError("%s: length changed" % source.url)
        if self.single_stream and task.pos:
            self._skip(source, resp, task.pos, buf)  # a retry: the answer starts at byte 0 again
        task.t0, task.p0 = time.time(), task.pos
        fd = self.fd
        while True:
            with self.lock:
                want = min(len(buf), task.end - task.pos)
                stop = source.dropped or self.write_error is not None
            if want <= 0:
                break
            if stop:
                conn.close()
                return None
            got = resp.readinto(buf[:want])
            if not got:
                raise SourceError(_short_body(source.url, task.pos))
            with self.lock:  # another connection may have taken over the end meanwhile
                keep = max(0, min(got, task.end - task.pos))
                self.discarded += got - keep
            # A range is only ever taken over from at least min_share (>= CHUNK) past task.pos,
            # so [task.pos, task.pos + keep) stays this connection's while it writes.
            if keep:
                try:
                    _pwrite_all(fd, buf[:keep], task.pos)
                except OSError as exc:
                    self._stop(exc)
                    conn.close()
                    return None
            with self.lock:
                self.done.add(task.pos, task.pos + keep)
                task.pos += keep
                source.bytes += keep
                self.fetched += keep
        if resp.length:  # stopped before the end of the answer (handed over): drop the connection
            conn.close()
            return None
        return conn

    def _skip(self, source, resp, count, buf):
        skipped = 0
        while skipped < count:
            got = resp.readinto(buf[: min(len(buf), count - skipped)])
            if not got:
                raise SourceError(_short_body(source.url, skipped))
            skipped += got
            with self.lock:
                self.discarded += got

    # -- the run --
    def status(self, state, started, now):
        done = self.done.total()
        recent = sum((s.rate(now, self.speed_window) or 0) for s in self.sources if not s.dropped)
        mean = self.fetched / max(now - started, 1e-3)
        rate = recent or mean
        return dict(
            state=state,
            name=self.name,
            bytes_done=done,
            bytes_total=self.length,
            percent=round(100.0 * done / self.length, 1) if self.length else 100.0,
            rate_bytes_per_s=int(rate),
            mean_rate_bytes_per_s=int(mean),
            eta_s=round((self.length - done) / rate, 1) if rate > 0 else None,
            elapsed_s=round(now - started, 1),
            sources=[
                dict(url=s.url, bytes=s.bytes, connections=s.active, dropped=s.dropped) for s in self.sources
            ],
            pid=os.getpid(),
            updated=now,
        )

    def run(self):
        started = time.time()
        done, fetched_before = load_control(self.tmp_path, self.name, self.length)
        if self.single_stream and done.total():
            done = RangeSet()  # a source without Range support can only start from byte 0
        self.done = done
        resumed = done.total()
        missing = done.missing(self.length)
        missing_bytes = sum(e - s for s, e in missing)
        if self.single_stream:
            self.sched = Scheduler([[0, self.length]], max(1, self.length), steal=False)
            conns = 1
        else:
            conns = min(self.split, self.per_server * len(self.sources))
            self.sched = Scheduler(
                missing,
                Scheduler.piece_size_for(missing_bytes, conns, self.min_split),
                min_split=self.min_split,
            )
        try:
            self.fd = os.open(self.tmp_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._write_failure(exc, None, started) from None
        threads = []
        try:
            try:
                if os.fstat(self.fd).st_size != self.length:
                    os.ftruncate(self.fd, self.length)
                save_control(self.tmp_path, self.name, self.length, self.done, fetched_before)
                self.running = conns
                self.finished.clear()
                for i in range(conns):
                    source = self.sources[i % len(self.sources)]
                    t = threading.Thread(target=self._worker, args=(source,))
                    t.daemon = True
                    threads.append(t)
                for t in threads:
                    t.start()
                self._watch(threads, started, fetched_before)
            except OSError as exc:  # a sync or the control file failed: stop the connections too
                self._stop(exc)
            for t in threads:  # each stops within one read once write_error is set
                t.join()
            transfer_end = time.time()
            try:
                self._flush(fetched_before)
            except OSError as exc:
                self._stop(exc)
        finally:
            os.close(self.fd)
            self.fd = None
        elapsed = time.time() - started
        stats = dict(
            name=self.name,
            size=self.length,
            elapsed_s=round(elapsed, 3),
            transfer_s=round(transfer_end - started, 3),
            resumed_bytes=resumed,
            fetched_bytes=self.fetched,
            refetched_bytes=max(0, self.fetched - missing_bytes),
            discarded_bytes=self.discarded,
            mean_rate_bytes_per_s=int(self.fetched / max(elapsed, 1e-3)),
            connections=conns,
            piece_size=self.sched.piece_size,
            ranges_split=self.sched.steals,
            single_stream=self.single_stream,
            sources=[
                dict(url=s.url, bytes=s.bytes, dropped=s.dropped, connects=s.connects, requests=s.requests)
                for s in self.sources
            ],
            sources_ignored=self.ignored,
        )
        if self.write_error is not None:
            raise self._write_failure(self.write_error, stats, started)
        if not self.done.covers(self.length):
            reasons = dict((s.url, s.dropped or "stopped") for s in self.sources)
            left = self.length - self.done.total()
            all_slow = all((s.dropped or "").startswith("slower") for s in self.sources)
            cls = TooSlowError if all_slow else SourceError
            raise cls(
                "%s: %d of %d bytes still missing after every source was dropped (%s); the partial"
                " file is kept and a new run resumes it: %s"
                % (
                    self.name,
                    left,
                    self.length,
                    "; ".join("%s: %s" % kv for kv in reasons.items()),
                    "add faster sources or lower min_speed" if all_slow else "fix or replace these sources",
                ),
                transfer=stats,
            )
        return stats

    def _watch(self, threads, started, fetched_before):
        """Until the connections end: drop slow sources, sync and record, report progress."""
        last_flush = last_progress = 0.0
        while any(t.is_alive() for t in threads) and self.write_error is None:
            self.finished.wait(0.25)  # set by the last connection to stop: no idle wait at the end
            now = time.time()
            with self.lock:
                for s in self.sources:
                    if s.started is not None and s.active:
                        s.samples.append((now, s.bytes))
                        rate = s.rate(now, self.speed_window)
                        if (
                            self.min_speed
                            and not s.dropped
                            and s.active
                            and now - s.started >= self.speed_grace
                            and rate is not None
                            and rate < self.min_speed
                        ):
                            self._drop(
                                s,
                                "slower than min_speed: %.2f MiB/s < %.2f MiB/s"
                                % (rate / MIB, self.min_speed / MIB),
                            )
            if now - last_flush >= self.sync_interval:
                self._flush(fetched_before)
                last_flush = now
            if self.progress and now - last_progress >= 0.5:
                last_progress = now
                with self.lock:
                    status = self.status("downloading", started, now)
                self.progress(status)

    def _flush(self, fetched_before):
        with self.lock:
            done = RangeSet(self.done.ranges)
            fetched = fetched_before + self.fetched
        if self.fd is not None:
            os.fdatasync(self.fd)  # the data first, then the record that says it is there
        save_control(self.tmp_path, self.name, self.length, done, fetched)

    def _write_failure(self, exc, stats, started):
        """The error for a failed local write: what is kept (what the control file records) and
        what to do. A full disk is DiskSpaceError; nothing recorded means nothing is kept."""
        ctl = control_path(self.tmp_path)
        _unlink_quietly(ctl + ".new")  # a half-written replacement: the previous record stays valid
        recorded = load_control(self.tmp_path, self.name, self.length)[0].total()
        if recorded:
            kept = [self.tmp_path, ctl]
            left = "%d of %d bytes are kept in %s (recorded in %s): a new run resumes from there" % (
                recorded,
                self.length,
                self.tmp_path,
                os.path.basename(ctl),
            )
        else:
            kept = []
            for path in (self.tmp_path, ctl):
                _unlink_quietly(path)
            left = "nothing was recorded, nothing is kept"
        details = dict(kept_files=kept, recorded_bytes=recorded, changed=bool(kept))
        if stats is not None:
            details["transfer"] = stats
        directory = os.path.dirname(self.tmp_path) or "."
        if exc.errno in _SPACE_ERRNOS:
            return DiskSpaceError(
                "no space left in %s (%s) while downloading %s, %.1f s in; %s. Free space there"
                " (older snapshots, keep=1) or grow the dataset, then run again"
                % (directory, exc.strerror, self.name, time.time() - started, left),
                free_bytes=_free_or_none(directory),
                **details,
            )
        return LocalWriteError(
            "%s: cannot write the download of %s (%s); %s"
            % (self.tmp_path, self.name, exc.strerror or exc, left),
            **details,
        )


def _pwrite_all(fd, data, pos):
    """os.pwrite until every byte is written: a short write (a file system filling up) is not the end."""
    while data:
        written = os.pwrite(fd, data, pos)
        data, pos = data[written:], pos + written


def _short_body(url, pos):
    return (
        "%s: the body ended at byte %d, short of what it announced (the connection closed or"
        " the server sent less)" % (url, pos)
    )


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
            "%s has %d bytes free, the download needs %d more (the archives and their control files,"
            " plus %d reserved); nothing was written: free space there (older snapshots, keep=1) or"
            " grow the dataset" % (directory, free, needed, reserve),
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


# --- verification ----------------------------------------------------------------------------


def verify_archive(path, ext, timeout=None):
    """Test the compressed stream end to end (the two formats agave reads); return how."""
    tool = {"tar.zst": "zstd", "tar.lz4": "lz4"}[ext]
    binary = shutil.which(tool)
    if binary is None:
        raise IntegrityError(
            "cannot test %s: the %s command is not installed on this host (base_system installs it),"
            " or set verify_archive=false" % (os.path.basename(path), tool)
        )
    proc = subprocess.run(
        [binary, "-t", "-q", path],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise IntegrityError(
            "%s failed the %s -t integrity test: %s"
            % (os.path.basename(path), tool, proc.stderr.decode("utf-8", "replace").strip()[-300:])
        )
    return "%s -t" % tool


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(4 * MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_checksum_text(text, name):
    """A sha256 from a ``sha256sum``-style text (``<hex>  <name>`` lines, or a bare hex)."""
    for line in (text or "").splitlines():
        fields = line.strip().split()
        if not fields or not re.match(r"^[0-9a-fA-F]{64}$", fields[0]):
            continue
        if len(fields) == 1 or fields[-1].lstrip("*") == name:
            return fields[0].lower()
    return None


def finalize(tmp_path, final_path):
    """Rename the verified temporary file to its final name, atomically, and sync the directory."""
    try:
        os.rename(tmp_path, final_path)
    except OSError as exc:
        raise LocalWriteError(
            "cannot rename the verified download %s to %s (%s): it stays under its temporary name"
            % (tmp_path, final_path, exc.strerror or exc)
        ) from None
    try:
        dir_fd = os.open(os.path.dirname(final_path) or ".", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    for path in (control_path(tmp_path), control_path(tmp_path) + ".new"):
        if os.path.exists(path):
            os.unlink(path)
