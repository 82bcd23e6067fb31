# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The GPU half of a checkpoint: which CUDA processes a tree holds, and what freezes them.

A CUDA process is checkpointed in four steps that NVIDIA's driver implements (CUDA driver API,
"CUDA Checkpointing", driver r570+; ``cuda-checkpoint --action`` since r555):

    lock        -> running GPU work finishes, new work blocks        (running -> locked)
    checkpoint  -> GPU memory is copied into host memory, released   (locked -> checkpointed)
    ... CRIU dumps (and later restores) the process ...
    restore     -> GPU memory and contexts come back                 (checkpointed -> locked)
    unlock      -> the process runs on the GPU again                 (locked -> running)

Two tools drive those steps, with the same words and the same state names:

* ``CudaCheckpointTool``: NVIDIA's ``cuda-checkpoint`` binary. CRIU's CUDA plugin runs it by that
  name from PATH (criu ``plugins/cuda/cuda_plugin.c``), so a plugin dump needs it.
* ``CudaDriverAPI``: the same calls made through ``libcuda`` with ctypes
  (``cuCheckpointProcessLock`` ... ``cuCheckpointProcessGetState``), which is what
  cuda-checkpoint itself calls. It serves hosts that have an r570+ driver but no cuda-checkpoint
  binary (it is not part of the driver packages; NVIDIA ships it separately).

``gpu_plan`` turns the facts into the path a dump takes, or refuses where CRIU would silently
write a dump without the GPU state.
"""

import ctypes
import os
import time

from ansible_collections.strata.ops.plugins.module_utils.criu import GpuError, find_executable

# What CRIU's CUDA plugin checks before it does anything: without this directory it disables
# itself ("No GPU device found").
NVIDIA_GPUS_DIR = "/proc/driver/nvidia/gpus"
CUDA_PLUGIN_NAME = "cuda_plugin"
CUDA_PLUGIN_FILE = "cuda_plugin.so"
CUDA_CHECKPOINT = "cuda-checkpoint"
LIBCUDA = "libcuda.so.1"

ACTIONS = ("lock", "checkpoint", "restore", "unlock")
# CUprocessState (cuda.h): the words `cuda-checkpoint --get-state` prints, which CRIU's plugin
# reads back (get_task_state_enum in plugins/cuda/cuda_plugin.c).
PROCESS_STATES = {0: "running", 1: "locked", 2: "checkpointed", 3: "failed"}
# The driver entry points of the checkpoint API, one per action, plus the state query.
DRIVER_API_CALLS = {
    "lock": "cuCheckpointProcessLock",
    "checkpoint": "cuCheckpointProcessCheckpoint",
    "restore": "cuCheckpointProcessRestore",
    "unlock": "cuCheckpointProcessUnlock",
}
DRIVER_API_SYMBOLS = (*DRIVER_API_CALLS.values(), "cuCheckpointProcessGetState")
# CUresult codes the checkpoint calls document (cuda.h), named when cuGetErrorName cannot be asked.
CU_RESULT_NAMES = {
    0: "CUDA_SUCCESS",
    1: "CUDA_ERROR_INVALID_VALUE",
    3: "CUDA_ERROR_NOT_INITIALIZED",
    100: "CUDA_ERROR_NO_DEVICE",
    401: "CUDA_ERROR_ILLEGAL_STATE",
    500: "CUDA_ERROR_NOT_FOUND",
    801: "CUDA_ERROR_NOT_SUPPORTED",
    909: "CUDA_ERROR_TIMEOUT",
    999: "CUDA_ERROR_UNKNOWN",
}


def nvidia_gpu_present(gpus_dir=NVIDIA_GPUS_DIR):
    return os.path.isdir(gpus_dir)


def uses_cuda(pid, proc="/proc"):
    """True when the process maps libcuda or holds an /dev/nvidia* device open."""
    try:
        with open(os.path.join(proc, str(pid), "maps")) as handle:
            if "libcuda.so" in handle.read():
                return True
    except OSError:
        pass
    fd_dir = os.path.join(proc, str(pid), "fd")
    try:
        for fd in os.listdir(fd_dir):
            try:
                if os.readlink(os.path.join(fd_dir, fd)).startswith("/dev/nvidia"):
                    return True
            except OSError:
                continue
    except OSError:
        pass
    return False


def cuda_pids_of(tree, proc="/proc"):
    return [pid for pid in tree if uses_cuda(pid, proc)]


class CudaCheckpointTool:
    """NVIDIA's cuda-checkpoint binary, run through ``run_command(argv) -> (rc, out, err)``."""

    kind = "cuda-checkpoint"

    def __init__(self, run_command, path):
        self.run = run_command
        self.path = path

    def has_action(self):
        """True when it offers --action (lock/checkpoint/restore/unlock): r555+ drivers.

        CRIU's CUDA plugin asks the same question (``cuda-checkpoint -h``) and disables itself
        when the answer is no.
        """
        _rc, out, err = self.run([self.path, "-h"])
        return "--action" in (out or "") + (err or "")

    def state(self, pid):
        rc, out, err = self.run([self.path, "--get-state", "--pid", str(pid)])
        if rc != 0:
            return f"unknown ({(err or out).strip()[:120]})"
        return out.strip() or "unknown"

    def action(self, pid, action, timeout_ms=0):
        argv = [self.path, "--action", action, "--pid", str(pid)]
        if action == "lock" and timeout_ms:
            argv += ["--timeout", str(timeout_ms)]  # milliseconds, as CRIU's plugin passes it
        rc, out, err = self.run(argv)
        if rc != 0:
            raise GpuError(f"{' '.join(argv)} failed (rc={rc}): {(err or out).strip()[:300]}")


