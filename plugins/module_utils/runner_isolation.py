# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The logic of strata.ops.runner_isolation: dedicate a node to an experiment, and undo it.

``isolated`` checks everything it will touch first (the option values as gitlab-runner and
Kubernetes would; config.toml parses and uses the forms the runner reads; the node carries every
label the runner's node_selector will select; the node and the workloads exist; the runners
exist and the token works), then, under the state file's lock:

1. records what it will change in the 0600 state file (runners' paused flags and fields,
   config.toml bytes and the bytes it will write, the node's taints/labels/cordon, the
   workloads' tolerations and replicas) — once: a second ``isolated`` keeps the first record,
   so ``restored`` always returns to the state before the first run, also after a crash
   anywhere after this step;
2. pauses the runners (``PUT /runners/:id`` with ``paused`` only) and waits until they run no
   job (jobs are never cancelled);
3. edits config.toml (or the Helm chart's ConfigMap); gitlab-runner reloads it by itself and is
   never restarted. The node_selector is replaced, not merged (see runner_config);
4. labels the node, adds the toleration to the workloads and waits until they have rolled out,
   then taints (and cordons) the node — a workload that must stay on the node (a hostPath-bound
   MinIO) tolerates the taint before it exists, and none of its pods is still to be placed
   when the node is cordoned. A toleration changes the pod template, which restarts the pods:
   a workload with an ``exit_command`` is stopped through safe_shutdown's graceful stop first
   (exit command, scale to 0, watch until its pods are gone), then scaled back and watched
   until Ready; the replicas it is brought back to are in the state file while it is down.

``restored`` undoes it in the reverse order: config.toml byte-for-byte (refused, with the diff,
when the file is no longer what ``isolated`` wrote: an edit made meanwhile would be lost), the
node's taint (and cordon) BEFORE the workloads' tolerations, so a pod bound to the node stays
schedulable, then waits until the workloads are Ready again, then the labels, then the runners'
paused flags; then it removes the state file and its lock file. Without a state file there is
nothing to restore (changed=false) and nothing is created.

Kubernetes access goes through the collection's shared client (``k8s/``: ``K8sClient``,
typed ``K8sError``s), graceful stops through ``shutdown.py``; GitLab access through
``gitlab.py``; config.toml edits and checks through ``runner_config.py``; the state file
through ``state.py``.
"""

import base64
import binascii
import difflib
import hashlib
import os
import time

from ansible_collections.strata.ops.plugins.module_utils import gitlab as gl
from ansible_collections.strata.ops.plugins.module_utils import k8s
from ansible_collections.strata.ops.plugins.module_utils import runner_config as rc
from ansible_collections.strata.ops.plugins.module_utils import shutdown as sd
from ansible_collections.strata.ops.plugins.module_utils import state as st
from ansible_collections.strata.ops.plugins.module_utils.common import StrataError, utc_iso
from ansible_collections.strata.ops.plugins.module_utils.k8s.objects import (
    same_taint,
    taint_text,
    taints_restored,
    taints_with,
    template_tolerations,
    toleration_for,
    tolerations_restored,
    tolerations_with,
    workload_ref,
)

HELM_WARNING = (
    "config.toml was changed in the ConfigMap %s/%s (key %s) that the gitlab-runner Helm chart "
    "renders: a later 'helm upgrade' of that release writes the chart's values back and undoes the "
    "isolation; run the isolation again after it, or put these settings into the chart's values"
)
STATE_OPERATION = "strata.ops.runner_isolation"
# keys of the state file's config record that are not the target's
RECORDED_BYTES = ("content_b64", "sha256", "written_b64")
# options that change the runner config (node_tolerations follows the taint when there is one)
CONFIG_OPTIONS = ("concurrent", "node_selector", "cpu_request", "memory_request", "config_runner_names")


class IsolationError(StrataError):
    """The isolation cannot be done or undone as asked."""


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def _unb64(text):
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (AttributeError, UnicodeEncodeError, binascii.Error) as exc:
        raise st.StateError(f"the recorded runner config is not base64 ({exc})") from None


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def runner_paused(runner):
    if "paused" in runner and runner["paused"] is not None:
        return bool(runner["paused"])
    return not runner.get("active", True)  # GitLab before 14.8 reports only 'active'


def node_view(node):
    """What isolation reads of a Node (taints exactly as the API has them, timeAdded kept)."""
    meta, spec = node.get("metadata") or {}, node.get("spec") or {}
    return {
        "name": meta.get("name"),
        "taints": spec.get("taints") or [],
        "labels": meta.get("labels") or {},
        "unschedulable": bool(spec.get("unschedulable")),
        "resourceVersion": meta.get("resourceVersion"),
    }


def _ref(w):
    return workload_ref(w["kind"], w["name"], w["namespace"])


def config_edits(written, current, label):
    """A unified diff from the bytes ``isolated`` wrote to ``current`` (None: the file is gone)."""

    def lines(data):
        return [] if data is None else data.decode("utf-8", "replace").splitlines(True)

    return "".join(
        difflib.unified_diff(
            lines(written), lines(current), f"{label} (as state=isolated wrote it)", f"{label} (now)"
        )
    )


def selector_missing(selector, labels):
    """The entries of a node selector that ``labels`` do not carry."""
    return {k: v for k, v in (selector or {}).items() if (labels or {}).get(k) != v}


# numeric options: (name, smallest value, what it is)
LIMITS = (
    ("job_wait_timeout", 0, "seconds"),
    ("job_poll_interval", 0.01, "seconds"),
    ("gitlab_timeout", 1, "seconds"),
    ("gitlab_max_retries", 0, "retries"),
    ("gitlab_max_retry_wait", 0, "seconds"),
    ("rollout_timeout", 0, "seconds"),
    ("lock_timeout", 0, "seconds"),
)


def input_problems(p):
    """What is wrong with the module's parameters ``p`` (a list; empty when nothing), checked
    before anything is read or changed."""
    problems = [
        f"{name} must be {least} {unit} or more, got {p[name]}"
        for name, least, unit in LIMITS
        if p.get(name) is not None and p[name] < least
    ]
    graceful = []
    for w in p.get("workloads") or []:
        if w.get("exit_command") is not None and not w["exit_command"]:
            problems.append(
                f"exit_command of {_ref(w)} is empty: give the command as a list, or leave it out"
            )
        elif w.get("exit_command"):
            graceful.append(_ref(w))
            if (w.get("exit_timeout") or 0) < 1:
                problems.append(f"exit_timeout of {_ref(w)} must be 1 second or more")
    if graceful and p.get("rollout_timeout", 1) < 1:
        problems.append(
            "rollout_timeout must be 1 second or more when a workload has an exit_command "
            f"({', '.join(graceful)}): its graceful stop waits until its pods are gone, and then until it "
            "is Ready again"
        )
    if p.get("state") != "isolated":
        return problems
    if p.get("runners") and not p.get("gitlab_url"):
        problems.append("runners needs gitlab_url: the GitLab whose runners to pause")
    problems.extend(
        rc.settings_problems(
            p.get("concurrent"), p.get("node_selector"), p.get("cpu_request"), p.get("memory_request")
        )
    )
    # a taint's key and value follow the label rules (validateNodeTaints in Kubernetes)
    taint = p.get("taint") or {}
    for part, check in (("key", rc.label_key_problem), ("value", rc.label_value_problem)):
        problem = check(taint.get(part) or "")
        if problem:
            problems.append(f"taint.{part} {taint.get(part)!r} {problem} ({rc.LABEL_RULE})")
    problems.extend(rc.labels_problems("node_labels", p.get("node_labels") or {}))
    return problems


RECORD_SHAPE = {
    "settings": dict,
    "runners": list,
    "workloads": list,
}
SETTINGS_SHAPE = {"taint": (dict, type(None)), "node_labels": dict, "cordon": bool, "config": dict}


def record_problems(recorded):
    """What makes a state file unusable for ``restored`` (a list; empty when it is usable)."""
    problems = []
    if recorded.get("operation") != STATE_OPERATION:
        return [f"it is not a runner isolation state file (operation {recorded.get('operation')!r})"]
    for key, kind in RECORD_SHAPE.items():
        if not isinstance(recorded.get(key), kind):
            problems.append(f"{key!r} is missing or not a {kind.__name__}")
    settings = recorded.get("settings") if isinstance(recorded.get("settings"), dict) else {}
    for key, kind in SETTINGS_SHAPE.items():
        if not isinstance(settings.get(key), kind):
            problems.append(f"settings.{key} is missing or has the wrong type")
    for runner in recorded.get("runners") or []:
        if not (isinstance(runner, dict) and "id" in runner and isinstance(runner.get("paused"), bool)):
            problems.append("a runner entry lacks its id or paused flag")
    for w in recorded.get("workloads") or []:
        if not (
            isinstance(w, dict) and all(isinstance(w.get(k), str) for k in ("kind", "namespace", "name"))
        ):
            problems.append("a workload entry lacks its kind, namespace or name")
    node = recorded.get("node")
    if node is not None and not (
        isinstance(node, dict)
        and isinstance(node.get("name"), str)
        and isinstance(node.get("taints"), list)
        and isinstance(node.get("labels"), dict)
        and settings.get("taint")
    ):
        problems.append("the node record lacks its name, taints, labels or the taint setting")
    config = recorded.get("config")
    if config is not None and not (
        isinstance(config, dict) and config.get("mode") in ("file", "configmap") and "content_b64" in config
    ):
        problems.append("the runner config record lacks its mode or content")
    return problems


# --- the operation ---------------------------------------------------------------------------
class RunnerIsolation:
    """One run of strata.ops.runner_isolation. ``kube`` makes the Kubernetes client when first
    needed (restore needs only what was recorded); ``gitlab`` is a GitLab client (default: one
    from the parameters, when first needed); ``run_command`` runs workloads' exit commands;
    ``warn`` shows a warning at once (it also lands in ``warnings``)."""

    def __init__(
        self,
        params,
        check_mode,
        *,
        diff=False,
        kube=None,
        gitlab=None,
        run_command=None,
        warn=None,
        sleep=time.sleep,
    ):
        self.p = params
        self.check_mode = check_mode
        self.want_diff = diff
        self.run_command = run_command
        self.warn_now = warn
        self.sleep = sleep
        self.state_file = st.StateFile(self.p["state_path"], kind="runner isolation state")
        self._gitlab = gitlab
        self._kube_factory = kube
        self._kube = None
        self._gitlab_url = self.p["gitlab_url"]  # restored falls back to the recorded one
        self.recorded = False  # the state file holds a record (after this run's first step)
        self.changes = []  # human-readable list of what changed (or would)
        self.warnings = []  # also given to module.warn at once, so a failure result shows them
        self.restarts = []  # workloads whose pods this run restarts (or would, in check mode)
        self.config_edits = None  # the diff of an edit made to the runner config while isolated
        self.graceful_stop = None  # what safe_shutdown reported when a graceful stop or start failed
        self.diff = {"before": {}, "after": {}}

    # lazily built clients: restore needs only what was recorded
    @property
    def gitlab(self):
        if self._gitlab is None:
            p = self.p
            self._gitlab = gl.GitLabClient(
                self._gitlab_url,
                p["gitlab_token"],
                timeout=p["gitlab_timeout"],
                validate_certs=p["validate_certs"],
                max_retries=p["gitlab_max_retries"],
                max_retry_wait=p["gitlab_max_retry_wait"],
            )
        return self._gitlab

    @property
    def kube(self):
        if self._kube is None:
            self._kube = self._kube_factory()
        return self._kube

    def _changed(self, what):
        self.changes.append(what)

    def _warn(self, msg):
        if msg not in self.warnings:
            self.warnings.append(msg)
            if self.warn_now:
                self.warn_now(msg)

    def run(self):
        """The module's result (with the diff of the runner config in diff mode). A failure
        carries what the run had done (``failure_details``)."""
        try:
            problems = input_problems(self.p)
            if problems:
                raise IsolationError("nothing was changed: " + "; ".join(problems))
            result = self.isolated() if self.p["state"] == "isolated" else self.restored()
        except StrataError as exc:
            exc.details.update(self.failure_details())
            raise
        result["restarts"] = self.restarts
        if self.config_edits is not None:
            result["config_edits"] = self.config_edits
        if self.want_diff and (self.diff["before"] or self.diff["after"]):
            result["diff"] = self.diff
        return result

    def failure_details(self):
        """What a failed run had done, for the failure result."""
        details = {"changes": self.changes, "state_path": self.state_file.path, "restarts": self.restarts}
        if self.config_edits is not None:
            details["config_edits"] = self.config_edits
        if self.graceful_stop is not None:
            details["graceful_stop"] = self.graceful_stop
        if self.recorded:
            details["restore_hint"] = (
                f"the state before the isolation is recorded in {self.state_file.path}: "
                "state=restored puts it back"
            )
        return details

    # --- inputs ---------------------------------------------------------------------------
    def _taint(self):
        taint = dict(self.p["taint"] or {})
        return {
            "key": taint["key"],
            "value": taint.get("value") or "",
            "effect": taint.get("effect") or "NoSchedule",
        }

    def _settings(self, target):
        """What this run applies; stored in the state file and compared on a second run. The
        runner config's node_selector and node_tolerations follow the node, when there is a
        runner config."""
        p = self.p
        taint = self._taint() if p["node"] else None
        selector = p["node_selector"]
        if selector is None and p["node"] and target:
            selector = {"kubernetes.io/hostname": p["node"]}
        tolerations = None
        if taint and target and p["config_tolerate_taint"]:
            tolerations = {rc.toleration_key(taint["key"], taint["value"]): taint["effect"]}
        return {
            "runners": sorted(set(p["runners"] or [])),
            "node": p["node"],
            "taint": taint,
            "node_labels": dict(p["node_labels"] or {}),
            "cordon": bool(p["cordon"]),
            "workloads": [
                {
                    "kind": w["kind"],
                    "namespace": w["namespace"],
                    "name": w["name"],
                    "exit_command": w.get("exit_command") or None,
                    "exit_timeout": w.get("exit_timeout"),
                }
                for w in p["workloads"] or []
            ],
            "config": {
                "concurrent": p["concurrent"],
                "node_selector": selector or None,
                "node_tolerations": tolerations,
                "cpu_request": p["cpu_request"],
                "memory_request": p["memory_request"],
                "runner_names": p["config_runner_names"] or None,
            },
        }

    def _config_target(self):
        p = self.p
        if p["config_path"]:
            return {"mode": "file", "path": os.path.abspath(p["config_path"])}
        if p["config_configmap"]:
            cm = p["config_configmap"]
            return {"mode": "configmap", "namespace": cm["namespace"], "name": cm["name"], "key": cm["key"]}
        return None

    def _read_config(self, target):
        """(bytes or None when absent, ConfigMap resourceVersion or None)."""
        if target["mode"] == "file":
            try:
                with open(target["path"], "rb") as handle:
                    return handle.read(), None
            except OSError as exc:
                raise IsolationError(f"cannot read the runner config {target['path']}: {exc}") from None
        obj = self.kube.get("ConfigMap", target["name"], target["namespace"])
        value = (obj.get("data") or {}).get(target["key"])
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        return (None if value is None else value.encode("utf-8")), rv

    def _write_config(self, target, data, resource_version=None):
        if target["mode"] == "file":
            st.atomic_write_bytes(target["path"], data, mode=0o600)
            return
        body = {"data": {target["key"]: data.decode("utf-8")}}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        self.kube.patch("ConfigMap", target["name"], body, target["namespace"], patch_type="merge")

    @staticmethod
    def _config_label(target):
        if target["mode"] == "file":
            return target["path"]
        return f"ConfigMap {target['namespace']}/{target['name']} key {target['key']}"

    # --- Kubernetes changes (read, compute, patch with the read resourceVersion; retried on 409)
    def _patch_node(self, name, compute, missing_ok=False):
        """``compute(node_view)`` -> (merge patch of the Node without resourceVersion, list of
        what it does); patches when that list is not empty and records it in ``changes``."""

        def attempt():
            try:
                node = node_view(self.kube.get_node(name))
            except k8s.K8sNotFound:
                if not missing_ok:
                    raise
                self._warn(f"node {name} no longer exists: its taint, labels and cordon went with it")
                return []
            patch, done = compute(node)
            if done and not self.check_mode:
                patch.setdefault("metadata", {})["resourceVersion"] = node["resourceVersion"]
                self.kube.patch("Node", name, patch, patch_type="merge")
            return done

        for what in k8s.retry_on_conflict(attempt):
            self._changed(what)

    def _patch_tolerations(self, w, compute):
        """``compute(current tolerations)`` -> the new ones; patches the pod template when they
        differ (which rolls the workload's pods). True when it did (or would)."""

        def attempt():
            obj = self.kube.get(w["kind"], w["name"], w["namespace"])
            current = template_tolerations(obj)
            new = compute(current)
            if new == current:
                return False
            if not self.check_mode:
                patch = {
                    "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                    "spec": {"template": {"spec": {"tolerations": new}}},
                }
                self.kube.patch(w["kind"], w["name"], patch, w["namespace"], patch_type="merge")
            return True

        return k8s.retry_on_conflict(attempt)

    def _retolerate(self, w, compute, what, recorded, missing_ok=False):
        """Change the tolerations of workload ``w`` by ``compute``. That restarts its pods: a
        workload with an exit_command is stopped gracefully first (safe_shutdown: exit command,
        scale to 0, watch until its pods are gone) and brought back afterwards; the replicas to
        bring it back to are in the state file (``stopped``) while it is down, so a run killed
        in between brings it back too. Returns the workloads to wait for (none, or ``w``)."""
        ref = _ref(w)
        try:
            obj = self.kube.get(w["kind"], w["name"], w["namespace"])
        except k8s.K8sNotFound:
            if not missing_ok:
                raise
            self._warn(f"{ref} no longer exists")
            return []
        current = template_tolerations(obj)
        replicas = sd.spec_replicas(obj)
        stopped = recorded.setdefault("stopped", {})
        graceful = bool(w.get("exit_command"))
        if compute(current) != current:
            if replicas:
                how = (
                    f"graceful: exit command, scaled to 0 until its pods are gone, then back to {replicas}"
                    if graceful
                    else f"the changed pod template rolls its {replicas} pod(s) (no exit command given)"
                )
                self.restarts.append({"workload": ref, "replicas": replicas, "how": how})
            if graceful and replicas and not self.check_mode:
                stopped[ref] = replicas
                self.state_file.write(recorded)  # before the stop: a killed run brings it back
                self._graceful("stopped", w, replicas)
            if self._patch_tolerations(w, compute):
                self._changed(f"{what} {ref}")
        if ref in stopped and not self.check_mode:
            self._graceful("running", w, stopped[ref])
            del stopped[ref]
            self.state_file.write(recorded)
        return [w]

    def _graceful(self, state, w, replicas):
        """safe_shutdown's stop (exit command, scale to 0, watch until no pod is left) or start
        (scale to ``replicas``, watch until they are Ready) of workload ``w``."""
        ref = _ref(w)
        params = {
            "state": state,
            "kind": w["kind"],
            "name": w["name"],
            "namespace": w["namespace"],
            "replicas": replicas,
            "timeout": self.p["rollout_timeout"],
            "exit_command": w.get("exit_command"),
            "exit_timeout": w.get("exit_timeout"),
            "exit_failure_ok": False,
            "exit_in": "host",
        }
        worker = sd.SafeShutdown(self.kube, params, run_command=self.run_command)
        try:
            result = worker.run()
        except k8s.K8sError as exc:
            self.graceful_stop = dict(exc.details, msg=str(exc))
            action = "stop" if state == "stopped" else "start"
            raise IsolationError(
                f"the graceful {action} of {ref} failed: {exc}. The state file keeps what to bring back: "
                f"run state={self.p['state']} again once that is fixed, or state=restored"
            ) from None
        finally:
            for text in worker.warnings:  # safe_shutdown's own (how the exit waits)
                self._warn(text)
        if state == "stopped":
            exit_command = " ".join(w["exit_command"])
            pods_gone = len(result.get("pods") or [])
            self._changed(
                f"stopped {ref} through its exit command ({exit_command}, "
                f"scaled from {replicas} to 0, {pods_gone} pod(s) gone)"
            )
        elif result.get("changed"):  # not when its stop failed before the scale
            self._changed(f"scaled {ref} back to {replicas} (Ready)")

    def _wait_ready(self, workloads, after):
        """Wait (watch, no polling) until every workload has all its replicas updated and ready:
        on isolation so that no pod of theirs is still to be placed when the node is tainted
        and cordoned, on restore so that it returns with the workloads serving again."""
        timeout = self.p["rollout_timeout"]
        if self.check_mode or not timeout:
            return
        for w in workloads:
            try:
                self.kube.watch_until(
                    w["kind"],
                    k8s.named_ready([w["name"]], k8s.workload_is_ready),
                    w["namespace"],
                    field_selector="metadata.name=" + w["name"],
                    timeout=timeout,
                    description=f"{_ref(w)} to be Ready {after}",
                )
            except k8s.K8sTimeout as exc:
                advice = (
                    "The node is not tainted or cordoned yet; fix the workload and run again, or "
                    "state=restored to undo"
                    if self.p["state"] == "isolated"
                    else "Fix the workload and run state=restored again: it finishes the rest"
                )
                raise IsolationError(
                    f"{_ref(w)} was not Ready within {timeout} s (rollout_timeout) {after}: {exc}. {advice}"
                ) from None

    # --- isolated ---------------------------------------------------------------------------
    def isolated(self):
        target = self._config_target()
        settings = self._isolation_settings(target)
        found = self._read_before_isolating(target, settings)

        with self.state_file.lock(timeout=self.p["lock_timeout"], create=not self.check_mode):
            recorded = self.state_file.read()
            already = recorded is not None
            if already:
                self._check_same_settings(recorded, settings, target)
                self.recorded = True
            else:
                recorded = self._isolation_record(settings, target, found)
                if not self.check_mode:
                    self.state_file.write(recorded)  # before the first change
                    self.recorded = True
                self._changed(f"recorded the state in {self.state_file.path}")
            jobs = self._isolate(settings, target, recorded)

        if already and self.changes:
            self._warn(
                f"the isolation was already recorded ({recorded.get('recorded_at')}); the first record was "
                "kept and the missing changes were made again"
            )
        if self.check_mode and self.restarts:
            self._warn(self._restart_warning("adding the toleration of the taint"))
        return {
            "changed": bool(self.changes),
            "state": "isolated",
            "already_isolated": already,
            "recorded_at": recorded.get("recorded_at"),
            "state_path": self.state_file.path,
            "changes": self.changes,
            "running_jobs": jobs,
            "runners": [{"id": r["id"], "paused_before": r["paused"]} for r in recorded["runners"]],
        }

    def _isolation_settings(self, target):
        """This run's settings; refused when the options do not go together."""
        given = [k for k in CONFIG_OPTIONS if self.p[k] is not None]
        if given and not target:
            raise IsolationError(
                f"{', '.join(given)} change the runner config, but neither config_path nor config_configmap "
                "says where it is"
            )
        settings = self._settings(target)
        if settings["workloads"] and not settings["node"]:
            raise IsolationError("workloads need node (their toleration is that of the node's taint)")
        return settings

    def _read_before_isolating(self, target, settings):
        """Step 0: read and check everything before any change (and before the state file).
        Returns what step 1 records: config bytes and the bytes step 3 writes, the node's view,
        the workloads (with their tolerations and replicas) and the runners."""
        wanted = settings["config"]
        config_bytes = written = None
        if target:
            config_bytes = self._read_config(target)[0]
            if config_bytes is None:
                raise IsolationError(f"{self._config_label(target)} does not exist")
            # parse + validate + dry edit: what step 3 writes (unless the file changes meanwhile)
            written = rc.edit(config_bytes, source=self._config_label(target), **wanted)[0].encode("utf-8")
        node = node_view(self.kube.get_node(settings["node"])) if settings["node"] else None
        if node and wanted["node_selector"]:
            self._check_selector(node, settings)
        workloads = []
        for w in settings["workloads"]:
            obj = self.kube.get(w["kind"], w["name"], w["namespace"])
            workloads.append(dict(w, tolerations=template_tolerations(obj), replicas=sd.spec_replicas(obj)))
        runners = [self.gitlab.get_runner(rid) for rid in settings["runners"]]
        return {
            "config_bytes": config_bytes,
            "written": written,
            "node": node,
            "workloads": workloads,
            "runners": runners,
        }

    def _isolation_record(self, settings, target, found):
        """Step 1's record of what the isolation changes (``found`` by step 0), for the state file."""
        runners, node = found["runners"], found["node"]
        recorded = {
            "operation": STATE_OPERATION,
            "format": st.FORMAT_VERSION,
            "recorded_at": utc_iso(),
            "settings": settings,
            "gitlab_url": self._gitlab_url if runners else None,
            "runners": [{"id": r.get("id"), "paused": runner_paused(r), "fields": r} for r in runners],
            "config": None,
            "node": None,
            "workloads": found["workloads"],
            "stopped": {},
        }
        if target:
            recorded["config"] = dict(
                target,
                content_b64=_b64(found["config_bytes"]),
                sha256=_sha256(found["config_bytes"]),
                written_b64=_b64(found["written"]),
            )
        if node:
            recorded["node"] = {k: node[k] for k in ("name", "taints", "labels", "unschedulable")}
        return recorded

    def _isolate(self, settings, target, recorded):
        """Steps 2-4, in this order: pause the runners and wait for their jobs, edit the runner
        config, label the node, tolerate the taint in the workloads (rolled out), taint the node.
        Returns the running jobs left."""
        self._pause_runners(settings["runners"])
        jobs = self._wait_for_jobs(settings["runners"])
        if target:
            self._edit_config(target, settings["config"])
        if settings["node"]:
            self._label_node(settings)
        self._wait_ready(self._tolerate_workloads(settings, recorded), "with the toleration")
        if settings["node"]:
            self._taint_node(settings)
        return jobs

    def _restart_warning(self, why):
        workloads = "; ".join(f"{r['workload']} ({r['how']})" for r in self.restarts)
        return f"{why} restarts the pods of: {workloads}"

    def _check_selector(self, node, settings):
        """The runner's job pods go only to a node with every label of the selector: refuse
        before any change when the node will not carry them (node_labels included)."""
        labels = dict(node["labels"], **settings["node_labels"])
        missing = selector_missing(settings["config"]["node_selector"], labels)
        if missing:
            absent = ", ".join(f"{key}={value}" for key, value in sorted(missing.items()))
            raise IsolationError(
                f"node {node['name']} does not carry {absent}, which the runner's node_selector would "
                "select: its job pods would stay Pending. Add the labels with node_labels, or set "
                "node_selector to labels the node has. Nothing was changed"
            )

    def _label_node(self, settings):
        self._patch_node(settings["node"], lambda n: self._label_patch(n, settings))

    def _tolerate_workloads(self, settings, recorded):
        tol = toleration_for(settings["taint"])
        waits = []
        for w in settings["workloads"]:
            waits += self._retolerate(
                w, lambda current: tolerations_with(current, tol), "added the toleration to", recorded
            )
        return waits

    def _taint_node(self, settings):
        self._patch_node(settings["node"], lambda n: self._taint_patch(n, settings))

    def _check_same_settings(self, recorded, settings, target):
        if recorded.get("operation") != STATE_OPERATION:
            raise IsolationError(f"{self.state_file.path} is not a runner isolation state file")
        before = dict(recorded.get("settings") or {})
        differ = sorted(k for k in settings if before.get(k) != settings[k])
        rec_target = {k: v for k, v in (recorded.get("config") or {}).items() if k not in RECORDED_BYTES}
        if (rec_target or None) != target:
            differ.append("config target")
        if differ:
            raise IsolationError(
                f"already isolated since {recorded.get('recorded_at')} with other settings "
                f"({', '.join(differ)} differ): run state=restored first, then isolate with the new settings"
            )

    def _pause_runners(self, ids):
        for rid in ids:
            runner = self.gitlab.get_runner(rid)
            if runner_paused(runner):
                continue
            if not self.check_mode:
                self.gitlab.set_paused(rid, True)
            self._changed(f"paused runner {rid}")

    def _wait_for_jobs(self, ids):
        """Running jobs left on the runners (empty after a successful wait)."""
        if not ids:
            return []
        deadline = time.monotonic() + self.p["job_wait_timeout"]
        while True:
            running = []
            for rid in ids:
                for job in self.gitlab.running_jobs(rid):
                    running.append(dict(job, runner_id=rid))
            if not running or self.check_mode:
                return running
            if time.monotonic() >= deadline:
                listing = ", ".join(f"job {j['id']} on runner {j['runner_id']}" for j in running)
                job_wait_timeout = self.p["job_wait_timeout"]
                raise IsolationError(
                    f"the paused runners still run {len(running)} job(s) after {job_wait_timeout} s "
                    f"({listing}): jobs are never cancelled; wait for them or cancel them in GitLab, "
                    "then run again (the runners stay paused; state=restored undoes everything)"
                )
            self.sleep(self.p["job_poll_interval"])

    def _edit_config(self, target, wanted):
        current, rv = self._read_config(target)
        if current is None:
            raise IsolationError(f"{self._config_label(target)} does not exist")
        new_text = rc.edit(current, source=self._config_label(target), **wanted)[0]
        new = new_text.encode("utf-8")
        if new == current:
            return
        if not self.check_mode:
            self._write_config(target, new, rv)
        self.diff["before"]["config"] = current.decode("utf-8")
        self.diff["after"]["config"] = new_text
        self._changed(f"edited {self._config_label(target)}")
        if target["mode"] == "configmap":
            self._warn(HELM_WARNING % (target["namespace"], target["name"], target["key"]))

    @staticmethod
    def _label_patch(node, settings):
        labels = {k: v for k, v in settings["node_labels"].items() if node["labels"].get(k) != v}
        if not labels:
            return {}, []
        return {"metadata": {"labels": labels}}, [
            f"labelled node {node['name']} ({', '.join(sorted(labels))})"
        ]

    @staticmethod
    def _taint_patch(node, settings):
        taint = settings["taint"]
        spec, done = {}, []
        new_taints = taints_with(node["taints"], taint)
        if [t for t in node["taints"] if same_taint(t, taint)] != [
            t for t in new_taints if same_taint(t, taint)
        ]:
            spec["taints"] = new_taints
            done.append(f"tainted node {node['name']} ({taint_text(taint)})")
        if settings["cordon"] and not node["unschedulable"]:
            spec["unschedulable"] = True
            done.append(f"cordoned node {node['name']}")
        return {"spec": spec}, done

    # --- restored ---------------------------------------------------------------------------
    def restored(self):
        nothing = {
            "changed": False,
            "state": "restored",
            "state_path": self.state_file.path,
            "changes": [],
            "msg": f"no isolation recorded in {self.state_file.path}: nothing to restore",
        }
        if not self.state_file.exists():
            return nothing  # and nothing created: no directory, no lock file
        with self.state_file.lock(timeout=self.p["lock_timeout"], create=not self.check_mode):
            recorded = self.state_file.read()
            if recorded is None:  # another run restored it meanwhile
                return nothing
            problems = record_problems(recorded)
            if problems:
                raise st.StateError(
                    f"the runner isolation state file {self.state_file.path} cannot be used: "
                    f"{'; '.join(problems)}. It was edited by hand or written by another program; "
                    "nothing was restored"
                )
            self.recorded = True
            self._gitlab_url = self._gitlab_url or recorded.get("gitlab_url")
            settings = recorded["settings"]
            rec_node = recorded.get("node")
            if recorded.get("config"):
                self._restore_config(recorded["config"])
            # the node's taint (and cordon) first: a pod bound to the node stays schedulable
            # while its workload rolls back to its old tolerations
            if rec_node:
                self._patch_node(
                    rec_node["name"], lambda n: self._untaint_patch(n, rec_node, settings), missing_ok=True
                )
            self._wait_ready(self._untolerate_workloads(recorded), "with its tolerations restored")
            if rec_node:
                self._patch_node(
                    rec_node["name"], lambda n: self._unlabel_patch(n, rec_node, settings), missing_ok=True
                )
            for runner in recorded["runners"]:
                self._restore_runner(runner)
            if not self.check_mode:
                self.state_file.remove()
            self._changed(f"removed the state file {self.state_file.path}")
        if self.check_mode and self.restarts:
            self._warn(self._restart_warning("removing the toleration of the taint"))
        return {
            "changed": True,
            "state": "restored",
            "state_path": self.state_file.path,
            "recorded_at": recorded.get("recorded_at"),
            "changes": self.changes,
            "runners": [{"id": r["id"], "paused": r["paused"]} for r in recorded["runners"]],
        }

    def _untolerate_workloads(self, recorded):
        settings = recorded["settings"]
        tol = toleration_for(settings["taint"]) if recorded.get("node") else None
        graceful = {_ref(w): w for w in settings.get("workloads") or []}  # exit_command, exit_timeout
        waits = []
        for rec in recorded["workloads"]:
            w = dict(graceful.get(_ref(rec)) or {}, **rec)
            waits += self._retolerate(
                w,
                lambda current, rec=rec: tolerations_restored(current, rec.get("tolerations"), tol),
                "removed the toleration from",
                recorded,
                missing_ok=True,
            )
        return waits

    def _restore_config(self, rec):
        target = {k: v for k, v in rec.items() if k not in RECORDED_BYTES}
        original = _unb64(rec["content_b64"])
        current, rv = self._read_config(target)
        if current == original:
            return
        label = self._config_label(target)
        written = _unb64(rec["written_b64"]) if rec.get("written_b64") else None
        if written is not None and current != written:
            self.config_edits = config_edits(written, current, label)
            if not self.p["discard_config_edits"]:
                raise IsolationError(
                    f"{label} was changed after state=isolated wrote it, and restoring the recorded bytes "
                    f"would lose that change:\n{self.config_edits}Nothing was restored. "
                    "Revert the change (or note it), run state=restored, then make the change again "
                    "on the restored file; or set discard_config_edits=true to restore the recorded bytes "
                    "and drop it"
                )
            self._warn(f"discarded this change made to {label} while isolated:\n{self.config_edits}")
        if not self.check_mode:
            self._write_config(target, original, rv)
        self.diff["before"]["config"] = None if current is None else current.decode("utf-8", "replace")
        self.diff["after"]["config"] = original.decode("utf-8", "replace")
        self._changed(f"restored {label} byte-for-byte")

    @staticmethod
    def _untaint_patch(node, rec, settings):
        taint = settings["taint"]
        spec, done = {}, []
        new_taints = taints_restored(node["taints"], rec["taints"], taint)
        if new_taints != node["taints"]:
            spec["taints"] = new_taints
            done.append(f"removed the taint {taint_text(taint)} from node {node['name']}")
        if settings["cordon"] and node["unschedulable"] != rec["unschedulable"]:
            spec["unschedulable"] = rec["unschedulable"] or None
            done.append(f"uncordoned node {node['name']}")
        return {"spec": spec}, done

    @staticmethod
    def _unlabel_patch(node, rec, settings):
        labels = {}
        for key in settings["node_labels"]:
            before = rec["labels"].get(key)
            if node["labels"].get(key) != before:
                labels[key] = before  # None removes it
        if not labels:
            return {}, []
        return {"metadata": {"labels": labels}}, [
            f"restored the labels {', '.join(sorted(labels))} of node {node['name']}"
        ]

    def _restore_runner(self, rec):
        try:
            runner = self.gitlab.get_runner(rec["id"])
        except gl.GitLabNotFoundError:
            self._warn(f"runner {rec['id']} no longer exists")
            return
        if runner_paused(runner) == rec["paused"]:
            return
        if not self.check_mode:
            self.gitlab.set_paused(rec["id"], rec["paused"])
        action = "paused" if rec["paused"] else "unpaused"
        self._changed(f"{action} runner {rec['id']}")
