"""The strata.ops.cluster_config inventory plugin through the real ansible-inventory and
ansible-playbook, with this repository's ansible.cfg (which enables it before yaml). No host is
contacted: the play runs on localhost with gather_facts off and prints group membership."""

import json
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "inventories", "examples", "data-miner", "cluster_config.yaml")
BIN = os.path.dirname(sys.executable)

PLAY = """\
- name: Print what the cluster config made
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Print the groups
      ansible.builtin.debug:
        msg: >-
          {{ {'server': groups['k3s_server'], 'agents': groups['k3s_agents'],
              'gpu': groups['strata_gpu'], 'nodes': groups['strata_cluster_nodes'],
              'namespace': strata_namespace,
              'output_dir': cluster_config.k3s_app_overrides.output_dir,
              'gpu_workers': hostvars['pavanjci'].strata_node_workers} }}
"""


def run(tool, *args, **env_vars):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1", **env_vars)
    argv = [os.path.join(BIN, tool), *args]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=120)


def plain(value):
    """ansible-inventory --list marks strings that are not templated as {"__ansible_unsafe": ...}."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def copy_example(tmp_path):
    path = tmp_path / "cluster_config.yaml"
    shutil.copy(EXAMPLE, path)
    return path


def test_ansible_inventory_lists_the_nodes(tmp_path):
    path = copy_example(tmp_path)
    proc = run("ansible-inventory", "-i", str(path), "--list")
    assert proc.returncode == 0, proc.stderr
    listed = plain(json.loads(proc.stdout))
    assert listed["k3s_server"]["hosts"] == ["pavanjci"]
    assert listed["k3s_agents"]["hosts"] == ["manthana", "arsenal"]
    assert listed["strata_gpu"]["hosts"] == ["pavanjci"]
    assert listed["strata_cluster_nodes"]["hosts"] == ["pavanjci", "manthana", "arsenal"]
    assert set(listed["k3s_cluster"]["children"]) == {"k3s_server", "k3s_agents"}
    host = listed["_meta"]["hostvars"]["manthana"]
    assert host["ansible_host"] == "10.96.122.132"
    assert host["strata_seaweedfs_disk_limit_mb"] == 100000
    assert host["strata_node_workers"] == ["download"]
    assert "[WARNING]" not in proc.stderr, proc.stderr


def test_the_plugin_form_points_at_the_file(tmp_path):
    copy_example(tmp_path)
    source = tmp_path / "nodes.yml"
    source.write_text("plugin: strata.ops.cluster_config\npath: cluster_config.yaml\n")
    proc = run("ansible-inventory", "-i", str(source), "--graph", "k3s_cluster")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "@k3s_cluster:",
        "|--@k3s_server:",
        "|",
        "|--pavanjci",
        "|--@k3s_agents:",
        "|",
        "|--manthana",
        "|",
        "|--arsenal",
    ]


def test_ansible_playbook_sees_the_groups_and_vars(tmp_path):
    path = copy_example(tmp_path)
    play = tmp_path / "groups.yml"
    play.write_text(PLAY)
    proc = run("ansible-playbook", "-i", str(path), str(play), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]
    assert got == {
        "server": ["pavanjci"],
        "agents": ["manthana", "arsenal"],
        "gpu": ["pavanjci"],
        "nodes": ["pavanjci", "manthana", "arsenal"],
        "namespace": "data-miner",
        "output_dir": "/swdfs_mnt/swshared/data_miner_output",
        "gpu_workers": ["download", "extract", "filter", "dedup", "detect", "monitor"],
    }
    hosts = run(
        "ansible-playbook",
        "-i",
        str(path),
        "--list-hosts",
        os.path.join(REPO, "playbooks", "layer3_cluster.yml"),
    )
    assert hosts.returncode == 0, hosts.stdout + hosts.stderr
    assert "hosts (3):" in hosts.stdout


def test_a_bad_file_stops_with_every_problem_named(tmp_path):
    path = copy_example(tmp_path)
    text = path.read_text().replace("schedule_on: gpu,", "schedule_on: gpus,")
    path.write_text(text.replace("seaweedfs_mount}", "seaweedfs_mnt}"))
    for tool, args in (("ansible-inventory", ["--list"]), ("ansible-playbook", ["--list-hosts"])):
        proc = run(
            tool,
            "-i",
            str(path),
            *args,
            *([os.path.join(REPO, "playbooks", "site.yml")] if tool == "ansible-playbook" else []),
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"{path}: 3 problems in the cluster config:" in proc.stderr, proc.stderr
        assert "workers.filter.schedule_on: 'gpus' is not one of all, master, gpu" in proc.stderr
        assert "workers.detect.schedule_on: 'gpus' is not one of all, master, gpu" in proc.stderr
        assert (
            "k3s_app_overrides.output_dir: ${storage.seaweedfs_mnt} refers to nothing "
            "(storage has seaweedfs_mount, db_path)" in proc.stderr
        )
        assert "Skipping key" not in proc.stderr  # the yaml plugin never saw it