class _LockArgs(ctypes.Structure):
    # CUcheckpointLockArgs (cuda.h): reserved fields must be zero, which ctypes guarantees.
    _fields_ = [
        ("timeoutMs", ctypes.c_uint),
        ("reserved0", ctypes.c_uint),
        ("reserved1", ctypes.c_uint64 * 7),
    ]


def probe_driver_api(library=LIBCUDA, loader=ctypes.CDLL):
    """Whether ``library`` loads and exports the checkpoint API; returns (lib or None, facts)."""
    facts = {"library": library, "loaded": False, "exports": {}, "complete": False}
    try:
        lib = loader(library)
    except OSError as exc:
        facts["error"] = str(exc)
        return None, facts
    facts["loaded"] = True
    facts["exports"] = dict((name, hasattr(lib, name)) for name in DRIVER_API_SYMBOLS)
    facts["complete"] = all(facts["exports"].values())
    if hasattr(lib, "cuDriverGetVersion"):
        version = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
            # 12080 -> "12.8": the CUDA version the driver supports, not the driver's own number.
            facts["cuda_version"] = f"{version.value // 1000}.{version.value % 1000 // 10}"
    return (lib if facts["complete"] else None), facts


class CudaDriverAPI:
    """The checkpoint API of libcuda called with ctypes: what cuda-checkpoint itself calls."""

    kind = "cuda-driver-api"

    def __init__(self, lib, library=LIBCUDA):
        self.lib = lib
        self.path = library
        self.initialized = False
        for name in DRIVER_API_SYMBOLS:
            getattr(lib, name).restype = ctypes.c_int
        for name in DRIVER_API_CALLS.values():
            getattr(lib, name).argtypes = [ctypes.c_int, ctypes.c_void_p]
        lib.cuCheckpointProcessGetState.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int)]

    def result_name(self, code):
        name = ctypes.c_char_p()
        if hasattr(self.lib, "cuGetErrorName") and self.lib.cuGetErrorName(code, ctypes.byref(name)) == 0:
            return name.value.decode("ascii", "replace")
        return CU_RESULT_NAMES.get(code, f"CUresult {code}")

    def _init(self):
        # The checkpoint calls answer CUDA_ERROR_NOT_INITIALIZED until cuInit ran in this process.
        if not self.initialized:
            code = self.lib.cuInit(0)
            if code != 0:
                raise GpuError(
                    f"cuInit(0) in {self.path} failed: {self.result_name(code)}; the NVIDIA driver is not "
                    "usable from this process (is /dev/nvidiactl there and readable?)"
                )
            self.initialized = True

    def state(self, pid):
        try:
            self._init()
        except GpuError as exc:
            return f"unknown ({exc})"
        value = ctypes.c_int(-1)
        code = self.lib.cuCheckpointProcessGetState(int(pid), ctypes.byref(value))
        if code != 0:
            return f"unknown (cuCheckpointProcessGetState: {self.result_name(code)})"
        return PROCESS_STATES.get(value.value, f"unknown (CUprocessState {value.value})")

    def action(self, pid, action, timeout_ms=0):
        self._init()
        call = DRIVER_API_CALLS[action]
        args = None
        if action == "lock":
            args = ctypes.byref(_LockArgs(timeoutMs=int(timeout_ms or 0)))
        code = getattr(self.lib, call)(int(pid), args)
        if code != 0:
            lock_hint = (
                f" (the process did not reach a point to lock within {timeout_ms} ms)" if code == 909 else ""
            )
            raise GpuError(f"{call}(pid={pid}) in {self.path} failed: {self.result_name(code)}{lock_hint}")


