"""Unit tests for module_utils/snapshots.py: archive names, directory scan, verdict, RPC answers."""

import io
import json
import os

import pytest

from ansible_collections.strata.ops.plugins.module_utils import snapshots as s

H = "7jMmeXZSNcWPrB2RsTdeXfXrsyW5c1BfPjqoLW2X5T7V"  # a base58 bank hash (44 characters)


@pytest.mark.parametrize(
    ("name", "kind", "slot", "base", "ext"),
    [
        (f"snapshot-348100000-{H}.tar.zst", "full", 348100000, None, "tar.zst"),
        (f"snapshot-348100000-{H}.tar.lz4", "full", 348100000, None, "tar.lz4"),
        (f"snapshot-1-{H}.tar.bz2", "full", 1, None, "tar.bz2"),
        (f"snapshot-2-{H}.tar.gz", "full", 2, None, "tar.gz"),
        (f"snapshot-3-{H}.tar", "full", 3, None, "tar"),
        (
            f"incremental-snapshot-348100000-348125400-{H}.tar.zst",
            "incremental",
            348125400,
            348100000,
            "tar.zst",
        ),
        (f"/srv/kind/solana/snapshots/snapshot-5-{H}.tar.zst", "full", 5, None, "tar.zst"),
    ],
)
def test_parse_valid_names(name, kind, slot, base, ext):
    info = s.parse_archive_name(name)
    assert (info["kind"], info["slot"], info["base_slot"], info["ext"], info["hash"]) == (
        kind,
        slot,
        base,
        ext,
        H,
    )
    assert info["name"] == os.path.basename(name)


@pytest.mark.parametrize(
    "name",
    [
        f"snapshot-abc-{H}.tar.zst",  # slot not a number
        f"snapshot--{H}.tar.zst",  # no slot
        "snapshot-100-%s.tar.zst" % ("0OIl" * 10),  # hash outside base58
        "snapshot-100-short.tar.zst",  # hash too short
        f"snapshot-100-{H}.tar.xz",  # unknown compression
        "snapshot-100.tar.zst",  # no hash
        f"incremental-snapshot-100-{H}.tar.zst",  # incremental without base
        f"incremental-snapshot-200-100-{H}.tar.zst",  # slot before its base
        f"incremental-snapshot-200-200-{H}.tar.zst",  # slot equal to its base
    ],
)
def test_parse_malformed_names(name):
    with pytest.raises(s.SnapshotNameError):
        s.parse_archive_name(name)


@pytest.mark.parametrize("name", ["genesis.tar.bz2", "snapshots", "README", "ledger.tar"])
def test_parse_unrelated_names(name):
    assert s.parse_archive_name(name) is None


@pytest.mark.parametrize(
    "name",
    [
        f".snapshot-1-{H}.tar.zst",
        f"snapshot-1-{H}.tar.zst.partial",
        f"snapshot-1-{H}.tar.zst.tmp",
        f"snapshot-1-{H}.tar.zst.aria2",
        "tmp-snapshot-archive-1234",
        f".strata-partial-snapshot-1-{H}.tar.zst.ctl",
    ],
)
def test_temporary_names(name):
    assert s.is_temporary_name(name)


def _touch(directory, name, size=10):
    path = directory / name
    path.write_bytes(b"x" * size)
    return path


def test_scan_counts_incremental_only_with_its_base(tmp_path):
    _touch(tmp_path, f"snapshot-1000-{H}.tar.zst")
    _touch(tmp_path, f"snapshot-900-{H}.tar.zst")
    _touch(tmp_path, f"incremental-snapshot-1000-1100-{H}.tar.zst")
    _touch(tmp_path, f"incremental-snapshot-1000-1050-{H}.tar.zst")
    _touch(tmp_path, f"incremental-snapshot-900-1200-{H}.tar.zst")  # base present, but not the newest full
    _touch(tmp_path, f"incremental-snapshot-800-1300-{H}.tar.zst")  # base missing
    _touch(tmp_path, f"snapshot-2000-{H}.tar.zst.partial")
    _touch(tmp_path, "snapshot-3000-bad.tar.zst")
    _touch(tmp_path, f"snapshot-4000-{H}.tar.zst", size=0)  # empty: never a snapshot
    (tmp_path / "tmp-snapshot-archive-77").mkdir()
    scan = s.scan_snapshot_dir(str(tmp_path))
    assert scan["best_full"]["slot"] == 1000
    assert scan["best_incremental"]["slot"] == 1100
    assert [i["slot"] for i in scan["incremental"]] == [1200, 1100, 1050]
    assert [i["name"] for i in scan["orphan_incrementals"]] == [f"incremental-snapshot-800-1300-{H}.tar.zst"]
    assert sorted(scan["malformed"]) == ["snapshot-3000-bad.tar.zst", f"snapshot-4000-{H}.tar.zst"]
    assert f"snapshot-2000-{H}.tar.zst.partial" in scan["ignored"]
    assert "tmp-snapshot-archive-77" in scan["ignored"]


