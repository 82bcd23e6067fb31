"""The GPU checkpoint check that tests/gpu/run runs on a machine with an NVIDIA GPU.

1. Probe: driver, nvidia-smi, cuda-checkpoint anywhere on the machine, libcuda's checkpoint API,
   CRIU (carried as the test bed unpacks it) and `criu check`, CRIU's CUDA plugin, Docker, PyTorch.
2. Freeze cycle: a CUDA process holds a known pattern in GPU memory and counts; the module's own
   freezer (gpu.find_freezer: cuda-checkpoint, else the driver API through ctypes) locks and
   checkpoints it; nvidia-smi must show its GPU memory released and the counter must stop; then
   restore and unlock, and the counter goes on and the pattern is intact.
3. Where CRIU runs: the module's dump (checkpoint.dump.Dumper, the code pod_checkpoint runs) of
   the process with N GiB of GPU memory, then `criu restore` of the images into a new process and
   the thaw; frozen time, dump rate, restore time, for each size asked (8 and 40 GiB).
4. containerd: the worker in a CRI pod on a containerd of the check's own (tests/gpu/cri_runtime.py),
   dumped by pod_checkpoint method=containerd (the module's containerd.dump: the GPU frozen around
   containerd's checkpoint, the pod left running), then restored into a new container.

--steps picks steps (the probe always runs): freeze, dumps, containerd, predump, ansible, baselines.

Everything goes to OUT/log.txt and OUT/figures.json. --self-test runs the same steps without a
GPU (a CPU worker, the fake libcuda of the unit tests): it checks the script, never the GPU.
"""

import argparse
import ast
import contextlib
import ctypes
import glob
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, ".collections"))
sys.path.insert(0, REPO)

import cri_runtime  # noqa: E402 - tests/gpu, beside this script

from ansible_collections.strata.ops.plugins.module_utils import containers, criu  # noqa: E402
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import containerd, gpu  # noqa: E402
from ansible_collections.strata.ops.plugins.module_utils.checkpoint.dump import Dumper  # noqa: E402

GIB = 1 << 30
# What `run` carries (tests/gpu/prepare puts it there): CRIU, the containerd step's runtime.
CARRY = os.path.join(REPO, ".tmp", "gpu-carry")
PLUGIN_DIRS = ("/usr/lib/criu", "/usr/local/lib/criu", "/usr/lib64/criu")
STEPS = ("freeze", "dumps", "containerd", "predump", "ansible", "baselines")


class Report:
    """log.txt (every line, with seconds since start) and figures.json (rewritten on each record)."""

    def __init__(self, out, budget):
        self.out = out
        self.start = time.monotonic()
        self.budget = budget
        self.figures = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.log_file = open(os.path.join(out, "log.txt"), "a")  # noqa: SIM115 - open for the whole run

    def elapsed(self):
        return time.monotonic() - self.start

    def left(self):
        return self.budget - self.elapsed()

    def log(self, text):
        line = f"[{self.elapsed():7.2f}] {text}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def record(self, key, value):
        self.figures[key] = value
        self.figures["elapsed_s"] = round(self.elapsed(), 2)
        with open(os.path.join(self.out, "figures.json.tmp"), "w") as handle:
            json.dump(self.figures, handle, indent=2, sort_keys=True, default=str)
        os.rename(os.path.join(self.out, "figures.json.tmp"), os.path.join(self.out, "figures.json"))


def run(argv, environ_update=None, timeout=900):
    """AnsibleModule.run_command's contract: argv -> (rc, stdout, stderr), never raises on rc."""
    env = dict(os.environ, **(environ_update or {}))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        return 127, "", str(exc)
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout} s"
    return done.returncode, done.stdout, done.stderr


# ---- 1. probe ----------------------------------------------------------------------------------


def find_cuda_checkpoint():
    """cuda-checkpoint on PATH, and every file of that name where NVIDIA's packages put programs."""
    found = set()
    on_path = shutil.which("cuda-checkpoint")
    if on_path:
        found.add(os.path.realpath(on_path))
    roots = [d for d in ("/usr", "/opt", "/root", "/home", "/bin", "/sbin") if os.path.isdir(d)]
    _rc, out, _err = run(["find", *roots, "-xdev", "-name", "cuda-checkpoint*", "-type", "f"], timeout=20)
    found.update(line for line in out.splitlines() if line)
    return on_path, sorted(found)


def carried_criu(out):
    """A wrapper that runs the carried CRIU with its own glibc, as tests/testbed/up writes it."""
    archives = sorted(glob.glob(os.path.join(CARRY, "criu-*.tar.xz")))
    if archives:
        cri_runtime.extract(archives[-1], os.path.join(out, "carry"))
        roots = sorted(glob.glob(os.path.join(out, "carry", "criu-*")))
    else:
        roots = sorted(d for d in glob.glob(os.path.join(CARRY, "criu-*")) if os.path.isdir(d))
    if not roots:
        return shutil.which("criu")
    root = roots[-1]
    os.makedirs(os.path.join(out, "bin"), exist_ok=True)
    wrapper = os.path.join(out, "bin", "criu")
    libdir = os.path.join(root, "usr/lib/x86_64-linux-gnu")
    with open(wrapper, "w") as handle:
        handle.write(
            f'#!/bin/sh\nexec "{libdir}/ld-linux-x86-64.so.2" --library-path "{libdir}:/lib/x86_64-linux-gnu:'
            f'/usr/lib/x86_64-linux-gnu" "{root}/usr/sbin/criu" "$@"\n'
        )
    os.chmod(wrapper, 0o755)
    return wrapper


def python_with_torch():
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3", "/opt/conda/bin/python"):
        if candidate and os.path.exists(candidate):
            rc, out, _err = run([candidate, "-c", "import torch; print(torch.__version__)"], timeout=120)
            if rc == 0:
                return candidate, out.strip()
    return None, None


