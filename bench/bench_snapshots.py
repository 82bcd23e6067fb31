#!/usr/bin/env python3
"""Snapshot download: strata.ops.snapshot_fetch vs single-stream curl vs aria2c, same run.

Two (or more) real nginx mirrors on 127.0.0.1 serve one real zstd archive with a per-connection
cap C (nginx limit_rate), as busy RPC nodes do. Each tool's rate is given as a fraction of what
its connections could reach at best: min(total connections x C, link), where link is a single
uncapped stream from a third nginx on the same host. aria2c runs with the agave-stack settings
(-x16 -s<16*mirrors> -k50M); snapshot_fetch runs with the same numbers (connections_per_server
16, split 16*mirrors, min_split_size 50 MiB). curl is one stream, timed for a few seconds.

Env: BENCH_SNAP_MIB (archive size, default 1024), BENCH_SNAP_CAP (nginx limit_rate, default 4m),
BENCH_SNAP_MIRRORS (default 2). Prints one final line `bench snapshots: ...`.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))

from snapshot_server import NGINX_PACKAGE, NginxSnapshotServer, nginx_binary  # noqa: E402

MIB = 1024 * 1024
H = "7jMmeXZSNcWPrB2RsTdeXfXrsyW5c1BfPjqoLW2X5T7V"


def parse_rate(text):
    units = {"k": 1024, "m": MIB, "g": 1024 * MIB}
    return int(float(text[:-1]) * units[text[-1].lower()]) if text[-1].lower() in units else int(text)


def curl_rate(url, seconds):
    """Bytes/s of one curl stream over ``seconds`` (or the whole file when it ends first)."""
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            str(seconds),
            "-w",
            "%{size_download} %{time_total}",
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    size, total = int(float(out[0])), float(out[1])
    return size / total


def main():
    if nginx_binary() is None or not shutil.which("aria2c") or not shutil.which("curl"):
        sys.exit(f"bench snapshots: needs nginx ({NGINX_PACKAGE}), aria2c and curl")
    size_mib = int(os.environ.get("BENCH_SNAP_MIB", "1024"))
    cap_text = os.environ.get("BENCH_SNAP_CAP", "4m")
    cap = parse_rate(cap_text)
    mirrors = int(os.environ.get("BENCH_SNAP_MIRRORS", "2"))
    work = tempfile.mkdtemp(prefix="strata-bench-snap-")
    try:
        root = os.path.join(work, "www")
        os.makedirs(root)
        name = f"snapshot-350000000-{H}.tar.zst"
        raw = os.path.join(work, "raw")
        with open(raw, "wb") as handle:
            for _ in range(size_mib):
                handle.write(os.urandom(MIB))
        subprocess.run(["zstd", "-q", "-1", "-T0", raw, "-o", os.path.join(root, name)], check=True)
        os.unlink(raw)
        size = os.path.getsize(os.path.join(root, name))
        servers = [NginxSnapshotServer(root, full=name, rate=cap_text).start() for _ in range(mirrors)]
        uncapped = NginxSnapshotServer(root, full=name).start()
        try:
            link = curl_rate(f"{uncapped.url}/{name}", 10)
            urls = [f"{s.url}/{name}" for s in servers]
            print(
                f"archive {size / MIB:.0f} MiB, {mirrors} mirrors, cap {cap / MIB:.1f} MiB/s per connection,"
                f" link {link / MIB:.0f} MiB/s (one uncapped stream)"
            )

            # curl: one stream, a few seconds are enough for its steady rate
            curl = curl_rate(urls[0], 6)
            curl_bound = min(cap, link)

            # aria2c with the agave-stack settings
            conns = 16 * mirrors
            out = os.path.join(work, "aria2")
            os.makedirs(out)
            started = time.time()
            subprocess.run(
                [
                    "aria2c",
                    "-q",
                    "-x16",
                    f"-s{conns}",
                    "-k50M",
                    "--allow-overwrite=true",
                    "-d",
                    out,
                    "-o",
                    name,
                    *urls,
                ],
                check=True,
            )
            aria2 = size / (time.time() - started)

            # snapshot_fetch with the same numbers
            dest = os.path.join(work, "fetch")
            os.makedirs(dest)
            args = {
                "snapshot_dir": dest,
                "sources": [s.url for s in servers],
                "incremental": False,
                "min_speed": 0,
                "speed_test_seconds": 0,
                "connections_per_server": 16,
                "split": conns,
                "min_split_size": 50 * MIB,
                "verify_archive": False,
                "checksum_from_source": False,
            }
            args_file = os.path.join(work, "args.json")
            with open(args_file, "w") as handle:
                json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
            env = dict(os.environ, PYTHONPATH=os.path.join(REPO, ".collections"))
            module = os.path.join(REPO, "plugins", "modules", "snapshot_fetch.py")
            started = time.time()
            proc = subprocess.run(
                [sys.executable, module, args_file], capture_output=True, text=True, env=env, check=False
            )
            wall = time.time() - started
            result = json.loads(proc.stdout)
            if result.get("failed"):
                sys.exit("bench snapshots: snapshot_fetch failed: " + result["msg"])
            download = result["downloads"][0]
            fetch = size / wall
            bound = min(conns * cap, link)
        finally:
            for s in servers:
                s.stop()
            uncapped.stop()
        print(f"curl      {curl / MIB:8.1f} MiB/s  bound {curl_bound / MIB:.1f} (1 connection)")
        print(f"aria2c    {aria2 / MIB:8.1f} MiB/s  bound {bound / MIB:.1f} ({conns} connections, -k50M)")
        print(f"snapshot_fetch {fetch / MIB:8.1f} MiB/s  bound {bound / MIB:.1f} ({download['connections']} "
              f"connections; transfer {download['elapsed_s']:.1f} s of {wall:.1f} s wall)")  # fmt: skip
        print(
            f"bench snapshots: fetch {fetch / bound:.2f}, aria2c {aria2 / bound:.2f},"
            f" curl {curl / curl_bound:.2f}"
            f" of min(conns x C, link); fetch/aria2c {fetch / aria2:.2f}x, fetch/curl {fetch / curl:.1f}x"
            f" ({size / MIB:.0f} MiB, {mirrors} mirrors, C={cap / MIB:.0f} MiB/s)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
