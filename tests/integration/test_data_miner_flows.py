"""playbooks/data_miner/{status,scale,provision}.yml with the operators' file as the inventory.

status and scale run against the lab control plane with kwok nodes made from a config (test_data_miner's:
a GPU master, two workers, a storage-only node; plus a DaemonSet worker): deploy, status healthy and
read-only, scale download up, status names the drift from the config, refusals change nothing,
--check changes nothing, a deploy sets the config's replicas again.

provision's host_dirs part runs on this machine (connection local) with a one-node config whose
paths lie under tmp_path; k3s itself cannot run here. Nodes and namespaces carry a random suffix.
"""

import os
import subprocess
import time
import uuid

import pytest
import yaml

from .conftest import skip_or_fail
from .k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .test_data_miner import deploy, lab_pipeline

NOT_FOUND = r"does not exist|not found"


def wait_ready(client, doc, timeout=120):
    """Until every workload the config renders is there with all its replicas ready (kwok starts
    pods at once; the controllers and a StatefulSet's one-by-one start take a moment)."""
    namespaces = (doc["cluster"]["namespace"], doc["seaweedfs"]["namespace"])
    want = (
        len(doc["workers"]) + len(doc["infrastructure"]) + 3 + len(doc["cluster"]["nodes"])
    )  # + master, filer, mount
    deadline = time.monotonic() + timeout
    while True:
        waiting = []
        for ns in namespaces:
            for kind in ("Deployment", "StatefulSet", "DaemonSet"):
                for obj in client.list(kind, ns)[0]:
                    status = obj.get("status") or {}
                    if kind == "DaemonSet":
                        ready = status.get("desiredNumberScheduled") == status.get("numberReady", 0) > 0
                    else:
                        ready = obj["spec"]["replicas"] == status.get("readyReplicas", 0)
                    waiting += [] if ready else [obj["metadata"]["name"]]
        found = sum(
            len(client.list(kind, ns)[0])
            for ns in namespaces
            for kind in ("Deployment", "StatefulSet", "DaemonSet")
        )
        if not waiting and found == want:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready within {timeout} s: {waiting} ({found} of {want} workloads)")
        time.sleep(0.5)


def changed_tasks(results):
    return [name for name, result in results.items() if result.get("changed")]


@pytest.fixture
def pipeline(controlplane, k8s_client, tmp_path):
    """test_data_miner's config with a DaemonSet worker, kwok nodes carrying the labels the config
    requires (strata.io/gpu on the GPU master)."""
    sweep = {"sweep": {"kind": "DaemonSet", "schedule_on": "master"}}
    with lab_pipeline(controlplane, k8s_client, tmp_path, "data-miner-flows", sweep, gpu_label=True) as made:
        yield made


def test_status_then_scale_drift_refusals_and_deploy_sets_it_back(pipeline, k8s_client):
    _names, doc, path, kubeconfig = pipeline
    ns = doc["cluster"]["namespace"]
    deploy(path, kubeconfig)
    wait_ready(k8s_client, doc)

    for check in (False, True):
        read = deploy(path, kubeconfig, playbook="status", check=check)
        assert changed_tasks(read) == []  # changed=0, --check or not
        status = read["Compare the cluster with the config"]["ansible_facts"]["data_miner_status"]
        assert status["verdict"] == "healthy", status["problems"]
        assert status["summary"].startswith("healthy: 4 nodes, 14 workloads, ")
        assert read["Report"]["msg"] == status["report"]

    scaled = deploy(path, kubeconfig, playbook="scale", extra={"worker": "download", "replicas": 5})
    assert scaled["Summary"]["msg"] == (
        f"StatefulSet {ns}/download: scaled from 3 to 5 (5 ready); "
        "workers.download.replicas in the config is 3"
    )
    assert scaled["Warn that the config still says otherwise"]["msg"] == (
        f"WARNING: {path} still says workers.download.replicas: 3, and the next "
        "playbooks/data_miner/deploy.yml sets 3 again. To keep 5, edit that line: "
        "workers.download.replicas: 5"
    )
    live = k8s_client.get("StatefulSet", "download", ns)
    assert (live["spec"]["replicas"], live["status"]["readyReplicas"]) == (5, 5)

    drift = (
        f"StatefulSet {ns}/download: 5 replicas, but workers.download.replicas in cluster_config.yaml says 3 "
        "(kubectl scale or playbooks/data_miner/scale.yml?); the next deploy sets 3 again"
    )
    read = deploy(path, kubeconfig, playbook="status")
    status = read["Compare the cluster with the config"]["ansible_facts"]["data_miner_status"]
    assert (status["verdict"], status["problems"]) == ("degraded", [drift])
    row = next(w for w in status["workloads"] if w["name"] == "download")
    assert (row["config"], row["spec"], row["ready"], row["state"]) == (3, 5, 5, "drift")
    failed = deploy(
        path,
        kubeconfig,
        playbook="status",
        extra={"data_miner_status_fail_on_problems": True},
        expect_failure=True,
    )
    assert failed["msg"] == f"The data-miner pipeline is degraded (1 problem(s)): {drift}"

    workers = "download, extract, filter, monitor, sweep"
    for extra, message in (
        (
            {"worker": "downlaod", "replicas": 2},
            f"worker=downlaod is not a worker of {path}; the workers are {workers}.",
        ),
        ({"worker": "download", "replicas": "-1"}, 'replicas must be a whole number, 0 or more; got "-1".'),
        ({"worker": "download", "replicas": "2.5"}, 'replicas must be a whole number, 0 or more; got "2.5".'),
        ({"worker": "sweep", "replicas": 2}, "workers.sweep is a DaemonSet: it runs one pod on every node"),
    ):
        refused = deploy(path, kubeconfig, playbook="scale", extra=extra, expect_failure=True)
        assert message in refused["msg"] and "Nothing was changed." in refused["msg"], refused["msg"]
    planned = deploy(
        path, kubeconfig, playbook="scale", extra={"worker": "download", "replicas": 2}, check=True
    )
    assert planned["Summary"]["msg"].startswith(
        f"StatefulSet {ns}/download: Check mode: would scale from 5 to 2;"
    )
    assert k8s_client.get("StatefulSet", "download", ns)["spec"]["replicas"] == 5  # neither changed it

    deploy(path, kubeconfig)
    assert k8s_client.get("StatefulSet", "download", ns)["spec"]["replicas"] == 3
    read = deploy(path, kubeconfig, playbook="status")
    status = read["Compare the cluster with the config"]["ansible_facts"]["data_miner_status"]
    # the two pods going away terminate (their grace period): listed, not problems
    assert status["verdict"] == "healthy", status["problems"]


