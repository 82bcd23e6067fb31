#!/usr/bin/env python3
"""bench shutdown: from the deletion of the last pod to the return of the stop, three ways.

On the test bed's real control plane (kube-apiserver, controller-manager, scheduler; kwok plays
the kubelet of a simulated node and removes a deleted pod when its termination delay ends), a
Deployment with 2 pods that take a few seconds to terminate (kwok's delay annotation: an
application that exits N s after SIGTERM) is stopped, in the same run, by:

  (a) strata.ops.safe_shutdown state=stopped, run as Ansible runs it on a target: the module
      file executed by Python with its arguments file (no ansible-playbook around it). The same
      module is also timed through `ansible localhost -m strata.ops.safe_shutdown` (ad hoc),
      which adds Ansible's own result handling and exit.
  (b) the runbook's way: `kubectl scale --replicas=0` then `kubectl wait --for=delete pod -l
      app=NAME --timeout=120s` (kubectl built with the control plane, same version).
  (c) an ansible-playbook with kubernetes.core.k8s_scale (replicas 0) then kubernetes.core.k8s_info
      on the pods in a loop, until none is left, retries/delay 5 s (the usual polling idiom).

An independent watcher (the kubernetes Python client's watch, in this process, not our code)
timestamps each pod's DELETED event; the figure is the time from the last DELETED event to the
moment the stop's process has exited. Each way runs STRATA_BENCH_ROUNDS times (default 3) on a
fresh Deployment; medians are printed and compared. Goal: <= 1 s for (a).

Env: STRATA_KUBECONFIG (default ~/.cache/strata-ops/controlplane/strata-lab.kubeconfig, where
tests/testbed/up controlplane writes it), STRATA_BENCH_ROUNDS, STRATA_BENCH_DELAY (default 2s).
Skips with one clear line when the control plane does not answer. Everything lives in a
namespace and a node named bench-shutdown-<random>, removed at the end.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, ".collections"))
sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))

IMPORT_ERROR = None
try:
    from kubernetes import client as kclient
    from kubernetes import config as kconfig
    from kubernetes import watch as kwatch
    from lab_k8s import create_kwok_node, deployment

    from ansible_collections.strata.ops.plugins.module_utils import k8s
except ImportError as import_exc:
    IMPORT_ERROR = import_exc
from results import record  # noqa: E402
from testbed_paths import CACHE, LAB_KUBECONFIG, kubectl_path  # noqa: E402 - no dependencies beyond os

KUBECONFIG = os.environ.get("STRATA_KUBECONFIG", LAB_KUBECONFIG)
ROUNDS = int(os.environ.get("STRATA_BENCH_ROUNDS", "3"))
DELAY = os.environ.get("STRATA_BENCH_DELAY", "2s")
REPLICAS = 2
MODULE = os.path.join(REPO, "plugins", "modules", "safe_shutdown.py")
BIN = os.path.dirname(sys.executable)
TAINT = {"key": "strata.io/bench", "value": "shutdown", "effect": "NoSchedule"}

PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Scale to 0
      kubernetes.core.k8s_scale:
        kubeconfig: "{{ bench_kubeconfig }}"
        api_version: apps/v1
        kind: Deployment
        name: "{{ bench_deployment }}"
        namespace: "{{ bench_namespace }}"
        replicas: 0
    - name: Poll the pods until none is left
      kubernetes.core.k8s_info:
        kubeconfig: "{{ bench_kubeconfig }}"
        kind: Pod
        namespace: "{{ bench_namespace }}"
        label_selectors: ["app={{ bench_deployment }}"]
      register: pods
      until: pods.resources | length == 0
      retries: 60
      delay: 5
"""


METRIC = "last pod DELETED -> the stop returns (median)"


def skip(reason):
    print(f"bench shutdown: SKIPPED ({reason})")
    record(
        "shutdown",
        metric=METRIC,
        ours=None,
        baseline=None,
        baseline_name="kubectl scale + wait --for=delete",
        unit="s",
        ratio=None,
        notes=f"SKIPPED: {reason}",
    )
    sys.exit(0)


