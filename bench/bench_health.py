#!/usr/bin/env python3
"""bench health: one cluster_health run against one `kubectl get nodes,pods,deploy,sts,pv -A -o json`.

On the test bed's real control plane (kube-apiserver, controller-manager, scheduler; kwok plays
the kubelet of simulated nodes and marks their pods Running and Ready), the bench grows a
cluster to each size of STRATA_BENCH_HEALTH_SIZES (default ``5:200,50:2000``: nodes:pods, so
x10 work between the two): kwok nodes of its own (tainted, so nothing else lands there), one
hostPath PersistentVolume per node, and the pods in workloads of 40 replicas, Deployments and
StatefulSets (podManagementPolicy Parallel) in turn. At each size, STRATA_BENCH_HEALTH_ROUNDS
rounds (default 3), the order alternating:

  (a) strata.ops.cluster_health as Ansible runs it: the module file executed by Python with its
      arguments file (kubeconfig only: the whole cluster, as the health check reads it), wall
      time from start to exit and peak RSS (wait4's rusage);
  (b) the baseline: ``kubectl get nodes,pods,deploy,sts,pv -A -o json`` (kubectl built with the
      control plane, same version), its output to a file, timed the same way;
  (c) one run of the same task through ``ansible-playbook`` (one play, one task; no goal: the
      operator's view, STRATA_BENCH_HEALTH_PLAYBOOK=0 skips it).

Both read the whole cluster, so whatever else the lab holds (the lab hosts, other tests'
objects) is in both reads; the counts each saw are printed. Goal (issue 21): at 50 nodes and
2,000 pods, one run <= 2x kubectl get (the median of the rounds). The growth lines say how each
figure grows with the cluster (x10 work -> xN time).

STRATA_BENCH_PROFILE=1 adds one module run under cProfile at the largest size and prints where
its time goes (the top functions by cumulative time).

Env: STRATA_KUBECONFIG (default the lab's), STRATA_BENCH_HEALTH_SIZES,
STRATA_BENCH_HEALTH_ROUNDS, STRATA_BENCH_HEALTH_PLAYBOOK, STRATA_BENCH_PROFILE. Skips with one
clear line when the control plane does not answer. Everything lives in a namespace and nodes
named bench-health-<random>, removed at the end (also on failure). About 4 minutes at the
default sizes, most of it the controller manager creating the 2,000 pods.
"""

import json
import os
import statistics
import sys
import tempfile
import time
import uuid

sys.stdout.reconfigure(line_buffering=True)  # bench/run tees it: each line as it comes

from benchkit import (  # noqa: E402
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
    print_profile,
)
from results import record  # noqa: E402
from testbed_paths import LAB_KUBECONFIG  # noqa: E402 - no dependencies beyond os

KUBECONFIG = os.environ.get("STRATA_KUBECONFIG", LAB_KUBECONFIG)
ROUNDS = max(1, int(os.environ.get("STRATA_BENCH_HEALTH_ROUNDS", "3")))
PLAYBOOK = os.environ.get("STRATA_BENCH_HEALTH_PLAYBOOK", "1") != "0"
PROFILE = os.environ.get("STRATA_BENCH_PROFILE", "0") not in ("", "0")
MODULE = os.path.join(REPO, "plugins", "modules", "cluster_health.py")
TAINT = {"key": "strata.io/bench", "value": "health", "effect": "NoSchedule"}
REPLICAS = 40  # per workload
GOAL = 2.0  # one run <= 2x kubectl get, at the largest size
GOAL_AT = (50, 2000)
KUBECTL_KINDS = "nodes,pods,deploy,sts,pv"
METRIC = "one cluster_health run (module process)"

PLAYBOOK_TEXT = """\
- name: Bench - cluster health
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Read the whole cluster
      strata.ops.cluster_health:
        kubeconfig: "{{ bench_kubeconfig }}"
"""

GROWTH_CAUSES = {
    "module run": "the module decodes every pod's JSON into Python objects and checks each "
    "(docs/performance.md, bench health)",
    "kubectl get": "kubectl decodes, converts and re-encodes every object",
}


