# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The report's per-host sections beyond the layer rows, as data: how full the pools, datasets
and ramdisk are (storage_info with usage), the local snapshots against the tip with the last
download's rate history (snapshot_freshness and snapshot_fetch's status file), and the last
transfer, the checkpoints and runner isolation (their files on the host). Nothing here fails:
a read that went wrong is kept as ``error`` and shown."""

import json

# verdicts of snapshot_freshness, by how the page shows them
SNAPSHOT_OK = ("fresh",)
SNAPSHOT_BAD = ("stale", "ahead", "unusable")
# newest checkpoints kept per host (all are counted)
CHECKPOINTS_SHOWN = 3
# rate samples kept in report.json per host (snapshot_fetch keeps at most 300)
RATE_SAMPLES = 300
POOL_KEYS = ("health", "error", "size_bytes", "allocated_bytes", "free_bytes", "capacity_percent")


def usage_section(storage):
    """{pools, datasets, ramdisks} of one storage_info result (read with usage)."""
    storage = storage or {}
    pools = [
        dict({key: (state or {}).get(key) for key in POOL_KEYS}, name=name)
        for name, state in sorted((storage.get("pools") or {}).items())
    ]
    datasets, ramdisks = [], []
    paths = storage.get("paths") if isinstance(storage.get("paths"), dict) else {}
    for path in sorted(paths):
        fact = paths[path] or {}
        usage = fact.get("usage")
        if not isinstance(usage, dict):
            continue
        if fact.get("kind") == "zfs":
            datasets.append(dict(usage, path=path, dataset=fact.get("dataset")))
        elif fact.get("kind") == "tmpfs":
            ramdisks.append(dict(usage, path=path))
    return {"pools": pools, "datasets": datasets, "ramdisks": ramdisks}


def _parse_json(text, what):
    """(dict, None) or (None, why not)."""
    if text is None:
        return None, None
    if isinstance(text, dict):
        return text, None  # ansible-core before 2.19 turns a template's JSON text into a dict
    try:
        data = json.loads(text)
    except ValueError as exc:
        return None, f"{what} is not JSON ({exc})"
    if not isinstance(data, dict):
        return None, f"{what} does not hold a JSON object"
    return data, None


def _archive(info):
    if not info:
        return None
    return {key: info.get(key) for key in ("name", "slot", "base_slot", "size", "problem")}


def _tip_reason(entry, fresh):
    if fresh.get("tip_slot") is not None:
        return None
    if not entry.get("rpc_endpoints") and not fresh.get("endpoints"):
        return "no RPC endpoint configured (health_check_rpc_endpoints, workload_deploy_rpc_endpoints)"
    errors = "; ".join(
        f"{e.get('url')}: {e.get('error')}" for e in fresh.get("endpoints") or [] if not e.get("ok")
    )
    return f"no RPC endpoint answered ({errors or fresh.get('msg') or 'not asked'})"


def _samples(history):
    """rate_history as [[seconds, bytes/s], ...]; anything else is dropped."""
    out = []
    for item in history if isinstance(history, list) else []:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            try:
                out.append([float(item[0]), int(item[1])])
            except (TypeError, ValueError):
                continue
    return out[-RATE_SAMPLES:]


def download_record(entry):
    """The last download from snapshot_fetch's status file; None when there is none."""
    data, error = _parse_json(entry.get("status_text"), entry.get("status_file") or "the status file")
    if error:
        return {"path": entry.get("status_file"), "error": error}
    if data is None:
        return None
    samples = _samples(data.get("rate_history"))
    rates = [rate for _at, rate in samples]
    return {
        "path": entry.get("status_file"),
        "state": data.get("state"),
        "name": data.get("name") or ", ".join(data.get("downloads") or []) or None,
        "updated": data.get("updated"),
        "bytes_done": data.get("bytes_done"),
        "bytes_total": data.get("bytes_total"),
        "mean_rate_bytes_per_s": data.get("mean_rate_bytes_per_s"),
        "peak_rate_bytes_per_s": max(rates) if rates else None,
        "elapsed_s": data.get("elapsed_s"),
        "rate_history": samples,
        "rate_history_interval_s": data.get("rate_history_interval_s"),
        "error": None,
    }


