#!/usr/bin/env python3
"""A converged site.yml run (nothing to change) against a gather-facts play over the same hosts.

What an operator waits for when they re-run site.yml to check that everything is still as it
should be is mostly Ansible's own per-task cost, not work. Same run, same hosts (the lab hosts
through the community.docker.docker connection, and the controller):

  (a) ``ansible-playbook -i inventories/lab playbooks/site.yml`` on a converged lab (changed=0
      is checked; a first, untimed run converges it);
  (b) one play over ``strata_hosts`` and localhost that only gathers facts (the floor: one
      connection and one module per host).

Each is run BENCH_CONVERGE_ROUNDS times (default 3), alternating; the medians give the ratio.
A second size, for the growth line: both limited to one lab host and the controller
(BENCH_CONVERGE_SMALL, default "strata-lab-1,localhost", the host layer 5 runs on; "" skips it),
BENCH_CONVERGE_SMALL_ROUNDS times (default 1: a growth line, no goal). The goal is judged on the whole lab.
With BENCH_CONVERGE_PROFILE=1, a last run of (a) with ansible.posix's profile_roles and
profile_tasks callbacks prints where the time goes (not timed; off by default: ~15 s). The lab
playbook lock (~/.cache/strata-ops/lab-playbook.lock) is held throughout, so tests never
interleave with it. BENCH_CONVERGE_STRATEGY=mitogen_linear runs (a) and (b) with that strategy
too, when the mitogen package is installed.

site.yml deploys the lab's workload into a namespace of the bench's own (NAMESPACE), which
playbooks/teardown.yml removes at the end (data kept), even after a failure: a workload left in
the lab's own namespace would be there for every later test of the lab (they expect none).

Needs the lab test bed (tests/testbed/up all). Prints one final line `bench converge: ...`.
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))

from benchkit import growth_lines  # noqa: E402
from results import record  # noqa: E402
from testbed_paths import lab_lock  # noqa: E402

GOAL = 5.0
SMALL = os.environ.get("BENCH_CONVERGE_SMALL", "strata-lab-1,localhost")
INVENTORY = os.path.join(REPO, "inventories", "lab")
NAMESPACE = "strata-bench-converge"
FACTS_PLAY = """\
- name: Gather facts only (the floor of any play over these hosts)
  hosts: strata_hosts:localhost
  gather_facts: true
  tasks: []
"""


def playbook(path, extra_env=None, limit=None):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(extra_env or {})
    started = time.monotonic()
    argv = ["ansible-playbook", "-i", INVENTORY, path, "-e", f"strata_namespace={NAMESPACE}"]
    if limit:
        argv += ["--limit", limit]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        name = os.path.basename(path)
        sys.exit(f"bench converge: {name} failed (rc={proc.returncode}):\n{proc.stdout[-3000:]}")
    return elapsed, proc.stdout


def lab_hosts():
    """The lab inventory's strata_hosts (the whole lab: the size the goal is judged at)."""
    with open(os.path.join(INVENTORY, "hosts.yml")) as handle:
        return sorted(yaml.safe_load(handle)["strata_hosts"]["hosts"])


def changed(stdout):
    return sum(int(n) for n in re.findall(r"changed=(\d+)", stdout.split("PLAY RECAP")[-1]))


def tasks_run(stdout):
    return len(re.findall(r"^TASK \[", stdout, re.M))


def converged_medians(site, facts_play, rounds, env, limit=None):
    """(median site.yml s, median facts play s, task headers) over ``rounds`` alternating runs."""
    site_times, facts_times = [], []
    for _ in range(rounds):
        elapsed, out = playbook(site, env, limit)
        if changed(out):
            sys.exit(f"bench converge: a second site.yml changed {changed(out)}:\n{out[-3000:]}")
        site_times.append(elapsed)
        facts_times.append(playbook(facts_play, env, limit)[0])
    return statistics.median(site_times), statistics.median(facts_times), tasks_run(out)


