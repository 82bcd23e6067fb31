#!/usr/bin/env python3
"""bench shutdown: from the deletion of the last pod to the return of the stop, at several sizes.

On the test bed's real control plane (kube-apiserver, controller-manager, scheduler; kwok plays
the kubelet of simulated nodes and removes a deleted pod when its termination delay ends), a
Deployment of N pods that take STRATA_BENCH_DELAY to terminate is stopped by
strata.ops.safe_shutdown state=stopped while `kubectl wait --for=delete pod -l app=NAME` (kubectl
built with the control plane, same version) waits for the same pods. Both wait on the SAME
deletions in the same round, so the figure compares like with like on a busy machine:

  (a) the module as Ansible runs it on a target: the module file executed by Python with its
      arguments file (peak RSS of that process from wait4's rusage);
  (b) the same task through `ansible-playbook` (one play, one task) - the operator's way;
  (c) the baseline: `kubectl wait --for=delete`, started before the scale.

An independent watcher (a raw watch through the kubernetes Python client, in this process, not
our code) timestamps the DELETED event of the last pod; the figure is the time from that event
to the moment each process has exited. Sizes: 1 pod (STRATA_BENCH_ROUNDS rounds, default 20: p50
and p95; plus STRATA_BENCH_PLAYBOOK_ROUNDS through ansible-playbook, default 5), then each size of
STRATA_BENCH_SHUTDOWN_SIZES (default "100": about 2 minutes in all; "100,1000" for the full
run, about 7 minutes more: the controller manager creates and deletes the pods at its default 20
requests/s, and kubectl wait, the baseline, takes about 200 s after the last deletion: a GET per
pod, 0.2 s apart by its client-side rate limit). One round at each size above 1 pod (the module is
hundreds of times under the goal there; a round at 100 pods takes ~30 s, most of it kubectl
wait). Goals (issue 21): module <= kubectl wait at p50 and p95 (1 pod); ansible-playbook <= 0.15
s; <= 2x kubectl wait at each size. The growth line says how each figure grows with the pods
(x10 pods -> xN time).

Env: STRATA_KUBECONFIG (default the lab's), STRATA_BENCH_ROUNDS, STRATA_BENCH_PLAYBOOK_ROUNDS,
STRATA_BENCH_SHUTDOWN_SIZES, STRATA_BENCH_DELAY (default 1s). Skips with one clear line when the
control plane does not answer. Everything lives in a namespace and nodes named
bench-shutdown-<random>, removed at the end (also on failure). Helpers shared with
bench_health.py are in bench/benchkit.py.
"""

import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid

from benchkit import (
    BIN,
    REPO,
    Child,
    bench_env,
    create_kwok_node,
    deployment,
    growth_lines,
    k8s,
    lab_control_plane,
    module_env,
    percentile,
)

IMPORT_ERROR = None
try:
    from kubernetes import client as kclient
    from kubernetes import config as kconfig
except ImportError as import_exc:
    IMPORT_ERROR = import_exc
from results import record  # noqa: E402
from testbed_paths import LAB_KUBECONFIG  # noqa: E402 - no dependencies beyond os

KUBECONFIG = os.environ.get("STRATA_KUBECONFIG", LAB_KUBECONFIG)
ROUNDS = int(os.environ.get("STRATA_BENCH_ROUNDS", "20"))
PLAYBOOK_ROUNDS = int(os.environ.get("STRATA_BENCH_PLAYBOOK_ROUNDS", "5"))
SIZES = [int(s) for s in os.environ.get("STRATA_BENCH_SHUTDOWN_SIZES", "100").split(",") if s.strip()]
DELAY = os.environ.get("STRATA_BENCH_DELAY", "1s")
MODULE = os.path.join(REPO, "plugins", "modules", "safe_shutdown.py")
TAINT = {"key": "strata.io/bench", "value": "shutdown", "effect": "NoSchedule"}
PODS_PER_NODE = 100  # lab_k8s nodes allow 110
PLAYBOOK_GOAL = 0.15

PLAYBOOK = """\
- name: Bench - stop one workload
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Stop it and wait until its pods are gone
      strata.ops.safe_shutdown:
        kubeconfig: "{{ bench_kubeconfig }}"
        state: stopped
        name: "{{ bench_deployment }}"
        namespace: "{{ bench_namespace }}"
        timeout: 600
"""

METRIC = "last pod DELETED -> the stop returns"


