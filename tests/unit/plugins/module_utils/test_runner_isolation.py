"""runner_isolation's pure helpers: taints and tolerations put on and taken back exactly."""

import pytest

from ansible_collections.strata.ops.plugins.module_utils import runner_isolation as ri
from ansible_collections.strata.ops.plugins.module_utils.k8s import objects
from ansible_collections.strata.ops.plugins.module_utils.runner_isolation import checks as ri_checks

TAINT = {"key": "experiment", "value": "dedicated", "effect": "NoSchedule"}
LIFECYCLE = {
    "key": "node.kubernetes.io/unreachable",
    "effect": "NoExecute",
    "timeAdded": "2026-02-20T22:00:00Z",
}
OTHER = {"key": "other", "value": "x", "effect": "PreferNoSchedule"}


def test_taints_with_keeps_others_exactly_and_replaces_same_key_effect():
    old = {"key": "experiment", "value": "old", "effect": "NoSchedule"}
    new = objects.taints_with([LIFECYCLE, old, OTHER], TAINT)
    assert new == [LIFECYCLE, OTHER, TAINT]  # timeAdded kept, old value replaced
    assert objects.taints_with([], {"key": "k", "value": "", "effect": "NoSchedule"}) == [
        {"key": "k", "effect": "NoSchedule"}
    ]


@pytest.mark.parametrize(
    "recorded",
    [
        [OTHER],  # the taint was not there: removed
        [OTHER, TAINT],  # it was there already (the lab's dedicated node): kept
        [LIFECYCLE, {"key": "experiment", "value": "old", "effect": "NoSchedule"}],  # old value back
    ],
    ids=["absent", "present", "other-value"],
)
def test_taints_restored(recorded):
    current = objects.taints_with(recorded, TAINT)
    restored = objects.taints_restored(current, recorded, {"key": "experiment", "effect": "NoSchedule"})
    assert restored == recorded  # order included


def test_taints_restored_keeps_taints_added_meanwhile():
    recorded = [{"key": "experiment", "value": "old", "effect": "NoSchedule"}, OTHER]
    current = [*objects.taints_with(recorded, TAINT), LIFECYCLE]  # the node went unreachable meanwhile
    assert objects.taints_restored(current, recorded, {"key": "experiment", "effect": "NoSchedule"}) == [
        OTHER,
        LIFECYCLE,
        recorded[0],
    ]


def test_toleration_for_value_and_key_only():
    assert objects.toleration_for(TAINT) == {
        "key": "experiment",
        "operator": "Equal",
        "value": "dedicated",
        "effect": "NoSchedule",
    }
    assert objects.toleration_for({"key": "k", "value": "", "effect": "NoExecute"}) == {
        "key": "k",
        "operator": "Exists",
        "effect": "NoExecute",
    }


@pytest.mark.parametrize(
    "recorded",
    [None, [], [{"key": "storage", "operator": "Exists", "effect": "NoSchedule"}]],
    ids=["field-absent", "empty-list", "one-toleration"],
)
def test_tolerations_round_trip(recorded):
    tol = objects.toleration_for(TAINT)
    added = objects.tolerations_with(recorded, tol)
    assert added == [*(recorded or []), tol]
    assert objects.tolerations_with(added, tol) == added  # idempotent
    assert objects.tolerations_restored(added, recorded, tol) == recorded


def test_toleration_already_there_is_kept_on_restore():
    tol = objects.toleration_for(TAINT)
    same = {"key": "experiment", "value": "dedicated", "effect": "NoSchedule"}  # operator Equal implied
    assert objects.tolerations_with([same], tol) == [same]
    assert objects.tolerations_restored([same], [same], tol) == [same]


def test_runner_paused_reads_paused_then_active():
    assert ri_checks.runner_paused({"paused": True, "active": True}) is True
    assert ri_checks.runner_paused({"paused": False}) is False
    assert ri_checks.runner_paused({"active": False}) is True  # GitLab before 14.8
    assert ri_checks.runner_paused({}) is False


def test_node_view_and_template_tolerations():
    node = {
        "metadata": {"name": "n", "labels": {"a": "b"}, "resourceVersion": "7"},
        "spec": {"taints": [LIFECYCLE], "unschedulable": True},
    }
    assert ri_checks.node_view(node) == {
        "name": "n",
        "taints": [LIFECYCLE],
        "labels": {"a": "b"},
        "unschedulable": True,
        "resourceVersion": "7",
    }
    assert ri_checks.node_view({"metadata": {"name": "m"}})["taints"] == []
    assert objects.template_tolerations({"spec": {"template": {"spec": {}}}}) is None
    assert objects.template_tolerations({"spec": {"template": {"spec": {"tolerations": []}}}}) == []
    assert objects.taint_text(TAINT) == "experiment=dedicated:NoSchedule"


def params(**extra):
    """The module's parameters as AnsibleModule fills them (defaults of the argument spec)."""
    base = {
        "state": "isolated",
        "job_wait_timeout": 3600,
        "job_poll_interval": 10,
        "gitlab_timeout": 30,
        "gitlab_max_retries": 5,
        "gitlab_max_retry_wait": 60,
        "rollout_timeout": 600,
        "lock_timeout": 30,
        "concurrent": None,
        "node_selector": None,
        "cpu_request": None,
        "memory_request": None,
        "taint": dict(TAINT),
        "node_labels": {},
        "workloads": [],
    }
    base.update(extra)
    return base