def parse_sizes(text):
    """'5:200,50:2000' -> [(5, 200), (50, 2000)], sorted by pods."""
    sizes = []
    for part in text.split(","):
        if part.strip():
            nodes, _sep, pods = part.partition(":")
            sizes.append((int(nodes), int(pods)))
    return sorted(sizes, key=lambda size: size[1])


SIZES = parse_sizes(os.environ.get("STRATA_BENCH_HEALTH_SIZES", "5:200,50:2000"))


class Bench:
    def __init__(self, client, kubectl):
        self.client = client  # strata.ops K8sClient: setup only
        self.kubectl = kubectl
        self.tag = uuid.uuid4().hex[:6]
        self.namespace = f"bench-health-{self.tag}"
        self.nodes = []
        self.pvs = []
        self.workloads = []  # (kind, name, replicas)
        self.tmp = tempfile.mkdtemp(prefix="bench-health-")  # under private_tmpdir
        self.env = bench_env()
        self.playbook = os.path.join(self.tmp, "health.yml")
        with open(self.playbook, "w") as handle:
            handle.write(PLAYBOOK_TEXT)
        args = {"ANSIBLE_MODULE_ARGS": {"kubeconfig": KUBECONFIG}}
        self.args_file = os.path.join(self.tmp, "args.json")
        with open(self.args_file, "w") as handle:
            json.dump(args, handle)

    def setup(self):
        self.client.create("Namespace", {"metadata": {"name": self.namespace}})

    def teardown(self):
        try:
            self.client.delete("Namespace", self.namespace)
            for name in self.nodes:
                self.client.delete("Node", name)
            for name in self.pvs:
                self.client.delete("PersistentVolume", name)
        except k8s.K8sError as exc:  # keep the error that brought us here
            print(f"bench health: cleanup failed ({exc}): delete namespace, nodes and PVs {self.namespace}*")

    def pod_spec(self):
        return {
            "nodeSelector": {"strata.io/bench": self.tag},
            "tolerations": [{"key": TAINT["key"], "operator": "Exists"}],
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "registry.invalid/validator:1"}],
        }

    def grow(self, nodes, pods):
        """Add nodes, PVs and workloads until the bench's part of the cluster has ``nodes`` nodes
        and ``pods`` pods, then wait until every workload is ready. Returns the seconds it took."""
        started = time.monotonic()
        while len(self.nodes) < nodes:
            name = f"bench-health-{self.tag}-{len(self.nodes)}"
            self.nodes.append(name)
            create_kwok_node(self.client, name, labels={"strata.io/bench": self.tag}, taints=[TAINT])
        while len(self.pvs) < nodes:
            name = f"bench-health-{self.tag}-{len(self.pvs)}"
            self.pvs.append(name)
            self.client.create(
                "PersistentVolume",
                {
                    "metadata": {"name": name},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": "bench-health",
                        "hostPath": {"path": f"/srv/kind/bench/{name}"},
                    },
                },
            )
        while sum(w[2] for w in self.workloads) < pods:
            index = len(self.workloads)
            replicas = min(REPLICAS, pods - sum(w[2] for w in self.workloads))
            name = f"h{index}"
            body = deployment(name, replicas, self.pod_spec())
            kind = "Deployment"
            if index % 2:
                kind = body["kind"] = "StatefulSet"
                body["spec"].update(serviceName=name, podManagementPolicy="Parallel")
            self.client.create(kind, body, self.namespace)
            self.workloads.append((kind, name, replicas))
        for kind in ("Deployment", "StatefulSet"):
            names = [w[1] for w in self.workloads if w[0] == kind]
            if names:
                self.client.watch_until(
                    kind,
                    k8s.named_ready(names, check=k8s.workload_is_ready),
                    self.namespace,
                    timeout=900,
                )
        return time.monotonic() - started

    def module(self):
        child = Child([sys.executable, MODULE, self.args_file], module_env(self.env), self.tmp)
        child.wait().check("cluster_health")
        result = json.loads(child.stdout())
        if result.get("failed"):
            raise SystemExit("bench health: cluster_health failed: " + result.get("msg", ""))
        return child, result

    def kubectl_get(self):
        with tempfile.TemporaryFile(dir=self.tmp) as out:
            argv = [self.kubectl, "--kubeconfig", KUBECONFIG, "get", KUBECTL_KINDS, "-A", "-o", "json"]
            child = Child(argv, self.env, self.tmp, stdout=out)
            child.wait().check("kubectl get")
            return child, json.loads(child.stdout())

    def playbook_run(self):
        argv = [
            os.path.join(BIN, "ansible-playbook"),
            "-i",
            "localhost,",
            self.playbook,
            "-e",
            json.dumps({"bench_kubeconfig": KUBECONFIG}),
        ]
        return Child(argv, module_env(self.env), self.tmp).wait().check("ansible-playbook cluster_health")

    def profile(self, out):
        """One module run under cProfile; its stats file."""
        argv = [sys.executable, "-m", "cProfile", "-o", out, MODULE, self.args_file]
        Child(argv, module_env(self.env), self.tmp).wait().check("cluster_health under cProfile")
        return out


