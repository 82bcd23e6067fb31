"""strata.ops.pod_checkpoint against the real Docker engine, containerd's CRI and CRIU 4.x.

A container runs a counter that lives only in memory (printed to stdout every 0.2 s) with a
host directory bind-mounted at /data. The module dumps it with the container left running,
with options built from its mountinfo, checks the images with crit, then restores the dump
into a NEW container, whose counter goes on from the dumped value. A pod's container is found
by the kubelet's labels, among Docker containers and through crictl on a real CRI runtime
(containerd). Then the faults, one test each.

Needs: dockerd (with --experimental for the restore tests), CRIU >= 4.0 and crit (STRATA_CRIU,
STRATA_CRIT, default ~/.cache/strata-ops/bin/{criu,crit} as tests/testbed/up installs them),
the image STRATA_CKPT_IMAGE (default strata-ops-host:latest, which has python3), the CRI
runtime of tests/testbed/cri/start with its crictl, root. Without them the tests fail when
CI=true and are skipped otherwise. Containers are named strata-ckpt-<random> and removed.
"""

import contextlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from types import SimpleNamespace

import cri_pod as cri_pod_lib  # tests/testbed, on sys.path by conftest
import pytest
from testbed_paths import containerd_of

from ansible_collections.strata.ops.plugins.module_utils.checkpoint import containerd, leftovers
from ansible_collections.strata.ops.plugins.module_utils.checkpoint import manifest as mf

from . import conftest
from .conftest import TESTBED_BIN, adhoc_result, assert_clean_failure

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CRIU = os.environ.get("STRATA_CRIU", os.path.join(TESTBED_BIN, "criu"))
CRIT = os.environ.get("STRATA_CRIT", os.path.join(TESTBED_BIN, "crit"))
GPU_HERE = os.path.isdir("/proc/driver/nvidia/gpus")
IMAGE = os.environ.get("STRATA_CKPT_IMAGE", "strata-ops-host:latest")
COUNTER = "import time\nn = 0\nwhile True:\n    n += 1\n    print(n, flush=True)\n    time.sleep(0.2)\n"

pytestmark = pytest.mark.needs("criu")


def _missing(reason):
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true and the checkpoint test bed is missing: " + reason)
    pytest.skip(reason)


def run_cli(argv, check=True):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("{} failed: {}".format(" ".join(argv), proc.stderr))
    return proc


def docker(*args, check=True):
    return run_cli(["docker", *args], check)


