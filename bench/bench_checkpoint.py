"""bench checkpoint: strata.ops.pod_checkpoint dump rate against the disk's sequential write rate.

For 1 GiB and 4 GiB of resident memory filled with random bytes (a random 64 MiB block from
os.urandom, copied into each 64 MiB chunk rotated by a chunk-specific, non-page-aligned offset,
so every page differs and none is a zero page; sizes are whole 64 MiB chunks), the module
dumps the process (pid target, leave_running) into a directory on the same file system as the
baseline. The baseline is
``dd if=/dev/zero bs=1M conv=fdatasync`` of the same size, in the same run.

Two dump rates are reported: CRIU's own (pages written / dump wall time; the images land in the
page cache, as in production) and the durable one (the dump followed by fsync of every image
file, which is what dd's conv=fdatasync measures). The ratios are dump/dd (1.0 = as fast as
the disk). Dumps and dd files are removed afterwards.

Env: STRATA_CRIU (default ~/.cache/strata-ops/bin/criu), STRATA_BENCH_DIR (default .tmp/bench-checkpoint
in the checkout), STRATA_BENCH_SIZES_GIB (default "1,4").
"""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(REPO, "plugins", "modules", "pod_checkpoint.py")
CRIU = os.environ.get("STRATA_CRIU", os.path.expanduser("~/.cache/strata-ops/bin/criu"))
BENCH_DIR = os.environ.get("STRATA_BENCH_DIR", os.path.join(REPO, ".tmp", "bench-checkpoint"))
SIZES = [int(s) for s in os.environ.get("STRATA_BENCH_SIZES_GIB", "1,4").split(",")]
CHUNK = 64 << 20

HOLDER = r"""
import mmap, os, sys, time
size, chunk = int(sys.argv[1]), int(sys.argv[2])
block = memoryview(os.urandom(chunk))
mem = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i, off in enumerate(range(0, size, chunk)):
    r = (i * 4099 + 17) % chunk  # rotation: every page content differs, none is zero
    head = chunk - r
    mem[off:off + head] = block[r:]
    mem[off + head:off + chunk] = block[:r]
print("ready", flush=True)
time.sleep(3600)
"""


def rss(pid):
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def dd_rate(size_bytes):
    path = os.path.join(BENCH_DIR, f"dd-{uuid.uuid4().hex[:6]}")
    count = size_bytes >> 20
    start = time.perf_counter()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={count}", "conv=fdatasync"],
        check=True,
        capture_output=True,
    )
    elapsed = time.perf_counter() - start
    os.unlink(path)
    return size_bytes / elapsed


def run_module(args):
    args_file = os.path.join(BENCH_DIR, f"args-{uuid.uuid4().hex[:6]}.json")
    with open(args_file, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, ".collections"))
    try:
        proc = subprocess.run(
            [sys.executable, MODULE, args_file], capture_output=True, text=True, env=env, check=False
        )
    finally:
        os.unlink(args_file)
    result = json.loads(proc.stdout)
    if result.get("failed"):
        raise SystemExit("bench checkpoint: dump failed: " + result["msg"])
    return result


def fsync_tree(path):
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def bench_size(gib):
    size = gib << 30
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(size), str(CHUNK)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own session: CRIU dumps it without --shell-job
    )
    try:
        start = time.perf_counter()
        if holder.stdout.readline().strip() != b"ready":
            raise SystemExit("bench checkpoint: the memory holder did not start")
        fill = time.perf_counter() - start
        resident = rss(holder.pid)
        images = os.path.join(BENCH_DIR, f"images-{gib}g")
        start = time.perf_counter()
        result = run_module({"pid": holder.pid, "images_dir": images, "criu_path": CRIU, "keep": 1})
        module_wall = time.perf_counter() - start
        manifest = result["manifest"]
        t0 = time.perf_counter()
        fsync_tree(result["checkpoint_dir"])
        sync_s = time.perf_counter() - t0
        written = manifest["stats"]["pages_written_bytes"]
        criu_s = manifest["dump_wall_s"]
        row = {
            "gib": gib,
            "rss": resident,
            "fill_s": fill,
            "pages_written": written,
            "images_bytes": manifest["sizes"]["images_bytes"],
            "criu_s": criu_s,
            "module_s": module_wall,
            "sync_s": sync_s,
            "frozen_ms": manifest["stats"]["frozen_time_us"] / 1000.0,
            "memwrite_ms": manifest["stats"]["memwrite_time_us"] / 1000.0,
            "dump_rate": written / criu_s,
            "durable_rate": written / (criu_s + sync_s),
        }
        shutil.rmtree(images)
    finally:
        holder.kill()
        holder.wait()
    row["dd_rate"] = dd_rate(size)  # same file system, same run, right after the dump
    return row


def main():
    if not os.access(CRIU, os.X_OK):
        raise SystemExit(f"bench checkpoint: no CRIU at {CRIU} (run tests/testbed/up or set STRATA_CRIU)")
    os.makedirs(BENCH_DIR, exist_ok=True)
    rows = []
    try:
        for gib in SIZES:
            row = bench_size(gib)
            rows.append(row)
            print(
                "{gib} GiB: rss {r:.2f} GiB, filled in {fill_s:.1f} s; dump {written:.2f} GiB in "
                "{criu_s:.2f} s (module {module_s:.2f} s, frozen {frozen_ms:.0f} ms, memwrite "
                "{memwrite_ms:.0f} ms) = {dr:.0f} MB/s; +fsync {sync_s:.2f} s = {ur:.0f} MB/s; "
                "dd conv=fdatasync {dd:.0f} MB/s".format(
                    r=row["rss"] / 2**30,
                    written=row["pages_written"] / 2**30,
                    dr=row["dump_rate"] / 1e6,
                    ur=row["durable_rate"] / 1e6,
                    dd=row["dd_rate"] / 1e6,
                    **row,
                ),
                flush=True,
            )
    finally:
        shutil.rmtree(BENCH_DIR, ignore_errors=True)
    parts = [
        "{gib}GiB dump/dd {a:.2f}x (durable {b:.2f}x; {dr:.0f} vs {dd:.0f} MB/s)".format(
            gib=row["gib"],
            a=row["dump_rate"] / row["dd_rate"],
            b=row["durable_rate"] / row["dd_rate"],
            dr=row["dump_rate"] / 1e6,
            dd=row["dd_rate"] / 1e6,
        )
        for row in rows
    ]
    print("bench checkpoint: " + "; ".join(parts))


if __name__ == "__main__":
    main()
