"""method=containerd with a fake ctr: the commands in order, check mode, the refusals, and the
clean-up of a restore that fails part way (nothing half-restored is left running)."""

import json
import os
import re

import pytest

from ansible_collections.strata.ops.plugins.module_utils import criu
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import (
    BadCheckpoint,
    containerd,
    leftovers,
)
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import manifest as mf
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument
from ansible_collections.strata.ops.plugins.module_utils.criu import CriuError, NoSpace

from ....fakes.containerd import CONTAINER_ID, FakeCtr, checkpoint_archive, containerd_proc, crictl
from ....fakes.cuda import CUDA_PARAMS, FakeCudaCheckpoint
from ....fakes.run import FakeRun

REF = "strata.local/checkpoint/counter:20250101T000000.000Z"
# What runc in containerd's shim says without a criu on containerd's PATH (seen on containerd 1.6.20).
NO_CRIU_ON_PATH = (
    "runc did not terminate successfully: exit status 1: CRIU version check failed: "
    'exec: "criu": executable file not found in $PATH'
)


@pytest.fixture
def dump_dir(tmp_path):
    path = tmp_path / "counter-20250101T000000.000Z"
    path.mkdir()
    checkpoint_archive(path / "checkpoint.tar")
    (path / "manifest.json").write_text(
        json.dumps(
            {
                "method": "containerd",
                "image_ref": REF,
                "archive": "checkpoint.tar",
                "target": {"runtime": "cri", "container_id": "dumped-id"},
            }
        )
    )
    return str(path)


def params(**extra):
    base = dict(
        state="restored",
        method="containerd",
        checkpoint=None,
        images_dir=None,
        name=None,
        new_container="counter-2",
        containerd_address="/run/c.sock",
        containerd_namespace="k8s.io",
        cri_endpoint=None,
        ctr_path="/usr/bin/ctr" if os.access("/usr/bin/ctr", os.X_OK) else "/bin/true",
        cuda_checkpoint_path=None,
        **CUDA_PARAMS,
    )
    base.update(extra)
    return base


def verbs(run):
    return [tuple(argv[5:7]) for argv, _kwargs in run.calls]


@pytest.mark.parametrize("release", ["1.6", "1.7"])
def test_restore_imports_a_missing_image_then_restores_into_the_new_container(dump_dir, tmp_path, release):
    proc, temp = containerd_proc(tmp_path)
    run = FakeRun(**{os.path.basename(params()["ctr_path"]): FakeCtr(copy_into=temp, release=release)})
    result = containerd.restore(params(checkpoint=dump_dir), False, run, proc=proc)
    assert verbs(run) == [
        ("containers", "info"),
        ("images", "ls"),
        ("images", "import"),  # --help: does this ctr know --local?
        ("images", "import"),
        ("images", "label"),
        ("containers", "restore"),
        ("tasks", "ls"),
        ("containers", "label"),
    ]
    assert run.calls[-1][0][-2:] == ["counter-2", f"strata.io/restored-from={REF}"]
    archive = os.path.join(dump_dir, "checkpoint.tar")
    # 1.7 and later: --local, the client writes into the content store (faster than the transfer API)
    assert run.calls[3][0][7:] == (
        ["--no-unpack", archive] if release == "1.6" else ["--no-unpack", "--local", archive]
    )
    # labelled as its dump's image was: the next dump of that container releases it (containerd.py)
    assert run.calls[4][0][-2:] == [REF, "strata.io/checkpoint-of=dumped-id"]
    assert run.calls[5][0][-4:] == ["--live", "--rw", "counter-2", REF]
    assert (result["changed"], result["restored"], result["gpu"]["path"]) == (
        True,
        {"container": "counter-2", "pid": 4242},
        "none",
    )
    # containerd's copy of the checkpoint (made by the restore, never removed by containerd) is gone
    assert result["containerd_copy_removed"].startswith("/tmp/ctrd-checkpoint")
    assert os.listdir(temp) == []


def test_a_restored_task_shown_created_first_is_waited_for(dump_dir, tmp_path):
    proc, _temp = containerd_proc(tmp_path)
    fake = FakeCtr(images=[REF], statuses=("CREATED", "CREATED", "RUNNING"))
    run = FakeRun(**{os.path.basename(params()["ctr_path"]): fake})
    result = containerd.restore(params(checkpoint=dump_dir), False, run, proc=proc)
    assert result["restored"]["pid"] == 4242 and verbs(run).count(("tasks", "ls")) == 3


