#!/usr/bin/env python3
"""Verifying a copied tree: hash manifests made on each side (strata.ops.tree_manifest) against
``rsync -a -c --dry-run`` on the same two trees.

A source tree of each size of BENCH_VERIFY_FILES files (default 200,2000: mostly 4-64 KiB, with four
large files of BENCH_VERIFY_LARGE_MIB MiB each at the largest size, default 512, and in proportion
below it: about the science platform's mix of many small and a few large files; 2.1 GB in all at
2,000) and its copy (``cp -a``) on this machine's disk. With the page cache
dropped before each timed verify (root writes /proc/sys/vm/drop_caches; without it the runs are
warm, and the output says so):

  (a) cold, nothing kept: strata.ops.tree_manifest on the source and on the copy at the same time
      (two processes, as two hosts would each hash their own side; 4 threads each), then the
      comparison. Every byte is read on both sides, as rsync -c reads it: on one machine's disk
      both are bound by the disk and this ratio stays near 1x (printed, not the goal);
  (b) ``rsync -a -c --dry-run`` from the source to the copy (its sender and receiver read and
      checksum every file, one at a time; rsync 3.2 negotiates xxh128);
  (c) the transferred tree: a new copy, hashed on both sides right after it was written, while its
      bytes are still in the page cache - what ``playbooks/transfer.yml -e
      data_transfer_verify_after=true`` does at the end of a transfer, which keeps both manifests
      (the cost it adds to the transfer is printed); then, caches dropped, the verify of that tree
      re-reads only files whose size or mtime changed since. The goal (>= 10x rsync -c) is judged
      on (c) against (b) on the same tree;
  (d) untimed: a file of the copy rewritten with other bytes after its manifest was kept is named
      as differing by the next verify (a kept manifest never hides a change its size or mtime shows).

The growth lines say how each figure grows from one size to the next. Prints one final line
`bench verify: ...` (the largest size).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchkit import growth_lines
from caches import drop_caches
from results import record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, ".collections"))

from ansible_collections.strata.ops.plugins.module_utils import tree_manifest  # noqa: E402

GOAL = 10.0
try:  # rsync 3.2 checksums with xxh128 itself; blake2b where the package is missing
    import xxhash  # noqa: F401  # pylint: disable=unused-import

    ALGORITHM = os.environ.get("BENCH_VERIFY_HASH", "xxh128")
except ImportError:
    ALGORITHM = os.environ.get("BENCH_VERIFY_HASH", "blake2b")
MODULE = os.path.join(REPO, "plugins", "modules", "tree_manifest.py")


def make_tree(root, count, large_mib):
    os.makedirs(root)
    for index in range(count):
        directory = os.path.join(root, f"d{index // 200:02d}")
        os.makedirs(directory, exist_ok=True)
        large = index % (count // 4) == 0
        size = large_mib << 20 if large else 4096 + (index * 7919) % (60 << 10)
        with open(os.path.join(directory, f"f{index:05d}.bin"), "wb") as handle:
            for offset in range(0, size, 64 << 20):
                handle.write(os.urandom(min(64 << 20, size - offset)))


def manifest_process(root, kept):
    args = {
        "path": root,
        "workers": 4,
        "algorithm": ALGORITHM,
        "_ansible_check_mode": False,
    }
    if kept:
        args["manifest_path"] = kept
    work = tempfile.mkdtemp(prefix="strata-bench-args-")
    args_file = os.path.join(work, "args.json")
    with open(args_file, "w", encoding="utf-8") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, ".collections"))
    proc = subprocess.Popen(
        [sys.executable, MODULE, args_file], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    return proc, work


def ours(source, dest, kept_dir):
    """Both sides at once, then the comparison: (seconds, diff, stats of each side)."""
    started = time.monotonic()
    runs = [manifest_process(root, kept_dir and os.path.join(kept_dir, f"{side}.json"))
            for side, root in (("source", source), ("dest", dest))]  # fmt: skip
    results = []
    for proc, work in runs:
        out, err = proc.communicate()
        shutil.rmtree(work, ignore_errors=True)
        result = json.loads(out or b"{}")
        if result.get("failed") or proc.returncode:
            sys.exit(f"bench verify: tree_manifest failed: {result.get('msg') or err.decode()[-2000:]}")
        results.append(result)
    diff = tree_manifest.compare(results[0]["manifest"], results[1]["manifest"])
    return time.monotonic() - started, diff, [r["stats"] for r in results]


def rsync_check(source, dest):
    started = time.monotonic()
    proc = subprocess.run(
        ["rsync", "-a", "-c", "--dry-run", "--itemize-changes", source + "/", dest + "/"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"bench verify: rsync failed: {proc.stderr[-2000:]}")
    return time.monotonic() - started, [line for line in proc.stdout.splitlines() if line.strip()]


def rewrite_one(tree):
    """A file of ``tree`` with other bytes of the same size: what a kept manifest must not hide."""
    path = os.path.join(tree, "d00", "f00001.bin")
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.write(os.urandom(min(size, 4096)))
    return os.path.relpath(path, tree)


def measure(count, large_mib):
    """One tree of ``count`` files: the figures of (a)-(d), printed; exits when a check fails."""
    with tempfile.TemporaryDirectory(prefix="strata-bench-verify-", dir="/var/tmp") as tmp:
        source, dest, kept = (os.path.join(tmp, name) for name in ("source", "copy", "kept"))
        make_tree(source, count, large_mib)
        subprocess.run(["cp", "-a", source, dest], check=True)
        total = sum(os.path.getsize(os.path.join(d, f)) for d, _s, fs in os.walk(source) for f in fs)
        cold = drop_caches()
        cold_s, diff, stats = ours(source, dest, None)
        if not diff["identical"]:
            sys.exit(f"bench verify: the copy differs: {diff}")
        drop_caches()
        rsync_cold_s, items = rsync_check(source, dest)
        if items:
            sys.exit(f"bench verify: rsync found differences: {items[:5]}")

        # (c): a new copy, hashed while hot as transfer.yml's verify_after does, then verified cold.
        shutil.rmtree(dest)
        subprocess.run(["cp", "-a", source, dest], check=True)
        hot_s, diff, _hot_stats = ours(source, dest, kept)
        drop_caches()
        kept_s, diff, kept_stats = ours(source, dest, kept)
        if not diff["identical"] or kept_stats[1]["hashed"]:
            sys.exit(f"bench verify: the kept-manifest verify re-hashed or differs: {kept_stats} {diff}")
        drop_caches()
        rsync_s, items = rsync_check(source, dest)
        if items:
            sys.exit(f"bench verify: rsync found differences: {items[:5]}")

        changed = rewrite_one(dest)
        after_s, diff, after_stats = ours(source, dest, kept)
        named = [entry["path"] for entry in diff["differing"]]
        if named != [changed]:
            sys.exit(f"bench verify: a rewritten file was not caught by the kept-manifest verify: {diff}")
        warmth = "page cache dropped" if cold else "WARM: no drop_caches"
        print(
            f"{count} files, {total / 1e6:.0f} MB ({warmth}), {ALGORITHM}:\n"
            f"  (a) cold, nothing kept: manifests both sides {cold_s:.2f} s (hashed "
            f"{stats[0]['hashed_bytes'] / 1e6:.0f} + {stats[1]['hashed_bytes'] / 1e6:.0f} MB) vs "
            f"(b) rsync -c --dry-run {rsync_cold_s:.2f} s = {rsync_cold_s / cold_s:.2f}x\n"
            f"  (c) manifests made at the end of the transfer (hot) {hot_s:.2f} s; then the verify of "
            f"the transferred tree {kept_s:.2f} s ({kept_stats[0]['reused']} + {kept_stats[1]['reused']} "
            f"files from kept manifests, {kept_stats[0]['hashed'] + kept_stats[1]['hashed']} re-hashed) "
            f"vs rsync -c {rsync_s:.2f} s\n"
            f"  (d) one file of the copy rewritten afterwards: named as differing in {after_s:.2f} s "
            f"({after_stats[1]['hashed']} file re-hashed)",
            flush=True,
        )
    return {
        "count": count,
        "total": total,
        "cold_s": cold_s,
        "rsync_cold_s": rsync_cold_s,
        "hot_s": hot_s,
        "kept_s": kept_s,
        "rsync_s": rsync_s,
    }


def record_size(run, judged):
    """The rows of one size; the goal is judged at the largest (``judged``), where the start of
    the module's Python is not most of its time."""
    ratio = run["rsync_s"] / run["kept_s"]
    size = {"files": run["count"], "bytes": run["total"]}
    record(
        "verify",
        metric="verify of the transferred tree (manifests kept by the transfer)",
        ours=run["kept_s"],
        baseline=run["rsync_s"],
        baseline_name="rsync -a -c --dry-run",
        unit="s",
        ratio=ratio,
        goal=f">= {GOAL:.0f}x" if judged else None,
        met=ratio >= GOAL if judged else None,
        size=size,
        notes=f"the manifests cost {run['hot_s']:.2f} s at the end of the transfer (page cache hot)",
    )
    record(
        "verify",
        metric="cold verify, nothing kept (both read every byte)",
        ours=run["cold_s"],
        baseline=run["rsync_cold_s"],
        baseline_name="rsync -a -c --dry-run",
        unit="s",
        ratio=run["rsync_cold_s"] / run["cold_s"],
        size=size,
        notes="one disk under both: the disk is the limit for both",
    )


