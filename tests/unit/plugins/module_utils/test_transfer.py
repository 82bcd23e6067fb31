"""Unit tests for module_utils/transfer.py: byte ranges, the piece plan, splitting ranges in flight.

The scheduler is exercised on its own (no sockets); ``simulate`` runs it against connections of
fixed rates in virtual time to show that the tail of a download keeps every connection busy.
"""

import heapq
import http.server
import os
import re
import threading
import time

import pytest

from ansible_collections.strata.ops.plugins.module_utils import transfer as t
from ansible_collections.strata.ops.plugins.module_utils.transfer import download, scheduler

MIB = t.MIB


def test_rangeset_merges_and_lists_missing():
    done = t.RangeSet([(10, 20), (0, 5), (20, 30), (40, 50)])
    assert done.ranges == [[0, 5], [10, 30], [40, 50]]
    assert done.total() == 35
    assert done.missing(60) == [[5, 10], [30, 40], [50, 60]]
    assert not done.covers(60)
    done.add(0, 60)
    assert done.covers(60) and done.ranges == [[0, 60]]


@pytest.mark.parametrize(
    ("missing", "split", "min_split", "piece"),
    [
        (1024 * MIB, 32, 50 * MIB, 50 * MIB),  # small archive: min_split wins, fewer pieces than split
        (4096 * MIB, 32, 50 * MIB, 128 * MIB),  # large archive: one piece per connection
        (100 * 1024 * MIB + 1, 32, 50 * MIB, 3200 * MIB + 1),  # rounded up, never a 33rd sliver
        (0, 32, 50 * MIB, 50 * MIB),
    ],
)
def test_piece_size_for(missing, split, min_split, piece):
    assert t.Scheduler.piece_size_for(missing, split, min_split) == piece


def test_pieces_handed_out_front_to_back_remainder_merged():
    sched = t.Scheduler([[0, 110 * MIB]], 50 * MIB, min_split=50 * MIB, steal=False)
    first, second = sched.take(0.0), sched.take(0.0)
    assert (first.pos, first.end) == (0, 50 * MIB)
    assert (second.pos, second.end) == (50 * MIB, 110 * MIB)  # 10 MiB left over joins the last piece
    assert sched.take(0.0) is None  # without splitting, nothing more
    assert sched.busy()


def test_resume_hands_out_only_missing_ranges():
    done = t.RangeSet([(0, 10 * MIB), (30 * MIB, 40 * MIB)])
    sched = t.Scheduler(done.missing(50 * MIB), 8 * MIB, min_split=4 * MIB, steal=False)
    got = []
    while True:
        task = sched.take(0.0)
        if task is None:
            break
        got.append((task.pos, task.end))
    assert got == [
        (10 * MIB, 18 * MIB),
        (18 * MIB, 26 * MIB),
        (26 * MIB, 30 * MIB),  # what is left of a range may be smaller than a piece
        (40 * MIB, 50 * MIB),  # 10 MiB: a remainder under half of min_split stays with its piece
    ]


def test_idle_connection_takes_half_of_the_largest_range():
    sched = t.Scheduler([[0, 100 * MIB]], 100 * MIB, min_split=50 * MIB)
    first = sched.take(0.0)
    assert (first.pos, first.end) == (0, 100 * MIB)
    stolen = sched.take(0.0)  # no rates known yet: halves
    assert (stolen.pos, stolen.end) == (50 * MIB, 100 * MIB)
    assert first.end == 50 * MIB
    assert sched.steals == 1
    third = sched.take(0.0)
    assert third.remaining() == 25 * MIB
    assert sorted(x.remaining() for x in sched.active) == [25 * MIB, 25 * MIB, 50 * MIB]


