"""Killed runs converge (issue 20 item 2): every module that changes something is killed with SIGKILL at
points chosen here (tests/reliability/killpoints.py: a wrapper of the CLI it drives, a stand-in that
kills at the K-th request, a breakpoint at the return of one of its steps, a fraction of its progress
file), then run again without the kill. The end state must equal that of an uninterrupted run, and
nothing may be lost. One test id per (module, point).

Everything runs on the real test bed: the zfs-fuse pool, the control plane (kwok kubelets), the lab
hosts over ssh, the GitLab API stand-in, real HTTP range servers.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import pytest

from ansible_collections.strata.ops.plugins.module_utils.checkpoint.manifest import dumps_of
from tests.integration import test_pod_checkpoint as ckpt_tests
from tests.integration import test_runner_isolation as ri_tests
from tests.integration import test_safe_shutdown as shutdown_tests
from tests.integration import test_storage_layers as storage_tests
from tests.integration.conftest import REPO, destroy_tree, zfs
from tests.integration.k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from tests.integration.test_data_transfer import SIGNAL_MODULE, read_progress, wait_gone
from tests.integration.test_pod_checkpoint import CRIT, CRIU, last_count, wait_count
from tests.integration.test_runner_isolation import TOKEN as RI_TOKEN
from tests.integration.test_runner_isolation import (
    TOLERATION,
    assert_config_isolated,
    assert_restored_exactly,
)
from tests.integration.test_runner_isolation import args as ri_args
from tests.integration.test_runner_isolation import paused as ri_paused
from tests.integration.test_runner_isolation import snapshot as ri_snapshot
from tests.integration.test_safe_shutdown import make_deployment, pods_of, started_at
from tests.integration.test_snapshot_fetch import FULL_SLOT, MIB, H, make_archive
from tests.integration.test_storage_layers import L2, L4
from tests.integration.test_storage_layers import docker as storage_docker
from tests.integration.transfer_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from tests.integration.transfer_fixtures import (
    ANSIBLE,
    DST_HOST,
    INVENTORY,
    SRC_HOST,
    ansible_env,
    assert_ok,
    assert_same_tree,
    make_tree,
    prepare_lab,
    py,
    run_ansible,
    small_files,
    snapshot,
    task_result,
    tree_bytes,
)

from .killpoints import (
    TESTBED,
    KillOnRequest,
    ToolTrap,
    assert_killed,
    finish,
    kill_tree,
    start_module,
    wait_fraction,
    wait_stopped,
)

# their fixtures, used here by name
bed, cluster, kind_node = ri_tests.bed, ri_tests.cluster, shutdown_tests.kind_node
testbed, names, counter = ckpt_tests.testbed, ckpt_tests.names, ckpt_tests.counter
node = storage_tests.node

sys.path.insert(0, TESTBED)
from gitlab_api import GitLabStandIn  # noqa: E402
from http_stand_in import HTTPStandIn, QuietHandler  # noqa: E402


def ok(proc):
    """The module ran to its end without failing: its result."""
    rc, result, err = finish(proc)
    assert rc == 0 and result and not result.get("failed"), f"rc {rc}: {result} {err[-2000:]}"
    return result


def run_to_end(name, args, env=None, diff=False):
    return ok(start_module(name, args, env=env, diff=diff))


# ------------------------------------------------------------------------------------- zfs_dataset
#
# One call creates a tree of three datasets, updates two properties of an existing one (with a file
# in it that must survive) and destroys another: its zfs writes, in the module's order, are
# destroy old, create a, set keep compression, set keep quota, create a/b, create a/b/c.

ZFS_WRITES = ("create", "set", "inherit", "destroy", "rename")
ZFS_POINTS = {
    "destroy-old-before": ("destroy", "old", 1, False),
    "destroy-old-after": ("destroy", "old", 1, True),
    "create-a-after": ("create", "a", 1, True),
    "set-keep-first-after": ("set", "keep", 1, True),
    "set-keep-second-before": ("set", "keep", 2, False),
    "create-a/b-before": ("create", "a/b", 1, False),
    "create-a/b/c-after": ("create", "a/b/c", 1, True),
    "create-a/b/c-unmounted": ("create", "a/b/c", 1, True),
}
# zfs create as zfs-fuse sometimes ends it under load: the dataset made, its mount failed (rc 1,
# "filesystem successfully created, but not mounted"; zfs_main.c zfs_do_create).
CREATED_NOT_MOUNTED = """#!/bin/sh
for last; do :; done
[ "$1" = create ] && [ "$last" = "$STRATA_NOT_MOUNTED" ] || exec "$STRATA_REAL_ZFS" "$@"
"$STRATA_REAL_ZFS" "$@" || exit
"$STRATA_REAL_ZFS" unmount "$last" || exit
echo "filesystem successfully created, but not mounted" >&2
exit 1
"""


def zfs_request(root):
    return {
        "datasets": [
            {"name": root + "/a", "properties": {"compression": "on", "quota": "64M"}},
            {"name": root + "/a/b", "properties": {"atime": False}},
            {"name": root + "/a/b/c", "properties": {"recordsize": "64K", "com.strata:role": "ledger"}},
            {"name": root + "/keep", "properties": {"quota": "48M", "compression": "on"}},
            {"name": root + "/old", "state": "absent"},
        ]
    }


@pytest.fixture
def zfs_root(zfs_pool, tmp_path):
    """A dataset of its own with keep (quota 32M, a file in it) and old below it."""
    root = f"{zfs_pool}/kill-{uuid.uuid4().hex[:8]}"
    zfs("create", "-o", f"mountpoint={tmp_path}/mnt", root)
    zfs("create", "-o", "quota=32M", root + "/keep")
    data = os.urandom(256 * 1024)
    (tmp_path / "mnt" / "keep" / "data.bin").write_bytes(data)
    yield SimpleNamespace(name=root, mnt=tmp_path / "mnt", data=data)
    destroy_tree(root)


def zfs_end_state(root):
    """The datasets below root (relative names), their local properties and mount state."""
    names = zfs("list", "-H", "-o", "name,mounted", "-r", root.name).stdout.split("\n")
    local = zfs("get", "-Hp", "-r", "-s", "local", "-o", "name,property,value", "all", root.name).stdout
    rel = len(root.name)
    return {
        "datasets": sorted(line[rel:] for line in names if line),
        "local": sorted(line[rel:] for line in local.splitlines() if "mountpoint" not in line),
        "kept file": hashlib.sha256((root.mnt / "keep" / "data.bin").read_bytes()).hexdigest(),
    }


@pytest.fixture(scope="module")
def zfs_reference(zfs_pool, tmp_path_factory):
    """The end state of an uninterrupted run (in a root of its own)."""
    tmp = tmp_path_factory.mktemp("zfs-ref")
    root = SimpleNamespace(name=f"{zfs_pool}/kill-ref-{uuid.uuid4().hex[:8]}", mnt=tmp / "mnt")
    zfs("create", "-o", f"mountpoint={root.mnt}", root.name)
    try:
        zfs("create", "-o", "quota=32M", root.name + "/keep")
        (root.mnt / "keep" / "data.bin").write_bytes(b"reference")
        zfs("create", root.name + "/old")
        run_to_end("zfs_dataset", zfs_request(root.name))
        state = zfs_end_state(root)
    finally:
        destroy_tree(root.name)
    del state["kept file"]
    return state


@pytest.mark.needs("zfs")
@pytest.mark.parametrize("point", list(ZFS_POINTS))
def test_zfs_dataset_killed(point, zfs_root, zfs_reference, tmp_path):
    sub, target, nth, after = ZFS_POINTS[point]
    zfs("create", zfs_root.name + "/old")
    kept = hashlib.sha256(zfs_root.data).hexdigest()
    request = zfs_request(zfs_root.name)
    real, env = None, dict(os.environ)
    if point == "create-a/b/c-unmounted":
        real = tmp_path / "zfs-created-not-mounted"
        real.write_text(CREATED_NOT_MOUNTED)
        real.chmod(0o755)
        env.update(STRATA_REAL_ZFS=shutil.which("zfs"), STRATA_NOT_MOUNTED=f"{zfs_root.name}/{target}")
    trap = ToolTrap(
        tmp_path / "trap",
        "zfs",
        at=nth,
        after=after,
        counts=ZFS_WRITES,
        last=f"{zfs_root.name}/{target}",
        real=real and str(real),
    )
    assert_killed(start_module("zfs_dataset", request, env=trap.env(env)))
    assert trap.killed and trap.killed["argv"][0] == sub, trap.calls

    again = run_to_end("zfs_dataset", request)
    if not point.startswith("create-a/b/c-"):
        assert again["changed"] is True, again
    elif trap.killed["rc_of_real_call"] == 0:
        assert point != "create-a/b/c-unmounted", trap.killed
        # what the rerun did, short enough to survive pytest's truncation of a failed assertion
        done = {
            d["name"]: (d["action"], d["changed_properties"])
            for d in again["datasets"]
            if d["action"] != "unchanged" or d["changed_properties"]
        }
        assert again["changed"] is False, (done, trap.killed)  # that kill came after the last write
    else:
        # Created, not mounted (the wrapper above, or zfs-fuse itself under load): the rerun
        # mounts it, as zfs create would have, and changes nothing else.
        changes = {d["name"]: d["changed_properties"] for d in again["datasets"] if d["changed_properties"]}
        assert changes == {f"{zfs_root.name}/a/b/c": {"mounted": {"before": "no", "after": "yes"}}}, again
    end = zfs_end_state(zfs_root)
    assert end.pop("kept file") == kept  # the data of the updated dataset is still there
    assert end == zfs_reference
    assert run_to_end("zfs_dataset", request)["changed"] is False


# ----------------------------------------------------------------------------------- snapshot_fetch
#
# One 4 MiB archive from one source, one range per each of 4 connections, beside an older archive that
# keep=2 must keep. The source is a small range server of our own: it kills the module when the K-th
# range request arrives (before answering) or once it has sent the K-th range whole, or the test
# kills it at a fraction of the bytes the control file records as written.

ARCHIVE_BYTES = 4 * MIB
FETCH_ARGS = {
    "min_speed": 0,
    "speed_test_seconds": 0,
    "connections_per_server": 4,
    "split": 8,
    "min_split_size": 256 * 1024,
    "timeout": 10,
    "keep": 2,
    "incremental": False,
}
FETCH_POINTS = {
    "range-1-before": {"at": 1, "after": False},
    "range-2-after": {"at": 2, "after": True},
    "range-4-before": {"at": 4, "after": False},
    "range-4-after": {"at": 4, "after": True},
    "written-5%": {"fraction": 0.05},
    "written-50%": {"fraction": 0.5},
    "written-80%": {"fraction": 0.8},
}


class RangeServer(HTTPStandIn):
    """One file at /<name> (HEAD, GET, GET with one Range), sent in 64 KiB pieces at ``rate`` bytes/s;
    every ranged GET but the Range probe (bytes=0-0) goes through ``killer.hit``."""

    def __init__(self, path, killer=None, rate=None):
        self.path, self.killer, self.rate = path, killer, rate
        super().__init__(self._handler())

    def _handler(self):
        server = self

        class Handler(QuietHandler):
            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body):
                if self.path.lstrip("/") != os.path.basename(server.path):
                    self.send_error(404)
                    return
                size = os.path.getsize(server.path)
                start, end = 0, size - 1
                ranged = self.headers.get("Range")
                if ranged:
                    first, last = ranged.split("=", 1)[1].split("-")
                    start, end = int(first), min(int(last or size - 1), size - 1)
                self.send_response(206 if ranged else 200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start + 1))
                if ranged:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if not body:
                    return
                if server.killer and ranged and ranged != "bytes=0-0":
                    server.killer.hit("GET", ranged, lambda: self._send(start, end))
                else:
                    self._send(start, end)

            def _send(self, start, end):
                with open(server.path, "rb") as handle:
                    handle.seek(start)
                    left = end - start + 1
                    while left > 0:
                        piece = handle.read(min(left, 65536))
                        try:
                            self.wfile.write(piece)
                            self.wfile.flush()
                        except OSError:
                            return
                        left -= len(piece)
                        if server.rate:
                            time.sleep(len(piece) / server.rate)  # a rate limit, as nginx's limit_rate

        return Handler


def dir_state(directory):
    """Every entry of a directory: name -> sha256 (dot files included: no partial file may stay)."""
    return {
        name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in os.listdir(directory)
    }


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    www = tmp_path_factory.mktemp("www")
    name = f"snapshot-{FULL_SLOT}-{H}.tar.zst"
    return make_archive(www, name, ARCHIVE_BYTES - 64 * 1024)


def fetch_dest(tmp_path):
    dest = tmp_path / "snapshots"
    dest.mkdir()
    (dest / f"snapshot-{FULL_SLOT - 100_000}-{H}.tar.zst").write_bytes(b"an older full snapshot")
    return dest


@pytest.fixture(scope="module")
def fetch_reference(archive, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fetch-ref")
    dest = fetch_dest(tmp)
    with RangeServer(archive) as server:
        args = dict(FETCH_ARGS, snapshot_dir=str(dest), sources=[f"{server.url}/{archive.name}"])
        result = run_to_end("snapshot_fetch", args)
    assert result["changed"] is True and result["downloads"][0]["name"] == archive.name
    return dir_state(dest)


def control_done(ctl):
    def read():
        try:
            doc = json.loads(ctl.read_text())
        except (OSError, ValueError):
            return 0, ARCHIVE_BYTES
        return sum(e - s for s, e in doc["done"]), doc.get("length") or ARCHIVE_BYTES

    return read


@pytest.mark.needs("nginx")
@pytest.mark.parametrize("point", list(FETCH_POINTS))
def test_snapshot_fetch_killed(point, archive, fetch_reference, tmp_path):
    spec = FETCH_POINTS[point]
    dest = fetch_dest(tmp_path)
    killer = KillOnRequest(spec["at"], after=spec["after"]) if "at" in spec else None
    with RangeServer(archive, killer, rate=None if killer else MIB) as server:
        args = dict(FETCH_ARGS, snapshot_dir=str(dest), sources=[f"{server.url}/{archive.name}"])
        if not killer:
            args["connections_per_server"] = 1
        proc = start_module("snapshot_fetch", args)
        if killer:
            killer.pid = proc.pid
        else:
            ctl = dest / f".strata-partial-{archive.name}.ctl"
            wait_fraction(proc, control_done(ctl), spec["fraction"])
            kill_tree(proc)
        assert_killed(proc)
        assert not (dest / archive.name).exists()  # never a partial file under the final name
        again = run_to_end("snapshot_fetch", args)
    stats = again["downloads"][0]
    assert stats["fetched_bytes"] + stats["resumed_bytes"] == archive.stat().st_size, stats
    assert stats["refetched_bytes"] == 0
    assert dir_state(dest) == fetch_reference


# -------------------------------------------------------------------------------- runner_isolation
#
# state=isolated with three runners (9 paused already), a config.toml, a node and two workloads.
# Its GitLab requests: GET 7, 8, 9 (read), the state file, then GET 7, PUT 7, GET 8, PUT 8, GET 9
# (pause), GET jobs of 7, 8, 9; then config.toml, the node's label, the tolerations, the taint. The
# stand-in kills it at the K-th request of a kind; the later steps are breakpoints at their return.
# Then isolated again converges to what an uninterrupted run makes, and restored returns everything.

RI_POINTS = {
    "request-1-before": {"at": 1, "method": None, "after": False},
    "put-1-before": {"at": 1, "method": "PUT", "after": False},
    "put-1-after": {"at": 1, "method": "PUT", "after": True},
    "put-2-after": {"at": 2, "method": "PUT", "after": True},
    "jobs-1-after": {"at": 1, "method": "GET", "path": "/jobs", "after": True},
    "after-_edit_config": {"step": "_edit_config"},
    "after-_label_node": {"step": "_label_node"},
    "after-_tolerate_workloads": {"step": "_tolerate_workloads"},
}


class KillingGitLab(GitLabStandIn):
    """The GitLab stand-in, each request passed through ``killer.hit`` when a killer is set."""

    killer = None

    def answer(self, method, path, query, body, token):
        if self.killer is None:
            return super().answer(method, path, query, body, token)
        return self.killer.hit(
            method, path, lambda: super(KillingGitLab, self).answer(method, path, query, body, token)
        )


@pytest.fixture
def gitlab():
    """Replaces test_runner_isolation's: the same runners, in a stand-in that can kill."""
    with KillingGitLab(token=RI_TOKEN) as api:
        api.add_runner(7, description="bare-metal-7", tag_list=["metal"])
        api.add_runner(8, description="bare-metal-8", tag_list=["metal"])
        api.add_runner(9, description="bare-metal-9", tag_list=["metal"], paused=True)
        yield api


