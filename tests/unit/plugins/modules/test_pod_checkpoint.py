"""strata.ops.pod_checkpoint as data: test_pod_checkpoint.yaml (see module_cases.py)."""

import os

import pytest

from ansible_collections.strata.ops.plugins.modules import pod_checkpoint

from .module_cases import load_cases, run_case

CASES = load_cases(os.path.join(os.path.dirname(__file__), "test_pod_checkpoint.yaml"))


@pytest.mark.parametrize("case", CASES)
def test_pod_checkpoint(case, tmp_path, monkeypatch):
    # no GPU and no cuda-checkpoint, whatever machine runs the tests
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    run_case(pod_checkpoint.main, case, tmp_path, monkeypatch)
