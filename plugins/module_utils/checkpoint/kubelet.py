# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""method=kubelet: checkpoint a pod's container through the kubelet, restore it as a NEW pod.

* dump: ``POST /checkpoint/NAMESPACE/POD/CONTAINER`` on the kubelet (Kubernetes 1.25+, feature
  ContainerCheckpoint, on by default since 1.30; the caller needs ``create`` on
  ``nodes/checkpoint``). The CRI runtime (containerd 2.x, CRI-O) writes an archive under the
  kubelet's ``checkpoints/`` directory on the node and the kubelet answers with its path
  (``{"items": [PATH]}``). The module runs on that node: it moves the archive into a dated dump
  directory beside manifest.json, with the pod's spec (read from the API server), so that the
  restore needs nothing of the original pod, which may be gone by then.
* restore: the archive becomes a checkpoint OCI image (ociimage.py) imported into the node's
  containerd (``ctr images import``), and a new pod, a copy of the original's spec pinned to the
  node, runs the checkpointed container from that image: containerd's CRI plugin sees the
  checkpoint annotation and restores the container instead of starting it. The new pod has none
  of the original's labels (a ReplicaSet would adopt or delete it) nor owner references. A restore
  that fails deletes the new pod again, so nothing half-restored is left running.
"""

import json
import os
import re
import shutil
import time

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr
from ansible_collections.strata.ops.plugins.module_utils import criu
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import (
    STOP_A_POD,
    BadCheckpoint,
    containerd,
    ociimage,
    reopened,
    runtime_criu,
)
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import gpu as gpu_mod
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import manifest as mf
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument, StrataError, utc_iso

METHOD = "kubelet"
ARCHIVE = "checkpoint.tar"
IMAGE_ARCHIVE = "checkpoint-image.tar"
# Checkpoint images are named strata.local/checkpoint/NAME:STAMP. A reference's repository path is
# lower case [a-z0-9] with . _ - separators, its tag [A-Za-z0-9_.-] (distribution's reference grammar).
REF_REPOSITORY = "strata.local/checkpoint/"
RESTORED_FROM = containerd.RESTORED_FROM
RESTORED_FROM_POD = "strata.io/restored-from-pod"
# The archive's metadata file that names the image the container ran (checkpointctl's
# lib.ConfigDumpFile, written by containerd's CheckpointContainer).
CONFIG_DUMP = "config.dump"
# Container states in which a restored pod will not come up by itself.
FAILED_REASONS = frozenset(
    [
        "ErrImageNeverPull",
        "CreateContainerError",
        "CreateContainerConfigError",
        "RunContainerError",
        "CrashLoopBackOff",
        "ImageInspectError",
        "InvalidImageName",
    ]
)
# This host's identity, as the kubelet reports it in its node's status.nodeInfo.machineID.
MACHINE_ID = "/etc/machine-id"
# Fields of a pod's spec that belong to the running pod, not to what it runs.
SPEC_OF_THE_RUNNING_POD = ("nodeName", "ephemeralContainers")


def checkpoint_url(params):
    if not (params["kubelet_url"] and params["pod"] and params["container"]):
        raise InvalidArgument("method=kubelet needs kubelet_url, pod and container")
    base = params["kubelet_url"].rstrip("/")
    return f"{base}/checkpoint/{params['namespace']}/{params['pod']}/{params['container']}"


def post_checkpoint(params, url):
    """The kubelet's answer to the checkpoint POST."""
    headers = {"Authorization": f"Bearer {params['kubelet_token']}"} if params["kubelet_token"] else {}
    # ansible.module_utils.urls costs ~0.1 s of imports that every CRIU dump (the common
    # path, timed by bench/bench_checkpoint.py) would otherwise pay.
    from ansible.module_utils.urls import open_url  # noqa: PLC0415 - kubelet path only

    try:
        response = open_url(
            url,
            method="POST",
            headers=headers,
            validate_certs=params["validate_certs"],
            ca_path=params["kubelet_ca_path"],
            timeout=params["timeout"],
        )
        return json.loads(response.read() or b"{}")
    except Exception as exc:  # urllib's HTTPError/URLError/ssl errors all land here
        said = _http_body(exc)
        raise ctr.RuntimeUnavailable(
            f"kubelet checkpoint API {url} failed: {exc}{': ' + said if said else ''}. The kubelet needs "
            "the ContainerCheckpoint feature (on by default since 1.30) and a CRI runtime with checkpoint "
            "support (containerd >= 2.0 or CRI-O, with CRIU >= 4 on its PATH); the token needs create on "
            "nodes/checkpoint"
        ) from None


