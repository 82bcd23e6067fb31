"""containerd for the unit tests of method=containerd, leftovers.py and their callers: a /proc with
a containerd process (its root a directory of the test); the copy of a checkpoint its tasks service
extracts into its temporary directory and keeps, and a checkpoint image exported as ``ctr images
export --skip-manifest-json`` writes it (an OCI archive: index.json -> the image index -> the
criu.tar layer among containerd's checkpoint blobs), as method=kubelet and earlier dumps meet them;
its ctr client's image commands (FakeCtr); its gRPC API (FakeContainerd) and a dump that
method=containerd wrote through it (write_containerd_dump)."""

import contextlib
import hashlib
import itertools
import json
import os

from ansible_collections.strata.ops.plugins.module_utils import containerd_api as cd
from ansible_collections.strata.ops.plugins.module_utils import protowire as pw
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import containerd, leftovers
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import manifest as mf

CRIU_FILES = {"inventory.img": b"inventory", "pages-1.img": b"\0" * 8192, "pstree.img": b"tree"}
_suffixes = itertools.count(1_000_000)


def containerd_proc(tmp_path, environ=b"PATH=/usr/bin\0", *, criu=False, pid="4100", address=None):
    """(proc dir, the temporary directory containerd sees as /tmp, as a path of the test): a
    containerd process ``pid`` whose root is a directory of the test, with an executable
    /usr/bin/criu there when ``criu`` (what it answers is the test's FakeRun's), listening on the
    unix socket ``address`` when given (/proc/net/unix and a socket fd)."""
    root = tmp_path / ("host" if pid == "4100" else f"host-{pid}")
    (root / "tmp").mkdir(parents=True)
    if criu:
        (root / "usr" / "bin").mkdir(parents=True)
        (root / "usr" / "bin" / "criu").write_text("#!/bin/sh\n")
        (root / "usr" / "bin" / "criu").chmod(0o755)
    proc = tmp_path / "proc"
    process = proc / pid
    process.mkdir(parents=True)
    (process / "comm").write_text("containerd\n")
    (process / "environ").write_bytes(environ)
    (process / "root").symlink_to(root)
    if address:
        inode = str(int(pid) * 10)
        unix = proc / "net" / "unix"
        unix.parent.mkdir(exist_ok=True)
        if not unix.exists():
            unix.write_text("Num       RefCount Protocol Flags    Type St Inode Path\n")
        with unix.open("a") as handle:
            handle.write(f"0000000000000000: 00000002 00000000 00010000 0001 01 {inode} {address}\n")
        (process / "fd").mkdir()
        (process / "fd" / "7").symlink_to(f"socket:[{inode}]")
    return str(proc), root / "tmp"


def leave_copy(temp_dir, files=None):
    """containerd's os.MkdirTemp(dir, "ctrd-checkpoint") with a checkpoint's files in it."""
    path = temp_dir / f"{leftovers.PREFIX}{next(_suffixes)}"
    path.mkdir()
    for name, data in (CRIU_FILES if files is None else files).items():
        (path / name).write_bytes(data)
    return path


class FakeCtr:
    """ctr answering like containerd 1.6's image commands: ``images`` in the store, ``fail`` maps a
    verb pair (e.g. ("images", "import")) to its stderr; ``release``: "1.6" (``images import`` has
    no --local), else 1.7 or later."""

    def __init__(self, images=(), fail=None, *, release="1.6"):
        self.release = release  # ctr 1.7 and 2.x know images import --local
        self.images = set(images)
        self.fail = fail or {}

    def __call__(self, argv, **_kwargs):
        args = argv[5:]  # after ctr --address A --namespace N
        verb = tuple(args[:2])
        if verb == ("images", "import") and "--help" in args:
            return 0, self._import_help(), ""
        if verb in self.fail:
            return 1, "", self.fail[verb]
        if verb == ("images", "ls"):
            return 0, "\n".join(sorted(self.images)), ""
        if verb == ("images", "rm"):
            self.images.difference_update(a for a in args[2:] if not a.startswith("--"))
        return 0, "", ""

    def _import_help(self):
        local = "   --local   Run import locally rather than through transfer API\n"
        return "OPTIONS:\n   --no-unpack   Skip unpacking\n" + (local if self.release != "1.6" else "")


