# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""strata.ops.containerd_image: an image archive imported into a node's containerd, skipped when the
node already holds the same image.

"The same image" is the same config digest (the image ID that ``docker images`` and ``crictl images``
show): the archive's is read from its own index (OCI layout ``index.json`` -> manifest -> config, or
``docker save``'s ``manifest.json`` -> ``Config``); containerd's from the image's target in its content
store (``ctr content get``: an index is followed to the manifest of this host's platform). Formats:
image-spec ``image-layout.md`` / ``image-index.md`` / ``manifest.md``, and the Docker image archive
(moby ``image/tarexport``: ``manifest.json`` lists ``Config`` and ``RepoTags``).
"""

import json
import platform
import tarfile

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr
from ansible_collections.strata.ops.plugins.module_utils.checkpoint.ociimage import GOARCH
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


class ImageArchiveError(InvalidArgument):
    """The archive is not an image archive ctr can import."""


def archive_image(path):
    """(config digest, repo tags) of the single image in a docker-save or OCI layout archive."""
    try:
        with tarfile.open(path) as tar:
            names = set(tar.getnames())
            if "manifest.json" in names:
                entries = json.loads(_read(tar, "manifest.json"))
                if len(entries) != 1:
                    raise ImageArchiveError(
                        f"{path} holds {len(entries)} images; import one image per archive"
                    )
                config = entries[0]["Config"]
                digest = "sha256:" + config.rsplit("/", 1)[-1].removesuffix(".json")
                return digest, list(entries[0].get("RepoTags") or [])
            if "index.json" in names:
                index = json.loads(_read(tar, "index.json"))
                descriptor = _platform_manifest(index.get("manifests") or [], lambda d: _blob(tar, d))
                manifest = json.loads(_blob(tar, descriptor["digest"]))
                tags = [
                    m["annotations"]["io.containerd.image.name"]
                    for m in index.get("manifests") or []
                    if "io.containerd.image.name" in (m.get("annotations") or {})
                ]
                return manifest["config"]["digest"], tags
    except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
        raise ImageArchiveError(
            f"{path} is not an image archive (docker save or an OCI layout tar): {exc}"
        ) from None
    raise ImageArchiveError(f"{path} has neither manifest.json (docker save) nor index.json (OCI layout)")


def _read(tar, name):
    handle = tar.extractfile(name)
    if handle is None:
        raise KeyError(name)
    return handle.read()


def _blob(tar, digest):
    algorithm, hexdigest = digest.split(":", 1)
    return _read(tar, f"blobs/{algorithm}/{hexdigest}")


def _platform_manifest(descriptors, read):
    """The manifest descriptor for this host among an index's descriptors (nested indexes followed)."""
    arch = GOARCH.get(platform.machine(), platform.machine())
    for descriptor in descriptors:
        if descriptor.get("mediaType") in INDEX_TYPES:
            return _platform_manifest(json.loads(read(descriptor["digest"])).get("manifests") or [], read)
    for descriptor in descriptors:
        wanted = descriptor.get("platform") or {}
        if not wanted or (wanted.get("os") == "linux" and wanted.get("architecture") == arch):
            return descriptor
    raise ImageArchiveError(f"no image for linux/{arch} in the archive's index")


class Ctr(ctr.CtrClient):
    """ctr (or ``k3s ctr``) reading what an image is in containerd."""

    def output(self, *args):
        return self.run(*args)[1]

    def config_digest(self, ref):
        """The config digest of image ``ref`` in containerd, or None when it does not hold it."""
        listing = self.output("images", "ls", f"name=={ref}")
        rows = [line.split() for line in listing.splitlines()[1:] if line.split() and line.split()[0] == ref]
        if not rows:
            return None
        target = rows[0][2]
        content = json.loads(self.output("content", "get", target))
        if content.get("mediaType") in INDEX_TYPES or "manifests" in content:
            descriptor = _platform_manifest(content["manifests"], lambda d: self.output("content", "get", d))
            content = json.loads(self.output("content", "get", descriptor["digest"]))
        return content["config"]["digest"]


def normalized(ref):
    """A reference as containerd names it (distribution's normalization): NAME -> docker.io/library/NAME,
    USER/NAME -> docker.io/USER/NAME, no tag -> :latest; a digest is dropped."""
    ref = ref.split("@", 1)[0]
    name, tag = ref.rsplit(":", 1) if ":" in ref.rsplit("/", 1)[-1] else (ref, "latest")
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
    return f"{name}:{tag}"


def ensure(params, check_mode, run_command):
    archive = params["archive"]
    digest, tags = archive_image(archive)
    ref = normalized(params["name"]) if params["name"] else (normalized(tags[0]) if tags else None)
    if not ref:
        raise ImageArchiveError(
            f"{archive} names no image (no RepoTags / io.containerd.image.name): set name"
        )
    client = Ctr(params["ctr_command"], params["address"], params["namespace"], run_command)
    have = client.config_digest(ref)
    result = {"image": ref, "digest": digest, "before": have, "changed": have != digest}
    if have == digest:
        return dict(
            result, msg=f"{ref} is already in containerd ({params['namespace']}) with config {digest}"
        )
    import_argv = ["images", "import", archive]
    if check_mode:
        return dict(result, command=client.argv + import_argv, msg=f"would import {archive} as {ref}")
    client.run(*import_argv)
    if tags and ref not in [normalized(t) for t in tags]:
        client.run("images", "tag", "--force", normalized(tags[0]), ref)
    after = client.config_digest(ref)
    if after != digest:
        raise ImageArchiveError(
            f"ctr imported {archive}, but {ref} in containerd has config {after}, not {digest}: the archive "
            "names no image ctr could tag as name; tag the image before saving it"
        )
    return dict(result, commands=client.commands, msg=f"imported {archive} as {ref} ({digest})")
