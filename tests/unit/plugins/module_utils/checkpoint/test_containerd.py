"""method=containerd with a fake containerd API (FakeContainerd): the calls in order,
check mode, the refusals before any change, and the clean-up of a dump or a restore that fails part
way (the dumped task runs on, nothing half-restored is left)."""

import base64
import errno
import json
import os
import re
import shutil

import pytest

from ansible_collections.strata.ops.plugins.module_utils import containerd_api as cd
from ansible_collections.strata.ops.plugins.module_utils import criu
from ansible_collections.strata.ops.plugins.module_utils import protowire as pw
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import BadCheckpoint, containerd
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import manifest as mf
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument
from ansible_collections.strata.ops.plugins.module_utils.criu import CriuError, NoSpace

from ....fakes.containerd import (
    CONTAINER_ID,
    CRIU_FILES,
    IMAGE,
    IMAGE_SNAPSHOT,
    RUNTIME_OPTIONS,
    RW_LAYER,
    FakeContainerd,
    container_record,
    containerd_proc,
    crictl,
    failed,
    layer_descriptor,
    snapshot_mounts,
    write_containerd_dump,
)
from ....fakes.cuda import CUDA_PARAMS, FakeCudaCheckpoint
from ....fakes.run import FakeRun

CTR_PATH = "/usr/bin/ctr"  # what the messages name
NEW = "counter-2"
# The calls of a dump while its task is paused: CRIU's images, then the rw layer's diff.
PAUSED = [
    "Tasks.Pause",
    "Tasks.Checkpoint",
    "Snapshots.View",
    "Snapshots.Mounts",
    "Diff.Diff",
    "Snapshots.Remove",
    "Tasks.Resume",
]
OWN_NET = f"/proc/{os.getpid()}/ns/net"  # a namespace path whose identity this test can read
BIND = {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "rw"]}
DUMPED_SPEC = {
    "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": OWN_NET}]},
    "mounts": [BIND, {"destination": "/proc", "type": "proc", "source": "proc"}],
}


def params(**extra):
    base = dict(
        state="restored",
        method="containerd",
        checkpoint=None,
        images_dir=None,
        name=None,
        new_container=NEW,
        containerd_address="/run/c.sock",
        containerd_namespace="k8s.io",
        cri_endpoint=None,
        ctr_path=CTR_PATH,
        cuda_checkpoint_path=None,
        **CUDA_PARAMS,
    )
    base.update(extra)
    return base


def dump_params(images_dir, tool=None, **extra):
    return params(
        state="dumped",
        pod="trainer-0",
        namespace="ml",
        container="trainer",
        leave_running=True,
        images_dir=str(images_dir),
        keep=0,
        cuda_checkpoint_path=tool,
        **extra,
    )


def rewrite(dump_dir, **changes):
    """Set keys of the manifest of ``dump_dir`` (None: remove them)."""
    manifest = dict(mf.load(dump_dir), **changes)
    mf.write(dump_dir, {key: value for key, value in manifest.items() if value is not None})


def journaled(cuda, journal):
    """``cuda`` (a FakeCudaCheckpoint) as a handler that notes each action in ``journal``."""

    def handler(argv, **kwargs):
        if "--action" in argv:
            journal.append(("cuda-checkpoint", argv[argv.index("--action") + 1]))
        return cuda(argv, **kwargs)

    return handler


@pytest.fixture
def dump_dir(tmp_path):
    return write_containerd_dump(tmp_path / "trainer-20250101T000000.000Z")


@pytest.fixture
def api():
    """containerd's API on a node."""
    return FakeContainerd()


@pytest.fixture
def proc(tmp_path):
    return containerd_proc(tmp_path)[0]


def restore(dump_dir, api, *, check_mode=False, run=None, **kwargs):
    """containerd.restore of ``dump_dir`` into NEW through ``api`` and ``run``."""
    return containerd.restore(params(checkpoint=dump_dir), check_mode, run or FakeRun(), api=api, **kwargs)


# restore


def test_restore_makes_the_container_its_rootfs_and_its_task_from_the_dump(dump_dir, api, proc):
    run = FakeRun()
    result = restore(dump_dir, api, run=run, proc=proc)
    assert api.methods() == [
        "Containers.Get",  # NEW is not there yet
        "Snapshots.Stat",  # the image is unpacked here
        "Leases.Create",
        "Content.Write",
        "Containers.Create",
        "Snapshots.Prepare",
        "Diff.Apply",
        "Leases.Delete",
        "Tasks.Create",
        "Tasks.Start",
        "Tasks.Get",  # running
    ]
    made = dict(api.containers[NEW])
    spec_type, spec = cd.decode_any(made.pop("spec"))
    assert made == {
        "id": NEW,
        "labels": {containerd.RESTORED_FROM: os.path.basename(dump_dir)},
        "image": IMAGE,
        "runtime_name": "io.containerd.runc.v2",
        "runtime_options": RUNTIME_OPTIONS,
        "snapshotter": "overlayfs",
        "snapshot_key": NEW,
    }
    assert (spec_type, json.loads(spec)) == (cd.OCI_SPEC, mf.load(dump_dir)["container"]["spec"])
    # the rootfs: a snapshot on the image's with the rw layer applied, made under the restore's lease
    assert api.snapshots[NEW] == IMAGE_SNAPSHOT
    assert api.requests["Diff.Apply"]["descriptor"]["digest"] == layer_descriptor(RW_LAYER)["digest"]
    assert {api.requests[m]["lease"] for m in ("Content.Write", "Snapshots.Prepare", "Diff.Apply")} == {
        f"strata-ops-restore-{NEW}"
    }
    log = os.path.join(dump_dir, f"restored-{NEW}.log")
    task = api.requests["Tasks.Create"]
    assert (task["rootfs"], task["log_uri"]) == (api.requests["Diff.Apply"]["mounts"], "file://" + log)
    assert run.calls == []  # no ctr, no other process
    criu_log = os.path.join(dump_dir, f"restored-{NEW}-criu", "restore.log")
    assert (result["changed"], result["restored"], result["gpu"]["path"]) == (
        True,
        {"container": NEW, "pid": 4242, "log": log, "criu_log": criu_log},
        "none",
    )
    assert result["commands"] == api.calls