def _http_body(exc):
    try:
        return exc.read().decode("utf-8", "replace").strip()[:300]
    except Exception:  # not an HTTPError, or its body is gone
        return ""


def pod_spec_to_keep(pod):
    spec = dict(pod.get("spec") or {})
    for key in SPEC_OF_THE_RUNNING_POD:
        spec.pop(key, None)
    return spec


def container_tree(params, run_command, pod, namespace, container, *, proc="/proc"):
    """The host PIDs of a pod's container and its descendants, found through crictl on this node."""
    crictl = criu.find_executable("crictl")
    if not crictl:
        raise ctr.RuntimeUnavailable(
            f"this node has an NVIDIA GPU, and the CUDA processes of {namespace}/{pod} must be frozen around "
            "the kubelet's checkpoint: the module finds them through crictl, which is not installed here"
        )
    argv = ctr.crictl_argv(crictl, params["cri_endpoint"])
    return criu.process_tree(ctr.crictl_target(run_command, argv, pod, namespace, container)["pid"], proc)


def node_gpu_plan(params, run_command, pod, namespace, *, gpus_dir, find_freezer, proc="/proc"):
    """dump_plan for the container of ``pod`` on this node: the CRI runtime's CRIU has no GPU support
    of its own. A node without an NVIDIA GPU is not asked for processes."""
    if not gpu_mod.nvidia_gpu_present(gpus_dir):
        tree = []
    else:
        tree = container_tree(params, run_command, pod, namespace, params["container"], proc=proc)
    return gpu_mod.dump_plan(params, run_command, tree, gpus_dir=gpus_dir, find=find_freezer, proc=proc)


def dump(
    params,
    check_mode,
    connect,
    run_command,
    *,
    gpus_dir=gpu_mod.NVIDIA_GPUS_DIR,
    find_freezer=gpu_mod.find_freezer,
    clock=time.monotonic,
    proc="/proc",
):
    """Checkpoint pod/container through the kubelet into a dump directory of images_dir;
    ``connect()`` gives the Kubernetes client, once the parameters are known to be good. On a GPU
    node the container's CUDA processes are frozen only around the kubelet's checkpoint
    (``run_command`` runs crictl and cuda-checkpoint; the rest as containerd.dump's)."""
    url = checkpoint_url(params)
    if not params["leave_running"]:
        raise InvalidArgument(
            "method=kubelet leaves the container running (the kubelet's checkpoint API does not stop it, "
            f"and would start it again): set leave_running=true, then {STOP_A_POD}"
        )
    if not params["images_dir"]:
        raise InvalidArgument(
            "images_dir is needed: the kubelet's archive is moved into a dump directory there"
        )
    namespace = params["namespace"]
    client = connect()
    pod = client.get("Pod", params["pod"], namespace)
    names = [c["name"] for c in pod["spec"].get("containers", [])]
    if params["container"] not in names:
        raise InvalidArgument(
            f"pod {namespace}/{params['pod']} has no container {params['container']!r}; its containers: "
            f"{', '.join(names)}"
        )
    node = pod["spec"].get("nodeName")
    mf.check_images_dir(params["images_dir"])
    name = params["name"] or f"{params['pod']}-{params['container']}"
    dump_dir = os.path.join(params["images_dir"], f"{name}-{mf.stamp()}")
    result = {
        "changed": True,
        "method": METHOD,
        "checkpoint_dir": dump_dir,
        "command": ["POST", url],
        "target": {
            "runtime": METHOD,
            "pod": params["pod"],
            "namespace": namespace,
            "container_name": params["container"],
            "node": node,
        },
    }
    gpu, freezer = node_gpu_plan(
        params, run_command, params["pod"], namespace, gpus_dir=gpus_dir, find_freezer=find_freezer, proc=proc
    )
    result["gpu"] = gpu
    if check_mode:
        return result
    answer = gpu_mod.frozen_while(
        freezer,
        gpu,
        lambda: post_checkpoint(params, url),
        lock_timeout_s=params["cuda_lock_timeout"],
        clock=clock,
    )
    written = (answer.get("items") or [None])[0]
    if not written:
        raise ctr.RuntimeUnavailable(f"the kubelet answered {answer} to {url}: no archive path in items")
    mf.make_images_dir(params["images_dir"])
    abandoned = mf.remove_abandoned(params["images_dir"], name)
    mf.start(dump_dir)
    archive = os.path.join(dump_dir, ARCHIVE)
    _move_archive(written, archive, node, dump_dir)
    manifest = {
        "name": name,
        "method": METHOD,
        "created": utc_iso(),
        # the node's containerd ran CRIU for the kubelet (the module runs on the node)
        "criu": containerd.dumping_criu(run_command, proc, containerd.containerd_address(params)),
        "archive": ARCHIVE,
        "kubelet_archive": written,
        "archive_sha256": ociimage.sha256_of(archive),
        "leave_running": True,
        "target": result["target"],
        "pod": {
            "name": params["pod"],
            "namespace": namespace,
            "uid": pod["metadata"].get("uid"),
            "node": node,
        },
        "container": params["container"],
        "pod_spec": pod_spec_to_keep(pod),
        "gpu": {"path": gpu["path"], "cuda_pids": gpu["cuda_pids"]},
        "sizes": {"images_bytes": os.path.getsize(archive)},
    }
    stats, warnings = archive_stats(archive)
    manifest["stats"] = stats
    mf.finish(dump_dir, manifest)
    pruned = mf.prune(params["images_dir"], name, params["keep"], dump_dir)
    released = {"removed": [], "kept": {}}
    if pruned:
        released, unchecked = _release_images(params, client, run_command, name, node)
        warnings.extend(unchecked)
    return dict(
        result,
        manifest=manifest,
        pruned=pruned,
        kubelet=answer,
        abandoned_removed=abandoned,
        store_images_removed=released["removed"],
        store_images_kept=released["kept"],
        frozen_s=stats["frozen_s"] if stats else None,
        warnings=warnings,
    )


