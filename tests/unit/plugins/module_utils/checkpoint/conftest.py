"""Fixtures shared by the checkpoint tests."""

import pytest

from ansible_collections.strata.ops.plugins.module_utils import criu

from ....fakes.containerd import containerd_proc, cuda_proc


@pytest.fixture
def gpu_host(tmp_path, monkeypatch):
    """(gpus dir, cuda-checkpoint path, proc dir): an NVIDIA GPU, NVIDIA's tool, a CUDA process 4242."""
    gpus = tmp_path / "gpus"
    (gpus / "0000:00:05.0").mkdir(parents=True)
    tool = tmp_path / "bin" / "cuda-checkpoint"
    tool.parent.mkdir()
    tool.write_text("")
    proc, _temp = containerd_proc(tmp_path)
    cuda_proc(tmp_path / "proc")
    monkeypatch.setattr(criu, "find_executable", lambda name: f"/usr/bin/{name}")
    return str(gpus), str(tool), proc
