"""Unit tests of plugins/module_utils/k8s.py: pure predicates and health checks, certificate
validity, kubeconfig and HTTP error mapping, and watch_until's list/watch/re-list logic."""

import datetime
import json
import re

import pytest
import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.strata.ops.plugins.module_utils import health, k8s


def node(name, *, ready=True, unschedulable=False, labels=None, taints=None, pressure=None):
    conds = [{"type": "Ready", "status": "True" if ready else "False", "reason": "KubeletReady"}]
    for ctype in pressure or []:
        conds.append({"type": ctype, "status": "True"})
    return {
        "metadata": {"name": name, "labels": labels or {}, "resourceVersion": "1"},
        "spec": {"unschedulable": unschedulable, "taints": taints or []},
        "status": {"conditions": conds, "allocatable": {"cpu": "8"}},
    }


def pod(name, *, phase="Running", ready=True, waiting=None, restarts=0, deleting=False, ns="ns"):
    meta = {"name": name, "namespace": ns}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "metadata": meta,
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "c", "state": state, "restartCount": restarts}],
        },
    }


def deployment(name, replicas=2, ready=2, generation=1, observed=1):
    return {
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ns", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas,
        },
    }


# ---------------------------------------------------------------- predicates


def test_node_and_pod_readiness():
    assert k8s.node_is_ready(node("a"))
    assert not k8s.node_is_ready(node("a", ready=False))
    assert not k8s.node_is_ready({"metadata": {"name": "x"}})
    assert k8s.pod_is_ready(pod("p"))
    assert not k8s.pod_is_ready(pod("p", ready=False))
    assert not k8s.pod_is_ready(pod("p", deleting=True))
    assert not k8s.pod_is_ready(pod("p", phase="Pending"))


@pytest.mark.parametrize(
    ("obj", "ready"),
    [
        (deployment("d"), True),
        (deployment("d", ready=1), False),
        (deployment("d", generation=2, observed=1), False),
        (deployment("d", replicas=0, ready=0), True),
    ],
)
def test_workload_is_ready(obj, ready):
    assert k8s.workload_is_ready(obj) is ready


def statefulset(current="web-2", update="web-2", updated=3, strategy=None):
    """A StatefulSet of 3 replicas, all ready, as a list item (no kind), at the given revisions."""
    return {
        "metadata": {"name": "web", "namespace": "ns", "generation": 2},
        "spec": {"replicas": 3, **({"updateStrategy": strategy} if strategy else {})},
        "status": {
            "observedGeneration": 2,
            "replicas": 3,
            "readyReplicas": 3,
            "updatedReplicas": updated,
            "currentRevision": current,
            "updateRevision": update,
        },
    }


@pytest.mark.parametrize(
    ("obj", "ready"),
    [
        (statefulset(), True),
        # every pod counted updated and ready, but the controller has not finished the roll yet
        (statefulset(current="web-1"), False),
        (statefulset(current="web-1", updated=2), False),
        # a partition of 2: pods 2.. updated is the whole roll (kubectl: "partitioned roll out complete")
        (statefulset(current="web-1", updated=1, strategy={"rollingUpdate": {"partition": 2}}), True),
        (statefulset(current="web-1", updated=0, strategy={"rollingUpdate": {"partition": 2}}), False),
        # OnDelete: revisions move only as pods are deleted; every pod updated is enough
        (statefulset(current="web-1", strategy={"type": "OnDelete"}), True),
        (statefulset(current="web-1", updated=2, strategy={"type": "OnDelete"}), False),
    ],
    ids=[
        "rolled-out",
        "revision-not-moved",
        "rolling",
        "partition-done",
        "partition-rolling",
        "ondelete-done",
        "ondelete-old-pod",
    ],
)
def test_a_statefulset_is_ready_when_its_controller_says_the_roll_is_done(obj, ready):
    assert k8s.workload_is_ready(obj) is ready


def test_set_predicates():
    assert k8s.no_items([])
    assert not k8s.no_items([pod("p")])
    every = k8s.all_items(k8s.pod_is_ready, minimum=2)
    assert not every([pod("a")])
    assert every([pod("a"), pod("b")])
    assert not every([pod("a"), pod("b", ready=False)])
    named = k8s.named_ready(["a", "b"])
    assert not named([node("a")])
    assert not named([node("a"), node("b", ready=False)])
    assert named([node("a"), node("b"), node("c", ready=False)])
    assert "a, b" in named.__doc__


