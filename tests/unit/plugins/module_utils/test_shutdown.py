"""Pure logic of plugins/module_utils/shutdown.py: label selectors, pod ownership through the
ownerReferences chain, the pod tracker behind the stop wait, restart blockers by nodeName, the
exit command's deadline, and each state's decisions against a scripted fake client."""

import datetime
import os
import subprocess
import sys

import pytest
import yaml

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr
from ansible_collections.strata.ops.plugins.module_utils import k8s
from ansible_collections.strata.ops.plugins.module_utils import shutdown as sd
from ansible_collections.strata.ops.plugins.module_utils.k8s import objects
from ansible_collections.strata.ops.plugins.module_utils.shutdown import exit as sd_exit
from ansible_collections.strata.ops.plugins.module_utils.shutdown import node as sd_node
from ansible_collections.strata.ops.plugins.module_utils.shutdown import pods as sd_pods
from ansible_collections.strata.ops.plugins.module_utils.shutdown import worker as sd_worker

NS = "val"
SELECTOR = {"matchLabels": {"app": "validator"}}


def workload(*, kind="Deployment", name="validator", ns=NS, uid="dep-uid", replicas=1, selector=None):
    return {
        "kind": kind,
        "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": ns, "uid": uid, "generation": 1},
        "spec": {"replicas": replicas, "selector": selector or SELECTOR},
        "status": {"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas},
    }


def replicaset(name, uid, owner_uid, owner_name="validator", ns=NS):
    return {
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid,
            "labels": {"app": "validator"},
            "ownerReferences": [
                {"kind": "Deployment", "name": owner_name, "uid": owner_uid, "controller": True}
            ],
        },
    }


def pod(name, owner=None, *, labels=None, node="n1", ns=NS, deleting=None, uid=None, ready=True):
    meta = {
        "name": name,
        "namespace": ns,
        "uid": uid or "uid-" + name,
        "labels": labels or {"app": "validator"},
    }
    if owner:
        kind, owner_name, owner_uid = owner
        meta["ownerReferences"] = [{"kind": kind, "name": owner_name, "uid": owner_uid, "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = deleting
    return {
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": node},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


RS_OURS = replicaset("validator-5d8f7", "rs-ours", "dep-uid")
RS_OLD = replicaset("validator-77aa1", "rs-old", "dep-uid")
RS_OTHER = replicaset("validator-canary-1b2c3", "rs-other", "other-dep", owner_name="validator-canary")


# --------------------------------------------------------------------------- selectors


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({"matchLabels": {"app": "v"}}, {"app": "v", "x": "1"}, True),
        ({"matchLabels": {"app": "v"}}, {"app": "w"}, False),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
            {"tier": "b"},
            True,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, {"tier": "a"}, False),
        ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {"gpu": ""}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, {"gpu": "1"}, False),
        ({"matchExpressions": [{"key": "gpu", "operator": "Gt", "values": ["1"]}]}, {"gpu": "2"}, False),
        ({}, {"app": "v"}, False),  # an empty selector claims nothing
        (None, {"app": "v"}, False),
    ],
)
def test_selector_matches(selector, labels, expected):
    assert objects.selector_matches(selector, labels) is expected


def test_selector_string_as_kubectl_takes_it():
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["web", "api"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "gpu", "operator": "Exists"},
            {"key": "spot", "operator": "DoesNotExist"},
        ],
    }
    assert objects.selector_string(selector) == "a=1,b=2,tier in (api,web),env notin (dev),gpu,!spot"
    assert objects.selector_string(None) == ""


# --------------------------------------------------------------------------- ownership


def test_deployment_owns_pods_of_its_replicasets_only():
    own = objects.Ownership(workload(), [RS_OURS, RS_OLD, RS_OTHER])
    assert own.uids == {"dep-uid", "rs-ours", "rs-old"}
    ours = pod("validator-5d8f7-abc", ("ReplicaSet", "validator-5d8f7", "rs-ours"))
    old = pod("validator-77aa1-def", ("ReplicaSet", "validator-77aa1", "rs-old"))
    # same labels, but its ReplicaSet is known to belong to another Deployment
    other = pod("validator-canary-1b2c3-x", ("ReplicaSet", "validator-canary-1b2c3", "rs-other"))
    # a bare pod carrying the label: labels alone never make a pod ours
    bare = pod("debug-shell", node="kind-node")
    elsewhere = pod("validator-5d8f7-zzz", ("ReplicaSet", "validator-5d8f7", "rs-ours"), ns="other-ns")
    assert [p["metadata"]["name"] for p in own.pods([ours, old, other, bare, elsewhere])] == [
        "validator-5d8f7-abc",
        "validator-77aa1-def",
    ]
    assert str(own) == "Deployment val/validator"


