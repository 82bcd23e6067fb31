"""The GPU steps around a criu dump: order, the lock timeout, and what a failed dump leaves."""

import os

import pytest

from ansible_collections.strata.ops.plugins.module_utils import criu
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import gpu
from ansible_collections.strata.ops.plugins.module_utils.checkpoint.dump import Dumper
from tests.unit.fakes.cuda import FakeCudaCheckpoint
from tests.unit.fakes.run import FakeRun

PID = os.getpid()  # alive, as the dumped process is when leave_running is on


def params(**overrides):
    base = {"images_dir": None, "leave_running": True, "cuda_lock_timeout": 10, "crit_path": None}
    base.update(overrides)
    return base


def plan_for(tmp_path, path, freezer):
    return {
        "dump_dir": str(tmp_path / "app-20250101T000000.000Z"),
        "target": {"pid": PID},
        "gpu": {"taken": True, "path": path, "cuda_pids": [PID], "states": []},
        "freezer": freezer,
        "argv": ["criu", "dump", "--tree", str(PID)],
        "env": None,
    }


@pytest.mark.parametrize("leave_running", [True, False])
def test_direct_path_locks_checkpoints_then_dumps_then_thaws(tmp_path, leave_running):
    cuda = FakeCudaCheckpoint([PID])
    run = FakeRun(criu=lambda argv, **kw: (0, "", ""), cuda_checkpoint=cuda)
    plan = plan_for(tmp_path, "cuda-checkpoint", gpu.CudaCheckpointTool(run, cuda.path))
    ticks = iter(range(100))
    Dumper(params(leave_running=leave_running), False, run, clock=lambda: float(next(ticks))).dump(plan)
    steps = [p for p in run.programs() if p[1] != "--get-state"]
    expected = [("cuda-checkpoint", "lock"), ("cuda-checkpoint", "checkpoint"), ("criu", "dump")]
    if leave_running:
        expected += [("cuda-checkpoint", "restore"), ("cuda-checkpoint", "unlock")]
    assert steps == expected
    lock = next(argv for argv, _kwargs in run.calls if "lock" in argv)
    assert lock[-2:] == ["--timeout", "10000"]
    by_step = [(s["step"], s["state"]) for s in plan["gpu"]["states"]]
    assert by_step[:3] == [("before dump", "running"), ("lock", "locked"), ("checkpoint", "checkpointed")]
    if leave_running:
        assert by_step[3:] == [("restore", "locked"), ("unlock", "running")]
        assert plan["gpu"]["locked_s"] > 0
    else:
        # the process is left to CRIU's kill; nothing thaws it
        assert "locked_s" not in plan["gpu"] and cuda.states[PID] == "checkpointed"


def test_failed_dump_still_thaws_the_process_and_removes_the_directory(tmp_path):
    cuda = FakeCudaCheckpoint([PID])
    run = FakeRun(criu=lambda argv, **kw: (1, "", "Dumping FAILED"), cuda_checkpoint=cuda)
    plan = plan_for(tmp_path, "cuda-checkpoint", gpu.CudaCheckpointTool(run, cuda.path))
    with pytest.raises(criu.CriuError, match=f"criu dump of PID {PID} failed"):
        Dumper(params(), False, run).dump(plan)
    assert cuda.states[PID] == "running"
    assert [a for a, _pid in cuda.actions()] == ["lock", "checkpoint", "restore", "unlock"]
    assert not os.path.exists(plan["dump_dir"])


def test_a_failed_lock_never_reaches_criu(tmp_path):
    cuda = FakeCudaCheckpoint([PID], fail={"lock": (1, "Could not lock: CUDA_ERROR_TIMEOUT\n")})
    run = FakeRun(criu=lambda argv, **kw: (0, "", ""), cuda_checkpoint=cuda)
    plan = plan_for(tmp_path, "cuda-checkpoint", gpu.CudaCheckpointTool(run, cuda.path))
    with pytest.raises(criu.GpuError, match="CUDA_ERROR_TIMEOUT"):
        Dumper(params(), False, run).dump(plan)
    assert ("criu", "dump") not in run.programs()
    assert not os.path.exists(plan["dump_dir"])
    assert cuda.states[PID] == "running" and [a for a, _pid in cuda.actions()] == ["lock"]


def test_a_dump_that_fails_after_the_lock_unlocks_and_says_when_it_cannot(tmp_path):
    cuda = FakeCudaCheckpoint([PID], fail={"checkpoint": (1, "Could not checkpoint: CUDA_ERROR_UNKNOWN\n")})
    run = FakeRun(criu=lambda argv, **kw: (0, "", ""), cuda_checkpoint=cuda)
    plan = plan_for(tmp_path, "cuda-checkpoint", gpu.CudaCheckpointTool(run, cuda.path))
    with pytest.raises(criu.GpuError, match="CUDA_ERROR_UNKNOWN"):
        Dumper(params(), False, run).dump(plan)
    assert [a for a, _pid in cuda.actions()] == ["lock", "checkpoint", "unlock"]
    assert cuda.states[PID] == "running"
    cuda = FakeCudaCheckpoint([PID], fail={"unlock": (1, "Could not unlock: CUDA_ERROR_UNKNOWN\n")})
    run = FakeRun(criu=lambda argv, **kw: (1, "", "Dumping FAILED"), cuda_checkpoint=cuda)
    plan = plan_for(tmp_path, "cuda-checkpoint", gpu.CudaCheckpointTool(run, cuda.path))
    with pytest.raises(criu.GpuError) as info:
        Dumper(params(), False, run).dump(plan)
    assert f"criu dump of PID {PID} failed" in str(info.value)
    assert "may stay frozen" in str(info.value) and f"[{PID}]" in str(info.value)


def test_plugin_path_leaves_the_cuda_steps_to_criu(tmp_path):
    cuda = FakeCudaCheckpoint([PID])
    run = FakeRun(criu=lambda argv, **kw: (0, "", ""), cuda_checkpoint=cuda)
    plan = plan_for(tmp_path, "criu-cuda-plugin", gpu.CudaCheckpointTool(run, cuda.path))
    Dumper(params(), False, run).dump(plan)
    assert cuda.actions() == []  # never locked a second time
    assert [s["step"] for s in plan["gpu"]["states"]] == ["before dump", "after dump (plugin)"]