def test_the_restored_task_has_the_containers_runc_options_and_criu_paths(dump_dir, api, proc):
    restore(dump_dir, api, proc=proc)
    type_url, options = cd.decode_any(api.requests["Tasks.Create"]["options"])
    assert type_url == cd.RUNC_OPTIONS
    assert pw.decode(options) == {
        6: [b"runc"],
        9: [1],
        10: [os.path.join(dump_dir, "criu").encode()],
        11: [os.path.join(dump_dir, f"restored-{NEW}-criu").encode()],
    }


def test_a_restored_task_shown_created_first_is_waited_for(dump_dir, proc):
    api = FakeContainerd(shown={NEW: ["CREATED", "CREATED", "RUNNING"]})
    result = restore(dump_dir, api, proc=proc)
    assert result["restored"]["pid"] == 4242 and api.methods().count("Tasks.Get") == 3


def test_restore_in_check_mode_only_reads(dump_dir, api, proc):
    run = FakeRun()
    result = restore(dump_dir, api, check_mode=True, run=run, proc=proc)
    assert api.methods() == ["Containers.Get", "Snapshots.Stat"] and run.calls == []
    assert result["changed"] is True
    work = f"criu_work_path={dump_dir}/restored-{NEW}-criu"
    assert f"containerd Tasks.Create {NEW} criu_image_path={dump_dir}/criu {work}" in result["commands"][2]
    assert result["commands"][-1] == f"containerd Tasks.Start {NEW}"


@pytest.mark.parametrize(
    ("ours", "status", "said"),
    [(False, "RUNNING", ""), (True, "STOPPED", " (restored from this checkpoint, but not running)")],
    ids=["another", "ours-stopped"],
)
def test_restore_refuses_a_name_that_exists_and_changes_nothing(dump_dir, ours, status, said):
    api = with_new_container(dump_dir, status, ours=ours)
    exists = f"a container {NEW} exists already in containerd namespace k8s.io{said}: choose another"
    remove = f"remove it ({CTR_PATH} --address /run/c.sock --namespace k8s.io containers rm {NEW})"
    with pytest.raises(InvalidArgument, match=re.escape(exists)) as caught:
        restore(dump_dir, api)
    assert remove in caught.value.msg
    assert api.methods() == ["Containers.Get", "Tasks.Get"]


def test_a_second_restore_of_the_same_checkpoint_that_runs_is_done(dump_dir):
    api = with_new_container(dump_dir, "RUNNING", ours=True)
    result = restore(dump_dir, api)
    assert (result["changed"], result["restored"]) == (False, {"container": NEW, "pid": 4242})
    assert api.methods() == ["Containers.Get", "Tasks.Get"]


def with_new_container(dump_dir, status, *, ours):
    """containerd with a container NEW whose task is ``status``: restored from ``dump_dir`` when
    ``ours``, else another one."""
    api = FakeContainerd()
    labels = {containerd.RESTORED_FROM: os.path.basename(dump_dir)} if ours else {}
    api.containers[NEW] = container_record(id=NEW, labels=labels, snapshot_key=NEW)
    api.tasks[NEW] = status
    return api


def test_restore_refuses_a_criu_dump(dump_dir, api):
    mf.write(dump_dir, {"target": {"runtime": "docker"}})
    with pytest.raises(
        BadCheckpoint, match=re.escape("dumped by CRIU from a docker target (method criu), not by containerd")
    ):
        restore(dump_dir, api, run=FakeRun())


