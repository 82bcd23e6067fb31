"""method=kubelet's pure parts: the checkpoint OCI image, the new pod, the restore's outcome."""

import hashlib
import io
import json
import os
import tarfile

import pytest

from ansible_collections.strata.ops.plugins.module_utils.checkpoint import kubelet, ociimage
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import manifest as mf
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument, StrataError
from ansible_collections.strata.ops.plugins.module_utils.k8s.errors import K8sNotFound

from ....fakes.containerd import CONTAINER_ID, FakeCtr, containerd_proc, crictl
from ....fakes.criu_images import STATS_DUMP
from ....fakes.cuda import CUDA_PARAMS, FakeCudaCheckpoint
from ....fakes.run import FakeRun

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
            "stats-dump": STATS_DUMP,
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


# The GPU path on a GPU node: the kubelet's runtime runs CRIU without GPU support, so the module
# (on the node) freezes the container's CUDA processes around the checkpoint POST and thaws the
# restored pod's processes once it runs.
ORIGINAL = {
    "metadata": {"name": "trainer-0", "namespace": "ml", "uid": "u1"},
    "spec": {"nodeName": "gpu-1", "containers": [{"name": "trainer", "image": "img"}]},
}


def running_pod(name):
    state = {"name": "trainer", "state": {"running": {}}, "containerID": f"containerd://{CONTAINER_ID}"}
    return {
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"nodeName": "gpu-1"},
        "status": {"phase": "Running", "containerStatuses": [dict(state, restartCount=0)]},
    }


class FakeKube:
    """The calls kubelet.dump and kubelet.restore make on the Kubernetes client."""

    def __init__(self, pods=()):
        self.created, self.deleted = [], []
        self.pods, self.listed = list(pods), []  # pods on the node; the field selectors asked

    def list(self, _kind, namespace=None, field_selector=None):
        self.listed.append((namespace, field_selector))
        return self.pods, "1"

    def get(self, _kind, name, _namespace):
        if name == ORIGINAL["metadata"]["name"]:
            return ORIGINAL
        raise K8sNotFound(f"pod {name} not found")

    def get_node(self, _node):
        return {}

    def create(self, _kind, body, _namespace):
        self.created.append(body)

    def watch_until(self, _kind, _predicate, _namespace, **_kwargs):
        return {"items": [running_pod(self.created[-1]["metadata"]["name"])]}

    def delete(self, _kind, name, _namespace, **_kwargs):
        self.deleted.append(name)


def kubelet_params(tool, images_dir, **extra):
    base = dict(
        state="dumped",
        method="kubelet",
        kubelet_url="https://127.0.0.1:10250",
        pod="trainer-0",
        namespace="ml",
        container="trainer",
        images_dir=str(images_dir),
        name="trainer",
        keep=0,
        leave_running=True,
        checkpoint=None,
        new_pod=None,
        node=None,
        timeout=30,
        cri_endpoint=None,
        containerd_address="/run/c.sock",
        containerd_namespace="k8s.io",
        ctr_path="/bin/true",
        cuda_checkpoint_path=tool,
        **CUDA_PARAMS,
    )
    base.update(extra)
    return base


@pytest.fixture
def kubelet_archive(tmp_path, monkeypatch, archive):
    """The kubelet's POST answers with an archive it wrote on the node; the state of the CUDA
    process during the POST is kept."""
    during_post = []

    def post(_params, _url):
        during_post.append(cuda_states.get(4242))
        written = tmp_path / "kubelet-checkpoints" / "checkpoint-trainer-0.tar"
        written.parent.mkdir(exist_ok=True)
        written.write_bytes(archive.read_bytes())
        return {"items": [str(written)]}

    cuda_states = {}
    monkeypatch.setattr(kubelet, "post_checkpoint", post)
    return cuda_states, during_post


