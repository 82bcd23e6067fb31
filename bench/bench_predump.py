"""bench predump: the time a running process is frozen by a dump, with a pre-dump and without.

What a training job feels of a checkpoint is the time it is frozen, not the dump's wall time.
strata.ops.pod_checkpoint dumps a process whose memory (random bytes, every page different:
tests/testbed/memory_holder.py) keeps 5 % of its pages hot (every page of every 20th aligned 2 MiB
block written over and over, as a running job does), twice per size, with the process left running:

* plain: ``pre_dumps: 0``, one ``criu dump``: every page is copied while the process is frozen;
* pre-dump: ``pre_dumps: 1``: ``criu pre-dump --track-mem`` copies the memory while the process
  runs, then the final dump copies only the pages written since (the hot 5 %, plus what the
  holder's own Python touched) while it is frozen.

The figure is the module's ``frozen_s`` (CRIU's own frozen_time, stats-dump) of each; the ratio is
pre-dump / plain (goal <= 0.25x at 4 GiB). The final dump's pages written are printed against the
process's pages, to show the 5 % it found dirty. The order of the two dumps alternates by size.

Where it runs: a pre-dump needs the kernel's memory dirty tracking (soft-dirty bits), which this
machine's kernel lacks (``criu check --feature mem_dirty_track``: "Dirty tracking is OFF"). The
benchmark therefore runs in a QEMU guest on Debian bookworm's kernel (tests/testbed/guest_vm.py:
this machine's root file system read-only over 9p, the same CRIU 4, Python and checkout), with
the images in the guest's tmpfs. QEMU emulates the CPU (KVM does not run a guest here), so
the guest's absolute times are several times the host's; both sides of the ratio are measured in
the same guest, one after the other, on the same process.

With STRATA_BENCH_PREDUMP_SCATTERED=1 the holder writes one byte of every 20th 4 KiB page instead
(memory_holder.py --scattered): under the guest kernel's transparent huge pages ("always", as
Debian ships it) that dirties every 2 MiB huge page, the case pod_checkpoint warns about.

Env: STRATA_BENCH_PREDUMP_GIB (default "0.25,4"), STRATA_BENCH_PREDUMP_SCATTERED (default 0),
STRATA_CRIU (default ~/.cache/strata-ops/bin/criu).
"""

import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))
# In the guest STRATA_BENCH_DIR names its tmpfs before bench_checkpoint reads it.
import guest_vm  # noqa: E402
from bench_checkpoint import CRIU, HOLDER, holder_bytes, run_module  # noqa: E402
from benchkit import growth_lines  # noqa: E402
from results import record  # noqa: E402

SIZES = [float(s) for s in os.environ.get("STRATA_BENCH_PREDUMP_GIB", "0.25,4").split(",")]
GOAL = 0.25
HOT_EVERY = 20  # one page in 20: 5 %
SCATTERED = os.environ.get("STRATA_BENCH_PREDUMP_SCATTERED") == "1"
GUEST_DIR = os.path.join(guest_vm.SCRATCH, "bench-predump")
RESULT_MARK = "bench-predump-result "
PAGE = os.sysconf("SC_PAGE_SIZE")


