# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""strata.ops.zfs_snapshot: one snapshot per dataset under a name prefix, and a retention that
destroys only older snapshots of that prefix. Planned as data first (check mode is exact)."""

import re
import time

from ansible_collections.strata.ops.plugins.module_utils.zfs import ZfsError, ZfsValidationError
from ansible_collections.strata.ops.plugins.module_utils.zfs.backend import ZfsBackend
from ansible_collections.strata.ops.plugins.module_utils.zfs.ensure import journal_details
from ansible_collections.strata.ops.plugins.module_utils.zfs.properties import (
    MAX_NAME_LENGTH,
    validate_dataset_name,
)

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"

# What zfs accepts after the @ (zfs_namecheck.c: letters, digits and _ - . : and space; no space here).
_SNAP_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")


def utc_stamp(now=None):
    """The UTC stamp of a snapshot name: 20260521T093500Z (sorts as time does)."""
    return time.strftime(STAMP_FORMAT, time.gmtime(now))


def validate(params):
    """Every problem of the request (names, prefix, stamp, keep), as strings."""
    problems = [p for p in (validate_dataset_name(name) for name in params["datasets"]) if p]
    if not params["datasets"]:
        problems.append("datasets is empty: name at least one filesystem to snapshot")
    snap = params["prefix"] + params["stamp"]
    if not params["prefix"] or not _SNAP_RE.match(snap):
        problems.append(
            f"snapshot name {snap!r} (prefix {params['prefix']!r} + stamp {params['stamp']!r}) is invalid:"
            " use letters, digits and _ . : - and a non-empty prefix"
        )
    for name in params["datasets"]:
        if len(f"{name}@{snap}") > MAX_NAME_LENGTH:
            problems.append(f"snapshot {name}@{snap} is longer than {MAX_NAME_LENGTH} characters")
    if params["keep"] is not None and params["keep"] < 1:
        problems.append(
            f"keep={params['keep']}: keep must be at least 1 (the snapshot just taken counts);"
            " leave it unset to destroy nothing"
        )
    return problems


def plan(params, snapshots):
    """Per dataset: the snapshot to take (or that exists), the prefix's snapshots the retention
    destroys (oldest first) and those it keeps. ``snapshots``: backend.own_snapshots()[0]."""
    snap = params["prefix"] + params["stamp"]
    items = []
    for name in params["datasets"]:
        full = f"{name}@{snap}"
        ours = [s for _created, s in snapshots[name] if s.startswith(f"{name}@{params['prefix']}")]
        exists = full in ours
        if not exists:
            ours.append(full)  # newest: taken now
        keep = params["keep"]
        destroy = ours[:-keep] if keep else []
        items.append(
            {
                "dataset": name,
                "snapshot": full,
                "action": "existed" if exists else "taken",
                "destroyed": destroy,
                "kept": [s for s in ours if s not in destroy],
                "rollback": f"zfs rollback {full}",
                "clone": f"zfs clone {full} {name}-restore",
            }
        )
    return items


def run(params, check_mode, run_command, *, get_bin_path):
    """The module's result; a ZfsError says what was done before a failure."""
    zfs = get_bin_path("zfs")
    if not zfs:
        raise ZfsError("the zfs command was not found on this host; install ZFS (OpenZFS or zfs-fuse) first")
    params = dict(params, stamp=params["stamp"] or utc_stamp())
    problems = validate(params)
    if problems:
        raise ZfsValidationError("; ".join(problems) + ". Nothing was changed.", errors=problems)
    backend = ZfsBackend(run_command, zfs=zfs)
    snapshots, types, missing = backend.own_snapshots(params["datasets"])
    wrong = sorted(n for n, kind in types.items() if kind not in ("filesystem", "volume"))
    if missing or wrong:
        why = [f"{n}: dataset does not exist" for n in missing] + [f"{n}: it is a {types[n]}" for n in wrong]
        raise ZfsValidationError(
            "cannot snapshot " + "; ".join(why) + ". Nothing was changed.",
            commands=backend.commands,
        )
    items = plan(params, snapshots)
    if not check_mode:
        try:
            # Every new snapshot first: a failed take never costs an older rollback point.
            for item in items:
                if item["action"] == "taken":
                    backend.snapshot(item["snapshot"])
            for item in items:
                for old in item["destroyed"]:
                    backend.destroy(old)
        except ZfsError as exc:
            details = journal_details(backend.journal)
            exc.details.update(details, commands=backend.commands)
            exc.msg += (
                f" -- stopped part way; done before the failure: {'; '.join(details['done'])}."
                if details["done"]
                else " -- nothing was changed."
            )
            raise
    taken = [i["snapshot"] for i in items if i["action"] == "taken"]
    destroyed = [s for i in items for s in i["destroyed"]]
    verb = ("would take " if check_mode else "took ") if taken else "nothing to take"
    msg = verb + ", ".join(taken)
    if destroyed:
        msg += ("; would destroy " if check_mode else "; destroyed ") + ", ".join(destroyed)
    msg += f" (keep {params['keep']} of {params['prefix']}*)" if params["keep"] else ""
    return {
        "changed": bool(taken or destroyed),
        "snapshots": items,
        "taken": taken,
        "destroyed": destroyed,
        "stamp": params["stamp"],
        "write_path": "cli",
        "msg": msg,
    }
