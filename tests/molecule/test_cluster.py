"""Layer 3 on the molecule hosts: each is a Ready node of the lab cluster made for them
(STRATA_LAB_CLUSTER), with the labels and taints of inventories/lab. Read through the API."""

import os
import sys

import pytest
import yaml

from ansible_collections.strata.ops.plugins.module_utils import k8s

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "testbed"))
from testbed_paths import CACHE

CLUSTER = os.environ.get("STRATA_LAB_CLUSTER", "strata-lab")


@pytest.fixture(scope="module")
def client():
    return k8s.get_client(os.path.join(CACHE, "controlplane", CLUSTER + ".kubeconfig"))


def test_host_is_a_ready_node(host, client):
    name = host.backend.get_hostname()
    node = client.get_node(name)
    assert k8s.node_is_ready(node), node.get("status", {}).get("conditions")
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == name
    assert (node["metadata"].get("annotations") or {}).get("strata.io/managed-by") == "strata.ops.cluster"


def test_node_group_vars_applied(host, client):
    path = os.path.join(os.path.dirname(__file__), "..", "..", "inventories", "lab", "group_vars")
    with open(os.path.join(path, "strata_cluster_nodes.yml")) as handle:
        group_vars = yaml.safe_load(handle)
    name = host.backend.get_hostname()
    node = client.get_node(name)
    for key, value in group_vars["strata_lab_node_labels"].get(name, {}).items():
        assert node["metadata"]["labels"].get(key) == value
    assert [t["key"] for t in node["spec"].get("taints") or []] == [
        t["key"] for t in group_vars["strata_lab_node_taints"].get(name, [])
    ]
