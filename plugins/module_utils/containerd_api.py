# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""containerd's own gRPC API (github.com/containerd/containerd/api, services/*/v1), for what ctr has
no flag for: a task restored from CRIU's images in a directory.

containerd's tasks service takes CRIU's images from a directory both ways: ``Checkpoint`` with the
runc CheckpointOptions' image_path writes them there and skips the content store, and ``Create``
with the runc Options' criu_image_path restores from there (services/tasks/local.go, getRestorePath,
in 1.6, 1.7 and 2.x). ``ctr tasks checkpoint --image-path`` reaches the first, no ctr command the
second: ``ctr containers restore`` always goes through a checkpoint image in the content store,
which containerd extracts into a temporary directory before CRIU reads it.

The messages are encoded with protowire.py (field numbers from the api module's .proto files);
the namespace and the lease travel as gRPC metadata (containerd-namespace, containerd-lease), as
containerd's own client sends them. grpcio is the one library needed (Debian: python3-grpcio).
"""

import contextlib
import json
import os
import time
import traceback
import uuid

from ansible_collections.strata.ops.plugins.module_utils import criu
from ansible_collections.strata.ops.plugins.module_utils import protowire as pw

# The module runs crictl, ctr and cuda-checkpoint while a channel is open. With gRPC's fork support
# on (grpcio's default), the child of such a fork restarts gRPC's poller before it execs, and that
# poller aborts on its closed epoll fd ("epoll_wait error: Bad file descriptor", the child killed
# by SIGABRT: grpc/grpc#43055, grpcio 1.80 and later; 2 to 5 of 300 forks here). The module never
# uses gRPC in a child, so it turns the support off before gRPC starts.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"

try:
    import grpc
except ImportError:
    grpc = None
    GRPC_IMPORT_ERROR = traceback.format_exc()
else:
    GRPC_IMPORT_ERROR = None

TASKS = "/containerd.services.tasks.v1.Tasks/"
CONTAINERS = "/containerd.services.containers.v1.Containers/"
SNAPSHOTS = "/containerd.services.snapshots.v1.Snapshots/"
DIFF = "/containerd.services.diff.v1.Diff/"
CONTENT = "/containerd.services.content.v1.Content/"
LEASES = "/containerd.services.leases.v1.Leases/"
# typeurl names: the runc shim's options (api/types/runc/options/oci.proto, package
# containerd.runc.v1) and the OCI spec as containerd registers it (typeurl.Register in core/containers).
RUNC_OPTIONS = "containerd.runc.v1.Options"
RUNC_CHECKPOINT_OPTIONS = "containerd.runc.v1.CheckpointOptions"
OCI_SPEC = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
RUNC_RUNTIMES = "io.containerd.runc."
# An uncompressed layer: the rw layer is written and read on the same node, gzip would only cost.
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
# Metadata calls answer at once; CRIU's dump and restore and the diffs run as long as the memory
# and the rw layer take to copy.
CALL_TIMEOUT_S = 60
LONG_TIMEOUT_S = 3600
CHUNK = 1 << 20
# A lease that outlives a killed module run: containerd's GC collects what it holds after this.
LEASE_EXPIRE_S = 3600
# What the runc shim's exec of a missing criu says (Go's exec.ErrNotFound).
NO_CRIU = "executable file not found"
# WriteContentRequest.action (content.proto's WriteAction)
WRITE, COMMIT = 1, 2
# A task's Status (types/task/task.proto), by its number
TASK_STATUSES = ("UNKNOWN", "CREATED", "RUNNING", "STOPPED", "PAUSED", "PAUSING")
SIGKILL = 9


class ContainerdError(criu.CriuError):
    """A containerd API call that failed; ``code`` is the gRPC status name (NOT_FOUND, ...)."""

    def __init__(self, msg, code=None, **details):
        super().__init__(msg, **details)
        self.code = code


def require_grpc():
    if grpc is None:
        raise ContainerdError(
            "method=containerd talks to containerd's API through grpcio, which this Python lacks: "
            "install python3-grpcio (Debian, Ubuntu) or pip install grpcio on the host that runs the module",
            import_error=GRPC_IMPORT_ERROR,
        )


def encode_mount(mount):
    """containerd.types.Mount (types/mount.proto)."""
    return (
        pw.field(1, mount["type"])
        + pw.field(2, mount["source"])
        + pw.field(3, mount.get("target", ""))
        + pw.repeated(4, mount.get("options", []))
    )


def decode_mounts(encoded):
    mounts = []
    for raw in encoded:
        fields = pw.decode(raw)
        mounts.append(
            {
                "type": pw.text(fields, 1),
                "source": pw.text(fields, 2),
                "target": pw.text(fields, 3),
                "options": [o.decode() for o in fields.get(4, [])],
            }
        )
    return mounts


def encode_descriptor(descriptor):
    """containerd.types.Descriptor (types/descriptor.proto)."""
    return (
        pw.field(1, descriptor["media_type"])
        + pw.field(2, descriptor["digest"])
        + pw.field(3, descriptor["size"])
        + pw.string_map(5, descriptor.get("annotations") or {})
    )


def decode_descriptor(raw):
    fields = pw.decode(raw)
    return {"media_type": pw.text(fields, 1), "digest": pw.text(fields, 2), "size": pw.first(fields, 3, 0)}


def decode_any(raw):
    """(type_url, value) of a google.protobuf.Any."""
    fields = pw.decode(raw)
    return pw.text(fields, 1), pw.first(fields, 2, b"")


def spec_message(spec, type_url=OCI_SPEC):
    """The container's OCI spec as containerd keeps it: an Any holding the spec's JSON."""
    return pw.any_message(type_url, json.dumps(spec).encode())


def restore_options(runtime_options, image_path, work_path):
    """The task options of a restore from ``image_path``: the container's own runc options (its
    runtime_options Any, as Containers.Get gave it) with criu_image_path (field 10) and
    criu_work_path (field 11: where runc has CRIU write restore.log; unset, the task's bundle, which
    goes with the task) set (containerd's runc Options, api/types/runc/options/oci.proto). Appending a
    field to an encoded message sets it (protobuf merges), so every other option stays as it was."""
    type_url, value = decode_any(runtime_options) if runtime_options else (RUNC_OPTIONS, b"")
    return pw.any_message(
        type_url or RUNC_OPTIONS, value + pw.field(10, image_path) + pw.field(11, work_path)
    )


def checkpoint_options(image_path, work_path):
    """runc CheckpointOptions: leave the task running (exit false), file locks as containerd's own
    Container.Checkpoint sets them, CRIU's images into ``image_path``, its log into ``work_path``."""
    return pw.any_message(
        RUNC_CHECKPOINT_OPTIONS, pw.field(5, True) + pw.field(8, image_path) + pw.field(9, work_path)
    )


def _call_name(method):
    """The name of a call, containerd.services.tasks.v1.Tasks.Create for its gRPC path
    /containerd.services.tasks.v1.Tasks/Create."""
    return method.strip("/").replace("/", ".")


class Containerd:
    """containerd at ``address`` (its socket), one namespace. ``calls`` lists every call made
    ("Service.Method target"), for the module's result."""

    def __init__(self, address, namespace, channel=None):
        if channel is None:
            require_grpc()
            channel = grpc.insecure_channel("unix:" + address)
        self.address = address
        self.namespace = namespace
        self.channel = channel
        self.calls = []
        self._lease = None

    def close(self):
        self.channel.close()

    def _metadata(self):
        metadata = [("containerd-namespace", self.namespace)]
        if self._lease:
            metadata.append(("containerd-lease", self._lease))
        return metadata

    def _record(self, method, target):
        """Note the call of ``method`` (its gRPC path) on ``target`` in calls."""
        self.calls.append(f"{_call_name(method)} {target}")

    def _failure(self, method, target, exc):
        code = exc.code().name if exc.code() else "UNKNOWN"
        what = f"containerd {_call_name(method)}({target})"
        hint = ""
        if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
            hint = f": is containerd up, and is {self.address} its socket?"
        elif NO_CRIU in (exc.details() or "") and "criu" in exc.details():
            hint = (
                ". containerd's runc shim runs the criu on containerd's PATH and finds none: install "
                "CRIU >= 4 on that PATH (for example /usr/local/sbin/criu), or restart containerd with "
                "CRIU's directory on its PATH"
            )
        return ContainerdError(f"{what} failed ({code}): {exc.details()}{hint}", code=code)

    def call(self, method, request, target, timeout_s=CALL_TIMEOUT_S):
        self._record(method, target)
        stub = self.channel.unary_unary(method)
        try:
            return stub(request, metadata=self._metadata(), timeout=timeout_s)
        except grpc.RpcError as exc:
            raise self._failure(method, target, exc) from None

    @contextlib.contextmanager
    def lease(self, purpose):
        """Hold what the calls inside make (a diff's blob, an ingested layer) until the block ends;
        the lease expires by itself should this process die."""
        lease_id = f"strata-ops-{purpose}-{uuid.uuid4().hex[:12]}"
        expire = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + LEASE_EXPIRE_S))
        self.call(
            LEASES + "Create",
            pw.field(1, lease_id) + pw.string_map(3, {"containerd.io/gc.expire": expire}),
            lease_id,
        )
        self._lease = lease_id
        try:
            yield lease_id
        finally:
            self._lease = None
            with contextlib.suppress(ContainerdError):
                self.call(LEASES + "Delete", pw.field(1, lease_id), lease_id)

    def container(self, container_id):
        """The container record: labels, image, runtime (name, options Any), spec Any,
        snapshotter, snapshot_key (containers.proto's Container)."""
        reply = pw.decode(self.call(CONTAINERS + "Get", pw.field(1, container_id), container_id))
        fields = pw.decode(pw.first(reply, 1, b""))
        runtime = pw.decode(pw.first(fields, 4, b""))
        labels = {}
        for entry in fields.get(2, []):
            pair = pw.decode(entry)
            labels[pw.text(pair, 1)] = pw.text(pair, 2)
        return {
            "id": pw.text(fields, 1),
            "labels": labels,
            "image": pw.text(fields, 3),
            "runtime_name": pw.text(runtime, 1),
            "runtime_options": pw.first(runtime, 2, b""),
            "spec": pw.first(fields, 5, b""),
            "snapshotter": pw.text(fields, 6),
            "snapshot_key": pw.text(fields, 7),
        }

    def delete_container(self, container_id):
        """Containers.Delete: the record only (its snapshot is removed on its own)."""
        self.call(CONTAINERS + "Delete", pw.field(1, container_id), container_id)

    def create_container(self, record):
        """Containers.Create of ``record`` (the keys container() returns)."""
        runtime = pw.field(1, record["runtime_name"]) + (
            pw.message(2, record["runtime_options"]) if record["runtime_options"] else b""
        )
        container = (
            pw.field(1, record["id"])
            + pw.string_map(2, record["labels"])
            + pw.field(3, record["image"])
            + pw.message(4, runtime)
            + pw.message(5, record["spec"])
            + pw.field(6, record["snapshotter"])
            + pw.field(7, record["snapshot_key"])
        )
        self.call(CONTAINERS + "Create", pw.message(1, container), record["id"])

    def snapshot_parent(self, snapshotter, key):
        reply = pw.decode(
            self.call(SNAPSHOTS + "Stat", pw.field(1, snapshotter) + pw.field(2, key), f"{snapshotter} {key}")
        )
        return pw.text(pw.decode(pw.first(reply, 1, b"")), 2)

    def _snapshot_call(self, verb, snapshotter, key, parent=""):
        request = pw.field(1, snapshotter) + pw.field(2, key) + pw.field(3, parent)
        reply = self.call(SNAPSHOTS + verb, request, f"{snapshotter} {key}")
        return decode_mounts(pw.decode(reply).get(1, []))

    def prepare(self, snapshotter, key, parent):
        """An active snapshot on ``parent``; its mounts."""
        return self._snapshot_call("Prepare", snapshotter, key, parent)

    def view(self, snapshotter, key, parent):
        return self._snapshot_call("View", snapshotter, key, parent)

    def mounts(self, snapshotter, key):
        return self._snapshot_call("Mounts", snapshotter, key)

    def remove_snapshot(self, snapshotter, key):
        self.call(SNAPSHOTS + "Remove", pw.field(1, snapshotter) + pw.field(2, key), f"{snapshotter} {key}")

    def diff(self, lower, upper, ref):
        """Diff.Diff of two mount sets into the content store: the descriptor of the layer."""
        request = (
            pw.repeated(1, [encode_mount(m) for m in lower])
            + pw.repeated(2, [encode_mount(m) for m in upper])
            + pw.field(3, LAYER_TAR)
            + pw.field(4, ref)
        )
        reply = pw.decode(self.call(DIFF + "Diff", request, ref, timeout_s=LONG_TIMEOUT_S))
        return decode_descriptor(pw.first(reply, 3, b""))

    def apply(self, descriptor, mounts):
        """Diff.Apply of the layer ``descriptor`` (in the content store) onto ``mounts``."""
        request = pw.message(1, encode_descriptor(descriptor))
        request += pw.repeated(2, [encode_mount(m) for m in mounts])
        self.call(DIFF + "Apply", request, descriptor["digest"], timeout_s=LONG_TIMEOUT_S)

    def read_content(self, descriptor, path):
        """Content.Read of blob ``descriptor`` into the file ``path``, all of it."""
        digest = descriptor["digest"]
        self._record(CONTENT + "Read", digest)
        stub = self.channel.unary_stream(CONTENT + "Read")
        written = 0
        try:
            with open(path, "wb") as handle:
                for reply in stub(pw.field(1, digest), metadata=self._metadata(), timeout=LONG_TIMEOUT_S):
                    data = pw.first(pw.decode(reply), 2, b"")
                    handle.write(data)
                    written += len(data)
                handle.flush()
        except grpc.RpcError as exc:
            raise self._failure(CONTENT + "Read", digest, exc) from None
        if written != descriptor["size"]:
            raise ContainerdError(f"containerd sent {written} bytes of {digest}, not {descriptor['size']}")

    def write_content(self, path, descriptor):
        """Content.Write of the file ``path`` as blob ``descriptor`` (containerd checks the digest
        at commit). A blob the store has already is left as it is."""
        digest, total = descriptor["digest"], descriptor["size"]
        ref = f"strata-ops-{digest.replace(':', '-')}-{uuid.uuid4().hex[:8]}"
        self._record(CONTENT + "Write", digest)

        def request(action, offset, data=b""):
            head = pw.field(1, action) + pw.field(2, ref) + pw.field(3, total) + pw.field(4, digest)
            return head + pw.field(5, offset) + pw.field(6, data)

        def requests():
            offset = 0
            with open(path, "rb") as handle:
                for data in iter(lambda: handle.read(CHUNK), b""):
                    yield request(WRITE, offset, data)
                    offset += len(data)
            yield request(COMMIT, offset)

        stub = self.channel.stream_stream(CONTENT + "Write")
        try:
            for _reply in stub(requests(), metadata=self._metadata(), timeout=LONG_TIMEOUT_S):
                pass
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise self._failure(CONTENT + "Write", digest, exc) from None

    def task(self, container_id):
        """(pid, status) of the container's task (Tasks.Get: the shim's state of it), (None, None)
        when the container has none."""
        try:
            reply = self.call(TASKS + "Get", pw.field(1, container_id), container_id)
        except ContainerdError as exc:
            if exc.code != "NOT_FOUND":
                raise
            return None, None
        process = pw.decode(pw.first(pw.decode(reply), 1, b""))
        status = pw.first(process, 4, 0)
        return pw.first(process, 3, 0), TASK_STATUSES[status] if status < len(TASK_STATUSES) else "UNKNOWN"

    def kill(self, container_id, signal=SIGKILL):
        """Tasks.Kill: ``signal`` to the task's process."""
        self.call(TASKS + "Kill", pw.field(1, container_id) + pw.field(3, signal), container_id)

    def delete_task(self, container_id):
        """Tasks.Delete of a task that is not running (created, stopped)."""
        self.call(TASKS + "Delete", pw.field(1, container_id), container_id)

    def pause(self, container_id):
        self.call(TASKS + "Pause", pw.field(1, container_id), container_id)

    def resume(self, container_id):
        self.call(TASKS + "Resume", pw.field(1, container_id), container_id)

    def checkpoint(self, container_id, image_path, work_path):
        """Tasks.Checkpoint into ``image_path``; the task runs on (or stays paused)."""
        request = pw.field(1, container_id) + pw.message(3, checkpoint_options(image_path, work_path))
        self.call(TASKS + "Checkpoint", request, container_id, timeout_s=LONG_TIMEOUT_S)

    def create_task(self, container_id, rootfs, log_uri, options):
        """Tasks.Create: the task of ``container_id`` on ``rootfs`` with stdout and stderr to
        ``log_uri``; its pid."""
        request = (
            pw.field(1, container_id)
            + pw.repeated(3, [encode_mount(m) for m in rootfs])
            + pw.field(5, log_uri)
            + pw.field(6, log_uri)
            + pw.message(9, options)
        )
        reply = self.call(TASKS + "Create", request, container_id, timeout_s=LONG_TIMEOUT_S)
        return pw.first(pw.decode(reply), 2, 0)

    def start_task(self, container_id):
        """Tasks.Start (a restore: CRIU runs here); the pid."""
        reply = self.call(TASKS + "Start", pw.field(1, container_id), container_id, timeout_s=LONG_TIMEOUT_S)
        return pw.first(pw.decode(reply), 1, 0)
