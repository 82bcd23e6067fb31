"""cluster_config: the k3s pipeline's cluster_config.yaml checked, references resolved, nodes."""

import copy
import os

import pytest
import yaml

from ansible_collections.strata.ops.plugins.module_utils import cluster_config as cc

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(HERE))))
EXAMPLE_FILE = os.path.join(REPO, "inventories", "examples", "data-miner", "cluster_config.yaml")

# The issue's example, exactly as the operators keep it (no GPU marker on any node).
EXAMPLE_TEXT = """\
cluster:
  namespace: data-miner
  k3s_version: v1.31.0+k3s1
  nodes:
    pavanjci: {ip: "10.96.122.9", role: master, disk_limit_mb: 50000}      # the GPU node
    manthana: {ip: "10.96.122.132", role: worker, disk_limit_mb: 100000}
    arsenal:  {ip: "10.96.122.14", role: worker, disk_limit_mb: 100000}
    # storage1: {ip: ..., role: worker, storage_only: true, disk_limit_mb: 500000}
storage: {seaweedfs_mount: /swdfs_mnt/swshared, db_path: /data/data_miner_db}
image: {name: data-miner, tag: latest, pull_policy: Never}
seaweedfs: {namespace: seaweedfs, image: chrislusf/seaweedfs:latest, data_dir: /data/seaweed, default_disk_limit_mb: 0}
resource_presets:
  small: {cpu: 250m-1000m, memory: 512Mi-2Gi}
  gpu:   {cpu: 500m-2000m, memory: 2Gi-8Gi}
workers:
  download: {kind: StatefulSet, replicas: 3, schedule_on: all}
  extract:  {replicas: 2, schedule_on: master}
  filter:   {replicas: 1, schedule_on: gpu, hf_token: true}
  monitor:  {replicas: 1, schedule_on: master}
infrastructure:
  postgres: {kind: StatefulSet, image: postgres:16, port: 5432}
  grafana:  {kind: Deployment, image: grafana/grafana:10.0.0, node_port: 30300}
k3s_app_overrides: {output_dir: "${storage.seaweedfs_mount}/data_miner_output", device: auto}
"""  # noqa: E501 - exactly as the operators write it
EXAMPLE = yaml.safe_load(EXAMPLE_TEXT)

with open(os.path.join(HERE, "test_cluster_config.yaml"), encoding="utf-8") as _handle:
    BAD_CASES = yaml.safe_load(_handle)


def _parent(doc, dotted):
    *parents, last = dotted.split(".")
    for key in parents:
        doc = doc.setdefault(key, {})
    return doc, last


def changed(set_=None, delete=()):
    doc = copy.deepcopy(EXAMPLE)
    for dotted, value in (set_ or {}).items():
        parent, key = _parent(doc, dotted)
        parent[key] = value
    for dotted in delete:
        parent, key = _parent(doc, dotted)
        del parent[key]
    return doc


def test_the_issue_example_checks_clean_and_resolves_its_reference():
    checked = cc.check(EXAMPLE)
    assert checked.ok, checked.errors
    assert checked.doc["k3s_app_overrides"]["output_dir"] == "/swdfs_mnt/swshared/data_miner_output"
    assert checked.doc["cluster"] == EXAMPLE["cluster"]
    # No node is marked as the GPU node: the gpu worker has nowhere to go, which is a warning.
    assert checked.warnings == [
        "workers.filter.schedule_on: gpu, but no node that takes workers is marked as a GPU node "
        "(set gpu: true or the label strata.io/gpu: 'true' under cluster.nodes.<name>)"
    ]
    assert EXAMPLE["k3s_app_overrides"]["output_dir"].startswith("${"), "the input is not changed"


def test_the_issue_example_nodes():
    got = cc.nodes(cc.check(EXAMPLE).doc)
    assert [n["name"] for n in got] == ["pavanjci", "manthana", "arsenal"]
    assert got[0] == {
        "name": "pavanjci",
        "ip": "10.96.122.9",
        "role": "master",
        "disk_limit_mb": 50000,
        "storage_only": False,
        "gpu": False,
        "labels": {},
        "workers": ["download", "extract", "monitor"],
    }
    assert got[1]["workers"] == ["download"]
    assert got[2]["disk_limit_mb"] == 100000


