# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The freshness verdict of a snapshot directory against the cluster's tip (strata.ops.snapshot_freshness)."""

import os

from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument
from ansible_collections.strata.ops.plugins.module_utils.snapshots import SnapshotError
from ansible_collections.strata.ops.plugins.module_utils.snapshots.rpc import (
    best_remote_snapshot,
    check_urls,
    cluster_tip,
    failed_endpoints_warning,
    query_endpoints,
)
from ansible_collections.strata.ops.plugins.module_utils.snapshots.scan import scan_snapshot_dir

DEFAULT_MAX_LAG_SLOTS = 20000

VERDICT_FRESH = "fresh"

VERDICT_STALE = "stale"

VERDICT_MISSING = "missing"

VERDICT_UNKNOWN = "unknown"

VERDICT_AHEAD = "ahead"  # the local slot is above the tip: wrong cluster, lagging RPC or wrong directory

VERDICT_UNUSABLE = "unusable"  # agave would load an archive that cannot be loaded

FAILING_VERDICTS = (VERDICT_AHEAD, VERDICT_UNUSABLE)


def freshness_verdict(local_slot, tip_slot, max_lag_slots=DEFAULT_MAX_LAG_SLOTS):
    """Return (verdict, lag) for the newest usable local slot against the cluster tip.

    missing: no usable local snapshot; unknown: no tip (no endpoint answered); ahead: the
    local slot is above the tip (never fresh: the endpoints lag or serve another cluster, or
    the directory holds another cluster's snapshots); fresh: tip - local <= max_lag_slots;
    stale otherwise. lag is None unless both are known.
    """
    if max_lag_slots < 0:
        raise SnapshotError(f"max_lag_slots must be 0 or more, got {max_lag_slots}")
    if local_slot is None:
        return VERDICT_MISSING, None
    if tip_slot is None:
        return VERDICT_UNKNOWN, None
    lag = tip_slot - local_slot
    if lag < 0:
        return VERDICT_AHEAD, lag
    return (VERDICT_FRESH if lag <= max_lag_slots else VERDICT_STALE), lag


def freshness_report(
    snapshot_dir,
    endpoints,
    *,
    max_lag_slots=DEFAULT_MAX_LAG_SLOTS,
    timeout=5.0,
    commitment="finalized",
    warn=None,
):
    """Everything snapshot_freshness returns (read-only); ``msg`` says the verdict in words."""
    if not os.path.isdir(snapshot_dir):
        raise SnapshotError(
            f"snapshot_dir {snapshot_dir} does not exist or is not a directory: create it (layer 4,"
            " workload_storage) or fix the path"
        )
    check_urls("rpc_endpoints", endpoints)
    try:
        scan = scan_snapshot_dir(snapshot_dir)
    except OSError as exc:
        raise SnapshotError(f"cannot list {snapshot_dir}: {exc}") from None
    entries = query_endpoints(endpoints, timeout=timeout, commitment=commitment) if endpoints else []
    tip = cluster_tip(entries)
    warning = failed_endpoints_warning(entries)
    if warning and warn:
        warn(warning)
    full = scan["best_full"]
    incremental = scan["best_incremental"]
    full_slot = full["slot"] if full else None
    incremental_slot = incremental["slot"] if incremental else None
    local_slot = incremental_slot if incremental_slot is not None else full_slot
    verdict, lag = freshness_verdict(local_slot, tip, max_lag_slots)
    broken = [a for a in (full, incremental) if a and a["problem"]]
    if broken:
        verdict = VERDICT_UNUSABLE
    full_lag = tip - full_slot if tip is not None and full_slot is not None else None
    answered = [e for e in entries if e["ok"]]
    report = dict(
        changed=False,
        verdict=verdict,
        snapshot_dir=snapshot_dir,
        local_slot=local_slot,
        full_slot=full_slot,
        incremental_slot=incremental_slot,
        full_snapshot=_public(full),
        incremental_snapshot=_public(incremental),
        tip_slot=tip,
        genesis_hash=answered[0]["genesis_hash"] if answered else None,
        lag_slots=lag,
        full_lag_slots=full_lag,
        max_lag_slots=max_lag_slots,
        best_remote_snapshot=best_remote_snapshot(entries),
        endpoints=entries,
        endpoints_answered=[e["url"] for e in answered],
        endpoints_failed=[e["url"] for e in entries if not e["ok"]],
        full_snapshots=[_public(i) for i in scan["full"]],
        incremental_snapshots=[_public(i) for i in scan["incremental"]],
        orphan_incrementals=[i["name"] for i in scan["orphan_incrementals"]],
        not_used=scan["not_used"],
    )
    report["msg"] = _verdict_message(report, broken)
    return report


def _verdict_message(report, broken):
    verdict, local, tip, lag = (report[k] for k in ("verdict", "local_slot", "tip_slot", "lag_slots"))
    entries, snapshot_dir = report["endpoints"], report["snapshot_dir"]
    if verdict == VERDICT_MISSING:
        return f"missing: {snapshot_dir} holds no full snapshot archive agave would load (see not_used)"
    if verdict == VERDICT_UNUSABLE:
        return (
            f"unusable: agave would load {broken[0]['path']} (the newest archive by name), but it is"
            f" {broken[0]['problem']}: remove or replace it, then run again"
        )
    if verdict == VERDICT_UNKNOWN:
        errors = "; ".join(e["error"] for e in entries) or "none given"
        return f"unknown: local slot {local}, but no RPC endpoint answered ({errors})"
    if verdict == VERDICT_AHEAD:
        answering = ", ".join(e["url"] for e in entries if e["ok"])
        return (
            f"ahead: the local slot {local} is {-lag} slots above the tip {tip} of {answering}:"
            " the endpoints lag or serve another cluster,"
            f" or {snapshot_dir} holds another cluster's snapshots;"
            " fix rpc_endpoints or snapshot_dir (a download does not help)"
        )
    max_lag_slots = report["max_lag_slots"]
    return f"{verdict}: local slot {local} is {lag} slots behind the tip {tip} (limit {max_lag_slots})"


def _public(info):
    if info is None:
        return None
    return dict(
        (k, info[k])
        for k in ("name", "path", "kind", "slot", "base_slot", "hash", "size", "problem")
        if k in info
    )


def run(params, warn):
    """strata.ops.snapshot_freshness: the report; a failing verdict (ahead, unusable) is an error
    whose details are the whole report."""
    if params["max_lag_slots"] < 0:
        max_lag_slots = params["max_lag_slots"]
        raise InvalidArgument(f"max_lag_slots must be 0 or more (got {max_lag_slots})")
    if params["timeout"] <= 0:
        raise InvalidArgument(f"timeout must be a positive number of seconds (got {params['timeout']})")
    report = freshness_report(
        params["snapshot_dir"],
        params["rpc_endpoints"],
        max_lag_slots=params["max_lag_slots"],
        timeout=params["timeout"],
        commitment=params["commitment"],
        warn=warn,
    )
    if report["verdict"] in FAILING_VERDICTS:
        details = dict(report)
        raise SnapshotError(details.pop("msg"), error_kind=report["verdict"], **details)
    return report
