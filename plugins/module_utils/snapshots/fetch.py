# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""strata.ops.snapshot_fetch: discover the archives on offer, rank them, download, verify, prune."""

import json
import os
import threading
import time

from ansible_collections.strata.ops.plugins.module_utils import transfer as transfer_mod
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument
from ansible_collections.strata.ops.plugins.module_utils.snapshots import SnapshotError
from ansible_collections.strata.ops.plugins.module_utils.snapshots.names import (
    KIND_FULL,
    KIND_INCREMENTAL,
    SnapshotNameError,
    parse_archive_name,
)
from ansible_collections.strata.ops.plugins.module_utils.snapshots.rpc import (
    check_urls,
    cluster_tip,
    failed_endpoints_warning,
    query_endpoints,
)
from ansible_collections.strata.ops.plugins.module_utils.snapshots.scan import scan_snapshot_dir
from ansible_collections.strata.ops.plugins.module_utils.transfer import control as transfer_control

RPC_NODE_PATHS = ("/snapshot.tar.bz2", "/incremental-snapshot.tar.bz2")

TEMP_PREFIX = ".strata-partial-"


def _parallel(func, items):
    results = [None] * len(items)

    def work(i, item):
        results[i] = func(item)

    threads = [threading.Thread(target=work, args=(i, item)) for i, item in enumerate(items)]
    for thread in threads:
        thread.daemon = True
        thread.start()
    for thread in threads:
        thread.join()
    return results


def discover_candidates(sources, timeout=10.0, transfer=None):
    """Find the archives each source offers; return (candidates, errors).

    A source is either a plain archive URL (its last path element is the archive name) or an
    RPC node's base URL, asked with HEAD for ``/snapshot.tar.bz2`` and
    ``/incremental-snapshot.tar.bz2``; the redirect's Location names the archive (as
    solana-snapshot-finder reads them). Each archive is probed for its length and Range support.
    """
    transfer = transfer or transfer_mod
    errors = {}

    def urls_of(source):
        name = source.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
        try:
            if parse_archive_name(name):
                return [(source, source)]
        except SnapshotNameError as exc:
            return [(source, SnapshotError(exc.msg))]
        out = []
        for path in RPC_NODE_PATHS:
            try:
                out.append((source, transfer.resolve_redirect(source.rstrip("/") + path, timeout)))
            except transfer.TransferError as exc:
                out.append((source, SnapshotError(exc.msg)))
        return out

    found = []
    for entries in _parallel(urls_of, list(sources)):
        found.extend(entries)

    def examine(entry):
        source, url = entry
        if isinstance(url, SnapshotError):
            return dict(source=source, error=url.msg)
        name = url.rsplit("/", 1)[-1].split("?", 1)[0]
        try:
            info = parse_archive_name(name)
        except SnapshotNameError as exc:
            return dict(source=source, url=url, error=exc.msg)
        if info is None:
            return dict(source=source, url=url, error=f"{url} does not name a snapshot archive")
        try:
            probed = transfer.probe(url, timeout)
        except transfer.TransferError as exc:
            return dict(source=source, url=url, error=exc.msg)
        info.update(source=source, url=probed["url"], length=probed["length"], ranges=probed["ranges"])
        return info

    candidates = []
    for result in _parallel(examine, found):
        if "error" in result:
            errors.setdefault(result["source"], []).append(result["error"])
        else:
            candidates.append(result)
    return candidates, errors


REJECT_HINTS = dict(
    slow="lower min_speed or add faster sources",
    length="the sources disagree on an archive's length: drop the odd one",
    behind="raise max_lag_slots or add sources with newer snapshots",
    ahead="the sources and rpc_endpoints are not on the same cluster, or the endpoints lag: check both",
)


