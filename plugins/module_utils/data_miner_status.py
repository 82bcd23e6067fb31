# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The data-miner pipeline's status: its cluster_config.yaml (checked, references resolved) against
the live nodes, workloads and pods that kubernetes.core.k8s_info read.

Pure and deterministic: the same input gives the same rows, problems and report lines. What the
config expects is what ``data_miner.render`` makes of it (object names, kinds, replicas, the node
affinity that places each pod), so status and deploy cannot disagree on it.
"""

from ansible_collections.strata.ops.plugins.module_utils import data_miner
from ansible_collections.strata.ops.plugins.module_utils.cluster_config import nodes as config_nodes

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
# component label -> the section of cluster_config.yaml the workload comes from
SECTIONS = {"worker": "workers", "infrastructure": "infrastructure", "seaweedfs": "seaweedfs"}
SECTION_ORDER = ("workers", "infrastructure", "seaweedfs")
# Waiting reasons the kubelet gives when it has no image to start (imagePullPolicy Never: only an
# import puts it there).
IMAGE_REASONS = ("ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull", "InvalidImageName")
IMAGE_HINT = "import the image: playbooks/data_miner/images.yml"
DEPLOY_HINT = "run playbooks/data_miner/deploy.yml"
NAME_LABEL = "app.kubernetes.io/name"


def _get(obj, *path, default=None):
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return default
        obj = obj[key]
    return default if obj is None else obj


def _condition(obj, kind):
    for condition in _get(obj, "status", "conditions", default=[]):
        if condition.get("type") == kind:
            return condition
    return None


def _terms(workload):
    """The rendered workload's required node affinity: a list of matchExpressions lists (ORed)."""
    affinity = _get(workload, "spec", "template", "spec", "affinity", "nodeAffinity", default={})
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    return [term.get("matchExpressions") or [] for term in required.get("nodeSelectorTerms") or []]


def _allows(terms, node, labels):
    """Whether a node may hold the pod: the hostname key is the node's name (what the config names),
    any other key one of the node's live labels. The renderer only writes operator In."""
    if not terms:
        return True
    for expressions in terms:
        if all(
            (node if e["key"] == data_miner.HOSTNAME else labels.get(e["key"])) in e.get("values", [])
            for e in expressions
        ):
            return True
    return False


def _allowed_text(terms):
    words = []
    for expressions in terms:
        for e in expressions:
            values = ", ".join(e.get("values", []))
            words.append(values if e["key"] == data_miner.HOSTNAME else f"nodes labelled {e['key']}={values}")
    return "; ".join(words) or "any node"


def expected_labels(node):
    """The labels a config node must carry: its own, the GPU label on GPU nodes (the cluster role sets
    it, the GPU workloads and the device plugin select on it) and its name as the hostname label
    (every pod's placement names nodes by it)."""
    labels = {data_miner.HOSTNAME: node["name"]}
    if node["gpu"]:
        labels[data_miner.GPU_LABEL] = "true"
    labels.update(node["labels"])
    return labels


def node_rows(doc, live_nodes):
    """One row per config node (master first), and the problems found."""
    live = {_get(n, "metadata", "name"): n for n in live_nodes}
    rows, problems = [], []
    for node in config_nodes(doc):
        name = node["name"]
        role = (
            node["role"]
            + (", gpu" if node["gpu"] else "")
            + (", storage-only" if node["storage_only"] else "")
        )
        row = {"name": name, "role": role, "state": "Ready", "labels_missing": []}
        obj = live.get(name)
        if obj is None:
            row["state"] = "missing"
            problems.append(
                f"node {name}: not in the cluster (not joined, or registered under another name); "
                "playbooks/data_miner/provision.yml installs k3s there"
            )
            rows.append(row)
            continue
        ready = _condition(obj, "Ready") or {}
        if ready.get("status") != "True":
            row["state"] = "NotReady"
            why = ": ".join(part for part in (ready.get("reason"), ready.get("message")) if part)
            problems.append(f"node {name}: NotReady" + (f" ({why})" if why else ""))
        if _get(obj, "spec", "unschedulable", default=False):
            row["state"] += ", cordoned"
            problems.append(f"node {name}: cordoned, no new pod lands there (kubectl uncordon {name})")
        labels = _get(obj, "metadata", "labels", default={})
        for key, value in sorted(expected_labels(node).items()):
            if labels.get(key) != value:
                have = f"is {labels[key]!r}" if key in labels else "is missing"
                row["labels_missing"].append(f"{key}={value}")
                # k3s applies its node-label setting only when a node registers
                problems.append(
                    f"node {name}: label {key}={value} {have} ({_label_source(name, key)}); "
                    f"kubectl label node {name} {key}={value} --overwrite"
                )
        rows.append(row)
    return rows, problems


def _label_source(name, key):
    if key == data_miner.HOSTNAME:
        return "placement names nodes by it"
    if key == data_miner.GPU_LABEL:
        return f"cluster.nodes.{name} is a GPU node"
    return f"cluster.nodes.{name}.labels"


