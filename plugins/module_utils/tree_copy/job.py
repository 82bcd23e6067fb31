# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One copy from this host to a destination: checks, plan, streams, attributes, extras (data_transfer)."""

import hashlib
import json
import os
import subprocess
import tempfile
import time

from ansible.module_utils.common.text.formatters import human_to_bytes

from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument, StrataError
from ansible_collections.strata.ops.plugins.module_utils.state import atomic_write_bytes
from ansible_collections.strata.ops.plugins.module_utils.tree_copy import plan as planning
from ansible_collections.strata.ops.plugins.module_utils.tree_copy import remote, streams

ARGUMENT_SPEC = dict(
    src_path=dict(type="path", required=True),
    dest_host=dict(type="str", required=True),
    dest_path=dict(type="str", required=True),
    dest_user=dict(type="str"),
    dest_port=dict(type="int", default=22),
    ssh_identity_file=dict(type="path"),
    ssh_options=dict(type="list", elements="str", default=[]),
    connect_timeout=dict(type="int", default=10),
    streams=dict(type="int", default=8),
    bwlimit=dict(type="str", default="0"),
    chunk_size=dict(type="str", default="64M"),
    large_file_min=dict(type="str", default="256M"),
    existing=dict(type="str", choices=["fail", "update", "overwrite"], default="fail"),
    delete_extra=dict(type="bool", default=False),
    retries=dict(type="int", default=5),
    retry_delay=dict(type="int", default=5),
    state_dir=dict(type="path", default="/var/lib/strata-ops/transfer"),
    progress_file=dict(type="path"),
    part_index=dict(type="int", default=0),
    part_count=dict(type="int", default=1),
)

# rsync's itemize format for the dry run (rsync(1), --out-format: %i the changes, %n the name).
DRY_RUN = ["-n", "--out-format=%i %n"]
LISTED = 20


class TransferError(StrataError):
    """The copy was refused before it began, or did not complete."""


def _size(name, value):
    try:
        return human_to_bytes(value)
    except ValueError:
        raise InvalidArgument(f"{name} must be a size such as 80M or 1G (bytes), got {value!r}") from None


def _options(params):
    for name, least in (
        ("streams", 1),
        ("retries", 0),
        ("retry_delay", 0),
        ("connect_timeout", 1),
        ("part_count", 1),
    ):
        if params[name] < least:
            raise InvalidArgument(f"{name} must be {least} or more, got {params[name]}")
    if not 0 <= params["part_index"] < params["part_count"]:
        raise InvalidArgument(
            f"part_index must be in 0..{params['part_count'] - 1}, got {params['part_index']}"
        )
    shared = [o for o in params["ssh_options"] if o.split("=")[0].strip().lower().startswith("control")]
    if shared:
        raise InvalidArgument(
            f"ssh_options {shared}: the module keeps one ssh connection per stream itself (a ControlMaster "
            "of its own); a shared ControlMaster would put every stream into one TCP connection - remove them"
        )
    if not params["dest_path"].startswith("/"):
        raise InvalidArgument(f"dest_path must be absolute, got {params['dest_path']!r}")
    sizes = {name: _size(name, params[name]) for name in ("bwlimit", "chunk_size", "large_file_min")}
    if sizes["large_file_min"] < sizes["chunk_size"]:
        raise InvalidArgument(
            "large_file_min must be at least chunk_size (a large file is cut into chunk_size ranges)"
        )
    return sizes


def _listed(paths):
    shown = ", ".join(sorted(paths)[:LISTED])
    return shown + (f" and {len(paths) - LISTED} more" if len(paths) > LISTED else "")