class DeleteWatcher(threading.Thread):
    """Watches the pods of one Deployment with the kubernetes client's own watch (independent
    of strata.ops) and records time.monotonic() at each DELETED event."""

    def __init__(self, api, namespace, name, expected):
        super().__init__(daemon=True)
        self.api, self.namespace, self.name = api, namespace, name
        self.expected = set(expected)
        self.deleted = {}
        self.ready = threading.Event()
        self.error = None

    def run(self):
        try:
            listing = self.api.list_namespaced_pod(self.namespace, label_selector="app=" + self.name)
            self.ready.set()
            stream = kwatch.Watch()
            for event in stream.stream(
                self.api.list_namespaced_pod,
                self.namespace,
                label_selector="app=" + self.name,
                resource_version=listing.metadata.resource_version,
                timeout_seconds=180,
            ):
                if event["type"] == "DELETED":
                    self.deleted[event["object"].metadata.name] = time.monotonic()
                    if self.expected <= set(self.deleted):
                        stream.stop()
        except Exception as exc:  # reported by the caller
            self.error = exc
            self.ready.set()

    def last_deleted(self):
        self.join(60)
        if self.error is not None:
            raise SystemExit(f"bench shutdown: the watcher failed: {self.error}")
        missing = self.expected - set(self.deleted)
        if missing:
            raise SystemExit(f"bench shutdown: no DELETED event seen for {sorted(missing)}")
        return max(self.deleted.values())


class Bench:
    def __init__(self, client, api, kubectl):
        self.client = client  # strata.ops K8sClient: setup only
        self.api = api
        self.kubectl = kubectl
        tag = uuid.uuid4().hex[:6]
        self.namespace = f"bench-shutdown-{tag}"
        self.node = f"bench-shutdown-{tag}"
        self.tmp = tempfile.mkdtemp(prefix="bench-shutdown-")
        self.env = dict(
            os.environ,
            ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_PYTHON_INTERPRETER=sys.executable,
            PATH=BIN + os.pathsep + os.environ.get("PATH", ""),
        )

    def setup(self):
        self.client.create("Namespace", {"metadata": {"name": self.namespace}})
        create_kwok_node(self.client, self.node, taints=[TAINT])

    def teardown(self):
        self.client.delete("Namespace", self.namespace)
        self.client.delete("Node", self.node)
        subprocess.run(["rm", "-rf", self.tmp], check=False)

    def deployment(self, name):
        """A ready Deployment of REPLICAS pods that take DELAY to terminate; returns pod names."""
        pod_spec = {
            "nodeSelector": {"kubernetes.io/hostname": self.node},
            "tolerations": [{"key": TAINT["key"], "operator": "Exists"}],
            "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "main", "image": "registry.invalid/validator:1"}],
        }
        annotations = {"pod-delete.stage.kwok.x-k8s.io/delay": DELAY}
        self.client.create("Deployment", deployment(name, REPLICAS, pod_spec, annotations), self.namespace)
        watch = self.client.watch_until(
            "Pod",
            lambda items: len([p for p in items if k8s.pod_is_ready(p)]) == REPLICAS,
            self.namespace,
            label_selector="app=" + name,
            timeout=60,
        )
        return [p["metadata"]["name"] for p in watch["items"]]

    def timed(self, name, argvs):
        """Run the commands in turn while the watcher runs; (last DELETED -> exit, total, out)."""
        pods = self.deployment(name)
        watcher = DeleteWatcher(self.api, self.namespace, name, pods)
        watcher.start()
        watcher.ready.wait(30)
        start = time.monotonic()
        out = ""
        for argv in argvs:
            proc = subprocess.run(argv, cwd=REPO, env=self.env, capture_output=True, text=True, check=False)
            out = proc.stdout
            if proc.returncode != 0:
                raise SystemExit(
                    f"bench shutdown: {' '.join(argv[:3])} failed:\n{proc.stdout}\n{proc.stderr}"
                )
        end = time.monotonic()
        return end - watcher.last_deleted(), end - start, out

    def module_direct(self, name):
        args_file = os.path.join(self.tmp, name + ".json")
        args = {"kubeconfig": KUBECONFIG, "state": "stopped", "name": name, "namespace": self.namespace}
        with open(args_file, "w") as handle:
            json.dump({"ANSIBLE_MODULE_ARGS": dict(args, timeout=120)}, handle)
        self.env["PYTHONPATH"] = os.path.join(REPO, ".collections")
        try:
            gap, total, out = self.timed(name, [[sys.executable, MODULE, args_file]])
        finally:
            del self.env["PYTHONPATH"]
        result = json.loads(out)
        if result.get("failed"):
            raise SystemExit("bench shutdown: safe_shutdown failed: " + result["msg"])
        return gap, total, result["last_pod_gone_to_return"]

    def module_adhoc(self, name):
        args = {"kubeconfig": KUBECONFIG, "state": "stopped", "name": name, "namespace": self.namespace}
        argv = [os.path.join(BIN, "ansible"), "localhost", "-c", "local", "-m", "strata.ops.safe_shutdown"]
        gap, total, _out = self.timed(name, [[*argv, "-a", json.dumps(args)]])
        return gap, total, None

    def kubectl_wait(self, name):
        base = [self.kubectl, "--kubeconfig", KUBECONFIG, "-n", self.namespace]
        gap, total, _out = self.timed(
            name,
            [
                [*base, "scale", "deployment", name, "--replicas=0"],
                [*base, "wait", "--for=delete", "pod", "-l", "app=" + name, "--timeout=120s"],
            ],
        )
        return gap, total, None

    def polling(self, name):
        playbook = os.path.join(self.tmp, "poll.yml")
        with open(playbook, "w") as handle:
            handle.write(PLAYBOOK)
        extra = json.dumps(
            {"bench_kubeconfig": KUBECONFIG, "bench_deployment": name, "bench_namespace": self.namespace}
        )
        argv = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", playbook, "-e", extra]
        gap, total, _out = self.timed(name, [argv])
        return gap, total, None