def test_deployment_selector_fallback_for_a_replicaset_created_during_the_wait():
    own = objects.Ownership(workload(), [RS_OURS])
    new_rs = pod("validator-9f9f9-aaa", ("ReplicaSet", "validator-9f9f9", "rs-new"))
    assert own.owns(new_rs)
    # unknown ReplicaSet but another workload's name prefix: not ours
    assert not own.owns(pod("web-9f9f9-aaa", ("ReplicaSet", "web-9f9f9", "rs-web")))
    # unknown ReplicaSet with our name but labels outside our selector: not ours
    assert not own.owns(
        pod("validator-9f9f9-b", ("ReplicaSet", "validator-9f9f9", "rs-n"), labels={"app": "x"})
    )
    # a Job's pod with our labels: not a ReplicaSet, not ours
    assert not own.owns(pod("validator-job-1", ("Job", "validator-job", "job-uid")))


def test_statefulset_owns_its_pods_directly():
    sts = workload(kind="StatefulSet", name="indexer", uid="sts-uid")
    own = objects.Ownership(sts)
    assert own.owns(pod("indexer-0", ("StatefulSet", "indexer", "sts-uid")))
    # a same-named StatefulSet that was deleted and recreated has another uid
    assert not own.owns(pod("indexer-1", ("StatefulSet", "indexer", "old-sts-uid")))
    # no selector fallback for StatefulSets
    assert not own.owns(pod("indexer-2", ("ReplicaSet", "indexer-2f", "rs-x")))


# --------------------------------------------------------------------------- tracker


class Clock:
    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


def test_tracker_records_first_seen_deletion_and_gone():
    clock = Clock()
    own = objects.Ownership(workload(), [RS_OURS])
    tracker = sd_pods.PodTracker(own, clock=clock, wall=lambda: 1_780_000_000.0 + clock.now)
    owner = ("ReplicaSet", "validator-5d8f7", "rs-ours")
    a, b = pod("validator-5d8f7-a", owner, node="n1"), pod("validator-5d8f7-b", owner, node="n2")
    unrelated = pod("other", labels={"app": "other"})
    assert tracker([a, b, unrelated]) is False
    clock.now = 101.0
    tracker.mark_scaled()
    clock.now = 101.5
    deleting_a = pod("validator-5d8f7-a", owner, node="n1", deleting="2026-11-30T10:00:03Z")
    assert tracker([deleting_a, b]) is False
    clock.now = 104.5
    assert tracker([b]) is False  # a's DELETED event
    assert tracker.still_present()[0]["name"] == "validator-5d8f7-b"
    clock.now = 105.0
    assert tracker([unrelated]) is True  # b's DELETED event: nothing of ours left
    clock.now = 105.25
    records = {r["name"]: r for r in tracker.pods()}
    assert list(records) == ["validator-5d8f7-a", "validator-5d8f7-b"]
    assert records["validator-5d8f7-a"]["termination_seconds"] == 3.0  # from deletionTimestamp seen
    assert records["validator-5d8f7-a"]["deletion_timestamp"] == "2026-11-30T10:00:03Z"
    assert records["validator-5d8f7-b"]["termination_seconds"] == 4.0  # from the scale to 0
    assert records["validator-5d8f7-b"]["node"] == "n2"
    assert records["validator-5d8f7-a"]["gone_at"].endswith("Z")
    assert all(not k.startswith("_") for r in records.values() for k in r)
    assert tracker.still_present() == []
    assert tracker.since_last_gone() == 0.25


def test_tracker_with_nothing_to_wait_for():
    tracker = sd_pods.PodTracker(objects.Ownership(workload()), clock=Clock())
    assert tracker([]) is True
    assert tracker.pods() == []
    assert tracker.since_last_gone() is None


def test_ready_pods_predicate_counts_ready_non_terminating_pods():
    own = objects.Ownership(workload(replicas=2), [RS_OURS])
    owner = ("ReplicaSet", "validator-5d8f7", "rs-ours")
    ready = sd_pods.ready_pods_predicate(own, 2)
    a, b = pod("validator-5d8f7-a", owner), pod("validator-5d8f7-b", owner)
    assert ready([a, b])
    assert not ready([a])
    assert not ready([a, pod("validator-5d8f7-b", owner, ready=False)])
    # an old pod still terminating does not count either way
    assert ready([a, b, pod("validator-5d8f7-c", owner, deleting="2026-01-01T00:00:00Z")])
    assert not ready([a, b, pod("validator-5d8f7-c", owner)])  # three active: not settled


# --------------------------------------------------------------------------- node restart