def test_a_cuda_container_is_frozen_only_around_the_kubelets_checkpoint(gpu_host, tmp_path, kubelet_archive):
    gpus, tool, proc = gpu_host
    cuda = FakeCudaCheckpoint([4242], path=tool)
    states, during_post = kubelet_archive
    states.update(cuda.states)
    cuda.states = states  # the POST sees the fake's states
    run = FakeRun(crictl=crictl, cuda_checkpoint=cuda)
    result = kubelet.dump(
        kubelet_params(tool, tmp_path / "dumps"), False, FakeKube, run, gpus_dir=gpus, proc=proc
    )
    assert during_post == ["checkpointed"]
    assert cuda.actions() == [(a, 4242) for a in ("lock", "checkpoint", "restore", "unlock")]
    assert result["manifest"]["gpu"] == {"path": "cuda-checkpoint", "cuda_pids": [4242]}
    assert result["gpu"]["locked_s"] >= 0


def test_a_node_without_a_gpu_is_not_asked_for_processes(tmp_path, kubelet_archive):
    run = FakeRun()
    no_gpus, proc = str(tmp_path / "none"), containerd_proc(tmp_path)[0]
    result = kubelet.dump(
        kubelet_params(None, tmp_path / "dumps"), False, FakeKube, run, gpus_dir=no_gpus, proc=proc
    )
    assert run.calls == [] and result["manifest"]["gpu"]["path"] == "none"
    # CRIU's stats from the archive's stats-dump: the frozen time a running job felt
    assert result["frozen_s"] == result["manifest"]["stats"]["frozen_s"] == 0.134993
    assert result["manifest"]["stats"]["pages_written"] == 658 and result["warnings"] == []


def earlier_kubelet_dumps(images_dir, *stamps):
    """Finished method=kubelet dumps of trainer in ``images_dir``; the refs a restore gives them."""
    for stamp in stamps:
        path = images_dir / f"trainer-{stamp}"
        path.mkdir(parents=True)
        (path / "manifest.json").write_text(json.dumps({"name": "trainer", "method": "kubelet"}))
    return [f"strata.local/checkpoint/trainer:{stamp}" for stamp in stamps]


def restored_pod(name, image):
    return {"metadata": {"name": name, "namespace": "ml"}, "spec": {"containers": [{"image": image}]}}


def test_a_dump_that_prunes_removes_the_imported_images_no_pod_runs(tmp_path, kubelet_archive):
    """A restore imports the dump as an image into the node's containerd (as large as the dump);
    once that dump is pruned its image goes too, unless a pod on the node runs it (containerd's CRI
    would restore a restarted container from it again)."""
    images = tmp_path / "dumps"
    running, unused = earlier_kubelet_dumps(images, "20250101T000000.000Z", "20250102T000000.000Z")
    another = "strata.local/checkpoint/trainer-2:20250101T000000.000Z"
    fake_ctr = FakeCtr(images=[running, unused, another, "docker.io/library/img:1"])
    kube = FakeKube(pods=[restored_pod("trainer-r", running), restored_pod("web", "img")])
    run = FakeRun(true=fake_ctr)
    proc = containerd_proc(tmp_path)[0]
    result = kubelet.dump(
        kubelet_params(None, images, keep=1),
        False,
        lambda: kube,
        run,
        gpus_dir=str(tmp_path / "none"),
        proc=proc,
    )
    assert len(result["pruned"]) == 2
    assert result["store_images_removed"] == [unused]
    assert result["store_images_kept"] == {running: ["ml/trainer-r"]}
    assert fake_ctr.images == {running, another, "docker.io/library/img:1"}
    assert kube.listed == [(None, "spec.nodeName=gpu-1")] and result["warnings"] == []


def test_a_dump_that_cannot_look_at_containerds_store_warns_and_is_kept(tmp_path, kubelet_archive):
    images = tmp_path / "dumps"
    earlier_kubelet_dumps(images, "20250101T000000.000Z")
    params = kubelet_params(None, images, keep=1, ctr_path=str(tmp_path / "no-ctr"))
    result = kubelet.dump(
        params, False, FakeKube, FakeRun(), gpus_dir=str(tmp_path / "none"), proc=containerd_proc(tmp_path)[0]
    )
    assert os.path.isdir(result["checkpoint_dir"]) and len(result["pruned"]) == 1
    assert result["store_images_removed"] == [] and result["store_images_kept"] == {}
    assert "were not looked for in this node's containerd (ctr" in result["warnings"][0]
    assert "images ls and remove those of pruned dumps no pod runs" in result["warnings"][0]