def record_rows(ours, adhoc, baselines):
    for label, value in baselines.items():
        record(
            "shutdown",
            metric=METRIC,
            ours=ours,
            baseline=value,
            baseline_name=label,
            unit="s",
            ratio=value / ours if ours > 0 else None,
            goal="<= 1 s (ours)",
            met=ours <= 1.0,
            notes=f"{ROUNDS} rounds, {REPLICAS} pods terminating in {DELAY}; ad hoc {adhoc:.2f} s",
        )


def main():
    if IMPORT_ERROR is not None:
        skip(f"the kubernetes Python client is missing ({IMPORT_ERROR}): make venv")
    if not os.path.isfile(KUBECONFIG):
        skip(f"control plane not available: no kubeconfig at {KUBECONFIG} (tests/testbed/up controlplane)")
    try:
        client = k8s.get_client(KUBECONFIG)
    except k8s.K8sError as exc:
        skip(f"control plane not available: {exc}")
    kubectl = kubectl_path()
    if not kubectl:
        skip(f"no kubectl under {CACHE}/controlplane/v1.*/bin (tests/testbed/controlplane/build)")
    for tool in ("ansible", "ansible-playbook"):
        if not os.access(os.path.join(BIN, tool), os.X_OK):
            skip(f"{tool} is not beside {sys.executable} (run with the venv's python: make venv)")
    api = kclient.CoreV1Api(kconfig.new_client_from_config(config_file=KUBECONFIG))

    bench = Bench(client, api, kubectl)
    ways = [
        ("safe_shutdown (module process)", bench.module_direct),
        ("safe_shutdown (ansible ad hoc)", bench.module_adhoc),
        ("kubectl scale + wait --for=delete", bench.kubectl_wait),
        ("k8s_scale + k8s_info poll (5 s)", bench.polling),
    ]
    gaps = {label: [] for label, _fn in ways}
    totals = {label: [] for label, _fn in ways}
    own = []
    bench.setup()
    try:
        for rnd in range(ROUNDS):
            for index, (label, run) in enumerate(ways):
                gap, total, reported = run(f"w{index}-r{rnd}")
                gaps[label].append(gap)
                totals[label].append(total)
                if reported is not None:
                    own.append(reported)
                says = "" if reported is None else f"; module says {reported:.3f} s"
                print(
                    f"round {rnd + 1} {label:36s} last pod DELETED -> return {gap:6.3f} s "
                    f"(whole stop {total:5.2f} s{says})",
                    flush=True,
                )
    finally:
        bench.teardown()

    med = {label: statistics.median(values) for label, values in gaps.items()}
    print(f"\n{REPLICAS} pods, each terminating in {DELAY}; medians of {ROUNDS} round(s):")
    for label, _fn in ways:
        print(
            f"  {label:36s} last DELETED -> return {med[label]:6.3f} s (max {max(gaps[label]):.3f}); "
            f"whole stop {statistics.median(totals[label]):5.2f} s"
        )
    print(f"  module's own last_pod_gone_to_return: median {statistics.median(own):.3f} s")
    ours = med["safe_shutdown (module process)"]
    adhoc = med["safe_shutdown (ansible ad hoc)"]
    kubectl_gap = med["kubectl scale + wait --for=delete"]
    poll = med["k8s_scale + k8s_info poll (5 s)"]

    def ratio(value):
        return value / ours if ours > 0 else float("inf")

    verdict = "met" if ours <= 1.0 else "MISSED"
    print(
        f"bench shutdown: last pod DELETED -> return, median of {ROUNDS}: safe_shutdown {ours:.3f} s "
        f"(through ansible ad hoc {adhoc:.2f} s); kubectl wait {kubectl_gap:.3f} s "
        f"(ratio {ratio(kubectl_gap):.1f}); k8s_info poll 5 s {poll:.2f} s (ratio {ratio(poll):.0f}); "
        f"ratio = baseline/ours; goal <= 1 s {verdict}"
    )
    baselines = {"kubectl scale + wait --for=delete": kubectl_gap, "k8s_scale + k8s_info poll, 5 s": poll}
    record_rows(ours, adhoc, baselines)
    if ours > 1.0:
        sys.exit(1)


if __name__ == "__main__":
    main()