def counted(result):
    """What the module saw: (nodes, pods)."""
    return len(result.get("nodes") or []), sum((result.get("pods") or {}).values())


def kubectl_counted(listing):
    kinds = {}
    for item in listing.get("items") or []:
        kinds[item.get("kind")] = kinds.get(item.get("kind"), 0) + 1
    return kinds.get("Node", 0), kinds.get("Pod", 0)


def run_size(bench, nodes, pods):
    """The rounds at one size: {ours, kubectl, rss, kub_rss, seen, playbook}."""
    ours, theirs, rss, kub_rss = [], [], [], []
    seen = None
    for rnd in range(ROUNDS):
        order = ("module", "kubectl") if rnd % 2 == 0 else ("kubectl", "module")
        for way in order:
            if way == "module":
                child, result = bench.module()
                ours.append(child.seconds)
                rss.append(child.maxrss_kib / 1024)
                seen = counted(result)
            else:
                child, listing = bench.kubectl_get()
                theirs.append(child.seconds)
                kub_rss.append(child.maxrss_kib / 1024)
                kube_seen = kubectl_counted(listing)
        print(
            f"  {nodes:3d} nodes {pods:5d} pods round {rnd + 1}: cluster_health {ours[-1]:.3f} s"
            f" ({rss[-1]:.0f} MiB, saw {seen[0]} nodes {seen[1]} pods), kubectl get {theirs[-1]:.3f} s"
            f" ({kub_rss[-1]:.0f} MiB, saw {kube_seen[0]} nodes {kube_seen[1]} pods)",
            flush=True,
        )
    fig = {
        "rounds": ROUNDS,
        "ours": statistics.median(ours),
        "kubectl": statistics.median(theirs),
        "ours_all": ours,
        "kubectl_all": theirs,
        "rss": max(rss),
        "kub_rss": max(kub_rss),
        "seen": seen,
        "kube_seen": kube_seen,
        "playbook": None,
    }
    if PLAYBOOK:
        fig["playbook"] = bench.playbook_run().seconds
        print(f"  {nodes:3d} nodes {pods:5d} pods: through ansible-playbook {fig['playbook']:.2f} s")
    return fig


def judge(nodes, pods, fig):
    """(goal text, met): the issue's goal at its size, none elsewhere."""
    if (nodes, pods) != GOAL_AT:
        return None, None
    return f"<= {GOAL:g}x kubectl get", fig["ours"] <= GOAL * fig["kubectl"]


