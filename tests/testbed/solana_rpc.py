#!/usr/bin/env python3
"""STAND-IN for a Solana JSON-RPC node (a real validator cannot run on this test bed).

Implements only what strata.ops asks a node, with the request and answer shapes documented at
https://solana.com/docs/rpc (JSON-RPC 2.0 over HTTP POST, ``Content-Type: application/json``):

``getGenesisHash`` (no params; https://solana.com/docs/rpc/http/getgenesishash)
    -> ``{"jsonrpc": "2.0", "result": "<base58 genesis hash>", "id": <id>}``: the cluster's
    genesis hash (``genesis_hash``, mainnet-beta's by default; give another to play another
    cluster). Params other than none or ``[]`` answer ``-32602``, as a real node does.
``getSlot`` params ``[{"commitment": "processed"|"confirmed"|"finalized"}]`` (optional)
    -> ``{"jsonrpc": "2.0", "result": <u64 slot>, "id": <id>}``
    The processed slot advances ``slots_per_second`` (2.5, mainnet's pace) from ``start_slot``;
    confirmed is 1 slot behind it and finalized 32 (as on a real node, roughly).
``getHighestSnapshotSlot`` (no params)
    -> ``{"result": {"full": <u64>, "incremental": <u64>|null}}``; with no snapshot the node
    answers error ``-32008`` "No snapshot"; with ``offer_snapshot_slot=False`` it behaves like
    an older node: ``-32601`` "Method not found".
Errors: ``-32700`` parse error (body not JSON), ``-32600`` invalid request (not an object, no
method), ``-32601`` unknown method, ``-32602`` invalid params — all with HTTP 200 as real nodes do.

Failure modes for tests (``mode``): ``ok``; ``garbage`` (HTTP 200, body not JSON); ``error``
(every call answers JSON-RPC error ``-32005`` "Node is behind by 1200 slots");
``http500``; ``slow`` (waits ``delay`` seconds before answering, then answers normally);
``wrong_type`` (``getSlot`` result is a string).

Use from tests::

    with SolanaRpcStandIn(start_slot=350_000_000) as rpc:
        rpc.url  # http://127.0.0.1:<port>
    with SolanaRpcStandIn(genesis_hash=DEVNET_GENESIS) as other:  # another cluster
        ...

or as a process: ``python3 tests/testbed/solana_rpc.py --port 8899 --start-slot 350000000``.
"""

import argparse
import json
import time

from http_stand_in import HTTPStandIn, QuietHandler

MODES = ("ok", "garbage", "error", "http500", "slow", "wrong_type")
# The real clusters' genesis hashes (what getGenesisHash answers on each).
MAINNET_GENESIS = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d"
DEVNET_GENESIS = "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG"
TESTNET_GENESIS = "4uhcVJyU9pJkvQyS88uRDiswHXSCkY3zQawwpjk2NsNY"


class SolanaRpcStandIn(HTTPStandIn):
    def __init__(
        self,
        *,
        start_slot=350_000_000,
        slots_per_second=2.5,
        mode="ok",
        delay=0.0,
        highest_snapshot=None,
        offer_snapshot_slot=True,
        genesis_hash=MAINNET_GENESIS,
        host="127.0.0.1",
        port=0,
    ):
        if mode not in MODES:
            raise ValueError("mode must be one of {}".format(", ".join(MODES)))
        self.start_slot = start_slot
        self.slots_per_second = slots_per_second
        self.mode = mode
        self.delay = delay
        self.highest_snapshot = highest_snapshot  # {"full": n, "incremental": m|None} or None
        self.offer_snapshot_slot = offer_snapshot_slot
        self.genesis_hash = genesis_hash
        self.started = time.monotonic()
        self.requests = []
        super().__init__(self._handler(), host=host, port=port)

    @property
    def port(self):
        return self._server.server_address[1]

    def slot(self, commitment="finalized"):
        processed = self.start_slot + int((time.monotonic() - self.started) * self.slots_per_second)
        return max(0, processed - {"processed": 0, "confirmed": 1, "finalized": 32}[commitment])

    def answer(self, request):
        """The JSON-RPC answer object for one decoded request (or None to send garbage)."""
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _error(None, -32600, "Invalid request")
        rid = request.get("id")
        method, params = request["method"], request.get("params") or []
        if self.mode == "error":
            return _error(rid, -32005, "Node is behind by 1200 slots", {"numSlotsBehind": 1200})
        if method == "getGenesisHash":
            if params:
                return _error(rid, -32602, "Invalid params: No parameters were expected")
            return {"jsonrpc": "2.0", "result": self.genesis_hash, "id": rid}
        if method == "getSlot":
            commitment = "finalized"
            if params:
                if not isinstance(params, list) or not isinstance(params[0], dict):
                    return _error(rid, -32602, "Invalid params: expected a config object")
                commitment = params[0].get("commitment", "finalized")
                if commitment not in ("processed", "confirmed", "finalized"):
                    return _error(rid, -32602, f"Invalid params: unknown commitment {commitment!r}")
            if self.mode == "wrong_type":
                return {"jsonrpc": "2.0", "result": str(self.slot(commitment)), "id": rid}
            return {"jsonrpc": "2.0", "result": self.slot(commitment), "id": rid}
        if method == "getHighestSnapshotSlot" and self.offer_snapshot_slot:
            if not self.highest_snapshot:
                return _error(rid, -32008, "No snapshot")
            result = {
                "full": self.highest_snapshot["full"],
                "incremental": self.highest_snapshot.get("incremental"),
            }
            return {"jsonrpc": "2.0", "result": result, "id": rid}
        return _error(rid, -32601, "Method not found")

    def _handler(self):
        stand_in = self

        class Handler(QuietHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stand_in.requests.append(body)
                if stand_in.mode == "slow":
                    time.sleep(stand_in.delay)
                if stand_in.mode == "http500":
                    return self._send(500, b"Internal Server Error", "text/plain")
                if stand_in.mode == "garbage":
                    return self._send(200, b"<html>502 Bad Gateway</html>", "text/html")
                try:
                    request = json.loads(body)
                except ValueError:
                    answer = _error(None, -32700, "Parse error")
                else:
                    answer = stand_in.answer(request)
                return self._send(200, json.dumps(answer).encode(), "application/json")

            def _send(self, status, payload, ctype):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


def _error(rid, code, message, data=None):
    err = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "error": err, "id": rid}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8899)
    parser.add_argument("--start-slot", type=int, default=350_000_000)
    parser.add_argument("--slots-per-second", type=float, default=2.5)
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--full", type=int, help="getHighestSnapshotSlot full slot")
    parser.add_argument("--incremental", type=int, help="getHighestSnapshotSlot incremental slot")
    parser.add_argument("--genesis-hash", default=MAINNET_GENESIS, help="getGenesisHash answer (the cluster)")
    args = parser.parse_args()
    highest = {"full": args.full, "incremental": args.incremental} if args.full is not None else None
    rpc = SolanaRpcStandIn(
        start_slot=args.start_slot,
        slots_per_second=args.slots_per_second,
        mode=args.mode,
        delay=args.delay,
        highest_snapshot=highest,
        genesis_hash=args.genesis_hash,
        port=args.port,
    ).start()
    print(f"stand-in Solana RPC on {rpc.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        rpc.stop()


if __name__ == "__main__":
    main()