def find_freezer(run_command, cuda_checkpoint_path, driver_library=LIBCUDA, loader=ctypes.CDLL):
    """The tool that freezes CUDA processes here, and the facts behind the choice.

    cuda-checkpoint with --action comes first (CRIU's plugin needs it anyway); without one, the
    driver API of libcuda. Returns (freezer or None, facts).
    """
    facts = {"cuda_checkpoint": cuda_checkpoint_path, "has_action": None, "driver_api": None}
    if cuda_checkpoint_path:
        tool = CudaCheckpointTool(run_command, cuda_checkpoint_path)
        facts["has_action"] = tool.has_action()
        if facts["has_action"]:
            return tool, facts
    lib, facts["driver_api"] = probe_driver_api(driver_library, loader)
    if lib is not None:
        return CudaDriverAPI(lib, driver_library), facts
    return None, facts


def missing_freezer_reason(facts):
    if facts["cuda_checkpoint"] and not facts["has_action"]:
        tool = f"{facts['cuda_checkpoint']} has no --action (driver older than r555)"
    else:
        tool = "cuda-checkpoint is not installed (cuda_checkpoint_path, or on PATH)"
    api = facts["driver_api"] or {}
    if not api.get("loaded"):
        lib = f"{api.get('library', LIBCUDA)} does not load ({api.get('error', 'not found')})"
    else:
        missing = sorted(name for name, found in api["exports"].items() if not found)
        lib = f"{api['library']} lacks {', '.join(missing)} (driver older than r570)"
    return f"{tool} and {lib}"


def gpu_plan(nvidia_present, cuda_pids, plugin_file, freezer, facts):
    """Which GPU path a dump takes, as data: dict(taken, path, reason).

    path is 'criu-cuda-plugin' (CRIU's plugin drives cuda-checkpoint itself: we must not lock
    the process a second time), 'cuda-checkpoint' or 'cuda-driver-api' (this module locks and
    checkpoints around the dump, then restores and unlocks) or 'none'. Raises GpuError where a
    dump would silently leave the GPU state out.
    """
    if not nvidia_present:
        return {
            "taken": False,
            "path": "none",
            "reason": f"no NVIDIA GPU on this host (no {NVIDIA_GPUS_DIR}): the GPU path was not taken",
        }
    if not cuda_pids:
        return {
            "taken": False,
            "path": "none",
            "reason": "an NVIDIA GPU is present but no process of the tree uses CUDA",
        }
    if freezer is None:
        plugin_note = (
            f" CRIU's CUDA plugin {plugin_file} runs cuda-checkpoint and turns itself off without it."
            if plugin_file
            else ""
        )
        raise GpuError(
            f"processes {cuda_pids} use CUDA but nothing here can checkpoint them: "
            f"{missing_freezer_reason(facts)}. A dump would not contain the GPU state. Install NVIDIA's "
            f"cuda-checkpoint (driver r555 or newer) or a driver r570 or newer.{plugin_note}"
        )
    if freezer.kind == CudaCheckpointTool.kind and plugin_file:
        if os.path.basename(freezer.path) != CUDA_CHECKPOINT:
            raise GpuError(
                "CRIU's CUDA plugin runs 'cuda-checkpoint' by that name from PATH; "
                f"{freezer.path} has another name: install or link it as cuda-checkpoint"
            )
        return {
            "taken": True,
            "path": "criu-cuda-plugin",
            "reason": f"CUDA processes {cuda_pids}; CRIU's CUDA plugin {plugin_file} drives {freezer.path}",
        }
    if freezer.kind == CudaDriverAPI.kind:
        why = (
            f"CRIU's CUDA plugin {plugin_file} needs cuda-checkpoint, which is missing"
            if plugin_file
            else "no cuda-checkpoint here"
        )
        return {
            "taken": True,
            "path": CudaDriverAPI.kind,
            "reason": f"CUDA processes {cuda_pids}; {why}, so the driver's checkpoint API in {freezer.path} "
            "locks and checkpoints them around the dump",
        }
    return {
        "taken": True,
        "path": CudaCheckpointTool.kind,
        "reason": f"CUDA processes {cuda_pids}; no CRIU CUDA plugin, so {freezer.path} "
        "locks and checkpoints them around the dump",
    }


