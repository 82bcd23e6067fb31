"""strata.ops.health_report as data: test_health_report.yaml (see module_cases.py)."""

import os

import pytest

from ansible_collections.strata.ops.plugins.modules import health_report

from .module_cases import load_cases, run_case

CASES = load_cases(os.path.join(os.path.dirname(__file__), "test_health_report.yaml"))


@pytest.mark.parametrize("case", CASES)
def test_health_report(case, tmp_path, monkeypatch):
    result = run_case(health_report.main, case, tmp_path, monkeypatch)
    if (case.get("flags") or {}).get("check") or result.get("failed"):
        assert not os.path.exists(tmp_path / "reports"), "check mode and failures write nothing"
    else:
        for key in ("json_path", "html_path", "index_path"):
            assert os.path.isfile(result[key]), key