def test_status_names_what_is_missing_before_any_deploy(pipeline):
    _names, doc, path, kubeconfig = pipeline
    read = deploy(path, kubeconfig, playbook="status", check=True)
    status = read["Compare the cluster with the config"]["ansible_facts"]["data_miner_status"]
    assert status["verdict"] == "degraded"
    assert {w["state"] for w in status["workloads"]} == {"missing"}
    ns = doc["cluster"]["namespace"]
    assert f"StatefulSet {ns}/download: missing; run playbooks/data_miner/deploy.yml" in status["problems"]
    assert [n["state"] for n in status["nodes"]] == ["Ready"] * 4


@pytest.fixture
def one_node(tmp_path, monkeypatch):
    """A one-node config whose paths lie under tmp_path, for provision.yml --tags host_dirs on this
    machine; owners other than root need root."""
    if os.geteuid() != 0:
        skip_or_fail("host_dirs sets owners (999, 472, 10001): it needs root")
    suffix = uuid.uuid4().hex[:6]
    root = tmp_path / "node"
    doc = {
        "cluster": {
            "namespace": f"dm-{suffix}",
            "nodes": {f"dm{suffix}-solo": {"ip": "127.0.0.1", "role": "master"}},
        },
        "storage": {"seaweedfs_mount": f"{root}/swshared", "db_path": f"{root}/db"},
        "image": {"name": "data-miner"},
        "seaweedfs": {"namespace": f"dm-{suffix}-sw", "data_dir": f"{root}/seaweed"},
        "workers": {"download": {"kind": "StatefulSet", "replicas": 1}},
        "infrastructure": {
            "postgres": {"kind": "StatefulSet", "image": "postgres:16"},
            "grafana": {"image": "grafana/grafana:10.0.0"},
            "loki": {"kind": "StatefulSet", "image": "grafana/loki:2.9.0"},
            "adminer": {"image": "adminer:latest"},  # keeps no data: no directory
        },
    }
    path = tmp_path / "cluster_config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("ANSIBLE_RUN_TAGS", "host_dirs")  # provision.yml's host_dirs part only
    extra = {"data_miner_install_packages": False, "data_miner_fuse_conf": str(root / "fuse.conf")}
    return f"dm{suffix}-solo", root, path, extra


def host_dirs(node, path, extra, check=False):
    results = deploy(path, "unused", playbook="provision", extra=extra, check=check)
    return results, results[f"{node}: Summary"]["msg"]


def owner_mode(path):
    st = os.stat(path)
    return st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)


def test_host_dirs_makes_the_pods_directories_with_the_images_owners_then_changes_nothing(one_node):
    node, root, path, extra = one_node
    wanted = {
        "db/postgres": (999, 999, "0o700"),
        "db/grafana": (472, 0, "0o750"),
        "db/loki": (10001, 10001, "0o750"),
        "db": (0, 0, "0o755"),
        "seaweed": (0, 0, "0o755"),
        "seaweed/master": (0, 0, "0o755"),
        "seaweed/filer": (0, 0, "0o755"),
        "seaweed/volume": (0, 0, "0o755"),
        "seaweed/mount-cache": (0, 0, "0o755"),
        "swshared": (0, 0, "0o755"),
    }
    _planned, summary = host_dirs(node, path, extra, check=True)
    assert summary.startswith(f"{node}: 10 directories, would change ")
    assert not root.exists()  # --check made nothing

    _made, summary = host_dirs(node, path, extra)
    assert summary.startswith(f"{node}: 10 directories, changed ")
    assert {str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir()} == set(wanted)  # no adminer
    assert {name: owner_mode(root / name) for name in wanted} == wanted
    assert (root / "fuse.conf").read_text() == "user_allow_other\n"

    again, summary = host_dirs(node, path, extra)
    assert changed_tasks(again) == [], summary
    assert summary == f"{node}: 10 directories, changed none; {root}/fuse.conf has user_allow_other"


def test_host_dirs_leaves_a_live_mount_on_the_mount_point_alone(one_node):
    node, root, path, extra = one_node
    host_dirs(node, path, extra)
    mount = root / "swshared"
    if subprocess.run(["mount", "-t", "tmpfs", "strata-test", str(mount)], check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (the stand-in for the SeaweedFS FUSE mount)")
    try:
        mount.chmod(0o700)  # the mounted filesystem's root, not the directory below it
        results, summary = host_dirs(node, path, extra)
        assert changed_tasks(results) == [], summary
        assert oct(mount.stat().st_mode & 0o777) == "0o700"
    finally:
        subprocess.run(["umount", str(mount)], check=True)