def test_restart_blockers_by_node_name_not_labels():
    owner = ("ReplicaSet", "validator-5d8f7", "rs-ours")
    own = objects.Ownership(workload(), [RS_OURS])
    pods = [
        pod("validator-5d8f7-a", owner, node="kind-node"),
        pod("validator-5d8f7-b", owner, node="other-node"),  # ours, elsewhere
        pod("lookalike", node="kind-node"),  # our labels, not ours: restartable by name here
        pod("validator-5d8f7-c", owner, node="kind-node", deleting="2026-11-30T10:00:00Z"),
    ]
    found, going = sd_node.restart_blockers(pods, "kind-node", [own], [sd_pods.PodRef("lookalike", NS)])
    assert [b["name"] for b in found] == ["validator-5d8f7-a", "validator-5d8f7-c"]
    assert (found[0]["workload"], found[0]["why"]) == ("Deployment val/validator", "protected")
    assert [(g["name"], g["workload"], g["why"]) for g in going] == [
        ("lookalike", "Pod val/lookalike", "restartable")
    ]
    text = sd_pods.describe_pods(found)
    assert "val/validator-5d8f7-a on node kind-node of Deployment val/validator (protected)" in text
    assert "terminating, deletionTimestamp 2026-11-30T10:00:00Z" in text


def daemon_pod(name, node="kind-node"):
    found = pod(name, ("DaemonSet", "kube-proxy", "ds-uid"), node=node, ns="kube-system")
    return found


def test_every_pod_that_matters_blocks_without_any_list():
    """No protected, no restartable: any pod but DaemonSet, static and finished pods blocks."""
    mirror = pod("etcd-kind-node", ("Node", "kind-node", "node-uid"), node="kind-node", ns="kube-system")
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    done = pod("migrate-x", ("Job", "migrate", "job-uid"), node="kind-node")
    done["status"]["phase"] = "Succeeded"
    bare = pod("debug-shell", node="kind-node")
    pods = [RUNNING_POD, daemon_pod("kube-proxy-x"), mirror, done, bare]
    found, going = sd_node.restart_blockers(pods, "kind-node")
    assert [(b["name"], b["workload"], b["why"]) for b in found] == [
        ("validator-5d8f7-a", "ReplicaSet val/validator-5d8f7", "not restartable"),
        ("debug-shell", "no controller", "not restartable"),
    ]
    assert [(g["name"], g["why"]) for g in going] == [
        ("kube-proxy-x", "DaemonSet pod"),
        ("etcd-kind-node", "static pod"),
        ("migrate-x", "finished, Succeeded"),
    ]


def test_describe_pods_limits_the_list():
    briefs = [{"name": f"p{i}", "namespace": "ns", "node": None} for i in range(12)]
    text = sd_pods.describe_pods(briefs, limit=3)
    assert text == "ns/p0 (not scheduled), ns/p1 (not scheduled), ns/p2 (not scheduled), and 9 more"
    assert sd_pods.describe_pods([]) == "none"


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("unix:///var/run/docker.sock", "/var/run/docker.sock"),
        ("unix:///run/user/1000/docker.sock", "/run/user/1000/docker.sock"),
        ("/var/run/docker.sock", "/var/run/docker.sock"),
        (None, "/var/run/docker.sock"),
    ],
)
def test_docker_socket_path(value, path):
    assert sd_node.docker_socket_path(value) == path


def test_docker_socket_path_refuses_tcp():
    with pytest.raises(sd.ShutdownError, match="only the local Docker socket"):
        sd_node.docker_socket_path("tcp://10.0.0.1:2376")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-30T10:00:01.123456789Z", datetime.datetime(2026, 11, 30, 10, 0, 1, 123456)),  # Docker
        ("2026-11-30T10:00:01.5Z", datetime.datetime(2026, 11, 30, 10, 0, 1, 500000)),
        ("2026-11-30T10:00:01Z", datetime.datetime(2026, 11, 30, 10, 0, 1)),
        ("2026-11-30T10:00:01.000001Z", datetime.datetime(2026, 11, 30, 10, 0, 1, 1)),  # MicroTime
    ],
)
def test_parse_time(text, expected):
    assert objects.parse_time(text) == expected.replace(tzinfo=datetime.timezone.utc)


def test_parse_time_empty_and_docker_zero():
    assert objects.parse_time("") is None
    assert objects.parse_time("0001-01-01T00:00:00Z") is None
    assert objects.parse_time("yesterday") is None


def test_lease_renewed_since():
    since = objects.parse_time("2026-11-30T10:00:01.5Z")
    check = sd_node.lease_renewed_since(since)
    assert not check([{"spec": {"renewTime": "2026-11-30T10:00:01.400000Z"}}])
    assert check([{"spec": {"renewTime": "2026-11-30T10:00:02.000000Z"}}])
    assert not check([{"spec": {}}])
    assert not check([])


