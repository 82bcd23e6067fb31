"""The data-miner status (module_utils/data_miner_status.py and the strata.ops.data_miner_status
filter): the issue's example with its master marked as the GPU node, a healthy cluster built from
what the config renders, then one breakage per case and the problem it must produce."""

import copy
import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.strata.ops.plugins.filter.data_miner_status import data_miner_status_filter
from ansible_collections.strata.ops.plugins.module_utils import cluster_config as cc
from ansible_collections.strata.ops.plugins.module_utils import data_miner as dm
from ansible_collections.strata.ops.plugins.module_utils import data_miner_status as st

from .test_cluster_config import EXAMPLE

NS, SW = "data-miner", "seaweedfs"


def config():
    doc = copy.deepcopy(EXAMPLE)
    doc["cluster"]["nodes"]["pavanjci"]["gpu"] = True
    doc["cluster"]["nodes"]["arsenal"]["labels"] = {"disk": "ssd"}
    checked = cc.check(doc)
    assert checked.ok, checked.errors
    return checked.doc


def ready_pod(workload, index, node):
    name = workload["metadata"]["name"]
    container = workload["spec"]["template"]["spec"]["containers"][0]["name"]
    return {
        "metadata": {
            "name": f"{name}-{index}",
            "namespace": workload["metadata"]["namespace"],
            "labels": workload["spec"]["template"]["metadata"]["labels"],
        },
        "spec": {"nodeName": node},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": container, "image": "data-miner:latest", "ready": True, "state": {"running": {}}}
            ],
        },
    }