@pytest.fixture(scope="module")
def testbed():
    if os.geteuid() != 0:
        _missing("CRIU and the Docker root directory need root")
    if not shutil.which("docker"):
        _missing("the docker CLI is not installed (tests/testbed/up installs docker.io)")
    info = docker("info", "--format", "{{json .}}", check=False)
    if info.returncode != 0:
        _missing("dockerd does not answer: " + info.stderr.strip())
    if not os.access(CRIU, os.X_OK):
        _missing(f"no CRIU at {CRIU} (tests/testbed/up installs CRIU 4.x there; or set STRATA_CRIU)")
    version = subprocess.run([CRIU, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"Version: (\d+)", version)
    if not match or int(match.group(1)) < 4:
        _missing(f"{CRIU} is not CRIU >= 4.0: {version.strip()!r}")
    crit = subprocess.run([CRIT, "--version"], capture_output=True, text=True, check=False)
    if crit.returncode != 0:
        _missing(f"crit does not run at {CRIT} (tests/testbed/up installs it; or set STRATA_CRIT)")
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        _missing(f"image {IMAGE} is missing (tests/testbed/up image builds it; or set STRATA_CKPT_IMAGE)")
    return json.loads(info.stdout)


@pytest.fixture(scope="module")
def experimental(testbed):
    if not testbed.get("ExperimentalBuild"):
        _missing("dockerd runs without --experimental: it cannot start a container from a checkpoint")


def run_module(args, check_mode=False, path_prefix=None, module="pod_checkpoint"):
    env = dict(os.environ)
    if path_prefix:
        env["PATH"] = path_prefix + os.pathsep + env.get("PATH", "")
    return conftest.run_module(module, args, check_mode=check_mode, env=env)


def unique():
    return f"strata-ckpt-{uuid.uuid4().hex[:8]}"


def criu_version(criu=CRIU):
    """``criu --version``'s release, as "4.1.1"."""
    out = subprocess.run([criu, "--version"], capture_output=True, text=True, check=True).stdout
    return re.search(r"Version: (\S+)", out).group(1)


def last_count(name):
    lines = docker("logs", name).stdout.split()
    return int(lines[-1]) if lines else 0


def wait_until_counted(read_count, minimum, what, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if read_count() >= minimum:
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not count to {minimum} (last: {read_count()})")


def wait_count(name, minimum):
    wait_until_counted(lambda: last_count(name), minimum, f"container {name}")


@pytest.fixture
def names():
    made = []
    yield made
    for name in made:
        docker("rm", "-f", name, check=False)


@pytest.fixture
def counter(testbed, tmp_path, names):
    """A running container counting in memory, with a host directory bind-mounted at /data."""
    name = unique()
    data = tmp_path / "hostdata"
    data.mkdir()
    (data / "marker").write_text("host side\n")
    names.append(name)
    docker("run", "-d", "--name", name, "-v", f"{data}:/data", IMAGE, "python3", "-u", "-c", COUNTER)
    wait_count(name, 3)
    return {"name": name, "data": str(data)}


def assert_crit_checked(result):
    """crit decoded the stats (agreeing with the built-in reader) and the image set; no GPU here."""
    manifest = result["manifest"]
    assert manifest["stats_source"] == "crit"
    assert manifest["stats_check"] == "match"
    assert manifest["crit_check"]["checked"] is True
    assert manifest["crit_check"]["tasks"] >= 1
    assert manifest["crit_check"]["plugins"] == []  # no CRIU plugin took part
    assert result["gpu"]["taken"] is False
    if not GPU_HERE:
        assert "GPU path was not taken" in result["gpu"]["reason"]


def test_dump_leaves_running_and_restores_into_new_container(counter, tmp_path, names, experimental):
    images = tmp_path / "images"
    args = {"container": counter["name"], "images_dir": str(images), "criu_path": CRIU, "crit_path": CRIT}
    before = last_count(counter["name"])
    result = run_module(args)
    after = last_count(counter["name"])
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    manifest = result["manifest"]
    dump_dir = result["checkpoint_dir"]
    assert os.path.dirname(dump_dir) == str(images)
    assert re.match(re.escape(counter["name"]) + r"-\d{8}T\d{6}\.\d{3}Z$", os.path.basename(dump_dir))
    with open(os.path.join(dump_dir, "manifest.json")) as handle:
        assert json.load(handle) == manifest

    # options from facts: the bind mount is external, keyed by its mount point, from the host dir
    external = {m["mount_point"]: m for m in manifest["mounts"]["external"]}
    assert external["/data"]["root"] == counter["data"]
    assert "mnt[/data]:/data" in result["command"]
    assert "mnt[/etc/hosts]:/etc/hosts" in result["command"]
    assert "--leave-running" in result["command"]
    assert "--manage-cgroups" in result["command"]
    assert "/proc" in [m["mount_point"] for m in manifest["mounts"]["internal"]]
    # manifest contents
    inspect = json.loads(docker("inspect", counter["name"]).stdout)[0]
    assert manifest["container_id"] == inspect["Id"]
    assert manifest["pid"] == inspect["State"]["Pid"]
    assert manifest["image_id"] == inspect["Image"]
    assert manifest["criu"]["version"].startswith("4.")
    assert manifest["stats"]["pages_written"] > 0
    assert manifest["stats"]["frozen_time_us"] > 0
    assert manifest["stats"]["memwrite_time_us"] is not None
    assert manifest["sizes"]["pages_bytes"] == manifest["stats"]["pages_written_bytes"]
    assert_crit_checked(result)

    # left running: the original keeps counting
    wait_count(counter["name"], after + 3)

    # restore into a NEW container: the counter goes on from the dumped value
    new = unique()
    names.append(new)
    restored = run_module({"state": "restored", "checkpoint": dump_dir, "new_container": new})
    assert restored.get("failed") is not True, restored
    assert restored["changed"] is True
    new_inspect = json.loads(docker("inspect", new).stdout)[0]
    assert new_inspect["State"]["Running"] is True
    assert restored["restored"]["pid"] == new_inspect["State"]["Pid"]
    assert restored["restored"]["pid"] != manifest["pid"]
    assert restored["gpu"]["path"] == "none"
    wait_count(new, 1)
    first = int(docker("logs", new).stdout.split()[0])
    assert before < first <= after + 2, (before, first, after)
    wait_count(new, first + 3)  # and it keeps counting
    assert docker("exec", new, "cat", "/data/marker").stdout == "host side\n"
    assert_no_docker_copy(restored, new_inspect["Id"], dump_dir)

    # same name, same checkpoint, running: nothing to do
    again = run_module({"state": "restored", "checkpoint": dump_dir, "new_container": new})
    assert again.get("failed") is not True, again
    assert again["changed"] is False


def assert_no_containerd_copy(restored, files):
    """containerd extracts the checkpoint into its temporary directory for every restore and keeps
    it (leftovers.py): the restore removed its copy, and no copy of this checkpoint is left."""
    removed = restored["containerd_copy_removed"]
    assert removed and os.path.basename(removed).startswith(leftovers.PREFIX), restored
    assert not os.path.exists(removed)  # containerd runs in this mount namespace here
    copies = leftovers.copies_in(leftovers.containerd_temp_dirs())
    assert [c for c in copies if leftovers.dir_files(c) == files] == []


def assert_no_docker_copy(restored, container_id, dump_dir):
    """Neither the dump's copy in Docker's checkpoints/ nor the one dockerd's containerd extracts."""
    root = json.loads(docker("info", "--format", "{{json .}}").stdout)["DockerRootDir"]
    checkpoints = os.path.join(root, "containers", container_id, "checkpoints")
    assert not os.path.exists(os.path.join(checkpoints, os.path.basename(dump_dir)))
    assert_no_containerd_copy(restored, leftovers.dir_files(dump_dir))


def mount(*args):
    run_cli(["mount", *args])


def host_mount_points():
    with open("/proc/self/mountinfo") as handle:
        return [line.split()[4] for line in handle]


@pytest.fixture
def shared_volume(testbed, tmp_path):
    """A shared host directory (as every mount is on a systemd host), the source of a
    HostToContainer volume; the test mounts a tmpfs below it later, as layer 4 mounts its ramdisk."""
    top = tmp_path / "cluster-root"
    top.mkdir()
    mount("--bind", str(top), str(top))
    mount("--make-shared", str(top))
    try:
        yield top
    finally:
        subprocess.run(["umount", "-R", "-l", str(top)], check=False)


def test_restore_of_a_hosttocontainer_volume_keeps_the_hosts_mounts(
    shared_volume, tmp_path, names, experimental
):
    name = unique()
    names.append(name)
    docker(
        "run", "-d", "--name", name, "-v", f"{shared_volume}:/x:rslave", IMAGE, "python3", "-u", "-c", COUNTER
    )
    ramdisk = shared_volume / "ramdisk"
    ramdisk.mkdir()
    mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(ramdisk))  # after the start: propagated in
    (ramdisk / "accounts").write_text("ledger state\n")
    wait_count(name, 3)

    dumped = run_module(
        {"container": name, "images_dir": str(tmp_path / "images"), "criu_path": CRIU, "crit_path": CRIT},
    )
    assert dumped.get("failed") is not True, dumped  # CRIU alone: "has unreachable sharing"
    assert "mnt[/x/ramdisk]:/x/ramdisk" in dumped["command"]
    propagated = {
        m["mount_point"]: m for m in dumped["manifest"]["mounts"]["external"] if m.get("propagated")
    }
    assert propagated["/x/ramdisk"]["host_path"] == str(ramdisk)
    after = last_count(name)

    new = unique()
    names.append(new)
    # the ramdisk not mounted again (a host after a reboot): refused, nothing created
    subprocess.run(["umount", str(ramdisk)], check=True)
    refused = run_module({"state": "restored", "checkpoint": dumped["checkpoint_dir"], "new_container": new})
    assert refused.get("failed") is True
    assert f"nothing is mounted at {ramdisk}" in refused["msg"]
    assert docker("inspect", new, check=False).returncode != 0
    mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(ramdisk))
    (ramdisk / "accounts").write_text("ledger state\n")

    again = unique()
    names.append(again)
    stagings = [f"/run/strata-ops/restore/{name}" for name in (new, again)]
    try:
        restored = run_module(
            {"state": "restored", "checkpoint": dumped["checkpoint_dir"], "new_container": new}
        )
        assert restored.get("failed") is not True, restored
        # runc's restore unmounts the host's ramdisk unless the source is bound through a slave view
        assert str(ramdisk) in host_mount_points()
        assert (ramdisk / "accounts").read_text() == "ledger state\n"
        assert restored["staged_binds"] == [
            {"source": str(shared_volume), "staging": f"{stagings[0]}/0", "submounts": [str(ramdisk)]}
        ]
        assert docker("exec", new, "cat", "/x/ramdisk/accounts").stdout == "ledger state\n"
        wait_count(new, 1)
        first = int(docker("logs", new).stdout.split()[0])
        assert first <= after + 2, (first, after)

        # once that container is gone, the next restore takes its view down
        docker("rm", "-f", new)
        second = run_module(
            {"state": "restored", "checkpoint": dumped["checkpoint_dir"], "new_container": again}
        )
        assert second.get("failed") is not True, second
        assert f"{stagings[0]}/0" not in host_mount_points()
        assert not os.path.exists(stagings[0])
        assert f"{stagings[1]}/0" in host_mount_points()
        assert str(ramdisk) in host_mount_points()
    finally:
        for name, staging in zip((new, again), stagings):
            docker("rm", "-f", name, check=False)
            # never rmtree a staging view: it is the host's volume
            subprocess.run(["umount", "-R", "-l", f"{staging}/0"], check=False, capture_output=True)
            for directory in (f"{staging}/0", staging):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)