# A CUDA container on a GPU node, for the GPU paths of method=containerd and method=kubelet.
CONTAINER_ID = "c0ffee"


def crictl(argv, **_kwargs):
    """crictl ps / inspect of one running container, as cri-tools 1.34 prints them."""
    if "ps" in argv:
        container = {"id": CONTAINER_ID, "metadata": {"name": "trainer"}, "image": {"image": "img"}}
        return 0, json.dumps({"containers": [container]}), ""
    return 0, json.dumps({"info": {"pid": 4242}}), ""


def cuda_proc(proc_dir, pid=4242):
    """A /proc entry of a process that maps libcuda (what gpu.uses_cuda looks for)."""
    task = proc_dir / str(pid) / "task" / str(pid)
    task.mkdir(parents=True)
    (task / "children").write_text("")
    (proc_dir / str(pid) / "maps").write_text(
        "7f0000000000-7f0000001000 r-xp 0 08:01 1 /usr/lib/libcuda.so.1\n"
    )


# containerd's API (containerd_api.Containerd) on the CRI container CONTAINER_ID, a runc container.
SNAPSHOTTER = "overlayfs"
IMAGE = "docker.io/library/busybox:1.36"
IMAGE_SNAPSHOT = "sha256:" + "b" * 64  # the image's top layer: the container's snapshot's parent
# The CRI plugin's runc options: BinaryName (6) and SystemdCgroup (9) set.
RUNTIME_OPTIONS = pw.any_message(cd.RUNC_OPTIONS, pw.field(6, "runc") + pw.field(9, True))
RW_LAYER = b"the tar of the files the container wrote"  # what Diff.Diff makes of its rw layer
TASK_PID = 4242
# What only reads: every other call changes something in containerd.
READS = frozenset({"Containers.Get", "Tasks.Get", "Snapshots.Stat", "Snapshots.Mounts", "Content.Read"})


def container_record(spec=None, **changes):
    """What Containers.Get gives of CONTAINER_ID (containerd_api.Containerd.container's keys),
    with the OCI ``spec`` and ``changes``."""
    record = {
        "id": CONTAINER_ID,
        "labels": {"io.cri-containerd.kind": "container"},
        "image": IMAGE,
        "runtime_name": "io.containerd.runc.v2",
        "runtime_options": RUNTIME_OPTIONS,
        "spec": cd.spec_message(spec or {"ociVersion": "1.1.0"}),
        "snapshotter": SNAPSHOTTER,
        "snapshot_key": CONTAINER_ID,
    }
    record.update(changes)
    return record


def failed(code, details):
    """The ContainerdError of a call containerd answers with ``code`` (a gRPC status name)."""
    return cd.ContainerdError(f"containerd call failed ({code}): {details}", code=code)


