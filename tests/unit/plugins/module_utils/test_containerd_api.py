"""containerd_api against a fake gRPC channel: the requests as containerd's .proto files number
their fields, the namespace and lease metadata, the replies decoded, and the errors."""

import calendar
import collections
import hashlib
import time

import grpc
import pytest

from ansible_collections.strata.ops.plugins.module_utils import containerd_api as cd
from ansible_collections.strata.ops.plugins.module_utils import criu
from ansible_collections.strata.ops.plugins.module_utils import protowire as pw

ADDRESS = "/run/containerd/containerd.sock"
NAMESPACE = ("containerd-namespace", "k8s.io")
Call = collections.namedtuple("Call", "method request metadata timeout")
MOUNT = {"type": "overlay", "source": "overlay", "target": "", "options": ["lowerdir=/l", "upperdir=/u"]}


class RpcFailure(grpc.RpcError):
    """What a grpc stub raises when containerd answers with a status."""

    def __init__(self, code, details="it failed"):
        super().__init__(details)
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


class FakeChannel:
    """A grpc channel that records each call (``calls``: Call, the requests of a stream as a list)
    and answers from ``replies``: {method: reply bytes, a list of them for a stream (an RpcFailure
    in it is raised there), or an RpcFailure}; b"" (every field at its default) otherwise."""

    def __init__(self, replies=None):
        self.replies = dict(replies or {})
        self.calls = []

    def _answer(self, method):
        reply = self.replies.get(method, b"")
        if isinstance(reply, grpc.RpcError):
            raise reply
        return reply

    def unary_unary(self, method):
        def stub(request, metadata=None, timeout=None):
            self.calls.append(Call(method, request, metadata, timeout))
            return self._answer(method)

        return stub

    def unary_stream(self, method):
        def stub(request, metadata=None, timeout=None):
            self.calls.append(Call(method, request, metadata, timeout))
            for reply in self._answer(method):
                if isinstance(reply, grpc.RpcError):
                    raise reply
                yield reply

        return stub

    def stream_stream(self, method):
        def stub(requests, metadata=None, timeout=None):
            self.calls.append(Call(method, list(requests), metadata, timeout))
            return iter(self._answer(method) or [])

        return stub

    def close(self):
        pass

    def methods(self):
        return [call.method.rsplit("/", 1)[1] for call in self.calls]


def client(replies=None):
    return cd.Containerd(ADDRESS, "k8s.io", channel=FakeChannel(replies))


def test_every_call_names_the_namespace_and_those_in_a_lease_the_lease():
    api = client()
    api.pause("c")
    with api.lease("dump") as lease:
        api.resume("c")
    api.pause("c")
    assert api.channel.methods() == ["Pause", "Create", "Resume", "Delete", "Pause"]
    assert [call.metadata for call in api.channel.calls] == [
        [NAMESPACE],
        [NAMESPACE],
        [NAMESPACE, ("containerd-lease", lease)],
        [NAMESPACE],
        [NAMESPACE],
    ]
    assert api.calls[0] == "containerd.services.tasks.v1.Tasks.Pause c"


