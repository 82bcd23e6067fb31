"""strata.ops.safe_shutdown against the real control plane (kube-apiserver, controller-manager,
scheduler; kwok plays the kubelet and honours each pod's termination time) and a real Docker
container standing in for the kind node.

The node container runs a shell loop in the host image (it stops on SIGTERM, as a kind node's
systemd does on its stop signal); a kwok Node of the same name, tainted so that only these
tests' pods (which tolerate the taint) land on it, plays its kubelet. Pods "take N seconds to
terminate" through kwok's delay annotation (an application that exits N s after SIGTERM).

The graceful exit command runs against a REAL host process: a tiny server listening on a unix
socket in a temporary "ledger" directory, and an exit client that asks it to exit and waits
until the server process is gone (as `agave-validator exit` does with the admin socket).

Needs: root, dockerd, the image STRATA_SHUTDOWN_IMAGE (default strata-ops-host:latest; built by
tests/testbed/up), the control plane (tests/testbed/up controlplane). Missing pieces fail under
CI=true and skip otherwise. Everything is created in per-test namespaces and under
strata-shut-* names, and removed.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.parse
import uuid

import pytest
import yaml
from lab_k8s import create_kwok_node, deployment

from ansible_collections.strata.ops.plugins.module_utils import k8s
from ansible_collections.strata.ops.plugins.module_utils.k8s.objects import parse_time

from .conftest import (
    adhoc_result,
    assert_clean_failure,
    run_adhoc,
    run_module,
    skip_or_fail,
    start_module,
)
from .k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .k8s_fixtures import VALIDATOR_SERVER, agave_cli, kubeconfig_variant

pytestmark = pytest.mark.needs("k8s")

IMAGE = os.environ.get("STRATA_SHUTDOWN_IMAGE", "strata-ops-host:latest")
TAINT = {"key": "strata.io/test", "value": "safe-shutdown", "effect": "NoSchedule"}
DELAY_ANNOTATION = "pod-delete.stage.kwok.x-k8s.io/delay"

# The exit client: like `agave-validator --ledger DIR exit --force`, it connects to the admin
# socket, asks for exit and returns only when the server process is gone (EOF on the socket).
EXIT_CLIENT = textwrap.dedent(
    """\
    import os, socket, sys
    ledger = sys.argv[sys.argv.index("--ledger") + 1]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.path.join(ledger, "admin.rpc"))
    except OSError as exc:
        sys.exit("admin socket not found: %s" % exc)
    sock.sendall(b"exit\\n")
    while sock.recv(4096):
        pass
    print("validator exited")
    """
)


# --------------------------------------------------------------------------- helpers


def docker(*args, check=True):
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("docker {} failed: {}".format(" ".join(args), proc.stderr))
    return proc


def started_at(container):
    state = json.loads(docker("inspect", "-f", "{{json .State}}", container).stdout)
    return state["StartedAt"], state["Running"]


def docker_problem():
    if os.geteuid() != 0:
        return "the node container tests need root (docker socket)"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", check=False)
    except FileNotFoundError:
        return "the docker CLI is not installed (tests/testbed/up installs docker.io)"
    if info.returncode != 0:
        return "dockerd does not answer (tests/testbed/up starts it): " + info.stderr.strip()
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        return f"image {IMAGE} is missing (tests/testbed/up image builds it; or set STRATA_SHUTDOWN_IMAGE)"
    return None


def make_node(client, name):
    create_kwok_node(client, name, labels={"strata.io/test": "safe-shutdown"}, taints=[TAINT])


@pytest.fixture(scope="module")
def kind_node(k8s_client):
    """A running Docker container and a kwok Node of the same name (plus a second node without
    a container, "<name>-b"). Yields the name."""
    skip_or_fail(docker_problem())
    name = f"strata-shut-{uuid.uuid4().hex[:6]}"
    docker(
        "run", "-d", "--name", name, "--label", "strata.io/test=safe-shutdown", IMAGE,
        "sh", "-c", 'trap "exit 0" TERM; while :; do sleep 0.2; done',
    )  # fmt: skip
    try:
        make_node(k8s_client, name)
        make_node(k8s_client, name + "-b")
        yield name
    finally:
        k8s_client.delete("Node", name)
        k8s_client.delete("Node", name + "-b")
        docker("rm", "-f", name, check=False)


def make_deployment(client, ns, name, node, *, replicas=1, delay="1s", grace=30):
    """A Deployment pinned to ``node`` whose pods need ``delay`` to terminate (None: the whole
    grace period). Returns it once it is ready with its pods Ready."""
    pod_spec = {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "tolerations": [{"key": TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
        "terminationGracePeriodSeconds": grace,
        "containers": [{"name": "main", "image": "registry.invalid/validator:1"}],
    }
    annotations = {DELAY_ANNOTATION: delay} if delay else None
    client.create("Deployment", deployment(name, replicas, pod_spec, annotations), ns)
    wait_ready(client, ns, name, replicas)


def wait_ready(client, ns, name, replicas):
    client.watch_until(
        "Deployment",
        lambda items: bool(items) and k8s.workload_is_ready(items[0]),
        ns,
        field_selector="metadata.name=" + name,
        timeout=60,
    )
    client.watch_until(
        "Pod",
        lambda items: len([p for p in items if k8s.pod_is_ready(p)]) == replicas,
        ns,
        label_selector="app=" + name,
        timeout=60,
    )


def pods_of(client, ns, name):
    pods, _rv = client.list("Pod", ns, label_selector="app=" + name)
    return pods


def replicas_of(client, ns, name):
    return client.get("Deployment", name, ns)["spec"]["replicas"]


def force_delete_pods(client, ns, name):
    for pod in pods_of(client, ns, name):
        client.delete("Pod", pod["metadata"]["name"], ns, grace_period_seconds=0)


def bare_pod(client, ns, name, node, labels):
    client.create(
        "Pod",
        {
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "tolerations": [{"key": TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "main", "image": "registry.invalid/debug:1"}],
            },
        },
        ns,
    )
    client.watch_until("Pod", k8s.named_ready([name], k8s.pod_is_ready), ns, timeout=60)


def shut(kubeconfig, check_mode=False, diff=False, **args):
    return run_module("safe_shutdown", dict(args, kubeconfig=kubeconfig), check_mode=check_mode, diff=diff)


class TcpProxy:
    """A plain TCP relay to the API server (TLS passes through), closed on demand: the API
    server "goes away" for whoever talks through it, while the real one keeps running."""

    def __init__(self, host, port):
        self.target = (host, port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(32)
        self.port = self.listener.getsockname()[1]
        self.sockets = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _addr = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                dst.sendall(chunk)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self):
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def api_server(kubeconfig):
    with open(kubeconfig) as handle:
        doc = yaml.safe_load(handle)
    url = urllib.parse.urlparse(doc["clusters"][0]["cluster"]["server"])
    return url.hostname, url.port


def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


# --------------------------------------------------------------------------- stopped


def test_stopped_returns_only_after_the_last_pod_is_gone(controlplane, k8s_client, k8s_namespace, kind_node):
    make_deployment(k8s_client, k8s_namespace, "web", kind_node, replicas=2, delay="3s")
    before = sorted(p["metadata"]["name"] for p in pods_of(k8s_client, k8s_namespace, "web"))
    result = shut(controlplane, state="stopped", name="web", namespace=k8s_namespace, timeout=60)
    # right at return: no pod object is left, and the Deployment wants 0
    assert pods_of(k8s_client, k8s_namespace, "web") == []
    assert result.get("failed") is not True, result
    assert replicas_of(k8s_client, k8s_namespace, "web") == 0
    assert result["changed"] is True
    assert (result["replicas_before"], result["replicas_after"]) == (2, 0)
    assert result["diff"] == {"before": {"replicas": 2}, "after": {"replicas": 0}}
    assert sorted(p["name"] for p in result["pods"]) == before
    for pod in result["pods"]:
        assert pod["node"] == kind_node
        assert pod["deletion_timestamp"]
        assert pod["gone_at"]
        assert pod["termination_seconds"] >= 2.9, pod
    assert result["elapsed"] >= 3.0
    assert result["wait_seconds"] >= 2.9
    assert 0 <= result["last_pod_gone_to_return"] < 1.0
    assert "2 pod(s) gone, scaled from 2 to 0" in result["msg"]

    again = shut(controlplane, state="stopped", name="web", namespace=k8s_namespace)
    assert again["changed"] is False, again
    assert again["pods"] == []


def test_stopped_timeout_names_the_pod_and_touches_nothing_else(
    controlplane, k8s_client, k8s_namespace, kind_node
):
    make_deployment(k8s_client, k8s_namespace, "slow", kind_node, delay=None, grace=60)
    [pod] = pods_of(k8s_client, k8s_namespace, "slow")
    started = started_at(kind_node)
    try:
        result = shut(controlplane, state="stopped", name="slow", namespace=k8s_namespace, timeout=2)
        assert result["failed"] is True
        assert result["error"] == "timeout"
        assert pod["metadata"]["name"] in result["msg"]
        assert "nothing else was touched" in result["msg"]
        assert [p["name"] for p in result["still_present"]] == [pod["metadata"]["name"]]
        # replicas stay 0, the pod is still terminating, the node container was not touched
        assert replicas_of(k8s_client, k8s_namespace, "slow") == 0
        [left] = pods_of(k8s_client, k8s_namespace, "slow")
        assert left["metadata"].get("deletionTimestamp")
        assert started_at(kind_node) == started
    finally:
        force_delete_pods(k8s_client, k8s_namespace, "slow")


def test_unknown_workload_and_kind(controlplane, k8s_client, k8s_namespace, kind_node):
    make_deployment(k8s_client, k8s_namespace, "validator", kind_node)
    result = shut(controlplane, state="stopped", name="validatr", namespace=k8s_namespace)
    assert result["failed"] is True
    assert result["error"] == "not_found"
    assert f"Deployment {k8s_namespace}/validatr does not exist" in result["msg"]
    assert f"Deployments in namespace {k8s_namespace}: validator." in result["msg"]
    assert result["existing"] == ["validator"]

    result = shut(
        controlplane, state="stopped", kind="StatefulSet", name="validator", namespace=k8s_namespace
    )
    assert result["failed"] is True
    assert "A Deployment of that name exists there: set kind: Deployment." in result["msg"]

    result = shut(controlplane, state="stopped", kind="DaemonSet", name="validator", namespace=k8s_namespace)
    assert result["failed"] is True
    assert "kind" in result["msg"] and "Deployment, StatefulSet" in result["msg"]

    result = shut(
        controlplane, state="stopped", name="validator", namespace="no-such-ns-" + uuid.uuid4().hex[:4]
    )
    assert result["failed"] is True
    assert "does not exist" in result["msg"] and "namespace" in result["msg"]
    assert replicas_of(k8s_client, k8s_namespace, "validator") == 1


def test_check_mode_through_ansible_changes_nothing(
    controlplane, k8s_client, k8s_namespace, kind_node, monkeypatch
):
    make_deployment(k8s_client, k8s_namespace, "validator", kind_node)
    rv = k8s_client.get("Deployment", "validator", k8s_namespace)["metadata"]["resourceVersion"]
    monkeypatch.setenv("ANSIBLE_LOAD_CALLBACK_PLUGINS", "1")
    monkeypatch.setenv("ANSIBLE_STDOUT_CALLBACK", "json")
    args = {"kubeconfig": controlplane, "state": "stopped", "name": "validator", "namespace": k8s_namespace}
    proc = run_adhoc("safe_shutdown", args, "--check", "--diff")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert result["changed"] is True
    assert result["diff"] == {"before": {"replicas": 1}, "after": {"replicas": 0}}
    assert "check mode: would scale" in result["msg"]
    assert replicas_of(k8s_client, k8s_namespace, "validator") == 1
    assert k8s_client.get("Deployment", "validator", k8s_namespace)["metadata"]["resourceVersion"] == rv
    assert len(pods_of(k8s_client, k8s_namespace, "validator")) == 1


# --------------------------------------------------------------------------- API unreachable


def test_api_unreachable_fails_and_restarts_nothing(
    controlplane, k8s_client, k8s_namespace, kind_node, tmp_path
):
    make_deployment(k8s_client, k8s_namespace, "validator", kind_node)
    started = started_at(kind_node)
    dead = kubeconfig_variant(controlplane, tmp_path, server=f"https://127.0.0.1:{closed_port()}")
    for args in (
        {"state": "stopped", "name": "validator"},
        {"state": "node_restarted", "node": kind_node, "protected": [{"name": "validator"}], "force": True},
    ):
        result = shut(dead, namespace=k8s_namespace, **args)
        assert result["failed"] is True
        assert result["error"] == "unreachable"
        assert "is unreachable: connection refused" in result["msg"]
    assert started_at(kind_node) == started
    assert replicas_of(k8s_client, k8s_namespace, "validator") == 1


def test_api_lost_in_the_middle_of_a_stop(controlplane, k8s_client, k8s_namespace, kind_node, tmp_path):
    """The API server goes away after the scale to 0, while the module watches the pods."""
    make_deployment(k8s_client, k8s_namespace, "validator", kind_node, delay="30s")
    started = started_at(kind_node)
    proxy = TcpProxy(*api_server(controlplane))
    relayed = kubeconfig_variant(controlplane, tmp_path, server=f"https://127.0.0.1:{proxy.port}")
    args = {"kubeconfig": relayed, "state": "stopped", "name": "validator", "namespace": k8s_namespace}
    proc = start_module("safe_shutdown", dict(args, timeout=20))
    try:
        k8s_client.watch_until(
            "Deployment",
            lambda items: bool(items) and items[0]["spec"]["replicas"] == 0,
            k8s_namespace,
            field_selector="metadata.name=validator",
            timeout=30,
        )
        time.sleep(0.5)  # let the module's watch start: the loss is mid-watch, not mid-scale
        proxy.close()
        out, err = proc.communicate(timeout=60)
    finally:
        proxy.close()
        if proc.poll() is None:
            proc.kill()
        force_delete_pods(k8s_client, k8s_namespace, "validator")
    result = json.loads(out or "{}") if out.strip() else pytest.fail("no JSON: " + err)
    assert result["failed"] is True
    assert result["error"] == "unreachable"
    assert "became unreachable while waiting for the pods" in result["msg"]
    assert "Do NOT restart the node" in result["msg"]
    assert result["still_present"], result
    assert started_at(kind_node) == started


# --------------------------------------------------------------------------- node_restarted


def test_node_restart_refused_while_protected_pod_runs_then_allowed(
    controlplane, k8s_client, k8s_namespace, kind_node
):
    make_deployment(k8s_client, k8s_namespace, "validator", kind_node)
    make_deployment(k8s_client, k8s_namespace, "elsewhere", kind_node + "-b")
    only_this_namespace_on(k8s_client, kind_node, k8s_namespace)
    [pod] = pods_of(k8s_client, k8s_namespace, "validator")
    pod_name = pod["metadata"]["name"]
    started, running = started_at(kind_node)
    assert running
    restart = {
        "state": "node_restarted",
        "node": kind_node,
        "namespace": k8s_namespace,
        "protected": [{"kind": "Deployment", "name": "validator"}, {"name": "elsewhere"}],
        "node_stop_timeout": 5,
        "timeout": 60,
    }

    refused = shut(controlplane, **restart)
    assert refused["failed"] is True
    assert refused["error"] == "refused"
    assert (
        f"{k8s_namespace}/{pod_name} on node {kind_node} of Deployment {k8s_namespace}/validator"
        in refused["msg"]
    )
    assert "elsewhere" not in refused["msg"].split("bound to it:")[1].split(". Stop")[0]
    assert started_at(kind_node) == (started, True)

    would = shut(controlplane, check_mode=True, diff=True, force=True, **restart)
    assert would.get("failed") is not True, would
    assert would["changed"] is True and would["forced"] is True
    assert [b["name"] for b in would["blockers"]] == [pod_name]
    assert f"BREAK these running pods (force): {k8s_namespace}/{pod_name}" in would["msg"]
    assert started_at(kind_node) == (started, True)

    stopped = shut(controlplane, state="stopped", name="validator", namespace=k8s_namespace, timeout=60)
    assert stopped.get("failed") is not True, stopped
    # a pod with the protected workload's labels but not owned by it: restartable by name
    bare_pod(k8s_client, k8s_namespace, "lookalike", kind_node, {"app": "validator"})
    only_this_namespace_on(k8s_client, kind_node, k8s_namespace)

    done = shut(controlplane, restartable=[{"kind": "Pod", "name": "lookalike"}], **restart)
    assert done.get("failed") is not True, done
    assert done["changed"] is True and done["blockers"] == [] and done["forced"] is False
    assert "lookalike" in [p["name"] for p in done["pods_on_node"]]
    after, running = started_at(kind_node)
    assert running is True
    assert after != started
    assert done["started_at_before"] == started and done["started_at_after"] == after
    # the protected pod elsewhere kept running
    assert len([p for p in pods_of(k8s_client, k8s_namespace, "elsewhere") if k8s.pod_is_ready(p)]) == 1


def only_this_namespace_on(client, node, namespace):
    """Wait (watch) until the pods of earlier tests (their namespaces are being deleted) have left
    the node, so that only this test's pods decide about its restart."""
    client.watch_until(
        "Pod",
        lambda items: all(p["metadata"]["namespace"] == namespace for p in items),
        field_selector="spec.nodeName=" + node,
        timeout=60,
        description=f"only pods of {namespace} on {node}",
    )