def probe(report, args):
    facts = {}
    rc, out, err = run(
        [
            "nvidia-smi",
            "--query-gpu=name,driver_version,memory.total,memory.used",
            "--format=csv,noheader,nounits",
        ],
        timeout=60,
    )
    facts["nvidia_smi"] = {
        "rc": rc,
        "gpus": [line.split(", ") for line in out.strip().splitlines()] if rc == 0 else [],
        "error": err.strip()[:300],
    }
    full = run(["nvidia-smi"], timeout=60)[1]
    with open(os.path.join(report.out, "nvidia-smi.txt"), "w") as handle:
        handle.write(full)
    try:
        with open("/proc/driver/nvidia/version") as handle:
            facts["driver"] = handle.read().strip().splitlines()[0]
    except OSError as exc:
        facts["driver"] = f"no /proc/driver/nvidia/version ({exc.strerror})"
    facts["gpus_dir"] = gpu.nvidia_gpu_present()
    with open("/proc/meminfo") as handle:
        memory = [line.strip() for line in handle if line.startswith(("MemTotal", "MemAvail"))]
    facts["machine"] = {
        "kernel": os.uname().release,
        "sandbox": cri_runtime.sandbox_kind(),
        "cpus": os.cpu_count(),
        "images_dir_free_gib": round(disk_free(args.images_dir) / GIB, 1),
        "meminfo": memory,
    }
    on_path, everywhere = find_cuda_checkpoint()
    facts["cuda_checkpoint"] = {"on_path": on_path, "found": everywhere}
    # The freeze cycle tries a cuda-checkpoint found off PATH too; the module's dump takes PATH's.
    args.cuda_checkpoint = on_path or (everywhere[0] if everywhere else None)
    if on_path:
        facts["cuda_checkpoint"]["has_action"] = gpu.CudaCheckpointTool(run, on_path).has_action()
        facts["cuda_checkpoint"]["help"] = run([on_path, "-h"])[1][:2000]
    _lib, facts["libcuda"] = gpu.probe_driver_api(args.libcuda)
    facts["ldconfig_libcuda"] = [
        line.strip() for line in run(["ldconfig", "-p"])[1].splitlines() if "libcuda" in line
    ]
    criu_bin = carried_criu(args.work)
    facts["criu"] = {"path": criu_bin}
    if criu_bin:
        rc, out, err = run([criu_bin, "--version"])
        facts["criu"]["version"] = out.strip() or err.strip()
        rc, out, err = run([criu_bin, "check"])
        facts["criu"]["check"] = {"rc": rc, "output": (out + err).strip()[-1500:]}
    facts["cuda_plugin"] = [d for d in PLUGIN_DIRS if gpu.cuda_plugin(d)]
    rc, out, err = run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=30)
    facts["docker"] = out.strip() if rc == 0 else f"not usable: {(err or out).strip()[:200]}"
    python, torch_version = python_with_torch()
    facts["torch"] = {"python": python, "version": torch_version}
    if python:
        rc, out, _err = run(
            [
                python,
                "-c",
                "import torch; print(torch.version.cuda, torch.cuda.is_available(), "
                "torch.cuda.device_count())",
            ],
            timeout=120,
        )
        facts["torch"]["cuda"] = out.strip()
    for key, value in facts.items():
        report.log(f"probe {key}: {json.dumps(value, default=str)[:600]}")
    report.record("probe", facts)
    return facts, criu_bin, python


# ---- the worker -----------------------------------------------------------------------------------


class WorkerStatus:
    """The status file a cuda_worker.py writes, and waits on it."""

    def __init__(self, status_path, log_path, pid):
        self.status_path, self.log_path, self.pid = status_path, log_path, pid

    def exited(self):
        return not criu.alive(self.pid)

    def status(self):
        try:
            with open(self.status_path) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {}

    def wait(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status and predicate(status):
                return status
            if self.exited():
                raise RuntimeError(
                    f"the worker (pid {self.pid}) exited waiting for {what}: see {self.log_path}"
                )
            time.sleep(0.05)
        raise RuntimeError(f"timed out after {timeout} s waiting for {what} (last status {self.status()})")


class Worker(WorkerStatus):
    def __init__(self, report, args, gib, name):
        self.status_path = os.path.join(args.work, f"{name}.status.json")
        self.log_path = os.path.join(args.work, f"{name}.log")
        argv = [
            args.python,
            os.path.join(HERE, "cuda_worker.py"),
            "--gib",
            str(gib),
            "--status",
            self.status_path,
            "--device",
            args.device,
        ]
        if args.self_test:
            argv += ["--load-library", args.libcuda]
        with open(self.log_path, "w") as log, open(os.devnull) as null:
            # A session of its own and no terminal: CRIU dumps it without --shell-job.
            self.proc = subprocess.Popen(argv, stdin=null, stdout=log, stderr=log, start_new_session=True)
        self.pid = self.proc.pid

    def exited(self):
        return self.proc.poll() is not None and not criu.alive(self.pid)

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        # Reap our own child at once: a zombie keeps its PID, which a restore needs free.
        deadline = time.monotonic() + 30
        while self.proc.poll() is None or criu.alive(self.pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"process {self.pid} did not go after SIGKILL")
            time.sleep(0.05)


def gpu_memory_of(pid):
    """MiB nvidia-smi lists for pid, 0 when it lists none, None without nvidia-smi."""
    rc, out, _err = run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"], timeout=60
    )
    if rc != 0:
        return None
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if parts and parts[0] == str(pid):
            return int(parts[1])
    return 0


def counter_frozen(worker, seconds=1.0):
    before = worker.status().get("count")
    time.sleep(seconds)
    return before == worker.status().get("count"), before


def fake_cuda_pids(args, pid, new_pid_state=None):
    """Self-test only: make the fake libcuda treat ``pid`` as its CUDA process (and a PID it has not
    seen as one in ``new_pid_state``: a process restored from a checkpointed dump)."""
    os.environ["FAKE_LIBCUDA_PIDS"] = str(pid)
    if new_pid_state:
        os.environ["FAKE_LIBCUDA_NEW_PID_STATE"] = new_pid_state
    else:
        os.environ.pop("FAKE_LIBCUDA_NEW_PID_STATE", None)
    ctypes.CDLL(args.libcuda).fake_reset()


# ---- 2. the freeze cycle ----------------------------------------------------------------------------


def freezers(args):
    """Each way this machine can freeze CUDA, with the facts behind it: cuda-checkpoint (when
    the probe found one with --action), then the driver API that the module falls back to."""
    found = []
    if args.cuda_checkpoint:
        tool, facts = gpu.find_freezer(run, args.cuda_checkpoint, args.libcuda)
        if tool is not None and tool.kind == gpu.CudaCheckpointTool.kind:
            found.append((tool, facts))
    tool, facts = gpu.find_freezer(run, None, args.libcuda)
    found.append((tool, facts))
    return found


def one_freeze_cycle(report, args, worker, freezer):
    """lock (the counter stops), checkpoint (the GPU memory is released), restore, unlock (the
    counter goes on, the pattern is intact) with one freezer."""
    cycle = {"freezer": {"kind": freezer.kind, "path": freezer.path}}
    state = {"cuda_pids": [worker.pid], "states": []}
    gpu.step(freezer, state, label="start")
    gpu.step(freezer, state, "lock", timeout_ms=args.lock_timeout * 1000)
    cycle["frozen_after_lock"], count_locked = counter_frozen(worker)
    gpu.step(freezer, state, "checkpoint")
    cycle["gpu_mib_checkpointed"] = gpu_memory_of(worker.pid)
    gpu.step(freezer, state, "restore")
    cycle["gpu_mib_restored"] = gpu_memory_of(worker.pid)
    gpu.step(freezer, state, "unlock")
    cycle["states"] = state["states"]
    after = worker.wait(lambda s: s["count"] > (count_locked or 0) + 5, 60, "the counter to go on")
    cycle["counter_went_on"] = True
    checked = worker.wait(lambda s: s["verified_at"] > after["count"], 120, "a pattern check after unlock")
    cycle["pattern_ok_after"] = checked["pattern_ok"]
    report.log(f"freeze cycle ({freezer.kind}): {json.dumps(cycle, default=str)}")
    return cycle


