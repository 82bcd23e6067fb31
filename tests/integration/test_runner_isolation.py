"""strata.ops.runner_isolation against the REAL Kubernetes control plane of the test bed
(tests/testbed/controlplane: API server, controllers, scheduler; kwok plays the kubelets),
real config.toml files, and the STAND-IN GitLab runners API (tests/testbed/gitlab_api.py): a
real GitLab cannot run here, the stand-in answers as the documented API does (pagination,
401/403/404/429) and records what it was sent.

The module runs as a subprocess, as Ansible runs it; the playbooks run with ansible-playbook.
Every test makes its own node (``ri-node-<tag>``: kwok manages every node of the cluster) and
namespace and deletes them, so the lab nodes other tests share (strata-lab-1/2) are never
tainted, labelled or cordoned here. Without a control plane the tests are skipped (failed
under CI=true).
"""

import contextlib
import json
import os
import signal
import stat
import sys
import threading
import time
import uuid
from types import SimpleNamespace

import pytest

from ansible_collections.strata.ops.plugins.module_utils import gitlab as gl
from ansible_collections.strata.ops.plugins.module_utils import k8s, state
from tests.canaries import GITLAB_TOKEN

from .conftest import REPO, adhoc_result, assert_clean_failure, run_module, start_module, wait_stopped
from .k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .k8s_fixtures import recap, run_playbook

sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))
from gitlab_api import GitLabStandIn
from lab_k8s import create_kwok_node

pytestmark = pytest.mark.needs("k8s")

TOKEN = GITLAB_TOKEN  # tests/canaries.py: the run-wide canary the secret scan looks for
TOLERATION = {"key": "experiment", "operator": "Equal", "value": "dedicated", "effect": "NoSchedule"}
CONFIG = """\
# gitlab-runner, managed by hand
concurrent = 4  # jobs at once
check_interval = 3

[[runners]]
  # cluster runner
  name = "k8s"
  url = "https://gitlab.example/"
  token = "glrt-runner-own-token"
  executor = "kubernetes"
  [runners.kubernetes]
    image = "gcc:14"
    namespace = "gitlab-runner"
"""


def template(app, node, tolerations=None):
    spec = {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "containers": [{"name": "c", "image": f"registry.invalid/{app}:1"}],
        "terminationGracePeriodSeconds": 1,
    }
    if tolerations is not None:
        spec["tolerations"] = tolerations
    return {"metadata": {"labels": {"app": app}}, "spec": spec}


def ready(client, kind, name, ns, timeout=60):
    return client.watch_until(kind, k8s.named_ready([name], k8s.workload_is_ready), ns, timeout=timeout)


def slow_rollout(bed, seconds=3):
    """web's roll-outs then take ``seconds`` at least: its old pod goes only once the new one
    has been Ready that long (minReadySeconds; no template change, so no roll-out now)."""
    bed.client.patch("Deployment", "web", {"spec": {"minReadySeconds": seconds}}, bed.ns, patch_type="merge")


def assert_ready_now(bed, names=(("Deployment", "web"), ("StatefulSet", "minio"))):
    """The workloads are Ready when restored returns (read once, no waiting here)."""
    for kind, name in names:
        obj = bed.client.get(kind, name, bed.ns)
        assert k8s.workload_is_ready(obj), (kind, name, obj.get("status"))


@pytest.fixture
def cluster(k8s_client, k8s_namespace):
    """A node of its own (with a foreign taint and label that must survive) and, pinned to it,
    a Deployment without tolerations and a StatefulSet (a hostPath-bound MinIO stand-in) with
    one toleration, both rolled out."""
    node, ns = "ri-node-" + uuid.uuid4().hex[:8], k8s_namespace
    try:
        create_kwok_node(
            k8s_client,
            node,
            labels={"zone": "a"},
            taints=[{"key": "other", "value": "x", "effect": "PreferNoSchedule"}],
        )
        selector = {"matchLabels": {"app": "web"}}
        k8s_client.create(
            "Deployment",
            {
                "metadata": {"name": "web"},
                "spec": {"replicas": 1, "selector": selector, "template": template("web", node)},
            },
            ns,
        )
        storage = [{"key": "storage", "operator": "Exists", "effect": "NoSchedule"}]
        k8s_client.create(
            "StatefulSet",
            {
                "metadata": {"name": "minio"},
                "spec": {
                    "replicas": 1,
                    "serviceName": "minio",
                    "selector": {"matchLabels": {"app": "minio"}},
                    "template": template("minio", node, storage),
                },
            },
            ns,
        )
        ready(k8s_client, "Deployment", "web", ns)
        ready(k8s_client, "StatefulSet", "minio", ns)
        yield {"node": node, "ns": ns}
    finally:
        # the pods go first (grace period 1 s), then their node: nothing is left orphaned
        k8s_client.delete("Namespace", ns)
        k8s_client.watch_until("Pod", k8s.no_items, ns, timeout=60)
        k8s_client.delete("Node", node)


@pytest.fixture
def gitlab():
    with GitLabStandIn(token=TOKEN) as api:
        api.add_runner(7, description="bare-metal-7", tag_list=["metal"])
        api.add_runner(8, description="bare-metal-8", tag_list=["metal"])
        api.add_runner(9, description="bare-metal-9", tag_list=["metal"], paused=True)
        yield api


