"""module_utils/k8s/apply_plan.py: when a rendered object may skip its server-side apply, and what
is stale. Live objects here are shaped as the API server returns them (defaults filled in, empty
lists dropped, quantities canonical, Secret data in base64)."""

import base64
import copy
import json

import pytest

from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument
from ansible_collections.strata.ops.plugins.module_utils.k8s import apply_plan as ap

LABELS = {"app.kubernetes.io/part-of": "data-miner", "app.kubernetes.io/managed-by": "strata.ops"}


def deployment(name="extract", replicas=2, namespace="dm"):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(LABELS)},
        "spec": {
            "replicas": replicas,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": name,
                            "image": "data-miner:latest",
                            "resources": {"limits": {"cpu": "2000m", "memory": "8Gi", "nvidia.com/gpu": 1}},
                        }
                    ],
                    "volumes": [],
                }
            },
        },
    }


def as_served(obj):
    """What the API server returns after the apply: hash annotation, defaults, canonical values."""
    live = copy.deepcopy(ap.with_hash(obj))
    live["metadata"].update(uid="u-1", resourceVersion="7", managedFields=[{"manager": "strata"}])
    spec = live.get("spec", {})
    if "template" in spec:
        pod = spec["template"]["spec"]
        pod.pop("volumes")  # an empty list is dropped
        pod.update(restartPolicy="Always", dnsPolicy="ClusterFirst")
        limits = pod["containers"][0]["resources"]["limits"]
        limits.update(cpu="2", **{"nvidia.com/gpu": "1"})
        pod["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
        spec["strategy"] = {"type": "RollingUpdate"}
    live["status"] = {"readyReplicas": 0}
    return live


def test_an_applied_object_as_the_server_returns_it_is_unchanged():
    obj = deployment()
    assert ap.unchanged(obj, as_served(obj))


def container(live):
    return live["spec"]["template"]["spec"]["containers"]


@pytest.mark.parametrize(
    ("what", "edit"),
    [
        ("kubectl scale", lambda live: live["spec"].update(replicas=5)),
        ("an edited image", lambda live: container(live)[0].update(image="x")),
        ("a changed limit", lambda live: container(live)[0]["resources"]["limits"].update(cpu="3")),
        ("a second container added", lambda live: container(live).append({"name": "y"})),
        ("applied by someone else", lambda live: live["metadata"]["annotations"].clear()),
    ],
)
def test_a_live_change_is_applied_again(what, edit):
    obj = deployment()
    live = as_served(obj)
    edit(live)
    assert not ap.unchanged(obj, live), what


def test_a_field_dropped_from_the_render_changes_the_hash():
    applied = deployment()
    now = copy.deepcopy(applied)
    del now["spec"]["template"]["spec"]["containers"][0]["resources"]
    live = as_served(applied)
    assert ap.is_subset({k: v for k, v in now.items() if k != "apiVersion"}, live)  # every field is there
    assert not ap.unchanged(now, live)  # but the limits it no longer sets must go: apply


def test_types_are_not_blurred_outside_quantities():
    assert not ap.is_subset({"a": 1}, {"a": True})
    assert not ap.is_subset({"port": 80}, {"port": "80"})
    assert ap.is_subset({"limits": {"memory": "1024Mi"}}, {"limits": {"memory": "1Gi"}})
    assert not ap.is_subset({"limits": {"memory": "1Gi"}}, {"limits": {"memory": "1G"}})
    assert not ap.is_subset({"tag": "1000m"}, {"tag": "1"})  # not under resources


def test_a_secret_compares_its_string_data_with_the_decoded_data():
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hf-token", "namespace": "dm", "labels": dict(LABELS)},
        "type": "Opaque",
        "stringData": {"HF_TOKEN": "hf_abc"},
    }
    live = ap.with_hash(secret)
    live = dict(live, data={"HF_TOKEN": base64.b64encode(b"hf_abc").decode()})
    del live["stringData"]
    assert ap.unchanged(secret, live)
    live["data"]["HF_TOKEN"] = base64.b64encode(b"hf_other").decode()
    assert not ap.unchanged(secret, live)
    live["data"]["HF_TOKEN"] = "%%%"
    assert not ap.unchanged(secret, live)