def plan_fetch(candidates, tip, max_lag_slots, min_speed, speeds, *, want_incremental=True, tip_checked=True):
    """Choose the full archive (and the incremental on it) to fetch, and from which sources.

    Sources slower than min_speed are left out; of the archives within max_lag_slots of the
    tip (counting the incremental when there is one), the newest wins, then the fastest. An
    archive above a checked tip is refused: its source serves another cluster or the
    endpoints lag. Without a checked tip, ``tip`` is the newest slot on offer.
    Returns (plan or None, rejected {url: reason}, the REJECT_HINTS keys of those reasons).
    """
    rejected = {}
    kinds = set()

    def reject(url, kind, reason):
        if url not in rejected:
            rejected[url] = reason
            kinds.add(kind)

    usable = _fast_enough(candidates, min_speed, speeds, reject)
    groups = _archive_groups(usable, reject)
    options = _full_archive_options(groups, speeds, want_incremental)
    if not options:
        return None, rejected, kinds
    within = _within_lag(options, tip, max_lag_slots, tip_checked, reject)
    if not within:
        return None, rejected, kinds
    effective, members, best_inc = within[0][0], within[0][4], within[0][5]
    plan = dict(effective_slot=effective, full=_archive_plan(members), incremental=None)
    if best_inc:
        plan["incremental"] = _archive_plan(best_inc)
    return plan, rejected, kinds


def _fast_enough(candidates, min_speed, speeds, reject):
    """The candidates whose source was not measured slower than min_speed; the others rejected."""
    usable = []
    for cand in candidates:
        speed = speeds.get(cand["source"])
        if min_speed and speed is not None and speed < min_speed:
            reject(
                cand["url"],
                "slow",
                f"measured {speed / 1048576.0:.2f} MiB/s, below min_speed {min_speed / 1048576.0:.2f} MiB/s",
            )
            continue
        usable.append(cand)
    return usable


def _archive_groups(usable, reject):
    """{(kind, name): candidates serving that archive}; where the sources disagree on its
    length, those off the most common length are rejected and left out."""
    groups = {}
    for cand in usable:
        groups.setdefault((cand["kind"], cand["name"]), []).append(cand)
    for (kind, name), members in list(groups.items()):
        lengths = set(m["length"] for m in members)
        if len(lengths) > 1:
            biggest = max(lengths, key=lambda n: sum(1 for m in members if m["length"] == n))
            for m in members:
                if m["length"] != biggest:
                    reject(
                        m["url"],
                        "length",
                        f"serves {name} with {m['length']} bytes, other sources {biggest}",
                    )
            groups[(kind, name)] = [m for m in members if m["length"] == biggest]
    return groups


def _full_archive_options(groups, speeds, want_incremental):
    """(effective slot, slot, speed, name, members, best incremental's members or None) for each
    full archive, best first."""
    options = []
    for (kind, name), members in groups.items():
        if kind != KIND_FULL:
            continue
        slot = members[0]["slot"]
        incrementals = [
            g for (k, _name), g in groups.items() if k == KIND_INCREMENTAL and g[0]["base_slot"] == slot
        ]
        best_inc = (
            max(incrementals, key=lambda g: g[0]["slot"]) if incrementals and want_incremental else None
        )
        effective = best_inc[0]["slot"] if best_inc else slot
        speed = sum(speeds.get(m["source"]) or 0 for m in members)
        options.append((effective, slot, speed, name, members, best_inc))
    options.sort(key=lambda o: (o[0], o[1], o[2]), reverse=True)
    return options


def _within_lag(options, tip, max_lag_slots, tip_checked, reject):
    """The options neither above a checked tip nor more than max_lag_slots behind it; the
    archives of the others rejected."""
    reference = f"the tip {tip}" if tip_checked else f"the newest archive on offer (slot {tip})"
    within = []
    for option in options:
        effective, archives = option[0], option[4] + (option[5] or [])
        if tip_checked and effective > tip:
            for m in archives:
                reject(m["url"], "ahead", f"slot {effective} is above the cluster tip {tip}")
        elif tip - effective > max_lag_slots:
            for m in archives:
                reject(
                    m["url"],
                    "behind",
                    f"slot {effective} is {tip - effective} slots behind {reference}",
                )
        else:
            within.append(option)
    return within