def measure(site, facts_play, rounds, strategy):
    """{variant: (median site.yml s, median facts play s, task headers)}, and with
    BENCH_CONVERGE_SMALL "small": the same on one lab host; prints the profile."""
    first, _ = playbook(site)
    print(f"converge run (untimed): {first:.1f} s")
    variants = [("default", {})]
    if strategy:
        variants.append((strategy, {"ANSIBLE_STRATEGY": strategy}))
    results = {}
    for name, env in variants:
        results[name] = converged_medians(site, facts_play, rounds, env)
        print(
            f"[{name}] site.yml converged: median {results[name][0]:.2f} s over {rounds} runs "
            f"({results[name][2]} task headers); gather-facts play: median {results[name][1]:.2f} s"
        )
    if SMALL:
        small_rounds = int(os.environ.get("BENCH_CONVERGE_SMALL_ROUNDS", "1"))
        results["small"] = converged_medians(site, facts_play, small_rounds, {}, SMALL)
        print(
            f"[--limit {SMALL}] site.yml converged: median {results['small'][0]:.2f} s over "
            f"{small_rounds} runs ({results['small'][2]} task headers); gather-facts play: median "
            f"{results['small'][1]:.2f} s"
        )
    if os.environ.get("BENCH_CONVERGE_PROFILE", "0") in ("", "0"):
        return results
    profile_env = {"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_roles,ansible.posix.profile_tasks"}
    _, profiled = playbook(site, profile_env)
    print("where the time goes (profile_roles, profile_tasks; untimed run):")
    print("\n".join(profiled.split("PLAY RECAP")[-1].splitlines()[-45:]))
    return results


def remove_workload():
    """playbooks/teardown.yml on the bench's namespace: the namespace and its PVs go, data kept."""
    try:
        playbook(os.path.join(REPO, "playbooks", "teardown.yml"))
    except SystemExit as failed:
        print(f"warning: the bench's workload in {NAMESPACE} was not removed: {failed}", file=sys.stderr)


def main():
    rounds = int(os.environ.get("BENCH_CONVERGE_ROUNDS", "3"))
    strategy = os.environ.get("BENCH_CONVERGE_STRATEGY")
    site = os.path.join(REPO, "playbooks", "site.yml")
    with tempfile.TemporaryDirectory(prefix="strata-bench-") as tmp, lab_lock():
        facts_play = os.path.join(tmp, "facts.yml")
        with open(facts_play, "w") as handle:
            handle.write(FACTS_PLAY)
        try:
            results = measure(site, facts_play, rounds, strategy)
        finally:
            remove_workload()
    site_s, facts_s, tasks = results["default"]
    ratio = site_s / facts_s
    extra = ""
    if strategy:
        m_site = results[strategy][0]
        extra = f"; with {strategy}: site.yml {m_site:.2f} s ({m_site / facts_s:.1f}x the default facts play)"
    hosts = {"small": 1, "default": len(lab_hosts())}
    if "small" in results:
        for index, label in ((0, "site.yml"), (1, "gather-facts play")):
            points = [(hosts[size], results[size][index]) for size in ("small", "default")]
            for line in growth_lines(f"{label} by lab hosts", points, causes="the lab hosts share two cores"):
                print(line)
    # the final line last: bench/run's summary takes the last line of each benchmark
    print(
        f"bench converge: second site.yml {site_s:.2f} s vs gather-facts play {facts_s:.2f} s = {ratio:.1f}x "
        f"({tasks} task headers; goal <= {GOAL:.0f}x){extra}"
    )
    for name, (variant_site_s, variant_facts_s, variant_tasks) in results.items():
        small = name == "small"
        baseline_s = variant_facts_s if small else facts_s
        record(
            "converge",
            metric="second site.yml, nothing to change (one lab host)"
            if small
            else f"second site.yml, nothing to change ({name} strategy)",
            ours=variant_site_s,
            baseline=baseline_s,
            baseline_name="gather-facts play, same hosts (default strategy)",
            unit="s",
            ratio=variant_site_s / baseline_s,
            goal=f"<= {GOAL:.0f}x" if name == "default" else None,
            met=variant_site_s / baseline_s <= GOAL if name == "default" else None,
            size={"lab_hosts": hosts.get(name, hosts["default"])},
            notes=f"medians of {rounds if not small else 'BENCH_CONVERGE_SMALL_ROUNDS'} runs; "
            f"{variant_tasks} task headers",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
