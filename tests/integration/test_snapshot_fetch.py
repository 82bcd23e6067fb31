"""strata.ops.snapshot_fetch against real nginx servers (tests/testbed/snapshot_server.py) and
real zstd archives made here; the tip comes from the STAND-IN Solana RPC (tests/testbed/solana_rpc.py).

nginx must be installed (Debian nginx-light): without it these tests fail under CI=true and
are skipped otherwise. The module runs as a subprocess, as Ansible runs it.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULE = os.path.join(REPO, "plugins", "modules", "snapshot_fetch.py")
FRESHNESS = os.path.join(REPO, "plugins", "modules", "snapshot_freshness.py")
sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))

from snapshot_server import NGINX_PACKAGE, NginxSnapshotServer, nginx_binary  # noqa: E402
from solana_rpc import SolanaRpcStandIn  # noqa: E402

H = "7jMmeXZSNcWPrB2RsTdeXfXrsyW5c1BfPjqoLW2X5T7V"
H2 = "4uQeVj5tqViQh7yWWGStvkEG1Zmhx6uasJtWCJziofM"
FULL_SLOT = 350_000_000
INC_SLOT = FULL_SLOT + 1_500
MIB = 1024 * 1024

pytestmark = pytest.mark.needs("nginx")


@pytest.fixture(scope="module", autouse=True)
def _nginx():
    if nginx_binary() is None:
        msg = f"nginx is not installed (the test bed installs Debian {NGINX_PACKAGE})"
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and " + msg)
        pytest.skip(msg)


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


def write_args(tmp_path, args, check_mode=False):
    args_file = tmp_path / f"args-{time.monotonic_ns()}.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=check_mode)}))
    return args_file


def module_env():
    return dict(os.environ, PYTHONPATH=os.path.join(REPO, ".collections"))


def run_module(tmp_path, args, check_mode=False, module=MODULE):
    proc = subprocess.run(
        [sys.executable, module, str(write_args(tmp_path, args, check_mode))],
        capture_output=True,
        text=True,
        env=module_env(),
        check=False,
    )
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(proc.stdout + proc.stderr) from None


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
            tmp_path,
            args_for(dest, [a.url, b.url], rpc_endpoints=[rpc.url], keep=2, status_file=str(status)),
        )
        assert result.get("failed") is not True, result
        fresh = run_module(
            tmp_path, {"snapshot_dir": str(dest), "rpc_endpoints": [rpc.url]}, module=FRESHNESS
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
    with NginxSnapshotServer(served["root"], full=served["full"], incremental=served["inc"]) as a:
        planned = run_module(tmp_path, args_for(dest, [a.url]), check_mode=True)
        assert planned["changed"] is True and planned["downloads"] == []
        assert planned["plan"]["full"]["name"] == served["full"]
        assert final_archives(dest) == [] and os.listdir(dest) == []
        first = run_module(tmp_path, args_for(dest, [a.url]))
        second = run_module(tmp_path, args_for(dest, [a.url]))
    assert first["changed"] is True
    assert second["changed"] is False
    assert sorted(second["already_present"]) == sorted([served["full"], served["inc"]])


def test_plain_archive_urls(served, dest, tmp_path):
    with NginxSnapshotServer(served["root"]) as a, NginxSnapshotServer(served["root"]) as b:
        urls = [f"{a.url}/{served['full']}", f"{b.url}/{served['full']}"]
        result = run_module(tmp_path, args_for(dest, urls, incremental=False))
    assert result.get("failed") is not True, result
    assert final_archives(dest) == [served["full"]]


def test_malformed_redirect_name(served, dest, tmp_path):
    (served["root"] / "snapshot-12x-bad.tar.zst").write_bytes(b"x")
    with NginxSnapshotServer(served["root"], full="snapshot-12x-bad.tar.zst") as a:
        result = run_module(tmp_path, args_for(dest, [a.url]))
    assert result["failed"] is True
    assert "no source offers" in result["msg"]
    assert any("does not parse" in e or "looks like" in e for e in result["source_errors"][a.url])


def test_source_without_redirect_or_down(dest, tmp_path, served):
    with NginxSnapshotServer(served["root"]) as a:  # no redirect: 404 for /snapshot.tar.bz2
        result = run_module(tmp_path, args_for(dest, [a.url, "http://127.0.0.1:9"]))
    assert result["failed"] is True
    assert "HTTP 404" in " ".join(result["source_errors"][a.url])
    assert "http://127.0.0.1:9" in result["source_errors"]


def test_server_without_range_support(served, dest, tmp_path):
    with NginxSnapshotServer(served["root"], full=served["full"], ranges=False) as a:
        result = run_module(tmp_path, args_for(dest, [a.url], incremental=False))
    assert result.get("failed") is not True, result
    assert result["downloads"][0]["single_stream"] is True
    assert result["downloads"][0]["connections"] == 1
    assert sha(dest / served["full"]) == sha(served["root"] / served["full"])


def test_rangeless_mirror_is_set_aside(served, dest, tmp_path):
    with NginxSnapshotServer(served["root"], full=served["full"], ranges=False) as plain, NginxSnapshotServer(
        served["root"], full=served["full"]
    ) as ranged:
        result = run_module(tmp_path, args_for(dest, [plain.url, ranged.url], incremental=False))
    download = result["downloads"][0]
    assert download["single_stream"] is False
    assert list(download["sources_ignored"]) == [f"{plain.url}/{served['full']}"]


def test_stale_sources_are_refused(served, dest, tmp_path):
    with NginxSnapshotServer(served["root"], full=served["full"]) as a, SolanaRpcStandIn(
        start_slot=FULL_SLOT + 90_000
    ) as rpc:
        result = run_module(tmp_path, args_for(dest, [a.url], rpc_endpoints=[rpc.url], incremental=False))
    assert result["failed"] is True
    assert "within 20000 slots" in result["msg"]
    assert "slots behind the tip" in next(iter(result["rejected"].values()))


def test_slow_source_rejected_when_measured(served, dest, tmp_path):
    with NginxSnapshotServer(served["root"], full=served["full"]) as fast, NginxSnapshotServer(
        served["root"], full=served["full"], rate="64k"
    ) as slow:
        result = run_module(
            tmp_path, args_for(dest, [fast.url, slow.url], incremental=False, min_speed=2 * MIB)
        )
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
        result = run_module(tmp_path, args)
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
        result = run_module(tmp_path, args_for(dest, [a.url], incremental=False))
    assert result["failed"] is True
    assert "zstd -t" in result["msg"] and "discarded" in result["msg"]
    assert os.listdir(dest) == []


def test_checksum_from_source(served, dest, tmp_path):
    full = served["root"] / served["full"]
    (served["root"] / (served["full"] + ".sha256")).write_text(f"{'0' * 64}  {served['full']}\n")
    with NginxSnapshotServer(served["root"], full=served["full"]) as a:
        bad = run_module(tmp_path, args_for(dest, [a.url], incremental=False))
        (served["root"] / (served["full"] + ".sha256")).write_text(f"{sha(full)}  {served['full']}\n")
        good = run_module(tmp_path, args_for(dest, [a.url], incremental=False))
    assert bad["failed"] is True and "does not match" in bad["msg"]
    assert good["downloads"][0]["sha256"] == sha(full)


def test_disk_too_small(served, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        with NginxSnapshotServer(served["root"], full=served["full"]) as a:
            result = run_module(tmp_path, args_for(small, [a.url], incremental=False))
        assert result["failed"] is True
        assert "bytes free" in result["msg"] and result["needed_bytes"] > result["free_bytes"]
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


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
        proc = subprocess.Popen(
            [sys.executable, MODULE, str(write_args(tmp_path, args))],
            env=module_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
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
        proc.wait()
        assert done >= 6 * MIB, "the download did not progress"
        assert tmp_file.exists() and not (dest / name).exists()
        result = run_module(tmp_path, args)
    assert result.get("failed") is not True, result
    stats = result["downloads"][0]
    size = (root / name).stat().st_size
    assert stats["resumed_bytes"] >= done
    assert stats["fetched_bytes"] == size - stats["resumed_bytes"]  # only the missing ranges
    assert stats["refetched_bytes"] == 0
    assert sha(dest / name) == sha(root / name)
    assert not tmp_file.exists() and not ctl.exists()


def test_bad_arguments(dest, tmp_path):
    result = run_module(tmp_path, args_for(dest, ["http://127.0.0.1:9"], keep=0))
    assert result["failed"] is True and "keep must be 1 or more" in result["msg"]
    result = run_module(tmp_path, args_for(tmp_path / "missing", ["http://127.0.0.1:9"]))
    assert result["failed"] is True and "does not exist" in result["msg"]
