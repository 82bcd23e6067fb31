"""strata.ops.snapshot_freshness against real files and the STAND-IN Solana JSON-RPC server.

The RPC node is a stand-in (tests/testbed/solana_rpc.py): a real validator cannot run here. It
speaks the documented getGenesisHash / getSlot / getHighestSnapshotSlot shapes, plays any cluster
(its genesis hash) and can fail on purpose (garbage, JSON-RPC error, HTTP 500, slow answers).
The module runs as a subprocess, as Ansible runs it, and every bad input also through
``ansible`` itself (adhoc_result): a clean failure, never a crash.
"""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))

from solana_rpc import DEVNET_GENESIS, MAINNET_GENESIS, SolanaRpcStandIn  # noqa: E402

from . import conftest  # noqa: E402
from .conftest import adhoc_result, assert_clean_failure  # noqa: E402

H = "7jMmeXZSNcWPrB2RsTdeXfXrsyW5c1BfPjqoLW2X5T7V"
TIP = 350_000_000  # processed slot at start; finalized is 32 behind


def run_module(args, check_mode=False):
    return conftest.run_module("snapshot_freshness", args, check_mode=check_mode)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def snapdir(tmp_path):
    d = tmp_path / "snapshots"
    d.mkdir()
    return d


def touch(d, name, size=64):
    (d / name).write_bytes(b"\0" * size)


@pytest.fixture
def rpc():
    with SolanaRpcStandIn(
        start_slot=TIP, highest_snapshot={"full": TIP - 40_000, "incremental": TIP - 200}
    ) as r:
        yield r


def test_fresh_through_incremental(snapdir, tmp_path, rpc):
    full = TIP - 60_000
    touch(snapdir, f"snapshot-{full}-{H}.tar.zst")
    touch(snapdir, f"incremental-snapshot-{full}-{TIP - 1_000}-{H}.tar.zst")
    result = run_module({"snapshot_dir": str(snapdir), "rpc_endpoints": [rpc.url]})
    assert result["verdict"] == "fresh", result
    assert result["changed"] is False
    assert result["full_slot"] == full and result["incremental_slot"] == TIP - 1_000
    assert TIP - 32 <= result["tip_slot"] <= TIP + 10
    assert result["lag_slots"] == result["tip_slot"] - (TIP - 1_000)
    assert result["full_lag_slots"] > 20_000  # the full archive alone would be stale
    assert result["best_remote_snapshot"]["incremental"] == TIP - 200
    assert result["endpoints_answered"] == [rpc.url]
    assert result["genesis_hash"] == MAINNET_GENESIS
    assert result["msg"].startswith(f"fresh: local slot {TIP - 1_000} is ")


def test_stale_full_only(snapdir, tmp_path, rpc):
    touch(snapdir, f"snapshot-{TIP - 60_000}-{H}.tar.zst")
    result = run_module({"snapshot_dir": str(snapdir), "rpc_endpoints": [rpc.url]}, check_mode=True)
    assert result["verdict"] == "stale"
    assert result["lag_slots"] > 20_000 and result["incremental_slot"] is None


def test_incremental_without_base_is_not_counted(snapdir, tmp_path, rpc):
    orphan = f"incremental-snapshot-{TIP - 100_000}-{TIP - 500}-{H}.tar.zst"
    touch(snapdir, orphan)
    touch(snapdir, f"snapshot-{TIP - 50_000}-{H}.tar.zst")
    result = run_module({"snapshot_dir": str(snapdir), "rpc_endpoints": [rpc.url]})
    assert result["verdict"] == "stale"
    assert result["local_slot"] == TIP - 50_000
    assert result["orphan_incrementals"] == [orphan]


def test_missing_when_only_orphans_and_malformed(snapdir, tmp_path, rpc):
    touch(snapdir, f"incremental-snapshot-100-200-{H}.tar.zst")
    touch(snapdir, f"snapshot-12x-{H}.tar.zst")
    touch(snapdir, f"snapshot-{TIP}-{H}.tar.zst.partial")
    touch(snapdir, f".strata-partial-snapshot-{TIP}-{H}.tar.zst")
    touch(snapdir, f"snapshot-{TIP - 10}-{H}.tar.bz2")  # agave no longer reads .tar.bz2
    result = run_module({"snapshot_dir": str(snapdir), "rpc_endpoints": [rpc.url]})
    assert result["verdict"] == "missing"
    reasons = {u["name"]: u["reason"] for u in result["not_used"]}
    assert set(reasons) == set(os.listdir(snapdir))
    assert "as agave expects" in reasons[f"snapshot-12x-{H}.tar.zst"]
    assert "only .tar.zst and .tar.lz4" in reasons[f"snapshot-{TIP - 10}-{H}.tar.bz2"]
    assert "(slot 100) is not present" in reasons[f"incremental-snapshot-100-200-{H}.tar.zst"]
    assert "download in progress" in reasons[f".strata-partial-snapshot-{TIP}-{H}.tar.zst"]


