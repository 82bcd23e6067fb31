"""strata.ops.zfs_dataset as data: test_zfs_dataset.yaml (see module_cases.py), with the exact
zfs/zpool commands of each dialect and their answers as the CLIs give them."""

import os

import pytest

from ansible_collections.strata.ops.plugins.modules import zfs_dataset

from .module_cases import load_cases, run_case

CASES = load_cases(os.path.join(os.path.dirname(__file__), "test_zfs_dataset.yaml"))


@pytest.mark.parametrize("case", CASES)
def test_zfs_dataset(case, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no pyzfs path: the CLI answers below are the host
    run_case(zfs_dataset.main, case, tmp_path, monkeypatch)