def test_check_mode_reports_command_and_writes_nothing(counter, tmp_path):
    images = tmp_path / "images"
    args = {
        "container": counter["name"],
        "images_dir": str(images),
        "criu_path": CRIU,
        "tcp_established": True,
    }
    result = run_module(args, check_mode=True)
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["command"][:2] == [CRIU, "dump"]
    assert "--tcp-established" in result["command"]
    assert "mnt[/data]:/data" in result["command"]
    assert "would run" in result["msg"]
    assert not images.exists()


def test_keep_prunes_old_dumps(counter, tmp_path):
    images = tmp_path / "images"
    args = {"container": counter["name"], "images_dir": str(images), "criu_path": CRIU, "keep": 2}
    dirs = []
    for _attempt in range(3):
        result = run_module(args)
        assert result.get("failed") is not True, result
        dirs.append(result["checkpoint_dir"])
    assert result["pruned"] == [dirs[0]]
    assert sorted(str(images / d) for d in os.listdir(images)) == dirs[1:]


def dirty_tracking_here():
    probe = [CRIU, "check", "--feature", "mem_dirty_track"]
    return subprocess.run(probe, capture_output=True, text=True, check=False).returncode == 0


def test_pre_dumps_copy_memory_first_or_are_refused_where_the_kernel_cannot_track_it(counter, tmp_path):
    """Iterative dump: two pre-dumps, then a final dump of the dirtied pages. On a kernel without
    soft-dirty bits (the test machine's: CRIU says "Dirty tracking is OFF") the module refuses
    before anything is written, in check mode too, and the container runs on."""
    images = tmp_path / "images"
    args = {"container": counter["name"], "images_dir": str(images), "criu_path": CRIU, "pre_dumps": 2}
    if not dirty_tracking_here():
        for check_mode in (True, False):
            result = run_module(args, check_mode=check_mode)
            assert result.get("failed") is True, result
            assert result["error"] == "PreDumpUnsupported"
            assert "Dirty tracking is OFF" in result["msg"] and "pre_dumps: 0" in result["msg"]
            assert not images.exists() or os.listdir(images) == []
        assert docker("inspect", "-f", "{{.State.Running}}", counter["name"]).stdout.strip() == "true"
        return
    planned = run_module(args, check_mode=True)
    assert [argv[1] for argv in planned["pre_dump_commands"]] == ["pre-dump", "pre-dump"]
    assert "--prev-images-dir" in planned["command"] and not images.exists()
    result = run_module(args)
    assert result.get("failed") is not True, result
    dump_dir = result["checkpoint_dir"]
    assert os.readlink(os.path.join(dump_dir, "parent")) == "pre-2"
    assert os.readlink(os.path.join(dump_dir, "pre-2", "parent")) == "../pre-1"
    assert len(result["manifest"]["pre_dumps"]) == 2
    assert result["frozen_s"] == result["manifest"]["stats"]["frozen_s"] > 0


def kubelet_labels(pod, container):
    return cri_pod_lib.kubelet_labels(pod, "strata-test", container)


def test_pod_container_found_among_docker_containers_by_kubelet_labels(testbed, tmp_path, names):
    # What dockershim / cri-dockerd leave: a pause ("POD") container and the workload, both
    # labelled with the pod; the pause one never holds the workload.
    pod = unique()
    for container, command in (("POD", ["sleep", "600"]), ("counter", ["python3", "-u", "-c", COUNTER])):
        name = f"{pod}-{container.lower()}"
        names.append(name)
        labels = [arg for k, v in kubelet_labels(pod, container).items() for arg in ("--label", f"{k}={v}")]
        docker("run", "-d", "--name", name, *labels, IMAGE, *command)
    wait_count(f"{pod}-counter", 2)
    args = {
        "pod": pod,
        "namespace": "strata-test",
        "runtime": "docker",
        "images_dir": str(tmp_path / "images"),
        "criu_path": CRIU,
        "crit_path": CRIT,
    }
    result = run_module(args)
    assert result.get("failed") is not True, result
    inspect = json.loads(docker("inspect", f"{pod}-counter").stdout)[0]
    assert result["manifest"]["container_id"] == inspect["Id"]
    assert result["manifest"]["pod"] == {"name": pod, "namespace": "strata-test", "container": None}
    assert os.path.basename(result["checkpoint_dir"]).startswith(f"strata-test-{pod}-")
    assert_crit_checked(result)


def crictl(cri, *args, check=True):
    try:
        return cri_pod_lib.crictl(*args, check=check, endpoint=cri.endpoint)
    except RuntimeError as exc:
        raise AssertionError(str(exc)) from exc


@pytest.fixture(scope="module", params=sorted(cri_pod_lib.CRI_ENDPOINTS), ids=lambda r: f"containerd-{r}")
def cri(testbed, request):
    """One of the test bed's containerd CRI runtimes: 1.6 as Debian bookworm ships it, 1.7 as trixie
    does (tests/testbed/cri/start 1.7), each with its own ctr, as k3s and MicroK8s bring theirs."""
    endpoint = cri_pod_lib.CRI_ENDPOINTS[request.param]
    why = cri_pod_lib.missing(endpoint)
    if why:
        _missing(why)
    return SimpleNamespace(release=request.param, endpoint=endpoint, ctr=containerd_of(request.param).ctr)


