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

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import pytest

from ansible_collections.strata.ops.plugins.module_utils import gitlab as gl
from ansible_collections.strata.ops.plugins.module_utils import k8s, state

from .conftest import COLLECTIONS, REPO, run_module
from .k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .k8s_fixtures import recap, run_playbook

sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))
from gitlab_api import GitLabStandIn
from lab_k8s import create_kwok_node

pytestmark = pytest.mark.needs("k8s")

MODULE = os.path.join(REPO, "plugins", "modules", "runner_isolation.py")
TOKEN = "glpat-strata-test-0123456789"
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
        "rollout_timeout": 90,
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


def test_isolate_then_restore_exactly(bed):
    before = snapshot(bed)
    original = bed.config.read_bytes()
    bed.gitlab.add_job(7, 501, duration=1.0)  # a running job: waited for, never cancelled
    a = args(bed)

    result = run_module("runner_isolation", a)
    assert result.get("failed") is not True, result
    assert result["changed"] is True and result["already_isolated"] is False
    state_path = a["state_path"]
    assert stat.S_IMODE(os.stat(state_path).st_mode) == 0o600
    state_bytes = read_bytes(state_path)
    assert TOKEN.encode() not in state_bytes
    assert b"glrt-SECRET" not in state_bytes  # runner tokens GitLab may return are dropped
    assert paused(bed.gitlab) == {7: True, 8: True, 9: True}
    puts = bed.gitlab.requests_for("PUT")
    assert [r["body"] for r in puts] == [{"paused": True}, {"paused": True}]  # 9 was paused already
    assert bed.gitlab.requests_for("GET", "/api/v4/runners/7/jobs")
    assert all(r["method"] in ("GET", "PUT") for r in bed.gitlab.requests)  # no job was cancelled
    assert bed.gitlab.jobs[7][0]["status"] == "success"

    text = bed.config.read_text()
    assert "[runners.kubernetes.node_tolerations]" in text and '"experiment=dedicated" = "NoSchedule"' in text
    assert "[[runners.kubernetes.node_tolerations]]" not in text
    assert f'"kubernetes.io/hostname" = "{bed.node}"' in text
    assert 'cpu_request = "2000m"' in text and 'memory_request = "2Gi"' in text
    assert "concurrent = 1  # jobs at once" in text and "# cluster runner" in text

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
    changes = result["changes"]
    tolerated = changes.index(f"added the toleration to StatefulSet {bed.ns}/minio")
    assert tolerated < changes.index(f"cordoned node {bed.node}"), changes

    # a second isolated while isolated: nothing to do, the first record stays as it was
    mtime = os.stat(state_path).st_mtime_ns
    again = run_module("runner_isolation", a)
    assert again["changed"] is False and again["already_isolated"] is True, again
    assert read_bytes(state_path) == state_bytes and os.stat(state_path).st_mtime_ns == mtime

    bed.gitlab.requests.clear()
    restored = run_module("runner_isolation", dict(a, state="restored"), diff=True)
    assert restored["changed"] is True, restored
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
    # both workloads roll back to their old tolerations and are placed on the node again
    ready(bed.client, "Deployment", "web", bed.ns)
    ready(bed.client, "StatefulSet", "minio", bed.ns)
    assert placed_pods(bed) == {("web", bed.node, "Running", False), ("minio", bed.node, "Running", False)}

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
    assert_nothing_changed(bed, a, before)


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
    args_file = bed.tmp / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": a}))
    proc = subprocess.Popen(
        [sys.executable, MODULE, str(args_file)],
        env=dict(os.environ, PYTHONPATH=COLLECTIONS),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
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