def test_restore_in_check_mode_only_reads(dump_dir, tmp_path):
    proc, _temp = containerd_proc(tmp_path)
    run = FakeRun(**{os.path.basename(params()["ctr_path"]): FakeCtr(images=[REF])})
    result = containerd.restore(params(checkpoint=dump_dir), True, run, proc=proc)
    assert verbs(run) == [("containers", "info"), ("images", "ls")]
    assert result["changed"] is True and result["command"][-1].endswith(
        f"containers restore --live --rw counter-2 {REF}"
    )


def test_restore_refuses_a_name_that_exists_and_changes_nothing(dump_dir):
    run = FakeRun(**{os.path.basename(params()["ctr_path"]): FakeCtr(existing=["counter-2"])})
    with pytest.raises(
        InvalidArgument,
        match=re.escape("a container counter-2 exists already in containerd namespace k8s.io"),
    ):
        containerd.restore(params(checkpoint=dump_dir), False, run)
    assert verbs(run) == [("containers", "info"), ("tasks", "ls")]


def test_a_second_restore_of_the_same_checkpoint_that_runs_is_done(dump_dir):
    fake = FakeCtr(existing=["counter-2"], images=[REF])
    fake.labels = {"strata.io/restored-from": REF}
    run = FakeRun(**{os.path.basename(params()["ctr_path"]): fake})
    result = containerd.restore(params(checkpoint=dump_dir), False, run)
    assert (result["changed"], result["restored"]["pid"]) == (False, 4242)
    assert verbs(run) == [("containers", "info"), ("tasks", "ls")]


def test_restore_refuses_a_criu_dump(dump_dir):
    with open(os.path.join(dump_dir, "manifest.json"), "w") as handle:
        json.dump({"target": {"runtime": "docker"}}, handle)
    with pytest.raises(
        BadCheckpoint, match=re.escape("dumped by CRIU from a docker target (method criu), not by containerd")
    ):
        containerd.restore(params(checkpoint=dump_dir), False, FakeRun())


def test_restore_refuses_a_dump_without_its_archive_or_not_the_one_it_wrote(dump_dir):
    archive = os.path.join(dump_dir, "checkpoint.tar")
    path = os.path.join(dump_dir, "manifest.json")
    with open(path) as handle:
        manifest = json.load(handle)
    manifest["sizes"] = {"images_bytes": os.path.getsize(archive) + 1}
    with open(path, "w") as handle:
        json.dump(manifest, handle)
    cut = (
        re.escape(f"{archive} has {os.path.getsize(archive)} bytes, the dump wrote ")
        + r"\d+: it is truncated"
    )
    with pytest.raises(BadCheckpoint, match=cut):
        containerd.restore(params(checkpoint=dump_dir), False, FakeRun())
    os.remove(archive)
    gone = re.escape(
        f"{dump_dir}: the exported checkpoint image checkpoint.tar is missing: the dump is incomplete"
    )
    with pytest.raises(BadCheckpoint, match=gone):
        containerd.restore(params(checkpoint=dump_dir), False, FakeRun())


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_dump_of_a_newer_criu_is_refused_before_any_change(dump_dir, tmp_path, check_mode):
    mf.write(dump_dir, dict(mf.load(dump_dir), criu={"path": "/usr/local/sbin/criu", "version": "4.1.1"}))
    proc, _temp = containerd_proc(tmp_path, criu=True, address="/run/c.sock")
    run = FakeRun(
        **{os.path.basename(params()["ctr_path"]): FakeCtr(images=[REF])},
        criu=lambda argv, **_kwargs: (0, "Version: 3.17.1\n", ""),
    )
    with pytest.raises(BadCheckpoint) as caught:
        containerd.restore(params(checkpoint=dump_dir), check_mode, run, proc=proc)
    assert (
        "was dumped by CRIU 4.1.1, and the CRIU that would restore it is older: /usr/bin/criu (CRIU 3.17.1)"
        in (caught.value.msg)
    )
    assert "the criu on containerd's PATH" in caught.value.msg
    assert verbs(run)[0] == ("containers", "info") and len(run.calls) == 2  # that check, then criu --version