def cut(path, size):
    with open(path, "r+b") as handle:
        handle.truncate(size)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda d: rewrite(d, format=None, images=None, rw_layer=None, archive="checkpoint.tar"),
            r"it is a containerd checkpoint image of an earlier strata\.ops \(no CRIU images directory\)",
        ),
        (
            lambda d: shutil.rmtree(os.path.join(d, "criu")),
            r"are missing \(inventory.img, pages-1.img, pstree.img\)",
        ),
        (lambda d: os.remove(os.path.join(d, "criu", "pages-1.img")), r"criu are missing \(pages-1.img\)"),
        (
            lambda d: cut(os.path.join(d, "criu", "pages-1.img"), 4096),
            r"truncated or changed \(pages-1.img has 4096 bytes, the dump wrote 8192\)",
        ),
        (
            lambda d: os.remove(os.path.join(d, "rw.tar")),
            r"rw layer .*/rw.tar is missing: the dump is incomplete",
        ),
        (
            lambda d: cut(os.path.join(d, "rw.tar"), 10),
            rf"rw.tar has 10 bytes, the dump wrote {len(RW_LAYER)}: truncated or changed",
        ),
    ],
    ids=["earlier-format", "no-images", "image-missing", "image-truncated", "rw-missing", "rw-truncated"],
)
@pytest.mark.parametrize("check_mode", [True, False])
def test_restore_refuses_a_dump_whose_files_are_not_the_ones_it_wrote(
    dump_dir, api, damage, message, check_mode
):
    damage(dump_dir)
    run = FakeRun()
    with pytest.raises(BadCheckpoint, match=message) as caught:
        restore(dump_dir, api, check_mode=check_mode, run=run)
    assert caught.value.msg.endswith("; take a new one")
    assert run.calls == [] and api.calls == []


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_dump_of_a_newer_criu_is_refused_before_any_change(dump_dir, api, tmp_path, check_mode):
    rewrite(dump_dir, criu={"path": "/usr/local/sbin/criu", "version": "4.1.1"})
    proc, _temp = containerd_proc(tmp_path, criu=True, address="/run/c.sock")
    run = FakeRun(criu=lambda argv, **_kwargs: (0, "Version: 3.17.1\n", ""))
    with pytest.raises(BadCheckpoint) as caught:
        restore(dump_dir, api, check_mode=check_mode, run=run, proc=proc)
    assert (
        "was dumped by CRIU 4.1.1, and the CRIU that would restore it is older: /usr/bin/criu (CRIU 3.17.1)"
        in caught.value.msg
    )
    assert "the criu on containerd's PATH" in caught.value.msg
    assert len(run.calls) == 1  # criu --version
    assert api.methods() == ["Containers.Get"]  # only looked whether NEW exists


def gone_link(path):
    raise FileNotFoundError(path)


@pytest.mark.parametrize(
    ("readlink", "said"),
    [
        (gone_link, "network /proc/16189/ns/net (gone, was net:[4026532323])"),
        (
            {"/proc/16189/ns/net": "net:[4026531833]"}.__getitem__,
            "(now net:[4026531833], was net:[4026532323])",
        ),
    ],
    ids=["sandbox-removed", "pid-reused"],
)
@pytest.mark.parametrize("check_mode", [True, False])
def test_restore_refuses_when_the_pod_sandbox_is_gone_and_creates_nothing(
    dump_dir, api, readlink, said, check_mode
):
    joined = [{"type": "network", "path": "/proc/16189/ns/net", "id": "net:[4026532323]"}]
    rewrite(dump_dir, pod={"name": "validator-0", "namespace": "solana"}, joined_namespaces=joined)
    run = FakeRun()
    with pytest.raises(InvalidArgument) as caught:
        restore(dump_dir, api, check_mode=check_mode, run=run, readlink=readlink)
    assert "the pod solana/validator-0 this container was dumped from is gone" in caught.value.msg
    assert said in caught.value.msg and "method=kubelet" in caught.value.msg
    assert caught.value.msg.endswith("Nothing was created")
    assert run.calls == [] and api.methods() == ["Containers.Get"]  # only looked whether NEW exists


def test_restore_goes_on_while_the_pod_sandbox_is_there(dump_dir, api, proc):
    rewrite(dump_dir, joined_namespaces=[{"type": "network", "path": "/proc/1/ns/net", "id": "net:[1]"}])
    result = restore(dump_dir, api, proc=proc, readlink={"/proc/1/ns/net": "net:[1]"}.__getitem__)
    assert result["restored"]["pid"] == 4242


@pytest.mark.parametrize("check_mode", [True, False])
def test_restore_refuses_an_image_not_unpacked_here_naming_crictl_pull(dump_dir, api, proc, check_mode):
    del api.snapshots[IMAGE_SNAPSHOT]
    with pytest.raises(InvalidArgument) as caught:
        restore(dump_dir, api, check_mode=check_mode, proc=proc)
    assert f"the image {IMAGE} the container was made from is not unpacked" in caught.value.msg
    assert f"(crictl pull {IMAGE}), then restore again. Nothing was created" in caught.value.msg
    assert api.methods() == ["Containers.Get", "Snapshots.Stat"] and NEW not in api.containers


def test_a_containerd_that_cannot_say_whether_the_image_is_there_is_an_error(dump_dir, proc):
    api = FakeContainerd(fail={"Snapshots.Stat": failed("UNAVAILABLE", "connection refused")})
    with pytest.raises(cd.ContainerdError, match=r"\(UNAVAILABLE\): connection refused"):
        restore(dump_dir, api, proc=proc)
    assert api.changes() == []


