"""strata.ops.snapshot_fetch against real nginx servers (tests/testbed/snapshot_server.py) and
real zstd archives made here; the tip comes from the STAND-IN Solana RPC (tests/testbed/solana_rpc.py).

nginx must be installed (Debian nginx-light): without it these tests fail under CI=true and
are skipped otherwise. A full disk is a real small tmpfs mounted here (root, as CI runs: a
non-root run under CI=true fails). The module runs as a subprocess, as Ansible runs it, and
every bad input also through ``ansible`` itself (adhoc_result): a clean failure, never a crash.
"""

import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.strata.ops.plugins.module_utils import transfer

from . import conftest
from .conftest import adhoc_result, assert_clean_failure, skip_or_fail

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))

from http_stand_in import HTTPStandIn, QuietHandler  # noqa: E402
from snapshot_server import NGINX_PACKAGE, NginxSnapshotServer, nginx_binary  # noqa: E402
from solana_rpc import DEVNET_GENESIS, SolanaRpcStandIn  # noqa: E402

H = "7jMmeXZSNcWPrB2RsTdeXfXrsyW5c1BfPjqoLW2X5T7V"
H2 = "4uQeVj5tqViQh7yWWGStvkEG1Zmhx6uasJtWCJziofM"
FULL_SLOT = 350_000_000
INC_SLOT = FULL_SLOT + 1_500
MIB = 1024 * 1024

pytestmark = pytest.mark.needs("nginx")


@pytest.fixture(scope="module", autouse=True)
def _nginx():
    if nginx_binary() is None:
        skip_or_fail(f"nginx is not installed (the test bed installs Debian {NGINX_PACKAGE})")


@pytest.fixture
def small_fs(tmp_path):
    """mount(size): a real tmpfs of that size (e.g. "2m" or bytes) under tmp_path, unmounted after."""
    mounts = []

    def mount(size):
        if os.geteuid() != 0:
            skip_or_fail("mounting a small tmpfs needs root (CI runs the tests as root)")
        directory = tmp_path / f"fs{len(mounts)}"
        directory.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True)
        mounts.append(directory)
        return directory

    yield mount
    for directory in mounts:
        subprocess.run(["umount", str(directory)], check=True)


def fill(directory, name="filler"):
    """Write into ``directory`` until its file system is full; return the filler's path."""
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return path


def make_archive(directory, name, size):
    """A real zstd archive of ``size`` random bytes (incompressible, so about that size)."""
    raw = directory / (name + ".raw")
    raw.write_bytes(os.urandom(size))
    subprocess.run(["zstd", "-q", "-1", "-f", str(raw), "-o", str(directory / name)], check=True)
    raw.unlink()
    return directory / name


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    full = f"snapshot-{FULL_SLOT}-{H}.tar.zst"
    inc = f"incremental-snapshot-{FULL_SLOT}-{INC_SLOT}-{H2}.tar.zst"
    make_archive(root, full, 6 * MIB)
    make_archive(root, inc, 1 * MIB)
    return {"root": root, "full": full, "inc": inc}


@pytest.fixture
def dest(tmp_path):
    d = tmp_path / "snapshots"
    d.mkdir()
    return d


BASE_ARGS = {
    "min_speed": 0,
    "speed_test_seconds": 0.3,
    "connections_per_server": 4,
    "split": 8,
    "min_split_size": 512 * 1024,
    "timeout": 5,
}


def args_for(dest, sources, **extra):
    args = dict(BASE_ARGS, snapshot_dir=str(dest), sources=sources)
    args.update(extra)
    return args


def run_module(args, check_mode=False, module="snapshot_fetch"):
    return conftest.run_module(module, args, check_mode=check_mode)


def final_archives(directory):
    return sorted(n for n in os.listdir(directory) if not n.startswith("."))