def expected_workloads(doc):
    """What the config renders, keyed by (kind, namespace, name): section, replicas (None for a
    DaemonSet), the config path of the replicas and the placement terms."""
    out = {}
    for obj in data_miner.render(doc):
        if obj["kind"] not in WORKLOAD_KINDS:
            continue
        meta = obj["metadata"]
        section = SECTIONS[meta["labels"]["app.kubernetes.io/component"]]
        path = f"{section}.{meta['name']}.replicas" if section != "seaweedfs" else None
        out[(obj["kind"], meta["namespace"], meta["name"])] = {
            "section": section,
            "replicas": obj["spec"].get("replicas"),
            "path": path,
            "terms": _terms(obj),
        }
    return out


def workload_rows(expected, live_workloads):
    """One row per rendered workload (and per live one the config no longer renders)."""
    live = {
        (o.get("kind"), _get(o, "metadata", "namespace"), _get(o, "metadata", "name")): o
        for o in live_workloads
    }
    rows, problems = [], []
    for key in sorted(set(expected) | set(live), key=lambda k: _workload_order(k, expected)):
        kind, namespace, name = key
        want = expected.get(key)
        obj = live.get(key)
        label = f"{kind} {namespace}/{name}"
        row = {
            "section": want["section"] if want else "-",
            "kind": kind,
            "namespace": namespace,
            "name": name,
            "config": None,
            "spec": None,
            "ready": None,
            "state": "ok",
        }
        if want is None:
            row["state"] = "not in the config"
            problems.append(f"{label}: not in the config (the next deploy prunes it)")
            rows.append(row)
            continue
        if kind == "DaemonSet":
            # one pod per node the placement names; None when it selects by a label instead
            names = {
                v
                for terms in want["terms"]
                for e in terms
                if e["key"] == data_miner.HOSTNAME
                for v in e["values"]
            }
            row["config"] = len(names) or None
        else:
            row["config"] = want["replicas"]
        if obj is None:
            row["state"] = "missing"
            problems.append(f"{label}: missing; {DEPLOY_HINT}")
            rows.append(row)
            continue
        status = obj.get("status") or {}
        if kind == "DaemonSet":
            row["spec"] = status.get("desiredNumberScheduled", 0)
            row["ready"] = status.get("numberReady", 0)
        else:
            row["spec"] = _get(obj, "spec", "replicas", default=1)
            row["ready"] = status.get("readyReplicas", 0)
        states = []
        if kind != "DaemonSet" and row["spec"] != row["config"]:
            states.append("drift")
            where = f"{want['path']} in cluster_config.yaml" if want["path"] else "the config"
            problems.append(
                f"{label}: {row['spec']} replicas, but {where} says {row['config']} (kubectl scale or "
                f"playbooks/data_miner/scale.yml?); the next deploy sets {row['config']} again"
            )
        if row["ready"] < row["spec"]:
            states.append("not ready")
            problems.append(f"{label}: {row['ready']}/{row['spec']} ready")
        row["state"] = ", ".join(states) or "ok"
        rows.append(row)
    return rows, problems


def _workload_order(key, expected):
    want = expected.get(key)
    section = SECTION_ORDER.index(want["section"]) if want else len(SECTION_ORDER)
    return (section, key[2], key[0], key[1])


def pod_state(pod):
    """(state, problem or None): why a pod is not Running and Ready, in the kubelet's words, with the
    fix where there is one. A terminating pod is on its way out: not a problem."""
    status = pod.get("status") or {}
    phase = status.get("phase", "Unknown")
    if _get(pod, "metadata", "deletionTimestamp"):
        return "Terminating", None
    scheduled = _condition(pod, "PodScheduled") or {}
    if phase == "Pending" and scheduled.get("status") == "False":
        why = scheduled.get("message") or scheduled.get("reason") or "not scheduled"
        return "Pending", f"Pending, not scheduled: {why}"
    statuses = list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or [])
    for container in statuses:
        waiting = _get(container, "state", "waiting")
        if waiting and waiting.get("reason") not in (None, "PodInitializing", "ContainerCreating"):
            return waiting["reason"], _waiting_problem(container, waiting)
        terminated = _get(container, "state", "terminated")
        if terminated and phase != "Succeeded" and terminated.get("exitCode", 0) != 0:
            return "Error", (
                f"container {container.get('name')} exited {terminated.get('exitCode')} "
                f"({terminated.get('reason', 'Error')})"
            )
    if phase in ("Failed", "Unknown", "Succeeded"):
        why = ": ".join(part for part in (status.get("reason"), status.get("message")) if part)
        return phase, phase + (f" ({why})" if why else "")
    if phase == "Pending":
        return "Pending", "Pending: " + (status.get("message") or "containers not started")
    ready = _condition(pod, "Ready") or {}
    if ready.get("status") != "True":
        why = ready.get("message") or ready.get("reason")
        return "NotReady", "Running, not ready" + (f" ({why})" if why else "")
    return "Running", None


