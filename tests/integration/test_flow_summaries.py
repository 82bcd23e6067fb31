"""The flows' one-line summaries, the rollback snapshot before a wipe and check mode naming what
teardown/redeploy would delete, run as operators run them: the real playbooks on the lab inventory,
against the test bed's control plane, the lab host strata-lab-1 and its real zfs-fuse pool `lab`.

A workload of its own (`itsummary`, datasets lab/DATA/srv/kind/itsummary/..., namespace
it-summary-<random>), deployed once without the snapshot step (no download needed here), so that
it never meets test_deploy_flows.py's workload. The tests run in file order and end with the
teardown; the fixture removes everything.
"""

import json
import os
import re
import uuid

import pytest

from ansible_collections.strata.ops.plugins.module_utils import k8s

from .k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .k8s_fixtures import run_playbook
from .test_deploy_flows import (
    HOST,
    assert_running,
    clean_storage,
    fingerprint,
    host_files,
    ok,
    on_host,
    pods,
    text,
)

pytestmark = [pytest.mark.needs("docker"), pytest.mark.needs("k8s"), pytest.mark.needs("zfs")]

WORKLOAD = "itsummary"
ROOT = f"/srv/kind/{WORKLOAD}"
DATASET = f"lab/DATA/srv/kind/{WORKLOAD}"
LEDGER = f"{ROOT}/ledger"
PREFIX = "strata-prewipe-"
GUIDE = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "operator-guide.md")


def guide_rollback(snapshot):
    """docs/operator-guide.md's prewipe-rollback example for ``snapshot`` ({"rollback": command,
    "clone": command}): this test runs the guide's own commands, so the guide cannot drift."""
    with open(GUIDE) as handle:
        block = re.search(r"<!-- example: prewipe-rollback;.*?-->\n```sh\n(.*?)\n```", handle.read(), re.S)
    dataset, stamp = snapshot.split("@" + PREFIX)
    commands = {}
    for line in block.group(1).splitlines():
        command = line.split("#")[0].strip().replace("POOL/DATASET", dataset).replace("STAMP", stamp)
        commands[command.split()[1]] = command
    return commands


def snapshots(dataset):
    out = on_host(f"zfs list -H -t snapshot -o name -d 1 {dataset}").stdout.split()
    return sorted(name for name in out if name.startswith(dataset + "@"))


def summary(proc, flow):
    """The flow's summary line (the debug message that starts with FLOW:, quoted or not)."""
    pattern = rf"msg: '?({re.escape(flow)}(?: \(check mode\))?: .*?)'? (?:PLAY RECAP|TASK \[)"
    match = re.search(pattern, text(proc))
    assert match, f"no summary line of {flow}:\n{proc.stdout[-3000:]}"
    return match.group(1).replace("''", "'")


@pytest.fixture(scope="module")
def bed(lab_cluster, tmp_path_factory):
    client = k8s.get_client(lab_cluster["kubeconfig"])
    for ns in client.list("Namespace")[0]:  # leftovers of an interrupted run
        if ns["metadata"]["name"].startswith("it-summary-"):
            client.delete("Namespace", ns["metadata"]["name"])
    ok(on_host(clean_storage(WORKLOAD), check=False), "cleaning the test workload's storage")
    ok(
        run_playbook("layer4_workload_storage.yml", "-l", HOST, "-e", f"strata_workload_name={WORKLOAD}"),
        "layer 4",
    )
    ns = f"it-summary-{uuid.uuid4().hex[:6]}"
    extra = {
        "strata_workload_name": WORKLOAD,
        "strata_namespace": ns,
        "workload_deploy_termination_grace_period": 1,
        "workload_deploy_timeout": 60,
        "workload_deploy_snapshot_enabled": False,
    }
    vars_file = tmp_path_factory.mktemp("vars") / "extra.json"
    vars_file.write_text(json.dumps(extra))
    yield {"client": client, "ns": ns, "vars": f"@{vars_file}"}
    client.delete("Namespace", ns)
    for pv in client.list("PersistentVolume")[0]:
        if pv["metadata"]["name"].startswith(ns + "-"):
            client.delete("PersistentVolume", pv["metadata"]["name"])
    ok(on_host(clean_storage(WORKLOAD), check=False), "cleaning the test workload's storage")


def play(bed, name, *args):
    return run_playbook(name, "-e", bed["vars"], *args)


def test_deploy_stop_and_start_end_with_a_summary_line(bed):
    client, ns = bed["client"], bed["ns"]
    deployed = ok(play(bed, "layer5_deploy.yml"), "layer5_deploy.yml")
    assert_running(client, ns)
    line = summary(deployed, "layer5_deploy.yml")
    assert re.fullmatch(rf"layer5_deploy\.yml: Deployment {ns}/{WORKLOAD} running: .* in \d+ s", line), line

    stopped = ok(play(bed, "stop.yml", "-e", '{"hold": true, "hold_reason": "disk swap"}'), "stop.yml")
    line = summary(stopped, "stop.yml")
    assert re.fullmatch(rf"stop\.yml: {ns}/{WORKLOAD} stopped 1 -> 0; held: disk swap in \d+ s", line), line
    assert pods(client, ns) == []

    started = ok(play(bed, "start.yml"), "start.yml")
    assert re.fullmatch(rf"start\.yml: .*{WORKLOAD}.* in \d+ s", summary(started, "start.yml"))
    assert_running(client, ns)