def test_an_archive_without_stats_is_kept_and_its_frozen_time_is_unknown(tmp_path):
    path = tmp_path / "checkpoint.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("spec.dump")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    stats, warnings = kubelet.archive_stats(str(path))
    assert stats is None and "has no stats-dump" in warnings[0] and "unknown" in warnings[0]
    with tarfile.open(path, "a") as tar:
        info = tarfile.TarInfo("stats-dump")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\x40\x59\x10\x55"))
    stats, warnings = kubelet.archive_stats(str(path))
    assert stats is None and "cannot be read" in warnings[0]


def kubelet_dump_with_cuda(tmp_path, archive):
    """A method=kubelet dump directory whose container had CUDA state (taken by cuda-checkpoint)."""
    stamp = "20250101T000000.000Z"
    dump_dir = tmp_path / "dumps" / f"trainer-{stamp}"
    dump_dir.mkdir(parents=True)
    (dump_dir / "checkpoint.tar").write_bytes(archive.read_bytes())
    manifest = {
        "name": "trainer",
        "method": "kubelet",
        "archive": "checkpoint.tar",
        "archive_sha256": ociimage.sha256_of(str(dump_dir / "checkpoint.tar")),
        "pod": {"name": "trainer-0", "namespace": "ml", "node": "gpu-1"},
        "container": "trainer",
        "pod_spec": ORIGINAL["spec"],
        "gpu": {"path": "cuda-checkpoint", "cuda_pids": [17]},
        "sizes": {"images_bytes": archive.stat().st_size},
    }
    (dump_dir / "manifest.json").write_text(json.dumps(manifest))
    ref = f"strata.local/checkpoint/trainer:{stamp}"
    return str(dump_dir), FakeCtr(images=[ref, "sha256:" + "a" * 64])


@pytest.mark.parametrize("thaw_fails", [False, True])
def test_a_restored_cuda_pod_is_thawed_or_deleted(gpu_host, tmp_path, archive, thaw_fails):
    gpus, tool, proc = gpu_host
    dump_dir, fake_ctr = kubelet_dump_with_cuda(tmp_path, archive)
    fail = {"restore": (1, "CUDA_ERROR_OUT_OF_MEMORY\n")} if thaw_fails else {}
    cuda = FakeCudaCheckpoint([4242], path=tool, fail=fail)
    cuda.states[4242] = "checkpointed"  # as CRIU brings back a process dumped checkpointed
    kube = FakeKube()
    run = FakeRun(true=fake_ctr, crictl=crictl, cuda_checkpoint=cuda)
    restore_params = kubelet_params(
        tool, tmp_path / "dumps", state="restored", checkpoint=dump_dir, new_pod="trainer-r"
    )
    if thaw_fails:
        with pytest.raises(StrataError) as caught:
            kubelet.restore(restore_params, False, lambda: kube, run, gpus_dir=gpus, proc=proc)
        assert "CUDA_ERROR_OUT_OF_MEMORY" in caught.value.msg and "was deleted again" in caught.value.msg
        assert kube.deleted == ["trainer-r"]
        return
    result = kubelet.restore(restore_params, False, lambda: kube, run, gpus_dir=gpus, proc=proc)
    assert cuda.actions() == [("restore", 4242), ("unlock", 4242)] and cuda.states[4242] == "running"
    assert (result["gpu"]["path"], result["gpu"]["cuda_pids"]) == ("cuda-checkpoint", [4242])
    assert kube.deleted == []