def test_all_endpoints_down(snapdir, tmp_path):
    touch(snapdir, f"snapshot-100-{H}.tar.zst")
    down = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    result = run_module({"snapshot_dir": str(snapdir), "rpc_endpoints": down, "timeout": 1})
    assert result["verdict"] == "unknown"
    assert result["tip_slot"] is None and result["lag_slots"] is None
    assert result["endpoints_failed"] == down
    assert all("refused" in e["error"].lower() for e in result["endpoints"])


@pytest.mark.parametrize(
    ("mode", "fragment"),
    [
        ("garbage", "not JSON"),
        ("error", "-32005"),
        ("http500", "HTTP 500"),
        ("wrong_type", "not a slot number"),
    ],
)
def test_bad_endpoint_is_reported_and_good_one_used(snapdir, tmp_path, rpc, mode, fragment):
    touch(snapdir, f"snapshot-{TIP - 5_000}-{H}.tar.zst")
    with SolanaRpcStandIn(start_slot=TIP + 1_000_000, mode=mode) as bad:
        result = run_module({"snapshot_dir": str(snapdir), "rpc_endpoints": [bad.url, rpc.url]})
    assert result["verdict"] == "fresh", result  # the bad node's higher slot was not used
    assert result["endpoints_failed"] == [bad.url]
    assert fragment in result["endpoints"][0]["error"]
    # through module.warn (ansible-core 2.19 gives the raw module result structured warnings)
    assert [w["event"]["msg"] for w in result["warnings"]] == [
        "RPC endpoints without a usable answer, the tip is from the others: "
        + result["endpoints"][0]["error"]
    ]


def test_slow_endpoints_asked_concurrently(snapdir, tmp_path, rpc):
    touch(snapdir, f"snapshot-{TIP - 5_000}-{H}.tar.zst")
    args = {"snapshot_dir": str(snapdir), "rpc_endpoints": [rpc.url], "timeout": 1}
    started = time.monotonic()
    run_module(args)
    baseline = time.monotonic() - started  # the module's own start, on this (shared) machine now
    with SolanaRpcStandIn(mode="slow", delay=4) as a, SolanaRpcStandIn(
        mode="slow", delay=4
    ) as b, SolanaRpcStandIn(mode="slow", delay=4) as c:
        started = time.monotonic()
        result = run_module(dict(args, rpc_endpoints=[a.url, b.url, c.url, rpc.url]))
        elapsed = time.monotonic() - started
    assert result["verdict"] == "fresh"
    assert result["endpoints_failed"] == [a.url, b.url, c.url]
    assert "timed out" in result["endpoints"][0]["error"]
    assert elapsed - baseline < 2.0  # one timeout for all (one by one: 3 s and more)


def test_node_without_snapshot_method(snapdir, tmp_path):
    touch(snapdir, f"snapshot-{TIP - 5_000}-{H}.tar.zst")
    with SolanaRpcStandIn(start_slot=TIP, offer_snapshot_slot=False) as old:
        result = run_module({"snapshot_dir": str(snapdir), "rpc_endpoints": [old.url]})
    assert result["verdict"] == "fresh"
    assert result["best_remote_snapshot"] is None
    assert "-32601" in result["endpoints"][0]["highest_snapshot_error"]


def test_no_endpoints_given(snapdir, tmp_path):
    touch(snapdir, f"snapshot-100-{H}.tar.zst")
    assert run_module({"snapshot_dir": str(snapdir)})["verdict"] == "unknown"


def test_missing_directory_fails_with_advice(tmp_path):
    result = run_module({"snapshot_dir": str(tmp_path / "nope")})
    assert result["failed"] is True
    assert "does not exist" in result["msg"] and "layer 4" in result["msg"]


