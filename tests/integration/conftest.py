"""Shared fixtures and helpers for the integration tests (the real test bed).

Fixtures (used by name):
    zfs_pool            the test bed's pool name; fails the test when CI=true and the pool is
                        not usable, skips it (with the reason) otherwise

Helpers (``from .conftest import ...``):
    skip_or_fail(problem)   fail under CI=true, skip otherwise; nothing when problem is None
    zfs(*args), destroy_tree(name)   from tests/testbed/zfs_testbed.py
    run_module(name, args)  run plugins/modules/<name>.py as Ansible does (ANSIBLE_MODULE_ARGS)
    run_adhoc(name, args)   run strata.ops.<name> through `ansible localhost -c local`
    adhoc_result(name, args)  the same, returning the task's result dict (json callback)
    adhoc_run(name, args)     (that result, Ansible's whole output)
    assert_clean_failure(result)  failed through fail_json, not a crash ("Module failed: ...")
    lab_address(host)       a lab host's address on the lab network (skip_or_fail when it is not running)
"""

import json
import os
import subprocess
import sys
import tempfile

import pytest

POOL = "strata-testbed"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(REPO, ".collections")
sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))

from testbed_paths import BIN as TESTBED_BIN  # noqa: E402
from testbed_paths import CACHE, lab_lock  # noqa: E402
from zfs_testbed import destroy_tree, testbed_problem, zfs  # noqa: E402

__all__ = ["CACHE", "TESTBED_BIN", "destroy_tree", "lab_lock", "zfs"]  # re-exported for the test modules


def skip_or_fail(problem):
    """A missing test bed component fails the test under CI=true and skips it otherwise."""
    if not problem:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true and the test bed is not usable: " + problem)
    pytest.skip(problem)


@pytest.fixture(scope="session")
def zfs_pool():
    """The test bed's pool; tests work only below their own uniquely named child dataset."""
    skip_or_fail(testbed_problem(POOL))
    return POOL


def lib_sh_value(expression):
    """The output of a shell expression over tests/testbed/lib.sh (its names and functions, such as
    ``cri_image`` or ``echo $NODE_SOCKET``): one definition for the scripts and the tests."""
    argv = ["bash", "-c", f"source {REPO}/tests/testbed/lib.sh && {expression}"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def run_module(name, args, check_mode=False, diff=False):
    """Run plugins/modules/<name>.py as Ansible would, with ANSIBLE_MODULE_ARGS in a JSON
    file, and return its JSON result."""
    module = os.path.join(REPO, "plugins", "modules", name + ".py")
    args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    with tempfile.TemporaryDirectory(prefix="strata-it-") as tmp:
        args_file = os.path.join(tmp, "args.json")
        with open(args_file, "w") as handle:
            json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
        proc = subprocess.run(
            [sys.executable, module, args_file], capture_output=True, text=True, env=env, check=False
        )
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"module printed no JSON: {proc.stdout}\n{proc.stderr}") from None


def adhoc_run(name, args, *options):
    """``strata.ops.<name>`` run as ``run_adhoc`` runs it: (the task's result dict read from the
    json callback, what a playbook would register; Ansible's whole stdout and stderr)."""
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
    )
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    argv = [ansible, "localhost", "-c", "local", "-m", "strata.ops." + name, "-a", json.dumps(args), *options]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    try:
        result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"no result from ansible: {proc.stdout}\n{proc.stderr}") from None
    return result, proc.stdout + proc.stderr


def adhoc_result(name, args, *options):
    """The result dict of adhoc_run."""
    return adhoc_run(name, args, *options)[0]


def lab_address(host):
    """The address of the lab host container ``host`` (tests/testbed/up starts it)."""
    proc = subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", host],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        skip_or_fail(f"lab host {host} is not running (tests/testbed/up starts it): {proc.stderr.strip()}")
    return proc.stdout.strip()


def assert_clean_failure(result):
    """A failure the module reported itself: ansible-core 2.19 reports a module that crashed as
    msg "Task failed: Module failed: <exception>" (no traceback), so a Traceback is not the test."""
    assert result.get("failed") is True, result
    assert not result["msg"].startswith("Task failed: Module failed"), result["msg"]
    assert "Traceback" not in result["msg"], result["msg"]
    assert "error" in result or result.get("changed") is not None, result


def run_adhoc(name, args, *options):
    """``ansible localhost -c local -m strata.ops.<name> -a <json> [options]`` from the
    repository root, so strata.ops resolves through ansible.cfg's collections_path."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"))
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    argv = [ansible, "localhost", "-c", "local", "-m", "strata.ops." + name, "-a", json.dumps(args)]
    return subprocess.run([*argv, *options], cwd=REPO, env=env, capture_output=True, text=True, check=False)