@pytest.fixture
def bed(controlplane, k8s_client, cluster, gitlab, tmp_path):
    """Everything one isolation test uses (with a real 0600 config.toml)."""
    config_file = tmp_path / "config.toml"
    config_file.write_text(CONFIG)
    config_file.chmod(0o600)
    return SimpleNamespace(
        kubeconfig=controlplane,
        client=k8s_client,
        node=cluster["node"],
        ns=cluster["ns"],
        gitlab=gitlab,
        config=config_file,
        tmp=tmp_path,
    )


def template_tolerations(obj):
    return obj["spec"]["template"]["spec"].get("tolerations")


def snapshot(bed):
    """Everything the isolation touches in the cluster, exactly (taints in order)."""
    node = bed.client.get("Node", bed.node)
    taints = node["spec"].get("taints") or []
    return {
        "taints": [t for t in taints if not t["key"].startswith("node.kubernetes.io/")],
        "labels": node["metadata"]["labels"],
        "unschedulable": bool(node["spec"].get("unschedulable")),
        "web": template_tolerations(bed.client.get("Deployment", "web", bed.ns)),
        "minio": template_tolerations(bed.client.get("StatefulSet", "minio", bed.ns)),
    }


def args(bed, **extra):
    base = {
        "state": "isolated",
        "state_path": str(bed.tmp / "state" / "isolation.json"),
        "gitlab_url": bed.gitlab.url,
        "gitlab_token": TOKEN,
        "runners": [7, 8, 9],
        "job_poll_interval": 0.2,
        "config_path": str(bed.config),
        "concurrent": 1,
        "cpu_request": "2000m",
        "memory_request": "2Gi",
        "node": bed.node,
        "node_labels": {"strata.ops/experiment": "dedicated"},
        "cordon": True,
        "workloads": [
            {"kind": "Deployment", "namespace": bed.ns, "name": "web"},
            {"kind": "StatefulSet", "namespace": bed.ns, "name": "minio"},
        ],
        "kubeconfig": bed.kubeconfig,
        "rollout_timeout": 300,  # kwok pods restart in seconds; a loaded CI machine took over 90 s
    }
    base.update(extra)
    return base


def read_bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


def paused(gitlab):
    return {rid: r["paused"] for rid, r in gitlab.runners.items()}


def placed_pods(bed):
    """(app, node, phase, tolerates the experiment taint) of the pods not being deleted."""
    pods = bed.client.list("Pod", bed.ns)[0]
    return {
        (
            p["metadata"]["labels"]["app"],
            p["spec"].get("nodeName"),
            p["status"].get("phase"),
            TOLERATION in (p["spec"].get("tolerations") or []),
        )
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
    }


def assert_nothing_changed(bed, a, before, config_text=CONFIG):
    assert not os.path.exists(a["state_path"])
    assert bed.config.read_text() == config_text
    assert paused(bed.gitlab) == {7: False, 8: False, 9: True}
    assert not bed.gitlab.requests_for("PUT")
    assert snapshot(bed) == before


def assert_state_file_private(state_path):
    """The state file is 0600 and holds no token; returns its bytes."""
    assert stat.S_IMODE(os.stat(state_path).st_mode) == 0o600
    state_bytes = read_bytes(state_path)
    assert TOKEN.encode() not in state_bytes
    assert b"glrt-SECRET" not in state_bytes  # runner tokens GitLab may return are dropped
    return state_bytes


def assert_runners_paused_jobs_waited_for(bed):
    assert paused(bed.gitlab) == {7: True, 8: True, 9: True}
    puts = bed.gitlab.requests_for("PUT")
    assert [r["body"] for r in puts] == [{"paused": True}, {"paused": True}]  # 9 was paused already
    assert bed.gitlab.requests_for("GET", "/api/v4/runners/7/jobs")
    assert all(r["method"] in ("GET", "PUT") for r in bed.gitlab.requests)  # no job was cancelled
    assert bed.gitlab.jobs[7][0]["status"] == "success"


def assert_config_isolated(bed):
    text = bed.config.read_text()
    assert "[runners.kubernetes.node_tolerations]" in text and '"experiment=dedicated" = "NoSchedule"' in text
    assert "[[runners.kubernetes.node_tolerations]]" not in text
    assert f'"kubernetes.io/hostname" = "{bed.node}"' in text
    assert 'cpu_request = "2000m"' in text and 'memory_request = "2Gi"' in text
    assert "concurrent = 1  # jobs at once" in text and "# cluster runner" in text


def assert_node_isolated(bed, before, changes):
    """Tainted, labelled and cordoned, the workloads tolerating it and rolled out before the cordon."""
    during = snapshot(bed)
    assert during["taints"] == [
        *before["taints"],
        {"key": "experiment", "value": "dedicated", "effect": "NoSchedule"},
    ]
    assert during["labels"] == dict(before["labels"], **{"strata.ops/experiment": "dedicated"})
    assert during["unschedulable"] is True
    assert during["web"] == [TOLERATION]
    assert during["minio"] == [*before["minio"], TOLERATION]
    # the module waited for the roll-out before it tainted and cordoned the node: both workloads
    # run there with the toleration, none of their pods is left Pending on the cordoned node
    ready(bed.client, "Deployment", "web", bed.ns, timeout=20)
    ready(bed.client, "StatefulSet", "minio", bed.ns, timeout=20)
    assert placed_pods(bed) == {("web", bed.node, "Running", True), ("minio", bed.node, "Running", True)}
    tolerated = changes.index(f"added the toleration to StatefulSet {bed.ns}/minio")
    assert tolerated < changes.index(f"cordoned node {bed.node}"), changes


