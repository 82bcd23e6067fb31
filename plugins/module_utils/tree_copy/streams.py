# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The streams of a copy, each in a thread: rsync for grouped files, then byte ranges of large files.

Every stream is its own ssh connection (never a shared ControlMaster: that would put all streams in
one TCP connection, back under one window). A stream whose connection fails is retried after a
delay, the others go on; finished files and written ranges are never sent again.
"""

import collections
import contextlib
import ctypes
import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
import threading
import time

from ansible_collections.strata.ops.plugins.module_utils.common import utc_iso
from ansible_collections.strata.ops.plugins.module_utils.state import atomic_write_bytes
from ansible_collections.strata.ops.plugins.module_utils.tree_copy import remote
from ansible_collections.strata.ops.plugins.module_utils.tree_copy.plan import WORK_DIR

BLOCK = 256 * 1024
CONNECTING = 8
# rsync --info=progress2 lines: "  1,234,567  45%   10.00MB/s    0:00:12 (xfr#3, to-chk=0/9)".
_PROGRESS2 = re.compile(rb"^\s*([\d,]+)\s+\d+%")
# rsync's messages for a file it could not read or that disappeared (rsync's sender.c, flist.c).
_UNREADABLE = re.compile(
    r'(?:send_files failed to open|readlink_stat\(|link_stat|opendir) "?([^"]+)"?[^:]*: (.+?)(?: \(\d+\))?$'
)
_VANISHED = re.compile(r'file has vanished: "([^"]+)"')
# rsync's partial files (--partial-dir, relative: one per directory, protected from --delete).
PARTIAL_DIR = ".strata-partial"


def _die_with_parent():
    """Child processes end when the module does (kill -9 included) instead of sending on unattended."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(command, **kwargs):
    # preexec_fn only calls prctl (no locks, no allocation the threads could hold).
    return subprocess.Popen(command, preexec_fn=_die_with_parent, **kwargs)  # noqa: PLW1509


def rsync_command(source_root, destination, extra=(), bwlimit=0, files_from=None, shell=None):  # noqa: PLR0917
    """rsync -aHS over the destination's ssh, or ``shell`` (the options every run shares)."""
    command = [
        "rsync",
        "-aHS",
        "-8",
        f"--partial-dir={PARTIAL_DIR}",
        "--timeout=120",
        f"--exclude=/{WORK_DIR}/",
        "-e",
        shell or destination.rsync_shell(),
        *extra,
    ]
    if bwlimit:
        # rsync --bwlimit takes KiB/s by default (rsync(1)); at least 1.
        command.append(f"--bwlimit={max(1, bwlimit // 1024)}")
    if files_from:
        command += ["--from0", f"--files-from={files_from}"]
    return [*command, source_root.rstrip("/") + "/", destination.rsync_dest()]


class StreamState:
    def __init__(self, index, total):
        self.index, self.total = index, total
        self.done = 0
        self.state, self.current, self.retries, self.error = "pending", None, 0, None

    def as_dict(self):
        return {
            "index": self.index,
            "state": self.state,
            "bytes_total": self.total,
            "bytes_done": self.done,
            "current": self.current,
            "retries": self.retries,
            "error": self.error,
        }