class LastDeleted(threading.Thread):
    """A raw watch of the workload's pods (the kubernetes client's HTTP, no model objects: it
    keeps up with 1,000 pods) that records time.monotonic() when the last pod's DELETED event
    arrives. Independent of strata.ops."""

    def __init__(self, api, namespace, selector):
        super().__init__(daemon=True)
        self.api, self.namespace, self.selector = api, namespace, selector
        self.names = set()
        self.at = None
        self.ready = threading.Event()
        self.error = None

    def run(self):
        try:
            listing = self.api.list_namespaced_pod(self.namespace, label_selector=self.selector)
            self.names = {p.metadata.name for p in listing.items}
            self.ready.set()
            resp = self.api.list_namespaced_pod(
                self.namespace,
                label_selector=self.selector,
                watch=True,
                resource_version=listing.metadata.resource_version,
                timeout_seconds=900,
                _preload_content=False,
            )
            buffer = b""
            for chunk in resp.stream(65536):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip() and self.apply(json.loads(line)):
                        # close, not release: the watch is still open on this connection
                        resp.close()
                        return
        except Exception as exc:  # reported by the caller
            self.error = exc
            self.ready.set()

    def apply(self, event):
        name = ((event.get("object") or {}).get("metadata") or {}).get("name")
        if event.get("type") == "DELETED":
            self.names.discard(name)
            if not self.names:
                self.at = time.monotonic()
                return True
        elif event.get("type") == "ADDED":
            self.names.add(name)
        return False

    def last_deleted(self):
        self.join(120)
        if self.error is not None:
            raise SystemExit(f"bench shutdown: the watcher failed: {self.error}")
        if self.at is None:
            raise SystemExit(f"bench shutdown: pods still present for the watcher: {sorted(self.names)[:5]}")
        return self.at


class Bench:
    def __init__(self, client, api, kubectl):
        self.client = client  # strata.ops K8sClient: setup only
        self.api = api
        self.kubectl = kubectl
        self.tag = uuid.uuid4().hex[:6]
        self.namespace = f"bench-shutdown-{self.tag}"
        self.nodes = []
        self.tmp = tempfile.mkdtemp(prefix="bench-shutdown-")  # under private_tmpdir
        self.env = bench_env()
        self.playbook = os.path.join(self.tmp, "stop.yml")
        with open(self.playbook, "w") as handle:
            handle.write(PLAYBOOK)

    def setup(self, pods):
        self.client.create("Namespace", {"metadata": {"name": self.namespace}})
        self.add_nodes(pods)

    def add_nodes(self, pods):
        """Enough tainted kwok nodes of our own for ``pods`` pods."""
        while len(self.nodes) * PODS_PER_NODE < pods:
            name = f"bench-shutdown-{self.tag}-{len(self.nodes)}"
            self.nodes.append(name)
            create_kwok_node(self.client, name, labels={"strata.io/bench": self.tag}, taints=[TAINT])

    def teardown(self):
        try:
            self.client.delete("Namespace", self.namespace)
            for name in self.nodes:
                self.client.delete("Node", name)
        except k8s.K8sError as exc:  # keep the error that brought us here
            print(f"bench shutdown: cleanup failed ({exc}): delete namespace and nodes {self.namespace}*")

    def deployment(self, name, replicas):
        """A ready Deployment of ``replicas`` pods that take DELAY to terminate."""
        pod_spec = {
            "nodeSelector": {"strata.io/bench": self.tag},
            "tolerations": [{"key": TAINT["key"], "operator": "Exists"}],
            "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "main", "image": "registry.invalid/validator:1"}],
        }
        annotations = {"pod-delete.stage.kwok.x-k8s.io/delay": DELAY}
        self.client.create("Deployment", deployment(name, replicas, pod_spec, annotations), self.namespace)
        self.client.watch_until(
            "Deployment",
            k8s.named_ready([name], check=k8s.workload_is_ready),
            self.namespace,
            field_selector="metadata.name=" + name,
            timeout=300,
        )

    def module_argv(self, name):
        args_file = os.path.join(self.tmp, name + ".json")
        args = {"kubeconfig": KUBECONFIG, "state": "stopped", "name": name, "namespace": self.namespace}
        with open(args_file, "w") as handle:
            json.dump({"ANSIBLE_MODULE_ARGS": dict(args, timeout=600)}, handle)
        return [sys.executable, MODULE, args_file]

    def playbook_argv(self, name):
        extra = {"bench_kubeconfig": KUBECONFIG, "bench_deployment": name, "bench_namespace": self.namespace}
        return [
            os.path.join(BIN, "ansible-playbook"),
            "-i",
            "localhost,",
            self.playbook,
            "-e",
            json.dumps(extra),
        ]

    def round(self, name, pods, way):
        """One stop of a fresh Deployment of ``pods`` pods by ``way`` ("module" or "playbook"),
        with kubectl wait on the same pods: {ours, kubectl, whole, rss_kib, says}."""
        self.deployment(name, pods)
        selector = "app=" + name
        watcher = LastDeleted(self.api, self.namespace, selector)
        watcher.start()
        watcher.ready.wait(60)
        base = [self.kubectl, "--kubeconfig", KUBECONFIG, "-n", self.namespace]
        argv = [*base, "wait", "--for=delete", "pod", "-l", selector, "--timeout=900s"]
        waiting = Child(argv, self.env, self.tmp)
        # kubectl lists the pods, then watches them: give it that head start before the scale.
        time.sleep(1.0)
        env = module_env(self.env)
        argv = self.module_argv(name) if way == "module" else self.playbook_argv(name)
        ours = Child(argv, env, self.tmp)
        ours.wait().check(way)
        waiting.wait().check("kubectl wait --for=delete")
        last = watcher.last_deleted()
        says = None
        if way == "module":
            result = json.loads(ours.stdout())
            if result.get("failed"):
                raise SystemExit("bench shutdown: safe_shutdown failed: " + result["msg"])
            says = result["last_pod_gone_to_return"]
        self.client.delete("Deployment", name, self.namespace)
        return {
            "ours": ours.ended - last,
            "kubectl": waiting.ended - last,
            "whole": ours.ended - ours.started,
            "rss_kib": ours.maxrss_kib,
            "kubectl_rss_kib": waiting.maxrss_kib,
            "says": says,
        }