def isolated_state(bed, before):
    """What an uninterrupted isolation leaves in the cluster, from the state before it."""
    taint = {k: v for k, v in TOLERATION.items() if k != "operator"}
    return dict(
        before,
        taints=[*before["taints"], taint],
        labels=dict(before["labels"], **{"strata.ops/experiment": "dedicated"}),
        unschedulable=True,
        web=[TOLERATION],
        minio=[*before["minio"], TOLERATION],
    )


@pytest.mark.needs("k8s")
@pytest.mark.parametrize("point", list(RI_POINTS))
def test_runner_isolation_killed(point, bed):
    spec = RI_POINTS[point]
    before, original = ri_snapshot(bed), bed.config.read_bytes()
    a = ri_args(bed)
    if "step" in spec:
        proc = start_module("runner_isolation", a, stop_after=(spec["step"], 1, "/runner_isolation/"))
        wait_stopped(proc, f"the end of {spec['step']}")
        kill_tree(proc)
    else:
        method, path = spec["method"], spec.get("path", "")
        bed.gitlab.killer = KillOnRequest(
            spec["at"], after=spec["after"], counts=lambda m, p: m == (method or m) and p.endswith(path)
        )
        proc = start_module("runner_isolation", a)
        bed.gitlab.killer.pid = proc.pid
    assert_killed(proc)
    bed.gitlab.killer = None

    again = run_to_end("runner_isolation", a)
    assert again["state"] == "isolated"
    assert ri_paused(bed.gitlab) == {7: True, 8: True, 9: True}
    assert_config_isolated(bed)
    text = bed.config.read_text()
    assert (
        text.count('"experiment=dedicated" = "NoSchedule"') == 1 and text.count("kubernetes.io/hostname") == 1
    )
    assert ri_snapshot(bed) == isolated_state(bed, before)
    assert run_to_end("runner_isolation", a)["changed"] is False

    bed.gitlab.requests.clear()
    restored = run_to_end("runner_isolation", dict(a, state="restored"), diff=True)
    assert_restored_exactly(bed, restored, before, original, a["state_path"])