def image_ref(name, stamp):
    repository = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "container"
    return f"{REF_REPOSITORY}{repository}:{stamp}"


class Ctr(ctr.CtrClient):
    """The node's containerd's ctr, which a restore imports the checkpoint image with (and a dump
    prunes the images of pruned dumps with): the binary from ctr_path or PATH."""

    def __init__(self, params, run_command):
        binary = params.get("ctr_path") or criu.find_executable("ctr")
        if not binary or not os.access(binary, os.X_OK):
            raise ctr.RuntimeUnavailable(
                f"ctr ({params.get('ctr_path') or 'on PATH'}) is not installed: method=kubelet imports the "
                "checkpoint image into the node's containerd with its ctr client (Debian package "
                "containerd); set ctr_path"
            )
        address = containerd.containerd_address(params)
        super().__init__([binary], address, params["containerd_namespace"], run_command)

    def line(self, *args):
        return " ".join([*self.argv, *args])

    def failure(self, args, rc, text, argv):
        what = f"{' '.join(args[:2])} failed (rc={rc}): {text}"
        if "connect" in text or "no such file" in text.lower():
            what += f". Is containerd up, and is {self.address} its socket? Set containerd_address"
        return criu.CriuError(what, cmd=" ".join(argv), rc=rc)

    def has_image(self, ref):
        return ref in self.image_refs()

    def image_refs(self):
        """The refs of the images in the store."""
        _rc, out, _err = self.run("images", "ls", "-q", check=False)
        return set(out.split())

    def import_step(self, archive, *options):
        """``ctr images import`` of ``archive``, with ``--local`` where this ctr has the flag (1.7 and
        2.x: the client writes the blobs into the content store itself rather than streaming the
        archive through containerd's transfer service; on 1.7.24, 513 MiB in 2.3-2.4 s against
        2.9-4.1 s, 1 GiB in 5.5-5.8 s against 5.4-7.7 s: docs/performance.md). 1.6 has no transfer
        service and always imports locally."""
        _rc, out, err = self.run("images", "import", "--help", check=False)
        local = ("--local",) if "--local " in out + err else ()
        return ("images", "import", *options, *local, archive)


def dump_image_ref(name, dump_dir):
    """The checkpoint image a restore imports dump ``dump_dir`` (NAME-STAMP) of ``name`` as."""
    return image_ref(name, os.path.basename(dump_dir)[len(name) + 1 :])


