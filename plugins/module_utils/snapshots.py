# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Solana/Agave snapshot archives: names, local scan, freshness verdict, JSON-RPC client.

Archive names (as agave writes them, and as RPC nodes redirect to them):

* full:        ``snapshot-<slot>-<hash>.tar.zst`` (also ``.tar.lz4``; older ``.tar.bz2``,
  ``.tar.gz``, plain ``.tar``)
* incremental: ``incremental-snapshot-<base slot>-<slot>-<hash>.tar.zst`` (or ``.tar.lz4`` ...)

``<hash>`` is the base58 bank hash of that slot: it identifies the bank, it is NOT a checksum
of the file. An incremental snapshot is usable only together with the full snapshot of its base
slot. Agave makes a full snapshot every 100,000 slots and an incremental one every 100, so a
20,000-slot freshness rule can only be met through incrementals: both are reported.

Helpers raise ``SnapshotError`` (or a subclass); a module's ``main()`` catches it once.
Everything here uses only the Python standard library (it runs on managed hosts).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import stat as stat_mod
import threading
import time

from ansible.module_utils.urls import open_url

from ansible_collections.strata.ops.plugins.module_utils import transfer as transfer_mod

try:  # Python 3
    from urllib.error import HTTPError, URLError
except ImportError:  # pragma: no cover - Python 2 is not a target
    HTTPError = URLError = None

KIND_FULL = "full"
KIND_INCREMENTAL = "incremental"
DEFAULT_MAX_LAG_SLOTS = 20000
ARCHIVE_EXTENSIONS = ("tar.zst", "tar.lz4", "tar.bz2", "tar.gz", "tar")
VERDICT_FRESH = "fresh"
VERDICT_STALE = "stale"
VERDICT_MISSING = "missing"
VERDICT_UNKNOWN = "unknown"

_BASE58 = "[1-9A-HJ-NP-Za-km-z]{32,44}"
_EXT = r"(?P<ext>tar\.zst|tar\.lz4|tar\.bz2|tar\.gz|tar)"
FULL_RE = re.compile(r"^snapshot-(?P<slot>[0-9]{1,20})-(?P<hash>" + _BASE58 + r")\." + _EXT + "$")
INCREMENTAL_RE = re.compile(
    r"^incremental-snapshot-(?P<base>[0-9]{1,20})-(?P<slot>[0-9]{1,20})-(?P<hash>"
    + _BASE58
    + r")\."
    + _EXT
    + "$"
)
# Names that look like an archive we would use but are not one: reported as malformed.
_LOOKS_LIKE_ARCHIVE = re.compile(r"^(incremental-)?snapshot-.*\.tar(\.[a-z0-9]+)?$")
# Downloads in progress and agave's own work files: never counted, reported as ignored.
_TEMPORARY_RE = re.compile(
    r"(^\.|^tmp-|^tmp_|\.tmp$|\.partial$|\.part$|\.aria2$|\.ctl$|\.download$|\.incomplete$|~$)"
)


class SnapshotError(Exception):
    """Base error; ``msg`` is written for an operator, ``details`` go into the result."""

    def __init__(self, msg, **details):
        super(SnapshotError, self).__init__(msg)
        self.msg = msg
        self.details = details


class SnapshotNameError(SnapshotError):
    pass


class RpcError(SnapshotError):
    """An endpoint did not give a usable answer (transport, garbage, or JSON-RPC error)."""


class RpcTransportError(RpcError):
    pass


class RpcProtocolError(RpcError):
    pass


class RpcRemoteError(RpcError):
    """The endpoint answered with a JSON-RPC error object."""

    def __init__(self, msg, code=None, **details):
        super(RpcRemoteError, self).__init__(msg, code=code, **details)
        self.code = code


def parse_archive_name(name):
    """Parse an archive file name; return a dict or None when it is not a snapshot archive.

    The dict has kind, slot, base_slot (incrementals; None for full), hash, ext and name.
    Raises SnapshotNameError for names that look like an archive but do not parse (wrong
    hash alphabet, missing slot, incremental whose slot is not after its base ...).
    """
    base = os.path.basename(name)
    match = FULL_RE.match(base)
    if match:
        return dict(
            kind=KIND_FULL,
            slot=int(match.group("slot")),
            base_slot=None,
            hash=match.group("hash"),
            ext=match.group("ext"),
            name=base,
        )
    match = INCREMENTAL_RE.match(base)
    if match:
        slot, base_slot = int(match.group("slot")), int(match.group("base"))
        if slot <= base_slot:
            raise SnapshotNameError(
                "%s: incremental slot %d is not after its base slot %d" % (base, slot, base_slot)
            )
        return dict(
            kind=KIND_INCREMENTAL,
            slot=slot,
            base_slot=base_slot,
            hash=match.group("hash"),
            ext=match.group("ext"),
            name=base,
        )
    if _LOOKS_LIKE_ARCHIVE.match(base):
        raise SnapshotNameError(
            "%s looks like a snapshot archive but is not named snapshot-<slot>-<base58 hash>"
            ".tar.<zst|lz4|...> or incremental-snapshot-<base slot>-<slot>-<hash>.tar.<...>" % base
        )
    return None


