# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which pods of a workload exist, and when each appeared, began terminating and was gone: the
predicates safe_shutdown's watches wait on."""

import time

from ansible_collections.strata.ops.plugins.module_utils.common import utc_iso
from ansible_collections.strata.ops.plugins.module_utils.k8s import (
    object_key,
    pod_is_ready,
    workload_is_ready,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s.objects import meta_of, workload_ref


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


def restart_count(pod):
    """Restarts of the pod's containers, as the kubelet counts them (status.containerStatuses)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount") or 0) for s in statuses)


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
    first call without it, i.e. right after its DELETED event), and how often the kubelet had
    restarted its containers (a real kubelet runs a container that exits after the graceful exit
    command again, until the scale-down reaches it). The decision itself only depends on the items
    it is given."""

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
                    "restarts": 0,
                    "_first": now,
                    "_deleting": None,
                }
                self.records[key] = rec
                self.order.append(key)
            rec["node"] = (pod.get("spec") or {}).get("nodeName") or rec["node"]
            rec["restarts"] = max(rec["restarts"], restart_count(pod))
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
