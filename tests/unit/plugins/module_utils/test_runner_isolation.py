"""runner_isolation's pure helpers: taints and tolerations put on and taken back exactly."""

import pytest

from ansible_collections.strata.ops.plugins.module_utils import runner_isolation as ri

TAINT = {"key": "experiment", "value": "dedicated", "effect": "NoSchedule"}
LIFECYCLE = {
    "key": "node.kubernetes.io/unreachable",
    "effect": "NoExecute",
    "timeAdded": "2026-02-20T22:00:00Z",
}
OTHER = {"key": "other", "value": "x", "effect": "PreferNoSchedule"}


def test_taints_with_keeps_others_exactly_and_replaces_same_key_effect():
    old = {"key": "experiment", "value": "old", "effect": "NoSchedule"}
    new = ri.taints_with([LIFECYCLE, old, OTHER], TAINT)
    assert new == [LIFECYCLE, OTHER, TAINT]  # timeAdded kept, old value replaced
    assert ri.taints_with([], {"key": "k", "value": "", "effect": "NoSchedule"}) == [
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
    current = ri.taints_with(recorded, TAINT)
    restored = ri.taints_restored(current, recorded, "experiment", "NoSchedule")
    assert restored == recorded  # order included


def test_taints_restored_keeps_taints_added_meanwhile():
    recorded = [{"key": "experiment", "value": "old", "effect": "NoSchedule"}, OTHER]
    current = [*ri.taints_with(recorded, TAINT), LIFECYCLE]  # the node went unreachable meanwhile
    assert ri.taints_restored(current, recorded, "experiment", "NoSchedule") == [
        OTHER,
        LIFECYCLE,
        recorded[0],
    ]


def test_toleration_for_value_and_key_only():
    assert ri.toleration_for(TAINT) == {
        "key": "experiment",
        "operator": "Equal",
        "value": "dedicated",
        "effect": "NoSchedule",
    }
    assert ri.toleration_for({"key": "k", "value": "", "effect": "NoExecute"}) == {
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
    tol = ri.toleration_for(TAINT)
    added = ri.tolerations_with(recorded, tol)
    assert added == [*(recorded or []), tol]
    assert ri.tolerations_with(added, tol) == added  # idempotent
    assert ri.tolerations_restored(added, recorded, tol) == recorded


def test_toleration_already_there_is_kept_on_restore():
    tol = ri.toleration_for(TAINT)
    same = {"key": "experiment", "value": "dedicated", "effect": "NoSchedule"}  # operator Equal implied
    assert ri.tolerations_with([same], tol) == [same]
    assert ri.tolerations_restored([same], [same], tol) == [same]


def test_runner_paused_reads_paused_then_active():
    assert ri.runner_paused({"paused": True, "active": True}) is True
    assert ri.runner_paused({"paused": False}) is False
    assert ri.runner_paused({"active": False}) is True  # GitLab before 14.8
    assert ri.runner_paused({}) is False


def test_node_view_and_template_tolerations():
    node = {
        "metadata": {"name": "n", "labels": {"a": "b"}, "resourceVersion": "7"},
        "spec": {"taints": [LIFECYCLE], "unschedulable": True},
    }
    assert ri.node_view(node) == {
        "name": "n",
        "taints": [LIFECYCLE],
        "labels": {"a": "b"},
        "unschedulable": True,
        "resourceVersion": "7",
    }
    assert ri.node_view({"metadata": {"name": "m"}})["taints"] == []
    assert ri.template_tolerations({"spec": {"template": {"spec": {}}}}) is None
    assert ri.template_tolerations({"spec": {"template": {"spec": {"tolerations": []}}}}) == []
    assert ri.taint_text(TAINT) == "experiment=dedicated:NoSchedule"