def _release_images(params, client, run_command, name, node):
    """The checkpoint images of ``name`` that restores imported into this node's containerd, whose
    dump is gone (pruned) and that no pod on the node runs, leave the store: each is as large as its
    dump, and nothing else removes it. One a pod runs stays: containerd's CRI restores a restarted
    container from its image again. ({"removed": [refs], "kept": {ref: [NS/POD]}}, warnings): what
    could not be looked at is a warning, the dump itself is done."""
    released, pods = {"removed": [], "kept": {}}, []
    kept_dumps = {dump_image_ref(name, d) for d in mf.dumps_of(params["images_dir"], name)}
    prefix = image_ref(name, "")
    try:
        ctr_client = Ctr(params, run_command)
        orphans = sorted(r for r in ctr_client.image_refs() if r.startswith(prefix) and r not in kept_dumps)
        if orphans:
            pods, _version = client.list("Pod", field_selector=f"spec.nodeName={node}")
    except StrataError as exc:
        return released, [
            f"the checkpoint images of the pruned dumps of {name} were not looked for in this node's "
            f"containerd ({exc.msg}): list them with ctr -n {params['containerd_namespace']} images ls "
            f"and remove those of pruned dumps no pod runs"
        ]
    for ref in orphans:
        users = [
            f"{pod['metadata'].get('namespace')}/{pod['metadata']['name']}"
            for pod in pods
            if any(c.get("image") == ref for c in (pod.get("spec") or {}).get("containers") or [])
        ]
        if users:
            released["kept"][ref] = users
        else:
            ctr_client.run("images", "rm", ref, check=False)
            released["removed"].append(ref)
    return released, []


def archive_stats(archive):
    """(CRIU's dump stats from the archive, warnings): containerd's CRI plugin puts CRIU's
    ``stats-dump`` at the archive's root, as CRI-O does; the checkpoint stands without it."""
    data = ociimage.read_member(archive, "stats-dump")
    if data is None:
        return None, [f"{archive} has no stats-dump (CRIU's): the frozen time of this checkpoint is unknown"]
    try:
        return criu.summarize_dump_stats(criu.parse_stats(data)), []
    except criu.CriuError as exc:
        return None, [f"the stats-dump in {archive} cannot be read ({exc}): the frozen time is unknown"]


def _move_archive(written, archive, node, dump_dir):
    """The kubelet's archive into the dump directory (a rename on one file system, else a copy)."""
    if not os.path.isfile(written):
        shutil.rmtree(dump_dir, ignore_errors=True)
        raise InvalidArgument(
            f"the kubelet wrote its archive to {written} on node {node}, which is not a file on this host: "
            f"run the module on node {node} (delegate_to), where the archive is"
        )
    try:
        shutil.move(written, archive)
    except OSError as exc:
        shutil.rmtree(dump_dir, ignore_errors=True)
        raise InvalidArgument(
            f"cannot move the kubelet's archive {written} into {dump_dir}: {exc.strerror or exc}. "
            f"The archive stays at {written} ({os.path.getsize(written)} bytes); free space where "
            "images_dir is, or point images_dir at a file system with room for it"
        ) from None


