"""Layer 5 (role workload_deploy) and its flows (role workload_lifecycle), run as operators run them:
the real playbooks (layer5_deploy, stop, redeploy, recover, fix_pv_mounts, teardown) through
ansible-playbook on the lab inventory, against the test bed's real control plane (kwok-simulated
nodes), the lab host strata-lab-1 (a systemd container with a real zfs-fuse pool `lab`), real
nginx serving real zstd snapshot archives, and the STAND-IN Solana RPC
(tests/testbed/solana_rpc.py) for the tip.

Everything is kept apart from other users of the lab: the workload is `itdeploy` (datasets
lab/DATA/srv/kind/itdeploy/{ledger,snapshots,log}, ramdisk /srv/kind/itdeploy/ramdisk, made by the
layer 4 playbook here) in a namespace of its own; both are removed at the end.

The tests share one deployment and run in file order: deploy, idempotence and check mode, a
stop held over a converge until start, refused and listed wipes, recover, redeploy,
stop + fix_pv_mounts, teardown.
"""

import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest

from ansible_collections.strata.ops.plugins.module_utils import k8s

from .conftest import REPO, skip_or_fail
from .k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .k8s_fixtures import VALIDATOR_SERVER, agave_cli, recap, run_playbook

sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))
from snapshot_server import NginxSnapshotServer, nginx_binary
from solana_rpc import SolanaRpcStandIn

pytestmark = [pytest.mark.needs("docker"), pytest.mark.needs("k8s"), pytest.mark.needs("zfs")]

HOST = "strata-lab-1"
NETWORK = "strata-lab"
WORKLOAD = "itdeploy"
ROOT = f"/srv/kind/{WORKLOAD}"
DATASET = f"lab/DATA/srv/kind/{WORKLOAD}"
RAMDISK = f"{ROOT}/ramdisk"
VOLUMES = {
    "ledger": f"{ROOT}/ledger",
    "snapshots": f"{ROOT}/snapshots",
    "log": f"{ROOT}/log",
    "accounts": f"{RAMDISK}/accounts",
}
H1 = "7jMmeXZSNcWPrB2RsTdeXfXrsyW5c1BfPjqoLW2X5T7V"
H2 = "4uQeVj5tqViQh7yWWGStvkEG1Zmhx6uasJtWCJziofM"
SLOT = 350_000_000
FIRST = (f"snapshot-{SLOT}-{H1}.tar.zst", f"incremental-snapshot-{SLOT}-{SLOT + 1500}-{H2}.tar.zst")
# The leapfrog snapshot recover.yml fetches: newer than the first one.
SECOND = (
    f"snapshot-{SLOT + 2000}-{H2}.tar.zst",
    f"incremental-snapshot-{SLOT + 2000}-{SLOT + 3000}-{H1}.tar.zst",
)
OLD = f"snapshot-{SLOT - 200_000}-{H1}.tar.zst"


# Undo layer 4 for a test workload: unmount the ramdisk, drop its fstab line, destroy the
# datasets with their snapshots (zfs-fuse says "busy" for a moment after unmounts, hence the retries).
def clean_storage(workload):
    root, dataset = f"/srv/kind/{workload}", f"lab/DATA/srv/kind/{workload}"
    return rf"""
set -u
umount {root}/ramdisk 2>/dev/null || true
sed -i '\#[[:space:]]{root}/ramdisk[[:space:]]#d' /etc/fstab
systemctl daemon-reload
if zfs list -H -o name {dataset} >/dev/null 2>&1; then
  for i in $(seq 40); do zfs destroy -r {dataset} 2>/dev/null && break; sleep 0.3; done
fi
! zfs list -H -o name {dataset} >/dev/null 2>&1 || {{ echo "cannot destroy {dataset}"; exit 1; }}
rm -rf {root}
"""


CLEAN_STORAGE = clean_storage(WORKLOAD)


def docker(*args, check=True, timeout=120):
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {proc.stdout}{proc.stderr}")
    return proc


def on_host(script, check=True):
    """Run a shell script inside the lab host as root."""
    return docker("exec", HOST, "sh", "-c", script, check=check)


