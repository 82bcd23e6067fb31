"""Unit tests for module_utils/snapshots/: archive names, directory scan, verdict, RPC answers."""

import io
import json
import os
import re

import pytest

from ansible_collections.strata.ops.plugins.module_utils import snapshots
from ansible_collections.strata.ops.plugins.module_utils.snapshots import fetch, freshness, names, rpc, scan

H = "7jMmeXZSNcWPrB2RsTdeXfXrsyW5c1BfPjqoLW2X5T7V"  # a base58 bank hash (44 characters)
ZERO = "1" * 32  # Hash::default(): 32 zero bytes, the shortest hash agave parses
GENESIS_A = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d"
GENESIS_B = "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (f"snapshot-348100000-{H}.tar.zst", ("full", 348100000, None, "tar.zst", H)),
        (f"snapshot-348100000-{H}.tar.lz4", ("full", 348100000, None, "tar.lz4", H)),
        (f"snapshot-7-{ZERO}.tar.zst", ("full", 7, None, "tar.zst", ZERO)),
        # u64::MAX written with a leading zero: 21 digits, which agave's u64 parse accepts
        (f"snapshot-018446744073709551615-{H}.tar.zst", ("full", 2**64 - 1, None, "tar.zst", H)),
        (
            f"incremental-snapshot-348100000-348125400-{H}.tar.zst",
            ("incremental", 348125400, 348100000, "tar.zst", H),
        ),
        # agave takes the name; a slot not after its base is flagged by the scan, not here
        (f"incremental-snapshot-200-100-{H}.tar.lz4", ("incremental", 100, 200, "tar.lz4", H)),
        (f"/srv/kind/solana/snapshots/snapshot-5-{H}.tar.zst", ("full", 5, None, "tar.zst", H)),
    ],
)
def test_parse_names_agave_loads(name, expected):
    info = names.parse_archive_name(name)
    assert (info["kind"], info["slot"], info["base_slot"], info["ext"], info["hash"]) == expected
    assert info["name"] == os.path.basename(name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (f"snapshot-abc-{H}.tar.zst", "as agave expects"),  # slot not a number
        (f"snapshot--{H}.tar.zst", "as agave expects"),  # no slot
        ("snapshot-100-%s.tar.zst" % ("0OIl" * 10), "not a 32-byte base58 hash"),  # outside base58
        ("snapshot-100-short.tar.zst", "not a 32-byte base58 hash"),
        ("snapshot-100-%s.tar.zst" % ("2" * 32), "not a 32-byte base58 hash"),  # base58, 23 bytes
        ("snapshot-100-%s.tar.zst" % ("z" * 44), "not a 32-byte base58 hash"),  # base58, 33 bytes
        ("snapshot-100-%s.tar.zst" % (H + "1"), "not a 32-byte base58 hash"),  # 45 characters
        (f"snapshot-18446744073709551616-{H}.tar.zst", "64 bits"),  # u64::MAX + 1
        (f"snapshot-1-{H}.tar.bz2", "only .tar.zst and .tar.lz4"),  # agave no longer reads these
        (f"snapshot-2-{H}.tar.gz", "only .tar.zst and .tar.lz4"),
        (f"snapshot-3-{H}.tar", "only .tar.zst and .tar.lz4"),
        (f"incremental-snapshot-1-2-{H}.tar.bz2", "only .tar.zst and .tar.lz4"),
        (f"snapshot-100-{H}.tar.xz", "only .tar.zst and .tar.lz4"),
        (f"snapshot-100-{H}.tar.zst\n", "as agave expects"),  # Rust's $ is the end, Python's is not
        ("snapshot-100.tar.zst", "as agave expects"),  # no hash
        (f"incremental-snapshot-100-{H}.tar.zst", "as agave expects"),  # incremental without base
    ],
)
def test_parse_names_agave_skips(name, reason):
    with pytest.raises(names.SnapshotNameError, match=re.escape(reason)):
        names.parse_archive_name(name)


@pytest.mark.parametrize("name", ["genesis.tar.bz2", "snapshots", "README", "ledger.tar", "remote"])
def test_parse_unrelated_names(name):
    assert names.parse_archive_name(name) is None


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
    assert names.is_temporary_name(name)


def _touch(directory, name, size=10):
    path = directory / name
    path.write_bytes(b"x" * size)
    return path


def _reasons(found):
    return {u["name"]: u["reason"] for u in found["not_used"]}


