"""Layer 3 on the real control plane: playbooks/layer3_cluster.yml on inventories/lab, its
idempotence, the nodes it registers, and scheduling that respects their taints."""

import json
import os
import stat
import subprocess
import sys

import pytest
from lab_k8s import deployment

from ansible_collections.strata.ops.plugins.module_utils import k8s

from .conftest import CACHE, REPO, adhoc_result
from .k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .k8s_fixtures import recap, run_playbook

pytestmark = pytest.mark.needs("k8s")

TAINT = {"key": "experiment", "value": "dedicated", "effect": "NoSchedule"}


def test_layer3_registers_the_lab_nodes(lab_cluster, k8s_client):
    nodes = {n["metadata"]["name"]: n for n in k8s_client.list("Node")[0]}
    assert {"strata-lab-1", "strata-lab-2"} <= set(nodes)
    for name in ("strata-lab-1", "strata-lab-2"):
        assert k8s.node_is_ready(nodes[name]), name
        assert nodes[name]["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert nodes[name]["status"]["allocatable"]["pods"] == "110"
    assert nodes["strata-lab-1"]["metadata"]["labels"]["strata.io/role"] == "workload"
    assert nodes["strata-lab-2"]["metadata"]["labels"]["strata.io/role"] == "experiment"
    assert nodes["strata-lab-1"]["spec"].get("taints", []) == []
    assert nodes["strata-lab-2"]["spec"]["taints"] == [TAINT]
    mode = stat.S_IMODE(os.stat(lab_cluster["kubeconfig"]).st_mode)
    assert mode == 0o600
    assert "client-key-data" not in lab_cluster["stdout"]
    assert "client-certificate-data" not in lab_cluster["stdout"]


def test_layer3_second_run_changes_nothing(lab_cluster):
    proc = run_playbook("layer3_cluster.yml")
    assert proc.returncode == 0, proc.stdout[-3000:]
    counts = recap(proc.stdout)
    assert counts, proc.stdout[-2000:]
    assert all(c["changed"] == 0 for c in counts.values()), counts


def test_health_check_playbook_is_read_only(lab_cluster):
    proc = run_playbook("health_check.yml")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert all(c["changed"] == 0 for c in recap(proc.stdout).values())
    # one of cluster_health's three verdicts (the lab workload may be stopped by another test file)
    assert any(verdict in proc.stdout for verdict in ("healthy:", "problem(s)", "stopped 0/0:")), proc.stdout


def lab_deployment(name, replicas, tolerate=False, node_selector=None):
    spec = {
        "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
        "terminationGracePeriodSeconds": 1,
    }
    if tolerate:
        spec["tolerations"] = [dict(TAINT, operator="Equal")]
    if node_selector:
        spec["nodeSelector"] = node_selector
    return deployment(name, replicas, spec)


def lab_pods(items):
    return [p for p in items if p["spec"].get("nodeName", "").startswith("strata-lab-")]


def test_deployment_respects_the_dedicated_taint(lab_cluster, k8s_client, k8s_namespace):
    ns = k8s_namespace
    k8s_client.create("Deployment", lab_deployment("plain", 4), ns)
    done = k8s_client.watch_until(
        "Pod", k8s.all_items(k8s.pod_is_ready, minimum=4), ns, label_selector="app=plain", timeout=60
    )
    placed = {p["spec"]["nodeName"] for p in done["items"]}
    assert "strata-lab-2" not in placed, "a pod without toleration landed on the tainted node"
    assert placed <= {n["metadata"]["name"] for n in k8s_client.list("Node")[0]}

    k8s_client.create(
        "Deployment",
        lab_deployment("experiment", 2, tolerate=True, node_selector={"strata.io/role": "experiment"}),
        ns,
    )
    done = k8s_client.watch_until(
        "Pod", k8s.all_items(k8s.pod_is_ready, minimum=2), ns, label_selector="app=experiment", timeout=60
    )
    assert {p["spec"]["nodeName"] for p in done["items"]} == {"strata-lab-2"}

    # the Deployment is ready, then scale to 0 and wait (watch) until its pods are gone
    k8s_client.watch_until(
        "Deployment", k8s.named_ready(["experiment"], k8s.workload_is_ready), ns, timeout=30
    )
    assert k8s_client.scale("Deployment", "experiment", ns, 0) == (2, 0)
    gone = k8s_client.watch_until("Pod", k8s.no_items, ns, label_selector="app=experiment", timeout=60)
    assert gone["items"] == []


# ---------------------------------------------------------------- no cluster: fail, naming what is missing


def flat(proc):
    """stdout with whitespace runs made one space (the default callback wraps long messages)."""
    return " ".join(proc.stdout.split())


def test_kind_engine_without_kind_fails_naming_what_is_missing(lab_cluster, tmp_path):
    """The lab hosts have no kind: layer 3 used to print "skipped" and pass with no cluster."""
    kubeconfig = tmp_path / "kind.kubeconfig"
    proc = run_playbook(
        "layer3_cluster.yml",
        "-e",
        "strata_cluster_engine=kind",
        "-e",
        f"strata_kubeconfig={kubeconfig}",
        "-e",
        "cluster_kind_name=strata-it-kind",
    )
    out = flat(proc)
    assert proc.returncode != 0, out[-3000:]
    for host in ("strata-lab-1", "strata-lab-2"):
        assert f"strata_cluster_engine is kind, but the kind CLI (kind) does not run on {host}" in out
    assert f"So there is no kind cluster strata-it-kind and no kubeconfig {kubeconfig}" in out
    assert not kubeconfig.exists()
    for host in ("strata-lab-1", "strata-lab-2"):  # nothing was created on the hosts
        probe = subprocess.run(
            ["docker", "exec", host, "test", "-e", "/etc/strata/kind-config.yaml"], check=False
        )
        assert probe.returncode == 1


CONTROLLER_PLAY = """
- name: Layer 3, the controller half only
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Experiment state, lab cluster, invariants
      ansible.builtin.include_role:
        name: strata.ops.cluster
        tasks_from: controller
"""


def test_controller_without_a_kubeconfig_fails_naming_cluster_and_kubeconfig(tmp_path):
    """The controller half alone (the host play passed, say, but fetched nothing): it used to say
    "Layer 3 invariants skipped" and pass."""
    (tmp_path / "play.yml").write_text(CONTROLLER_PLAY)
    kubeconfig = tmp_path / "absent.kubeconfig"
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    extra = [
        "-e",
        f"strata_kubeconfig={kubeconfig}",
        "-e",
        f"strata_experiment_state_path={tmp_path}/none.json",
    ]
    for engine, fragment in (
        ("kind", "The kind cluster strata-it-kind was not created on strata-lab-1, strata-lab-2"),
        ("k3s", "The k3s server strata-lab-1 did not hand out its kubeconfig"),
    ):
        proc = subprocess.run(
            ["ansible-playbook", "-i", os.path.join(REPO, "inventories", "lab"), str(tmp_path / "play.yml"),
             "-e", f"strata_cluster_engine={engine}", "-e", "cluster_kind_name=strata-it-kind", *extra],
            cwd=REPO, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        out = flat(proc)
        assert proc.returncode != 0, out[-3000:]
        assert f"There is no {engine} cluster to check: {kubeconfig} does not exist." in out
        assert fragment in out
        assert "the layer 3 invariants were not checked" in out


# ---------------------------------------------------------------- an experiment's node

EXPERIMENT_TAINT = {"key": "strata.io/experiment", "value": "it-layer3", "effect": "NoSchedule"}


def node_state(client, name):
    """(taints without the node lifecycle controller's own, cordoned); a cordon must come with
    the controller's node.kubernetes.io/unschedulable taint, and layer 3 must leave it there."""
    node = client.get_node(name)
    taints = node["spec"].get("taints", [])
    cordoned = bool(node["spec"].get("unschedulable"))
    kubernetes = [t["key"] for t in taints if t["key"].startswith("node.kubernetes.io/")]
    assert kubernetes == (["node.kubernetes.io/unschedulable"] if cordoned else []), taints
    return [t for t in taints if not t["key"].startswith("node.kubernetes.io/")], cordoned


def wait_cordon_taint(client, name, present):
    """The node lifecycle controller adds (removes) node.kubernetes.io/unschedulable soon after a
    cordon (uncordon): wait for it with a watch."""

    def settled(items):
        taints = items[0]["spec"].get("taints", []) if items else []
        return any(t["key"] == "node.kubernetes.io/unschedulable" for t in taints) is present

    client.watch_until("Node", settled, field_selector="metadata.name=" + name, timeout=60)


def test_layer3_keeps_an_active_experiments_taint_and_cordon(lab_cluster, tmp_path):
    """runner isolation taints and cordons strata-lab-1; layer 3 (check mode and a real run) used
    to fail on "unexpected taint" and remove it. A cluster of its own: other tests use the lab's."""
    cluster = "strata-it-exp"
    env = {"STRATA_LAB_CLUSTER": cluster}
    kubeconfig = os.path.join(CACHE, "controlplane", cluster + ".kubeconfig")
    state = tmp_path / "isolation.json"
    extra = ("-e", f"strata_experiment_state_path={state}")
    isolation = {"state_path": str(state), "kubeconfig": kubeconfig, "node": "strata-lab-1"}
    try:
        first = run_playbook("layer3_cluster.yml", *extra, env=env)
        assert first.returncode == 0, flat(first)[-3000:]
        client = k8s.get_client(kubeconfig)
        entered = adhoc_result(
            "runner_isolation", dict(isolation, state="isolated", taint=EXPERIMENT_TAINT, cordon=True)
        )
        assert entered.get("failed") is not True, entered
        wait_cordon_taint(client, "strata-lab-1", True)
        assert node_state(client, "strata-lab-1") == ([EXPERIMENT_TAINT], True)

        for args in (("--check", "--diff"), ()):
            proc = run_playbook("layer3_cluster.yml", *extra, *args, env=env)
            out = flat(proc)
            assert proc.returncode == 0, out[-3000:]
            assert recap(proc.stdout)["localhost"]["changed"] == 0, out[-3000:]
            assert "An experiment isolates node strata-lab-1" in out
            assert "keeps its taint strata.io/experiment=it-layer3:NoSchedule and cordon" in out
            assert node_state(client, "strata-lab-1") == ([EXPERIMENT_TAINT], True)
            assert node_state(client, "strata-lab-2") == ([TAINT], False)

        exited = adhoc_result("runner_isolation", dict(isolation, state="restored"))
        assert exited.get("failed") is not True, exited
        wait_cordon_taint(client, "strata-lab-1", False)
        assert node_state(client, "strata-lab-1") == ([], False)
        after = run_playbook("layer3_cluster.yml", *extra, env=env)
        assert after.returncode == 0, flat(after)[-3000:]
        assert "An experiment isolates" not in flat(after)
        assert recap(after.stdout)["localhost"]["changed"] == 0
    finally:
        subprocess.run(
            [os.path.join(REPO, "tests", "testbed", "controlplane", "stop")],
            env=dict(os.environ, CLUSTER_NAME=cluster),
            capture_output=True,
            check=False,
        )


# ---------------------------------------------------------------- k3s and kind templates
# k3s and kind cannot run here: their templates are rendered by Ansible itself, with the
# role's defaults and vars, for a GPU server and a CPU agent, and the results parsed.

# The play's head: the role's defaults and vars on local hosts (formatted with name, hosts, repo, out).
RENDER_HEAD = """
- name: {name}
  hosts: {hosts}
  connection: local
  gather_facts: false
  vars_files:
    - {repo}/roles/cluster/defaults/main.yml
    - {repo}/roles/cluster/vars/main.yml
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
"""

RENDER_PLAY = (
    RENDER_HEAD
    + """\
    strata_cluster_root: /srv/kind
    strata_kind_mount_root: /mnt
  tasks:
    - name: Render
      ansible.builtin.template:
        src: "{repo}/roles/cluster/templates/{{{{ item }}}}.j2"
        dest: "{out}/{{{{ inventory_hostname }}}}-{{{{ item }}}}"
        mode: "0600"
      loop:
        - k3s-config.yaml
        - containerd-config.toml.tmpl
        - nvidia-device-plugin.yaml
        - k3s.service
        - kind-config.yaml
"""
)

RENDER_INVENTORY = """
strata_cluster_nodes:
  hosts:
    gpu1:
      strata_node_labels: {strata.io/role: master}
      strata_node_taints: [{key: gpu, value: only, effect: NoSchedule}]
    cpu1:
      strata_node_labels: {strata.io/role: worker}
strata_gpu:
  hosts:
    gpu1:
"""


def test_k3s_and_kind_templates_render(tmp_path):
    import tomllib  # noqa: PLC0415 - Python 3.11+, only this test needs it
    import yaml  # noqa: PLC0415

    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "play.yml").write_text(
        RENDER_PLAY.format(
            repo=REPO, out=out, name="Render the cluster role's templates", hosts="strata_cluster_nodes"
        )
    )
    (tmp_path / "hosts.yml").write_text(RENDER_INVENTORY)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(
        # extra vars: vars_files (the role's defaults here) outrank play vars
        [
            "ansible-playbook",
            "-i",
            str(tmp_path / "hosts.yml"),
            "-e",
            "cluster_k3s_token=s3cret",
            str(tmp_path / "play.yml"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]

    server = yaml.safe_load((out / "gpu1-k3s-config.yaml").read_text())
    assert server["cluster-init"] is True
    assert server["write-kubeconfig-mode"] == "0600"
    assert server["token"] == "s3cret"
    assert sorted(server["node-label"]) == ["strata.io/gpu=true", "strata.io/role=master"]
    assert server["node-taint"] == ["gpu=only:NoSchedule"]
    assert server["default-runtime"] == "nvidia"
    agent = yaml.safe_load((out / "cpu1-k3s-config.yaml").read_text())
    assert agent["server"] == "https://gpu1:6443"
    assert agent["node-label"] == ["strata.io/role=worker"]
    assert "default-runtime" not in agent
    assert "cluster-init" not in agent

    toml = tomllib.loads((out / "gpu1-containerd-config.toml.tmpl").read_text())
    cri = toml["plugins"]["io.containerd.grpc.v1.cri"]
    # the seed's outage: a GPU template without the CNI directories made the node NotReady
    assert cri["cni"]["bin_dir"] == "/var/lib/rancher/k3s/data/current/bin"
    assert cri["cni"]["conf_dir"] == "/var/lib/rancher/k3s/agent/etc/cni/net.d"
    nvidia = cri["containerd"]["runtimes"]["nvidia"]
    assert nvidia["runtime_type"] == "io.containerd.runc.v2"
    assert nvidia["options"]["BinaryName"] == "/usr/bin/nvidia-container-runtime"
    assert cri["containerd"]["default_runtime_name"] == "nvidia"
    assert "runc" in cri["containerd"]["runtimes"]

    docs = list(yaml.safe_load_all((out / "gpu1-nvidia-device-plugin.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["RuntimeClass", "DaemonSet"]
    assert docs[1]["spec"]["template"]["spec"]["nodeSelector"] == {"strata.io/gpu": "true"}
    assert (
        "ExecStart=/usr/local/bin/k3s server --config /etc/rancher/k3s/config.yaml"
        in (out / "gpu1-k3s.service").read_text()
    )
    assert "k3s agent" in (out / "cpu1-k3s.service").read_text()

    kind = yaml.safe_load((out / "gpu1-kind-config.yaml").read_text())
    assert kind["nodes"][0]["extraMounts"] == [
        {"hostPath": "/srv/kind", "containerPath": "/mnt", "propagation": "HostToContainer"}
    ]


# ---------------------------------------------------------------- k3s GPU sharing modes and the CDI spec
# The same rendering, once per cluster_k3s_gpu_sharing mode (task vars outrank the vars_files),
# plus an explicit cluster_k3s_nvidia_default_runtime, which wins over the mode.

GPU_RENDER_PLAY = (
    RENDER_HEAD
    + """\
  tasks:
    - name: Render per mode
      ansible.builtin.template:
        src: "{repo}/roles/cluster/templates/{{{{ item.1 }}}}.j2"
        dest: "{out}/{{{{ item.0 }}}}-{{{{ item.1 }}}}"
        mode: "0600"
      vars:
        cluster_k3s_gpu_sharing: "{{{{ item.0 }}}}"
      loop: "{{{{ ['runtime', 'time_slicing', 'exclusive']
                 | product(['containerd-config.toml.tmpl', 'nvidia-device-plugin.yaml', 'k3s-config.yaml'])
                 | list }}}}"

    - name: Render with an explicit default runtime (an older inventory's setting)
      ansible.builtin.template:
        src: "{repo}/roles/cluster/templates/{{{{ item.1 }}}}.j2"
        dest: "{out}/{{{{ item.0 }}}}-{{{{ item.1 }}}}"
        mode: "0600"
      vars:
        cluster_k3s_gpu_sharing: "{{{{ item.0.split('-')[0] }}}}"
        # as -e gives it: a string
        cluster_k3s_nvidia_default_runtime: "{{{{ item.0.split('-')[1] }}}}"
      loop: "{{{{ ['exclusive-true', 'runtime-false']
                 | product(['containerd-config.toml.tmpl', 'k3s-config.yaml']) | list }}}}"
"""
)


def render_gpu_modes(tmp_path, *extra):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "play.yml").write_text(
        GPU_RENDER_PLAY.format(
            repo=REPO, out=out, name="Render the k3s GPU templates in each mode", hosts="gpu1"
        )
    )
    (tmp_path / "hosts.yml").write_text(RENDER_INVENTORY)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(
        ["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), *extra, str(tmp_path / "play.yml")],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return out


def test_k3s_gpu_sharing_modes_render(tmp_path):
    import tomllib  # noqa: PLC0415 - Python 3.11+, only these tests need it
    import yaml  # noqa: PLC0415

    out = render_gpu_modes(tmp_path, "-e", "cluster_k3s_gpu_time_slices=3")

    def containerd(name):
        cri = tomllib.loads((out / f"{name}-containerd-config.toml.tmpl").read_text())["plugins"][
            "io.containerd.grpc.v1.cri"
        ]
        # every mode keeps the CNI directories (the seed's NotReady node) and the nvidia runtime
        assert cri["cni"] == {
            "bin_dir": "/var/lib/rancher/k3s/data/current/bin",
            "conf_dir": "/var/lib/rancher/k3s/agent/etc/cni/net.d",
        }
        nvidia = cri["containerd"]["runtimes"]["nvidia"]
        assert nvidia["options"]["BinaryName"] == "/usr/bin/nvidia-container-runtime"
        assert "runc" in cri["containerd"]["runtimes"]
        return cri["containerd"].get("default_runtime_name")

    def k3s_default_runtime(name):
        return yaml.safe_load((out / f"{name}-k3s-config.yaml").read_text()).get("default-runtime")

    def plugin(name):
        text = (out / f"{name}-nvidia-device-plugin.yaml").read_text()
        docs = list(yaml.safe_load_all(text))
        assert all(isinstance(doc, dict) for doc in docs), text
        return {doc["kind"]: doc for doc in docs}, [doc["kind"] for doc in docs]

    # runtime: nvidia is the default runtime, the plugin shares nothing
    assert containerd("runtime") == "nvidia"
    assert k3s_default_runtime("runtime") == "nvidia"
    docs, kinds = plugin("runtime")
    assert kinds == ["RuntimeClass", "DaemonSet"]
    ctr = docs["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
    assert "CONFIG_FILE" not in [e["name"] for e in ctr["env"]]
    assert [v["name"] for v in docs["DaemonSet"]["spec"]["template"]["spec"]["volumes"]] == ["device-plugin"]

    # time_slicing: runc stays the default; the plugin reads NVIDIA's time-slicing config
    assert containerd("time_slicing") is None
    assert k3s_default_runtime("time_slicing") is None
    docs, kinds = plugin("time_slicing")
    assert kinds == ["RuntimeClass", "ConfigMap", "DaemonSet"]
    cm = docs["ConfigMap"]
    assert cm["metadata"]["namespace"] == docs["DaemonSet"]["metadata"]["namespace"] == "kube-system"
    assert list(cm["data"]) == ["config.yaml"]
    # the keys of NVIDIA/k8s-device-plugin README.md, "With CUDA Time-Slicing"
    assert yaml.safe_load(cm["data"]["config.yaml"]) == {
        "version": "v1",
        "sharing": {
            "timeSlicing": {
                "renameByDefault": False,
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": "nvidia.com/gpu", "replicas": 3}],
            }
        },
    }
    pod = docs["DaemonSet"]["spec"]["template"]
    ctr = pod["spec"]["containers"][0]
    config_file = {e["name"]: e["value"] for e in ctr["env"]}["CONFIG_FILE"]
    name = cm["metadata"]["name"]
    volume = next(v for v in pod["spec"]["volumes"] if v.get("configMap", {}).get("name") == name)
    mount = next(m for m in ctr["volumeMounts"] if m["name"] == volume["name"])
    assert config_file == mount["mountPath"] + "/config.yaml"
    assert mount["readOnly"] is True
    assert len(pod["metadata"]["annotations"]["strata.io/device-plugin-config-sha256"]) == 64

    # exclusive: the plugin plain, runc the default
    assert containerd("exclusive") is None
    assert k3s_default_runtime("exclusive") is None
    docs, kinds = plugin("exclusive")
    assert kinds == ["RuntimeClass", "DaemonSet"]
    assert "annotations" not in docs["DaemonSet"]["spec"]["template"]["metadata"]

    # an explicit cluster_k3s_nvidia_default_runtime is honoured whatever the mode (strings too)
    assert containerd("exclusive-true") == "nvidia"
    assert k3s_default_runtime("exclusive-true") == "nvidia"
    assert containerd("runtime-false") is None
    assert k3s_default_runtime("runtime-false") is None


# The k3s engine's GPU tasks alone (tag cluster_k3s_gpu) through the role, one host per case
# (inventory host vars outrank the role's defaults). There is no nvidia-ctk on this machine:
# the failure is real, as is the skip when the spec exists.
GPU_TASKS_PLAY = """
- name: The k3s engine's GPU tasks
  hosts: strata_cluster_nodes
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: The k3s engine, tag cluster_k3s_gpu only
      ansible.builtin.import_role:
        name: strata.ops.cluster
        tasks_from: k3s
"""


def test_k3s_gpu_tasks_assert_the_mode_and_make_the_cdi_spec_once(tmp_path):
    ctk = "/usr/bin/nvidia-ctk"
    if os.path.exists(ctk):
        pytest.skip(f"{ctk} is installed here: the missing nvidia-ctk case cannot be run")
    spec = {host: tmp_path / host / "cdi" / "nvidia.yaml" for host in ("nospec", "spec", "regen", "cpu")}
    for host in ("spec", "regen"):
        spec[host].parent.mkdir(parents=True)
        spec[host].write_text("cdiVersion: 0.5.0\n")
    hosts = {
        "slices1": {"cluster_k3s_gpu_sharing": "time_slicing", "cluster_k3s_gpu_time_slices": 1},
        "mps": {"cluster_k3s_gpu_sharing": "mps"},
        "nospec": {"cluster_k3s_cdi_spec": str(spec["nospec"])},
        "spec": {"cluster_k3s_cdi_spec": str(spec["spec"])},
        "regen": {"cluster_k3s_cdi_spec": str(spec["regen"]), "cluster_k3s_cdi_regenerate": True},
        "cpu": {"cluster_k3s_cdi_spec": str(spec["cpu"])},
    }
    inventory = {
        "strata_cluster_nodes": {"hosts": hosts},
        "strata_gpu": {"hosts": {host: None for host in hosts if host != "cpu"}},
    }
    (tmp_path / "hosts.yml").write_text(json.dumps(inventory))
    (tmp_path / "play.yml").write_text(GPU_TASKS_PLAY)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    for check in ([], ["--check"]):  # check mode fails and passes alike (its stats are real)
        proc = subprocess.run(
            ["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml"),
             "--tags", "cluster_k3s_gpu", *check],
            cwd=REPO, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        out = flat(proc)
        counts = recap(proc.stdout)
        assert proc.returncode != 0, out[-3000:]
        failed = {host for host, c in counts.items() if c["failed"]}
        assert failed == {"slices1", "mps", "nospec", "regen"}, out
        assert (
            "cluster_k3s_gpu_sharing is time_slicing, but cluster_k3s_gpu_time_slices is 1: it must be "
            "an integer of at least 2" in out
        )
        assert "cluster_k3s_gpu_sharing is mps: it must be runtime, time_slicing or exclusive." in out
        for host in ("nospec", "regen"):
            assert (
                f"{ctk} is not on GPU node {host}, so the CDI spec {spec[host]} cannot be generated: "
                "install the NVIDIA Container Toolkit (package nvidia-container-toolkit" in out
            )
        # the spec is there: nothing to do, and nvidia-ctk is not needed
        assert counts["spec"]["changed"] == 0
        assert (counts["cpu"]["changed"], counts["cpu"]["failed"]) == (0, 0)
        assert spec["spec"].read_text() == spec["regen"].read_text() == "cdiVersion: 0.5.0\n"
        assert not spec["nospec"].parent.exists()  # no directory either: the assert came first
        assert not spec["cpu"].parent.exists()
