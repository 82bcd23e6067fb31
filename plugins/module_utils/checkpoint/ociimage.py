# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A kubelet checkpoint archive as a checkpoint OCI image, the form in which containerd's CRI plugin
(2.x, ``internal/cri/server/container_checkpoint_linux.go``) restores a container of a new pod.

The image is what ``buildah add IMAGE ARCHIVE /`` + ``buildah config --annotation
org.criu.checkpoint.container.name=NAME`` makes in containerd's own test
(``contrib/checkpoint/checkpoint-restore-kubernetes-test.sh``): one uncompressed layer whose files
are the archive's (a tar file is already a layer), and the annotation on the manifest, where
containerd looks for it (``checkIfCheckpointOCIImage`` reads the image's target blob). It is
written as an OCI image layout archive (image-spec ``image-layout.md``) for ``ctr images import``,
which names the image from ``io.containerd.image.name`` in index.json.
"""

import hashlib
import io
import json
import platform
import tarfile

# checkpointctl's lib.CheckpointAnnotationName, which containerd's CRI plugin checks.
CHECKPOINT_ANNOTATION = "org.criu.checkpoint.container.name"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
CHUNK = 1 << 20
# Go's GOARCH for the kernel's machine names (image-spec config.md: architecture is GOARCH).
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_blob(obj):
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return data, {"digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}


def layout(archive_digest, archive_size, ref, container_name, machine=None):
    """The small blobs of the image: (blobs as {digest: bytes}, index.json bytes)."""
    arch = GOARCH.get(machine or platform.machine(), machine or platform.machine())
    layer = {"mediaType": LAYER_TYPE, "digest": "sha256:" + archive_digest, "size": archive_size}
    config, config_desc = _json_blob(
        {
            "architecture": arch,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
            "config": {},
        }
    )
    manifest, manifest_desc = _json_blob(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": dict(config_desc, mediaType=CONFIG_TYPE),
            "layers": [layer],
            "annotations": {CHECKPOINT_ANNOTATION: container_name},
        }
    )
    tag = ref.rsplit(":", 1)[1]
    index = _json_blob(
        {
            "schemaVersion": 2,
            "mediaType": INDEX_TYPE,
            "manifests": [
                dict(
                    manifest_desc,
                    mediaType=MANIFEST_TYPE,
                    annotations={"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": tag},
                )
            ],
        }
    )[0]
    blobs = {config_desc["digest"]: config, manifest_desc["digest"]: manifest}
    return blobs, index


def write(archive, archive_digest, out_path, ref, container_name):
    """Write the OCI layout archive of ``archive`` (sha256 ``archive_digest``) to ``out_path``."""
    blobs, index = layout(archive_digest, _size(archive), ref, container_name)
    with tarfile.open(out_path, "w", format=tarfile.PAX_FORMAT) as out:
        _add_bytes(out, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add_bytes(out, "index.json", index)
        for digest, data in blobs.items():
            _add_bytes(out, "blobs/sha256/" + digest.split(":", 1)[1], data)
        info = out.gettarinfo(archive, arcname="blobs/sha256/" + archive_digest)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o644
        with open(archive, "rb") as handle:
            out.addfile(info, handle)


def _size(path):
    with open(path, "rb") as handle:
        return handle.seek(0, 2)


def _add_bytes(out, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    out.addfile(info, io.BytesIO(data))


def read_members(archive, names):
    """{name: bytes} of those members ``names`` a tar archive holds, in one pass over it."""
    found = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.name in names and member.isfile():
                found[member.name] = tar.extractfile(member).read()
    return found


def read_member(archive, name):
    """The bytes of member ``name`` of a tar archive, or None when it has none."""
    return read_members(archive, {name}).get(name)
