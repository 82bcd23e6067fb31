"""Every AWX job template of awx/job_templates.yml, launched as AWX launches it, in check mode, against
the lab test bed: ansible-runner with a private data directory laid out as AWX lays it out.

    project/        the project: this repository (a symlink; AWX copies the SCM checkout there)
    inventory/hosts an inventory script printing the inventory as AWX holds it after importing the
                    inventory source (ansible-inventory --list --export of inventories/lab, or of the
                    data-miner cluster_config.yaml)
    env/extravars   the survey's defaults, the answers, and the extra vars the credentials inject
    env/envvars     the environment the credentials inject
    credential files written 0600 into the private data directory, as AWX writes them
    cmdline         --check (job type check), --limit when the template is launched with one

The credentials are the custom types of awx/credential_types.yml, their injectors rendered with the
job's inputs as AWX renders them (tower.filename.NAME = the file written for template.NAME). No AWX
controller is involved and none is simulated: what runs is ansible-runner and the real playbooks.

Each template must finish rc 0, or (a flow whose check mode refuses because of what the lab holds)
fail with the refusal message written in REFUSALS below: no template is skipped.
"""

import copy
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import uuid

import ansible_runner
import jinja2.sandbox
import pytest
import yaml
from testbed_paths import lib_sh_value  # tests/testbed, on sys.path by conftest

from ansible_collections.strata.ops.plugins.module_utils import k8s
from tests.canaries import AWX_TOKEN
from tests.unit.test_awx_templates import _default_errors

from .conftest import REPO, lab_lock
from .k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .test_data_miner import deploy, lab_pipeline
from .transfer_fixtures import authorize

pytestmark = [pytest.mark.needs("docker"), pytest.mark.needs("k8s"), pytest.mark.needs("zfs")]

AWX = os.path.join(REPO, "awx")
INVENTORY_BIN = os.path.join(os.path.dirname(sys.executable), "ansible-inventory")


class _AwxData(yaml.SafeLoader):
    """YAML as include_vars reads awx/*.yml: !unsafe (the injectors' AWX templates) is a plain string."""


_AwxData.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def _load(name):
    with open(os.path.join(AWX, name)) as handle:
        return yaml.load(handle, Loader=_AwxData)  # a SafeLoader with one more tag


TEMPLATES = {t["name"]: t for t in _load("job_templates.yml")}
CREDENTIAL_TYPES = _load("credential_types.yml")
CANARY = AWX_TOKEN  # tests/canaries.py: the run-wide canary the secret scan looks for

# What an operator answers for the lab: the questions without a default, and the host limit the
# flows on one host are launched with. The lab's workload is `solana` in `strata-solana`
# (inventories/lab); strata-lab-2 is its experiment node.
WORKLOAD = {"strata_namespace": "strata-solana", "strata_workload_name": "solana"}
LAUNCH = {
    "strata-ops stop": {"answers": WORKLOAD},
    "strata-ops start": {"answers": WORKLOAD},
    "strata-ops redeploy": {"answers": WORKLOAD},
    "strata-ops recover": {"answers": WORKLOAD},
    "strata-ops fix_pv_mounts": {"answers": WORKLOAD},
    "strata-ops teardown": {"answers": WORKLOAD},
    "strata-ops experiment_enter": {"answers": {"runner_isolation_node": "strata-lab-2"}},
    "strata-ops checkpoint": {
        "answers": {"pod_checkpoint_namespace": "strata-awx-none", "pod_checkpoint_pod": "nothing-here"},
        "limit": "strata-lab-1",
    },
    "strata-ops checkpoints": {"limit": "strata-lab-1"},
    "strata-ops restore": {
        "answers": {
            "pod_checkpoint_name": "strata-awx-none-nothing-here-c",
            "pod_checkpoint_new_container": "strata-awx-restored",
        },
        "limit": "strata-lab-1",
    },
    "strata-ops transfer": {
        "answers": {
            "data_transfer_source_path": "/etc/systemd",
            "data_transfer_dest_host": "strata-lab-2",
            "data_transfer_dest_path": "/tmp/strata-awx-transfer",
        },
        "groups": {"data_transfer_sources": ["strata-lab-1"]},
        # its check mode logs in from the source to the destination over ssh, as the copy does: the
        # source's key is authorized here, not left to whichever transfer test ran first
        "ssh_between": ("strata-lab-1", "strata-lab-2"),
    },
    "strata-ops transfer_verify": {
        "answers": {
            "data_transfer_source_host": "strata-lab-1",
            "data_transfer_source_path": "/etc/systemd",
            "data_transfer_dest_host": "strata-lab-2",
            "data_transfer_dest_path": "/etc/systemd",
        }
    },
    "strata-ops transfer_to_pod": {
        "answers": {
            "data_transfer_source_path": "/etc/systemd",
            "data_transfer_pod_serve_address": "127.0.0.1",
            "data_transfer_pod_claim": "nothing-here",
            "data_transfer_pod_image": "registry.invalid/curl:none",
        },
        "groups": {"data_transfer_sources": ["strata-lab-1"]},
    },
    "strata-ops data_miner images": {"answers": {"data_miner_image_archive": "/nonexistent/data-miner.tar"}},
    "strata-ops data_miner scale": {
        "answers": {"data_miner_scale_worker": "download", "data_miner_scale_replicas": 2}
    },
}

