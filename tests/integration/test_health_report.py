"""playbooks/health_check.yml with health_check_report_dir on the real lab, and the page it writes
opened in a real browser (Debian's chromium, headless), as an operator would open it.

One healthy run, then one with a broken layer 4 invariant on strata-lab-2 (a 1 MiB tmpfs mounted
over its 64 MiB ramdisk; unmounted again in a finally) and a crash-looping pod of a Deployment
on strata-lab-1. Both runs and the break hold the lab lock, so no other playbook sees the break.
The browser comes from tests/testbed/browser; when it cannot be installed the tests fail."""

import json
import os
import re
import struct
import subprocess
import sys
import zlib

import pytest
from lab_k8s import deployment

from ansible_collections.strata.ops.plugins.module_utils import k8s
from tests.unit.fakes.page import Dom

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
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium, installed by tests/testbed/browser when missing. Never skipped: a page
    nobody looked at is not tested."""
    script = os.path.join(REPO, "tests", "testbed", "browser")
    proc = subprocess.run([script], capture_output=True, text=True, timeout=1200, check=False)
    if proc.returncode != 0:
        pytest.fail(
            "tests/testbed/browser could not provide chromium, so the report page cannot be checked "
            f"in a browser (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout.strip().splitlines()[-1]


def browse(chromium, path, *args):
    """chromium --headless on file://path; (stdout, stderr). Console messages go to stderr."""
    argv = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        "file://" + path,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"chromium failed: {proc.stderr[-3000:]}"
    return proc.stdout, proc.stderr


def console_errors(stderr):
    """What the page itself logged: Chromium prints console messages as CONSOLE(line) and
    uncaught exceptions as 'Uncaught ...'; its own dbus and GPU chatter is not the page's."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def flat(text):
    return " ".join(text.split())


def png_pixels(path):
    """(width, height, rows of (r, g, b)) of an 8-bit RGB/RGBA non-interlaced PNG (chromium's)."""
    with open(path, "rb") as handle:
        data = handle.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * channels, [], bytearray(width * channels)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = prev[i], prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append([tuple(line[x * channels : x * channels + 3]) for x in range(width)])
        prev = line
    return width, height, rows


def screenshots(chromium, html_path, out_dir, name):
    """Both window sizes; the paths, printed (pytest -s shows them; -rA too)."""
    shots = {}
    for label, (width, height) in SIZES.items():
        shot = os.path.join(out_dir, f"{name}-{label}-{width}x{height}.png")
        _out, err = browse(chromium, html_path, f"--screenshot={shot}", f"--window-size={width},{height}")
        assert console_errors(err) == [], console_errors(err)
        size = png_pixels(shot)[:2]
        assert size == (width, height), (shot, size)
        shots[label] = shot
        print(f"screenshot: {shot}")
    return shots


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