def no_plan_message(candidates, errors, rejected, kinds, limit=6):
    """Why nothing can be fetched, with the reasons themselves (not only in the result keys)."""
    reasons = [f"{src}: {'; '.join(errs)}" for src, errs in sorted(errors.items())]
    reasons += [f"{url}: {why}" for url, why in sorted(rejected.items())]
    shown = "; ".join(reasons[:limit])
    if len(reasons) > limit:
        shown += f"; and {len(reasons) - limit} more (see source_errors and rejected)"
    hints = [REJECT_HINTS[k] for k in sorted(kinds)]
    if errors:
        hints.append(
            "fix the failing sources (an RPC node's base URL such as http://host:8899, or an archive's URL)"
        )
    head = (
        f"none of the {len(candidates)} archives found can be used"
        if candidates
        else "no source offers a snapshot archive"
    )
    return f"{head}: {shown or 'no reason recorded'}. To fix: {'; '.join(hints) or 'add sources'}"


def _archive_plan(members):
    first = members[0]
    return dict(
        name=first["name"],
        kind=first["kind"],
        slot=first["slot"],
        base_slot=first["base_slot"],
        ext=first["ext"],
        length=first["length"],
        sources=[dict(url=m["url"], ranges=m["ranges"], source=m["source"]) for m in members],
    )


def prune_archives(snapshot_dir, keep, keep_names=(), warn=None):
    """Delete full archives beyond the newest ``keep`` and incrementals not built on a kept one.

    Of the incrementals on kept full archives, the newest ``keep`` stay. Never deletes a name
    in ``keep_names`` nor anything but a file. Returns the deleted names; a file that cannot be
    deleted is a warning (the new archive is in place already).
    """
    scan = scan_snapshot_dir(snapshot_dir)
    kept_full = scan["full"][:keep]
    kept_slots = set(i["slot"] for i in kept_full)
    doomed = list(scan["full"][keep:])
    incs = [i for i in scan["incremental"] if i["base_slot"] in kept_slots]
    doomed += [i for i in scan["incremental"] if i["base_slot"] not in kept_slots] + incs[keep:]
    doomed += scan["orphan_incrementals"]
    deleted = []
    for info in doomed:
        if info["name"] in keep_names or info["problem"] == "not a regular file":
            continue
        try:
            os.unlink(info["path"])
        except OSError as exc:
            if warn:
                warn(f"could not delete the old archive {info['path']}: {exc.strerror or exc}")
            continue
        deleted.append(info["name"])
    return sorted(deleted)


def check_numbers(params):
    for name in ("connections_per_server", "split", "keep"):
        if params[name] < 1:
            raise InvalidArgument(f"{name} must be 1 or more (got {params[name]})")
    for name in ("max_lag_slots", "min_split_size", "reserve_bytes"):
        if params[name] < 0:
            raise InvalidArgument(f"{name} must be 0 or more (got {params[name]})")
    if not params["sources"]:
        raise InvalidArgument("sources is empty: give RPC node URLs or archive URLs to download from")


# What the status file says of the last download (its rate chart in the health report): a run
# that finds every archive present already keeps them, so the chart is not lost on a rerun.
LAST_DOWNLOAD_KEYS = (
    "downloads",
    "bytes_done",
    "bytes_total",
    "percent",
    "mean_rate_bytes_per_s",
    "elapsed_s",
    "rate_history",
    "rate_history_interval_s",
    "rate_history_started",
)


def last_download(status_file):
    """The last download's keys from a status file a finished download wrote; {} otherwise."""
    try:
        with open(status_file, encoding="utf-8") as handle:
            status = json.load(handle)
    except (OSError, ValueError, TypeError):
        return {}
    if not isinstance(status, dict) or status.get("state") != "done" or not status.get("downloads"):
        return {}
    kept = dict((k, status[k]) for k in LAST_DOWNLOAD_KEYS if k in status)
    return dict(kept, last_download_updated=status.get("last_download_updated", status.get("updated")))


def fetch_snapshots(params, check_mode=False, transfer=None, warn=None):
    """Everything snapshot_fetch does; returns its result dict. Warnings go to ``warn``."""
    transfer = transfer or transfer_mod
    check_numbers(params)
    directory = params["snapshot_dir"]
    if not os.path.isdir(directory):
        raise SnapshotError(
            f"snapshot_dir {directory} does not exist or is not a directory: create it (layer 4,"
            " workload_storage) or fix the path"
        )
    check_urls("sources", params["sources"])
    check_urls("rpc_endpoints", params["rpc_endpoints"])
    if check_mode:  # check mode writes nothing, not even the status file a monitor reads
        params = dict(params, status_file=None)
    status_file = params.get("status_file")
    previous = last_download(status_file) if status_file else {}
    transfer.write_status(status_file, dict(state="discovering", updated=time.time(), pid=os.getpid()))
    # the rate over the run's downloads, kept in every status written from the first byte on
    history = transfer_control.RateHistory(time.time())
    try:
        return _fetch(params, check_mode, transfer, warn or (lambda _msg: None), history, previous)
    except (SnapshotError, transfer.TransferError):
        failed = dict(state="failed", updated=time.time(), pid=os.getpid())
        transfer.write_status(status_file, dict(failed, **history.as_status()) if history.samples else failed)
        raise


