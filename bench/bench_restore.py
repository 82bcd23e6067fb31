"""bench restore: restoring a dump against reading its images with cat, on two paths.

At each size (GiB), memory filled as bench_checkpoint's holder fills it (every page different, none zero),
dumped once by strata.ops.pod_checkpoint; then each round, in ABBA order, a restore and the baseline
``cat`` of every image file of the dump into /dev/null:

* host process (CRIU's own restore, the engine's floor; at containerd's sizes, 1 and 4 GiB): the
  holder runs on the host, the module dumps it (pid, leave_running=false) and ``criu restore
  --restore-detached`` brings it back; timed until criu returns with the process tree running;
* Docker container (the module's restore path; at 1 GiB only): the holder runs in a
  container of the test bed's host image; the module restores the dump into a NEW container and
  returns once the restored process runs (``docker start --checkpoint``); timed from the module's
  start to its return.
* containerd (method=containerd, the MicroK8s and k3s path; at 1 and 4 GiB): the CRI
  workload's ``hold MIB`` in a pod's container on each of the test bed's containerd releases, 1.6
  and 1.7 (tests/testbed/cri_pod.py), dumped by the module with the pod left running (CRIU's images
  into the dump directory through containerd's tasks API); then the module restores it into a NEW
  container whose task containerd creates from those images in place. Timed from the module's start
  (its process start included) to its return with the task running; the baseline is a cat of the
  dump's CRIU images, and the host process's restore of the same size is printed beside it (what
  the module, containerd and runc add to CRIU's own restore).

Caches: before each timed step the page cache is dropped (``sync; echo 3 > /proc/sys/vm/drop_caches``,
root), so every side reads the images from the disk (this VM's disk has a host cache below it).
Each counted round also reads the images into fresh memory of their size (not judged): a restore
fills the process's new pages, which cat, reading into one reused buffer, never does; on this VM
touching new memory costs ~0.45 s a GiB (``dd bs=4G`` of /dev/zero: 1.8 s), as much as the read of
the images themselves when the host's cache serves them at ~3 GB/s.
The Docker path costs more than the images: the module hard-links the dump into the new container's
checkpoint directory (Docker 20.10 takes no other; a copy across file systems), dockerd writes that
directory as a tar into containerd's content store, and containerd extracts it into a temporary
directory for the runc shim's CRIU (a copy the module removes once the container runs, in the timed
part: containerd keeps it otherwise). Sampled once a second (2026-12-04, 1 GiB, 29 s): 3.5 s to
docker start, 17 s dockerd streaming the tar into the content store (ingest at ~65 MiB/s, dockerd
and containerd together ~1.4 of the 2 cores; ``ctr content ingest`` of 1 GiB alone takes 9 s),
3.3 s containerd's extraction (~400 MiB/s), 3 s CRIU: Docker 20.10's restore path, not ours, is
what keeps this far from the cat.

Pre-dump frozen time: bench predump (a guest on a kernel that tracks dirty memory); this host's
kernel is named with CRIU's own words where it cannot (``criu check --feature mem_dirty_track``).

Env: STRATA_CRIU (default ~/.cache/strata-ops/bin/criu), STRATA_BENCH_RESTORE_GIB (default 1,4),
STRATA_BENCH_ROUNDS (default 2), STRATA_BENCH_DOCKER_GIB (default 1), STRATA_BENCH_DOCKER_ROUNDS (default 1),
STRATA_BENCH_CONTAINERD_ROUNDS (default 2), STRATA_BENCH_CONTAINERD_WARMUP (default 1),
STRATA_BENCH_CONTAINERD_GIB (default 1,4), STRATA_CKPT_IMAGE
(default strata-ops-host:latest).
"""

import glob
import json
import mmap
import os
import shutil
import subprocess
import sys
import time
import uuid

# tests/testbed's helpers (cri_pod) and the collection they use, as bench/benchkit.py puts them there
_repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(_repo, ".collections"), os.path.join(_repo, "tests", "testbed")]
import cri_pod  # noqa: E402
from bench_checkpoint import BENCH_DIR, BIN, HOLDER, REPO, holder_bytes  # noqa: E402
from bench_checkpoint import run_module as module  # noqa: E402
from benchkit import WORSE_ABOVE, growth_exponent, growth_lines  # noqa: E402
from caches import drop_caches  # noqa: E402
from results import record  # noqa: E402
from testbed_paths import containerd_of  # noqa: E402

