"""strata.ops.zfs_snapshot's plan and validation as pure data (the real zfs runs in
tests/integration/test_flow_summaries.py and the bad-input matrix)."""

from ansible_collections.strata.ops.plugins.module_utils.zfs import snapshot

PARAMS = {"datasets": ["tank/ledger"], "prefix": "strata-prewipe-", "stamp": "20260521T093500Z", "keep": 2}
OURS = [
    (100, "tank/ledger@strata-prewipe-20260101T000000Z"),
    (200, "tank/ledger@strata-prewipe-20260301T000000Z"),
]


def test_keep_counts_the_new_snapshot_and_spares_other_names():
    (item,) = snapshot.plan(PARAMS, {"tank/ledger": [(50, "tank/ledger@operator"), *OURS]})
    assert item["action"] == "taken"
    assert item["destroyed"] == ["tank/ledger@strata-prewipe-20260101T000000Z"]
    assert item["kept"] == [
        "tank/ledger@strata-prewipe-20260301T000000Z",
        "tank/ledger@strata-prewipe-20260521T093500Z",
    ]
    assert item["rollback"] == "zfs rollback tank/ledger@strata-prewipe-20260521T093500Z"


def test_no_keep_destroys_nothing_and_an_existing_name_is_not_taken_again():
    params = dict(PARAMS, keep=None, stamp="20260301T000000Z")
    (item,) = snapshot.plan(params, {"tank/ledger": OURS})
    assert item["action"] == "existed" and item["destroyed"] == []


def test_validation_names_each_problem():
    problems = snapshot.validate(dict(PARAMS, datasets=["tank/a@b"], prefix="bad/", keep=0))
    assert any("names a snapshot" in p for p in problems)
    assert any("snapshot name 'bad/20260521T093500Z'" in p for p in problems)
    assert any("keep=0" in p for p in problems)


def test_stamp_is_utc_and_sorts_as_time():
    assert snapshot.utc_stamp(0) == "19700101T000000Z"
    assert snapshot.utc_stamp(86400) > snapshot.utc_stamp(3600)