def _fetch(params, check_mode, transfer, warn, history, previous):  # noqa: PLR0917 (one caller)
    directory, status_file = params["snapshot_dir"], params.get("status_file")
    started = time.time()
    entries, tip, genesis = [], None, None
    if params["rpc_endpoints"]:
        entries = query_endpoints(params["rpc_endpoints"], timeout=params["timeout"], snapshot_slots=False)
        tip = cluster_tip(entries)
        if tip is None:
            endpoint_errors = "; ".join(e["error"] for e in entries)
            raise SnapshotError(
                "no RPC endpoint answered, so no archive's lag can be checked"
                f" ({endpoint_errors}): fix rpc_endpoints,"
                " or leave it empty to take the newest archive on offer unchecked",
                endpoints=entries,
            )
        genesis = next(e["genesis_hash"] for e in entries if e["ok"])
        warning = failed_endpoints_warning(entries)
        if warning:
            warn(warning)
    candidates, errors = discover_candidates(params["sources"], params["timeout"], transfer)
    tip_checked = tip is not None
    if not tip_checked:
        warn(
            "no rpc_endpoints: the lag is measured against the newest archive on offer, not against"
            " the cluster's tip (tip_checked=false); give rpc_endpoints to check it"
        )
        tip = max(c["slot"] for c in candidates) if candidates else None
    speeds = {}
    if params["speed_test_seconds"] > 0:
        transfer.write_status(status_file, dict(state="measuring", updated=time.time(), pid=os.getpid()))
        for source in sorted(set(c["source"] for c in candidates)):
            mine = sorted((c for c in candidates if c["source"] == source), key=lambda c: -c["length"])
            try:
                speeds[source] = transfer.measure_speed(
                    mine[0]["url"],
                    mine[0]["length"],
                    params["connections_per_server"] if mine[0]["ranges"] else 1,
                    params["speed_test_seconds"],
                    params["timeout"],
                )
            except transfer.TransferError as exc:
                errors.setdefault(source, []).append(exc.msg)
                candidates = [c for c in candidates if c["source"] != source]
    plan, rejected, kinds = plan_fetch(
        candidates,
        tip,
        params["max_lag_slots"],
        params["min_speed"],
        speeds,
        want_incremental=params["incremental"],
        tip_checked=tip_checked,
    )
    result = dict(
        changed=False,
        tip_slot=tip if tip_checked else None,
        tip_checked=tip_checked,
        genesis_hash=genesis,
        newest_offered_slot=max(c["slot"] for c in candidates) if candidates else None,
        endpoints=entries,
        candidates=[
            dict(
                (k, c[k]) for k in ("source", "url", "name", "kind", "slot", "base_slot", "length", "ranges")
            )
            for c in candidates
        ],
        speeds=dict((k, int(v)) for k, v in speeds.items()),
        source_errors=errors,
        rejected=rejected,
        plan=plan,
        downloads=[],
        deleted=[],
        status_file=status_file,
    )
    if plan is None:
        raise SnapshotError(
            no_plan_message(candidates, errors, rejected, kinds),
            **dict(
                (k, result[k])
                for k in ("candidates", "source_errors", "rejected", "speeds", "tip_slot", "tip_checked")
            ),
        )
    todo = [a for a in (plan["full"], plan["incremental"]) if a]
    todo = [a for a in todo if not os.path.exists(os.path.join(directory, a["name"]))]
    result["already_present"] = [
        a["name"] for a in (plan["full"], plan["incremental"]) if a and a not in todo
    ]
    if not todo:
        done = dict(
            state="done", updated=time.time(), pid=os.getpid(), already_present=result["already_present"]
        )
        transfer.write_status(status_file, dict(previous, **done) if previous else dict(done, downloads=[]))
        return result
    result["changed"] = True
    if check_mode:
        return result
    history.started = time.time()
    _download(params, directory, todo, result, transfer, history=history)
    keep_names = [a["name"] for a in (plan["full"], plan["incremental"]) if a]
    result["deleted"] = prune_archives(directory, params["keep"], keep_names, warn)
    elapsed = time.time() - started
    total = sum(d["size"] for d in result["downloads"])
    fetched = sum(d["fetched_bytes"] for d in result["downloads"])
    result.update(
        size=total, elapsed_s=round(elapsed, 3), mean_rate_bytes_per_s=int(fetched / max(elapsed, 1e-3))
    )
    transfer.write_status(
        status_file,
        dict(
            state="done",
            updated=time.time(),
            pid=os.getpid(),
            bytes_done=total,
            bytes_total=total,
            percent=100.0,
            mean_rate_bytes_per_s=result["mean_rate_bytes_per_s"],
            elapsed_s=result["elapsed_s"],
            downloads=[d["name"] for d in result["downloads"]],
            **history.as_status(),
        ),
    )
    return result