@pytest.mark.parametrize("flow", ["teardown.yml", "redeploy.yml"])
def test_check_mode_names_what_would_go_and_changes_nothing(bed, flow):
    client, ns = bed["client"], bed["ns"]
    on_host(f"echo shreds > {LEDGER}/shreds.bin")
    before = fingerprint(client, ns, ROOT)
    proc = ok(play(bed, flow, "--check", "-e", "wipe=ledger,ramdisk"), f"{flow} --check")
    out = text(proc)
    assert f"Would delete Namespace {ns} with everything in it" in out, out[-4000:]
    for obj in (f"Deployment {ns}/{WORKLOAD}", f"PersistentVolumeClaim {ns}/{WORKLOAD}-ledger"):
        assert obj in out
    assert f"PersistentVolumes {ns}-accounts, {ns}-ledger, {ns}-log, {ns}-snapshots" in out
    assert f"Would delete in ZFS dataset {DATASET}/ledger at {LEDGER}" in out
    assert f"{LEDGER}/shreds.bin" in out
    stamp = r"\d{8}T\d{6}Z"
    assert re.search(rf"Would take rollback snapshot\(s\) {DATASET}/ledger@{PREFIX}{stamp}", out), out
    assert f"The ramdisk at {ROOT}/ramdisk is a tmpfs and cannot be snapshotted" in out
    assert "zfs rollback DATASET@SNAPSHOT" in out
    line = summary(proc, flow)
    assert line.startswith(f"{flow} (check mode): would remove Namespace {ns} (")
    assert re.search(
        rf"would wipe ledger, ramdisk \(\d+ entries\); rollback: {DATASET}/ledger@{PREFIX}", line
    ), line
    assert fingerprint(client, ns, ROOT) == before
    assert snapshots(f"{DATASET}/ledger") == []


def test_wipe_snapshots_first_keeps_n_and_rolls_back(bed):
    client, ns = bed["client"], bed["ns"]
    ledger = f"{DATASET}/ledger"
    on_host(f"echo shreds > {LEDGER}/shreds.bin; echo more > {LEDGER}/more.bin")
    # An older rollback point of ours (destroyed by keep=1) and someone else's (never touched).
    on_host(f"zfs snapshot {ledger}@{PREFIX}20000101T000000Z; zfs snapshot {ledger}@operator-own")
    wipe = ("-e", "wipe=ledger,ramdisk", "-e", f"confirm_wipe={ns}")
    proc = ok(play(bed, "teardown.yml", *wipe), "teardown.yml with a wipe")
    assert host_files(LEDGER) == []
    taken = [s for s in snapshots(ledger) if s.startswith(f"{ledger}@{PREFIX}")]
    assert len(taken) == 1 and not taken[0].endswith("20000101T000000Z"), snapshots(ledger)
    assert f"{ledger}@operator-own" in snapshots(ledger)
    out = text(proc)
    old = f"{ledger}@{PREFIX}20000101T000000Z"
    assert f"Took rollback snapshot(s) {taken[0]}; destroyed the older {old}" in out
    line = summary(proc, "teardown.yml")
    assert line.startswith(f"teardown.yml: removed Namespace {ns} (") and "4 PVs" in line, line
    assert "wiped ledger, ramdisk" in line and f"rollback: {taken[0]}" in line, line
    assert ns not in [n["metadata"]["name"] for n in client.list("Namespace")[0]]

    # The snapshot holds what the wipe deleted: read it through a clone, the guide's way to copy
    # files out (the clone is below DATASET, which the fixture destroys with -r).
    on_host(guide_rollback(taken[0])["clone"])
    assert host_files(f"{ROOT}/ledger-restore") == ["more.bin", "shreds.bin"]

    # keep=2: a second wipe keeps both rollback points (the namespace is gone already: no-op there).
    on_host(f"echo again > {LEDGER}/again.bin")
    keep2 = ("-e", "workload_lifecycle_wipe_snapshot_keep=2")
    proc = ok(play(bed, "teardown.yml", *wipe, *keep2), "second wipe")
    assert host_files(LEDGER) == []
    ours = [s for s in snapshots(ledger) if s.startswith(f"{ledger}@{PREFIX}")]
    assert len(ours) == 2 and taken[0] in ours, ours
    assert "destroys no older one" in text(proc)

    # zfs rollback to the newest undoes the second wipe. zfs-fuse in the lab container rolls back,
    # then fails to write /proc/sys/vm/drop_caches (read-only there): that message is accepted.
    newest = next(s for s in ours if s != taken[0])
    rollback = on_host(guide_rollback(newest)["rollback"], check=False)
    assert rollback.returncode == 0 or rollback.stderr.strip() == (
        "drop_caches failed: snapshot permissions cannot be modified"
    ), rollback.stderr
    assert host_files(LEDGER) == ["again.bin"]