CRIU = os.environ.get("STRATA_CRIU", os.path.join(BIN, "criu"))
# GiB of the host process, fractions allowed (whole 64 MiB chunks); the goal is judged at the largest.
# containerd's sizes too: its restores are set against CRIU's own of the same size.
SIZES_GIB = sorted(
    float(g) for g in os.environ.get("STRATA_BENCH_RESTORE_GIB", "1,4").split(",") if g.strip()
)
ROUNDS = int(os.environ.get("STRATA_BENCH_ROUNDS", "2"))
# The Docker path takes ~30 s a GiB (dockerd's copy, not a size effect worth a second size) against
# a cat of under a second: one round at one size shows the ratio.
DOCKER_GIB = float(os.environ.get("STRATA_BENCH_DOCKER_GIB", "1"))
DOCKER_ROUNDS = int(os.environ.get("STRATA_BENCH_DOCKER_ROUNDS", "1"))
IMAGE = os.environ.get("STRATA_CKPT_IMAGE", "strata-ops-host:latest")
WORK = os.path.join(REPO, ".tmp", "bench-restore")
# containerd releases of the test bed whose method=containerd restores are timed (cri_pod.py)
CONTAINERD_RELEASES = ("1.6", "1.7")
# Each containerd round restores a new container beside the dumped one: 2x the size in memory. Its
# sizes are its own: the fixed cost of a restore through containerd (the module's start, the runc
# shim, runc) weighs on 1 GiB, the 4 GiB of the frozen-time bench show the rate.
CONTAINERD_ROUNDS = int(os.environ.get("STRATA_BENCH_CONTAINERD_ROUNDS", "2"))
# The first round after a 4 GiB dump runs far slower than the next ones (2026-12-06: restores of
# 8.5-14.7 s against 2.6-4.9 s): this VM's host backs memory the guest has not used lately slowly
# (touching 8 GiB: 11.1 s the first time, 4.7-7.2 s after; docs/performance.md), and that round is
# the first to need the holder's 4 GiB and the restored 4 GiB at once. One round first, printed and
# not counted.
CONTAINERD_WARMUP = int(os.environ.get("STRATA_BENCH_CONTAINERD_WARMUP", "1"))
CONTAINERD_GIB = sorted(
    float(g) for g in os.environ.get("STRATA_BENCH_CONTAINERD_GIB", "1,4").split(",") if g.strip()
)
GOAL = 1.5


def docker(*args, check=True):
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"bench restore: docker {' '.join(args[:2])} failed: {proc.stderr.strip()}")
    return proc.stdout


def dump_files(dump_dir):
    """What a restore reads: CRIU's image files (in the dump directory, or its criu/ for a
    method=containerd dump)."""
    return sorted(glob.glob(os.path.join(dump_dir, "**", "*.img"), recursive=True))


def cat_seconds(dump_dir):
    files = dump_files(dump_dir)
    start = time.perf_counter()
    subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def fill_seconds(dump_dir):
    """The images read into fresh anonymous memory of their size, each file in one pass: the
    population of new memory a restore pays on top of the read (the process's pages are new to the
    kernel) and cat does not (it reads into one reused buffer). Shown beside the ratio, not judged."""
    start = time.perf_counter()
    for path in dump_files(dump_dir):
        size = os.path.getsize(path)
        if not size:
            continue
        with open(path, "rb", buffering=0) as handle, mmap.mmap(-1, size) as memory:
            view = memoryview(memory)
            done = 0
            while done < size:  # one read() takes at most 2 GiB - 4 KiB (Linux's MAX_RW_COUNT)
                got = handle.readinto(view[done:])
                if not got:
                    break
                done += got
            view.release()
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


