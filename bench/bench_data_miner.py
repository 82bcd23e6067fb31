#!/usr/bin/env python3
"""A converged re-apply of a large data-miner pipeline against a `kubectl get` of its objects.

At each size of BENCH_DM_SIZES (nodes:workers, default 5:4,50:40), a generated cluster_config.yaml
(at 50: one GPU master, 45 workers, 4 storage-only nodes, and 40 workers: StatefulSets,
Deployments, GPU workers with the HF token), with the operators' four infrastructure entries,
is rendered and applied to the lab control plane with ``playbooks/data_miner/deploy.yml`` (first
run untimed). Then, alternating, BENCH_DM_ROUNDS times
(default 3):

  (a) the same playbook again: it must report changed=0; timed is its apply step (the tasks
      from "Plan the apply" to "Remove what the config no longer renders", from the json
      callback's task times) and, printed beside it, the whole run;
  (b) ``kubectl get -f`` of the same objects (rendered by the same filter into a file; kubectl,
      built with the control plane, GETs each by name);
  (c) for reference, one ``kubectl get`` listing every kind the pipeline renders across
      namespaces by the pipeline's labels (7 LISTs; the floor of any read of the set).

The medians give the ratio (a)/(b); the goal is at most 2, judged at the largest size; the
growth lines say how each grows with the objects. (a)/(c) is printed beside it. No kwok node is
made: the pods stay Pending, which costs the apply nothing. Needs the lab control
plane (tests/testbed/up controlplane). Prints one final line `bench data_miner: ...`.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))
sys.path.insert(0, os.path.join(REPO, ".collections"))

from benchkit import growth_lines  # noqa: E402
from results import record  # noqa: E402
from testbed_paths import LAB_KUBECONFIG, kubectl_path  # noqa: E402

from ansible_collections.strata.ops.plugins.module_utils import cluster_config, data_miner  # noqa: E402

GOAL = 2.0
TOKEN = "hf_bench_" + uuid.uuid4().hex  # one per bench run: the re-applies must change nothing
# (nodes, workers) of each generated pipeline, the goal judged at the largest.
SIZES = sorted(
    tuple(int(n) for n in size.split(":"))
    for size in os.environ.get("BENCH_DM_SIZES", "5:4,50:40").split(",")
    if size.strip()
)
APPLY_STEP = (
    "Plan the apply against what the cluster holds",
    "Apply what would change (server-side apply)",
    "Apply the HF token Secret",
    "Remove what the config no longer renders",
)
SELECTOR = "app.kubernetes.io/part-of=data-miner,app.kubernetes.io/managed-by=strata.ops"
KINDS = "namespaces,configmaps,secrets,services,statefulsets,deployments,daemonsets"


def generated_config(suffix, node_count, worker_count):
    nodes = {
        f"bench{suffix}-master": {"ip": "127.0.1.1", "role": "master", "gpu": True, "disk_limit_mb": 50000}
    }
    for index in range(1, node_count):
        node = {"ip": f"127.0.1.{index + 1}", "role": "worker", "disk_limit_mb": 100000 + index}
        if index > node_count - 5:
            node.update(storage_only=True, disk_limit_mb=500000)
        nodes[f"bench{suffix}-n{index:02d}"] = node
    workers = {}
    for index in range(worker_count):
        if index % 10 == 0:
            workers[f"gpu{index:02d}"] = {
                "replicas": 1,
                "schedule_on": "gpu",
                "hf_token": True,
                "resources": "gpu",
            }
        elif index % 3 == 0:
            workers[f"fetch{index:02d}"] = {"kind": "StatefulSet", "replicas": 2, "resources": "small"}
        else:
            workers[f"stage{index:02d}"] = {"replicas": 1, "schedule_on": "master" if index % 2 else "all"}
    return {
        "cluster": {"namespace": f"dm-bench-{suffix}", "nodes": nodes},
        "storage": {"seaweedfs_mount": "/swdfs_mnt/swshared", "db_path": "/data/data_miner_db"},
        "image": {"name": "data-miner", "tag": "latest", "pull_policy": "Never"},
        "seaweedfs": {
            "namespace": f"dm-bench-{suffix}-sw",
            "image": "chrislusf/seaweedfs:latest",
            "data_dir": "/data/seaweed",
            "default_disk_limit_mb": 0,
        },
        "resource_presets": {
            "small": {"cpu": "250m-1000m", "memory": "512Mi-2Gi"},
            "gpu": {"cpu": "500m-2000m", "memory": "2Gi-8Gi"},
        },
        "workers": workers,
        "infrastructure": {
            "postgres": {"kind": "StatefulSet", "image": "postgres:16", "port": 5432},
            "loki": {"kind": "StatefulSet", "image": "grafana/loki:2.9.0", "port": 3100},
            "grafana": {"kind": "Deployment", "image": "grafana/grafana:10.0.0"},
            "adminer": {"kind": "Deployment", "image": "adminer:latest"},
        },
        "k3s_app_overrides": {"output_dir": "${storage.seaweedfs_mount}/data_miner_output", "device": "auto"},
    }


def deploy(path):
    """One run of the deploy playbook: (wall s, apply-step s, the tasks that changed, the Summary)."""
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        HF_TOKEN=TOKEN,
    )
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    argv = ["ansible-playbook", "-i", path, "playbooks/data_miner/deploy.yml"]
    argv += [
        "-e",
        f"strata_kubeconfig={LAB_KUBECONFIG}",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
    ]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"bench data_miner: deploy failed (rc={proc.returncode}):\n{proc.stdout[-3000:]}")
    out = json.loads(proc.stdout)
    step, summary = 0.0, ""
    for play in out["plays"]:
        for task in play["tasks"]:
            name = task["task"]["name"].split(" : ", 1)[-1]
            duration = task["task"]["duration"]
            if name in APPLY_STEP:
                step += seconds(duration["end"]) - seconds(duration["start"])
            if name == "Summary":
                summary = task["hosts"]["localhost"]["msg"]
    changed = [
        task["task"]["name"]
        for play in out["plays"]
        for task in play["tasks"]
        if any(result.get("changed") for result in task["hosts"].values())
    ]
    return wall, step, changed, summary


def seconds(stamp):
    # the json callback's ISO times, e.g. 2026-12-02T17:01:02.123456Z
    from datetime import datetime  # noqa: PLC0415

    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def kubectl_get(kubectl, *what):
    started = time.monotonic()
    proc = subprocess.run(
        [kubectl, "--kubeconfig", LAB_KUBECONFIG, "get", *what, "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"bench data_miner: kubectl get failed: {proc.stderr}")
    return elapsed, len(json.loads(proc.stdout)["items"])


def delete_namespaces(kubectl, doc):
    names = [doc["cluster"]["namespace"], doc["seaweedfs"]["namespace"]]
    subprocess.run(
        [kubectl, "--kubeconfig", LAB_KUBECONFIG, "delete", "namespace", "--wait=false", *names],
        capture_output=True,
        check=False,
    )


def measure(kubectl, rounds, node_count, worker_count):
    """One pipeline size: (medians, object count) after ``rounds`` converged re-applies."""
    doc = generated_config(uuid.uuid4().hex[:6], node_count, worker_count)
    with tempfile.TemporaryDirectory(prefix="strata-bench-") as tmp:
        path = os.path.join(tmp, "cluster_config.yaml")
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(doc, handle, sort_keys=False)
        objects = os.path.join(tmp, "objects.yaml")
        with open(objects, "w", encoding="utf-8") as handle:
            rendered = data_miner.render(cluster_config.check(doc).doc, app_config={}, hf_token=TOKEN)
            yaml.safe_dump_all(rendered, handle)
        try:
            wall, step, changed, summary = deploy(path)
            print(
                f"{node_count} nodes, {worker_count} workers: first apply (untimed): {summary}; {wall:.1f} s"
            )
            walls, steps, gets, lists = [], [], [], []
            for round_number in range(1, rounds + 1):
                wall, step, changed, summary = deploy(path)
                if changed:
                    sys.exit(
                        f"bench data_miner: the re-apply changed {', '.join(changed)}; it must change nothing"
                    )
                get, got = kubectl_get(kubectl, "-f", objects)
                listing, listed = kubectl_get(kubectl, KINDS, "-A", "-l", SELECTOR)
                walls.append(wall)
                steps.append(step)
                gets.append(get)
                lists.append(listing)
                print(
                    f"round {round_number}: re-apply changed=0, apply step {step:.2f} s (whole run "
                    f"{wall:.1f} s); kubectl get -f of the {got} objects {get:.2f} s; "
                    f"kubectl get -l (LIST) of {listed} {listing:.2f} s"
                )
            print(f"last re-apply: {summary}")
        finally:
            delete_namespaces(kubectl, doc)
    medians = {
        "step": statistics.median(steps),
        "wall": statistics.median(walls),
        "get": statistics.median(gets),
        "listing": statistics.median(lists),
    }
    return medians, len(rendered)


def main():
    kubectl = kubectl_path()
    if not kubectl or not os.path.exists(LAB_KUBECONFIG):
        reason = "no lab control plane: tests/testbed/up controlplane"
        print(f"bench data_miner: SKIPPED ({reason})")
        record(
            "data_miner",
            metric="converged re-apply (the apply step)",
            ours=None,
            baseline=None,
            baseline_name="kubectl get -f of the same objects",
            unit="s",
            ratio=None,
            notes=f"SKIPPED: {reason}",
        )
        return
    rounds = int(os.environ.get("BENCH_DM_ROUNDS", "3"))
    runs = []
    for node_count, worker_count in SIZES:
        medians, count = measure(kubectl, rounds, node_count, worker_count)
        runs.append((node_count, worker_count, count, medians))
    for label, key in (
        ("converged re-apply step (objects)", "step"),
        ("kubectl get -f (objects)", "get"),
        ("one LIST per kind (objects)", "listing"),
    ):
        for line in growth_lines(label, [(count, medians[key]) for _n, _w, count, medians in runs]):
            print(line)
    for node_count, worker_count, count, medians in runs:
        judged = (node_count, worker_count) == SIZES[-1]
        ratio = medians["step"] / medians["get"]
        record(
            "data_miner",
            metric="converged re-apply (the apply step)",
            ours=medians["step"],
            baseline=medians["get"],
            baseline_name="kubectl get -f of the same objects",
            limit=medians["listing"],
            limit_name="kubectl get -l: one LIST per kind (the floor)",
            unit="s",
            ratio=ratio,
            goal=f"<= {GOAL:.0f}x" if judged else None,
            met=ratio <= GOAL if judged else None,
            size={"nodes": node_count, "workers": worker_count, "objects": count},
            notes=f"medians of {rounds} rounds; whole playbook {medians['wall']:.1f} s",
        )
    node_count, worker_count, count, medians = runs[-1]
    step, get, listing = medians["step"], medians["get"], medians["listing"]
    ratio = step / get
    verdict = "goal met" if ratio <= GOAL else "goal MISSED"
    print(
        f"bench data_miner: {node_count} nodes, {worker_count} workers, {count} objects: converged re-apply "
        f"{step:.2f} s vs kubectl get -f {get:.2f} s = {ratio:.2f}x (goal <= {GOAL:.0f}x, {verdict}; "
        f"vs one LIST per kind {listing:.2f} s = {step / listing:.1f}x; whole playbook "
        f"{medians['wall']:.1f} s)"
    )


if __name__ == "__main__":
    main()
