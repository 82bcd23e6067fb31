"""A Kubernetes API server in memory that answers the calls a k8s.K8sClient makes (get, get_node,
list, patch with a merge patch, watch_until) with the real client's signatures, return shapes and
typed errors, and logs every call in a shared Journal (tests/unit/fakes/journal.py).

What it models:
* one resourceVersion counter for every object, bumped on each change; a patch that carries
  ``metadata.resourceVersion`` is refused with K8sConflict (409) when the object moved on, as
  the API server's optimistic concurrency does;
* ``patch_type="merge"`` as RFC 7386 (None removes a key, lists are replaced); other patch
  types are not modelled and fail the test;
* Deployments/StatefulSets: a change of ``spec`` bumps ``metadata.generation``; the controller
  rolls the pods out only when someone waits for it (``watch_until``), and logs that as a
  "cluster rolled-out" entry carrying the template it rolled out; ``stuck`` names workloads whose
  rollout never finishes (watch_until then raises K8sTimeout as the real one does at its
  deadline);
* ``interfere(kind, name, namespace, mutate)``: another writer changes the object between a
  caller's read and its next patch (that patch then gets the 409).
"""

import copy
import itertools

from ansible_collections.strata.ops.plugins.module_utils import k8s
from ansible_collections.strata.ops.plugins.module_utils.k8s.resources import (
    RESOURCES,
    object_ref,
    resource_path,
)

WORKLOAD_KINDS = ("Deployment", "StatefulSet")
NO_TOLERATIONS = object()  # a pod template without the tolerations field


def node(name, *, labels=None, taints=None, unschedulable=False):
    spec = {"taints": copy.deepcopy(taints)} if taints else {}
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def workload(kind, namespace, name, *, replicas=1, tolerations=NO_TOLERATIONS):
    """A Deployment or StatefulSet, rolled out (Ready) at generation 1."""
    pod_spec = {"containers": [{"name": name, "image": f"{name}:1"}]}
    if tolerations is not NO_TOLERATIONS:
        pod_spec["tolerations"] = copy.deepcopy(tolerations)
    return {
        "kind": kind,
        "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": namespace, "generation": 1, "uid": f"uid-{name}"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "readyReplicas": replicas,
            "updatedReplicas": replicas,
        },
    }


