# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Solana/Agave snapshot archives: names, local scan, freshness verdict, JSON-RPC client.

Archive names follow agave's own rule (see ``parse_archive_name``):

* full:        ``snapshot-<slot>-<hash>.tar.zst`` (or ``.tar.lz4``)
* incremental: ``incremental-snapshot-<base slot>-<slot>-<hash>.tar.zst`` (or ``.tar.lz4``)

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
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover - Python 2 is not a target
    HTTPError = URLError = urlsplit = None

KIND_FULL = "full"
KIND_INCREMENTAL = "incremental"
DEFAULT_MAX_LAG_SLOTS = 20000
VERDICT_FRESH = "fresh"
VERDICT_STALE = "stale"
VERDICT_MISSING = "missing"
VERDICT_UNKNOWN = "unknown"
VERDICT_AHEAD = "ahead"  # the local slot is above the tip: wrong cluster, lagging RPC or wrong directory
VERDICT_UNUSABLE = "unusable"  # agave would load an archive that cannot be loaded
FAILING_VERDICTS = (VERDICT_AHEAD, VERDICT_UNUSABLE)

# Agave's own rule, snapshots/src/paths.rs (FULL_SNAPSHOT_ARCHIVE_FILENAME_REGEX and
# INCREMENTAL_SNAPSHOT_ARCHIVE_FILENAME_REGEX; [[:digit:]] and [[:alnum:]] are ASCII classes in
# Rust's regex crate). After the match agave parses the slots as u64, the hash as a
# solana_hash::Hash (at most 44 base58 characters decoding to 32 bytes) and the extension as an
# ArchiveFormat: only tar.zst and tar.lz4 (tar.bz2, tar.gz and tar are no longer read).
_EXT = r"(?P<ext>tar\.zst|tar\.lz4)"
FULL_RE = re.compile(r"^snapshot-(?P<slot>[0-9]+)-(?P<hash>[0-9A-Za-z]+)\." + _EXT + r"\Z")
INCREMENTAL_RE = re.compile(
    r"^incremental-snapshot-(?P<base>[0-9]+)-(?P<slot>[0-9]+)-(?P<hash>[0-9A-Za-z]+)\." + _EXT + r"\Z"
)
# Agave also loads archives from this subdirectory (SNAPSHOT_ARCHIVE_DOWNLOAD_DIR, paths.rs).
REMOTE_DIR = "remote"
_U64_MAX = 2**64 - 1
_HASH_MAX_CHARS = 44
_HASH_BYTES = 32
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# Names that start like an archive but break agave's rule: reported with the reason.
_LOOKS_LIKE_ARCHIVE = re.compile(r"^(incremental-)?snapshot-")
_OTHER_EXT = re.compile(r"^(?:snapshot-|incremental-snapshot-[0-9]+-)[0-9]+-[0-9A-Za-z]+\.(?P<ext>.+)\Z")
# Downloads in progress and agave's own work files: reported as such.
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


def is_base58_hash(text):
    """True when ``text`` parses as a solana_hash::Hash: <= 44 base58 characters, 32 bytes."""
    if len(text) > _HASH_MAX_CHARS:
        return False
    value = 0
    for char in text:
        digit = _BASE58.find(char)
        if digit < 0:
            return False
        value = value * 58 + digit
    leading_zero_bytes = len(text) - len(text.lstrip("1"))  # each leading "1" is a zero byte
    return leading_zero_bytes + (value.bit_length() + 7) // 8 == _HASH_BYTES


