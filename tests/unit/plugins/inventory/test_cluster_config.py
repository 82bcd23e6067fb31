"""The strata.ops.cluster_config inventory plugin: which files it takes, groups, variables, errors."""

import pytest
from ansible.errors import AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader

from ansible_collections.strata.ops.plugins.inventory.cluster_config import InventoryModule, load_file
from tests.unit.plugins.module_utils.test_cluster_config import EXAMPLE_FILE, EXAMPLE_TEXT


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def parse(path):
    inventory = InventoryData()
    InventoryModule().parse(inventory, DataLoader(), path)
    return inventory


def members(inventory, group):
    return [host.name for host in inventory.groups[group].get_hosts()]


@pytest.mark.parametrize(
    ("name", "text", "wanted"),
    [
        ("cluster_config.yaml", EXAMPLE_TEXT, True),
        ("cluster_config.yml", EXAMPLE_TEXT, True),
        ("prod.cluster_config.yml", EXAMPLE_TEXT, True),
        ("hosts.yml", EXAMPLE_TEXT, False),  # the name says it is someone else's
        ("mycluster_config.yaml", EXAMPLE_TEXT, False),
        ("cluster_config.yaml", "all:\n  hosts: {a: {}}\n", False),  # a plain YAML inventory
        ("cluster_config.yaml", "cluster: [\n", True),  # ours but broken: parse says why
        ("nodes.yml", "plugin: strata.ops.cluster_config\npath: x.yaml\n", True),
        ("nodes.yaml", "plugin: cluster_config  # short name\npath: x.yaml\n", True),
        ("nodes.yml", "plugin: amazon.aws.aws_ec2\n", False),
        ("cluster_config.json", EXAMPLE_TEXT, False),
    ],
)
def test_verify_file(tmp_path, name, text, wanted):
    assert InventoryModule().verify_file(write(tmp_path, name, text)) is wanted


def test_verify_file_of_a_missing_file(tmp_path):
    assert InventoryModule().verify_file(str(tmp_path / "cluster_config.yaml")) is False


def test_the_issue_example_makes_the_groups_and_host_vars(tmp_path):
    inventory = parse(write(tmp_path, "cluster_config.yaml", EXAMPLE_TEXT))
    nodes = ["pavanjci", "manthana", "arsenal"]
    assert members(inventory, "strata_hosts") == nodes
    assert members(inventory, "strata_cluster_nodes") == nodes  # the master first (k3s server)
    assert members(inventory, "k3s_server") == ["pavanjci"]
    assert members(inventory, "k3s_agents") == ["manthana", "arsenal"]
    assert members(inventory, "k3s_cluster") == nodes
    assert members(inventory, "strata_role_master") == ["pavanjci"]
    assert members(inventory, "strata_role_worker") == ["manthana", "arsenal"]
    assert members(inventory, "strata_gpu") == []
    assert members(inventory, "strata_storage_only") == []
    host_vars = dict(inventory.hosts["pavanjci"].vars)
    for key in ("inventory_file", "inventory_dir"):  # set by InventoryData itself
        host_vars.pop(key, None)
    assert host_vars == {
        "ansible_host": "10.96.122.9",
        "strata_node_role": "master",
        "strata_seaweedfs_disk_limit_mb": 50000,
        "strata_node_labels": {},
        "strata_node_gpu": False,
        "strata_storage_only": False,
        "strata_node_workers": ["download", "extract", "monitor"],
        "cluster_k3s_role": "server",
    }
    assert inventory.hosts["arsenal"].vars["cluster_k3s_role"] == "agent"
    all_vars = inventory.groups["all"].vars
    assert all_vars["strata_namespace"] == "data-miner"
    assert all_vars["strata_cluster_engine"] == "k3s"
    assert all_vars["strata_k3s_version"] == "v1.31.0+k3s1"
    assert all_vars["cluster_config_file"] == str(tmp_path / "cluster_config.yaml")
    assert (
        all_vars["cluster_config"]["k3s_app_overrides"]["output_dir"]
        == "/swdfs_mnt/swshared/data_miner_output"
    )


