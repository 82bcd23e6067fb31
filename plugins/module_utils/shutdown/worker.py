# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SafeShutdown: one state of strata.ops.safe_shutdown (stopped, running, exited; node_restarted
from node.py), and run(), what the module hands over to."""

import gc
import time

from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument, StrataError, utc_iso
from ansible_collections.strata.ops.plugins.module_utils.k8s import (
    K8sError,
    K8sNotFound,
    K8sTimeout,
    K8sUnreachable,
    rollout_brief,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s.objects import (
    Ownership,
    meta_of,
    selector_string,
    spec_replicas,
    workload_ref,
)
from ansible_collections.strata.ops.plugins.module_utils.shutdown import (
    WORKLOAD_KINDS,
    ExitCommandFailed,
    ShutdownError,
)
from ansible_collections.strata.ops.plugins.module_utils.shutdown.exit import (
    agave_exit_plan,
    is_agave_exit,
    run_exit_command,
)
from ansible_collections.strata.ops.plugins.module_utils.shutdown.node import (
    NodeRestarts,
)
from ansible_collections.strata.ops.plugins.module_utils.shutdown.pods import (
    PodRef,
    PodTracker,
    describe_pods,
    named_workload_ready,
    pod_brief,
    ready_pods_predicate,
)


class SafeShutdown(NodeRestarts):
    """One state of strata.ops.safe_shutdown. ``params`` are the module's parameters;
    ``run_command`` is needed for exit_command, ``docker`` (a ctr.DockerAPI) is made from
    docker_host when not given."""

    def __init__(
        self, client, params, *, run_command=None, docker=None, check_mode=False, clock=time.monotonic
    ):
        self.client = client
        self.p = params
        self.run_command = run_command
        self.docker = docker
        self.check_mode = check_mode
        self.clock = clock
        self.start = clock()
        self.tracker = None
        self.warnings = []  # the module passes each to module.warn, on success and on failure

    # ---- lookups

    def get_workload(self, kind, name, namespace):
        """The workload; an unknown one fails with the workloads of that kind that do exist
        (and says so when the name exists as the other kind, or the namespace does not)."""
        try:
            return self.client.get(kind, name, namespace)
        except K8sNotFound:
            pass
        items, _rv = self.client.list(kind, namespace)
        existing = sorted(meta_of(i).get("name") for i in items)
        hint = ""
        for other in WORKLOAD_KINDS:
            if other == kind:
                continue
            try:
                self.client.get(other, name, namespace)
                hint = f" A {other} of that name exists there: set kind: {other}."
            except K8sNotFound:
                pass
        if not existing and not hint:
            try:
                self.client.get("Namespace", namespace)
            except K8sNotFound:
                ref = workload_ref(kind, name, namespace)
                raise K8sNotFound(
                    f"namespace {namespace!r} does not exist (looking for {ref}): check namespace",
                    kind="Namespace",
                    name=namespace,
                ) from None
        ref = workload_ref(kind, name, namespace)
        names = ", ".join(existing) or "none"
        raise K8sNotFound(
            f"{ref} does not exist. {kind}s in namespace {namespace}: {names}.{hint} Check name, kind and "
            f"namespace (kubectl get deployments,statefulsets -n {namespace}).",
            kind=kind,
            name=name,
            namespace=namespace,
            existing=existing,
        )

    def ownership(self, workload):
        meta = meta_of(workload)
        replicasets = []
        if workload.get("kind") == "Deployment":
            selector = selector_string((workload.get("spec") or {}).get("selector"))
            replicasets, _rv = self.client.list("ReplicaSet", meta.get("namespace"), label_selector=selector)
        return Ownership(workload, replicasets)

    def named_owners(self, entries):
        """Ownerships (PodRef for kind Pod) of protected / restartable entries; a named workload
        that does not exist fails, listing those that do."""
        found = []
        for entry in entries or []:
            kind = entry.get("kind") or "Deployment"
            namespace = entry.get("namespace") or self.p["namespace"]
            if kind == "Pod":
                found.append(PodRef(entry["name"], namespace))
            else:
                found.append(self.ownership(self.get_workload(kind, entry["name"], namespace)))
        return found

    def owned_pods(self, ownership):
        pods, _rv = self.client.list(
            "Pod", ownership.namespace, label_selector=selector_string(ownership.selector) or None
        )
        return ownership.pods(pods)

    def remaining(self, deadline):
        return max(1, int(deadline - self.clock() + 0.999))

    def _base(self, workload):
        meta = meta_of(workload)
        return {
            "changed": False,
            "state": self.p["state"],
            "kind": workload.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
        }

    # ---- the graceful exit (stopped, exited)

    def exit_plan(self):
        """How exit_command will run here: {argv, agave_version, wait} (see agave_exit_plan)."""
        argv = list(self.p.get("exit_command") or [])
        if self.p.get("exit_in") == "pod":
            raise ShutdownError(
                "exit_in: pod is not supported yet (it needs the pods/exec API of a real kubelet): run "
                "the exit command where the admin socket is, with this module's state=exited on the "
                "workload host (exit_in: host). Nothing was changed."
            )
        version_text = None
        if is_agave_exit(argv):
            try:
                rc, out, err = self.run_command([argv[0], "--version"], handle_exceptions=False)
                version_text = (out or "") if rc == 0 else f"rc {rc}: {(err or out or '').strip()}"
            except OSError as exc:
                version_text = f"{argv[0]}: {exc.strerror or exc}"
        plan = agave_exit_plan(argv, version_text)
        if plan.pop("warning", None):
            self.warnings.append("exit_command: " + plan["wait"])
        return plan

    def run_exit(self, plan, result, untouched, **details):
        """Run the planned exit command into result["exit_command"]; ExitCommandFailed (saying
        ``untouched``) when it failed and exit_failure_ok is not set."""
        outcome = run_exit_command(self.run_command, plan["argv"], self.p["exit_timeout"])
        outcome.update(agave_version=plan["agave_version"], wait=plan["wait"])
        result["exit_command"] = outcome
        result["changed"] = True
        if not outcome["ok"] and not self.p.get("exit_failure_ok"):
            command = " ".join(plan["argv"])
            raise ExitCommandFailed(
                f"the exit command {command} {outcome['error']} ({plan['wait']}). {untouched}. Fix the "
                "command (is the workload's admin socket where it expects it?), raise exit_timeout, or set "
                "exit_failure_ok: true to go on anyway",
                **dict(result, **details),
            )
        return outcome

    # ---- exited

    def exited(self):
        """Only the graceful exit, run here (where the admin socket is); no Kubernetes call."""
        plan = self.exit_plan()
        result = {"changed": True, "state": "exited", "exit_command": None}
        if self.check_mode:
            result["msg"] = f"check mode: would run {' '.join(plan['argv'])} here ({plan['wait']})"
            return result
        outcome = self.run_exit(plan, result, "Nothing else was done (this state scales nothing)")
        command = " ".join(plan["argv"])
        ended = f"rc {outcome['rc']}" if outcome["ok"] else outcome["error"]
        result["msg"] = (
            f"exit command {command} ran here ({plan['wait']}): {ended} after {outcome['elapsed']} s"
        )
        return result

    # ---- stopped

    def stopped(self):
        p = self.p
        kind, name, namespace = p["kind"], p["name"], p["namespace"]
        ref = workload_ref(kind, name, namespace)
        workload = self.get_workload(kind, name, namespace)
        before = spec_replicas(workload)
        own = self.ownership(workload)
        selector = selector_string(own.selector) or None
        tracker = self.tracker = PodTracker(own, clock=self.clock)
        pods, _rv = self.client.list("Pod", namespace, label_selector=selector)
        tracker.observe(pods)
        run_exit = bool(p.get("exit_command")) and before > 0
        plan = self.exit_plan() if run_exit else None
        result = self._base(workload)
        result.update(
            replicas_before=before,
            replicas_after=0,
            diff={"before": {"replicas": before}, "after": {"replicas": 0}},
            exit_command=None,
            scaled_at=None,
        )
        if self.check_mode:
            present = tracker.still_present()
            steps = []
            if run_exit:
                steps.append(f"run {' '.join(plan['argv'])} ({plan['wait']})")
            if before:
                steps.append(f"scale {ref} from {before} to 0")
            if present or before:
                steps.append(
                    f"wait up to {p['timeout']} s until its pods are gone ({describe_pods(present)})"
                )
            result.update(
                changed=before != 0 or run_exit,
                pods=tracker.pods(),
                msg="check mode: would " + ", then ".join(steps)
                if steps
                else f"{ref} is stopped: replicas 0 and no pod left",
            )
            return result
        if run_exit:
            self.run_exit(
                plan,
                result,
                f"{ref} was NOT scaled (replicas still {before}) and nothing else was touched",
                replicas_after=before,
                pods=tracker.pods(),
            )
        deadline = self.clock() + p["timeout"]
        if before != 0:
            self.client.scale(kind, name, namespace, 0)
            tracker.mark_scaled()
            result["scaled_at"] = utc_iso(time.time())
            result["changed"] = True
        try:
            watch = self.client.watch_until(
                "Pod",
                tracker,
                namespace,
                label_selector=selector,
                timeout=self.remaining(deadline),
                description=f"no pod of {ref} left",
                summarize=lambda items: [pod_brief(x)["name"] for x in own.pods(items)],
            )
        except K8sTimeout:
            present = tracker.still_present()
            first_pod = present[0]["name"] if present else ""
            raise K8sTimeout(
                f"timed out after {p['timeout']} s waiting for the pods of {ref} to go; still present: "
                f"{describe_pods(present)}. spec.replicas stays 0 and nothing else was touched (no node "
                "restart, no rescale). Find out why they do not terminate (kubectl describe pod -n "
                f"{namespace} {first_pod}: finalizers, a stuck kubelet, a long "
                "terminationGracePeriodSeconds), then run again with a larger timeout",
                **dict(result, still_present=present, pods=tracker.pods()),
            ) from None
        except K8sUnreachable as exc:
            present = tracker.still_present()
            scaled = "It had been scaled to 0" if result["scaled_at"] else "It was already at 0 replicas"
            raise K8sUnreachable(
                f"the API server became unreachable while waiting for the pods of {ref} to go ({exc}). "
                f"{scaled}; pods last seen present: {describe_pods(present)}. Nothing was restarted. Do NOT "
                "restart the node now: when the API answers again, run state=stopped again (it is "
                "idempotent) and only then restart",
                **dict(result, still_present=present, pods=tracker.pods(), url=exc.details.get("url")),
            ) from None
        except K8sError as exc:
            raise type(exc)(
                f"{exc} (while waiting for the pods of {ref} to go, after scaling it to 0; nothing was "
                "restarted)",
                **dict(result, still_present=tracker.still_present(), pods=tracker.pods()),
            ) from None
        scaled = f", scaled from {before} to 0" if before else " (it was at 0 replicas already)"
        pods = tracker.pods()
        restarted = [f"{pod['name']} {pod['restarts']}x" for pod in pods if pod["restarts"]]
        result.update(
            pods=pods,
            wait_seconds=watch["elapsed"],
            watch_events=watch["events"],
            msg=f"{ref} stopped: {len(tracker.records)} pod(s) gone{scaled}"
            + (
                f"; the kubelet had restarted containers of pods it removed "
                f"({', '.join(restarted)}): restartPolicy Always runs a container again after a graceful exit"
                if restarted
                else ""
            ),
        )
        return result

    # ---- running

    def running(self):
        p = self.p
        kind, name, namespace, wanted = p["kind"], p["name"], p["namespace"], p["replicas"]
        ref = workload_ref(kind, name, namespace)
        if wanted < 1:
            raise ShutdownError(
                f"replicas must be 1 or more for state=running (got {wanted}); use state=stopped to scale "
                "to 0 and wait for the pods to go"
            )
        workload = self.get_workload(kind, name, namespace)
        before = spec_replicas(workload)
        result = self._base(workload)
        result.update(
            replicas_before=before,
            replicas_after=wanted,
            diff={"before": {"replicas": before}, "after": {"replicas": wanted}},
        )
        if self.check_mode:
            result.update(
                changed=before != wanted,
                msg=f"check mode: would scale {ref} from {before} to {wanted} "
                f"and wait until {wanted} pod(s) are Ready"
                if before != wanted
                else f"check mode: {ref} already wants {wanted} replica(s); would wait until they are Ready",
            )
            return result
        deadline = self.clock() + p["timeout"]
        if before != wanted:
            self.client.scale(kind, name, namespace, wanted)
            result["changed"] = True
        try:
            watch = self.client.watch_until(
                kind,
                named_workload_ready(name),
                namespace,
                field_selector="metadata.name=" + name,
                timeout=self.remaining(deadline),
                description=f"{ref} to have {wanted} ready replica(s)",
                summarize=lambda items: [rollout_brief(i) for i in items],
            )
            own = self.ownership(watch["items"][0])
            pods_watch = self.client.watch_until(
                "Pod",
                ready_pods_predicate(own, wanted),
                namespace,
                label_selector=selector_string(own.selector) or None,
                timeout=self.remaining(deadline),
                description=f"{wanted} Ready pod(s) of {ref}",
            )
        except K8sTimeout as exc:
            pods = [
                pod_brief(x) for x in self.owned_pods(self.ownership(self.client.get(kind, name, namespace)))
            ]
            raise K8sTimeout(
                f"{ref} did not get {wanted} Ready pod(s) within {p['timeout']} s "
                f"({exc.details.get('last')}); its pods: {describe_pods(pods)}. See kubectl describe "
                f"{kind.lower()} -n {namespace} {name} and the pods' events (unschedulable? image pull? "
                "failing probes?)",
                **dict(result, pods=pods),
            ) from None
        pods = [pod_brief(x) for x in own.pods(pods_watch["items"])]
        scaled = f", scaled from {before}" if before != wanted else ""
        result.update(
            pods=[x for x in pods if not x["deletion_timestamp"]],
            ready_replicas=wanted,
            msg=f"{ref} running: {wanted} Ready pod(s){scaled}",
        )
        return result

    # ---- node_restarted

    # ---- entry point

    def run(self):
        state = self.p["state"]
        if state == "stopped":
            result = self.stopped()
        elif state == "running":
            result = self.running()
        elif state == "exited":
            result = self.exited()
        else:
            result = self.node_restarted()
        return self.stamp(result)

    def stamp(self, result):
        """Add the timings measured up to now (call it right before the module returns)."""
        result["elapsed"] = round(self.clock() - self.start, 3)
        if self.tracker is not None:
            result["last_pod_gone_to_return"] = self.tracker.since_last_gone()
        return result


def check_params(params):
    for option in ("timeout", "exit_timeout"):
        if params[option] < 1:
            raise InvalidArgument(f"{option} must be 1 second or more, got {params[option]}")
    if params["exit_command"] is not None and not params["exit_command"]:
        raise InvalidArgument("exit_command is empty: give the command as a list, or leave the option out")


def run(params, check_mode, run_command, client_factory):
    """strata.ops.safe_shutdown: the result; the worker's warnings travel with it or its error."""
    check_params(params)
    # the graceful exit alone runs on the workload host: no API server, no kubeconfig there
    client = None if params["state"] == "exited" else client_factory()
    worker = SafeShutdown(client, params, run_command=run_command, check_mode=check_mode)
    try:
        result = worker.run()
    except StrataError as exc:
        exc.details.setdefault("warnings", list(worker.warnings))
        raise
    result["warnings"] = list(worker.warnings)
    # The stop's caller waits for this process to exit. Most of the interpreter's exit time is
    # the final garbage collection over the kubernetes client's thousands of model classes
    # (0.15-0.3 s measured); frozen objects are skipped by it (about 0.02 s).
    gc.freeze()
    return result