def is_temporary_name(name):
    return bool(_TEMPORARY_RE.search(os.path.basename(name)))


def scan_snapshot_dir(path, listdir=os.listdir, stat=os.stat):
    """Classify the files of a snapshot directory.

    Returns a dict: full (list, newest first), incremental (usable: base present; newest
    first), orphan_incrementals (base missing), malformed (names), ignored (temporary and
    other files), best_full, best_incremental (for best_full's slot; None when none).
    """
    full, incrementals, malformed, ignored = [], [], [], []
    for name in sorted(listdir(path)):
        full_path = os.path.join(path, name)
        if is_temporary_name(name):
            ignored.append(name)
            continue
        try:
            info = parse_archive_name(name)
        except SnapshotNameError:
            malformed.append(name)
            continue
        if info is None:
            ignored.append(name)
            continue
        try:
            st = stat(full_path)
        except OSError:
            ignored.append(name)
            continue
        if not _is_regular(st) or st.st_size == 0:
            # An empty archive is a download that never started writing, not a snapshot.
            malformed.append(name)
            continue
        info["path"] = full_path
        info["size"] = st.st_size
        (full if info["kind"] == KIND_FULL else incrementals).append(info)
    full.sort(key=lambda i: (i["slot"], i["name"]), reverse=True)
    full_slots = set(i["slot"] for i in full)
    usable = [i for i in incrementals if i["base_slot"] in full_slots]
    orphans = [i for i in incrementals if i["base_slot"] not in full_slots]
    usable.sort(key=lambda i: (i["slot"], i["name"]), reverse=True)
    orphans.sort(key=lambda i: (i["slot"], i["name"]), reverse=True)
    best_full = full[0] if full else None
    best_incremental = None
    if best_full is not None:
        for info in usable:
            if info["base_slot"] == best_full["slot"]:
                best_incremental = info
                break
    return dict(
        full=full,
        incremental=usable,
        orphan_incrementals=orphans,
        malformed=malformed,
        ignored=ignored,
        best_full=best_full,
        best_incremental=best_incremental,
    )


def _is_regular(st):
    return stat_mod.S_ISREG(st.st_mode)


def freshness_verdict(local_slot, tip_slot, max_lag_slots=DEFAULT_MAX_LAG_SLOTS):
    """Return (verdict, lag) for the newest usable local slot against the cluster tip.

    missing: no usable local snapshot; unknown: no tip (no endpoint answered);
    fresh: tip - local <= max_lag_slots; stale otherwise. lag is None unless both are known.
    A local slot ahead of the tip (lagging endpoints) has a negative lag and is fresh.
    """
    if max_lag_slots < 0:
        raise SnapshotError("max_lag_slots must be 0 or more, got %d" % max_lag_slots)
    if local_slot is None:
        return VERDICT_MISSING, None
    if tip_slot is None:
        return VERDICT_UNKNOWN, None
    lag = tip_slot - local_slot
    return (VERDICT_FRESH if lag <= max_lag_slots else VERDICT_STALE), lag


# --- JSON-RPC --------------------------------------------------------------------------------

RPC_METHOD_NOT_FOUND = -32601
RPC_NO_SNAPSHOT = -32008


def http_post_json(url, body, timeout):
    """POST a JSON body; return the open response (raises urllib's HTTPError/URLError)."""
    return open_url(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST", timeout=timeout
    )