def test_the_repository_example_has_its_gpu_node():
    inventory = parse(EXAMPLE_FILE)
    assert members(inventory, "strata_gpu") == ["pavanjci"]
    assert inventory.hosts["pavanjci"].vars["strata_node_gpu"] is True


@pytest.mark.parametrize(
    ("sharing", "wanted"),
    [
        (
            "{mode: time_slicing}",
            {"cluster_k3s_gpu_sharing": "time_slicing", "cluster_k3s_gpu_time_slices": 4},
        ),
        ("{mode: exclusive}", {"cluster_k3s_gpu_sharing": "exclusive"}),
        (None, {}),  # layer 3's own default (runtime)
    ],
)
def test_gpu_sharing_becomes_the_cluster_roles_variables(tmp_path, sharing, wanted):
    text = EXAMPLE_TEXT
    if sharing:
        text = text.replace(
            "  k3s_version: v1.31.0+k3s1\n", f"  k3s_version: v1.31.0+k3s1\n  gpu_sharing: {sharing}\n"
        )
    all_vars = parse(write(tmp_path, "cluster_config.yaml", text)).groups["all"].vars
    assert {key: value for key, value in all_vars.items() if key.startswith("cluster_k3s_gpu")} == wanted


def test_a_storage_only_node(tmp_path):
    text = EXAMPLE_TEXT.replace(
        "    # storage1: {ip: ..., role: worker, storage_only: true, disk_limit_mb: 500000}",
        "    storage1: {ip: 10.96.122.20, role: worker, storage_only: true, disk_limit_mb: 500000}",
    )
    inventory = parse(write(tmp_path, "cluster_config.yaml", text))
    assert members(inventory, "strata_storage_only") == ["storage1"]
    assert "storage1" in members(inventory, "strata_hosts")
    assert "storage1" in members(inventory, "k3s_agents")
    assert inventory.hosts["storage1"].vars["strata_node_workers"] == []
    assert inventory.hosts["storage1"].vars["strata_storage_only"] is True


def test_every_problem_is_in_one_error(tmp_path, capsys):
    text = EXAMPLE_TEXT.replace("schedule_on: gpu,", "schedule_on: gpus,").replace(
        "10.96.122.14", "10.96.122.300"
    )
    path = write(tmp_path, "cluster_config.yaml", text)
    plugin = InventoryModule()
    with pytest.raises(AnsibleParserError) as raised:
        plugin.populate(load_file(path), path)
    message = str(raised.value)
    assert message.startswith(f"{path}: 2 problems in the cluster config:\n")
    assert "  cluster.nodes.arsenal.ip: '10.96.122.300' is not an IP address" in message
    assert "  workers.filter.schedule_on: 'gpus' is not one of all, master, gpu" in message
    # parse() of the operators' file stops the run: the yaml plugin would take it otherwise.
    with pytest.raises(SystemExit) as stopped:
        parse(path)
    assert stopped.value.code == 1
    assert "workers.filter.schedule_on: 'gpus' is not one of all, master, gpu" in capsys.readouterr().err


def test_a_key_given_twice_is_refused(tmp_path):
    text = EXAMPLE_TEXT.replace("    arsenal:", "    manthana: {ip: 10.0.0.1, role: worker}\n    arsenal:")
    path = write(tmp_path, "cluster_config.yaml", text)
    with pytest.raises(AnsibleParserError, match=r"the key 'manthana' is given twice \(line 6 and line 7\)"):
        load_file(path)


def test_yaml_that_does_not_parse(tmp_path):
    path = write(tmp_path, "cluster_config.yaml", "cluster: [\n")
    with pytest.raises(AnsibleParserError, match="is not valid YAML"):
        load_file(path)


def test_a_missing_file(tmp_path):
    with pytest.raises(AnsibleParserError, match=r"cannot read the cluster config .*: No such file"):
        load_file(str(tmp_path / "nope.yaml"))
