# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files a restore opens again, checked before anything is made.

``criu restore`` reopens every regular file and directory the dumped processes had open by its path
and refuses one that is missing, or whose mode or size differs from the dump (criu/files-reg.c
open_path). Where such a file lives on a bind mount from the host, it is checked on the host
before the restore: a file renamed away after the dump (a status file written to .tmp and
renamed), or one the job went on writing, is named with its host path and the fix, instead of
runc's "criu failed: type NOTIFY errno 0" after a container was made.
"""

import os

from ansible_collections.strata.ops.plugins.module_utils import criu
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import BadCheckpoint, ociimage

FILES_IMG, REMAP_IMG = "files.img", "remap-fpath.img"


def in_dump_dir(images_dir):
    """The files a restore of CRIU's images in ``images_dir`` opens again (criu.reopened_files)."""
    images = {}
    for name in (FILES_IMG, REMAP_IMG):
        try:
            with open(os.path.join(images_dir, name), "rb") as handle:
                images[name] = handle.read()
        except FileNotFoundError:
            images[name] = None
    return criu.reopened_files(images[FILES_IMG], images[REMAP_IMG])


def in_kubelet_archive(archive):
    """The same for a kubelet checkpoint archive (CRIU's files under checkpoint/)."""
    images = ociimage.read_members(archive, {"checkpoint/" + FILES_IMG, "checkpoint/" + REMAP_IMG})
    return criu.reopened_files(images.get("checkpoint/" + FILES_IMG), images.get("checkpoint/" + REMAP_IMG))


def docker_binds(create):
    """(container path, host path) of every bind mount a Docker create config gives the new
    container: ``HostConfig.Binds`` ("SRC:DEST[:OPTIONS]", SRC a host path; a named volume is no
    host path) and ``HostConfig.Mounts`` of type bind."""
    host_config = create.get("HostConfig") or {}
    binds = []
    for bind in host_config.get("Binds") or []:
        parts = bind.split(":")
        if len(parts) >= 2 and parts[0].startswith("/"):
            binds.append((parts[1], parts[0]))
    for mount in host_config.get("Mounts") or []:
        if mount.get("Type") == "bind" and mount.get("Source") and mount.get("Target"):
            binds.append((mount["Target"], mount["Source"]))
    return binds


def oci_binds(spec):
    """(container path, host path) of the bind mounts of an OCI runtime spec: a mount is a bind when
    its type is "bind" or its options hold "bind" or "rbind" (runtime-spec config.md; runc's
    libcontainer/specconv)."""
    binds = []
    for mount in (spec or {}).get("mounts") or []:
        options = mount.get("options") or []
        is_bind = mount.get("type") == "bind" or "bind" in options or "rbind" in options
        if is_bind and mount.get("source", "").startswith("/") and mount.get("destination"):
            binds.append((mount["destination"], mount["source"]))
    return binds


def hostpath_binds(pod_spec, container):
    """(container path, host path) of ``container``'s hostPath volumes in a pod spec: the same host
    paths for every pod made from it on a node (a subPath below its volume's path). Other volumes
    are directories of the pod itself, which a new pod does not share."""
    volumes = {
        v["name"]: v["hostPath"]["path"]
        for v in pod_spec.get("volumes") or []
        if (v.get("hostPath") or {}).get("path")
    }
    binds = []
    for spec in pod_spec.get("containers") or []:
        if spec.get("name") != container:
            continue
        for mount in spec.get("volumeMounts") or []:
            if mount.get("name") in volumes:
                source = os.path.join(volumes[mount["name"]], mount.get("subPath") or "")
                binds.append((mount["mountPath"], source.rstrip("/") or "/"))
    return binds


def host_path(path, binds):
    """Where ``path`` (as the container sees it) is on the host: through the deepest bind mount that
    holds it; None when no bind mount does (the container's own file system)."""
    holding = [
        (inside.rstrip("/"), outside)
        for inside, outside in binds
        if path == inside or path.startswith(inside.rstrip("/") + "/")
    ]
    if not holding:
        return None
    inside, outside = max(holding, key=lambda bind: len(bind[0]))
    rest = path[len(inside) :].lstrip("/")
    return os.path.join(outside, rest) if rest else outside


def changes(files, binds):
    """What is no longer as the dump found it, one line per file on a bind mount."""
    found = []
    for entry in files:
        where = host_path(entry["path"], binds)
        if where is None:
            continue
        name = f"{entry['path']} (on the host {where})"
        try:
            now = os.stat(where)
        except FileNotFoundError:
            found.append(f"{name} is gone")
            continue
        if entry["mode"] is not None and now.st_mode != entry["mode"]:
            found.append(f"{name} has mode 0o{now.st_mode:o}, it had 0o{entry['mode']:o}")
        elif entry["size"] is not None and now.st_size != entry["size"]:
            found.append(f"{name} is {now.st_size} bytes, it was {entry['size']}")
    return found


def refuse_changed(checkpoint, binds, files):
    """Refuse the restore of ``checkpoint`` when a file its processes had open on one of ``binds`` is
    missing or changed since the dump; nothing has been made yet. ``files`` reads them (in_dump_dir,
    in_kubelet_archive): only where there are bind mounts."""
    if not binds:
        return
    found = changes(files(), binds)
    if found:
        raise BadCheckpoint(
            f"{checkpoint}: files the dumped process had open on its bind mounts are not as they were "
            f"at the dump: {'; '.join(found)}. CRIU opens each again by its path and refuses one that "
            "is missing or whose size or mode changed: put them back as they were at the dump (from a "
            "snapshot taken with it), or take a new dump. Nothing was created"
        )
