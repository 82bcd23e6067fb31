# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Graceful stop, start and node restart of a Kubernetes workload, for strata.ops.safe_shutdown.

The runbook's rule: never restart or kill the kind node container while the workload runs.
So a stop is (optionally) the workload's own exit command on the host, then a scale to 0,
then a WATCH until no pod owned by the workload exists any more; a node restart is refused
while any pod that matters is bound to that node (every pod but those the operator named
restartable, DaemonSet, static and finished pods; a protected workload's pod always matters).

Shape:

* Pure logic, unit tested without a cluster: ``selector_matches`` / ``selector_string``,
  ``Ownership`` (which pods a Deployment or StatefulSet owns: through the ownerReferences
  chain, Deployment -> ReplicaSet -> Pod or StatefulSet -> Pod, with the workload's selector
  as fallback for pods of ReplicaSets created while we wait), ``PodTracker`` (the predicate
  given to ``K8sClient.watch_until``; it records when each pod was first seen, started
  terminating and was gone), ``restart_blockers`` / ``restart_exempt``, ``describe_pods``,
  ``agave_exit_plan`` (the wait flag agave's exit needs by its version).
* ``SafeShutdown(client, params, ...)`` runs one state (``stopped``, ``running``,
  ``node_restarted``, ``exited``: the exit command alone, with no client) and returns the
  module's result (warnings in ``.warnings``); every failure is a StrataError (``K8sError`` from
  the API, ``ShutdownError`` for what is not the API's fault) whose details carry what was done
  so far. ``run()`` is what the module's ``main()`` hands over to.
"""

import gc
import os
import re
import threading
import time

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument, StrataError, utc_iso
from ansible_collections.strata.ops.plugins.module_utils.k8s import (
    K8sError,
    K8sNotFound,
    K8sTimeout,
    K8sUnreachable,
    node_is_ready,
    object_key,
    pod_is_ready,
    workload_is_ready,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s.objects import (
    Ownership,
    controller_ref,
    meta_of,
    parse_time,
    selector_string,
    spec_replicas,
    workload_ref,
)

WORKLOAD_KINDS = ("Deployment", "StatefulSet")
# What restartable may name: pods of these owners, or one bare pod.
RESTARTABLE_KINDS = ("Deployment", "StatefulSet", "ReplicaSet", "Job", "Pod")
STATES = ("stopped", "running", "node_restarted", "exited")
# kubelet marks the API object of a static pod with this annotation (kubectl drain skips them).
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
NODE_LEASE_NAMESPACE = "kube-node-lease"
DEFAULT_DOCKER_HOST = "unix://" + ctr.DEFAULT_DOCKER_SOCKET


class ShutdownError(StrataError):
    """Something other than the API server stopped the operation (details say what)."""

    kind = "shutdown"


class ExitCommandFailed(ShutdownError):
    kind = "exit_command"


class RestartRefused(ShutdownError):
    kind = "refused"


class NodeContainerError(ShutdownError):
    kind = "node_container"


# --------------------------------------------------------------------------- pure helpers


def pod_brief(pod):
    meta = meta_of(pod)
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "node": (pod.get("spec") or {}).get("nodeName"),
        "phase": (pod.get("status") or {}).get("phase"),
        "ready": pod_is_ready(pod),
        "deletion_timestamp": meta.get("deletionTimestamp"),
    }


def describe_pods(briefs, limit=10):
    """'ns/a on node n1 (terminating since T), ns/b (not scheduled)' for messages."""
    words = []
    for pod in briefs[:limit]:
        text = f"{pod.get('namespace')}/{pod.get('name')}"
        text += f" on node {pod['node']}" if pod.get("node") else " (not scheduled)"
        if pod.get("deletion_timestamp"):
            text += f" (terminating, deletionTimestamp {pod['deletion_timestamp']})"
        if pod.get("workload"):
            text += " of " + pod["workload"]
        if pod.get("why"):
            text += f" ({pod['why']})"
        words.append(text)
    if len(briefs) > limit:
        words.append(f"and {len(briefs) - limit} more")
    return ", ".join(words) or "none"


class PodTracker:
    """The predicate ``watch_until`` evaluates after its list and after every event: true when
    no pod owned by the workload is left. On each call it also records, per pod (by uid),
    when it was first seen, when it was first seen terminating, and when it was gone (the
    first call without it, i.e. right after its DELETED event). The decision itself only
    depends on the items it is given."""

    def __init__(self, ownership, clock=time.monotonic, wall=time.time):
        self.ownership = ownership
        self.clock = clock
        self.wall = wall
        self.records = {}
        self.order = []
        self.present = set()
        self.scaled = None
        self.last_gone = None

    def mark_scaled(self):
        self.scaled = self.clock()

    def observe(self, items):
        """Record what these items (the current set of pods) show; return the owned ones."""
        now, wall = self.clock(), self.wall()
        owned = self.ownership.pods(items)
        seen = set()
        for pod in owned:
            meta = meta_of(pod)
            key = meta.get("uid") or "/".join(object_key(pod))
            seen.add(key)
            rec = self.records.get(key)
            if rec is None:
                rec = {
                    "name": meta.get("name"),
                    "namespace": meta.get("namespace"),
                    "node": None,
                    "first_seen": utc_iso(wall),
                    "deletion_timestamp": None,
                    "gone_at": None,
                    "termination_seconds": None,
                    "_first": now,
                    "_deleting": None,
                }
                self.records[key] = rec
                self.order.append(key)
            rec["node"] = (pod.get("spec") or {}).get("nodeName") or rec["node"]
            if meta.get("deletionTimestamp") and rec["_deleting"] is None:
                rec["_deleting"] = now
                rec["deletion_timestamp"] = meta["deletionTimestamp"]
        for key in self.present - seen:
            rec = self.records[key]
            since = rec["_deleting"]
            if since is None:
                since = max(rec["_first"], self.scaled) if self.scaled is not None else rec["_first"]
            rec["gone_at"] = utc_iso(wall)
            rec["termination_seconds"] = round(max(0.0, now - since), 3)
            self.last_gone = now
        self.present = seen
        return owned

    def __call__(self, items):
        """no pod owned by the workload left"""
        return not self.observe(items)

    def pods(self):
        """Every pod seen, in the order first seen, without the private clock fields."""
        return [
            dict((k, v) for k, v in self.records[key].items() if not k.startswith("_")) for key in self.order
        ]

    def still_present(self):
        return [
            dict((k, v) for k, v in self.records[key].items() if not k.startswith("_"))
            for key in self.order
            if key in self.present
        ]

    def since_last_gone(self):
        """Seconds since the last pod was seen gone (None when none went while we watched)."""
        if self.last_gone is None:
            return None
        return round(self.clock() - self.last_gone, 3)


def ready_pods_predicate(ownership, replicas):
    """Predicate: exactly ``replicas`` owned pods that are not terminating, all Ready."""

    def predicate(items):
        active = [p for p in ownership.pods(items) if not meta_of(p).get("deletionTimestamp")]
        return len(active) == replicas and all(pod_is_ready(p) for p in active)

    predicate.__doc__ = f"{replicas} Ready pod(s) of {ownership}"
    return predicate


def named_workload_ready(name):
    def predicate(items):
        found = [i for i in items if meta_of(i).get("name") == name]
        return bool(found) and workload_is_ready(found[0])

    return predicate


class PodRef:
    """A bare pod named in ``restartable`` (kind Pod): matches that pod only."""

    def __init__(self, name, namespace):
        self.name = name
        self.namespace = namespace

    def __str__(self):
        return workload_ref("Pod", self.name, self.namespace)

    def owns(self, pod):
        meta = meta_of(pod)
        return meta.get("name") == self.name and meta.get("namespace") == self.namespace


def restart_exempt(pod):
    """Why a pod bound to a node may go down with it (None when it matters), by kubectl drain's
    rules (k8s.io/kubectl/pkg/drain/filters.go): a DaemonSet's pod is recreated on the node by its
    controller, a mirror pod is the node's own static pod, and a finished pod runs nothing."""
    if (controller_ref(pod) or {}).get("kind") == "DaemonSet":
        return "DaemonSet pod"
    if MIRROR_POD_ANNOTATION in (meta_of(pod).get("annotations") or {}):
        return "static pod"
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        return "finished, " + phase
    return None


def owner_text(pod):
    """'ReplicaSet ns/web-5d8f7' (the pod's controller) or 'no controller'."""
    ref = controller_ref(pod)
    if not ref:
        return "no controller"
    return workload_ref(ref.get("kind"), ref.get("name"), meta_of(pod).get("namespace"))


def restart_blockers(pods, node, protected=(), restartable=()):
    """(blockers, going): the pods bound to ``node`` (spec.nodeName, not labels) split into those
    that refuse its restart and those that may go down with it; each brief names its
    ``workload`` and ``why``.

    A pod of a ``protected`` workload always blocks. Any other pod blocks too unless a
    ``restartable`` entry (an Ownership or PodRef) covers it or ``restart_exempt`` lets it go:
    nothing that matters runs on the node during a restart unless the operator named it."""
    blockers, going = [], []
    for pod in pods:
        if (pod.get("spec") or {}).get("nodeName") != node:
            continue
        guard = next((own for own in protected if own.owns(pod)), None)
        allowed = next((own for own in restartable if own.owns(pod)), None)
        exempt = restart_exempt(pod)
        if guard is not None:
            owner, why, target = guard, "protected", blockers
        elif allowed is not None:
            owner, why, target = allowed, "restartable", going
        elif exempt:
            owner, why, target = owner_text(pod), exempt, going
        else:
            owner, why, target = owner_text(pod), "not restartable", blockers
        brief = pod_brief(pod)
        brief.update(workload=str(owner), why=why)
        target.append(brief)
    return blockers, going


def docker_socket_path(docker_host):
    """The unix socket path of a docker_host value (unix:///path or /path)."""
    value = (docker_host or DEFAULT_DOCKER_HOST).strip()
    if value.startswith("unix://"):
        value = value[len("unix://") :]
    if value.startswith("/"):
        return value
    raise ShutdownError(
        f"docker_host {docker_host!r} is not supported: "
        "only the local Docker socket (unix:///var/run/docker.sock or another unix:// path) is; "
        "run the task on the host of the kind node container",
        docker_host=docker_host,
    )


def lease_renewed_since(since):
    """Predicate over Lease items: the node's Lease was renewed at or after ``since`` (an aware
    datetime), i.e. the kubelet is back after the restart."""

    def predicate(items):
        for lease in items:
            renewed = parse_time((lease.get("spec") or {}).get("renewTime"))
            if renewed is not None and renewed >= since:
                return True
        return False

    predicate.__doc__ = f"a Lease renewal after {since.isoformat()}"
    return predicate


def run_exit_command(run_command, argv, timeout, clock=time.monotonic, wall=time.time):
    """Run the graceful exit command (no shell) with a deadline. ``run_command`` is
    AnsibleModule.run_command (or anything with its signature and before_communicate_callback).
    At the deadline the process gets SIGTERM, then SIGKILL 5 s later. Returns a result dict;
    ``ok`` is True only for rc 0 within the deadline."""
    timers = []
    state = {"timed_out": False}

    def arm(proc):
        def kill():
            if proc.poll() is None:
                proc.kill()

        def expire():
            if proc.poll() is None:
                state["timed_out"] = True
                proc.terminate()
                second = threading.Timer(5, kill)
                second.daemon = True
                timers.append(second)
                second.start()

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timers.append(timer)
        timer.start()

    start, started_at = clock(), wall()
    error = None
    try:
        rc, out, err = run_command(list(argv), before_communicate_callback=arm, handle_exceptions=False)
    except OSError as exc:
        rc, out, err, error = None, "", "", f"{argv[0]}: {exc.strerror or exc}"
    finally:
        for timer in timers:
            timer.cancel()
    result = {
        "argv": list(argv),
        "rc": rc,
        "stdout": out,
        "stderr": err,
        "timed_out": state["timed_out"],
        "elapsed": round(clock() - start, 3),
        "started_at": utc_iso(started_at),
        "finished_at": utc_iso(wall()),
    }
    result["ok"] = rc == 0 and not state["timed_out"] and error is None
    if error:
        result["error"] = error
    elif state["timed_out"]:
        result["error"] = f"did not finish within exit_timeout ({timeout} s) and was killed"
    elif rc != 0:
        tail = (err or out or "").strip()[-500:]
        detail = ": " + tail if tail else ""
        result["error"] = f"exited with rc {rc}{detail}"
    return result


# agave-validator's exit subcommand (anza-xyz/agave validator/src/commands/exit): before 3.0 it
# returns right after the exit request unless given --wait-for-exit; 3.0 made waiting for the
# process the default (--no-wait-for-exit opts out) and deprecated --wait-for-exit; 4.0 removed it.
AGAVE_CLIS = ("agave-validator", "solana-validator")
AGAVE_WAITS_BY_DEFAULT = (3, 0)
AGAVE_WAIT_FLAG = "--wait-for-exit"
AGAVE_WAIT_CHOICES = (AGAVE_WAIT_FLAG, "--no-wait-for-exit", "--monitor", "-m")
AGAVE_VERSION = re.compile(r"\b(?:agave|solana)-validator\s+v?(\d+)\.(\d+)\.(\d+)")


def is_agave_exit(argv):
    """Whether argv is agave-validator's (or solana-validator's) exit subcommand."""
    return bool(argv) and os.path.basename(argv[0]) in AGAVE_CLIS and "exit" in argv[1:]


def agave_exit_plan(argv, version_text):
    """{argv, agave_version, wait[, warning]}: ``argv`` as it must run so that it returns only
    once the validator process has exited, for the version ``<cli> --version`` printed
    (``version_text``; None when argv is not an agave exit). ``wait`` says which way ran."""
    argv = list(argv)
    if version_text is None:
        return {"argv": argv, "agave_version": None, "wait": "as given (not an agave-validator exit)"}
    match = AGAVE_VERSION.search(version_text)
    if not match:
        printed = version_text.strip()[:200] or "no output"
        return {
            "argv": argv,
            "agave_version": None,
            "wait": f"run as given: the agave version is unknown ({argv[0]} --version: {printed})",
            "warning": True,
        }
    version = tuple(int(x) for x in match.groups())
    text = ".".join(match.groups())
    given = [a for a in argv if a in AGAVE_WAIT_CHOICES]
    if version >= AGAVE_WAITS_BY_DEFAULT:
        wait = f"agave {text} waits for the validator process to exit by default"
        if AGAVE_WAIT_FLAG in argv:
            argv = [a for a in argv if a != AGAVE_WAIT_FLAG]
            wait += "; --wait-for-exit left out (deprecated in 3.0, refused by 4.x)"
        elif given:
            wait = f"agave {text}: as given ({' '.join(given)})"
        return {"argv": argv, "agave_version": text, "wait": wait}
    if given:
        return {
            "argv": argv,
            "agave_version": text,
            "wait": f"agave {text}: as given ({' '.join(given)})",
        }
    return {
        "argv": [*argv, AGAVE_WAIT_FLAG],
        "agave_version": text,
        "wait": f"agave {text} before 3.0: --wait-for-exit added, without it exit returns before the "
        "validator process has exited",
    }


# --------------------------------------------------------------------------- the states


class SafeShutdown:
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
        result.update(
            pods=tracker.pods(),
            wait_seconds=watch["elapsed"],
            watch_events=watch["events"],
            msg=f"{ref} stopped: {len(tracker.records)} pod(s) gone{scaled}",
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
                summarize=lambda items: [
                    f"{(i.get('status') or {}).get('readyReplicas', 0)}/{spec_replicas(i)} ready"
                    for i in items
                ],
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

    def node_restarted(self):
        p = self.p
        node = p["node"]
        container = p.get("node_container") or node
        self.client.get_node(node)  # an unknown node fails here, listing the nodes there are
        protected = self.named_owners(p.get("protected"))
        restartable = self.named_owners(p.get("restartable"))
        on_node, _rv = self.client.list("Pod", None, field_selector="spec.nodeName=" + node)
        blockers, going = restart_blockers(on_node, node, protected, restartable)
        docker = self.docker or ctr.DockerAPI(docker_socket_path(p.get("docker_host")))
        doc = self._inspect_node_container(docker, container, node)
        started_before = (doc.get("State") or {}).get("StartedAt")
        result = {
            "changed": False,
            "state": "node_restarted",
            "node": node,
            "node_container": container,
            "protected": [str(o) for o in protected],
            "restartable": [str(o) for o in restartable],
            "pods_on_node": [pod_brief(x) for x in on_node],
            "blockers": blockers,
            "going_down": going,
            "forced": bool(blockers) and bool(p.get("force")),
            "started_at_before": started_before,
            "started_at_after": None,
            "diff": {
                "before": {"node_container": container, "started_at": started_before},
                "after": {"node_container": container, "started_at": "(restarted)"},
            },
        }
        if blockers and not p.get("force"):
            blocking = describe_pods(blockers)
            raise RestartRefused(
                f"refusing to restart node container {container} (node {node}): "
                f"pods that matter are bound to it: {blocking}. "
                "Stop their workloads first (strata.ops.safe_shutdown state=stopped, or playbooks/stop.yml) "
                "and run this again; name in restartable the workloads or pods that may go down with the "
                "node (DaemonSet pods, static pods and finished pods never block); or set force: true to "
                "restart anyway and break them. Nothing was restarted.",
                **result,
            )
        if blockers:
            blocking = describe_pods(blockers)
            self.warnings.append(
                f"force: restarting node container {container} breaks these running pods: {blocking}"
            )
        going_text = describe_pods(going)
        if self.check_mode:
            result["changed"] = True
            breaks = (
                f" and BREAK these running pods (force): {describe_pods(blockers)}"
                if blockers
                else "; no pod that matters is on it"
            )
            going_down = "; going down with it: " + going_text if going else ""
            result["msg"] = (
                f"check mode: would restart node container {container} (node {node}){breaks}{going_down}"
            )
            return result
        deadline = self.clock() + p["timeout"]
        started_after = self._restart_node_container(docker, container, started_before, deadline, result)
        result["started_at_after"] = started_after
        result["diff"]["after"]["started_at"] = started_after
        if p.get("wait_node_ready", True):
            self._wait_node_back(node, container, started_after, deadline, result)
        ready = " and the node is Ready again" if p.get("wait_node_ready", True) else ""
        broke = f"; forced, broke: {describe_pods(blockers)}" if blockers else ""
        went_down = "; went down with it: " + going_text if going else ""
        result["msg"] = f"node container {container} (node {node}) restarted{ready}{broke}{went_down}"
        return result

    def _inspect_node_container(self, docker, container, node):
        """Docker's inspect document of the node's container; NodeContainerError when there is none."""
        try:
            return docker.inspect(container)
        except ctr.TargetNotFound:
            docker_host = self.p.get("docker_host") or DEFAULT_DOCKER_HOST
            raise NodeContainerError(
                f"no Docker container {container!r} at {docker_host} to restart for node {node}: set "
                "node_container to the kind node's container (docker ps; kind names it "
                "<cluster>-control-plane)",
                node=node,
                node_container=container,
            ) from None
        except ctr.ContainerError as exc:
            raise NodeContainerError(str(exc), node=node, node_container=container) from None

    def _restart_node_container(self, docker, container, started_before, deadline, result):
        """Restart the node's container and wait until it runs again; its new StartedAt."""
        try:
            docker.restart(container, self.p.get("node_stop_timeout") or 30)
            result["changed"] = True
            doc = docker.inspect(container)
            while not (
                (doc.get("State") or {}).get("Running")
                and (doc.get("State") or {}).get("StartedAt") != started_before
            ):
                if self.clock() > deadline:
                    status = (doc.get("State") or {}).get("Status")
                    raise NodeContainerError(
                        f"node container {container} was restarted but is not running again after "
                        f"{self.p['timeout']} s (state {status}): see docker logs {container}",
                        **result,
                    )
                time.sleep(0.2)
                doc = docker.inspect(container)
        except ctr.ContainerError as exc:
            raise NodeContainerError(
                f"restarting node container {container} failed: {exc}", **result
            ) from None
        return doc["State"]["StartedAt"]

    def _wait_node_back(self, node, container, started_after, deadline, result):
        """Wait until the node's kubelet renewed its Lease after the restart (when the cluster
        has node Leases) and the Node is Ready."""
        since = parse_time(started_after)
        try:
            leases, _rv = self.client.list(
                "Lease", NODE_LEASE_NAMESPACE, field_selector="metadata.name=" + node
            )
            if leases and since is not None:
                self.client.watch_until(
                    "Lease",
                    lease_renewed_since(since),
                    NODE_LEASE_NAMESPACE,
                    field_selector="metadata.name=" + node,
                    timeout=self.remaining(deadline),
                    description=f"node {node}'s Lease to be renewed after the restart",
                )
            self.client.watch_until(
                "Node",
                lambda items: bool(items) and node_is_ready(items[0]),
                field_selector="metadata.name=" + node,
                timeout=self.remaining(deadline),
                description=f"node {node} to be Ready",
            )
        except K8sTimeout as exc:
            raise K8sTimeout(
                f"node container {container} was restarted (StartedAt {started_after}) but node {node} did "
                f"not report back within {self.p['timeout']} s ({exc.details.get('waited_for')}): check the "
                f"kubelet inside it (docker exec {container} journalctl -u kubelet)",
                **result,
            ) from None
        except K8sError as exc:
            raise type(exc)(
                f"{exc} (node container {container} was restarted; "
                f"waiting for node {node} to be Ready again)",
                **result,
            ) from None

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
