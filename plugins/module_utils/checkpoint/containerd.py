# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""method=containerd: containerd's own checkpoint and restore of a CRI container, as containerd 1.6
and 1.7 (the MicroK8s and k3s runtimes) do it with ctr:

* dump: ``ctr containers checkpoint --task --rw CONTAINER REF`` makes a checkpoint image in
  containerd's content store (the runc shim runs CRIU; the task keeps running), and
  ``ctr images export --skip-manifest-json`` writes it into the dump directory as an OCI archive,
  beside manifest.json (a checkpoint index has no Docker image config for export's Docker
  manifest.json: without the flag ctr fails with "unable to create manifests file");
* restore: ``ctr images import --no-unpack`` when the store lacks it (a checkpoint image has no
  layers to unpack: ctr fails with "unexpected media type ...checkpoint.runtime.options" without
  it), then ``ctr containers restore --live --rw NEW REF`` creates a NEW container from it and
  starts its task from the checkpoint.

A second checkpoint of a container while the image of its first is in the store comes out without
the process: containerd's tasks service writes the container's spec into the content store with
each checkpoint (plugins/services/tasks/local.go, Checkpoint: writeContent of "spec" commits
unconditionally), the identical spec blob exists, the commit fails with AlreadyExists, and ctr's
Container.Checkpoint drops AlreadyExists errors of its options (client/container.go): the image
holds only the rw layer. Seen on 1.6.20 and 1.7.24. So a dump first removes from the store (with
``--sync``, so the blob is collected before the checkpoint) the images of earlier dumps of the same
container, whatever their name or images_dir (each checkpoint image the module makes or imports is
labelled with the container it holds: CHECKPOINT_OF; the archives stay, a restore imports them
again), and checks the archive it exported for CRIU's layer.

The container is found through crictl (target.py). A restore that fails part way removes what it
made, so nothing half-restored is left running.
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
    leftovers,
    reopened,
    runtime_criu,
)
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import gpu as gpu_mod
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import manifest as mf
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument, utc_iso

METHOD = "containerd"
ARCHIVE = "checkpoint.tar"
# Checkpoint images are named strata.local/checkpoint/NAME:STAMP. A reference's repository path is
# lower case [a-z0-9] with . _ - separators, its tag [A-Za-z0-9_.-] (distribution's reference grammar).
REF_REPOSITORY = "strata.local/checkpoint/"
DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
NO_CRIU = "executable file not found"
RUNNING_WAIT_S = 10
RESTORED_FROM = "strata.io/restored-from"
# The label of a checkpoint image: the id of the container it holds (see the module's doc).
CHECKPOINT_OF = "strata.io/checkpoint-of"


def image_ref(name, stamp):
    repository = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "container"
    return f"{REF_REPOSITORY}{repository}:{stamp}"


def joined_namespaces(info, readlink=os.readlink):
    """The namespaces the container joins by path (its pod sandbox's: ``/proc/PID/ns/net``, ipc,
    uts), each {type, path, id} with the namespace's identity (``net:[INODE]``) at dump time, from
    ``ctr containers info``'s OCI spec (linux.namespaces, runtime-spec config-linux.md). A
    checkpoint image keeps that spec: ``ctr containers restore`` joins the same paths again."""
    joined = []
    for entry in ((info.get("Spec") or {}).get("linux") or {}).get("namespaces") or []:
        path = entry.get("path")
        if path:
            try:
                identity = readlink(path)
            except OSError:
                identity = None
            joined.append({"type": entry.get("type"), "path": path, "id": identity})
    return joined


def namespaces_gone(joined, readlink=os.readlink):
    """The entries of ``joined`` (joined_namespaces) whose path is gone or now names another
    namespace: the pod sandbox was removed or restarted (a reused pid names another process).
    An entry whose identity the dump could not read is not judged."""
    gone = []
    for entry in joined:
        if entry.get("id") is None:
            continue
        try:
            now = readlink(entry["path"])
        except OSError:
            now = None
        if now is None or now != entry.get("id"):
            gone.append(dict(entry, now=now))
    return gone


def containerd_address(params):
    """containerd's socket: containerd_address, else the unix socket of cri_endpoint (the CRI plugin
    serves both APIs on one socket), else containerd's default."""
    if params.get("containerd_address"):
        return params["containerd_address"]
    endpoint = params.get("cri_endpoint") or ""
    if endpoint.startswith("unix://"):
        return endpoint[len("unix://") :]
    return DEFAULT_ADDRESS