@contextlib.contextmanager
def counter_in_pod(tmp_path, pod, cri, **options):
    """The container "counter" counting in pod strata-test/``pod`` on ``cri`` (cri_pod.running_pod's
    ``options``)."""
    with cri_pod_lib.running_pod(
        str(tmp_path), pod, "strata-test", "counter", ["count"], endpoint=cri.endpoint, **options
    ) as made:
        yield made


@pytest.fixture(params=["pod-network", "host-network"])
def cri_pod(cri, tmp_path, request):
    """A pod on containerd's CRI, made as the kubelet makes one (tests/testbed/cri_pod.py), whose
    container "counter" counts: the pod's own network namespace or the host's (hostNetwork: true)."""
    pod = unique()
    with counter_in_pod(tmp_path, pod, cri, host_network=request.param == "host-network") as made:
        yield {
            "pod": pod,
            "id": made["id"],
            "sandbox": made["sandbox"],
            "log": pathlib.Path(made["log"]),
            "network": request.param,
            "cri": cri,
        }


def cri_count(log):
    # CRI log lines: "<time> stdout F <text>"
    lines = log.read_text().splitlines() if log.exists() else []
    return int(lines[-1].split()[-1]) if lines else 0


def logged_count(path):
    """The counter's last line in a plain log file (a restored container's stdout)."""
    words = path.read_text().split() if path.exists() else []
    return int(words[-1]) if words else 0


def wait_cri_count(log, minimum):
    wait_until_counted(lambda: cri_count(log), minimum, f"CRI log {log}")


def cri_args(tmp_path, pod, cri):
    """Module arguments for the container "counter" of a CRI pod in strata-test on ``cri``."""
    return {
        "pod": pod,
        "namespace": "strata-test",
        "container": "counter",
        "runtime": "cri",
        "cri_endpoint": cri.endpoint,
        "images_dir": str(tmp_path / "images"),
        "criu_path": CRIU,
        "crit_path": CRIT,
    }


def test_pod_container_found_through_crictl_and_dumped(cri_pod, tmp_path):
    wait_cri_count(cri_pod["log"], 3)
    result = run_module(cri_args(tmp_path, cri_pod["pod"], cri_pod["cri"]), path_prefix=TESTBED_BIN)
    after = cri_count(cri_pod["log"])
    assert result.get("failed") is not True, result
    target = result["manifest"]["target"]
    inspect = json.loads(crictl(cri_pod["cri"], "inspect", "-o", "json", cri_pod["id"]))
    assert (target["runtime"], target["container_id"]) == ("cri", cri_pod["id"])
    assert target["pid"] == inspect["info"]["pid"]
    assert target["image"].endswith(":" + inspect["status"]["image"]["image"].rsplit(":", 1)[-1])
    # containerd binds the sandbox's hosts and resolv.conf: external, keyed by mount point
    assert "mnt[/etc/hosts]:/etc/hosts" in result["command"]
    assert "mnt[/etc/resolv.conf]:/etc/resolv.conf" in result["command"]
    assert "--leave-running" in result["command"]
    net_args = [arg for arg in result["command"] if arg.startswith("net[")]
    if cri_pod["network"] == "host-network":
        assert net_args == []  # nothing to map
    else:
        # the pod's network namespace stays outside the dump, under the key runc restores it by
        inode = os.readlink(f"/proc/{target['pid']}/ns/net").split("[")[1].rstrip("]")
        assert net_args == [f"net[{inode}]:extRootNetNS"]
    assert_crit_checked(result)
    wait_cri_count(cri_pod["log"], after + 3)  # left running


def ctr_cli(cri, *args, check=True):
    return run_cli(
        [cri.ctr, "--address", cri.endpoint[len("unix://") :], "--namespace", "k8s.io", *args], check
    )


def remove_restored(cri, container):
    """Remove a container a test restored on ``cri`` and its task (its snapshot goes with it)."""
    ctr_cli(cri, "tasks", "kill", "--signal", "SIGKILL", container, check=False)
    ctr_cli(cri, "tasks", "rm", "--force", container, check=False)
    ctr_cli(cri, "containers", "rm", container, check=False)


def assert_nothing_left_in(cri, container_id, new):
    """No lease or view snapshot of the module's dumps of ``container_id`` and restores into ``new``
    stays in ``cri``'s containerd: the leases end with them, the rw layer's view is removed."""
    leases = [line for line in ctr_cli(cri, "leases", "ls").stdout.splitlines() if "strata-ops-" in line]
    assert [line for line in leases if container_id[:12] in line or new in line] == []
    views = ctr_cli(cri, "snapshots", "ls").stdout
    assert f"strata-ops-rw-{container_id}" not in views


def assert_restored_from_the_directory(restored, dumped):
    """The restore created its task from CRIU's images in the dump directory: containerd extracted
    no copy of them into its temporary directory (as it does for a checkpoint image, leftovers.py)."""
    assert_criu_log_kept(restored, dumped)
    images = os.path.join(dumped["checkpoint_dir"], containerd.CRIU_DIR)
    created = f"containerd.services.tasks.v1.Tasks.Create {restored['new_container']}"
    assert created in restored["commands"], restored["commands"]
    files = leftovers.dir_files(images)
    copies = leftovers.copies_in(leftovers.containerd_temp_dirs())
    assert [c for c in copies if leftovers.dir_files(c) == files] == []


def assert_criu_log_kept(restored, dumped):
    """CRIU's log of the restore is in the dump directory (runc wrote it into criu_work_path)."""
    name = f"restored-{restored['new_container']}-criu"
    criu_log = os.path.join(dumped["checkpoint_dir"], name, "restore.log")
    assert restored["restored"]["criu_log"] == criu_log
    with open(criu_log) as handle:
        assert "Restore finished successfully" in handle.read()


def pids_cgroup(pid):
    """The cgroup of process ``pid`` in the pids hierarchy (cgroup v1) or the unified one (v2)."""
    with open(f"/proc/{pid}/cgroup") as handle:
        lines = [line.rstrip("\n").split(":", 2) for line in handle]
    return next(path for _n, controllers, path in lines if controllers in ("pids", ""))


def assert_own_cgroup(restored_pid, dumped_pid, new):
    """The restored process runs in a cgroup of its own, named after its container, beside the
    dumped container's (the same parent), not in the dumped container's."""
    restored, dumped = pids_cgroup(restored_pid), pids_cgroup(dumped_pid)
    assert restored != dumped and restored.rpartition("/")[2] == new, (restored, dumped)
    assert restored.rpartition("/")[0] == dumped.rpartition("/")[0], (restored, dumped)


