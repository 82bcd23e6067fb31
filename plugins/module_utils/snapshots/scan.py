# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The archives of a local snapshot directory (and its remote/), chosen as agave chooses."""

import os
import stat as stat_mod

from ansible_collections.strata.ops.plugins.module_utils.snapshots.names import (
    KIND_FULL,
    KIND_INCREMENTAL,
    REMOTE_DIR,
    SnapshotNameError,
    is_temporary_name,
    parse_archive_name,
)


def scan_snapshot_dir(path, listdir=os.listdir, stat=os.stat):
    """The archives agave would load from ``path`` (and its ``remote/``), chosen as agave does.

    Agave takes the full archive of the highest slot and, of the incrementals on that slot, the
    highest one, by name only (snapshots/src/paths.rs, get_highest_full_snapshot_archive_info
    and get_highest_incremental_snapshot_archive_info): an empty file or a directory with that
    name is still its choice, so it is chosen here too and carries a ``problem``.

    Returns a dict: full (every full archive, newest first), incremental (those whose base is
    present, newest first), orphan_incrementals (base missing), best_full, best_incremental
    (None when none), not_used (every other entry: name, path, reason).
    """
    archives, not_used = [], []
    remote = os.path.join(path, REMOTE_DIR)
    for directory in (path, remote) if os.path.isdir(remote) else (path,):
        for name in sorted(listdir(directory)):
            full_path = os.path.join(directory, name)
            if full_path == remote:
                continue
            info, reason = _name_info(name)
            if info is None:
                not_used.append(_unused(name, full_path, reason))
                continue
            archives.append(_with_file_state(info, full_path, stat))
    full = _newest_first(a for a in archives if a["kind"] == KIND_FULL)
    full_slots = set(i["slot"] for i in full)
    incrementals = [a for a in archives if a["kind"] == KIND_INCREMENTAL]
    usable = _newest_first(i for i in incrementals if i["base_slot"] in full_slots)
    orphans = _newest_first(i for i in incrementals if i["base_slot"] not in full_slots)
    best_full = full[0] if full else None
    on_best = [i for i in usable if best_full and i["base_slot"] == best_full["slot"]]
    best_incremental = on_best[0] if on_best else None
    for group, best in ((full, best_full), (on_best, best_incremental)):
        for info in group[1:]:
            reason = (
                f"same slot as {best['name']}: agave takes one of them by directory order"
                if info["slot"] == best["slot"]
                else f"older than {best['name']}"
            )
            not_used.append(_unused(info["name"], info["path"], reason))
    for info in usable:
        if info not in on_best:
            not_used.append(
                _unused(
                    info["name"],
                    info["path"],
                    f"built on the full archive of slot {info['base_slot']}, "
                    f"not on the newest one (slot {best_full['slot']})",
                )
            )
    for info in orphans:
        reason = f"its base full archive (slot {info['base_slot']}) is not present"
        not_used.append(_unused(info["name"], info["path"], reason))
    return dict(
        full=full,
        incremental=usable,
        orphan_incrementals=orphans,
        best_full=best_full,
        best_incremental=best_incremental,
        not_used=sorted(not_used, key=lambda u: u["path"]),
    )


def _name_info(name):
    """(archive info, None) when ``name`` is an archive's name, else (None, why it is not used)."""
    if is_temporary_name(name):
        return None, "a download in progress or a work file"
    try:
        info = parse_archive_name(name)
    except SnapshotNameError as exc:
        return None, exc.msg
    if info is None:
        return None, "not a snapshot archive name"
    return info, None


def _with_file_state(info, full_path, stat):
    """``info`` with the archive's path, size and problem (None when agave can load it)."""
    info.update(path=full_path, size=None, problem=None)
    try:
        st = stat(full_path)
    except OSError as exc:
        info["problem"] = "cannot be read (%s)" % (exc.strerror or exc)
    else:
        if not stat_mod.S_ISREG(st.st_mode):
            info["problem"] = "not a regular file"
        elif st.st_size == 0:
            info["problem"] = "empty (0 bytes)"
        info["size"] = st.st_size
    if info["kind"] == KIND_INCREMENTAL and info["slot"] <= info["base_slot"] and not info["problem"]:
        info["problem"] = "its slot is not after its base slot"
    return info


def _newest_first(items):
    return sorted(items, key=lambda i: (i["slot"], i["name"], i["path"]), reverse=True)


def _unused(name, path, reason):
    return dict(name=name, path=path, reason=reason)
