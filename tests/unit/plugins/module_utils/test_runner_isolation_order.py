"""RunnerIsolation's ordering guarantees and its recovery from the state file, against shared fakes
(tests/unit/fakes: kube.py, gitlab.py, journal.py) that log every call of every system in ONE
ordered journal, with a real config.toml and a real state file under tmp_path.

The worker is built as plugins/modules/runner_isolation.py builds it, from the parameters the
module's own argument spec produces (AnsibleModule runs, defaults included; only the worker class
is swapped to capture them).

Guarantees pinned here (docs/architecture.md, runner_isolation/__init__.py):
* enter: the full record is on disk before the first change to any system; runners are paused
  (and their jobs drained) before the runner config is edited; the node is tainted and cordoned
  only after every tolerating workload rolled out with the new template;
* exit: the node's taint (and cordon) is removed before the workloads' tolerations; the config
  comes back byte-for-byte; runners get their own paused flag back; the state file and its lock
  file are removed last;
* a run killed anywhere in enter is undone exactly by state=restored with a new worker;
* check mode changes nothing and writes no state file; a second enter changes nothing.
"""

import base64
import os
import stat

import pytest

from ansible_collections.strata.ops.plugins.module_utils import gitlab as gl
from ansible_collections.strata.ops.plugins.module_utils import k8s
from ansible_collections.strata.ops.plugins.module_utils.runner_isolation import (
    STATE_OPERATION,
    IsolationError,
)
from ansible_collections.strata.ops.plugins.module_utils.runner_isolation.worker import RunnerIsolation
from ansible_collections.strata.ops.plugins.module_utils.state import StateError
from ansible_collections.strata.ops.plugins.modules import runner_isolation as ri_module
from tests.unit.compat import patch_module_args
from tests.unit.fakes.gitlab import FakeGitLab, runner
from tests.unit.fakes.journal import SYSTEMS, Crash, Journal, read_bytes, read_json, record_file_writes
from tests.unit.fakes.kube import NO_TOLERATIONS, FakeKube, configmap, node, workload
from tests.unit.fakes.run import FakeRun

CONFIG = b"""\
# gitlab-runner config (managed by hand)
concurrent = 4  # jobs at once
check_interval = 3

[[runners]]
  # the cluster runner
  name = "k8s"
  url = "https://gitlab.example/"
  token = "glrt-config-token"
  executor = "kubernetes"
  [runners.kubernetes]
    image = "gcc:14"  # default image
    namespace = "gitlab-runner"
    [runners.kubernetes.node_selector]
      "disktype" = "ssd"

[[runners]]
  name = "metal"
  executor = "shell"
"""

GITLAB_TOKEN = "glpat-api-token"
RUNNER_TOKEN = "glrt-secret-token"
TAINT = {"key": "experiment", "value": "dedicated", "effect": "NoSchedule"}
TOLERATION = {"key": "experiment", "operator": "Equal", "value": "dedicated", "effect": "NoSchedule"}
LIFECYCLE = {
    "key": "node.kubernetes.io/disk-pressure",
    "effect": "NoSchedule",
    "timeAdded": "2026-02-20T22:00:00Z",
}
OTHER_TAINT = {"key": "gpu", "value": "a100", "effect": "PreferNoSchedule"}
STORAGE_TOL = {"key": "storage", "operator": "Exists", "effect": "NoSchedule"}
NODE_LABELS = {"kubernetes.io/hostname": "node1", "disktype": "ssd", "zone": "a"}
NODE = "Node node1"
MINIO = "Deployment minio/minio"
PG = "StatefulSet data/pg"
WORKLOADS = (MINIO, PG)
RUNNING_JOB = {"id": 4711, "name": "build", "project": "ci/app", "web_url": "https://gitlab.example/j/4711"}


class Captured(Exception):
    """Raised by the stand-in worker class once the module handed it its parameters."""


def module_params(patcher, args, check_mode=False):
    """(params, check_mode, diff) as plugins/modules/runner_isolation.py's main() hands them to
    RunnerIsolation: AnsibleModule with the module's argument spec fills defaults and types."""
    captured = {}

    def capture(params, check, **kwargs):
        captured.update(params=params, check_mode=check, diff=kwargs.get("diff"))
        raise Captured

    with patcher.context() as local:
        local.setattr(ri_module, "RunnerIsolation", capture)
        module_args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=True)
        with patch_module_args(module_args), pytest.raises(Captured):
            ri_module.main()
    return captured["params"], captured["check_mode"], captured["diff"]