def restore(
    params,
    check_mode,
    connect,
    run_command,
    *,
    gpus_dir=gpu_mod.NVIDIA_GPUS_DIR,
    find_freezer=gpu_mod.find_freezer,
    proc="/proc",
    machine_id=MACHINE_ID,
):
    """Restore a method=kubelet dump as the new pod new_pod (``connect()``: the Kubernetes client).
    CUDA processes come back checkpointed: restored and unlocked here once the pod runs
    (``machine_id``: this host's, refuse_another_host)."""
    checkpoint = mf.choose(params["checkpoint"], params["images_dir"], params["name"])
    manifest = mf.load(checkpoint)
    if manifest.get("method") != METHOD:
        raise BadCheckpoint(
            f"{checkpoint} was not taken through the kubelet (method {manifest.get('method', 'criu')}): "
            f"restore it with method={manifest.get('method', 'criu')}, or take a new dump with method=kubelet"
        )
    new_pod = params["new_pod"]
    if not new_pod:
        raise InvalidArgument("method=kubelet restores into a new pod: set new_pod to its name")
    namespace = params["namespace"]
    node = params["node"] or manifest["pod"]["node"]
    archive = _checked_archive(checkpoint, manifest)
    name = manifest["name"]
    ref = dump_image_ref(name, checkpoint)
    result = {
        "changed": True,
        "method": METHOD,
        "checkpoint": checkpoint,
        "new_pod": new_pod,
        "namespace": namespace,
        "node": node,
        "image_ref": ref,
        "gpu": {"path": (manifest.get("gpu") or {}).get("path", "none")},
    }
    client = connect()
    existing = _existing_pod(client, new_pod, namespace)
    if existing is not None:
        ours = (existing["metadata"].get("annotations") or {}).get(RESTORED_FROM) == ref
        if ours and existing.get("status", {}).get("phase") == "Running":
            return dict(result, changed=False, restored=_restored_view(existing, manifest["container"]))
        raise ctr.ContainerConflict(
            f"a pod {namespace}/{new_pod} exists already"
            f"{' (restored from this checkpoint, but not running)' if ours else ''}: choose another "
            f"new_pod or delete it (kubectl -n {namespace} delete pod {new_pod})"
        )
    refuse_another_host(client.get_node(node), machine_id)
    runtime_criu.refuse_unreadable(
        checkpoint,
        manifest,
        run_command,
        proc,
        address=containerd.containerd_address(params),
        where="the node's containerd's",
    )
    reopened.refuse_changed(
        checkpoint,
        reopened.hostpath_binds(manifest["pod_spec"], manifest["container"]),
        lambda: reopened.in_kubelet_archive(archive),
    )
    result["gpu"], freezer = gpu_mod.restore_plan(
        params, run_command, manifest, checkpoint, gpus_dir=gpus_dir, find=find_freezer
    )
    ctr_client = Ctr(params, run_command)
    body = pod_body(manifest, new_pod, namespace, node, ref, checkpoint)
    steps = _image_steps(ctr_client, archive, ref, checkpoint)
    if check_mode:
        return dict(result, commands=[ctr_client.line(*step) for step in steps], pod=body)
    image_archive = os.path.join(checkpoint, IMAGE_ARCHIVE)
    try:
        if steps:
            ociimage.write(archive, manifest["archive_sha256"], image_archive, ref, manifest["container"])
        for step in steps:
            ctr_client.run(*step)
    finally:
        if os.path.exists(image_archive):
            os.unlink(image_archive)
    client.create("Pod", body, namespace)
    try:
        pod = wait_restored(client, new_pod, namespace, manifest["container"], params["timeout"])
        if freezer is not None:
            tree = container_tree(params, run_command, new_pod, namespace, manifest["container"], proc=proc)
            gpu_mod.after_restore(freezer, result["gpu"], tree, proc)
    except StrataError as exc:
        client.delete("Pod", new_pod, namespace, grace_period_seconds=0)
        exc.msg += f" -- pod {namespace}/{new_pod} was deleted again, nothing is left half-restored"
        raise
    return dict(
        result, restored=_restored_view(pod, manifest["container"]), commands=ctr_client.commands, pod=body
    )


def refuse_another_host(node, machine_id=MACHINE_ID):
    """The restore imports the checkpoint image into this host's containerd, and the new pod is
    pinned to ``node``: that node must be this host, or its kubelet finds no image (ErrImageNeverPull)
    only after the pod was made. Judged by the machine ID its kubelet reports (read from the node's
    /etc/machine-id) against this host's; a node reporting none (kwok's) is not judged."""
    reported = ((node.get("status") or {}).get("nodeInfo") or {}).get("machineID")
    try:
        with open(machine_id) as handle:
            here = handle.read().strip()
    except OSError:
        return
    if reported and here and reported != here:
        name = node["metadata"]["name"]
        raise InvalidArgument(
            f"node {name} is not this host (its kubelet reports machine ID {reported}, {machine_id} here "
            f"is {here}): the restore imports the checkpoint image into this host's containerd and pins "
            f"the new pod to {name}. Run the restore on {name} (the play's host), or set node to this "
            "host's node name. Nothing was imported or created"
        )


def archive_problem(checkpoint, manifest):
    """Why the dump's archive cannot be restored (missing, or not the size the dump wrote), or None."""
    archive = os.path.join(checkpoint, manifest.get("archive") or ARCHIVE)
    if not os.path.isfile(archive):
        return f"the kubelet's checkpoint archive {ARCHIVE} is missing: the dump is incomplete"
    return mf.size_problem(archive, manifest)