# --------------------------------------------------------------------------- exit command


def popen_run_command(argv, before_communicate_callback=None, handle_exceptions=True):
    """What AnsibleModule.run_command does that matters here (Popen, callback, communicate)."""
    assert handle_exceptions is False
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if before_communicate_callback:
        before_communicate_callback(proc)
    out, err = proc.communicate()
    return proc.returncode, out, err


def test_exit_command_ok():
    result = sd_exit.run_exit_command(popen_run_command, [sys.executable, "-c", "print('bye')"], 10)
    assert result["ok"] is True
    assert (result["rc"], result["stdout"], result["timed_out"]) == (0, "bye\n", False)
    assert "error" not in result


def test_exit_command_failure_says_rc_and_stderr():
    argv = [sys.executable, "-c", "import sys; sys.exit('admin socket not found')"]
    result = sd_exit.run_exit_command(popen_run_command, argv, 10)
    assert result["ok"] is False
    assert result["error"] == "exited with rc 1: admin socket not found"


def test_exit_command_timeout_kills_it():
    argv = [sys.executable, "-c", "import time; time.sleep(30)"]
    result = sd_exit.run_exit_command(popen_run_command, argv, 0.5)
    assert result["ok"] is False
    assert result["timed_out"] is True
    assert result["elapsed"] < 10
    assert "did not finish within exit_timeout (0.5 s)" in result["error"]


def test_exit_command_not_found():
    result = sd_exit.run_exit_command(popen_run_command, ["/nonexistent/agave-validator", "exit"], 5)
    assert result["ok"] is False
    assert result["rc"] is None
    assert result["error"].startswith("/nonexistent/agave-validator: ")


# --------------------------------------------------------------------------- the states (fake client)


class FakeClient:
    """Objects by (kind, namespace, name); watch_until plays ``script[kind]`` (lists of items)
    through the predicate and times out when it never holds. Every write is recorded."""

    def __init__(self, objects, script=None, nodes=("kind-node",)):
        self.objects = {}
        for obj in objects:
            meta = obj["metadata"]
            self.objects[(obj["kind"], meta.get("namespace"), meta["name"])] = obj
        for name in nodes:
            self.objects[("Node", None, name)] = {"kind": "Node", "metadata": {"name": name}}
        self.objects[("Namespace", None, NS)] = {"kind": "Namespace", "metadata": {"name": NS}}
        self.script = script or {}
        self.writes = []
        self.watched = []

    def get(self, kind, name, namespace=None, subresource=None):
        ns = namespace if kind not in ("Node", "Namespace") else None
        try:
            return self.objects[(kind, ns, name)]
        except KeyError:
            raise k8s.K8sNotFound(f"{kind} {name} not found") from None

    def get_node(self, name):
        return self.get("Node", name)

    def list(self, kind, namespace=None, label_selector=None, field_selector=None):
        items = [o for (k, ns, _n), o in self.objects.items() if k == kind and namespace in (None, ns)]
        if field_selector and field_selector.startswith("spec.nodeName="):
            node = field_selector.split("=", 1)[1]
            items = [i for i in items if i.get("spec", {}).get("nodeName") == node]
        return items, "1"

    def scale(self, kind, name, namespace, replicas, dry_run=False):
        self.writes.append(("scale", kind, name, namespace, replicas))
        return 1, replicas

    def watch_until(self, kind, predicate, namespace=None, *, timeout=60, summarize=None, **kwargs):
        self.watched.append((kind, timeout))
        for items in self.script.get(kind, []):
            if predicate(items):
                return {"items": items, "elapsed": 0.1, "events": 1, "resource_version": "2", "relists": 0}
        raise k8s.K8sTimeout("timed out", waited_for="x", last=summarize(items) if summarize else [])


def params(**kw):
    base = {
        "state": "stopped",
        "kind": "Deployment",
        "name": "validator",
        "namespace": NS,
        "replicas": 1,
        "timeout": 30,
        "exit_command": None,
        "exit_timeout": 10,
        "exit_failure_ok": False,
        "exit_in": "host",
        "node": None,
        "node_container": None,
        "docker_host": "unix:///var/run/docker.sock",
        "node_stop_timeout": 5,
        "wait_node_ready": True,
        "protected": [],
        "restartable": [],
        "force": False,
    }
    base.update(kw)
    return base


OWNER = ("ReplicaSet", "validator-5d8f7", "rs-ours")
RUNNING_POD = pod("validator-5d8f7-a", OWNER, node="kind-node")


