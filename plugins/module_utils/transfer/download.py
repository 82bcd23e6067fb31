# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The download itself: connections per source, pwrite into the temporary file, sync, and stop."""

import http.client as httplib
import os
import threading
import time

from ansible_collections.strata.ops.plugins.module_utils.transfer.control import (
    _SPACE_ERRNOS,
    RangeSet,
    _free_or_none,
    _unlink_quietly,
    control_path,
    load_control,
    save_control,
)
from ansible_collections.strata.ops.plugins.module_utils.transfer.errors import (
    DiskSpaceError,
    LocalWriteError,
    SourceError,
    TooSlowError,
)
from ansible_collections.strata.ops.plugins.module_utils.transfer.http import (
    _CONTENT_RANGE,
    MIB,
    USER_AGENT,
    _connect,
    _path,
)
from ansible_collections.strata.ops.plugins.module_utils.transfer.scheduler import CHUNK, Scheduler

SYNC_INTERVAL = 0.5  # seconds between data syncs and control file updates


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
                task, idle_but_needed = self._take_task(source)
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
                            self._drop(source, f"failed {source.errors} times, last: {exc}")
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

    def _take_task(self, source):
        """(the next range for a connection to ``source``, or None; whether to wait for one
        because ranges in flight may still be split)."""
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
        return task, idle_but_needed

    def _stop(self, exc):
        """A local write failed: every connection stops; the source is not to blame."""
        with self.lock:
            if self.write_error is None:
                self.write_error = exc
        self.finished.set()

    def _fetch(self, source, task, conn, buf):
        """Fetch ``task`` over ``conn`` (a new one when None); return the connection to reuse."""
        conn, resp = self._request(source, task, conn)
        if self.single_stream:
            self._check_whole_answer(source, resp)
        else:
            self._check_range_answer(source, task, resp)
        if self.single_stream and task.pos:
            self._skip(source, resp, task.pos, buf)  # a retry: the answer starts at byte 0 again
        task.t0, task.p0 = time.time(), task.pos
        return self._receive(source, task, conn, resp, buf)

    def _request(self, source, task, conn):
        """Send the GET of ``task`` over ``conn`` (a new one when None); (connection, response)."""
        headers = {"User-Agent": USER_AGENT}
        if not self.single_stream:
            headers["Range"] = f"bytes={task.pos}-{task.end - 1}"
        if conn is None:
            conn = _connect(source.url, self.timeout)
            source.connects += 1
        source.requests += 1
        conn.request("GET", _path(source.url), headers=headers)
        return conn, conn.getresponse()

    def _check_whole_answer(self, source, resp):
        """SourceError unless the answer is 200 with the archive's length (a wrong length also
        drops the source)."""
        if resp.status != 200:
            raise SourceError(f"{source.url}: HTTP {resp.status}")
        announced = resp.getheader("Content-Length") or ""
        if not announced.isdigit() or int(announced) != self.length:
            shown = announced or "(none)"
            self._drop(
                source,
                f"answers with Content-Length {shown}, not the {self.length} bytes the archive has",
            )
            raise SourceError(f"{source.url}: wrong Content-Length")

    def _check_range_answer(self, source, task, resp):
        """SourceError unless the answer is 206 from task.pos, of the archive's length (a changed
        length also drops the source)."""
        match = _CONTENT_RANGE.match(resp.getheader("Content-Range") or "")
        if resp.status != 206 or not match or int(match.group(1)) != task.pos:
            content_range = resp.getheader("Content-Range") or ""
            raise SourceError(
                f"{source.url}: asked for bytes {task.pos}-{task.end - 1},"
                f" got HTTP {resp.status} {content_range}"
            )
        if int(match.group(3)) != self.length:
            self._drop(source, f"now serves {match.group(3)} bytes, not {self.length}")
            raise SourceError(f"{source.url}: length changed")

    def _receive(self, source, task, conn, resp, buf):
        """Write the body into the file from task.pos until the range ends or the connection must
        stop; return the connection to reuse, or None when it was closed."""
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
        conns = self._schedule(missing, missing_bytes)
        transfer_end = self._transfer(conns, started, fetched_before)
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
            raise self._incomplete(stats)
        return stats

    def _schedule(self, missing, missing_bytes):
        """Set up the scheduler of the ``missing`` ranges; the number of connections to open."""
        if self.single_stream:
            self.sched = Scheduler([[0, self.length]], max(1, self.length), steal=False)
            return 1
        conns = min(self.split, self.per_server * len(self.sources))
        self.sched = Scheduler(
            missing,
            Scheduler.piece_size_for(missing_bytes, conns, self.min_split),
            min_split=self.min_split,
        )
        return conns

    def _transfer(self, conns, started, fetched_before):
        """Open the temporary file, run ``conns`` connections until they end, then sync and record;
        the time the transfer ended. A failed local write is left in ``write_error``."""
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
                threads = self._start_connections(conns)
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
        return transfer_end

    def _start_connections(self, conns):
        """Start ``conns`` connection threads, spread over the sources; the threads."""
        self.running = conns
        self.finished.clear()
        threads = []
        for i in range(conns):
            source = self.sources[i % len(self.sources)]
            t = threading.Thread(target=self._worker, args=(source,))
            t.daemon = True
            threads.append(t)
        for t in threads:
            t.start()
        return threads

    def _incomplete(self, stats):
        """The error for bytes still missing after every source was dropped."""
        reasons = dict((s.url, s.dropped or "stopped") for s in self.sources)
        left = self.length - self.done.total()
        all_slow = all((s.dropped or "").startswith("slower") for s in self.sources)
        cls = TooSlowError if all_slow else SourceError
        dropped = "; ".join(f"{url}: {why}" for url, why in reasons.items())
        advice = "add faster sources or lower min_speed" if all_slow else "fix or replace these sources"
        return cls(
            f"{self.name}: {left} of {self.length} bytes still missing after every source was dropped"
            f" ({dropped}); the partial file is kept and a new run resumes it: {advice}",
            transfer=stats,
        )

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
                                f"slower than min_speed: {rate / MIB:.2f} MiB/s"
                                f" < {self.min_speed / MIB:.2f} MiB/s",
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
            left = (
                f"{recorded} of {self.length} bytes are kept in {self.tmp_path}"
                f" (recorded in {os.path.basename(ctl)}): a new run resumes from there"
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
            elapsed = time.time() - started
            return DiskSpaceError(
                f"no space left in {directory} ({exc.strerror}) while downloading {self.name},"
                f" {elapsed:.1f} s in; {left}. Free space there"
                " (older snapshots, keep=1) or grow the dataset, then run again",
                free_bytes=_free_or_none(directory),
                **details,
            )
        return LocalWriteError(
            f"{self.tmp_path}: cannot write the download of {self.name} ({exc.strerror or exc}); {left}",
            **details,
        )


def _pwrite_all(fd, data, pos):
    """os.pwrite until every byte is written: a short write (a file system filling up) is not the end."""
    while data:
        written = os.pwrite(fd, data, pos)
        data, pos = data[written:], pos + written


def _short_body(url, pos):
    return (
        f"{url}: the body ended at byte {pos}, short of what it announced (the connection closed or"
        " the server sent less)"
    )