def test_a_lease_expires_by_itself_and_is_deleted_when_its_block_fails():
    api = client()
    with pytest.raises(RuntimeError), api.lease("restore") as lease:
        raise RuntimeError("the block failed")
    create, delete = api.channel.calls
    assert (create.method, delete.method) == (cd.LEASES + "Create", cd.LEASES + "Delete")
    fields = pw.decode(create.request)
    assert pw.text(fields, 1) == lease and lease.startswith("strata-ops-restore-")
    (label,) = fields[3]
    entry = pw.decode(label)
    assert pw.text(entry, 1) == "containerd.io/gc.expire"
    expires = calendar.timegm(time.strptime(pw.text(entry, 2), "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(expires - (time.time() + cd.LEASE_EXPIRE_S)) < 60
    assert pw.decode(delete.request) == {1: [lease.encode()]}
    api.pause("c")
    assert api.channel.calls[-1].metadata == [NAMESPACE]


def test_a_lease_that_cannot_be_deleted_leaves_the_block_done():
    api = client({cd.LEASES + "Delete": RpcFailure(grpc.StatusCode.UNAVAILABLE)})
    with api.lease("dump"):
        api.resume("c")
    assert api.channel.methods() == ["Create", "Resume", "Delete"]


RUNTIME_OPTIONS = pw.any_message(cd.RUNC_OPTIONS, pw.field(9, True))
SPEC = cd.spec_message({"ociVersion": "1.1.0"})
RECORD = {
    "id": "c0ffee",
    "labels": {"io.kubernetes.pod.name": "trainer-0", "io.cri-containerd.kind": "container"},
    "image": "docker.io/library/busybox:1.36",
    "runtime_name": "io.containerd.runc.v2",
    "runtime_options": RUNTIME_OPTIONS,
    "spec": SPEC,
    "snapshotter": "overlayfs",
    "snapshot_key": "c0ffee",
}


def test_container_decodes_a_containers_get_reply():
    container = (
        pw.field(1, "c0ffee")
        + pw.string_map(2, RECORD["labels"])
        + pw.field(3, RECORD["image"])
        + pw.message(4, pw.field(1, "io.containerd.runc.v2") + pw.message(2, RUNTIME_OPTIONS))
        + pw.message(5, SPEC)
        + pw.field(6, "overlayfs")
        + pw.field(7, "c0ffee")
        + pw.message(8, pw.field(1, 1_735_689_600))  # created_at, a Timestamp: not ours
        + pw.field(11, "a-sandbox")
    )
    api = client({cd.CONTAINERS + "Get": pw.message(1, container)})
    assert api.container("c0ffee") == RECORD
    assert api.channel.calls[0].request == pw.field(1, "c0ffee")


def test_a_created_container_is_the_record_it_was_made_from():
    api = client()
    api.create_container(RECORD)
    # CreateContainerRequest and GetContainerResponse both hold the Container as field 1
    api.channel.replies[cd.CONTAINERS + "Get"] = api.channel.calls[0].request
    assert api.container("c0ffee") == RECORD


def test_a_container_without_runtime_options_is_made_without_them():
    api = client()
    api.create_container(dict(RECORD, runtime_options=b""))
    container = pw.decode(pw.first(pw.decode(api.channel.calls[0].request), 1))
    assert pw.decode(pw.first(container, 4)) == {1: [b"io.containerd.runc.v2"]}


def test_restore_options_keep_the_containers_runc_options_and_add_criu_paths():
    options = pw.any_message(cd.RUNC_OPTIONS, pw.field(6, "runc") + pw.field(9, True) + pw.field(10, "/old"))
    type_url, value = cd.decode_any(cd.restore_options(options, "/dumps/d/criu", "/dumps/d/work"))
    fields = pw.decode(value)
    assert type_url == cd.RUNC_OPTIONS
    assert (fields[6], fields[9], pw.text(fields, 10), pw.text(fields, 11)) == (
        [b"runc"],
        [1],
        "/dumps/d/criu",
        "/dumps/d/work",
    )


def test_restore_options_of_a_container_without_options_are_runc_options():
    assert cd.decode_any(cd.restore_options(b"", "/d/criu", "/d/w")) == (
        cd.RUNC_OPTIONS,
        pw.field(10, "/d/criu") + pw.field(11, "/d/w"),
    )


def test_a_checkpoint_leaves_the_task_running_with_criu_images_in_a_directory():
    api = client()
    api.checkpoint("c0ffee", "/d/criu", "/d/work")
    call = api.channel.calls[0]
    request = pw.decode(call.request)
    assert pw.text(request, 1) == "c0ffee" and call.timeout == cd.LONG_TIMEOUT_S
    type_url, options = cd.decode_any(pw.first(request, 3))
    assert type_url == cd.RUNC_CHECKPOINT_OPTIONS
    # file_locks (5), image_path (8), work_path (9); exit (1) unset: the task runs on
    assert pw.decode(options) == {5: [1], 8: [b"/d/criu"], 9: [b"/d/work"]}


def test_snapshots_are_asked_for_by_snapshotter_key_and_parent():
    mounts = pw.message(1, cd.encode_mount(MOUNT))
    api = client(
        {
            cd.SNAPSHOTS + "Stat": pw.message(1, pw.field(1, "c0ffee") + pw.field(2, "sha256:parent")),
            cd.SNAPSHOTS + "Prepare": mounts,
            cd.SNAPSHOTS + "Mounts": mounts,
        }
    )
    assert api.snapshot_parent("overlayfs", "c0ffee") == "sha256:parent"
    assert api.prepare("overlayfs", "new", "sha256:parent") == [MOUNT]
    assert api.mounts("overlayfs", "c0ffee") == [MOUNT]
    api.remove_snapshot("overlayfs", "view")
    assert [pw.decode(call.request) for call in api.channel.calls] == [
        {1: [b"overlayfs"], 2: [b"c0ffee"]},
        {1: [b"overlayfs"], 2: [b"new"], 3: [b"sha256:parent"]},
        {1: [b"overlayfs"], 2: [b"c0ffee"]},
        {1: [b"overlayfs"], 2: [b"view"]},
    ]


DESCRIPTOR = {"media_type": cd.LAYER_TAR, "digest": "sha256:" + "a" * 64, "size": 10}


def test_a_diff_is_an_uncompressed_layer_in_the_content_store():
    api = client({cd.DIFF + "Diff": pw.message(3, cd.encode_descriptor(DESCRIPTOR))})
    assert api.diff([MOUNT], [dict(MOUNT, source="upper")], "checkpoint-rw-x") == DESCRIPTOR
    request = pw.decode(api.channel.calls[0].request)
    assert cd.decode_mounts(request[1]) == [MOUNT]
    assert cd.decode_mounts(request[2]) == [dict(MOUNT, source="upper")]
    assert (pw.text(request, 3), pw.text(request, 4)) == (cd.LAYER_TAR, "checkpoint-rw-x")
    api.apply(DESCRIPTOR, [MOUNT])
    applied = pw.decode(api.channel.calls[1].request)
    assert cd.decode_descriptor(pw.first(applied, 1)) == DESCRIPTOR
    assert cd.decode_mounts(applied[2]) == [MOUNT]


def test_a_task_is_created_on_its_rootfs_with_its_options_and_started():
    api = client(
        {cd.TASKS + "Create": pw.field(1, "new") + pw.field(2, 77), cd.TASKS + "Start": pw.field(1, 78)}
    )
    options = cd.restore_options(RUNTIME_OPTIONS, "/d/criu", "/d/work")
    assert api.create_task("new", [MOUNT], "file:///d/restored.log", options) == 77
    assert api.start_task("new") == 78
    create = pw.decode(api.channel.calls[0].request)
    assert cd.decode_mounts(create[3]) == [MOUNT]
    assert (pw.text(create, 5), pw.text(create, 6)) == ("file:///d/restored.log",) * 2  # stdout, stderr
    assert pw.first(create, 9) == options


@pytest.mark.parametrize(
    ("number", "status"), [(1, "CREATED"), (2, "RUNNING"), (3, "STOPPED"), (9, "UNKNOWN")]
)
def test_a_task_is_its_process_pid_and_status(number, status):
    process = pw.field(1, "new") + pw.field(3, 4242) + pw.field(4, number)
    api = client({cd.TASKS + "Get": pw.message(1, process)})
    assert api.task("new") == (4242, status)
    assert pw.decode(api.channel.calls[0].request) == {1: [b"new"]}


def test_a_container_without_a_task_has_none():
    api = client({cd.TASKS + "Get": RpcFailure(grpc.StatusCode.NOT_FOUND, "no running task found")})
    assert api.task("new") == (None, None)


def test_a_task_that_cannot_be_read_is_an_error():
    api = client({cd.TASKS + "Get": RpcFailure(grpc.StatusCode.UNAVAILABLE, "connection refused")})
    with pytest.raises(cd.ContainerdError, match="UNAVAILABLE"):
        api.task("new")


def test_a_task_is_killed_deleted_and_its_container_deleted_by_id():
    api = client()
    api.kill("new")
    api.delete_task("new")
    api.delete_container("new")
    assert api.channel.methods() == ["Kill", "Delete", "Delete"]
    requests = [pw.decode(call.request) for call in api.channel.calls]
    assert requests == [{1: [b"new"], 3: [cd.SIGKILL]}, {1: [b"new"]}, {1: [b"new"]}]
    assert [call.method for call in api.channel.calls][1:] == [cd.TASKS + "Delete", cd.CONTAINERS + "Delete"]


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (grpc.StatusCode.NOT_FOUND, ""),
        (grpc.StatusCode.UNAVAILABLE, f": is containerd up, and is {ADDRESS} its socket?"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, f": is containerd up, and is {ADDRESS} its socket?"),
    ],
)
def test_an_rpc_error_is_a_containerd_error_with_its_status(code, hint):
    api = client({cd.TASKS + "Pause": RpcFailure(code, "the details")})
    with pytest.raises(cd.ContainerdError) as caught:
        api.pause("c0ffee")
    assert caught.value.msg == (
        f"containerd containerd.services.tasks.v1.Tasks.Pause(c0ffee) failed ({code.name}): the details{hint}"
    )
    assert caught.value.code == code.name
    assert isinstance(caught.value, criu.CriuError)  # what a failed restore undoes on


