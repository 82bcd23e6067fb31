"""containerd_image's pure parts: reference normalization, the archive's image ID, containerd's."""

import io
import json
import tarfile

import pytest

from ansible_collections.strata.ops.plugins.module_utils import image_import as ii

CONFIG = "sha256:" + "c" * 64


@pytest.mark.parametrize(
    ("ref", "normal"),
    [
        ("data-miner", "docker.io/library/data-miner:latest"),
        ("data-miner:v2", "docker.io/library/data-miner:v2"),
        ("chrislusf/seaweedfs:latest", "docker.io/chrislusf/seaweedfs:latest"),
        ("registry.local:5000/team/app:1", "registry.local:5000/team/app:1"),
        ("localhost/app", "localhost/app:latest"),
        ("docker.io/library/postgres:16@sha256:" + "a" * 64, "docker.io/library/postgres:16"),
    ],
)
def test_references_as_containerd_names_them(ref, normal):
    assert ii.normalized(ref) == normal


def tar_of(path, files):
    with tarfile.open(path, "w") as tar:
        for name, content in files.items():
            data = content if isinstance(content, bytes) else json.dumps(content).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_docker_save_archive_names_its_config(tmp_path):
    path = tar_of(
        tmp_path / "a.tar", {"manifest.json": [{"Config": "c" * 64 + ".json", "RepoTags": ["app:1"]}]}
    )
    assert ii.archive_image(path) == (CONFIG, ["app:1"])
    newer = tar_of(
        tmp_path / "b.tar", {"manifest.json": [{"Config": "blobs/sha256/" + "c" * 64, "RepoTags": []}]}
    )  # docker 25+ writes an OCI layout with manifest.json beside it
    assert ii.archive_image(newer) == (CONFIG, [])


def test_oci_layout_follows_the_index_to_this_platforms_manifest(tmp_path, monkeypatch):
    monkeypatch.setattr(ii.platform, "machine", lambda: "x86_64")
    arm = {"config": {"digest": "sha256:" + "a" * 64}}
    amd = {"config": {"digest": CONFIG}}
    inner = {
        "manifests": [
            {"digest": "sha256:" + "1" * 64, "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": "sha256:" + "2" * 64, "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    }
    path = tar_of(
        tmp_path / "oci.tar",
        {
            "index.json": {
                "manifests": [
                    {
                        "mediaType": ii.INDEX_TYPES[0],
                        "digest": "sha256:" + "3" * 64,
                        "annotations": {"io.containerd.image.name": "docker.io/library/app:1"},
                    }
                ]
            },
            "blobs/sha256/" + "3" * 64: inner,
            "blobs/sha256/" + "1" * 64: arm,
            "blobs/sha256/" + "2" * 64: amd,
        },
    )
    assert ii.archive_image(path) == (CONFIG, ["docker.io/library/app:1"])


def test_a_file_that_is_no_image_archive(tmp_path):
    plain = tmp_path / "notes.txt"
    plain.write_text("hello\n")
    with pytest.raises(ii.ImageArchiveError, match="is not an image archive"):
        ii.archive_image(str(plain))
    two = tar_of(tmp_path / "two.tar", {"manifest.json": [{"Config": "a.json"}, {"Config": "b.json"}]})
    with pytest.raises(ii.ImageArchiveError, match="holds 2 images; import one image per archive"):
        ii.archive_image(two)


def test_containerd_config_digest_through_its_content_store():
    answers = {
        ("images", "ls", "name==docker.io/library/app:1"): "REF TYPE DIGEST SIZE PLATFORMS LABELS\n"
        "docker.io/library/app:1 application/vnd.oci.image.manifest.v1+json sha256:m 1.0 MiB linux/amd64 -\n",
        ("content", "get", "sha256:m"): json.dumps({"config": {"digest": CONFIG}}),
        ("images", "ls", "name==docker.io/library/none:1"): "REF TYPE DIGEST SIZE PLATFORMS LABELS\n",
    }

    def run_command(argv):
        return 0, answers[tuple(argv[5:])], ""

    client = ii.Ctr(["ctr"], "/run/c.sock", "k8s.io", run_command)
    assert client.config_digest("docker.io/library/app:1") == CONFIG
    assert client.config_digest("docker.io/library/none:1") is None
    assert (
        client.commands[0]
        == "ctr --address /run/c.sock --namespace k8s.io images ls name==docker.io/library/app:1"
    )
