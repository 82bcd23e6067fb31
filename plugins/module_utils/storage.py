# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""strata.ops.storage_info: one read of what backs the paths, the pools' health, the host memory a
tmpfs must fit in, and what zfs_dataset would change (kept out of mounts.py, which filters import
and which must stay light). With ``usage``: how full each pool, dataset and tmpfs is."""

import os

from ansible_collections.strata.ops.plugins.module_utils.mounts import (
    memory_total_bytes,
    pool_states,
    storage_report,
)
from ansible_collections.strata.ops.plugins.module_utils.zfs.ensure import plan_report

# zpool list prints sizes with binary suffixes (both dialects; zfs-fuse has no -p).
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5, "E": 1024**6}
POOL_COLUMNS = "name,size,allocated,free,capacity,health"
DATASET_PROPERTIES = ("used", "available", "quota", "refquota")


def human_to_bytes(text):
    """'1016M' -> 1065353216, '1.64M' -> 1719664, '-' -> None (zpool list's own units)."""
    text = (text or "").strip()
    unit = text[-1:].upper() if text[-1:].isalpha() else ""
    try:
        return int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
    except (KeyError, ValueError):
        return None


def percent(used, total):
    return round(100.0 * used / total, 1) if used is not None and total else None


def pool_usage(names, run_command, zpool):
    """pool_states plus size_bytes, allocated_bytes, free_bytes and capacity_percent, from one
    ``zpool list`` per pool (sizes as zpool prints them, three significant digits)."""
    states = {}
    for name in names:
        state = {"size_bytes": None, "allocated_bytes": None, "free_bytes": None, "capacity_percent": None}
        if zpool is None:
            states[name] = dict(state, **pool_states([name], run_command, None)[name])
            continue
        rc, out, err = run_command([zpool, "list", "-H", "-o", POOL_COLUMNS, name])
        fields = out.strip().split("\t")
        if rc != 0 or len(fields) != 6:
            error = (err or out).strip() or f"zpool list {name}: rc={rc}"
            states[name] = dict(state, health=None, error=error)
            continue
        capacity = fields[4].rstrip("%")
        states[name] = dict(
            health=fields[5],
            error=None,
            size_bytes=human_to_bytes(fields[1]),
            allocated_bytes=human_to_bytes(fields[2]),
            free_bytes=human_to_bytes(fields[3]),
            capacity_percent=int(capacity) if capacity.isdigit() else None,
        )
    return states


def _dataset_usage(datasets, run_command, zfs):
    """{dataset: usage} from one ``zfs get -Hp`` (exact bytes in both dialects); a quota of 0 is
    none. Datasets it could not read are left out; the error is returned with them."""
    if not datasets:
        return {}, None
    if zfs is None:
        return {}, "the zfs command is not installed (layer 1 installs ZFS)"
    argv = [zfs, "get", "-Hp", "-o", "name,property,value", ",".join(DATASET_PROPERTIES), *sorted(datasets)]
    rc, out, err = run_command(argv)
    values = {}
    for line in out.splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[1] in DATASET_PROPERTIES:
            number = int(fields[2]) if fields[2].isdigit() else None
            if fields[1].endswith("quota") and not number:
                number = None  # quota 0 means none
            values.setdefault(fields[0], {})[fields[1]] = number
    usage = {}
    for name, props in values.items():
        used, available = props.get("used"), props.get("available")
        limit = props.get("refquota") or props.get("quota")
        total = limit or (used + available if used is not None and available is not None else None)
        usage[name] = {
            "used_bytes": used,
            "available_bytes": available,
            "quota_bytes": props.get("quota"),
            "refquota_bytes": props.get("refquota"),
            "percent": percent(used, total),
        }
    return usage, ((err or out).strip() or f"zfs get: rc={rc}") if rc != 0 else None


def _tmpfs_usage(path, statvfs=os.statvfs):
    try:
        vfs = statvfs(path)
    except OSError as exc:
        return {"error": f"statvfs {path}: {exc.strerror or exc}"}
    size = vfs.f_blocks * vfs.f_frsize
    used = (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
    return {
        "size_bytes": size,
        "used_bytes": used,
        "available_bytes": vfs.f_bavail * vfs.f_frsize,
        "percent": percent(used, size),
    }


def add_usage(paths, run_command, zfs, statvfs=os.statvfs):
    """Set ``usage`` on every path fact: a tmpfs's fill, a mounted dataset's used/available and
    quotas, null for other kinds."""
    datasets = {fact["dataset"] for fact in paths.values() if fact["kind"] == "zfs" and fact["dataset"]}
    by_dataset, error = _dataset_usage(datasets, run_command, zfs)
    for fact in paths.values():
        if fact["kind"] == "tmpfs":
            fact["usage"] = _tmpfs_usage(fact["resolved"], statvfs)
        elif fact["kind"] == "zfs":
            fact["usage"] = by_dataset.get(fact["dataset"]) or {"error": error or "zfs get did not list it"}
        else:
            fact["usage"] = None


def storage_info(params, run_command, *, get_bin_path):
    """storage_info's result (``changed`` false) for its params: paths, expect, pools, zfs_plan, usage."""
    result = dict(changed=False, **storage_report(params["paths"] or [], params["expect"] or []))
    pools = params["pools"] or []
    zpool = get_bin_path("zpool") if pools else None
    if params.get("usage"):
        result["pools"] = pool_usage(pools, run_command, zpool)
        zfs_backed = any(fact["kind"] == "zfs" for fact in result["paths"].values())
        add_usage(result["paths"], run_command, get_bin_path("zfs") if zfs_backed else None)
    else:
        result["pools"] = pool_states(pools, run_command, zpool)
    result["memory_total_bytes"] = memory_total_bytes()
    plan = params["zfs_plan"]
    result["zfs_plan"] = plan and plan_report(plan, run_command, get_bin_path=get_bin_path)
    return result