def record_rows(nodes, pods, fig):
    """The size's rows: the module run against kubectl get, and the peak RSS of both."""
    goal, met = judge(nodes, pods, fig)
    size = {"nodes": nodes, "pods": pods}
    seen = fig["seen"]
    playbook = "" if fig["playbook"] is None else f"; through ansible-playbook {fig['playbook']:.2f} s"
    record(
        "health",
        metric=METRIC,
        ours=fig["ours"],
        baseline=fig["kubectl"],
        baseline_name=f"kubectl get {KUBECTL_KINDS} -A -o json",
        unit="s",
        ratio=fig["ours"] / fig["kubectl"] if fig["kubectl"] else None,
        goal=goal,
        met=met,
        size=size,
        notes=(
            f"medians of {fig['rounds']} rounds (module {', '.join(f'{t:.3f}' for t in fig['ours_all'])};"
            f" kubectl {', '.join(f'{t:.3f}' for t in fig['kubectl_all'])}); the whole cluster, the module"
            f" saw {seen[0]} nodes and {seen[1]} pods{playbook}"
        ),
    )
    record(
        "health",
        metric="peak RSS of the cluster_health process",
        ours=fig["rss"],
        baseline=fig["kub_rss"],
        baseline_name=f"kubectl get {KUBECTL_KINDS} -A -o json",
        unit="MiB",
        ratio=fig["rss"] / fig["kub_rss"] if fig["kub_rss"] else None,
        size=size,
        notes="ru_maxrss from wait4 of each child",
    )
    return met


def skip(reason):
    print(f"bench health: SKIPPED ({reason})")
    record(
        "health",
        metric=METRIC,
        ours=None,
        baseline=None,
        baseline_name=f"kubectl get {KUBECTL_KINDS} -A -o json",
        unit="s",
        ratio=None,
        notes=f"SKIPPED: {reason}",
    )
    sys.exit(0)


def preflight():
    return Bench(*lab_control_plane(KUBECONFIG, skip, "bench-health", need_playbook=PLAYBOOK))


def main():
    bench = preflight()
    table = {}
    bench.setup()
    try:
        for nodes, pods in SIZES:
            grown = bench.grow(nodes, pods)
            load = os.getloadavg()[0]
            print(f"-- {nodes} nodes, {pods} pods of the bench ready ({grown:.0f} s); load {load:.1f}")
            fig = table[(nodes, pods)] = run_size(bench, nodes, pods)
            fig["met"] = record_rows(nodes, pods, fig)
            goal, met = judge(nodes, pods, fig)
            print(
                f"  {nodes:3d} nodes {pods:5d} pods: cluster_health {fig['ours']:.3f} s, kubectl get"
                f" {fig['kubectl']:.3f} s: {fig['ours'] / fig['kubectl']:.2f}x; peak RSS {fig['rss']:.0f} MiB"
                f" (kubectl {fig['kub_rss']:.0f})"
                + (f"; goal {goal}: {'met' if met else 'MISSED'}" if goal else ""),
                flush=True,
            )
        if PROFILE:
            out = bench.profile(os.path.join(bench.tmp, "health.prof"))
            print(f"-- cProfile of one cluster_health run at {SIZES[-1][0]} nodes, {SIZES[-1][1]} pods:")
            print_profile(out, 15)
    finally:
        bench.teardown()

    pods_axis = [pods for _nodes, pods in SIZES]
    for label, key, unit in (
        ("module run", "ours", "s"),
        ("kubectl get", "kubectl", "s"),
        ("module peak RSS", "rss", "MiB"),
    ):
        points = [(pods, table[size][key]) for size, pods in zip(SIZES, pods_axis)]
        for line in growth_lines(label, points, GROWTH_CAUSES.get(label), unit=unit):
            print(line)
    ratios = ", ".join(f"{n}/{p}: {table[(n, p)]['ours'] / table[(n, p)]['kubectl']:.2f}x" for n, p in SIZES)
    judged = [table[size]["met"] for size in SIZES if table[size]["met"] is not None]
    verdict = "goal met" if judged and all(judged) else "goal MISSED" if judged else "goal not measured"
    print(
        f"bench health: cluster_health / kubectl get {KUBECTL_KINDS} -A -o json by nodes/pods {ratios}"
        f" (goal <= {GOAL:g}x at {GOAL_AT[0]}/{GOAL_AT[1]}); {verdict}"
    )
    if judged and not all(judged):
        sys.exit(1)


if __name__ == "__main__":
    main()