@pytest.mark.parametrize("check_mode", [True, False])
def test_restore_refuses_a_damaged_archive_before_any_change(dump_dir, tmp_path, check_mode):
    proc, _temp = containerd_proc(tmp_path)
    archive = os.path.join(dump_dir, "checkpoint.tar")
    with open(archive, "r+b") as handle:
        handle.truncate(2000)
    run = FakeRun(**{os.path.basename(params()["ctr_path"]): FakeCtr()})
    damaged = re.escape(f"{archive} is not a whole containerd checkpoint image")
    with pytest.raises(BadCheckpoint, match=damaged):
        containerd.restore(params(checkpoint=dump_dir), check_mode, run, proc=proc)
    assert verbs(run) == [("containers", "info")]  # only looked whether new_container exists


@pytest.mark.parametrize("restore_fails", [True, False])
def test_a_failed_restore_leaves_nothing_behind(dump_dir, restore_fails, tmp_path):
    """The task's restore fails, or it returns without a running task: the new container goes, and
    so does containerd's copy of the checkpoint."""
    proc, temp = containerd_proc(tmp_path)
    fail = {("containers", "restore"): "criu failed: type RESTORE errno 0"} if restore_fails else {}
    fake = FakeCtr(images=[REF], fail=fail, statuses=("STOPPED",), copy_into=temp)
    run = FakeRun(**{os.path.basename(params()["ctr_path"]): fake})
    with pytest.raises(CriuError) as caught:
        containerd.restore(params(checkpoint=dump_dir), False, run, proc=proc)
    assert "counter-2 was removed again, nothing is left half-restored" in caught.value.msg
    assert verbs(run)[-5:] == [
        ("containers", "info"),
        ("tasks", "ls"),
        ("tasks", "rm"),
        ("containers", "rm"),
        ("containers", "info"),
    ]
    assert "counter-2" not in fake.existing
    assert os.listdir(temp) == []


@pytest.mark.parametrize(
    ("statuses", "fail", "removal"),
    [
        # runc refused the restore (a namespace gone): the task stays CREATED with pid 0, and
        # `ctr tasks rm --force` would wait forever for it to exit (seen on containerd 1.6.20)
        (("CREATED",), ("containers", "restore"), [("tasks", "ls"), ("tasks", "rm")]),
        # it ran, then a later step failed: killed, waited for, deleted
        (
            ("RUNNING", "RUNNING", "STOPPED"),
            ("containers", "label"),
            [("tasks", "ls"), ("tasks", "kill"), ("tasks", "ls"), ("tasks", "rm")],
        ),
    ],
)
def test_a_restored_task_is_removed_without_force(dump_dir, tmp_path, statuses, fail, removal):
    proc, _temp = containerd_proc(tmp_path)
    fake = FakeCtr(images=[REF], fail={fail: "failed"}, statuses=statuses)
    run = FakeRun(**{os.path.basename(params()["ctr_path"]): fake})
    with pytest.raises(CriuError, match="nothing is left half-restored"):
        containerd.restore(params(checkpoint=dump_dir), False, run, proc=proc)
    calls = verbs(run)
    cleanup = calls[calls.index(fail) + 1 :]
    assert cleanup == [("containers", "info"), *removal, ("containers", "rm"), ("containers", "info")]
    assert not any("--force" in argv for argv, _kwargs in run.calls)
    assert "counter-2" not in fake.existing