@pytest.mark.parametrize(
    ("fail", "shown", "removal"),
    [
        # runc refused the restore (a namespace gone): the task stays CREATED with pid 0, and
        # `ctr tasks rm --force` would wait forever for it to exit (seen on containerd 1.6.20)
        ("Tasks.Start", ["CREATED"], ["Tasks.Get", "Tasks.Delete"]),
        # Start timed out while CRIU went on: the task runs, it is killed, waited for, deleted
        ("Tasks.Start", ["RUNNING", "STOPPED"], ["Tasks.Get", "Tasks.Kill", "Tasks.Get", "Tasks.Delete"]),
        # started, but it exited at once
        (None, ["STOPPED"], ["Tasks.Get", "Tasks.Delete"]),
        # the rootfs could not be made: a container without a task
        ("Snapshots.Prepare", [None], ["Tasks.Get"]),
    ],
    ids=["restore-refused", "start-timed-out", "exited", "no-rootfs"],
)
def test_a_failed_restore_leaves_nothing_behind(dump_dir, proc, fail, shown, removal):
    api = FakeContainerd(
        shown={NEW: shown},
        fail={fail: failed("UNKNOWN", "criu failed: type RESTORE errno 0")} if fail else {},
    )
    with pytest.raises(CriuError) as caught:
        restore(dump_dir, api, proc=proc)
    assert caught.value.msg.endswith(f"{NEW} was removed again, nothing is left half-restored")
    methods = api.methods()
    cleanup = methods[methods.index("Containers.Get", 1) :]
    assert cleanup == ["Containers.Get", *removal, "Containers.Delete", "Snapshots.Remove"]
    assert NEW not in api.containers and NEW not in api.snapshots and NEW not in api.tasks


def test_a_failed_restore_quotes_the_errors_of_crius_log_which_stays(dump_dir, proc):
    """The task's bundle goes with the clean-up; CRIU's log is in the dump directory and its errors
    are in the message (containerd's own says only `criu failed: type NOTIFY errno 0`)."""
    log = (
        "(00.001000) Restoring 1\n"
        "(00.002000) Error (criu/files-reg.c:2169): File usr/bin/counter has bad size 42 (expect 41)\n"
        "(00.003000) Error (criu/cr-restore.c:2450): Restoring FAILED.\n"
    )
    api = FakeContainerd(
        fail={"Tasks.Start": failed("UNKNOWN", "criu failed: type NOTIFY errno 0")}, restore_log=log
    )
    with pytest.raises(CriuError) as caught:
        restore(dump_dir, api, proc=proc)
    path = os.path.join(dump_dir, f"restored-{NEW}-criu", "restore.log")
    quoted = f"CRIU's log {path} ends:\n" + "".join(log.splitlines(keepends=True)[1:])
    assert quoted in caught.value.msg
    assert caught.value.msg.endswith(f"{NEW} was removed again, nothing is left half-restored")
    with open(path) as handle:
        assert handle.read() == log


def test_the_log_of_an_earlier_restore_to_the_name_is_not_quoted(dump_dir, proc):
    work = os.path.join(dump_dir, f"restored-{NEW}-criu")
    os.mkdir(work)
    with open(os.path.join(work, "restore.log"), "w") as handle:
        handle.write("(00.1) Error (criu/cr-restore.c:1): an earlier restore failed\n")
    api = FakeContainerd(fail={"Snapshots.Prepare": failed("UNKNOWN", "no space left on device")})
    with pytest.raises(CriuError) as caught:
        restore(dump_dir, api, proc=proc)
    assert "earlier" not in caught.value.msg and "CRIU's log" not in caught.value.msg
    assert not os.path.exists(work)


def test_a_task_that_does_not_stop_is_named_with_how_to_remove_it(dump_dir, proc, monkeypatch):
    """SIGKILL not taken within the wait (a process in uninterruptible sleep): the failure says the
    container is still there and how to remove it, instead of claiming nothing is left."""
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr(containerd.time, "monotonic", lambda: next(clock))
    api = FakeContainerd(
        shown={NEW: ["RUNNING"]}, fail={"Tasks.Start": failed("DEADLINE_EXCEEDED", "context deadline")}
    )
    with pytest.raises(CriuError) as caught:
        restore(dump_dir, api, proc=proc)
    assert f"{NEW} could not be removed (its task did not stop within 10 s of SIGKILL)" in caught.value.msg
    ctr = f"{CTR_PATH} --address /run/c.sock --namespace k8s.io"
    assert f"{ctr} tasks kill --signal SIGKILL {NEW} (while its task runs), {ctr} tasks rm {NEW} and " in (
        caught.value.msg
    )
    assert "half-restored" not in caught.value.msg and NEW in api.containers


def test_a_containerd_gone_during_the_cleanup_is_named_with_how_to_remove_it(dump_dir, proc):
    api = FakeContainerd(
        fail={
            "Tasks.Start": failed("UNKNOWN", "criu failed: type RESTORE errno 0"),
            "Tasks.Delete": failed("UNAVAILABLE", "connection refused"),
        }
    )
    with pytest.raises(CriuError) as caught:
        restore(dump_dir, api, proc=proc)
    assert "criu failed: type RESTORE errno 0" in caught.value.msg
    assert f"{NEW} could not be removed (containerd " in caught.value.msg
    assert "(UNAVAILABLE): connection refused" in caught.value.msg
    assert f"containers rm {NEW}" in caught.value.msg


# dump


@pytest.fixture
def plain_host(tmp_path, monkeypatch):
    """holding(anon_kb, file_kb): the proc dir of a node whose container process 4242 (no CUDA) has
    that much anonymous and file-mapped memory resident."""
    proc, _temp = containerd_proc(tmp_path)
    task = tmp_path / "proc" / "4242" / "task" / "4242"
    task.mkdir(parents=True)
    (task / "children").write_text("")
    (tmp_path / "proc" / "4242" / "maps").write_text("")
    monkeypatch.setattr(criu, "find_executable", lambda name: f"/usr/bin/{name}")

    def holding(anon_kb, file_kb=1024):
        status = f"Name:\tcounter\nVmRSS:\t{anon_kb + file_kb + 4} kB\nRssAnon:\t{anon_kb} kB\n"
        status += f"RssFile:\t{file_kb} kB\nRssShmem:\t4 kB\n"
        (tmp_path / "proc" / "4242" / "status").write_text(status)
        return proc

    return holding