def guest_size(gib):
    """One holder size in the guest: the module's dumps of it, plain and with one pre-dump."""
    size = holder_bytes(gib)
    # Its stderr into a file: CRIU cannot dump an fd on the guest's /dev/console.
    with open(os.path.join(GUEST_DIR, "holder.log"), "a") as log:
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(size), "--hot-every", str(HOT_EVERY)]
            + (["--scattered"] if SCATTERED else []),
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # its own session: CRIU dumps it without --shell-job
        )
    figures = {"gib": gib, "pages": size // PAGE}
    try:
        started = time.monotonic()
        ready = holder.stdout.readline().split()
        if ready[:1] != [b"ready"]:
            raise SystemExit("bench predump: the memory holder did not start")
        figures["hot_pages"] = int(ready[1])
        figures["fill_s"] = round(time.monotonic() - started, 2)
        order = (0, 1) if SIZES.index(gib) % 2 == 0 else (1, 0)
        for pre_dumps in order:
            images = os.path.join(GUEST_DIR, f"images-{pre_dumps}")
            started = time.monotonic()
            result = run_module(
                {
                    "pid": holder.pid,
                    "images_dir": images,
                    "criu_path": CRIU,
                    "keep": 1,
                    "pre_dumps": pre_dumps,
                }
            )
            manifest = result["manifest"]
            figures["pre" if pre_dumps else "plain"] = {
                "frozen_s": result["frozen_s"],
                "module_s": round(time.monotonic() - started, 2),
                "dump_wall_s": manifest["dump_wall_s"],
                "pre_dump_wall_s": [p["wall_s"] for p in manifest["pre_dumps"]],
                "pages_written": manifest["stats"]["pages_written"],
            }
            shutil.rmtree(images)
        if holder.poll() is not None:
            raise SystemExit("bench predump: the holder did not run on after the dumps")
    finally:
        holder.kill()
        holder.wait()
    return figures


def in_guest():
    os.makedirs(GUEST_DIR, exist_ok=True)
    for gib in SIZES:
        print(RESULT_MARK + json.dumps(guest_size(gib)), flush=True)


def guest_memory_mib():
    """The largest holder, its plain dump's images and the pre-dump's (one after the other, in the
    guest's tmpfs), and room for the guest's own Python and CRIU."""
    largest = max(SIZES) * 1024
    return int(largest * 2.2) + 1536


def main():
    if os.geteuid() != 0:
        raise SystemExit("bench predump: needs root (CRIU in the guest, QEMU's 9p export of /)")
    env = {
        "STRATA_BENCH_DIR": GUEST_DIR,
        "STRATA_BENCH_PREDUMP_GIB": ",".join(f"{s:g}" for s in SIZES),
        "STRATA_BENCH_PREDUMP_SCATTERED": "1" if SCATTERED else "0",
        "PYTHONDONTWRITEBYTECODE": "1",  # the checkout is read-only in the guest
    }
    if "STRATA_CRIU" in os.environ:
        env["STRATA_CRIU"] = os.environ["STRATA_CRIU"]
    started = time.monotonic()
    guest = guest_vm.run(
        [sys.executable, os.path.abspath(__file__), "--in-guest"],
        memory_mib=guest_memory_mib(),
        timeout=1200,
        env=env,
        cwd=REPO,
    )
    took = time.monotonic() - started
    rows = [
        json.loads(line[len(RESULT_MARK) :])
        for line in guest.output.splitlines()
        if line.startswith(RESULT_MARK)
    ]
    if guest.returncode != 0 or len(rows) != len(SIZES):
        raise SystemExit(
            f"bench predump: the guest's run failed (rc={guest.returncode}):\n{guest.output[-4000:]}"
        )
    layout = "one byte of every 20th 4 KiB page" if SCATTERED else "whole 2 MiB blocks"
    print(
        f"bench predump: in a QEMU guest (Debian kernel with dirty tracking, TCG), {took:.0f} s in all; "
        f"hot pages in {layout}"
    )
    print("  GiB | fill s | hot | plain frozen s | pre-dump wall s | final frozen s | final written | ratio")
    largest = max(SIZES)
    for row in rows:
        plain, pre = row["plain"], row["pre"]
        ratio = pre["frozen_s"] / plain["frozen_s"]
        share = pre["pages_written"] / row["pages"]
        print(
            f"  {row['gib']:g} | {row['fill_s']:.1f} | {row['hot_pages'] / row['pages']:.1%} | "
            f"{plain['frozen_s']:.3f} | "
            f"{', '.join(f'{w:.2f}' for w in pre['pre_dump_wall_s'])} | {pre['frozen_s']:.3f} | "
            f"{pre['pages_written']:,} of {row['pages']:,} ({share:.1%}) | {ratio:.3f}x"
        )
        judged = row["gib"] == largest and not SCATTERED  # the goal's case: hot memory in blocks
        record(
            "predump",
            metric=f"frozen time of the final dump after one pre-dump (5 % of the pages hot, {layout})",
            ours=pre["frozen_s"],
            baseline=plain["frozen_s"],
            baseline_name="frozen time of a plain dump of the same process",
            unit="s",
            ratio=ratio,
            goal=f"<= {GOAL:.2f}x" if judged else None,
            met=ratio <= GOAL if judged else None,
            size={"GiB": row["gib"]},
            notes=f"QEMU guest (TCG) on Debian's kernel; final dump wrote {share:.1%} of the pages",
        )
    for label, key in (("plain dump frozen", "plain"), ("final dump frozen after a pre-dump", "pre")):
        for line in growth_lines(label, [(row["gib"], row[key]["frozen_s"]) for row in rows]):
            print(line)
    judged = next(row for row in rows if row["gib"] == largest)
    ratio = judged["pre"]["frozen_s"] / judged["plain"]["frozen_s"]
    print(
        f"bench predump: {largest:g}GiB frozen with a pre-dump / plain {ratio:.3f}x "
        f"({judged['pre']['frozen_s']:.3f} s against {judged['plain']['frozen_s']:.3f} s); "
        + ("hot pages scattered over every huge page, no goal" if SCATTERED else f"goal <= {GOAL:.2f}x")
    )
    return 0 if SCATTERED or ratio <= GOAL else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--in-guest"]:
        in_guest()
    else:
        sys.exit(main())