def test_the_repository_example_file_is_clean():
    with open(EXAMPLE_FILE, encoding="utf-8") as handle:
        checked = cc.check(yaml.safe_load(handle))
    assert checked.ok, checked.errors
    assert checked.warnings == []
    master = cc.nodes(checked.doc)[0]
    assert master["gpu"] is True
    assert master["workers"] == ["download", "extract", "filter", "dedup", "detect", "monitor"]


@pytest.mark.parametrize("case", BAD_CASES, ids=[case["id"] for case in BAD_CASES])
def test_bad_input(case):
    checked = cc.check(changed(case.get("set"), case.get("delete", ())))
    assert not checked.ok
    if "errors" in case:
        assert checked.errors == case["errors"]
    for part in case.get("contains", ()):
        assert len(checked.errors) == 1, checked.errors
        assert part in checked.errors[0], checked.errors


def test_there_are_enough_bad_cases():
    assert len(BAD_CASES) >= 12


@pytest.mark.parametrize("doc", [None, [], "cluster"])
def test_a_document_that_is_not_a_map(doc):
    checked = cc.check(doc)
    assert len(checked.errors) == 1
    assert checked.errors[0].startswith("(top level): expected a map with a cluster key, got ")


def test_references_resolve_transitively_and_keep_the_type_of_a_whole_reference():
    doc = changed(
        {
            "storage.seaweedfs_mount": "${seaweedfs.data_dir}/mnt",
            "storage.db_path": "${storage.seaweedfs_mount}/db",
            "k3s_app_overrides.limit": "${cluster.nodes.arsenal.disk_limit_mb}",
            "k3s_app_overrides.text": (
                "limit ${cluster.nodes.arsenal.disk_limit_mb} MB, hf ${workers.filter.hf_token}"
            ),
            "k3s_app_overrides.literal": "$${storage.db_path} is ${storage.db_path}",
            "k3s_app_overrides.listed": ["${image.name}", {"nested": "${image.tag}"}],
            "k3s_app_overrides.first": "${k3s_app_overrides.listed.0}",
        }
    )
    checked = cc.check(doc)
    assert checked.ok, checked.errors
    storage = checked.doc["storage"]
    assert storage == {"seaweedfs_mount": "/data/seaweed/mnt", "db_path": "/data/seaweed/mnt/db"}
    overrides = checked.doc["k3s_app_overrides"]
    assert overrides["limit"] == 100000
    assert overrides["text"] == "limit 100000 MB, hf true"
    assert overrides["literal"] == "${storage.db_path} is /data/seaweed/mnt/db"
    assert overrides["listed"] == ["data-miner", {"nested": "latest"}]
    assert overrides["first"] == "data-miner"


def test_a_reference_through_a_key_with_dots():
    doc = changed({"cluster.nodes": {"n1.lab": {"ip": "10.0.0.1", "role": "master"}}})
    doc["k3s_app_overrides"]["server"] = "https://${cluster.nodes.n1.lab.ip}:6443"
    checked = cc.check(doc)
    assert checked.ok, checked.errors
    assert checked.doc["k3s_app_overrides"]["server"] == "https://10.0.0.1:6443"


def test_a_dangling_reference_is_reported_once_where_it_occurs():
    doc = changed(
        {
            "storage.seaweedfs_mount": "${nowhere.at.all}",
            "storage.db_path": "${storage.seaweedfs_mount}/db",
        }
    )
    checked = cc.check(doc)
    assert checked.errors == [
        "storage.seaweedfs_mount: ${nowhere.at.all} refers to nothing (the top level has "
        "cluster, storage, image, seaweedfs, resource_presets, workers, infrastructure, "
        "k3s_app_overrides)"
    ]


