# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Solana JSON-RPC: the cluster's tip, its genesis, and the snapshots an RPC node offers."""

import json
import threading
import time
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from ansible.module_utils.urls import open_url

from ansible_collections.strata.ops.plugins.module_utils.snapshots import SnapshotError
from ansible_collections.strata.ops.plugins.module_utils.snapshots.names import is_base58_hash


class RpcError(SnapshotError):
    """An endpoint did not give a usable answer (transport, garbage, or JSON-RPC error)."""


class RpcTransportError(RpcError):
    pass


class RpcProtocolError(RpcError):
    pass


class RpcRemoteError(RpcError):
    """The endpoint answered with a JSON-RPC error object."""

    def __init__(self, msg, code=None, **details):
        super().__init__(msg, code=code, **details)
        self.code = code


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
        listed = ", ".join(repr(u) for u in bad)
        raise SnapshotError(
            f"{option}: {listed}: each entry must be an http:// or https:// URL with a host, for example"
            " http://127.0.0.1:8899 or https://api.mainnet-beta.solana.com"
        )


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
        remote = _json_rpc_error(url, raw)
        if remote is not None:
            raise remote from None
        raise RpcTransportError(f"{url}: HTTP {exc.code} {exc.reason}", status=exc.code) from None
    except URLError as exc:
        raise RpcTransportError(f"{url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, bad URLs
        raise RpcTransportError(f"{url}: {exc}") from None
    if len(raw) > 1024 * 1024:
        raise RpcProtocolError(f"{url}: answer to {method} is larger than 1 MiB")
    try:
        answer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise RpcProtocolError(f"{url}: answer to {method} is not JSON: {raw[:80]!r}") from None
    if not isinstance(answer, dict):
        raise RpcProtocolError(f"{url}: answer to {method} is not a JSON-RPC object")
    remote = _json_rpc_error(url, answer)
    if remote is not None:
        raise remote
    if "result" not in answer:
        raise RpcProtocolError(f"{url}: answer to {method} has neither result nor error")
    return answer["result"]


def _json_rpc_error(url, answer):
    if isinstance(answer, bytes):
        try:
            answer = json.loads(answer.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
    if not isinstance(answer, dict) or not isinstance(answer.get("error"), dict):
        return None
    err = answer["error"]
    code = err.get("code")
    # Every endpoint error starts with its URL, as transport errors do: an operator with several
    # endpoints must see which one said it.
    return RpcRemoteError(f"{url}: JSON-RPC error {code}: {err.get('message', '')}", code=code)


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
            raise RpcProtocolError(f"{url}: getGenesisHash answered {genesis!r}, not a base58 hash")
        slot = rpc_call(url, "getSlot", [{"commitment": commitment}], timeout=timeout, post=post)
        if not _valid_slot(slot):
            raise RpcProtocolError(f"{url}: getSlot answered {slot!r}, not a slot number")
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
                    entry["highest_snapshot_error"] = f"getHighestSnapshotSlot answered {highest!r}"
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
                error=f"{urls[index]}: no answer within {limit:.1f} s",
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
        answers = "; ".join(
            f"{', '.join(urls)} answers {genesis}" for genesis, urls in sorted(clusters.items())
        )
        raise SnapshotError(
            f"the RPC endpoints are on different clusters (getGenesisHash differs: {answers}): give only"
            " endpoints of the cluster the validator runs on",
            endpoints=entries,
        )
    return max(e["slot"] for e in answered) if answered else None


def failed_endpoints_warning(entries):
    """A warning when some endpoints gave no usable answer while others did (None otherwise)."""
    failed = [e for e in entries if not e.get("ok")]
    if not failed or len(failed) == len(entries):
        return None
    errors = "; ".join(e["error"] for e in failed)
    return f"RPC endpoints without a usable answer, the tip is from the others: {errors}"


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