def freeze_cycle(report, args):
    fig = {"gib": args.freeze_gib, "device": args.device, "cycles": {}}
    worker = Worker(report, args, args.freeze_gib, "freeze")
    try:
        ready = worker.wait(lambda s: s.get("count", 0) > 5, 300, "the worker to run")
        fig["pattern_ok_at_start"] = ready["pattern_ok"]
        fig["gpu_mib_before"] = gpu_memory_of(worker.pid)
        if args.self_test:
            fake_cuda_pids(args, worker.pid)
        for freezer, facts in freezers(args):
            if freezer is None:
                fig["skipped"] = f"nothing here can freeze CUDA: {gpu.missing_freezer_reason(facts)}"
                report.log("freeze cycle skipped: " + fig["skipped"])
                continue
            try:
                fig["cycles"][freezer.kind] = one_freeze_cycle(report, args, worker, freezer)
            except (RuntimeError, OSError, criu.CriuError) as exc:
                fig["cycles"][freezer.kind] = {"error": str(exc)}
                fig["error"] = f"{freezer.kind}: {exc}"
                report.log(f"freeze cycle ({freezer.kind}) FAILED: {exc}")
                break
        fig["gpu_mib_after"] = gpu_memory_of(worker.pid)
        return fig
    except (RuntimeError, criu.CriuError) as exc:
        fig["error"] = str(exc)
        report.log(f"freeze cycle FAILED: {exc}")
        return fig
    finally:
        worker.kill()


# ---- 3. dump and restore through CRIU ---------------------------------------------------------------


def dump_params(pid, args):
    """pod_checkpoint's parameters for a host process, with the module's defaults."""
    return {
        "pid": pid,
        "pod": None,
        "namespace": "default",
        "container": None,
        "runtime": "auto",
        "cri_endpoint": None,
        "docker_socket": "/var/run/docker.sock",
        "images_dir": args.images_dir,
        "name": "gpu-check",
        "keep": 1,
        "leave_running": True,
        "pre_dumps": 0,
        "tcp_established": False,
        "manage_cgroups": True,
        "external_mounts": "facts",
        "criu_path": args.criu,
        "crit_path": None,
        "criu_plugin_dir": args.plugin_dir,
        "cuda_checkpoint_path": None,
        "cuda_driver_library": args.libcuda,
        "cuda_lock_timeout": args.lock_timeout,
    }


def disk_need(gib):
    """Bytes a dump of ``gib`` GiB of GPU memory takes: the images, CRIU's other files, a margin."""
    return gib * GIB * 1.15 + 4 * GIB


def disk_free(images_dir):
    os.makedirs(images_dir, exist_ok=True)
    vfs = os.statvfs(images_dir)
    return vfs.f_bavail * vfs.f_frsize


def no_room_for_dump(images_dir, gib):
    """Why images_dir cannot take the dump of ``gib`` GiB, or None when it can."""
    free = disk_free(images_dir)
    if free < disk_need(gib):
        need = disk_need(gib) / GIB
        return f"{images_dir} has {free / GIB:.1f} GiB free, the dump needs about {need:.1f} GiB"
    return None


def largest_dump_fitting(images_dir):
    """The most GiB of GPU memory whose dump fits in images_dir (whole GiB)."""
    return int((disk_free(images_dir) - 4 * GIB) / 1.15 / GIB)


def dump_worker(fig, args, pid):
    """The module's dump of process ``pid`` (checkpoint.dump.Dumper); its figures go to fig.
    Returns the module's result."""
    started = time.monotonic()
    params = dump_params(pid, args)
    result = Dumper(params, False, run, gpus_dir=args.gpus_dir).run_state()
    fig["module_wall_s"] = round(time.monotonic() - started, 3)
    manifest = result["manifest"]
    fig["gpu"] = {k: manifest["gpu"].get(k) for k in ("path", "reason", "states", "locked_s", "taken")}
    fig["dump_wall_s"] = manifest["dump_wall_s"]
    fig["images_bytes"] = manifest["sizes"]["images_bytes"]
    fig["criu_stats"] = manifest["stats"]
    fig["frozen_s"] = result["frozen_s"]
    fig["dump_rate_gib_s"] = round(fig["images_bytes"] / GIB / max(manifest["dump_wall_s"], 1e-6), 3)
    return result


def restore_dump(fig, args, result, pid):
    """`criu restore` of the dump into a new process ``pid``, then the thaw of its CUDA state."""
    manifest = result["manifest"]
    dump_dir = result["checkpoint_dir"]
    argv = [
        args.criu,
        "restore",
        "-D",
        dump_dir,
        "--restore-detached",
        "--manage-cgroups",
        "--log-file",
        "restore.log",
        "-v4",
    ]
    if manifest["gpu"]["path"] == "criu-cuda-plugin":
        argv += ["--libdir", args.plugin_dir]
    started = time.monotonic()
    rc, out, err = run(argv)
    fig["criu_restore_s"] = round(time.monotonic() - started, 3)
    if rc != 0:
        raise RuntimeError(
            "criu restore failed (rc={}): {}; log: {}".format(
                rc, (err or out).strip()[-500:], criu.log_tail(os.path.join(dump_dir, "restore.log"))
            )
        )
    thaw = {"cuda_pids": [pid], "states": []}
    if manifest["gpu"]["path"] in ("cuda-checkpoint", "cuda-driver-api"):
        freezer, _facts = gpu.find_freezer(run, gpu.cuda_checkpoint_binary(), args.libcuda)
        gpu.thaw(freezer, thaw)
    fig["thaw_states"] = thaw["states"]
    fig["restore_to_running_s"] = round(time.monotonic() - started, 3)


def check_restored(fig, worker, original):
    """The restored process is the dumped one: it counts on and its pattern is intact."""
    # The restored process carries the original's memory: its start time, and a counter that goes
    # on from the dump; a freshly started one would have a new ready_at and count from 1.
    first = worker.wait(lambda s: s["time"] > original["time"], 120, "the restored process to count")
    fig["same_process_state"] = first["ready_at"] == original["ready_at"]
    fig["counter_at_dump_about"], fig["counter_first_after_restore"] = original["count"], first["count"]
    after = worker.wait(lambda s: s["count"] > first["count"] + 5, 120, "the restored counter to go on")
    fig["counter_went_on"] = after["count"] > first["count"]
    checked = worker.wait(lambda s: s["verified_at"] > after["count"], 300, "a pattern check after restore")
    fig["pattern_ok_after_restore"] = checked["pattern_ok"]