# ---------------------------------------------------------------- health checks


def test_node_problems():
    assert health.node_problems(node("a")) == []
    reasons = [p["reason"] for p in health.node_problems(node("a", ready=False, unschedulable=True))]
    assert reasons[0].startswith("not Ready")
    assert reasons[1].startswith("cordoned")
    assert health.node_problems(node("a", pressure=["DiskPressure"]))[0]["reason"] == "DiskPressure"


def test_expected_node_problems():
    taint = {"key": "experiment", "value": "dedicated", "effect": "NoSchedule"}
    nodes = [
        health.node_summary(node("a", labels={"role": "w"})),
        health.node_summary(node("b", taints=[taint])),
    ]
    expected = {
        "a": {"labels": {"role": "w"}, "taints": []},
        "b": {"labels": {"role": "x"}, "taints": [taint]},
        "c": {},
    }
    got = health.expected_node_problems(nodes, expected)
    assert [(p["name"], p["reason"]) for p in got] == [
        ("b", "label role=x expected, found none"),
        ("c", "expected node is not registered"),
    ]
    got = health.expected_node_problems(nodes, {"a": {"taints": [taint]}, "b": {"taints": []}})
    assert [p["reason"] for p in got] == [
        "taint experiment=dedicated:NoSchedule missing",
        "unexpected taint experiment=dedicated:NoSchedule",
    ]


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        (pod("p", ready=False, waiting="CrashLoopBackOff", restarts=5), "CrashLoopBackOff"),
        (pod("p", restarts=7), "restarted 7 times"),
        (pod("p", phase="Pending", ready=False), "phase Pending"),
        (pod("p", ready=False), "not Ready"),
        (pod("p", deleting=True), "terminating"),
        (pod("p", ready=False, waiting="ImagePullBackOff"), "ImagePullBackOff"),
    ],
)
def test_pod_problems(obj, fragment):
    found = health.pod_problems(obj, restart_threshold=3)
    assert len(found) == 1
    assert fragment in found[0]["reason"]
    assert found[0]["namespace"] == "ns"


def test_pod_without_problems():
    assert health.pod_problems(pod("p")) == []
    assert health.pod_problems(pod("p", restarts=7), restart_threshold=0) == []
    assert health.pod_problems(pod("p", phase="Succeeded", ready=False)) == []


def test_workload_problems():
    assert health.workload_problems(deployment("d")) == []
    assert health.workload_problems(deployment("d", ready=1))[0]["reason"] == "1/2 replicas ready"


def pv(name, path, local=False):
    key = "local" if local else "hostPath"
    return {"metadata": {"name": name}, "spec": {key: {"path": path}}}


def test_kind_node_path():
    assert health.kind_node_path("/srv/kind/solana/ledger", "/srv/kind", "/mnt") == "/mnt/solana/ledger"
    assert health.kind_node_path("/srv/kind", "/srv/kind", "/mnt") == "/mnt"
    assert health.kind_node_path("/srv/kindling/x", "/srv/kind", "/mnt") is None
    assert health.kind_node_path("/srv/solana/ledger", "/srv/kind", "/mnt") is None


@pytest.mark.parametrize(
    ("obj", "expected", "fragment"),
    [
        (pv("ledger", "/mnt/solana/ledger"), "/srv/kind/solana/ledger", None),
        (pv("ledger", "/mnt/ledger"), "/srv/kind/solana/ledger", "should be /mnt/solana/ledger"),
        (pv("ledger", "/srv/kind/solana/ledger"), None, "is a host path; inside the kind node it is"),
        (pv("ledger", "/srv/solana/ledger"), None, "outside /mnt"),
        (pv("ledger", "/mnt/x", local=True), None, None),
        (pv("ledger", "/mnt/x"), "/srv/solana/x", "outside host_path_root"),
        ({"metadata": {"name": "nfs"}, "spec": {"nfs": {}}}, None, None),
    ],
)
def test_pv_problems(obj, expected, fragment):
    found = health.pv_problems(obj, "/srv/kind", "/mnt", expected)
    if fragment is None:
        assert found == []
    else:
        assert len(found) == 1
        assert fragment in found[0]["reason"]