def test_unknown_workload_lists_those_that_exist_and_the_other_kind():
    client = FakeClient(
        [workload(name="validator-0"), workload(kind="StatefulSet", name="validator", uid="s")]
    )
    worker = sd_worker.SafeShutdown(client, params(name="validator"))
    with pytest.raises(k8s.K8sNotFound) as err:
        worker.run()
    text = str(err.value)
    assert "Deployment val/validator does not exist. Deployments in namespace val: validator-0." in text
    assert "A StatefulSet of that name exists there: set kind: StatefulSet." in text
    assert err.value.details["existing"] == ["validator-0"]
    assert client.writes == []


def test_unknown_namespace_says_so():
    worker = sd_worker.SafeShutdown(FakeClient([]), params(namespace="nope"))
    with pytest.raises(k8s.K8sNotFound, match="namespace 'nope' does not exist"):
        worker.run()


def test_stopped_check_mode_reports_and_writes_nothing():
    client = FakeClient([workload(), RS_OURS, RUNNING_POD])
    ran = []
    worker = sd_worker.SafeShutdown(
        client,
        params(exit_command=["agave-validator", "exit"]),
        run_command=agave_cli("2.2.14", ran),
        check_mode=True,
    )
    result = worker.run()
    assert client.writes == [] and client.watched == []
    assert ran == [["agave-validator", "--version"]]  # read-only, also in check mode
    assert result["changed"] is True
    assert result["diff"] == {"before": {"replicas": 1}, "after": {"replicas": 0}}
    assert result["msg"].startswith(
        "check mode: would run agave-validator exit --wait-for-exit (agave 2.2.14 before 3.0: "
        "--wait-for-exit added, without it exit returns before the validator process has exited), "
        "then scale Deployment val/"
    )
    assert "val/validator-5d8f7-a on node kind-node" in result["msg"]
    assert result["exit_command"] is None


def test_exit_in_pod_is_refused_before_anything_happens():
    client = FakeClient([workload(), RS_OURS, RUNNING_POD])
    with pytest.raises(sd.ShutdownError, match="exit_in: pod is not supported yet"):
        sd_worker.SafeShutdown(client, params(exit_command=["x"], exit_in="pod"), check_mode=True).run()
    assert client.writes == []
    with pytest.raises(sd.ShutdownError, match="state=exited on the workload host"):
        sd_worker.SafeShutdown(None, params(state="exited", exit_command=["x"], exit_in="pod")).run()


def test_stopped_already_stopped_is_not_a_change():
    client = FakeClient([workload(replicas=0), RS_OURS], script={"Pod": [[]]})
    result = sd_worker.SafeShutdown(client, params(exit_command=["false"])).run()
    assert result["changed"] is False
    assert result["exit_command"] is None  # nothing runs: nothing to stop
    assert client.writes == []
    assert result["last_pod_gone_to_return"] is None


def test_stopped_scales_then_waits_for_the_pods():
    client = FakeClient([workload(), RS_OURS, RUNNING_POD], script={"Pod": [[RUNNING_POD], []]})
    result = sd_worker.SafeShutdown(client, params()).run()
    assert client.writes == [("scale", "Deployment", "validator", NS, 0)]
    assert result["changed"] is True
    assert [p["name"] for p in result["pods"]] == ["validator-5d8f7-a"]
    assert result["pods"][0]["gone_at"]
    assert result["last_pod_gone_to_return"] is not None


def test_stopped_timeout_names_the_pods_and_touches_nothing_else():
    client = FakeClient([workload(), RS_OURS, RUNNING_POD], script={"Pod": [[RUNNING_POD]]})
    with pytest.raises(k8s.K8sTimeout) as err:
        sd_worker.SafeShutdown(client, params(timeout=5)).run()
    assert "val/validator-5d8f7-a on node kind-node" in str(err.value)
    assert "nothing else was touched" in str(err.value)
    assert client.writes == [("scale", "Deployment", "validator", NS, 0)]  # no rescale after it
    assert err.value.details["still_present"][0]["name"] == "validator-5d8f7-a"
    assert "msg" not in err.value.details  # fail_json gets msg from the exception only


def test_stopped_exit_command_failure_does_not_scale():
    client = FakeClient([workload(), RS_OURS, RUNNING_POD], script={"Pod": [[]]})
    worker = sd_worker.SafeShutdown(
        client,
        params(exit_command=[sys.executable, "-c", "raise SystemExit(3)"]),
        run_command=popen_run_command,
    )
    with pytest.raises(sd.ExitCommandFailed, match=r"was NOT scaled \(replicas still 1\)"):
        worker.run()
    assert client.writes == []


