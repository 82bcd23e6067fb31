#!/usr/bin/env python3
"""A snapshot source and an RPC node for the lab, for manual runs of recover.yml (and layer 5 with
the snapshot step): `tests/testbed/snapshot-source up|down|status|vars`.

`up` starts, in the background, on the test machine's address on the lab network (the lab hosts
reach it there):

* real nginx (tests/testbed/snapshot_server.py) serving a full and an incremental snapshot
  archive named by agave's rule (`snapshot-<slot>-<hash>.tar.zst`, zstd-compressed tars), with
  the `/snapshot.tar.bz2` redirects an RPC node answers;
* the STAND-IN for a Solana RPC node (tests/testbed/solana_rpc.py: it answers getSlot,
  getGenesisHash and getHighestSnapshotSlot as the JSON-RPC API documented at
  https://solana.com/docs/rpc does; a real validator cannot run here), its tip a few thousand
  slots above the archives, so they are fresh;

and writes the extra vars that point layer 5 at them (`vars` prints that file's path):

    tests/testbed/snapshot-source up
    ansible-playbook -i inventories/lab playbooks/recover.yml -e @"$(tests/testbed/snapshot-source vars)" ...
    tests/testbed/snapshot-source down

`up` while it runs prints the same again; each `up` after a `down` serves newer slots.
"""

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from snapshot_server import NginxSnapshotServer
from solana_rpc import SolanaRpcStandIn
from testbed_paths import CACHE

HERE = os.path.dirname(os.path.abspath(__file__))
STATE_DIR = os.path.join(CACHE, "snapshot-source")
STATE = os.path.join(STATE_DIR, "state.json")
VARS = os.path.join(STATE_DIR, "vars.yml")
LAB_NETWORK = "strata-lab"  # tests/testbed/lib.sh LAB_NETWORK
HASHES = ("7jMmeXZSNcWPrB2RsTdeXfXrsyW5c1BfPjqoLW2X5T7V", "4uQeVj5tqViQh7yWWGStvkEG1Zmhx6uasJtWCJziofM")
# The RPC tip is this many slots above the full archive: fresh (layer 5's limit is 20000).
TIP_AHEAD = 3500


