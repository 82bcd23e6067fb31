"""Check mode of the host layers on a fresh host and on a converged one (issue 20 item 3).

A fresh systemd host container (the test bed's host image with an empty zfs-fuse pool, nothing
of any layer applied) runs layers 1, 2 and 4 in order, each first with ``--check --diff`` and
then for real. For each layer:

- the check run succeeds and the host's fingerprint (datasets, local ZFS properties, fstab,
  mounts, files under /srv, docker and sysctl config, packages, systemd units, the lock
  directory) is the same before and after it;
- what the check run says would change is what the real run then changes: the same tasks report
  changed, and every task that reports a change in check mode shows a diff (or, where check mode
  cannot ask - packages the apt cache does not know yet - says what a real run does);
- after the real run, a check run of every layer so far reports nothing to change and leaves the
  fingerprint alone (the converged case).

The workload flows (layer 5, stop, start, redeploy, recover, teardown, fix PV mounts, the health
check) are checked on the running lab workload in tests/integration/test_deploy_flows.py.
"""

import os

import pytest
import yaml

from tests.integration.conftest import REPO
from tests.integration.test_storage_layers import L1, L2, L4, SNAPSHOT, host_container, task_results

from .test_concurrent_runs import finish, start

pytestmark = pytest.mark.needs("docker")

# What check mode must leave alone, beyond the storage layers' snapshot: layer 1's packages and
# services, and the run lock's directory.
FINGERPRINT = dict(
    SNAPSHOT,
    packages="dpkg-query -W -f '${Package} ${Version} ${Status}\\n' | sort",
    units="systemctl list-unit-files --no-legend --no-pager | sort",
    enabled="systemctl list-units --state=active --no-legend --no-pager --plain | awk '{print $1}' | sort",
    etc_files="find /etc -xdev -newer /etc/hostname -printf '%p %s %m\\n' 2>/dev/null | sort",
    run_lock="ls -la /run/strata-ops 2>/dev/null || echo absent",
)


def task_names(role, tasks_file):
    """The names of a role's tasks file, each up to its first template (names are templated in
    the callback's output)."""
    with open(os.path.join(REPO, "roles", role, "tasks", tasks_file), encoding="utf-8") as handle:
        return [task["name"].split("{{")[0].strip() for task in yaml.safe_load(handle)]


# Where check mode cannot run a step, a report task says what the real run's tasks will do.
REPORTS = {
    "Check mode - report the packages a real run installs after refreshing the apt cache": [
        "Install missing packages (the apt cache is refreshed only when something is missing, always then)"
    ],
    "Report the CRIU that would be unpacked": task_names("base_system", "criu_from_suite.yml"),
    "Check mode - report the ramdisk mount, resize and directories a real run makes": [
        "Mount the ramdisk where nothing is mounted yet (from its fstab line)",
        "Resize a mounted ramdisk in place (remount keeps its files)",
        "Create the directories on the ramdisk",
    ],
}


def predicted_by(check_changed, real_changed):
    """(real tasks the check run did not predict, predicted tasks the real run did not change)."""
    covers = [name for report in check_changed if report in REPORTS for name in REPORTS[report]]
    plain = set(check_changed) - set(REPORTS)
    unpredicted = [
        task for task in real_changed if task not in plain and not any(task.startswith(c) for c in covers)
    ]
    return unpredicted, sorted(plain - set(real_changed))


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A host container as a new machine is: no layer applied; the pool is its disk."""
    with host_container(tmp_path_factory, "strata-check") as host:
        yield host


def fingerprint(host):
    return {what: host.sh(cmd) for what, cmd in FINGERPRINT.items()}


def diffs_by_task(host, run):
    """{task name: [its diff (or its message), ...]} of the tasks that reported a change."""
    found = {}
    for task, result in task_results(run.docs, host.name):
        if result.get("changed"):
            found.setdefault(task["name"].split(" : ", 1)[-1], []).append(
                result.get("diff") or result.get("msg")
            )
    return found


def test_each_layer_checked_on_a_fresh_host_predicts_its_real_run_then_converges(fresh):
    applied = []
    for layer in (L1, L2, L4):
        before = fingerprint(fresh)
        check_proc = start(fresh, layer, check=True, diff=True)
        check = finish(fresh, check_proc)
        assert check.rc == 0 and check.failures == 0, f"{layer} --check on a fresh host: {check}"
        after = fingerprint(fresh)
        for what in FINGERPRINT:
            assert after[what] == before[what], f"{layer} --check changed {what}"
        predicted = diffs_by_task(fresh, check)
        assert predicted, f"{layer} --check on a fresh host found nothing to do"
        for task, diffs in predicted.items():
            assert all(diffs), f"{layer} --check --diff: {task!r} would change but shows no diff"

        real = finish(fresh, start(fresh, layer))
        assert real.rc == 0 and real.failures == 0, f"{layer} on a fresh host: {real}"
        unpredicted, not_done = predicted_by(predicted, diffs_by_task(fresh, real))
        assert unpredicted == [], f"{layer}: the real run changed what --check did not say: {unpredicted}"
        assert not_done == [], f"{layer}: --check said these would change, the real run did not: {not_done}"
        applied.append(layer)

        converged_before = fingerprint(fresh)
        again = finish(fresh, start(fresh, *applied, check=True, diff=True))
        assert again.rc == 0 and again.failures == 0, again
        assert again.changed_tasks == [], f"{applied} --check after the real run: {again.changed_tasks}"
        assert fingerprint(fresh) == converged_before
