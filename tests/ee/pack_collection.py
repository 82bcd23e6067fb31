"""Pack an installed collection back into an artifact that `ansible-galaxy collection install` takes.

The collections strata.ops depends on come from PyPI's `ansible` package (no Galaxy server is
reachable here). An installed collection keeps MANIFEST.json and FILES.json, but the `ansible`
package leaves out what its FILES.json still names (.github, .azure-pipelines, some tests): the
artifact lists only what is present. Its layout is the one `ansible-galaxy collection build`
writes and `collection install` checks (ansible.galaxy.collection): MANIFEST.json, FILES.json,
then the entries in FILES.json's order; each file's sha256 in FILES.json, and FILES.json's own
sha256 in MANIFEST.json's file_manifest_file.
"""

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def pack(collection_dir: Path, artifact: Path) -> None:
    files_json = json.loads((collection_dir / "FILES.json").read_text())
    present = [f for f in files_json["files"] if f["name"] == "." or (collection_dir / f["name"]).exists()]
    for entry in present:
        if entry["ftype"] == "file":
            digest = hashlib.sha256((collection_dir / entry["name"]).read_bytes()).hexdigest()
            if digest != entry["chksum_sha256"]:
                sys.exit(
                    f"pack_collection: {collection_dir / entry['name']} differs from its FILES.json sha256"
                )
    files_json["files"] = present
    files_bytes = json.dumps(files_json, indent=4).encode()
    manifest = json.loads((collection_dir / "MANIFEST.json").read_text())
    manifest["file_manifest_file"]["chksum_sha256"] = hashlib.sha256(files_bytes).hexdigest()
    # gzip's header carries no time (mtime=0): the same collection packs to the same bytes, so the
    # image's input hash (tests/ee/build) changes only when a collection does.
    with gzip.GzipFile(artifact, "wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        _add_bytes(tar, "MANIFEST.json", json.dumps(manifest, indent=4).encode())
        _add_bytes(tar, "FILES.json", files_bytes)
        for entry in present:
            if entry["name"] != ".":
                tar.add(collection_dir / entry["name"], arcname=entry["name"], recursive=False)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: pack_collection.py INSTALLED_COLLECTION_DIR ARTIFACT.tar.gz")
    pack(Path(sys.argv[1]), Path(sys.argv[2]))
