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
  module's result (warnings in ``.warnings``); every failure is a ``K8sError``
  subclass (``ShutdownError`` for what is not the API's fault) whose details carry what was
  done so far, so ``main()`` catches once and calls ``fail_from_exception``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os
import re
import threading
import time

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr
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

WORKLOAD_KINDS = ("Deployment", "StatefulSet")
# What restartable may name: pods of these owners, or one bare pod.
RESTARTABLE_KINDS = ("Deployment", "StatefulSet", "ReplicaSet", "Job", "Pod")
STATES = ("stopped", "running", "node_restarted", "exited")
# kubelet marks the API object of a static pod with this annotation (kubectl drain skips them).
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
NODE_LEASE_NAMESPACE = "kube-node-lease"
DEFAULT_DOCKER_HOST = "unix://" + ctr.DEFAULT_DOCKER_SOCKET


class ShutdownError(K8sError):
    """Something other than the API server stopped the operation (details say what)."""

    reason = "shutdown"


class ExitCommandFailed(ShutdownError):
    reason = "exit_command"


class RestartRefused(ShutdownError):
    reason = "refused"


class NodeContainerError(ShutdownError):
    reason = "node_container"


# --------------------------------------------------------------------------- pure helpers


def _meta(obj):
    return obj.get("metadata") or {}


def uid_of(obj):
    return _meta(obj).get("uid")


def owner_refs(obj):
    return _meta(obj).get("ownerReferences") or []


def controller_ref(obj):
    """The ownerReference with controller: true (the object's managing controller), or None."""
    for ref in owner_refs(obj):
        if ref.get("controller"):
            return ref
    return None


def iso(wall):
    """A wall-clock time (time.time()) as an RFC 3339 UTC string with milliseconds."""
    stamp = datetime.datetime.fromtimestamp(wall, tz=datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (stamp.microsecond // 1000)


def parse_time(text):
    """An RFC 3339 time from the API server or Docker (seconds, micro- or nanoseconds, Z or
    an offset) as an aware datetime; None when empty or unreadable."""
    if not text or text.startswith("0001-01-01"):
        return None
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    main, sep, rest = value.partition(".")
    offset = ""
    if sep:
        digits = ""
        for pos, char in enumerate(rest):
            if not char.isdigit():
                offset = rest[pos:]
                break
            digits += char
        value = main + "." + (digits + "000000")[:6] + offset
    try:
        return datetime.datetime.fromisoformat(value)
    except ValueError:
        return None


def selector_matches(selector, labels):
    """Whether a LabelSelector (matchLabels / matchExpressions) selects these labels. An empty
    selector selects nothing here: we never want to claim every pod of a namespace."""
    selector = selector or {}
    labels = labels or {}
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    for key, value in match_labels.items():
        if labels.get(key) != value:
            return False
    for expr in expressions:
        key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if operator == "In":
            ok = key in labels and labels[key] in values
        elif operator == "NotIn":
            ok = not (key in labels and labels[key] in values)
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            ok = False
        if not ok:
            return False
    return True


def selector_string(selector):
    """A LabelSelector as the labelSelector query string kubectl's -l takes."""
    selector = selector or {}
    parts = ["{}={}".format(k, v) for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, operator = expr.get("key"), expr.get("operator")
        values = ",".join(sorted(expr.get("values") or []))
        if operator == "In":
            parts.append("{} in ({})".format(key, values))
        elif operator == "NotIn":
            parts.append("{} notin ({})".format(key, values))
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append("!" + key)
    return ",".join(parts)


def workload_ref(kind, name, namespace):
    return "{} {}/{}".format(kind, namespace, name)


def spec_replicas(obj):
    """spec.replicas of a Deployment/StatefulSet (the API default is 1)."""
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else value


class Ownership:
    """Which pods belong to one Deployment or StatefulSet.

    A pod belongs to it when one of its ownerReferences is the workload itself (StatefulSet)
    or one of the workload's ReplicaSets (Deployment; a ReplicaSet is the workload's when its
    controller reference has the workload's uid). A pod whose controlling ReplicaSet is not
    among the ReplicaSets we know (one created while we wait) belongs to a Deployment when
    that ReplicaSet's name is the Deployment's name plus a hash and the pod's labels match the
    Deployment's selector. Pods of ReplicaSets known to belong to another owner never do.
    """

    def __init__(self, workload, replicasets=()):
        meta = _meta(workload)
        self.kind = workload.get("kind")
        self.name = meta.get("name")
        self.namespace = meta.get("namespace")
        self.uid = meta.get("uid")
        self.selector = (workload.get("spec") or {}).get("selector") or {}
        self.rs_owner = {}
        for rs in replicasets:
            ref = controller_ref(rs)
            self.rs_owner[uid_of(rs)] = ref.get("uid") if ref else None
        self.uids = set([self.uid]) | set(u for u, owner in self.rs_owner.items() if owner == self.uid)
        self.uids.discard(None)

    def __str__(self):
        return workload_ref(self.kind, self.name, self.namespace)

    def owns(self, pod):
        meta = _meta(pod)
        if self.namespace and meta.get("namespace") and meta["namespace"] != self.namespace:
            return False
        refs = owner_refs(pod)
        if any(ref.get("uid") in self.uids for ref in refs):
            return True
        if self.kind != "Deployment":
            return False
        ref = controller_ref(pod)
        return bool(
            ref
            and ref.get("kind") == "ReplicaSet"
            and ref.get("uid") not in self.rs_owner
            and (ref.get("name") or "").startswith(self.name + "-")
            and selector_matches(self.selector, meta.get("labels"))
        )

    def pods(self, pods):
        return [p for p in pods if self.owns(p)]


def pod_brief(pod):
    meta = _meta(pod)
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
        text = "{}/{}".format(pod.get("namespace"), pod.get("name"))
        text += " on node {}".format(pod["node"]) if pod.get("node") else " (not scheduled)"
        if pod.get("deletion_timestamp"):
            text += " (terminating, deletionTimestamp {})".format(pod["deletion_timestamp"])
        if pod.get("workload"):
            text += " of " + pod["workload"]
        if pod.get("why"):
            text += " ({})".format(pod["why"])
        words.append(text)
    if len(briefs) > limit:
        words.append("and {} more".format(len(briefs) - limit))
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
            meta = _meta(pod)
            key = meta.get("uid") or "/".join(object_key(pod))
            seen.add(key)
            rec = self.records.get(key)
            if rec is None:
                rec = {
                    "name": meta.get("name"),
                    "namespace": meta.get("namespace"),
                    "node": None,
                    "first_seen": iso(wall),
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
            rec["gone_at"] = iso(wall)
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
        active = [p for p in ownership.pods(items) if not _meta(p).get("deletionTimestamp")]
        return len(active) == replicas and all(pod_is_ready(p) for p in active)

    predicate.__doc__ = "{} Ready pod(s) of {}".format(replicas, ownership)
    return predicate


def named_workload_ready(name):
    def predicate(items):
        found = [i for i in items if _meta(i).get("name") == name]
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
        meta = _meta(pod)
        return meta.get("name") == self.name and meta.get("namespace") == self.namespace


def restart_exempt(pod):
    """Why a pod bound to a node may go down with it (None when it matters), by kubectl drain's
    rules (k8s.io/kubectl/pkg/drain/filters.go): a DaemonSet's pod is recreated on the node by its
    controller, a mirror pod is the node's own static pod, and a finished pod runs nothing."""
    if (controller_ref(pod) or {}).get("kind") == "DaemonSet":
        return "DaemonSet pod"
    if MIRROR_POD_ANNOTATION in (_meta(pod).get("annotations") or {}):
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
    return workload_ref(ref.get("kind"), ref.get("name"), _meta(pod).get("namespace"))


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
        "docker_host {!r} is not supported: only the local Docker socket (unix:///var/run/docker.sock "
        "or another unix:// path) is; run the task on the host of the kind node container".format(
            docker_host
        ),
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

    predicate.__doc__ = "a Lease renewal after {}".format(since.isoformat())
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
        rc, out, err, error = None, "", "", "{}: {}".format(argv[0], exc.strerror or exc)
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
        "started_at": iso(started_at),
        "finished_at": iso(wall()),
    }
    result["ok"] = rc == 0 and not state["timed_out"] and error is None
    if error:
        result["error"] = error
    elif state["timed_out"]:
        result["error"] = "did not finish within exit_timeout ({} s) and was killed".format(timeout)
    elif rc != 0:
        tail = (err or out or "").strip()[-500:]
        result["error"] = "exited with rc {}{}".format(rc, ": " + tail if tail else "")
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
        return {
            "argv": argv,
            "agave_version": None,
            "wait": "run as given: the agave version is unknown ({} --version: {})".format(
                argv[0], version_text.strip()[:200] or "no output"
            ),
            "warning": True,
        }
    version = tuple(int(x) for x in match.groups())
    text = ".".join(match.groups())
    given = [a for a in argv if a in AGAVE_WAIT_CHOICES]
    if version >= AGAVE_WAITS_BY_DEFAULT:
        wait = "agave {} waits for the validator process to exit by default".format(text)
        if AGAVE_WAIT_FLAG in argv:
            argv = [a for a in argv if a != AGAVE_WAIT_FLAG]
            wait += "; --wait-for-exit left out (deprecated in 3.0, refused by 4.x)"
        elif given:
            wait = "agave {}: as given ({})".format(text, " ".join(given))
        return {"argv": argv, "agave_version": text, "wait": wait}
    if given:
        return {
            "argv": argv,
            "agave_version": text,
            "wait": "agave {}: as given ({})".format(text, " ".join(given)),
        }
    return {
        "argv": [*argv, AGAVE_WAIT_FLAG],
        "agave_version": text,
        "wait": "agave {} before 3.0: --wait-for-exit added, without it exit returns before the "
        "validator process has exited".format(text),
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
        existing = sorted(_meta(i).get("name") for i in items)
        hint = ""
        for other in WORKLOAD_KINDS:
            if other == kind:
                continue
            try:
                self.client.get(other, name, namespace)
                hint = " A {0} of that name exists there: set kind: {0}.".format(other)
            except K8sNotFound:
                pass
        if not existing and not hint:
            try:
                self.client.get("Namespace", namespace)
            except K8sNotFound:
                raise K8sNotFound(
                    "namespace {!r} does not exist (looking for {}): check namespace".format(
                        namespace, workload_ref(kind, name, namespace)
                    ),
                    kind="Namespace",
                    name=namespace,
                ) from None
        raise K8sNotFound(
            "{ref} does not exist. {kind}s in namespace {ns}: {names}.{hint} Check name, kind and "
            "namespace (kubectl get deployments,statefulsets -n {ns}).".format(
                ref=workload_ref(kind, name, namespace),
                kind=kind,
                ns=namespace,
                names=", ".join(existing) or "none",
                hint=hint,
            ),
            kind=kind,
            name=name,
            namespace=namespace,
            existing=existing,
        )

    def ownership(self, workload):
        meta = _meta(workload)
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
        meta = _meta(workload)
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
                version_text = (out or "") if rc == 0 else "rc {}: {}".format(rc, (err or out or "").strip())
            except OSError as exc:
                version_text = "{}: {}".format(argv[0], exc.strerror or exc)
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
            raise ExitCommandFailed(
                "the exit command {} {} ({}). {}. Fix the command (is the workload's admin socket where "
                "it expects it?), raise exit_timeout, or set exit_failure_ok: true to go on anyway".format(
                    " ".join(plan["argv"]), outcome["error"], plan["wait"], untouched
                ),
                **dict(result, **details),
            )
        return outcome

    # ---- exited

    def exited(self):
        """Only the graceful exit, run here (where the admin socket is); no Kubernetes call."""
        plan = self.exit_plan()
        result = {"changed": True, "state": "exited", "exit_command": None}
        if self.check_mode:
            result["msg"] = "check mode: would run {} here ({})".format(" ".join(plan["argv"]), plan["wait"])
            return result
        outcome = self.run_exit(plan, result, "Nothing else was done (this state scales nothing)")
        result["msg"] = "exit command {} ran here ({}): {} after {} s".format(
            " ".join(plan["argv"]),
            plan["wait"],
            "rc {}".format(outcome["rc"]) if outcome["ok"] else outcome["error"],
            outcome["elapsed"],
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
                steps.append("run {} ({})".format(" ".join(plan["argv"]), plan["wait"]))
            if before:
                steps.append("scale {} from {} to 0".format(ref, before))
            if present or before:
                steps.append(
                    "wait up to {} s until its pods are gone ({})".format(
                        p["timeout"], describe_pods(present)
                    )
                )
            result.update(
                changed=before != 0 or run_exit,
                pods=tracker.pods(),
                msg="check mode: would " + ", then ".join(steps)
                if steps
                else "{} is stopped: replicas 0 and no pod left".format(ref),
            )
            return result
        if run_exit:
            self.run_exit(
                plan,
                result,
                "{} was NOT scaled (replicas still {}) and nothing else was touched".format(ref, before),
                replicas_after=before,
                pods=tracker.pods(),
            )
        deadline = self.clock() + p["timeout"]
        if before != 0:
            self.client.scale(kind, name, namespace, 0)
            tracker.mark_scaled()
            result["scaled_at"] = iso(time.time())
            result["changed"] = True
        try:
            watch = self.client.watch_until(
                "Pod",
                tracker,
                namespace,
                label_selector=selector,
                timeout=self.remaining(deadline),
                description="no pod of {} left".format(ref),
                summarize=lambda items: [pod_brief(x)["name"] for x in own.pods(items)],
            )
        except K8sTimeout:
            present = tracker.still_present()
            raise K8sTimeout(
                "timed out after {} s waiting for the pods of {} to go; still present: {}. spec.replicas "
                "stays 0 and nothing else was touched (no node restart, no rescale). Find out why they "
                "do not terminate (kubectl describe pod -n {} {}: finalizers, a stuck kubelet, a long "
                "terminationGracePeriodSeconds), then run again with a larger timeout".format(
                    p["timeout"],
                    ref,
                    describe_pods(present),
                    namespace,
                    present[0]["name"] if present else "",
                ),
                **dict(result, still_present=present, pods=tracker.pods()),
            ) from None
        except K8sUnreachable as exc:
            present = tracker.still_present()
            raise K8sUnreachable(
                "the API server became unreachable while waiting for the pods of {} to go ({}). {}; pods "
                "last seen present: {}. Nothing was restarted. Do NOT restart the node now: when the "
                "API answers again, run state=stopped again (it is idempotent) and only then restart".format(
                    ref,
                    exc,
                    "It had been scaled to 0" if result["scaled_at"] else "It was already at 0 replicas",
                    describe_pods(present),
                ),
                **dict(result, still_present=present, pods=tracker.pods(), url=exc.details.get("url")),
            ) from None
        except K8sError as exc:
            raise type(exc)(
                "{} (while waiting for the pods of {} to go, after scaling it to 0; nothing was "
                "restarted)".format(exc, ref),
                **dict(result, still_present=tracker.still_present(), pods=tracker.pods()),
            ) from None
        result.update(
            pods=tracker.pods(),
            wait_seconds=watch["elapsed"],
            watch_events=watch["events"],
            msg="{} stopped: {} pod(s) gone{}".format(
                ref,
                len(tracker.records),
                ", scaled from {} to 0".format(before) if before else " (it was at 0 replicas already)",
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
                "replicas must be 1 or more for state=running (got {}); use state=stopped to scale "
                "to 0 and wait for the pods to go".format(wanted)
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
                msg="check mode: would scale {0} from {1} to {2} and wait until {2} pod(s) are Ready".format(
                    ref, before, wanted
                )
                if before != wanted
                else "check mode: {} already wants {} replica(s); would wait until they are Ready".format(
                    ref, wanted
                ),
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
                description="{} to have {} ready replica(s)".format(ref, wanted),
                summarize=lambda items: [
                    "{}/{} ready".format((i.get("status") or {}).get("readyReplicas", 0), spec_replicas(i))
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
                description="{} Ready pod(s) of {}".format(wanted, ref),
            )
        except K8sTimeout as exc:
            pods = [
                pod_brief(x) for x in self.owned_pods(self.ownership(self.client.get(kind, name, namespace)))
            ]
            raise K8sTimeout(
                "{} did not get {} Ready pod(s) within {} s ({}); its pods: {}. See kubectl describe "
                "{} -n {} {} and the pods' events (unschedulable? image pull? failing probes?)".format(
                    ref,
                    wanted,
                    p["timeout"],
                    exc.details.get("last"),
                    describe_pods(pods),
                    kind.lower(),
                    namespace,
                    name,
                ),
                **dict(result, pods=pods),
            ) from None
        pods = [pod_brief(x) for x in own.pods(pods_watch["items"])]
        result.update(
            pods=[x for x in pods if not x["deletion_timestamp"]],
            ready_replicas=wanted,
            msg="{} running: {} Ready pod(s){}".format(
                ref, wanted, ", scaled from {}".format(before) if before != wanted else ""
            ),
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
        try:
            doc = docker.inspect(container)
        except ctr.TargetNotFound:
            raise NodeContainerError(
                "no Docker container {!r} at {} to restart for node {}: set node_container to the kind "
                "node's container (docker ps; kind names it <cluster>-control-plane)".format(
                    container, p.get("docker_host") or DEFAULT_DOCKER_HOST, node
                ),
                node=node,
                node_container=container,
            ) from None
        except ctr.ContainerError as exc:
            raise NodeContainerError(str(exc), node=node, node_container=container) from None
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
            raise RestartRefused(
                "refusing to restart node container {} (node {}): pods that matter are bound to it: {}. "
                "Stop their workloads first (strata.ops.safe_shutdown state=stopped, or playbooks/stop.yml) "
                "and run this again; name in restartable the workloads or pods that may go down with the "
                "node (DaemonSet pods, static pods and finished pods never block); or set force: true to "
                "restart anyway and break them. Nothing was restarted.".format(
                    container, node, describe_pods(blockers)
                ),
                **result,
            )
        if blockers:
            self.warnings.append(
                "force: restarting node container {} breaks these running pods: {}".format(
                    container, describe_pods(blockers)
                )
            )
        going_text = describe_pods(going)
        if self.check_mode:
            result["changed"] = True
            result["msg"] = "check mode: would restart node container {} (node {}){}{}".format(
                container,
                node,
                " and BREAK these running pods (force): {}".format(describe_pods(blockers))
                if blockers
                else "; no pod that matters is on it",
                "; going down with it: " + going_text if going else "",
            )
            return result
        deadline = self.clock() + p["timeout"]
        try:
            docker.restart(container, p.get("node_stop_timeout") or 30)
            result["changed"] = True
            doc = docker.inspect(container)
            while not (
                (doc.get("State") or {}).get("Running")
                and (doc.get("State") or {}).get("StartedAt") != started_before
            ):
                if self.clock() > deadline:
                    raise NodeContainerError(
                        "node container {0} was restarted but is not running again after {1} s (state {2}): "
                        "see docker logs {0}".format(
                            container, p["timeout"], (doc.get("State") or {}).get("Status")
                        ),
                        **result,
                    )
                time.sleep(0.2)
                doc = docker.inspect(container)
        except ctr.ContainerError as exc:
            raise NodeContainerError(
                "restarting node container {} failed: {}".format(container, exc), **result
            ) from None
        started_after = doc["State"]["StartedAt"]
        result["started_at_after"] = started_after
        result["diff"]["after"]["started_at"] = started_after
        if p.get("wait_node_ready", True):
            self._wait_node_back(node, container, started_after, deadline, result)
        result["msg"] = "node container {} (node {}) restarted{}{}{}".format(
            container,
            node,
            " and the node is Ready again" if p.get("wait_node_ready", True) else "",
            "; forced, broke: {}".format(describe_pods(blockers)) if blockers else "",
            "; went down with it: " + going_text if going else "",
        )
        return result

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
                    description="node {}'s Lease to be renewed after the restart".format(node),
                )
            self.client.watch_until(
                "Node",
                lambda items: bool(items) and node_is_ready(items[0]),
                field_selector="metadata.name=" + node,
                timeout=self.remaining(deadline),
                description="node {} to be Ready".format(node),
            )
        except K8sTimeout as exc:
            raise K8sTimeout(
                "node container {0} was restarted (StartedAt {1}) but node {2} did not report back within "
                "{3} s ({4}): check the kubelet inside it (docker exec {0} journalctl -u kubelet)".format(
                    container,
                    started_after,
                    node,
                    self.p["timeout"],
                    exc.details.get("waited_for"),
                ),
                **result,
            ) from None
        except K8sError as exc:
            raise type(exc)(
                "{} (node container {} was restarted; waiting for node {} to be Ready again)".format(
                    exc, container, node
                ),
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