def test_scan_chooses_as_agave_and_says_why_the_rest_is_not_used(tmp_path):
    _touch(tmp_path, f"snapshot-1000-{H}.tar.zst")
    _touch(tmp_path, f"snapshot-900-{H}.tar.zst")
    _touch(tmp_path, f"incremental-snapshot-1000-1100-{H}.tar.zst")
    _touch(tmp_path, f"incremental-snapshot-1000-1050-{H}.tar.zst")
    _touch(tmp_path, f"incremental-snapshot-900-1200-{H}.tar.zst")  # base present, but not the newest full
    _touch(tmp_path, f"incremental-snapshot-800-1300-{H}.tar.zst")  # base missing
    _touch(tmp_path, f"snapshot-2000-{H}.tar.zst.partial")
    _touch(tmp_path, "snapshot-3000-bad.tar.zst")
    _touch(tmp_path, f"snapshot-5000-{H}.tar.bz2")  # newer, but agave no longer reads .tar.bz2
    (tmp_path / "tmp-snapshot-archive-77").mkdir()
    _touch(tmp_path, "genesis.tar.bz2")
    found = scan.scan_snapshot_dir(str(tmp_path))
    assert found["best_full"]["slot"] == 1000
    assert found["best_incremental"]["slot"] == 1100
    assert [i["slot"] for i in found["incremental"]] == [1200, 1100, 1050]
    assert [i["name"] for i in found["orphan_incrementals"]] == [f"incremental-snapshot-800-1300-{H}.tar.zst"]
    reasons = _reasons(found)
    assert set(reasons) == set(os.listdir(tmp_path)) - {
        f"snapshot-1000-{H}.tar.zst",
        f"incremental-snapshot-1000-1100-{H}.tar.zst",
    }
    assert reasons[f"snapshot-900-{H}.tar.zst"] == f"older than snapshot-1000-{H}.tar.zst"
    assert reasons[f"incremental-snapshot-1000-1050-{H}.tar.zst"].startswith(
        "older than incremental-snapshot-1000-1100"
    )
    assert "not on the newest one (slot 1000)" in reasons[f"incremental-snapshot-900-1200-{H}.tar.zst"]
    assert "(slot 800) is not present" in reasons[f"incremental-snapshot-800-1300-{H}.tar.zst"]
    assert "download in progress" in reasons[f"snapshot-2000-{H}.tar.zst.partial"]
    assert "download in progress" in reasons["tmp-snapshot-archive-77"]
    assert "base58" in reasons["snapshot-3000-bad.tar.zst"]
    assert "not .tar.bz2" in reasons[f"snapshot-5000-{H}.tar.bz2"]
    assert reasons["genesis.tar.bz2"] == "not a snapshot archive name"


def test_scan_reads_agaves_remote_directory(tmp_path):
    # agave also loads archives from <dir>/remote (SNAPSHOT_ARCHIVE_DOWNLOAD_DIR): a directory
    # holding its newest archives there is not "missing"
    (tmp_path / "remote").mkdir()
    _touch(tmp_path, f"snapshot-900-{H}.tar.zst")
    _touch(tmp_path / "remote", f"snapshot-1000-{H}.tar.zst")
    _touch(tmp_path / "remote", f"incremental-snapshot-1000-1100-{H}.tar.zst")
    found = scan.scan_snapshot_dir(str(tmp_path))
    assert found["best_full"]["path"] == str(tmp_path / "remote" / f"snapshot-1000-{H}.tar.zst")
    assert found["best_incremental"]["slot"] == 1100
    assert [u["name"] for u in found["not_used"]] == [f"snapshot-900-{H}.tar.zst"]


def test_scan_only_orphan_incremental(tmp_path):
    _touch(tmp_path, f"incremental-snapshot-800-1300-{H}.tar.zst")
    found = scan.scan_snapshot_dir(str(tmp_path))
    assert found["best_full"] is None and found["best_incremental"] is None
    assert len(found["orphan_incrementals"]) == 1


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p.write_bytes(b""), "empty (0 bytes)"),
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: p.symlink_to(p.parent / "gone"), "cannot be read"),
    ],
)
def test_scan_takes_the_newest_name_even_when_it_cannot_be_loaded(tmp_path, make, problem):
    # agave chooses by name only: a broken newest archive is its choice, not the next one
    _touch(tmp_path, f"snapshot-900-{H}.tar.zst")
    make(tmp_path / f"snapshot-1000-{H}.tar.zst")
    found = scan.scan_snapshot_dir(str(tmp_path))
    assert found["best_full"]["slot"] == 1000
    assert found["best_full"]["problem"].startswith(problem)


def test_scan_flags_an_incremental_not_after_its_base(tmp_path):
    _touch(tmp_path, f"snapshot-1000-{H}.tar.zst")
    _touch(tmp_path, f"incremental-snapshot-1000-1000-{H}.tar.zst")
    best = scan.scan_snapshot_dir(str(tmp_path))["best_incremental"]
    assert best["problem"] == "its slot is not after its base slot"