def test_stopped_exit_failure_ok_scales_anyway():
    client = FakeClient([workload(), RS_OURS, RUNNING_POD], script={"Pod": [[]]})
    worker = sd_worker.SafeShutdown(
        client,
        params(exit_command=[sys.executable, "-c", "raise SystemExit(3)"], exit_failure_ok=True),
        run_command=popen_run_command,
    )
    result = worker.run()
    assert result["exit_command"]["rc"] == 3
    assert client.writes == [("scale", "Deployment", "validator", NS, 0)]


def test_stopped_api_lost_during_the_wait():
    class Lost(FakeClient):
        def watch_until(self, kind, predicate, namespace=None, **kwargs):
            raise k8s.K8sUnreachable("connection refused", url="https://127.0.0.1:1")

    client = Lost([workload(), RS_OURS, RUNNING_POD])
    with pytest.raises(k8s.K8sUnreachable) as err:
        sd_worker.SafeShutdown(client, params()).run()
    assert "became unreachable" in str(err.value)
    assert "Do NOT restart the node" in str(err.value)
    assert err.value.details["url"] == "https://127.0.0.1:1"


def test_running_refuses_zero_and_scales_in_check_mode_only_on_paper():
    client = FakeClient([workload(replicas=0), RS_OURS])
    with pytest.raises(sd.ShutdownError, match="use state=stopped"):
        sd_worker.SafeShutdown(client, params(state="running", replicas=0)).run()
    result = sd_worker.SafeShutdown(client, params(state="running", replicas=2), check_mode=True).run()
    assert result["diff"] == {"before": {"replicas": 0}, "after": {"replicas": 2}}
    assert result["changed"] is True
    assert client.writes == []


class FakeDocker:
    def __init__(self, started="2026-11-30T10:00:00.1Z"):
        self.started = started
        self.restarts = []

    def inspect(self, ref):
        if ref != "kind-node":
            raise ctr.TargetNotFound("no such container " + ref)
        return {"State": {"Running": True, "StartedAt": self.started, "Status": "running"}}

    def restart(self, ref, stop_timeout=10):
        self.restarts.append((ref, stop_timeout))
        self.started = "2026-11-30T10:05:00.1Z"


def test_node_restart_refused_while_a_protected_pod_is_bound_there():
    client = FakeClient([workload(), RS_OURS, RUNNING_POD])
    docker = FakeDocker()
    worker = sd_worker.SafeShutdown(
        client,
        params(state="node_restarted", node="kind-node", protected=[{"name": "validator"}]),
        docker=docker,
    )
    with pytest.raises(sd.RestartRefused) as err:
        worker.run()
    assert "val/validator-5d8f7-a on node kind-node of Deployment val/validator" in str(err.value)
    assert "Nothing was restarted" in str(err.value)
    assert docker.restarts == []


def test_node_restart_force_check_mode_lists_what_it_would_break():
    client = FakeClient([workload(), RS_OURS, RUNNING_POD])
    docker = FakeDocker()
    p = params(state="node_restarted", node="kind-node", protected=[{"name": "validator"}], force=True)
    result = sd_worker.SafeShutdown(client, p, docker=docker, check_mode=True).run()
    assert docker.restarts == []
    assert result["forced"] is True
    assert [b["name"] for b in result["blockers"]] == ["validator-5d8f7-a"]
    assert "BREAK these running pods (force): val/validator-5d8f7-a" in result["msg"]