def dump(images_dir, proc, api, *, check_mode=False, run=None, **kwargs):
    """containerd.dump of the pod's container (crictl's CONTAINER_ID) through ``api``."""
    kwargs.setdefault("gpus_dir", "/nonexistent")
    return containerd.dump(
        dump_params(images_dir), check_mode, run or FakeRun(crictl=crictl), proc=proc, api=api, **kwargs
    )


@pytest.fixture
def dumper():
    """The containerd API of a node whose container has DUMPED_SPEC."""
    return FakeContainerd(container_record(DUMPED_SPEC))


def test_dump_checkpoints_the_paused_task_with_its_rw_layer_then_resumes_it(plain_host, tmp_path, dumper):
    result = dump(tmp_path / "dumps", plain_host(64), dumper)
    dump_dir = result["checkpoint_dir"]
    assert dumper.methods() == [
        "Containers.Get",
        "Snapshots.Stat",
        "Leases.Create",
        *PAUSED,
        "Content.Read",
        "Leases.Delete",
    ]
    assert dumper.tasks[CONTAINER_ID] == "RUNNING"
    images = os.path.join(dump_dir, "criu")
    assert dumper.requests["Tasks.Checkpoint"] == {
        "image_path": images,
        "work_path": images,
        "lease": f"strata-ops-dump-{CONTAINER_ID[:12]}",
    }
    # the diff of the container's snapshot against a view of its image's, which goes again
    view = dumper.requests["Diff.Diff"]["lower"]
    assert view == snapshot_mounts(
        f"strata-ops-rw-{CONTAINER_ID}-{os.path.basename(dump_dir)}", IMAGE_SNAPSHOT
    )
    assert set(dumper.snapshots) == {CONTAINER_ID, IMAGE_SNAPSHOT}
    with open(os.path.join(dump_dir, "rw.tar"), "rb") as handle:
        assert handle.read() == RW_LAYER
    assert {name: os.path.getsize(os.path.join(images, name)) for name in os.listdir(images)} == {
        name: len(data) for name, data in CRIU_FILES.items()
    }
    assert result["commands"] == dumper.calls


def test_a_dump_records_the_container_to_restore_it(plain_host, tmp_path, dumper):
    result = dump(tmp_path / "dumps", plain_host(64), dumper)
    manifest = mf.load(result["checkpoint_dir"])
    assert manifest == json.loads(json.dumps(result["manifest"]))
    assert (manifest["method"], manifest["format"], manifest["images"]) == ("containerd", 2, "criu")
    assert manifest["container"] == {
        "image": IMAGE,
        "runtime": {"name": "io.containerd.runc.v2", "options": base64.b64encode(RUNTIME_OPTIONS).decode()},
        "spec_type": cd.OCI_SPEC,
        "spec": DUMPED_SPEC,
        "snapshotter": "overlayfs",
        "parent_snapshot": IMAGE_SNAPSHOT,
    }
    assert manifest["rw_layer"] == dict(layer_descriptor(RW_LAYER), file="rw.tar")
    sizes = {name: len(data) for name, data in CRIU_FILES.items()}
    assert manifest["sizes"] == {"images_bytes": sum(sizes.values()), "files": sizes}
    # the pod sandbox's namespaces and the bind mounts, from the container's spec
    assert manifest["joined_namespaces"] == [{"type": "network", "path": OWN_NET, "id": os.readlink(OWN_NET)}]
    assert manifest["binds"] == [["/data", "/srv/data"]]
    assert containerd.dump_problem(result["checkpoint_dir"], manifest) is None


def test_a_dump_restores_into_a_container_like_the_dumped_one(plain_host, tmp_path, dumper):
    dump_dir = dump(tmp_path / "dumps", plain_host(64), dumper)["checkpoint_dir"]
    restore(dump_dir, dumper, proc=plain_host(64))

    def alike(record):  # what the restored container takes over; the spec's JSON as JSON
        spec_type, spec = cd.decode_any(record["spec"])
        kept = {k: v for k, v in record.items() if k not in ("id", "labels", "snapshot_key", "spec")}
        return dict(kept, spec=(spec_type, json.loads(spec)))

    assert alike(dumper.containers[NEW]) == alike(dumper.record)
    assert dumper.content[dumper.requests["Diff.Apply"]["descriptor"]["digest"]] == RW_LAYER


def test_a_dump_reports_how_long_the_task_was_paused(plain_host, tmp_path, dumper):
    clock = iter([100.0, 100.75])
    result = dump(tmp_path / "dumps", plain_host(64), dumper, clock=lambda: next(clock))
    assert result["frozen_s"] == result["manifest"]["frozen_s"] == 0.75