def rpc_call(url, method, params=None, timeout=5.0, post=http_post_json):
    """One JSON-RPC 2.0 call; return its ``result`` or raise an RpcError subclass."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    try:
        response = post(url, body, timeout)
        try:
            raw = response.read(1024 * 1024 + 1)
        finally:
            response.close()
    except HTTPError as exc:
        # Nodes answer rate limits (429) and overload (5xx) this way; the body may be JSON-RPC.
        raw = b""
        try:
            raw = exc.read(65536)
        except Exception:
            raw = b""  # the status alone is the answer
        remote = _json_rpc_error(raw)
        if remote is not None:
            raise remote from None
        raise RpcTransportError("%s: HTTP %d %s" % (url, exc.code, exc.reason), status=exc.code) from None
    except URLError as exc:
        raise RpcTransportError("%s: %s" % (url, exc.reason)) from None
    except (OSError, ValueError) as exc:  # timeouts, resets, bad URLs
        raise RpcTransportError("%s: %s" % (url, exc)) from None
    if len(raw) > 1024 * 1024:
        raise RpcProtocolError("%s: answer to %s is larger than 1 MiB" % (url, method))
    try:
        answer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise RpcProtocolError("%s: answer to %s is not JSON: %r" % (url, method, raw[:80])) from None
    if not isinstance(answer, dict):
        raise RpcProtocolError("%s: answer to %s is not a JSON-RPC object" % (url, method))
    remote = _json_rpc_error(answer)
    if remote is not None:
        raise remote
    if "result" not in answer:
        raise RpcProtocolError("%s: answer to %s has neither result nor error" % (url, method))
    return answer["result"]


def _json_rpc_error(answer):
    if isinstance(answer, bytes):
        try:
            answer = json.loads(answer.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
    if not isinstance(answer, dict) or not isinstance(answer.get("error"), dict):
        return None
    err = answer["error"]
    code = err.get("code")
    return RpcRemoteError("JSON-RPC error %s: %s" % (code, err.get("message", "")), code=code)


def _valid_slot(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def query_endpoint(url, timeout=5.0, commitment="finalized", snapshot_slots=True, post=http_post_json):
    """Ask one endpoint for its slot and, where offered, its highest snapshot slots."""
    started = time.time()
    entry = dict(url=url, ok=False, slot=None, error=None, highest_snapshot=None, elapsed=None)
    try:
        slot = rpc_call(url, "getSlot", [{"commitment": commitment}], timeout=timeout, post=post)
        if not _valid_slot(slot):
            raise RpcProtocolError("%s: getSlot answered %r, not a slot number" % (url, slot))
        entry.update(ok=True, slot=slot)
        if snapshot_slots:
            try:
                highest = rpc_call(url, "getHighestSnapshotSlot", [], timeout=timeout, post=post)
            except RpcRemoteError as exc:
                # Not offered (older nodes: method not found) or no snapshot on that node.
                entry["highest_snapshot_error"] = exc.msg
            except RpcError as exc:
                entry["highest_snapshot_error"] = exc.msg
            else:
                if (
                    isinstance(highest, dict)
                    and _valid_slot(highest.get("full"))
                    and (highest.get("incremental") is None or _valid_slot(highest.get("incremental")))
                ):
                    entry["highest_snapshot"] = dict(
                        full=highest["full"], incremental=highest.get("incremental")
                    )
                else:
                    entry["highest_snapshot_error"] = "getHighestSnapshotSlot answered %r" % (highest,)
    except RpcError as exc:
        entry.update(ok=False, slot=None, error=exc.msg)
    entry["elapsed"] = round(time.time() - started, 3)
    return entry


def query_endpoints(urls, timeout=5.0, commitment="finalized", snapshot_slots=True):
    """Ask every endpoint at once (one thread each); return the entries in the order given.

    The whole call takes about one timeout per method at most, not one per endpoint.
    """
    results = [None] * len(urls)

    def work(index, url):
        results[index] = query_endpoint(url, timeout, commitment, snapshot_slots)

    threads = [threading.Thread(target=work, args=(i, u)) for i, u in enumerate(urls)]
    for thread in threads:
        thread.daemon = True
        thread.start()
    deadline = time.time() + 2 * timeout + 5
    for index, thread in enumerate(threads):
        thread.join(max(0.0, deadline - time.time()))
        if results[index] is None:
            results[index] = dict(
                url=urls[index],
                ok=False,
                slot=None,
                highest_snapshot=None,
                elapsed=None,
                error="%s: no answer within %.1f s" % (urls[index], 2 * timeout + 5),
            )
    return results


def cluster_tip(entries):
    """The tip: the highest slot among the endpoints that answered (None when none did)."""
    slots = [e["slot"] for e in entries if e.get("ok")]
    return max(slots) if slots else None


def best_remote_snapshot(entries):
    """Highest snapshot slots offered by the endpoints (getHighestSnapshotSlot), or None."""
    best = None
    for entry in entries:
        highest = entry.get("highest_snapshot")
        if not highest:
            continue
        effective = highest["incremental"] if highest.get("incremental") is not None else highest["full"]
        if best is None or effective > best["slot"]:
            best = dict(
                full=highest["full"],
                incremental=highest.get("incremental"),
                slot=effective,
                endpoint=entry["url"],
            )
    return best


def freshness_report(
    snapshot_dir,
    endpoints,
    *,
    max_lag_slots=DEFAULT_MAX_LAG_SLOTS,
    timeout=5.0,
    commitment="finalized",
):
    """Everything snapshot_freshness returns (read-only)."""
    if not os.path.isdir(snapshot_dir):
        raise SnapshotError(
            "snapshot_dir %s does not exist or is not a directory: create it (layer 4,"
            " workload_storage) or fix the path" % snapshot_dir
        )
    try:
        scan = scan_snapshot_dir(snapshot_dir)
    except OSError as exc:
        raise SnapshotError("cannot list %s: %s" % (snapshot_dir, exc)) from None
    entries = query_endpoints(endpoints, timeout=timeout, commitment=commitment) if endpoints else []
    tip = cluster_tip(entries)
    full = scan["best_full"]
    incremental = scan["best_incremental"]
    full_slot = full["slot"] if full else None
    incremental_slot = incremental["slot"] if incremental else None
    local_slot = incremental_slot if incremental_slot is not None else full_slot
    verdict, lag = freshness_verdict(local_slot, tip, max_lag_slots)
    full_lag = tip - full_slot if tip is not None and full_slot is not None else None
    return dict(
        changed=False,
        verdict=verdict,
        snapshot_dir=snapshot_dir,
        local_slot=local_slot,
        full_slot=full_slot,
        incremental_slot=incremental_slot,
        full_snapshot=_public(full),
        incremental_snapshot=_public(incremental),
        tip_slot=tip,
        lag_slots=lag,
        full_lag_slots=full_lag,
        max_lag_slots=max_lag_slots,
        best_remote_snapshot=best_remote_snapshot(entries),
        endpoints=entries,
        endpoints_answered=[e["url"] for e in entries if e["ok"]],
        endpoints_failed=[e["url"] for e in entries if not e["ok"]],
        full_snapshots=[_public(i) for i in scan["full"]],
        incremental_snapshots=[_public(i) for i in scan["incremental"]],
        orphan_incrementals=[i["name"] for i in scan["orphan_incrementals"]],
        malformed_files=scan["malformed"],
        ignored_files=scan["ignored"],
    )


def _public(info):
    if info is None:
        return None
    return dict(
        (k, info[k]) for k in ("name", "path", "kind", "slot", "base_slot", "hash", "size") if k in info
    )


# --- snapshot_fetch: discover, rank, download, verify, prune ----------------------------------

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
            return dict(source=source, url=url, error="%s does not name a snapshot archive" % url)
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


def plan_fetch(candidates, tip, max_lag_slots, min_speed, speeds, *, want_incremental=True):
    """Choose the full archive (and the incremental on it) to fetch, and from which sources.

    Sources slower than min_speed are left out; of the archives within max_lag_slots of the
    tip (counting the incremental when there is one), the newest wins, then the fastest.
    Returns (plan or None, rejected {url: reason}).
    """
    rejected = {}
    usable = []
    for cand in candidates:
        speed = speeds.get(cand["source"])
        if min_speed and speed is not None and speed < min_speed:
            rejected[cand["url"]] = "measured %.2f MiB/s, below min_speed %.2f MiB/s" % (
                speed / 1048576.0,
                min_speed / 1048576.0,
            )
            continue
        usable.append(cand)
    groups = {}
    for cand in usable:
        groups.setdefault((cand["kind"], cand["name"]), []).append(cand)
    for (kind, name), members in list(groups.items()):
        lengths = set(m["length"] for m in members)
        if len(lengths) > 1:
            biggest = max(lengths, key=lambda n: sum(1 for m in members if m["length"] == n))
            for m in members:
                if m["length"] != biggest:
                    rejected[m["url"]] = "serves %s with %d bytes, other sources %d" % (
                        name,
                        m["length"],
                        biggest,
                    )
            groups[(kind, name)] = [m for m in members if m["length"] == biggest]
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
    if not options:
        return None, rejected
    options.sort(key=lambda o: (o[0], o[1], o[2]), reverse=True)
    within = [o for o in options if tip is None or tip - o[0] <= max_lag_slots]
    for o in options:
        if o not in within:
            for m in o[4]:
                rejected.setdefault(
                    m["url"], "slot %d is %d slots behind the tip %d" % (o[0], tip - o[0], tip)
                )
    if not within:
        return None, rejected
    effective, members, best_inc = within[0][0], within[0][4], within[0][5]
    plan = dict(effective_slot=effective, full=_archive_plan(members), incremental=None)
    if best_inc:
        plan["incremental"] = _archive_plan(best_inc)
    return plan, rejected


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


def prune_archives(snapshot_dir, keep, keep_names=()):
    """Delete full archives beyond the newest ``keep`` and incrementals not built on a kept one.

    Of the incrementals on kept full archives, the newest ``keep`` stay. Never deletes a name
    in ``keep_names``. Returns the deleted names.
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
        if info["name"] in keep_names:
            continue
        os.unlink(info["path"])
        deleted.append(info["name"])
    return sorted(deleted)