def daemonset_on(client, ns, name, node):
    """A DaemonSet whose pod (made by the real DaemonSet controller) runs on ``node`` only."""
    client.create(
        "DaemonSet",
        {
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": node},
                        "tolerations": [{"key": TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "agent", "image": "registry.invalid/agent:1"}],
                    },
                },
            },
        },
        ns,
    )
    return client.watch_until(
        "Pod", k8s.all_items(k8s.pod_is_ready), ns, label_selector="app=" + name, timeout=60
    )["items"][0]["metadata"]["name"]


def test_node_restart_refused_by_default_while_any_pod_that_matters_runs_there(
    controlplane, k8s_client, k8s_namespace, kind_node
):
    """No protected list: a running workload's pod still refuses the restart (it used to go ahead
    with a warning); DaemonSet pods never do; restartable is the operator's opt-out."""
    make_deployment(k8s_client, k8s_namespace, "validator", kind_node)
    [pod] = pods_of(k8s_client, k8s_namespace, "validator")
    agent = daemonset_on(k8s_client, k8s_namespace, "node-agent", kind_node)
    only_this_namespace_on(k8s_client, kind_node, k8s_namespace)
    started, _running = started_at(kind_node)
    restart = {
        "state": "node_restarted",
        "node": kind_node,
        "namespace": k8s_namespace,
        "node_stop_timeout": 5,
    }

    refused = shut(controlplane, **restart)
    assert refused.get("failed") is True, refused
    assert refused["error"] == "refused"
    assert f"{k8s_namespace}/{pod['metadata']['name']} on node {kind_node} of ReplicaSet" in refused["msg"]
    assert "(not restartable)" in refused["msg"]
    assert agent not in refused["msg"].split("bound to it:")[1].split(". Stop")[0]
    assert [b["name"] for b in refused["blockers"]] == [pod["metadata"]["name"]]
    assert started_at(kind_node) == (started, True)

    allowed = dict(restart, restartable=[{"name": "validator"}])
    would = shut(controlplane, check_mode=True, **allowed)
    assert would.get("failed") is not True, would
    assert would["changed"] is True and would["blockers"] == []
    assert sorted((g["name"], g["why"]) for g in would["going_down"]) == sorted(
        [(pod["metadata"]["name"], "restartable"), (agent, "DaemonSet pod")]
    )
    assert "going down with it:" in would["msg"] and "(DaemonSet pod)" in would["msg"]
    assert started_at(kind_node) == (started, True)

    done = shut(controlplane, timeout=60, **allowed)
    assert done.get("failed") is not True, done
    assert done["changed"] is True and done["forced"] is False
    assert started_at(kind_node)[0] != started


