# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers over Kubernetes objects as the API server sends them (plain dicts): metadata and
ownership, label selectors, taints and tolerations, timestamps."""

import datetime

# Taints Kubernetes puts on nodes itself (the node lifecycle controller, from conditions and the
# cordon; k8s.io/api/core/v1 well_known_taints.go): not ours to expect or to call unexpected.
KUBERNETES_TAINT_PREFIX = "node.kubernetes.io/"


# --- taints ----------------------------------------------------------------------------------
# A node has at most one taint per key and effect: that pair is a taint's identity (Taint.MatchTaint
# in k8s.io/api/core/v1/taint.go; `kubectl taint` replaces the value of the same key and effect).


def taint_identity(taint):
    return (taint.get("key"), taint.get("effect"))


def same_taint(a, b):
    return taint_identity(a) == taint_identity(b)


def is_kubernetes_taint(taint):
    return (taint.get("key") or "").startswith(KUBERNETES_TAINT_PREFIX)


def meta_of(obj):
    return obj.get("metadata") or {}


def uid_of(obj):
    return meta_of(obj).get("uid")


def owner_refs(obj):
    return meta_of(obj).get("ownerReferences") or []


def controller_ref(obj):
    """The ownerReference with controller: true (the object's managing controller), or None."""
    for ref in owner_refs(obj):
        if ref.get("controller"):
            return ref
    return None


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
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, operator = expr.get("key"), expr.get("operator")
        values = ",".join(sorted(expr.get("values") or []))
        if operator == "In":
            parts.append(f"{key} in ({values})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append("!" + key)
    return ",".join(parts)


def workload_ref(kind, name, namespace):
    return f"{kind} {namespace}/{name}"


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
        meta = meta_of(workload)
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
        meta = meta_of(pod)
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


# --- pure helpers (unit-testable) ------------------------------------------------------------
def taints_with(taints, taint):
    """``taints`` with ``taint`` (key, value, effect) in place of any of the same key and effect."""
    kept = [t for t in taints if not same_taint(t, taint)]
    new = {"key": taint["key"], "effect": taint["effect"]}
    if taint.get("value"):
        new["value"] = taint["value"]
    return [*kept, new]


def taints_restored(current, recorded, taint):
    """``current`` with the taints of ``taint``'s identity put back to what ``recorded`` had:
    exactly ``recorded`` (order included) when the node's other taints did not change meanwhile."""
    others = [t for t in current if not same_taint(t, taint)]
    if others == [t for t in recorded if not same_taint(t, taint)]:
        return list(recorded)
    return others + [t for t in recorded if same_taint(t, taint)]


def toleration_for(taint):
    tol = {"key": taint["key"], "effect": taint["effect"]}
    if taint.get("value"):
        tol.update(operator="Equal", value=taint["value"])
    else:
        tol["operator"] = "Exists"
    return tol


def _same_toleration(a, b):
    def norm(t):
        return (
            t.get("key"),
            t.get("operator") or "Equal",
            t.get("value") or "",
            t.get("effect") or "",
            t.get("tolerationSeconds"),
        )

    return norm(a) == norm(b)


def tolerations_with(tolerations, tol):
    tolerations = list(tolerations or [])
    if any(_same_toleration(t, tol) for t in tolerations):
        return tolerations
    return [*tolerations, tol]


def tolerations_restored(current, recorded, tol):
    """``current`` without ``tol`` unless ``recorded`` had it; None when nothing is left and
    nothing was recorded (the field was absent)."""
    if any(_same_toleration(t, tol) for t in recorded or []):
        return current
    left = [t for t in current or [] if not _same_toleration(t, tol)]
    if not left and recorded is None:
        return None
    return left


def template_tolerations(obj):
    """The pod template's tolerations of a Deployment/StatefulSet (None when the field is absent)."""
    return (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("tolerations")


def taint_text(taint):
    """key=value:effect, as kubectl writes a taint (key:effect without a value)."""
    value = ("=" + taint["value"]) if taint.get("value") else ""
    return f"{taint['key']}{value}:{taint['effect']}"