def test_a_task_that_does_not_stop_is_named_with_how_to_remove_it(dump_dir, tmp_path, monkeypatch):
    """SIGKILL not taken within the wait (a process in uninterruptible sleep): the failure says the
    container is still there and how to remove it, instead of claiming nothing is left."""
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr(containerd.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(containerd.time, "sleep", lambda _s: None)
    proc, _temp = containerd_proc(tmp_path)

    class Stuck(FakeCtr):
        def __call__(self, argv, **kwargs):
            if tuple(argv[5:7]) == ("containers", "rm"):  # containerd refuses: the task still runs
                return 1, "", "cannot delete a container with a running task"
            return super().__call__(argv, **kwargs)

    fake = Stuck(images=[REF], fail={("containers", "label"): "failed"}, statuses=("RUNNING",))
    run = FakeRun(**{os.path.basename(params()["ctr_path"]): fake})
    with pytest.raises(CriuError) as caught:
        containerd.restore(params(checkpoint=dump_dir), False, run, proc=proc)
    assert "counter-2 could not be removed (its task did not stop within 10 s of SIGKILL)" in caught.value.msg
    assert "tasks rm --force counter-2" in caught.value.msg
    assert "half-restored" not in caught.value.msg


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
    assert containerd.joined_namespaces({"Spec": SPEC}, links.__getitem__) == [
        {"type": "ipc", "path": "/proc/16189/ns/ipc", "id": "ipc:[4026532393]"},
        {"type": "network", "path": "/proc/16189/ns/net", "id": "net:[4026532323]"},
    ]
    assert containerd.joined_namespaces({}, links.__getitem__) == []


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
    dump_dir, readlink, said, check_mode
):
    joined = [{"type": "network", "path": "/proc/16189/ns/net", "id": "net:[4026532323]"}]
    pod = {"name": "validator-0", "namespace": "solana"}
    mf.write(dump_dir, dict(mf.load(dump_dir), pod=pod, joined_namespaces=joined))
    run = FakeRun(**{os.path.basename(params()["ctr_path"]): FakeCtr(images=[REF])})
    with pytest.raises(InvalidArgument) as caught:
        containerd.restore(params(checkpoint=dump_dir), check_mode, run, readlink=readlink)
    assert "the pod solana/validator-0 this container was dumped from is gone" in caught.value.msg
    assert said in caught.value.msg and "method=kubelet" in caught.value.msg
    assert verbs(run) == [("containers", "info")]  # only looked whether new_container exists


def test_restore_goes_on_while_the_pod_sandbox_is_there(dump_dir, tmp_path):
    joined = [{"type": "network", "path": "/proc/1/ns/net", "id": "net:[1]"}]
    mf.write(dump_dir, dict(mf.load(dump_dir), joined_namespaces=joined))
    proc, _temp = containerd_proc(tmp_path)
    run = FakeRun(**{os.path.basename(params()["ctr_path"]): FakeCtr(images=[REF])})
    result = containerd.restore(
        params(checkpoint=dump_dir), False, run, proc=proc, readlink={"/proc/1/ns/net": "net:[1]"}.__getitem__
    )
    assert result["restored"]["pid"] == 4242


def test_no_criu_on_containerds_path_is_named(dump_dir, tmp_path):
    proc, _temp = containerd_proc(tmp_path)
    fake = FakeCtr(images=[REF], fail={("containers", "restore"): NO_CRIU_ON_PATH})
    run = FakeRun(**{os.path.basename(params()["ctr_path"]): fake})
    with pytest.raises(CriuError, match="runs the criu on containerd's PATH and finds none"):
        containerd.restore(params(checkpoint=dump_dir), False, run, proc=proc)


def test_the_socket_comes_from_cri_endpoint_and_refs_are_valid():
    assert containerd.containerd_address({"cri_endpoint": "unix:///run/k3s/containerd/containerd.sock"}) == (
        "/run/k3s/containerd/containerd.sock"
    )
    assert containerd.containerd_address({}) == "/run/containerd/containerd.sock"
    assert containerd.image_ref("My_App.2", "20250101T000000.000Z") == (
        "strata.local/checkpoint/my-app-2:20250101T000000.000Z"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"pod": None}, "set pod"),
        ({"leave_running": False}, "set leave_running=true"),
        ({"images_dir": None}, "images_dir is needed"),
    ],
)
def test_dump_refusals_come_before_any_command(extra, message):
    run = FakeRun()
    dump_params = params(
        state="dumped", pod="p", namespace="ns", container="c", leave_running=True, images_dir="/tmp"
    )
    dump_params.update(extra)
    with pytest.raises(InvalidArgument, match=message):
        containerd.dump(dump_params, False, run)
    assert run.calls == []


def test_a_namespace_the_dump_could_not_read_is_not_judged():
    unread = [{"type": "network", "path": "/proc/16189/ns/net", "id": None}]
    assert containerd.namespaces_gone(unread, gone_link) == []
    assert containerd.pod_gone({"joined_namespaces": unread}, gone_link) is None