def host_files(path):
    """Names in a directory of the lab host (hidden ones too); None when it does not exist."""
    proc = on_host(f"ls -A {path}", check=False)
    return sorted(proc.stdout.split()) if proc.returncode == 0 else None


def make_archive(directory, name, size):
    raw = directory / (name + ".raw")
    raw.write_bytes(os.urandom(size))
    subprocess.run(["zstd", "-q", "-1", "-f", str(raw), "-o", str(directory / name)], check=True)
    raw.unlink()


class LabNginx(NginxSnapshotServer):
    """The test bed's nginx, listening on every address so that the lab containers reach it."""

    def config(self):
        return super().config().replace("listen 127.0.0.1:", "listen 0.0.0.0:")


def text(proc):
    """The output with whitespace runs made one space (the YAML callback wraps long lines)."""
    return " ".join(proc.stdout.split())


def ok(proc, what):
    assert proc.returncode == 0, f"{what} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return proc


def changed(proc):
    return recap(proc.stdout)[HOST]["changed"]


def pods(client, ns):
    items, _rv = client.list("Pod", ns)
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def ready(pod):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def assert_running(client, ns):
    current = pods(client, ns)
    assert len(current) == 1, [p["metadata"]["name"] for p in current]
    pod = current[0]
    assert pod["spec"]["nodeName"] == HOST
    assert ready(pod), pod["status"]
    return pod


def pv_paths(client, ns):
    items, _rv = client.list("PersistentVolume", label_selector=f"strata.io/namespace={ns}")
    return {p["metadata"]["name"]: p["spec"]["hostPath"]["path"] for p in items}


@pytest.fixture(scope="module")
def bed(lab_cluster, tmp_path_factory):
    """The lab converged (layers 2-4, lab_cluster), layer 4 for the test workload on
    strata-lab-1, the snapshot servers, a namespace name and the extra vars every playbook
    run gets."""
    if nginx_binary() is None:
        skip_or_fail("nginx is not installed (tests/testbed/up installs nginx-light)")
    client = k8s.get_client(lab_cluster["kubeconfig"])
    # Leftovers of an interrupted run of this module.
    for ns in client.list("Namespace")[0]:
        if ns["metadata"]["name"].startswith("it-deploy-"):
            client.delete("Namespace", ns["metadata"]["name"])
    for pv in client.list("PersistentVolume")[0]:
        if pv["metadata"]["name"].startswith("it-deploy-"):
            client.delete("PersistentVolume", pv["metadata"]["name"])
    ok(on_host(CLEAN_STORAGE, check=False), "cleaning the test workload's storage")

    ok(
        run_playbook("layer4_workload_storage.yml", "-l", HOST, "-e", f"strata_workload_name={WORKLOAD}"),
        "layer 4",
    )

    www = tmp_path_factory.mktemp("www")
    for name, size in zip(FIRST + SECOND, (768 * 1024, 128 * 1024, 768 * 1024, 128 * 1024)):
        make_archive(www, name, size)
    gateway = docker(
        "network", "inspect", NETWORK, "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}"
    ).stdout.strip()
    rpc = SolanaRpcStandIn(start_slot=SLOT + 3_500, host="0.0.0.0")
    first = LabNginx(www, full=FIRST[0], incremental=FIRST[1])
    second = LabNginx(www, full=SECOND[0], incremental=SECOND[1])
    with rpc, first, second:
        rpc_url = f"http://{gateway}:{rpc.port}"
        reach = on_host(
            f"curl -sS -o /dev/null -w '%{{http_code}}' http://{gateway}:{first.port}/{FIRST[0]}", check=False
        )
        if reach.stdout.strip() != "200":
            skip_or_fail(f"{HOST} cannot reach the test machine at {gateway}: {reach.stdout}{reach.stderr}")
        ns = f"it-deploy-{uuid.uuid4().hex[:6]}"
        extra = {
            "strata_workload_name": WORKLOAD,
            "strata_namespace": ns,
            "workload_deploy_termination_grace_period": 1,
            "workload_deploy_timeout": 60,
            "workload_deploy_snapshot_enabled": True,
            "workload_deploy_snapshot_fetch_poll": 1,
            "workload_deploy_rpc_endpoints": [rpc_url],
            "workload_deploy_snapshot_sources": [f"http://{gateway}:{first.port}"],
            "workload_deploy_snapshot_fetch_options": {
                "min_speed": 0,
                "speed_test_seconds": 0.2,
                "connections_per_server": 2,
                "split": 4,
                "min_split_size": 128 * 1024,
                "timeout": 5,
            },
        }
        vars_file = tmp_path_factory.mktemp("vars") / "extra.json"
        vars_file.write_text(json.dumps(extra))
        second_vars = vars_file.with_name("second.json")
        second_vars.write_text(
            json.dumps({"workload_deploy_snapshot_sources": [f"http://{gateway}:{second.port}"]})
        )
        yield {
            "client": client,
            "ns": ns,
            "vars": f"@{vars_file}",
            "second_source": f"@{second_vars}",
            "logs": tmp_path_factory.mktemp("playbook-logs"),
            "runs": 0,
        }
        client.delete("Namespace", ns)
        for pv in client.list("PersistentVolume")[0]:
            if pv["metadata"]["name"].startswith(ns + "-"):
                client.delete("PersistentVolume", pv["metadata"]["name"])
    ok(on_host(CLEAN_STORAGE, check=False), "cleaning the test workload's storage")