def layer_descriptor(data):
    """The descriptor Diff.Diff gives of a layer whose tar is ``data``."""
    return {
        "media_type": cd.LAYER_TAR,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


def snapshot_mounts(key, parent):
    """The mounts FakeContainerd gives of snapshot ``key`` on ``parent``."""
    options = [f"lowerdir=/snapshots/{parent}", f"upperdir=/snapshots/{key}/fs"]
    return [{"type": "overlay", "source": "overlay", "target": "", "options": options}]


class FakeContainerd:
    """containerd's API as containerd_api.Containerd offers it, around one container ``record``
    (container_record) whose task runs: containers, snapshots ({key: parent}), tasks ({id: status})
    and content ({digest: bytes}) in dicts. A checkpoint writes ``criu_files`` (CRIU_FILES) into its
    image_path, a diff makes ``rw_layer``; Content.Read and Write copy real files. Tasks.Start writes
    ``restore_log`` into the task's criu_work_path as restore.log, as runc's CRIU does (before a
    failure).

    ``fail`` maps a method ("Tasks.Checkpoint") to the exception its call raises (failed(...), an
    OSError), after what it writes. ``calls``: "Method target" of each call, as the real one lists
    them; ``requests``: each method's last arguments, with the lease it ran in; ``journal``: a list
    to share with other fakes, ("containerd", method) appended per call; ``shown``: {container id:
    the statuses Tasks.Get shows of its task in turn, the last one staying} (else its status here)."""

    def __init__(
        self,
        record=None,
        *,
        address="/run/c.sock",
        fail=None,
        journal=None,
        criu_files=None,
        shown=None,
        restore_log="(00.000000) Restore finished successfully. Tasks resumed.\n",
    ):
        self.address = address
        self.record = record or container_record()
        self.containers = {self.record["id"]: self.record}
        self.snapshots = {self.record["snapshot_key"]: IMAGE_SNAPSHOT, IMAGE_SNAPSHOT: ""}
        self.tasks = {self.record["id"]: "RUNNING"}
        self.content = {}
        self.fail = dict(fail or {})
        self.shown = {key: list(statuses) for key, statuses in (shown or {}).items()}
        self.journal = [] if journal is None else journal
        self.criu_files = CRIU_FILES if criu_files is None else criu_files
        self.rw_layer = RW_LAYER
        self.restore_log = restore_log
        self.calls = []
        self.requests = {}
        self.held = None  # the lease the calls run in

    def methods(self):
        """The methods called, in order."""
        return [call.split(" ", 1)[0] for call in self.calls]

    def changes(self):
        """The methods called that change something in containerd."""
        return [method for method in self.methods() if method not in READS]

    def _call(self, method, target, **request):
        self.calls.append(f"{method} {target}")
        self.journal.append(("containerd", method))
        self.requests[method] = dict(request, lease=self.held)
        if method in self.fail:
            raise self.fail[method]

    def _parent(self, key):
        if key not in self.snapshots:
            raise failed("NOT_FOUND", f"snapshot {key} does not exist: not found")
        return self.snapshots[key]

    @contextlib.contextmanager
    def lease(self, purpose):
        lease_id = f"strata-ops-{purpose}"
        self._call("Leases.Create", lease_id)
        self.held = lease_id
        try:
            yield lease_id
        finally:
            self.held = None
            self._call("Leases.Delete", lease_id)

    def close(self):
        pass

    def container(self, container_id):
        self._call("Containers.Get", container_id)
        if container_id not in self.containers:
            raise failed("NOT_FOUND", f"container {container_id!r} in namespace: not found")
        return dict(self.containers[container_id])

    def create_container(self, record):
        self._call("Containers.Create", record["id"], record=record)
        self.containers[record["id"]] = record

    def delete_container(self, container_id):
        self._call("Containers.Delete", container_id)
        if container_id in self.tasks:
            raise failed(
                "FAILED_PRECONDITION", f"cannot delete a container with an existing task: {container_id}"
            )
        del self.containers[container_id]

    def snapshot_parent(self, snapshotter, key):
        self._call("Snapshots.Stat", f"{snapshotter} {key}")
        return self._parent(key)

    def prepare(self, snapshotter, key, parent):
        self._call("Snapshots.Prepare", f"{snapshotter} {key}", parent=parent)
        self._parent(parent)
        self.snapshots[key] = parent
        return snapshot_mounts(key, parent)

    def view(self, snapshotter, key, parent):
        self._call("Snapshots.View", f"{snapshotter} {key}", parent=parent)
        self._parent(parent)
        self.snapshots[key] = parent
        return snapshot_mounts(key, parent)

    def mounts(self, snapshotter, key):
        self._call("Snapshots.Mounts", f"{snapshotter} {key}")
        return snapshot_mounts(key, self._parent(key))

    def remove_snapshot(self, snapshotter, key):
        self._call("Snapshots.Remove", f"{snapshotter} {key}")
        self._parent(key)
        del self.snapshots[key]

    def diff(self, lower, upper, ref):
        self._call("Diff.Diff", ref, lower=lower, upper=upper)
        descriptor = layer_descriptor(self.rw_layer)
        self.content[descriptor["digest"]] = self.rw_layer
        return descriptor

    def apply(self, descriptor, mounts):
        self._call("Diff.Apply", descriptor["digest"], descriptor=descriptor, mounts=mounts)
        if descriptor["digest"] not in self.content:
            raise failed("NOT_FOUND", f"content digest {descriptor['digest']}: not found")

    def read_content(self, descriptor, path):
        """Half the blob is written before a failure (a full disk)."""
        data = self.content[descriptor["digest"]]
        with open(path, "wb") as handle:
            handle.write(data[: len(data) // 2] if "Content.Read" in self.fail else data)
        self._call("Content.Read", descriptor["digest"], path=path)

    def write_content(self, path, descriptor):
        self._call("Content.Write", descriptor["digest"], path=path, descriptor=descriptor)
        with open(path, "rb") as handle:
            data = handle.read()
        if layer_descriptor(data)["digest"] != descriptor["digest"]:
            raise failed("FAILED_PRECONDITION", f"unexpected commit digest, expected {descriptor['digest']}")
        self.content[descriptor["digest"]] = data

    def task(self, container_id):
        self._call("Tasks.Get", container_id)
        shown = self.shown.get(container_id)
        status = (shown.pop(0) if len(shown) > 1 else shown[0]) if shown else self.tasks.get(container_id)
        if status is None:
            return None, None
        return (0 if status == "CREATED" else TASK_PID), status

    def kill(self, container_id, signal=cd.SIGKILL):
        self._call("Tasks.Kill", container_id, signal=signal)

    def delete_task(self, container_id):
        self._call("Tasks.Delete", container_id)
        del self.tasks[container_id]

    def pause(self, container_id):
        self._call("Tasks.Pause", container_id)
        self.tasks[container_id] = "PAUSED"

    def resume(self, container_id):
        self._call("Tasks.Resume", container_id)
        self.tasks[container_id] = "RUNNING"

    def checkpoint(self, container_id, image_path, work_path):
        """CRIU's images are written before a failure, as CRIU writes them."""
        for name, data in self.criu_files.items():
            with open(os.path.join(image_path, name), "wb") as handle:
                handle.write(data)
        self._call("Tasks.Checkpoint", container_id, image_path=image_path, work_path=work_path)

    def create_task(self, container_id, rootfs, log_uri, options):
        self._call("Tasks.Create", container_id, rootfs=rootfs, log_uri=log_uri, options=options)
        self.tasks[container_id] = "CREATED"
        return 0

    def start_task(self, container_id):
        _type, options = cd.decode_any(self.requests["Tasks.Create"]["options"])
        work = pw.text(pw.decode(options), 11)
        with contextlib.suppress(FileExistsError):
            os.mkdir(work)  # as runc makes it: its parent must exist
        with open(os.path.join(work, "restore.log"), "w") as handle:
            handle.write(self.restore_log)
        self._call("Tasks.Start", container_id)
        self.tasks[container_id] = "RUNNING"
        return TASK_PID


def write_containerd_dump(path, record=None, *, criu_files=None, **manifest):
    """A method=containerd dump of ``record`` (container_record()) at ``path`` as dump() writes it:
    CRIU's images ``criu_files`` (CRIU_FILES) in criu/, the rw layer RW_LAYER in rw.tar, the
    manifest with the container's record; ``manifest``: its keys to set. The path, as a str."""
    record = record or container_record()
    images = os.path.join(path, "criu")
    os.makedirs(images)
    for name, data in (CRIU_FILES if criu_files is None else criu_files).items():
        with open(os.path.join(images, name), "wb") as handle:
            handle.write(data)
    with open(os.path.join(path, "rw.tar"), "wb") as handle:
        handle.write(RW_LAYER)
    spec_type, spec = cd.decode_any(record["spec"])
    files = leftovers.dir_files(images)
    content = {
        "method": "containerd",
        "format": 2,
        "name": "trainer",
        "containerd_namespace": "k8s.io",
        "leave_running": True,
        "pod": {"name": "trainer-0", "namespace": "ml"},
        "target": {"runtime": "cri", "container_id": record["id"], "pid": TASK_PID},
        "container": containerd.container_manifest(record, spec_type, json.loads(spec), IMAGE_SNAPSHOT),
        "images": "criu",
        "rw_layer": dict(layer_descriptor(RW_LAYER), file="rw.tar"),
        "joined_namespaces": [],
        "binds": [],
        "gpu": {"path": "none", "cuda_pids": []},
        "sizes": {"images_bytes": sum(files.values()), "files": files},
    }
    content.update(manifest)
    mf.write(str(path), content)
    return str(path)