def containerd_args(tmp_path, cri_pod):
    """method=containerd on the pod's runtime, through that containerd's own ctr."""
    cri = cri_pod["cri"]
    return dict(cri_args(tmp_path, cri_pod["pod"], cri), method="containerd", keep=1, ctr_path=cri.ctr)


def counted_in(pid):
    """The counter a CRI workload process wrote last (/count in its root; the workload truncates it
    before each write, so an empty read is retried)."""
    deadline = time.time() + 5
    while True:
        with open(f"/proc/{pid}/root/count") as handle:
            text = handle.read().strip()
        if text or time.time() > deadline:
            return int(text)
        time.sleep(0.02)


def test_containerd_checkpoint_restores_into_a_new_container(cri_pod, tmp_path):
    """method=containerd: containerd's own checkpoint of the pod's container (left running) writes
    CRIU's images into the dump directory, beside the container's rw layer; a restore creates a
    NEW container whose process goes on counting from where the dump was (a fresh start would
    count from 1), its output in the restore's log."""
    wait_cri_count(cri_pod["log"], 25)
    args = containerd_args(tmp_path, cri_pod)
    planned = run_module(args, check_mode=True, path_prefix=TESTBED_BIN)
    assert planned["changed"] is True and not os.path.exists(planned["checkpoint_dir"]), planned
    images = os.path.join(planned["checkpoint_dir"], containerd.CRIU_DIR)
    assert f"containerd Tasks.Checkpoint {cri_pod['id']} image_path={images}" in planned["commands"]
    before_dump = cri_count(cri_pod["log"])  # the restored counter holds at least this
    dumped = run_module(args, path_prefix=TESTBED_BIN)
    assert dumped.get("failed") is not True, (dumped.get("msg"), dumped)
    at_dump = cri_count(cri_pod["log"])
    with open(os.path.join(dumped["checkpoint_dir"], "manifest.json")) as handle:
        manifest = json.load(handle)
    assert (manifest["method"], manifest["target"]["container_id"]) == ("containerd", cri_pod["id"])
    # the CRIU containerd's runc shim ran: the one on that containerd's PATH (tests/testbed/cri/start)
    shim_criu = os.path.join(TESTBED_BIN, "criu")
    assert manifest["criu"] == {"path": shim_criu, "version": criu_version(shim_criu)}, manifest["criu"]
    assert "pages-1.img" in os.listdir(os.path.join(dumped["checkpoint_dir"], containerd.CRIU_DIR))
    assert os.path.getsize(os.path.join(dumped["checkpoint_dir"], containerd.RW_LAYER)) > 0
    assert 0 < dumped["frozen_s"] == manifest["frozen_s"], dumped
    wait_cri_count(cri_pod["log"], at_dump + 3)  # left running
    listed = run_module({"images_dir": args["images_dir"]}, module="pod_checkpoint_info")
    assert [(c["usable"], c["restorable"]) for c in listed["checkpoints"]] == [(True, True)], listed

    new = unique()
    restore = dict(args, state="restored", checkpoint=dumped["checkpoint_dir"], new_container=new)
    try:
        restored = run_module(restore, path_prefix=TESTBED_BIN)
        assert restored.get("failed") is not True, restored
        pid = restored["restored"]["pid"]
        first = counted_in(pid)
        assert first >= before_dump, (first, before_dump)  # the dump's memory, not a fresh 1
        wait_until_counted(lambda: counted_in(pid), first + 3, f"restored container {new}")
        assert_restored_from_the_directory(restored, dumped)
        assert_own_cgroup(pid, manifest["target"]["pid"], new)
        # its stdout: the counter's lines go on in the restore's log
        log = pathlib.Path(restored["restored"]["log"])
        wait_until_counted(lambda: logged_count(log), first + 1, str(log))
        again = run_module(restore, path_prefix=TESTBED_BIN)
        assert (again["changed"], again["restored"]["pid"]) == (False, pid), again  # restored and running
        # The pod's own container (its CRI id is its containerd id) is a name that exists: refused.
        taken = run_module(dict(restore, new_container=cri_pod["id"]), path_prefix=TESTBED_BIN)
        assert (
            taken.get("failed") is True and f"a container {cri_pod['id']} exists already" in taken["msg"]
        ), taken
    finally:
        remove_restored(cri_pod["cri"], new)
    assert_nothing_left_in(cri_pod["cri"], cri_pod["id"], new)


def test_every_containerd_checkpoint_of_a_container_holds_its_process(cri, tmp_path):
    """Three dumps of one container, the second under another name and images_dir (a second job):
    each holds CRIU's images, and the oldest restores and counts on from where it was dumped."""
    pod = unique()
    with counter_in_pod(tmp_path, pod, cri) as made:
        log = pathlib.Path(made["log"])
        wait_cri_count(log, 3)
        args = dict(cri_args(tmp_path, pod, cri), method="containerd", ctr_path=cri.ctr, keep=3)
        other_job = dict(args, name="other-job", images_dir=str(tmp_path / "other-job"))
        dumps, counted = [], []
        for job in (args, other_job, args):
            dumped = run_module(job, path_prefix=TESTBED_BIN)
            assert dumped.get("failed") is not True, dumped
            counted.append(cri_count(log))
            images = os.path.join(dumped["checkpoint_dir"], containerd.CRIU_DIR)
            assert "pages-1.img" in os.listdir(images), dumped["checkpoint_dir"]
            dumps.append(dumped)

        new = unique()
        restore = dict(args, state="restored", checkpoint=dumps[0]["checkpoint_dir"], new_container=new)
        try:
            restored = run_module(restore, path_prefix=TESTBED_BIN)
            assert restored.get("failed") is not True, restored
            pid = restored["restored"]["pid"]
            first = counted_in(pid)
            assert counted[0] - 10 <= first < counted[2], (first, counted)  # the first dump's memory
            wait_until_counted(lambda: counted_in(pid), first + 3, f"restored container {new}")
        finally:
            remove_restored(cri, new)