# ----------------------------------------------------------------------------------- safe_shutdown
#
# state=stopped on a Deployment of 2 pods that take 2 s to terminate. Its stages, as breakpoints at
# the return of: the first PodTracker.observe (the pods listed, nothing changed yet), K8sClient.scale
# (the scale-to-0 request made), the second observe (waiting: the first watch event after it), and
# watch_until (the last pod is gone; the module has not returned yet).

SHUTDOWN_POINTS = {
    "pods-listed": ("observe", 1, "/module_utils/shutdown/"),
    "scaled-to-0": ("scale", 1, "/module_utils/k8s/"),
    "waiting-for-pods": ("observe", 2, "/module_utils/shutdown/"),
    "last-pod-gone": ("watch_until", 1, "/module_utils/k8s/"),
}


@pytest.fixture
def shutdown_bed(controlplane, k8s_client, k8s_namespace, request):
    node = request.getfixturevalue("kind_node")
    return SimpleNamespace(kubeconfig=controlplane, client=k8s_client, ns=k8s_namespace, node=node)


@pytest.mark.needs("k8s")
@pytest.mark.parametrize("point", list(SHUTDOWN_POINTS))
def test_safe_shutdown_killed(point, shutdown_bed, tmp_path):
    k8s_client, ns, node = shutdown_bed.client, shutdown_bed.ns, shutdown_bed.node
    make_deployment(k8s_client, ns, "validator", node, replicas=2, delay="2s")
    spec_before = k8s_client.get("Deployment", "validator", ns)["spec"]
    started = started_at(node)
    args = {
        "kubeconfig": shutdown_bed.kubeconfig,
        "state": "stopped",
        "name": "validator",
        "namespace": ns,
        "timeout": 60,
    }
    proc = start_module("safe_shutdown", args, stop_after=SHUTDOWN_POINTS[point])
    wait_stopped(proc, point)
    kill_tree(proc)
    assert_killed(proc)

    again = run_to_end("safe_shutdown", args)
    # right at return, as after an uninterrupted run: no pod left, the same spec at 0 replicas
    assert pods_of(k8s_client, ns, "validator") == []
    assert k8s_client.get("Deployment", "validator", ns)["spec"] == dict(spec_before, replicas=0)
    assert again["replicas_after"] == 0 and again["changed"] is (point == "pods-listed"), again
    assert started_at(node) == started  # the node container was never restarted
    assert run_to_end("safe_shutdown", args)["changed"] is False


