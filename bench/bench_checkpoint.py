"""bench checkpoint: strata.ops.pod_checkpoint dump rate against the disk's sequential write rate.

For 0.25 GiB and 4 GiB of resident memory filled with random bytes (a random 64 MiB block from
os.urandom, copied into each 64 MiB chunk rotated by a chunk-specific, non-page-aligned offset,
so every page differs and none is a zero page; sizes are whole 64 MiB chunks), the module
dumps the process (pid target, leave_running) into a directory on the same file system as the
baseline, ``dd if=/dev/zero bs=1M conv=fdatasync`` of the same size.

The headline ratio is durable against durable: the dump followed by fsync of every image file
(pages written / (CRIU dump wall + fsync)) against dd conv=fdatasync; both include getting the
bytes onto the disk. The module starts the writeback while CRIU writes and syncs the dump itself
before its manifest (``durable_s``); the bench's own fsync after it finds nothing left and counts.
Also printed: page cache against page cache (CRIU's wall alone against dd without fdatasync, its
file deleted before writeback) and module+fsync (the module's whole wall: Python start, target
discovery, stats, manifest; a fixed ~0.3 s, nothing reads the images again).

Same conditions for both sides:
* dd runs while the memory holder is resident, as the dump does;
* dd and dump alternate in ABBA order (round 1 dd then dump, round 2 dump then dd), so the
  load of other jobs and the disk's recent history (a durable 4 GiB write right after another
  one is slower on this test bed's virtual disk) hit both; the summary gives the mean of the
  per-round ratios and their min-max spread;
* every timed step starts right after the same untimed page-cache write of the same size (its
  file deleted at once), so both find memory that was freed a moment earlier. This matters on
  VMs that hand free guest memory back to the host (virtio-balloon free page reporting, as on
  this test bed's Firecracker VM): with a 4 GiB process resident, a 4 GiB page-cache write runs
  at ~3 GB/s into memory freed <1 s earlier but at ~0.6-0.8 GB/s into memory freed >10 s earlier
  or never used (a host fault per page), whoever writes. The first write's rate is printed as
  "warm-up" to show it. The previous order (the dump first after the fill, into such memory;
  dd after the holder was killed and the images deleted, into 8 GiB of just-freed memory; and a
  page-cache dump rate against a durable dd rate) read 0.15-0.41x for 4 GiB.

Env: STRATA_CRIU (default ~/.cache/strata-ops/bin/criu), STRATA_BENCH_DIR (default
.tmp/bench-checkpoint in the checkout), STRATA_BENCH_SIZES_GIB (default "0.25,4"),
STRATA_BENCH_ROUNDS (default 2; each round is one dd pair and one dump).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))
from benchkit import growth_lines  # noqa: E402
from memory_holder import CHUNK  # noqa: E402
from results import record  # noqa: E402
from testbed_paths import BIN  # noqa: E402

MODULE = os.path.join(REPO, "plugins", "modules", "pod_checkpoint.py")
CRIU = os.environ.get("STRATA_CRIU", os.path.join(BIN, "criu"))
BENCH_DIR = os.environ.get("STRATA_BENCH_DIR", os.path.join(REPO, ".tmp", "bench-checkpoint"))
# GiB, fractions allowed (whole 64 MiB chunks): 0.25 GiB keeps a second size for the growth line
# at a quarter of what 1 GiB took (its fill and warm-up writes run at ~90 MB/s on this test bed).
SIZES = [float(s) for s in os.environ.get("STRATA_BENCH_SIZES_GIB", "0.25,4").split(",")]
ROUNDS = int(os.environ.get("STRATA_BENCH_ROUNDS", "2"))
GOAL = 0.70

# The memory holder: every page different, none zero (tests/testbed/memory_holder.py), passed as
# source with -c so that it runs as well in a container without the checkout.
HOLDER = pathlib.Path(REPO, "tests", "testbed", "memory_holder.py").read_text()


def rss(pid):
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def dd_seconds(size_bytes, durable):
    """Seconds for dd of size_bytes into a new file; durable adds conv=fdatasync."""
    path = os.path.join(BENCH_DIR, f"dd-{uuid.uuid4().hex[:6]}")
    argv = ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={size_bytes >> 20}"]
    if durable:
        argv.append("conv=fdatasync")
    start = time.perf_counter()
    try:
        subprocess.run(argv, check=True, capture_output=True)
        return time.perf_counter() - start
    finally:
        os.unlink(path)  # a page-cache run's dirty pages are dropped, not written back later


def run_module(args):
    """pod_checkpoint with ``args``, as Ansible runs it; its result (the bench stops when it fails)."""
    os.makedirs(BENCH_DIR, exist_ok=True)
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
        raise SystemExit(f"bench: pod_checkpoint failed: {result['msg']}")
    return result


def fsync_tree(path):
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def dump_once(pid, gib):
    images = os.path.join(BENCH_DIR, f"images-{gib:g}g")
    start = time.perf_counter()
    result = run_module({"pid": pid, "images_dir": images, "criu_path": CRIU, "keep": 1})
    module_s = time.perf_counter() - start
    t0 = time.perf_counter()
    fsync_tree(result["checkpoint_dir"])  # the module made it durable: what is left (~0) counts too
    manifest = result["manifest"]
    sync_s = manifest["durable_s"] + time.perf_counter() - t0
    shutil.rmtree(images)
    return {
        "written": manifest["stats"]["pages_written_bytes"],
        "images_bytes": manifest["sizes"]["images_bytes"],
        "criu_s": manifest["dump_wall_s"],
        "module_s": module_s,
        "sync_s": sync_s,
        "frozen_ms": manifest["stats"]["frozen_time_us"] / 1000.0,
        "memwrite_ms": manifest["stats"]["memwrite_time_us"] / 1000.0,
    }


def spread(values):
    return sum(values) / len(values), min(values), max(values)


def holder_bytes(gib):
    """The memory the holder fills for ``gib`` GiB: whole chunks, at least one."""
    return max(CHUNK, int(gib * 2**30) // CHUNK * CHUNK)


def bench_size(gib):
    size = holder_bytes(gib)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(size)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own session: CRIU dumps it without --shell-job
    )
    try:
        start = time.perf_counter()
        if not holder.stdout.readline().startswith(b"ready"):
            raise SystemExit("bench checkpoint: the memory holder did not start")
        fill = time.perf_counter() - start
        resident = rss(holder.pid)
        # Every timed step starts right after the same untimed page-cache write of `size` bytes
        # (deleted at once): both sides find the same just-freed memory. The first one's rate is
        # printed: it shows what a writer into memory handed back to the host gets.
        warm_s = dd_seconds(size, durable=False)
        dumps, dds, rounds = [], [], []
        for number in range(ROUNDS):
            dump = dd = None
            for step in ("dd", "dump") if number % 2 == 0 else ("dump", "dd"):
                if step == "dd":
                    durable_s = dd_seconds(size, True)
                    dd_seconds(size, False)
                    dd = {"durable_s": durable_s, "cache_s": dd_seconds(size, False)}
                    dds.append(dd)
                else:
                    dump = dump_once(holder.pid, gib)
                    dumps.append(dump)
                if (number, step) != (ROUNDS - 1, "dd" if number % 2 else "dump"):
                    dd_seconds(size, False)
            rounds.append(
                {
                    "durable": dump["written"] / (dump["criu_s"] + dump["sync_s"]) * dd["durable_s"] / size,
                    "cache": dump["written"] / dump["criu_s"] * dd["cache_s"] / size,
                    "module": dump["written"] / (dump["module_s"] + dump["sync_s"]) * dd["durable_s"] / size,
                }
            )
    finally:
        holder.kill()
        holder.wait()
    return {
        "gib": gib,
        "rss": resident,
        "fill_s": fill,
        "warm_rate": size / warm_s,
        "dumps": dumps,
        "dds": dds,
        "rounds": rounds,
        "size": size,
    }


def report(row):
    size = row["size"]
    print(
        "{gib:g} GiB: rss {r:.2f} GiB, filled in {f:.1f} s; warm-up page-cache write {w:.0f} MB/s".format(
            gib=row["gib"], r=row["rss"] / 2**30, f=row["fill_s"], w=row["warm_rate"] / 1e6
        )
    )
    for dump in row["dumps"]:
        print(
            "  dump {g:.2f} GiB: criu {criu_s:.2f} s (frozen {frozen_ms:.0f} ms, memwrite "
            "{memwrite_ms:.0f} ms) = {c:.0f} MB/s; +fsync {sync_s:.2f} s = {d:.0f} MB/s; "
            "module {module_s:.2f} s".format(
                g=dump["written"] / 2**30,
                c=dump["written"] / dump["criu_s"] / 1e6,
                d=dump["written"] / (dump["criu_s"] + dump["sync_s"]) / 1e6,
                **dump,
            )
        )
    for dd in row["dds"]:
        print(
            "  dd: conv=fdatasync {a:.0f} MB/s; page cache {b:.0f} MB/s".format(
                a=size / dd["durable_s"] / 1e6, b=size / dd["cache_s"] / 1e6
            )
        )
    for key, label in (("durable", "durable"), ("cache", "page cache"), ("module", "module+fsync")):
        mean, low, high = spread([r[key] for r in row["rounds"]])
        row[key] = (mean, low, high)
        print(f"  dump/dd {label}: {mean:.2f}x (rounds {low:.2f}-{high:.2f}x)")
    sys.stdout.flush()


def main():
    if not os.access(CRIU, os.X_OK):
        raise SystemExit(f"bench checkpoint: no CRIU at {CRIU} (run tests/testbed/up or set STRATA_CRIU)")
    os.makedirs(BENCH_DIR, exist_ok=True)
    rows = []
    try:
        for gib in SIZES:
            row = bench_size(gib)
            report(row)
            rows.append(row)
    finally:
        shutil.rmtree(BENCH_DIR, ignore_errors=True)
    parts = [
        "{gib:g}GiB dump/dd durable {d[0]:.2f}x ({d[1]:.2f}-{d[2]:.2f}; page cache {c[0]:.2f}x, "
        "module+fsync {m[0]:.2f}x)".format(gib=row["gib"], d=row["durable"], c=row["cache"], m=row["module"])
        for row in rows
    ]
    worse = "the page cache's writeback on this VM's virtual disk (both sides; see the spreads)"
    for label, side, key in (
        ("dump + fsync", "dumps", ("criu_s", "sync_s")),
        ("dd conv=fdatasync", "dds", ("durable_s",)),
    ):
        points = [(row["gib"], mean([sum(one[k] for k in key) for one in row[side]])) for row in rows]
        for line in growth_lines(label, points, causes=worse):
            print(line)
    print("bench checkpoint: " + "; ".join(parts) + f" (goal >= {GOAL:.2f}x durable)")
    record_rows(rows)


def mean(values):
    return sum(values) / len(values)


def record_rows(rows):
    """Per size: durable (the goal), page cache and module+fsync, in MB/s against dd."""
    for row in rows:
        size, dumps, dds = row["size"], row["dumps"], row["dds"]
        durable_dd = mean([size / dd["durable_s"] / 1e6 for dd in dds])
        comparisons = (
            ("durable", "dump + fsync (durable)", "criu_s", durable_dd, "dd conv=fdatasync"),
            ("cache", "dump, page cache", "criu_s", mean([size / dd["cache_s"] / 1e6 for dd in dds]), "dd"),
            ("module", "module + fsync (durable)", "module_s", durable_dd, "dd conv=fdatasync"),
        )
        for key, metric, wall, baseline, baseline_name in comparisons:
            synced = key != "cache"
            ours = mean([d["written"] / (d[wall] + (d["sync_s"] if synced else 0)) / 1e6 for d in dumps])
            ratio, low, high = row[key]
            record(
                "checkpoint",
                metric=f"{metric} write rate",
                ours=ours,
                baseline=baseline,
                baseline_name=f"{baseline_name} (same size)",
                unit="MB/s",
                ratio=ratio,
                goal=f">= {GOAL:.2f}x" if key == "durable" else None,
                met=ratio >= GOAL if key == "durable" else None,
                size={"GiB": row["gib"]},
                notes=f"mean of {len(row['rounds'])} ABBA rounds' ratios, spread {low:.2f}-{high:.2f}x",
            )


if __name__ == "__main__":
    main()