def assert_restored_exactly(bed, restored, before, original, state_path):
    assert restored["changed"] is True, restored
    # restored returned only once both workloads rolled back and are Ready on the node again
    assert_ready_now(bed)
    assert bed.config.read_bytes() == original
    assert snapshot(bed) == before
    assert paused(bed.gitlab) == {7: False, 8: False, 9: True}
    assert [r["body"] for r in bed.gitlab.requests_for("PUT")] == [{"paused": False}, {"paused": False}]
    assert not os.path.exists(state_path)
    assert restored["diff"]["after"]["config"] == CONFIG
    changes = restored["changes"]
    untainted = changes.index(f"removed the taint experiment=dedicated:NoSchedule from node {bed.node}")
    tol_steps = [i for i, c in enumerate(changes) if c.startswith("removed the toleration")]
    assert len(tol_steps) == 2 and untainted < min(tol_steps), changes  # taint first: MinIO stays schedulable
    assert placed_pods(bed) == {("web", bed.node, "Running", False), ("minio", bed.node, "Running", False)}


def test_isolate_then_restore_exactly(bed):
    slow_rollout(bed)
    before = snapshot(bed)
    original = bed.config.read_bytes()
    bed.gitlab.add_job(7, 501, duration=1.0)  # a running job: waited for, never cancelled
    a = args(bed)

    result = run_module("runner_isolation", a)
    assert result.get("failed") is not True, result
    assert result["changed"] is True and result["already_isolated"] is False
    state_path = a["state_path"]
    state_bytes = assert_state_file_private(state_path)
    assert_runners_paused_jobs_waited_for(bed)
    assert_config_isolated(bed)
    assert_node_isolated(bed, before, result["changes"])

    # a second isolated while isolated: nothing to do, the first record stays as it was
    mtime = os.stat(state_path).st_mtime_ns
    again = run_module("runner_isolation", a)
    assert again["changed"] is False and again["already_isolated"] is True, again
    assert read_bytes(state_path) == state_bytes and os.stat(state_path).st_mtime_ns == mtime

    bed.gitlab.requests.clear()
    restored = run_module("runner_isolation", dict(a, state="restored"), diff=True)
    assert_restored_exactly(bed, restored, before, original, state_path)

    twice = run_module("runner_isolation", dict(a, state="restored"))
    assert twice["changed"] is False and "nothing to restore" in twice["msg"]


def test_token_from_environment_and_check_mode(bed, monkeypatch):
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    a = args(bed)
    del a["gitlab_token"]
    before = snapshot(bed)
    result = run_module("runner_isolation", a, check_mode=True, diff=True)
    assert result["changed"] is True and not result.get("failed"), result
    assert "[runners.kubernetes.node_tolerations]" in result["diff"]["after"]["config"]
    assert TOKEN not in json.dumps(result)
    assert all(r["token_ok"] for r in bed.gitlab.requests)  # the environment's token was sent
    # the restarts the toleration causes are named (both workloads roll: no exit command given)
    assert [r["workload"] for r in result["restarts"]] == [
        f"Deployment {bed.ns}/web",
        f"StatefulSet {bed.ns}/minio",
    ]
    assert all("rolls its 1 pod(s)" in r["how"] for r in result["restarts"]), result["restarts"]
    assert f"restarts the pods of: Deployment {bed.ns}/web" in json.dumps(result["warnings"])
    assert_nothing_changed(bed, a, before)
    assert not os.path.exists(os.path.dirname(a["state_path"]))  # no state directory, no .lock file


def test_wrong_token(bed):
    before = snapshot(bed)
    a = args(bed, gitlab_token="glpat-wrong")
    result = run_module("runner_isolation", a)
    assert result["failed"] is True and result["error"] == "GitLabAuthError", result
    assert "401" in result["msg"] and "glpat-wrong" not in json.dumps(result)
    assert result["changes"] == [] and "restore_hint" not in result
    assert_nothing_changed(bed, a, before)


def test_unknown_runner(bed):
    before = snapshot(bed)
    a = args(bed, runners=[7, 4242])
    result = run_module("runner_isolation", a)
    assert result["failed"] is True and result["error"] == "GitLabNotFoundError", result
    assert "/runners/4242" in result["msg"]
    assert_nothing_changed(bed, a, before)


def test_rate_limited_then_ok(bed):
    bed.gitlab.throttle(2, retry_after="1")
    a = args(bed)
    started = time.monotonic()
    result = run_module("runner_isolation", a)
    assert not result.get("failed"), result
    assert time.monotonic() - started >= 2.0  # both Retry-After waits were honoured
    gets = bed.gitlab.requests_for("GET", "/api/v4/runners/7")
    assert len(gets) >= 3  # two 429s, then the answer
    assert paused(bed.gitlab)[7] is True
    assert run_module("runner_isolation", dict(a, state="restored"))["changed"] is True


def test_config_does_not_parse(bed):
    bad = CONFIG + '\n[[runners]]\n  name = "broken\n'
    bed.config.write_text(bad)
    before = snapshot(bed)
    a = args(bed)
    result = run_module("runner_isolation", a)
    assert result["failed"] is True and result["error"] == "RunnerConfigError", result
    assert "does not parse as TOML" in result["msg"]
    assert_nothing_changed(bed, a, before, config_text=bad)


