"""Make this checkout importable as ansible_collections.strata.ops for every test."""

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO_ROOT, ".collections")
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
# Shared test helpers (tests/unit/fakes) import as tests.unit.fakes.
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def pytest_runtest_setup(item):
    """A test marked exclusive stops what others share (the lab API server, a core): beside other
    xdist workers it breaks their tests, dozens of errors far from the cause. It fails instead, before
    it stops anything (make integration runs them alone, after the others)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if workers > 1 and item.get_closest_marker("exclusive"):
        pytest.fail(
            f"marked exclusive: it cannot run beside {workers - 1} other xdist worker(s). Add "
            "-m 'not exclusive' to this run, and run -m exclusive without -n after it, as make "
            "integration does",
            pytrace=False,
        )
