# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The checks behind strata.ops.cluster_health: nodes, pods, workloads and PV paths as problems."""

import os

from ansible_collections.strata.ops.plugins.module_utils.common import StrataError
from ansible_collections.strata.ops.plugins.module_utils.k8s.errors import (
    K8sArgumentError,
    K8sNotFound,
    K8sTimeout,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s.objects import (
    is_kubernetes_taint,
    selector_matches,
    taint_identity,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s.predicates import (
    all_items,
    condition,
    is_true,
    named_ready,
    node_is_ready,
    pod_is_ready,
    workload_is_ready,
)
from ansible_collections.strata.ops.plugins.module_utils.k8s.resources import object_key
from ansible_collections.strata.ops.plugins.module_utils.mounts import kind_node_path, under_root

BAD_WAITING_REASONS = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
    "RunContainerError",
)

PRESSURE_CONDITIONS = ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")


def problem(kind, name, reason, namespace=None):
    entry = {"kind": kind, "name": name, "reason": reason}
    if namespace:
        entry["namespace"] = namespace
    return entry


def node_summary(node):
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    return {
        "name": meta.get("name"),
        "ready": node_is_ready(node),
        "unschedulable": bool(spec.get("unschedulable")),
        "labels": meta.get("labels") or {},
        "annotations": meta.get("annotations") or {},
        "taints": [
            {"key": t.get("key"), "value": t.get("value"), "effect": t.get("effect")}
            for t in spec.get("taints") or []
        ],
        "allocatable": (node.get("status") or {}).get("allocatable") or {},
        "resource_version": meta.get("resourceVersion"),
    }


def node_problems(node, cordon_expected=False):
    """Problems of one node; a cordon is one unless ``cordon_expected`` (an experiment's)."""
    name = (node.get("metadata") or {}).get("name")
    found = []
    ready = condition(node, "Ready")
    if not ready or ready.get("status") != "True":
        why = (ready or {}).get("reason") or (ready or {}).get("message") or "no Ready condition"
        found.append(problem("Node", name, f"not Ready ({why})"))
    if (node.get("spec") or {}).get("unschedulable") and not cordon_expected:
        found.append(problem("Node", name, f"cordoned (spec.unschedulable); kubectl uncordon {name}"))
    for ctype in PRESSURE_CONDITIONS:
        if is_true(node, ctype):
            found.append(problem("Node", name, ctype))
    return found


# The name: value maps of expected_nodes, compared key by key (other keys on the node are fine).
NODE_MAPS = ("labels", "annotations", "allocatable")


def expected_node_problems(nodes, expected):
    """Problems where nodes lack an expected node, label or taint (or carry a taint they
    should not, when ``taints`` is given for them: Kubernetes' own node.kubernetes.io/ taints
    aside), lack an expected annotation or allocatable amount, or are not cordoned as
    ``unschedulable`` says. expected: name -> {labels, annotations, allocatable, taints,
    unschedulable}."""
    by_name = dict((n["name"], n) for n in nodes)
    found = []
    for name in sorted(expected or {}):
        want = expected[name] or {}
        node = by_name.get(name)
        if node is None:
            found.append(problem("Node", name, "expected node is not registered"))
            continue
        for field in NODE_MAPS:
            for key, value in sorted((want.get(field) or {}).items()):
                have = node[field].get(key)
                if have != str(value):
                    what = field.rstrip("s")
                    found.append(
                        problem("Node", name, f"{what} {key}={value} expected, found {have or 'none'}")
                    )
        if want.get("taints") is not None:
            found.extend(taint_problems(name, node["taints"], want["taints"]))
        if want.get("unschedulable") and not node["unschedulable"]:
            found.append(problem("Node", name, "expected to be cordoned (spec.unschedulable), is not"))
    return found


def _taint_shown(taint):
    return f"{taint.get('key')}={taint.get('value') or ''}:{taint.get('effect')}"


def taint_problems(name, have, wanted):
    """Taints of node ``name`` against those expected, by a taint's identity (key and effect);
    a taint of that identity with another value is named as such. Kubernetes' own taints are
    not ours to expect or call unexpected."""
    have = dict((taint_identity(t), t) for t in have if not is_kubernetes_taint(t))
    wanted = dict((taint_identity(t), t) for t in wanted)
    found = []
    for identity in sorted(set(wanted) - set(have), key=str):
        found.append(problem("Node", name, f"taint {_taint_shown(wanted[identity])} missing"))
    for identity in sorted(set(have) - set(wanted), key=str):
        found.append(problem("Node", name, f"unexpected taint {_taint_shown(have[identity])}"))
    for identity in sorted(set(have) & set(wanted), key=str):
        if (have[identity].get("value") or "") != (wanted[identity].get("value") or ""):
            have_value = have[identity].get("value") or ""
            wanted_value = wanted[identity].get("value") or ""
            found.append(
                problem(
                    "Node",
                    name,
                    f"taint {identity[0]}:{identity[1]} has value {have_value!r}, expected {wanted_value!r}",
                )
            )
    return found


def check_expected_nodes(expected):
    """K8sArgumentError unless expected_nodes is name -> {labels: dict, annotations: dict,
    allocatable: dict, taints: [{key, value, effect}], unschedulable: bool} (each key optional)."""
    for name, want in (expected or {}).items():
        where = f"expected_nodes[{name!r}]"
        if want is None:
            continue
        if not isinstance(want, dict) or set(want) - {*NODE_MAPS, "taints", "unschedulable"}:
            raise K8sArgumentError(
                f"{where} must be a dict with {', '.join(NODE_MAPS)}, taints and/or unschedulable, "
                f"got {want!r}",
                option="expected_nodes",
            )
        for field in NODE_MAPS:
            if not isinstance(want.get(field) or {}, dict):
                raise K8sArgumentError(
                    f"{where}.{field} must be a dict of name: value", option="expected_nodes"
                )
        taints = want.get("taints")
        if taints is not None and not (
            isinstance(taints, list)
            and all(isinstance(t, dict) and t.get("key") and t.get("effect") for t in taints)
        ):
            raise K8sArgumentError(
                f"{where}.taints must be a list of {{key, value, effect}} (key and effect required), "
                f"got {taints!r}",
                option="expected_nodes",
            )
        if not isinstance(want.get("unschedulable", False), bool):
            raise K8sArgumentError(f"{where}.unschedulable must be true or false", option="expected_nodes")


def pod_problems(pod, restart_threshold=3):
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    name, namespace = meta.get("name"), meta.get("namespace")
    phase = status.get("phase")
    if phase == "Succeeded":
        return []
    found = []
    reasons = []
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    for cstat in statuses:
        waiting = (cstat.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in BAD_WAITING_REASONS:
            reasons.append(f"container {cstat.get('name')} {waiting['reason']}")
        restarts = cstat.get("restartCount") or 0
        if restart_threshold and restarts >= restart_threshold:
            reasons.append(f"container {cstat.get('name')} restarted {restarts} times")
    if meta.get("deletionTimestamp"):
        reasons.append(f"terminating since {meta['deletionTimestamp']}")
    elif phase != "Running":
        why = status.get("reason") or ""
        sched = condition(pod, "PodScheduled")
        if sched and sched.get("status") == "False":
            why = f"unschedulable: {sched.get('message') or sched.get('reason')}"
        detail = f" ({why})" if why else ""
        reasons.append(f"phase {phase or 'unknown'}{detail}")
    elif not is_true(pod, "Ready"):
        reasons.append("not Ready")
    if reasons:
        found.append(problem("Pod", name, "; ".join(reasons), namespace))
    return found


# Set by playbooks/stop.yml -e hold=true (role workload_lifecycle): the workload stays at 0 in
# every layer 5 converge until playbooks/start.yml starts it; the value is the reason.
HOLD_ANNOTATION = "strata.io/held-stopped"


def workload_summary(obj):
    """A workload as the report shows it; ``state`` is what an operator means: ``stopped`` (scaled
    to 0 with nothing left), ``stopping`` (scaled to 0, replicas still there), ``ready`` or
    ``not ready``."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    replicas = (obj.get("spec") or {}).get("replicas", 1)
    ready = workload_is_ready(obj)
    states = {(True, True): "stopped", (True, False): "stopping", (False, True): "ready"}
    state = states.get((replicas == 0, ready), "not ready")
    return {
        "kind": obj.get("kind"),
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "replicas": replicas,
        "ready_replicas": status.get("readyReplicas", 0),
        "ready": ready,
        "state": state,
        "held_stopped": (meta.get("annotations") or {}).get(HOLD_ANNOTATION),
    }


class PodIndex:
    """Pods by namespace and by (namespace, label, value): a workload's candidates are the pods
    carrying one of its matchLabels (all of its namespace when it has none), so matching every
    workload costs about one pass over the pods, not workloads x pods."""

    def __init__(self, pods):
        self.by_namespace = {}
        self.by_label = {}
        for pod in pods:
            meta = pod.get("metadata") or {}
            namespace = meta.get("namespace")
            self.by_namespace.setdefault(namespace, []).append(pod)
            for key, value in (meta.get("labels") or {}).items():
                self.by_label.setdefault((namespace, key, value), []).append(pod)

    def candidates(self, namespace, selector):
        match_labels = (selector or {}).get("matchLabels") or {}
        if match_labels:
            key, value = min(match_labels.items())
            return self.by_label.get((namespace, key, value), [])
        return self.by_namespace.get(namespace, [])


def workload_pods(obj, pods):
    """The pods of ``obj``'s namespace its selector selects: name, node, phase, ready. ``pods``:
    a list, or a PodIndex of them when many workloads are matched."""
    meta = obj.get("metadata") or {}
    selector = (obj.get("spec") or {}).get("selector")
    if not isinstance(pods, PodIndex):
        pods = PodIndex(pods)
    return [
        {
            "name": (pod.get("metadata") or {}).get("name"),
            "node": (pod.get("spec") or {}).get("nodeName"),
            "phase": (pod.get("status") or {}).get("phase"),
            "ready": pod_is_ready(pod),
        }
        for pod in pods.candidates(meta.get("namespace"), selector)
        if selector_matches(selector, (pod.get("metadata") or {}).get("labels"))
    ]


def workload_problems(obj):
    info = workload_summary(obj)
    if info["ready"]:
        return []
    return [
        problem(
            info["kind"],
            info["name"],
            f"{info['ready_replicas']}/{info['replicas']} replicas ready",
            info["namespace"],
        )
    ]


def pv_path(pv):
    spec = pv.get("spec") or {}
    return ((spec.get("hostPath") or {}).get("path")) or ((spec.get("local") or {}).get("path"))


def pv_problems(pv, host_path_root=None, kind_mount_root=None, expected_host_path=None):
    """A PV whose hostPath is not the kind-node view of its host path.

    With expected_host_path (the path on the host), the PV must point at exactly its
    translation under kind_mount_root. Otherwise a PV path under host_path_root is the host's
    path used inside the node (the untranslated-path bug), and one outside kind_mount_root
    is not on the mounted storage at all.
    """
    name = (pv.get("metadata") or {}).get("name")
    path = pv_path(pv)
    if path is None:
        if expected_host_path:
            return [problem("PersistentVolume", name, "has no hostPath/local path (expected one)")]
        return []
    path = os.path.normpath(path)
    if expected_host_path:
        if not host_path_root or not kind_mount_root:
            return []
        want = kind_node_path(expected_host_path, host_path_root, kind_mount_root)
        if want is None:
            return [
                problem(
                    "PersistentVolume",
                    name,
                    f"expected host path {expected_host_path} is outside host_path_root {host_path_root}",
                )
            ]
        if path != want:
            return [
                problem(
                    "PersistentVolume",
                    name,
                    f"hostPath {path} should be {want} "
                    f"(host {expected_host_path} is mounted at {kind_mount_root} in the kind node)",
                )
            ]
        return []
    if (
        host_path_root
        and kind_mount_root
        and under_root(path, host_path_root)
        and not under_root(path, kind_mount_root)
    ):
        node_path = kind_node_path(path, host_path_root, kind_mount_root)
        return [
            problem(
                "PersistentVolume",
                name,
                f"hostPath {path} is a host path; inside the kind node it is {node_path}",
            )
        ]
    if kind_mount_root and not under_root(path, kind_mount_root):
        return [
            problem(
                "PersistentVolume",
                name,
                f"hostPath {path} is outside {kind_mount_root}, the kind node's view of the cluster storage",
            )
        ]
    return []


def summarize_problems(problems, counts, stopped=()):
    """One human line: 'healthy: 2 nodes, 5 pods ...' or 'N problems: first; second ...'. A
    workload scaled to 0 is not a problem, but it is not what "healthy" tells an operator either:
    'stopped 0/0: ns/name; nothing else wrong: 2 nodes ...'."""
    scope = ", ".join(f"{v} {k}" for k, v in counts.items())
    if stopped:
        scope = f"{scope} ({len(stopped)} stopped 0/0: {', '.join(stopped)})"
    if not problems:
        if stopped:
            return f"stopped 0/0: {', '.join(stopped)}; nothing else wrong: {scope}"
        return "healthy: " + scope
    shown = "; ".join(
        f"{p['kind']} {p['namespace'] + '/' if p.get('namespace') else ''}{p['name']}: {p['reason']}"
        for p in problems[:5]
    )
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return f"{len(problems)} problem(s) in {scope}: {shown}{more}"


def _missing_namespaces(client, namespaces, allow_missing):
    """The given namespaces that do not exist (K8sNotFound for the first, unless allow_missing)."""
    missing = []
    for name in namespaces or []:
        try:
            client.get_namespace(name)
        except K8sNotFound:
            if not allow_missing:
                raise
            missing.append(name)
    return missing


def _select_nodes(client, params, only_nodes, expected_nodes):
    """The nodes to report on (the named ones, each of which must exist, else all), read after
    waiting up to wait_timeout for the wanted ones to be Ready."""
    for name in only_nodes or []:
        client.get_node(name)  # unknown node: K8sNotFound listing the nodes that exist
    wanted = sorted(set(only_nodes or []) | set(expected_nodes))
    if params.get("wait_timeout"):
        predicate = named_ready(wanted, check=node_is_ready) if wanted else all_items(node_is_ready)
        try:
            nodes = client.watch_until("Node", predicate, timeout=params["wait_timeout"])["items"]
        except K8sTimeout:
            nodes, _rv = client.list("Node")  # report what is wrong instead of failing
    else:
        nodes, _rv = client.list("Node")
    if only_nodes:
        nodes = [n for n in nodes if object_key(n)[1] in only_nodes]
    return nodes


def _cluster_node_problems(client, nodes, node_info, only_nodes, expected_nodes):
    """'no node is registered' (unless nodes were named), each node's problems, then the expected nodes'."""
    problems = []
    if not nodes and not only_nodes:
        problems.append(problem("Cluster", client.host, "no node is registered"))
    for node in nodes:
        cordon_expected = bool((expected_nodes.get(object_key(node)[1]) or {}).get("unschedulable"))
        problems.extend(node_problems(node, cordon_expected))
    problems.extend(expected_node_problems(node_info, expected_nodes))
    return problems


def _list_pods_and_workloads(client, scopes):
    pods, workloads = [], []
    for namespace in scopes:
        pods.extend(client.list("Pod", namespace)[0])
        for kind in ("Deployment", "StatefulSet"):
            workloads.extend(client.list(kind, namespace)[0])
    return pods, workloads


def _pod_phases(pods):
    phases = {}
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase") or "Unknown"
        phases[phase] = phases.get(phase, 0) + 1
    return phases


def _pv_report(client, namespaces, expected_pvs, host_root, mount_root):
    """(pv_info, problems) for the PVs in scope: missing expected ones first, then each PV's."""
    pv_info, problems = [], []
    pvs, _rv = client.list("PersistentVolume")
    by_name = dict((object_key(p)[1], p) for p in pvs)
    for name in sorted(expected_pvs):
        if name not in by_name:
            problems.append(
                problem(
                    "PersistentVolume",
                    name,
                    f"expected PV does not exist (host path {expected_pvs[name]})",
                )
            )
    for pv in pvs:
        name = object_key(pv)[1]
        claim = (pv.get("spec") or {}).get("claimRef") or {}
        if namespaces and name not in expected_pvs and claim.get("namespace") not in namespaces:
            continue
        pv_info.append(
            {
                "name": name,
                "path": pv_path(pv),
                "claim": f"{claim.get('namespace')}/{claim.get('name')}" if claim else None,
                "phase": (pv.get("status") or {}).get("phase"),
            }
        )
        problems.extend(pv_problems(pv, host_root, mount_root, expected_pvs.get(name)))
    return pv_info, problems


def object_drift(desired, live, path=""):
    """Where ``live`` differs from the ``desired`` manifest, as dotted paths; empty when every
    field the manifest sets has that value in the live object, so that applying it (a merge of
    the manifest into the object) would change nothing. Fields the manifest leaves out (server
    defaults, status) are not compared; a list must have the manifest's length, each item
    compared the same way, in order. An empty value equals an absent one: the API server leaves
    empty fields out of what it returns (omitempty), e.g. storageClassName ""."""
    if live is None and desired in ("", [], {}):
        return []
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [path or "."]
        found = []
        for key, value in desired.items():
            found.extend(object_drift(value, live.get(key), f"{path}.{key}" if path else key))
        return found
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [path]
        found = []
        for index, (want, have) in enumerate(zip(desired, live)):
            found.extend(object_drift(want, have, f"{path}[{index}]"))
        return found
    if desired is None:
        return [] if live is None else [path]
    same = live == desired or (not isinstance(live, (dict, list)) and str(live) == str(desired))
    return [] if same else [path]


def objects_report(client, manifests):
    """For each manifest (apiVersion, kind, metadata.name, metadata.namespace): missing, or the
    fields where the live object differs from it (object_drift)."""
    found = []
    for manifest in manifests or []:
        if not isinstance(manifest, dict):  # an empty YAML document
            continue
        meta = manifest.get("metadata") or {}
        entry = {"kind": manifest.get("kind"), "name": meta.get("name"), "namespace": meta.get("namespace")}
        try:
            live = client.get(entry["kind"], entry["name"], entry["namespace"])
        except K8sNotFound:
            entry.update(missing=True, drift=[])
        else:
            entry.update(missing=False, drift=object_drift(manifest, live))
        found.append(entry)
    return found


def health_report(client, params):
    """The report of the ``cluster_health`` module: GET (and watch) requests only.

    params: namespaces, allow_missing_namespaces, nodes, expected_nodes, wait_timeout,
    restart_threshold, host_path_root, kind_mount_root, expected_pvs (missing keys mean "not
    given"). A namespace that does not exist fails (K8sNotFound listing those that do) unless
    allow_missing_namespaces; then it is reported in missing_namespaces.
    """
    namespaces = params.get("namespaces") or None
    only_nodes = params.get("nodes") or None
    expected_nodes = params.get("expected_nodes") or {}
    expected_pvs = params.get("expected_pvs") or {}
    host_root = params.get("host_path_root")
    mount_root = params.get("kind_mount_root")
    threshold = params.get("restart_threshold")
    threshold = 3 if threshold is None else threshold

    missing_namespaces = _missing_namespaces(client, namespaces, params.get("allow_missing_namespaces"))
    nodes = _select_nodes(client, params, only_nodes, expected_nodes)
    node_info = [node_summary(n) for n in nodes]
    problems = _cluster_node_problems(client, nodes, node_info, only_nodes, expected_nodes)

    scopes = [None] if namespaces is None else [n for n in namespaces if n not in missing_namespaces]
    pods, workloads = _list_pods_and_workloads(client, scopes)
    phases = _pod_phases(pods)
    for pod in pods:
        problems.extend(pod_problems(pod, threshold))
    for obj in workloads:
        problems.extend(workload_problems(obj))

    pv_info = []
    if mount_root or expected_pvs:
        pv_info, pv_problem_list = _pv_report(client, namespaces, expected_pvs, host_root, mount_root)
        problems.extend(pv_problem_list)

    counts = {
        "nodes": len(node_info),
        "pods": len(pods),
        "workloads": len(workloads),
        "persistent_volumes": len(pv_info),
    }
    pod_index = PodIndex(pods)
    workload_info = [dict(workload_summary(w), pods=workload_pods(w, pod_index)) for w in workloads]
    stopped = [f"{w['namespace']}/{w['name']}" for w in workload_info if w["state"] == "stopped"]
    return {
        "healthy": not problems,
        "problems": problems,
        "summary": summarize_problems(problems, counts, stopped),
        "stopped": stopped,
        "nodes": node_info,
        "workloads": workload_info,
        "pods": phases,
        "persistent_volumes": pv_info,
        "missing_namespaces": missing_namespaces,
        "objects": objects_report(client, params.get("expected_objects")),
        "api_server": client.host,
    }


def run(params, client_factory):
    """strata.ops.cluster_health: the report (read-only); with fail_on_problems a report with
    problems is an error whose details are the whole report."""
    check_expected_nodes(params["expected_nodes"])
    report = dict(health_report(client_factory(), params), changed=False)
    if params["fail_on_problems"] and not report["healthy"]:
        raise StrataError(report["summary"], error_kind="unhealthy", **report)
    return report
