"""bench restore: strata.ops.pod_checkpoint state=restored against reading the dump's images with cat.

A Docker container (the test bed's host image, python3) holds SIZE GiB of memory filled as
bench_checkpoint's holder fills it (every page different, none zero). The module dumps it once
(leave_running=false). Then each round, in ABBA order:

* ours: the module restores the dump into a NEW container and returns once the restored process
  runs (``docker start --checkpoint`` returns after runc's restore; the module reports its host
  pid); timed from the module's start to its return, then the container is removed;
* baseline: ``cat`` of every image file of the dump into /dev/null.

Caches: before each timed step the page cache is dropped (``sync; echo 3 > /proc/sys/vm/drop_caches``,
root), so both read the images from the disk. The module also copies the dump into the new
container's checkpoint directory (Docker 20.10 takes no other), which is part of its time.

Pre-dump frozen time: measured only where the kernel tracks dirty memory (``criu check --feature
mem_dirty_track``); where it cannot, the line says so with CRIU's own words.

Env: STRATA_CRIU (default ~/.cache/strata-ops/bin/criu), STRATA_BENCH_RESTORE_GIB (default 1),
STRATA_BENCH_ROUNDS (default 2), STRATA_CKPT_IMAGE (default strata-ops-host:latest).
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

from bench_checkpoint import BIN, CHUNK, HOLDER, REPO

MODULE = os.path.join(REPO, "plugins", "modules", "pod_checkpoint.py")
CRIU = os.environ.get("STRATA_CRIU", os.path.join(BIN, "criu"))
GIB = int(os.environ.get("STRATA_BENCH_RESTORE_GIB", "1"))
ROUNDS = int(os.environ.get("STRATA_BENCH_ROUNDS", "2"))
IMAGE = os.environ.get("STRATA_CKPT_IMAGE", "strata-ops-host:latest")
WORK = os.path.join(REPO, ".tmp", "bench-restore")
GOAL = 1.5


def docker(*args, check=True):
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"bench restore: docker {' '.join(args[:2])} failed: {proc.stderr.strip()}")
    return proc.stdout


def module(args):
    path = os.path.join(WORK, f"args-{uuid.uuid4().hex[:6]}.json")
    with open(path, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, ".collections"))
    try:
        proc = subprocess.run(
            [sys.executable, MODULE, path], capture_output=True, text=True, env=env, check=False
        )
    finally:
        os.unlink(path)
    result = json.loads(proc.stdout)
    if result.get("failed"):
        raise SystemExit("bench restore: the module failed: " + result["msg"])
    return result


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as handle:
        handle.write("3\n")


def cat_seconds(dump_dir):
    files = sorted(glob.glob(os.path.join(dump_dir, "**", "*.img"), recursive=True))
    start = time.perf_counter()
    subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def restore_seconds(dump_dir, size):
    new = f"strata-bench-restore-{uuid.uuid4().hex[:6]}"
    start = time.perf_counter()
    try:
        result = module({"state": "restored", "checkpoint": dump_dir, "new_container": new})
        seconds = time.perf_counter() - start
        with open(f"/proc/{result['restored']['pid']}/status") as handle:
            rss = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS:"))
        if rss < size * 0.9:
            raise SystemExit(f"bench restore: the restored process holds {rss} bytes, not {size}")
        return seconds
    finally:
        docker("rm", "-f", new, check=False)


def pre_dump_line():
    proc = subprocess.run(
        [CRIU, "check", "--feature", "mem_dirty_track"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        return (
            "pre-dump frozen time: not measurable on this kernel (criu check --feature mem_dirty_track: "
            f"{said[-1] if said else 'rc=' + str(proc.returncode)}); pod_checkpoint refuses pre_dumps here"
        )
    return "pre-dump frozen time: the kernel tracks dirty memory; run bench checkpoint with pre_dumps"


def main():
    if os.geteuid() != 0:
        raise SystemExit("bench restore: needs root (CRIU, docker, drop_caches)")
    if docker("info", "--format", "{{.ExperimentalBuild}}").strip() != "true":
        raise SystemExit("bench restore: dockerd runs without --experimental (tests/testbed/up starts it so)")
    os.makedirs(WORK, exist_ok=True)
    size = GIB << 30
    holder = f"strata-bench-holder-{uuid.uuid4().hex[:6]}"
    try:
        docker("run", "-d", "--name", holder, IMAGE, "python3", "-u", "-c", HOLDER, str(size), str(CHUNK))
        deadline = time.monotonic() + 300
        while "ready" not in docker("logs", holder):
            if time.monotonic() > deadline:
                raise SystemExit("bench restore: the memory holder did not fill its memory in 300 s")
            time.sleep(0.5)
        dumped = module(
            {
                "container": holder,
                "images_dir": os.path.join(WORK, "images"),
                "criu_path": CRIU,
                "leave_running": False,
            }
        )
        dump_dir = dumped["checkpoint_dir"]
        images = sum(os.path.getsize(p) for p in glob.glob(os.path.join(dump_dir, "*.img")))
        print(f"{GIB} GiB holder dumped: {images / 2**30:.2f} GiB of images in {dump_dir}")
        ratios = []
        for number in range(ROUNDS):
            timed = {}
            for step in ("cat", "restore") if number % 2 == 0 else ("restore", "cat"):
                drop_caches()
                timed[step] = cat_seconds(dump_dir) if step == "cat" else restore_seconds(dump_dir, size)
            ratios.append(timed["restore"] / timed["cat"])
            print(
                f"  round {number + 1}: restore to running {timed['restore']:.2f} s; cat of the images "
                f"{timed['cat']:.2f} s ({images / timed['cat'] / 1e6:.0f} MB/s); ratio {ratios[-1]:.2f}x"
            )
        print(pre_dump_line())
        mean = sum(ratios) / len(ratios)
        print(
            f"bench restore: {GIB}GiB restore/cat {mean:.2f}x ({min(ratios):.2f}-{max(ratios):.2f}; page cache "
            f"dropped before each; goal <= {GOAL:.2f}x)"
        )
    finally:
        docker("rm", "-f", holder, check=False)
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
