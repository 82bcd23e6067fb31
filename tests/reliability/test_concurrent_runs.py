"""Concurrent runs (issue 20 item 5): two runs of the same layer on the same host at the same time
never interleave their changes - the second waits on strata.ops.run_lock, or fails naming the
run that holds it.

Everything runs the real layer playbooks through ansible-playbook on a systemd host container of
its own (tests/integration/test_storage_layers.py's `node`: a zfs-fuse pool inside, the lock in
its /run). When each run held the lock comes from the ansible.posix.json callback's task
durations: the end of "Run lock - present" to the start of "Run lock - absent". Every change a
layer makes happens between the two.
"""

import json
import os
import signal
import subprocess
import time
from datetime import datetime
from types import SimpleNamespace

from tests.integration import test_storage_layers as storage_tests
from tests.integration.conftest import REPO
from tests.integration.test_storage_layers import L2, L4, PLAYBOOK_ENV, SNAPSHOT, Run, task_results

node = storage_tests.node  # its fixture, used here by name

LOCK = "/run/strata-ops/locks/strata-ops.json"
TAKE, RELEASE = "Run lock - present", "Run lock - absent"


def start(node, *playbooks, check=False, diff=False, **extra):
    """An ansible-playbook run in the background, in its own process group (a kill -9 takes its
    workers too, as when a controller dies)."""
    return subprocess.Popen(
        node.argv(*playbooks, check=check, diff=diff, **extra),
        cwd=REPO,
        env=PLAYBOOK_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(node, proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return Run(SimpleNamespace(returncode=proc.returncode, stdout=out, stderr=err), node.name)


def lock_tasks(node, run):
    """(TAKE or RELEASE, result, start, end) of each run-lock task, in order (the task's
    ``state`` in its result says which)."""
    return [
        (
            TAKE if result.get("state") == "present" else RELEASE,
            result,
            stamp(task["duration"]["start"]),
            stamp(task["duration"]["end"]),
        )
        for task, result in task_results(run.docs, node.name)
        if task["name"].startswith("Run lock - ")
    ]


def stamp(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def held(tasks):
    """The intervals in which the run held the lock: a take's end to the next release's start."""
    intervals, taken = [], None
    for name, _result, begun, ended in tasks:
        if name == TAKE and taken is None:
            taken = ended
        elif name == RELEASE and taken is not None:
            intervals.append((taken, begun))
            taken = None
    assert taken is None, f"a run ended holding the lock: {tasks}"
    return intervals


def lock_holder(node):
    raw = node.sh(f"cat {LOCK} 2>/dev/null || true").strip()
    return json.loads(raw) if raw else None


def foreign_holder(node, host="awx-job-7"):
    """A lock as a run of another controller (an AWX job) leaves it: never judged from here."""
    record = {
        "format": "strata.ops/build_lock/1",
        "token": f"{host}/boot/4242/1",
        "host": host,
        "boot_id": "not-this-machine",
        "pid": 4242,
        "start_time": 1,
        "command": "ansible-playbook",
        "play": "Layer 4 - workload storage",
        "user": "awx",
        "started": "2026-12-03T10:00:00Z",
    }
    node.sh(f"mkdir -p -m 0700 {os.path.dirname(LOCK)} && printf '%s' '{json.dumps(record)}' > {LOCK}")
    return record


def test_two_runs_of_the_same_layer_at_once_take_turns(node):
    """Layer 4 started twice within a moment on a host at layer 2: one run makes every change
    (datasets, ramdisk, fstab) while the other waits for the lock; the waiting run then finds
    everything converged and changes nothing. Their locked intervals never overlap."""
    node.at("l2")
    first = start(node, L4)
    time.sleep(0.5)
    second = start(node, L4)
    runs = [finish(node, first), finish(node, second)]
    for run in runs:
        assert run.rc == 0 and run.failures == 0, run
    spans = [held(lock_tasks(node, run)) for run in runs]
    flat = sorted((interval, i) for i, intervals in enumerate(spans) for interval in intervals)
    for (a, _first), (b, _second) in zip(flat, flat[1:]):
        assert a[1] <= b[0], f"two runs held the lock at once: {spans}"
    # the run that waited changed nothing: the other had converged the host before it went on
    waits = [max(r["waited_s"] for n, r, _s, _e in lock_tasks(node, run) if n == TAKE) for run in runs]
    waited = max(range(2), key=lambda i: waits[i])
    assert waits[waited] > 1.0, waits
    assert runs[waited].changed_tasks == [], runs[waited]
    assert runs[1 - waited].changed_tasks, runs[1 - waited]  # the other one did the work
    assert lock_holder(node) is None  # both released it
    node.state = "converged"
    node.restored("converged")


def test_a_run_killed_while_holding_the_lock_is_taken_over_by_the_next_run(node):
    """kill -9 of ansible-playbook (and its workers) in the middle of layer 4: its lock stays on
    the host; the next run from this controller sees that process gone, takes the lock over with
    ``took_over`` naming it (no warning: every failed run leaves its lock so), and converges."""
    node.at("l2")
    run = start(node, L4)
    deadline = time.monotonic() + 120
    holder = None
    while holder is None and time.monotonic() < deadline and run.poll() is None:
        holder = lock_holder(node)
        time.sleep(0.2)
    assert holder is not None, "the run never took the lock"
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert lock_holder(node) == holder  # the killed run's lock is still there
    rerun = finish(node, start(node, L4, strata_run_lock_timeout=60))
    assert rerun.rc == 0 and rerun.failures == 0, rerun
    took_over = [r.get("took_over", "") for n, r, _s, _e in lock_tasks(node, rerun) if n == TAKE]
    said = took_over[0]
    assert "removed the lock of" in said and "ansible-playbook process is gone" in said, took_over
    assert f"pid {holder['pid']}" in said, said
    assert [w for task, w in rerun.warnings if task.startswith("Run lock - ")] == []  # what failed runs leave
    assert lock_holder(node) is None
    node.state = "converged"
    node.restored("converged")


def test_another_controllers_lock_makes_a_run_wait_then_fail_naming_it_and_change_nothing(node):
    """A lock held by a run of another controller: a real run and a check-mode run each wait
    strata_run_lock_timeout, then fail naming that run and how to end it; nothing changes and
    the lock stays. With strata_run_lock_force=true the run removes it, says so, and converges."""
    node.at("l2")
    holder = foreign_holder(node)
    before = node.snapshot()
    try:
        for check in (False, True):
            run = finish(node, start(node, L4, check=check, strata_run_lock_timeout=3))
            assert run.rc != 0 and run.failures, run
            assert run.changed == 0, run
            for part in ("another strata.ops run holds", LOCK, "awx@awx-job-7", "ansible-playbook pid 4242"):
                assert part in run.msg, (part, run.msg)
            assert "strata_run_lock_force=true" in run.msg and "changed nothing" in run.msg, run.msg
            assert "Traceback" not in run.raw
            assert lock_holder(node) == holder
            after = node.snapshot()
            for what in SNAPSHOT:
                assert after[what] == before[what], f"{what} changed while the lock was another run's"
        forced = finish(node, start(node, L4, strata_run_lock_force=True))
        assert forced.rc == 0 and forced.failures == 0, forced
        said = [w for task, w in forced.warnings if task.startswith("Run lock - ")]
        assert any("removed the lock of" in w and "awx-job-7" in w and "force=true" in w for w in said), said
        assert lock_holder(node) is None
        node.state = "converged"
    finally:
        node.sh(f"rm -f {LOCK}")
    node.restored("converged")


def test_check_mode_takes_no_lock_and_writes_nothing(node):
    """--check of layers 2 and 4 on a free host: it passes the lock tasks (saying it would take
    the lock) but leaves no lock file, and the host is unchanged."""
    node.at("converged")
    node.sh(f"rm -rf {os.path.dirname(os.path.dirname(LOCK))}")  # /run/strata-ops
    before = node.snapshot()
    run = finish(node, start(node, L2, L4, check=True))
    assert run.rc == 0 and run.failures == 0, run
    takes = [r for n, r, _s, _e in lock_tasks(node, run) if n == TAKE]
    assert takes and all(r["taken"] for r in takes), takes
    assert node.sh(
        f"test -e {os.path.dirname(os.path.dirname(LOCK))} && echo exists || echo absent"
    ).strip() == ("absent")
    after = node.snapshot()
    for what in SNAPSHOT:
        assert after[what] == before[what], f"{what} changed in check mode"