class Ctr(ctr.CtrClient):
    """ctr for method=containerd: the binary from ctr_path or PATH, CRIU-aware failures."""

    def __init__(self, params, run_command):
        binary = params.get("ctr_path") or criu.find_executable("ctr")
        if not binary or not os.access(binary, os.X_OK):
            raise ctr.RuntimeUnavailable(
                f"ctr ({params.get('ctr_path') or 'on PATH'}) is not installed: method=containerd drives "
                "containerd through its ctr client (Debian package containerd); set ctr_path"
            )
        super().__init__([binary], containerd_address(params), params["containerd_namespace"], run_command)

    def line(self, *args):
        return " ".join([*self.argv, *args])

    def failure(self, args, rc, text, argv):
        what = f"{' '.join(args[:2])} failed (rc={rc}): {text}"
        if NO_CRIU in text and "criu" in text.lower():
            what += (
                ". containerd's runc shim runs the criu on containerd's PATH and finds none: "
                "install CRIU >= 4 on that PATH (for example /usr/local/sbin/criu), or restart containerd "
                "with CRIU's directory on its PATH"
            )
        elif "connect" in text or "no such file" in text.lower():
            what += f". Is containerd up, and is {self.address} its socket? Set containerd_address"
        return criu.CriuError(what, cmd=" ".join(argv), rc=rc)

    def container_labels(self, name):
        """The labels of container ``name``, or None when it does not exist."""
        rc, out, _err = self.run("containers", "info", name, check=False)
        if rc != 0:
            return None
        try:
            return json.loads(out).get("Labels") or {}
        except ValueError:
            return {}

    def has_container(self, name):
        return self.container_labels(name) is not None

    def has_image(self, ref):
        return ref in self.image_refs()

    def image_refs(self, checkpoint_of=None):
        """The refs of the images in the store; with ``checkpoint_of``, of the checkpoint images of
        that container (containerd's filter syntax, filters/parser.go: labels."KEY"==VALUE)."""
        where = (f'labels."{CHECKPOINT_OF}"=={checkpoint_of}',) if checkpoint_of else ()
        _rc, out, _err = self.run("images", "ls", "-q", *where, check=False)
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

    @staticmethod
    def label_step(ref, container_id):
        """The step that labels checkpoint image ``ref`` with the container it holds."""
        return ("images", "label", ref, f"{CHECKPOINT_OF}={container_id}")

    def container_info(self, name):
        """``ctr containers info``'s JSON of container ``name`` (its OCI spec under "Spec")."""
        _rc, out, _err = self.run("containers", "info", name)
        try:
            return json.loads(out)
        except ValueError:
            raise criu.CriuError(f"ctr containers info {name} printed no JSON: {out[:200]!r}") from None

    def task_state(self, name):
        """(pid, status) of ``name``'s task as ``ctr tasks ls`` shows it, or (None, None)."""
        _rc, out, _err = self.run("tasks", "ls", check=False)
        for line in out.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3 and fields[0] == name:
                return int(fields[1]), fields[2]
        return None, None

    def running_pid(self, name, wait_s=RUNNING_WAIT_S, sleep=time.sleep):
        """The pid of ``name``'s task once it is RUNNING; None when it is not within ``wait_s`` (a
        loaded host may show a restored task as CREATED for a moment)."""
        deadline = time.monotonic() + wait_s
        while True:
            pid, status = self.task_state(name)
            if status == "RUNNING":
                return pid
            if status == "STOPPED" or time.monotonic() >= deadline:
                return None
            sleep(0.2)

    def wait_stopped(self, name, wait_s=RUNNING_WAIT_S, sleep=time.sleep):
        """Wait until ``name``'s task is STOPPED or gone (after a SIGKILL); its last status."""
        deadline = time.monotonic() + wait_s
        while True:
            _pid, status = self.task_state(name)
            if status in (None, "STOPPED") or time.monotonic() >= deadline:
                return status
            sleep(0.1)