def test_storage_only_nodes_get_no_workers_and_labels_mark_gpus():
    doc = changed(
        {
            "cluster.nodes.storage1": {"ip": "10.96.122.20", "role": "worker", "storage_only": True},
            "cluster.nodes.arsenal.labels": {"nvidia.com/gpu.present": "true", "zone": "rack-2"},
        }
    )
    checked = cc.check(doc)
    assert checked.ok, checked.errors
    assert checked.warnings == []
    by_name = {node["name"]: node for node in cc.nodes(checked.doc)}
    assert by_name["storage1"]["storage_only"] is True
    assert by_name["storage1"]["workers"] == []
    assert by_name["storage1"]["disk_limit_mb"] == 0  # seaweedfs.default_disk_limit_mb
    assert by_name["arsenal"]["gpu"] is True
    assert by_name["arsenal"]["workers"] == ["download", "filter"]


def test_a_gpu_node_that_is_storage_only_takes_no_gpu_worker():
    doc = changed(
        {"cluster.nodes.storage1": {"ip": "10.0.0.9", "role": "worker", "storage_only": True, "gpu": True}}
    )
    checked = cc.check(doc)
    assert checked.ok
    assert [w.split(":")[0] for w in checked.warnings] == ["workers.filter.schedule_on"]


@pytest.mark.parametrize(
    ("sharing", "warned"),
    [
        ({"mode": "runtime"}, False),  # the operators' setup: nobody asks for nvidia.com/gpu
        ({"mode": "exclusive"}, True),  # their incident: 1 GPU, 3 pods asking for one each
        ({"mode": "time_slicing", "time_slices": 2}, True),
        ({"mode": "time_slicing"}, False),  # 4 slices by default
    ],
)
def test_gpu_pods_beyond_what_the_sharing_mode_gives_are_a_warning(sharing, warned):
    doc = changed(
        {
            "cluster.nodes.pavanjci.gpu": True,
            "cluster.gpu_sharing": sharing,
            "workers.dedup": {"schedule_on": "gpu"},
            "workers.detect": {"schedule_on": "gpu"},
        }
    )
    checked = cc.check(doc)
    assert checked.ok, checked.errors
    if warned:
        (warning,) = checked.warnings
        assert warning.startswith(f"cluster.gpu_sharing.mode: {sharing['mode']} gives ")
        assert "ask for 3 pods" in warning and "will stay Pending" in warning
    else:
        assert checked.warnings == []
    mode, slices = cc.gpu_sharing(checked.doc)
    assert mode == sharing["mode"]
    assert slices == (sharing.get("time_slices", 4) if mode == "time_slicing" else None)


@pytest.mark.parametrize(
    ("command", "warned"),
    [
        (["cat", "/tmp/healthy"], True),  # the operators' incident
        (["/bin/sh", "-c", "test -f /tmp/healthy"], True),
        (["python", "-m", "data_miner.health"], False),
        (["pgrep", "-f", "/usr/bin/worker"], False),
    ],
)
def test_a_probe_that_only_looks_at_a_file_is_a_warning(command, warned):
    checked = cc.check(changed({"workers.download.probe": {"exec": command, "period_seconds": 10}}))
    assert checked.ok, checked.errors
    probe_warnings = [w for w in checked.warnings if w.startswith("workers.download.probe")]
    if warned:
        (warning,) = probe_warnings
        assert "the probe only looks at /tmp/healthy" in warning and "probe http or tcp" in warning
    else:
        assert probe_warnings == []


def test_an_entry_with_no_settings_is_an_empty_entry():
    doc = changed({"workers.idle": None})
    checked = cc.check(doc)
    assert checked.ok, checked.errors
    assert "idle" in cc.nodes(checked.doc)[1]["workers"]  # schedule_on defaults to all


@pytest.mark.parametrize(
    ("text", "value"),
    [("250m", "0.250"), ("2Gi", str(2 * 2**30)), ("1e3", "1E+3"), ("1.5k", "1.5E+3"), ("2", "2")],
)
def test_quantity_values(text, value):
    assert cc.quantity_value(text) == __import__("decimal").Decimal(value)


def test_a_range_with_an_exponent_is_split_at_the_right_dash():
    assert cc.check(changed({"resource_presets.small.cpu": "1e-1-2"})).ok