def _dry_run(source_root, destination, extra, chosen=None):
    """What rsync would change: the whole tree with --delete (extras listed), or only ``chosen``."""
    with tempfile.NamedTemporaryFile(prefix="strata-transfer-") as listing:
        if chosen is None:
            command = streams.rsync_command(source_root, destination, DRY_RUN + extra + ["--delete"])
        else:
            listing.write(b"\0".join(p.encode("utf-8", "surrogateescape") for p in sorted(chosen)))
            listing.flush()
            command = streams.rsync_command(
                source_root, destination, DRY_RUN + extra, files_from=listing.name
            )
        done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode not in (0, *remote.RSYNC_PARTIAL):
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise remote.RemoteError(
            f"rsync --dry-run to {destination.describe()} failed (exit {done.returncode}: "
            f"{message[-1] if message else 'no message'}); rsync must be installed on both hosts"
        )
    return planning.parse_itemized(done.stdout)


def _delete_extras(destination, extras):
    script = (
        "import os, shutil, sys\n"
        "root = os.path.realpath(sys.argv[1])\n"
        "for rel in sys.argv[2:]:\n"
        "    path = os.path.join(root, rel)\n"
        "    if os.path.realpath(os.path.dirname(path)).startswith(root) and os.path.lexists(path):\n"
        "        if os.path.isdir(path) and not os.path.islink(path):\n"
        "            shutil.rmtree(path)\n"
        "        else:\n"
        "            os.unlink(path)\n"
    )
    done = subprocess.run(
        remote.python(destination, script, destination.path, *extras), capture_output=True, check=False
    )
    if done.returncode != 0:
        raise TransferError(
            f"deleting the extra files at {destination.describe()} failed: "
            f"{done.stderr.decode('utf-8', 'replace').strip()[-300:]}"
        )


def _space(destination, needed_bytes, probe):
    if needed_bytes > probe["free"]:
        raise TransferError(
            f"{destination.describe()} has {probe['free']} bytes free (checked on {probe['checked']}) "
            f"but the copy needs {needed_bytes} more: free {needed_bytes - probe['free']} bytes there "
            "or choose another dest_path; nothing was sent",
            error_kind="no_space",
            needed_bytes=needed_bytes,
            free_bytes=probe["free"],
        )


def _destination(params):
    return remote.Destination(
        params["dest_host"],
        params["dest_path"],
        user=params["dest_user"],
        port=params["dest_port"],
        identity_file=params["ssh_identity_file"],
        ssh_options=params["ssh_options"],
        connect_timeout=params["connect_timeout"],
    )


def _needed(source_root, entries, destination, probe, extra, chosen):  # noqa: PLR0917
    """What rsync would change at the destination (everything when it does not exist yet)."""
    if probe["exists"]:
        return _dry_run(source_root, destination, extra, chosen)
    listed = entries if chosen is None else chosen
    return {
        "send": sorted(p for p in listed if entries[p]["kind"] == "file"),
        "links": sorted(p for p in listed if entries[p]["kind"] in ("link", "other")),
        "dirs": [".", *sorted(p for p in listed if entries[p]["kind"] == "dir")],
        "attrs": [],
        "delete": [],
        "conflicts": [],
    }


def _refuse_conflicts(needed, destination, existing):
    if needed["conflicts"] and existing == "fail":
        raise TransferError(
            f"{len(needed['conflicts'])} files already at {destination.describe()} differ from the source "
            f"(by size or mtime) and would be overwritten: {_listed(needed['conflicts'])}. Nothing was sent. "
            "Set existing: update (keep what is newer there) or existing: overwrite, or move them away",
            error_kind="destination_differs",
            conflicts=sorted(needed["conflicts"]),
        )


def _extents(source_root, entries, needed, large_min, errors):
    """The data extents of the sparse files sent in ranges (their holes are not sent)."""
    extents = {}
    for path in needed["send"]:
        entry = entries.get(path)
        if entry and entry["sparse"] and planning.is_large(entry, large_min):
            try:
                extents[path] = planning.data_extents(os.path.join(source_root, path), entry["size"])
            except OSError as exc:
                errors[path] = exc.strerror or str(exc)
    return extents