def dump_and_restore(report, args, gib):
    fig = {"gib": gib, "device": args.device}
    no_room = no_room_for_dump(args.images_dir, gib)
    if no_room:
        fig["skipped"] = no_room
        report.log("dump {} GiB skipped: {}".format(gib, fig["skipped"]))
        return fig
    worker = Worker(report, args, gib, f"dump-{gib}")
    try:
        worker.wait(
            lambda s: s.get("count", 0) > 5 and s.get("pattern_ok"), 600, f"the worker to fill {gib} GiB"
        )
        fig["gpu_mib"] = gpu_memory_of(worker.pid)
        if args.self_test:
            fake_cuda_pids(args, worker.pid)
        result = dump_worker(fig, args, worker.pid)
        original = worker.status()
        report.log(f"dump {gib} GiB: {json.dumps(fig, default=str)}")
        worker.kill()
        restore_dump(fig, args, result, worker.pid)
        check_restored(fig, worker, original)
        report.log(
            "restore {} GiB: {}".format(
                gib,
                json.dumps(
                    {k: fig[k] for k in fig if "restore" in k or "thaw" in k or "counter" in k}, default=str
                ),
            )
        )
    except (RuntimeError, criu.CriuError) as exc:
        fig["error"] = str(exc)
        report.log(f"dump/restore {gib} GiB FAILED: {exc}")
    finally:
        worker.kill()
        keep_criu_logs(args, f"criu-{gib}")
        shutil.rmtree(args.images_dir, ignore_errors=True)
    return fig


def keep_criu_logs(args, name):
    """CRIU's logs of a dump and its restore, out of the images about to be removed."""
    kept = os.path.join(args.work, name)
    for path in glob.glob(os.path.join(args.images_dir, "**", "*.log"), recursive=True):
        os.makedirs(kept, exist_ok=True)
        shutil.copy(path, os.path.join(kept, os.path.relpath(path, args.images_dir).replace(os.sep, "_")))


def pack_logs(args, limit=4 << 20):
    """OUT/logs.tar.gz: the work folder's logs and status files, the last ``limit`` bytes of each."""
    with tarfile.open(os.path.join(args.out, "logs.tar.gz"), "w:gz") as tar:
        for path in sorted(glob.glob(os.path.join(args.work, "**", "*"), recursive=True)):
            if not path.endswith((".log", ".json")) or not os.path.isfile(path):
                continue
            with open(path, "rb") as handle:
                handle.seek(max(0, os.path.getsize(path) - limit))
                data = handle.read()
            info = tarfile.TarInfo(os.path.relpath(path, args.work))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget", type=float, default=450, help="seconds for the whole check")
    parser.add_argument("--sizes", default="8,40", help="GiB of GPU memory per CRIU dump")
    parser.add_argument("--freeze-gib", type=float, default=1)
    parser.add_argument("--predump-gib", type=float, default=4, help="0: no pre-dump measure")
    parser.add_argument("--ansible-gib", type=float, default=2, help="GiB of the worker the module dumps")
    parser.add_argument("--cri-gib", type=float, default=2, help="GiB of the worker in the containerd step")
    parser.add_argument("--steps", default="all", help=f"comma-separated, of {', '.join(STEPS)}; or all")
    parser.add_argument("--lock-timeout", type=int, default=10)
    parser.add_argument("--libcuda", default=gpu.LIBCUDA)
    parser.add_argument("--images-dir", default="/var/tmp/strata-gpu-dumps")
    # The device tool brings back at most 8 files from OUT: the workers' files and CRIU's logs
    # live here and come back packed in OUT/logs.tar.gz.
    parser.add_argument("--work", default="/var/tmp/strata-gpu-work")
    parser.add_argument("--self-test", action="store_true", help="no GPU: check this script only")
    args = parser.parse_args()
    args.steps = (
        set(STEPS) if args.steps == "all" else {s.strip() for s in args.steps.split(",") if s.strip()}
    )
    if args.steps - set(STEPS):
        parser.error(f"--steps: unknown {sorted(args.steps - set(STEPS))}; the steps are {', '.join(STEPS)}")
    return args


def use_fake_cuda(report, args):
    """--self-test: the unit tests' fake libcuda instead of the driver's."""
    from tests.unit.fakes.cuda import build_libcuda  # noqa: PLC0415 - the unit tests' fake

    # Named libcuda.so.1 and mapped by the worker, so that the module finds a CUDA process; a
    # directory stands in for /proc/driver/nvidia/gpus. The dump then takes the driver-API path.
    fake_dir = os.path.join(args.work, "fake-cuda")
    os.makedirs(os.path.join(fake_dir, "gpus"), exist_ok=True)
    args.libcuda = os.path.join(fake_dir, "libcuda.so.1")
    shutil.copy(build_libcuda(fake_dir), args.libcuda)
    args.gpus_dir = os.path.join(fake_dir, "gpus")
    report.log(f"SELF-TEST: no GPU is used; CPU worker, fake libcuda {args.libcuda}.")
    report.log("No figure here is a GPU figure.")


def run_dumps(report, args, facts):
    """dump_and_restore for each size asked, unless the GPU, the budget left or CRIU rules it out.
    A size that does not fit on the disk, or in the time left at the rate the last size took,
    becomes the largest that does (when that is still twice the last one)."""
    dumps = {}
    args.plugin_dir = (facts["cuda_plugin"] or PLUGIN_DIRS)[0]
    if not args.criu or facts["criu"].get("check", {}).get("rc") not in (0, None):
        report.log("criu check did not pass here; the dumps are tried anyway and their errors recorded")
    total = facts["nvidia_smi"]["gpus"]
    # A dump and restore take about 6 s per GiB on a disk of ~0.5 GB/s, with the fill, until
    # a size has been measured here.
    seconds_per_gib, last_gib = 6.0, 0
    for size in [float(s) for s in args.sizes.split(",") if s]:
        gib = size if args.self_test else int(size)
        if not args.self_test:
            fitting = min(largest_dump_fitting(args.images_dir), int((report.left() - 30) / seconds_per_gib))
            if fitting < gib and fitting >= max(2, 2 * last_gib):
                report.log(f"dump {gib} GiB fits neither the disk nor the time left: {fitting} GiB instead")
                gib = fitting
        if total and not args.self_test and float(total[0][2]) < gib * 1024 + 2048:
            dumps[str(gib)] = {"skipped": f"the GPU has {total[0][2]} MiB"}
            continue
        if report.left() < 30 + gib * seconds_per_gib:
            dumps[str(gib)] = {"skipped": f"{report.left():.0f} s of the budget left"}
            report.log("dump {} GiB skipped: {}".format(gib, dumps[str(gib)]["skipped"]))
            continue
        if not args.criu:
            dumps[str(gib)] = {"skipped": "no CRIU here"}
            continue
        started = time.monotonic()
        dumps[str(gib)] = dump_and_restore(report, args, gib)
        seconds_per_gib = max(seconds_per_gib, 1.2 * (time.monotonic() - started) / gib)
        last_gib = gib
        report.record("dumps", dumps)
    report.record("dumps", dumps)
    return dumps


# ---- containerd: the worker in a CRI pod, containerd's own checkpoint and restore -----------------

