"""API faults (issue 20 item 6): the lab's REAL kube-apiserver (a process kwokctl started, see
tests/testbed/controlplane/start) is stopped in the middle of a module's wait and started again
with the command line it ran with. Each module either rides the outage out within its timeout
(asserted by its result and the cluster's state, never by timing) or fails with the state it
left, and a rerun finishes.

Stopping the API server affects every user of the lab: each test holds the lab lock
(tests/testbed/testbed_paths.py lab_lock) from before the stop until the server answers again.
What the module waits for is held by the test, not by a clock: a pod finalizer keeps a stopped
pod Terminating, and a nodeSelector on a node that does not exist yet keeps a started pod
Pending, until the test lets them go after the server is back.

Expired client certificates (test_cluster_health.py test_expired_kubeconfig) and GitLab 429s
(test_runner_isolation.py) are tested there.
"""

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid

import pytest
from lab_k8s import create_kwok_node, deployment

from ansible_collections.strata.ops.plugins.module_utils import k8s
from tests.integration.conftest import (
    CACHE,
    lab_lock,
    module_result,
    run_module,
    skip_or_fail,
    start_module,
)
from tests.integration.k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import

# The API server goes away for every user of the lab: `make integration` runs this file alone,
# after the parallel suite (marker exclusive).
pytestmark = [pytest.mark.needs("k8s"), pytest.mark.exclusive]

CLUSTER_DIR = os.path.join(CACHE, "controlplane", "kwok-workdir", "clusters", "strata-lab")
PID_FILE = os.path.join(CLUSTER_DIR, "pids", "kube-apiserver.pid")
LOG_FILE = os.path.join(CLUSTER_DIR, "logs", "kube-apiserver.log")
FINALIZER = "strata.io/fault-test-hold"
TAINT = {"key": "strata.io/test", "value": "api-faults", "effect": "NoSchedule"}
OUTAGE_SECONDS = 10  # the "stop the apiserver for 10 s"
STARTED = []  # the restarted servers' Popen objects (kept: no "still running" warning at exit)


