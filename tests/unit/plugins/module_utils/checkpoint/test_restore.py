"""state=restored against a Docker engine that answers like dockerd (tests/unit/fakes/docker.py):
bind staging and its order, the refusals before anything is created, the GPU branches, and what
a failed start leaves behind (nothing)."""

import ctypes
import json
import os
import shutil

import pytest

from ansible_collections.strata.ops.plugins.module_utils import containers as ctr
from ansible_collections.strata.ops.plugins.module_utils import criu
from ansible_collections.strata.ops.plugins.module_utils import mounts as mnt
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import BadCheckpoint
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import manifest as mf
from ansible_collections.strata.ops.plugins.module_utils.checkpoint.restore import RESTORE_LABEL, Restorer
from ansible_collections.strata.ops.plugins.module_utils.checkpoint.staging import BindStaging
from ansible_collections.strata.ops.plugins.module_utils.common import InvalidArgument
from tests.unit.fakes.containerd import containerd_proc
from tests.unit.fakes.cuda import FakeCudaCheckpoint, build_libcuda
from tests.unit.fakes.docker import FakeDockerAPI
from tests.unit.fakes.run import FakeRun

# The host as a systemd host shows it: every mount shared; layer 4's ramdisk below the volume source.
HOST_MOUNTINFO = """\
25 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
36 25 0:40 / /srv/kind rw,relatime shared:10 - zfs lab/DATA/srv/kind rw
40 36 0:50 / /srv/kind/solana/ramdisk rw,relatime shared:20 - tmpfs tmpfs rw,size=65536k
41 25 254:0 /var/lib/app /var/lib/app rw,relatime shared:1 - ext4 /dev/vda rw
"""
SOURCE = "/srv/kind/solana"


def write_dump(tmp_path, gpu_path="none", runtime="docker", propagated=False, binds=(SOURCE + ":/data",)):
    dump = tmp_path / "images" / "app-20250101T000000.000Z"
    dump.mkdir(parents=True)
    external = [{"mount_point": "/data", "fstype": "zfs", "source": "lab/DATA", "root": "/solana"}]
    if propagated:
        external.append(
            {
                "mount_point": "/data/ramdisk",
                "fstype": "tmpfs",
                "source": "tmpfs",
                "root": "/",
                "propagated": True,
                "host_path": SOURCE + "/ramdisk",
            }
        )
    manifest = {
        "name": "app",
        "pid": 77,
        "target": {
            "runtime": runtime,
            "create": {"Image": "app:1", "Cmd": ["run"], "HostConfig": {"Binds": list(binds)}},
            "mount_points": ["/data"],
        },
        "mounts": {"external": external},
        "gpu": {"path": gpu_path},
    }
    (dump / "manifest.json").write_text(json.dumps(manifest))
    (dump / "pages-1.img").write_bytes(b"\0" * 16)
    return str(dump)


def params(tmp_path, checkpoint, **overrides):
    socket = tmp_path / "docker.sock"
    socket.touch()
    base = {
        "new_container": "app-restored",
        "checkpoint": checkpoint,
        "images_dir": None,
        "name": None,
        "docker_socket": str(socket),
        "criu_plugin_dir": str(tmp_path / "criu-plugins"),
        "cuda_checkpoint_path": None,
        "cuda_driver_library": str(tmp_path / "no-libcuda.so.1"),
    }
    base.update(overrides)
    return base


def mount_run(mounted, fail=None):
    """mount/umount as a run_command over a set of mount points."""

    def mount(argv, **_kwargs):
        if fail and fail in argv:
            return 32, "", f"mount: {argv[-1]}: permission denied"
        if argv[1] == "--rbind":
            mounted.add(argv[3])
        return 0, "", ""

    def umount(argv, **_kwargs):
        mounted.discard(argv[-1])
        return 0, "", ""

    return FakeRun(mount=mount, umount=umount)