def test_a_stopped_workload_is_said_first_not_called_healthy():
    line = health.summarize_problems([], {"nodes": 1, "workloads": 1}, ["strata-solana/solana"])
    assert line == (
        "stopped 0/0: strata-solana/solana; nothing else wrong: 1 nodes, 1 workloads "
        "(1 stopped 0/0: strata-solana/solana)"
    )
    problem = [health.problem("Pod", "p", "CrashLoopBackOff", "ns")]
    assert "(1 stopped 0/0: a/b)" in health.summarize_problems(problem, {"pods": 1}, ["a/b"])


@pytest.mark.parametrize(
    ("replicas", "status", "state"),
    [
        (0, {"observedGeneration": 1, "replicas": 0}, "stopped"),
        (0, {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1}, "stopping"),
        (1, {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}, "ready"),
        (1, {"observedGeneration": 1, "replicas": 1}, "not ready"),
    ],
)
def test_workload_state_is_what_an_operator_means(replicas, status, state):
    obj = {
        "kind": "Deployment",
        "metadata": {"name": "solana", "namespace": "strata-solana", "generation": 1},
        "spec": {"replicas": replicas},
        "status": status,
    }
    assert health.workload_summary(obj)["state"] == state


def test_summary():
    assert health.summarize_problems([], {"nodes": 2}) == "healthy: 2 nodes"
    probs = [health.problem("Pod", f"p{i}", "bad", "ns") for i in range(7)]
    line = health.summarize_problems(probs, {"pods": 7})
    assert line.startswith("7 problem(s) in 7 pods: Pod ns/p0: bad")
    assert line.endswith("(and 2 more)")


# ---------------------------------------------------------------- certificates


def make_cert(not_before, not_after):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_certificate_validity_and_problem():
    now = datetime.datetime(2026, 6, 1, 12, 0, 0)
    pem = make_cert(datetime.datetime(2020, 1, 1), datetime.datetime(2026, 1, 1, 8, 30))
    assert k8s.certificate_validity(pem) == (
        datetime.datetime(2020, 1, 1),
        datetime.datetime(2026, 1, 1, 8, 30),
    )
    assert k8s.certificate_problem(pem, now) == "expired at 2026-01-01T08:30:00Z"
    # GeneralizedTime (after 2049) parses too
    pem = make_cert(datetime.datetime(2025, 1, 1), datetime.datetime(2060, 1, 1))
    assert k8s.certificate_problem(pem, now) is None
    assert k8s.certificate_problem(pem, datetime.datetime(2024, 1, 1)).startswith("not valid before")
    assert k8s.certificate_problem(b"garbage") is None


# ---------------------------------------------------------------- kubeconfig errors


def write_kubeconfig(tmp_path, contexts=("a", "b"), current="a", server="https://127.0.0.1:1"):
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": n, "context": {"cluster": "c", "user": "u"}} for n in contexts],
        "current-context": current,
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_missing_kubeconfig(tmp_path):
    with pytest.raises(k8s.K8sConfigError) as err:
        k8s.get_client(str(tmp_path / "nope"))
    assert "does not exist" in str(err.value)
    assert "playbooks/layer3_cluster.yml creates the cluster" in str(err.value)
    assert "tests/testbed" not in str(err.value)  # the test bed is not shipped: never in a message


def test_invalid_kubeconfig(tmp_path):
    path = tmp_path / "bad"
    path.write_text("this: [is not")
    with pytest.raises(k8s.K8sConfigError) as err:
        k8s.get_client(str(path))
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("content", "found"),
    [("strata-lab-1\n", "a YAML str"), ("", "an empty file"), ("- a\n- b\n", "a YAML list")],
)
def test_a_file_that_is_not_a_kubeconfig_is_named_without_a_python_error(tmp_path, content, found):
    path = tmp_path / "hostname"
    path.write_text(content)
    with pytest.raises(k8s.K8sConfigError) as err:
        k8s.get_client(str(path))
    assert f"kubeconfig {path} is not a kubeconfig: it holds {found}" in str(err.value)
    assert "object" not in str(err.value)  # no "'str' object does not support item assignment"


