# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""method=containerd: containerd's own checkpoint and restore of a CRI container through its tasks
API, with CRIU's images in a directory (containerd 1.6 and 1.7, the MicroK8s and k3s runtimes; 2.x):

* dump: the task is paused (Tasks.Pause); Tasks.Checkpoint with runc's CheckpointOptions.image_path
  has the runc shim run CRIU into ``criu/`` of the dump directory (the task is left running);
  the container's rw layer is diffed against its image (Snapshots.View of the parent, Diff.Diff,
  as containerd's WithCheckpointRW does) and read into ``rw.tar``; then Tasks.Resume. CRIU's images
  and the rw layer are taken in one paused moment, so files the process holds open in its rootfs
  match. The container's record (image, runtime and its options, OCI spec, snapshotter, the
  image's snapshot) goes into manifest.json;
* restore: a NEW container from that record (Containers.Create), its snapshot on the image's
  (Snapshots.Prepare) with the rw layer applied (Content.Write, Diff.Apply), then Tasks.Create
  with runc's Options.criu_image_path on ``criu/`` and Tasks.Start: the runc shim runs
  ``runc restore`` on the dump's own files.

Why not ``ctr containers checkpoint --task`` and ``ctr containers restore``: they move CRIU's
images through a checkpoint image in the content store. The checkpoint copies them in, an export
copies them out, the import of a pruned one copies them in again, and every restore has containerd
extract them into a temporary directory first (services/tasks/local.go, Create) that it never
removes (containerd/containerd#10166): a restore of 1 GiB took 2.1-3.2x reading the images from
the store and 19-30x from the archive; from the directory 1.7-2.0x at 1 GiB and 1.15-1.9x at 4 GiB
(docs/performance.md).
ctr has --image-path for the checkpoint but no flag for a restore from a directory, hence the API
(containerd_api.py), for the whole of both: the task's state (Tasks.Get) and the removal of a
container whose restore failed too, so no ctr process starts on the way (one ctr run cost 20-50 ms
of a restore's ~1 s at 1 GiB).

The container is found through crictl (target.py). A restore that fails part way removes what it
made, so nothing half-restored is left running.
"""

import base64
import contextlib
import json
import os
import shutil
import time

from ansible_collections.strata.ops.plugins.module_utils import containerd_api as cd
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
# manifest.json's format of a method=containerd dump: 2 is CRIU's images in a directory with the
# rw layer beside them (1, without the key, was a checkpoint image exported from the content store).
FORMAT = 2
CRIU_DIR = "criu"
RW_LAYER = "rw.tar"
DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
RUNNING_WAIT_S = 10
RESTORED_FROM = "strata.io/restored-from"
# the logs runc has CRIU write in the work path of a dump and of a restore (runc's
# libcontainer/criu_linux.go, Checkpoint and Restore)
DUMP_LOG, RESTORE_LOG = "dump.log", "restore.log"


def joined_namespaces(spec, readlink=os.readlink):
    """The namespaces the container joins by path (its pod sandbox's: ``/proc/PID/ns/net``, ipc,
    uts), each {type, path, id} with the namespace's identity (``net:[INODE]``) at dump time, from
    its OCI spec (linux.namespaces, runtime-spec config-linux.md). The restored container has that
    spec: it joins the same paths again."""
    joined = []
    for entry in ((spec or {}).get("linux") or {}).get("namespaces") or []:
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


def dump(params, check_mode, run_command, *, api=None, **options):
    """state=dumped (_dump) through ``api``, a containerd_api.Containerd (made from the parameters
    and closed after when None)."""
    with _connected(params, api) as connected:
        return _dump(params, check_mode, run_command, api=connected, **options)


def restore(params, check_mode, run_command, *, api=None, **options):
    """state=restored (_restore) through ``api``, as dump's."""
    with _connected(params, api) as connected:
        return _restore(params, check_mode, run_command, api=connected, **options)


@contextlib.contextmanager
def _connected(params, api):
    if api is not None:
        yield api
        return
    made = cd.Containerd(containerd_address(params), params["containerd_namespace"])
    try:
        yield made
    finally:
        made.close()


def _dump(
    params,
    check_mode,
    run_command,
    *,
    api,
    gpus_dir=gpu_mod.NVIDIA_GPUS_DIR,
    find_freezer=gpu_mod.find_freezer,
    clock=time.monotonic,
    proc="/proc",
):
    """Checkpoint the CRI container of pod/namespace/container through containerd's tasks API (the
    module's doc). CUDA processes in it are locked and checkpointed around the paused moment (runc's
    CRIU cannot dump GPU state), then restored and unlocked: the container keeps running
    (``gpus_dir``, ``find_freezer``, ``proc``: gpu.dump_plan's; ``clock`` times the pause and the
    lock)."""
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
        raise InvalidArgument("images_dir is needed: the dump directory is made there")
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
    cid = target["container_id"]
    record = api.container(cid)
    if not record["runtime_name"].startswith(cd.RUNC_RUNTIMES):
        raise InvalidArgument(
            f"the container {cid} runs on the runtime {record['runtime_name']}: containerd checkpoints "
            "only runc containers (io.containerd.runc.v2) into a directory, and so does this module"
        )
    spec_type, spec_json = cd.decode_any(record["spec"])
    spec = json.loads(spec_json)
    parent = api.snapshot_parent(record["snapshotter"], record["snapshot_key"])
    joined = joined_namespaces(spec)
    tree = criu.process_tree(target["pid"], proc)
    gpu, freezer = gpu_mod.dump_plan(
        params, run_command, tree, gpus_dir=gpus_dir, find=find_freezer, proc=proc
    )
    mf.check_images_dir(params["images_dir"])
    name = params["name"] or target["container_name"] or params["pod"]
    dump_dir = os.path.join(params["images_dir"], f"{name}-{mf.stamp()}")
    images_dir = os.path.join(dump_dir, CRIU_DIR)
    result = {
        "changed": True,
        "method": METHOD,
        "checkpoint_dir": dump_dir,
        "target": target,
        "command": ["containerd", "Tasks.Checkpoint", cid, f"image_path={images_dir}"],
        "gpu": gpu,
    }
    if check_mode:
        return dict(result, commands=_dump_calls(cid, record, parent, images_dir))
    mf.make_images_dir(params["images_dir"])
    abandoned = mf.remove_abandoned(params["images_dir"], name)
    mf.check_free_space(params["images_dir"], tree, proc)
    mf.start(dump_dir)
    try:
        os.mkdir(images_dir)
        with api.lease(f"dump-{cid[:12]}"):
            # The rw layer is read out with the CUDA processes thawed: locked_s is the paused moment.
            frozen_s, rw = gpu_mod.frozen_while(
                freezer,
                gpu,
                lambda: _paused_checkpoint(api, record, parent, images_dir, clock=clock),
                lock_timeout_s=params["cuda_lock_timeout"],
                clock=clock,
            )
            api.read_content(rw, os.path.join(dump_dir, RW_LAYER))
    except criu.CriuError as exc:
        raise _failed_dump(exc, dump_dir, params["images_dir"]) from None
    except OSError as exc:
        failure = criu.CriuError(f"writing the dump failed: {exc}")
        raise _failed_dump(failure, dump_dir, params["images_dir"]) from None
    files = leftovers.dir_files(images_dir)
    manifest = {
        "criu": dumping_criu(run_command, proc, api.address),
        "name": name,
        "method": METHOD,
        "format": FORMAT,
        "created": utc_iso(),
        "containerd_namespace": params["containerd_namespace"],
        "leave_running": True,
        "pod": {"name": params["pod"], "namespace": params["namespace"] or "default"},
        "target": target,
        "container": container_manifest(record, spec_type, spec, parent),
        "images": CRIU_DIR,
        "rw_layer": dict(rw, file=RW_LAYER),
        "joined_namespaces": joined,
        # what a restore checks the open files on (the restored container has the same spec)
        "binds": reopened.oci_binds(spec),
        "gpu": {"path": gpu["path"], "cuda_pids": gpu["cuda_pids"]},
        "frozen_s": frozen_s,
        "sizes": {"images_bytes": sum(files.values()), "files": files},
    }
    mf.finish(dump_dir, manifest)
    pruned = mf.prune(params["images_dir"], name, params["keep"], dump_dir)
    return dict(
        result,
        manifest=manifest,
        frozen_s=frozen_s,
        pruned=pruned,
        commands=api.calls,
        abandoned_removed=abandoned,
    )


def container_manifest(record, spec_type, spec, parent):
    """What Containers.Create of the restored container needs (containers.proto's Container), as
    manifest.json keeps it: ``record`` (containerd_api's container()), its spec decoded, the
    image's snapshot ``parent``."""
    return {
        "image": record["image"],
        "runtime": {
            "name": record["runtime_name"],
            "options": base64.b64encode(record["runtime_options"]).decode(),
        },
        "spec_type": spec_type,
        "spec": spec,
        "snapshotter": record["snapshotter"],
        "parent_snapshot": parent,
    }


def _dump_calls(cid, record, parent, images_dir):
    """What a dump calls, for check mode."""
    snapshots = f"{record['snapshotter']} {record['snapshot_key']}"
    return [
        f"containerd Tasks.Pause {cid}",
        f"containerd Tasks.Checkpoint {cid} image_path={images_dir}",
        f"containerd Diff.Diff {snapshots} against {parent}",
        f"containerd Tasks.Resume {cid}",
        f"containerd Content.Read of the rw layer into {os.path.join(os.path.dirname(images_dir), RW_LAYER)}",
    ]


def _paused_checkpoint(api, record, parent, images_dir, *, clock):
    """CRIU's images and the rw layer's diff with the task paused; (seconds paused, the layer's
    descriptor). The task is resumed whatever happens; a task that stays paused is named in the
    error (``task_paused``)."""
    cid, snapshotter = record["id"], record["snapshotter"]
    view = f"strata-ops-rw-{cid}-{os.path.basename(os.path.dirname(images_dir))}"
    paused_at = clock()
    api.pause(cid)
    try:
        _criu_checkpoint(api, cid, images_dir)
        lower = api.view(snapshotter, view, parent)
        try:
            rw = api.diff(lower, api.mounts(snapshotter, record["snapshot_key"]), f"checkpoint-rw-{view}")
        finally:
            with contextlib.suppress(cd.ContainerdError):
                api.remove_snapshot(snapshotter, view)
    except criu.CriuError as exc:
        still_paused = _resume(api, cid)
        if still_paused:
            exc.msg += f"; {still_paused}"
            exc.details["task_paused"] = True
        raise
    except BaseException:
        _resume(api, cid)
        raise
    still_paused = _resume(api, cid)
    if still_paused:
        raise criu.CriuError(f"containerd's checkpoint was taken, but {still_paused}", task_paused=True)
    return round(clock() - paused_at, 3), rw


def _criu_checkpoint(api, cid, images_dir):
    """Tasks.Checkpoint into ``images_dir`` (CRIU's log too); a failure says what CRIU's log says."""
    try:
        api.checkpoint(cid, images_dir, images_dir)
    except criu.CriuError as exc:
        exc.msg += _criu_log_tail(os.path.join(images_dir, DUMP_LOG), " (it goes with the partial dump)")
        raise


def _resume(api, cid):
    """Resume the paused task: None, or what the operator must do when it stays paused."""
    try:
        api.resume(cid)
    except cd.ContainerdError as exc:
        return (
            f"resuming the task failed ({exc.msg}): it may stay paused, resume it with "
            f"ctr --namespace {api.namespace} tasks resume {cid}"
        )
    return None


def _failed_dump(exc, dump_dir, images_dir):
    """The error of a dump that failed after its directory was made: the partial directory goes (as
    large as the container's memory); a full images_dir is NoSpace."""
    shutil.rmtree(dump_dir, ignore_errors=True)
    undone = f"the partial dump {dump_dir} was removed"
    if not exc.details.get("task_paused"):
        undone += ", the container runs on"
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


def dump_problem(checkpoint, manifest):
    """Why the dump's files cannot be restored, or None: a dump of an earlier format, CRIU's images
    or the rw layer missing, or not the size the dump wrote (truncated, changed)."""
    if manifest.get("format") != FORMAT:
        return "it is a containerd checkpoint image of an earlier strata.ops (no CRIU images directory)"
    images_dir = os.path.join(checkpoint, manifest.get("images") or CRIU_DIR)
    want = (manifest.get("sizes") or {}).get("files") or {}
    have = leftovers.dir_files(images_dir) if os.path.isdir(images_dir) else {}
    missing = sorted(set(want) - set(have))
    if missing or not want:
        shown = ", ".join(missing[:5]) or "all"
        return f"CRIU's images in {images_dir} are missing ({shown}): the dump is incomplete"
    changed = sorted(f for f in want if have[f] != want[f])
    if changed:
        shown = ", ".join(f"{f} has {have[f]} bytes, the dump wrote {want[f]}" for f in changed[:3])
        return f"CRIU's images in {images_dir} are truncated or changed ({shown})"
    rw = manifest.get("rw_layer") or {}
    path = os.path.join(checkpoint, rw.get("file") or RW_LAYER)
    if not os.path.isfile(path):
        return f"the container's rw layer {path} is missing: the dump is incomplete"
    size = os.path.getsize(path)
    if size != rw.get("size"):
        return f"the rw layer {path} has {size} bytes, the dump wrote {rw.get('size')}: truncated or changed"
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


def _restore(
    params,
    check_mode,
    run_command,
    *,
    api,
    proc="/proc",
    readlink=os.readlink,
    gpus_dir=gpu_mod.NVIDIA_GPUS_DIR,
    find_freezer=gpu_mod.find_freezer,
):
    """Restore a method=containerd dump into the NEW container new_container (``proc``: where
    containerd's processes are looked up; ``readlink``: the pod's namespaces).
    CUDA processes come back checkpointed: they are restored and unlocked before the module returns
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
    problem = dump_problem(checkpoint, manifest)
    if problem:
        raise BadCheckpoint(f"{checkpoint}: {problem}; take a new one")
    origin = os.path.basename(checkpoint)
    images_dir = os.path.join(checkpoint, manifest.get("images") or CRIU_DIR)
    log = os.path.join(checkpoint, f"restored-{new}.log")
    criu_work = os.path.join(checkpoint, f"restored-{new}-criu")
    result = {
        "changed": True,
        "method": METHOD,
        "checkpoint": checkpoint,
        "new_container": new,
        "gpu": {"path": (manifest.get("gpu") or {}).get("path", "none")},
        "command": [
            "containerd",
            "Tasks.Create",
            new,
            f"criu_image_path={images_dir}",
            f"criu_work_path={criu_work}",
        ],
    }
    labels = _labels(api, new)
    if labels is not None:
        pid, status = api.task(new)
        ours = labels.get(RESTORED_FROM) == origin
        if ours and status == "RUNNING":
            return dict(result, changed=False, restored={"container": new, "pid": pid})
        stopped = " (restored from this checkpoint, but not running)" if ours else ""
        raise InvalidArgument(
            f"a container {new} exists already in containerd namespace "
            f"{params['containerd_namespace']}{stopped}: "
            f"choose another new_container or remove it ({ctr_line(params, 'containers', 'rm', new)})"
        )
    # runc would fail on a missing namespace only after containerd has made the container and its task
    gone = pod_gone(manifest, readlink)
    if gone:
        raise InvalidArgument(gone + ". Nothing was created")
    runtime_criu.refuse_unreadable(
        checkpoint, manifest, run_command, proc, address=api.address, where="containerd's"
    )
    result["gpu"], freezer = gpu_mod.restore_plan(
        params, run_command, manifest, checkpoint, gpus_dir=gpus_dir, find=find_freezer
    )
    reopened.refuse_changed(checkpoint, manifest.get("binds"), lambda: reopened.in_dump_dir(images_dir))
    record = _restored_record(manifest, new, origin)
    _refuse_missing_image(api, record, manifest["container"]["parent_snapshot"])
    if check_mode:
        return dict(result, commands=_restore_calls(new, record, images_dir, log, criu_work))
    criu_log = os.path.join(criu_work, RESTORE_LOG)
    try:
        # a log left by an earlier restore to this name would be taken for this one's
        shutil.rmtree(criu_work, ignore_errors=True)
        _restore_task(api, manifest, record, checkpoint, images_dir=images_dir, log=log, criu_work=criu_work)
        pid = _running_pid(api, new)
        if pid is None:
            raise criu.CriuError(
                f"containerd started the restored task, but {new} is not running within "
                f"{RUNNING_WAIT_S} s: see containerd's log",
                cmd=api.calls[-1],
            )
        if freezer is not None:
            gpu_mod.after_restore(freezer, result["gpu"], criu.process_tree(pid, proc), proc)
    except criu.CriuError as exc:
        exc.msg += _criu_log_tail(criu_log) + _undo(api, params, record)
        raise
    restored = {"container": new, "pid": pid, "log": log, "criu_log": criu_log}
    return dict(result, restored=restored, commands=api.calls)


def ctr_line(params, *args):
    """The ctr command an operator runs for ``args`` on this containerd (named in messages)."""
    binary = params.get("ctr_path") or "ctr"
    namespace = params["containerd_namespace"]
    return " ".join([binary, "--address", containerd_address(params), "--namespace", namespace, *args])


def _labels(api, name):
    """The labels of container ``name``, or None when it does not exist."""
    try:
        return api.container(name)["labels"]
    except cd.ContainerdError as exc:
        if exc.code != "NOT_FOUND":
            raise
        return None


def _running_pid(api, name):
    """The pid of ``name``'s task once it is RUNNING; None when it stopped or is not running within
    RUNNING_WAIT_S (a loaded host may show a restored task as CREATED for a moment)."""
    pid, status = _task_once(api, name, ("RUNNING", "STOPPED"), interval_s=0.2)
    return pid if status == "RUNNING" else None


def _wait_stopped(api, name):
    """Wait until ``name``'s task is STOPPED or gone (after a SIGKILL); its last status."""
    return _task_once(api, name, (None, "STOPPED"), interval_s=0.1)[1]


def _task_once(api, name, statuses, *, interval_s, wait_s=RUNNING_WAIT_S, sleep=time.sleep):
    """(pid, status) of ``name``'s task once its status is one of ``statuses`` (None: no task), or
    as it is when ``wait_s`` has passed; asked every ``interval_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        pid, status = api.task(name)
        if status in statuses or time.monotonic() >= deadline:
            return pid, status
        sleep(interval_s)


def _restored_record(manifest, new, origin):
    """The NEW container's record: the dumped container's, under its own name, snapshot and cgroup,
    labelled with the dump it comes from (what a second run finds: nothing to do)."""
    container = manifest["container"]
    return {
        "id": new,
        "labels": {RESTORED_FROM: origin},
        "image": container["image"],
        "runtime_name": container["runtime"]["name"],
        "runtime_options": base64.b64decode(container["runtime"]["options"]),
        "spec": cd.spec_message(own_cgroup(container["spec"], new), container["spec_type"]),
        "snapshotter": container["snapshotter"],
        "snapshot_key": new,
    }


def own_cgroup(spec, new):
    """``spec`` with a cgroup of the NEW container's own: the dumped container's cgroupsPath with its
    last part (the container's id, as the CRI plugin names it) replaced by ``new``, so the same
    parent (the pod's cgroup). The dumped container's own would have both processes share one
    memory limit, and under the systemd driver ("SLICE:PREFIX:NAME", runc's format for the unit
    PREFIX-NAME.scope) runc refuses to start a scope that exists (opencontainers/cgroups
    systemd/common.go, startUnit: UnitExists is an error for a scope) while the dumped container
    runs. An empty cgroupsPath is runc's own choice from the container's id: already its own."""
    linux = spec.get("linux") or {}
    path = linux.get("cgroupsPath") or ""
    if not path:
        return spec
    if path.count(":") == 2:
        slice_name, prefix, _name = path.split(":")
        path = f"{slice_name}:{prefix}:{new}"
    else:
        parent, slash, _name = path.rstrip("/").rpartition("/")
        path = parent + slash + new
    return dict(spec, linux=dict(linux, cgroupsPath=path))


def _refuse_missing_image(api, record, parent):
    """The restored container's rootfs is a snapshot on its image's: refuse before anything is made
    when this node's containerd lacks that image (unpacked)."""
    try:
        api.snapshot_parent(record["snapshotter"], parent)
    except cd.ContainerdError as exc:
        if exc.code != "NOT_FOUND":
            raise
        raise InvalidArgument(
            f"the image {record['image']} the container was made from is not unpacked in this node's "
            f"containerd (no {record['snapshotter']} snapshot {parent}): pull it here "
            f"(crictl pull {record['image']}), then restore again. Nothing was created"
        ) from None


def _criu_log_tail(path, note=""):
    """The end of CRIU's log at ``path`` (its errors, if any) for a failure's message: containerd's
    own names the log only (`criu failed: type NOTIFY errno 0`)."""
    tail = criu.log_tail(path)
    return f"; CRIU's log {path}{note} ends:\n{tail}\n" if tail else ""


def _restore_calls(new, record, images_dir, log, criu_work):
    """What a restore calls, for check mode."""
    return [
        f"containerd Content.Write of the rw layer, Containers.Create {new} (image {record['image']})",
        f"containerd Snapshots.Prepare {record['snapshotter']} {new}, Diff.Apply of the rw layer",
        f"containerd Tasks.Create {new} criu_image_path={images_dir} criu_work_path={criu_work}, "
        f"stdout and stderr to {log}",
        f"containerd Tasks.Start {new}",
    ]


def _restore_task(api, manifest, record, checkpoint, *, images_dir, log, criu_work):
    """The container, its rootfs with the rw layer, then its task from CRIU's images in
    ``images_dir`` (CRIU's log into ``criu_work``, which runc makes)."""
    rw, parent = manifest["rw_layer"], manifest["container"]["parent_snapshot"]
    descriptor = {"media_type": rw["media_type"], "digest": rw["digest"], "size": rw["size"]}
    with api.lease(f"restore-{record['id']}"):
        api.write_content(os.path.join(checkpoint, rw["file"]), descriptor)
        api.create_container(record)
        rootfs = api.prepare(record["snapshotter"], record["snapshot_key"], parent)
        api.apply(descriptor, rootfs)
    options = cd.restore_options(record["runtime_options"], images_dir, criu_work)
    api.create_task(record["id"], rootfs, "file://" + log, options)
    api.start_task(record["id"])


def _undo(api, params, record):
    """Remove what a failed restore made; what to add to its message."""
    name = record["id"]
    why = _remove(api, record)
    if why is None:
        return f" -- {name} was removed again, nothing is left half-restored"
    # not `tasks rm --force`: it waits forever for a task that never ran (see _remove)
    return (
        f" -- {name} could not be removed ({why}): remove it with "
        f"{ctr_line(params, 'tasks', 'kill', '--signal', 'SIGKILL', name)} (while its task runs), "
        f"{ctr_line(params, 'tasks', 'rm', name)} and {ctr_line(params, 'containers', 'rm', name)}"
    )


def _remove(api, record):
    """Remove the container of ``record``, its task and its snapshot. Not as ``ctr tasks rm
    --force`` does it: that kills the task and waits for its exit, and a task whose restore failed
    (CREATED, pid 0) never exits (containerd 1.6 and 1.7). A running task is killed and waited for,
    then deleted; the container, then its snapshot (what ``ctr containers rm`` removes too).
    None once all is gone, else why not."""
    name = record["id"]
    try:
        if _labels(api, name) is None:
            return None
        _pid, status = api.task(name)
        if status in ("RUNNING", "PAUSED", "PAUSING"):
            with contextlib.suppress(cd.ContainerdError):
                api.kill(name)
            status = _wait_stopped(api, name)
            if status not in (None, "STOPPED"):
                return f"its task did not stop within {RUNNING_WAIT_S} s of SIGKILL"
        if status is not None:
            api.delete_task(name)
        api.delete_container(name)
    except cd.ContainerdError as exc:
        return exc.msg
    with contextlib.suppress(cd.ContainerdError):  # none when the restore failed before Prepare
        api.remove_snapshot(record["snapshotter"], record["snapshot_key"])
    return None