def _refuse_unlisted_deletes(delete_list, extras, destination):
    try:
        with open(delete_list) as handle:
            listed = set(json.load(handle)["extras"])
    except (OSError, ValueError, KeyError):
        listed = set()
    unlisted = [p for p in extras if p not in listed]
    if unlisted:
        raise TransferError(
            f"delete_extra: {len(unlisted)} extra files at {destination.describe()} were not listed by a "
            f"check-mode run first: {_listed(unlisted)}. Run the same task with --check, read its extras, "
            "then run again; nothing was sent or deleted",
            error_kind="delete_not_listed",
            would_delete=extras,
        )


def run(params, check_mode):
    sizes = _options(params)
    source_root = params["src_path"].rstrip("/") or "/"
    entries, scan_errors = planning.scan(source_root)
    destination = _destination(params)
    probe = remote.probe(destination, timeout=params["connect_timeout"] + 60)
    state_dir = params["state_dir"]
    run_key = hashlib.sha1(f"{source_root}\0{destination.describe()}".encode()).hexdigest()[:16]
    extra = {"fail": [], "update": ["--update"], "overwrite": []}[params["existing"]]

    chosen = None
    if params["part_count"] > 1:
        chosen = planning.select_part(entries, params["part_index"], params["part_count"])
    needed = _needed(source_root, entries, destination, probe, extra, chosen)
    _refuse_conflicts(needed, destination, params["existing"])
    copy_plan = planning.make_plan(
        entries,
        needed,
        streams=params["streams"],
        chunk_size=sizes["chunk_size"],
        large_min=sizes["large_file_min"],
        ranges_done=probe["ranges"],
        extents=_extents(source_root, entries, needed, sizes["large_file_min"], scan_errors),
    )
    _space(destination, max(0, copy_plan["bytes"] - probe["parts_bytes"]) if copy_plan["bytes"] else 0, probe)
    extras = sorted(needed["delete"])
    deleting = bool(params["delete_extra"] and extras)
    delete_list = os.path.join(state_dir, f"delete-{run_key}.json")
    if deleting and not check_mode:
        _refuse_unlisted_deletes(delete_list, extras, destination)

    work = bool(copy_plan["files"] or copy_plan["attributes"])
    result = {
        "changed": work or deleting,
        "source": source_root,
        "destination": destination.describe(),
        "plan": {
            "bytes": copy_plan["bytes"],
            "files": copy_plan["files"],
            "streams": len(copy_plan["streams"]),
            "large_files": len(copy_plan["large"]),
            "directories": len(needed["dirs"]),
        },
        "conflicts": sorted(needed["conflicts"]),
        "extras": extras,
        "deleted": [],
        "unreadable": dict(scan_errors),
    }
    if check_mode:
        if deleting:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            atomic_write_bytes(
                delete_list, json.dumps({"extras": extras, "listed": time.time()}).encode(), mode=0o600
            )
        return result
    if work or deleting:
        list_dir = os.path.join(state_dir, run_key)
        os.makedirs(list_dir, mode=0o700, exist_ok=True)
        finished_large = (
            _copy(source_root, destination, copy_plan, params, sizes, extra, list_dir, result)
            if work
            else set()
        )
        if deleting and not result["unreadable"]:
            _delete_extras(destination, extras)
            result["deleted"] = extras
            os.unlink(delete_list)
        touched = _touched(entries, needed, copy_plan, finished_large, result["deleted"])
        _attributes(source_root, destination, touched, extra, list_dir)
    if result["unreadable"]:
        raise TransferError(
            f"the copy is incomplete: {len(result['unreadable'])} source files could not be read: "
            + ", ".join(f"{p} ({r})" for p, r in sorted(result["unreadable"].items())[:LISTED])
            + ". Everything else was sent; fix their permissions and rerun (extras are deleted only then)",
            error_kind="incomplete",
            **result,
        )
    return result