# ----------------------------------------------------------------------------------- data_transfer
#
# A tree of small files, a hard-linked pair, a symlink and one 48 MiB file (sent as byte ranges)
# from strata-lab-1 to strata-lab-2, killed (the module process on the source host, SIGKILL) when
# its progress file (rewritten every second) reports 5 %, 50 % and 80 % done; the rerun must leave
# a copy equal to the source entry by entry (bytes, modes, owners, mtimes, links).

TRANSFER_ROOT = "/srv/kill-transfer"
TRANSFER_POINTS = {"progress-5%": 0.05, "progress-50%": 0.5, "progress-80%": 0.8}
TRANSFER_TREE = [
    *small_files("small", 8),
    {"kind": "file", "path": "data/big.bin", "size": 48 * MIB, "seed": 3},
    {"kind": "hardlink", "path": "data/link.bin", "target": "small/f000.bin"},
    {"kind": "symlink", "path": "latest", "target": "data/big.bin"},
    {"kind": "file", "path": "conf/secret.key", "size": 40, "mode": 0o600},
]


@pytest.fixture(scope="module")
def lab():
    yield from prepare_lab(TRANSFER_ROOT, (f"{TRANSFER_ROOT}/state", f"{TRANSFER_ROOT}/tmp"))


def transfer_argv(args, marker):
    """ansible strata-lab-1 -m strata.ops.data_transfer; the module's environment marked for SIGNAL_MODULE."""
    extra = {
        "ansible_docker_extra_env": {"TMPDIR": f"{TRANSFER_ROOT}/tmp", "IT_TRANSFER_RUN": marker},
        "data_transfer_progress_every": 1,
    }
    module = ["-m", "strata.ops.data_transfer", "-a", json.dumps(args)]
    return [ANSIBLE, SRC_HOST, "-i", INVENTORY, *module, "-e", json.dumps(extra)]


