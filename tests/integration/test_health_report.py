"""playbooks/health_check.yml with health_check_report_dir on the real lab, and the page it writes
opened in a real browser (Debian's chromium, headless), as an operator would open it.

One healthy run, then one with a broken layer 4 invariant on strata-lab-2 (a 1 MiB tmpfs mounted
over its 64 MiB ramdisk; unmounted again in a finally) and a crash-looping pod of a Deployment
on strata-lab-1. Both runs and the break hold the lab lock, so no other playbook sees the break.
The browser comes from tests/testbed/browser; when it cannot be installed the tests fail."""

import json
import os
import re
import subprocess
import sys

import pytest
from lab_k8s import deployment

from ansible_collections.strata.ops.plugins.module_utils import k8s
from tests.unit.fakes.page import Dom

from .browser import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .browser import browse, console_errors, png_pixels, screenshots
from .conftest import REPO, lab_lock
from .k8s_fixtures import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .k8s_fixtures import INVENTORY, recap, run_playbook
from .test_cluster_health import crashloop

pytestmark = [pytest.mark.needs("k8s"), pytest.mark.needs("docker")]

LAB_NODES = ["strata-lab-1", "strata-lab-2"]
BROKEN_HOST = "strata-lab-2"
RAMDISK = "/srv/kind/solana/ramdisk"
MIB64 = 64 * 1024 * 1024
FIX4 = "Layer 4 fixes it: run playbooks/layer4_workload_storage.yml."


def flat(text):
    return " ".join(text.split())


def header_colours(shot, height=48):
    """The colours of the top ``height`` pixel rows: what is seen before any scrolling."""
    _w, _h, rows = png_pixels(shot)
    return {pixel for row in rows[:height] for pixel in row[::2]}


def near(colour, want, slack=40):
    return all(abs(a - b) <= slack for a, b in zip(colour, want))


def health_run(report_dir, namespace, *extra, lock=True):
    args = [
        "-e",
        f"health_check_report_dir={report_dir}",
        "-e",
        json.dumps({"health_check_namespaces": [namespace], "health_check_nodes": LAB_NODES}),
        *extra,
    ]
    if lock:
        return run_playbook("health_check.yml", *args)
    # the caller holds the lab lock (a second flock in this process would wait for itself)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    argv = ["ansible-playbook", "-i", INVENTORY, os.path.join(REPO, "playbooks", "health_check.yml"), *args]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)