def play(bed, name, *args):
    """Run a playbook with the test's extra vars; its output is kept in the log directory."""
    proc = run_playbook(name, "-e", bed["vars"], *args)
    bed["runs"] += 1
    log = bed["logs"] / "{:02d}-{}{}.log".format(bed["runs"], name, "-check" if "--check" in args else "")
    log.write_text(" ".join(args) + "\n" + proc.stdout + proc.stderr)
    return proc


def test_deploy_fetches_a_snapshot_and_starts_on_the_storage_node(bed):
    client, ns = bed["client"], bed["ns"]
    start = time.monotonic()
    proc = ok(play(bed, "layer5_deploy.yml"), "layer5_deploy.yml")
    elapsed = time.monotonic() - start
    # Created at 0 and held there until the snapshot was in place.
    assert "stopped: 0 pod(s) gone (it was at 0 replicas already)" in text(proc), proc.stdout
    assert "missing: local slot none" in text(proc)
    pod = assert_running(client, ns)
    deployment = client.get("Deployment", WORKLOAD, ns)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/hostname": HOST}
    assert pv_paths(client, ns) == {
        f"{ns}-ledger": f"/mnt/{WORKLOAD}/ledger",
        f"{ns}-snapshots": f"/mnt/{WORKLOAD}/snapshots",
        f"{ns}-log": f"/mnt/{WORKLOAD}/log",
        f"{ns}-accounts": f"/mnt/{WORKLOAD}/ramdisk/accounts",
    }
    for name in VOLUMES:
        pvc = client.get("PersistentVolumeClaim", f"{WORKLOAD}-{name}", ns)
        assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["volumeName"] == f"{ns}-{name}"
    assert set(FIRST) <= set(host_files(VOLUMES["snapshots"])), host_files(VOLUMES["snapshots"])
    print(f"first deploy: {elapsed:.1f} s")


def test_second_run_and_check_mode_change_nothing(bed):
    client, ns = bed["client"], bed["ns"]
    before = assert_running(client, ns)["metadata"]["uid"]
    again = ok(play(bed, "layer5_deploy.yml"), "second layer5_deploy.yml")
    assert changed(again) == 0, again.stdout[-4000:]
    check = ok(play(bed, "layer5_deploy.yml", "--check", "--diff"), "layer5_deploy.yml --check")
    assert changed(check) == 0, check.stdout[-4000:]
    assert assert_running(client, ns)["metadata"]["uid"] == before