def test_wrong_context_lists_contexts(tmp_path):
    with pytest.raises(k8s.K8sContextError) as err:
        k8s.get_client(write_kubeconfig(tmp_path), context="prod")
    assert "'prod' is not in kubeconfig" in str(err.value)
    assert "contexts there: a, b" in str(err.value)
    assert err.value.details["contexts"] == ["a", "b"]


def test_kubeconfig_path_sources(monkeypatch):
    assert k8s.kubeconfig_path("/x", {})[0] == "/x"
    assert k8s.kubeconfig_path(None, {"KUBECONFIG": "/k1:/k2"}) == ("/k1", "$KUBECONFIG")
    assert k8s.kubeconfig_path(None, {})[1].startswith("the default")


def test_unreachable_names_url(tmp_path):
    with pytest.raises(k8s.K8sUnreachable) as err:
        k8s.get_client(write_kubeconfig(tmp_path), api_timeout=2)
    assert "https://127.0.0.1:1" in str(err.value)
    assert "connection refused" in str(err.value)
    assert err.value.details["url"] == "https://127.0.0.1:1"


# ---------------------------------------------------------------- HTTP error mapping


class FakeResponse:
    def __init__(self, status, payload):
        self.status = status
        self.data = json.dumps(payload).encode()


class FakePool:
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def request(self, method, url, **kwargs):
        self.calls.append((method, url, kwargs))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def fake_client(tmp_path, *answers):
    client = k8s.get_client(write_kubeconfig(tmp_path), probe=False)
    client.pool = FakePool(answers)
    return client


@pytest.mark.parametrize(
    ("status", "exc", "fragment"),
    [
        (401, k8s.K8sAuthError, "rejected the credentials"),
        (403, k8s.K8sAuthError, "forbidden"),
        (404, k8s.K8sNotFound, "Pod ns/p does not exist"),
        (409, k8s.K8sConflict, "conflict"),
        (500, k8s.K8sApiError, "HTTP 500"),
    ],
)
def test_status_mapping(tmp_path, status, exc, fragment):
    client = fake_client(tmp_path, FakeResponse(status, {"message": "m", "reason": "R"}))
    with pytest.raises(exc) as err:
        client.get("Pod", "p", "ns")
    assert fragment in str(err.value)


def test_unknown_node_lists_nodes(tmp_path):
    client = fake_client(
        tmp_path,
        FakeResponse(404, {"message": 'nodes "ghost" not found'}),
        FakeResponse(200, {"metadata": {"resourceVersion": "5"}, "items": [node("b"), node("a")]}),
    )
    with pytest.raises(k8s.K8sNotFound) as err:
        client.get_node("ghost")
    assert "node 'ghost' does not exist" in str(err.value)
    assert "nodes: a, b" in str(err.value)


def test_timeouts_map_to_unreachable(tmp_path):
    pool_err = urllib3.exceptions.MaxRetryError(
        None, "/version", urllib3.exceptions.ConnectTimeoutError(None, "timed out")
    )
    client = fake_client(tmp_path, pool_err, urllib3.exceptions.ReadTimeoutError(None, "/version", "read"))
    with pytest.raises(k8s.K8sUnreachable, match="timed out"):
        client.version()
    with pytest.raises(k8s.K8sUnreachable, match="did not answer"):
        client.version()


def test_patch_content_types_and_scale(tmp_path):
    client = fake_client(
        tmp_path,
        FakeResponse(200, {}),
        FakeResponse(200, {"spec": {"replicas": 3}}),
        FakeResponse(200, {}),
    )
    client.patch(
        "Deployment", "d", [{"op": "replace", "path": "/spec/replicas", "value": 1}], "ns", patch_type="json"
    )
    method, url, kwargs = client.pool.calls[0]
    assert method == "PATCH"
    assert url.endswith("/apis/apps/v1/namespaces/ns/deployments/d")
    assert kwargs["headers"]["Content-Type"] == "application/json-patch+json"
    assert client.scale("Deployment", "d", "ns", 0) == (3, 0)
    method, url, kwargs = client.pool.calls[2]
    assert url.endswith("/deployments/d/scale")
    assert kwargs["headers"]["Content-Type"] == "application/merge-patch+json"
    with pytest.raises(k8s.K8sError, match="list of operations"):
        client.patch("Pod", "p", {"a": 1}, "ns", patch_type="json")
    with pytest.raises(k8s.K8sError, match="cannot scale"):
        client.scale("Pod", "p", "ns", 1)