def test_full_and_incremental_from_two_rpc_nodes(served, dest, tmp_path):
    root = served["root"]
    old = dest / f"snapshot-{FULL_SLOT - 100_000}-{H2}.tar.zst"
    old.write_bytes(b"old")
    older = dest / f"snapshot-{FULL_SLOT - 200_000}-{H2}.tar.zst"
    older.write_bytes(b"older")
    status = tmp_path / "status.json"
    with NginxSnapshotServer(
        root, full=served["full"], incremental=served["inc"], rate="2m"
    ) as a, NginxSnapshotServer(
        root, full=served["full"], incremental=served["inc"], rate="2m"
    ) as b, SolanaRpcStandIn(start_slot=INC_SLOT + 5_000) as rpc:
        result = run_module(
            args_for(dest, [a.url, b.url], rpc_endpoints=[rpc.url], keep=2, status_file=str(status)),
        )
        assert result.get("failed") is not True, result
        fresh = run_module(
            {"snapshot_dir": str(dest), "rpc_endpoints": [rpc.url]}, module="snapshot_freshness"
        )
    assert result["changed"] is True
    names = [d["name"] for d in result["downloads"]]
    assert names == [served["full"], served["inc"]]
    for name in names:
        assert sha(dest / name) == sha(root / name)
    full = result["downloads"][0]
    assert full["verified_by"] == "zstd -t"
    assert all(s["bytes"] > 0 for s in full["sources"]), full["sources"]  # both mirrors served
    assert full["connections"] == 8
    assert result["deleted"] == [older.name]  # keep=2: the new one and the newest old one
    assert final_archives(dest) == sorted([served["full"], served["inc"], old.name])
    assert json.loads(status.read_text())["state"] == "done"
    assert fresh["verdict"] == "fresh" and fresh["incremental_slot"] == INC_SLOT


def test_check_mode_then_idempotent(served, dest, tmp_path):
    status = dest / ".strata-fetch-status.json"
    with NginxSnapshotServer(served["root"], full=served["full"], incremental=served["inc"]) as a:
        args = args_for(dest, [a.url], status_file=str(status))
        planned = run_module(args, check_mode=True)
        assert planned["changed"] is True and planned["downloads"] == []
        assert planned["plan"]["full"]["name"] == served["full"]
        # Check mode writes nothing, not even the status file.
        assert final_archives(dest) == [] and os.listdir(dest) == []
        first = run_module(args)
        written = status.read_bytes()
        assert json.loads(written)["state"] == "done"
        assert run_module(args, check_mode=True)["changed"] is False
        assert status.read_bytes() == written
        second = run_module(args)
    assert first["changed"] is True
    assert second["changed"] is False
    assert sorted(second["already_present"]) == sorted([served["full"], served["inc"]])
    # The rerun keeps the last download's record (the health report's rate chart) and says so.
    before, after = json.loads(written), json.loads(status.read_bytes())
    assert after["rate_history"] == before["rate_history"] and after["rate_history"]
    assert after["downloads"] == before["downloads"] and after["last_download_updated"] == before["updated"]
    assert sorted(after["already_present"]) == sorted([served["full"], served["inc"]])
    assert after["updated"] > before["updated"]


def test_plain_archive_urls(served, dest, tmp_path):
    with NginxSnapshotServer(served["root"]) as a, NginxSnapshotServer(served["root"]) as b:
        urls = [f"{a.url}/{served['full']}", f"{b.url}/{served['full']}"]
        result = run_module(args_for(dest, urls, incremental=False))
    assert result.get("failed") is not True, result
    assert final_archives(dest) == [served["full"]]


def test_malformed_redirect_name(served, dest, tmp_path):
    (served["root"] / "snapshot-12x-bad.tar.zst").write_bytes(b"x")
    with NginxSnapshotServer(served["root"], full="snapshot-12x-bad.tar.zst") as a:
        result = run_module(args_for(dest, [a.url]))
    assert result["failed"] is True
    assert result["msg"].startswith("no source offers a snapshot archive: ")
    assert "snapshot-12x-bad.tar.zst: not named snapshot-<slot>-<hash>" in result["msg"]
    assert any("as agave expects" in e for e in result["source_errors"][a.url])


def test_source_without_redirect_or_down(dest, tmp_path, served):
    with NginxSnapshotServer(served["root"]) as a:  # no redirect: 404 for /snapshot.tar.bz2
        result = run_module(args_for(dest, [a.url, "http://127.0.0.1:9"]))
    assert result["failed"] is True
    assert "HTTP 404" in " ".join(result["source_errors"][a.url])
    assert "http://127.0.0.1:9" in result["source_errors"]