# Every operator flow in check mode on the running workload: each must succeed, and neither the
# cluster nor the host may differ afterwards (issue 20, point 3). Destructive ones are asked for
# their most destructive form (a hold, a wipe).
CHECK_MODE_FLOWS = {
    "stop": ("stop.yml",),
    "stop-hold": ("stop.yml", "-e", '{"hold": true, "hold_reason": "check mode"}'),
    "start": ("start.yml",),
    # This test's workload lives on HOST only: the flows over every host are limited to it.
    "layer4": ("layer4_workload_storage.yml", "--limit", HOST),
    "layer5": ("layer5_deploy.yml",),
    "health-check": ("health_check.yml", "--limit", f"{HOST},localhost"),
    "fix-pv-mounts": ("fix_pv_mounts.yml",),
    "recover": ("recover.yml",),
    "redeploy-wipe": ("redeploy.yml", "-e", "wipe=ledger,ramdisk"),
    "teardown-wipe": ("teardown.yml", "-e", "wipe=ledger,snapshots,log,ramdisk"),
}


def fingerprint(client, ns, root=ROOT):
    """The workload's objects (uid, generation, spec, labels, annotations), its PVs, and on the lab
    host its fstab lines, mounts, ZFS datasets with their local properties and snapshots, and files
    (name, size, mode). Only the workload's: other test files change the shared lab host meanwhile."""
    objects = []
    for kind in ("Namespace", "Deployment", "Pod", "PersistentVolumeClaim", "PersistentVolume"):
        items = [client.get("Namespace", ns)] if kind == "Namespace" else client.list(kind, ns)[0]
        objects += [
            (
                kind,
                o["metadata"]["name"],
                o["metadata"]["uid"],
                o["metadata"].get("generation"),
                json.dumps(
                    [o.get("spec"), o["metadata"].get("labels"), o["metadata"].get("annotations")],
                    sort_keys=True,
                ),
            )
            for o in items
            if kind != "PersistentVolume" or o["metadata"]["name"].startswith(ns + "-")
        ]
    host = on_host(
        f"grep -F ' {root}' /etc/fstab; findmnt -rn -o TARGET,FSTYPE,OPTIONS | grep -F '{root}' | sort;"
        f" zfs get -H -r -s local -o name,property,value all {DATASET};"
        f" zfs list -H -t snapshot -o name -r {DATASET};"
        f" find {root} -printf '%p %s %m\\n' | sort"
    ).stdout
    return sorted(objects), host


@pytest.mark.parametrize("flow", list(CHECK_MODE_FLOWS.values()), ids=list(CHECK_MODE_FLOWS))
def test_every_flow_in_check_mode_changes_nothing(bed, flow):
    client, ns = bed["client"], bed["ns"]
    assert_running(client, ns)
    before = fingerprint(client, ns)
    playbook, *extra = flow
    ok(play(bed, playbook, "--check", "--diff", *extra), f"{' '.join(flow)} --check --diff")
    after = fingerprint(client, ns)
    assert after[1] == before[1], "the lab host changed in check mode"
    assert after[0] == before[0], "the workload's objects changed in check mode"


def test_a_workload_held_stopped_stays_stopped_until_start(bed):
    client, ns = bed["client"], bed["ns"]
    held = '{"hold": true, "hold_reason": "disk swap"}'
    ok(play(bed, "stop.yml", "-e", held), "stop.yml -e hold=true")
    deployment = client.get("Deployment", WORKLOAD, ns)
    assert deployment["spec"]["replicas"] == 0 and pods(client, ns) == []
    assert deployment["metadata"]["annotations"]["strata.io/held-stopped"] == "disk swap"

    # A later converge leaves it at 0 and says why.
    converge = ok(play(bed, "layer5_deploy.yml"), "layer5_deploy.yml while held")
    assert changed(converge) == 0, converge.stdout[-4000:]
    assert f"{ns}/{WORKLOAD} is held stopped (disk swap; playbooks/stop.yml -e hold=true)" in text(converge)
    assert client.get("Deployment", WORKLOAD, ns)["spec"]["replicas"] == 0 and pods(client, ns) == []

    started = ok(play(bed, "start.yml"), "start.yml")
    assert changed(started) > 0
    assert_running(client, ns)
    assert "strata.io/held-stopped" not in (
        client.get("Deployment", WORKLOAD, ns)["metadata"].get("annotations") or {}
    )
    again = ok(play(bed, "start.yml"), "second start.yml")
    assert changed(again) == 0, again.stdout[-4000:]