def run_rounds(bench, pods, way, rounds):
    runs = []
    for rnd in range(rounds):
        run = bench.round(f"s{pods}-{way[0]}{rnd}", pods, way)
        runs.append(run)
        says = "" if run["says"] is None else f"; module says {run['says']:.3f} s"
        print(
            f"{pods:5d} pod(s) {way:8s} round {rnd + 1:2d}: last DELETED -> return {run['ours']:6.3f} s, "
            f"kubectl wait {run['kubectl']:6.3f} s (whole stop {run['whole']:6.2f} s, "
            f"peak RSS {run['rss_kib'] / 1024:5.1f} MiB{says})",
            flush=True,
        )
    return runs


def figures(runs):
    """One size's figures from its rounds: p50/p95 of ours and of kubectl wait, peak RSS (MiB)."""
    ours = [r["ours"] for r in runs]
    kub = [r["kubectl"] for r in runs]
    return {
        "rounds": len(runs),
        "ours50": statistics.median(ours),
        "ours95": percentile(ours, 0.95),
        "kub50": statistics.median(kub),
        "kub95": percentile(kub, 0.95),
        "rss": max(r["rss_kib"] for r in runs) / 1024,
        "kub_rss": max(r["kubectl_rss_kib"] for r in runs) / 1024,
        "whole": statistics.median(r["whole"] for r in runs),
    }


def judge(pods, way, fig):
    """(goal text, met) of issue 21 for one size and way."""
    if way == "playbook":
        return f"<= {PLAYBOOK_GOAL} s (ansible-playbook)", fig["ours50"] <= PLAYBOOK_GOAL
    if pods == 1:
        met = fig["ours50"] <= fig["kub50"] and fig["ours95"] <= fig["kub95"]
        return "<= 1x kubectl wait (p50 and p95)", met
    return "<= 2x kubectl wait", fig["ours50"] <= 2 * fig["kub50"]


def record_rows(pods, way, fig):
    """The size's rows: ours against kubectl wait (p50; p95 in the notes), and for the module
    process its peak RSS against kubectl's. Returns met."""
    goal, met = judge(pods, way, fig)
    label = "ansible-playbook" if way == "playbook" else "module process"
    kub50 = fig["kub50"]
    record(
        "shutdown",
        metric=f"{METRIC} ({label}, p50)",
        ours=fig["ours50"],
        baseline=kub50,
        baseline_name="kubectl wait --for=delete, same deletions",
        unit="s",
        ratio=fig["ours50"] / kub50 if kub50 > 0 else None,  # kubectl can exit before the watcher sees it
        goal=goal,
        met=met,
        size={"pods": pods},
        notes=(
            f"{fig['rounds']} rounds, pods terminating in {DELAY}; p50 {fig['ours50']:.3f}/p95 "
            f"{fig['ours95']:.3f} s against kubectl p50 {kub50:.3f}/p95 {fig['kub95']:.3f} s, same "
            f"deletions; peak RSS {fig['rss']:.1f} MiB (kubectl {fig['kub_rss']:.1f}); whole stop "
            f"{fig['whole']:.2f} s"
        ),
    )
    if way == "module":
        record(
            "shutdown",
            metric="peak RSS of the module process",
            ours=fig["rss"],
            baseline=fig["kub_rss"],
            baseline_name="kubectl wait --for=delete",
            unit="MiB",
            ratio=fig["rss"] / fig["kub_rss"] if fig["kub_rss"] else None,
            size={"pods": pods},
            notes="ru_maxrss from wait4 of each child",
        )
    return met


