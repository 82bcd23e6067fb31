# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""report.json: one health_check run as data (schema in docs/health-report.md)."""

from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument
from ansible_collections.strata.ops.plugins.module_utils.health_page.rows import check_expectations, host_rows
from ansible_collections.strata.ops.plugins.module_utils.health_page.sections import (
    activity_section,
    snapshot_section,
    usage_section,
)

SCHEMA = "strata.ops.health_report/1"
# What report.json keeps of a cluster_health result (annotations, resourceVersions and Ansible's
# own keys are left out: they are noise to an operator and can be large).
CLUSTER_KEYS = (
    "healthy",
    "summary",
    "problems",
    "stopped",
    "workloads",
    "pods",
    "persistent_volumes",
    "missing_namespaces",
    "api_server",
)
NODE_KEYS = ("name", "ready", "unschedulable", "labels", "taints", "allocatable")
HOST_KEYS = ("storage", "expect", "rows", "snapshots", "activity")


def check_params(params):
    """InvalidArgument for a host entry or cluster result that cannot be read, before anything is
    written."""
    if params.get("keep") is not None and params["keep"] < 1:
        raise InvalidArgument(f"keep must be 1 or more (runs listed in the index), got {params['keep']}")
    cluster = params.get("cluster")
    if cluster and not isinstance(cluster.get("problems", []), list):
        raise InvalidArgument(
            "cluster must be a strata.ops.cluster_health result (its problems is not a list)"
        )
    for host, entry in (params.get("hosts") or {}).items():
        if not isinstance(entry, dict) or set(entry) - set(HOST_KEYS):
            shown = sorted(entry) if isinstance(entry, dict) else entry
            raise InvalidArgument(
                f"hosts[{host!r}] must be a dict with storage (a strata.ops.storage_info result), "
                f"expect (the layer expectations) and/or rows; got {shown!r}"
            )
        for key in ("snapshots", "activity"):
            if entry.get(key) is not None and not isinstance(entry[key], dict):
                raise InvalidArgument(f"hosts[{host!r}].{key} must be a dict (the health_check role's read)")
        if entry.get("rows") is None:
            check_expectations(host, entry.get("expect") or [])
    controller = params.get("controller") or {}
    if set(controller) - {"name", "activity"} or not isinstance(controller.get("activity") or {}, dict):
        raise InvalidArgument(
            f"controller must be a dict with name and activity (the health_check role's read on the "
            f"controller); got {controller!r}"
        )


def slim_cluster(cluster):
    if not cluster:
        return None
    if cluster.get("failed") or "healthy" not in cluster:  # failed, or failed_when: false kept it going
        return {
            "healthy": False,
            "summary": f"the cluster could not be read: {cluster.get('msg')}",
            "problems": [
                {
                    "kind": "Cluster",
                    "name": cluster.get("api_server") or "?",
                    "reason": str(cluster.get("msg")),
                }
            ],
            "stopped": [],
            "nodes": [],
            "workloads": [],
            "pods": {},
            "persistent_volumes": [],
            "missing_namespaces": [],
            "api_server": cluster.get("api_server"),
        }
    out = {key: cluster.get(key) for key in CLUSTER_KEYS}
    out["problems"] = list(out["problems"] or [])
    out["stopped"] = list(out["stopped"] or [])
    out["workloads"] = list(out["workloads"] or [])
    out["persistent_volumes"] = list(out["persistent_volumes"] or [])
    out["pods"] = dict(out["pods"] or {})
    out["missing_namespaces"] = list(out["missing_namespaces"] or [])
    out["healthy"] = not out["problems"]
    out["nodes"] = [{key: node.get(key) for key in NODE_KEYS} for node in cluster.get("nodes") or []]
    return out


def _plural(count, word):
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def verdict_line(hosts, cluster):
    """The one line the page opens with: 'All fine: ...' or 'N problems: ...'."""
    broken = [(name, row) for name, host in hosts.items() for row in host["rows"] if not row["ok"]]
    cluster_problems = (cluster or {}).get("problems") or []
    total = len(broken) + len(cluster_problems)
    scope = []
    if cluster is not None:
        pods = sum((cluster.get("pods") or {}).values())
        scope.append(
            f"{_plural(len(cluster['nodes']), 'node')}, {_plural(pods, 'pod')}, "
            f"{_plural(len(cluster['workloads']), 'workload')}"
        )
    if not total:
        where = f"storage of {_plural(len(hosts), 'host')} as layers 2 and 4 want it"
        stopped = (cluster or {}).get("stopped") or []
        line = f"All fine: {where}" + (f"; cluster {scope[0]}" if scope else "; cluster not checked")
        if stopped:
            line += f" (stopped 0/0: {', '.join(stopped)})"
        return line
    parts = []
    if broken:
        on = sorted({name for name, _row in broken})
        parts.append(f"{_plural(len(broken), 'storage invariant')} broken on {', '.join(on)}")
    if cluster_problems:
        kinds = sorted({p.get("kind") or "?" for p in cluster_problems})
        parts.append(f"{len(cluster_problems)} in the cluster ({', '.join(kinds)})")
    return f"{_plural(total, 'problem')}: " + "; ".join(parts)


def build_report(params, generated_at, stamp):
    """The report dict: schema, time, verdict, counts, cluster (slimmed), hosts with their rows."""
    hosts = {}
    for name in sorted(params.get("hosts") or {}):
        entry = params["hosts"][name]
        storage = entry.get("storage") or {}
        hosts[name] = {
            "rows": host_rows(entry),
            "paths": storage.get("paths") if isinstance(storage.get("paths"), dict) else {},
            "pools": storage.get("pools") or {},
            "usage": usage_section(storage),
            "snapshots": snapshot_section(entry.get("snapshots")),
            "activity": activity_section(entry.get("activity")),
        }
    cluster = slim_cluster(params.get("cluster"))
    controller = params.get("controller") or {}
    controller_activity = activity_section(controller.get("activity"))
    broken = sum(1 for host in hosts.values() for row in host["rows"] if not row["ok"])
    cluster_problems = len(cluster["problems"]) if cluster else 0
    counts = {
        "problems": broken + cluster_problems,
        "storage_problems": broken,
        "cluster_problems": cluster_problems,
        "hosts": len(hosts),
        "rows": sum(len(host["rows"]) for host in hosts.values()),
        "nodes": len(cluster["nodes"]) if cluster else 0,
        "pods": sum((cluster["pods"] or {}).values()) if cluster else 0,
        "workloads": len(cluster["workloads"]) if cluster else 0,
        "persistent_volumes": len(cluster["persistent_volumes"]) if cluster else 0,
        # not problems: a stale or missing snapshot is what the next deploy fetches
        "snapshot_warnings": sum(
            1 for host in hosts.values() if (host["snapshots"] or {}).get("state") in ("warn", "bad")
        ),
    }
    return {
        "schema": SCHEMA,
        "generated_at": generated_at,
        "stamp": stamp,
        "healthy": counts["problems"] == 0,
        "problems": counts["problems"],
        "verdict": verdict_line(hosts, cluster),
        "counts": counts,
        "cluster": cluster,
        "hosts": hosts,
        # the controller's own reads (runner isolation kept there); null when it has none
        "controller": {"name": controller.get("name") or "localhost", "activity": controller_activity}
        if controller_activity and any(controller_activity.values())
        else None,
    }


def broken_lines(report):
    """One console line per red row: 'host: problem. Layer N fixes it: ...'."""
    return [
        f"{name}: {row['problem']}. {row['fix']}"
        for name, host in report["hosts"].items()
        for row in host["rows"]
        if not row["ok"]
    ]
