"""Shared fixtures and helpers for the integration tests (the real test bed).

Fixtures (used by name):
    zfs_pool            the test bed's pool name; fails the test when CI=true and the pool is
                        not usable, skips it (with the reason) otherwise

Helpers (``from .conftest import ...``):
    skip_or_fail(problem)   fail under CI=true, skip otherwise; nothing when problem is None
    zfs(*args), destroy_tree(name)   from tests/testbed/zfs_testbed.py
    start_module(name, args)  plugins/modules/<name>.py started as Ansible starts it (a Popen);
                            stop_after= SIGSTOPs it where the test chooses: wait_stopped(proc)
    run_module(name, args)  the same, run to its end: its JSON result
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
import time

import pytest

POOL = "strata-testbed"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(REPO, ".collections")
sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))

import adhoc  # noqa: E402
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


# The module run under a profiler that SIGSTOPs the whole process (every thread) when a function
# whose file path contains WHERE returns the NTH time: argv FUNCTION NTH WHERE MODULE.
STOP_AFTER = r"""
import os, runpy, signal, sys, threading
function, nth, where, sys.argv = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
seen = []

def stop_after(frame, event, arg):
    code = frame.f_code
    if event == "return" and code.co_name == function and where in code.co_filename:
        seen.append(1)
        if len(seen) == nth:
            os.kill(os.getpid(), signal.SIGSTOP)

sys.setprofile(stop_after)
threading.setprofile(stop_after)
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def start_module(name, args, *, check_mode=False, diff=False, env=None, stop_after=None):
    """plugins/modules/<name>.py started as Ansible starts it with pipelining: in its own session,
    its arguments on stdin. Never in a file: they hold tokens, and Ansible's own args file lives
    only as long as the module runs. ``stop_after`` = (function, nth, path part): see STOP_AFTER."""
    module = os.path.join(REPO, "plugins", "modules", name + ".py")
    argv = [sys.executable, module]
    if stop_after:
        function, nth, where = stop_after
        argv = [sys.executable, "-c", STOP_AFTER, function, str(nth), where, module]
    env = dict(env if env is not None else os.environ, PYTHONPATH=COLLECTIONS)
    args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
    # an unlinked file: no size limit (as a pipe has), no name anyone can read it by
    with tempfile.TemporaryFile() as stdin:
        stdin.write(json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
        stdin.seek(0)
        return subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )


def module_result(proc, timeout=None):
    """The JSON result of a module started by start_module, once it ended."""
    out, err = proc.communicate(timeout=timeout)
    try:
        return json.loads(out)
    except ValueError:
        raise AssertionError(f"module printed no JSON (rc {proc.returncode}): {out}\n{err}") from None


def process_state(pid):
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]


def wait_stopped(proc, what, timeout=180):
    """Waits until a stop_after module stopped itself (state T); fails when it ended first."""
    deadline = time.monotonic() + timeout
    while process_state(proc.pid) != "T":
        if proc.poll() is not None:
            raise AssertionError(f"the module ended before {what}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"the module did not reach {what} within {timeout} s"
        time.sleep(0.02)


def run_module(name, args, *, check_mode=False, diff=False, env=None):
    """Run plugins/modules/<name>.py to its end as Ansible would; its JSON result."""
    return module_result(start_module(name, args, check_mode=check_mode, diff=diff, env=env))


def adhoc_run(name, args, *options):
    """``strata.ops.<name>`` run as ``run_adhoc`` runs it: (the task's result dict read from the
    json callback, what a playbook would register; Ansible's whole stdout and stderr)."""
    result, output = adhoc.task_result(name, args, *options)
    if result is None:
        raise AssertionError(f"no result from ansible: {output}")
    return result, output


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
    return adhoc.run(name, args, *options)