def test_containerd_restore_refuses_a_pod_that_is_gone_and_leaves_nothing(cri_pod, tmp_path):
    """containerd restores a container into the namespaces of the pod sandbox it was dumped from:
    once that pod is gone from the node (moved, deleted), the restore is refused before containerd
    makes anything - runc's failure comes only after the container and its task exist, and such a
    task (CREATED, pid 0) hangs `ctr tasks rm --force`."""
    wait_cri_count(cri_pod["log"], 3)
    args = containerd_args(tmp_path, cri_pod)
    dumped = run_module(args, path_prefix=TESTBED_BIN)
    assert dumped.get("failed") is not True, dumped
    joined = dumped["manifest"]["joined_namespaces"]
    assert {j["type"] for j in joined} >= {"network", "ipc", "uts"}, joined
    crictl(cri_pod["cri"], "rmp", "--force", cri_pod["sandbox"])
    listed = run_module({"images_dir": args["images_dir"]}, module="pod_checkpoint_info")
    assert [(c["usable"], c["restorable"]) for c in listed["checkpoints"]] == [(True, False)], listed
    assert listed["latest_restorable"] is None
    gone = f"the pod strata-test/{cri_pod['pod']} this container was dumped from is gone"
    assert_containerd_restore_refused(cri_pod["cri"], args, dumped, gone)


def test_a_containerd_restore_that_criu_fails_leaves_nothing(cri_pod, tmp_path):
    """CRIU's images of the tasks' registers and state rotted in place (same size, the manifest's
    check passes): runc's restore fails after containerd made the container, its rootfs and its
    task, and the module removes all three again through containerd's API; the dumped pod runs on."""
    wait_cri_count(cri_pod["log"], 3)
    args = containerd_args(tmp_path, cri_pod)
    dumped = run_module(args, path_prefix=TESTBED_BIN)
    assert dumped.get("failed") is not True, dumped
    images = os.path.join(dumped["checkpoint_dir"], containerd.CRIU_DIR)
    for core in [name for name in os.listdir(images) if name.startswith("core-")]:  # one per task
        with open(os.path.join(images, core), "r+b") as handle:
            handle.write(b"\xff" * os.path.getsize(handle.name))
    cri, new = cri_pod["cri"], unique()
    restore = dict(args, state="restored", checkpoint=dumped["checkpoint_dir"], new_container=new)
    try:
        failed = run_module(restore, path_prefix=TESTBED_BIN)
        assert failed.get("failed") is True, failed
        assert "Tasks.Start" in failed["msg"], failed["msg"]
        # the task's bundle is gone with it; CRIU's log stays and its errors are quoted
        criu_log = os.path.join(dumped["checkpoint_dir"], f"restored-{new}-criu", "restore.log")
        assert f"CRIU's log {criu_log} ends:\n" in failed["msg"], failed["msg"]
        assert "Error (criu/" in failed["msg"].split(criu_log, 1)[1], failed["msg"]
        assert failed["msg"].endswith(f"{new} was removed again, nothing is left half-restored"), failed[
            "msg"
        ]
        assert ctr_cli(cri, "containers", "info", new, check=False).returncode != 0
        assert new not in ctr_cli(cri, "tasks", "ls").stdout
        assert new not in ctr_cli(cri, "snapshots", "ls").stdout.split()
    finally:
        remove_restored(cri, new)
    at_failure = cri_count(cri_pod["log"])
    wait_cri_count(cri_pod["log"], at_failure + 2)  # the dumped container counts on
    assert_nothing_left_in(cri, cri_pod["id"], new)


def assert_containerd_restore_refused(cri, args, dumped, *phrases):
    """A restore of ``dumped`` into a new container is refused, in check mode and not, with every
    phrase in its message, and no container is made."""
    new = unique()
    restore = dict(args, state="restored", checkpoint=dumped["checkpoint_dir"], new_container=new)
    for check_mode in (True, False):
        refused = run_module(restore, check_mode=check_mode, path_prefix=TESTBED_BIN)
        assert refused.get("failed") is True, refused
        for phrase in phrases:
            assert phrase in refused["msg"], refused["msg"]
        assert ctr_cli(cri, "containers", "info", new, check=False).returncode != 0


def test_containerd_refuses_a_dump_of_a_newer_criu_release_and_creates_nothing(cri_pod, tmp_path):
    wait_cri_count(cri_pod["log"], 3)
    args = containerd_args(tmp_path, cri_pod)
    dumped = run_module(args, path_prefix=TESTBED_BIN)
    assert dumped.get("failed") is not True, dumped
    record_newer_criu(dumped["checkpoint_dir"])
    shim_criu = os.path.join(TESTBED_BIN, "criu")
    assert_containerd_restore_refused(
        cri_pod["cri"],
        args,
        dumped,
        f"was dumped by CRIU 99.0, and the CRIU that would restore it is older: {shim_criu} (CRIU ",
        "the criu on containerd's PATH",
    )


def test_containerd_restore_names_a_changed_directory_of_a_volume_before_containerd_makes_anything(
    cri, tmp_path
):
    """A pod with a hostPath volume whose process works in it (its cwd): the dump records the
    container's bind mounts; once the volume's directory has another mode, CRIU would refuse the
    restore (after containerd made the container): the module names it first. Put back, it restores."""
    volume = tmp_path / "volume"
    volume.mkdir(mode=0o755)
    pod = unique()
    with counter_in_pod(tmp_path, pod, cri, volumes=[(str(volume), "/data")], working_dir="/data") as made:
        wait_cri_count(pathlib.Path(made["log"]), 3)
        args = dict(cri_args(tmp_path, pod, cri), method="containerd", ctr_path=cri.ctr)
        dumped = run_module(args, path_prefix=TESTBED_BIN)
        assert dumped.get("failed") is not True, (dumped.get("msg"), dumped)
        assert ["/data", str(volume)] in dumped["manifest"]["binds"], dumped["manifest"]["binds"]
        volume.chmod(0o700)
        changed = f"/data (on the host {volume}) has mode 0o40700, it had 0o40755"
        assert_containerd_restore_refused(cri, args, dumped, changed)
        volume.chmod(0o755)
        new = unique()
        restore = dict(args, state="restored", checkpoint=dumped["checkpoint_dir"], new_container=new)
        try:
            restored = run_module(restore, path_prefix=TESTBED_BIN)
            assert restored.get("failed") is not True, restored
            pid = restored["restored"]["pid"]
            assert os.readlink(f"/proc/{pid}/cwd") == "/data"
            first = counted_in(pid)
            wait_until_counted(lambda: counted_in(pid), first + 3, f"restored container {new}")
        finally:
            remove_restored(cri, new)


