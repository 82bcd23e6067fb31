# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What is checked before anything is read or changed: the parameters, a state file's record, a
node selector against the node's labels, an edit made to the runner config while isolated."""

import base64
import binascii
import difflib
import hashlib

from ansible_collections.strata.ops.plugins.module_utils import runner_config as rc
from ansible_collections.strata.ops.plugins.module_utils import state as st
from ansible_collections.strata.ops.plugins.module_utils.k8s.objects import workload_ref
from ansible_collections.strata.ops.plugins.module_utils.runner_isolation import STATE_OPERATION


def b64_of(data):
    return base64.b64encode(data).decode("ascii")


def bytes_of_b64(text):
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (AttributeError, UnicodeEncodeError, binascii.Error) as exc:
        raise st.StateError(f"the recorded runner config is not base64 ({exc})") from None


def sha256_of(data):
    return hashlib.sha256(data).hexdigest()


def runner_paused(runner):
    if "paused" in runner and runner["paused"] is not None:
        return bool(runner["paused"])
    return not runner.get("active", True)  # GitLab before 14.8 reports only 'active'


def node_view(node):
    """What isolation reads of a Node (taints exactly as the API has them, timeAdded kept)."""
    meta, spec = node.get("metadata") or {}, node.get("spec") or {}
    return {
        "name": meta.get("name"),
        "taints": spec.get("taints") or [],
        "labels": meta.get("labels") or {},
        "unschedulable": bool(spec.get("unschedulable")),
        "resourceVersion": meta.get("resourceVersion"),
    }


def workload_text(w):
    return workload_ref(w["kind"], w["name"], w["namespace"])


def config_edits(written, current, label):
    """A unified diff from the bytes ``isolated`` wrote to ``current`` (None: the file is gone)."""

    def lines(data):
        return [] if data is None else data.decode("utf-8", "replace").splitlines(True)

    return "".join(
        difflib.unified_diff(
            lines(written), lines(current), f"{label} (as state=isolated wrote it)", f"{label} (now)"
        )
    )


def selector_missing(selector, labels):
    """The entries of a node selector that ``labels`` do not carry."""
    return {k: v for k, v in (selector or {}).items() if (labels or {}).get(k) != v}


# numeric options: (name, smallest value, what it is)
LIMITS = (
    ("job_wait_timeout", 0, "seconds"),
    ("job_poll_interval", 0.01, "seconds"),
    ("gitlab_timeout", 1, "seconds"),
    ("gitlab_max_retries", 0, "retries"),
    ("gitlab_max_retry_wait", 0, "seconds"),
    ("rollout_timeout", 0, "seconds"),
    ("lock_timeout", 0, "seconds"),
)


def input_problems(p):
    """What is wrong with the module's parameters ``p`` (a list; empty when nothing), checked
    before anything is read or changed."""
    problems = [
        f"{name} must be {least} {unit} or more, got {p[name]}"
        for name, least, unit in LIMITS
        if p.get(name) is not None and p[name] < least
    ]
    graceful = []
    for w in p.get("workloads") or []:
        if w.get("exit_command") is not None and not w["exit_command"]:
            problems.append(
                f"exit_command of {workload_text(w)} is empty: give the command as a list, or leave it out"
            )
        elif w.get("exit_command"):
            graceful.append(workload_text(w))
            if (w.get("exit_timeout") or 0) < 1:
                problems.append(f"exit_timeout of {workload_text(w)} must be 1 second or more")
    if graceful and p.get("rollout_timeout", 1) < 1:
        problems.append(
            "rollout_timeout must be 1 second or more when a workload has an exit_command "
            f"({', '.join(graceful)}): its graceful stop waits until its pods are gone, and then until it "
            "is Ready again"
        )
    if p.get("state") != "isolated":
        return problems
    if p.get("runners") and not p.get("gitlab_url"):
        problems.append("runners needs gitlab_url: the GitLab whose runners to pause")
    problems.extend(
        rc.settings_problems(
            p.get("concurrent"), p.get("node_selector"), p.get("cpu_request"), p.get("memory_request")
        )
    )
    # a taint's key and value follow the label rules (validateNodeTaints in Kubernetes)
    taint = p.get("taint") or {}
    for part, check in (("key", rc.label_key_problem), ("value", rc.label_value_problem)):
        problem = check(taint.get(part) or "")
        if problem:
            problems.append(f"taint.{part} {taint.get(part)!r} {problem} ({rc.LABEL_RULE})")
    problems.extend(rc.labels_problems("node_labels", p.get("node_labels") or {}))
    return problems


RECORD_SHAPE = {
    "settings": dict,
    "runners": list,
    "workloads": list,
}

SETTINGS_SHAPE = {"taint": (dict, type(None)), "node_labels": dict, "cordon": bool, "config": dict}


def record_problems(recorded):
    """What makes a state file unusable for ``restored`` (a list; empty when it is usable)."""
    problems = []
    if recorded.get("operation") != STATE_OPERATION:
        return [f"it is not a runner isolation state file (operation {recorded.get('operation')!r})"]
    for key, kind in RECORD_SHAPE.items():
        if not isinstance(recorded.get(key), kind):
            problems.append(f"{key!r} is missing or not a {kind.__name__}")
    settings = recorded.get("settings") if isinstance(recorded.get("settings"), dict) else {}
    for key, kind in SETTINGS_SHAPE.items():
        if not isinstance(settings.get(key), kind):
            problems.append(f"settings.{key} is missing or has the wrong type")
    for runner in recorded.get("runners") or []:
        if not (isinstance(runner, dict) and "id" in runner and isinstance(runner.get("paused"), bool)):
            problems.append("a runner entry lacks its id or paused flag")
    for w in recorded.get("workloads") or []:
        if not (
            isinstance(w, dict) and all(isinstance(w.get(k), str) for k in ("kind", "namespace", "name"))
        ):
            problems.append("a workload entry lacks its kind, namespace or name")
    node = recorded.get("node")
    if node is not None and not (
        isinstance(node, dict)
        and isinstance(node.get("name"), str)
        and isinstance(node.get("taints"), list)
        and isinstance(node.get("labels"), dict)
        and settings.get("taint")
    ):
        problems.append("the node record lacks its name, taints, labels or the taint setting")
    config = recorded.get("config")
    if config is not None and not (
        isinstance(config, dict) and config.get("mode") in ("file", "configmap") and "content_b64" in config
    ):
        problems.append("the runner config record lacks its mode or content")
    return problems