def restorer(
    tmp_path,
    checkpoint,
    docker,
    *,
    run=None,
    check_mode=False,
    gpus_dir=None,
    host=HOST_MOUNTINFO,
    criu_says=None,
    **overrides,
):
    """A Restorer on fakes; ``criu_says``: the ``criu --version`` of a criu on containerd's PATH."""
    mounted = set()
    run = run or mount_run(mounted)
    if criu_says:
        run.handlers["criu"] = lambda argv, **_kwargs: (0, criu_says, "")

    def read_mountinfo():
        extra = "".join(
            f"{60 + i} 36 0:50 / {point} rw shared:30 - tmpfs tmpfs rw\n"
            for i, point in enumerate(sorted(mounted))
        )
        return mnt.parse_mountinfo(host + extra)

    staging = BindStaging(run, read_mountinfo, root=str(tmp_path / "staging"))
    proc, _temp = containerd_proc(tmp_path, criu=bool(criu_says))
    worker = Restorer(
        params(tmp_path, checkpoint, **overrides),
        check_mode,
        run,
        docker=docker,
        staging=staging,
        read_mountinfo=read_mountinfo,
        gpus_dir=gpus_dir or str(tmp_path / "no-gpus"),
        proc=proc,
    )
    return worker, run, mounted


def test_restore_binds_a_shared_source_through_a_slave_view_first(tmp_path):
    docker = FakeDockerAPI(tmp_path / "docker", containerd_tmp=tmp_path / "host" / "tmp")
    checkpoint = write_dump(tmp_path, binds=(SOURCE + ":/data", "/var/lib/app:/app"))
    worker, run, mounted = restorer(tmp_path, checkpoint, docker)
    result = worker.run_state()
    staging = str(tmp_path / "staging" / "app-restored" / "0")
    # only the source with a shared mount below it is staged, and before the container exists
    assert result["staged_binds"] == [
        {"source": SOURCE, "staging": staging, "submounts": [SOURCE + "/ramdisk"]}
    ]
    assert [argv for argv, _kwargs in run.calls] == [
        ["mount", "--rbind", SOURCE, staging],
        ["mount", "--make-rslave", staging],
    ]
    create = next(call for call in docker.calls if call[0] == "create")
    assert create[2]["HostConfig"]["Binds"] == [staging + ":/data", "/var/lib/app:/app"]
    assert create[2]["Labels"][RESTORE_LABEL] == checkpoint
    assert docker.verbs()[-3:] == ["create", "start", "inspect"]
    # dockerd read the dump through hard links, removed once it started; its containerd's copy went
    dump_inodes = {name: os.stat(os.path.join(checkpoint, name)).st_ino for name in os.listdir(checkpoint)}
    assert docker.checkpoint_inodes == dump_inodes
    copied = os.path.join(docker.root, "containers", result["restored"]["container_id"], "checkpoints")
    assert os.listdir(copied) == []
    assert result["containerd_copy_removed"].startswith("/tmp/ctrd-checkpoint")
    assert os.listdir(tmp_path / "host" / "tmp") == []
    assert result["restored"] == {
        "container_id": result["restored"]["container_id"],
        "name": "app-restored",
        "pid": 4242,
        "running": True,
        "checkpoint": checkpoint,
    }
    assert staging in mounted  # the view stays while the container may be restarted


def dump_of_criu(tmp_path, version):
    """write_dump's dump, recording the CRIU release that took it."""
    checkpoint = write_dump(tmp_path)
    mf.write(checkpoint, dict(mf.load(checkpoint), criu={"path": "/usr/local/sbin/criu", "version": version}))
    return checkpoint


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_dump_of_a_newer_criu_is_refused_before_anything_is_created(tmp_path, check_mode):
    docker = FakeDockerAPI(tmp_path / "docker")
    checkpoint = dump_of_criu(tmp_path, "4.1.1")
    worker, run, mounted = restorer(
        tmp_path, checkpoint, docker, check_mode=check_mode, criu_says="Version: 3.17\n"
    )
    with pytest.raises(BadCheckpoint) as caught:
        worker.run_state()
    assert "dumped by CRIU 4.1.1, and the CRIU that would restore it is older: /usr/bin/criu (CRIU 3.17)" in (
        caught.value.msg
    )
    assert "the criu on dockerd's containerd's PATH" in caught.value.msg
    assert [argv[0].rsplit("/", 1)[-1] for argv, _kwargs in run.calls] == ["criu"]  # no mount, no staging
    assert "create" not in docker.verbs() and mounted == set()