class ApiServer:
    """The lab's kube-apiserver process: stop() it (SIGKILL) and start()
    it again from the argv, environment and directory it ran with, under kwokctl's pid file."""

    def __init__(self, client, kubeconfig):
        self.client = client
        self.kubeconfig = kubeconfig
        self.argv = self.env = self.cwd = None
        self.stopped = False

    def pid(self):
        with open(PID_FILE) as handle:
            return int(handle.read().strip())

    def stop(self):
        pid = self.pid()
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            self.argv = [a.decode() for a in handle.read().split(b"\0") if a]
        with open(f"/proc/{pid}/environ", "rb") as handle:
            self.env = dict(e.decode().split("=", 1) for e in handle.read().split(b"\0") if b"=" in e)
        self.cwd = os.readlink(f"/proc/{pid}/cwd")
        # SIGKILL: gone at once, as with a crash or a lost host. SIGTERM's graceful shutdown
        # keeps serving open watches for up to 30 s or more: the outage would start at its whim.
        os.kill(pid, signal.SIGKILL)
        self.stopped = True
        while os.path.exists(f"/proc/{pid}") and not _is_zombie(pid):
            time.sleep(0.05)
        with pytest.raises(k8s.K8sUnreachable):
            self.client.version()

    def start(self):
        if not self.stopped:
            return
        with open(LOG_FILE, "ab") as log:
            proc = subprocess.Popen(  # pylint: disable=consider-using-with  # runs on after the test
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        STARTED.append(proc)
        with open(PID_FILE + ".new", "w") as handle:
            handle.write(str(proc.pid))
        os.replace(PID_FILE + ".new", PID_FILE)
        self.stopped = False
        for _attempt in range(1200):  # readyz: etcd reconnected, caches synced
            with contextlib.suppress(k8s.K8sError):
                self.client.request("GET", "/readyz")
                self.client.list("Namespace")  # also drops the pool's connections to the old process
                return
            time.sleep(0.1)
        pytest.fail(f"kube-apiserver did not answer within 120 s of its restart: see {LOG_FILE}")


def _is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture
def apiserver(k8s_client, controlplane):
    """The lab lock held for the whole test, and the API server started again whatever happens."""
    if os.geteuid() != 0 or not os.path.exists(PID_FILE):
        skip_or_fail(f"the API server fault tests need root and kwokctl's pid file {PID_FILE}")
    server = ApiServer(k8s_client, controlplane)
    with lab_lock():
        try:
            yield server
        finally:
            server.start()


@pytest.fixture
def fault_node(k8s_client):
    name = f"strata-fault-{uuid.uuid4().hex[:6]}"
    create_kwok_node(k8s_client, name, labels={"strata.io/test": "api-faults"}, taints=[TAINT])
    yield name
    k8s_client.delete("Node", name)


def pod_spec(node):
    return {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "tolerations": [{"key": TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "main", "image": "registry.invalid/validator:1"}],
    }


def held_deployment(client, ns, node, replicas=1):
    """A Deployment "validator" whose pods carry FINALIZER (a deleted one stays until released)."""
    body = deployment("validator", replicas, pod_spec(node))
    body["spec"]["template"]["metadata"]["finalizers"] = [FINALIZER]
    client.create("Deployment", body, ns)
    client.watch_until(
        "Pod",
        lambda items: len([p for p in items if k8s.pod_is_ready(p)]) == replicas,
        ns,
        label_selector="app=validator",
        timeout=60,
    )


def pods(client, ns):
    return client.list("Pod", ns, label_selector="app=validator")[0]


def release(client, ns):
    """Remove FINALIZER from the pods: the deleted ones go."""
    for pod in pods(client, ns):
        client.patch(
            "Pod", pod["metadata"]["name"], {"metadata": {"finalizers": None}}, ns, patch_type="merge"
        )


def result_of(proc):
    return module_result(proc, timeout=300)


def wait_for(client, ns, kind, predicate, **selectors):
    client.watch_until(kind, predicate, ns, timeout=60, **selectors)


def scaled_to_zero_and_terminating(client, ns):
    wait_for(
        client,
        ns,
        "Pod",
        lambda items: bool(items) and all(p["metadata"].get("deletionTimestamp") for p in items),
        label_selector="app=validator",
    )
    assert client.get("Deployment", "validator", ns)["spec"]["replicas"] == 0


def test_stop_rides_out_an_api_server_restart(k8s_namespace, fault_node, tmp_path, apiserver):
    controlplane, k8s_client = apiserver.kubeconfig, apiserver.client
    held_deployment(k8s_client, k8s_namespace, fault_node)
    args = {"kubeconfig": controlplane, "state": "stopped", "name": "validator", "namespace": k8s_namespace}
    proc = start_module("safe_shutdown", dict(args, timeout=240))
    try:
        scaled_to_zero_and_terminating(k8s_client, k8s_namespace)
        assert proc.poll() is None  # still waiting for the held pod when the server goes
        apiserver.stop()
        time.sleep(OUTAGE_SECONDS)  # the fault's length, not an assertion
        assert proc.poll() is None
        apiserver.start()
        release(k8s_client, k8s_namespace)
        result = result_of(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        apiserver.start()
        release(k8s_client, k8s_namespace)  # a failed test leaves no pod to hold its namespace
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert result["replicas_before"] == 1
    assert "stopped: 1 pod(s) gone, scaled from 1 to 0" in result["msg"]
    assert pods(k8s_client, k8s_namespace) == []
    assert k8s_client.get("Deployment", "validator", k8s_namespace)["spec"]["replicas"] == 0


def test_start_wait_rides_out_an_api_server_restart(k8s_namespace, tmp_path, apiserver):
    """Layer 5's "Scale up and wait until Ready" (safe_shutdown state=running): its pod waits
    for a node that the test registers only after the outage."""
    controlplane, k8s_client = apiserver.kubeconfig, apiserver.client
    node = f"strata-fault-{uuid.uuid4().hex[:6]}"
    k8s_client.create("Deployment", deployment("validator", 0, pod_spec(node)), k8s_namespace)
    args = {"kubeconfig": controlplane, "state": "running", "name": "validator", "namespace": k8s_namespace}
    proc = start_module("safe_shutdown", dict(args, replicas=1, timeout=240))
    try:
        wait_for(k8s_client, k8s_namespace, "Pod", bool, label_selector="app=validator")
        assert proc.poll() is None  # waiting: the pod is Pending (no such node yet)
        apiserver.stop()
        time.sleep(OUTAGE_SECONDS)
        assert proc.poll() is None
        apiserver.start()
        create_kwok_node(k8s_client, node, labels={"strata.io/test": "api-faults"}, taints=[TAINT])
        result = result_of(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        k8s_client.delete("Node", node)
    assert not result.get("failed"), result
    assert result["msg"] == f"Deployment {k8s_namespace}/validator running: 1 Ready pod(s), scaled from 0"
    ready = [p for p in pods(k8s_client, k8s_namespace) if k8s.pod_is_ready(p)]
    assert [p["spec"]["nodeName"] for p in ready] == [node]


def test_cluster_health_with_the_api_server_down_names_it(apiserver):
    controlplane, k8s_client = apiserver.kubeconfig, apiserver.client
    server = k8s_client.host
    apiserver.stop()
    result = run_module("cluster_health", {"kubeconfig": controlplane, "api_timeout": 5})
    apiserver.start()
    assert result["failed"] is True
    assert result["error"] == "unreachable"
    assert f"Kubernetes API server {server}" in result["msg"]
    assert "connection refused" in result["msg"]
    assert "Traceback" not in json.dumps(result)
    assert "module_stderr" not in result
    again = run_module("cluster_health", {"kubeconfig": controlplane})
    assert not again.get("failed"), again


def test_outage_longer_than_the_timeout_fails_with_the_state_left_and_a_rerun_finishes(
    k8s_namespace, fault_node, tmp_path, apiserver
):
    controlplane, k8s_client = apiserver.kubeconfig, apiserver.client
    held_deployment(k8s_client, k8s_namespace, fault_node)
    args = {"kubeconfig": controlplane, "state": "stopped", "name": "validator", "namespace": k8s_namespace}
    proc = start_module("safe_shutdown", dict(args, timeout=20))
    try:
        scaled_to_zero_and_terminating(k8s_client, k8s_namespace)
        [held] = [p["metadata"]["name"] for p in pods(k8s_client, k8s_namespace)]
        apiserver.stop()
        result = result_of(proc)  # the module gives up at its deadline, the server still down
    finally:
        if proc.poll() is None:
            proc.kill()
        apiserver.start()
    assert result["failed"] is True
    assert result["error"] == "unreachable", result
    assert "became unreachable while waiting for the pods" in result["msg"]
    assert "It had been scaled to 0" in result["msg"]
    assert "Do NOT restart the node" in result["msg"]
    assert result["replicas_before"] == 1
    assert [p["name"] for p in result["still_present"]] == [held]
    # what it left: scaled to 0, the held pod still there
    assert k8s_client.get("Deployment", "validator", k8s_namespace)["spec"]["replicas"] == 0
    assert [p["metadata"]["name"] for p in pods(k8s_client, k8s_namespace)] == [held]
    release(k8s_client, k8s_namespace)  # what held the pods is fixed: the rerun finishes
    rerun = run_module("safe_shutdown", dict(args, timeout=60))
    assert not rerun.get("failed"), rerun
    assert rerun["changed"] is False
    assert pods(k8s_client, k8s_namespace) == []
