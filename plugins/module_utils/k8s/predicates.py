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
