#!/usr/bin/env python3
"""Ensuring many ZFS datasets: strata.ops.zfs_dataset (one task) vs community.general.zfs (a loop).

Creates N datasets (default 200) with 3 local properties each under a unique parent
``strata-testbed/bench-<random>`` with the zfs CLI (not timed; mountpoint=none, so nothing is
mounted), then times, in the same run, two playbooks on localhost that both find everything
already as wanted (noop):

  (a) one ``strata.ops.zfs_dataset`` task with all N datasets;
  (b) ``community.general.zfs`` in a loop over the N datasets with the same 3 properties.

Both run as ``ansible-playbook -i localhost, -c local`` from the repository root (its
ansible.cfg), with the interpreter that runs ansible-playbook, the ``ansible.posix.json``
stdout callback (read to check that each run really covered all N datasets and changed
nothing), and identical property values in the form ``zfs get -Hp`` prints them, since
community.general.zfs compares strings. The datasets are destroyed afterwards, also on failure
or Ctrl-C.

Env: BENCH_STORAGE_DATASETS (default 200), BENCH_STORAGE_POOL (default strata-testbed).
Prints one final line `bench storage: ...`.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))

from results import record  # noqa: E402
from zfs_testbed import ZfsTestbedError, destroy_tree, testbed_problem, zfs  # noqa: E402

GOAL = 10
PROPERTIES = {"compression": "on", "atime": "off", "quota": str(64 * 1024 * 1024)}

PLAYBOOK_ZFS_DATASET = """\
- name: Ensure the bench datasets with strata.ops.zfs_dataset (one task)
  hosts: localhost
  gather_facts: false
  tasks:
    - name: All datasets in one call
      strata.ops.zfs_dataset:
        pool: "{{ bench_pool }}"
        datasets: "{{ bench_datasets }}"
"""

PLAYBOOK_COMMUNITY_ZFS = """\
- name: Ensure the bench datasets with community.general.zfs (a loop)
  hosts: localhost
  gather_facts: false
  tasks:
    - name: One dataset per iteration
      community.general.zfs:
        name: "{{ item.name }}"
        state: present
        extra_zfs_properties: "{{ item.properties }}"
      loop: "{{ bench_datasets }}"
      loop_control:
        label: "{{ item.name }}"
"""


class BenchError(Exception):
    pass


def run_playbook(work, name, text, extra_vars_file):
    """Run one playbook; returns (seconds, parsed json callback output)."""
    playbook = os.path.join(work, name + ".yml")
    with open(playbook, "w") as handle:
        handle.write(text)
    ansible_playbook = shutil.which("ansible-playbook") or os.path.join(
        os.path.dirname(sys.executable), "ansible-playbook"
    )
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
    )
    argv = [
        ansible_playbook,
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        "@" + extra_vars_file,
        playbook,
    ]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    try:
        output = json.loads(proc.stdout[proc.stdout.index("{") :])
    except ValueError:
        output = None
    if proc.returncode != 0 or output is None:
        raise BenchError(
            f"{name} playbook failed (rc={proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
        )
    return seconds, output


def task_result(output):
    (play,) = output["plays"]
    (task,) = play["tasks"]
    return task["hosts"]["localhost"]


def check_zfs_dataset(output, names):
    result = task_result(output)
    actions = [(d["name"], d["action"]) for d in result.get("datasets", [])]
    if result.get("changed") or actions != [(n, "unchanged") for n in names]:
        raise BenchError(f"zfs_dataset was not a noop over all datasets: {json.dumps(result)[:2000]}")
    return (
        f"zfs_dataset: {len(actions)} datasets unchanged"
        f" (write path {result.get('write_path')}, dialect {result.get('dialect')})"
    )


def check_community_zfs(output, names):
    result = task_result(output)
    items = result.get("results", [])
    seen = [item.get("item", {}).get("name") for item in items]
    changed = [item.get("item", {}).get("name") for item in items if item.get("changed")]
    failed = [item for item in items if item.get("failed")]
    if seen != names or changed or failed:
        raise BenchError(
            f"community.general.zfs loop was not a noop over all datasets: {len(seen)} items,"
            f" changed {changed[:5]}, failed {json.dumps(failed[:2])[:2000]}"
        )
    return f"community.general.zfs: {len(items)} loop items unchanged"


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    count = int(os.environ.get("BENCH_STORAGE_DATASETS", "200"))
    pool = os.environ.get("BENCH_STORAGE_POOL", "strata-testbed")
    problem = testbed_problem(pool)
    if problem:
        print(f"bench storage: FAILED, no ZFS test bed: {problem}")
        return 2
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    parent = f"{pool}/bench-{uuid.uuid4().hex[:8]}"
    names = [f"{parent}/d{i:03d}" for i in range(count)]
    work = tempfile.mkdtemp(prefix="strata-bench-storage-")
    created = False
    error = None
    try:
        start = time.monotonic()
        zfs("create", "-o", "mountpoint=none", parent)
        created = True
        options = [arg for key, value in PROPERTIES.items() for arg in ("-o", f"{key}={value}")]
        for name in names:
            zfs("create", *options, name)
        print(
            f"setup: {count} datasets with {len(PROPERTIES)} properties under {parent} "
            f"in {time.monotonic() - start:.1f}s (not timed)",
            flush=True,
        )
        extra_vars = os.path.join(work, "vars.json")
        with open(extra_vars, "w") as handle:
            json.dump(
                {
                    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                    "bench_pool": pool,
                    "bench_datasets": [{"name": n, "properties": dict(PROPERTIES)} for n in names],
                },
                handle,
            )

        a, output = run_playbook(work, "zfs_dataset", PLAYBOOK_ZFS_DATASET, extra_vars)
        print(f"(a) {a:.1f}s  {check_zfs_dataset(output, names)}", flush=True)
        b, output = run_playbook(work, "community_zfs", PLAYBOOK_COMMUNITY_ZFS, extra_vars)
        print(f"(b) {b:.1f}s  {check_community_zfs(output, names)}", flush=True)
    except (BenchError, ZfsTestbedError, KeyboardInterrupt) as exc:
        error = str(exc) or type(exc).__name__
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if created:
            try:
                destroy_tree(parent)
                print(f"cleanup: destroyed {parent}", flush=True)
            except (BenchError, ZfsTestbedError) as exc:
                error = f"{error}; cleanup: {exc}" if error else f"cleanup: {exc}"
    if error:
        print(f"bench storage: FAILED: {error}")
        return 1
    print(
        f"bench storage: zfs_dataset {a:.1f}s vs community.general.zfs loop {b:.1f}s: "
        f"{b / a:.1f}x faster (goal >= {GOAL}x)"
    )
    record(
        "storage",
        metric="ensure datasets, nothing to change (ansible-playbook wall)",
        ours=a,
        baseline=b,
        baseline_name="community.general.zfs in a loop",
        unit="s",
        ratio=b / a,
        goal=f">= {GOAL}x",
        met=b / a >= GOAL,
        size={"datasets": count},
        notes=f"{len(PROPERTIES)} properties each; one strata.ops.zfs_dataset task",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