def test_a_dump_in_check_mode_only_reads(plain_host, tmp_path, dumper):
    result = dump(tmp_path / "dumps", plain_host(64), dumper, check_mode=True)
    assert dumper.methods() == ["Containers.Get", "Snapshots.Stat"]
    assert not os.path.exists(tmp_path / "dumps")
    assert result["commands"][1] == (
        f"containerd Tasks.Checkpoint {CONTAINER_ID} image_path={result['checkpoint_dir']}/criu"
    )


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_container_of_another_runtime_is_refused_before_any_change(plain_host, tmp_path, check_mode):
    api = FakeContainerd(container_record(runtime_name="io.containerd.kata.v2"))
    with pytest.raises(
        InvalidArgument, match=f"the container {CONTAINER_ID} runs on the runtime io.containerd.kata.v2"
    ):
        dump(tmp_path / "dumps", plain_host(64), api, check_mode=check_mode)
    assert api.changes() == [] and not os.path.exists(tmp_path / "dumps")


@pytest.mark.parametrize("step", ["Tasks.Checkpoint", "Snapshots.View", "Diff.Diff", "Content.Read"])
def test_a_failed_dump_resumes_the_task_and_leaves_no_partial_dump(plain_host, tmp_path, step):
    api = FakeContainerd(fail={step: failed("UNKNOWN", "it broke")})
    with pytest.raises(CriuError, match="it broke") as caught:
        dump(tmp_path / "dumps", plain_host(64), api)
    assert caught.value.msg.endswith("was removed, the container runs on")
    assert api.methods().count("Tasks.Resume") == 1 and api.tasks[CONTAINER_ID] == "RUNNING"
    assert set(api.snapshots) == {CONTAINER_ID, IMAGE_SNAPSHOT}  # the view went again
    assert api.methods()[-1] == "Leases.Delete"
    assert os.listdir(tmp_path / "dumps") == []


def test_a_failed_checkpoint_quotes_the_errors_of_crius_log(plain_host, tmp_path):
    """containerd's error names CRIU's dump.log only, and the log goes with the partial dump: its
    errors are in the message."""
    log = b"(00.1) Dumping 1\n(00.2) Error (criu/sk-unix.c:1): unix: Can't dump external socket\n"
    api = FakeContainerd(
        fail={"Tasks.Checkpoint": failed("UNKNOWN", "criu failed: type NOTIFY errno 0")},
        criu_files={"dump.log": log},
    )
    with pytest.raises(CriuError) as caught:
        dump(tmp_path / "dumps", plain_host(64), api)
    images = api.requests["Tasks.Checkpoint"]["image_path"]
    quoted = f"CRIU's log {images}/dump.log (it goes with the partial dump) ends:\n"
    assert quoted + "(00.2) Error (criu/sk-unix.c:1): unix: Can't dump external socket\n" in caught.value.msg
    assert caught.value.msg.endswith("was removed, the container runs on")
    assert os.listdir(tmp_path / "dumps") == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"pod": None}, "set pod"),
        ({"leave_running": False}, "set leave_running=true"),
        ({"images_dir": None}, "images_dir is needed"),
    ],
)
def test_dump_refusals_come_before_any_call(tmp_path, extra, message):
    run, api = FakeRun(), FakeContainerd()
    with pytest.raises(InvalidArgument, match=message):
        containerd.dump(dict(dump_params(tmp_path), **extra), False, run, api=api)
    assert run.calls == [] and api.calls == []


