# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kinds our modules touch and their REST paths."""

from urllib.parse import quote

from ansible_collections.strata.ops.plugins.module_utils.k8s.errors import K8sError

# kind -> (apiVersion, plural, namespaced). Enough for what our modules touch.
RESOURCES = {
    "Namespace": ("v1", "namespaces", False),
    "Node": ("v1", "nodes", False),
    "PersistentVolume": ("v1", "persistentvolumes", False),
    "Pod": ("v1", "pods", True),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims", True),
    "Service": ("v1", "services", True),
    "ConfigMap": ("v1", "configmaps", True),
    "Secret": ("v1", "secrets", True),
    "Event": ("v1", "events", True),
    "ServiceAccount": ("v1", "serviceaccounts", True),
    "Deployment": ("apps/v1", "deployments", True),
    "StatefulSet": ("apps/v1", "statefulsets", True),
    "DaemonSet": ("apps/v1", "daemonsets", True),
    "ReplicaSet": ("apps/v1", "replicasets", True),
    "Job": ("batch/v1", "jobs", True),
    "Lease": ("coordination.k8s.io/v1", "leases", True),
}

SCALABLE = ("Deployment", "StatefulSet", "ReplicaSet")

PATCH_TYPES = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}


def resource_path(kind, namespace=None, name=None, subresource=None, *, api_version=None, plural=None):
    """REST path of a kind (from RESOURCES unless api_version and plural are given)."""
    if kind in RESOURCES and not (api_version and plural):
        api_version, plural, namespaced = RESOURCES[kind]
    elif api_version and plural:
        namespaced = namespace is not None
    else:
        raise K8sError(
            f"unknown kind {kind!r}: one of {', '.join(sorted(RESOURCES))}, or give api_version and plural"
        )
    base = "/api/v1" if api_version == "v1" else "/apis/" + api_version
    parts = [base]
    if namespaced and namespace:
        parts.append("/namespaces/" + quote(namespace, safe=""))
    parts.append("/" + plural)
    if name:
        parts.append("/" + quote(name, safe=""))
        if subresource:
            parts.append("/" + subresource)
    return "".join(parts)


def object_key(obj):
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def object_ref(kind, name, namespace=None):
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
