"""method=kubelet's pure parts: the checkpoint OCI image, the new pod, the restore's outcome."""

import hashlib
import io
import json
import tarfile

import pytest

from ansible_collections.strata.ops.plugins.module_utils.checkpoint import kubelet, ociimage

REF = "strata.local/checkpoint/counter:20250101T000000.000Z"


@pytest.fixture
def archive(tmp_path):
    """A checkpoint archive as containerd's CheckpointContainer writes one (files at its root)."""
    path = tmp_path / "checkpoint.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in {
            "config.dump": json.dumps(
                {"rootfsImageRef": "sha256:" + "a" * 64, "rootfsImageName": "docker.io/library/w:1"}
            ).encode(),
            "spec.dump": b"{}",
            "checkpoint/pages-1.img": b"\0" * 8192,
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def read_layout(path):
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_checkpoint_image_is_an_oci_layout_containerd_restores_from(archive, tmp_path):
    digest = ociimage.sha256_of(archive)
    out = tmp_path / "image.tar"
    ociimage.write(str(archive), digest, str(out), REF, "counter")
    files = read_layout(out)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    (entry,) = index["manifests"]
    assert entry["annotations"] == {
        "io.containerd.image.name": REF,
        "org.opencontainers.image.ref.name": "20250101T000000.000Z",
    }
    # every descriptor names a blob of exactly that digest and size
    manifest_blob = files["blobs/sha256/" + entry["digest"].split(":")[1]]
    assert hashlib.sha256(manifest_blob).hexdigest() == entry["digest"].split(":")[1]
    assert len(manifest_blob) == entry["size"]
    manifest = json.loads(manifest_blob)
    # containerd's checkIfCheckpointOCIImage reads the annotation from the image's target blob
    assert manifest["annotations"] == {ociimage.CHECKPOINT_ANNOTATION: "counter"}
    (layer,) = manifest["layers"]
    assert layer == {
        "mediaType": ociimage.LAYER_TYPE,
        "digest": "sha256:" + digest,
        "size": archive.stat().st_size,
    }
    assert files["blobs/sha256/" + digest] == archive.read_bytes()  # the archive itself is the layer
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + digest]}
    assert config["os"] == "linux"


@pytest.mark.parametrize(("machine", "arch"), [("x86_64", "amd64"), ("aarch64", "arm64")])
def test_image_architecture_is_gos_name_of_the_machine(machine, arch):
    blobs, index = ociimage.layout("b" * 64, 10, REF, "c", machine=machine)
    manifest = json.loads(blobs[json.loads(index)["manifests"][0]["digest"]])
    assert json.loads(blobs[manifest["config"]["digest"]])["architecture"] == arch


def test_read_member_reads_one_file_or_says_none(archive):
    assert (
        json.loads(ociimage.read_member(str(archive), "config.dump"))["rootfsImageName"]
        == "docker.io/library/w:1"
    )
    assert ociimage.read_member(str(archive), "no-such-file") is None


POD = {
    "metadata": {"name": "web-0", "namespace": "ml", "uid": "u1", "labels": {"app": "web"}},
    "spec": {
        "nodeName": "node-a",
        "containers": [
            {"name": "counter", "image": "w:1", "imagePullPolicy": "IfNotPresent"},
            {"name": "sidecar", "image": "s:1"},
        ],
        "tolerations": [{"key": "strata.io/real-node", "operator": "Exists"}],
    },
}


def test_new_pod_runs_the_checkpointed_container_from_the_image_on_the_node():
    manifest = {"pod_spec": kubelet.pod_spec_to_keep(POD), "container": "counter", "pod": {"name": "web-0"}}
    body = kubelet.pod_body(manifest, "web-restored", "ml", "node-b", REF, "/srv/ck/web-0-counter-X")
    assert body["metadata"] == {
        "name": "web-restored",
        "namespace": "ml",
        # none of the original's labels: its ReplicaSet would adopt or delete the new pod
        "labels": {kubelet.RESTORED_FROM_POD: "web-0"},
        "annotations": {kubelet.RESTORED_FROM: REF, "strata.io/checkpoint": "/srv/ck/web-0-counter-X"},
    }
    assert body["spec"]["nodeName"] == "node-b"
    counter, sidecar = body["spec"]["containers"]
    assert counter == {"name": "counter", "image": REF, "imagePullPolicy": "Never"}
    assert sidecar == {"name": "sidecar", "image": "s:1"}  # the others start from their images
    assert body["spec"]["tolerations"] == POD["spec"]["tolerations"]
    assert POD["spec"]["containers"][0]["image"] == "w:1"  # the dump's copy is left as it was


def status(**state):
    return {"status": {"containerStatuses": [{"name": "counter", "state": state, "restartCount": 0}]}}


@pytest.mark.parametrize(
    ("pod", "outcome"),
    [
        ({"status": {"phase": "Pending"}}, None),
        (status(waiting={"reason": "ContainerCreating"}), None),
        (status(running={"startedAt": "now"}), "running"),
        (
            status(waiting={"reason": "ErrImageNeverPull", "message": "image not present"}),
            "failed: ErrImageNeverPull: image not present",
        ),
        (
            status(waiting={"reason": "CreateContainerError", "message": "criu failed"}),
            "failed: CreateContainerError: criu failed",
        ),
        (status(terminated={"reason": "Error", "exitCode": 1}), "failed: Error: "),
    ],
)
def test_restore_outcome_settles_on_running_or_a_reason(pod, outcome):
    assert kubelet.restore_outcome(pod, "counter") == outcome


def test_checkpoint_url_and_what_it_needs():
    params = {"kubelet_url": "https://127.0.0.1:10250/", "pod": "p", "namespace": "ns", "container": "c"}
    assert kubelet.checkpoint_url(params) == "https://127.0.0.1:10250/checkpoint/ns/p/c"
    with pytest.raises(kubelet.InvalidArgument, match="needs kubelet_url, pod and container"):
        kubelet.checkpoint_url(dict(params, container=None))