# Flows whose check mode refuses on the lab as it is, and the message they refuse with. (Layer 1
# and site pass: on hosts without apt lists, check mode reports what a real run installs.)
NO_WORKLOAD = r"namespace 'strata-solana' does not exist \(looking for Deployment strata-solana/solana\)"
NO_CRIU = r"criu not found on PATH"
# with CRIU on the host (a layer 1 run of another test installs it), the next check of checkpoint.yml
NO_DOCKER = r"Docker socket /var/run/docker.sock does not exist"
REFUSALS = {
    # the lab's workload is not deployed (the deploy tests use their own and remove it)
    "strata-ops stop": NO_WORKLOAD,
    "strata-ops start": NO_WORKLOAD,
    # inventories/lab gives no snapshot source to recover from
    "strata-ops recover": (
        r"workload_deploy_snapshot_sources is empty and no workload_deploy_snapshot_hook is set"
    ),
    # the lab hosts have no criu on PATH (the test bed keeps its own in ~/.cache/strata-ops/bin)
    "strata-ops checkpoint": NO_CRIU,
    # nothing was checkpointed under that name
    "strata-ops restore": (
        r"No restorable checkpoint of strata-awx-none-nothing-here-c in /var/lib/strata-ops/checkpoints"
    ),
    # the data-miner nodes of the test's cluster_config.yaml are this machine, which systemd does not run
    "strata-ops data_miner provision": r"strata.ops layer 1 supports Debian/Ubuntu hosts run by systemd",
}


def inventory_script(path, source, extra_vars=None, groups=None):
    """inventory/hosts as AWX writes it: a script printing the imported inventory (plus ``groups``,
    {name: [hosts]}, as an operator adds them in AWX)."""
    proc = subprocess.run(
        [INVENTORY_BIN, "-i", str(source), "--list", "--export"],
        cwd=REPO,
        env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg")),
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(proc.stdout)
    data.setdefault("all", {}).setdefault("vars", {}).update(extra_vars or {})
    for group, hosts in (groups or {}).items():
        data[group] = {"hosts": hosts}
        data["all"].setdefault("children", []).append(group)
    path.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"DATA = json.loads({json.dumps(json.dumps(data))})\n"
        'print(json.dumps({"hostvars": {}} if "--host" in sys.argv else DATA))\n'
    )
    path.chmod(0o755)


def survey_extravars(template, answers):
    """The extra vars AWX builds from the survey: each default that passes AWX's own validation of
    its question, then the answers (which must be valid answers); a required question left without
    a value would refuse the launch."""
    extravars = {}
    questions = {q["variable"]: q for q in (template.get("survey_spec") or {}).get("spec", [])}
    assert set(answers) <= set(questions), (
        f"answers to questions the survey does not ask: {set(answers) - set(questions)}"
    )
    for var, question in questions.items():
        if "default" in question and not _default_errors(question):
            extravars[var] = question["default"]
        if var in answers:
            assert _default_errors(dict(question, default=answers[var])) == [], (var, answers[var])
            extravars[var] = answers[var]
        assert var in extravars or not question["required"], f"{template['name']}: {var} must be answered"
    return extravars