def dump_plan(params, run_command, tree, *, gpus_dir=NVIDIA_GPUS_DIR, find=find_freezer, proc="/proc"):
    """The GPU plan for a process tree about to be dumped (gpu_plan's dict, with the tree's CUDA
    pids and an empty list of states) and the freezer it uses (None when no GPU path is taken).
    ``params``: pod_checkpoint's cuda_checkpoint_path, cuda_driver_library, criu_plugin_dir."""
    nvidia = nvidia_gpu_present(gpus_dir)
    cuda_pids = cuda_pids_of(tree, proc)
    freezer, facts = None, {}
    if nvidia and cuda_pids:
        freezer, facts = find(
            run_command, cuda_checkpoint_binary(params["cuda_checkpoint_path"]), params["cuda_driver_library"]
        )
    gpu = gpu_plan(nvidia, cuda_pids, cuda_plugin(params["criu_plugin_dir"]), freezer, facts)
    gpu["states"] = []
    gpu["cuda_pids"] = cuda_pids
    return gpu, freezer


def restore_plan(params, run_command, manifest, checkpoint, *, gpus_dir=NVIDIA_GPUS_DIR, find=find_freezer):
    """What restoring a dump with CUDA state needs here, checked before anything is created: the
    restore's gpu result and the freezer that thaws the restored processes (None: no CUDA state).
    The restored processes come back "checkpointed"; CRIU's plugin or this freezer brings them back."""
    path = (manifest.get("gpu") or {}).get("path", "none")
    gpu = {"path": path, "states": [], "cuda_pids": []}
    if path == "none":
        gpu["reason"] = "the dump holds no CUDA state"
        return gpu, None
    if not nvidia_gpu_present(gpus_dir):
        raise GpuError(
            f"{checkpoint} holds CUDA state (taken by {path}) but this host has no NVIDIA GPU "
            f"(no {gpus_dir}): restore it on a GPU host whose runtime gives the container the GPU"
        )
    binary = cuda_checkpoint_binary(params["cuda_checkpoint_path"])
    if path == "criu-cuda-plugin":
        if not binary:
            raise GpuError(
                f"{checkpoint} was dumped with CRIU's CUDA plugin, which runs cuda-checkpoint on restore "
                "too: it is not installed here (cuda_checkpoint_path, or on PATH; also on the runtime's PATH)"
            )
        if not cuda_plugin(params["criu_plugin_dir"]):
            plugin_path = os.path.join(params["criu_plugin_dir"], CUDA_PLUGIN_FILE)
            raise GpuError(
                f"{checkpoint} was dumped with CRIU's CUDA plugin, which its restore needs too: "
                f"{plugin_path} is missing (runc's CRIU loads its plugins from there)"
            )
        gpu["reason"] = "CRIU's CUDA plugin restores the GPU state"
        return gpu, CudaCheckpointTool(run_command, binary)
    freezer, facts = find(run_command, binary, params["cuda_driver_library"])
    if freezer is None:
        raise GpuError(
            f"{checkpoint} holds CUDA state that must be restored and unlocked after the restore, "
            f"but {missing_freezer_reason(facts)}"
        )
    gpu["reason"] = f"{freezer.path} restores and unlocks the CUDA processes after the restore"
    return gpu, freezer