def criu_restore_seconds(dump_dir, size):
    pidfile = os.path.join(WORK, f"restored-{uuid.uuid4().hex[:6]}.pid")
    argv = [
        CRIU,
        "restore",
        "--restore-detached",
        "--images-dir",
        dump_dir,
        "--pidfile",
        pidfile,
        "--log-file",
    ]
    start = time.perf_counter()
    proc = subprocess.run([*argv, "restore.log"], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        with open(os.path.join(dump_dir, "restore.log"), errors="replace") as handle:
            log = handle.readlines()[-15:]  # the work directory goes with the run: its end here
        raise SystemExit(
            f"bench restore: criu restore failed: {proc.stderr.strip()}\nrestore.log ends:\n{''.join(log)}"
        )
    with open(pidfile) as handle:
        pid = int(handle.read())
    try:
        if rss_of(pid) < size * 0.9:
            raise SystemExit(f"bench restore: the restored process holds {rss_of(pid)} bytes, not {size}")
    finally:
        os.kill(pid, 9)
        os.unlink(pidfile)
        # CRIU restores the same pid: the next round needs it free (the holder is reaped by init).
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
    return seconds


def rss_of(pid):
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS:"))


def rounds(label, dump_dir, restore, size, count, *, warmup=0):
    """``count`` ABBA rounds of a restore against a cat, after ``warmup`` rounds that are printed
    but not counted; each counted round then reads the images into fresh memory (fill_seconds)."""
    images = sum(os.path.getsize(p) for p in dump_files(dump_dir))
    ratios, restores, cats, fills = [], [], [], []
    for number in range(-warmup, count):
        timed = {}
        for step in ("cat", "restore") if number % 2 == 0 else ("restore", "cat"):
            drop_caches()
            timed[step] = cat_seconds(dump_dir) if step == "cat" else restore(dump_dir, size)
        if number < 0:
            print(
                f"  {label} warm-up (not counted): restore {timed['restore']:.2f} s, cat {timed['cat']:.2f} s"
            )
            continue
        ratios.append(timed["restore"] / timed["cat"])
        restores.append(timed["restore"])
        cats.append(timed["cat"])
        drop_caches()
        fills.append(fill_seconds(dump_dir))
        print(
            f"  {label} round {number + 1}: restore to running {timed['restore']:.2f} s; cat of the "
            f"{images / 2**30:.2f} GiB of images {timed['cat']:.2f} s "
            f"({images / timed['cat'] / 1e6:.0f} MB/s); ratio {ratios[-1]:.2f}x; read into fresh memory "
            f"{fills[-1]:.2f} s (restore/that {timed['restore'] / fills[-1]:.2f}x)"
        )
    # (mean ratio, min, max, mean restore s, mean cat s, rounds, mean restore/fill ratio, mean fill s)
    fill_ratio = sum(r / f for r, f in zip(restores, fills)) / count
    return (
        sum(ratios) / count,
        min(ratios),
        max(ratios),
        sum(restores) / count,
        sum(cats) / count,
        count,
        fill_ratio,
        sum(fills) / count,
    )


def host_process(size):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(size)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        # Not the bench's own stderr: CRIU reopens every open file, and refuses one that grew since
        # the dump (a log the bench's output is redirected into).
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own session: CRIU dumps and restores it without --shell-job
    )
    try:
        if not holder.stdout.readline().startswith(b"ready"):
            raise SystemExit("bench restore: the memory holder did not start")
        dumped = module(
            {
                "pid": holder.pid,
                "images_dir": os.path.join(WORK, "host"),
                "criu_path": CRIU,
                "leave_running": False,
            }
        )
    finally:
        holder.kill()
        holder.wait()
    return rounds("host process", dumped["checkpoint_dir"], criu_restore_seconds, size, ROUNDS)


def docker_container(size):
    holder = f"strata-bench-holder-{uuid.uuid4().hex[:6]}"
    try:
        docker("run", "-d", "--name", holder, IMAGE, "python3", "-u", "-c", HOLDER, str(size))
        deadline = time.monotonic() + 300
        while "ready" not in docker("logs", holder):
            if time.monotonic() > deadline:
                raise SystemExit("bench restore: the memory holder did not fill its memory in 300 s")
            time.sleep(0.5)
        dumped = module(
            {
                "container": holder,
                "images_dir": os.path.join(WORK, "docker"),
                "criu_path": CRIU,
                "leave_running": False,
            }
        )
        return rounds("Docker container", dumped["checkpoint_dir"], restore_seconds, size, DOCKER_ROUNDS)
    finally:
        docker("rm", "-f", holder, check=False)