def is_label_patch(entry):
    return "labels" in ((entry.detail or {}).get("metadata") or {})


def is_taint_patch(entry):
    """A Node patch that touches the taints or the cordon."""
    spec = (entry.detail or {}).get("spec") or {}
    return "taints" in spec or "unschedulable" in spec


def has_our_taint(taints):
    return any(t.get("key") == TAINT["key"] and t.get("effect") == TAINT["effect"] for t in taints or [])


class Lab:
    """One world: a node with taints and labels, two workloads, three runners (8 paused before,
    9 running a job for two more looks), a real config.toml (0640) and a state file path whose
    directory does not exist yet. ``patcher`` is a pytest monkeypatch."""

    def __init__(
        self,
        root,
        patcher,
        *,
        legacy_gitlab=False,
        configmap_target=False,
        node_taints=(LIFECYCLE, OTHER_TAINT),
        cordoned=False,
        minio_tolerations=NO_TOLERATIONS,
    ):
        self.root = str(root)
        self.patcher = patcher
        self.config_path = os.path.join(self.root, "etc", "gitlab-runner", "config.toml")
        self.state_path = os.path.join(self.root, "var", "strata-ops", "runner_isolation.json")
        self.lock_path = self.state_path + ".lock"
        self.configmap_target = configmap_target
        os.makedirs(os.path.dirname(self.config_path))
        with open(self.config_path, "wb") as handle:
            handle.write(CONFIG)
        os.chmod(self.config_path, 0o640)
        self.journal = Journal()
        record_file_writes(self.journal, patcher)
        objects = [
            node("node1", labels=NODE_LABELS, taints=list(node_taints), unschedulable=cordoned),
            node("node2", labels={"kubernetes.io/hostname": "node2"}),
            workload("Deployment", "minio", "minio", replicas=2, tolerations=minio_tolerations),
            workload("StatefulSet", "data", "pg", replicas=1, tolerations=[STORAGE_TOL]),
        ]
        if configmap_target:
            objects.append(
                configmap("gitlab-runner", "gitlab-runner", {"config.template.toml": CONFIG.decode()})
            )
        self.kube = FakeKube(self.journal, objects)
        self.gitlab = FakeGitLab(
            self.journal,
            [runner(7, token=RUNNER_TOKEN), runner(8, paused=True), runner(9)],
            jobs={9: [(RUNNING_JOB, 2)]},
            legacy=legacy_gitlab,
        )
        self.journal.snapshotters.update(
            kube=self.kube.snapshot,
            gitlab=self.gitlab.snapshot,
            config=lambda: read_bytes(self.config_path),
            state=lambda: read_json(self.state_path),
        )
        self.warnings = []

    def sleep(self, seconds):
        self.journal.call("clock", "sleep", str(seconds))

    def enter_args(self, **extra):
        args = {
            "state": "isolated",
            "state_path": self.state_path,
            "gitlab_url": "https://gitlab.example",
            "gitlab_token": GITLAB_TOKEN,
            "runners": [7, 8, 9],
            "concurrent": 1,
            "cpu_request": "2000m",
            "memory_request": "2Gi",
            "node": "node1",
            "node_labels": {"strata.ops/experiment": "dedicated"},
            "cordon": True,
            "workloads": [
                {"kind": "Deployment", "namespace": "minio", "name": "minio"},
                {"kind": "StatefulSet", "namespace": "data", "name": "pg"},
            ],
        }
        if self.configmap_target:
            args["config_configmap"] = {
                "namespace": "gitlab-runner",
                "name": "gitlab-runner",
                "key": "config.template.toml",
            }
        else:
            args["config_path"] = self.config_path
        args.update(extra)
        return args

    def worker(self, args, check_mode=False):
        params, check, diff = module_params(self.patcher, args, check_mode)
        return RunnerIsolation(
            params,
            check,
            diff=diff,
            kube=lambda: self.kube,
            gitlab=self.gitlab,
            run_command=FakeRun(),
            warn=self.warnings.append,
            sleep=self.sleep,
        )

    def enter(self, check_mode=False, **extra):
        return self.worker(self.enter_args(**extra), check_mode).run()

    def restore(self, check_mode=False, **extra):
        args = dict(
            {"state": "restored", "state_path": self.state_path, "gitlab_token": GITLAB_TOKEN}, **extra
        )
        return self.worker(args, check_mode).run()

    def world(self):
        """Everything that must be exactly as before after a restore."""
        world = self.journal.world()
        del world["state"]
        world["config_mode"] = stat.S_IMODE(os.stat(self.config_path).st_mode)
        return world

    def state_files(self):
        return [p for p in (self.state_path, self.lock_path) if os.path.exists(p)]