@pytest.mark.parametrize(
    ("block", "expect"),
    [
        (
            '    [[runners.kubernetes.node_tolerations]]\n      key = "experiment"\n'
            '      effect = "NoSchedule"\n',
            "[[runners.kubernetes.node_tolerations]] (an array of tables) is not read",
        ),
        (
            '    [runners.kubernetes.resources.requests]\n      cpu = "2000m"\n      memory = "2Gi"\n',
            "resources.requests.cpu -> cpu_request",
        ),
    ],
    ids=["array-of-tables", "resources-requests"],
)
def test_ignored_forms_rejected(bed, block, expect):
    bad = CONFIG + block
    bed.config.write_text(bad)
    before = snapshot(bed)
    a = args(bed)
    result = run_module("runner_isolation", a)
    assert result["failed"] is True and result["error"] == "RunnerConfigError", result
    assert expect in result["msg"], result
    assert_nothing_changed(bed, a, before, config_text=bad)


def test_node_does_not_exist(bed):
    before = snapshot(bed)
    ghost = "ri-ghost-" + uuid.uuid4().hex[:8]
    a = args(bed, node=ghost, workloads=[])
    result = run_module("runner_isolation", a)
    assert result["failed"] is True and result["error"] == "not_found", result
    assert f"node {ghost!r} does not exist" in result["msg"]
    assert bed.node in result["existing"] and ghost not in result["existing"]  # the nodes there are
    assert_nothing_changed(bed, a, before)


def test_workload_does_not_exist(bed):
    before = snapshot(bed)
    a = args(bed, workloads=[{"kind": "StatefulSet", "namespace": bed.ns, "name": "ghost"}])
    result = run_module("runner_isolation", a)
    assert result["failed"] is True and result["error"] == "not_found", result
    assert f"StatefulSet {bed.ns}/ghost does not exist" in result["msg"]
    assert_nothing_changed(bed, a, before)


def test_other_settings_while_isolated_fail(bed):
    a = args(bed)
    assert not run_module("runner_isolation", a).get("failed")
    state_bytes = read_bytes(a["state_path"])
    other = run_module("runner_isolation", dict(a, concurrent=2))
    assert other["failed"] is True and "state=restored first" in other["msg"], other
    assert read_bytes(a["state_path"]) == state_bytes
    assert run_module("runner_isolation", dict(a, state="restored"))["changed"] is True


def test_another_run_holds_the_lock(bed):
    before = snapshot(bed)
    a = args(bed, lock_timeout=0.5)
    with state.StateFile(a["state_path"]).lock():
        result = run_module("runner_isolation", a)
    assert result["failed"] is True and result["error"] == "StateLockedError", result
    assert "locked by another run" in result["msg"]
    assert_nothing_changed(bed, a, before)


def test_jobs_still_running_are_never_cancelled(bed):
    before = snapshot(bed)
    bed.gitlab.add_job(8, 777)  # runs until someone finishes it
    a = args(bed, job_wait_timeout=1)
    result = run_module("runner_isolation", a)
    assert result["failed"] is True and "never cancelled" in result["msg"], result
    assert "job 777 on runner 8" in result["msg"]
    assert result["changes"][1:] == ["paused runner 7", "paused runner 8"]
    assert "state=restored" in result["restore_hint"]
    assert bed.gitlab.jobs[8][0]["status"] == "running"
    assert all(r["method"] in ("GET", "PUT") for r in bed.gitlab.requests)
    assert bed.config.read_text() == CONFIG and snapshot(bed) == before

    restored = run_module("runner_isolation", dict(a, state="restored", gitlab_url=None))  # recorded url
    assert restored["changed"] is True, restored
    assert paused(bed.gitlab) == {7: False, 8: False, 9: True}
    assert not os.path.exists(a["state_path"])


def test_helm_configmap(bed):
    data = {"config.template.toml": CONFIG, "entrypoint": "#!/bin/sh\n"}
    bed.client.create("ConfigMap", {"metadata": {"name": "gitlab-runner"}, "data": data}, bed.ns)
    cm = {"namespace": bed.ns, "name": "gitlab-runner", "key": "config.template.toml"}
    a = args(bed, config_configmap=cm, runners=[])
    del a["config_path"]
    result = run_module("runner_isolation", a)
    assert not result.get("failed"), result
    assert "helm upgrade" in json.dumps(result.get("warnings")), result  # structured in core 2.19
    during = bed.client.get("ConfigMap", "gitlab-runner", bed.ns)["data"]
    assert '"experiment=dedicated" = "NoSchedule"' in during["config.template.toml"]
    assert during["entrypoint"] == data["entrypoint"]
    assert run_module("runner_isolation", dict(a, state="restored"))["changed"] is True
    assert bed.client.get("ConfigMap", "gitlab-runner", bed.ns)["data"] == data


