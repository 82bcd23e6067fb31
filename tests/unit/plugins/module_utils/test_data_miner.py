"""The data-miner manifests rendered from cluster_config.yaml (module_utils/data_miner.py and the
strata.ops.data_miner_manifests filter): the issue's example and variants."""

import copy
import json

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.strata.ops.plugins.filter.data_miner_manifests import data_miner_manifests
from ansible_collections.strata.ops.plugins.module_utils import cluster_config as cc
from ansible_collections.strata.ops.plugins.module_utils import data_miner as dm

from .test_cluster_config import EXAMPLE

APP = {"output_dir": "/swdfs_mnt/swshared/data_miner_output", "device": "auto", "batch": 8}


def with_storage_node(doc):
    doc = copy.deepcopy(doc)
    doc["cluster"]["nodes"]["storage1"] = {"ip": "10.96.122.50", "role": "worker", "storage_only": True}
    doc["cluster"]["nodes"]["pavanjci"]["gpu"] = True
    doc["workers"]["filter"]["resources"] = "gpu"
    doc["workers"]["download"]["resources"] = "small"
    return doc


def objects(doc=EXAMPLE, **kwargs):
    checked = cc.check(doc)
    assert checked.ok, checked.errors
    return {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in dm.render(checked.doc, **kwargs)
    }


def allowed_nodes(workload):
    terms = workload["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    (term,) = terms["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    (expression,) = term["matchExpressions"]
    assert expression["key"] == "kubernetes.io/hostname" and expression["operator"] == "In"
    return expression["values"]


def test_render_is_deterministic_byte_for_byte():
    doc = with_storage_node(EXAMPLE)
    first = json.dumps(dm.render(cc.check(doc).doc, app_config=APP), sort_keys=False)
    again = json.dumps(dm.render(cc.check(copy.deepcopy(doc)).doc, app_config=dict(APP)), sort_keys=False)
    assert first == again
    kinds = [o["kind"] for o in json.loads(first)]
    assert kinds == sorted(kinds, key=dm.KIND_ORDER.index)  # namespaces first, workloads last


def test_placement_follows_schedule_on_and_never_uses_a_storage_only_node():
    got = objects(with_storage_node(EXAMPLE), app_config=APP)
    ns = "data-miner"
    download = got[("StatefulSet", ns, "download")]
    assert allowed_nodes(download) == ["arsenal", "manthana", "pavanjci"]  # not storage1
    (spread,) = download["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["maxSkew"] == 1
    assert download["spec"]["replicas"] == 3 and download["spec"]["serviceName"] == "download"
    assert got[("Service", ns, "download")]["spec"]["clusterIP"] == "None"
    assert allowed_nodes(got[("Deployment", ns, "extract")]) == ["pavanjci"]  # master
    assert allowed_nodes(got[("Deployment", ns, "filter")]) == ["pavanjci"]  # the GPU node
    assert "topologySpreadConstraints" not in got[("Deployment", ns, "extract")]["spec"]["template"]["spec"]


def test_presets_become_requests_and_limits():
    got = objects(with_storage_node(EXAMPLE))
    (container,) = got[("Deployment", "data-miner", "filter")]["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "2Gi"},
        "limits": {"cpu": "2000m", "memory": "8Gi"},
    }
    (monitor,) = got[("Deployment", "data-miner", "monitor")]["spec"]["template"]["spec"]["containers"]
    assert "resources" not in monitor  # no preset named: none invented


def test_hf_token_only_as_a_secret_and_only_in_the_workers_that_ask():
    without = objects(app_config=APP)
    assert not [k for k in without if k[0] == "Secret"]
    token = "hf_canary_do_not_leak"
    got = objects(app_config=APP, hf_token=token)
    secret = got[("Secret", "data-miner", "hf-token")]
    assert secret["stringData"] == {"HF_TOKEN": token}
    for (kind, _ns, name), obj in got.items():
        if kind in ("Deployment", "StatefulSet"):
            env = obj["spec"]["template"]["spec"]["containers"][0].get("env", [])
            refs = [e for e in env if e["name"] == "HF_TOKEN"]
            wants = name in ("filter",)
            assert bool(refs) == wants, name
            if refs:
                assert refs[0]["valueFrom"] == {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}
    assert token not in json.dumps([o for k, o in got.items() if k[0] != "Secret"])
    config_map = got[("ConfigMap", "data-miner", "data-miner-config")]
    assert "device: auto" in config_map["data"]["config.yaml"]


def test_infrastructure_on_the_master_with_its_data_under_db_path():
    got = objects()
    postgres = got[("StatefulSet", "data-miner", "postgres")]
    assert allowed_nodes(postgres) == ["pavanjci"]
    pod = postgres["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "data", "hostPath": {"path": "/data/data_miner_db/postgres", "type": "DirectoryOrCreate"}}
    ]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "data", "mountPath": "/var/lib/postgresql/data"}]
    assert got[("Service", "data-miner", "postgres")]["spec"]["ports"][0]["port"] == 5432
    grafana = got[("Service", "data-miner", "grafana")]["spec"]
    assert grafana["type"] == "NodePort"
    assert grafana["ports"] == [{"name": "main", "port": 3000, "targetPort": 3000, "nodePort": 30300}]