# --------------------------------------------------------------------------- exit command


class Validators:
    """Real host processes with an admin socket under a temporary ledger directory (short
    paths: a unix socket path is limited to 107 bytes), and the exit client's argv."""

    def __init__(self, scripts):
        self.scripts = scripts
        (scripts / "validator.py").write_text(VALIDATOR_SERVER)
        (scripts / "agave-exit.py").write_text(EXIT_CLIENT)
        self.started = []

    def start(self, mode="normal"):
        ledger = tempfile.mkdtemp(prefix="strata-ledger-")
        proc = subprocess.Popen(
            [sys.executable, str(self.scripts / "validator.py"), ledger, mode],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.started.append((proc, ledger))
        assert proc.stdout.readline().strip() == "ready"
        return proc, ledger

    def exit_argv(self, ledger):
        return [sys.executable, str(self.scripts / "agave-exit.py"), "--ledger", ledger, "exit", "--force"]

    def agave_argv(self, version, ledger):
        """`<dir>/agave-validator --ledger LEDGER exit --force` of an agave stand-in of that version."""
        cli = self.scripts / version / "agave-validator"
        cli.parent.mkdir(exist_ok=True)
        cli.write_text(agave_cli(version, python=sys.executable))
        cli.chmod(0o755)
        return [str(cli), "--ledger", ledger, "exit", "--force"]

    def cleanup(self):
        for proc, ledger in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            shutil.rmtree(ledger, ignore_errors=True)


@pytest.fixture
def validators(tmp_path):
    found = Validators(tmp_path)
    yield found
    found.cleanup()


def test_exit_command_stops_the_host_process_before_scaling(
    controlplane, k8s_client, k8s_namespace, kind_node, validators
):
    make_deployment(k8s_client, k8s_namespace, "validator", kind_node)
    server, ledger = validators.start()
    result = shut(
        controlplane,
        state="stopped",
        name="validator",
        namespace=k8s_namespace,
        exit_command=validators.exit_argv(ledger),
        exit_timeout=30,
    )
    assert result.get("failed") is not True, result
    assert server.poll() == 0  # the server process is gone
    assert not os.path.exists(os.path.join(ledger, "admin.rpc"))
    outcome = result["exit_command"]
    assert outcome["ok"] is True and outcome["rc"] == 0
    assert outcome["stdout"].strip() == "validator exited"
    assert outcome["elapsed"] >= 1.0  # it waited for the server's shutdown
    with open(os.path.join(ledger, "exited_at")) as handle:
        exited_at = float(handle.read())
    scaled_at = parse_time(result["scaled_at"]).timestamp()
    assert exited_at <= scaled_at + 0.001, (exited_at, result["scaled_at"])
    assert pods_of(k8s_client, k8s_namespace, "validator") == []


def test_exit_command_failure_or_timeout_does_not_scale(
    controlplane, k8s_client, k8s_namespace, kind_node, validators
):
    make_deployment(k8s_client, k8s_namespace, "validator", kind_node)
    nowhere = tempfile.mkdtemp(prefix="strata-ledger-empty-")
    try:
        failed = shut(
            controlplane,
            state="stopped",
            name="validator",
            namespace=k8s_namespace,
            exit_command=validators.exit_argv(nowhere),
        )
    finally:
        os.rmdir(nowhere)
    assert failed["failed"] is True
    assert failed["error"] == "exit_command"
    assert "admin socket not found" in failed["msg"]
    assert "was NOT scaled (replicas still 1)" in failed["msg"]
    assert replicas_of(k8s_client, k8s_namespace, "validator") == 1

    server, ledger = validators.start("hang")
    hung = shut(
        controlplane,
        state="stopped",
        name="validator",
        namespace=k8s_namespace,
        exit_command=validators.exit_argv(ledger),
        exit_timeout=2,
    )
    assert hung["failed"] is True
    assert "did not finish within exit_timeout (2 s)" in hung["msg"]
    assert hung["exit_command"]["timed_out"] is True
    assert replicas_of(k8s_client, k8s_namespace, "validator") == 1
    assert server.poll() is None  # the workload itself was left alone
    assert len(pods_of(k8s_client, k8s_namespace, "validator")) == 1

    anyway = shut(
        controlplane,
        state="stopped",
        name="validator",
        namespace=k8s_namespace,
        exit_command=[sys.executable, "-c", "raise SystemExit(7)"],
        exit_failure_ok=True,
    )
    assert anyway.get("failed") is not True, anyway
    assert anyway["exit_command"]["rc"] == 7
    assert pods_of(k8s_client, k8s_namespace, "validator") == []


# --------------------------------------------------------------------------- running


def test_running_scales_back_and_waits_ready(controlplane, k8s_client, k8s_namespace, kind_node):
    make_deployment(k8s_client, k8s_namespace, "validator", kind_node, replicas=1)
    stopped = shut(controlplane, state="stopped", name="validator", namespace=k8s_namespace)
    assert stopped.get("failed") is not True, stopped
    result = shut(
        controlplane, state="running", name="validator", namespace=k8s_namespace, replicas=2, timeout=60
    )
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["diff"] == {"before": {"replicas": 0}, "after": {"replicas": 2}}
    assert len(result["pods"]) == 2 and all(p["ready"] for p in result["pods"])
    # at return, the API agrees: the Deployment is ready with two Ready pods
    deployment = k8s_client.get("Deployment", "validator", k8s_namespace)
    assert k8s.workload_is_ready(deployment)
    assert deployment["status"]["readyReplicas"] == 2
    assert len([p for p in pods_of(k8s_client, k8s_namespace, "validator") if k8s.pod_is_ready(p)]) == 2
    again = shut(controlplane, state="running", name="validator", namespace=k8s_namespace, replicas=2)
    assert again["changed"] is False, again


# --------------------------------------------------------------------------- agave's wait flag


def test_stop_with_agave_2_waits_for_the_process_before_scaling(
    controlplane, k8s_client, k8s_namespace, kind_node, validators
):
    """agave before 3.0 returns right after the exit request: the module adds --wait-for-exit, so
    the validator process is gone before the scale to 0 (without it, it exits a second later)."""
    make_deployment(k8s_client, k8s_namespace, "validator", kind_node)
    server, ledger = validators.start()
    result = shut(
        controlplane,
        state="stopped",
        name="validator",
        namespace=k8s_namespace,
        exit_command=validators.agave_argv("2.2.14", ledger),
        exit_timeout=30,
    )
    assert result.get("failed") is not True, result
    outcome = result["exit_command"]
    assert outcome["argv"][-1] == "--wait-for-exit"
    assert outcome["agave_version"] == "2.2.14"
    assert outcome["wait"].startswith("agave 2.2.14 before 3.0: --wait-for-exit added")
    assert "Done, agave-validator process has terminated" in outcome["stdout"]
    with open(os.path.join(ledger, "exited_at")) as handle:
        exited_at = float(handle.read())
    assert exited_at <= parse_time(result["scaled_at"]).timestamp() + 0.001
    assert server.wait(5) == 0


@pytest.mark.parametrize("version", ["3.0.7", "4.0.1"])
def test_exited_with_agave_3_and_later_waits_by_default(validators, version):
    """state=exited through Ansible (it needs no cluster); 4.x refuses --wait-for-exit, so it is
    left out even when the command has it."""
    server, ledger = validators.start()
    argv = [*validators.agave_argv(version, ledger), "--wait-for-exit"]
    result = adhoc_result("safe_shutdown", {"state": "exited", "exit_command": argv, "exit_timeout": 30})
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["exit_command"]["argv"] == argv[:-1]
    assert f"agave {version} waits for the validator process to exit by default" in result["msg"]
    assert "--wait-for-exit left out" in result["exit_command"]["wait"]
    assert os.path.exists(os.path.join(ledger, "exited_at"))  # gone when the module returned
    assert server.wait(5) == 0


def test_exited_timeout_kills_the_command_and_fails_cleanly(validators):
    server, ledger = validators.start("hang")
    argv = validators.agave_argv("2.2.14", ledger)
    result = adhoc_result("safe_shutdown", {"state": "exited", "exit_command": argv, "exit_timeout": 2})
    assert_clean_failure(result)
    assert result["error"] == "exit_command"
    assert "did not finish within exit_timeout (2 s) and was killed" in result["msg"]
    assert "Nothing else was done" in result["msg"]
    assert result["exit_command"]["timed_out"] is True
    assert server.poll() is None  # the workload itself is left alone


def test_bad_connection_input_fails_cleanly(controlplane, tmp_path):
    for args, fragment in (
        ({"kubeconfig": controlplane, "api_timeout": -1}, "api_timeout must be 1 second or more, got -1"),
        ({"kubeconfig": controlplane, "api_timeout": 0}, "api_timeout must be 1 second or more, got 0"),
    ):
        result = adhoc_result("safe_shutdown", dict(args, state="stopped", name="validator"))
        assert_clean_failure(result)
        assert "Module failed" not in result["msg"]
        assert fragment in result["msg"]