def _waiting_problem(container, waiting):
    reason = waiting["reason"]
    if reason in IMAGE_REASONS:
        return f"{reason} ({container.get('image')}): {IMAGE_HINT}"
    if reason == "CrashLoopBackOff":
        last = _get(container, "lastState", "terminated", default={})
        exit_text = f", last exit {last.get('exitCode')} ({last.get('reason', 'Error')})" if last else ""
        restarts = container.get("restartCount", 0)
        return (
            f"CrashLoopBackOff (container {container.get('name')}, {restarts} restarts{exit_text}); "
            "kubectl logs --previous shows why"
        )
    message = waiting.get("message")
    return reason + (f": {message}" if message else "")


def pod_rows(expected, live_nodes, pods):
    """One row per pod of the pipeline, and the problems: not Running/Ready, or on a node its
    workload's placement (from the config) does not allow."""
    labels_of = {_get(n, "metadata", "name"): _get(n, "metadata", "labels", default={}) for n in live_nodes}
    terms_of = {(ns, name): want["terms"] for (_kind, ns, name), want in expected.items()}
    rows, problems = [], []
    ordered = sorted(
        pods, key=lambda p: (_get(p, "metadata", "namespace", default=""), _get(p, "metadata", "name"))
    )
    for pod in ordered:
        namespace = _get(pod, "metadata", "namespace", default="")
        name = _get(pod, "metadata", "name")
        workload = _get(pod, "metadata", "labels", NAME_LABEL, default="")
        node = _get(pod, "spec", "nodeName", default="")
        state, problem = pod_state(pod)
        row = {
            "namespace": namespace,
            "name": name,
            "workload": workload,
            "node": node or "-",
            "state": state,
        }
        found = []
        if problem:
            found.append(problem)
        terms = terms_of.get((namespace, workload))
        if node and terms is not None and not _allows(terms, node, labels_of.get(node, {})):
            allowed = _allowed_text(terms)
            found.append(
                f"on {node}, which the config does not allow for {workload} (allowed: {allowed}); "
                "placement drift: delete the pod to have it placed again"
            )
        row["problem"] = "; ".join(found)
        problems.extend(f"pod {namespace}/{name}: {text}" for text in found)
        rows.append(row)
    return rows, problems


def table(headers, rows):
    """Text lines of a left-aligned table, columns as wide as their widest cell."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]


def status(doc, live_nodes, live_workloads, pods):
    """The whole status of a checked, resolved config against the live objects: a dict with the rows
    (nodes, workloads, pods), the problems, the verdict and the report (text lines)."""
    doc = data_miner.plain(doc)
    live_nodes = list(live_nodes or [])
    expected = expected_workloads(doc)
    nodes, node_problems = node_rows(doc, live_nodes)
    workloads, workload_problems = workload_rows(expected, live_workloads or [])
    pod_list, pod_problems = pod_rows(expected, live_nodes, pods or [])
    problems = node_problems + workload_problems + pod_problems
    known = {n["name"] for n in nodes}
    others = sorted(
        _get(n, "metadata", "name") for n in live_nodes if _get(n, "metadata", "name") not in known
    )
    verdict = "degraded" if problems else "healthy"
    unwell = [p for p in pod_list if p["problem"]]
    terminating = sum(1 for p in pod_list if p["state"] == "Terminating")
    report = ["Nodes"]
    report += table(
        ["NODE", "ROLE", "STATE", "LABELS MISSING"],
        [[n["name"], n["role"], n["state"], ", ".join(n["labels_missing"])] for n in nodes],
    )
    if others:
        report.append(f"({len(others)} other node(s) in the cluster, not in the config)")
    report += ["", "Workloads"]
    report += table(
        ["SECTION", "KIND", "NAMESPACE/NAME", "CONFIG", "SPEC", "READY", "STATE"],
        [
            [
                w["section"],
                w["kind"],
                f"{w['namespace']}/{w['name']}",
                w["config"],
                w["spec"],
                w["ready"],
                w["state"],
            ]
            for w in workloads
        ],
    )
    report += ["", "Pods"]
    if unwell:
        report += table(
            ["NAMESPACE/POD", "NODE", "STATE", "PROBLEM"],
            [[f"{p['namespace']}/{p['name']}", p["node"], p["state"], p["problem"]] for p in unwell],
        )
    elif len(pod_list) > terminating:
        report.append(f"all {len(pod_list) - terminating} pod(s) Running and Ready where the config allows")
    else:
        report.append("no pod of the pipeline")
    if terminating:
        report.append(f"({terminating} pod(s) terminating)")
    running = len(pod_list) - terminating
    summary = (
        f"healthy: {len(nodes)} nodes, {len(workloads)} workloads, {running} pods as the config says"
        if not problems
        else f"degraded: {len(problems)} problem(s)"
    )
    report += ["", summary] + [f"  - {p}" for p in problems]
    return {
        "verdict": verdict,
        "healthy": not problems,
        "problems": problems,
        "summary": summary,
        "nodes": nodes,
        "other_nodes": others,
        "workloads": workloads,
        "pods": pod_list,
        "report": report,
    }