def _checked_archive(checkpoint, manifest):
    problem = archive_problem(checkpoint, manifest)
    if problem:
        raise BadCheckpoint(f"{checkpoint}: {problem}; take a new dump")
    return os.path.join(checkpoint, manifest.get("archive") or ARCHIVE)


def _existing_pod(client, name, namespace):
    # Importing the k8s package loads the kubernetes library: only this path pays for it.
    from ansible_collections.strata.ops.plugins.module_utils.k8s.errors import K8sNotFound  # noqa: PLC0415

    try:
        return client.get("Pod", name, namespace)
    except K8sNotFound:
        return None


def _image_steps(ctr_client, archive, ref, checkpoint):
    """ctr steps that make the checkpoint image and its base image known to the node's containerd."""
    image_archive = os.path.join(checkpoint, IMAGE_ARCHIVE)
    steps = [] if ctr_client.has_image(ref) else [ctr_client.import_step(image_archive)]
    config = json.loads(ociimage.read_member(archive, CONFIG_DUMP) or b"{}")
    base_ref, base_name = config.get("rootfsImageRef"), config.get("rootfsImageName")
    if not base_ref:
        raise BadCheckpoint(
            f"{archive} has no {CONFIG_DUMP} naming its base image: it is not a CRI checkpoint"
        )
    if not ctr_client.has_image(base_ref):
        # containerd's restore looks the base image up by the reference the container ran (its image
        # ID, sha256:..., for an image that was imported rather than pulled) and pulls it when that
        # name is missing; an imported image is known by its tag only, so the ID is added as a name.
        if not (base_name and ctr_client.has_image(base_name)):
            raise BadCheckpoint(
                f"the checkpointed container ran image {base_name or base_ref} ({base_ref}), which the "
                f"node's containerd does not have: import it there first (ctr -n k8s.io images import)"
            )
        steps.append(("images", "tag", base_name, base_ref))
    return steps


def pod_body(manifest, new_pod, namespace, node, ref, checkpoint):  # noqa: PLR0917 - one pod's fields
    """The new pod: the original's spec on ``node``, the checkpointed container from ``ref``."""
    spec = json.loads(json.dumps(manifest["pod_spec"]))
    spec["nodeName"] = node
    for container in spec.get("containers", []):
        if container["name"] == manifest["container"]:
            container["image"] = ref
            container["imagePullPolicy"] = "Never"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": new_pod,
            "namespace": namespace,
            "labels": {RESTORED_FROM_POD: manifest["pod"]["name"]},
            "annotations": {RESTORED_FROM: ref, "strata.io/checkpoint": checkpoint},
        },
        "spec": spec,
    }


def container_status(pod, container):
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return status
    return None


def restore_outcome(pod, container):
    """'running', 'failed: REASON: MESSAGE' or None (not yet) for the restored container."""
    status = container_status(pod, container)
    if not status:
        return None
    state = status.get("state") or {}
    if "running" in state:
        return "running"
    for key in ("waiting", "terminated"):
        if key not in state:
            continue
        detail = state[key] or {}
        reason = detail.get("reason")
        if key == "terminated" or reason in FAILED_REASONS:
            return f"failed: {reason or key}: {detail.get('message', '').strip()}"
    return None


def wait_restored(client, name, namespace, container, timeout):
    def settled(items):
        return bool(items) and restore_outcome(items[0], container) is not None

    done = client.watch_until(
        "Pod",
        settled,
        namespace,
        field_selector=f"metadata.name={name}",
        timeout=timeout,
        description=f"container {container} of pod {namespace}/{name} running from the checkpoint",
    )
    pod = done["items"][0]
    outcome = restore_outcome(pod, container)
    if outcome != "running":
        raise BadCheckpoint(
            f"pod {namespace}/{name} did not restore container {container}: {outcome}. See the node's "
            "containerd log; a checkpoint from another runtime or CRIU version, or of another image, "
            "cannot be restored"
        )
    return pod


def _restored_view(pod, container):
    status = container_status(pod, container) or {}
    return {
        "pod": pod["metadata"]["name"],
        "node": pod["spec"].get("nodeName"),
        "container_id": status.get("containerID"),
        "restart_count": status.get("restartCount"),
    }