def test_plan_splits_the_set_and_names_what_is_stale_only_in_its_own_namespaces():
    kept, scaled, new = deployment("extract"), deployment("download"), deployment("filter")
    removed = deployment("monitor")
    elsewhere = deployment("monitor", namespace="dm-staging")  # another copy of the pipeline
    unlabelled = deployment("adminer")
    unlabelled["metadata"]["labels"] = {}
    live = [as_served(o) for o in (kept, scaled, removed, elsewhere, unlabelled)]
    live[1]["spec"]["replicas"] = 9
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "dm-old", "labels": dict(LABELS)},
    }
    live.append(ap.with_hash(namespace))
    got = ap.plan([kept, scaled, new], live, LABELS, ["Deployment"])
    assert [o["metadata"]["name"] for o in got["apply"]] == ["download", "filter"]
    assert all(ap.HASH_ANNOTATION in o["metadata"]["annotations"] for o in got["apply"])
    assert got["unchanged"] == 1
    assert got["stale"] == [ap.ref(removed)]  # never dm-staging's, the unlabelled one, or a Namespace
    assert ap.plan([kept], live, {}, ["Deployment"])["stale"] == []


def test_with_hash_does_not_change_the_input_and_ignores_its_own_annotation():
    obj = deployment()
    before = copy.deepcopy(obj)
    hashed = ap.with_hash(obj)
    assert obj == before
    assert ap.applied_hash(hashed) == ap.applied_hash(obj)


class Client:
    """A recording stand-in for K8sClient.list: read_and_plan's request count and errors."""

    def __init__(self, items):
        self.items, self.calls = items, []

    def list(self, kind, namespace=None, label_selector=None):
        self.calls.append((kind, namespace, label_selector))
        return [i for i in self.items if i["kind"] == kind], "1"


def test_read_and_plan_lists_each_kind_once_with_the_selector():
    obj = deployment()
    client = Client([as_served(obj)])
    params = {"definitions": [obj], "prune_labels": LABELS, "prune_kinds": ["Service"]}
    got = ap.read_and_plan(params, lambda: client)
    selector = "app.kubernetes.io/managed-by=strata.ops,app.kubernetes.io/part-of=data-miner"
    assert client.calls == [
        ("Deployment", None, selector),
        ("Service", None, selector),
        ("Namespace", None, None),
    ]
    assert got["apply"] == [] and got["new_namespaces"] == ["dm"] and got["requests"] == 3


def obj_of(api_version, kind, **meta):
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}


@pytest.mark.parametrize(
    ("obj", "says"),
    [
        (obj_of("v1", "Widget", name="a"), "kind must be one of"),
        (obj_of("v1", "Deployment", name="a", namespace="n"), "apiVersion must be apps/v1"),
        (obj_of("v1", "ConfigMap", name="a"), "a ConfigMap needs metadata.namespace"),
        (obj_of("v1", "Namespace", name="a", namespace="b"), "is cluster-scoped"),
        (obj_of("v1", "ConfigMap", namespace="n"), "metadata.name is missing"),
    ],
)
def test_definitions_that_cannot_be_applied_are_refused_before_any_read(obj, says):
    client = Client([])
    params = {"definitions": [deployment(), obj], "prune_labels": {}, "prune_kinds": []}
    with pytest.raises(InvalidArgument, match="definitions\\[1\\]") as caught:
        ap.read_and_plan(params, lambda: client)
    assert says in caught.value.msg and "nothing was read" in caught.value.msg
    assert client.calls == []


def test_definitions_may_be_the_json_text_of_the_list():
    obj = deployment()
    client = Client([as_served(obj)])
    params = {"definitions": json.dumps([obj]), "prune_labels": {}, "prune_kinds": []}
    assert ap.read_and_plan(params, lambda: client)["unchanged"] == 1
    for bad in ("{", json.dumps({"kind": "Deployment"}), json.dumps(["x"])):
        with pytest.raises(InvalidArgument, match="definitions"):
            ap.read_and_plan(dict(params, definitions=bad), lambda: client)