def inject(private, credentials):
    """(extra vars, env) that the credentials inject, their files written as AWX writes them."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    extravars, envvars = {}, {}
    for key, inputs in credentials.items():
        injectors = CREDENTIAL_TYPES[key]["injectors"]
        filenames = {}
        for name, text in injectors.get("file", {}).items():
            short = name.split(".", 1)[1] if "." in name else None
            fd_path = private / f"tmp_{key}_{short or 'file'}_{uuid.uuid4().hex[:8]}"
            fd_path.write_text(env.from_string(text).render(**inputs))
            fd_path.chmod(stat.S_IRUSR | stat.S_IWUSR)
            filenames[short] = str(fd_path)
        tower = {"filename": filenames.get(None, filenames)}
        for name, text in injectors.get("env", {}).items():
            envvars[name] = env.from_string(text).render(tower=tower, awx=tower, **inputs)
        for name, text in injectors.get("extra_vars", {}).items():
            extravars[name] = env.from_string(text).render(tower=tower, awx=tower, **inputs)
    return extravars, envvars


def lab_credentials(kubeconfig):
    with open(kubeconfig) as handle:
        content = handle.read()
    return {
        "kubeconfig": {"kubeconfig": content},
        "gitlab": {"gitlab_url": "http://127.0.0.1:9", "token": CANARY},
        "hf_token": {"hf_token": CANARY},
    }


def launch(
    template,
    tmp_path,
    kubeconfig,
    inventory_source,
    *,
    answers=None,
    limit=None,
    inventory_vars=None,
    groups=None,
):
    """Run the template's playbook as an AWX check job; (ansible-runner's result, its stdout, the
    messages of the failed tasks)."""
    private = tmp_path / "awx-job"
    shutil.rmtree(private, ignore_errors=True)
    (private / "env").mkdir(parents=True)
    (private / "inventory").mkdir()
    (private / "project").symlink_to(REPO)
    inventory_script(private / "inventory" / "hosts", inventory_source, inventory_vars, groups)
    extravars = survey_extravars(template, answers or {})
    available = lab_credentials(kubeconfig)
    injected_vars, envvars = inject(
        private, {k: available[k] for k in template.get("credentials", []) if k in available}
    )
    extravars.update(injected_vars)
    (private / "env" / "extravars").write_text(json.dumps(extravars))
    (private / "env" / "envvars").write_text(json.dumps(envvars))
    cmdline = "--check" + (f" --limit {limit}" if limit else "")
    # ansible-playbook from this venv, as the EE has it on its PATH
    path = os.environ["PATH"]
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + path
    try:
        with lab_lock():
            result = ansible_runner.run(
                private_data_dir=str(private),
                playbook=template["playbook"],
                cmdline=cmdline,
                quiet=True,
                timeout=900,
            )
        stdout = result.stdout.read()
        events = list(result.events)
    finally:
        os.environ["PATH"] = path
        # AWX removes a job's private data dir when the job ends: the credentials' files and
        # env/envvars hold the secrets the job was given
        shutil.rmtree(private, ignore_errors=True)
    failures = [
        (e["event_data"].get("task"), e["event_data"].get("res", {}).get("msg"))
        for e in events
        if e.get("event") in ("runner_on_failed", "runner_on_unreachable")
        and not e["event_data"].get("ignore_errors")
    ]
    assert CANARY not in stdout, "a secret from a credential reached the job's output"
    assert "no hosts matched" not in stdout, (
        f"a play of {template['playbook']} ran on no host:\n{stdout[-3000:]}"
    )
    assert any(e.get("event") in ("runner_on_ok", "runner_on_failed") for e in events), stdout[-3000:]
    return result, stdout, failures


def lab_refusal(name, k8s_client):
    """The refusal expected of a lab template, given what the lab holds now: a refusal whose cause is
    gone (the workload deployed, apt lists present) must turn into a successful run."""
    refusal = REFUSALS.get(name)
    if refusal == NO_CRIU:
        limit = LAUNCH[name]["limit"]
        found = subprocess.run(
            ["docker", "exec", limit, "sh", "-c", "command -v criu"], capture_output=True, check=False
        )
        return NO_DOCKER if found.returncode == 0 else NO_CRIU
    if refusal == NO_WORKLOAD:
        try:
            k8s_client.get_namespace(WORKLOAD["strata_namespace"])
            return None
        except k8s.K8sNotFound:
            return refusal
    return refusal


def assert_outcome(name, result, stdout, failures, refusal):
    if refusal is None:
        assert result.rc == 0, f"{name}: rc {result.rc}, failed tasks {failures}\n{stdout[-4000:]}"
        assert result.status == "successful"
        return
    assert result.rc != 0, f"{name} was expected to refuse with {refusal!r} but succeeded"
    messages = " ".join(" ".join(str(m).split()) for _task, m in failures)
    assert re.search(refusal, messages), f"{name}: refused otherwise: {failures}\n{stdout[-3000:]}"


LAB_TEMPLATES = [n for n, t in TEMPLATES.items() if not t["playbook"].startswith("playbooks/data_miner/")]
DATA_MINER_TEMPLATES = [n for n, t in TEMPLATES.items() if t["playbook"].startswith("playbooks/data_miner/")]


@pytest.mark.parametrize("name", LAB_TEMPLATES)
def test_lab_template_runs_in_check_mode(name, lab_cluster, k8s_client, tmp_path):
    launch_args = LAUNCH.get(name, {})
    if "ssh_between" in launch_args:
        authorize(*launch_args["ssh_between"])
    result, stdout, failures = launch(
        TEMPLATES[name],
        tmp_path,
        lab_cluster["kubeconfig"],
        os.path.join(REPO, "inventories", "lab"),
        answers=launch_args.get("answers"),
        limit=launch_args.get("limit"),
        groups=launch_args.get("groups"),
    )
    assert_outcome(name, result, stdout, failures, lab_refusal(name, k8s_client))


@pytest.fixture
def data_miner_inventory(controlplane, k8s_client, tmp_path):
    """A data-miner cluster_config.yaml of kwok nodes on the lab control plane (test_data_miner's);
    its nodes are reached on this machine (connection local), as test_data_miner_flows does."""
    with lab_pipeline(controlplane, k8s_client, tmp_path, "awx-templates") as (_names, doc, path, kubeconfig):
        local = {
            "ansible_connection": "local",
            "ansible_become": False,
            "ansible_python_interpreter": sys.executable,
        }
        yield doc, path, kubeconfig, local


@pytest.mark.parametrize("name", DATA_MINER_TEMPLATES)
def test_data_miner_template_runs_in_check_mode(name, data_miner_inventory, tmp_path):
    _doc, path, kubeconfig, local = data_miner_inventory
    launch_args = copy.deepcopy(LAUNCH.get(name, {}))
    if name == "strata-ops data_miner scale":
        deploy(path, kubeconfig)  # a real deploy first: scale works on a deployed worker
    if name == "strata-ops data_miner images":
        # a real image archive (the test bed's workload image, as docker save writes it)
        archive = tmp_path / "data-miner.tar"
        image = lib_sh_value("cri_image").removeprefix("docker.io/library/")
        subprocess.run(["docker", "save", "-o", str(archive), image], check=True, capture_output=True)
        launch_args["answers"]["data_miner_image_archive"] = str(archive)
    result, stdout, failures = launch(
        TEMPLATES[name],
        tmp_path,
        kubeconfig,
        path,
        answers=launch_args.get("answers"),
        limit=launch_args.get("limit"),
        inventory_vars=local,
    )
    assert_outcome(name, result, stdout, failures, REFUSALS.get(name))


def test_every_template_is_launched():
    assert sorted(LAB_TEMPLATES + DATA_MINER_TEMPLATES) == sorted(TEMPLATES)
    assert set(LAUNCH) <= set(TEMPLATES)
    assert set(REFUSALS) <= set(TEMPLATES)