def test_negative_limit_fails(snapdir, tmp_path):
    result = run_module({"snapshot_dir": str(snapdir), "max_lag_slots": -1})
    assert result["failed"] is True and "max_lag_slots" in result["msg"]


def test_through_ansible_cli(snapdir, rpc):
    touch(snapdir, f"snapshot-{TIP - 5_000}-{H}.tar.zst")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"))
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    args = json.dumps({"snapshot_dir": str(snapdir), "rpc_endpoints": [rpc.url]})
    proc = subprocess.run(
        [ansible, "localhost", "-c", "local", "--check", "-m", "strata.ops.snapshot_freshness", "-a", args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fresh" in proc.stdout


def test_newest_archive_in_agaves_remote_directory_counts(snapdir, tmp_path, rpc):
    (snapdir / "remote").mkdir()
    touch(snapdir / "remote", f"snapshot-{TIP - 5_000}-{H}.tar.zst")
    result = run_module({"snapshot_dir": str(snapdir), "rpc_endpoints": [rpc.url]})
    assert result["verdict"] == "fresh", result
    assert result["full_snapshot"]["path"] == str(snapdir / "remote" / f"snapshot-{TIP - 5_000}-{H}.tar.zst")


def test_hash_of_any_length_agave_parses(snapdir, tmp_path, rpc):
    touch(snapdir, f"snapshot-{TIP - 5_000}-{'1' * 32}.tar.zst")  # Hash::default(), 32 characters
    result = run_module({"snapshot_dir": str(snapdir), "rpc_endpoints": [rpc.url]})
    assert result["verdict"] == "fresh" and result["full_slot"] == TIP - 5_000


def test_local_slot_above_the_tip_is_never_fresh(snapdir, rpc):
    touch(snapdir, f"snapshot-{TIP - 5_000}-{H}.tar.zst")
    touch(snapdir, f"incremental-snapshot-{TIP - 5_000}-{TIP + 1_000}-{H}.tar.zst")
    result = adhoc_result("snapshot_freshness", {"snapshot_dir": str(snapdir), "rpc_endpoints": [rpc.url]})
    assert_clean_failure(result)
    assert result["verdict"] == "ahead" and result["lag_slots"] < 0
    assert result["msg"].startswith(f"ahead: the local slot {TIP + 1_000} is ")
    assert f"above the tip {result['tip_slot']} of {rpc.url}" in result["msg"]


def test_endpoints_of_two_clusters_are_an_error(snapdir, rpc):
    touch(snapdir, f"snapshot-{TIP - 5_000}-{H}.tar.zst")
    with SolanaRpcStandIn(start_slot=TIP + 5_000_000, genesis_hash=DEVNET_GENESIS) as dev:
        result = adhoc_result(
            "snapshot_freshness", {"snapshot_dir": str(snapdir), "rpc_endpoints": [rpc.url, dev.url]}
        )
    assert_clean_failure(result)
    assert "different clusters" in result["msg"]
    assert f"{rpc.url} answers {MAINNET_GENESIS}" in result["msg"]
    assert f"{dev.url} answers {DEVNET_GENESIS}" in result["msg"]


def test_newest_archive_empty_is_unusable(snapdir, rpc):
    touch(snapdir, f"snapshot-{TIP - 9_000}-{H}.tar.zst")
    touch(snapdir, f"snapshot-{TIP - 5_000}-{H}.tar.zst", size=0)  # agave would pick this one
    result = adhoc_result("snapshot_freshness", {"snapshot_dir": str(snapdir), "rpc_endpoints": [rpc.url]})
    assert_clean_failure(result)
    assert result["verdict"] == "unusable" and result["full_slot"] == TIP - 5_000
    assert str(snapdir / f"snapshot-{TIP - 5_000}-{H}.tar.zst") in result["msg"]
    assert "empty (0 bytes)" in result["msg"]


@pytest.mark.parametrize("endpoint", ["127.0.0.1:8899", "ftp://127.0.0.1:8899"])
def test_endpoint_without_http_scheme(snapdir, endpoint):
    touch(snapdir, f"snapshot-100-{H}.tar.zst")
    result = adhoc_result("snapshot_freshness", {"snapshot_dir": str(snapdir), "rpc_endpoints": [endpoint]})
    assert_clean_failure(result)
    assert result["msg"].startswith(f"rpc_endpoints: '{endpoint}': each entry must be an http:// or https://")
    assert "http://127.0.0.1:8899 or https://api.mainnet-beta.solana.com" in result["msg"]