def test_wipe_without_confirmation_fails_and_changes_nothing(bed):
    client, ns = bed["client"], bed["ns"]
    on_host(f"echo shreds > {VOLUMES['ledger']}/shreds.bin")
    pod = assert_running(client, ns)["metadata"]["uid"]
    deployment = client.get("Deployment", WORKLOAD, ns)["metadata"]["uid"]
    proc = play(bed, "redeploy.yml", "-e", "wipe=ledger")
    assert proc.returncode != 0
    assert (
        f"Refusing to wipe ledger of {ns} on {HOST}: confirm_wipe must be the namespace ({ns}) and is not set"
        in text(proc)
    )
    assert changed(proc) == 0
    proc = play(bed, "recover.yml", "-e", "confirm_wipe=wrong")
    assert proc.returncode != 0
    assert (
        f"Refusing to wipe ramdisk, snapshots of {ns} on {HOST}: "
        f"confirm_wipe must be the namespace ({ns}), got wrong" in text(proc)
    )
    assert changed(proc) == 0
    assert client.get("Deployment", WORKLOAD, ns)["metadata"]["uid"] == deployment
    assert assert_running(client, ns)["metadata"]["uid"] == pod
    assert host_files(VOLUMES["ledger"]) == ["shreds.bin"]
    assert set(FIRST) <= set(host_files(VOLUMES["snapshots"]))


def test_check_mode_lists_what_a_wipe_would_delete(bed):
    client, ns = bed["client"], bed["ns"]
    on_host(f"echo accounts > {VOLUMES['accounts']}/acct.bin; echo old > {VOLUMES['snapshots']}/{OLD}")
    pod = assert_running(client, ns)["metadata"]["uid"]
    before = {path: host_files(path) for path in (*VOLUMES.values(), RAMDISK)}
    proc = ok(play(bed, "recover.yml", "--check"), "recover.yml --check")
    out = text(proc)
    assert f"Would delete in ZFS dataset {DATASET}/snapshots at {VOLUMES['snapshots']}" in out
    assert f"Would delete in tmpfs at {RAMDISK}" in out
    for name in (*FIRST, OLD):
        assert f"{VOLUMES['snapshots']}/{name}" in out
    assert f"{RAMDISK}/accounts" in out
    assert f"{VOLUMES['ledger']}/shreds.bin" not in out  # the ledger is kept
    assert f"-e confirm_wipe={ns}" in out
    assert {path: host_files(path) for path in before} == before
    assert assert_running(client, ns)["metadata"]["uid"] == pod


def test_recover_keeps_the_ledger_and_replaces_ramdisk_and_snapshots(bed):
    client, ns = bed["client"], bed["ns"]
    old_pod = assert_running(client, ns)["metadata"]["uid"]
    proc = ok(play(bed, "recover.yml", "-e", bed["second_source"], "-e", f"confirm_wipe={ns}"), "recover.yml")
    assert changed(proc) > 0
    assert host_files(VOLUMES["ledger"]) == ["shreds.bin"]
    assert host_files(RAMDISK) == ["accounts"] and host_files(VOLUMES["accounts"]) == []
    snapshots = host_files(VOLUMES["snapshots"])
    assert set(SECOND) <= set(snapshots) and not ({OLD, *FIRST} & set(snapshots)), snapshots
    # Still the dataset and the tmpfs of layer 4.
    assert (
        on_host(f"zfs get -H -o value mountpoint {DATASET}/snapshots").stdout.strip() == VOLUMES["snapshots"]
    )
    assert on_host(f"findmnt -n -o FSTYPE {RAMDISK}").stdout.strip() == "tmpfs"
    assert assert_running(client, ns)["metadata"]["uid"] != old_pod