def ctr(release, *args, check=True):
    """The test bed's containerd ``release``'s own ctr, in CRI's namespace."""
    found = containerd_of(release)
    argv = [found.ctr, "--address", found.address, "--namespace", "k8s.io", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"bench restore: ctr {' '.join(args[:2])} failed: {proc.stderr.strip()}")
    return proc.stdout


def containerd_restore(release):
    """A restore by the module's method=containerd on the test bed's containerd ``release`` into a
    new container, timed from the module's start to its return (the restored task running)."""

    def restore(dump_dir, size):
        new = f"strata-bench-restored-{uuid.uuid4().hex[:6]}"
        args = {
            "state": "restored",
            "method": "containerd",
            "checkpoint": dump_dir,
            "new_container": new,
            "cri_endpoint": cri_pod.CRI_ENDPOINTS[release],
            "ctr_path": containerd_of(release).ctr,
        }
        start = time.perf_counter()
        try:
            result = module(args)
            seconds = time.perf_counter() - start
            held = rss_of(result["restored"]["pid"])
            if held < size * 0.9:
                raise SystemExit(f"bench restore: the restored task holds {held} bytes, not {size}")
            return seconds
        finally:
            ctr(release, "tasks", "kill", "--signal", "SIGKILL", new, check=False)
            ctr(release, "tasks", "rm", "--force", new, check=False)
            ctr(release, "containers", "rm", new, check=False)

    return restore


def containerd_container(size, release):
    """The holder in a CRI pod's container on containerd ``release``; the module's method=containerd
    dump (left running, as an operator takes it), then restores of it into new containers: the
    rounds' figures."""
    endpoint = cri_pod.CRI_ENDPOINTS[release]
    why = cri_pod.missing(endpoint)
    if why:
        raise SystemExit("bench restore: " + why)
    os.environ["PATH"] = BIN + os.pathsep + os.environ["PATH"]  # the module runs the test bed's crictl
    pod = f"strata-bench-restore-{uuid.uuid4().hex[:6]}"
    mib = str(size >> 20)
    # containerd restores a container into the namespaces of the pod it was dumped from: the pod
    # stays while the restores run (the holder keeps its memory: 2x the size in all).
    with cri_pod.running_pod(WORK, pod, "strata-bench", "holder", ["hold", mib], endpoint=endpoint) as made:
        inspected = cri_pod.crictl("inspect", "-o", "json", made["id"], endpoint=endpoint)
        pid = json.loads(inspected)["info"]["pid"]
        deadline = time.monotonic() + 300
        while not os.path.exists(f"/proc/{pid}/root/ready"):
            if time.monotonic() > deadline:
                raise SystemExit("bench restore: the CRI holder did not fill its memory in 300 s")
            time.sleep(0.2)
        dumped = module(
            {
                "pod": pod,
                "namespace": "strata-bench",
                "container": "holder",
                "runtime": "cri",
                "cri_endpoint": endpoint,
                "ctr_path": containerd_of(release).ctr,
                "method": "containerd",
                "images_dir": os.path.join(WORK, f"containerd-{release}"),
                "keep": 1,
            }
        )
        return rounds(
            f"containerd {release}",
            dumped["checkpoint_dir"],
            containerd_restore(release),
            size,
            CONTAINERD_ROUNDS,
            warmup=CONTAINERD_WARMUP,
        )