def test_a_dump_asked_to_stop_the_pod_is_refused_before_the_kubelet_is_asked(tmp_path, kubelet_archive):
    """The kubelet's checkpoint API never stops the container, and the kubelet would start it again:
    the module says how a pod is stopped instead of reporting a running pod as stopped."""
    _states, during_post = kubelet_archive
    with pytest.raises(InvalidArgument, match=r"set leave_running=true, then to stop the pod, scale its"):
        kubelet.dump(
            kubelet_params(None, tmp_path / "dumps", leave_running=False), False, FakeKube, FakeRun()
        )
    assert during_post == []
    assert not (tmp_path / "dumps").exists()


def test_a_cuda_dump_is_refused_before_the_pod_on_a_node_without_a_gpu(tmp_path, archive):
    dump_dir, fake_ctr = kubelet_dump_with_cuda(tmp_path, archive)
    kube = FakeKube()
    restore_params = kubelet_params(
        None, tmp_path / "dumps", state="restored", checkpoint=dump_dir, new_pod="trainer-r"
    )
    no_gpus, proc = str(tmp_path / "x"), containerd_proc(tmp_path)[0]
    with pytest.raises(StrataError, match="holds CUDA state"):
        kubelet.restore(
            restore_params, False, lambda: kube, FakeRun(true=fake_ctr), gpus_dir=no_gpus, proc=proc
        )
    assert kube.created == []


def test_the_node_containerds_criu_is_recorded_and_a_newer_one_refused(tmp_path, kubelet_archive, archive):
    """The module runs on the node: its containerd (containerd_address) ran CRIU for the kubelet, and
    restores the new pod with it."""
    proc, _temp = containerd_proc(tmp_path, criu=True, address="/run/c.sock")
    run = FakeRun(criu=lambda argv, **_kwargs: (0, "Version: 4.1.1\n", ""))
    dumped = kubelet.dump(
        kubelet_params(None, tmp_path / "dumps"),
        False,
        FakeKube,
        run,
        gpus_dir=str(tmp_path / "none"),
        proc=proc,
    )
    assert dumped["manifest"]["criu"] == {"path": "/usr/bin/criu", "version": "4.1.1"}

    dump_dir, fake_ctr = kubelet_dump_with_cuda(tmp_path / "newer", archive)
    newer = {"path": "/usr/local/sbin/criu", "version": "4.2"}
    mf.write(dump_dir, dict(mf.load(dump_dir), criu=newer, gpu={"path": "none"}))
    kube = FakeKube()
    restore_params = kubelet_params(
        None, tmp_path / "newer" / "dumps", state="restored", checkpoint=dump_dir, new_pod="trainer-r"
    )
    with pytest.raises(StrataError) as caught:
        kubelet.restore(
            restore_params, True, lambda: kube, FakeRun(true=fake_ctr, criu=run.handlers["criu"]), proc=proc
        )
    assert "dumped by CRIU 4.2, and the CRIU that would restore it is older: /usr/bin/criu (CRIU 4.1.1)" in (
        caught.value.msg
    )
    assert "the criu on the node's containerd's PATH" in caught.value.msg
    assert kube.created == []


@pytest.mark.parametrize(
    ("reported", "here", "refused"),
    [
        ("b" * 32, "a" * 32, True),  # another node's kubelet
        ("a" * 32, "a" * 32, False),  # this host's
        (None, "a" * 32, False),  # a node without one (kwok's) is not judged
        ("b" * 32, None, False),  # nor a host without /etc/machine-id
    ],
)
def test_a_restore_onto_another_hosts_node_is_refused_before_anything(tmp_path, reported, here, refused):
    node = {
        "metadata": {"name": "gpu-2"},
        "status": {"nodeInfo": {"machineID": reported} if reported else {}},
    }
    machine_id = tmp_path / "machine-id"
    if here:
        machine_id.write_text(here + "\n")
    if not refused:
        kubelet.refuse_another_host(node, str(machine_id))
        return
    with pytest.raises(InvalidArgument) as caught:
        kubelet.refuse_another_host(node, str(machine_id))
    assert caught.value.msg.startswith(
        f"node gpu-2 is not this host (its kubelet reports machine ID {reported}"
    )
    assert "Run the restore on gpu-2 (the play's host), or set node" in caught.value.msg