def dump(
    params,
    check_mode,
    run_command,
    *,
    gpus_dir=gpu_mod.NVIDIA_GPUS_DIR,
    find_freezer=gpu_mod.find_freezer,
    clock=time.monotonic,
    proc="/proc",
):
    """Checkpoint the CRI container of pod/namespace/container through containerd. CUDA processes
    in it are locked and checkpointed around containerd's checkpoint (runc's CRIU cannot dump GPU
    state), then restored and unlocked: the container keeps running (``gpus_dir``, ``find_freezer``,
    ``proc``: gpu.dump_plan's; ``clock`` times the lock)."""
    if not params["pod"]:
        raise InvalidArgument(
            "method=containerd checkpoints a CRI container: set pod (and namespace, container)"
        )
    if not params["leave_running"]:
        raise InvalidArgument(
            "method=containerd leaves the container running (containerd's checkpoint does not stop it): "
            f"set leave_running=true, then {STOP_A_POD}"
        )
    if not params["images_dir"]:
        raise InvalidArgument(
            "images_dir is needed: the checkpoint image is exported into a dump directory there"
        )
    crictl = criu.find_executable("crictl")
    if not crictl:
        raise ctr.RuntimeUnavailable(
            "method=containerd finds the pod's container with crictl, which is not installed"
        )
    target = ctr.crictl_target(
        run_command,
        ctr.crictl_argv(crictl, params["cri_endpoint"]),
        params["pod"],
        params["namespace"],
        params["container"],
    )
    client = Ctr(params, run_command)
    spec = client.container_info(target["container_id"])
    joined = joined_namespaces(spec)
    tree = criu.process_tree(target["pid"], proc)
    gpu, freezer = gpu_mod.dump_plan(
        params, run_command, tree, gpus_dir=gpus_dir, find=find_freezer, proc=proc
    )
    mf.check_images_dir(params["images_dir"])
    name = params["name"] or target["container_name"] or params["pod"]
    stamp = mf.stamp()
    dump_dir = os.path.join(params["images_dir"], f"{name}-{stamp}")
    ref = image_ref(name, stamp)
    archive = os.path.join(dump_dir, ARCHIVE)
    earlier = sorted(client.image_refs(checkpoint_of=target["container_id"]))
    checkpoint_step = ("containers", "checkpoint", "--task", "--rw", target["container_id"], ref)
    label_step = client.label_step(ref, target["container_id"])
    export_step = ("images", "export", "--skip-manifest-json", archive, ref)
    steps = [*(("images", "rm", "--sync", old) for old in earlier), checkpoint_step, label_step, export_step]
    # The keys of a CRIU dump's result where they mean the same (the roles' summaries read them).
    result = {
        "changed": True,
        "method": METHOD,
        "checkpoint_dir": dump_dir,
        "image_ref": ref,
        "target": target,
        "command": [*client.argv, *checkpoint_step],
        "gpu": gpu,
    }
    if check_mode:
        return dict(result, commands=[client.line(*step) for step in steps])
    mf.make_images_dir(params["images_dir"])
    abandoned = mf.remove_abandoned(params["images_dir"], name)
    mf.check_free_space(params["images_dir"], tree, proc)
    for step in steps[: len(earlier)]:
        client.run(*step)
    mf.start(dump_dir)
    try:
        # The export runs with the CUDA processes thawed: locked_s is containerd's checkpoint alone.
        gpu_mod.frozen_while(
            freezer,
            gpu,
            lambda: client.run(*checkpoint_step),
            lock_timeout_s=params["cuda_lock_timeout"],
            clock=clock,
        )
        client.run(*label_step)
        client.run(*export_step)
        leftovers.image_files(archive)  # CRIU's layer is there (see the module's doc)
    except criu.CriuError as exc:
        raise _failed_dump(client, exc, dump_dir, ref, params["images_dir"]) from None
    manifest = {
        "criu": dumping_criu(run_command, proc, client.address),
        "name": name,
        "method": METHOD,
        "created": utc_iso(),
        "image_ref": ref,
        "archive": ARCHIVE,
        "containerd_namespace": params["containerd_namespace"],
        "leave_running": True,
        "pod": {"name": params["pod"], "namespace": params["namespace"] or "default"},
        "target": target,
        "joined_namespaces": joined,
        # what a restore checks the open files on (the restored container has the same spec)
        "binds": reopened.oci_binds(spec.get("Spec")),
        "gpu": {"path": gpu["path"], "cuda_pids": gpu["cuda_pids"]},
        "sizes": {"images_bytes": os.path.getsize(archive)},
    }
    mf.finish(dump_dir, manifest)
    pruned = _prune(client, params["images_dir"], name, params["keep"], dump_dir)
    return dict(
        result,
        manifest=manifest,
        pruned=pruned,
        commands=client.commands,
        abandoned_removed=abandoned,
        store_images_removed=earlier,
    )


def _manifests_of(images_dir, name):
    """{dump directory: its manifest} of the dumps of ``name`` whose manifest can be read."""
    manifests = {}
    for old in mf.dumps_of(images_dir, name):
        try:
            manifests[old] = mf.load(old)
        except BadCheckpoint:
            continue
    return manifests