def test_a_dump_restores_where_containerds_criu_is_of_the_same_release(tmp_path):
    docker = FakeDockerAPI(tmp_path / "docker")
    checkpoint = dump_of_criu(tmp_path, "4.1.1")
    worker, _run, _mounted = restorer(
        tmp_path, checkpoint, docker, check_mode=True, criu_says="Version: 4.1\n"
    )
    assert worker.run_state()["changed"] is True


def test_check_mode_plans_the_staging_and_creates_nothing(tmp_path):
    docker = FakeDockerAPI(tmp_path / "docker")
    worker, run, _mounted = restorer(tmp_path, write_dump(tmp_path), docker, check_mode=True)
    result = worker.run_state()
    assert result["changed"] is True
    assert result["command"][0].startswith(f"mount --rbind {SOURCE} ")
    assert result["command"][-1] == "docker start --checkpoint app-20250101T000000.000Z app-restored"
    assert run.calls == [] and "create" not in docker.verbs()
    assert not os.path.exists(tmp_path / "staging")


def test_a_failed_start_removes_the_container_and_takes_the_views_down(tmp_path):
    containerd_tmp = tmp_path / "host" / "tmp"
    docker = FakeDockerAPI(
        tmp_path / "docker", start_error="criu failed: type RESTORE errno 0", containerd_tmp=containerd_tmp
    )
    worker, run, mounted = restorer(tmp_path, write_dump(tmp_path), docker)
    with pytest.raises(ctr.ContainerError, match=r"restoring .* into app-restored failed: criu failed"):
        worker.run_state()
    assert os.listdir(containerd_tmp) == []  # containerd's copy, kept by containerd, went too
    assert "app-restored" not in docker.containers
    assert docker.verbs()[-1] == "remove"
    assert mounted == set()
    assert run.calls[-1][0][:2] == ["umount", "-R"]


def test_a_failed_bind_restores_nothing(tmp_path):
    docker = FakeDockerAPI(tmp_path / "docker")
    mounted = set()
    run = mount_run(mounted, fail="--make-rslave")
    worker, _run, _mounted = restorer(tmp_path, write_dump(tmp_path), docker, run=run)
    with pytest.raises(ctr.ContainerError, match=r"mount --make-rslave .* failed .*nothing was restored"):
        worker.run_state()
    assert "create" not in docker.verbs()


def test_a_later_restore_takes_down_the_views_of_containers_that_are_gone(tmp_path):
    docker = FakeDockerAPI(tmp_path / "docker")
    checkpoint = write_dump(tmp_path)
    worker, run, mounted = restorer(tmp_path, checkpoint, docker)
    worker.run_state()
    first_view = str(tmp_path / "staging" / "app-restored" / "0")
    docker.remove("app-restored")
    worker.p["new_container"] = "app-second"
    worker.run_state()
    assert first_view not in mounted
    assert ["umount", "-R", first_view] in [argv for argv, _kwargs in run.calls]
    assert not os.path.exists(os.path.dirname(first_view))
    assert str(tmp_path / "staging" / "app-second" / "0") in mounted


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        (
            "cri-dump",
            BadCheckpoint,
            "is a dump of a cri target; method=criu restores Docker container dumps only",
        ),
        ("no-manifest", BadCheckpoint, "is not a pod_checkpoint dump (manifest.json"),
        (
            "ramdisk-gone",
            BadCheckpoint,
            "but nothing is mounted at /srv/kind/solana/ramdisk: mount it there first",
        ),
        ("not-experimental", ctr.RuntimeUnavailable, "start dockerd with --experimental"),
        ("name-taken", ctr.ContainerConflict, "a container named app-restored already exists (exited"),
        ("no-new-container", InvalidArgument, "state=restored needs new_container"),
        (
            "gpu-dump-no-gpu",
            criu.GpuError,
            "holds CUDA state (taken by cuda-driver-api) but this host has no NVIDIA GPU",
        ),
    ],
)
def test_refusals_come_before_anything_is_created(tmp_path, case, error, message):
    docker = FakeDockerAPI(tmp_path / "docker", experimental=case != "not-experimental")
    checkpoint = write_dump(
        tmp_path,
        runtime="cri" if case == "cri-dump" else "docker",
        propagated=case == "ramdisk-gone",
        gpu_path="cuda-driver-api" if case == "gpu-dump-no-gpu" else "none",
    )
    if case == "no-manifest":
        os.remove(os.path.join(checkpoint, "manifest.json"))
    if case == "name-taken":
        docker.containers["app-restored"] = {
            "Id": "f" * 64,
            "Config": {"Labels": {}},
            "State": {"Status": "exited"},
        }
    overrides = {"new_container": None} if case == "no-new-container" else {}
    # after a reboot the ramdisk is not mounted on the host any more
    host = "".join(line + "\n" for line in HOST_MOUNTINFO.splitlines() if "ramdisk" not in line)
    worker, run, _mounted = restorer(
        tmp_path, checkpoint, docker, host=host if case == "ramdisk-gone" else HOST_MOUNTINFO, **overrides
    )
    with pytest.raises(error) as info:
        worker.run_state()
    assert message in str(info.value)
    assert "create" not in docker.verbs() and run.calls == []


