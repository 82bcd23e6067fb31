"""The execution environment (execution-environment.yml) as AWX uses it.

`ansible-builder create` makes the build context with no network at all; tests/ee/build makes the
image with Docker from a debootstrapped base (cached by the hash of its inputs: a warm run builds
nothing); the image holds strata.ops and what it declares (requirements.txt, bindep.txt). Then the
real check: ansible-runner runs playbooks/health_check.yml inside the image (process isolation,
private data dir laid out as AWX lays it out, ssh to the lab hosts with the key in env/ssh_key
through the image's ssh-agent, the lab control plane through the kubeconfig) and from the venv
with the same private data dir: the same tasks end the same way and the reports agree.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import uuid

import ansible_runner
import pytest
import yaml

from .conftest import REPO, lab_address, lab_lock
from .k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .test_health_report import make_workload
from .transfer_fixtures import (
    DST_HOST,
    MIB,
    assert_same_snapshot,
    authorize_key,
    local_snapshot,
    make_local_tree,
    sh,
    shared_tree,
    snapshot,
)

pytestmark = [pytest.mark.needs("docker"), pytest.mark.needs("k8s")]

VENV_BIN = os.path.dirname(sys.executable)

LAB_HOSTS = ["strata-lab-1", "strata-lab-2"]
# report.json keys that are the run's own time
RUN_TIME_KEYS = {"generated_at", "stamp"}


def without_byte_counts(report):
    """The report with every space figure (pool and dataset usage, fill) left out, and each
    usage section's names kept: other test files write to the lab pool between the two runs."""
    if isinstance(report, dict):
        return {
            key: without_byte_counts(value)
            for key, value in report.items()
            if not key.endswith(("_bytes", "percent"))
        }
    if isinstance(report, list):
        return [without_byte_counts(item) for item in report]
    return report