def test_redeploy_with_a_confirmed_wipe(bed):
    client, ns = bed["client"], bed["ns"]
    on_host(f"echo log > {VOLUMES['log']}/validator.log; echo acct > {VOLUMES['accounts']}/acct.bin")
    deployment = client.get("Deployment", WORKLOAD, ns)["metadata"]["uid"]
    proc = ok(play(bed, "redeploy.yml", "-e", "wipe=log,ramdisk", "-e", f"confirm_wipe={ns}"), "redeploy.yml")
    assert "fresh: local slot" in text(proc)  # the kept snapshot is used, nothing downloaded
    assert client.get("Deployment", WORKLOAD, ns)["metadata"]["uid"] != deployment
    assert_running(client, ns)
    assert host_files(VOLUMES["log"]) == [] and host_files(VOLUMES["accounts"]) == []
    assert host_files(VOLUMES["ledger"]) == ["shreds.bin"]
    assert set(SECOND) <= set(host_files(VOLUMES["snapshots"]))
    assert len(pv_paths(client, ns)) == 4


def wait_for(client, kind, ns, predicate, timeout=30):
    return client.watch_until(kind, predicate, ns, timeout=timeout)


def gone(name):
    return lambda items: name not in [i["metadata"]["name"] for i in items]


class HostValidator:
    """The stand-in validator (k8s_fixtures.VALIDATOR_SERVER, admin socket under its ledger) and
    an agave 2.2 CLI (before 3.0: exit returns at once unless given --wait-for-exit), both inside
    the lab host, where the flows run the graceful exit."""

    def __init__(self, tmp_path, mode="normal", version="2.2.14"):
        self.base = f"/tmp/strata-it-agave-{uuid.uuid4().hex[:6]}"
        files = tmp_path / self.base.rsplit("/", 1)[-1]
        (files / "ledger").mkdir(parents=True)
        (files / "validator.py").write_text(VALIDATOR_SERVER)
        (files / "agave-validator").write_text(agave_cli(version, python="/usr/bin/python3"))
        (files / "agave-validator").chmod(0o755)
        docker("cp", str(files), f"{HOST}:{self.base}")
        server = f"python3 {self.base}/validator.py {self.base}/ledger {mode}"
        self.pid = on_host(f"nohup {server} >{self.base}/server.log 2>&1 & echo $!").stdout.strip()
        on_host(
            f"for i in $(seq 100); do grep -q ready {self.base}/server.log && exit 0; sleep 0.1; done; exit 1"
        )

    def extra_vars(self, tmp_path, **more):
        path = tmp_path / f"exit-{self.base.rsplit('-', 1)[-1]}.json"
        argv = [f"{self.base}/agave-validator", "--ledger", f"{self.base}/ledger", "exit", "--force"]
        path.write_text(json.dumps(dict(workload_deploy_exit_command=argv, **more)))
        return f"@{path}"

    def alive(self):
        return on_host(f"kill -0 {self.pid}", check=False).returncode == 0

    def exited_at(self):
        proc = on_host(f"cat {self.base}/ledger/exited_at", check=False)
        return float(proc.stdout) if proc.returncode == 0 else None

    def remove(self):
        on_host(f"kill -9 {self.pid} 2>/dev/null; rm -rf {self.base}", check=False)


def test_stop_runs_the_graceful_exit_through_the_module_on_the_host(bed, tmp_path):
    """stop.yml runs the exit with safe_shutdown state=exited on the workload host (its deadline,
    SIGTERM, SIGKILL; agave's wait flag), not with ansible.builtin.command beside it."""
    client, ns = bed["client"], bed["ns"]
    assert_running(client, ns)
    hung = HostValidator(tmp_path, mode="hang")
    try:
        proc = play(bed, "stop.yml", "-e", hung.extra_vars(tmp_path, workload_deploy_exit_timeout=2))
        out = text(proc)
        assert proc.returncode != 0, out[-3000:]
        assert "did not finish within exit_timeout (2 s) and was killed" in out
        assert "Nothing else was done (this state scales nothing)" in out
        assert client.get("Deployment", WORKLOAD, ns)["spec"]["replicas"] == 1
        assert_running(client, ns)
        assert hung.alive()  # the workload itself is left alone
    finally:
        hung.remove()

    validator = HostValidator(tmp_path)
    try:
        started = time.time()
        proc = ok(
            play(bed, "stop.yml", "-e", validator.extra_vars(tmp_path)), "stop.yml with the exit command"
        )
        out = text(proc)
        assert "ran here (agave 2.2.14 before 3.0: --wait-for-exit added" in out, out[-3000:]
        assert float(re.search(r"rc 0 after ([0-9.]+) s", out).group(1)) >= 1.0  # it waited
        exited_at = validator.exited_at()
        assert exited_at is not None and started < exited_at < time.time()
        assert not validator.alive()
        assert "1 pod(s) gone, scaled from 1 to 0" in out
        assert pods(client, ns) == [] and client.get("Deployment", WORKLOAD, ns)["spec"]["replicas"] == 0
    finally:
        validator.remove()
    # running again for the tests that follow
    client.scale("Deployment", WORKLOAD, ns, 1)
    wait_for(client, "Pod", ns, lambda items: len(items) == 1 and ready(items[0]), timeout=60)