def test_node_restart_when_clear_and_waits_for_the_node():
    lease = {"kind": "Lease", "metadata": {"name": "kind-node", "namespace": "kube-node-lease"}}
    ready = {
        "kind": "Node",
        "metadata": {"name": "kind-node"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    stale = {"spec": {"renewTime": "2026-11-30T10:04:59.000000Z"}}
    fresh = {"spec": {"renewTime": "2026-11-30T10:05:03.000000Z"}}
    client = FakeClient(
        [workload(replicas=0), RS_OURS, lease], script={"Lease": [[stale], [fresh]], "Node": [[ready]]}
    )
    docker = FakeDocker()
    p = params(state="node_restarted", node="kind-node", protected=[{"name": "validator"}])
    result = sd_worker.SafeShutdown(client, p, docker=docker).run()
    assert docker.restarts == [("kind-node", 5)]
    assert result["changed"] is True
    assert result["started_at_after"] == "2026-11-30T10:05:00.1Z"
    assert [k for k, _t in client.watched] == ["Lease", "Node"]


def test_node_restart_unknown_container_is_clear():
    client = FakeClient([])
    p = params(state="node_restarted", node="kind-node", node_container="laconic-x-control-plane")
    with pytest.raises(sd.NodeContainerError, match="set node_container to the kind node's container"):
        sd_worker.SafeShutdown(client, p, docker=FakeDocker()).run()


def test_module_file_argument_spec_matches_the_documentation():
    """The interface the playbooks call: every documented option is in the argument spec."""
    path = os.path.join(
        os.path.dirname(__file__), "..", "..", "..", "..", "plugins", "modules", "safe_shutdown.py"
    )
    with open(path) as handle:
        source = handle.read()
    doc = yaml.safe_load(source.split('DOCUMENTATION = r"""', 1)[1].split('"""', 1)[0])
    for option in (
        "state",
        "kind",
        "name",
        "namespace",
        "replicas",
        "timeout",
        "exit_command",
        "exit_timeout",
    ):
        assert option in doc["options"]
    assert doc["options"]["state"]["choices"] == ["stopped", "running", "node_restarted", "exited"]
    assert doc["options"]["restartable"]["suboptions"]["kind"]["choices"] == list(sd.RESTARTABLE_KINDS)


# --------------------------------------------------------------------------- restart: what matters


def test_node_restart_refused_without_any_list_while_a_pod_runs_there():
    """The old default restarted with a warning when no protected list was given."""
    client = FakeClient([workload(), RS_OURS, RUNNING_POD])
    docker = FakeDocker()
    worker = sd_worker.SafeShutdown(client, params(state="node_restarted", node="kind-node"), docker=docker)
    with pytest.raises(sd.RestartRefused) as err:
        worker.run()
    text = str(err.value)
    assert (
        "pods that matter are bound to it: val/validator-5d8f7-a on node kind-node of ReplicaSet "
        "val/validator-5d8f7 (not restartable)" in text
    )
    assert "name in restartable the workloads or pods that may go down with the node" in text
    assert "Nothing was restarted" in text
    assert docker.restarts == []
    assert worker.warnings == []


def test_node_restart_with_the_workload_named_restartable():
    client = FakeClient(
        [workload(), RS_OURS, RUNNING_POD, daemon_pod("kube-proxy-x")],
        script={"Node": [[{"metadata": {"name": "kind-node"}, "status": {"conditions": []}}]]},
    )
    docker = FakeDocker()
    p = params(state="node_restarted", node="kind-node", restartable=[{"name": "validator"}])
    would = sd_worker.SafeShutdown(client, p, docker=docker, check_mode=True).run()
    assert docker.restarts == []
    assert would["blockers"] == [] and would["forced"] is False
    assert would["restartable"] == ["Deployment val/validator"]
    assert [(g["name"], g["why"]) for g in would["going_down"]] == [
        ("validator-5d8f7-a", "restartable"),
        ("kube-proxy-x", "DaemonSet pod"),
    ]
    assert would["msg"] == (
        "check mode: would restart node container kind-node (node kind-node); no pod that matters is "
        "on it; going down with it: val/validator-5d8f7-a on node kind-node of Deployment val/validator "
        "(restartable), kube-system/kube-proxy-x on node kind-node of DaemonSet kube-system/kube-proxy "
        "(DaemonSet pod)"
    )
    done = sd_worker.SafeShutdown(client, dict(p, wait_node_ready=False), docker=docker).run()
    assert docker.restarts == [("kind-node", 5)]
    assert "went down with it: val/validator-5d8f7-a" in done["msg"]


def test_protected_wins_over_restartable_and_force_warns():
    client = FakeClient([workload(), RS_OURS, RUNNING_POD])
    both = [{"name": "validator"}]
    with pytest.raises(sd.RestartRefused, match=r"of Deployment val/validator \(protected\)"):
        sd_worker.SafeShutdown(
            client,
            params(state="node_restarted", node="kind-node", protected=both, restartable=both),
            docker=FakeDocker(),
        ).run()
    worker = sd_worker.SafeShutdown(
        client,
        params(state="node_restarted", node="kind-node", force=True),
        docker=FakeDocker(),
        check_mode=True,
    )
    result = worker.run()
    assert result["forced"] is True
    assert worker.warnings == [
        "force: restarting node container kind-node breaks these running pods: val/validator-5d8f7-a "
        "on node kind-node of ReplicaSet val/validator-5d8f7 (not restartable)"
    ]


def test_restartable_workload_that_does_not_exist_fails_listing_those_that_do():
    client = FakeClient([workload(), RS_OURS, RUNNING_POD])
    p = params(state="node_restarted", node="kind-node", restartable=[{"kind": "StatefulSet", "name": "db"}])
    with pytest.raises(k8s.K8sNotFound, match="StatefulSet val/db does not exist"):
        sd_worker.SafeShutdown(client, p, docker=FakeDocker()).run()


# --------------------------------------------------------------------------- agave's exit


def agave_cli(version, ran=None):
    """run_command of a machine whose agave-validator --version prints this version (the format
    agave prints); any other command is run for real."""

    def run_command(argv, before_communicate_callback=None, handle_exceptions=True):
        assert handle_exceptions is False
        if argv[1:] == ["--version"]:
            if ran is not None:
                ran.append(list(argv))
            return 0, f"agave-validator {version} (src:0d3b0a46; feat:3294202862, client:Agave)\n", ""
        return popen_run_command(argv, before_communicate_callback, handle_exceptions)

    return run_command


EXIT = ["agave-validator", "--ledger", "/srv/kind/solana/ledger", "exit", "--force"]


@pytest.mark.parametrize(
    ("argv", "version_text", "ran", "wait"),
    [
        (EXIT, "agave-validator 2.2.14 (src:0d3b0a46; feat:3294202862, client:Agave)",
         [*EXIT, "--wait-for-exit"], "agave 2.2.14 before 3.0: --wait-for-exit added"),
        (EXIT, "solana-validator 1.18.26 (src:d9f20e95; feat:3241752014, client:SolanaLabs)",
         [*EXIT, "--wait-for-exit"], "agave 1.18.26 before 3.0"),
        (EXIT, "agave-validator 3.0.7 (src:1; feat:2, client:Agave)", EXIT,
         "agave 3.0.7 waits for the validator process to exit by default"),
        ([*EXIT, "--wait-for-exit"], "agave-validator 4.0.0 (src:1)", EXIT,
         "--wait-for-exit left out (deprecated in 3.0, refused by 4.x)"),
        ([*EXIT, "--no-wait-for-exit"], "agave-validator 2.3.1 (src:1)", [*EXIT, "--no-wait-for-exit"],
         "agave 2.3.1: as given (--no-wait-for-exit)"),
        ([*EXIT, "--monitor", "--no-wait-for-exit"], "agave-validator 3.1.0 (src:1)",
         [*EXIT, "--monitor", "--no-wait-for-exit"], "agave 3.1.0: as given (--monitor --no-wait-for-exit)"),
        (["/opt/agave/bin/agave-validator", "-l", "/l", "exit"], "agave-validator 2.1.0", None,
         "--wait-for-exit added"),
        (["sh", "-c", "exit 0"], None, ["sh", "-c", "exit 0"], "as given (not an agave-validator exit)"),
    ],
)  # fmt: skip
def test_agave_exit_plan(argv, version_text, ran, wait):
    plan = sd_exit.agave_exit_plan(argv, version_text)
    assert plan["argv"] == (ran if ran is not None else [*argv, "--wait-for-exit"])
    assert wait in plan["wait"]
    assert "warning" not in plan


def test_agave_exit_plan_unknown_version_runs_as_given_with_a_warning():
    plan = sd_exit.agave_exit_plan(EXIT, "rc 127: agave-validator: not found")
    assert plan["argv"] == EXIT and plan["agave_version"] is None and plan["warning"] is True
    assert "agave version is unknown (agave-validator --version: rc 127" in plan["wait"]
    assert sd_exit.is_agave_exit(EXIT) and not sd_exit.is_agave_exit(["agave-validator", "monitor"])


# --------------------------------------------------------------------------- state exited


def test_exited_runs_only_the_exit_command_and_says_how_it_waited(tmp_path):
    marker = tmp_path / "ran"
    argv = [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('x')"]
    would = sd_worker.SafeShutdown(None, params(state="exited", exit_command=argv), check_mode=True).run()
    assert would["changed"] is True and would["exit_command"] is None
    assert would["msg"].startswith("check mode: would run ")
    assert not marker.exists()
    result = sd_worker.SafeShutdown(
        None, params(state="exited", exit_command=argv), run_command=popen_run_command
    ).run()
    assert marker.exists()
    assert result["exit_command"]["ok"] is True and result["exit_command"]["wait"].startswith("as given")
    assert result["msg"].startswith("exit command ") and "ran here (as given" in result["msg"]


def test_exited_agave_2_gets_the_wait_flag_and_a_failure_stops_there():
    ran = []
    worker = sd_worker.SafeShutdown(
        None,
        params(state="exited", exit_command=["agave-validator", "exit"]),
        run_command=agave_cli("2.2.14", ran),
    )
    with pytest.raises(sd.ExitCommandFailed) as err:  # no agave-validator on this machine
        worker.run()
    details = err.value.details["exit_command"]
    assert details["argv"] == ["agave-validator", "exit", "--wait-for-exit"]
    assert details["agave_version"] == "2.2.14"
    assert "Nothing else was done (this state scales nothing)" in str(err.value)
    assert "agave 2.2.14 before 3.0: --wait-for-exit added" in str(err.value)