def test_crash_after_pausing_then_restore(bed):
    """kill -9 while the module waits on the (slow) running-jobs answer: the runners are
    paused, config.toml and the cluster are not yet changed. restored returns everything."""
    before = snapshot(bed)
    bed.gitlab.jobs_delay = 30.0
    a = args(bed)
    proc = start_module("runner_isolation", a)
    try:
        deadline = time.monotonic() + 30
        while not bed.gitlab.requests_for("GET", "/api/v4/runners/7/jobs"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the module never asked for running jobs"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert os.path.exists(a["state_path"])  # written before the first change
    assert paused(bed.gitlab) == {7: True, 8: True, 9: True}
    assert bed.config.read_text() == CONFIG  # the crash came before the TOML edit
    bed.gitlab.jobs_delay = 0.0

    restored = run_module("runner_isolation", dict(a, state="restored"))
    assert restored["changed"] is True, restored
    assert paused(bed.gitlab) == {7: False, 8: False, 9: True}
    assert bed.config.read_text() == CONFIG
    assert snapshot(bed) == before
    assert not os.path.exists(a["state_path"])


def test_experiment_playbooks(bed, monkeypatch):
    """experiment_enter.yml / experiment_exit.yml through the role: the token comes from the
    controller's environment and appears in no output; both are idempotent."""
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    before = snapshot(bed)
    extra = json.dumps(
        {
            "strata_kubeconfig": bed.kubeconfig,
            "runner_isolation_state_path": str(bed.tmp / "state" / "isolation.json"),
            "runner_isolation_gitlab_url": bed.gitlab.url,
            "runner_isolation_runners": [7, 8],
            "runner_isolation_config_path": str(bed.config),
            "runner_isolation_node": bed.node,
            "runner_isolation_workloads": [{"kind": "StatefulSet", "namespace": bed.ns, "name": "minio"}],
        }
    )
    for playbook, changed in (
        ("experiment_enter.yml", True),
        ("experiment_enter.yml", False),
        ("experiment_exit.yml", True),
        ("experiment_exit.yml", False),
    ):
        proc = run_playbook(playbook, "-e", extra, "-vvv")
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-4000:]
        assert TOKEN not in output
        assert (recap(proc.stdout)["localhost"]["changed"] > 0) is changed, (playbook, output[-3000:])
        if playbook == "experiment_enter.yml":
            assert paused(bed.gitlab) == {7: True, 8: True, 9: True}
            assert '"experiment=dedicated" = "NoSchedule"' in bed.config.read_text()
            assert snapshot(bed)["minio"][-1] == TOLERATION
    assert bed.config.read_text() == CONFIG
    assert snapshot(bed) == before
    assert paused(bed.gitlab) == {7: False, 8: False, 9: True}


def test_node_only_with_the_k8s_action_group(bed):
    """No runners and no runner config: only the node and a workload. The Kubernetes options
    come from module_defaults for group/strata.ops.k8s (meta/runtime.yml)."""
    before = snapshot(bed)
    playbook = bed.tmp / "node_only.yml"
    task = {
        "state_path": str(bed.tmp / "state" / "isolation.json"),
        "node": bed.node,
        "node_labels": {"strata.ops/experiment": "dedicated"},
        "workloads": [{"kind": "StatefulSet", "namespace": bed.ns, "name": "minio"}],
    }
    plays = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "module_defaults": {"group/strata.ops.k8s": {"kubeconfig": bed.kubeconfig, "api_timeout": 20}},
            "tasks": [
                {
                    "name": "Isolate",
                    "strata.ops.runner_isolation": dict(task, state="isolated"),
                    "register": "isolation",
                },
                {
                    "name": "The node was tainted after the workload tolerated it",
                    "ansible.builtin.assert": {
                        "that": [
                            f"isolation.changes[1:] == ['labelled node {bed.node} (strata.ops/experiment)', "
                            f"'added the toleration to StatefulSet {bed.ns}/minio', "
                            f"'tainted node {bed.node} (experiment=dedicated:NoSchedule)']"
                        ]
                    },
                },
                {"name": "Restore", "strata.ops.runner_isolation": dict(task, state="restored")},
            ],
        }
    ]
    playbook.write_text(json.dumps(plays))
    proc = run_playbook(str(playbook))  # an absolute path: os.path.join keeps it
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert recap(proc.stdout)["localhost"]["changed"] == 2
    assert snapshot(bed) == before
    assert not bed.gitlab.requests


def test_runner_config_options_need_a_config(bed):
    a = args(bed)
    del a["config_path"]
    result = run_module("runner_isolation", a)
    assert result["failed"] is True and "neither config_path nor config_configmap" in result["msg"], result
    assert "concurrent, cpu_request, memory_request" in result["msg"]
    assert not bed.gitlab.requests and not os.path.exists(a["state_path"])


# A breakpoint for a real module process: run plugins/modules/runner_isolation.py as Ansible does,
# and SIGSTOP it when the named method of module_utils/runner_isolation/ returns, so that a test
# sees the state of that moment and kills it there with SIGKILL.
def run_until_stopped(a, step):
    """The module, started as Ansible starts it, stopped right after ``step`` returned."""
    proc = start_module("runner_isolation", a, stop_after=(step, 1, "/module_utils/runner_isolation/"))
    wait_stopped(proc, f"the end of {step}")
    return proc


def kill9(proc):
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("step", ["_edit_config", "_tolerate_workloads", "_taint_node"])
def test_killed_after_a_later_step_then_restore(bed, step):
    """kill -9 right after config.toml was written, after the tolerations were added, and after
    the node was tainted: state=restored puts back exactly what the state file recorded."""
    slow_rollout(bed)
    before, original = snapshot(bed), bed.config.read_bytes()
    a = args(bed)
    proc = run_until_stopped(a, step)
    try:
        at_kill = snapshot(bed)
        text = bed.config.read_text()
        assert f'"kubernetes.io/hostname" = "{bed.node}"' in text and "concurrent = 1" in text
        assert paused(bed.gitlab) == {7: True, 8: True, 9: True}
        tolerated = step != "_edit_config"
        assert (at_kill["web"] == [TOLERATION]) is tolerated, at_kill
        assert (at_kill["minio"] == [*before["minio"], TOLERATION]) is tolerated, at_kill
        assert (at_kill["labels"] != before["labels"]) is tolerated
        tainted = at_kill["taints"] != before["taints"]
        assert tainted is (step == "_taint_node") and at_kill["unschedulable"] is tainted, at_kill
    finally:
        kill9(proc)
    assert os.path.exists(a["state_path"])

    restored = run_module("runner_isolation", dict(a, state="restored"))
    assert restored["changed"] is True and not restored.get("failed"), restored
    assert_ready_now(bed)
    assert bed.config.read_bytes() == original
    assert paused(bed.gitlab) == {7: False, 8: False, 9: True}
    assert snapshot(bed) == before
    assert not os.path.exists(a["state_path"]) and not os.path.exists(a["state_path"] + ".lock")