# A debugger's hold on a process: PTRACE_SEIZE (0x4206, linux/ptrace.h) attaches without stopping it;
# the kernel detaches when this process dies. CRIU seizes every task it dumps, and one already
# traced refuses it (EPERM).
TRACER = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
if libc.ptrace(0x4206, int(sys.argv[1]), None, None) != 0:
    sys.exit("PTRACE_SEIZE: " + os.strerror(ctypes.get_errno()))
print("seized", flush=True)
time.sleep(600)
"""


def test_a_containerd_dump_that_criu_fails_says_why_and_leaves_nothing(cri_pod, tmp_path):
    """The container's process held by a debugger: runc's checkpoint fails (CRIU cannot seize it)
    and containerd says only `criu failed: type NOTIFY errno 0`; the module's message quotes CRIU's
    log (which goes with the partial dump), the task is resumed, no dump directory is left."""
    wait_cri_count(cri_pod["log"], 3)
    pid = json.loads(crictl(cri_pod["cri"], "inspect", "-o", "json", cri_pod["id"]))["info"]["pid"]
    args = containerd_args(tmp_path, cri_pod)
    tracer = subprocess.Popen([sys.executable, "-c", TRACER, str(pid)], stdout=subprocess.PIPE)
    try:
        assert tracer.stdout.readline() == b"seized\n"
        failed = run_module(args, path_prefix=TESTBED_BIN)
    finally:
        tracer.kill()
        tracer.wait()
    assert failed.get("failed") is True, failed
    assert "Tasks.Checkpoint" in failed["msg"], failed["msg"]
    assert "(it goes with the partial dump) ends:\n" in failed["msg"], failed["msg"]
    assert "Error (criu/" in failed["msg"].split("ends:", 1)[1], failed["msg"]
    assert failed["msg"].endswith("was removed, the container runs on"), failed["msg"]
    assert os.listdir(args["images_dir"]) == []
    assert_nothing_left_in(cri_pod["cri"], cri_pod["id"], "none")
    wait_cri_count(cri_pod["log"], cri_count(cri_pod["log"]) + 3)  # resumed, counting on


def test_containerd_dump_into_a_full_file_system_leaves_no_partial_dump(cri, tmp_path):
    """images_dir on a small tmpfs. With less room than the container's memory the dump is refused
    before containerd checkpoints anything; with room for the memory but not for the 4 MiB the
    container wrote into its rw layer, writing the layer fails. Both: NoSpace with the fix, no
    partial dump directory, nothing left in containerd, the pod counting on."""
    full = tmp_path / "full"
    full.mkdir()
    pod = unique()
    with counter_in_pod(tmp_path, pod, cri) as made:
        log = pathlib.Path(made["log"])
        wait_cri_count(log, 3)
        args = dict(
            cri_args(tmp_path, pod, cri),
            method="containerd",
            ctr_path=cri.ctr,
            name=pod,
            images_dir=str(full),
        )
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(full)], check=True)
        try:
            refused = run_module(args, path_prefix=TESTBED_BIN)
            assert refused.get("error") == "NoSpace", refused
            assert "has 262144 bytes free but the dump of the process tree writes about" in refused["msg"]

            subprocess.run(["mount", "-o", "remount,size=2m", str(full)], check=True)
            pid = json.loads(crictl(cri, "inspect", "-o", "json", made["id"]))["info"]["pid"]
            with open(f"/proc/{pid}/root/filler", "wb") as handle:
                handle.write(os.urandom(4 << 20))
            failed = run_module(args, path_prefix=TESTBED_BIN)
            assert failed.get("error") == "NoSpace", failed
            assert failed["msg"].startswith(f"{full} ran out of space while containerd's checkpoint"), failed
            assert "no space left on device" in failed["msg"].lower()
            assert "free space there or point images_dir at a larger file system" in failed["msg"]
            assert failed["msg"].endswith("was removed, the container runs on")
            assert os.listdir(full) == []
            assert_nothing_left_in(cri, made["id"], "none")
            wait_cri_count(log, cri_count(log) + 3)  # the pod counts on
        finally:
            subprocess.run(["umount", str(full)], check=True)


def test_a_criu_dump_is_not_restored_by_containerd_nor_the_other_way(cri_pod, tmp_path):
    wait_cri_count(cri_pod["log"], 3)
    args = cri_args(tmp_path, cri_pod["pod"], cri_pod["cri"])
    dumped = run_module(args, path_prefix=TESTBED_BIN)
    assert dumped.get("failed") is not True, dumped
    restore = dict(
        args,
        method="containerd",
        state="restored",
        checkpoint=dumped["checkpoint_dir"],
        new_container=unique(),
    )
    refused = run_module(restore, path_prefix=TESTBED_BIN)
    assert refused.get("failed") is True, refused
    assert "was dumped by CRIU from a cri target (method criu), not by containerd" in refused["msg"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"pod": "nosuchpod"}, "crictl finds no running container of pod strata-test/nosuchpod"),
        ({"cri_endpoint": "unix:///run/strata-cri/nothing.sock"}, "Set cri_endpoint"),
    ],
)
def test_cri_target_faults(cri, tmp_path, change, expected):
    args = dict(cri_args(tmp_path, "somepod", cri), **change)
    result = run_module(args, path_prefix=TESTBED_BIN)
    assert result.get("failed") is True
    assert expected in result["msg"]
    assert not (tmp_path / "images").exists()


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ({"container": "strata-ckpt-doesnotexist"}, "no Docker container named"),
        (
            {"pod": "nosuchpod", "namespace": "nowhere", "container": "app", "runtime": "docker"},
            "io.kubernetes.pod.name=nosuchpod",
        ),
    ],
)
def test_unknown_target(testbed, tmp_path, target, expected):
    result = run_module(dict(target, images_dir=str(tmp_path / "images"), criu_path=CRIU))
    assert result.get("failed") is True
    assert expected in result["msg"]
    assert not (tmp_path / "images").exists()


def test_pid_exits_during_dump(testbed, tmp_path):
    # 384 MiB of random bytes: the dump takes long enough to kill the process in the middle.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, time\nb = bytearray(os.urandom(384 << 20))\n"
            "print('ready', flush=True)\ntime.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdout.readline().strip() == b"ready"
        images = tmp_path / "images"
        images.mkdir()
        killed = {}

        def kill_when_dump_starts():
            deadline = time.time() + 30
            while time.time() < deadline and not os.listdir(images):
                time.sleep(0.002)
            time.sleep(0.05)
            killed["at"] = time.time()
            proc.kill()

        killer = threading.Thread(target=kill_when_dump_starts)
        killer.start()
        result = run_module({"pid": proc.pid, "images_dir": str(images), "criu_path": CRIU})
        killer.join()
    finally:
        proc.kill()
        proc.wait()
    assert "at" in killed, "the dump directory never appeared"
    assert result.get("failed") is True, result
    assert f"process {proc.pid} (or one of its descendants) exited during the dump" in result["msg"]
    assert result["error"] == "TargetGone"
    assert os.listdir(images) == []  # the partial dump is removed


@pytest.mark.parametrize("case", ["missing", "too-old"])
def test_criu_missing_or_too_old(counter, tmp_path, case):
    if case == "missing":
        criu_path, expected = str(tmp_path / "no-such-criu"), "criu not found at"
    else:
        criu_path = tmp_path / "criu"
        criu_path.write_text("#!/bin/sh\necho 'Version: 3.17'\n")
        criu_path.chmod(0o755)
        expected = "is CRIU 3.17; pod_checkpoint needs CRIU >= 4.0"
    result = run_module(
        {"container": counter["name"], "images_dir": str(tmp_path / "i"), "criu_path": str(criu_path)},
    )
    assert result.get("failed") is True
    assert expected in result["msg"]
    assert "criu_path" in result["msg"]


def test_no_space_left_in_images_dir(counter, tmp_path):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tiny)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        _missing("cannot mount a tmpfs for the no-space test: " + mount.stderr.strip())
    try:
        result = run_module({"container": counter["name"], "images_dir": str(tiny), "criu_path": CRIU})
        assert result.get("failed") is True
        assert result["error"] == "NoSpace"
        assert "free space" in result["msg"]
        assert str(tiny) in result["msg"]
        assert os.listdir(tiny) == []
        assert docker("inspect", "-f", "{{.State.Running}}", counter["name"]).stdout.strip() == "true"
    finally:
        subprocess.run(["umount", str(tiny)], check=False)


@pytest.mark.parametrize("where", ["regular-file", "proc", "sys"])
def test_images_dir_that_cannot_hold_a_dump_is_refused(tmp_path, where):
    """Through Ansible itself, so a crash would show as ansible-core's "Module failed:" text."""
    images = {
        "regular-file": str(tmp_path / "a-file"),
        "proc": "/proc/strata-dumps",
        "sys": "/sys/fs/strata-dumps",
    }[where]
    (tmp_path / "a-file").write_text("not a directory\n")
    result = adhoc_result("pod_checkpoint", {"pid": os.getpid(), "images_dir": images, "criu_path": CRIU})
    assert_clean_failure(result)
    assert result["msg"].startswith(f"images_dir {images} ")
    assert ("is not a directory" if where == "regular-file" else "kernel file system") in result["msg"]
    assert (tmp_path / "a-file").read_text() == "not a directory\n"