def test_split_follows_rates_so_both_finish_together():
    sched = t.Scheduler([[0, 90 * MIB]], 90 * MIB)
    slow = sched.take(0.0)
    slow.t0, slow.p0 = 0.0, 0
    slow.pos = 2 * MIB  # 2 MiB in 2 s: 1 MiB/s
    fast = sched.take(2.0, rate=8 * MIB)
    left = 88 * MIB
    assert fast.remaining() == pytest.approx(left * 8 / 9, abs=4096)
    assert slow.remaining() + fast.remaining() == left
    assert fast.remaining() / (8 * MIB) == pytest.approx(slow.remaining() / MIB, rel=0.01)


def test_stalled_connection_gives_up_nearly_all():
    sched = t.Scheduler([[0, 40 * MIB], [40 * MIB, 80 * MIB]], 40 * MIB, min_share=MIB)
    stalled, moving = sched.take(0.0), sched.take(0.0)
    stalled.t0 = moving.t0 = 0.0
    moving.pos += 8 * MIB  # 4 MiB/s; the other has not moved in 2 s
    taken = sched.take(2.0, rate=4 * MIB)
    assert (taken.pos, taken.end) == (MIB, 40 * MIB)  # the stalled one keeps only min_share
    assert stalled.end == MIB


def test_no_split_below_the_floor():
    sched = t.Scheduler([[0, 3 * MIB]], 3 * MIB, min_share=2 * MIB)
    assert sched.take(0.0) is not None
    assert sched.take(0.0) is None  # 3 MiB cannot give two parts of 2 MiB
    # nor when the split would end the range less than steal_seconds sooner
    sched = t.Scheduler([[0, 4 * MIB]], 4 * MIB, min_share=MIB, steal_seconds=0.25)
    sched.take(0.0)
    assert sched.take(0.0, rate=16 * MIB) is None  # 0.25 s left: halves save 0.125 s
    assert sched.take(0.0, rate=4 * MIB).remaining() == 2 * MIB  # 1 s left: halves save 0.5 s


def test_split_point_stays_clear_of_the_write_position():
    sched = t.Scheduler([[0, 5 * MIB]], 5 * MIB, min_share=2 * MIB)
    first = sched.take(0.0)
    first.pos = 1 * MIB - 1000  # a read in flight may land up to CHUNK past pos
    stolen = sched.take(0.0)
    assert stolen.pos - first.pos >= max(t.CHUNK, 2 * MIB)
    assert stolen.end == 5 * MIB and first.end == stolen.pos


def test_release_returns_the_rest():
    sched = t.Scheduler([[0, 10 * MIB]], 10 * MIB, steal=False)
    task = sched.take(0.0)
    task.pos = 4 * MIB
    sched.release(task)
    assert sched.pending == [[4 * MIB, 10 * MIB]] and not sched.active
    again = sched.take(0.0)
    assert (again.pos, again.end) == (4 * MIB, 10 * MIB)


def simulate(length, rates, split_pieces=True, min_split=50 * MIB, step=0.05):
    """Connections of fixed ``rates`` (bytes/s) run the scheduler in virtual time; returns the end time."""
    sched = t.Scheduler(
        [[0, length]],
        t.Scheduler.piece_size_for(length, len(rates), min_split),
        min_split=min_split,
        steal=split_pieces,
    )
    now = 0.0
    tasks = [None] * len(rates)
    covered = t.RangeSet()
    events = [(0.0, i) for i in range(len(rates))]
    heapq.heapify(events)
    while events or sched.active:
        while events and events[0][0] <= now:
            _when, i = heapq.heappop(events)
            task = sched.take(now, rates[i])
            if task is None:
                if sched.busy():
                    heapq.heappush(events, (now + step, i))
                continue
            task.t0, task.p0 = now, task.pos
            tasks[i] = task
        for i, task in enumerate(tasks):
            if task is None:
                continue
            n = min(task.remaining(), int(rates[i] * step))
            covered.add(task.pos, task.pos + n)
            task.pos += n
            if task.remaining() <= 0:
                sched.release(task)
                tasks[i] = None
                heapq.heappush(events, (now + step, i))
        now += step
        assert now < 10_000, "the simulation does not end"
    assert covered.covers(length)
    return now