@pytest.mark.needs("docker")
@pytest.mark.parametrize("point", list(TRANSFER_POINTS))
def test_data_transfer_killed(point, where):
    src, dst = where
    make_tree(SRC_HOST, src, TRANSFER_TREE)
    progress = f"{TRANSFER_ROOT}/state/progress-{uuid.uuid4().hex[:8]}.json"
    args = {
        "src_path": src,
        "dest_path": dst,
        "dest_host": DST_HOST,
        "ssh_options": ["StrictHostKeyChecking=accept-new"],
        "state_dir": f"{TRANSFER_ROOT}/state",
        "streams": 4,
        "large_file_min": "8M",
        "chunk_size": "2M",
        "progress_file": progress,
    }
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(
        transfer_argv(dict(args, bwlimit="6M"), marker),
        cwd=REPO,
        env=ansible_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def read():
            doc = read_progress(progress) or {}
            return doc.get("bytes_done", 0), doc.get("bytes_total", 0)

        wait_fraction(proc, read, TRANSFER_POINTS[point])
        killed = py(SRC_HOST, SIGNAL_MODULE, marker, "9").split()
        assert len(killed) == 1, f"expected the one module process, killed {killed}"
    finally:
        proc.communicate(timeout=120)
    assert proc.returncode != 0
    wait_gone(SRC_HOST, dst)
    wait_gone(DST_HOST, dst)

    again = transfer_argv(args, "-")
    result = task_result(SRC_HOST, *_out(run_ansible(again)))
    assert_ok(result)
    assert result["bytes_sent"] < tree_bytes(snapshot(SRC_HOST, src)), result  # resumed, not resent
    assert_same_tree(SRC_HOST, src, DST_HOST, dst)  # .strata-transfer is gone too
    rerun = task_result(SRC_HOST, *_out(run_ansible(again)))
    assert_ok(rerun)
    assert rerun["changed"] is False


def _out(proc):
    return proc.stdout, proc.stderr


# ----------------------------------------------------------------------------------- pod_checkpoint
#
# state=dumped (method=criu, leave_running) of a counting container, into an images_dir that already
# holds one complete dump. Killed as criu dump starts (not run), right after it (the images written,
# no manifest yet), at its first crit call (the images being checked) and at its first criu call
# (nothing made yet). The rerun must leave what an uninterrupted run leaves: the old dump and one new
# complete dump, nothing else; the container still counting.

CKPT_POINTS = {
    "criu-first-call-before": ("criu", None, False),
    "criu-dump-before": ("criu", ("dump",), False),
    "criu-dump-after": ("criu", ("dump",), True),
    "crit-first-call-after": ("crit", None, True),
}


@pytest.mark.needs("criu")
@pytest.mark.parametrize("point", list(CKPT_POINTS))
def test_pod_checkpoint_killed(point, counter, tmp_path):
    tool, counts, after = CKPT_POINTS[point]
    images = tmp_path / "images"
    args = {"container": counter["name"], "images_dir": str(images), "criu_path": CRIU, "crit_path": CRIT}
    first = run_to_end("pod_checkpoint", args)["checkpoint_dir"]
    trap = ToolTrap(tmp_path / "trap", tool, at=1, after=after, counts=counts, real=args[f"{tool}_path"])
    trapped = dict(args, **{f"{tool}_path": os.path.join(trap.dir, tool)})
    before = last_count(counter["name"])
    assert_killed(start_module("pod_checkpoint", trapped))
    assert trap.killed, trap.calls

    again = run_to_end("pod_checkpoint", args)
    # the killed run's unfinished dump directory (made once criu is about to dump) is removed
    assert len(again["abandoned_removed"]) == (point != "criu-first-call-before"), again["abandoned_removed"]
    assert sorted(os.listdir(images)) == sorted(os.path.basename(d) for d in (first, again["checkpoint_dir"]))
    assert dumps_of(str(images), counter["name"]) == sorted([first, again["checkpoint_dir"]])
    with open(os.path.join(again["checkpoint_dir"], "manifest.json")) as handle:
        assert json.load(handle) == again["manifest"]
    wait_count(counter["name"], before + 2)  # the container still runs, counting on from where it was


# ------------------------------------------------------------------------- the storage roles (2, 4)
#
# Layers 2 and 4 (host_storage, workload_storage) from a host at layer 1 with an empty pool, through
# ansible-playbook, in a host container of test_storage_layers' (its own zfs-fuse pool, systemd). A
# wrapper of zfs or mount in /usr/local/sbin (first on the module's PATH there) kills the module
# process (its caller) at the chosen call: as L2 creates the cluster root dataset (before, after), as L4
# creates the workload datasets, and as L4 mounts the ramdisk (after its fstab line). The run fails;
# the run again must leave what an uninterrupted run leaves (datasets, local properties, fstab,
# mounts, the tree under /srv), the same as test_storage_layers' baseline of "converged".

STORAGE_POINTS = {
    "L2-create-root-before": ("zfs", ("create",), "lab/DATA/srv/kind", False),
    "L2-create-root-after": ("zfs", ("create",), "lab/DATA/srv/kind", True),
    "L4-create-workload-after": ("zfs", ("create",), "lab/DATA/srv/kind/solana", True),
    "L4-create-ledger-before": ("zfs", ("create",), "lab/DATA/srv/kind/solana/ledger", False),
    "L4-create-log-after": ("zfs", ("create",), "lab/DATA/srv/kind/solana/log", True),
    "L4-mount-ramdisk-before": ("mount", None, "/srv/kind/solana/ramdisk", False),
    "L4-mount-ramdisk-after": ("mount", None, "/srv/kind/solana/ramdisk", True),
}
REAL_TOOLS = {"zfs": "/usr/sbin/zfs", "mount": "/usr/bin/mount"}
HOST_STORAGE = (  # what the host's storage is when a run fails
    "zfs list -r -o name,mounted,mountpoint lab; findmnt -rn -o TARGET,SOURCE,FSTYPE | grep /srv; "
    "ls -la /srv/kind/solana"
)


def assert_same_host(now, baseline):
    """Each part of the host's snapshot as the baseline's, or the lines that differ."""
    for what, lines in baseline.items():
        mine = now[what] if isinstance(lines, list) else now[what].splitlines()
        theirs = lines if isinstance(lines, list) else lines.splitlines()
        if what == "mounts":  # the container's own (cgroup, /proc ...) are not the roles' business
            mine, theirs = ([line for line in side if line.startswith("/srv")] for side in (mine, theirs))
        assert mine == theirs, (what, sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine)))