def healthy(doc):
    """(nodes, workloads, pods) of a cluster that is exactly what the config says."""
    nodes = [
        {
            "metadata": {"name": n["name"], "labels": st.expected_labels(n)},
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
        for n in cc.nodes(doc)
    ]
    workloads, pods = [], []
    for obj in dm.render(doc):
        if obj["kind"] not in st.WORKLOAD_KINDS:
            continue
        live = copy.deepcopy(obj)
        (expression,) = st._terms(obj)[0]  # pylint: disable=protected-access
        allowed = expression["values"]
        if obj["kind"] == "DaemonSet":
            live["status"] = {"desiredNumberScheduled": len(allowed), "numberReady": len(allowed)}
            pods += [ready_pod(obj, i, node) for i, node in enumerate(allowed)]
        else:
            count = obj["spec"]["replicas"]
            live["status"] = {"replicas": count, "readyReplicas": count}
            pods += [ready_pod(obj, i, allowed[i % len(allowed)]) for i in range(count)]
        workloads.append(live)
    return nodes, workloads, pods


def find(items, name, namespace=None):
    return next(
        i
        for i in items
        if i["metadata"]["name"] == name and namespace in (None, i["metadata"].get("namespace"))
    )


def set_waiting(reason, message=None, last_exit=None):
    def change(_nodes, _workloads, pods):
        container = find(pods, "filter-0", NS)["status"]["containerStatuses"][0]
        container["ready"] = False
        container["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        if last_exit is not None:
            container["restartCount"] = 7
            container["lastState"] = {"terminated": {"exitCode": last_exit, "reason": "Error"}}
        find(pods, "filter-0", NS)["status"]["conditions"][1]["status"] = "False"

    return change


def drift(_nodes, workloads, pods):
    download = find(workloads, "download", NS)
    download["spec"]["replicas"] = 6
    download["status"]["readyReplicas"] = 6
    pods += [ready_pod(download, i, "manthana") for i in range(3, 6)]


def not_ready(_nodes, workloads, _pods):
    find(workloads, "extract", NS)["status"]["readyReplicas"] = 1


def pending(_nodes, _workloads, pods):
    pod = find(pods, "download-2", NS)
    message = "0/3 nodes are available: 3 node(s) didn't match pod topology spread constraints."
    pod["spec"] = {}
    pod["status"] = {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
        ],
    }


def forbidden_node(_nodes, _workloads, pods):
    find(pods, "extract-1", NS)["spec"]["nodeName"] = "arsenal"  # extract: schedule_on master


def missing_node(nodes, _workloads, _pods):
    nodes.remove(find(nodes, "arsenal"))


def not_ready_node(nodes, _workloads, _pods):
    find(nodes, "manthana")["status"]["conditions"] = [
        {
            "type": "Ready",
            "status": "Unknown",
            "reason": "NodeStatusUnknown",
            "message": "Kubelet stopped posting",
        }
    ]
    find(nodes, "manthana")["spec"]["unschedulable"] = True


def gpu_label_gone(nodes, _workloads, _pods):
    del find(nodes, "pavanjci")["metadata"]["labels"]["strata.io/gpu"]
    find(nodes, "arsenal")["metadata"]["labels"]["disk"] = "hdd"


def missing_object(_nodes, workloads, pods):
    workloads.remove(find(workloads, "grafana", NS))
    pods[:] = [p for p in pods if p["metadata"]["labels"]["app.kubernetes.io/name"] != "grafana"]


def stale_object(_nodes, workloads, _pods):
    gone = copy.deepcopy(find(workloads, "monitor", NS))
    gone["metadata"]["name"] = "old-worker"
    workloads.append(gone)


def seaweedfs_volume_crashing(_nodes, _workloads, pods):
    pod = find(pods, "seaweedfs-volume-arsenal-0", SW)
    pod["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}


CASES = [
    pytest.param(
        drift,
        [
            "StatefulSet data-miner/download: 6 replicas, but workers.download.replicas in "
            "cluster_config.yaml says 3 (kubectl scale or playbooks/data_miner/scale.yml?); "
            "the next deploy sets 3 again"
        ],
        id="replicas drifted (kubectl scale)",
    ),
    pytest.param(not_ready, ["Deployment data-miner/extract: 1/2 ready"], id="replicas not ready"),
    pytest.param(
        set_waiting("CrashLoopBackOff", "back-off 5m0s restarting failed container", last_exit=1),
        [
            "pod data-miner/filter-0: CrashLoopBackOff (container filter, 7 restarts, last exit 1 (Error)); "
            "kubectl logs --previous shows why"
        ],
        id="CrashLoopBackOff",
    ),
    pytest.param(
        pending,
        [
            "pod data-miner/download-2: Pending, not scheduled: 0/3 nodes are available: 3 node(s) didn't "
            "match pod topology spread constraints."
        ],
        id="Pending with the scheduler's message",
    ),
    pytest.param(
        set_waiting("ErrImageNeverPull", 'Container image "data-miner:latest" is not present'),
        [
            "pod data-miner/filter-0: ErrImageNeverPull (data-miner:latest): import the image: "
            "playbooks/data_miner/images.yml"
        ],
        id="ErrImageNeverPull",
    ),
    pytest.param(
        set_waiting("ImagePullBackOff"),
        [
            "pod data-miner/filter-0: ImagePullBackOff (data-miner:latest): import the image: "
            "playbooks/data_miner/images.yml"
        ],
        id="ImagePullBackOff",
    ),
    pytest.param(
        forbidden_node,
        [
            "pod data-miner/extract-1: on arsenal, which the config does not allow for extract (allowed: "
            "pavanjci); placement drift: delete the pod to have it placed again"
        ],
        id="pod on a forbidden node",
    ),
    pytest.param(
        missing_node,
        [
            "node arsenal: not in the cluster (not joined, or registered under another name); "
            "playbooks/data_miner/provision.yml installs k3s there",
            # its pods stay bound to the name: the placement check looks up no labels for it
        ],
        id="missing node",
    ),
    pytest.param(
        not_ready_node,
        [
            "node manthana: NotReady (NodeStatusUnknown: Kubelet stopped posting)",
            "node manthana: cordoned, no new pod lands there (kubectl uncordon manthana)",
        ],
        id="NotReady and cordoned node",
    ),
    pytest.param(
        gpu_label_gone,
        [
            "node pavanjci: label strata.io/gpu=true is missing (cluster.nodes.pavanjci is a GPU node); "
            "kubectl label node pavanjci strata.io/gpu=true --overwrite",
            "node arsenal: label disk=ssd is 'hdd' (cluster.nodes.arsenal.labels); "
            "kubectl label node arsenal disk=ssd --overwrite",
        ],
        id="labels the config requires",
    ),
    pytest.param(
        missing_object,
        ["Deployment data-miner/grafana: missing; run playbooks/data_miner/deploy.yml"],
        id="missing object",
    ),
    pytest.param(
        stale_object,
        ["Deployment data-miner/old-worker: not in the config (the next deploy prunes it)"],
        id="object the config no longer renders",
    ),
    pytest.param(
        seaweedfs_volume_crashing,
        [
            "pod seaweedfs/seaweedfs-volume-arsenal-0: CrashLoopBackOff (container seaweedfs, 0 restarts); "
            "kubectl logs --previous shows why"
        ],
        id="SeaweedFS pod",
    ),
]


def test_healthy_cluster_has_no_problem():
    doc = config()
    result = st.status(doc, *healthy(doc))
    assert result["verdict"] == "healthy" and result["healthy"] is True
    assert result["problems"] == []
    assert result["summary"] == "healthy: 3 nodes, 12 workloads, 17 pods as the config says"
    assert [n["state"] for n in result["nodes"]] == ["Ready", "Ready", "Ready"]
    assert [n["name"] for n in result["nodes"]] == ["pavanjci", "manthana", "arsenal"]  # master first
    assert {w["state"] for w in result["workloads"]} == {"ok"}
    sections = [w["section"] for w in result["workloads"]]
    assert sections == sorted(sections, key=st.SECTION_ORDER.index)
    mount = next(w for w in result["workloads"] if w["name"] == "seaweedfs-mount")
    assert (mount["config"], mount["spec"], mount["ready"]) == (3, 3, 3)
    assert "all 17 pod(s) Running and Ready where the config allows" in result["report"]


@pytest.mark.parametrize(("breakage", "problems"), CASES)
def test_each_breakage_is_named_with_its_fix(breakage, problems):
    doc = config()
    nodes, workloads, pods = healthy(doc)
    breakage(nodes, workloads, pods)
    result = st.status(doc, nodes, workloads, pods)
    assert result["verdict"] == "degraded" and result["healthy"] is False
    assert result["problems"] == problems
    assert result["summary"] == f"degraded: {len(problems)} problem(s)"
    assert result["report"][-len(problems) :] == [f"  - {p}" for p in problems]


def test_drift_row_shows_config_spec_and_ready():
    doc = config()
    nodes, workloads, pods = healthy(doc)
    drift(nodes, workloads, pods)
    row = next(w for w in st.status(doc, nodes, workloads, pods)["workloads"] if w["name"] == "download")
    assert (row["config"], row["spec"], row["ready"], row["state"]) == (3, 6, 6, "drift")


def test_terminating_pods_are_listed_not_problems():
    doc = config()
    nodes, workloads, pods = healthy(doc)
    extra = ready_pod(find(workloads, "download", NS), 3, "arsenal")
    extra["metadata"]["deletionTimestamp"] = "2026-02-14T10:00:00Z"
    result = st.status(doc, nodes, workloads, [*pods, extra])
    assert result["healthy"] is True
    assert "(1 pod(s) terminating)" in result["report"]
    assert next(p for p in result["pods"] if p["name"] == "download-3")["state"] == "Terminating"


def test_nothing_deployed_names_every_object_missing_and_no_pod():
    doc = config()
    nodes, _workloads, _pods = healthy(doc)
    result = st.status(doc, nodes, [], [])
    assert {w["state"] for w in result["workloads"]} == {"missing"}
    assert len(result["problems"]) == 12
    assert "no pod of the pipeline" in result["report"]


def test_gpu_workloads_without_gpu_node_wait_for_the_label():
    """The issue's example marks no GPU node: GPU workloads are placed by the label, so a pod on a
    node that carries it is allowed and one on a node without it is placement drift."""
    checked = cc.check(copy.deepcopy(EXAMPLE))
    doc = checked.doc
    nodes, workloads, pods = healthy_without_gpu(doc)
    assert st.status(doc, nodes, workloads, pods)["healthy"] is True
    find(pods, "filter-0", NS)["spec"]["nodeName"] = "manthana"
    (problem,) = st.status(doc, nodes, workloads, pods)["problems"]
    assert problem.startswith(
        "pod data-miner/filter-0: on manthana, which the config does not allow for filter "
        "(allowed: nodes labelled strata.io/gpu=true)"
    )


def healthy_without_gpu(doc):
    nodes = [
        {
            "metadata": {"name": n["name"], "labels": st.expected_labels(n)},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
        for n in cc.nodes(doc)
    ]
    nodes[0]["metadata"]["labels"]["strata.io/gpu"] = "true"  # labelled by hand, not in the config
    workloads, pods = [], []
    for obj in dm.render(doc):
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        (expression,) = st._terms(obj)[0]  # pylint: disable=protected-access
        on = expression["values"] if expression["key"] == dm.HOSTNAME else ["pavanjci"]
        live = dict(copy.deepcopy(obj), status={"readyReplicas": obj["spec"]["replicas"]})
        workloads.append(live)
        pods += [ready_pod(obj, i, on[i % len(on)]) for i in range(obj["spec"]["replicas"])]
    mount = next(o for o in dm.render(doc) if o["kind"] == "DaemonSet")
    workloads.append(dict(copy.deepcopy(mount), status={"desiredNumberScheduled": 3, "numberReady": 3}))
    return nodes, workloads, pods


def test_deterministic_and_not_fooled_by_input_order():
    doc = config()
    nodes, workloads, pods = healthy(doc)
    pending(nodes, workloads, pods)
    drift(nodes, workloads, pods)
    first = json.dumps(st.status(doc, nodes, workloads, pods))
    again = json.dumps(st.status(copy.deepcopy(doc), nodes[::-1], workloads[::-1], pods[::-1]))
    assert first == again


def test_report_tables_are_aligned():
    doc = config()
    report = st.status(doc, *healthy(doc))["report"]
    start = report.index("Workloads") + 1
    header, first = report[start], report[start + 1]
    assert header.split()[:3] == ["SECTION", "KIND", "NAMESPACE/NAME"]
    assert first.index("data-miner/") == header.index("NAMESPACE/NAME")
    assert st.table(["A", "BB"], [["xyz", None]]) == ["A    BB", "xyz  -"]


def test_filter_checks_the_config_and_takes_raw_references():
    doc = copy.deepcopy(EXAMPLE)
    doc["k3s_app_overrides"] = {"output_dir": "${storage.seaweedfs_mount}/out"}
    assert data_miner_status_filter(doc)["verdict"] == "degraded"
    doc["workers"]["filter"]["schedule_on"] = "gpus"
    with pytest.raises(AnsibleFilterError, match=r"1 problem\(s\) in the cluster config:\n  workers.filter"):
        data_miner_status_filter(doc)
