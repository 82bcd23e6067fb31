"""Layer 3 on the molecule hosts: each is a Ready node of the lab cluster made for them
(STRATA_LAB_CLUSTER), with the labels and taints their inventory gives them
(molecule/default/host_vars). Expected values from the inventory, actual ones through the API."""

import os
import sys

import pytest

from ansible_collections.strata.ops.plugins.module_utils import k8s

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "testbed"))
from testbed_paths import CACHE

CLUSTER = os.environ.get("STRATA_LAB_CLUSTER", "strata-lab")


@pytest.fixture(scope="module")
def client():
    return k8s.get_client(os.path.join(CACHE, "controlplane", CLUSTER + ".kubeconfig"))


def expected(host):
    """(labels, taints) the inventory gives this host's node: literal host_vars, so that the test
    compares what layer 3 was asked for, not two lookups that both come back empty."""
    hostvars = host.ansible.get_variables()
    labels, taints = hostvars.get("strata_node_labels"), hostvars.get("strata_node_taints")
    assert isinstance(labels, dict) and labels, f"no strata_node_labels for {hostvars['inventory_hostname']}"
    assert isinstance(taints, list), f"strata_node_taints of {hostvars['inventory_hostname']}: {taints!r}"
    return labels, taints


def taint_set(taints):
    return sorted((t["key"], t.get("value") or "", t["effect"]) for t in taints)


def test_host_is_a_ready_node(host, client):
    name = host.backend.get_hostname()
    node = client.get_node(name)
    assert k8s.node_is_ready(node), node.get("status", {}).get("conditions")
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == name
    assert (node["metadata"].get("annotations") or {}).get("strata.io/managed-by") == "strata.ops.cluster"


def test_node_labels_and_taints_are_the_inventorys(host, client):
    labels, taints = expected(host)
    node = client.get_node(host.backend.get_hostname())
    for key, value in labels.items():
        assert node["metadata"]["labels"].get(key) == value, (key, node["metadata"]["labels"])
    assert taint_set(node["spec"].get("taints") or []) == taint_set(taints)


def test_the_scenario_has_a_workload_node_and_a_dedicated_node(host):
    """A guard against host_vars that lose their labels or taints (both sides would agree)."""
    want = {
        "strata-mol-1": ("workload", []),
        "strata-mol-2": ("experiment", [("experiment", "dedicated", "NoSchedule")]),
    }
    labels, taints = expected(host)
    assert (labels["strata.io/role"], taint_set(taints)) == want[host.backend.get_hostname()]