# The GPU path: a CUDA process in the pod's container is locked and checkpointed around containerd's
# checkpoint (runc's CRIU has no GPU support of its own) and thawed after it and after a restore.
def gpu_params(tool, images_dir, **extra):
    return params(
        state="dumped",
        pod="trainer-0",
        namespace="ml",
        container="trainer",
        leave_running=True,
        images_dir=images_dir,
        keep=0,
        cuda_checkpoint_path=tool,
        **extra,
    )


def steps_of(run):
    """The ctr verbs and cuda-checkpoint actions in call order (state reads left out)."""
    out = []
    for argv, _kwargs in run.calls:
        if "--action" in argv:
            out.append(("cuda-checkpoint", argv[argv.index("--action") + 1]))
        elif os.path.basename(argv[0]) == "ctr":
            out.append(tuple(argv[5:7]))
    return out


def test_a_cuda_container_is_frozen_only_around_containerds_checkpoint(gpu_host, tmp_path):
    gpus, tool, proc = gpu_host
    cuda = FakeCudaCheckpoint([4242], path=tool)
    fake = FakeCtr(existing=[CONTAINER_ID])
    run = FakeRun(ctr=fake, crictl=crictl, cuda_checkpoint=cuda)
    clock = iter([100.0, 102.5])
    result = containerd.dump(
        gpu_params(tool, str(tmp_path / "dumps")),
        False,
        run,
        gpus_dir=gpus,
        proc=proc,
        clock=lambda: next(clock),
    )
    assert steps_of(run) == [
        ("containers", "info"),
        ("images", "ls"),
        ("cuda-checkpoint", "lock"),
        ("cuda-checkpoint", "checkpoint"),
        ("containers", "checkpoint"),
        ("cuda-checkpoint", "restore"),
        ("cuda-checkpoint", "unlock"),
        ("images", "label"),
        ("images", "export"),
    ]
    gpu = result["gpu"]
    assert (gpu["path"], gpu["cuda_pids"], gpu["locked_s"]) == ("cuda-checkpoint", [4242], 2.5)
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
    gpus, tool, proc = gpu_host
    cuda = FakeCudaCheckpoint([4242], path=tool)
    fake = FakeCtr(existing=[CONTAINER_ID], fail={("containers", "checkpoint"): "criu failed: type DUMP"})
    run = FakeRun(ctr=fake, crictl=crictl, cuda_checkpoint=cuda)
    with pytest.raises(CriuError, match="containers checkpoint failed") as caught:
        containerd.dump(gpu_params(tool, str(tmp_path / "dumps")), False, run, gpus_dir=gpus, proc=proc)
    assert steps_of(run)[-4:] == [
        ("containers", "checkpoint"),
        ("cuda-checkpoint", "restore"),
        ("cuda-checkpoint", "unlock"),
        ("images", "rm"),
    ]
    assert cuda.states[4242] == "running"
    assert caught.value.msg.endswith("were removed, the container runs on")
    assert os.listdir(tmp_path / "dumps") == []


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


def plain_dump(images_dir, proc, run):
    dump_params = gpu_params(None, images_dir)
    return containerd.dump(dump_params, False, run, gpus_dir="/nonexistent", proc=proc)


