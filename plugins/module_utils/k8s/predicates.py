# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure predicates over objects as the API server sends them: what watch_until waits for."""

from ansible_collections.strata.ops.plugins.module_utils.k8s.resources import object_key


def condition(obj, ctype):
    """The status condition of that type (dict) or None."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def is_true(obj, ctype):
    cond = condition(obj, ctype)
    return bool(cond) and cond.get("status") == "True"


def node_is_ready(node):
    return is_true(node, "Ready")


def pod_is_ready(pod):
    return (
        (pod.get("status") or {}).get("phase") == "Running"
        and is_true(pod, "Ready")
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
    )


def workload_is_ready(obj):
    """A Deployment/StatefulSet whose controller has seen its spec and has every wanted
    replica updated and ready (0 wanted: none left); a StatefulSet's rolling update also done
    by its controller's own account (statefulset_rolled_out)."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    wanted = spec.get("replicas", 1)
    if status.get("observedGeneration", 0) < (obj.get("metadata") or {}).get("generation", 0):
        return False
    if wanted == 0:
        return status.get("replicas", 0) == 0
    if status.get("readyReplicas", 0) < wanted or status.get("replicas", 0) != wanted:
        return False
    if "updateRevision" in status:  # only a StatefulSet's status has it (list items carry no kind)
        return statefulset_rolled_out(spec, status, wanted)
    return status.get("updatedReplicas", 0) >= wanted


def rollout_brief(obj):
    """A Deployment's or StatefulSet's rollout as its status tells it, for a wait that timed out:
    "minio: 0/1 ready, 1 updated", and what holds it back where workload_is_ready says so (spec not
    yet seen by the controller, replicas still to add or remove, a StatefulSet between revisions)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    wanted = spec.get("replicas", 1)
    ready, updated = status.get("readyReplicas", 0), status.get("updatedReplicas", 0)
    parts = [f"{ready}/{wanted} ready", f"{updated} updated"]
    if status.get("replicas", 0) != wanted:
        parts.append(f"{status.get('replicas', 0)} exist")
    seen, generation = status.get("observedGeneration", 0), meta.get("generation", 0)
    if seen < generation:
        parts.append(f"its controller has not seen spec generation {generation} yet (at {seen})")
    if "updateRevision" in status and status.get("currentRevision") != status["updateRevision"]:
        parts.append(f"rolling from revision {status.get('currentRevision')} to {status['updateRevision']}")
    return f"{meta.get('name')}: {', '.join(parts)}"


def statefulset_rolled_out(spec, status, wanted):
    """kubectl rollout status' rule for a StatefulSet (kubectl's rollout_status.go,
    StatefulSetStatusViewer): with a partition, the pods at or above it are updated; without one,
    the controller has moved currentRevision to updateRevision, which it does only once every pod
    runs the new revision and is ready (updatedReplicas alone can count a pod it is about to
    replace). OnDelete updates pods only when they are deleted: every pod updated, as before."""
    strategy = spec.get("updateStrategy") or {}
    updated = status.get("updatedReplicas", 0)
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return updated >= wanted
    partition = (strategy.get("rollingUpdate") or {}).get("partition") or 0
    if partition > 0:
        return updated >= wanted - partition
    return updated >= wanted and status.get("currentRevision") == status["updateRevision"]


def no_items(items):
    """no object left"""
    return not items


def all_items(check, minimum=1):
    """Predicate: at least ``minimum`` objects and ``check`` holds for every one."""

    def predicate(items):
        return len(items) >= minimum and all(check(i) for i in items)

    predicate.__doc__ = f"at least {minimum} object(s), all {getattr(check, '__name__', 'matching')}"
    return predicate


def named_ready(names, check=node_is_ready):
    """Predicate: every object named in ``names`` exists and ``check`` holds for it."""
    wanted = set(names)

    def predicate(items):
        found = dict((object_key(i)[1], i) for i in items)
        return all(n in found and check(found[n]) for n in wanted)

    predicate.__doc__ = f"{', '.join(sorted(wanted))} to be {getattr(check, '__name__', 'ready')}"
    return predicate