def _failed_dump(client, exc, dump_dir, ref, images_dir):
    """The error of a dump that failed after its directory was made: the partial directory and the
    checkpoint image go (each as large as the container's memory); a full images_dir is NoSpace."""
    shutil.rmtree(dump_dir, ignore_errors=True)
    client.run("images", "rm", ref, check=False)
    undone = f"the partial dump {dump_dir} and the checkpoint image {ref} were removed, the container runs on"
    if "no space left on device" in exc.msg.lower():
        return criu.NoSpace(
            f"{images_dir} ran out of space while containerd's checkpoint was written into it "
            f"({exc.msg}): free space there or point images_dir at a larger file system; {undone}",
            **exc.details,
        )
    exc.msg += f" -- {undone}"
    return exc


def dumping_criu(run_command, proc, address):
    """{"path", "version"} of the criu containerd at ``address`` ran for the checkpoint (its runc
    shim's, runtime_criu.py), or {} when that is not one known CRIU."""
    found = {(c["path"], c["version"]) for c in runtime_criu.containerd_crius(run_command, proc, address)}
    if len(found) != 1:
        return {}
    path, version = found.pop()
    return {"path": path, "version": criu.version_string(version)} if version else {}


def _prune(client, images_dir, name, keep, current):
    """Retention as for CRIU dumps, and the pruned dumps' checkpoint images leave the store too."""
    refs = {old: manifest.get("image_ref") for old, manifest in _manifests_of(images_dir, name).items()}
    pruned = mf.prune(images_dir, name, keep, current)
    for old in pruned:
        if refs.get(old):
            client.run("images", "rm", refs[old], check=False)
    return pruned


def archive_problem(checkpoint, manifest, *, read_layer=True):
    """Why the dump's exported checkpoint image cannot be restored (missing, not the size the dump
    wrote, or - ``read_layer`` - without the process: leftovers._criu_layer), or None."""
    archive = os.path.join(checkpoint, manifest.get("archive") or ARCHIVE)
    if not os.path.isfile(archive):
        return f"the exported checkpoint image {ARCHIVE} is missing: the dump is incomplete"
    problem = mf.size_problem(archive, manifest)
    if problem or not read_layer:
        return problem
    try:
        leftovers.image_files(archive)
    except BadCheckpoint as exc:
        return exc.msg
    return None


def pod_gone(manifest, readlink=os.readlink):
    """Why a restore of this dump cannot work on this node now, or None: the restored container joins
    the namespaces the dumped one joined (its pod sandbox's), and one of them is gone."""
    gone = namespaces_gone(manifest.get("joined_namespaces") or [], readlink)
    if not gone:
        return None
    pod = manifest.get("pod") or {}
    what = ", ".join(
        f"{g['type']} {g['path']} ({'gone' if g['now'] is None else 'now ' + g['now']}, was {g['id']})"
        for g in gone
    )
    return (
        f"the pod {pod.get('namespace')}/{pod.get('name')} this container was dumped from is gone from "
        f"this node or was restarted: the namespaces its container joined are not there ({what}). "
        "containerd restores a container into the namespaces of the pod sandbox it was dumped from: "
        "restore while that pod runs on this node, or restore it as a new pod with method=kubelet "
        "(containerd 2.x)"
    )


