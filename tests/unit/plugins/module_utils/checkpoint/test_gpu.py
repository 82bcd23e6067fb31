"""The GPU half of pod_checkpoint: choosing the path, and both freezers against fakes that answer
like the real ones (cuda-checkpoint's argv and output; libcuda's checkpoint API through ctypes)."""

import os

import pytest

from ansible_collections.strata.ops.plugins.module_utils import criu
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import gpu
from tests.unit.fakes.cuda import FakeCudaCheckpoint, FakeLibcuda, build_libcuda

PLUGIN = "/usr/lib/criu/cuda_plugin.so"
CUDA_CKPT = "/usr/bin/cuda-checkpoint"


@pytest.fixture(scope="session")
def libcuda_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("libcuda")


@pytest.fixture
def libcuda(libcuda_dir, tmp_path, monkeypatch):
    return FakeLibcuda(build_libcuda(libcuda_dir), tmp_path / "calls.log", monkeypatch)


@pytest.fixture
def old_libcuda(libcuda_dir):
    """An r550-like libcuda: loads, but has no checkpoint API."""
    return build_libcuda(libcuda_dir, checkpoint_api=False)


def tool(pids=(7,), **kwargs):
    fake = FakeCudaCheckpoint(pids, **kwargs)
    return gpu.CudaCheckpointTool(fake, fake.path), fake


# ---- the path a dump takes ---------------------------------------------------------------------


def test_gpu_plan_without_gpu_or_cuda_says_why():
    none = gpu.gpu_plan(False, [], None, None, {})
    assert (none["taken"], none["path"]) == (False, "none")
    assert "no NVIDIA GPU" in none["reason"]
    assert "GPU path was not taken" in none["reason"]
    idle = gpu.gpu_plan(True, [], PLUGIN, None, {})
    assert idle["taken"] is False
    assert "no process" in idle["reason"]


def test_gpu_plan_prefers_the_plugin_and_never_locks_twice(libcuda):
    binary, _fake = tool()
    plugin = gpu.gpu_plan(True, [7], PLUGIN, binary, {})
    assert (plugin["taken"], plugin["path"]) == (True, "criu-cuda-plugin")
    assert gpu.gpu_plan(True, [7], None, binary, {})["path"] == "cuda-checkpoint"
    libcuda.reset([7])
    lib, _facts = gpu.probe_driver_api(libcuda.path)
    api = gpu.gpu_plan(True, [7], PLUGIN, gpu.CudaDriverAPI(lib, libcuda.path), {})
    # the plugin runs the cuda-checkpoint binary and turns itself off without it: say why it is not used
    assert api["path"] == "cuda-driver-api"
    assert "needs cuda-checkpoint, which is missing" in api["reason"]


def test_gpu_plan_refuses_a_dump_without_gpu_state(old_libcuda):
    _lib, old = gpu.probe_driver_api(old_libcuda)
    facts = {"cuda_checkpoint": None, "has_action": None, "driver_api": old}
    with pytest.raises(criu.GpuError) as info:
        gpu.gpu_plan(True, [7], PLUGIN, None, facts)
    msg = str(info.value)
    assert "cuda-checkpoint is not installed" in msg
    assert "lacks cuCheckpointProcessCheckpoint" in msg and "older than r570" in msg
    assert "turns itself off without it" in msg
    facts = {"cuda_checkpoint": CUDA_CKPT, "has_action": False, "driver_api": {"library": "libcuda.so.1"}}
    with pytest.raises(criu.GpuError, match=r"older than r555.*libcuda\.so\.1 does not load"):
        gpu.gpu_plan(True, [7], None, None, facts)
    renamed, _fake = tool(path="/opt/nv/cuda-checkpoint-570")
    renamed.path = "/opt/nv/cuda-checkpoint-570"
    with pytest.raises(criu.GpuError, match="by that name from PATH"):
        gpu.gpu_plan(True, [7], PLUGIN, renamed, {})


def test_nvidia_gpu_present_is_the_plugins_check(tmp_path):
    assert not gpu.nvidia_gpu_present(str(tmp_path / "gpus"))
    (tmp_path / "gpus").mkdir()
    assert gpu.nvidia_gpu_present(str(tmp_path / "gpus"))


# ---- cuda-checkpoint -----------------------------------------------------------------------------


def test_cuda_checkpoint_tool_drives_the_binary_like_criu_does():
    binary, fake = tool()
    assert binary.has_action()
    assert binary.state(7) == "running"
    binary.action(7, "lock", timeout_ms=10000)
    binary.action(7, "checkpoint", timeout_ms=10000)
    assert binary.state(7) == "checkpointed"
    # --timeout (milliseconds) belongs to lock only, as CRIU's plugin passes it
    assert fake.calls[2] == [CUDA_CKPT, "--action", "lock", "--pid", "7", "--timeout", "10000"]
    assert fake.calls[3] == [CUDA_CKPT, "--action", "checkpoint", "--pid", "7"]
    with pytest.raises(criu.GpuError, match=r"--action unlock --pid 7 failed.*ILLEGAL_STATE"):
        binary.action(7, "unlock")
    assert binary.state(99).startswith("unknown (Could not find CUDA in process 99")


def test_cuda_checkpoint_without_action_is_r550():
    binary, _fake = tool(has_action=False)
    assert not binary.has_action()


# ---- libcuda's checkpoint API ---------------------------------------------------------------------