@pytest.fixture
def lab(tmp_path, monkeypatch):
    return Lab(tmp_path, monkeypatch)


def assert_full_record(record, lab, before, written):
    """The state file holds everything restore needs to return to ``before``."""
    assert record is not None, "no state file"
    assert record["operation"] == STATE_OPERATION
    assert {r["id"]: r["paused"] for r in record["runners"]} == {7: False, 8: True, 9: False}
    config = record["config"]
    assert config["mode"] == "file" and config["path"] == lab.config_path
    assert base64.b64decode(config["content_b64"]) == before["config"] == CONFIG
    assert base64.b64decode(config["written_b64"]) == written
    assert record["node"] == {
        "name": "node1",
        "taints": [LIFECYCLE, OTHER_TAINT],
        "labels": NODE_LABELS,
        "unschedulable": False,
    }
    recorded = {
        f"{w['kind']} {w['namespace']}/{w['name']}": (w["tolerations"], w["replicas"])
        for w in record["workloads"]
    }
    assert recorded == {MINIO: (None, 2), PG: ([STORAGE_TOL], 1)}
    settings = record["settings"]
    assert settings["taint"] == TAINT and settings["cordon"] is True
    assert settings["node_labels"] == {"strata.ops/experiment": "dedicated"}


def change_keys(journal, start=0, with_rollouts=True):
    """(system, op, target) of the changes from ``start``: the systems', the state file's and the
    controllers' rollouts."""
    return [
        e.key()
        for e in journal.entries[start:]
        if (e.changes and e.system in (*SYSTEMS, "state")) or (with_rollouts and e.op == "rolled-out")
    ]


# --------------------------------------------------------------------------- 1. enter order


def test_enter_records_everything_before_the_first_change(lab):
    before = lab.world()
    result = lab.enter()
    assert result["changed"] is True and result["already_isolated"] is False
    journal = lab.journal
    changes = journal.changes()
    state_write = journal.first("state", "write", lab.state_path)
    assert changes, journal.entries
    assert state_write.seq < changes[0].seq, f"{changes[0]!r} came before the state file"
    # at the first change (and every later one) the state file already held the full record
    for entry in changes:
        assert_full_record(entry.world["state"], lab, before, written=read_bytes(lab.config_path))
    # the state file is private and carries no API token or runner token
    assert stat.S_IMODE(os.stat(lab.state_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(lab.state_path)).st_mode) == 0o700
    raw = read_bytes(lab.state_path).decode()
    assert GITLAB_TOKEN not in raw and RUNNER_TOKEN not in raw


def test_enter_pauses_runners_and_drains_jobs_before_editing_the_config(lab):
    lab.enter()
    journal = lab.journal
    config_write = journal.first("file", "write", lab.config_path)
    pauses = journal.find("gitlab", "set_paused")
    assert [(e.target, e.detail) for e in pauses] == [("runner 7", True), ("runner 9", True)]
    assert all(e.seq < config_write.seq for e in pauses), journal.entries
    # the job on runner 9 was waited for (two looks that saw it, one that did not, a sleep after
    # each look that saw it), never cancelled, and all of that before the config was edited
    looks = journal.find("gitlab", "running_jobs")
    assert len(journal.find("gitlab", "running_jobs", "runner 9")) == 3
    assert all(e.seq < config_write.seq for e in looks)
    assert len(journal.find("clock", "sleep")) == 2
    assert all(e.seq < config_write.seq for e in journal.find("clock", "sleep"))
    assert journal.first("gitlab", "running_jobs").seq > max(e.seq for e in pauses)


