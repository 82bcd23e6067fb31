"""Fakes for the CUDA checkpoint tools: NVIDIA's cuda-checkpoint binary (as a run_command) and
libcuda's checkpoint API (a real shared library built from fake_libcuda.c, loaded with ctypes)."""

import ctypes
import hashlib
import os
import shlex
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "fake_libcuda.c")

# pod_checkpoint's CUDA parameters as a test passes them (no CRIU plugin installed).
CUDA_PARAMS = {
    "cuda_driver_library": "libcuda.so.1",
    "criu_plugin_dir": "/nonexistent",
    "cuda_lock_timeout": 10,
}

# The states and moves the driver documents; cuda-checkpoint prints the state names.
MOVES = {
    "lock": ("running", "locked"),
    "checkpoint": ("locked", "checkpointed"),
    "restore": ("checkpointed", "locked"),
    "unlock": ("locked", "running"),
}
# The flags of `cuda-checkpoint -h` on r570 drivers that callers look for (CRIU's plugin greps for
# --action); r550's only verb was --toggle.
HELP_R570 = """CUDA checkpoint and restore utility.
    --toggle --pid <value>
    --get-state --pid <value>
    --get-restore-tid --pid <value>
    --action <lock|checkpoint|restore|unlock> --pid <value> [--timeout <ms>]
"""
HELP_R550 = """CUDA checkpoint and restore utility.
    --toggle --pid <value>
    --get-state --pid <value>
"""


class FakeCudaCheckpoint:
    """cuda-checkpoint as a run_command: ``run(argv) -> (rc, stdout, stderr)``.

    ``pids`` are the CUDA processes (all start running); ``calls`` records every argv.
    ``fail`` maps an action to the (rc, stderr) it answers instead of moving.
    """

    def __init__(self, pids, path="/usr/bin/cuda-checkpoint", has_action=True, fail=None):
        self.path = path
        self.states = dict((int(pid), "running") for pid in pids)
        self.has_action = has_action
        self.fail = dict(fail or {})
        self.calls = []

    def actions(self):
        """The (action, pid) pairs asked for, in order."""
        out = []
        for argv in self.calls:
            if "--action" in argv:
                out.append((argv[argv.index("--action") + 1], int(argv[argv.index("--pid") + 1])))
        return out

    def __call__(self, argv, **_kwargs):
        self.calls.append(list(argv))
        if argv[1:] == ["-h"]:
            return 0, HELP_R570 if self.has_action else HELP_R550, ""
        pid = int(argv[argv.index("--pid") + 1])
        if pid not in self.states:
            return 1, "", f"Could not find CUDA in process {pid}\n"
        if "--get-state" in argv:
            return 0, self.states[pid] + "\n", ""
        action = argv[argv.index("--action") + 1]
        if not self.has_action:
            return 1, "", "unrecognized option '--action'\n"
        if action in self.fail:
            rc, err = self.fail[action]
            return rc, "", err
        before, after = MOVES[action]
        if self.states[pid] != before:
            return 1, "", f"Could not {action} process {pid}: CUDA_ERROR_ILLEGAL_STATE\n"
        self.states[pid] = after
        return 0, "", ""


def build_libcuda(directory, checkpoint_api=True):
    """Compile fake_libcuda.c into ``directory`` (once per source and variant); returns its path."""
    with open(SOURCE, "rb") as handle:
        digest = hashlib.sha256(handle.read() + bytes([checkpoint_api])).hexdigest()[:12]
    path = os.path.join(str(directory), f"libcuda-fake-{digest}.so.1")
    if not os.path.exists(path):
        flags = [] if checkpoint_api else ["-DNO_CHECKPOINT_API"]
        cmd = ["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Werror", *flags, "-o", path + ".tmp", SOURCE]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{shlex.join(cmd)}\n{done.stderr}"
        os.rename(path + ".tmp", path)
    return path


class FakeLibcuda:
    """Settings and call log of a loaded fake libcuda; ``reset`` applies them."""

    def __init__(self, path, log_path, monkeypatch):
        self.path = path
        self.log_path = log_path
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("FAKE_LIBCUDA_LOG", str(log_path))

    def reset(self, pids, init_result=0, lock_result=0):
        self.monkeypatch.setenv("FAKE_LIBCUDA_PIDS", ",".join(str(p) for p in pids))
        self.monkeypatch.setenv("FAKE_LIBCUDA_INIT_RESULT", str(init_result))
        self.monkeypatch.setenv("FAKE_LIBCUDA_LOCK_RESULT", str(lock_result))
        if os.path.exists(self.log_path):
            os.remove(self.log_path)
        lib = ctypes.CDLL(self.path)
        if hasattr(lib, "fake_reset"):
            lib.fake_reset()

    def calls(self):
        if not os.path.exists(self.log_path):
            return []
        with open(self.log_path) as handle:
            return handle.read().splitlines()