def test_resource_paths():
    assert k8s.resource_path("Node", name="n") == "/api/v1/nodes/n"
    assert k8s.resource_path("Pod", "ns") == "/api/v1/namespaces/ns/pods"
    assert (
        k8s.resource_path("StatefulSet", "ns", "s", "scale")
        == "/apis/apps/v1/namespaces/ns/statefulsets/s/scale"
    )
    assert k8s.resource_path("Pod") == "/api/v1/pods"
    with pytest.raises(k8s.K8sError, match="unknown kind"):
        k8s.resource_path("Widget")


# ---------------------------------------------------------------- watch_until


class ScriptedClient(k8s.K8sClient):
    """list() and _watch_stream() from scripts: no HTTP."""

    def __init__(self, lists, streams):  # pylint: disable=super-init-not-called
        self.lists = list(lists)
        self.streams = list(streams)
        self.watched_from = []

    def list(self, kind, namespace=None, label_selector=None, field_selector=None):
        return self.lists.pop(0)

    def _watch_stream(self, kind, namespace, resource_version, seconds, **_kw):
        self.watched_from.append(resource_version)
        yield from self.streams.pop(0) if self.streams else []


def ev(etype, obj_name, rv, ready=True):
    obj = pod(obj_name, ready=ready)
    obj["metadata"]["resourceVersion"] = rv
    return {"type": etype, "object": obj}


def test_watch_until_returns_at_once_when_true():
    client = ScriptedClient([([], "10")], [])
    result = client.watch_until("Pod", k8s.no_items, "ns", timeout=5)
    assert result["events"] == 0
    assert client.watched_from == []


def test_watch_until_follows_events_from_list_version():
    client = ScriptedClient(
        [([pod("a"), pod("b")], "10")],
        [
            [
                ev("DELETED", "a", "11"),
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
                ev("DELETED", "b", "13"),
                ev("ADDED", "c", "14"),
            ]
        ],
    )
    result = client.watch_until("Pod", k8s.no_items, "ns", timeout=5)
    assert client.watched_from == ["10"]
    assert result["events"] == 2
    assert result["resource_version"] == "13"
    assert result["items"] == []