def test_probe_driver_api_reads_exports_and_version(libcuda, old_libcuda, tmp_path):
    libcuda.reset([7])
    lib, facts = gpu.probe_driver_api(libcuda.path)
    assert lib is not None
    assert facts["complete"] and facts["loaded"]
    assert set(facts["exports"]) == set(gpu.DRIVER_API_SYMBOLS) and all(facts["exports"].values())
    assert facts["cuda_version"] == "12.8"
    lib, facts = gpu.probe_driver_api(old_libcuda)
    assert lib is None and facts["loaded"] and not facts["complete"]
    assert not any(facts["exports"].values())
    lib, facts = gpu.probe_driver_api(str(tmp_path / "libcuda.so.1"))
    assert lib is None and not facts["loaded"] and "No such file" in facts["error"]


def test_driver_api_walks_the_documented_states(libcuda):
    libcuda.reset([7, 8])
    lib, _facts = gpu.probe_driver_api(libcuda.path)
    api = gpu.CudaDriverAPI(lib, libcuda.path)
    assert api.state(7) == "running"
    for action, state in (("lock", "locked"), ("checkpoint", "checkpointed"), ("restore", "locked")):
        api.action(7, action, timeout_ms=2500)
        assert api.state(7) == state
    api.action(7, "unlock")
    assert (api.state(7), api.state(8)) == ("running", "running")
    calls = libcuda.calls()
    assert calls[0] == "cuInit 0"  # once, before the first checkpoint call
    # the lock's timeout travels in CUcheckpointLockArgs.timeoutMs with the reserved fields zeroed
    # (the fake answers CUDA_ERROR_INVALID_VALUE otherwise); other calls pass no arguments
    assert calls[1:] == ["lock 7 timeoutMs=2500", "checkpoint 7", "restore 7", "unlock 7"]


def test_driver_api_errors_name_the_call_and_the_result(libcuda):
    libcuda.reset([7])
    lib, _facts = gpu.probe_driver_api(libcuda.path)
    api = gpu.CudaDriverAPI(lib, libcuda.path)
    with pytest.raises(
        criu.GpuError, match=r"cuCheckpointProcessCheckpoint\(pid=7\).*CUDA_ERROR_ILLEGAL_STATE"
    ):
        api.action(7, "checkpoint")
    assert api.state(99) == "unknown (cuCheckpointProcessGetState: CUDA_ERROR_INVALID_VALUE)"
    libcuda.reset([7], lock_result=909)
    api = gpu.CudaDriverAPI(lib, libcuda.path)
    with pytest.raises(criu.GpuError, match=r"CUDA_ERROR_TIMEOUT.*within 1500 ms"):
        api.action(7, "lock", timeout_ms=1500)
    libcuda.reset([7], init_result=100)
    api = gpu.CudaDriverAPI(lib, libcuda.path)
    with pytest.raises(criu.GpuError, match=r"cuInit\(0\).*CUDA_ERROR_NO_DEVICE"):
        api.action(7, "lock")
    assert api.state(7).startswith("unknown (cuInit(0)")


def test_find_freezer_prefers_the_binary_then_the_driver(libcuda, old_libcuda):
    libcuda.reset([7])
    fake = FakeCudaCheckpoint([7])
    freezer, facts = gpu.find_freezer(fake, CUDA_CKPT, libcuda.path)
    assert freezer.kind == "cuda-checkpoint" and facts["has_action"] is True
    assert facts["driver_api"] is None  # libcuda is not even loaded when the binary serves
    old = FakeCudaCheckpoint([7], has_action=False)
    freezer, facts = gpu.find_freezer(old, CUDA_CKPT, libcuda.path)
    assert freezer.kind == "cuda-driver-api" and facts["has_action"] is False
    freezer, facts = gpu.find_freezer(fake, None, libcuda.path)
    assert freezer.kind == "cuda-driver-api" and facts["driver_api"]["complete"]
    freezer, facts = gpu.find_freezer(fake, None, old_libcuda)
    assert freezer is None and facts["driver_api"]["loaded"]


def test_step_records_state_and_time_per_process():
    binary, _fake = tool(pids=(7, 8))
    ticks = iter([0.0, 0.25, 1.0, 1.5])
    state = {"cuda_pids": [7, 8], "states": []}
    gpu.step(binary, state, "lock", timeout_ms=1000, clock=lambda: next(ticks))
    gpu.step(binary, state, label="before dump")
    assert state["states"] == [
        {"step": "lock", "pid": 7, "seconds": 0.25, "state": "locked"},
        {"step": "lock", "pid": 8, "seconds": 0.5, "state": "locked"},
        {"step": "before dump", "pid": 7, "state": "locked"},
        {"step": "before dump", "pid": 8, "state": "locked"},
    ]


def test_cuda_plugin_and_binary_lookup(tmp_path, monkeypatch):
    assert gpu.cuda_plugin(str(tmp_path)) is None
    (tmp_path / "cuda_plugin.so").write_bytes(b"")
    assert gpu.cuda_plugin(str(tmp_path)) == str(tmp_path / "cuda_plugin.so")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu.cuda_checkpoint_binary() is None
    exe = tmp_path / "cuda-checkpoint"
    exe.write_text("#!/bin/sh\n")
    os.chmod(exe, 0o755)
    assert gpu.cuda_checkpoint_binary() == str(exe)
    assert gpu.cuda_checkpoint_binary(str(tmp_path / "missing")) is None