def test_scan_only_orphan_incremental(tmp_path):
    _touch(tmp_path, f"incremental-snapshot-800-1300-{H}.tar.zst")
    scan = s.scan_snapshot_dir(str(tmp_path))
    assert scan["best_full"] is None and scan["best_incremental"] is None
    assert len(scan["orphan_incrementals"]) == 1


def test_scan_ignores_directory_with_archive_name(tmp_path):
    (tmp_path / (f"snapshot-5-{H}.tar.zst")).mkdir()
    scan = s.scan_snapshot_dir(str(tmp_path))
    assert scan["best_full"] is None
    assert scan["malformed"] == [f"snapshot-5-{H}.tar.zst"]


@pytest.mark.parametrize(
    ("local", "tip", "limit", "verdict", "lag"),
    [
        (None, 1000, 20000, "missing", None),
        (None, None, 20000, "missing", None),
        (1000, None, 20000, "unknown", None),
        (100000, 120000, 20000, "fresh", 20000),  # exactly at the limit
        (100000, 120001, 20000, "stale", 20001),
        (130000, 120000, 20000, "fresh", -10000),  # endpoints behind the local snapshot
        (5, 5, 0, "fresh", 0),
    ],
)
def test_verdict(local, tip, limit, verdict, lag):
    assert s.freshness_verdict(local, tip, limit) == (verdict, lag)


def test_verdict_rejects_negative_limit():
    with pytest.raises(s.SnapshotError):
        s.freshness_verdict(1, 2, -1)


def _post(answers):
    """An HTTP POST stand-in answering each method from a dict (bytes, dict, or exception)."""

    def post(url, body, timeout):
        method = json.loads(body)["method"]
        answer = answers[method]
        if isinstance(answer, Exception):
            raise answer
        return io.BytesIO(answer if isinstance(answer, bytes) else json.dumps(answer).encode())

    return post


def test_query_endpoint_ok_with_snapshot_slot():
    entry = s.query_endpoint(
        "http://rpc",
        post=_post(
            {
                "getSlot": {"jsonrpc": "2.0", "id": 1, "result": 123},
                "getHighestSnapshotSlot": {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "result": {"full": 100, "incremental": 110},
                },
            }
        ),
    )
    assert entry["ok"] and entry["slot"] == 123
    assert entry["highest_snapshot"] == {"full": 100, "incremental": 110}


def test_query_endpoint_method_not_offered():
    entry = s.query_endpoint(
        "http://rpc",
        post=_post(
            {
                "getSlot": {"jsonrpc": "2.0", "id": 1, "result": 123},
                "getHighestSnapshotSlot": {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "error": {"code": -32601, "message": "nope"},
                },
            }
        ),
    )
    assert entry["ok"] and entry["highest_snapshot"] is None
    assert "-32601" in entry["highest_snapshot_error"]


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (b"<html>bad gateway</html>", "not JSON"),
        (b"[1, 2]", "not a JSON-RPC object"),
        ({"jsonrpc": "2.0", "id": 1}, "neither result nor error"),
        ({"jsonrpc": "2.0", "id": 1, "result": "123"}, "not a slot number"),
        ({"jsonrpc": "2.0", "id": 1, "result": -5}, "not a slot number"),
        ({"jsonrpc": "2.0", "id": 1, "result": True}, "not a slot number"),
        ({"jsonrpc": "2.0", "id": 1, "error": {"code": -32005, "message": "Node is behind"}}, "-32005"),
        (OSError("connection refused"), "connection refused"),
    ],
)
def test_query_endpoint_bad_answers(answer, fragment):
    entry = s.query_endpoint("http://rpc", post=_post({"getSlot": answer}))
    assert entry["ok"] is False and entry["slot"] is None
    assert fragment in entry["error"]


def test_tip_and_best_remote():
    entries = [
        {"url": "a", "ok": True, "slot": 10, "highest_snapshot": {"full": 5, "incremental": None}},
        {"url": "b", "ok": False, "slot": None, "highest_snapshot": None},
        {"url": "c", "ok": True, "slot": 12, "highest_snapshot": {"full": 4, "incremental": 9}},
    ]
    assert s.cluster_tip(entries) == 12
    assert s.best_remote_snapshot(entries) == {"full": 4, "incremental": 9, "slot": 9, "endpoint": "c"}
    assert s.cluster_tip([entries[1]]) is None
    assert s.best_remote_snapshot([entries[1]]) is None


def test_report_missing_dir(tmp_path):
    with pytest.raises(s.SnapshotError, match="does not exist"):
        s.freshness_report(str(tmp_path / "nope"), [])