def drives(gpu):
    """True when this module locks and checkpoints the CUDA processes around the dump (not CRIU's
    plugin, which does it inside CRIU)."""
    return gpu["path"] in (CudaCheckpointTool.kind, CudaDriverAPI.kind)


def lock_and_checkpoint(freezer, gpu, lock_timeout_s):
    """The two steps before CRIU dumps: GPU work stops, GPU memory moves into host memory."""
    step(freezer, gpu, "lock", timeout_ms=lock_timeout_s * 1000)
    step(freezer, gpu, "checkpoint")


def frozen_while(freezer, gpu, checkpoint, *, lock_timeout_s, clock=time.monotonic):
    """Run ``checkpoint()`` (a runtime's own checkpoint of a container that keeps running:
    containerd's, the kubelet's) with the CUDA processes of ``gpu`` locked and checkpointed where
    this module drives them, and thawed right after it or after its failure (``locked_s``: how
    long they stayed locked); with CRIU's plugin, their states before and after. Its result."""
    if gpu["taken"]:
        step(freezer, gpu, label="before dump")
    if not drives(gpu):
        done = checkpoint()
        if gpu["taken"]:
            step(freezer, gpu, label="after dump (plugin)")
        return done
    locked_at = clock()
    try:
        lock_and_checkpoint(freezer, gpu, lock_timeout_s)
        done = checkpoint()
    except BaseException as exc:
        thaw_after_failure(freezer, gpu, exc)
        raise
    thaw(freezer, gpu)
    gpu["locked_s"] = round(clock() - locked_at, 3)
    return done


def thaw_after_failure(freezer, gpu, exc):
    """A failed dump must not leave CUDA processes frozen; say so if they stay frozen."""
    try:
        thaw(freezer, gpu)
    except GpuError as thaw_error:
        raise GpuError(
            f"{exc}; then bringing the CUDA processes back failed too: {thaw_error}. They may stay "
            "frozen until cuda-checkpoint --action restore/unlock --pid PID runs for each of "
            f"{gpu['cuda_pids']}"
        ) from None


def after_restore(freezer, gpu, tree, proc="/proc"):
    """Bring the restored tree's CUDA processes back to running: CRIU's plugin did it inside the
    restore (record their state), or restore and unlock them here."""
    gpu["cuda_pids"] = cuda_pids_of(tree, proc)
    if gpu["path"] == "criu-cuda-plugin":
        step(freezer, gpu, label="after restore (plugin)")
    else:
        thaw(freezer, gpu)


def step(freezer, gpu, action=None, *, label=None, timeout_ms=0, clock=time.monotonic, pids=None):
    """Run one action (or none) on every CUDA process of ``gpu`` (or ``pids``), then record each
    one's state in gpu["states"]."""
    for pid in gpu["cuda_pids"] if pids is None else pids:
        entry = {"step": action or label, "pid": pid}
        if action:
            started = clock()
            freezer.action(pid, action, timeout_ms)
            entry["seconds"] = round(clock() - started, 3)
        entry["state"] = freezer.state(pid)
        gpu["states"].append(entry)


def thaw(freezer, gpu):
    """Bring every CUDA process of ``gpu`` back to running from wherever the steps left it
    (checkpointed: restore, then unlock; locked: unlock), recording each step."""
    for pid in gpu["cuda_pids"]:
        state = freezer.state(pid)
        actions = {"checkpointed": ("restore", "unlock"), "locked": ("unlock",)}.get(state, ())
        for action in actions:
            step(freezer, gpu, action, pids=[pid])


def cuda_checkpoint_binary(configured=None):
    """``configured`` or the first cuda-checkpoint on PATH; None when there is none."""
    path = configured or find_executable(CUDA_CHECKPOINT)
    return path if path and os.path.isfile(path) else None


def cuda_plugin(plugin_dir):
    """CRIU's CUDA plugin in ``plugin_dir``; None when it is not installed."""
    path = os.path.join(plugin_dir, CUDA_PLUGIN_FILE)
    return path if os.path.isfile(path) else None