def snapshot_section(entry):
    """The snapshot section of one host from the role's read; None when it was not read."""
    if not entry:
        return None
    fresh = entry.get("freshness") or {}
    if fresh.get("skipped") or not fresh:
        return None
    verdict = fresh.get("verdict") or "unread"
    if verdict in SNAPSHOT_OK:
        state = "ok"
    elif verdict in SNAPSHOT_BAD or verdict == "unread":
        state = "bad"
    else:
        state = "warn"
    return {
        "dir": entry.get("dir") or fresh.get("snapshot_dir"),
        "verdict": verdict,
        "state": state,
        "msg": fresh.get("msg"),
        "full": _archive(fresh.get("full_snapshot")),
        "incremental": _archive(fresh.get("incremental_snapshot")),
        "local_slot": fresh.get("local_slot"),
        "tip_slot": fresh.get("tip_slot"),
        "tip_reason": _tip_reason(entry, fresh),
        "lag_slots": fresh.get("lag_slots"),
        "full_lag_slots": fresh.get("full_lag_slots"),
        "max_lag_slots": fresh.get("max_lag_slots"),
        "download": download_record(entry),
    }


def _transfer(activity):
    data, error = _parse_json(activity.get("transfer_text"), activity.get("transfer_path") or "progress file")
    if error or activity.get("transfer_error"):
        return {"path": activity.get("transfer_path"), "error": error or activity.get("transfer_error")}
    if data is None:
        return None
    streams = data.get("streams") or []
    failed = [s for s in streams if isinstance(s, dict) and s.get("state") == "failed"]
    total, done = data.get("bytes_total"), data.get("bytes_done")
    state = "failed" if failed else "finished" if data.get("finished") else "running or interrupted"
    return {
        "path": activity.get("transfer_path"),
        "state": state,
        "source": data.get("source"),
        "destination": data.get("destination"),
        "bytes_done": done,
        "bytes_total": total,
        "percent": round(100.0 * done / total, 1) if total and done is not None else None,
        "rate_bytes_s": data.get("rate_bytes_s"),
        "started": data.get("started"),
        "updated": data.get("updated"),
        "streams": len(streams),
        "streams_failed": len(failed),
        "error": None,
    }


def _checkpoints(result):
    if not result:
        return None
    if result.get("failed"):
        return {"images_dir": result.get("images_dir"), "error": result.get("msg") or "could not be listed"}
    items = [c for c in result.get("checkpoints") or [] if isinstance(c, dict)]
    if not items:
        return None
    keys = ("id", "name", "created", "size_bytes", "usable", "restorable", "problem", "method")
    return {
        "images_dir": result.get("images_dir"),
        "count": len(items),
        "usable": sum(1 for c in items if c.get("usable")),
        "newest": [{key: c.get(key) for key in keys} for c in items[:CHECKPOINTS_SHOWN]],
        "error": None,
    }


def _isolation(record):
    if not record:
        return None
    if record.get("error"):
        return {"path": record.get("path"), "isolated": None, "error": record["error"]}
    return {
        "path": record.get("path"),
        "isolated": record.get("operation") == "strata.ops.runner_isolation",
        "since": record.get("since"),
        "node": record.get("node"),
        "runners": len(record.get("runners") or []),
        "workloads": list(record.get("workloads") or []),
        "stopped": list(record.get("stopped") or []),
        "error": None,
    }


def activity_section(activity):
    """{transfer, checkpoints, isolation} of one host (each None: none on this host)."""
    if not activity:  # not read (None; "" from an ansible-core before 2.19)
        return None
    return {
        "transfer": _transfer(activity),
        "checkpoints": _checkpoints(activity.get("checkpoints")),
        "isolation": _isolation(activity.get("isolation")),
    }
