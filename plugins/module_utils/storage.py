# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""strata.ops.storage_info: one read of what backs the paths, the pools' health, the host memory a
tmpfs must fit in, and what zfs_dataset would change (kept out of mounts.py, which filters import
and which must stay light)."""

from ansible_collections.strata.ops.plugins.module_utils.mounts import (
    memory_total_bytes,
    pool_states,
    storage_report,
)
from ansible_collections.strata.ops.plugins.module_utils.zfs.ensure import plan_report


def storage_info(params, run_command, *, get_bin_path):
    """storage_info's result (``changed`` false) for its params: paths, expect, pools, zfs_plan."""
    result = dict(changed=False, **storage_report(params["paths"] or [], params["expect"] or []))
    pools = params["pools"] or []
    result["pools"] = pool_states(pools, run_command, get_bin_path("zpool") if pools else None)
    result["memory_total_bytes"] = memory_total_bytes()
    plan = params["zfs_plan"]
    result["zfs_plan"] = plan and plan_report(plan, run_command, get_bin_path=get_bin_path)
    return result