@pytest.fixture(scope="module")
def ee_image():
    proc = subprocess.run(
        [os.path.join(REPO, "tests", "ee", "build")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"tests/ee/build failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout.strip().splitlines()[-1]


def test_builder_create_works_offline(ee_image, tmp_path):
    """`ansible-builder create` in a network namespace of its own (loopback only): the context
    names the local base, installs the collections from their artifacts and pip from the wheels."""
    context = tmp_path / "context"
    proc = subprocess.run(
        [
            "unshare",
            "--net",
            os.path.join(VENV_BIN, "ansible-builder"),
            "create",
            "-f",
            "execution-environment.yml",
            "-c",
            str(context),
            "--output-filename",
            "Containerfile",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    containerfile = (context / "Containerfile").read_text()
    assert 'ARG EE_BASE_IMAGE="strata-ops-ee-base:bookworm"' in containerfile
    assert "ENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels" in containerfile
    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    names = {entry["name"] for entry in requirements["collections"]}
    assert "collections/strata-ops.tar.gz" in names
    for artifact in names:
        assert (context / "_build" / artifact).is_file(), artifact
    assert glob.glob(str(context / "_build" / "wheels" / "ansible_core-2.19.*.whl"))


def _in_image(image, script):
    return subprocess.run(
        ["docker", "run", "--rm", image, "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_image_holds_the_collection_and_what_it_declares(ee_image):
    with open(os.path.join(REPO, "galaxy.yml")) as handle:
        version = yaml.safe_load(handle)["version"]
    proc = _in_image(
        ee_image,
        "set -e; id -u; ansible-galaxy collection list --format json; "
        "python3 -c 'import kubernetes, tomlkit, jmespath, xxhash'; "
        "command -v ssh ssh-agent rsync zfs crit ansible-runner; test ! -e /wheels",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    uid, listing = proc.stdout.split("\n", 1)
    assert uid == "1000"  # AWX runs jobs as the image's non-root user
    collections = {}
    for found in json.loads(listing.split("\n/")[0]).values():
        collections.update(found)
    assert collections["strata.ops"]["version"] == version
    for dependency in ("kubernetes.core", "community.general", "community.docker", "ansible.posix"):
        assert dependency in collections


@pytest.fixture(scope="module")
def controller_key(tmp_path_factory):
    """An ssh key for the controller, authorized for root on the lab hosts (as an AWX machine
    credential would be)."""
    key = tmp_path_factory.mktemp("controller-key") / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "strata-ee-test", "-f", str(key)], check=True
    )
    public = (key.parent / "id_ed25519.pub").read_text()
    for host in LAB_HOSTS:
        authorize_key(host, public)
    return key


def _private_data_dir(root, key, kubeconfig, inside, extravars):
    """AWX's layout: project/ (the repository's playbooks and ansible.cfg), inventory/ (the lab
    over ssh), env/{extravars,envvars,ssh_key}. ``inside`` is where the directory is seen by
    ansible-playbook (/runner in the image)."""
    shutil.copytree(os.path.join(REPO, "playbooks"), root / "project" / "playbooks")
    shutil.copy(os.path.join(REPO, "ansible.cfg"), root / "project" / "ansible.cfg")
    shutil.copytree(os.path.join(REPO, "inventories", "lab", "group_vars"), root / "inventory" / "group_vars")
    with open(os.path.join(REPO, "inventories", "lab", "hosts.yml")) as handle:
        groups = yaml.safe_load(handle)
    for group in groups.values():
        for host in group.get("hosts") or {}:
            group["hosts"][host] = {
                "ansible_host": lab_address(host),
                "ansible_connection": "ssh",
                "ansible_user": "root",
            }
    (root / "inventory" / "hosts.yml").write_text(yaml.safe_dump(groups))
    # strata_kubeconfig is $STRATA_CACHE/controlplane/strata-lab.kubeconfig (inventories/lab)
    (root / "cache" / "controlplane").mkdir(parents=True)
    shutil.copy(kubeconfig, root / "cache" / "controlplane" / "strata-lab.kubeconfig")
    (root / "env").mkdir()
    shutil.copy(key, root / "env" / "ssh_key")
    envvars = {"STRATA_CACHE": f"{inside}/cache", "ANSIBLE_HOST_KEY_CHECKING": "False"}
    if inside == "/runner":
        envvars["ANSIBLE_COLLECTIONS_PATH"] = "/usr/share/ansible/collections"
    else:  # the checkout's collection and the venv's ansible-playbook
        envvars["ANSIBLE_COLLECTIONS_PATH"] = os.path.join(REPO, ".collections")
        envvars["PATH"] = VENV_BIN + os.pathsep + os.environ["PATH"]
    (root / "env" / "envvars").write_text(yaml.safe_dump(envvars))
    (root / "env" / "extravars").write_text(yaml.safe_dump(extravars))
    return root


def _outcome(result):
    """(play, task, host, event) of every task result, and the report the run wrote."""
    tasks = sorted(
        (
            event["event_data"].get("play", ""),
            event["event_data"].get("task", ""),
            event["event_data"]["host"],
            event["event"],
        )
        for event in result.events
        if event["event"].startswith("runner_on_") and event["event"] != "runner_on_start"
    )
    reports = glob.glob(os.path.join(result.config.private_data_dir, "report", "2*", "report.json"))
    assert len(reports) == 1, reports
    with open(reports[0]) as handle:
        report = {key: value for key, value in json.load(handle).items() if key not in RUN_TIME_KEYS}
    return tasks, report


@pytest.fixture
def health_scope(k8s_client, k8s_namespace):
    """A workload in this test's namespace, and the extra vars that scope health_check to it and
    to the lab's kwok nodes: what other test files do in the cluster cannot make the runs differ."""
    make_workload(k8s_client, k8s_namespace, "worker")
    return {
        "health_check_namespaces": [k8s_namespace],
        "health_check_nodes": LAB_HOSTS,
        "health_check_report_dir": "{{ playbook_dir }}/../../report",
    }


def test_health_check_in_the_image_matches_the_venv(
    ee_image, controller_key, lab_cluster, health_scope, tmp_path
):
    extravars = health_scope
    kubeconfig = lab_cluster["kubeconfig"]
    in_image = _private_data_dir(tmp_path / "ee", controller_key, kubeconfig, "/runner", extravars)
    from_venv = _private_data_dir(
        tmp_path / "venv", controller_key, kubeconfig, str(tmp_path / "venv"), extravars
    )
    run = {"playbook": "playbooks/health_check.yml", "quiet": True, "timeout": 600}
    with lab_lock():  # both runs see the same lab
        image_result = ansible_runner.run(
            private_data_dir=str(in_image),
            process_isolation=True,
            process_isolation_executable="docker",
            container_image=ee_image,
            # the lab control plane listens on the host's loopback
            container_options=["--network=host"],
            **run,
        )
        venv_result = ansible_runner.run(private_data_dir=str(from_venv), **run)
    for result in (image_result, venv_result):
        assert result.rc == 0, result.stdout.read()[-4000:]
    command = json.loads((in_image / "artifacts" / image_result.config.ident / "command").read_text())[
        "command"
    ]
    assert command[:2] == ["docker", "run"] and ee_image in command
    image_tasks, image_report = _outcome(image_result)
    venv_tasks, venv_report = _outcome(venv_result)
    assert image_result.stats == venv_result.stats
    assert image_tasks == venv_tasks
    assert without_byte_counts(image_report) == without_byte_counts(venv_report)
    assert image_report["healthy"], image_report["verdict"]
    assert set(image_report["hosts"]) == set(LAB_HOSTS)
    assert image_report["counts"]["workloads"] == 1 and image_report["counts"]["pods"] == 1


def _guide_command():
    """The command docs/operator-guide.md gives for a transfer from the image (the block after
    its ee-transfer-command marker)."""
    with open(os.path.join(REPO, "docs", "operator-guide.md")) as handle:
        guide = handle.read()
    block = re.search(r"<!-- ee-transfer-command:[^>]*-->\n```sh\n(.*?)\n```", guide, re.DOTALL)
    assert block, "docs/operator-guide.md lost its ee-transfer-command block"
    return block.group(1)


def test_transfer_from_the_image_with_the_tree_mounted(ee_image, controller_key, tmp_path):
    """The guide's one command, with this test's paths: the container is the source host, the tree
    a read-only volume, strata-lab-2 the destination over ssh; a rerun sends nothing."""
    source, state = tmp_path / "dataset", tmp_path / "state"
    state.mkdir()
    make_local_tree(str(source), shared_tree(small=30, x_size=5 * MIB, y_size=7 * MIB))
    dest = f"/srv/ee-transfer-{uuid.uuid4().hex[:8]}"
    command = _guide_command()
    for documented, ours in (
        ("-v /srv/dataset:/data:ro", f"-v {source}:/data:ro"),
        ("-v /root/.ssh/id_ed25519:", f"-v {controller_key}:"),
        ("-v /var/lib/strata-ops/transfer:", f"-v {state}:"),
        ("strata-ops-ee:latest", ee_image),
        ("data_transfer_dest_host=dst1", f"data_transfer_dest_host={lab_address(DST_HOST)}"),
        ("data_transfer_dest_path=/srv/dataset", f"data_transfer_dest_path={dest}"),
    ):
        assert documented in command, documented
        command = command.replace(documented, ours)
    try:
        runs = [
            subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=600, check=False)
            for _attempt in range(2)
        ]
        for run in runs:
            assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert_same_snapshot(local_snapshot(str(source)), snapshot(DST_HOST, dest))
        assert os.listdir(state), "the resume markers stay on the state volume"
        assert "0 files, 0 bytes sent" in runs[1].stdout, runs[1].stdout[-3000:]
    finally:
        sh(DST_HOST, f"rm -rf {dest}")