def test_existing_node_selector_is_replaced_then_restored(bed):
    """A node_selector already in config.toml is not merged with the pin (job pods would need
    both labels on the experiment node): the pin replaces it, and exit restores the bytes."""
    text = CONFIG + '    [runners.kubernetes.node_selector]\n      "disktype" = "ssd"\n'
    bed.config.write_text(text)
    original = bed.config.read_bytes()
    a = args(bed, workloads=[], runners=[])
    result = run_module("runner_isolation", a)
    assert not result.get("failed"), result
    during = bed.config.read_text()
    assert f'[runners.kubernetes.node_selector]\n      "kubernetes.io/hostname" = "{bed.node}"\n' in during
    assert "disktype" not in during
    restored = run_module("runner_isolation", dict(a, state="restored"))
    assert restored["changed"] is True and bed.config.read_bytes() == original


def test_selector_the_node_does_not_carry_is_refused(bed):
    before = snapshot(bed)
    a = args(bed, node_selector={"disktype": "ssd"})
    result = adhoc_result("runner_isolation", a)
    assert_clean_failure(result)
    assert f"node {bed.node} does not carry disktype=ssd" in result["msg"], result
    assert "Nothing was changed" in result["msg"]
    assert_nothing_changed(bed, a, before)
    # with the label set by the isolation itself, it is accepted
    a = args(bed, node_selector={"disktype": "ssd"}, node_labels={"disktype": "ssd"}, workloads=[])
    assert not run_module("runner_isolation", a).get("failed")
    assert run_module("runner_isolation", dict(a, state="restored"))["changed"] is True
    assert snapshot(bed) == before


def test_config_edited_while_isolated(bed):
    """An edit made to config.toml while isolated is not dropped silently: exit refuses with the
    diff and restores nothing, until the operator says to discard it."""
    before = snapshot(bed)
    a = args(bed, workloads=[])
    assert not run_module("runner_isolation", a).get("failed")
    during = snapshot(bed)
    edited = bed.config.read_text().replace("check_interval = 3", "check_interval = 5")
    bed.config.write_text(edited)

    refused = adhoc_result("runner_isolation", dict(a, state="restored"))
    assert_clean_failure(refused)
    assert "was changed after state=isolated wrote it" in refused["msg"], refused
    assert "-check_interval = 3\n+check_interval = 5\n" in refused["msg"]
    assert "-check_interval = 3\n+check_interval = 5\n" in refused["config_edits"]
    assert "discard_config_edits=true" in refused["msg"]
    assert bed.config.read_text() == edited and snapshot(bed) == during  # nothing was restored
    assert paused(bed.gitlab) == {7: True, 8: True, 9: True} and os.path.exists(a["state_path"])

    restored = adhoc_result("runner_isolation", dict(a, state="restored", discard_config_edits=True))
    assert restored.get("failed") is not True and restored["changed"] is True, restored
    assert "+check_interval = 5" in json.dumps(restored["warnings"])
    assert bed.config.read_text() == CONFIG and snapshot(bed) == before
    assert paused(bed.gitlab) == {7: False, 8: False, 9: True}


def test_nothing_to_restore_leaves_nothing(tmp_path):
    """No state file: restored changes nothing and creates neither the state directory nor a
    .lock file (no cluster or GitLab is asked)."""
    state_path = tmp_path / "absent" / "deeper" / "isolation.json"
    result = adhoc_result("runner_isolation", {"state": "restored", "state_path": str(state_path)})
    assert result.get("failed") is not True and result["changed"] is False, result
    assert "nothing to restore" in result["msg"]
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "there").mkdir()
    result = adhoc_result(
        "runner_isolation", {"state": "restored", "state_path": str(tmp_path / "there" / "s.json")}
    )
    assert result["changed"] is False and list((tmp_path / "there").iterdir()) == []


@pytest.fixture
def bad_input_bed(controlplane, gitlab, tmp_path):
    config_file = tmp_path / "config.toml"
    config_file.write_text(CONFIG)
    return SimpleNamespace(kubeconfig=controlplane, gitlab=gitlab, config=config_file, tmp=tmp_path)