def _copy(source_root, destination, copy_plan, params, sizes, extra, list_dir, result):  # noqa: PLR0917
    """The streams; fills ``result``, raises when a stream did not finish, else returns the large
    files moved into place."""
    # The root and its missing parents first: the streams' rsyncs would race to make them.
    made = subprocess.run(
        destination.ssh("mkdir", "-p", "--", destination.path), capture_output=True, check=False
    )
    if made.returncode != 0:
        raise TransferError(
            f"cannot make {destination.describe()}: {made.stderr.decode('utf-8', 'replace').strip()[-300:]}; "
            "check dest_path and the ssh user's rights there; nothing was sent"
        )
    copy = streams.Copy(
        source_root,
        destination,
        copy_plan,
        {
            "bwlimit": sizes["bwlimit"],
            "retries": params["retries"],
            "retry_delay": params["retry_delay"],
            "rsync_extra": extra,
            "list_dir": list_dir,
            "progress_path": params["progress_file"] or os.path.join(list_dir, "progress.json"),
        },
    )
    progress = copy.run()
    _remove_work_dir(destination)
    result["unreadable"].update(copy.unreadable)
    elapsed = progress["elapsed_s"]
    result.update(
        progress_file=copy.options["progress_path"],
        bytes_sent=progress["bytes_done"],
        elapsed_s=elapsed,
        streams=progress["streams"],
        rate_bytes_s=round(progress["bytes_done"] / elapsed) if elapsed else 0,
    )
    failed = [s for s in progress["streams"] if s["state"] == "failed"]
    if failed:
        raise TransferError(
            f"{len(failed)} of {len(progress['streams'])} streams did not finish: "
            + "; ".join(f"stream {s['index']}: {s['error']}" for s in failed)
            + ". The others did; rerun to send only what is missing",
            error_kind="incomplete",
            **result,
        )
    return copy.finished_large


def _touched(entries, needed, copy_plan, finished_large, deleted):
    """What the attributes pass sets: the plan's directories, large files moved into place and files
    with other attributes, and every directory something was written into or deleted from (their
    times changed; the root always, its work directory came and went)."""
    paths = {p for p in copy_plan["attributes"] if p not in copy_plan["large"] or p in finished_large}
    paths.add(".")
    for path in (*needed["send"], *needed["links"], *deleted):
        parent = os.path.dirname(path)
        if parent and entries.get(parent, {}).get("kind") == "dir":
            paths.add(parent)
    return sorted(paths)


def _remove_work_dir(destination):
    """The ranges' directory goes once it is empty (it stays while a large file is incomplete)."""
    subprocess.run(
        destination.ssh("rmdir", "--ignore-fail-on-non-empty", destination.work_dir),
        capture_output=True,
        check=False,
    )


def _attributes(source_root, destination, paths, extra, list_dir):
    """Attributes (mode, owner, times) of ``paths``, set by rsync once their contents are written."""
    listed = [p for p in paths if p != "."]
    commands = []
    if listed:
        list_path = os.path.join(list_dir, "attributes.files")
        atomic_write_bytes(
            list_path, b"\0".join(p.encode("utf-8", "surrogateescape") for p in listed), mode=0o600
        )
        # --size-only: a large file just moved into place has the source's size; rsync then only sets
        # its owner and group (rsync(1): quick check by size only).
        commands.append(
            streams.rsync_command(source_root, destination, ["--size-only", *extra], files_from=list_path)
        )
    if "." in paths:
        # The root alone: "." in --files-from would copy the root's files too (rsync(1), --dirs).
        commands.append(
            streams.rsync_command(source_root, destination, ["--size-only", "--exclude=*", *extra])
        )
    for command in commands:
        done = subprocess.run(command, capture_output=True, check=False)
        if done.returncode != 0:
            raise TransferError(
                f"setting attributes at {destination.describe()} failed (rsync exit {done.returncode}: "
                f"{done.stderr.decode('utf-8', 'replace').strip()[-300:]}); rerun the transfer"
            )