def test_enter_taints_and_cordons_only_after_the_workloads_rolled_out(lab):
    lab.enter()
    journal = lab.journal
    node_patches = journal.find("kube", "patch", NODE)
    taint = journal.first("kube", "patch", NODE, where=is_taint_patch)
    assert taint.detail["spec"]["unschedulable"] is True and has_our_taint(taint.detail["spec"]["taints"])
    assert [e for e in node_patches if is_taint_patch(e)] == [taint]  # no earlier taint or cordon
    for ref in WORKLOADS:
        toleration_patch = journal.last("kube", "patch", ref)
        assert TOLERATION in toleration_patch.detail["spec"]["template"]["spec"]["tolerations"]
        rollout = journal.first("cluster", "rolled-out", ref, start=toleration_patch.seq)
        assert TOLERATION in rollout.detail["template_spec"]["tolerations"]
        assert toleration_patch.seq < rollout.seq < taint.seq, journal.entries
        # when the node got its taint, the workload ran the tolerating template, all replicas ready
        at_taint = taint.world["kube"]["workloads"][ref]
        assert at_taint["rolled_out"] and TOLERATION in at_taint["template_spec"]["tolerations"]


def test_enter_makes_the_documented_changes_in_order(lab):
    result = lab.enter()
    assert change_keys(lab.journal) == [
        ("state", "write", lab.state_path),
        ("gitlab", "set_paused", "runner 7"),
        ("gitlab", "set_paused", "runner 9"),
        ("file", "write", lab.config_path),
        ("kube", "patch", NODE),  # labels
        ("kube", "patch", MINIO),
        ("kube", "patch", PG),
        ("cluster", "rolled-out", MINIO),
        ("cluster", "rolled-out", PG),
        ("kube", "patch", NODE),  # taint and cordon
    ]
    assert result["runners"] == [
        {"id": 7, "paused_before": False},
        {"id": 8, "paused_before": True},
        {"id": 9, "paused_before": False},
    ]
    assert result["running_jobs"] == []
    assert result["diff"]["before"]["config"] == CONFIG.decode()
    world = lab.world()
    assert world["kube"]["nodes"]["node1"]["unschedulable"] is True
    assert world["kube"]["nodes"]["node1"]["labels"]["strata.ops/experiment"] == "dedicated"
    assert world["gitlab"] == {
        7: {"paused": True, "active": False},
        8: {"paused": True, "active": False},
        9: {"paused": True, "active": False},
    }


# --------------------------------------------------------------------------- 2. exit order


@pytest.mark.parametrize("legacy_gitlab", [False, True], ids=["paused-field", "active-only"])
def test_exit_untaints_before_untolerating_and_restores_everything(tmp_path, monkeypatch, legacy_gitlab):
    lab = Lab(tmp_path, monkeypatch, legacy_gitlab=legacy_gitlab)
    before = lab.world()
    lab.enter()
    journal = lab.journal
    mark = journal.mark()
    result = lab.restore()
    assert result["changed"] is True and result["state"] == "restored"

    untaint = journal.first("kube", "patch", NODE, where=is_taint_patch, start=mark)
    assert untaint.detail["spec"]["taints"] == [LIFECYCLE, OTHER_TAINT]
    assert untaint.detail["spec"]["unschedulable"] is None  # uncordoned: the field removed
    for ref in WORKLOADS:
        untolerate = journal.first("kube", "patch", ref, start=mark)
        assert untaint.seq < untolerate.seq, journal.since(mark)
        # when the toleration went, the node had neither the taint nor the cordon any more
        node_then = untolerate.world["kube"]["nodes"]["node1"]
        assert not has_our_taint(node_then["taints"]) and not node_then["unschedulable"]

    # config byte-for-byte (mode kept), runners' own flags, node and workloads exactly as before
    assert read_bytes(lab.config_path) == CONFIG
    assert lab.world() == before
    assert [(e.target, e.detail) for e in journal.find("gitlab", "set_paused", start=mark)] == [
        ("runner 7", False),
        ("runner 9", False),
    ]
    assert journal.find("gitlab", "set_paused", "runner 8") == []  # paused before: never touched
    assert lab.gitlab.runners[8]["paused"] is True
    # the state file and its lock file are removed, as the very last change
    assert lab.state_files() == []
    assert change_keys(journal, mark)[-1] == ("state", "remove", lab.state_path)