def test_good_input_has_no_problems():
    assert ri_checks.input_problems(params()) == []
    good = params(
        concurrent=1,
        cpu_request="2000m",
        memory_request="2Gi",
        node_selector={"kubernetes.io/hostname": "talos-say-ls6"},
        node_labels={"strata.ops/experiment": "dedicated"},
        taint={"key": "experiment", "value": "", "effect": "NoSchedule"},
        workloads=[
            {"kind": "Deployment", "namespace": "v", "name": "v", "exit_command": ["x"], "exit_timeout": 5}
        ],
    )
    assert ri_checks.input_problems(good) == []


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"concurrent": -3}, "concurrent must be a positive integer"),
        ({"cpu_request": "lots"}, "cpu_request 'lots' is not a Kubernetes quantity"),
        ({"memory_request": "2 GB"}, "memory_request '2 GB' is not a Kubernetes quantity"),
        ({"node_selector": {"zone": None}}, "node_selector value None of 'zone' is not a string"),
        ({"node_labels": {"strata.ops/experiment": None}}, "node_labels value None"),
        ({"node_labels": {"bad key": "x"}}, "node_labels key 'bad key' is not a label name"),
        ({"taint": {"key": "bad key", "value": "", "effect": "NoSchedule"}}, "taint.key 'bad key'"),
        ({"taint": {"key": "", "value": "", "effect": "NoSchedule"}}, "taint.key ''"),
        ({"taint": {"key": "experiment", "value": "a b", "effect": "NoSchedule"}}, "taint.value 'a b'"),
        ({"job_poll_interval": -1}, "job_poll_interval must be 0.01 seconds or more, got -1"),
        ({"gitlab_timeout": 0}, "gitlab_timeout must be 1 seconds or more"),
        ({"rollout_timeout": -5}, "rollout_timeout must be 0 seconds or more"),
        (
            {"workloads": [{"kind": "Deployment", "namespace": "n", "name": "v", "exit_command": []}]},
            "exit_command of Deployment n/v is empty",
        ),
        (
            {
                "rollout_timeout": 0,
                "workloads": [
                    {
                        "kind": "Deployment",
                        "namespace": "n",
                        "name": "v",
                        "exit_command": ["x"],
                        "exit_timeout": 5,
                    }
                ],
            },
            "rollout_timeout must be 1 second or more when a workload has an exit_command",
        ),
    ],
    ids=lambda v: str(v)[:50],
)
def test_input_problems(extra, fragment):
    problems = ri_checks.input_problems(params(**extra))
    assert any(fragment in p for p in problems), problems


def test_restore_checks_only_what_it_uses():
    """state=restored takes no config values: only its own numbers are checked."""
    assert ri_checks.input_problems(params(state="restored", concurrent=-3)) == []
    assert ri_checks.input_problems(params(state="restored", lock_timeout=-1))


def test_config_edits_diff():
    written = b'concurrent = 1\n[[runners]]\n  name = "k8s"\n'
    now = b'concurrent = 1\n[[runners]]\n  name = "k8s"\n  limit = 2\n'
    diff = ri_checks.config_edits(written, now, "/etc/gitlab-runner/config.toml")
    assert "--- /etc/gitlab-runner/config.toml (as state=isolated wrote it)" in diff
    assert "+++ /etc/gitlab-runner/config.toml (now)" in diff
    assert "+  limit = 2\n" in diff
    assert ri_checks.config_edits(written, None, "x").count("\n-") == 3  # the file is gone


def test_selector_missing():
    labels = {"kubernetes.io/hostname": "n1", "zone": "a"}
    assert ri_checks.selector_missing({"kubernetes.io/hostname": "n1"}, labels) == {}
    assert ri_checks.selector_missing({"zone": "b", "disk": "ssd"}, labels) == {"zone": "b", "disk": "ssd"}


def good_record():
    return {
        "operation": ri.STATE_OPERATION,
        "settings": {"taint": TAINT, "node_labels": {}, "cordon": False, "config": {}, "workloads": []},
        "runners": [{"id": 7, "paused": False}],
        "workloads": [{"kind": "Deployment", "namespace": "n", "name": "w", "tolerations": None}],
        "node": {"name": "n1", "taints": [], "labels": {}, "unschedulable": False},
        "config": {"mode": "file", "path": "/x", "content_b64": "", "sha256": ""},
    }


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda r: r.pop("settings"), "'settings' is missing"),
        (lambda r: r["runners"].append({"id": 8}), "runner entry lacks"),
        (lambda r: r["workloads"].append({"kind": "Deployment"}), "workload entry lacks"),
        (lambda r: r["node"].pop("taints"), "node record lacks"),
        (lambda r: r["config"].pop("mode"), "runner config record lacks"),
        (lambda r: r.update(operation="other"), "not a runner isolation state file"),
    ],
    ids=["settings", "runner", "workload", "node", "config", "operation"],
)
def test_record_problems(change, fragment):
    assert ri_checks.record_problems(good_record()) == []
    record = good_record()
    change(record)
    assert any(fragment in p for p in ri_checks.record_problems(record))
