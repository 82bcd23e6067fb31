"""strata.ops.storage_info as data: test_storage_info.yaml (see module_cases.py)."""

import os

import pytest

from ansible_collections.strata.ops.plugins.modules import storage_info

from .module_cases import load_cases, run_case

CASES = load_cases(os.path.join(os.path.dirname(__file__), "test_storage_info.yaml"))


@pytest.mark.parametrize("case", CASES)
def test_storage_info(case, tmp_path, monkeypatch):
    run_case(storage_info.main, case, tmp_path, monkeypatch)