def test_tail_keeps_every_connection_busy():
    # 32 connections of 4 MiB/s, 1 GiB with 50 MiB pieces: 20 pieces for 32 connections
    rates = [4 * MIB] * 32
    ideal = 1024 * MIB / sum(rates)
    without = simulate(1024 * MIB, rates, split_pieces=False)
    with_split = simulate(1024 * MIB, rates)
    assert without > 1.4 * ideal  # 12 connections never work, 74 MiB last piece
    assert with_split < 1.06 * ideal


def test_uneven_mirrors_finish_together():
    # one mirror three times faster per connection than the other
    rates = [6 * MIB] * 16 + [2 * MIB] * 16
    length = 2048 * MIB
    ideal = length / sum(rates)
    assert simulate(length, rates, split_pieces=False) > 1.4 * ideal
    assert simulate(length, rates) < 1.08 * ideal


# --- Download against small in-process HTTP servers ------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as nginx
    data = b""
    delay = 0.0  # seconds per block sent: a per-connection cap
    ranges = True
    cut_first = False  # the first answer stops half way (a dropped connection)
    cut_every = False  # every answer stops half way and closes: a Content-Length that lies
    served = None

    def log_message(self, *args):
        pass

    def do_GET(self):
        start, end = 0, len(self.data)
        match = re.match(r"bytes=(\d+)-(\d+)$", self.headers.get("Range") or "")
        if match and self.ranges:
            start, end = int(match.group(1)), int(match.group(2)) + 1
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(self.data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        stop = end
        with self.lock:
            self.served.append((start, end))
            if self.cut_every or (self.cut_first and len(self.served) == 1):
                stop = start + (end - start) // 2
        try:
            for pos in range(start, stop, BLOCK):
                self.wfile.write(self.data[pos : min(pos + BLOCK, stop)])
                time.sleep(self.delay)
        except OSError:
            return
        if stop < end:
            self.close_connection = True


BLOCK = 16 * 1024


@pytest.fixture
def serve():
    servers = []

    def start(data, **attrs):
        handler = type("H", (_Handler,), dict(data=data, served=[], lock=threading.Lock(), **attrs))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/a.tar.zst", handler

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def small_chunks(monkeypatch):
    for module in (scheduler, download):  # each reads CHUNK as its own global
        monkeypatch.setattr(module, "CHUNK", BLOCK)
    monkeypatch.setattr(scheduler, "STEAL_MIN_BYTES", 4 * BLOCK)
    monkeypatch.setattr(scheduler, "STEAL_SECONDS", 0.0)


def test_download_from_a_fast_and_a_slow_mirror(serve, small_chunks, tmp_path):
    data = os.urandom(2 * MIB + 12345)
    fast, _fast_handler = serve(data, delay=0.0005)
    slow, slow_handler = serve(data, delay=0.02)  # ~0.8 MiB/s per connection
    tmp = str(tmp_path / "a.part")
    sources = [dict(url=fast, ranges=True), dict(url=slow, ranges=True)]
    stats = t.Download(
        sources, tmp, "a.tar.zst", len(data), connections_per_server=2, split=4, min_split_size=BLOCK
    ).run()
    with open(tmp, "rb") as handle:
        assert handle.read() == data
    assert stats["fetched_bytes"] == len(data) and stats["refetched_bytes"] == 0
    assert stats["ranges_split"] > 0  # the fast mirror took over the slow one's ranges
    by_url = {s["url"]: s for s in stats["sources"]}
    assert by_url[fast]["bytes"] > 2 * by_url[slow]["bytes"]
    assert by_url[fast]["requests"] >= 2  # went on with another range after its piece
    assert t.load_control(tmp, "a.tar.zst", len(data))[0].covers(len(data))
    assert len(slow_handler.served) >= 2


def test_download_resumes_only_missing_ranges(serve, small_chunks, tmp_path):
    data = os.urandom(MIB)
    url, handler = serve(data)
    tmp = str(tmp_path / "a.part")
    with open(tmp, "wb") as handle:
        handle.write(data[: 300 * 1024] + bytes(len(data) - 300 * 1024))
    t.save_control(tmp, "a.tar.zst", len(data), t.RangeSet([(0, 300 * 1024)]), 300 * 1024)
    stats = t.Download([dict(url=url, ranges=True)], tmp, "a.tar.zst", len(data), min_split_size=BLOCK).run()
    with open(tmp, "rb") as handle:
        assert handle.read() == data
    assert stats["resumed_bytes"] == 300 * 1024
    assert stats["fetched_bytes"] == len(data) - 300 * 1024
    assert min(start for start, _end in handler.served) == 300 * 1024


def test_single_stream_retry_starts_over(serve, small_chunks, tmp_path):
    data = os.urandom(MIB)
    url, handler = serve(data, ranges=False, cut_first=True)
    tmp = str(tmp_path / "a.part")
    stats = t.Download([dict(url=url, ranges=False)], tmp, "a.tar.zst", len(data)).run()
    with open(tmp, "rb") as handle:
        assert handle.read() == data  # the second answer starts at byte 0 again: skipped, not shifted
    assert stats["single_stream"] and len(handler.served) == 2
    assert stats["discarded_bytes"] == len(data) // 2


def test_single_stream_refuses_a_content_length_other_than_the_archives(serve, small_chunks, tmp_path):
    # the source now serves more than the archive it announced: its first bytes are not the archive
    data = os.urandom(MIB + 100)
    url, handler = serve(data, ranges=False)
    tmp = str(tmp_path / "a.part")
    with pytest.raises(t.SourceError) as err:
        t.Download([dict(url=url, ranges=False)], tmp, "a.tar.zst", MIB).run()
    assert f"answers with Content-Length {MIB + 100}, not the {MIB} bytes the archive has" in err.value.msg
    assert len(handler.served) == 1  # dropped at once: asking again gives the same answer
    assert "faster sources" not in err.value.msg


def test_single_stream_short_body_is_a_failed_attempt_with_its_reason(serve, small_chunks, tmp_path):
    data = os.urandom(MIB)
    url, handler = serve(data, ranges=False, cut_every=True)  # Content-Length MIB, half the body
    tmp = str(tmp_path / "a.part")
    with pytest.raises(t.SourceError) as err:
        t.Download([dict(url=url, ranges=False)], tmp, "a.tar.zst", len(data)).run()
    msg = err.value.msg
    assert f"the body ended at byte {MIB // 2}, short of what it announced" in msg
    assert "failed 3 times" in msg and len(handler.served) == 3
    assert "add faster sources or lower min_speed" not in msg  # slowness was not the reason
    assert msg.endswith("fix or replace these sources")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://127.0.0.1:99999/a.tar.zst", "Port out of range"),
        ("http:///a.tar.zst", "no host in the URL"),
        ("ftp://127.0.0.1/a.tar.zst", "only http:// and https://"),
    ],
)
def test_unusable_urls_are_source_errors(url, fragment):
    # a redirect's Location can name any of these: a failed source, never a crash
    with pytest.raises(t.SourceError, match=fragment):
        t.probe(url, timeout=1)


def test_the_package_names_everything_snapshot_fetch_uses():
    """snapshots.fetch is given this package as its transfer API (tests replace it)."""
    from ansible_collections.strata.ops.plugins.module_utils.snapshots import fetch  # noqa: PLC0415

    with open(fetch.__file__) as handle:
        used = set(re.findall(r"\btransfer\.([A-Za-z_]\w*)", handle.read()))
    assert used
    assert used <= set(t.__all__), sorted(used - set(t.__all__))