BAD_RECORD = {"operation": "strata.ops.runner_isolation", "recorded_at": "2026-02-20T22:14:03Z"}


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"concurrent": -3}, "concurrent must be a positive integer (jobs at once), got -3"),
        ({"cpu_request": "lots"}, "cpu_request 'lots' is not a Kubernetes quantity"),
        ({"memory_request": "2 GB"}, "memory_request '2 GB' is not a Kubernetes quantity"),
        ({"cpu_request": "-500m"}, "cpu_request '-500m' is negative"),
        ({"node_selector": {"zone": None}}, "node_selector value None of 'zone' is not a string"),
        ({"node_labels": {"strata ops": "x"}}, "node_labels key 'strata ops' is not a label name"),
        ({"taint": {"key": "experiment", "value": "a b"}}, "taint.value 'a b' is not a label value"),
        ({"job_poll_interval": -1}, "job_poll_interval must be 0.01 seconds or more, got -1.0"),
        (
            {"workloads": [{"namespace": "n", "name": "v", "exit_command": []}]},
            "exit_command of Deployment n/v is empty",
        ),
        ({"state": "restored", "record": BAD_RECORD}, "'settings' is missing"),
        (
            {
                "state": "restored",
                "record": {
                    **BAD_RECORD,
                    "settings": {"taint": None, "node_labels": {}, "cordon": False, "config": {}},
                    "runners": [],
                    "workloads": [],
                    "config": {"mode": "file", "path": "CONFIG", "content_b64": "@@not base64@@"},
                },
            },
            "the recorded runner config is not base64",
        ),
    ],
    ids=lambda v: str(v)[:30],
)
def test_bad_input_fails_cleanly_before_anything(bad_input_bed, extra, fragment):
    """Bad input ends in fail_json with what is wrong (not a crash: ansible-core 2.19 would say
    "Module failed: <exception>"), before anything is read from GitLab or changed."""
    b = bad_input_bed
    state_path = b.tmp / "state" / "isolation.json"
    a = {
        "state_path": str(state_path),
        "gitlab_url": b.gitlab.url,
        "gitlab_token": TOKEN,
        "runners": [7],
        "config_path": str(b.config),
        "node": "ri-never-asked",
        "kubeconfig": b.kubeconfig,
    }
    record = extra.pop("record", None)
    if record is not None:
        state_path.parent.mkdir()
        record = json.loads(json.dumps(record).replace('"CONFIG"', json.dumps(str(b.config))))
        state_path.write_text(json.dumps(record))
    result = adhoc_result("runner_isolation", dict(a, **extra))
    assert_clean_failure(result)
    assert "Module failed" not in result["msg"], result["msg"]
    assert fragment in result["msg"], result["msg"]
    assert b.config.read_text() == CONFIG
    assert not b.gitlab.requests  # nothing was asked, nothing was paused
    if record is None:
        assert not state_path.parent.exists()
    else:
        assert json.loads(state_path.read_text()) == record  # kept for the operator to look at


def watch_pods(kubeconfig, ns, app, done, seen):
    """Record every set of pods of ``app`` (by uid, terminating ones included) until ``done``."""
    client = k8s.get_client(kubeconfig)

    def predicate(items):
        seen.append(sorted(p["metadata"]["uid"] for p in items))
        return done.is_set()

    with contextlib.suppress(k8s.K8sTimeout):
        client.watch_until("Pod", predicate, ns, label_selector="app=" + app, timeout=300)


def test_validator_restart_goes_through_its_exit_command(bed):
    """A workload with an exit_command is not rolled by the toleration change: it is stopped
    through the command (safe_shutdown's graceful stop), given the toleration at 0 replicas and
    scaled back; exit does the same the other way and returns with it Ready. Check mode says
    which workloads would restart."""
    ns, marker = bed.ns, bed.tmp / "exits"
    selector = {"matchLabels": {"app": "validator"}}
    body = {"replicas": 1, "selector": selector, "template": template("validator", bed.node)}
    bed.client.create("Deployment", {"metadata": {"name": "validator"}, "spec": body}, ns)
    ready(bed.client, "Deployment", "validator", ns)
    validator = {
        "kind": "Deployment",
        "namespace": ns,
        "name": "validator",
        "exit_command": ["/bin/sh", "-c", f"echo exit >> {marker}"],
        "exit_timeout": 30,
    }
    a = args(bed, runners=[], workloads=[validator])
    del a["config_path"], a["concurrent"], a["cpu_request"], a["memory_request"]

    check = run_module("runner_isolation", a, check_mode=True)
    assert check["changed"] is True and not check.get("failed"), check
    assert check["restarts"] == [
        {
            "workload": f"Deployment {ns}/validator",
            "replicas": 1,
            "how": "graceful: exit command, scaled to 0 until its pods are gone, then back to 1",
        }
    ]
    assert f"restarts the pods of: Deployment {ns}/validator (graceful" in json.dumps(check["warnings"])
    assert not marker.exists() and template_tolerations(bed.client.get("Deployment", "validator", ns)) is None

    for wanted, expected in (("isolated", [TOLERATION]), ("restored", None)):
        done, seen = threading.Event(), []
        watcher = threading.Thread(target=watch_pods, args=(bed.kubeconfig, ns, "validator", done, seen))
        watcher.start()
        try:
            result = run_module("runner_isolation", dict(a, state=wanted))
            assert not result.get("failed"), result
            # Ready when the module returned; no pod started while the old one was still there
            assert_ready_now(bed, [("Deployment", "validator")])
        finally:
            done.set()
            for pod in bed.client.list("Pod", ns, label_selector="app=validator")[0][:1]:  # an event for it
                name = pod["metadata"]["name"]
                bed.client.patch("Pod", name, {"metadata": {"labels": {"seen": "1"}}}, ns, patch_type="merge")
            watcher.join(60)
        ref = f"Deployment {ns}/validator"
        steps = [c for c in result["changes"] if ref in c]
        assert steps[0].startswith(f"stopped {ref} through its exit command (/bin/sh -c echo exit"), steps
        assert steps[1].endswith(f"the toleration {'to' if wanted == 'isolated' else 'from'} {ref}"), steps
        assert steps[2] == f"scaled {ref} back to 1 (Ready)", steps
        assert max(len(uids) for uids in seen) == 1, seen  # never two pods at once: a stop, not a roll
        assert len({u for uids in seen for u in uids}) == 2, seen  # the old pod went, a new one came
        assert template_tolerations(bed.client.get("Deployment", "validator", ns)) == expected
    assert marker.read_text() == "exit\nexit\n"  # once on enter, once on exit


