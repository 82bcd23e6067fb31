# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The dumps in an images_dir as strata.ops.pod_checkpoint_info reports them: newest first, each
with what its manifest says and whether it is usable (and restorable by state=restored)."""

import json
import os

from ansible_collections.strata.ops.plugins.module_utils.checkpoint import containerd, kubelet
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import manifest as mf
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument, utc_iso
from ansible_collections.strata.ops.plugins.module_utils.criu import dir_size

# Files every CRIU dump has; without them nothing can be restored.
REQUIRED_IMAGES = ("inventory.img", "pstree.img")


def stamp_iso(stamp):
    """20250101T000000.000Z -> 2025-01-01T00:00:00.000Z (manifest.stamp() reversed)."""
    return f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:]}"


def read_manifest(directory):
    """(manifest dict, None) or (None, why it cannot be read)."""
    path = os.path.join(directory, mf.MANIFEST)
    if not os.path.isfile(path):
        if os.path.exists(path + ".tmp"):
            return None, f"no {mf.MANIFEST}: the dump was interrupted while its manifest was written"
        return None, f"no {mf.MANIFEST}: the dump did not finish (or this is no pod_checkpoint dump)"
    try:
        with open(path) as handle:
            manifest = json.load(handle)
    except ValueError as exc:
        return None, f"{mf.MANIFEST} is not valid JSON ({exc})"
    except OSError as exc:
        return None, f"{mf.MANIFEST} cannot be read ({exc.strerror})"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("target"), dict):
        return None, f"{mf.MANIFEST} has no target: not a pod_checkpoint manifest"
    return manifest, None


def _target(manifest):
    target = manifest.get("target") or {}
    return {
        "runtime": target.get("runtime"),
        "container_name": target.get("container_name"),
        "container_id": target.get("container_id"),
        "image": target.get("image"),
        "pid": manifest.get("pid", target.get("pid")),
        "pod": manifest.get("pod"),
    }


def _problem(directory, manifest):
    """Why a dump with a readable manifest is not usable (its CRIU images, containerd's rw layer
    or the kubelet's archive are missing or cut short), or None."""
    if manifest.get("method") == "kubelet":
        return kubelet.archive_problem(directory, manifest)
    if manifest.get("method") == "containerd":
        return containerd.dump_problem(directory, manifest)
    missing = [f for f in REQUIRED_IMAGES if not os.path.isfile(os.path.join(directory, f))]
    if missing:
        return f"CRIU images missing ({', '.join(missing)}): the dump is incomplete"
    return None


def _not_restorable(manifest, readlink=os.readlink):
    """Why state=restored cannot restore this (usable) dump on this node, or None."""
    if manifest.get("method") == "containerd":
        return containerd.pod_gone(manifest, readlink)
    if manifest.get("method") == "kubelet":
        return None
    runtime = (manifest.get("target") or {}).get("runtime")
    if runtime != "docker":
        return f"a dump of a {runtime} target: state=restored restores Docker container dumps only"
    if not isinstance(manifest["target"].get("create"), dict):
        return "the manifest lacks the container's create config (target.create) a restore needs"
    return None


def describe(directory, name=None, stamp=None):
    """One dump directory as the module reports it."""
    manifest, problem = read_manifest(directory)
    entry = {
        "directory": directory,
        "id": os.path.basename(directory),
        "name": name,
        "created": stamp_iso(stamp) if stamp else None,
        "size_bytes": dir_size(directory),
        "usable": False,
        "restorable": False,
        "problem": problem,
    }
    if manifest is None:
        if entry["created"] is None:
            entry["created"] = utc_iso(os.stat(directory).st_mtime)
        return entry
    criu = manifest.get("criu") or {}
    gpu = manifest.get("gpu") or {}
    sizes = manifest.get("sizes") or {}
    stats = manifest.get("stats") or {}
    entry.update(
        name=manifest.get("name") or name,
        created=manifest.get("created") or entry["created"],
        method=manifest.get("method") or "criu",
        target=_target(manifest),
        leave_running=manifest.get("leave_running"),
        images_bytes=sizes.get("images_bytes"),
        criu_version=criu.get("version"),
        gpu_path=gpu.get("path", "none"),
        frozen_time_us=stats.get("frozen_time_us"),
        dump_wall_s=manifest.get("dump_wall_s"),
    )
    entry["problem"] = _problem(directory, manifest)
    entry["usable"] = entry["problem"] is None
    if entry["usable"]:
        entry["problem"] = _not_restorable(manifest)
        entry["restorable"] = entry["problem"] is None
    return entry


def candidates(images_dir, name=None):
    """(directory, name, stamp) of every dump directory in images_dir (of ``name`` only when
    given): NAME-STAMP directories, and any other directory holding a manifest."""
    try:
        entries = sorted(os.listdir(images_dir))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InvalidArgument(f"cannot list images_dir {images_dir}: {exc.strerror}") from None
    found = []
    for entry in entries:
        path = os.path.join(images_dir, entry)
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        match = mf.DUMP_DIR.match(entry)
        if match:
            if name is None or match.group("name") == name:
                found.append((path, match.group("name"), match.group("stamp")))
        elif name is None and os.path.isfile(os.path.join(path, mf.MANIFEST)):
            found.append((path, None, None))
    return found


def summary(images_dir, name, checkpoints):
    what = f"of {name} " if name else ""
    if not checkpoints:
        return f"no checkpoint {what}in {images_dir}"
    usable = sum(1 for c in checkpoints if c["usable"])
    newest = checkpoints[0]
    return (
        f"{len(checkpoints)} checkpoint(s) {what}in {images_dir}, {usable} usable; "
        f"newest {newest['id']} ({newest['created']})"
    )


def list_checkpoints(params):
    """The module's result for ``params`` (images_dir, name)."""
    images_dir = params["images_dir"].rstrip("/") or "/"
    name = params.get("name") or None
    if os.path.exists(images_dir) and not os.path.isdir(images_dir):
        raise InvalidArgument(f"images_dir {images_dir} is not a directory")
    checkpoints = [describe(*found) for found in candidates(images_dir, name)]
    checkpoints.sort(key=lambda c: (c["created"] or "", c["id"]), reverse=True)
    usable = [c for c in checkpoints if c["usable"]]
    restorable = [c for c in checkpoints if c["restorable"]]
    return {
        "changed": False,
        "images_dir": images_dir,
        "exists": os.path.isdir(images_dir),
        "name": name,
        "checkpoints": checkpoints,
        "latest": usable[0]["directory"] if usable else None,
        "latest_restorable": restorable[0]["directory"] if restorable else None,
        "summary": summary(images_dir, name, checkpoints),
    }