def fetch_snapshots(params, check_mode=False, transfer=None):
    """Everything snapshot_fetch does; returns its result dict."""
    transfer = transfer or transfer_mod
    directory = params["snapshot_dir"]
    if not os.path.isdir(directory):
        raise SnapshotError(
            "snapshot_dir %s does not exist or is not a directory: create it (layer 4,"
            " workload_storage) or fix the path" % directory
        )
    status_file = params.get("status_file")
    started = time.time()
    transfer.write_status(status_file, dict(state="discovering", updated=started, pid=os.getpid()))
    candidates, errors = discover_candidates(params["sources"], params["timeout"], transfer)
    entries = []
    tip = None
    if params.get("rpc_endpoints"):
        entries = query_endpoints(params["rpc_endpoints"], timeout=params["timeout"])
        tip = cluster_tip(entries)
    if tip is None and candidates:
        tip = max(c["slot"] for c in candidates)  # no endpoint: the newest archive offered
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
    plan, rejected = plan_fetch(
        candidates,
        tip,
        params["max_lag_slots"],
        params["min_speed"],
        speeds,
        want_incremental=params["incremental"],
    )
    result = dict(
        changed=False,
        tip_slot=tip,
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
        transfer.write_status(status_file, dict(state="failed", updated=time.time(), pid=os.getpid()))
        raise SnapshotError(
            "no source offers a snapshot within %d slots of the tip %s at min_speed %.1f MiB/s or more"
            " (%d archives found, %d sources failed): add sources, or raise max_lag_slots / lower"
            " min_speed"
            % (params["max_lag_slots"], tip, params["min_speed"] / 1048576.0, len(candidates), len(errors)),
            **dict((k, result[k]) for k in ("candidates", "source_errors", "rejected", "speeds", "tip_slot")),
        )
    todo = [a for a in (plan["full"], plan["incremental"]) if a]
    todo = [a for a in todo if not os.path.exists(os.path.join(directory, a["name"]))]
    result["already_present"] = [
        a["name"] for a in (plan["full"], plan["incremental"]) if a and a not in todo
    ]
    if not todo:
        transfer.write_status(
            status_file, dict(state="done", updated=time.time(), pid=os.getpid(), downloads=[])
        )
        return result
    result["changed"] = True
    if check_mode:
        return result
    needed = 0
    for archive in todo:
        tmp = os.path.join(directory, TEMP_PREFIX + archive["name"])
        done = transfer.load_control(tmp, archive["name"], archive["length"])[0]
        needed += archive["length"] - done.total()
    transfer.prepare_space(directory, needed, params["reserve_bytes"])

    for archive in todo:
        tmp = os.path.join(directory, TEMP_PREFIX + archive["name"])
        final = os.path.join(directory, archive["name"])

        def progress(status, archive=archive):
            status["archive_kind"] = archive["kind"]
            transfer.write_status(status_file, status)

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
            status_file, dict(state="verifying", name=archive["name"], updated=time.time(), pid=os.getpid())
        )
        size = os.path.getsize(tmp)
        if size != archive["length"]:
            transfer.discard(tmp)
            raise transfer.IntegrityError(
                "%s has %d bytes after the download, the sources announced %d: discarded, run again"
                % (archive["name"], size, archive["length"])
            )
        try:
            if params["verify_archive"]:
                stats["verified_by"] = transfer.verify_archive(tmp, archive["ext"])
            expected = _expected_checksum(params, archive, transfer)
            if expected:
                actual = transfer.file_sha256(tmp)
                if actual != expected[0]:
                    raise transfer.IntegrityError(
                        "%s: sha256 %s does not match %s from %s"
                        % (archive["name"], actual, expected[0], expected[1])
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
    keep_names = [a["name"] for a in (plan["full"], plan["incremental"]) if a]
    result["deleted"] = prune_archives(directory, params["keep"], keep_names)
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
            downloads=[d["name"] for d in result["downloads"]],
        ),
    )
    return result


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