def test_a_rerun_with_the_same_dump_is_done(tmp_path):
    docker = FakeDockerAPI(tmp_path / "docker")
    checkpoint = write_dump(tmp_path)
    docker.containers["app-restored"] = {
        "Id": "e" * 64,
        "Config": {"Labels": {RESTORE_LABEL: checkpoint}},
        "State": {"Running": True, "Pid": 9},
    }
    worker, run, _mounted = restorer(tmp_path, checkpoint, docker)
    result = worker.run_state()
    assert result["changed"] is False and result["restored"]["pid"] == 9
    assert run.calls == [] and "create" not in docker.verbs()


@pytest.fixture
def cuda_process(tmp_path):
    """This test process maps a library named libcuda.so.1, so the module counts it as a CUDA process."""
    lib = tmp_path / "cuda" / "libcuda.so.1"
    lib.parent.mkdir()
    shutil.copy(build_libcuda(tmp_path / "cuda"), lib)
    ctypes.CDLL(str(lib))
    gpus = tmp_path / "gpus"
    gpus.mkdir()
    return str(gpus)


def test_a_driver_api_dump_is_restored_then_unlocked_after_the_start(tmp_path, cuda_process):
    docker = FakeDockerAPI(tmp_path / "docker", restored_pid=os.getpid())
    cuda = FakeCudaCheckpoint([os.getpid()])
    cuda.states[os.getpid()] = "checkpointed"  # as CRIU restores a process dumped checkpointed
    mounted = set()
    run = mount_run(mounted)
    running_at_thaw = []

    def cuda_after_start(argv, **kwargs):
        if "--action" in argv:
            running_at_thaw.append(docker.containers["app-restored"]["State"]["Running"])
        return cuda(argv, **kwargs)

    run.handlers["cuda-checkpoint"] = cuda_after_start
    tool = tmp_path / "bin" / "cuda-checkpoint"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    worker, _run, _mounted = restorer(
        tmp_path,
        write_dump(tmp_path, gpu_path="cuda-driver-api"),
        docker,
        run=run,
        gpus_dir=cuda_process,
        cuda_checkpoint_path=str(tool),
    )
    result = worker.run_state()
    assert result["gpu"]["cuda_pids"] == [os.getpid()]
    assert [a for a, _pid in cuda.actions()] == ["restore", "unlock"]
    assert cuda.states[os.getpid()] == "running"
    # the thaw comes after the container started from the checkpoint
    assert running_at_thaw == [True, True]


def test_a_plugin_dump_needs_the_plugin_and_the_binary_here(tmp_path, cuda_process):
    docker = FakeDockerAPI(tmp_path / "docker")
    checkpoint = write_dump(tmp_path, gpu_path="criu-cuda-plugin")
    worker, _run, _mounted = restorer(tmp_path, checkpoint, docker, gpus_dir=cuda_process)
    with pytest.raises(criu.GpuError, match="runs cuda-checkpoint on restore too: it is not installed here"):
        worker.run_state()
    tool = tmp_path / "bin" / "cuda-checkpoint"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    worker.p["cuda_checkpoint_path"] = str(tool)
    with pytest.raises(criu.GpuError, match=r"cuda_plugin\.so is missing"):
        worker.run_state()
    assert "create" not in docker.verbs()
