"""playbooks/data_miner/deploy.yml against the lab control plane, with the operators' file as the
inventory: kwok nodes made from the config (a GPU master, two workers, a storage-only node), the
pipeline rendered and applied (server-side apply), and the real scheduler placing every pod where the
config says. Then a second apply, a worker taken out of the config (its objects pruned), and the
HF token, which reaches only the Secret.

The nodes and namespaces carry a random suffix, so parallel runs never share them.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest
import yaml
from lab_k8s import create_kwok_node

from tests.canaries import HF_TOKEN

from .conftest import REPO
from .k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import

PLAYBOOK_BIN = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
TOKEN = HF_TOKEN  # tests/canaries.py: the run-wide canary the secret scan looks for


def config(suffix, data="/data"):
    n = {role: f"dm{suffix}-{role}" for role in ("master", "w1", "w2", "store")}
    return n, {
        "cluster": {
            "namespace": f"dm-{suffix}",
            "k3s_version": "v1.31.0+k3s1",
            "nodes": {
                n["master"]: {"ip": "127.0.0.1", "role": "master", "disk_limit_mb": 50000, "gpu": True},
                n["w1"]: {"ip": "127.0.0.2", "role": "worker", "disk_limit_mb": 100000},
                n["w2"]: {"ip": "127.0.0.3", "role": "worker", "disk_limit_mb": 100000},
                n["store"]: {
                    "ip": "127.0.0.4",
                    "role": "worker",
                    "storage_only": True,
                    "disk_limit_mb": 500000,
                },
            },
        },
        "storage": {"seaweedfs_mount": f"{data}/swshared", "db_path": f"{data}/data_miner_db"},
        "image": {"name": "data-miner", "tag": "latest", "pull_policy": "Never"},
        "seaweedfs": {
            "namespace": f"dm-{suffix}-sw",
            "image": "chrislusf/seaweedfs:latest",
            "data_dir": f"{data}/seaweed",
            "default_disk_limit_mb": 0,
        },
        "resource_presets": {"small": {"cpu": "250m-1000m", "memory": "512Mi-2Gi"}},
        "workers": {
            "download": {"kind": "StatefulSet", "replicas": 3, "schedule_on": "all", "resources": "small"},
            "extract": {"replicas": 2, "schedule_on": "master"},
            "filter": {"replicas": 1, "schedule_on": "gpu", "hf_token": True},
            "monitor": {"replicas": 1, "schedule_on": "master"},
        },
        "infrastructure": {
            "postgres": {"kind": "StatefulSet", "image": "postgres:16", "port": 5432},
            # NodePorts are cluster-wide: each run takes its own
            "grafana": {
                "kind": "Deployment",
                "image": "grafana/grafana:10.0.0",
                "node_port": 30000 + int(suffix, 16) % 2700,
            },
        },
        "k3s_app_overrides": {"output_dir": "${storage.seaweedfs_mount}/data_miner_output", "device": "auto"},
    }


def deploy(path, kubeconfig, check=False, playbook="deploy", extra=None, expect_failure=False):  # noqa: PLR0917
    """Run playbooks/data_miner/PLAYBOOK.yml with the config as the inventory; the results by task name
    (``HOST: NAME`` for hosts other than localhost), or the failed result with ``expect_failure``."""
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        HF_TOKEN=TOKEN,
    )
    # The nodes of the file are this machine for the wipe play.
    local = {
        "ansible_connection": "local",
        "ansible_become": False,
        "ansible_python_interpreter": sys.executable,
    }
    local.update(extra or {})
    argv = [PLAYBOOK_BIN, "-i", str(path), f"playbooks/data_miner/{playbook}.yml"]
    argv += ["-e", f"strata_kubeconfig={kubeconfig}", "-e", json.dumps(local)] + (
        ["--check"] if check else []
    )
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert TOKEN not in proc.stdout + proc.stderr  # never in the output
    try:
        plays = json.loads(proc.stdout)["plays"]
    except (ValueError, KeyError):
        raise AssertionError(f"no result from ansible-playbook: {proc.stdout}\n{proc.stderr}") from None
    results = {}
    for play in plays:
        for task in play["tasks"]:
            name = task["task"]["name"].split(" : ", 1)[-1]
            for host, result in task["hosts"].items():
                results[name if host == "localhost" else f"{host}: {name}"] = result
    failed = [r for r in results.values() if r.get("failed")]
    if expect_failure:
        assert proc.returncode != 0 and failed, proc.stdout[-2000:]
        return failed[0]
    assert proc.returncode == 0, [
        (n, r.get("msg")) for n, r in results.items() if r.get("failed")
    ] or proc.stdout[-3000:]
    return results


def pods_by_owner(client, namespace):
    items, _rv = client.list("Pod", namespace)
    placed = {}
    for pod in items:
        owner = pod["metadata"]["labels"].get("app.kubernetes.io/name")
        placed.setdefault(owner, []).append(pod["spec"].get("nodeName"))
    return placed


def wait_scheduled(client, namespaces, expected, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        placed = {}
        for ns in namespaces:
            placed.update(pods_by_owner(client, ns))
        counts = {name: len([n for n in nodes if n]) for name, nodes in placed.items()}
        if all(counts.get(name, 0) >= want for name, want in expected.items()):
            return placed
        if time.monotonic() > deadline:
            raise AssertionError(f"pods not scheduled within {timeout} s: {counts} (want {expected})")
        time.sleep(0.5)


@contextlib.contextmanager
def lab_pipeline(controlplane, k8s_client, tmp_path, test_label, workers=None, gpu_label=False):  # noqa: PLR0917
    """kwok nodes and a cluster_config.yaml of a random suffix (``workers`` added to the config;
    ``gpu_label``: the master carries strata.io/gpu as k3s would label it): (node names, the config,
    its path, the kubeconfig); the namespaces and nodes are removed afterwards."""
    suffix = uuid.uuid4().hex[:6]
    names, doc = config(suffix, data=str(tmp_path / "node-data"))
    doc["workers"].update(workers or {})
    for role, name in names.items():
        gpu = {"strata.io/gpu": "true"} if gpu_label and role == "master" else {}
        create_kwok_node(k8s_client, name, labels={"strata.io/test": test_label, **gpu})
    path = tmp_path / "cluster_config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        yield names, doc, path, controlplane
    finally:
        for ns in (doc["cluster"]["namespace"], doc["seaweedfs"]["namespace"]):
            k8s_client.delete("Namespace", ns)
        for name in names.values():
            k8s_client.delete("Node", name)


@pytest.fixture
def pipeline(controlplane, k8s_client, tmp_path):
    with lab_pipeline(controlplane, k8s_client, tmp_path, "data-miner") as made:
        yield made


def test_deploy_places_every_pod_where_the_config_says_then_prunes_a_removed_worker(pipeline, k8s_client):
    names, doc, path, kubeconfig = pipeline
    ns, sw = doc["cluster"]["namespace"], doc["seaweedfs"]["namespace"]
    planned = deploy(path, kubeconfig, check=True)
    assert planned["Summary"]["msg"].startswith("Check mode: would apply")
    with pytest.raises(Exception, match=r"does not exist|not found"):
        k8s_client.get_namespace(ns)  # check mode created nothing

    first = deploy(path, kubeconfig)
    assert first["Apply what would change (server-side apply)"]["changed"] is True
    assert first["Apply the HF token Secret"]["changed"] is True
    placed = wait_scheduled(
        k8s_client, [ns, sw],
        {"download": 3, "extract": 2, "filter": 1, "monitor": 1, "postgres": 1, "grafana": 1,
         "seaweedfs-master": 1, "seaweedfs-filer": 1, "seaweedfs-mount": 3,
         **{f"seaweedfs-volume-{n}": 1 for n in names.values()}},
    )  # fmt: skip
    takers = {names["master"], names["w1"], names["w2"]}
    assert sorted(placed["download"]) == sorted(takers)  # spread: one on each node that takes workers
    for name in (
        "extract",
        "monitor",
        "postgres",
        "grafana",
        "filter",
        "seaweedfs-master",
        "seaweedfs-filer",
    ):
        assert set(placed[name]) == {names["master"]}, (name, placed[name])  # master; the GPU node
    assert sorted(placed["seaweedfs-mount"]) == sorted(takers)
    for node in names.values():
        assert placed[f"seaweedfs-volume-{node}"] == [node]
    on_store = [owner for owner, nodes in placed.items() if names["store"] in nodes]
    assert on_store == [f"seaweedfs-volume-{names['store']}"]  # storage-only: no worker, no mount

    # the token: in the Secret, referenced only by the hf_token worker, nowhere else
    secret = k8s_client.get("Secret", "hf-token", ns)
    assert secret["type"] == "Opaque" and "HF_TOKEN" in secret["data"]
    config_map = k8s_client.get("ConfigMap", "data-miner-config", ns)
    assert (
        f"output_dir: {doc['storage']['seaweedfs_mount']}/data_miner_output"
        in config_map["data"]["config.yaml"]
    )
    assert TOKEN not in json.dumps(config_map)

    again = deploy(path, kubeconfig)
    summary = again["Summary"]["msg"]
    assert again["Plan the apply against what the cluster holds"].get("censored"), "the set holds the token"
    for task in ("Apply what would change (server-side apply)", "Apply the HF token Secret"):
        assert again[task].get("skipped") is True, (task, summary)  # no PATCH at all
    assert re.search(r"\((\d+) unchanged without a request; nothing changed\)", summary), summary
    assert "pruned nothing" in summary

    # Someone scales a worker by hand: the next deploy sends that one object, and the config wins.
    k8s_client.scale("StatefulSet", "download", ns, 5)
    drifted = deploy(path, kubeconfig)
    assert "; changed StatefulSet download)" in drifted["Summary"]["msg"], drifted["Summary"]["msg"]
    assert drifted["Apply what would change (server-side apply)"]["changed"] is True
    assert drifted["Apply the HF token Secret"].get("skipped") is True
    assert k8s_client.get("StatefulSet", "download", ns)["spec"]["replicas"] == 3

    del doc["workers"]["monitor"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    pruned = deploy(path, kubeconfig)
    assert "pruned Deployment monitor" in pruned["Summary"]["msg"], pruned["Summary"]["msg"]
    with pytest.raises(Exception, match=r"does not exist|not found"):
        k8s_client.get("Deployment", "monitor", ns)
    k8s_client.get("Deployment", "extract", ns)  # the others stay


def test_teardown_keeps_the_data_unless_the_wipe_names_the_namespace(pipeline, k8s_client):
    names, doc, path, kubeconfig = pipeline
    ns, sw = doc["cluster"]["namespace"], doc["seaweedfs"]["namespace"]
    deploy(path, kubeconfig)
    # what the pods would have written on the nodes (kwok runs no containers)
    db = os.path.join(doc["storage"]["db_path"], "postgres")
    seaweed = doc["seaweedfs"]["data_dir"]
    for directory in (db, os.path.join(seaweed, "volume")):
        os.makedirs(directory)
        with open(os.path.join(directory, "data"), "w") as handle:
            handle.write("kept\n")

    wrong = deploy(
        path, kubeconfig, playbook="teardown", extra={"confirm_wipe": "data-minr"}, expect_failure=True
    )
    assert f"confirm_wipe must be the pipeline's namespace ({ns}), got data-minr" in wrong["msg"]
    k8s_client.get_namespace(ns)  # nothing changed

    kept = deploy(path, kubeconfig, playbook="teardown")
    assert f"Deleted the namespaces {ns}, {sw}" in kept["Summary"]["msg"]
    assert f"kept (wipe: -e confirm_wipe={ns})" in kept["Summary"]["msg"]
    for name in (ns, sw):
        with pytest.raises(Exception, match=r"does not exist|not found"):
            k8s_client.get_namespace(name)
    assert os.path.exists(os.path.join(db, "data")) and os.path.exists(
        os.path.join(seaweed, "volume", "data")
    )

    # every node of the file is this machine here: one of them wipes the paths they would each hold
    wipe = {"confirm_wipe": ns, "data_miner_wipe_hosts": names["master"]}
    planned = deploy(path, kubeconfig, playbook="teardown", extra=wipe, check=True)
    assert f"{names['master']}: would delete {db}, {seaweed}" in planned[f"{names['master']}: Summary"]["msg"]
    assert os.path.exists(db)
    wiped = deploy(path, kubeconfig, playbook="teardown", extra=wipe)
    assert f"{names['master']}: deleted {db}, {seaweed}" in wiped[f"{names['master']}: Summary"]["msg"]
    assert not os.path.exists(db) and not os.path.exists(seaweed)