def main():
    counts = sorted(int(n) for n in os.environ.get("BENCH_VERIFY_FILES", "200,2000").split(",") if n.strip())
    large_mib = int(os.environ.get("BENCH_VERIFY_LARGE_MIB", "512"))
    if not shutil.which("rsync"):
        print("bench verify: SKIPPED (no rsync)")
        return
    # The large files scale with the count: each size has the same mix of small and large.
    runs = [measure(count, max(1, large_mib * count // counts[-1])) for count in counts]
    for label, key in (
        ("verify of the transferred tree, kept manifests", "kept_s"),
        ("rsync -c of the transferred tree", "rsync_s"),
        ("cold verify, nothing kept", "cold_s"),
        ("cold rsync -c", "rsync_cold_s"),
    ):
        for line in growth_lines(label, [(run["count"], run[key]) for run in runs]):
            print(line)
    for run in runs:
        record_size(run, run is runs[-1])
    run = runs[-1]
    ratio = run["rsync_s"] / run["kept_s"]
    verdict = "goal met" if ratio >= GOAL else "goal MISSED"
    cold_ratio = run["rsync_cold_s"] / run["cold_s"]
    print(
        f"bench verify: {run['count']} files {run['total'] / 1e6:.0f} MB, {ALGORITHM}: the transferred "
        f"tree {run['kept_s']:.2f} s vs rsync -c {run['rsync_s']:.2f} s = {ratio:.1f}x faster (goal >= "
        f"{GOAL:.0f}x, {verdict}; its manifests cost {run['hot_s']:.2f} s at the end of the transfer); "
        f"cold with nothing kept {run['cold_s']:.2f} s vs {run['rsync_cold_s']:.2f} s = {cold_ratio:.2f}x "
        "(both read every byte)"
    )


if __name__ == "__main__":
    main()