def parse_archive_name(name):
    """Parse an archive file name as agave does; return a dict, or None for other names.

    The dict has kind, slot, base_slot (incrementals; None for full), hash, ext and name.
    Raises SnapshotNameError, with the reason agave skips it, for a name that starts like an
    archive but is not one agave loads (other extension, hash or slot that does not parse).
    """
    base = os.path.basename(name)
    match = FULL_RE.match(base) or INCREMENTAL_RE.match(base)
    if match is None:
        if not _LOOKS_LIKE_ARCHIVE.match(base):
            return None
        other = _OTHER_EXT.match(base)
        if other:
            raise SnapshotNameError(
                "%s: agave loads only .tar.zst and .tar.lz4 archives, not .%s" % (base, other.group("ext"))
            )
        raise SnapshotNameError(
            "%s: not named snapshot-<slot>-<hash>.tar.zst|.tar.lz4 or"
            " incremental-snapshot-<base slot>-<slot>-<hash>.tar.zst|.tar.lz4, as agave expects" % base
        )
    slots = [int(match.group(g)) for g in ("base", "slot") if g in match.groupdict()]
    if max(slots) > _U64_MAX:
        raise SnapshotNameError("%s: a slot does not fit in 64 bits, agave skips it" % base)
    if not is_base58_hash(match.group("hash")):
        raise SnapshotNameError(
            "%s: %s is not a 32-byte base58 hash, agave skips it" % (base, match.group("hash"))
        )
    incremental = "base" in match.groupdict()
    return dict(
        kind=KIND_INCREMENTAL if incremental else KIND_FULL,
        slot=slots[-1],
        base_slot=slots[0] if incremental else None,
        hash=match.group("hash"),
        ext=match.group("ext"),
        name=base,
    )


def is_temporary_name(name):
    return bool(_TEMPORARY_RE.search(os.path.basename(name)))


def scan_snapshot_dir(path, listdir=os.listdir, stat=os.stat):
    """The archives agave would load from ``path`` (and its ``remote/``), chosen as agave does.

    Agave takes the full archive of the highest slot and, of the incrementals on that slot, the
    highest one, by name only (snapshots/src/paths.rs, get_highest_full_snapshot_archive_info
    and get_highest_incremental_snapshot_archive_info): an empty file or a directory with that
    name is still its choice, so it is chosen here too and carries a ``problem``.

    Returns a dict: full (every full archive, newest first), incremental (those whose base is
    present, newest first), orphan_incrementals (base missing), best_full, best_incremental
    (None when none), not_used (every other entry: name, path, reason).
    """
    archives, not_used = [], []
    remote = os.path.join(path, REMOTE_DIR)
    for directory in (path, remote) if os.path.isdir(remote) else (path,):
        for name in sorted(listdir(directory)):
            full_path = os.path.join(directory, name)
            if full_path == remote:
                continue
            if is_temporary_name(name):
                not_used.append(_unused(name, full_path, "a download in progress or a work file"))
                continue
            try:
                info = parse_archive_name(name)
            except SnapshotNameError as exc:
                not_used.append(_unused(name, full_path, exc.msg))
                continue
            if info is None:
                not_used.append(_unused(name, full_path, "not a snapshot archive name"))
                continue
            info.update(path=full_path, size=None, problem=None)
            try:
                st = stat(full_path)
            except OSError as exc:
                info["problem"] = "cannot be read (%s)" % (exc.strerror or exc)
            else:
                if not stat_mod.S_ISREG(st.st_mode):
                    info["problem"] = "not a regular file"
                elif st.st_size == 0:
                    info["problem"] = "empty (0 bytes)"
                info["size"] = st.st_size
            if info["kind"] == KIND_INCREMENTAL and info["slot"] <= info["base_slot"] and not info["problem"]:
                info["problem"] = "its slot is not after its base slot"
            archives.append(info)
    full = _newest_first(a for a in archives if a["kind"] == KIND_FULL)
    full_slots = set(i["slot"] for i in full)
    incrementals = [a for a in archives if a["kind"] == KIND_INCREMENTAL]
    usable = _newest_first(i for i in incrementals if i["base_slot"] in full_slots)
    orphans = _newest_first(i for i in incrementals if i["base_slot"] not in full_slots)
    best_full = full[0] if full else None
    on_best = [i for i in usable if best_full and i["base_slot"] == best_full["slot"]]
    best_incremental = on_best[0] if on_best else None
    for group, best in ((full, best_full), (on_best, best_incremental)):
        for info in group[1:]:
            reason = (
                "same slot as %s: agave takes one of them by directory order" % best["name"]
                if info["slot"] == best["slot"]
                else "older than %s" % best["name"]
            )
            not_used.append(_unused(info["name"], info["path"], reason))
    for info in usable:
        if info not in on_best:
            not_used.append(
                _unused(
                    info["name"],
                    info["path"],
                    "built on the full archive of slot %d, not on the newest one (slot %d)"
                    % (info["base_slot"], best_full["slot"]),
                )
            )
    for info in orphans:
        reason = "its base full archive (slot %d) is not present" % info["base_slot"]
        not_used.append(_unused(info["name"], info["path"], reason))
    return dict(
        full=full,
        incremental=usable,
        orphan_incrementals=orphans,
        best_full=best_full,
        best_incremental=best_incremental,
        not_used=sorted(not_used, key=lambda u: u["path"]),
    )