@pytest.mark.needs("docker")
@pytest.mark.parametrize("point", list(STORAGE_POINTS))
def test_storage_roles_killed(point, node, tmp_path):
    tool, counts, last, after = STORAGE_POINTS[point]
    node.at("converged")  # an uninterrupted run first: its end state is the baseline
    node.at("l1")
    trap = ToolTrap(
        tmp_path / "trap",
        tool,
        after=after,
        counts=counts,
        last=last,
        real=REAL_TOOLS[tool],
        match=None,  # pipelined: the module is a bare python3 that runs zfs and mount itself
        python="/usr/bin/python3",
    )
    for path in trap.files():
        storage_docker("cp", path, f"{node.name}:/usr/local/sbin/")
    try:
        killed = node.playbook(L2, L4)
        fired = node.sh("cat /usr/local/sbin/.killed 2>/dev/null || true")
    finally:
        node.sh(f"cd /usr/local/sbin && rm -f {tool} .trap.json .calls .killed")
    node.state = "dirty"
    assert killed.rc != 0 and fired, f"the trap did not fire: {killed}"
    assert json.loads(fired)["argv"][-1] == last

    rerun = node.playbook(L2, L4)
    assert rerun.rc == 0 and rerun.failures == 0, (rerun.msg, node.sh(HOST_STORAGE))
    assert_same_host(node.normalised(), node.baseline["converged"])
    node.state = "converged"
    again = node.playbook(L2, L4)
    assert again.rc == 0 and again.changed == 0, again