def _download(params, directory, todo, result, transfer, *, history):
    """Fetch, verify and rename each archive of ``todo``; append their stats to result["downloads"]."""
    status_file = params.get("status_file")
    needed = 0
    for archive in todo:
        tmp = os.path.join(directory, TEMP_PREFIX + archive["name"])
        done = transfer.load_control(tmp, archive["name"], archive["length"])[0]
        needed += archive["length"] - done.total() + transfer.CONTROL_FILE_SPACE
    transfer.prepare_space(directory, needed, params["reserve_bytes"])

    for archive in todo:
        tmp = os.path.join(directory, TEMP_PREFIX + archive["name"])
        final = os.path.join(directory, archive["name"])

        def progress(status, archive=archive):
            status["archive_kind"] = archive["kind"]
            history.record(status["updated"], status["rate_bytes_per_s"])
            transfer.write_status(status_file, dict(status, **history.as_status()))

        download = transfer.Download(
            archive["sources"],
            tmp,
            archive["name"],
            archive["length"],
            connections_per_server=params["connections_per_server"],
            split=params["split"],
            min_split_size=params["min_split_size"],
            min_speed=params["min_speed"],
            speed_grace=params["speed_grace_seconds"],
            timeout=params["timeout"],
            progress=progress,
        )
        stats = download.run()
        transfer.write_status(
            status_file,
            dict(
                state="verifying",
                name=archive["name"],
                updated=time.time(),
                pid=os.getpid(),
                **history.as_status(),
            ),
        )
        try:
            if params["verify_archive"]:
                stats["verified_by"] = transfer.verify_archive(tmp, archive["ext"])
            expected = _expected_checksum(params, archive, transfer)
            if expected:
                actual = transfer.file_sha256(tmp)
                if actual != expected[0]:
                    raise transfer.IntegrityError(
                        f"{archive['name']}: sha256 {actual} does not match {expected[0]} from {expected[1]}"
                    )
                stats["sha256"] = actual
                stats["checksum_from"] = expected[1]
        except transfer.IntegrityError as exc:
            transfer.discard(tmp)
            raise transfer.IntegrityError(
                exc.msg + "; the download was discarded: run again (a source may serve a broken file)",
                transfer=stats,
            ) from None
        transfer.finalize(tmp, final)
        stats["path"] = final
        stats["kind"] = archive["kind"]
        stats["slot"] = archive["slot"]
        result["downloads"].append(stats)


def _expected_checksum(params, archive, transfer):
    """(sha256, where from) for this archive: given by the caller, or a ``.sha256`` beside a source."""
    given = (params.get("checksums") or {}).get(archive["name"])
    if given:
        return given.split(":", 1)[-1].lower(), "the checksums option"
    if not params.get("checksum_from_source"):
        return None
    for src in archive["sources"]:
        try:
            text = transfer.fetch_small(src["url"] + ".sha256", timeout=params["timeout"])
        except transfer.TransferError:
            continue
        value = transfer.parse_checksum_text(text, archive["name"]) if text else None
        if value:
            return value, src["url"] + ".sha256"
    return None