def test_server_without_range_support(served, dest, tmp_path):
    with NginxSnapshotServer(served["root"], full=served["full"], ranges=False) as a:
        result = run_module(args_for(dest, [a.url], incremental=False))
    assert result.get("failed") is not True, result
    assert result["downloads"][0]["single_stream"] is True
    assert result["downloads"][0]["connections"] == 1
    assert sha(dest / served["full"]) == sha(served["root"] / served["full"])


def test_rangeless_mirror_is_set_aside(served, dest, tmp_path):
    with NginxSnapshotServer(served["root"], full=served["full"], ranges=False) as plain, NginxSnapshotServer(
        served["root"], full=served["full"]
    ) as ranged:
        result = run_module(args_for(dest, [plain.url, ranged.url], incremental=False))
    download = result["downloads"][0]
    assert download["single_stream"] is False
    assert list(download["sources_ignored"]) == [f"{plain.url}/{served['full']}"]


def test_stale_sources_are_refused(served, dest, tmp_path):
    with NginxSnapshotServer(served["root"], full=served["full"]) as a, SolanaRpcStandIn(
        start_slot=FULL_SLOT + 90_000
    ) as rpc:
        result = run_module(args_for(dest, [a.url], rpc_endpoints=[rpc.url], incremental=False))
    assert result["failed"] is True
    assert "slots behind the tip" in next(iter(result["rejected"].values()))
    assert f"{a.url}/{served['full']}: slot {FULL_SLOT} is " in result["msg"]  # the reason itself
    assert "raise max_lag_slots or add sources with newer snapshots" in result["msg"]


def test_slow_source_rejected_when_measured(served, dest, tmp_path):
    with NginxSnapshotServer(served["root"], full=served["full"]) as fast, NginxSnapshotServer(
        served["root"], full=served["full"], rate="64k"
    ) as slow:
        result = run_module(args_for(dest, [fast.url, slow.url], incremental=False, min_speed=2 * MIB))
    assert result.get("failed") is not True, result
    assert "below min_speed" in result["rejected"][f"{slow.url}/{served['full']}"]
    assert [s["url"] for s in result["downloads"][0]["sources"]] == [f"{fast.url}/{served['full']}"]


def test_slow_source_dropped_during_download(served, dest, tmp_path):
    with NginxSnapshotServer(served["root"], full=served["full"], rate="1m") as ok, NginxSnapshotServer(
        served["root"], full=served["full"], rate="16k"
    ) as slow:
        args = args_for(
            dest, [ok.url, slow.url], incremental=False, min_speed=512 * 1024, speed_test_seconds=0,
            speed_grace_seconds=1,
        )  # fmt: skip
        result = run_module(args)
    assert result.get("failed") is not True, result
    by_url = {s["url"]: s for s in result["downloads"][0]["sources"]}
    assert by_url[f"{slow.url}/{served['full']}"]["dropped"].startswith("slower than min_speed")
    assert by_url[f"{ok.url}/{served['full']}"]["dropped"] is None
    assert sha(dest / served["full"]) == sha(served["root"] / served["full"])


