"""strata.ops.pod_checkpoint method=kubelet on the lab cluster's real node (tests/testbed/node/start):
a kubelet built from the control plane's module on containerd 2.x, CRIU 4 and runc.

A pod on that node runs a counter that lives only in memory (the CRI workload image, writing it to
/count too). The module checkpoints it through the kubelet's API with a service account token that
may create nodes/checkpoint (webhook authorization, as on a production kubelet), the pod left
running; then restores the dump as a NEW pod, whose counter goes on from the dumped value (a fresh
process would count from 1). Then what must be refused, with nothing left behind.

Needs root, the lab control plane and the node (tests/testbed/up all starts both).
"""

import json
import os
import re
import subprocess
import time
import uuid

import pytest
from testbed_paths import lib_sh_value  # tests/testbed, on sys.path by conftest

from ansible_collections.strata.ops.plugins.module_utils.checkpoint import containerd

from .conftest import CACHE, REPO, TESTBED_BIN
from .k8s_fixtures import controlplane  # noqa: F401  # pylint: disable=unused-import
from .test_pod_checkpoint import (
    _missing,
    assert_criu_log_kept,
    assert_own_cgroup,
    criu_version,
    record_newer_criu,
    run_module,
)

NODE_START = os.path.join(REPO, "tests", "testbed", "node", "start")
NODE_CA = os.path.join(CACHE, "node", "ca.crt")
LAB_KUBECONFIG = os.path.join(CACHE, "controlplane", "strata-lab.kubeconfig")
with open(os.path.join(REPO, "tests", "testbed", "controlplane", "go.mod")) as _gomod:
    K8S_VERSION = re.search(r"k8s\.io/kubernetes (v1\.[0-9.]+)", _gomod.read()).group(1)
KUBECTL = os.path.join(CACHE, "controlplane", K8S_VERSION, "bin", "kubectl")
NODE_SOCKET = "/run/strata-node/containerd.sock"
KUBELET_URL = "https://127.0.0.1:10250"
COUNTED_BEFORE_DUMP = 25  # 5 s of counting: more than a fresh process reaches while the test looks


@pytest.fixture(scope="module")
def node(controlplane):  # noqa: F811 - the fixture
    if os.geteuid() != 0:
        _missing("the kubelet and containerd need root")
    proc = subprocess.run([NODE_START], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        _missing(f"tests/testbed/node/start failed: {proc.stderr.strip()[-1500:]}")
    return {
        "name": proc.stdout.strip().splitlines()[-1],
        "ctr": os.path.join(lib_sh_value("containerd2_bin"), "ctr"),
        "image": lib_sh_value("cri_image"),
    }


def kubectl(*args, check=True, stdin=None):
    proc = subprocess.run(
        [KUBECTL, "--kubeconfig", LAB_KUBECONFIG, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def apply(obj):
    kubectl("apply", "-f", "-", stdin=json.dumps(obj))


@pytest.fixture(scope="module")
def tokens(node):
    """A token that may create nodes/checkpoint, and one that may not (RBAC, checked by the kubelet
    through the API server's SubjectAccessReview)."""
    ns = "strata-ckpt-auth"
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for sa in ("checkpointer", "bystander"):
        apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}})
    apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "strata-node-checkpoint"},
            "rules": [{"apiGroups": [""], "resources": ["nodes/checkpoint"], "verbs": ["create"]}],
        }
    )
    apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "strata-node-checkpoint"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "strata-node-checkpoint",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "checkpointer", "namespace": ns}],
        }
    )
    return {sa: kubectl("-n", ns, "create", "token", sa).strip() for sa in ("checkpointer", "bystander")}


def pod_manifest(name, namespace, image):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "counter"}},
        "spec": {
            "nodeSelector": {"strata.io/real-node": "true"},
            "tolerations": [{"key": "strata.io/real-node", "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "counter",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["/workload", "count"],
                }
            ],
        },
    }


def wait_pod(namespace, name, jsonpath, want, timeout=60):
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = kubectl("-n", namespace, "get", "pod", name, "-o", f"jsonpath={jsonpath}", check=False)
        if seen == want:
            return
        time.sleep(0.3)
    raise AssertionError(f"pod {namespace}/{name}: {jsonpath} is {seen!r}, not {want!r} after {timeout} s")