def test_a_runc_shim_without_criu_is_named_with_the_fix():
    said = 'OCI runtime restore failed: exec: "criu": executable file not found in $PATH: unknown'
    api = client({cd.TASKS + "Start": RpcFailure(grpc.StatusCode.UNKNOWN, said)})
    with pytest.raises(cd.ContainerdError) as caught:
        api.start_task("c0ffee")
    assert caught.value.msg.startswith(
        f"containerd containerd.services.tasks.v1.Tasks.Start(c0ffee) failed (UNKNOWN): {said}"
    )
    assert "install CRIU >= 4 on that PATH" in caught.value.msg


def blob(tmp_path, data):
    path = tmp_path / "rw.tar"
    path.write_bytes(data)
    descriptor = {"media_type": cd.LAYER_TAR, "digest": "sha256:" + hashlib.sha256(data).hexdigest()}
    return str(path), dict(descriptor, size=len(data))


def test_write_content_sends_the_file_in_chunks_then_commits_it(tmp_path, monkeypatch):
    monkeypatch.setattr(cd, "CHUNK", 4)
    path, descriptor = blob(tmp_path, b"0123456789")
    api = client()
    with api.lease("restore") as lease:
        api.write_content(path, descriptor)
    call = api.channel.calls[1]
    assert call.metadata == [NAMESPACE, ("containerd-lease", lease)]
    requests = [pw.decode(request) for request in call.request]
    assert {pw.text(r, 2) for r in requests} == {requests[0][2][0].decode()}  # one ref throughout
    assert requests[0][2][0].startswith(b"strata-ops-sha256-")
    assert [(pw.first(r, 1), pw.first(r, 5, 0), pw.first(r, 6, b"")) for r in requests] == [
        (cd.WRITE, 0, b"0123"),
        (cd.WRITE, 4, b"4567"),
        (cd.WRITE, 8, b"89"),
        (cd.COMMIT, 10, b""),
    ]
    assert {(pw.first(r, 3), pw.text(r, 4)) for r in requests} == {(10, descriptor["digest"])}