CRI_POD, CRI_NAMESPACE, CRI_CONTAINER = "gpu-check", "strata-gpu", "cuda-worker"


def module_defaults():
    """pod_checkpoint's parameters with their defaults, read from its argument spec (so that a
    parameter added there reaches the module's functions here too)."""
    path = os.path.join(REPO, "plugins", "modules", "pod_checkpoint.py")
    with open(path) as handle:
        tree = ast.parse(handle.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "argument_spec" and isinstance(node.value, ast.Call):
            params = {}
            for option in node.value.keywords:
                if option.arg is None:  # **K8S_AUTH_ARGSPEC: method=kubelet's
                    continue
                params[option.arg] = None
                for setting in getattr(option.value, "keywords", []):
                    # a constant's name is no literal: set below where it matters
                    if setting.arg == "default":
                        with contextlib.suppress(ValueError):
                            params[option.arg] = ast.literal_eval(setting.value)
            params.update(docker_socket=containers.DEFAULT_DOCKER_SOCKET, cuda_driver_library=gpu.LIBCUDA)
            return params
    raise RuntimeError(f"no argument_spec in {path}")


def cri_params(args, runtime, plugin_dir):
    """pod_checkpoint's parameters for method=containerd on the step's pod."""
    params = module_defaults()
    params.update(
        method="containerd",
        state="dumped",
        pod=CRI_POD,
        namespace=CRI_NAMESPACE,
        container=CRI_CONTAINER,
        images_dir=os.path.join(args.images_dir, "containerd"),
        name="gpu-cri",
        keep=1,
        leave_running=True,
        cri_endpoint="unix://" + runtime.socket,
        containerd_address=runtime.socket,
        containerd_namespace=cri_runtime.NAMESPACE,
        ctr_path=os.path.join(runtime.bin, "ctr"),
        criu_path=args.criu,
        criu_plugin_dir=plugin_dir,
        cuda_driver_library=args.libcuda,
        cuda_lock_timeout=args.lock_timeout,
    )
    return params


def cri_worker_spec(args, status_path):
    """The worker's CRI container config: the host's python (PyTorch's on the GPU machine) and
    tests/gpu through read-only bind mounts, its status folder read-write; on a GPU the NVIDIA
    devices and the driver's folder, in the self-test the fake libcuda."""
    status_dir = os.path.dirname(status_path)
    argv = [args.python, os.path.join(HERE, "cuda_worker.py"), "--gib", str(args.cri_gib)]
    argv += ["--status", status_path, "--device", args.device]
    paths = [HERE, *cri_runtime.python_mounts(run, args.python)]
    # HOME and TMPDIR: the only writable folder (CUDA's and PyTorch's caches)
    envs = {"HOME": status_dir, "TMPDIR": status_dir, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    if os.environ.get("PYTHONPATH"):
        envs["PYTHONPATH"] = os.environ["PYTHONPATH"]
    devices = []
    if args.self_test:
        argv += ["--load-library", args.libcuda]
        paths.append(os.path.dirname(args.libcuda))
    else:
        driver = cri_runtime.libcuda_dir(run)
        if driver:
            paths.append(driver)
            envs["LD_LIBRARY_PATH"] = driver
        # CUDA used once on the host first: the driver makes /dev/nvidia-uvm on first use
        rc, _out, err = run([args.python, "-c", "import torch; torch.zeros(1, device='cuda')"], timeout=120)
        if rc != 0:
            raise RuntimeError(f"PyTorch cannot use the GPU on the host: {err.strip()[-500:]}")
        devices = cri_runtime.nvidia_devices()
    return {
        "command": argv,
        "envs": [{"key": key, "value": value} for key, value in envs.items()],
        "mounts": cri_runtime.bind_mounts([*paths, status_dir], writable=[status_dir]),
        "devices": devices,
    }


class GpuMemoryWatch(threading.Thread):
    """nvidia-smi's MiB of one process, read over and over while the module dumps it: the least
    seen says whether the CUDA checkpoint released the GPU memory inside the dump."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.seen, self.halt = pid, [], threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.seen.append(gpu_memory_of(self.pid))
            time.sleep(0.1)

    def least(self):
        self.halt.set()
        self.join(timeout=90)
        seen = [v for v in self.seen if v is not None]
        return min(seen) if seen else None


def cri_skip_reason(report, args, facts):
    """Why the containerd step cannot run here, or None."""
    if facts["machine"]["sandbox"] == "gvisor":
        return "gVisor (kernel 4.4.0) runs no CRIU: containerd's checkpoint needs a Firecracker machine"
    if os.geteuid() != 0:
        return "containerd and runc need root"
    if not args.criu:
        return "no CRIU here"
    need = 40 if args.self_test else 150 + 10 * args.cri_gib
    if report.left() < need:
        return f"{report.left():.0f} s of the budget left, the step needs about {need:.0f} s"
    return None


def gpu_figures(result):
    taken = result.get("gpu") or {}
    return {k: taken.get(k) for k in ("path", "taken", "reason", "states", "cuda_pids", "locked_s")}


class CriStep:
    """The containerd step's parts, on one runtime, pod and worker."""

    def __init__(self, report, args, runtime, fig):
        self.report, self.args, self.runtime, self.fig = report, args, runtime, fig
        self.checks = fig["checks"]
        self.worker = self.pod = self.params = None

    def start(self):
        """containerd up, the image in, the pod running and its worker counting."""
        args, runtime = self.args, self.runtime
        runtime.unpack()
        runtime.start()
        runtime.import_image()
        self.fig["runtime"] = runtime.facts
        self.report.record("containerd", self.fig)
        # the module finds crictl on PATH; ctr's client unpacks into the CRI plugin's snapshotter
        os.environ["PATH"] = runtime.bin + os.pathsep + os.environ.get("PATH", "")
        os.environ["CONTAINERD_SNAPSHOTTER"] = "native"
        status_dir = os.path.join(args.work, "cri-status")
        os.makedirs(status_dir)
        status_path = os.path.join(status_dir, "worker.status.json")
        started = time.monotonic()
        self.pod = runtime.run_pod(CRI_POD, CRI_NAMESPACE, CRI_CONTAINER, cri_worker_spec(args, status_path))
        pid = self.pod["pid"]
        self.worker = WorkerStatus(
            status_path, os.path.join(args.work, "pod-logs", CRI_CONTAINER + ".log"), pid
        )
        ready = self.worker.wait(
            lambda s: s.get("count", 0) > 5 and s.get("pattern_ok"), 600, "the worker in the pod to count"
        )
        self.fig.update(pod_to_counting_s=round(time.monotonic() - started, 2), worker_pid=pid)
        self.fig["gpu_mib_before"] = gpu_memory_of(pid)
        self.report.log(f"containerd step: worker pid {pid} counts ({ready['count']})")
        if args.self_test:
            fake_cuda_pids(args, pid, new_pid_state="checkpointed")

    def dump(self):
        """containerd.dump with the pod left running; the worker counts on. Returns (result, the
        worker's status before the dump)."""
        args, worker = self.args, self.worker
        before = worker.status()
        watch = None if args.self_test else GpuMemoryWatch(worker.pid)
        if watch:
            watch.start()
        started, commands = time.monotonic(), len(self.runtime.timings)
        try:
            result = containerd.dump(
                self.params, False, self.runtime.run, gpus_dir=args.gpus_dir, find_freezer=gpu.find_freezer
            )
        finally:
            least = watch.least() if watch else None
        dump = self.fig["dump"] = {"module_wall_s": round(time.monotonic() - started, 3)}
        at_end = worker.status()
        manifest = result.get("manifest") or {}
        dump.update(
            gpu_mib_least_during=least,
            gpu_mib_after=gpu_memory_of(worker.pid),
            checkpoint_dir=result["checkpoint_dir"],
            images_bytes=manifest.get("sizes", {}).get("images_bytes"),
            gpu=gpu_figures(result),
            manifest_gpu_path=(manifest.get("gpu") or {}).get("path"),
            count_before=before["count"],
            count_at_end=at_end["count"],
            commands=self.runtime.timings[commands:],
        )
        images = os.path.join(result["checkpoint_dir"], containerd.CRIU_DIR)
        stats = keep_containerd_criu_files(args, images, self.report, what="dump", prefix="images_")
        dump["criu_stats"] = criu.summarize_dump_stats(stats) if stats else None
        self.report.log(f"containerd dump: {json.dumps(dump, default=str)}")
        self.report.record("containerd", self.fig)
        after = worker.wait(lambda s: s["count"] > at_end["count"] + 5, 120, "the counter after the dump")
        checked = worker.wait(
            lambda s: s["verified_at"] > after["count"], 300, "a pattern check after the dump"
        )
        self.checks["counted_on_after_dump"] = True
        self.checks["pattern_ok_after_dump"] = checked["pattern_ok"]
        self.checks["gpu_path_taken"] = bool(dump["gpu"].get("taken")) and dump["gpu"].get("path") != "none"
        if not args.self_test and self.fig["gpu_mib_before"]:
            self.checks["gpu_memory_released_in_dump"] = least == 0
            self.checks["gpu_memory_back_after_dump"] = bool(dump["gpu_mib_after"])
        return result, before

    def restore(self, dumped, before):
        """The original container stopped (only the restored process writes the status file: both
        have the same mounts), then containerd.restore into a new container: the dumped process."""
        args, runtime, worker = self.args, self.runtime, self.worker
        runtime.crictl("stop", "--timeout", "2", self.pod["id"])
        deadline = time.monotonic() + 30
        while criu.alive(self.pod["pid"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        stopped_at = time.time()
        new = CRI_CONTAINER + "-restored"
        runtime.restored.append(new)
        params = dict(self.params, state="restored", checkpoint=dumped["checkpoint_dir"], new_container=new)
        started, commands = time.monotonic(), len(runtime.timings)
        result = containerd.restore(
            params, False, runtime.run, gpus_dir=args.gpus_dir, find_freezer=gpu.find_freezer
        )
        restore = self.fig["restore"] = {"module_wall_s": round(time.monotonic() - started, 3)}
        restore["pid"] = worker.pid = result["restored"]["pid"]
        runtime.remember(worker.pid)
        restore["gpu"] = gpu_figures(result)
        work = os.path.dirname(result["restored"]["criu_log"])
        stats = keep_containerd_criu_files(args, work, self.report, what="restore", prefix="restored_")
        first = worker.wait(lambda s: s["time"] > stopped_at, 120, "the restored process to count")
        restore.update(
            to_counting_s=round(time.monotonic() - started, 3),
            gpu_mib_after=gpu_memory_of(worker.pid),
            count_first=first["count"],
            commands=runtime.timings[commands:],
            criu_stats=(stats or {}).get("restore"),
        )
        self.report.log(f"containerd restore: {json.dumps(restore, default=str)}")
        self.report.record("containerd", self.fig)
        identity = ("identity", "ready_at")
        self.checks["same_process"] = [first.get(k) for k in identity] == [before.get(k) for k in identity]
        # on from the count before the dump: the dumped memory (a fresh start counts from 1)
        self.checks["counts_on_from_dump"] = first["count"] >= before["count"]
        after = worker.wait(lambda s: s["count"] > first["count"] + 5, 120, "the restored counter to go on")
        checked = worker.wait(
            lambda s: s["verified_at"] > after["count"], 300, "a pattern check after restore"
        )
        self.checks["counted_on_after_restore"] = True
        self.checks["pattern_ok_after_restore"] = checked["pattern_ok"]
        if not args.self_test and self.fig["gpu_mib_before"]:
            self.checks["gpu_memory_after_restore"] = bool(restore["gpu_mib_after"])


def keep_containerd_criu_files(args, folder, report, *, what, prefix):
    """CRIU's log and stats of containerd's checkpoint or restore (``what``: dump, restore; CRIU
    names them WHAT.log and stats-WHAT) lie in the dump directory (the module's work paths: beside
    the images, restored-NEW-criu/): copied (``prefix`` to their names) with the runc shim's logs
    (logs.tar.gz) before the step removes the dump. The decoded stats, or None."""
    kept = os.path.join(args.work, "containerd-criu-logs")
    os.makedirs(kept, exist_ok=True)
    log_name, stats_name = f"{what}.log", f"stats-{what}"
    for name in (log_name, stats_name):
        with contextlib.suppress(FileNotFoundError):
            shutil.copy(os.path.join(folder, name), os.path.join(kept, prefix + name))
    try:
        return criu.read_stats(run, folder, name=stats_name)[0]
    except criu.CriuError as exc:
        report.log(f"containerd {stats_name}: {exc}")
        return None


def containerd_step(report, args, facts):
    """The worker in a CRI pod on a containerd started here; the module's containerd.dump (the
    GPU frozen around containerd's checkpoint, the pod left running): the worker counts on. Then
    the worker's container is stopped and containerd.restore brings the dump back in a new
    container: the dumped process (same identity), counting on, its pattern intact."""
    fig = {"gib": args.cri_gib, "device": args.device, "checks": {}}
    why = cri_skip_reason(report, args, facts)
    if why:
        fig["skipped"] = why
        report.log(f"containerd step SKIPPED: {why}")
        return fig
    if facts["criu"].get("check", {}).get("rc") not in (0, None):
        report.log("containerd step: criu check did not pass here; tried anyway")
    runtime = cri_runtime.CriRuntime(report.log, args.work, args.criu, CARRY)
    saved = {k: os.environ.get(k) for k in ("PATH", "CONTAINERD_SNAPSHOTTER", "FAKE_LIBCUDA_NEW_PID_STATE")}
    try:
        step = CriStep(report, args, runtime, fig)
        step.start()
        step.params = cri_params(args, runtime, (facts["cuda_plugin"] or PLUGIN_DIRS)[0])
        step.restore(*step.dump())
        failed = sorted(k for k, v in fig["checks"].items() if not v)
        if failed:
            fig["error"] = f"checks failed: {failed}"
            report.log(f"containerd step FAILED: {fig['error']}")
        else:
            report.log(f"containerd step passed: {json.dumps(fig['checks'])}")
    except cri_runtime.Unavailable as exc:
        fig["skipped"] = str(exc)
        report.log(f"containerd step SKIPPED: {exc}")
    except Exception as exc:
        # whatever it was: one run on the GPU machine has to say what broke
        fig["error"] = f"{type(exc).__name__}: {exc}"
        report.log(f"containerd step FAILED: {fig['error']}\n{traceback.format_exc()}")
        report.log(f"containerd's log (tail): {runtime.log_tail()}")
    finally:
        runtime.clean_up()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(os.path.join(args.images_dir, "containerd"), ignore_errors=True)
    return fig


# ---- pre-dump: frozen time with and without (a CPU process; needs the kernel's dirty tracking) ------

PREDUMP_HOLDER = """
import ctypes, mmap, os, signal, sys, time
chunk, huge = 64 << 20, 2 << 20
# private: CRIU dumps shared anonymous memory apart from the pages it counts and tracks
size = int(float(sys.argv[1]) * (1 << 30)) // chunk * chunk
mem = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for offset in range(0, len(mem), chunk):
    mem[offset:offset + chunk] = os.urandom(chunk)
first = (-ctypes.addressof(ctypes.c_char.from_buffer(mem))) % huge
def dirty(_signum, _frame):
    # every 4 KiB page of every 20th 2 MiB block, aligned: 5 % of the pages. Not one byte of every
    # 20th page: under transparent huge pages the kernel tracks a 2 MiB page's dirtiness as one.
    for block in range(first, len(mem) - huge + 1, 20 * huge):
        for offset in range(block, block + huge, 4096):
            mem[offset] ^= 1
    print("dirtied", flush=True)
signal.signal(signal.SIGUSR1, dirty)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def predump_frozen(report, args, gib):
    """Issue 15's frozen time: a plain dump of a ``gib`` GiB random-filled process against a
    pre-dump, 5 % of the pages dirtied, then the final dump (the argv pod_checkpoint builds:
    criu.build_dump_args, --track-mem and --prev-images-dir). CRIU's frozen_time of each."""
    fig = {"gib": gib}
    rc, out, err = run([args.criu, "check", "--feature", "mem_dirty_track"])
    fig["mem_dirty_track"] = rc == 0 or (err or out).strip().splitlines()[-1:]
    if rc != 0:
        report.log(f"pre-dump frozen time: not measurable here: {fig['mem_dirty_track']}")
        return fig
    log_path = os.path.join(args.work, "predump-holder.log")
    with open(log_path, "w") as log, open(os.devnull) as null:
        holder = subprocess.Popen(
            [sys.executable, "-c", PREDUMP_HOLDER, str(gib)],
            stdin=null,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def wait_line(text):
        deadline = time.monotonic() + 300
        while True:
            with open(log_path) as handle:
                if text in handle.read():
                    return
            if time.monotonic() > deadline or holder.poll() is not None:
                raise RuntimeError(f"the holder did not print {text!r}: see {log_path}")
            time.sleep(0.05)

    def dump(name, **options):
        """One criu dump (or pre-dump): its wall seconds and its stats (frozen_s, pages_written)."""
        images = os.path.join(args.images_dir, "predump", name)
        os.makedirs(images)
        argv = criu.build_dump_args(args.criu, holder.pid, images, [], manage_cgroups=False, **options)
        started = time.monotonic()
        rc, _out, _err = run(argv)
        wall = round(time.monotonic() - started, 3)
        if rc != 0:
            raise RuntimeError(f"criu {argv[1]} failed: {criu.log_tail(os.path.join(images, 'dump.log'))}")
        if options.get("pre_dump"):
            return wall, None
        return wall, criu.summarize_dump_stats(criu.read_stats(run, images)[0])

    try:
        wait_line("ready")
        fig["plain_wall_s"], plain = dump("plain")
        fig["plain_frozen_s"] = plain["frozen_s"]
        fig["pre_dump_wall_s"], _pre = dump("pre", pre_dump=True)
        holder.send_signal(signal.SIGUSR1)
        wait_line("dirtied")
        fig["final_wall_s"], final = dump("final", prev_images_dir="../pre")
        fig["final_frozen_s"], fig["final_pages_written"] = final["frozen_s"], final["pages_written"]
        fig["frozen_ratio"] = round(final["frozen_s"] / max(plain["frozen_s"], 1e-6), 3)
        report.log(f"pre-dump frozen time: {json.dumps(fig)}")
    except (RuntimeError, criu.CriuError) as exc:
        fig["error"] = str(exc)
        report.log(f"pre-dump frozen time FAILED: {exc}")
    finally:
        holder.kill()
        holder.wait()
        shutil.rmtree(os.path.join(args.images_dir, "predump"), ignore_errors=True)
    return fig


# ---- 4. the module through Ansible ------------------------------------------------------------------

ADHOC = "from ansible.cli.adhoc import main\nmain()\n"


def module_through_ansible(report, args, gib):
    """strata.ops.pod_checkpoint run by ansible-core (an ad-hoc task on localhost: the module's
    argument spec, AnsiballZ, its own process) on a CUDA worker, which must run on after it. Runs
    where the check's Python imports ansible (on the GPU machine: ansible-core carried as a wheel)."""
    fig = {"gib": gib}
    rc, out, err = run([sys.executable, "-c", "import ansible.release as r; print(r.__version__)"])
    if rc != 0:
        fig["skipped"] = "ansible-core is not importable here"
        report.log("module through Ansible skipped: " + fig["skipped"])
        return fig
    fig["ansible_core"] = out.strip()
    adhoc = os.path.join(args.work, "bin", "ansible")
    with open(adhoc, "w") as handle:
        handle.write(ADHOC)
    module_args = {
        "pid": None,
        "images_dir": os.path.join(args.images_dir, "ansible"),
        "name": "gpu-ansible",
        "keep": 1,
        "criu_path": args.criu,
        "cuda_driver_library": args.libcuda,
    }
    worker = Worker(report, args, gib, "ansible")
    try:
        ready = worker.wait(lambda s: s.get("count", 0) > 5 and s.get("pattern_ok"), 300, "the worker")
        module_args["pid"] = worker.pid
        argv = [sys.executable, adhoc, "localhost", "-i", "localhost,", "-c", "local", "-m"]
        argv += ["strata.ops.pod_checkpoint", "-a", json.dumps(module_args)]
        argv += ["-e", f"ansible_python_interpreter={sys.executable}"]
        environ = {
            "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, ".collections"),
            # ansible-core alone (the GPU machine's): its minimal callback, "host | CHANGED => {...}"
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.minimal",
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
            "ANSIBLE_LOCAL_TEMP": os.path.join(args.work, "ansible-tmp"),
            "ANSIBLE_HOME": os.path.join(args.work, "ansible-home"),
        }
        started = time.monotonic()
        rc, out, err = run(argv, environ_update=environ, timeout=600)
        fig["ansible_wall_s"] = round(time.monotonic() - started, 3)
        try:
            result = json.loads(out[out.index("{") :])
        except ValueError:
            raise RuntimeError(f"ansible rc={rc}: {(out + err).strip()[-1500:]}") from None
        if rc != 0 or result.get("failed"):
            raise RuntimeError(f"pod_checkpoint failed (rc={rc}): {result.get('msg')}")
        gpu_result = result["manifest"]["gpu"]
        fig["gpu"] = {k: gpu_result.get(k) for k in ("path", "states", "locked_s")}
        fig["frozen_s"], fig["changed"] = result["frozen_s"], result["changed"]
        fig["images_bytes"] = result["manifest"]["sizes"]["images_bytes"]
        after = worker.wait(lambda s: s["count"] > ready["count"] + 5, 60, "the counter after the dump")
        checked = worker.wait(lambda s: s["verified_at"] > after["count"], 120, "a pattern check after it")
        fig["counter_went_on"], fig["pattern_ok_after"] = True, checked["pattern_ok"]
        report.log(f"module through Ansible: {json.dumps(fig, default=str)}")
    except (RuntimeError, KeyError) as exc:
        fig["error"] = str(exc)
        report.log(f"module through Ansible FAILED: {exc}")
    finally:
        worker.kill()
        shutil.rmtree(args.images_dir, ignore_errors=True)
    return fig


D2H_SCRIPT = """
import sys, time, torch
gib = int(sys.argv[1])
data = torch.ones((gib, 1 << 28), dtype=torch.int32, device="cuda")
torch.cuda.synchronize()
pinned = torch.empty((1 << 28,), dtype=torch.int32, pin_memory=True)
started = time.monotonic()
for row in data:
    pinned.copy_(row)
torch.cuda.synchronize()
pinned_s = time.monotonic() - started
started = time.monotonic()
host = data.cpu()
pageable_s = time.monotonic() - started
print(pinned_s, pageable_s, int(host[-1, -1]))
"""


def baselines(report, args, gib):
    """The same work without the checkpoint: ``dd conv=fdatasync`` of ``gib`` GiB into images_dir
    (the dump's write), ``cat`` of it after dropping the page cache (the restore's read), and
    PyTorch copies of ``gib`` GiB from GPU to host memory (the CUDA checkpoint step's copy)."""
    fig = {"gib": gib}
    os.makedirs(args.images_dir, exist_ok=True)
    path = os.path.join(args.images_dir, "baseline.bin")
    try:
        started = time.monotonic()
        argv = ["dd", "if=/dev/zero", f"of={path}", "bs=16M", f"count={int(gib * 64)}", "conv=fdatasync"]
        rc, _out, err = run(argv, timeout=600)
        fig["dd_fdatasync_s"] = round(time.monotonic() - started, 3)
        fig["dd_rc"] = rc if rc == 0 else f"{rc}: {err.strip()[-200:]}"
        rc, _out, err = run(["sh", "-c", "sync && echo 3 > /proc/sys/vm/drop_caches"])
        fig["page_cache_dropped"] = rc == 0 or err.strip()[-200:]
        started = time.monotonic()
        run(["sh", "-c", f"cat {path} > /dev/null"], timeout=600)
        fig["cat_s"] = round(time.monotonic() - started, 3)
    finally:
        os.unlink(path)
    if not args.self_test:
        rc, out, err = run([args.python, "-c", D2H_SCRIPT, str(gib)], timeout=300)
        if rc == 0:
            pinned_s, pageable_s, _check = out.split()
            fig["d2h_pinned_s"] = round(float(pinned_s), 3)
            fig["d2h_pageable_s"] = round(float(pageable_s), 3)
        else:
            fig["d2h_error"] = err.strip()[-300:]
    for key in [k for k in fig if k.endswith("_s")]:
        fig[key.replace("_s", "_gib_s")] = round(gib / max(fig[key], 1e-6), 3)
    report.log(f"baselines {gib} GiB: {json.dumps(fig)}")
    return fig


def check(report, args):
    """Every step; returns the exit status."""
    if args.self_test:
        use_fake_cuda(report, args)
    facts, args.criu, python = probe(report, args)
    args.python = sys.executable if args.self_test else python
    if not args.python:
        report.log("no python with PyTorch here: the CUDA worker cannot run")
        report.record("result", "no PyTorch")
        return 1
    if not args.self_test and not facts["gpus_dir"]:
        report.log(f"no NVIDIA GPU ({gpu.NVIDIA_GPUS_DIR} missing): nothing GPU-related can run")
        report.record("result", "no GPU")
        return 1
    report.record("steps", sorted(args.steps))
    if "freeze" in args.steps:
        report.record("freeze", freeze_cycle(report, args))
    if "containerd" in args.steps:
        report.record("containerd", containerd_step(report, args, facts))
    dumps = run_dumps(report, args, facts) if "dumps" in args.steps else {}
    if "predump" in args.steps and args.predump_gib and report.left() > 60:
        report.record("predump", predump_frozen(report, args, args.predump_gib))
    if "ansible" in args.steps and report.left() > 60:
        report.record("ansible", module_through_ansible(report, args, args.ansible_gib))
    dumped = max((v["gib"] for v in dumps.values() if "dump_wall_s" in v), default=None)
    if "baselines" in args.steps and dumped and report.left() > 30 + dumped * 3:
        report.record("baselines", baselines(report, args, dumped))
    parts = ("freeze", "containerd", "ansible", "predump")
    failed = [k for k, v in dumps.items() if "error" in v]
    failed += [part for part in parts if "error" in report.figures.get(part, {})]
    skipped = {
        part: report.figures[part]["skipped"] for part in parts if "skipped" in report.figures.get(part, {})
    }
    report.record("skipped", skipped)
    report.record("result", f"failed: {failed}" if failed else "done")
    report.log(
        "done in {:.1f} s; failed parts: {}; skipped: {}".format(
            report.elapsed(), failed or "none", sorted(skipped) or "none"
        )
    )
    return 1 if failed else 0


def main():
    args = parse_args()
    args.gpus_dir = gpu.NVIDIA_GPUS_DIR
    args.device = "cpu" if args.self_test else "cuda"
    os.makedirs(args.out, exist_ok=True)
    report = Report(args.out, args.budget)
    # a run killed before its clean-up leaves the containerd step's processes and mounts in work
    cri_runtime.clean_leftovers(report.log, args.work)
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    report.record("self_test", args.self_test)
    # tests/gpu/run's timeout stops the check with SIGTERM: the logs are still packed.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    try:
        return check(report, args)
    finally:
        pack_logs(args)


if __name__ == "__main__":
    sys.exit(main())