def on_host(host, script):
    proc = subprocess.run(
        ["docker", "exec", host, "sh", "-c", script], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"{host}: {script}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def ramdisk_mounts(host):
    """The tmpfs mounts at the ramdisk path, bottom first (size in KiB as findmnt prints it)."""
    return on_host(
        host, f"grep ' {RAMDISK} ' /proc/self/mountinfo | sed 's/.*size=\\([0-9]*k\\).*/\\1/'"
    ).split()


def run_dir_of(proc):
    match = re.search(r"- (\S+)/report\.html", proc.stdout)
    assert match, proc.stdout[-3000:]
    return match.group(1)


def load(run_dir):
    with open(os.path.join(run_dir, "report.json")) as handle:
        return json.load(handle)


def make_workload(client, ns, name, node="strata-lab-1"):
    spec = {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "containers": [{"name": "worker", "image": "registry.invalid/worker:1"}],
        "terminationGracePeriodSeconds": 1,
    }
    client.create("Deployment", deployment(name, 1, spec), ns)
    client.watch_until("Deployment", k8s.named_ready([name], k8s.workload_is_ready), ns, timeout=60)
    return client.watch_until(
        "Pod", k8s.all_items(k8s.pod_is_ready, minimum=1), ns, label_selector=f"app={name}", timeout=60
    )["items"][0]


@pytest.fixture(scope="module")
def page_bed(chromium, tmp_path_factory):
    """The browser and one report dir for the module's runs (the index lists both)."""
    return {"chromium": chromium, "report_dir": str(tmp_path_factory.mktemp("health-reports"))}


def test_healthy_run_writes_a_green_page(lab_cluster, k8s_client, k8s_namespace, page_bed, tmp_path):
    chromium, report_dir = page_bed["chromium"], page_bed["report_dir"]
    make_workload(k8s_client, k8s_namespace, "fine")
    proc = health_run(report_dir, k8s_namespace)
    assert proc.returncode == 0, proc.stdout[-4000:]
    counts = recap(proc.stdout)
    assert all(counts[h]["changed"] == 0 and counts[h]["failed"] == 0 for h in LAB_NODES), counts
    assert counts["localhost"]["changed"] == 1  # the report files, on the controller only
    run_dir = run_dir_of(proc)
    data = load(run_dir)
    assert data["healthy"] is True and data["problems"] == 0, json.dumps(data["hosts"], indent=1)[:3000]
    assert set(data["hosts"]) >= set(LAB_NODES)
    assert all(row["ok"] for host in LAB_NODES for row in data["hosts"][host]["rows"])
    assert data["counts"]["nodes"] == 2 and data["counts"]["workloads"] == 1 and data["counts"]["pods"] == 1

    html_path = os.path.join(run_dir, "report.html")
    size = os.path.getsize(html_path)
    print(f"healthy report.html: {size} bytes at {html_path}")
    dom_text, err = browse(chromium, html_path, "--dump-dom")
    assert console_errors(err) == [], console_errors(err)
    dom = Dom(dom_text)
    assert "script" not in dom.tags
    assert flat(dom.ids["verdict"]).startswith(
        "All fine: storage of 2 hosts as layers 2 and 4 want it; cluster 2 nodes"
    )
    assert flat(dom.ids["verdict"]) == data["verdict"]
    assert dom.ids["count-problems"] == "0 problems"
    assert not [r for r in dom.rows if "bad" in r["class"]]
    assert len([r for r in dom.rows if "layer-row" in r["class"]]) == sum(
        len(data["hosts"][h]["rows"]) for h in data["hosts"]
    )
    shots = screenshots(chromium, html_path, str(tmp_path), "healthy")
    seen = header_colours(shots["phone"])
    assert any(near(c, (0xE8, 0xF5, 0xEA), 6) for c in seen), "no green header at the top of the phone view"
    assert not any(near(c, (0xFD, 0xEC, 0xEA), 4) for c in seen)


def crash_loop_workload(client, ns):
    """A Deployment whose one pod crash-loops (reported as a kubelet would, see crashloop), once
    its controller sees the pod not ready."""
    pod = make_workload(client, ns, "worker")
    crashloop(client, ns, pod["metadata"]["name"])
    client.watch_until(
        "Deployment",
        lambda items: bool(items) and items[0].get("status", {}).get("readyReplicas", 0) == 0,
        ns,
        field_selector="metadata.name=worker",
        timeout=60,
    )


def broken_run(client, ns, report_dir, *extra, crash=True):
    """With ``crash`` a crash-looping pod; a 1 MiB tmpfs over the ramdisk of BROKEN_HOST; the
    health check with a report; then the ramdisk as it was (in a finally, under the lab lock)."""
    if crash:
        crash_loop_workload(client, ns)
    with lab_lock():
        before = ramdisk_mounts(BROKEN_HOST)
        assert before == ["65536k"], before
        on_host(BROKEN_HOST, f"mount -t tmpfs -o size=1M,mode=0755 tmpfs {RAMDISK}")
        try:
            proc = health_run(report_dir, ns, *extra, lock=False)
        finally:
            on_host(BROKEN_HOST, f"umount {RAMDISK}")  # the 1 MiB one on top; the ramdisk is back
            assert ramdisk_mounts(BROKEN_HOST) == before
            on_host(BROKEN_HOST, f"test -d {RAMDISK}/accounts")
    return proc


def check_broken_json(proc, ns):
    out = flat(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-4000:]  # rows on the page, not a failed host
    problem = f"{RAMDISK} has 1048576 bytes, should have {MIB64}"
    assert f"{BROKEN_HOST}: {problem}. {FIX4}" in out  # printed by the play as well
    counts = recap(proc.stdout)
    assert all(counts[h]["failed"] == 0 and counts[h]["changed"] == 0 for h in LAB_NODES), counts
    run_dir = run_dir_of(proc)
    data = load(run_dir)
    red = [(h, r) for h, host in data["hosts"].items() for r in host["rows"] if not r["ok"]]
    assert [(h, r["path"], r["check"], r["problem"], r["fix"]) for h, r in red] == [
        (BROKEN_HOST, RAMDISK, "tmpfs", problem, FIX4)
    ]
    cluster = data["cluster"]["problems"]
    by_kind = {p["kind"]: p for p in cluster}
    assert "CrashLoopBackOff" in by_kind["Pod"]["reason"] and by_kind["Pod"]["namespace"] == ns
    assert by_kind["Deployment"]["reason"] == "0/1 replicas ready"
    assert data["problems"] == len(red) + len(cluster) == data["counts"]["problems"]
    assert data["verdict"] == (
        f"{len(red) + len(cluster)} problems: 1 storage invariant broken on {BROKEN_HOST}; "
        f"{len(cluster)} in the cluster (Deployment, Pod)"
    )
    return run_dir, data, problem


def check_broken_page(chromium, html_path, data, problem):
    dom_text, err = browse(chromium, html_path, "--dump-dom")
    assert console_errors(err) == [], console_errors(err)
    dom = Dom(dom_text)
    assert "script" not in dom.tags
    verdict = flat(dom.ids["verdict"])
    assert verdict == data["verdict"]
    assert f"1 storage invariant broken on {BROKEN_HOST}" in verdict and "in the cluster" in verdict
    red_rows = [r for r in dom.rows if "layer-row" in r["class"] and "bad" in r["class"]]
    assert len(red_rows) == 1
    assert red_rows[0]["table"].get("data-host") == BROKEN_HOST
    text = flat(red_rows[0]["text"])
    assert problem in text and FIX4 in text and "tmpfs of 1 MiB" in text and "a tmpfs of 64 MiB" in text
    cluster = data["cluster"]["problems"]
    assert dom.ids["count-problems"] == f"{data['problems']} problems"
    assert dom.ids["count-storage"] == "1 storage" and dom.ids["count-cluster"] == f"{len(cluster)} cluster"
    problem_rows = [r for r in dom.rows if "problem" in r["class"]]
    assert len(problem_rows) == len(cluster)
    assert any("CrashLoopBackOff" in r["text"] for r in problem_rows)
    [workload] = [r for r in dom.rows if "workload" in r["class"]]
    assert "bad" in workload["class"] and "not ready" in workload["text"] and "0/1" in workload["text"]


def check_index(chromium, report_dir, run_dir, data):
    """Both runs of this module, newest first, and the sparkline of their problem counts."""
    index = os.path.join(report_dir, "index.html")
    dom_text, err = browse(chromium, index, "--dump-dom")
    assert console_errors(err) == [], console_errors(err)
    dom = Dom(dom_text)
    runs = [r for r in dom.rows if "run" in r["class"]]
    assert [r["attrs"]["data-stamp"] for r in runs] == sorted(
        (r["attrs"]["data-stamp"] for r in runs), reverse=True
    )
    assert runs[0]["attrs"]["data-stamp"] == os.path.basename(run_dir)
    assert len(runs) == 2, [r["attrs"] for r in runs]
    assert f"problems per run, oldest to newest: 0, {data['problems']}" in dom_text
    assert flat(dom.ids["verdict"]) == f"Latest: {data['verdict']}"
    return index


def test_broken_invariant_and_crashloop_are_red_with_their_fix(
    lab_cluster, k8s_client, k8s_namespace, page_bed, tmp_path
):
    chromium, report_dir = page_bed["chromium"], page_bed["report_dir"]
    proc = broken_run(k8s_client, k8s_namespace, report_dir)
    run_dir, data, problem = check_broken_json(proc, k8s_namespace)
    html_path = os.path.join(run_dir, "report.html")
    print(f"broken report.html: {os.path.getsize(html_path)} bytes at {html_path}")
    check_broken_page(chromium, html_path, data, problem)
    shots = screenshots(chromium, html_path, str(tmp_path), "broken")
    for shot in shots.values():  # the red verdict is what the first screen shows
        seen = header_colours(shot)
        assert any(near(c, (0xFD, 0xEC, 0xEA), 6) for c in seen), f"no red header at the top of {shot}"
        assert any(near(c, (0xB3, 0x26, 0x1E), 60) for c in seen), f"no red verdict text at the top of {shot}"
    index = check_index(chromium, report_dir, run_dir, data)
    screenshots(chromium, index, str(tmp_path), "index")


def test_fail_on_problems_writes_the_page_then_fails_the_host(
    lab_cluster, k8s_client, k8s_namespace, tmp_path
):
    """With a report dir, health_check_fail_on_problems still fails a host whose invariant is
    broken, with the layer's own assert, after the page is written."""
    make_workload(k8s_client, k8s_namespace, "fine")
    report_dir = str(tmp_path / "reports")
    proc = broken_run(
        k8s_client, k8s_namespace, report_dir, "-e", "health_check_fail_on_problems=true", crash=False
    )
    out = flat(proc.stdout)
    assert proc.returncode != 0, out[-3000:]
    data = load(run_dir_of(proc))
    assert data["problems"] == 1 and data["counts"]["storage_problems"] == 1
    counts = recap(proc.stdout)
    assert counts["localhost"]["failed"] == 0 and counts["strata-lab-1"]["failed"] == 0, counts
    assert counts[BROKEN_HOST]["failed"] == 1, counts
    problem = f"{RAMDISK} has 1048576 bytes, should have {MIB64}"
    assert f"Layer 4 invariants broken on {BROKEN_HOST}: {problem}. {FIX4}" in out


# --- the snapshot, storage usage and activity sections, from a real fetch on the lab ---------

SNAP_HOST = "strata-lab-1"
SNAP_DIR = "/srv/kind/solana/snapshots"
SNAP_SLOT = 350_000_000
SNAP_NAME = f"snapshot-{SNAP_SLOT}-7jMmeXZSNcWPrB2RsTdeXfXrsyW5c1BfPjqoLW2X5T7V.tar.zst"
FILL = f"{RAMDISK}/.health-report-fill"


def lab_ansible(host, module, args):
    """``ansible HOST -m strata.ops.MODULE`` on the lab inventory (the caller holds the lab lock)."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    argv = ["ansible", host, "-i", INVENTORY, "-m", f"strata.ops.{module}", "-a", json.dumps(args)]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def served_snapshot(tmp_path):
    """A real zstd archive (3 MiB) behind the test bed's nginx at 1 MiB/s per connection, and the
    stand-in RPC node for the tip, both reachable from the lab hosts."""
    sys.path.insert(0, os.path.join(REPO, "tests", "testbed"))
    from snapshot_server import NginxSnapshotServer  # noqa: PLC0415
    from solana_rpc import SolanaRpcStandIn  # noqa: PLC0415

    raw = tmp_path / "raw"
    raw.write_bytes(os.urandom(3 * 1024 * 1024))
    subprocess.run(["zstd", "-q", "-1", "-f", str(raw), "-o", str(tmp_path / SNAP_NAME)], check=True)
    raw.unlink()
    gateway = subprocess.run(
        ["docker", "network", "inspect", "strata-lab", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    class LabNginx(NginxSnapshotServer):
        def config(self):
            return super().config().replace("listen 127.0.0.1:", "listen 0.0.0.0:")

    nginx = LabNginx(tmp_path, full=SNAP_NAME, rate="1m")
    rpc = SolanaRpcStandIn(start_slot=SNAP_SLOT + 3_500, host="0.0.0.0")
    with nginx, rpc:
        yield {"source": f"http://{gateway}:{nginx.port}", "rpc": f"http://{gateway}:{rpc.port}"}


def test_snapshot_download_pool_usage_and_ramdisk_fill_are_shown(
    lab_cluster, k8s_namespace, page_bed, served_snapshot, tmp_path
):
    """A real snapshot_fetch run on strata-lab-1 (its status file with the rate history), 16 MiB in
    its 64 MiB ramdisk, then the health check: the page shows the slots, the lag against the tip
    with the limit, the rate chart, pool usage and ramdisk fill, and its counts match report.json."""
    chromium = page_bed["chromium"]
    with lab_lock():
        try:
            fetch = lab_ansible(
                SNAP_HOST,
                "snapshot_fetch",
                {
                    "snapshot_dir": SNAP_DIR,
                    "sources": [served_snapshot["source"]],
                    "incremental": False,
                    "min_speed": 0,
                    "speed_test_seconds": 0,
                    "connections_per_server": 1,
                    "split": 1,
                    "status_file": f"{SNAP_DIR}/.strata-fetch-status.json",
                },
            )
            assert fetch.returncode == 0, fetch.stdout[-3000:] + fetch.stderr[-2000:]
            on_host(SNAP_HOST, f"head -c 16777216 /dev/zero > {FILL}")
            # runner isolation's record on the controller, where experiment_enter.yml keeps it for a
            # Helm ConfigMap (the keys runner_isolation/enter.py writes; the role reads only these)
            isolation = tmp_path / "runner_isolation.json"
            isolation.write_text(
                json.dumps(
                    {
                        "operation": "strata.ops.runner_isolation",
                        "format": 1,
                        "recorded_at": "2026-12-03T10:00:00.000Z",
                        "settings": {"node": "strata-lab-2"},
                        "runners": [{"id": 7, "paused": False, "fields": {}}],
                        "workloads": [{"name": "minio"}],
                        "stopped": {},
                    }
                )
            )
            extra = json.dumps(
                {
                    "health_check_rpc_endpoints": [served_snapshot["rpc"]],
                    "health_check_isolation_state_path": str(isolation),
                }
            )
            proc = health_run(page_bed["report_dir"] + "-sections", k8s_namespace, "-e", extra, lock=False)
        finally:
            on_host(SNAP_HOST, f"rm -f {FILL} {SNAP_DIR}/{SNAP_NAME} {SNAP_DIR}/.strata-fetch-status.json")
    assert proc.returncode == 0, proc.stdout[-4000:]
    data = load(run_dir_of(proc))
    host = data["hosts"][SNAP_HOST]

    snap = host["snapshots"]
    assert snap["full"]["slot"] == SNAP_SLOT and snap["incremental"] is None
    assert snap["tip_slot"] is not None and snap["lag_slots"] == snap["tip_slot"] - SNAP_SLOT
    assert snap["verdict"] == "fresh" and snap["max_lag_slots"] == 20000
    download = snap["download"]
    # 3 MiB at 1 MiB/s: a sample a second of the real transfer; the peak is the highest sample (a
    # bound on it would be a timing assertion: one sample's window may hold a burst of the server)
    assert download["state"] == "done" and len(download["rate_history"]) >= 2, download
    rates = [rate for _at, rate in download["rate_history"]]
    assert download["peak_rate_bytes_per_s"] == max(rates) > 0, download
    other = data["hosts"]["strata-lab-2"]["snapshots"]
    assert other["verdict"] == "missing" and other["tip_slot"] is not None

    [ramdisk] = host["usage"]["ramdisks"]
    assert ramdisk["path"] == RAMDISK and ramdisk["used_bytes"] >= 16 * 1024 * 1024
    assert ramdisk["percent"] == round(100.0 * ramdisk["used_bytes"] / MIB64, 1) >= 25.0
    [pool] = host["usage"]["pools"]
    assert pool["name"] == "lab" and pool["health"] == "ONLINE" and pool["size_bytes"] > 0
    assert {d["path"] for d in host["usage"]["datasets"]} >= {"/srv/kind", "/srv/kind/solana", SNAP_DIR}
    assert data["counts"]["problems"] == 0 and data["counts"]["snapshot_warnings"] == 1  # lab-2: missing
    controller = data["controller"]
    assert controller["name"] == "localhost" and "localhost" not in data["hosts"]
    assert controller["activity"]["isolation"]["isolated"] is True
    assert controller["activity"]["isolation"]["node"] == "strata-lab-2"
    assert controller["activity"]["isolation"]["runners"] == 1

    html_path = os.path.join(run_dir_of(proc), "report.html")
    print(f"report.html with the sections: {os.path.getsize(html_path)} bytes at {html_path}")
    check_sections_page(chromium, html_path, data)
    shots = screenshots(chromium, html_path, str(tmp_path), "sections")
    print(f"sections screenshots: {shots}")


def check_sections_page(chromium, html_path, data):
    """What chromium shows of the sections: the same numbers as report.json."""
    host = data["hosts"][SNAP_HOST]
    snap, download = host["snapshots"], host["snapshots"]["download"]
    [ramdisk], [pool] = host["usage"]["ramdisks"], host["usage"]["pools"]
    dom_text, err = browse(chromium, html_path, "--dump-dom")
    assert console_errors(err) == [], console_errors(err)
    dom = Dom(dom_text)
    snaps = {r["attrs"]["data-host"]: r for r in dom.rows if "snap" in r["class"]}
    assert set(snaps) == {name for name, h in data["hosts"].items() if h["snapshots"]}
    text = flat(snaps[SNAP_HOST]["text"])
    assert f"slot {SNAP_SLOT}" in text and f"tip {snap['tip_slot']}, lag {snap['lag_slots']}" in text
    assert f"lag {snap['lag_slots']} slots, limit 20000" in text  # the bar's title: the limit is drawn
    charts = re.findall(r'<svg class="rate"[^>]*data-points="(\d+)"', dom_text)
    assert charts == [str(min(32, len(download["rate_history"])))]
    rows = {r["attrs"].get("data-fill"): r for r in dom.rows if "ramdisk" in r["class"]}
    assert (
        str(ramdisk["percent"]) in rows
        and f"{ramdisk['percent']:.0f}%" in rows[str(ramdisk["percent"])]["text"]
    )
    assert f'data-pool="lab" data-capacity="{pool["capacity_percent"]}"' in dom_text
    activity = [r for r in dom.rows if "activity-row" in r["class"]]
    assert len(activity) == len(data["hosts"]) + 1  # and the controller's isolation record
    [controller] = [r for r in activity if r["attrs"]["data-host"] == "localhost"]
    assert "localhost (controller)" in flat(controller["text"]) and "strata-lab-2" in flat(controller["text"])
    assert dom.ids["count-snapshots"] == "1 snapshot warnings"
