# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""RunnerIsolation: one run of strata.ops.runner_isolation (enter: enter.py, exit: exit.py) and
what both use: the clients, the settings, the runner config, patches, graceful stops, waits."""

import os
import time

from ansible_collections.strata.ops.plugins.module_utils import gitlab as gl
from ansible_collections.strata.ops.plugins.module_utils import k8s
from ansible_collections.strata.ops.plugins.module_utils import runner_config as rc
from ansible_collections.strata.ops.plugins.module_utils import state as st
from ansible_collections.strata.ops.plugins.module_utils.common import StrataError
from ansible_collections.strata.ops.plugins.module_utils.k8s.objects import (
    spec_replicas,
    template_tolerations,
)
from ansible_collections.strata.ops.plugins.module_utils.runner_isolation import (
    IsolationError,
)
from ansible_collections.strata.ops.plugins.module_utils.runner_isolation.checks import (
    input_problems,
    node_view,
    workload_text,
)
from ansible_collections.strata.ops.plugins.module_utils.runner_isolation.enter import Entering
from ansible_collections.strata.ops.plugins.module_utils.runner_isolation.exit import Restoring
from ansible_collections.strata.ops.plugins.module_utils.shutdown.worker import SafeShutdown


class RunnerIsolation(Entering, Restoring):
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
        ref = workload_text(w)
        try:
            obj = self.kube.get(w["kind"], w["name"], w["namespace"])
        except k8s.K8sNotFound:
            if not missing_ok:
                raise
            self._warn(f"{ref} no longer exists")
            return []
        current = template_tolerations(obj)
        replicas = spec_replicas(obj)
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
        ref = workload_text(w)
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
        worker = SafeShutdown(self.kube, params, run_command=self.run_command)
        try:
            result = worker.run()
        except StrataError as exc:  # the API's or the exit command's
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
                    description=f"{workload_text(w)} to be Ready {after}",
                    summarize=lambda items: [k8s.rollout_brief(i) for i in items],
                )
            except k8s.K8sTimeout as exc:
                advice = (
                    "The node is not tainted or cordoned yet; fix the workload and run again, or "
                    "state=restored to undo"
                    if self.p["state"] == "isolated"
                    else "Fix the workload and run state=restored again: it finishes the rest"
                )
                raise IsolationError(
                    f"{workload_text(w)} was not Ready within {timeout} s (rollout_timeout) {after}: {exc}. "
                    f"{advice}"
                ) from None