def test_write_content_of_a_blob_containerd_has_already_is_done(tmp_path):
    path, descriptor = blob(tmp_path, b"layer")
    client({cd.CONTENT + "Write": RpcFailure(grpc.StatusCode.ALREADY_EXISTS)}).write_content(path, descriptor)
    failing = client(
        {cd.CONTENT + "Write": RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, "digest mismatch")}
    )
    with pytest.raises(
        cd.ContainerdError, match=r"Content.Write\(sha256:\w+\) failed \(FAILED_PRECONDITION\)"
    ):
        failing.write_content(path, descriptor)


def chunks(*parts):
    """ReadContentResponse messages: offset 1, data 2."""
    offsets = [sum(len(p) for p in parts[:i]) for i in range(len(parts))]
    return [pw.field(1, offset) + pw.field(2, part) for offset, part in zip(offsets, parts)]


def test_read_content_writes_the_blob_into_the_file(tmp_path):
    api = client({cd.CONTENT + "Read": chunks(b"abc", b"def")})
    api.read_content(dict(DESCRIPTOR, size=6), str(tmp_path / "rw.tar"))
    assert (tmp_path / "rw.tar").read_bytes() == b"abcdef"
    assert api.channel.calls[0].request == pw.field(1, DESCRIPTOR["digest"])


def test_read_content_that_ends_short_is_an_error(tmp_path):
    api = client({cd.CONTENT + "Read": chunks(b"abc", b"def")})
    with pytest.raises(
        cd.ContainerdError, match=f"containerd sent 6 bytes of {DESCRIPTOR['digest']}, not 10"
    ):
        api.read_content(DESCRIPTOR, str(tmp_path / "rw.tar"))
    broken = client({cd.CONTENT + "Read": [*chunks(b"abc"), RpcFailure(grpc.StatusCode.UNAVAILABLE)]})
    with pytest.raises(cd.ContainerdError, match=r"Content.Read\(sha256:a+\) failed \(UNAVAILABLE\)"):
        broken.read_content(DESCRIPTOR, str(tmp_path / "rw.tar"))


def test_without_grpcio_the_module_says_what_to_install(monkeypatch):
    monkeypatch.setattr(cd, "grpc", None)
    with pytest.raises(cd.ContainerdError, match=r"install python3-grpcio .* or pip install grpcio"):
        cd.Containerd(ADDRESS, "k8s.io")