def lab_gateway():
    """The test machine's address on the lab network, where the lab hosts reach it."""
    proc = subprocess.run(
        ["docker", "network", "inspect", LAB_NETWORK, "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        sys.exit(f"no lab network {LAB_NETWORK} (tests/testbed/up lab starts it): {proc.stderr.strip()}")
    return proc.stdout.strip()


def make_archive(path, slot, size):
    """A zstd-compressed tar, as agave writes its snapshot archives (contents are filler)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, body in (("version", b"1.2.0\n"), (f"snapshots/{slot}/{slot}", os.urandom(size))):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    subprocess.run(["zstd", "-q", "-1", "-f", "-o", path], input=data.getvalue(), check=True)


def read_state():
    try:
        with open(STATE) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def alive(state):
    """The serving process runs and both servers answer."""
    if not state:
        return False
    try:
        os.kill(state["pid"], 0)
        with urllib.request.urlopen(state["source"] + "/" + state["full"], timeout=2) as reply:
            reply.read(1)
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "getSlot"}).encode()
        request = urllib.request.Request(state["rpc"], body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=2) as reply:
            return "result" in json.load(reply)
    except (OSError, ValueError):
        return False


def report(state):
    print(f"snapshot source (nginx): {state['source']} serving {state['full']} and {state['incremental']}")
    print(f"Solana RPC stand-in:     {state['rpc']} (tip slot {state['tip']} and rising)")
    print(f"extra vars for layer 5 and recover.yml: -e @{VARS}")


def serve(args):
    """Run both servers in the foreground until SIGTERM (what `up` starts in the background)."""
    slot = args.slot
    www = os.path.join(STATE_DIR, "www")
    os.makedirs(www, exist_ok=True)
    for old in os.listdir(www):
        os.remove(os.path.join(www, old))
    full = f"snapshot-{slot}-{HASHES[0]}.tar.zst"
    incremental = f"incremental-snapshot-{slot}-{slot + 1500}-{HASHES[1]}.tar.zst"
    make_archive(os.path.join(www, full), slot, 768 * 1024)
    make_archive(os.path.join(www, incremental), slot + 1500, 128 * 1024)
    nginx = NginxSnapshotServer(www, full=full, incremental=incremental, host="0.0.0.0")
    rpc = SolanaRpcStandIn(start_slot=slot + TIP_AHEAD, host="0.0.0.0")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_signal: stop.append(True))
    with nginx, rpc:
        state = {
            "pid": os.getpid(),
            "source": f"http://{args.address}:{nginx.port}",
            "rpc": f"http://{args.address}:{rpc.port}",
            "full": full,
            "incremental": incremental,
            "tip": slot + TIP_AHEAD,
        }
        extra = {
            "workload_deploy_rpc_endpoints": [state["rpc"]],
            "workload_deploy_snapshot_sources": [state["source"]],
            # small archives on a local network: no speed floor; poll the download often
            "workload_deploy_snapshot_fetch_options": {"min_speed": 0},
            "workload_deploy_snapshot_fetch_poll": 1,
        }
        with open(VARS, "w") as handle:
            json.dump(extra, handle, indent=2)  # JSON is YAML: -e @vars.yml reads it
        with open(STATE + ".tmp", "w") as handle:
            json.dump(state, handle)
        os.replace(STATE + ".tmp", STATE)
        print(f"serving: {json.dumps(state)}", flush=True)
        while not stop:
            time.sleep(0.2)
    for path in (STATE, VARS):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def up(args):
    state = read_state()
    if alive(state):
        report(state)
        return 0
    if state:
        down(args)
    os.makedirs(STATE_DIR, exist_ok=True)
    address = args.address or lab_gateway()
    # a newer slot on every start: a second recover fetches a newer snapshot
    slot = args.slot or 350_000_000 + int(time.time()) % 10_000_000
    log = os.path.join(STATE_DIR, "serve.log")
    with open(log, "w") as out:
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve", "--address", address, "--slot", str(slot)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives this command
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = read_state()
        if alive(state):
            report(state)
            return 0
        time.sleep(0.2)
    with open(log) as handle:
        sys.exit(f"the snapshot source did not come up within 30 s; {log}:\n{handle.read()[-2000:]}")


def down(_args):
    state = read_state()
    if not state:
        print("snapshot source: not running")
        return 0
    with contextlib.suppress(ProcessLookupError):
        os.kill(state["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            os.kill(state["pid"], 0)  # ProcessLookupError once it is gone
            time.sleep(0.1)
        os.kill(state["pid"], signal.SIGKILL)
    for path in (STATE, VARS):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    print("snapshot source: stopped")
    return 0


def status(_args):
    state = read_state()
    if alive(state):
        report(state)
        return 0
    print("snapshot source: not running (tests/testbed/snapshot-source up starts it)")
    return 3


def vars_path(_args):
    if not alive(read_state()):
        sys.exit("snapshot source: not running (tests/testbed/snapshot-source up starts it)")
    print(VARS)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start both servers (idempotent) and print the extra vars")
    start.add_argument("--address", help="where the lab hosts reach it (default: the lab network gateway)")
    start.add_argument("--slot", type=int, help="slot of the full archive (default: a new one each start)")
    commands.add_parser("down", help="stop both servers")
    commands.add_parser("status", help="exit 0 and print the URLs when running, else exit 3")
    commands.add_parser("vars", help="print the path of the extra vars file (-e @PATH)")
    foreground = commands.add_parser("serve", help=argparse.SUPPRESS)
    foreground.add_argument("--address", required=True)
    foreground.add_argument("--slot", type=int, required=True)
    args = parser.parse_args()
    handlers = {"up": up, "down": down, "status": status, "vars": vars_path, "serve": serve}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