def test_round_trip_keeps_what_the_node_and_workloads_had_before(tmp_path, monkeypatch):
    """The node was cordoned already and carried the taint's key and effect with another value;
    MinIO tolerated the taint already: restore puts back exactly that."""
    old_value = {"key": "experiment", "value": "previous", "effect": "NoSchedule"}
    lab = Lab(
        tmp_path,
        monkeypatch,
        node_taints=[old_value, LIFECYCLE],
        cordoned=True,
        minio_tolerations=[dict(TOLERATION)],
    )
    before = lab.world()
    lab.enter()
    isolated = lab.world()
    assert isolated["kube"]["nodes"]["node1"]["taints"] == [LIFECYCLE, TAINT]
    assert isolated["kube"]["workloads"][MINIO] == before["kube"]["workloads"][MINIO]  # not rolled
    assert lab.journal.find("kube", "patch", MINIO) == []
    mark = lab.journal.mark()
    lab.restore()
    assert lab.journal.find("kube", "patch", MINIO, start=mark) == []
    untaint = lab.journal.first("kube", "patch", NODE, where=is_taint_patch, start=mark)
    assert "unschedulable" not in untaint.detail["spec"]  # it was cordoned before: stays so
    assert lab.world() == before
    assert lab.state_files() == []


def test_exit_makes_the_documented_changes_in_order(lab):
    lab.enter()
    mark = lab.journal.mark()
    lab.restore()
    assert change_keys(lab.journal, mark) == [
        ("file", "write", lab.config_path),
        ("kube", "patch", NODE),  # taint and cordon
        ("kube", "patch", MINIO),
        ("kube", "patch", PG),
        ("cluster", "rolled-out", MINIO),
        ("cluster", "rolled-out", PG),
        ("kube", "patch", NODE),  # labels
        ("gitlab", "set_paused", "runner 7"),
        ("gitlab", "set_paused", "runner 9"),
        ("state", "remove", lab.state_path),
    ]


def test_exit_through_a_configmap_restores_its_data(tmp_path, monkeypatch):
    lab = Lab(tmp_path, monkeypatch, configmap_target=True)
    before = lab.world()
    lab.enter()
    journal = lab.journal
    cm_ref = "ConfigMap gitlab-runner/gitlab-runner"
    edit = journal.first("kube", "patch", cm_ref)
    assert journal.first("state", "write").seq < journal.first("gitlab", "set_paused").seq
    assert journal.last("gitlab", "set_paused").seq < edit.seq
    assert edit.detail["metadata"]["resourceVersion"]  # written only over what was read
    assert any("helm upgrade" in w for w in lab.warnings)
    assert lab.world()["kube"]["configmaps"][cm_ref] != before["kube"]["configmaps"][cm_ref]
    lab.restore()
    assert lab.world() == before
    assert lab.state_files() == []


def test_exit_refuses_before_any_change_when_the_config_was_edited_meanwhile(lab):
    before = lab.world()
    lab.enter()
    with open(lab.config_path, "ab") as handle:
        handle.write(b"# edited while isolated\n")
    isolated, record = lab.world(), read_bytes(lab.state_path)
    mark = lab.journal.mark()
    with pytest.raises(IsolationError, match="discard_config_edits") as refused:
        lab.restore()
    assert "+# edited while isolated" in refused.value.details["config_edits"]
    assert lab.journal.changes(systems=(*SYSTEMS, "state"), start=mark) == []
    assert lab.world() == isolated and read_bytes(lab.state_path) == record
    lab.restore(discard_config_edits=True)
    assert lab.world() == before
    assert lab.state_files() == []


# --------------------------------------------------------------------------- 3. recovery