def test_scan_same_slot_twice(tmp_path):
    _touch(tmp_path, f"snapshot-1000-{H}.tar.zst")
    _touch(tmp_path, f"snapshot-1000-{ZERO}.tar.lz4")
    found = scan.scan_snapshot_dir(str(tmp_path))
    other = found["not_used"][0]
    assert found["best_full"]["slot"] == 1000 and len(found["not_used"]) == 1
    assert (
        other["reason"]
        == f"same slot as {found['best_full']['name']}: agave takes one of them by directory order"
    )


def test_report_unusable_names_the_file_agave_would_load(tmp_path):
    _touch(tmp_path, f"snapshot-900-{H}.tar.zst")
    (tmp_path / f"snapshot-1000-{H}.tar.zst").write_bytes(b"")
    report = freshness.freshness_report(str(tmp_path), [])
    assert report["verdict"] == "unusable" and report["verdict"] in freshness.FAILING_VERDICTS
    assert report["full_snapshot"]["problem"] == "empty (0 bytes)"
    assert str(tmp_path / f"snapshot-1000-{H}.tar.zst") in report["msg"] and "remove" in report["msg"]


@pytest.mark.parametrize(
    ("local", "tip", "limit", "verdict", "lag"),
    [
        (None, 1000, 20000, "missing", None),
        (None, None, 20000, "missing", None),
        (1000, None, 20000, "unknown", None),
        (100000, 120000, 20000, "fresh", 20000),  # exactly at the limit
        (100000, 120001, 20000, "stale", 20001),
        (130000, 120000, 20000, "ahead", -10000),  # a local slot above the tip is never fresh
        (120001, 120000, 20000, "ahead", -1),
        (5, 5, 0, "fresh", 0),
    ],
)
def test_verdict(local, tip, limit, verdict, lag):
    assert freshness.freshness_verdict(local, tip, limit) == (verdict, lag)


def test_verdict_rejects_negative_limit():
    with pytest.raises(snapshots.SnapshotError):
        freshness.freshness_verdict(1, 2, -1)


def _post(answers):
    """An HTTP POST stand-in answering each method from a dict (bytes, dict, or exception)."""

    def post(url, body, timeout):
        method = json.loads(body)["method"]
        answer = answers[method]
        if isinstance(answer, Exception):
            raise answer
        return io.BytesIO(answer if isinstance(answer, bytes) else json.dumps(answer).encode())

    return post


def _answers(**extra):
    base = {
        "getGenesisHash": {"jsonrpc": "2.0", "id": 1, "result": GENESIS_A},
        "getSlot": {"jsonrpc": "2.0", "id": 1, "result": 123},
    }
    base.update(extra)
    return base


def test_query_endpoint_ok_with_snapshot_slot():
    entry = rpc.query_endpoint(
        "http://rpc",
        post=_post(
            _answers(
                getHighestSnapshotSlot={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "result": {"full": 100, "incremental": 110},
                }
            )
        ),
    )
    assert entry["ok"] and entry["slot"] == 123 and entry["genesis_hash"] == GENESIS_A
    assert entry["highest_snapshot"] == {"full": 100, "incremental": 110}


