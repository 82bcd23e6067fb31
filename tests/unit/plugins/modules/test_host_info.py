"""strata.ops.host_info as data: test_host_info.yaml (see module_cases.py)."""

import os

import pytest

from ansible_collections.strata.ops.plugins.modules import host_info

from .module_cases import load_cases, run_case

CASES = load_cases(os.path.join(os.path.dirname(__file__), "test_host_info.yaml"))


@pytest.mark.parametrize("case", CASES)
def test_host_info(case, tmp_path, monkeypatch):
    run_case(host_info.main, case, tmp_path, monkeypatch)
