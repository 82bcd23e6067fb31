"""What containerd does around a restore, for the unit tests of leftovers.py and its callers: a
/proc with a containerd process (its root a directory of the test), the copy of the checkpoint its
tasks service extracts into its temporary directory and keeps, and a checkpoint image exported
as ``ctr images export --skip-manifest-json`` writes it (an OCI archive: index.json -> the image
index -> the criu.tar layer among containerd's checkpoint blobs)."""

import hashlib
import io
import itertools
import json
import tarfile

from ansible_collections.strata.ops.plugins.module_utils.checkpoint import leftovers

OPTIONS_TYPE = "application/vnd.containerd.container.checkpoint.options.v1+proto"
CRIU_FILES = {"inventory.img": b"inventory", "pages-1.img": b"\0" * 8192, "pstree.img": b"tree"}
_suffixes = itertools.count(1_000_000)


def containerd_proc(tmp_path, environ=b"PATH=/usr/bin\0"):
    """(proc dir, the temporary directory containerd sees as /tmp, as a path of the test)."""
    root = tmp_path / "host"
    (root / "tmp").mkdir(parents=True)
    pid = tmp_path / "proc" / "4100"
    pid.mkdir(parents=True)
    (pid / "comm").write_text("containerd\n")
    (pid / "environ").write_bytes(environ)
    (pid / "root").symlink_to(root)
    return str(tmp_path / "proc"), root / "tmp"


def leave_copy(temp_dir, files=None):
    """containerd's os.MkdirTemp(dir, "ctrd-checkpoint") with a checkpoint's files in it."""
    path = temp_dir / f"{leftovers.PREFIX}{next(_suffixes)}"
    path.mkdir()
    for name, data in (CRIU_FILES if files is None else files).items():
        (path / name).write_bytes(data)
    return path


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _blob(tar, data, media_type):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _add(tar, "blobs/" + digest.replace(":", "/"), data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def checkpoint_archive(path, files=None):
    """Write a checkpoint image archive holding ``files`` (CRIU_FILES) at ``path``."""
    criu_tar = io.BytesIO()
    with tarfile.open(fileobj=criu_tar, mode="w") as inner:
        for name, data in (CRIU_FILES if files is None else files).items():
            _add(inner, name, data)
    with tarfile.open(path, "w") as outer:
        options = _blob(outer, b"\n\x08options", OPTIONS_TYPE)
        layer = _blob(outer, criu_tar.getvalue(), leftovers.CRIU_TAR)
        image = {"schemaVersion": 2, "manifests": [options, layer]}
        image_desc = _blob(outer, json.dumps(image).encode(), "application/vnd.oci.image.index.v1+json")
        _add(outer, "index.json", json.dumps({"schemaVersion": 2, "manifests": [image_desc]}).encode())
    return str(path)
