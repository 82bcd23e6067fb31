"""strata.ops.cluster_health against the real control plane: a crashlooping pod, wrong PV
paths, read-only behaviour (resourceVersions unchanged), and clear errors for bad input."""

import base64
import datetime
import os

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from ansible_collections.strata.ops.plugins.module_utils import k8s

from .conftest import adhoc_result, assert_clean_failure, run_module, skip_or_fail
from .k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .k8s_fixtures import CACHE, kubeconfig_variant

pytestmark = pytest.mark.needs("k8s")

PKI = os.path.join(CACHE, "controlplane", "kwok-workdir", "clusters", "strata-lab", "pki")
LAB_NODES = ["strata-lab-1", "strata-lab-2"]


def health(kubeconfig, **args):
    return run_module("cluster_health", dict(args, kubeconfig=kubeconfig))


def make_pod(client, ns, name, node="strata-lab-1"):
    client.create(
        "Pod",
        {
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "containers": [{"name": "worker", "image": "registry.invalid/worker:1"}],
                "terminationGracePeriodSeconds": 1,
            },
        },
        ns,
    )
    return client.watch_until("Pod", k8s.named_ready([name], k8s.pod_is_ready), ns, timeout=60)["items"][0]


def crashloop(client, ns, name, restarts=5):
    """Report through the pods/status subresource what a kubelet reports for a container in
    CrashLoopBackOff. kwok is this cluster's kubelet: its pod-ready stage only acts on Pending
    pods, so the status stays as reported (as it would until the real kubelet's next sync)."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    client.patch(
        "Pod",
        name,
        {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "ContainersNotReady",
                        "lastTransitionTime": now,
                    },
                    {
                        "type": "ContainersReady",
                        "status": "False",
                        "reason": "ContainersNotReady",
                        "lastTransitionTime": now,
                    },
                ],
                "containerStatuses": [
                    {
                        "name": "worker",
                        "image": "registry.invalid/worker:1",
                        "imageID": "",
                        "ready": False,
                        "started": False,
                        "restartCount": restarts,
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}},
                        "lastState": {
                            "terminated": {
                                "exitCode": 1,
                                "reason": "Error",
                                "startedAt": now,
                                "finishedAt": now,
                            }
                        },
                    }
                ],
            }
        },
        ns,
        patch_type="strategic",
        subresource="status",
    )


def test_healthy_namespace_and_node_report(lab_cluster, k8s_client, k8s_namespace):
    make_pod(k8s_client, k8s_namespace, "fine")
    result = health(
        lab_cluster["kubeconfig"], namespaces=[k8s_namespace], nodes=["strata-lab-1", "strata-lab-2"]
    )
    assert result.get("failed") is not True, result
    assert result["healthy"], result["problems"]
    assert result["changed"] is False
    assert result["pods"] == {"Running": 1}
    assert result["summary"].startswith("healthy: 2 nodes, 1 pods")
    lab2 = next(n for n in result["nodes"] if n["name"] == "strata-lab-2")
    assert lab2["taints"] == [{"key": "experiment", "value": "dedicated", "effect": "NoSchedule"}]


def test_a_workload_scaled_to_0_is_reported_stopped_not_healthy(lab_cluster, k8s_client, k8s_namespace):
    deployment = {
        "metadata": {"name": "validator", "namespace": k8s_namespace},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "validator"}},
            "template": {
                "metadata": {"labels": {"app": "validator"}},
                "spec": {"containers": [{"name": "c", "image": "strata-ops-host:latest"}]},
            },
        },
    }
    k8s_client.create("Deployment", deployment, namespace=k8s_namespace)
    k8s_client.watch_until(
        "Deployment",
        lambda items: bool(items) and items[0].get("status", {}).get("observedGeneration", 0) >= 1,
        namespace=k8s_namespace,
        field_selector="metadata.name=validator",
        timeout=60,
    )
    result = health(lab_cluster["kubeconfig"], namespaces=[k8s_namespace], nodes=LAB_NODES)
    assert result.get("failed") is not True, result
    assert result["summary"].startswith(
        f"stopped 0/0: {k8s_namespace}/validator; nothing else wrong: 2 nodes"
    )
    assert result["stopped"] == [f"{k8s_namespace}/validator"]
    [workload] = result["workloads"]
    assert workload["state"] == "stopped" and workload["replicas"] == 0


def test_reports_a_crashlooping_pod(lab_cluster, k8s_client, k8s_namespace):
    make_pod(k8s_client, k8s_namespace, "worker")
    crashloop(k8s_client, k8s_namespace, "worker")
    # Only the lab's nodes: other test files (parallel workers) cordon and taint nodes of their own.
    result = health(lab_cluster["kubeconfig"], namespaces=[k8s_namespace], nodes=LAB_NODES)
    assert result["healthy"] is False
    [found] = [p for p in result["problems"] if p["kind"] == "Pod"]
    assert found["name"] == "worker"
    assert found["namespace"] == k8s_namespace
    assert "CrashLoopBackOff" in found["reason"]
    assert "restarted 5 times" in found["reason"]
    assert "CrashLoopBackOff" in result["summary"]

    failed = health(
        lab_cluster["kubeconfig"], namespaces=[k8s_namespace], nodes=LAB_NODES, fail_on_problems=True
    )
    assert failed["failed"] is True
    assert "CrashLoopBackOff" in failed["msg"]
    assert failed["problems"] == result["problems"]


def test_a_pod_marked_not_ready_while_its_node_was_away_is_ready_again(
    lab_cluster, k8s_client, k8s_namespace
):
    """What the node lifecycle controller writes to the pods of a node whose lease expired
    (MarkPodsNotReady: Ready False, nothing else): once the node is back, its kubelet - kwok's
    pod-ready-again stage here - reports the pod Ready again. Without it a workload left on the
    lab across a control plane restart stayed not Ready for good, and every later check of the
    lab failed on it."""
    make_pod(k8s_client, k8s_namespace, "worker")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    marked = k8s_client.patch(
        "Pod",
        "worker",
        {"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}]}},
        k8s_namespace,
        patch_type="strategic",
        subresource="status",
    )
    assert not k8s.pod_is_ready(marked)
    ready = k8s_client.watch_until(
        "Pod", k8s.named_ready(["worker"], k8s.pod_is_ready), k8s_namespace, timeout=60
    )
    [pod] = ready["items"]
    assert pod["status"]["containerStatuses"][0]["state"]["running"]
    result = health(lab_cluster["kubeconfig"], namespaces=[k8s_namespace], nodes=LAB_NODES)
    assert result["healthy"], result["problems"]


@pytest.fixture
def wrong_pvs(k8s_client, k8s_namespace):
    suffix = k8s_namespace[-6:]
    pvs = {
        f"it-ledger-{suffix}": "/mnt/ledger",  # expected /mnt/solana/ledger
        f"it-host-{suffix}": "/srv/kind/solana/log",  # host path used inside the node
        f"it-good-{suffix}": "/mnt/solana/snapshots",
    }
    for name, path in pvs.items():
        k8s_client.create(
            "PersistentVolume",
            {
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "hostPath": {"path": path},
                    "claimRef": {"namespace": k8s_namespace, "name": name},
                },
            },
        )
    yield pvs
    for name in pvs:
        k8s_client.delete("PersistentVolume", name)


def test_reports_wrong_pv_paths(lab_cluster, k8s_namespace, wrong_pvs):
    ledger, host, good = list(wrong_pvs)
    result = health(
        lab_cluster["kubeconfig"],
        namespaces=[k8s_namespace],
        host_path_root="/srv/kind",
        kind_mount_root="/mnt",
        expected_pvs={
            ledger: "/srv/kind/solana/ledger",
            good: "/srv/kind/solana/snapshots",
            "it-absent": "/srv/kind/x",
        },
    )
    assert result["healthy"] is False
    by_name = {p["name"]: p["reason"] for p in result["problems"] if p["kind"] == "PersistentVolume"}
    assert set(by_name) == {ledger, host, "it-absent"}
    assert "hostPath /mnt/ledger should be /mnt/solana/ledger" in by_name[ledger]
    assert "inside the kind node it is /mnt/solana/log" in by_name[host]
    assert "does not exist" in by_name["it-absent"]
    assert {pv["name"] for pv in result["persistent_volumes"]} == set(wrong_pvs)


def versions(client, ns, pvs):
    """resourceVersion of the objects of this test that the health check reads, and of the lab's
    nodes (other test files run in parallel workers and change their own objects meanwhile).
    Nodes are compared by what is theirs to change (labels, taints, unschedulable): kwok renews
    their status (heartbeat) on its own, so their resourceVersion moves without anyone writing."""
    seen = {("Namespace", ns): client.get("Namespace", ns)["metadata"]["resourceVersion"]}
    for name in pvs:
        seen[("PersistentVolume", name)] = client.get("PersistentVolume", name)["metadata"]["resourceVersion"]
    for kind in ("Pod", "Deployment", "StatefulSet", "ReplicaSet"):
        for obj in client.list(kind, ns)[0]:
            seen[(kind, obj["metadata"]["name"])] = obj["metadata"]["resourceVersion"]
    for name in LAB_NODES:
        obj = client.get_node(name)
        seen[("Node", name)] = (
            obj["metadata"].get("generation"),
            sorted(obj["metadata"].get("labels", {}).items()),
            str(obj["spec"].get("taints")),
            obj["spec"].get("unschedulable"),
        )
    return seen


def test_health_check_leaves_every_resource_version(lab_cluster, k8s_client, k8s_namespace, wrong_pvs):
    make_pod(k8s_client, k8s_namespace, "worker")
    crashloop(k8s_client, k8s_namespace, "worker")
    before = versions(k8s_client, k8s_namespace, wrong_pvs)
    for args in (
        {"namespaces": [k8s_namespace], "host_path_root": "/srv/kind", "kind_mount_root": "/mnt"},
        {"host_path_root": "/srv/kind", "kind_mount_root": "/mnt", "wait_timeout": 5},
    ):
        result = health(lab_cluster["kubeconfig"], **args)
        assert result["changed"] is False
        assert result["healthy"] is False
    assert versions(k8s_client, k8s_namespace, wrong_pvs) == before


# ---------------------------------------------------------------- bad input: clear errors


def test_unreachable_api_server(controlplane, tmp_path):
    path = kubeconfig_variant(controlplane, tmp_path, server="https://127.0.0.1:1")
    result = health(path, api_timeout=3)
    assert result["failed"] is True
    assert result["error"] == "unreachable"
    assert "https://127.0.0.1:1" in result["msg"]
    assert "connection refused" in result["msg"]


def test_missing_kubeconfig(tmp_path):
    result = health(str(tmp_path / "absent.kubeconfig"))
    assert result["failed"] is True
    assert result["error"] == "kubeconfig"
    assert "does not exist" in result["msg"]


def expired_client_cert():
    with open(os.path.join(PKI, "ca.crt"), "rb") as handle:
        ca = x509.load_pem_x509_certificate(handle.read())
    with open(os.path.join(PKI, "ca.key"), "rb") as handle:
        ca_key = serialization.load_pem_private_key(handle.read(), password=None)
    with open(os.path.join(PKI, "admin.key"), "rb") as handle:
        key = serialization.load_pem_private_key(handle.read(), password=None)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
            x509.NameAttribute(NameOID.COMMON_NAME, "admin"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2024, 1, 1))
        .not_valid_after(datetime.datetime(2025, 1, 1))
        .sign(ca_key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return {
        "client-certificate-data": base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode(),
        "client-key-data": base64.b64encode(pem_key).decode(),
    }


def test_expired_kubeconfig(controlplane, tmp_path):
    # kwokctl writes the cluster's CA there: part of the test bed, so CI fails without it
    if not os.path.exists(os.path.join(PKI, "ca.key")):
        skip_or_fail(
            f"the control plane's CA key is not at {PKI} (tests/testbed/controlplane/start makes it)"
        )
    path = kubeconfig_variant(controlplane, tmp_path, user=expired_client_cert())
    result = health(path)
    assert result["failed"] is True
    assert result["error"] == "auth"
    assert "expired at 2025-01-01T00:00:00Z" in result["msg"]


def test_rejected_credentials(controlplane, tmp_path):
    path = kubeconfig_variant(controlplane, tmp_path, user={"token": "not-a-valid-token"})
    result = health(path)
    assert result["failed"] is True
    assert result["error"] == "auth"
    assert "401 Unauthorized" in result["msg"]


def test_wrong_context(controlplane):
    result = health(controlplane, context="production")
    assert result["failed"] is True
    assert result["error"] == "context"
    assert "'production' is not in kubeconfig" in result["msg"]
    assert result["contexts"] == ["kwok-strata-lab"]


def test_unknown_node(lab_cluster):
    result = health(lab_cluster["kubeconfig"], nodes=["strata-lab-1", "strata-lab-9"])
    assert result["failed"] is True
    assert result["error"] == "not_found"
    assert "node 'strata-lab-9' does not exist" in result["msg"]
    assert "strata-lab-1" in result["existing"]


def test_unknown_namespace_fails_with_the_namespaces(lab_cluster):
    """It said "healthy" with 0 pods before: a namespace that does not exist is a typo."""
    result = health(lab_cluster["kubeconfig"], namespaces=["kube-system", "no-such-namespace"])
    assert result["failed"] is True, result
    assert result["error"] == "not_found"
    assert "namespace 'no-such-namespace' does not exist in the cluster" in result["msg"]
    assert "kube-system" in result["existing"] and "default" in result["existing"]
    allowed = health(
        lab_cluster["kubeconfig"],
        namespaces=["no-such-namespace"],
        allow_missing_namespaces=True,
        nodes=LAB_NODES,
    )
    assert allowed.get("failed") is not True, allowed
    assert allowed["missing_namespaces"] == ["no-such-namespace"]
    assert allowed["pods"] == {} and allowed["workloads"] == []


def bad_ca_kubeconfig(path, tmp_path):
    with open(path) as handle:
        doc = yaml.safe_load(handle)
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = "this is not base64!"
    out = tmp_path / "bad-ca.kubeconfig"
    out.write_text(yaml.safe_dump(doc))
    out.chmod(0o600)
    return str(out), doc["clusters"][0]["name"]


@pytest.mark.parametrize(
    ("args", "error", "fragment"),
    [
        ({"api_timeout": -1}, "argument", "api_timeout must be 1 second or more, got -1"),
        ({"api_timeout": 0}, "argument", "api_timeout must be 1 second or more, got 0"),
        (
            {"expected_nodes": {"strata-lab-1": "worker"}},
            "argument",
            "expected_nodes['strata-lab-1'] must be a dict",
        ),
        (
            {"expected_nodes": {"strata-lab-1": {"taints": [{"key": "x"}]}}},
            "argument",
            "key and effect required",
        ),
    ],
)
def test_bad_input_fails_cleanly_through_ansible(controlplane, args, error, fragment):
    """ansible-core 2.19 shows a crashed module only as "Module failed: <exception>"."""
    result = adhoc_result("cluster_health", dict(args, kubeconfig=controlplane))
    assert_clean_failure(result)
    assert "Module failed" not in result["msg"]
    assert result["error"] == error
    assert fragment in result["msg"]


def test_ca_data_that_is_not_base64_fails_cleanly(controlplane, tmp_path):
    path, cluster = bad_ca_kubeconfig(controlplane, tmp_path)
    result = adhoc_result("cluster_health", {"kubeconfig": path})
    assert_clean_failure(result)
    assert "Module failed" not in result["msg"]
    assert result["error"] == "kubeconfig"
    assert f"not base64: certificate-authority-data of cluster {cluster!r}" in result["msg"]
    assert "this is not base64" not in result["msg"]  # the kubeconfig's content is never echoed