def report_size(pods, way, runs):
    """Print and record the size's figures; returns them with ``met``."""
    fig = figures(runs)
    goal, _met = judge(pods, way, fig)
    met = fig["met"] = record_rows(pods, way, fig)
    label = "ansible-playbook" if way == "playbook" else "module process"
    ratio = fig["ours50"] / fig["kub50"] if fig["kub50"] > 0 else float("nan")
    print(
        f"  {pods:5d} pod(s), {label}, {len(runs)} round(s): p50 {fig['ours50']:.3f} s"
        f" p95 {fig['ours95']:.3f} s; kubectl wait p50 {fig['kub50']:.3f} s p95 {fig['kub95']:.3f} s;"
        f" ratio {ratio:.3g}; peak RSS {fig['rss']:.1f} MiB (kubectl {fig['kub_rss']:.1f});"
        f" whole stop {fig['whole']:.2f} s; goal {goal}: " + ("met" if met else "MISSED"),
        flush=True,
    )
    return fig


def skip(reason):
    print(f"bench shutdown: SKIPPED ({reason})")
    record(
        "shutdown",
        metric=METRIC,
        ours=None,
        baseline=None,
        baseline_name="kubectl wait --for=delete",
        unit="s",
        ratio=None,
        notes=f"SKIPPED: {reason}",
    )
    sys.exit(0)


def preflight():
    client, kubectl = lab_control_plane(KUBECONFIG, skip, "bench-shutdown", import_error=IMPORT_ERROR)
    api = kclient.CoreV1Api(kconfig.new_client_from_config(config_file=KUBECONFIG))
    return Bench(client, api, kubectl)


GROWTH_CAUSES = {
    "kubectl wait last DELETED -> return": "kubectl wait takes the pods one after another, a GET "
    "each (and a watch while one exists), 0.2 s apart by its client-side rate limit ('Waited before "
    "sending request ... client-side throttling' at -v=6): it is still reading the pods it listed "
    "when the last one goes",
    "whole stop (scale -> module returns)": "kube-controller-manager deletes pods at its default "
    "--kube-api-qps 20, so the stop itself is linear in pods at best",
}


def main():
    bench = preflight()
    sizes = sorted({1, *SIZES})
    table = {}
    bench.setup(max(sizes))
    try:
        for pods in sizes:
            rounds = ROUNDS if pods == 1 else 1  # the module is ~0.001x kubectl wait there
            table[pods] = report_size(pods, "module", run_rounds(bench, pods, "module", rounds))
            if pods == 1 and PLAYBOOK_ROUNDS:
                runs = run_rounds(bench, 1, "playbook", PLAYBOOK_ROUNDS)
                table["playbook"] = report_size(1, "playbook", runs)
    finally:
        bench.teardown()

    print(f"\nsizes {', '.join(str(s) for s in sizes)} pod(s), pods terminating in {DELAY}:")
    for pods in sizes:
        fig = table[pods]
        print(
            f"  {pods:5d} pod(s): module p50 {fig['ours50']:.3f} s, kubectl wait {fig['kub50']:.3f} s,"
            f" whole stop {fig['whole']:.2f} s, module peak RSS {fig['rss']:.1f} MiB,"
            f" {'met' if fig['met'] else 'MISSED'}"
        )
    for label, key in (
        ("module last DELETED -> return", "ours50"),
        ("kubectl wait last DELETED -> return", "kub50"),
        ("whole stop (scale -> module returns)", "whole"),
        ("module peak RSS", "rss"),
    ):
        points = [(p, table[p][key]) for p in sizes]
        unit = "MiB" if "RSS" in label else "s"
        for line in growth_lines(label, points, GROWTH_CAUSES.get(label), unit=unit):
            print(line)
    one = table[1]
    book = table.get("playbook")
    all_met = all(fig["met"] for fig in table.values())
    ratios = ", ".join(
        f"{p}: {table[p]['ours50'] / table[p]['kub50']:.3g}" for p in sizes if table[p]["kub50"] > 0
    )
    playbook_text = f"; ansible-playbook {book['ours50']:.3f} s (goal <= {PLAYBOOK_GOAL} s)" if book else ""
    print(
        f"bench shutdown: last pod DELETED -> return, p50 at 1 pod: safe_shutdown {one['ours50']:.3f} s"
        f" (p95 {one['ours95']:.3f}), kubectl wait {one['kub50']:.3f} s (p95 {one['kub95']:.3f})"
        f"{playbook_text}; ours/kubectl by pods {ratios} (goal <= 1 at 1 pod, <= 2 at each size);"
        f" module peak RSS at {sizes[-1]} pods {table[sizes[-1]]['rss']:.0f} MiB;"
        f" {'all goals met' if all_met else 'goal MISSED'}"
    )
    if not all_met:
        sys.exit(1)


if __name__ == "__main__":
    main()