def test_query_endpoint_method_not_offered():
    entry = rpc.query_endpoint(
        "http://rpc",
        post=_post(
            _answers(
                getHighestSnapshotSlot={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "error": {"code": -32601, "message": "nope"},
                }
            )
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
    entry = rpc.query_endpoint("http://rpc", post=_post(_answers(getSlot=answer)))
    assert entry["ok"] is False and entry["slot"] is None
    assert fragment in entry["error"]
    assert entry["error"].startswith("http://rpc: ")  # which of several endpoints said it


@pytest.mark.parametrize("genesis", [123, "not-base58!", "2" * 32, None])
def test_query_endpoint_bad_genesis_hash(genesis):
    entry = rpc.query_endpoint(
        "http://rpc", post=_post(_answers(getGenesisHash={"jsonrpc": "2.0", "id": 1, "result": genesis}))
    )
    assert entry["ok"] is False and "getGenesisHash answered" in entry["error"]


def _entry(url, ok, slot, genesis=GENESIS_A, highest=None):
    return {
        "url": url,
        "ok": ok,
        "slot": slot,
        "genesis_hash": genesis,
        "highest_snapshot": highest,
        "error": None,
    }


def test_tip_and_best_remote():
    entries = [
        _entry("a", True, 10, highest={"full": 5, "incremental": None}),
        _entry("b", False, None, genesis=None),
        _entry("c", True, 12, highest={"full": 4, "incremental": 9}),
    ]
    assert rpc.cluster_tip(entries) == 12
    assert rpc.best_remote_snapshot(entries) == {"full": 4, "incremental": 9, "slot": 9, "endpoint": "c"}
    assert rpc.cluster_tip([entries[1]]) is None
    assert rpc.best_remote_snapshot([entries[1]]) is None


def test_tip_refuses_endpoints_of_different_clusters():
    # the highest slot of two clusters is no tip at all
    entries = [
        _entry("http://a", True, 10),
        _entry("http://b", True, 900, genesis=GENESIS_B),
        _entry("http://c", True, 11),
    ]
    with pytest.raises(snapshots.SnapshotError) as err:
        rpc.cluster_tip(entries)
    assert "different clusters" in err.value.msg
    assert f"http://a, http://c answers {GENESIS_A}" in err.value.msg
    assert f"http://b answers {GENESIS_B}" in err.value.msg


def test_failed_endpoints_warning_only_when_others_answered():
    ok, bad = _entry("a", True, 10), dict(_entry("b", False, None), error="b: timed out")
    assert rpc.failed_endpoints_warning([ok, bad]) == (
        "RPC endpoints without a usable answer, the tip is from the others: b: timed out"
    )
    assert rpc.failed_endpoints_warning([ok]) is None
    assert rpc.failed_endpoints_warning([bad]) is None  # then the verdict itself says so


@pytest.mark.parametrize(
    "url", ["127.0.0.1:8899", "localhost:8899", "ftp://mirror/a.tar.zst", "http://", "http://h:0"]
)
def test_check_urls_says_what_form_is_expected(url):
    with pytest.raises(snapshots.SnapshotError) as err:
        rpc.check_urls("rpc_endpoints", ["http://127.0.0.1:8899", url])
    assert err.value.msg.startswith(f"rpc_endpoints: {url!r}:")
    assert "http://127.0.0.1:8899 or https://" in err.value.msg


def _candidate(kind, slot, base=None, source="http://m", length=100):
    name = (
        f"snapshot-{slot}-{H}.tar.zst"
        if kind == "full"
        else f"incremental-snapshot-{base}-{slot}-{H}.tar.zst"
    )
    return dict(
        kind=kind,
        slot=slot,
        base_slot=base,
        name=name,
        ext="tar.zst",
        source=source,
        url=f"{source}/{name}",
        length=length,
        ranges=True,
    )


def test_plan_refuses_archives_above_a_checked_tip():
    full, inc = _candidate("full", 1000), _candidate("incremental", 1100, base=1000)
    plan, rejected, kinds = fetch.plan_fetch([full, inc], 1050, 20000, 0, {})
    assert plan is None and kinds == {"ahead"}
    assert rejected[inc["url"]] == "slot 1100 is above the cluster tip 1050"
    plan, _rejected, _kinds = fetch.plan_fetch([full, inc], 1100, 20000, 0, {})
    assert plan["effective_slot"] == 1100


def test_plan_without_a_checked_tip_measures_against_the_newest_offer():
    old, new = _candidate("full", 1000, source="http://a"), _candidate("full", 50000, source="http://b")
    plan, rejected, kinds = fetch.plan_fetch([old, new], 50000, 20000, 0, {}, tip_checked=False)
    assert plan["full"]["slot"] == 50000 and kinds == {"behind"}
    assert rejected[old["url"]] == "slot 1000 is 49000 slots behind the newest archive on offer (slot 50000)"


def test_no_plan_message_carries_the_reasons():
    errors = {
        "http://a": ["http://a/snapshot.tar.bz2: expected a redirect to a snapshot archive, got HTTP 404"]
    }
    msg = fetch.no_plan_message([], errors, {}, set())
    assert msg.startswith(
        "no source offers a snapshot archive: http://a: http://a/snapshot.tar.bz2: expected"
    )
    assert "fix the failing sources" in msg and "None" not in msg
    many = dict((f"http://m{i}/x", "slot 1 is 30000 slots behind the tip 30001") for i in range(8))
    msg = fetch.no_plan_message([1] * 8, {}, many, {"behind"})
    assert "and 2 more (see source_errors and rejected)" in msg and "raise max_lag_slots" in msg


def test_report_missing_dir(tmp_path):
    with pytest.raises(snapshots.SnapshotError, match="does not exist"):
        freshness.freshness_report(str(tmp_path / "nope"), [])


def test_prune_keeps_the_newest_and_leaves_directories_alone(tmp_path):
    for slot in (1000, 900, 800):
        _touch(tmp_path, f"snapshot-{slot}-{H}.tar.zst")
    _touch(tmp_path, f"incremental-snapshot-800-850-{H}.tar.zst")
    (tmp_path / f"snapshot-700-{H}.tar.zst").mkdir()  # agave's rule counts it; deleting is not ours
    warnings = []
    deleted = fetch.prune_archives(str(tmp_path), 2, warn=warnings.append)
    assert deleted == [f"incremental-snapshot-800-850-{H}.tar.zst", f"snapshot-800-{H}.tar.zst"]
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"snapshot-1000-{H}.tar.zst", f"snapshot-900-{H}.tar.zst", f"snapshot-700-{H}.tar.zst"]
    )
    assert warnings == []
