# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Entering an experiment (state=isolated): record everything first, then pause the runners, edit
the runner config, label the node, tolerate the workloads and only then taint the node."""

import time

from ansible_collections.strata.ops.plugins.module_utils import runner_config as rc
from ansible_collections.strata.ops.plugins.module_utils import state as st
from ansible_collections.strata.ops.plugins.module_utils.common import utc_iso
from ansible_collections.strata.ops.plugins.module_utils.k8s.objects import (
    same_taint,
    spec_replicas,
    taint_text,
    taints_with,
    template_tolerations,
    toleration_for,
    tolerations_with,
)
from ansible_collections.strata.ops.plugins.module_utils.runner_isolation import (
    CONFIG_OPTIONS,
    HELM_WARNING,
    RECORDED_BYTES,
    STATE_OPERATION,
    IsolationError,
)
from ansible_collections.strata.ops.plugins.module_utils.runner_isolation.checks import (
    b64_of,
    node_view,
    runner_paused,
    selector_missing,
    sha256_of,
)


class Entering:
    """state=isolated, for RunnerIsolation (which provides the clients, settings and patches)."""

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
                    try:
                        self.state_file.write(recorded)  # before the first change
                    except BaseException:
                        self.state_file.remove_lock()  # nothing recorded: leave no lock file behind
                        raise
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
            workloads.append(dict(w, tolerations=template_tolerations(obj), replicas=spec_replicas(obj)))
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
                content_b64=b64_of(found["config_bytes"]),
                sha256=sha256_of(found["config_bytes"]),
                written_b64=b64_of(found["written"]),
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