def test_restore_onto_running_name_is_refused(counter, tmp_path, experimental):
    images = tmp_path / "images"
    dumped = run_module({"container": counter["name"], "images_dir": str(images), "criu_path": CRIU})
    assert dumped.get("failed") is not True, dumped
    result = run_module(
        {"state": "restored", "checkpoint": dumped["checkpoint_dir"], "new_container": counter["name"]},
    )
    assert result.get("failed") is True
    assert result["error"] == "ContainerConflict"
    assert f"a container named {counter['name']} already exists (running" in result["msg"]
    assert "docker rm -f" in result["msg"]


def record_newer_criu(dump_dir):
    """Make a dump say a newer CRIU release wrote it (none exists here to write one): what a restore
    meets when the dumping host runs a newer CRIU than the restoring one."""
    manifest = mf.load(dump_dir)
    mf.write(dump_dir, dict(manifest, criu=dict(manifest.get("criu") or {}, version="99.0")))


def test_a_dump_of_a_newer_criu_release_is_refused_before_docker_creates_anything(
    counter, tmp_path, experimental
):
    dumped = run_module(
        {"container": counter["name"], "images_dir": str(tmp_path / "images"), "criu_path": CRIU}
    )
    assert dumped.get("failed") is not True, dumped
    record_newer_criu(dumped["checkpoint_dir"])
    new = unique()
    for check_mode in (True, False):
        refused = run_module(
            {"state": "restored", "checkpoint": dumped["checkpoint_dir"], "new_container": new},
            check_mode=check_mode,
        )
        assert refused.get("failed") is True, refused
        assert "was dumped by CRIU 99.0, and the CRIU that would restore it is older" in refused["msg"]
        assert "install CRIU >= 99.0 on that PATH" in refused["msg"]
        assert docker("inspect", new, check=False).returncode != 0  # nothing was created


# A job holding a file open on its volume (as a training job holds its log or status file).
HOLDER = (
    "import time\nheld = open('/data/held', 'r+')\nn = 0\n"
    "while True:\n    n += 1\n    print(n, flush=True)\n    time.sleep(0.2)\n"
)


def test_a_file_held_open_on_a_bind_mount_that_changed_is_named_before_docker_creates_anything(
    testbed, tmp_path, names, experimental
):
    data = tmp_path / "hostdata"
    data.mkdir()
    held = data / "held"
    held.write_bytes(b"x" * 100)
    name = unique()
    names.append(name)
    docker("run", "-d", "--name", name, "-v", f"{data}:/data", IMAGE, "python3", "-u", "-c", HOLDER)
    wait_count(name, 3)
    dumped = run_module({"container": name, "images_dir": str(tmp_path / "images"), "criu_path": CRIU})
    assert dumped.get("failed") is not True, dumped
    docker("rm", "-f", name)
    with open(held, "ab") as handle:  # the file went on after the dump
        handle.write(b"y" * 50)
    new = unique()
    names.append(new)
    for check_mode in (True, False):
        refused = run_module(
            {"state": "restored", "checkpoint": dumped["checkpoint_dir"], "new_container": new},
            check_mode=check_mode,
        )
        assert refused.get("failed") is True, refused
        assert f"/data/held (on the host {held}) is 150 bytes, it was 100" in refused["msg"]
        assert docker("inspect", new, check=False).returncode != 0  # nothing was created
    # as it was at the dump (from a snapshot taken with it): the restore goes on, the count with it
    held.write_bytes(b"x" * 100)
    restored = run_module({"state": "restored", "checkpoint": dumped["checkpoint_dir"], "new_container": new})
    assert restored.get("failed") is not True, restored
    wait_count(new, 1)
    assert int(docker("logs", new).stdout.split()[0]) > 3  # the dumped process, not a fresh one