def test_seaweedfs_volume_per_node_with_its_disk_limit_and_a_mount_where_workers_run():
    doc = with_storage_node(EXAMPLE)
    doc["cluster"]["nodes"]["storage1"]["disk_limit_mb"] = 500000
    got = objects(doc)
    sw = "seaweedfs"
    args = {
        name: obj["spec"]["template"]["spec"]["containers"][0]["args"]
        for (kind, ns, name), obj in got.items()
        if kind == "StatefulSet" and ns == sw and name.startswith("seaweedfs-volume-")
    }
    assert sorted(args) == [
        "seaweedfs-volume-arsenal", "seaweedfs-volume-manthana", "seaweedfs-volume-pavanjci",
        "seaweedfs-volume-storage1",
    ]  # fmt: skip
    assert "-max=500" in args["seaweedfs-volume-storage1"]  # 500000 MB in 1000 MB volumes
    assert "-max=50" in args["seaweedfs-volume-pavanjci"]
    assert allowed_nodes(got[("StatefulSet", sw, "seaweedfs-volume-storage1")]) == ["storage1"]
    mount = got[("DaemonSet", sw, "seaweedfs-mount")]
    assert allowed_nodes(mount) == ["arsenal", "manthana", "pavanjci"]
    shared = [
        m for m in mount["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] if m["name"] == "shared"
    ]
    assert shared == [
        {"name": "shared", "mountPath": "/swdfs_mnt/swshared", "mountPropagation": "Bidirectional"}
    ]
    assert allowed_nodes(got[("StatefulSet", sw, "seaweedfs-master")]) == ["pavanjci"]


def test_no_disk_limit_means_seaweedfs_picks_its_own():
    doc = copy.deepcopy(EXAMPLE)
    del doc["cluster"]["nodes"]["arsenal"]["disk_limit_mb"]
    got = objects(doc)
    args = got[("StatefulSet", "seaweedfs", "seaweedfs-volume-arsenal")]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert "-max=0" in args["args"]  # default_disk_limit_mb 0: unlimited


def test_every_object_says_who_manages_it():
    for obj in objects(app_config=APP, hf_token="t").values():
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "data-miner"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "strata.ops"


def test_gpu_workers_wait_for_a_gpu_node_when_the_config_marks_none():
    got = objects()  # the issue's example: no node marked as the GPU node
    affinity = got[("Deployment", "data-miner", "filter")]["spec"]["template"]["spec"]["affinity"]
    (term,) = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": "strata.io/gpu", "operator": "In", "values": ["true"]}]


def test_node_port_of_an_unknown_image_needs_its_port():
    doc = copy.deepcopy(EXAMPLE)
    doc["infrastructure"]["custom"] = {"image": "example/thing:1", "node_port": 30999}
    with pytest.raises(AnsibleFilterError, match=r"infrastructure\.custom\.node_port: set port too"):
        data_miner_manifests(doc)


def test_the_filter_refuses_a_config_the_inventory_refuses():
    doc = copy.deepcopy(EXAMPLE)
    doc["workers"]["filter"]["schedule_on"] = "gpus"
    with pytest.raises(
        AnsibleFilterError, match=r"workers.filter.schedule_on: 'gpus' is not one of all, master, gpu"
    ):
        data_miner_manifests(doc)


def test_grafana_gets_its_loki_datasource_from_the_config_never_an_empty_url():
    doc = copy.deepcopy(EXAMPLE)
    doc["infrastructure"]["loki"] = {"kind": "StatefulSet", "image": "grafana/loki:2.9.0", "port": 3100}
    got = objects(doc)
    provisioned = got[("ConfigMap", "data-miner", "grafana-datasources")]["data"]["datasources.yaml"]
    assert yaml.safe_load(provisioned) == {
        "apiVersion": 1,
        "datasources": [
            {"name": "loki", "type": "loki", "access": "proxy", "url": "http://loki.data-miner.svc:3100"}
        ],
    }
    pod = got[("Deployment", "data-miner", "grafana")]["spec"]["template"]["spec"]
    assert {"name": "datasources", "configMap": {"name": "grafana-datasources"}} in pod["volumes"]
    assert {
        "name": "datasources",
        "mountPath": "/etc/grafana/provisioning/datasources",
        "readOnly": True,
    } in pod["containers"][0]["volumeMounts"]
    assert ("ConfigMap", "data-miner", "grafana-datasources") not in objects()  # no Loki: nothing provisioned


@pytest.mark.parametrize("mode", ["runtime", "time_slicing", "exclusive"])
def test_gpu_workers_ask_for_a_gpu_only_when_the_device_plugin_hands_them_out(mode):
    doc = with_storage_node(EXAMPLE)
    doc["cluster"]["gpu_sharing"] = {"mode": mode}
    got = objects(doc)
    pod = got[("Deployment", "data-miner", "filter")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    limits = container["resources"]["limits"]
    if mode == "runtime":
        # nvidia is the default runtime: every pod sees the GPU, none waits for one (the seed).
        assert "nvidia.com/gpu" not in limits and "runtimeClassName" not in pod
    else:
        assert limits == {"cpu": "2000m", "memory": "8Gi", "nvidia.com/gpu": 1}
        assert pod["runtimeClassName"] == "nvidia"
    other = got[("Deployment", "data-miner", "extract")]["spec"]["template"]["spec"]
    assert "runtimeClassName" not in other


def test_a_liveness_probe_only_where_the_worker_states_one():
    doc = copy.deepcopy(EXAMPLE)
    doc["workers"]["download"]["probe"] = {"http": {"path": "/healthz", "port": 8080}, "failure_threshold": 5}
    doc["workers"]["extract"]["probe"] = {"exec": ["python", "-m", "data_miner.health"], "period_seconds": 30}
    got = objects(doc)
    (download,) = got[("StatefulSet", "data-miner", "download")]["spec"]["template"]["spec"]["containers"]
    assert download["livenessProbe"] == {"httpGet": {"path": "/healthz", "port": 8080}, "failureThreshold": 5}
    (extract,) = got[("Deployment", "data-miner", "extract")]["spec"]["template"]["spec"]["containers"]
    assert extract["livenessProbe"] == {
        "exec": {"command": ["python", "-m", "data_miner.health"]},
        "periodSeconds": 30,
    }
    for name in ("filter", "monitor"):  # no probe stated, none made: never one on a file nothing writes
        (container,) = got[("Deployment", "data-miner", name)]["spec"]["template"]["spec"]["containers"]
        assert "livenessProbe" not in container and "readinessProbe" not in container


def test_host_dirs_of_each_node_with_the_infrastructure_owned_by_its_images_user():
    doc = with_storage_node(EXAMPLE)
    doc["infrastructure"]["loki"] = {"kind": "StatefulSet", "image": "grafana/loki:2.9.0", "port": 3100}
    checked = cc.check(doc).doc
    rendered = dm.render(checked)
    owners = {
        "postgres": {"uid": 999, "gid": 999, "mode": "0700"},
        "grafana": {"uid": 472, "gid": 0, "mode": "0750"},
    }
    master = {d["path"]: d for d in dm.host_dirs(checked, rendered, "pavanjci", owners)}
    assert master["/data/data_miner_db/postgres"] == {
        "path": "/data/data_miner_db/postgres", "uid": 999, "gid": 999, "mode": "0700", "for": "postgres",
    }  # fmt: skip
    assert master["/data/data_miner_db/grafana"]["uid"] == 472
    assert master["/data/data_miner_db/loki"]["uid"] == 0  # not in owners: root's
    assert master["/data/data_miner_db"]["for"] == "parent" and master["/data/seaweed"]["for"] == "parent"
    assert "/swdfs_mnt/swshared" in master and "/data/seaweed/master" in master
    worker = [d["path"] for d in dm.host_dirs(checked, rendered, "manthana", owners)]
    assert "/data/data_miner_db/postgres" not in worker and "/swdfs_mnt/swshared" in worker
    store = [d["path"] for d in dm.host_dirs(checked, rendered, "storage1", owners)]
    assert store == ["/data/seaweed", "/data/seaweed/volume"]  # no mount where no worker runs