def restore(
    params,
    check_mode,
    run_command,
    proc="/proc",
    readlink=os.readlink,
    *,
    gpus_dir=gpu_mod.NVIDIA_GPUS_DIR,
    find_freezer=gpu_mod.find_freezer,
):
    """Restore a method=containerd dump into the NEW container new_container (``proc``: where
    containerd's processes are looked up, leftovers.py; ``readlink``: the pod's namespaces). CUDA
    processes come back checkpointed: they are restored and unlocked before the module returns
    (``gpus_dir``, ``find_freezer``: gpu.restore_plan's)."""
    checkpoint = mf.choose(params["checkpoint"], params["images_dir"], params["name"])
    manifest = mf.load(checkpoint)
    if manifest.get("method") != METHOD:
        runtime = (manifest.get("target") or {}).get("runtime")
        raise BadCheckpoint(
            f"{checkpoint} was dumped by CRIU from a {runtime} target (method criu), not by containerd: "
            "restore it with method=criu (Docker dumps), or take a new dump with method=containerd"
        )
    new = params["new_container"]
    if not new:
        raise InvalidArgument("state=restored needs new_container: the name of the container to create")
    # its layer is read below, with the files the restore checks
    problem = archive_problem(checkpoint, manifest, read_layer=False)
    if problem:
        raise BadCheckpoint(f"{checkpoint}: {problem}; take a new one")
    archive = os.path.join(checkpoint, manifest.get("archive") or ARCHIVE)
    client = Ctr(params, run_command)
    ref = manifest["image_ref"]
    result = {
        "changed": True,
        "method": METHOD,
        "checkpoint": checkpoint,
        "new_container": new,
        "image_ref": ref,
        "gpu": {"path": (manifest.get("gpu") or {}).get("path", "none")},
    }
    labels = client.container_labels(new)
    if labels is not None:
        pid, status = client.task_state(new)
        ours = labels.get(RESTORED_FROM) == ref
        if ours and status == "RUNNING":
            return dict(result, changed=False, restored={"container": new, "pid": pid})
        stopped = " (restored from this checkpoint, but not running)" if ours else ""
        raise InvalidArgument(
            f"a container {new} exists already in containerd namespace "
            f"{params['containerd_namespace']}{stopped}: "
            f"choose another new_container or remove it ({client.line('containers', 'rm', new)})"
        )
    # runc would fail on a missing namespace only after containerd has made the container and its task
    gone = pod_gone(manifest, readlink)
    if gone:
        raise InvalidArgument(gone + ". Nothing was created")
    runtime_criu.refuse_unreadable(
        checkpoint, manifest, run_command, proc, address=client.address, where="containerd's"
    )
    result["gpu"], freezer = gpu_mod.restore_plan(
        params, run_command, manifest, checkpoint, gpus_dir=gpus_dir, find=find_freezer
    )
    binds = manifest.get("binds")
    # One walk over the archive; it also refuses a damaged one before anything is made.
    files, images = leftovers.image_files(archive, reopened.IMAGES if binds else frozenset())
    reopened.refuse_changed(checkpoint, binds, lambda: reopened.in_layer(images))
    steps = _restore_steps(client, manifest, archive, new)
    if check_mode:
        return dict(result, command=[client.line(*step) for step in steps])
    copies = leftovers.RestoreCopies(files, proc)
    try:
        for step in steps:
            client.run(*step)
        pid = client.running_pid(new)
        if pid is None:
            raise criu.CriuError(
                f"ctr containers restore returned, but {new} has no running task within "
                f"{RUNNING_WAIT_S} s: see containerd's log",
                cmd=client.commands[-1],
            )
        if freezer is not None:
            gpu_mod.after_restore(freezer, result["gpu"], criu.process_tree(pid, proc), proc)
        # What a second run finds: restored from this checkpoint and running, nothing to do.
        client.run("containers", "label", new, f"{RESTORED_FROM}={ref}")
    except criu.CriuError as exc:
        exc.msg += _undo(client, new)
        raise
    finally:
        result.update(copies.result())
    return dict(result, restored={"container": new, "pid": pid}, command=client.commands)


def _restore_steps(client, manifest, archive, new):
    """The ctr steps of a restore into ``new``: the import of the archive first when the store lacks
    its image (pruned, or dumped on another node), labelled as the dump's own was."""
    ref = manifest["image_ref"]
    dumped = (manifest.get("target") or {}).get("container_id")
    steps = []
    if not client.has_image(ref):
        steps.append(client.import_step(archive, "--no-unpack"))
        if dumped:
            steps.append(client.label_step(ref, dumped))
    steps.append(("containers", "restore", "--live", "--rw", new, ref))
    return steps


def _undo(client, name):
    """Remove what a failed restore made; what to add to its message."""
    if _remove(client, name):
        return f" -- {name} was removed again, nothing is left half-restored"
    return (
        f" -- {name} could not be removed (its task did not stop within {RUNNING_WAIT_S} s of SIGKILL): "
        f"remove it with {client.line('tasks', 'rm', '--force', name)} and "
        f"{client.line('containers', 'rm', name)}"
    )


def _remove(client, name):
    """Remove container ``name`` and its task. Not ``ctr tasks rm --force``: it kills the task and
    waits for its exit, and a task whose restore failed (CREATED, pid 0) never exits - ctr hangs
    (containerd 1.6 and 1.7). A running task is killed and waited for; then a plain delete.
    True when the container is gone."""
    if not client.has_container(name):
        return True
    _pid, status = client.task_state(name)
    if status in ("RUNNING", "PAUSED", "PAUSING"):
        client.run("tasks", "kill", "--signal", "SIGKILL", name, check=False)
        status = client.wait_stopped(name)
    if status is not None:
        client.run("tasks", "rm", name, check=False)
    client.run("containers", "rm", name, check=False)
    return not client.has_container(name)