def test_an_images_dir_without_room_for_the_memory_is_refused_before_the_checkpoint(plain_host, tmp_path):
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    api = FakeContainerd()
    with pytest.raises(NoSpace, match=r"has \d+ bytes free but the dump of the process tree writes about"):
        dump(tmp_path / "dumps", plain_host(free // 1024 + 1), api)
    assert api.methods() == ["Containers.Get", "Snapshots.Stat"]
    assert os.listdir(tmp_path / "dumps") == []
    # the clean pages of file mappings (the libraries) are not written by a dump: not counted
    api = FakeContainerd()
    dump(tmp_path / "dumps", plain_host(64, file_kb=free // 1024 + 1), api)
    assert "Tasks.Checkpoint" in api.methods()


@pytest.mark.parametrize(
    ("step", "error"),
    [
        ("Tasks.Checkpoint", failed("UNKNOWN", "criu failed: write pages-1.img: no space left on device")),
        ("Content.Read", OSError(errno.ENOSPC, "No space left on device")),
    ],
    ids=["criu-images", "rw-layer"],
)
def test_a_full_images_dir_leaves_no_partial_dump(plain_host, tmp_path, step, error):
    api = FakeContainerd(fail={step: error})
    with pytest.raises(NoSpace) as caught:
        dump(tmp_path / "dumps", plain_host(64), api)
    assert caught.value.msg.startswith(f"{tmp_path / 'dumps'} ran out of space while containerd's checkpoint")
    assert "free space there or point images_dir at a larger file system" in caught.value.msg
    assert api.tasks[CONTAINER_ID] == "RUNNING"
    assert os.listdir(tmp_path / "dumps") == []


# The GPU path: a CUDA process in the pod's container is locked and checkpointed around containerd's
# checkpoint (runc's CRIU has no GPU support of its own) and thawed after it and after a restore.


def cuda_dump(gpu_host, tmp_path, api, cuda, journal, **kwargs):
    gpus, tool, proc = gpu_host
    run = FakeRun(crictl=crictl, cuda_checkpoint=journaled(cuda, journal))
    return containerd.dump(
        dump_params(tmp_path / "dumps", tool), False, run, gpus_dir=gpus, proc=proc, api=api, **kwargs
    )


def test_a_cuda_container_is_frozen_only_around_the_paused_checkpoint(gpu_host, tmp_path):
    journal = []
    cuda = FakeCudaCheckpoint([4242], path=gpu_host[1])
    clock = iter([100.0, 100.5, 101.0, 102.5])  # locked, paused, resumed, thawed
    api = FakeContainerd(journal=journal)
    result = cuda_dump(gpu_host, tmp_path, api, cuda, journal, clock=lambda: next(clock))
    assert journal == [
        ("containerd", "Containers.Get"),
        ("containerd", "Snapshots.Stat"),
        ("containerd", "Leases.Create"),
        ("cuda-checkpoint", "lock"),
        ("cuda-checkpoint", "checkpoint"),
        *[("containerd", method) for method in PAUSED],
        ("cuda-checkpoint", "restore"),
        ("cuda-checkpoint", "unlock"),
        ("containerd", "Content.Read"),  # the rw layer is read out with the CUDA processes thawed
        ("containerd", "Leases.Delete"),
    ]
    gpu = result["gpu"]
    assert (gpu["path"], gpu["cuda_pids"], gpu["locked_s"], result["frozen_s"]) == (
        "cuda-checkpoint",
        [4242],
        2.5,
        0.5,
    )
    assert [(s["step"], s["state"]) for s in gpu["states"]] == [
        ("before dump", "running"),
        ("lock", "locked"),
        ("checkpoint", "checkpointed"),
        ("restore", "locked"),
        ("unlock", "running"),
    ]
    assert result["manifest"]["gpu"] == {"path": "cuda-checkpoint", "cuda_pids": [4242]}
    assert cuda.states[4242] == "running"


def test_a_failed_checkpoint_thaws_the_cuda_container(gpu_host, tmp_path):
    journal = []
    cuda = FakeCudaCheckpoint([4242], path=gpu_host[1])
    api = FakeContainerd(
        journal=journal, fail={"Tasks.Checkpoint": failed("UNKNOWN", "criu failed: type DUMP")}
    )
    with pytest.raises(CriuError, match="criu failed: type DUMP") as caught:
        cuda_dump(gpu_host, tmp_path, api, cuda, journal)
    assert journal[-5:] == [
        ("containerd", "Tasks.Checkpoint"),
        ("containerd", "Tasks.Resume"),
        ("cuda-checkpoint", "restore"),
        ("cuda-checkpoint", "unlock"),
        ("containerd", "Leases.Delete"),
    ]
    assert cuda.states[4242] == "running"
    assert caught.value.msg.endswith("was removed, the container runs on")
    assert os.listdir(tmp_path / "dumps") == []


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_cuda_container_without_a_freezer_is_refused_before_anything(gpu_host, tmp_path, check_mode):
    """No cuda-checkpoint and a libcuda without the checkpoint API: runc's CRIU would fail on (or
    silently leave out) the GPU state, so nothing is checkpointed."""
    gpus, _tool, proc = gpu_host
    api = FakeContainerd()
    no_freezer = dump_params(tmp_path / "dumps", cuda_driver_library="/nonexistent/libcuda.so.1")
    with pytest.raises(
        CriuError, match=re.escape("processes [4242] use CUDA but nothing here can checkpoint")
    ):
        containerd.dump(no_freezer, check_mode, FakeRun(crictl=crictl), gpus_dir=gpus, proc=proc, api=api)
    assert api.changes() == []
    assert not os.path.exists(tmp_path / "dumps")


def cuda_restore(dump_dir, gpu_host, api, cuda, *, check_mode=False):
    """A restore of a CUDA dump; the containerd calls and cuda-checkpoint actions in order (api's journal)."""
    gpus, tool, proc = gpu_host
    rewrite(dump_dir, gpu={"path": "cuda-checkpoint", "cuda_pids": [17]})
    cuda.states[4242] = "checkpointed"  # as CRIU brings back a process dumped checkpointed
    restore_params = params(checkpoint=dump_dir, cuda_checkpoint_path=tool)
    run = FakeRun(cuda_checkpoint=journaled(cuda, api.journal))
    return containerd.restore(restore_params, check_mode, run, proc=proc, gpus_dir=gpus, api=api), api.journal


def test_a_restored_cuda_container_is_restored_and_unlocked_on_the_gpu(dump_dir, gpu_host, api):
    cuda = FakeCudaCheckpoint([4242], path=gpu_host[1])
    result, steps = cuda_restore(dump_dir, gpu_host, api, cuda)
    assert steps[-4:] == [
        ("containerd", "Tasks.Start"),
        ("containerd", "Tasks.Get"),  # running
        ("cuda-checkpoint", "restore"),
        ("cuda-checkpoint", "unlock"),
    ]
    assert (result["gpu"]["path"], result["gpu"]["cuda_pids"]) == ("cuda-checkpoint", [4242])
    assert cuda.states[4242] == "running"


def test_a_restored_cuda_container_that_cannot_be_thawed_is_removed(dump_dir, gpu_host):
    cuda = FakeCudaCheckpoint([4242], path=gpu_host[1], fail={"restore": (1, "CUDA_ERROR_OUT_OF_MEMORY\n")})
    api = FakeContainerd(shown={NEW: ["RUNNING", "RUNNING", "STOPPED"]})
    with pytest.raises(CriuError) as caught:
        cuda_restore(dump_dir, gpu_host, api, cuda)
    assert "CUDA_ERROR_OUT_OF_MEMORY" in caught.value.msg
    assert f"{NEW} was removed again, nothing is left half-restored" in caught.value.msg
    assert NEW not in api.containers


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_cuda_dump_is_not_restored_on_a_host_without_a_gpu(dump_dir, api, tmp_path, check_mode):
    rewrite(dump_dir, gpu={"path": "cuda-checkpoint", "cuda_pids": [17]})
    no_gpus, proc = str(tmp_path / "no-gpus"), containerd_proc(tmp_path)[0]
    with pytest.raises(CriuError, match=r"holds CUDA state .* but this host has no NVIDIA GPU"):
        restore(dump_dir, api, check_mode=check_mode, gpus_dir=no_gpus, proc=proc)
    assert api.changes() == []


# helpers


def test_a_dump_records_the_criu_of_the_containerd_that_took_it(tmp_path):
    containerd_proc(tmp_path, criu=True, pid="4100", address="/run/c.sock")
    proc, _temp = containerd_proc(tmp_path, b"PATH=/opt/bin\0", pid="4200", address="/run/other.sock")
    run = FakeRun(criu=lambda argv, **_kwargs: (0, "Version: 4.1.1\n", ""))
    assert containerd.dumping_criu(run, proc, "/run/c.sock") == {"path": "/usr/bin/criu", "version": "4.1.1"}
    # not told apart (no process found serving the address), and not the same CRIU: none recorded
    assert containerd.dumping_criu(run, proc, "/run/unknown.sock") == {}


def test_the_socket_is_containerd_address_else_the_cri_endpoints():
    endpoint = "unix:///run/k3s/containerd/containerd.sock"
    assert containerd.containerd_address({"cri_endpoint": endpoint}) == "/run/k3s/containerd/containerd.sock"
    assert containerd.containerd_address({"containerd_address": "/run/c.sock", "cri_endpoint": endpoint}) == (
        "/run/c.sock"
    )
    assert containerd.containerd_address({}) == "/run/containerd/containerd.sock"


SPEC = {
    "linux": {
        "namespaces": [
            {"type": "pid"},
            {"type": "ipc", "path": "/proc/16189/ns/ipc"},
            {"type": "mount"},
            {"type": "network", "path": "/proc/16189/ns/net"},
        ]
    }
}


def test_the_pod_namespaces_a_container_joins_are_recorded_with_their_identity():
    links = {"/proc/16189/ns/ipc": "ipc:[4026532393]", "/proc/16189/ns/net": "net:[4026532323]"}
    assert containerd.joined_namespaces(SPEC, links.__getitem__) == [
        {"type": "ipc", "path": "/proc/16189/ns/ipc", "id": "ipc:[4026532393]"},
        {"type": "network", "path": "/proc/16189/ns/net", "id": "net:[4026532323]"},
    ]
    assert containerd.joined_namespaces({}, links.__getitem__) == []
    assert containerd.joined_namespaces(SPEC, gone_link)[0]["id"] is None


def test_a_namespace_the_dump_could_not_read_is_not_judged():
    unread = [{"type": "network", "path": "/proc/16189/ns/net", "id": None}]
    assert containerd.namespaces_gone(unread, gone_link) == []
    assert containerd.pod_gone({"joined_namespaces": unread}, gone_link) is None


@pytest.mark.parametrize(
    ("dumped", "restored"),
    [
        # the CRI plugin's cgroupfs path (the test bed's) and the kubelet's
        ("/k8s.io/5f3e5b4fac13", f"/k8s.io/{NEW}"),
        ("/kubepods/burstable/pod1d2c/5f3e5b4fac13", f"/kubepods/burstable/pod1d2c/{NEW}"),
        ("k8s.io/5f3e5b4fac13/", f"k8s.io/{NEW}"),
        ("5f3e5b4fac13", NEW),
        # the systemd driver's SLICE:PREFIX:NAME (the unit cri-containerd-NAME.scope)
        (
            "kubepods-besteffort-pod1d2c.slice:cri-containerd:5f3e5b4fac13",
            f"kubepods-besteffort-pod1d2c.slice:cri-containerd:{NEW}",
        ),
    ],
)
def test_a_restored_container_has_a_cgroup_of_its_own_beside_the_dumped_ones(dumped, restored):
    spec = {"linux": {"cgroupsPath": dumped, "namespaces": [{"type": "pid"}]}, "process": {"args": ["x"]}}
    own = containerd.own_cgroup(spec, NEW)
    assert own == {
        "linux": {"cgroupsPath": restored, "namespaces": [{"type": "pid"}]},
        "process": {"args": ["x"]},
    }
    assert spec["linux"]["cgroupsPath"] == dumped  # the manifest's spec is left as it is


def test_a_spec_without_a_cgroups_path_is_left_to_runc():
    assert containerd.own_cgroup({"linux": {}}, NEW) == {"linux": {}}
    assert containerd.own_cgroup({}, NEW) == {}


def test_the_restored_container_is_made_with_its_own_cgroup(tmp_path, api, proc):
    spec = dict(DUMPED_SPEC, linux=dict(DUMPED_SPEC["linux"], cgroupsPath="/k8s.io/" + CONTAINER_ID))
    dump_dir = write_containerd_dump(tmp_path / "trainer-20250101T000000.000Z", container_record(spec=spec))
    restore(dump_dir, api, proc=proc)
    _type, made = cd.decode_any(api.containers[NEW]["spec"])
    assert json.loads(made)["linux"]["cgroupsPath"] == f"/k8s.io/{NEW}"