def test_stop_then_fix_pv_mounts_repairs_a_wrong_pv(bed):
    client, ns = bed["client"], bed["ns"]
    on_host(f"echo log > {VOLUMES['log']}/kept.log")
    proc = ok(play(bed, "stop.yml"), "stop.yml")
    assert changed(proc) > 0
    assert pods(client, ns) == [] and client.get("Deployment", WORKLOAD, ns)["spec"]["replicas"] == 0

    # The untranslated-path bug: the host path used as is inside the node.
    pv_name, pvc_name = f"{ns}-log", f"{WORKLOAD}-log"
    pv = client.get("PersistentVolume", pv_name)
    pvc = client.get("PersistentVolumeClaim", pvc_name, ns)
    client.delete("PersistentVolumeClaim", pvc_name, ns)
    wait_for(client, "PersistentVolumeClaim", ns, gone(pvc_name))
    client.delete("PersistentVolume", pv_name)
    wait_for(client, "PersistentVolume", None, gone(pv_name))
    spec = dict(pv["spec"], hostPath={"path": VOLUMES["log"], "type": "Directory"})
    spec["claimRef"] = {"namespace": ns, "name": pvc_name}
    client.create(
        "PersistentVolume", {"metadata": {"name": pv_name, "labels": pv["metadata"]["labels"]}, "spec": spec}
    )
    client.create(
        "PersistentVolumeClaim",
        {"metadata": {"name": pvc_name, "labels": pvc["metadata"]["labels"]}, "spec": pvc["spec"]},
        ns,
    )
    client.scale("Deployment", WORKLOAD, ns, 1)
    wait_for(client, "Pod", ns, lambda items: len(items) == 1 and ready(items[0]))

    refused = play(bed, "layer5_deploy.yml")
    assert refused.returncode != 0 and "run playbooks/fix_pv_mounts.yml" in text(refused)
    assert changed(refused) == 0

    plan = ok(play(bed, "fix_pv_mounts.yml", "--check"), "fix_pv_mounts.yml --check")
    assert f"hostPath {VOLUMES['log']} should be /mnt/{WORKLOAD}/log" in text(plan)
    assert pv_paths(client, ns)[pv_name] == VOLUMES["log"]

    proc = ok(play(bed, "fix_pv_mounts.yml"), "fix_pv_mounts.yml")
    assert changed(proc) > 0
    assert pv_paths(client, ns)[pv_name] == f"/mnt/{WORKLOAD}/log"
    assert client.get("PersistentVolumeClaim", pvc_name, ns)["status"]["phase"] == "Bound"
    assert_running(client, ns)
    assert host_files(VOLUMES["log"]) == ["kept.log"]


def test_teardown_keeps_the_datasets(bed):
    client, ns = bed["client"], bed["ns"]
    ok(play(bed, "teardown.yml"), "teardown.yml")
    assert ns not in [n["metadata"]["name"] for n in client.list("Namespace")[0]]
    assert pv_paths(client, ns) == {}
    datasets = on_host(f"zfs list -H -o name -r {DATASET}").stdout.split()
    assert sorted(datasets) == sorted([DATASET] + [f"{DATASET}/{d}" for d in ("ledger", "snapshots", "log")])
    assert host_files(VOLUMES["ledger"]) == ["shreds.bin"]
    assert host_files(VOLUMES["log"]) == ["kept.log"]
    assert set(SECOND) <= set(host_files(VOLUMES["snapshots"]))