def pre_dump_line():
    proc = subprocess.run(
        [CRIU, "check", "--feature", "mem_dirty_track"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        return (
            "pre-dump frozen time: not measurable on this kernel (criu check --feature mem_dirty_track: "
            f"{said[-1] if said else 'rc=' + str(proc.returncode)}); bench predump measures it in a "
            "QEMU guest on Debian's kernel"
        )
    return "pre-dump frozen time: this kernel tracks dirty memory; bench predump measures it (in a guest)"


def record_path(path, figures, gib, judged, floor=None):
    """One path's figures into bench/results; ``floor``: the host process's figures at the same size
    (CRIU's own restore), set against this path's mean restore in the notes."""
    against_floor = ""
    if floor:
        against_floor = f"; {figures[3] / floor[3]:.2f}x CRIU's own restore of as much (host process)"
    record(
        "restore",
        metric=f"restore to running: {path}",
        ours=figures[3],
        baseline=figures[4],
        baseline_name="cat of the dump's images into /dev/null",
        unit="s",
        ratio=figures[0],
        goal=f"<= {GOAL:.2f}x" if judged else None,
        met=figures[0] <= GOAL if judged else None,
        size={"GiB": gib},
        notes=f"mean of {figures[5]} ABBA round(s)' ratios, spread {figures[1]:.2f}-{figures[2]:.2f}x; "
        f"page cache dropped before each; against the images read into fresh memory {figures[6]:.2f}x"
        + against_floor,
    )


# Measured with dd of /dev/zero at 4, 8, 12 and 16 GiB in a row (docs/performance.md, restore)
VM_MEMORY = "this VM's host backs memory the guest has not touched lately slowly (docs/performance.md)"


def fresh_memory_causes(fills):
    """Where a read into fresh memory grew faster than its size too, that is the cause a restore's
    growth is named with: a restore fills as much new memory (VM_MEMORY)."""
    causes = {}
    for (size_a, time_a), (size_b, time_b) in zip(fills, fills[1:]):
        exponent = growth_exponent(size_a, time_a, size_b, time_b)
        if exponent is not None and exponent > WORSE_ABOVE:
            causes[size_b] = (
                f"new memory: the read of the images into fresh memory grew alike ({time_a:.2f} -> "
                f"{time_b:.2f} s): {VM_MEMORY}"
            )
    return causes


def containerd_summary(release, gib, figures, floor):
    line = (
        f"{gib:g}GiB containerd {release} (module) {figures[0]:.2f}x ({figures[1]:.2f}-{figures[2]:.2f}; "
        f"{figures[6]:.2f}x a read into fresh memory"
    )
    if floor:
        line += f"; {figures[3]:.2f} s, {figures[3] / floor[3]:.2f}x CRIU's own {floor[3]:.2f} s"
    return line + ")"


def main():
    if os.geteuid() != 0:
        raise SystemExit("bench restore: needs root (CRIU, docker, drop_caches)")
    if docker("info", "--format", "{{.ExperimentalBuild}}").strip() != "true":
        raise SystemExit("bench restore: dockerd runs without --experimental (tests/testbed/up starts it so)")
    os.makedirs(WORK, exist_ok=True)
    largest = SIZES_GIB[-1]
    try:
        host = {gib: host_process(holder_bytes(gib)) for gib in SIZES_GIB}
        container = docker_container(holder_bytes(DOCKER_GIB))
        containerd = {
            (r, gib): containerd_container(holder_bytes(gib), r)
            for r in CONTAINERD_RELEASES
            for gib in CONTAINERD_GIB
        }
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
        shutil.rmtree(BENCH_DIR, ignore_errors=True)
    print(pre_dump_line())
    fills = [(gib, figures[7]) for gib, figures in host.items()]
    for line in growth_lines("read of its images into fresh memory", fills, causes=VM_MEMORY):
        print(line)
    restores = [(gib, figures[3]) for gib, figures in host.items()]
    cats = [(gib, figures[4]) for gib, figures in host.items()]
    for line in [
        *growth_lines("criu restore of the host process", restores, causes=fresh_memory_causes(fills)),
        *growth_lines("cat of its images", cats),
    ]:
        print(line)
    print(
        "bench restore: restore/cat "
        + ", ".join(
            f"{gib:g}GiB host process (criu restore) {figures[0]:.2f}x ({figures[1]:.2f}-{figures[2]:.2f})"
            for gib, figures in host.items()
        )
        + f", {DOCKER_GIB:g}GiB Docker container (module) {container[0]:.2f}x "
        f"({container[1]:.2f}-{container[2]:.2f}), "
        + ", ".join(
            containerd_summary(r, gib, figures, host.get(gib)) for (r, gib), figures in containerd.items()
        )
        + f"; page cache dropped before each; goal <= {GOAL:.2f}x"
    )
    for gib, figures in host.items():
        record_path("host process (criu restore)", figures, gib, gib == largest)
    record_path("Docker container (module)", container, DOCKER_GIB, True)
    for (release, gib), figures in containerd.items():
        path = f"containerd {release}, CRIU's images in the dump directory (module)"
        record_path(path, figures, gib, gib == CONTAINERD_GIB[-1], floor=host.get(gib))


if __name__ == "__main__":
    main()