def test_corrupt_archive_is_discarded(dest, tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    name = f"snapshot-{FULL_SLOT}-{H}.tar.zst"
    (root / name).write_bytes(os.urandom(2 * MIB))  # right name, not a zstd stream
    with NginxSnapshotServer(root, full=name) as a:
        result = run_module(args_for(dest, [a.url], incremental=False))
    assert result["failed"] is True
    assert "zstd -t" in result["msg"] and "discarded" in result["msg"]
    assert os.listdir(dest) == []


def test_checksum_from_source(served, dest, tmp_path):
    full = served["root"] / served["full"]
    (served["root"] / (served["full"] + ".sha256")).write_text(f"{'0' * 64}  {served['full']}\n")
    with NginxSnapshotServer(served["root"], full=served["full"]) as a:
        bad = run_module(args_for(dest, [a.url], incremental=False))
        (served["root"] / (served["full"] + ".sha256")).write_text(f"{sha(full)}  {served['full']}\n")
        good = run_module(args_for(dest, [a.url], incremental=False))
    assert bad["failed"] is True and "does not match" in bad["msg"]
    assert good["downloads"][0]["sha256"] == sha(full)


def test_disk_too_small(served, small_fs, tmp_path):
    small = small_fs("2m")
    with NginxSnapshotServer(served["root"], full=served["full"]) as a:
        result = run_module(args_for(small, [a.url], incremental=False))
    assert result["failed"] is True
    assert "bytes free" in result["msg"] and result["needed_bytes"] > result["free_bytes"]
    assert os.listdir(small) == []


def test_kill_9_then_resume(tmp_path, dest):
    root = tmp_path / "www"
    root.mkdir()
    name = f"snapshot-{FULL_SLOT}-{H}.tar.zst"
    make_archive(root, name, 16 * MIB)
    tmp_file = dest / (".strata-partial-" + name)
    ctl = dest / (".strata-partial-" + name + ".ctl")
    with NginxSnapshotServer(root, full=name, rate="1m") as a, NginxSnapshotServer(
        root, full=name, rate="1m"
    ) as b:
        args = args_for(
            dest, [a.url, b.url], incremental=False, speed_test_seconds=0, connections_per_server=2
        )
        proc = conftest.start_module("snapshot_fetch", args)
        deadline = time.time() + 30
        done = 0
        while time.time() < deadline and done < 6 * MIB:
            time.sleep(0.2)
            assert not (dest / name).exists()  # never a partial file under the final name
            try:
                done = sum(e - s for s, e in json.loads(ctl.read_text())["done"])
            except (OSError, ValueError):
                done = 0
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        assert done >= 6 * MIB, "the download did not progress"
        assert tmp_file.exists() and not (dest / name).exists()
        result = run_module(args)
    assert result.get("failed") is not True, result
    stats = result["downloads"][0]
    size = (root / name).stat().st_size
    assert stats["resumed_bytes"] >= done
    assert stats["fetched_bytes"] == size - stats["resumed_bytes"]  # only the missing ranges
    assert stats["refetched_bytes"] == 0
    assert sha(dest / name) == sha(root / name)
    assert not tmp_file.exists() and not ctl.exists()


def test_bad_arguments(dest, tmp_path):
    result = run_module(args_for(dest, ["http://127.0.0.1:9"], keep=0))
    assert result["failed"] is True and "keep must be 1 or more" in result["msg"]
    result = run_module(args_for(tmp_path / "missing", ["http://127.0.0.1:9"]))
    assert result["failed"] is True and "does not exist" in result["msg"]


# --- a full disk (a real small tmpfs) ------------------------------------------------------------

PAGE = 4096


def partial_files(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith(".strata-partial-"))


def test_space_for_the_archive_but_not_its_control_file(served, small_fs, tmp_path):
    size = (served["root"] / served["full"]).stat().st_size
    small = small_fs(-(-size // PAGE) * PAGE + PAGE)  # the archive and one page more
    with NginxSnapshotServer(served["root"], full=served["full"]) as a:
        result = adhoc_result("snapshot_fetch", args_for(small, [a.url], incremental=False))
    assert_clean_failure(result)
    assert "the archives and their control files" in result["msg"], result["msg"]
    assert "nothing was written" in result["msg"]
    assert result["needed_bytes"] > result["free_bytes"] >= size
    assert os.listdir(small) == [] and result["changed"] is False


def test_disk_full_during_the_download_stops_at_once_and_a_rerun_resumes(tmp_path, small_fs):
    root = tmp_path / "www"
    root.mkdir()
    name = f"snapshot-{FULL_SLOT}-{H}.tar.zst"
    make_archive(root, name, 6 * MIB)
    small = small_fs("8m")
    ctl = small / (".strata-partial-" + name + ".ctl")
    with NginxSnapshotServer(root, rate="1m") as slow:
        status = tmp_path / "status.json"
        args = args_for(
            small,
            [f"{slow.url}/{name}"],
            speed_test_seconds=0,
            connections_per_server=1,
            split=1,
            status_file=str(status),
        )
        outcome = {}
        run = threading.Thread(target=lambda: outcome.update(adhoc_result("snapshot_fetch", args)))
        run.start()
        deadline = time.time() + 60
        done = 0
        while run.is_alive() and time.time() < deadline and done < MIB:
            time.sleep(0.1)
            try:
                done = sum(e - s for s, e in json.loads(ctl.read_text())["done"])
            except (OSError, ValueError):
                done = 0
        assert done >= MIB, "the download did not progress"
        filler = fill(small)  # the disk fills up while the download writes
        run.join(60)
        assert not run.is_alive()
        result = outcome
        assert_clean_failure(result)
        assert "no space left" in result["msg"].lower() and "a new run resumes" in result["msg"]
        assert "faster sources" not in result["msg"] and "failed 3 times" not in result["msg"]
        assert result["recorded_bytes"] >= MIB and result["changed"] is True
        assert partial_files(small) == sorted([".strata-partial-" + name, ctl.name])  # no .ctl.new
        assert result["transfer"]["sources"][0]["dropped"] is None  # not the source's fault
        assert json.loads(status.read_text())["state"] == "failed"  # a poller stops waiting
        os.unlink(filler)
        resumed = run_module(args)
    assert resumed.get("failed") is not True, resumed
    assert resumed["downloads"][0]["resumed_bytes"] >= result["recorded_bytes"]
    assert sha(small / name) == sha(root / name) and partial_files(small) == []


def test_download_keeps_what_was_recorded_when_the_data_does_not_fit(tmp_path, small_fs):
    root = tmp_path / "www"
    root.mkdir()
    data = os.urandom(MIB)
    (root / "a.tar.zst").write_bytes(data)
    small = small_fs("1m")  # the control file takes a page: the last page of data does not fit
    tmp = str(small / ".strata-partial-a.tar.zst")
    with NginxSnapshotServer(root, rate="512k") as srv:
        sources = [dict(url=f"{srv.url}/a.tar.zst", ranges=True)]
        with pytest.raises(transfer.DiskSpaceError) as err:
            transfer.Download(sources, tmp, "a.tar.zst", MIB, min_split_size=MIB).run()
        recorded = err.value.details["recorded_bytes"]
        assert 0 < recorded < MIB
        assert (
            "no space left" in err.value.msg.lower()
            and f"{recorded} of {MIB} bytes are kept" in err.value.msg
        )
        assert sorted(os.listdir(small)) == [".strata-partial-a.tar.zst", ".strata-partial-a.tar.zst.ctl"]
        assert err.value.details["transfer"]["sources"][0]["dropped"] is None  # not the source's fault
        subprocess.run(["mount", "-o", "remount,size=2m", str(small)], check=True)
        stats = transfer.Download(sources, tmp, "a.tar.zst", MIB, min_split_size=MIB).run()
    assert stats["resumed_bytes"] == recorded and stats["fetched_bytes"] == MIB - recorded
    with open(tmp, "rb") as handle:
        assert handle.read() == data


def test_control_file_that_cannot_be_written_is_a_space_error(tmp_path, small_fs):
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.tar.zst").write_bytes(os.urandom(MIB))
    small = small_fs("1m")
    fill(small)
    tmp = str(small / ".strata-partial-a.tar.zst")
    with NginxSnapshotServer(root) as srv, pytest.raises(transfer.DiskSpaceError) as err:
        transfer.Download([dict(url=f"{srv.url}/a.tar.zst", ranges=True)], tmp, "a.tar.zst", MIB).run()
    assert "nothing was recorded, nothing is kept" in err.value.msg
    assert err.value.details["changed"] is False
    assert os.listdir(small) == ["filler"]  # no partial, no .ctl, no .ctl.new


# --- sources that fail: the reason is in the message, and no crash -------------------------------


class LyingArchive(HTTPStandIn):
    """Serves one archive name without Range support, announcing ``length`` bytes in
    Content-Length but sending half of them before it closes the connection."""

    def __init__(self, name, length):
        self.name, self.length = name, length
        stand_in = self

        class Handler(QuietHandler):
            def do_GET(self):
                if self.path != "/" + stand_in.name:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(stand_in.length))
                self.end_headers()
                self.wfile.write(b"\0" * (stand_in.length // 2))
                self.close_connection = True

        super().__init__(Handler)


def test_short_body_from_a_lying_content_length(dest, tmp_path):
    name = f"snapshot-{FULL_SLOT}-{H}.tar.zst"
    with LyingArchive(name, 2 * MIB) as liar:
        result = adhoc_result("snapshot_fetch", args_for(dest, [f"{liar.url}/{name}"], incremental=False))
    assert_clean_failure(result)
    assert f"the body ended at byte {MIB}, short of what it announced" in result["msg"]
    assert "faster sources" not in result["msg"]
    assert not (dest / name).exists()


def silent_port():
    """A port that accepts connections and never answers: every request times out."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@pytest.mark.parametrize(
    ("sources", "fragment"),
    [
        (["127.0.0.1:8899"], "sources: '127.0.0.1:8899': each entry must be an http:// or https:// URL"),
        (["ftp://127.0.0.1/snapshot.tar.zst"], "sources: 'ftp://127.0.0.1/snapshot.tar.zst': each entry"),
        ("TIMEOUT", "timed out"),
    ],
)
def test_bad_sources_fail_cleanly_with_the_reason(dest, sources, fragment):
    with silent_port() as quiet:
        if sources == "TIMEOUT":
            sources = [f"http://127.0.0.1:{quiet.getsockname()[1]}"]
        result = adhoc_result("snapshot_fetch", args_for(dest, sources, timeout=1))
    assert_clean_failure(result)
    assert fragment in result["msg"], result["msg"]
    assert "None" not in result["msg"]
    assert os.listdir(dest) == []


def test_404_after_the_redirect_is_in_the_message(served, dest):
    with NginxSnapshotServer(served["root"], full=f"snapshot-{FULL_SLOT + 7}-{H}.tar.zst") as gone:
        result = adhoc_result("snapshot_fetch", args_for(dest, [gone.url], incremental=False))
    assert_clean_failure(result)
    assert f"snapshot-{FULL_SLOT + 7}-{H}.tar.zst: HTTP 404" in result["msg"], result["msg"]
    assert "max_lag_slots" not in result["msg"] and "None" not in result["msg"]


def test_rpc_endpoint_without_a_scheme(served, dest):
    with NginxSnapshotServer(served["root"], full=served["full"]) as a:
        result = adhoc_result("snapshot_fetch", args_for(dest, [a.url], rpc_endpoints=["127.0.0.1:8899"]))
    assert_clean_failure(result)
    assert result["msg"].startswith("rpc_endpoints: '127.0.0.1:8899': each entry must be an http://")
    assert "unknown url type" not in result["msg"]


def test_rpc_endpoints_that_do_not_answer(served, dest):
    with NginxSnapshotServer(served["root"], full=served["full"]) as a, silent_port() as quiet:
        down = f"http://127.0.0.1:{quiet.getsockname()[1]}"
        result = adhoc_result("snapshot_fetch", args_for(dest, [a.url], rpc_endpoints=[down], timeout=1))
    assert_clean_failure(result)
    assert "no RPC endpoint answered" in result["msg"] and "timed out" in result["msg"]
    assert os.listdir(dest) == []


def test_rpc_endpoints_of_two_clusters(served, dest):
    with NginxSnapshotServer(served["root"], full=served["full"]) as a, SolanaRpcStandIn(
        start_slot=INC_SLOT + 5_000
    ) as main, SolanaRpcStandIn(start_slot=INC_SLOT + 900_000, genesis_hash=DEVNET_GENESIS) as dev:
        result = adhoc_result("snapshot_fetch", args_for(dest, [a.url], rpc_endpoints=[main.url, dev.url]))
    assert_clean_failure(result)
    assert "different clusters" in result["msg"]
    assert f"{dev.url} answers {DEVNET_GENESIS}" in result["msg"] and main.url in result["msg"]
    assert os.listdir(dest) == []


def test_archive_above_the_tip_is_refused(served, dest):
    with NginxSnapshotServer(served["root"], full=served["full"]) as a, SolanaRpcStandIn(
        start_slot=FULL_SLOT - 50_000
    ) as behind:
        result = adhoc_result(
            "snapshot_fetch", args_for(dest, [a.url], rpc_endpoints=[behind.url], incremental=False)
        )
    assert_clean_failure(result)
    assert f"slot {FULL_SLOT} is above the cluster tip" in result["msg"]
    assert "not on the same cluster, or the endpoints lag" in result["msg"]


def test_without_rpc_endpoints_no_tip_is_checked_and_a_warning_says_so(served, dest):
    with NginxSnapshotServer(served["root"], full=served["full"], incremental=served["inc"]) as a:
        result = adhoc_result("snapshot_fetch", args_for(dest, [a.url]), "--check")
    assert result.get("failed") is not True, result
    assert result["tip_checked"] is False and result["tip_slot"] is None
    assert result["newest_offered_slot"] == INC_SLOT
    assert any("tip_checked=false" in w for w in result["warnings"]), result.get("warnings")