def _newest_first(items):
    return sorted(items, key=lambda i: (i["slot"], i["name"], i["path"]), reverse=True)


def _unused(name, path, reason):
    return dict(name=name, path=path, reason=reason)


def freshness_verdict(local_slot, tip_slot, max_lag_slots=DEFAULT_MAX_LAG_SLOTS):
    """Return (verdict, lag) for the newest usable local slot against the cluster tip.

    missing: no usable local snapshot; unknown: no tip (no endpoint answered); ahead: the
    local slot is above the tip (never fresh: the endpoints lag or serve another cluster, or
    the directory holds another cluster's snapshots); fresh: tip - local <= max_lag_slots;
    stale otherwise. lag is None unless both are known.
    """
    if max_lag_slots < 0:
        raise SnapshotError("max_lag_slots must be 0 or more, got %d" % max_lag_slots)
    if local_slot is None:
        return VERDICT_MISSING, None
    if tip_slot is None:
        return VERDICT_UNKNOWN, None
    lag = tip_slot - local_slot
    if lag < 0:
        return VERDICT_AHEAD, lag
    return (VERDICT_FRESH if lag <= max_lag_slots else VERDICT_STALE), lag


def check_urls(option, urls):
    """Raise SnapshotError naming every entry of ``option`` that is not an http(s) URL with a host."""
    bad = []
    for url in urls:
        try:
            parts = urlsplit(url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a port out of range
            ok = False
        if not ok:
            bad.append(url)
    if bad:
        raise SnapshotError(
            "%s: %s: each entry must be an http:// or https:// URL with a host, for example"
            " http://127.0.0.1:8899 or https://api.mainnet-beta.solana.com"
            % (option, ", ".join(repr(u) for u in bad))
        )


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
    """Ask one endpoint for its cluster (getGenesisHash), its slot and, where offered, its
    highest snapshot slots."""
    started = time.time()
    entry = dict(
        url=url, ok=False, slot=None, genesis_hash=None, error=None, highest_snapshot=None, elapsed=None
    )
    try:
        genesis = rpc_call(url, "getGenesisHash", timeout=timeout, post=post)
        if not (isinstance(genesis, str) and is_base58_hash(genesis)):
            raise RpcProtocolError("%s: getGenesisHash answered %r, not a base58 hash" % (url, genesis))
        slot = rpc_call(url, "getSlot", [{"commitment": commitment}], timeout=timeout, post=post)
        if not _valid_slot(slot):
            raise RpcProtocolError("%s: getSlot answered %r, not a slot number" % (url, slot))
        entry.update(ok=True, slot=slot, genesis_hash=genesis)
        if snapshot_slots:
            try:
                highest = rpc_call(url, "getHighestSnapshotSlot", [], timeout=timeout, post=post)
            except RpcError as exc:
                # Not offered (older nodes: method not found) or no snapshot on that node.
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
        entry.update(ok=False, slot=None, genesis_hash=None, error=exc.msg)
    entry["elapsed"] = round(time.time() - started, 3)
    return entry


def query_endpoints(urls, timeout=5.0, commitment="finalized", snapshot_slots=True):
    """Ask every endpoint at once (one thread each); return the entries in the order given.

    The whole call takes about one timeout per method at most, not one per endpoint.
    """
    limit = 3 * timeout + 5  # three methods per endpoint
    results = [None] * len(urls)

    def work(index, url):
        results[index] = query_endpoint(url, timeout, commitment, snapshot_slots)

    threads = [threading.Thread(target=work, args=(i, u)) for i, u in enumerate(urls)]
    for thread in threads:
        thread.daemon = True
        thread.start()
    deadline = time.time() + limit
    for index, thread in enumerate(threads):
        thread.join(max(0.0, deadline - time.time()))
        if results[index] is None:
            results[index] = dict(
                url=urls[index],
                ok=False,
                slot=None,
                genesis_hash=None,
                highest_snapshot=None,
                elapsed=None,
                error="%s: no answer within %.1f s" % (urls[index], limit),
            )
    return results


def cluster_tip(entries):
    """The tip: the highest slot among the endpoints that answered (None when none did).

    Raises SnapshotError when they answered with different genesis hashes: their slots belong
    to different clusters, and no tip can be taken from them.
    """
    answered = [e for e in entries if e.get("ok")]
    clusters = {}
    for entry in answered:
        clusters.setdefault(entry["genesis_hash"], []).append(entry["url"])
    if len(clusters) > 1:
        raise SnapshotError(
            "the RPC endpoints are on different clusters (getGenesisHash differs: %s): give only"
            " endpoints of the cluster the validator runs on"
            % "; ".join(
                "%s answers %s" % (", ".join(urls), genesis) for genesis, urls in sorted(clusters.items())
            ),
            endpoints=entries,
        )
    return max(e["slot"] for e in answered) if answered else None


def failed_endpoints_warning(entries):
    """A warning when some endpoints gave no usable answer while others did (None otherwise)."""
    failed = [e for e in entries if not e.get("ok")]
    if not failed or len(failed) == len(entries):
        return None
    return "RPC endpoints without a usable answer, the tip is from the others: %s" % "; ".join(
        e["error"] for e in failed
    )


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
    warn=None,
):
    """Everything snapshot_freshness returns (read-only); ``msg`` says the verdict in words."""
    if not os.path.isdir(snapshot_dir):
        raise SnapshotError(
            "snapshot_dir %s does not exist or is not a directory: create it (layer 4,"
            " workload_storage) or fix the path" % snapshot_dir
        )
    check_urls("rpc_endpoints", endpoints)
    try:
        scan = scan_snapshot_dir(snapshot_dir)
    except OSError as exc:
        raise SnapshotError("cannot list %s: %s" % (snapshot_dir, exc)) from None
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
        return "missing: %s holds no full snapshot archive agave would load (see not_used)" % snapshot_dir
    if verdict == VERDICT_UNUSABLE:
        return (
            "unusable: agave would load %s (the newest archive by name), but it is %s: remove or"
            " replace it, then run again" % (broken[0]["path"], broken[0]["problem"])
        )
    if verdict == VERDICT_UNKNOWN:
        return "unknown: local slot %d, but no RPC endpoint answered (%s)" % (
            local,
            "; ".join(e["error"] for e in entries) or "none given",
        )
    if verdict == VERDICT_AHEAD:
        return (
            "ahead: the local slot %d is %d slots above the tip %d of %s: the endpoints lag or"
            " serve another cluster, or %s holds another cluster's snapshots; fix rpc_endpoints or"
            " snapshot_dir (a download does not help)"
            % (local, -lag, tip, ", ".join(e["url"] for e in entries if e["ok"]), snapshot_dir)
        )
    return "%s: local slot %d is %d slots behind the tip %d (limit %d)" % (
        verdict,
        local,
        lag,
        tip,
        report["max_lag_slots"],
    )