def test_watch_until_relists_on_gone():
    client = ScriptedClient(
        [([pod("a")], "10"), ([], "50")],
        [[{"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}}]],
    )
    result = client.watch_until("Pod", k8s.no_items, "ns", timeout=5)
    assert result["relists"] == 1
    assert result["resource_version"] == "50"


def test_watch_until_times_out_with_last_state():
    client = ScriptedClient([([pod("a", ready=False)], "10")], [])
    with pytest.raises(k8s.K8sTimeout) as err:
        client.watch_until("Pod", k8s.all_items(k8s.pod_is_ready), "ns", timeout=0.2)
    assert "ns/a" in str(err.value)
    assert err.value.details["last"] == ["ns/a"]


# ---------------------------------------------------------------- retry_on_conflict


def test_retry_on_conflict_retries_then_returns():
    calls, waits = [], []

    def attempt():
        calls.append(1)
        if len(calls) < 3:
            raise k8s.K8sConflict("conflict", status=409)
        return "done"

    assert k8s.retry_on_conflict(attempt, wait=0.1, sleep=waits.append) == "done"
    assert len(calls) == 3 and waits == [0.1, 0.2]


def test_retry_on_conflict_gives_up_and_passes_other_errors():
    def conflict():
        raise k8s.K8sConflict("still conflicting", status=409)

    with pytest.raises(k8s.K8sConflict, match="still conflicting"):
        k8s.retry_on_conflict(conflict, attempts=2, sleep=lambda s: None)

    def missing():
        raise k8s.K8sNotFound("gone")

    with pytest.raises(k8s.K8sNotFound):
        k8s.retry_on_conflict(missing, sleep=lambda s: None)


# ---------------------------------------------------------------- bad input: clear errors, no crash


@pytest.mark.parametrize("value", [-1, 0, 0.0, None, True, "10"])
def test_api_timeout_must_be_a_positive_number(tmp_path, value):
    with pytest.raises(k8s.K8sArgumentError) as err:
        k8s.get_client(write_kubeconfig(tmp_path), api_timeout=value, probe=False)
    assert f"api_timeout must be 1 second or more, got {value!r}" in str(err.value)
    assert err.value.error_kind == "argument"
    assert err.value.details == {"option": "api_timeout"}


def test_api_timeout_zero_from_a_module_is_not_the_default(tmp_path):
    class Module:
        def __init__(self, api_timeout):
            self.params = {
                "kubeconfig": write_kubeconfig(tmp_path),
                "context": None,
                "api_timeout": api_timeout,
            }

    with pytest.raises(k8s.K8sArgumentError, match="got 0"):
        k8s.client_from_module(Module(0), probe=False)
    assert k8s.client_from_module(Module(3), probe=False).api_timeout == 3


@pytest.mark.parametrize(
    ("section", "key", "named"),
    [
        ("cluster", "certificate-authority-data", "certificate-authority-data of cluster 'c'"),
        ("user", "client-certificate-data", "client-certificate-data of user 'u'"),
        ("user", "client-key-data", "client-key-data of user 'u'"),
    ],
)
def test_embedded_data_that_is_not_base64_is_named(tmp_path, section, key, named):
    path = write_kubeconfig(tmp_path)
    with open(path) as handle:
        doc = yaml.safe_load(handle)
    entry = doc["clusters"][0]["cluster"] if section == "cluster" else doc["users"][0]["user"]
    entry[key] = "this is not base64!"
    with open(path, "w") as handle:
        yaml.safe_dump(doc, handle)
    with pytest.raises(k8s.K8sConfigError) as err:
        k8s.get_client(path, probe=False)
    text = str(err.value)
    assert f"kubeconfig {path}, context 'a': not base64: {named}" in text
    assert "base64 -w0" in text
    assert err.value.details == {"kubeconfig": path, "context": "a"}


def test_expected_nodes_shape_is_checked():
    health.check_expected_nodes(None)
    health.check_expected_nodes({"a": None, "b": {"labels": {"x": "1"}, "taints": [], "unschedulable": True}})
    for bad, fragment in (
        ({"a": "worker"}, "expected_nodes['a'] must be a dict"),
        ({"a": {"label": {}}}, "must be a dict with labels, annotations, allocatable, taints"),
        ({"a": {"labels": ["x"]}}, "expected_nodes['a'].labels must be a dict"),
        ({"a": {"taints": [{"key": "k"}]}}, "key and effect required"),
        ({"a": {"taints": "k=v:NoSchedule"}}, "must be a list of"),
        ({"a": {"unschedulable": "yes"}}, "unschedulable must be true or false"),
    ):
        with pytest.raises(k8s.K8sArgumentError, match=re.escape(fragment)):
            health.check_expected_nodes(bad)


def test_kubernetes_own_taints_are_neither_expected_nor_unexpected():
    """A cordoned node gets node.kubernetes.io/unschedulable from the node lifecycle controller."""
    mine = {"key": "experiment", "value": "dedicated", "effect": "NoSchedule"}
    cordon = {
        "key": "node.kubernetes.io/unschedulable",
        "effect": "NoSchedule",
        "timeAdded": "2026-12-01T21:19:52Z",
    }
    nodes = [health.node_summary(node("a", unschedulable=True, taints=[mine, cordon]))]
    assert health.expected_node_problems(nodes, {"a": {"taints": [mine], "unschedulable": True}}) == []
    got = health.expected_node_problems(nodes, {"a": {"taints": []}})
    assert [p["reason"] for p in got] == ["unexpected taint experiment=dedicated:NoSchedule"]


def test_expected_cordon():
    nodes = [health.node_summary(node("a", unschedulable=True)), health.node_summary(node("b"))]
    assert health.expected_node_problems(nodes, {"a": {"unschedulable": True}}) == []
    got = health.expected_node_problems(nodes, {"b": {"unschedulable": True}})
    assert [p["reason"] for p in got] == ["expected to be cordoned (spec.unschedulable), is not"]
    assert health.node_problems(node("a", unschedulable=True), cordon_expected=True) == []


def ns_list(*names):
    items = [{"metadata": {"name": n}} for n in names]
    return FakeResponse(200, {"metadata": {"resourceVersion": "5"}, "items": items})


def empty_list():
    return FakeResponse(200, {"metadata": {"resourceVersion": "5"}, "items": []})


def test_unknown_namespace_lists_namespaces(tmp_path):
    client = fake_client(
        tmp_path, FakeResponse(404, {"message": "not found"}), ns_list("kube-system", "default")
    )
    with pytest.raises(k8s.K8sNotFound) as err:
        health.health_report(client, {"namespaces": ["valdator"]})
    assert "namespace 'valdator' does not exist in the cluster" in str(err.value)
    assert "namespaces: default, kube-system" in str(err.value)
    assert err.value.details["existing"] == ["default", "kube-system"]
    assert [c[1].split("/api/v1/")[-1].split("?")[0] for c in client.pool.calls] == [
        "namespaces/valdator",
        "namespaces",
    ]


def test_missing_namespace_allowed_is_reported_and_not_listed(tmp_path):
    # the namespace (404, then the list for the message), nodes, then PVs only: no pod or workload
    # list, which would be of every namespace
    nodes = FakeResponse(200, {"metadata": {}, "items": [node("n1")]})
    client = fake_client(
        tmp_path, FakeResponse(404, {"message": "not found"}), ns_list("default"), nodes, empty_list()
    )
    report = health.health_report(
        client,
        {"namespaces": ["new"], "allow_missing_namespaces": True, "expected_pvs": {"pv": "/srv/kind/x"}},
    )
    assert report["missing_namespaces"] == ["new"]
    assert report["pods"] == {} and report["workloads"] == []
    assert [p["reason"] for p in report["problems"]] == ["expected PV does not exist (host path /srv/kind/x)"]
    assert [c[1].split("/api/v1/")[-1].split("?")[0] for c in client.pool.calls] == [
        "namespaces/new",
        "namespaces",
        "nodes",
        "persistentvolumes",
    ]


def test_expected_annotations_and_allocatable_are_checked_key_by_key():
    lab = node("a")
    lab["metadata"]["annotations"] = {"kwok.x-k8s.io/node": "fake", "other": "x"}
    nodes = [health.node_summary(lab)]
    assert (
        health.expected_node_problems(
            nodes, {"a": {"annotations": {"kwok.x-k8s.io/node": "fake"}, "allocatable": {"cpu": 8}}}
        )
        == []
    )
    want = {"annotations": {"strata.io/managed-by": "strata.ops.cluster"}, "allocatable": {"cpu": "4"}}
    got = health.expected_node_problems(nodes, {"a": want})
    assert [p["reason"] for p in got] == [
        "annotation strata.io/managed-by=strata.ops.cluster expected, found none",
        "allocatable cpu=4 expected, found 8",
    ]
    bad = "expected_nodes['a'].allocatable must be a dict"
    with pytest.raises(k8s.K8sArgumentError, match=re.escape(bad)):
        health.check_expected_nodes({"a": {"allocatable": ["cpu"]}})


def test_a_workload_lists_the_pods_its_selector_selects_with_their_nodes():
    obj = deployment("solana")
    obj["spec"]["selector"] = {"matchLabels": {"app": "solana"}}
    mine = pod("solana-1")
    mine["metadata"]["labels"] = {"app": "solana"}
    mine["spec"] = {"nodeName": "strata-lab-1"}
    other_app = pod("other")
    other_app["metadata"]["labels"] = {"app": "other"}
    other_ns = pod("solana-x", ns="elsewhere")
    other_ns["metadata"]["labels"] = {"app": "solana"}
    assert health.workload_pods(obj, [mine, other_app, other_ns]) == [
        {"name": "solana-1", "node": "strata-lab-1", "phase": "Running", "ready": True}
    ]


def test_the_pod_index_selects_what_a_scan_of_every_pod_selects():
    """PodIndex narrows by one matchLabels pair; the selector still decides, and the order of the
    pods is kept. Without matchLabels (matchExpressions only) every pod of the namespace is a candidate."""
    pods = []
    for i, labels in enumerate(
        [{"app": "a", "tier": "db"}, {"app": "a"}, {"tier": "db"}, {}, {"app": "a", "tier": "db"}]
    ):
        item = pod(f"p{i}", ns="ns2" if i == 3 else "ns")
        item["metadata"]["labels"] = labels
        pods.append(item)
    index = health.PodIndex(pods)
    selectors = [
        {"matchLabels": {"app": "a", "tier": "db"}},
        {"matchLabels": {"tier": "db"}},
        {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
        {"matchLabels": {"app": "a"}, "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]},
    ]
    for selector in selectors:
        obj = deployment("w")
        obj["spec"]["selector"] = selector
        scanned = [
            p["metadata"]["name"]
            for p in pods
            if p["metadata"]["namespace"] == "ns"
            and health.selector_matches(selector, p["metadata"]["labels"])
        ]
        assert [p["name"] for p in health.workload_pods(obj, index)] == scanned
        assert health.workload_pods(obj, index) == health.workload_pods(obj, pods)
    assert [p["name"] for p in health.workload_pods(obj, index)] == ["p1"]


def test_object_drift_compares_only_what_the_manifest_sets():
    manifest = {
        "kind": "PersistentVolume",
        "metadata": {"name": "pv", "labels": {"app": "solana"}},
        "spec": {"storageClassName": "", "hostPath": {"path": "/mnt/x"}, "accessModes": ["ReadWriteOnce"]},
    }
    live = {
        "kind": "PersistentVolume",
        "metadata": {"name": "pv", "labels": {"app": "solana", "extra": "x"}, "uid": "1"},
        "spec": {"hostPath": {"path": "/mnt/x", "type": "Directory"}, "accessModes": ["ReadWriteOnce"]},
        "status": {"phase": "Bound"},
    }
    assert health.object_drift(manifest, live) == []
    moved = dict(live, spec=dict(live["spec"], hostPath={"path": "/srv/x"}))
    assert health.object_drift(manifest, moved) == ["spec.hostPath.path"]
    two_modes = dict(live, spec=dict(live["spec"], accessModes=["ReadWriteOnce", "ReadOnlyMany"]))
    assert health.object_drift(manifest, two_modes) == ["spec.accessModes"]


def test_object_drift_compares_list_items_in_order_and_scalars_as_the_api_prints_them():
    manifest = {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 8899}]}], "replicas": 1}}
    live = {
        "spec": {
            "containers": [{"name": "a", "ports": [{"containerPort": 8899, "protocol": "TCP"}]}],
            "replicas": 1,
        }
    }
    assert health.object_drift(manifest, live) == []
    assert health.object_drift(manifest, {"spec": {"containers": [{"name": "b"}], "replicas": "1"}}) == [
        "spec.containers[0].name",
        "spec.containers[0].ports",
    ]


@pytest.mark.parametrize(
    ("metadata", "spec", "status", "brief"),
    [
        (
            {"generation": 2},
            {"replicas": 1},
            {"observedGeneration": 2, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1},
            "minio: 1/1 ready, 1 updated",
        ),
        (
            {"generation": 3},
            {"replicas": 2},
            {"observedGeneration": 2, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1},
            "minio: 1/2 ready, 1 updated, 1 exist, its controller has not seen spec generation 3 yet (at 2)",
        ),
        (
            {"generation": 4},
            {"replicas": 1},
            {
                "observedGeneration": 4,
                "replicas": 1,
                "updatedReplicas": 1,
                "currentRevision": "minio-5c",
                "updateRevision": "minio-6d",
            },
            "minio: 0/1 ready, 1 updated, rolling from revision minio-5c to minio-6d",
        ),
    ],
)
def test_a_rollout_that_timed_out_says_what_holds_it(metadata, spec, status, brief):
    obj = {"metadata": dict(metadata, name="minio"), "spec": spec, "status": status}
    assert k8s.rollout_brief(obj) == brief