@pytest.fixture
def counter_pod(node):
    namespace = f"strata-ckpt-{uuid.uuid4().hex[:6]}"
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    apply(pod_manifest("counter", namespace, node["image"]))
    wait_pod(namespace, "counter", "{.status.phase}", "Running")
    yield {"namespace": namespace, "name": "counter"}
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    # the images its restores imported (named after the dump: the playbooks' names hold the namespace)
    remove_node_images(node, f"strata.local/checkpoint/{namespace}-")


def count_of(node, namespace, pod):
    """The counter of the pod's container, read from its root on the host (/proc/PID/root/count)."""
    cid = kubectl(
        "-n", namespace, "get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].containerID}"
    )
    cid = cid.split("://", 1)[1]
    tasks = subprocess.run(
        [node["ctr"], "--address", NODE_SOCKET, "-n", "k8s.io", "tasks", "ls"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pid = next(line.split()[1] for line in tasks.splitlines() if line.startswith(cid))
    for _attempt in range(50):  # the workload truncates and rewrites the file 5 times a second
        with open(f"/proc/{pid}/root/count") as handle:
            text = handle.read().strip()
        if text:
            return int(text)
        time.sleep(0.01)
    raise AssertionError(f"/proc/{pid}/root/count stays empty")


def wait_count(node, namespace, pod, minimum, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = count_of(node, namespace, pod)
        except (OSError, ValueError, StopIteration, IndexError):
            value = None
        if value is not None and value >= minimum:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{namespace}/{pod} counted {value}, not {minimum}, within {timeout} s")
        time.sleep(0.2)


def kubelet_args(tmp_path, counter_pod, token, **changes):
    args = dict(
        method="kubelet",
        kubelet_url=KUBELET_URL,
        kubelet_token=token,
        kubelet_ca_path=NODE_CA,
        kubeconfig=LAB_KUBECONFIG,
        pod=counter_pod["name"],
        namespace=counter_pod["namespace"],
        container="counter",
        images_dir=str(tmp_path / "images"),
        containerd_address=NODE_SOCKET,
        timeout=60,
    )
    args.update(changes)
    return args


def test_kubelet_checkpoint_then_restore_as_a_new_pod(node, tokens, counter_pod, tmp_path):
    ns = counter_pod["namespace"]
    args = kubelet_args(tmp_path, counter_pod, tokens["checkpointer"], ctr_path=node["ctr"])
    planned = run_module(args, check_mode=True)
    assert planned["changed"] is True and planned["command"] == [
        "POST",
        f"{KUBELET_URL}/checkpoint/{ns}/counter/counter",
    ]
    assert not (tmp_path / "images").exists()  # check mode wrote nothing

    before_dump = wait_count(node, ns, "counter", COUNTED_BEFORE_DUMP)  # the dump holds at least this
    dumped = run_module(args)
    assert dumped.get("failed") is not True, dumped
    before = count_of(node, ns, "counter")
    manifest = dumped["manifest"]
    assert manifest["method"] == "kubelet" and manifest["pod"]["node"] == node["name"]
    archive = os.path.join(dumped["checkpoint_dir"], "checkpoint.tar")
    assert os.path.getsize(archive) == manifest["sizes"]["images_bytes"] > 0
    kubelet_archive = dumped["kubelet"]["items"][0]
    assert kubelet_archive.startswith("/var/lib/kubelet/checkpoints/checkpoint-counter_")
    assert not os.path.exists(kubelet_archive)  # moved into the dump directory, under retention
    # the frozen time from CRIU's stats-dump, which containerd's CRI plugin puts in the archive
    assert dumped["frozen_s"] == manifest["stats"]["frozen_s"] > 0
    assert manifest["stats"]["pages_written"] > 0
    # the CRIU the node's containerd ran for the kubelet: the one on its PATH (tests/testbed/node/start)
    shim_criu = os.path.join(CACHE, "bin", "criu")
    assert manifest["criu"] == {"path": shim_criu, "version": criu_version(shim_criu)}, manifest["criu"]
    # the original pod ran on through the checkpoint
    assert wait_count(node, ns, "counter", before + 5) > before

    restore = dict(args, state="restored", name=manifest["name"], new_pod="counter-restored")
    for key in ("pod", "container"):
        restore.pop(key)
    restored = run_module(restore)
    assert restored.get("failed") is not True, restored
    assert restored["changed"] is True and restored["restored"]["node"] == node["name"]
    labels = kubectl("-n", ns, "get", "pod", "counter-restored", "-o", "jsonpath={.metadata.labels}")
    assert json.loads(labels) == {"strata.io/restored-from-pod": "counter"}  # no ReplicaSet would adopt it
    # its counter goes on from the checkpoint; a freshly started process would be far below
    first = count_of(node, ns, "counter-restored")
    assert first >= before_dump, (
        f"restored counter {first} < {before_dump} before the dump: it started afresh"
    )
    assert wait_count(node, ns, "counter-restored", first + 3) > first

    again = run_module(restore)
    assert again.get("failed") is not True and again["changed"] is False, again

    # a second pod of that name that is not this restore is refused, nothing created
    taken = run_module(dict(restore, new_pod="counter"))
    assert taken.get("failed") is True and taken["error"] == "ContainerConflict", taken
    assert f"a pod {ns}/counter exists already" in taken["msg"]

    # the same dump as a newer CRIU release would have written it: the node's CRIU cannot read it
    record_newer_criu(dumped["checkpoint_dir"])
    newer = run_module(dict(restore, new_pod="counter-newer"))
    assert newer.get("failed") is True, newer
    assert "was dumped by CRIU 99.0, and the CRIU that would restore it is older" in newer["msg"]
    assert "the criu on the node's containerd's PATH" in newer["msg"]
    pods = kubectl("-n", ns, "get", "pods", "-o", "name").split()
    assert "pod/counter-newer" not in pods, pods

    assert_pruned_dumps_take_their_images(node, args, dumped, restored)


def assert_pruned_dumps_take_their_images(node, args, dumped, restored):
    """The restore imported the dump into the node's containerd as an image (as large as the dump).
    A dump that prunes the first keeps that image while a pod runs it, and removes it after (with
    those of earlier runs' pruned dumps of the same name no pod runs)."""
    ns, ref = args["namespace"], restored["image_ref"]
    assert ref in node_images(node)
    second = run_module(dict(args, keep=1))
    assert second.get("failed") is not True and second["pruned"] == [dumped["checkpoint_dir"]], second
    assert second["store_images_kept"] == {ref: [f"{ns}/counter-restored"]}, second
    assert ref not in second["store_images_removed"] and ref in node_images(node)
    kubectl("-n", ns, "delete", "pod", "counter-restored", "--grace-period=0", "--wait=true")
    third = run_module(dict(args, keep=1))
    assert third.get("failed") is not True, third
    assert (third["store_images_removed"], third["store_images_kept"]) == ([ref], {}), third
    assert ref not in node_images(node)


def remove_node_images(node, prefix):
    """Remove the images whose ref starts with ``prefix`` from the node's containerd."""
    imported = [ref for ref in node_images(node) if ref.startswith(prefix)]
    if imported:
        subprocess.run(
            [node["ctr"], "--address", NODE_SOCKET, "-n", "k8s.io", "images", "rm", *imported],
            capture_output=True,
            check=False,
        )


def node_images(node):
    """The image refs in the node's containerd (namespace k8s.io)."""
    listed = subprocess.run(
        [node["ctr"], "--address", NODE_SOCKET, "-n", "k8s.io", "images", "ls", "-q"],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


def node_ctr(node, *args, check=True):
    return subprocess.run(
        [node["ctr"], "--address", NODE_SOCKET, "-n", "k8s.io", *args],
        capture_output=True,
        text=True,
        check=check,
    )


def test_containerd_method_on_the_nodes_containerd_2(node, counter_pod, tmp_path):
    """method=containerd on containerd 2.x (the real node's, under a kubelet): the kubelet's pod is
    found through CRI, dumped through the tasks API with the pod left running, and restored into a
    NEW container beside it whose counter goes on from the dump (a fresh process counts from 1).
    The kubelet does not see that container (no CRI labels) and leaves it alone."""
    namespace = counter_pod["namespace"]
    counted = wait_count(node, namespace, "counter", COUNTED_BEFORE_DUMP)
    args = {
        "method": "containerd",
        "runtime": "cri",
        "cri_endpoint": f"unix://{NODE_SOCKET}",
        "pod": "counter",
        "namespace": namespace,
        "container": "counter",
        "images_dir": str(tmp_path / "images"),
        "keep": 1,
        "ctr_path": node["ctr"],
    }
    dumped = run_module(args, path_prefix=TESTBED_BIN)
    assert dumped.get("failed") is not True, dumped
    assert "pages-1.img" in os.listdir(os.path.join(dumped["checkpoint_dir"], containerd.CRIU_DIR))
    assert dumped["frozen_s"] > 0, dumped
    wait_count(node, namespace, "counter", counted + 3)  # left running
    new = f"strata-restored-{uuid.uuid4().hex[:6]}"
    restore = dict(args, state="restored", checkpoint=dumped["checkpoint_dir"], new_container=new)
    try:
        restored = run_module(restore, path_prefix=TESTBED_BIN)
        assert restored.get("failed") is not True, restored
        root = f"/proc/{restored['restored']['pid']}/root/count"
        with open(root) as handle:
            first = int(handle.read().strip() or 0)
        assert first >= counted, (first, counted)  # the dump's memory, not a fresh 1
        assert_own_cgroup(restored["restored"]["pid"], dumped["manifest"]["target"]["pid"], new)
        assert_criu_log_kept(restored, dumped)
        deadline = time.monotonic() + 10
        while True:
            with open(root) as handle:
                now = int(handle.read().strip() or 0)
            if now >= first + 3:
                break
            assert time.monotonic() < deadline, f"the restored {new} stays at {now}"
            time.sleep(0.2)
        pods = kubectl("-n", namespace, "get", "pods", "-o", "jsonpath={.items[*].metadata.name}")
        assert pods == "counter", pods  # no pod for it: a containerd container, not a CRI one
    finally:
        node_ctr(node, "tasks", "kill", "--signal", "SIGKILL", new, check=False)
        node_ctr(node, "tasks", "rm", "--force", new, check=False)
        node_ctr(node, "containers", "rm", new, check=False)
    wait_count(node, namespace, "counter", counted + 6)  # the kubelet's container runs on


def test_kubelet_restore_onto_a_node_that_is_not_this_host_is_refused(node, tokens, counter_pod, tmp_path):
    """The restore imports the image into this host's containerd and pins the pod to the node: a
    node whose kubelet reports another machine ID (the pod moved, or the play runs elsewhere) is
    refused before anything is imported or created (before: ErrImageNeverPull after the pod)."""
    ns, elsewhere = counter_pod["namespace"], f"strata-elsewhere-{uuid.uuid4().hex[:6]}"
    args = kubelet_args(
        tmp_path, counter_pod, tokens["checkpointer"], ctr_path=node["ctr"], name=f"{ns}-counter"
    )
    wait_count(node, ns, "counter", 3)
    dumped = run_module(args)
    assert dumped.get("failed") is not True, dumped
    apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": elsewhere}})
    try:  # a node no kubelet runs, with the identity a kubelet on another machine would report
        status = {"status": {"nodeInfo": {"machineID": "0123456789abcdef0123456789abcdef"}}}
        kubectl("patch", "node", elsewhere, "--subresource=status", "--type=merge", "-p", json.dumps(status))
        restore = dict(args, state="restored", new_pod="counter-elsewhere", node=elsewhere)
        for check_mode in (True, False):
            refused = run_module(restore, check_mode=check_mode)
            assert refused.get("failed") is True and refused["error"] == "InvalidArgument", refused
            assert f"node {elsewhere} is not this host (its kubelet reports machine ID 0123" in refused["msg"]
            assert "Nothing was imported or created" in refused["msg"]
        assert kubectl("-n", ns, "get", "pods", "-o", "name").split() == ["pod/counter"]
        assert not [ref for ref in node_images(node) if ref.startswith(f"strata.local/checkpoint/{ns}-")]
    finally:
        kubectl("delete", "node", elsewhere, check=False)


def test_kubelet_refusals_leave_nothing_behind(node, tokens, counter_pod, tmp_path):
    ns = counter_pod["namespace"]
    images = tmp_path / "images"
    refused = run_module(kubelet_args(tmp_path, counter_pod, tokens["bystander"]))
    assert refused.get("failed") is True, refused
    assert "403" in refused["msg"] and "nodes/checkpoint" in refused["msg"], refused["msg"]
    assert not images.exists() or not os.listdir(images)

    wrong = run_module(kubelet_args(tmp_path, counter_pod, tokens["checkpointer"], container="countr"))
    assert wrong.get("failed") is True and wrong["error"] == "InvalidArgument", wrong
    assert f"pod {ns}/counter has no container 'countr'; its containers: counter" in wrong["msg"]

    gone = run_module(kubelet_args(tmp_path, counter_pod, tokens["checkpointer"], pod="no-such-pod"))
    assert gone.get("failed") is True and gone["error"] == "not_found", gone
    assert kubectl("-n", ns, "get", "pods", "-o", "name").split() == ["pod/counter"]


def deployment_of(pod):
    """A Deployment of one replica of ``pod`` (a pod_manifest), named and labelled as it is."""
    name = pod["metadata"]["name"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": pod["metadata"]["namespace"]},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod["spec"]},
        },
    }


def validator_deployment(namespace, image, ledger):
    """One replica on the real node whose process plays a validator's admin socket in a hostPath
    ledger (the CRI workload's "admin" mode: on "exit" it answers, shuts down and exits 0)."""
    pod = pod_manifest("validator", namespace, image)
    spec = pod["spec"]
    spec["terminationGracePeriodSeconds"] = 5
    spec["volumes"] = [{"name": "ledger", "hostPath": {"path": ledger, "type": "Directory"}}]
    spec["containers"][0].update(
        name="validator",
        command=["/workload", "admin", "/ledger/admin.rpc"],
        volumeMounts=[{"name": "ledger", "mountPath": "/ledger"}],
    )
    return deployment_of(pod)


# The kubelet removes a deleted pod's containers on its own time (pod cleanup in its housekeeping,
# else container GC every minute): under the parallel suite that took over 30 s (CI of 2026-12-06).
CONTAINERS_GONE_S = 120


def node_containers(node, namespace, container):
    """IDs of the containers named ``container`` (running or not) that the node's containerd holds
    for pods of ``namespace`` (the kubelet's labels)."""
    labels = ",".join(
        [
            f'labels."io.kubernetes.pod.namespace"=={namespace}',
            f'labels."io.kubernetes.container.name"=={container}',
        ]
    )
    listing = subprocess.run(
        [node["ctr"], "--address", NODE_SOCKET, "-n", "k8s.io", "containers", "ls", "-q", labels],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return listing.split()


def test_safe_shutdown_on_a_real_kubelet_ends_with_no_process_left(node, counter_pod, tmp_path):
    """The flows' order: the graceful exit on the workload host (state=exited), then the stop from
    the controller (state=stopped). Between the two the real kubelet runs the exited container again
    (restartPolicy Always), which simulated nodes cannot show: the stop still ends with no pod,
    container or process left, and says that the kubelet had restarted it."""
    from .test_safe_shutdown import EXIT_CLIENT  # noqa: PLC0415 - the same stand-in exit client

    ns = counter_pod["namespace"]
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    apply(validator_deployment(ns, node["image"], str(ledger)))
    socket_path = ledger / "admin.rpc"
    deadline = time.monotonic() + 60
    while not socket_path.exists():
        assert time.monotonic() < deadline, "the validator pod never opened its admin socket"
        time.sleep(0.2)
    client = tmp_path / "agave-exit.py"
    client.write_text(EXIT_CLIENT)
    exit_args = {
        "exit_command": ["python3", str(client), "--ledger", str(ledger), "exit"],
        "exit_timeout": 30,
    }
    exited = run_module(dict(exit_args, state="exited"), module="safe_shutdown")
    assert exited.get("failed") is not True, exited
    assert exited["exit_command"]["stdout"].strip() == "validator exited"

    # the kubelet runs the exited container again: the admin socket comes back, the count goes up
    deadline = time.monotonic() + 60
    restart_count = "{.items[0].status.containerStatuses[0].restartCount}"
    while kubectl("-n", ns, "get", "pods", "-l", "app=validator", "-o", f"jsonpath={restart_count}") in (
        "",
        "0",
    ):
        assert time.monotonic() < deadline, "the kubelet did not restart the exited validator container"
        time.sleep(0.3)
    while not socket_path.exists():
        assert time.monotonic() < deadline, "the restarted validator never opened its admin socket"
        time.sleep(0.2)

    stop = {"state": "stopped", "kind": "Deployment", "name": "validator", "namespace": ns}
    stopped = run_module(dict(stop, kubeconfig=LAB_KUBECONFIG, timeout=90), module="safe_shutdown")
    assert stopped.get("failed") is not True, stopped
    (pod,) = stopped["pods"]
    assert pod["node"] == node["name"] and pod["gone_at"]
    assert pod["restarts"] >= 1, stopped
    assert (
        f"the kubelet had restarted containers of pods it removed ({pod['name']} {pod['restarts']}x)"
        in (stopped["msg"])
    )
    # no pod, no container and no process of the workload is left on the node
    assert kubectl("-n", ns, "get", "pods", "-l", "app=validator", "-o", "name").split() == []
    deadline = time.monotonic() + CONTAINERS_GONE_S
    while node_containers(node, ns, "validator"):
        assert time.monotonic() < deadline, f"containers left: {node_containers(node, ns, 'validator')}"
        time.sleep(0.3)
    workload_processes = subprocess.run(
        ["pgrep", "-f", "/workload admin /ledger/admin.rpc"], capture_output=True, text=True, check=False
    ).stdout.split()
    assert workload_processes == []


def test_checkpoint_and_restore_playbooks_through_the_kubelet(node, tokens, counter_pod, tmp_path):
    """The operator's playbooks (role pod_checkpoint) with pod_checkpoint_method=kubelet, on this
    machine, which is the node: checkpoint, list, restore --check (nothing created), restore as a
    new pod whose counter goes on, and a kubelet dump without a new pod name is refused."""
    from .test_checkpoint_playbooks import playbook, summary  # noqa: PLC0415 - same runner

    ns = counter_pod["namespace"]
    images = str(tmp_path / "images")
    settings = {
        "pod_checkpoint_method": "kubelet",
        "pod_checkpoint_namespace": ns,
        "pod_checkpoint_pod": "counter",
        "pod_checkpoint_container": "counter",
        "pod_checkpoint_images_dir": images,
        "pod_checkpoint_keep": 2,
        "pod_checkpoint_kubelet_token": tokens["checkpointer"],
        "pod_checkpoint_kubelet_ca_path": NODE_CA,
        "pod_checkpoint_kubeconfig": LAB_KUBECONFIG,
        "pod_checkpoint_containerd_address": NODE_SOCKET,
        "pod_checkpoint_ctr_path": node["ctr"],
    }
    wait_count(node, ns, "counter", COUNTED_BEFORE_DUMP)
    rc, planned, failed = playbook("checkpoint", settings, check=True)
    assert rc == 0, failed
    assert summary(planned).startswith(f"Check mode: would checkpoint pod {ns}/counter container counter")
    assert not os.path.exists(images)

    before_dump = count_of(node, ns, "counter")  # the dump is taken later: it holds at least this
    rc, done, failed = playbook("checkpoint", settings)
    assert rc == 0, failed
    assert f"Checkpointed pod {ns}/counter container counter on localhost" in summary(done)
    assert "through the kubelet" in summary(done) and "left running" in summary(done)

    rc, listed, failed = playbook("checkpoints", settings)
    assert rc == 0, failed
    (entry,) = listed[f"List the checkpoints in {images}"]["checkpoints"]
    assert entry["method"] == "kubelet" and entry["restorable"] is True, entry
    assert entry["target"]["runtime"] == "kubelet" and entry["target"]["container_name"] == "counter"

    refused_rc, _results, refused = playbook("restore", dict(settings, pod_checkpoint_new_container="x"))
    assert refused_rc != 0
    assert (
        "was taken through the kubelet: it restores as a new pod, named by pod_checkpoint_new_pod"
        in (refused["msg"])
    )

    restore = dict(settings, pod_checkpoint_new_pod="counter-again")
    rc, planned, failed = playbook("restore", restore, check=True)
    assert rc == 0, failed
    assert f"into the new pod {ns}/counter-again on node {node['name']}" in summary(planned)
    assert "ctr --address" in summary(planned) and "then create the pod" in summary(planned)
    assert kubectl("-n", ns, "get", "pod", "counter-again", check=False) == ""  # nothing created

    rc, restored, failed = playbook("restore", restore)
    assert rc == 0, failed
    assert summary(restored).startswith(f"Restored {entry['id']} (")
    # went on from the checkpoint; a freshly started process would count from 1
    assert count_of(node, ns, "counter-again") >= before_dump >= COUNTED_BEFORE_DUMP
    rc, again, failed = playbook("restore", restore)
    assert rc == 0, failed
    assert "already runs restored from" in summary(again)


@pytest.fixture
def lab_namespace():
    """A namespace of its own on the lab cluster, deleted afterwards."""
    ns = f"strata-ckpt-{uuid.uuid4().hex[:6]}"
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    yield ns
    kubectl("delete", "namespace", ns, "--wait=false", check=False)


def pod_of(ns, app):
    """The name of a pod of the Deployment ``app`` in ``ns``, once it made one."""
    deadline = time.monotonic() + 60
    # items[*], not items[0]: kubectl fails on the index while the ReplicaSet has made no pod yet
    while not (
        pods := kubectl(
            "-n", ns, "get", "pods", "-l", f"app={app}", "-o", "jsonpath={.items[*].metadata.name}"
        )
    ):
        assert time.monotonic() < deadline, f"the Deployment {ns}/{app} made no pod"
        time.sleep(0.3)
    return pods.split()[0]


def stop_settings(ns, pod, node, images):
    """checkpoint.yml through the kubelet, the pod to be stopped (the kubelet token is left to the
    controller's environment)."""
    return {
        "pod_checkpoint_method": "kubelet",
        "pod_checkpoint_namespace": ns,
        "pod_checkpoint_pod": pod,
        "pod_checkpoint_container": "counter",
        "pod_checkpoint_images_dir": str(images),
        "pod_checkpoint_leave_running": False,
        "pod_checkpoint_kubelet_ca_path": NODE_CA,
        "pod_checkpoint_kubeconfig": LAB_KUBECONFIG,
        "pod_checkpoint_containerd_address": NODE_SOCKET,
        "pod_checkpoint_ctr_path": node["ctr"],
    }


def test_checkpoint_playbook_stops_a_pod_through_its_deployment(node, tokens, lab_namespace, tmp_path):
    """pod_checkpoint_leave_running=false on a pod: its kubelet would start a killed container again,
    so the playbook checkpoints it left running, then scales its Deployment to 0 and waits until its
    pods are gone. --check names the Deployment and changes nothing. The kubelet token comes from the
    controller's environment, as AWX's kubelet token credential injects it."""
    from .test_checkpoint_playbooks import playbook, summary  # noqa: PLC0415 - same runner

    ns = lab_namespace
    apply(deployment_of(pod_manifest("counter", ns, node["image"])))
    pod = pod_of(ns, "counter")
    wait_pod(ns, pod, "{.status.phase}", "Running")
    wait_count(node, ns, pod, 5)
    images = tmp_path / "images"
    settings = stop_settings(ns, pod, node, images)
    token = {"STRATA_KUBELET_TOKEN": tokens["checkpointer"]}
    rc, planned, failed = playbook("checkpoint", settings, check=True, environ=token)
    assert rc == 0, failed
    assert f"then stopping Deployment {ns}/counter (scale to 0)" in summary(planned)
    assert not images.exists()
    assert kubectl("-n", ns, "get", "deployment", "counter", "-o", "jsonpath={.spec.replicas}") == "1"

    rc, done, failed = playbook("checkpoint", settings, environ=token)
    assert rc == 0, failed
    assert "through the kubelet" in summary(done) and "\n" not in summary(done), summary(done)
    assert f"stopped: Deployment {ns}/counter scaled to 0, its pods gone" in summary(done)
    assert kubectl("-n", ns, "get", "deployment", "counter", "-o", "jsonpath={.spec.replicas}") == "0"
    assert kubectl("-n", ns, "get", "pods", "-o", "name") == ""
    deadline = time.monotonic() + CONTAINERS_GONE_S
    while node_containers(node, ns, "counter"):
        assert time.monotonic() < deadline, f"containers left: {node_containers(node, ns, 'counter')}"
        time.sleep(0.3)
    listed = run_module({"images_dir": str(images)}, module="pod_checkpoint_info")
    assert [(c["method"], c["restorable"]) for c in listed["checkpoints"]] == [("kubelet", True)], listed


def test_checkpoint_playbook_refuses_to_stop_a_bare_pod_or_one_of_several_replicas(
    node, lab_namespace, tmp_path
):
    """A pod no Deployment or StatefulSet controls cannot be stopped by scaling; one of two replicas
    would stop the other too: both refused before anything is done."""
    from .test_checkpoint_playbooks import playbook  # noqa: PLC0415 - same runner

    ns = lab_namespace
    apply(pod_manifest("bare", ns, node["image"]))
    pair = deployment_of(pod_manifest("pair", ns, node["image"]))
    pair["spec"]["replicas"] = 2
    apply(pair)
    images = tmp_path / "images"
    refusals = {
        "bare": f"pod {ns}/bare container counter is controlled by nothing (a bare pod), not by a Deployment "
        "or StatefulSet",
        pod_of(ns, "pair"): f"Deployment {ns}/pair has 2 replicas: scaling it to 0 would stop the other pods",
    }
    for pod, refusal in refusals.items():
        rc, _results, failed = playbook("checkpoint", stop_settings(ns, pod, node, images))
        assert rc != 0
        assert refusal in failed["msg"] and failed["msg"].endswith("Nothing was changed."), failed["msg"]
    assert not images.exists()
    assert kubectl("-n", ns, "get", "pod", "bare", "-o", "jsonpath={.metadata.name}") == "bare"
    assert kubectl("-n", ns, "get", "deployment", "pair", "-o", "jsonpath={.spec.replicas}") == "2"


def test_kubelet_dump_into_a_full_file_system_leaves_no_dump(node, tokens, counter_pod, tmp_path):
    """images_dir on a 256 KiB tmpfs: the archive does not fit. The module says so with the numbers,
    removes its partial dump directory and leaves the kubelet's archive where the kubelet wrote it."""
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(full)], check=True)
    try:
        wait_count(node, counter_pod["namespace"], "counter", 5)
        result = run_module(kubelet_args(tmp_path, counter_pod, tokens["checkpointer"], images_dir=str(full)))
        assert result.get("failed") is True and result["error"] == "InvalidArgument", result
        assert (
            "cannot move the kubelet's archive /var/lib/kubelet/checkpoints/checkpoint-counter_"
            in result["msg"]
        )
        assert "No space left on device" in result["msg"]
        assert (
            "free space where images_dir is, or point images_dir at a file system with room" in result["msg"]
        )
        assert os.listdir(full) == []  # no partial dump directory
        left = result["msg"].split("The archive stays at ", 1)[1].split(" (", 1)[0]
        assert os.path.getsize(left) > 256 << 10
        os.unlink(left)
    finally:
        subprocess.run(["umount", str(full)], check=True)


def test_kubelet_restore_names_a_changed_hostpath_directory_before_making_the_pod(node, tokens, tmp_path):
    """A pod working in a hostPath volume (its cwd): once that directory has another mode, CRIU would
    refuse the restore after the new pod was made; the module names it first. Put back, it restores."""
    namespace = f"strata-ckpt-{uuid.uuid4().hex[:6]}"
    volume = tmp_path / "volume"
    volume.mkdir(mode=0o755)
    pod = pod_manifest("counter", namespace, node["image"])
    pod["spec"]["volumes"] = [{"name": "work", "hostPath": {"path": str(volume), "type": "Directory"}}]
    pod["spec"]["containers"][0].update(
        workingDir="/work", volumeMounts=[{"name": "work", "mountPath": "/work"}]
    )
    apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    try:
        apply(pod)
        wait_pod(namespace, "counter", "{.status.phase}", "Running")
        counter_pod = {"namespace": namespace, "name": "counter"}
        wait_count(node, namespace, "counter", 3)
        args = kubelet_args(
            tmp_path, counter_pod, tokens["checkpointer"], ctr_path=node["ctr"], name=f"{namespace}-counter"
        )
        dumped = run_module(args)
        assert dumped.get("failed") is not True, dumped
        restore = dict(args, state="restored", name=dumped["manifest"]["name"], new_pod="counter-restored")
        for key in ("pod", "container"):
            restore.pop(key)
        volume.chmod(0o700)
        for check_mode in (True, False):
            refused = run_module(restore, check_mode=check_mode)
            assert refused.get("failed") is True, refused
            assert f"/work (on the host {volume}) has mode 0o40700, it had 0o40755" in refused["msg"]
            assert kubectl("-n", namespace, "get", "pods", "-o", "name").split() == ["pod/counter"]
        volume.chmod(0o755)
        restored = run_module(restore)
        assert restored.get("failed") is not True, restored
        first = count_of(node, namespace, "counter-restored")
        assert wait_count(node, namespace, "counter-restored", first + 3) > first
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        remove_node_images(node, f"strata.local/checkpoint/{namespace}-")