CRASH_POINTS = [
    pytest.param({"system": "state", "op": "write"}, id="after-state-file"),
    pytest.param({"system": "gitlab", "op": "set_paused", "target": "runner 7"}, id="after-first-pause"),
    pytest.param({"system": "gitlab", "op": "set_paused", "target": "runner 9"}, id="after-all-paused"),
    pytest.param({"system": "gitlab", "op": "running_jobs", "target": "runner 9"}, id="while-jobs-run"),
    pytest.param({"system": "file", "op": "write"}, id="after-config-write"),
    pytest.param(
        {"system": "kube", "op": "patch", "target": NODE, "where": is_label_patch}, id="after-node-label"
    ),
    pytest.param({"system": "kube", "op": "patch", "target": MINIO}, id="after-first-toleration"),
    pytest.param({"system": "kube", "op": "patch", "target": PG}, id="after-all-tolerations"),
    pytest.param({"system": "kube", "op": "watch_until", "when": "before"}, id="before-rolled-out"),
    pytest.param(
        {"system": "kube", "op": "patch", "target": NODE, "where": is_taint_patch}, id="after-taint"
    ),
]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_restore_after_a_crash_in_enter_returns_to_before(lab, point):
    before = lab.world()
    lab.journal.crash_at(**point)
    with pytest.raises(Crash):
        lab.enter()
    record = read_json(lab.state_path)
    assert_full_record(record, lab, before, written=base64.b64decode(record["config"]["written_b64"]))

    result = lab.restore()  # a new worker, from the state file only
    assert result["changed"] is True
    assert lab.world() == before
    assert lab.state_files() == []


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_enter_again_after_a_crash_keeps_the_first_record(lab, point):
    before = lab.world()
    lab.journal.crash_at(**point)
    with pytest.raises(Crash):
        lab.enter()
    record = read_json(lab.state_path)

    result = lab.enter()  # finishes the isolation
    assert result["already_isolated"] is True
    assert read_json(lab.state_path) == record
    isolated = lab.world()
    assert has_our_taint(isolated["kube"]["nodes"]["node1"]["taints"])
    assert isolated["config"] == base64.b64decode(record["config"]["written_b64"])

    lab.restore()
    assert lab.world() == before
    assert lab.state_files() == []


@pytest.mark.parametrize(
    ("point", "error"),
    [
        (
            {"system": "gitlab", "op": "set_paused", "target": "runner 9", "when": "before"},
            gl.GitLabError("PUT /runners/9: HTTP 502", 502),
        ),
        (
            {"system": "kube", "op": "patch", "target": PG, "when": "before"},
            k8s.K8sUnreachable("Kubernetes API server is unreachable", url="https://k", cause="refused"),
        ),
        (
            {"system": "kube", "op": "patch", "target": NODE, "where": is_taint_patch, "when": "before"},
            k8s.K8sAuthError("forbidden", status=403),
        ),
    ],
    ids=["gitlab-502-on-pause", "api-down-on-toleration", "forbidden-on-taint"],
)
def test_a_failed_enter_says_how_to_undo_and_restore_undoes_it(lab, point, error):
    before = lab.world()
    lab.journal.crash_at(exc=error, **point)
    with pytest.raises(type(error)) as failed:
        lab.enter()
    assert failed.value.details["state_path"] == lab.state_path
    assert "state=restored" in failed.value.details["restore_hint"]
    assert failed.value.details["changes"][0] == f"recorded the state in {lab.state_path}"
    lab.restore()
    assert lab.world() == before
    assert lab.state_files() == []


def test_restore_after_a_crash_at_any_call_of_enter(tmp_path, monkeypatch):
    """Every call of a clean enter, in turn, fails (before it reaches its system, or right after
    it did its work); a new worker's restore then returns everything to before."""
    with monkeypatch.context() as patcher:
        reference = Lab(tmp_path / "reference", patcher)
        reference.enter()
        calls = reference.journal.calls()
    assert calls > 20
    for number in range(calls):
        for when in ("before", "after"):
            with monkeypatch.context() as patcher:
                lab = Lab(tmp_path / f"{number}-{when}", patcher)
                before = lab.world()
                lab.journal.crash_at_call(number, when=when)
                with pytest.raises(Crash):
                    lab.enter()
                recorded = os.path.exists(lab.state_path)
                lab.restore()
                where = f"crash {when} call {number} ({reference.journal.by_call(number)!r})"
                assert lab.world() == before, where
                # a run killed holding the lock before it wrote the state file leaves the (empty)
                # lock file behind, and restore, finding no state file, leaves it too
                left = [] if recorded else [p for p in [lab.lock_path] if os.path.exists(p)]
                assert lab.state_files() == left, where
                if left:
                    assert read_bytes(lab.lock_path) == b"", where


def test_restore_killed_midway_is_finished_by_the_next_restore(lab):
    before = lab.world()
    lab.enter()
    lab.journal.crash_at("kube", "patch", MINIO)  # the restore's untoleration of MinIO
    with pytest.raises(Crash):
        lab.restore()
    assert os.path.exists(lab.state_path)
    lab.restore()
    assert lab.world() == before
    assert lab.state_files() == []