def configmap(namespace, name, data):
    return {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data),
    }


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch of ``target`` (not changed) by ``patch``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def rolled_out(obj):
    """The fake controller's own view (not the code under test's predicate): every wanted
    replica runs the current template."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    wanted = spec.get("replicas", 1)
    return (
        status.get("observedGeneration") == obj["metadata"].get("generation")
        and status.get("replicas") == wanted
        and status.get("readyReplicas", 0) == wanted
        and status.get("updatedReplicas", 0) == wanted
    )


def _selector_pairs(text, what):
    pairs = {}
    for part in filter(None, (text or "").split(",")):
        key, sep, value = part.partition("=")
        if not sep or key.endswith("!"):
            raise NotImplementedError(f"the fake API server supports only k=v {what}s, got {text!r}")
        pairs[key.strip()] = value.strip()
    return pairs


class FakeKube:
    """Stands in for k8s.K8sClient; ``journal`` is the shared log."""

    def __init__(self, journal, objects=(), source="fake kubeconfig"):
        self.journal = journal
        self.source = source
        self.api_timeout = 10
        self.objects = {}
        self.stuck = set()  # object_ref of workloads whose rollout never finishes
        self.interference = {}  # object_ref -> [mutate(obj)] applied before its next patch
        self._rv = itertools.count(1000)
        for obj in objects:
            self.add(obj)

    # --- the fake's own handles (not logged) ------------------------------------------------
    @staticmethod
    def _key(kind, name, namespace=None):
        namespaced = RESOURCES[kind][2]
        return (kind, namespace if namespaced else "", name)

    def _bump(self, obj):
        obj["metadata"]["resourceVersion"] = str(next(self._rv))

    def add(self, obj):
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        self._bump(obj)
        self.objects[self._key(obj["kind"], meta["name"], meta.get("namespace"))] = obj
        return obj

    def stored(self, kind, name, namespace=None):
        """The stored object itself (no copy, not logged)."""
        return self.objects[self._key(kind, name, namespace)]

    def interfere(self, kind, name, namespace, mutate):
        self.interference.setdefault(object_ref(kind, name, namespace), []).append(mutate)

    def snapshot(self):
        """What a test compares: nodes (taints, labels, cordon), workloads (pod template spec,
        replicas, whether rolled out), ConfigMaps' data. No resourceVersions or generations."""
        out = {"nodes": {}, "workloads": {}, "configmaps": {}}
        for (kind, namespace, name), obj in sorted(self.objects.items()):
            if kind == "Node":
                spec = obj.get("spec") or {}
                out["nodes"][name] = {
                    "taints": spec.get("taints"),
                    "labels": obj["metadata"].get("labels"),
                    "unschedulable": spec.get("unschedulable"),
                }
            elif kind in WORKLOAD_KINDS:
                out["workloads"][object_ref(kind, name, namespace)] = {
                    "template_spec": obj["spec"]["template"]["spec"],
                    "replicas": obj["spec"].get("replicas"),
                    "rolled_out": rolled_out(obj),
                }
            elif kind == "ConfigMap":
                out["configmaps"][object_ref(kind, name, namespace)] = obj.get("data")
        return copy.deepcopy(out)

    def _find(self, kind, name, namespace=None):
        try:
            return self.objects[self._key(kind, name, namespace)]
        except KeyError:
            raise k8s.K8sNotFound(
                f"{object_ref(kind, name, namespace)} does not exist",
                kind=kind,
                name=name,
                namespace=namespace,
            ) from None

    def _select(self, kind, namespace=None, label_selector=None, field_selector=None):
        labels = _selector_pairs(label_selector, "label selector")
        fields = _selector_pairs(field_selector, "field selector")
        unknown = set(fields) - {"metadata.name", "metadata.namespace"}
        if unknown:
            raise NotImplementedError(f"the fake API server does not select by {sorted(unknown)}")
        found = []
        for (okind, onamespace, oname), obj in sorted(self.objects.items()):
            if okind != kind or (namespace and RESOURCES[kind][2] and onamespace != namespace):
                continue
            if fields.get("metadata.name", oname) != oname:
                continue
            if fields.get("metadata.namespace", onamespace) != onamespace:
                continue
            obj_labels = obj["metadata"].get("labels") or {}
            if any(obj_labels.get(k) != v for k, v in labels.items()):
                continue
            found.append(obj)
        return found

    def _listed(self, objs):
        items = []
        for obj in objs:
            item = copy.deepcopy(obj)
            item.setdefault("kind", obj["kind"])
            item.setdefault("apiVersion", RESOURCES[obj["kind"]][0])
            items.append(item)
        return items

    def _current_rv(self):
        return str(max((int(o["metadata"]["resourceVersion"]) for o in self.objects.values()), default=1))

    # --- K8sClient's calls ------------------------------------------------------------------
    def get(self, kind, name, namespace=None, subresource=None):
        if subresource is not None:
            raise NotImplementedError(f"the fake API server has no {subresource} subresource")
        return self.journal.call(
            "kube",
            "get",
            object_ref(kind, name, namespace),
            apply=lambda: copy.deepcopy(self._find(kind, name, namespace)),
        )

    def get_node(self, name):
        def apply():
            try:
                return copy.deepcopy(self._find("Node", name))
            except k8s.K8sNotFound:
                existing = sorted(n for (kind, _ns, n) in self.objects if kind == "Node")
                listed = ", ".join(existing) or "none (no node registered yet)"
                raise k8s.K8sNotFound(
                    f"node {name!r} does not exist in the cluster ({self.source}); nodes: {listed}",
                    kind="Node",
                    name=name,
                    existing=existing,
                ) from None

        return self.journal.call("kube", "get_node", object_ref("Node", name), apply=apply)

    def list(self, kind, namespace=None, label_selector=None, field_selector=None):
        return self.journal.call(
            "kube",
            "list",
            object_ref(kind, field_selector or label_selector or "*", namespace),
            apply=lambda: (
                self._listed(self._select(kind, namespace, label_selector, field_selector)),
                self._current_rv(),
            ),
        )

    def patch(
        self, kind, name, patch, namespace=None, *, patch_type="strategic", subresource=None, dry_run=False
    ):
        ref = object_ref(kind, name, namespace)
        if patch_type != "merge" or subresource is not None:
            raise NotImplementedError(
                f"the fake API server models merge patches of objects only (got {patch_type}, {subresource})"
            )

        def apply():
            obj = self._find(kind, name, namespace)
            for mutate in self.interference.pop(ref, []):
                self.journal.call("cluster", "concurrent-change", ref, apply=lambda m=mutate: m(obj))
                self._bump(obj)
            body = copy.deepcopy(patch)
            wanted_rv = (body.get("metadata") or {}).pop("resourceVersion", None)
            if wanted_rv is not None and wanted_rv != obj["metadata"]["resourceVersion"]:
                raise k8s.K8sConflict(
                    f"PATCH {resource_path(kind, namespace, name)}: conflict: Operation cannot be fulfilled "
                    f'on {RESOURCES[kind][1]} "{name}": the object has been modified; please apply your '
                    "changes to the latest version and try again",
                    status=409,
                )
            new = merge_patch(obj, body)
            if kind in WORKLOAD_KINDS and new.get("spec") != obj.get("spec"):
                new["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
            if dry_run:
                return copy.deepcopy(new)
            self._bump(new)
            obj.clear()
            obj.update(new)
            return copy.deepcopy(obj)

        return self.journal.call("kube", "patch", ref, patch, changes=not dry_run, apply=apply)

    def watch_until(
        self,
        kind,
        predicate,
        namespace=None,
        *,
        label_selector=None,
        field_selector=None,
        timeout=60,
        description=None,
        summarize=None,
    ):
        """As Watching.watch_until: the list, then the events (here: the fake controllers'
        progress) until ``predicate(items)`` holds; K8sTimeout when it never does."""

        def apply():
            events = 0
            items = self._listed(self._select(kind, namespace, label_selector, field_selector))
            if not predicate(items):
                for obj in self._select(kind, namespace, label_selector, field_selector):
                    events += self._progress(obj)
                items = self._listed(self._select(kind, namespace, label_selector, field_selector))
            if not predicate(items):
                what = (description or getattr(predicate, "__doc__", None) or "condition").strip()
                last = summarize(items) if summarize else [i["metadata"]["name"] for i in items]
                where = " in namespace " + namespace if namespace else ""
                raise k8s.K8sTimeout(
                    f"timed out after {timeout} s waiting for {what} ({kind}{where}); last state: {last}",
                    waited_for=what,
                    elapsed=float(timeout),
                    last=last,
                )
            return {
                "items": items,
                "resource_version": self._current_rv(),
                "elapsed": 0.0,
                "events": events,
                "relists": 0,
            }

        target = object_ref(kind, field_selector or label_selector or "*", namespace)
        return self.journal.call("kube", "watch_until", target, description, apply=apply)

    def _progress(self, obj):
        """The controller of a workload rolls out its current template (unless stuck)."""
        kind, meta = obj["kind"], obj["metadata"]
        ref = object_ref(kind, meta["name"], meta.get("namespace"))
        if kind not in WORKLOAD_KINDS or rolled_out(obj) or ref in self.stuck:
            return 0
        wanted = obj["spec"].get("replicas", 1)

        def roll():
            obj["status"] = {
                "observedGeneration": meta.get("generation", 1),
                "replicas": wanted,
                "readyReplicas": wanted,
                "updatedReplicas": wanted,
            }
            self._bump(obj)

        self.journal.call(
            "cluster",
            "rolled-out",
            ref,
            {"generation": meta.get("generation"), "template_spec": obj["spec"]["template"]["spec"]},
            apply=roll,
        )
        return 1