def test_an_images_dir_without_room_for_the_memory_is_refused_before_the_checkpoint(plain_host, tmp_path):
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    run = FakeRun(ctr=FakeCtr(existing=[CONTAINER_ID]), crictl=crictl)
    with pytest.raises(NoSpace, match=r"has \d+ bytes free but the dump of the process tree writes about"):
        plain_dump(str(tmp_path / "dumps"), plain_host(free // 1024 + 1), run)
    assert steps_of(run) == [("containers", "info"), ("images", "ls")]
    assert os.listdir(tmp_path / "dumps") == []
    # the clean pages of file mappings (the libraries) are not written by a dump: not counted
    run = FakeRun(ctr=FakeCtr(existing=[CONTAINER_ID]), crictl=crictl)
    plain_dump(str(tmp_path / "dumps"), plain_host(64, file_kb=free // 1024 + 1), run)
    assert ("images", "export") in steps_of(run)


def test_a_full_images_dir_during_the_export_leaves_neither_the_dump_nor_the_image(plain_host, tmp_path):
    full = "ctr: failed to copy to tar: write /d/checkpoint.tar: no space left on device"
    run = FakeRun(ctr=FakeCtr(existing=[CONTAINER_ID], fail={("images", "export"): full}), crictl=crictl)
    with pytest.raises(NoSpace) as caught:
        plain_dump(str(tmp_path / "dumps"), plain_host(64), run)
    assert caught.value.msg.startswith(f"{tmp_path / 'dumps'} ran out of space while containerd's checkpoint")
    assert "free space there or point images_dir at a larger file system" in caught.value.msg
    assert steps_of(run)[-2:] == [("images", "export"), ("images", "rm")]
    assert os.listdir(tmp_path / "dumps") == []


def test_a_cuda_container_without_a_freezer_is_refused_before_anything(gpu_host, tmp_path):
    """No cuda-checkpoint and a libcuda without the checkpoint API: runc's CRIU would fail on (or
    silently leave out) the GPU state, so nothing is checkpointed, in check mode too."""
    gpus, _tool, proc = gpu_host
    run = FakeRun(ctr=FakeCtr(existing=[CONTAINER_ID]), crictl=crictl)
    dump_params = gpu_params(None, str(tmp_path / "dumps"), cuda_driver_library="/nonexistent/libcuda.so.1")
    for check_mode in (True, False):
        with pytest.raises(
            CriuError, match=re.escape("processes [4242] use CUDA but nothing here can checkpoint")
        ):
            containerd.dump(dump_params, check_mode, run, gpus_dir=gpus, proc=proc)
    assert ("containers", "checkpoint") not in steps_of(run)
    assert not os.path.exists(tmp_path / "dumps")


def gpu_dump(dump_dir, path="cuda-checkpoint"):
    mf.write(dump_dir, dict(mf.load(dump_dir), gpu={"path": path, "cuda_pids": [17]}))


def test_a_restored_cuda_container_is_restored_and_unlocked_on_the_gpu(dump_dir, gpu_host):
    gpus, tool, proc = gpu_host
    gpu_dump(dump_dir)
    cuda = FakeCudaCheckpoint([4242], path=tool)
    cuda.states[4242] = "checkpointed"  # as CRIU brings back a process dumped checkpointed
    run = FakeRun(ctr=FakeCtr(images=[REF]), cuda_checkpoint=cuda)
    result = containerd.restore(
        params(checkpoint=dump_dir, cuda_checkpoint_path=tool),
        False,
        run,
        proc=proc,
        gpus_dir=gpus,
    )
    assert steps_of(run)[-4:] == [
        ("tasks", "ls"),
        ("cuda-checkpoint", "restore"),
        ("cuda-checkpoint", "unlock"),
        ("containers", "label"),
    ]
    assert (result["gpu"]["path"], result["gpu"]["cuda_pids"]) == ("cuda-checkpoint", [4242])
    assert cuda.states[4242] == "running"


def test_a_restored_cuda_container_that_cannot_be_thawed_is_removed(dump_dir, gpu_host):
    gpus, tool, proc = gpu_host
    gpu_dump(dump_dir)
    cuda = FakeCudaCheckpoint([4242], path=tool, fail={"restore": (1, "CUDA_ERROR_OUT_OF_MEMORY\n")})
    cuda.states[4242] = "checkpointed"
    fake = FakeCtr(images=[REF], statuses=("RUNNING", "RUNNING", "STOPPED"))
    run = FakeRun(ctr=fake, cuda_checkpoint=cuda)
    restore_params = params(checkpoint=dump_dir, cuda_checkpoint_path=tool)
    with pytest.raises(CriuError) as caught:
        containerd.restore(restore_params, False, run, proc=proc, gpus_dir=gpus)
    assert "CUDA_ERROR_OUT_OF_MEMORY" in caught.value.msg
    assert "counter-2 was removed again, nothing is left half-restored" in caught.value.msg
    assert "counter-2" not in fake.existing


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_cuda_dump_is_not_restored_on_a_host_without_a_gpu(dump_dir, tmp_path, check_mode):
    gpu_dump(dump_dir)
    run = FakeRun(ctr=FakeCtr(images=[REF]))
    restore_params = params(checkpoint=dump_dir, cuda_checkpoint_path=None)
    no_gpus, proc = str(tmp_path / "no-gpus"), containerd_proc(tmp_path)[0]
    with pytest.raises(CriuError, match=r"holds CUDA state .* but this host has no NVIDIA GPU"):
        containerd.restore(restore_params, check_mode, run, gpus_dir=no_gpus, proc=proc)
    assert ("containers", "restore") not in steps_of(run) and ("images", "import") not in steps_of(run)


def test_a_dump_records_the_criu_of_the_containerd_that_took_it(tmp_path):
    containerd_proc(tmp_path, criu=True, pid="4100", address="/run/c.sock")
    proc, _temp = containerd_proc(tmp_path, b"PATH=/opt/bin\0", pid="4200", address="/run/other.sock")
    run = FakeRun(criu=lambda argv, **_kwargs: (0, "Version: 4.1.1\n", ""))
    assert containerd.dumping_criu(run, proc, "/run/c.sock") == {"path": "/usr/bin/criu", "version": "4.1.1"}
    # not told apart (no process found serving the address), and not the same CRIU: none recorded
    assert containerd.dumping_criu(run, proc, "/run/unknown.sock") == {}


@pytest.mark.parametrize("check_mode", [True, False])
def test_the_checkpoint_images_of_the_container_leave_the_store_first(plain_host, tmp_path, check_mode):
    """containerd drops the process from a checkpoint while an earlier one's image holds the
    container's spec: the images labelled with the container go first, whatever dump (name,
    images_dir) made or imported them; others' images stay."""
    mine = ["strata.local/checkpoint/trainer:1", "strata.local/checkpoint/by-another-name:2"]
    other = "strata.local/checkpoint/trainer:3"
    fake = FakeCtr(existing=[CONTAINER_ID], images=[*mine, other, "unlabelled"])
    for ref, container in zip([*mine, other], [CONTAINER_ID, CONTAINER_ID, "another-container"]):
        fake.checkpoints[ref] = (container, True)
        fake.image_labels[ref] = {containerd.CHECKPOINT_OF: container}
    run = FakeRun(ctr=fake, crictl=crictl)
    result = containerd.dump(
        gpu_params(None, str(tmp_path / "dumps")),
        check_mode,
        run,
        gpus_dir="/nonexistent",
        proc=plain_host(64),
    )
    releases = [f"images rm --sync {ref}" for ref in sorted(mine)]
    if check_mode:
        assert [c.split(" ", 5)[-1] for c in result["commands"][:2]] == releases
        assert "containers checkpoint" in result["commands"][2]
        assert fake.images == {*mine, other, "unlabelled"}
        return
    assert steps_of(run) == [
        ("containers", "info"),
        ("images", "ls"),
        ("images", "rm"),
        ("images", "rm"),
        ("containers", "checkpoint"),
        ("images", "label"),
        ("images", "export"),
    ]
    assert result["store_images_removed"] == sorted(mine)
    assert fake.images == {other, "unlabelled", result["image_ref"]}
    assert fake.image_labels[result["image_ref"]] == {containerd.CHECKPOINT_OF: CONTAINER_ID}
    assert leftovers.image_files(os.path.join(result["checkpoint_dir"], "checkpoint.tar"))[0]  # the process


def test_a_checkpoint_without_the_process_is_refused_and_removed(plain_host, tmp_path):
    """Where the spec blob is held by an image the module does not know of, containerd's checkpoint
    has no process: the dump fails naming why, and leaves neither its directory nor its image."""
    images = tmp_path / "dumps"
    fake = FakeCtr(existing=[CONTAINER_ID], images=["by-hand"])
    fake.checkpoints = {"by-hand": (CONTAINER_ID, True)}
    run = FakeRun(ctr=fake, crictl=crictl)
    with pytest.raises(
        BadCheckpoint, match="holds no process: its checkpoint image has no CRIU layer"
    ) as caught:
        containerd.dump(
            gpu_params(None, str(images)), False, run, gpus_dir="/nonexistent", proc=plain_host(64)
        )
    assert caught.value.msg.endswith("were removed, the container runs on")
    assert os.listdir(images) == []
    assert fake.images == {"by-hand"}