class Copy:
    """One run of a plan: ``run()`` returns the per-stream states, the unreadable files and the errors."""

    def __init__(self, source_root, destination, plan, options):
        self.source_root, self.destination, self.plan = source_root.rstrip("/") or "/", destination, plan
        self.options = options  # bwlimit (bytes/s, all streams), retries, retry_delay, rsync_extra,
        #                         list_dir, progress_path, progress_interval
        self.streams = [StreamState(s["index"], s["bytes"]) for s in plan["streams"]]
        self.lock = threading.Lock()
        self.unreadable = {}
        self.ranges_left = {}
        self.finished_large = set()
        for stream in plan["streams"]:
            for item in stream["ranges"]:
                self.ranges_left[item["path"]] = self.ranges_left.get(item["path"], 0) + 1
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.rates = []
        self.finished = threading.Event()
        # Ranges not yet started, per stream; a stream that runs out takes from the one with most left.
        self.pending = [collections.deque(spec["ranges"]) for spec in plan["streams"]]
        # One ssh connection per stream, shared by its rsync and its range receiver (ControlMaster):
        # its own TCP connection and window, and one login instead of two.
        self.control_dir = tempfile.mkdtemp(prefix="strata-ssh-")
        # ssh connections being set up at once: sshd's MaxStartups (default 10:30:100, sshd_config(5))
        # starts dropping unauthenticated connections beyond 10.
        self.connecting = threading.BoundedSemaphore(CONNECTING)

    # -- progress ------------------------------------------------------------------------------
    def progress(self):
        with self.lock:
            streams = [s.as_dict() for s in self.streams]
        done = sum(s["bytes_done"] for s in streams)
        total = self.plan["bytes"]
        now = time.monotonic()
        self.rates.append((now, done))
        while len(self.rates) > 2 and now - self.rates[0][0] > 10:
            self.rates.pop(0)
        (then, before) = self.rates[0]
        rate = (done - before) / (now - then) if now > then else 0.0
        return {
            "started": utc_iso(self.started_wall),
            "updated": utc_iso(),
            "elapsed_s": round(now - self.started, 1),
            "source": self.source_root,
            "destination": self.destination.describe(),
            "bytes_total": total,
            "bytes_done": done,
            "rate_bytes_s": round(rate),
            "eta_s": round((total - done) / rate) if rate > 0 and done < total else None,
            "streams": streams,
            "unreadable": len(self.unreadable),
            "finished": self.finished.is_set(),
        }

    def write_progress(self):
        path = self.options.get("progress_path")
        if path:
            atomic_write_bytes(path, json.dumps(self.progress(), indent=1).encode(), mode=0o644)

    def _progress_loop(self):
        while not self.finished.wait(self.options.get("progress_interval", 1.0)):
            self.write_progress()

    # -- the run ---------------------------------------------------------------------------------
    def run(self):
        writer = threading.Thread(target=self._progress_loop, daemon=True)
        writer.start()
        workers = [
            threading.Thread(target=self._stream, args=(position, state, spec), daemon=True)
            for position, (state, spec) in enumerate(zip(self.streams, self.plan["streams"]))
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        self.finished.set()
        writer.join()
        self.write_progress()
        with contextlib.suppress(OSError):
            os.rmdir(self.control_dir)
        return self.progress()

    def _per_stream_limit(self):
        total = self.options.get("bwlimit") or 0
        return total // len(self.streams) if total else 0

    def _stream(self, position, state, spec):
        state.state = "running"
        link = _Link(self, os.path.join(self.control_dir, str(state.index)))
        try:
            if spec["files"]:
                self._rsync_files(state, spec, link)
            self._send_ranges(position, state, link)
            state.state = "done" if state.error is None else "failed"
        except _StreamFailed as exc:
            state.state, state.error = "failed", str(exc)
        finally:
            link.close()
        state.current = None

    def _next_range(self, position):
        """This stream's next range, or one taken from the stream with the most bytes left."""
        with self.lock:
            if self.pending[position]:
                return self.pending[position].popleft()
            left = [sum(r["bytes"] - r["done"] for r in queue) for queue in self.pending]
            other = max(range(len(left)), key=left.__getitem__)
            if not self.pending[other]:
                return None
            item = self.pending[other].pop()
            moved = item["bytes"] - item["done"]
            self.streams[other].total -= moved
            self.streams[position].total += moved
            return item

    def _retrying(self, state, what, attempt):
        """Runs ``attempt()`` (returns True when done, False to retry) up to retries + 1 times."""
        retries, delay = self.options.get("retries", 5), self.options.get("retry_delay", 5)
        last = None
        for number in range(retries + 1):
            try:
                if attempt():
                    state.state = "running"
                    return
            except _Retry as exc:
                last = str(exc)
            if number < retries:
                state.retries += 1
                state.state, state.error = "retrying", last
                time.sleep(min(delay * 2**number, 60))
                state.error = None
        raise _StreamFailed(
            f"{what}: gave up after {retries + 1} attempts: {last}; the host stays unreachable - rerun the "
            "transfer when it is back (finished files and ranges are not sent again)"
        )

    def _rsync_files(self, state, spec, link):
        list_path = os.path.join(self.options["list_dir"], f"stream-{state.index}.files")
        atomic_write_bytes(
            list_path, b"\0".join(p.encode("utf-8", "surrogateescape") for p in spec["files"]), mode=0o600
        )
        command = rsync_command(
            self.source_root,
            self.destination,
            ["--info=progress2", *self.options.get("rsync_extra", ())],
            self._per_stream_limit(),
            list_path,
            shell=link.rsync_shell(),
        )
        state.current = f"{len(spec['files'])} files by rsync"
        base = state.done

        def attempt():
            link.ensure()
            process = spawn(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            errors = []
            reader = threading.Thread(
                target=lambda: errors.extend(process.stderr.read().decode("utf-8", "replace").splitlines())
            )
            reader.start()
            buffer = b""
            for chunk in iter(lambda: process.stdout.read1(4096), b""):
                buffer += chunk
                *lines, buffer = re.split(rb"[\r\n]", buffer)
                for line in lines:
                    match = _PROGRESS2.match(line)
                    if match:
                        sent = int(match.group(1).replace(b",", b""))
                        state.done = max(state.done, base + min(sent, state.total - base))
            code = process.wait()
            reader.join()
            if code == 0:
                return True
            if code in remote.RSYNC_PARTIAL:
                self._note_unreadable(errors)
                return True
            if code in remote.RSYNC_RETRYABLE:
                raise _Retry(f"rsync exit {code}: {errors[-1] if errors else 'no message'}")
            raise _StreamFailed(f"rsync exit {code}: {' / '.join(errors[-3:]) or 'no message'}")

        self._retrying(state, f"stream {state.index} (rsync of {len(spec['files'])} files)", attempt)
        state.done = max(state.done, base + spec["files_bytes"])

    def _note_unreadable(self, lines):
        root = self.source_root + "/"
        with self.lock:
            for line in lines:
                match = _UNREADABLE.search(line) or _VANISHED.search(line)
                if match:
                    path = match.group(1)
                    path = path[len(root) :] if path.startswith(root) else path
                    reason = match.group(2) if match.re is _UNREADABLE else "vanished during the copy"
                    self.unreadable[path] = reason

    def _send_ranges(self, position, state, link):
        channel = _Channel(self, link)
        try:
            while (item := self._next_range(position)) is not None:
                if item["path"] not in self.unreadable:
                    self._send_range(state, channel, item)
        finally:
            channel.close()

    def _open_source(self, path):
        """The source file open for reading, or None (then it is listed as unreadable)."""
        try:
            return open(os.path.join(self.source_root, path), "rb")
        except OSError as exc:
            with self.lock:
                self.unreadable[path] = exc.strerror or str(exc)
            return None

    def _send_range(self, state, channel, item):
        path, offset = item["path"], item["offset"]
        state.current = f"{path} [{offset}+{item['length']}]"
        limit = self._per_stream_limit()
        counted = {"bytes": item["done"]}

        def attempt():
            handle = self._open_source(path)
            if handle is None:
                return True
            with handle, channel.exchange():
                channel.ask(
                    {
                        "op": "range",
                        "key": item["key"],
                        "offset": offset,
                        "size": self.plan["large"][path]["size"],
                        "segments": item["segments"],
                    }
                )
                done = int(channel.answer())
                state.done += done - counted["bytes"]
                counted["bytes"] = done
                began, sent, skip = time.monotonic(), 0, done
                for start, length in item["segments"]:
                    if skip >= length:
                        skip -= length
                        continue
                    handle.seek(start + skip)
                    left, skip = length - skip, 0
                    while left:
                        data = handle.read(min(BLOCK, left))
                        if not data:
                            raise _StreamFailed(
                                f"{path} is shorter than when the transfer began: it changed at the "
                                "source; rerun the transfer once it is no longer written to"
                            )
                        channel.send(data)
                        left -= len(data)
                        sent += len(data)
                        state.done += len(data)
                        counted["bytes"] += len(data)
                        if limit:
                            ahead = began + sent / limit - time.monotonic()
                            if ahead > 0:
                                time.sleep(ahead)
                channel.expect_ok(f"range {offset}+{item['length']} of {path}")
            return True

        if item["done"] < item["bytes"]:
            self._retrying(state, f"stream {state.index} ({path})", attempt)
        if path in self.unreadable:
            return
        with self.lock:
            self.ranges_left[path] -= 1
            last = self.ranges_left[path] == 0
        if last:
            self._finish(state, channel, path)

    def _finish(self, state, channel, path):
        """Every range of ``path`` is written: it takes the source's mode and times and moves into place."""
        large = self.plan["large"][path]

        def attempt():
            with channel.exchange():
                channel.ask(
                    {
                        "op": "finish",
                        "key": large["key"],
                        "path": path,
                        "mtime_ns": large["mtime_ns"],
                        "mode": large["mode"],
                    }
                )
                channel.expect_ok(f"moving {path} into place")
            return True

        self._retrying(state, f"stream {state.index} ({path})", attempt)
        with self.lock:
            self.finished_large.add(path)


class _Link:
    """A stream's ssh connection (a ControlMaster of its own, a child of this process), that its
    rsync and its range receiver run over; started again when it is gone."""

    def __init__(self, copy, control_path):
        self.copy, self.control_path, self.master = copy, control_path, None
        self.ssh_command = [
            *copy.destination.ssh_command,
            "-o",
            f"ControlPath={control_path}",
            "-o",
            "ControlMaster=no",
        ]

    def ensure(self):
        if self.master is not None and self.master.poll() is None and os.path.exists(self.control_path):
            return
        self.close()
        destination = self.copy.destination
        master = [
            *destination.ssh_command,
            "-M",
            "-N",
            "-o",
            f"ControlPath={self.control_path}",
            destination.target,
        ]
        with self.copy.connecting:
            self.master = spawn(
                master, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            while not os.path.exists(self.control_path):
                if self.master.poll() is not None:
                    message = self.master.stderr.read().decode("utf-8", "replace").strip().splitlines()
                    self.master = None
                    raise _Retry(
                        f"ssh to {destination.describe()}: {message[-1] if message else 'connection failed'}"
                    )
                time.sleep(0.02)

    def ssh(self, *remote_args):
        return [*self.ssh_command, self.copy.destination.target, "--", remote.command_line(remote_args)]

    def rsync_shell(self):
        return " ".join(shlex.quote(part) for part in self.ssh_command)

    def close(self):
        if self.master is not None:
            self.master.terminate()
            self.master.wait()
            self.master = None
        with contextlib.suppress(OSError):
            os.unlink(self.control_path)


class _Channel:
    """A stream's range receiver at the destination (remote.RECEIVER), kept for all the ranges the
    stream sends, opened again after a failure."""

    def __init__(self, copy, link):
        self.copy, self.link, self.process = copy, link, None

    def _open(self):
        destination = self.copy.destination
        self.link.ensure()
        self.process = spawn(
            self.link.ssh("python3", "-c", remote.RECEIVER, destination.path, destination.work_dir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        greeting = self.process.stdout.readline()
        if greeting.strip() != b"ready":
            raise _Retry(f"{destination.describe()}: the range receiver did not start: {self._failure()}")

    @contextlib.contextmanager
    def exchange(self):
        """One request and its data: a broken connection closes the channel and is retried."""
        if self.process is None:
            self._open()
        try:
            yield
        except (OSError, ValueError) as exc:
            raise _Retry(f"{self.copy.destination.describe()}: {self._failure() or exc}") from None

    def ask(self, request):
        self.send(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()

    def send(self, data):
        self.process.stdin.write(data)

    def answer(self):
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise OSError("the connection closed")
        return line.decode().strip()

    def expect_ok(self, what):
        reply = self.answer()
        if reply != "ok":
            raise OSError(f"{what}: unexpected answer {reply[:80]!r}")

    def _failure(self):
        """The receiver's last error line (its exit ends the channel)."""
        process, self.process = self.process, None
        if process is None:
            return ""
        process.kill()
        message = process.stderr.read().decode("utf-8", "replace").strip().splitlines()
        process.wait()
        reason = message[-1] if message else f"exit {process.returncode}, no message"
        if "No space left" in reason:
            raise _StreamFailed(f"{self.copy.destination.describe()}: {reason}; free space there and rerun")
        return reason

    def close(self):
        if self.process is not None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
            self.process = None


class _Retry(Exception):
    """This attempt failed in a way another attempt may not (a lost connection)."""


class _StreamFailed(Exception):
    """The stream cannot go on (retries spent, or an error another attempt would repeat)."""