def test_killed_while_the_validator_is_stopped_then_restore(bed):
    """kill -9 after the graceful stop (validator at 0 replicas): restore brings it back to its
    replicas, Ready, from the state file."""
    ns = bed.ns
    body = {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "validator"}},
        "template": template("validator", bed.node),
    }
    bed.client.create("Deployment", {"metadata": {"name": "validator"}, "spec": body}, ns)
    ready(bed.client, "Deployment", "validator", ns)
    validator = {"kind": "Deployment", "namespace": ns, "name": "validator", "exit_command": ["/bin/true"]}
    a = args(bed, runners=[], workloads=[validator])
    del a["config_path"], a["concurrent"], a["cpu_request"], a["memory_request"]
    proc = run_until_stopped(a, "_graceful")
    try:
        assert bed.client.get("Deployment", "validator", ns)["spec"]["replicas"] == 0
        assert json.loads(read_bytes(a["state_path"]))["stopped"] == {f"Deployment {ns}/validator": 2}
    finally:
        kill9(proc)
    restored = run_module("runner_isolation", dict(a, state="restored"))
    assert not restored.get("failed"), restored
    obj = bed.client.get("Deployment", "validator", ns)
    assert obj["spec"]["replicas"] == 2 and k8s.workload_is_ready(obj), obj["status"]
    assert template_tolerations(obj) is None
    assert f"scaled Deployment {ns}/validator back to 2 (Ready)" in restored["changes"]


def test_failing_exit_command_stops_before_the_scale(bed):
    """The exit command fails: a clean failure naming it, the validator NOT scaled and the node
    not tainted; restore then leaves it running as it was."""
    ns = bed.ns
    body = {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "validator"}},
        "template": template("validator", bed.node),
    }
    bed.client.create("Deployment", {"metadata": {"name": "validator"}, "spec": body}, ns)
    ready(bed.client, "Deployment", "validator", ns)
    before = snapshot(bed)
    validator = {"kind": "Deployment", "namespace": ns, "name": "validator", "exit_command": ["/bin/false"]}
    a = args(bed, runners=[], workloads=[validator], node_labels={}, cordon=False)
    del a["config_path"], a["concurrent"], a["cpu_request"], a["memory_request"]
    result = adhoc_result("runner_isolation", a)
    assert_clean_failure(result)
    assert (
        f"the graceful stop of Deployment {ns}/validator failed: the exit command /bin/false" in result["msg"]
    )
    assert "was NOT scaled" in result["msg"] and "state=restored" in result["restore_hint"]
    assert result["graceful_stop"]["exit_command"]["rc"] == 1
    obj = bed.client.get("Deployment", "validator", ns)
    assert obj["spec"]["replicas"] == 1 and template_tolerations(obj) is None
    assert snapshot(bed) == before  # not tainted
    restored = run_module("runner_isolation", dict(a, state="restored"))
    assert not restored.get("failed"), restored
    assert not [c for c in restored["changes"] if "validator" in c], restored["changes"]
    assert snapshot(bed) == before and not os.path.exists(a["state_path"])


# --- the stand-in and the client alone (no control plane needed) ------------------------------


def test_runner_selection_paginates(gitlab):
    """The client follows X-Next-Page over 20-per-page pages (45 runners, 3 pages)."""
    for rid in range(100, 145):
        gitlab.add_runner(rid, tag_list=["bulk"] if rid % 2 else ["bulk", "gpu"])
    client = gl.GitLabClient(gitlab.url, TOKEN)
    found = client.list_runners(tag_list=["bulk"])
    assert [r["id"] for r in found] == list(range(100, 145))
    assert all("token" not in r for r in found)
    pages = [r["query"]["page"] for r in gitlab.requests_for("GET", "/api/v4/runners/all")]
    assert pages == ["1", "2", "3"]
    assert all(r["query"]["per_page"] == "20" for r in gitlab.requests_for("GET", "/api/v4/runners/all"))
    assert len(client.list_runners(tag_list=["bulk", "gpu"])) == 23
    gitlab.admin = False
    with pytest.raises(gl.GitLabForbiddenError):
        client.list_runners()
    assert len(client.list_runners(scope="owned", paused=False)) == 47


def test_rate_limit_that_does_not_end(gitlab):
    waits = []
    client = gl.GitLabClient(gitlab.url, TOKEN, max_retries=2, max_retry_wait=5, sleep=waits.append)
    gitlab.throttle(3, retry_after="120")
    with pytest.raises(gl.GitLabRateLimitError, match="429 Too Many Requests after 2 retries"):
        client.set_paused(7, True)
    assert waits == [5, 5]  # Retry-After honoured up to max_retry_wait
    assert paused(gitlab)[7] is False


def test_stand_in_refuses_active_and_forbidden_runners(gitlab):
    client = gl.GitLabClient(gitlab.url, TOKEN)
    with pytest.raises(gl.GitLabError, match=r"HTTP 400.*deprecated"):
        client.request("PUT", "/runners/7", body={"active": False})
    gitlab.forbidden.add(8)
    with pytest.raises(gl.GitLabForbiddenError, match="403"):
        client.set_paused(8, True)
    assert paused(gitlab) == {7: False, 8: False, 9: True}
