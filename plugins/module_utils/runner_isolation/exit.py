# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Leaving an experiment (state=restored): put back exactly what was recorded, the node's taint
before the workloads' tolerations, then the config and the runners."""

from ansible_collections.strata.ops.plugins.module_utils import gitlab as gl
from ansible_collections.strata.ops.plugins.module_utils import state as st
from ansible_collections.strata.ops.plugins.module_utils.k8s.objects import (
    taint_text,
    taints_restored,
    toleration_for,
    tolerations_restored,
)
from ansible_collections.strata.ops.plugins.module_utils.runner_isolation import (
    RECORDED_BYTES,
    IsolationError,
)
from ansible_collections.strata.ops.plugins.module_utils.runner_isolation.checks import (
    bytes_of_b64,
    config_edits,
    record_problems,
    runner_paused,
    workload_text,
)


class Restoring:
    """state=restored, for RunnerIsolation (which provides the clients, settings and patches)."""

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
        graceful = {
            workload_text(w): w for w in settings.get("workloads") or []
        }  # exit_command, exit_timeout
        waits = []
        for rec in recorded["workloads"]:
            w = dict(graceful.get(workload_text(rec)) or {}, **rec)
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
        original = bytes_of_b64(rec["content_b64"])
        current, rv = self._read_config(target)
        if current == original:
            return
        label = self._config_label(target)
        written = bytes_of_b64(rec["written_b64"]) if rec.get("written_b64") else None
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