def _public(info):
    if info is None:
        return None
    return dict(
        (k, info[k])
        for k in ("name", "path", "kind", "slot", "base_slot", "hash", "size", "problem")
        if k in info
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

    usable = []
    for cand in candidates:
        speed = speeds.get(cand["source"])
        if min_speed and speed is not None and speed < min_speed:
            reject(
                cand["url"],
                "slow",
                "measured %.2f MiB/s, below min_speed %.2f MiB/s"
                % (speed / 1048576.0, min_speed / 1048576.0),
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
                    reject(
                        m["url"],
                        "length",
                        "serves %s with %d bytes, other sources %d" % (name, m["length"], biggest),
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
        return None, rejected, kinds
    options.sort(key=lambda o: (o[0], o[1], o[2]), reverse=True)
    reference = "the tip %d" % tip if tip_checked else "the newest archive on offer (slot %d)" % tip
    within = []
    for option in options:
        effective, archives = option[0], option[4] + (option[5] or [])
        if tip_checked and effective > tip:
            for m in archives:
                reject(m["url"], "ahead", "slot %d is above the cluster tip %d" % (effective, tip))
        elif tip - effective > max_lag_slots:
            for m in archives:
                reject(
                    m["url"],
                    "behind",
                    "slot %d is %d slots behind %s" % (effective, tip - effective, reference),
                )
        else:
            within.append(option)
    if not within:
        return None, rejected, kinds
    effective, members, best_inc = within[0][0], within[0][4], within[0][5]
    plan = dict(effective_slot=effective, full=_archive_plan(members), incremental=None)
    if best_inc:
        plan["incremental"] = _archive_plan(best_inc)
    return plan, rejected, kinds


def no_plan_message(candidates, errors, rejected, kinds, limit=6):
    """Why nothing can be fetched, with the reasons themselves (not only in the result keys)."""
    reasons = ["%s: %s" % (src, "; ".join(errs)) for src, errs in sorted(errors.items())]
    reasons += ["%s: %s" % (url, why) for url, why in sorted(rejected.items())]
    shown = "; ".join(reasons[:limit])
    if len(reasons) > limit:
        shown += "; and %d more (see source_errors and rejected)" % (len(reasons) - limit)
    hints = [REJECT_HINTS[k] for k in sorted(kinds)]
    if errors:
        hints.append(
            "fix the failing sources (an RPC node's base URL such as http://host:8899, or an archive's URL)"
        )
    head = (
        "none of the %d archives found can be used" % len(candidates)
        if candidates
        else "no source offers a snapshot archive"
    )
    return "%s: %s. To fix: %s" % (head, shown or "no reason recorded", "; ".join(hints) or "add sources")


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
                warn("could not delete the old archive %s: %s" % (info["path"], exc.strerror or exc))
            continue
        deleted.append(info["name"])
    return sorted(deleted)


def fetch_snapshots(params, check_mode=False, transfer=None, warn=None):
    """Everything snapshot_fetch does; returns its result dict. Warnings go to ``warn``."""
    transfer = transfer or transfer_mod
    directory = params["snapshot_dir"]
    if not os.path.isdir(directory):
        raise SnapshotError(
            "snapshot_dir %s does not exist or is not a directory: create it (layer 4,"
            " workload_storage) or fix the path" % directory
        )
    check_urls("sources", params["sources"])
    check_urls("rpc_endpoints", params["rpc_endpoints"])
    status_file = params.get("status_file")
    transfer.write_status(status_file, dict(state="discovering", updated=time.time(), pid=os.getpid()))
    try:
        return _fetch(params, check_mode, transfer, warn or (lambda _msg: None))
    except (SnapshotError, transfer.TransferError):
        transfer.write_status(status_file, dict(state="failed", updated=time.time(), pid=os.getpid()))
        raise


def _fetch(params, check_mode, transfer, warn):
    directory, status_file = params["snapshot_dir"], params.get("status_file")
    started = time.time()
    entries, tip, genesis = [], None, None
    if params["rpc_endpoints"]:
        entries = query_endpoints(params["rpc_endpoints"], timeout=params["timeout"], snapshot_slots=False)
        tip = cluster_tip(entries)
        if tip is None:
            raise SnapshotError(
                "no RPC endpoint answered, so no archive's lag can be checked (%s): fix rpc_endpoints,"
                " or leave it empty to take the newest archive on offer unchecked"
                % "; ".join(e["error"] for e in entries),
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
        transfer.write_status(
            status_file, dict(state="done", updated=time.time(), pid=os.getpid(), downloads=[])
        )
        return result
    result["changed"] = True
    if check_mode:
        return result
    _download(params, directory, todo, result, transfer)
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
            downloads=[d["name"] for d in result["downloads"]],
        ),
    )
    return result


def _download(params, directory, todo, result, transfer):
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
