#!/usr/bin/env python3
"""Verifying a copied tree: hash manifests made on each side (strata.ops.tree_manifest) against
``rsync -a -c --dry-run`` on the same two trees.

A source tree of BENCH_VERIFY_FILES files (default 2,000: mostly 4-64 KiB, with four 64 MiB
files, about the science platform's mix of many small and a few large files) and its copy
(``cp -a``) on this machine's disk. With the page cache dropped before each (root writes
/proc/sys/vm/drop_caches; without it both run warm, and the output says so):

  (a) strata.ops.tree_manifest on the source and on the copy at the same time (two processes, as
      two hosts would each hash their own side; 4 threads each), then the comparison;
  (b) ``rsync -a -c --dry-run`` from the source to the copy (its sender and receiver read and
      checksum every file, one at a time);
  (c) (a) again with the manifests kept from the first run: nothing changed, nothing is re-read.

The ratio is (b)/(a); the issue's goal is >= 10x on a long link with big disks (rsync's one
stream there; here both run on one machine with 2 cores, where hashing is the limit for both).
Prints one final line `bench verify: ...`.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from caches import drop_caches

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


def make_tree(root, count):
    os.makedirs(root)
    for index in range(count):
        directory = os.path.join(root, f"d{index // 200:02d}")
        os.makedirs(directory, exist_ok=True)
        size = (64 << 20) if index % (count // 4) == 0 else 4096 + (index * 7919) % (60 << 10)
        with open(os.path.join(directory, f"f{index:05d}.bin"), "wb") as handle:
            handle.write(os.urandom(size))


def manifest_process(root, kept):
    args = {
        "path": root,
        "manifest_path": kept,
        "workers": 4,
        "algorithm": ALGORITHM,
        "_ansible_check_mode": False,
    }
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
    runs = [manifest_process(root, os.path.join(kept_dir, f"{side}.json")) for side, root in
            (("source", source), ("dest", dest))]  # fmt: skip
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


def main():
    count = int(os.environ.get("BENCH_VERIFY_FILES", "2000"))
    if not shutil.which("rsync"):
        print("bench verify: SKIPPED (no rsync)")
        return
    with tempfile.TemporaryDirectory(prefix="strata-bench-verify-", dir="/var/tmp") as tmp:
        source, dest, kept = (os.path.join(tmp, name) for name in ("source", "copy", "kept"))
        make_tree(source, count)
        subprocess.run(["cp", "-a", source, dest], check=True)
        total = sum(os.path.getsize(os.path.join(d, f)) for d, _s, fs in os.walk(source) for f in fs)
        cold = drop_caches()
        ours_s, diff, stats = ours(source, dest, kept)
        if not diff["identical"]:
            sys.exit(f"bench verify: the copy differs: {diff}")
        drop_caches()
        rsync_s, items = rsync_check(source, dest)
        if items:
            sys.exit(f"bench verify: rsync found differences: {items[:5]}")
        drop_caches()
        again_s, diff, again_stats = ours(source, dest, kept)
        warmth = "page cache dropped" if cold else "WARM: no drop_caches"
        print(
            f"{count} files, {total / 1e6:.0f} MB ({warmth}), {ALGORITHM}: manifests both sides "
            f"{ours_s:.2f} s (hashed {stats[0]['hashed_bytes'] / 1e6:.0f} + "
            f"{stats[1]['hashed_bytes'] / 1e6:.0f} MB), "
            f"rsync -c --dry-run {rsync_s:.2f} s, again with kept manifests {again_s:.2f} s "
            f"({again_stats[0]['reused']} + {again_stats[1]['reused']} files reused)"
        )
    ratio = rsync_s / ours_s
    verdict = "goal met" if ratio >= GOAL else "goal MISSED"
    print(
        f"bench verify: {count} files {total / 1e6:.0f} MB, {ALGORITHM}: manifests {ours_s:.2f} s vs "
        f"rsync -c {rsync_s:.2f} s = {ratio:.1f}x faster (goal >= {GOAL:.0f}x, {verdict}); "
        f"unchanged re-verify {again_s:.2f} s = {rsync_s / again_s:.1f}x"
    )


if __name__ == "__main__":
    main()