def test_a_stuck_rollout_leaves_the_node_untainted_and_restore_finishes_once_fixed(lab):
    before = lab.world()
    lab.kube.stuck.add(PG)
    with pytest.raises(IsolationError, match="rollout_timeout"):
        lab.enter()
    assert lab.journal.find("kube", "patch", NODE, where=is_taint_patch) == []
    node_now = lab.world()["kube"]["nodes"]["node1"]
    assert not has_our_taint(node_now["taints"]) and not node_now["unschedulable"]
    with pytest.raises(IsolationError, match="run state=restored again"):
        lab.restore()  # PG cannot roll back either while it is stuck
    assert os.path.exists(lab.state_path)
    lab.kube.stuck.clear()
    lab.restore()
    assert lab.world() == before
    assert lab.state_files() == []


def test_a_node_changed_meanwhile_is_patched_again_and_the_other_change_stays(lab):
    before = lab.world()
    someone = {"key": "maintenance", "value": "soon", "effect": "PreferNoSchedule"}
    lab.kube.interfere("Node", "node1", None, lambda obj: obj["spec"]["taints"].append(dict(someone)))
    lab.enter()
    node_patches = lab.journal.find("kube", "patch", NODE)
    assert node_patches[0].error == "K8sConflict"  # the first patch carried the old resourceVersion
    assert lab.journal.find("cluster", "concurrent-change", NODE)
    lab.restore()
    taints = lab.world()["kube"]["nodes"]["node1"]["taints"]
    assert not has_our_taint(taints)
    assert sorted(taints, key=str) == sorted([LIFECYCLE, OTHER_TAINT, someone], key=str)
    after = lab.world()
    after["kube"]["nodes"]["node1"]["taints"] = before["kube"]["nodes"]["node1"]["taints"]
    assert after == before


# --------------------------------------------------------------------------- 4. check mode, second run


def test_check_mode_changes_nothing_and_writes_no_state_file(lab):
    before = lab.world()
    result = lab.enter(check_mode=True)
    assert result["changed"] is True
    assert result["changes"][0] == f"recorded the state in {lab.state_path}"
    assert [r["workload"] for r in result["restarts"]] == [MINIO, PG]
    assert result["running_jobs"] == [dict(RUNNING_JOB, status="running", runner_id=9)]  # not waited for
    assert any("restarts the pods of" in w for w in lab.warnings)
    assert lab.journal.changes(systems=(*SYSTEMS, "state")) == []
    assert lab.journal.find("clock", "sleep") == []
    assert lab.world() == before
    assert not os.path.exists(os.path.dirname(lab.state_path))  # no directory, state or lock file


def test_check_mode_restore_changes_nothing(lab):
    lab.enter()
    isolated, record = lab.world(), read_bytes(lab.state_path)
    mark = lab.journal.mark()
    result = lab.restore(check_mode=True)
    assert result["changed"] is True and result["changes"]
    assert lab.journal.changes(systems=(*SYSTEMS, "state"), start=mark) == []
    assert lab.world() == isolated
    assert read_bytes(lab.state_path) == record


def test_a_second_enter_changes_nothing(lab):
    lab.enter()
    isolated, record = lab.world(), read_bytes(lab.state_path)
    mark = lab.journal.mark()
    result = lab.enter()
    assert result["changed"] is False and result["already_isolated"] is True
    assert result["changes"] == []
    assert lab.journal.changes(systems=(*SYSTEMS, "state"), start=mark) == []
    assert lab.world() == isolated
    assert read_bytes(lab.state_path) == record


def test_restore_without_a_state_file_changes_and_creates_nothing(lab):
    before = lab.world()
    result = lab.restore()
    assert result["changed"] is False
    assert lab.journal.changes(systems=(*SYSTEMS, "state")) == []
    assert lab.world() == before
    assert not os.path.exists(os.path.dirname(lab.state_path))


def test_a_state_file_that_cannot_be_written_leaves_no_lock_file(lab, monkeypatch):
    """Nothing was recorded, so nothing may stay behind: not even the empty lock file."""
    worker = lab.worker(lab.enter_args())

    def cannot_write(_record):
        raise StateError(f"cannot write the runner isolation state file {lab.state_path}: disk full")

    monkeypatch.setattr(worker.state_file, "write", cannot_write)
    with pytest.raises(StateError, match="disk full"):
        worker.run()
    assert lab.state_files() == []
