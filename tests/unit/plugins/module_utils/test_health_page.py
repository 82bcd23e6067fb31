"""module_utils/health_page: the layer rows, the verdict line, report.html and index.html as a
person reads them, and the report directory (atomic files, check mode, past runs)."""

import json
import os
import re
import stat

import pytest

from ansible_collections.strata.ops.plugins.module_utils import health_page
from ansible_collections.strata.ops.plugins.module_utils.common import StrataError
from ansible_collections.strata.ops.plugins.module_utils.health_page import files, page, report, rows
from tests.unit.fakes.page import Dom

ROOT, ROOT_DS = "/srv/kind", "lab/DATA/srv/kind"
WL, WL_DS = "/srv/kind/solana", "lab/DATA/srv/kind/solana"
RAMDISK = f"{WL}/ramdisk"
MIB64 = 64 * 1024 * 1024
EXPECT = [
    {"layer": 2, "check": "dataset", "path": ROOT, "dataset": ROOT_DS},
    {"layer": 4, "check": "dataset", "path": WL, "dataset": WL_DS},
    {"layer": 4, "check": "tmpfs", "path": RAMDISK, "size_bytes": MIB64},
    {"layer": 4, "check": "fstab", "path": RAMDISK, "requires": "zfs-mount.service"},
]
FSTAB = {
    "source": "tmpfs",
    "fstype": "tmpfs",
    "options": ["rw", "size=64M", "x-systemd.requires=zfs-mount.service"],
    "systemd": {"requires": ["zfs-mount.service"]},
}


def zfs(path, dataset):
    return {"path": path, "kind": "zfs", "dataset": dataset, "mount_point": path, "fstab": None}


def tmpfs(path, size=MIB64, fstab="the lab's"):
    return {
        "path": path,
        "kind": "tmpfs",
        "mount_point": path,
        "size_bytes": size,
        "fstab": dict(FSTAB) if fstab == "the lab's" else fstab,
        "dataset": None,
    }


def good_paths():
    return {ROOT: zfs(ROOT, ROOT_DS), WL: zfs(WL, WL_DS), RAMDISK: tmpfs(RAMDISK)}


def cluster_result(problems=(), nodes=2, pods_per_workload=1, workloads=1):
    node_list = [
        {
            "name": f"node-{i}",
            "ready": True,
            "unschedulable": False,
            "labels": {"kubernetes.io/hostname": f"node-{i}", "strata.io/role": "workload"},
            "annotations": {"big": "x" * 100},
            "taints": [{"key": "experiment", "value": "dedicated", "effect": "NoSchedule"}] if i % 2 else [],
            "allocatable": {"cpu": "8", "pods": "110"},
            "resource_version": "1",
        }
        for i in range(nodes)
    ]
    workload_list = [
        {
            "kind": "Deployment",
            "name": f"app-{w}",
            "namespace": "prod",
            "replicas": pods_per_workload,
            "ready_replicas": pods_per_workload,
            "ready": True,
            "state": "ready",
            "pods": [
                {
                    "name": f"app-{w}-7d9f8c6b5-{p:05d}",
                    "node": f"node-{p % nodes}",
                    "phase": "Running",
                    "ready": True,
                }
                for p in range(pods_per_workload)
            ],
        }
        for w in range(workloads)
    ]
    return {
        "changed": False,
        "healthy": not problems,
        "summary": "healthy: ..." if not problems else f"{len(problems)} problem(s) in ...",
        "problems": list(problems),
        "stopped": [],
        "nodes": node_list,
        "workloads": workload_list,
        "pods": {"Running": pods_per_workload * workloads},
        "persistent_volumes": [
            {"name": "ledger", "path": "/mnt/solana/ledger", "claim": "prod/ledger", "phase": "Bound"}
        ],
        "missing_namespaces": [],
        "api_server": "https://127.0.0.1:6443",
    }


def with_usage(paths, fill=25.0):
    """storage_info paths read with usage: each dataset 1 GiB, ``fill`` % used; the ramdisk too."""
    out = {}
    for path, read in paths.items():
        fact = dict(read)
        used = int(1024**3 * fill / 100)
        if fact["kind"] == "zfs":
            fact["usage"] = {
                "used_bytes": used,
                "available_bytes": 1024**3 - used,
                "quota_bytes": 1024**3 if path.endswith("ledger") else None,
                "refquota_bytes": None,
                "percent": fill,
            }
        elif fact["kind"] == "tmpfs":
            size = fact["size_bytes"]
            fact["usage"] = {
                "size_bytes": size,
                "used_bytes": int(size * fill / 100),
                "available_bytes": size - int(size * fill / 100),
                "percent": fill,
            }
        out[path] = fact
    return out


POOL_USAGE = {
    "lab": {
        "health": "ONLINE",
        "error": None,
        "size_bytes": 1065353216,
        "allocated_bytes": 1719664,
        "free_bytes": 1063256064,
        "capacity_percent": 0,
    }
}
TIP = 350_003_500
SNAP_H = "7jMmeXZSNcWPrB2RsTdeXfXrsyW5c1BfPjqoLW2X5T7V"


def freshness(verdict="fresh", tip=TIP, full=350_000_000, incremental=350_001_500, endpoints=1):
    """A snapshot_freshness result (the keys the report reads)."""
    local = incremental or full
    lag = tip - local if tip is not None and local is not None else None

    def archive(slot, base=None):
        return slot and {
            "name": f"{'incremental-' if base else ''}snapshot-{slot}-{SNAP_H}.tar.zst",
            "slot": slot,
            "base_slot": base,
            "size": 768 * 1024,
            "problem": None,
        }

    return {
        "changed": False,
        "verdict": verdict,
        "snapshot_dir": f"{WL}/snapshots",
        "local_slot": local,
        "full_slot": full,
        "incremental_slot": incremental,
        "full_snapshot": archive(full),
        "incremental_snapshot": archive(incremental, full),
        "tip_slot": tip,
        "lag_slots": lag,
        "full_lag_slots": tip - full if tip and full else None,
        "max_lag_slots": 20000,
        "endpoints": [
            {"url": "http://10.0.0.1:8899", "ok": tip is not None, "error": None if tip else "refused"}
        ]
        * endpoints,
        "msg": f"{verdict}: ...",
    }


def fetch_status(samples=300, state="done"):
    """snapshot_fetch's status file after a download with a full rate history."""
    history = [[float(i), 1_000_000 + (i % 50) * 20_000] for i in range(samples)]
    return json.dumps(
        {
            "state": state,
            "downloads": [f"snapshot-350000000-{SNAP_H}.tar.zst"],
            "bytes_done": 786432,
            "bytes_total": 786432,
            "mean_rate_bytes_per_s": 1_400_000,
            "elapsed_s": float(samples),
            "rate_history": history,
            "rate_history_interval_s": 1.0,
            "rate_history_started": 1735787000.0,
            "updated": 1735787045.0,
        }
    )


def snapshots_entry(**kwargs):
    return {
        "dir": f"{WL}/snapshots",
        "rpc_endpoints": 1,
        "freshness": freshness(**kwargs),
        "status_file": f"{WL}/snapshots/.strata-fetch-status.json",
        "status_text": fetch_status(),
        "status_error": None,
    }


def transfer_progress(failed=0, finished=True):
    streams = [
        {"index": i, "state": "failed" if i < failed else "done", "bytes_done": 1 << 20} for i in range(8)
    ]
    return json.dumps(
        {
            "started": "2025-01-02T03:00:00.000Z",
            "updated": "2025-01-02T03:04:00.000Z",
            "source": "/srv/data",
            "destination": "strata-lab-2:/srv/copy",
            "bytes_total": 16 << 20,
            "bytes_done": 8 << 20,
            "rate_bytes_s": 4 << 20,
            "streams": streams,
            "finished": finished,
        }
    )


def checkpoint_result(count=5):
    return {
        "images_dir": "/var/lib/strata-ops/checkpoints",
        "exists": True,
        "checkpoints": [
            {
                "id": f"prod-app-worker-2025010{i}T000000.000Z",
                "name": "prod-app-worker",
                "created": f"2025-01-0{i}T00:00:00.000Z",
                "size_bytes": 4 << 20,
                "usable": i != 2,
                "restorable": i == 1,
                "problem": None if i != 2 else "pstree.img is missing",
                "method": "criu",
                "target": {"pid": 1},
            }
            for i in range(1, count + 1)
        ],
    }


def isolation_record():
    return {
        "path": "/var/lib/strata-ops/runner_isolation.json",
        "operation": "strata.ops.runner_isolation",
        "since": "2025-01-02T02:00:00.000Z",
        "node": "strata-lab-2",
        "runners": [11, 12],
        "workloads": ["minio"],
        "stopped": [],
    }


def activity_entry(transfer=True, checkpoints=True, isolation=True):
    return {
        "transfer_state_dir": "/var/lib/strata-ops/transfer",
        "transfer_path": "/var/lib/strata-ops/transfer/0150a2d0f23a1d21/progress.json" if transfer else None,
        "transfer_text": transfer_progress() if transfer else None,
        "transfer_error": None,
        "checkpoints": checkpoint_result()
        if checkpoints
        else {"images_dir": "/x", "exists": False, "checkpoints": []},
        "isolation_path": "/var/lib/strata-ops/runner_isolation.json",
        "isolation": isolation_record() if isolation else None,
    }


def full_host(paths=None, expect=None):
    """A host entry with every section the role reads filled."""
    return {
        "storage": {"paths": with_usage(paths or good_paths()), "pools": POOL_USAGE},
        "expect": expect or EXPECT,
        "snapshots": snapshots_entry(),
        "activity": activity_entry(),
    }


def params(tmp_path, cluster=None, hosts=None, keep=50):
    return {
        "report_dir": str(tmp_path / "reports"),
        "cluster": cluster_result() if cluster is None else cluster,
        "hosts": {"strata-lab-1": {"storage": {"paths": good_paths()}, "expect": EXPECT}}
        if hosts is None
        else hosts,
        "keep": keep,
    }


def build(tmp_path, **kwargs):
    return report.build_report(params(tmp_path, **kwargs), "2025-01-02T03:04:05.000Z", "20250102T030405Z")


# ---------------------------------------------------------------- rows: the layers' own words


def test_all_rows_green_for_a_host_as_layers_2_and_4_leave_it():
    got = rows.host_rows({"storage": {"paths": good_paths()}, "expect": EXPECT})
    assert [r["ok"] for r in got] == [True] * 4
    assert all(r["problem"] is None for r in got)
    assert got[2]["found"] == "tmpfs of 64 MiB"
    assert got[2]["expected"] == "a tmpfs of 64 MiB (67108864 bytes)"


def test_layer_2_row_uses_the_assert_words():
    paths = good_paths()
    paths[ROOT] = {
        "path": ROOT,
        "kind": "directory",
        "dataset": "lab",
        "mount_point": "/srv",
        "parent_mount": {},
    }
    [row] = rows.host_rows({"storage": {"paths": paths}, "expect": EXPECT[:1]})
    assert row["ok"] is False
    # roles/host_storage/tasks/assert.yml's fail_msg, word for word
    assert (
        row["problem"]
        == f"{ROOT} is directory of dataset lab but should be the mounted ZFS dataset {ROOT_DS}"
    )
    assert row["fix"] == "Layer 2 fixes it: run playbooks/layer2_host_storage.yml."


@pytest.mark.parametrize(
    ("fact", "problem"),
    [
        (tmpfs(RAMDISK, size=1048576), f"{RAMDISK} has 1048576 bytes, should have {MIB64}"),
        (zfs(RAMDISK, WL_DS), f"{RAMDISK} is zfs, should be a tmpfs"),
    ],
)
def test_layer_4_ramdisk_rows_use_the_assert_words(fact, problem):
    paths = dict(good_paths(), **{RAMDISK: fact})
    row = rows.host_rows({"storage": {"paths": paths}, "expect": EXPECT})[2]
    assert (row["ok"], row["problem"]) == (False, problem)
    assert row["fix"] == "Layer 4 fixes it: run playbooks/layer4_workload_storage.yml."


def test_fstab_without_the_zfs_ordering_is_red():
    paths = dict(good_paths(), **{RAMDISK: tmpfs(RAMDISK, fstab=None)})
    row = rows.host_rows({"storage": {"paths": paths}, "expect": EXPECT})[3]
    assert row["ok"] is False
    assert row["problem"].startswith(
        f"the fstab line of {RAMDISK} lacks x-systemd.requires=zfs-mount.service"
    )
    assert row["found"] == "no fstab line"


def test_a_host_without_a_storage_result_gets_one_red_row():
    [row] = rows.host_rows({"storage": None, "expect": EXPECT})
    assert row["ok"] is False and "no storage result from this host" in row["problem"]


def test_bad_expectations_are_refused_before_anything_is_written(tmp_path):
    bad = params(
        tmp_path, hosts={"h": {"storage": {}, "expect": [{"layer": 3, "check": "dataset", "path": "/x"}]}}
    )
    with pytest.raises(StrataError, match="needs layer 2 or 4"):
        health_page.run(bad, check_mode=False, clock=lambda: 1.0e9)
    assert not os.path.exists(bad["report_dir"])


# ---------------------------------------------------------------- the page


def test_healthy_verdict_is_the_first_line(tmp_path):
    doc = build(tmp_path)
    html = page.render_page(doc)
    dom = Dom(html)
    assert doc["healthy"] is True and doc["problems"] == 0
    assert dom.ids["verdict"].startswith(
        "All fine: storage of 1 host as layers 2 and 4 want it; cluster 2 nodes"
    )
    assert dom.ids["run-time"] == "2025-01-02 03:04:05 UTC"
    assert html.index('id="verdict"') < html.index("<main>")  # before anything else is shown
    assert '<header class="ok">' in html
    assert "script" not in dom.tags and "<script" not in html  # no script at all
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched
    assert "https://" not in html.replace("https://127.0.0.1:6443", "")


def test_a_broken_invariant_is_a_red_row_with_its_fix(tmp_path):
    paths = dict(good_paths(), **{RAMDISK: tmpfs(RAMDISK, size=1048576)})
    hosts = {
        "strata-lab-1": {"storage": {"paths": good_paths()}, "expect": EXPECT},
        "strata-lab-2": {"storage": {"paths": paths}, "expect": EXPECT},
    }
    doc = build(tmp_path, hosts=hosts)
    dom = Dom(page.render_page(doc))
    assert dom.ids["verdict"] == "1 problem: 1 storage invariant broken on strata-lab-2"
    red = [r for r in dom.rows if "layer-row" in r["class"] and "bad" in r["class"]]
    assert len(red) == 1
    assert red[0]["attrs"]["data-layer"] == "4" and red[0]["host"] == "strata-lab-2"
    assert dom.rows[1]["host"] == "strata-lab-2"  # the host with a broken invariant comes first
    assert f"{RAMDISK} has 1048576 bytes, should have {MIB64}" in red[0]["text"]
    assert "Layer 4 fixes it: run playbooks/layer4_workload_storage.yml." in red[0]["text"]
    assert "tmpfs of 1 MiB" in red[0]["text"] and "a tmpfs of 64 MiB" in red[0]["text"]
    green = [r for r in dom.rows if "layer-row" in r["class"] and "ok" in r["class"]]
    assert len(green) == 7
    assert dom.ids["count-problems"] == "1 problems" and dom.ids["count-storage"] == "1 storage"
    assert report.broken_lines(doc) == [
        f"strata-lab-2: {RAMDISK} has 1048576 bytes, should have {MIB64}. "
        "Layer 4 fixes it: run playbooks/layer4_workload_storage.yml."
    ]


def test_cluster_values_are_escaped(tmp_path):
    evil = "<script>alert('x')</script>"
    problem = {
        "kind": "Pod",
        "name": "worker-<b>",
        "namespace": "ns",
        "reason": f"container w CrashLoopBackOff {evil}",
    }
    cluster = cluster_result(problems=[problem])
    cluster["nodes"][0]["labels"]["note"] = '"><img src=x onerror=alert(1)>'
    cluster["workloads"][0]["pods"][0]["name"] = "<i>pod</i>"
    doc = build(tmp_path, cluster=cluster)
    html = page.render_page(doc)
    dom = Dom(html)
    assert "<script" not in html and "<img" not in html and "<i>pod" not in html and "<b>" not in html
    assert "&lt;i&gt;pod&lt;/i&gt;" in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "script" not in dom.tags and "img" not in dom.tags
    [row] = [r for r in dom.rows if "problem" in r["class"]]
    assert evil in row["text"]  # what a person reads: the reason as it is
    assert dom.ids["verdict"] == "1 problem: 1 in the cluster (Pod)"


def test_a_cluster_that_could_not_be_read_is_a_problem(tmp_path):
    failed = {"failed": False, "msg": "cannot reach the API server https://127.0.0.1:1: connection refused"}
    doc = build(tmp_path, cluster=failed)
    assert doc["problems"] == 1
    assert "connection refused" in doc["cluster"]["problems"][0]["reason"]


def test_json_keeps_what_the_page_shows_and_drops_the_noise(tmp_path):
    doc = build(tmp_path)
    assert doc["schema"] == "strata.ops.health_report/1"
    assert set(doc["cluster"]["nodes"][0]) == {
        "name",
        "ready",
        "unschedulable",
        "labels",
        "taints",
        "allocatable",
    }
    assert doc["counts"] == {
        "problems": 0,
        "storage_problems": 0,
        "cluster_problems": 0,
        "hosts": 1,
        "rows": 4,
        "nodes": 2,
        "pods": 1,
        "workloads": 1,
        "persistent_volumes": 1,
        "snapshot_warnings": 0,
    }
    json.dumps(doc)  # plain data


def test_a_big_cluster_renders_under_300_kb(tmp_path):
    problems = [
        {
            "kind": "Pod",
            "name": f"app-{i}-7d9f8c6b5-00001",
            "namespace": "prod",
            "reason": "container app CrashLoopBackOff",
        }
        for i in range(20)
    ]
    cluster = cluster_result(problems=problems, nodes=50, workloads=200, pods_per_workload=10)
    # one host per node, each with the lab's 7 rows (3 child datasets) and 6 storage paths
    children = [f"{WL}/{name}" for name in ("ledger", "snapshots", "log")]
    paths = dict(good_paths(), **{path: zfs(path, path.replace("/srv/kind", ROOT_DS)) for path in children})
    expect = EXPECT[:2] + [
        {"layer": 4, "check": "dataset", "path": path, "dataset": path.replace("/srv/kind", ROOT_DS)}
        for path in children
    ]
    # every new section filled on every host: usage, snapshots with a 300-sample rate history,
    # a transfer, checkpoints and an isolation record
    hosts = {f"node-{i}": full_host(paths, expect + EXPECT[2:]) for i in range(50)}
    doc = build(tmp_path, cluster=cluster, hosts=hosts)
    assert all(len(h["snapshots"]["download"]["rate_history"]) == 300 for h in doc["hosts"].values())
    assert all(h["activity"]["isolation"]["isolated"] for h in doc["hosts"].values())
    assert doc["counts"]["rows"] == 350 and doc["problems"] == 20
    assert doc["counts"]["pods"] == 2000 and doc["counts"]["nodes"] == 50
    size = len(page.render_page(doc).encode("utf-8"))
    print(f"50 nodes, 2000 pods, 50 hosts of 7 rows and every section: report.html is {size} bytes")
    assert size < 300 * 1024


def test_the_controllers_isolation_record_is_a_row_of_the_activity_section(tmp_path):
    """experiment_enter.yml keeps its record on the controller when the runner config is a Helm
    ConfigMap: the report shows it as NAME (controller), not as a host with storage rows."""
    controller = {"name": "awx-ee", "activity": {"isolation": isolation_record()}}
    doc = report.build_report(
        dict(params(tmp_path), controller=controller), "2025-01-02T03:04:05.000Z", "20250102T030405Z"
    )
    assert doc["controller"]["name"] == "awx-ee"
    assert doc["controller"]["activity"]["isolation"]["node"] == "strata-lab-2"
    assert doc["controller"]["activity"]["transfer"] is None and "awx-ee" not in doc["hosts"]
    assert doc["counts"]["hosts"] == 1 and doc["healthy"]
    html = page.render_page(doc)
    row = re.search(r'<tr class="activity-row" data-host="awx-ee">(.*?)</tr>', html).group(1)
    assert "awx-ee (controller)" in row and "strata-lab-2" in row
    # nothing read on the controller: no controller, no activity section for it
    assert build(tmp_path)["controller"] is None
    empty = dict(params(tmp_path), controller={"name": "x", "activity": {"isolation": None}})
    assert report.build_report(empty, "2025-01-02T03:04:05.000Z", "20250102T030405Z")["controller"] is None


def test_a_controller_entry_that_is_not_a_read_is_refused(tmp_path):
    with pytest.raises(StrataError, match="controller must be a dict with name and activity"):
        report.check_params(dict(params(tmp_path), controller={"isolation": {}}))


def test_more_problems_than_the_page_lists_are_counted(tmp_path):
    problems = [{"kind": "Pod", "name": f"p{i}", "namespace": "n", "reason": "not Ready"} for i in range(600)]
    dom = Dom(page.render_page(build(tmp_path, cluster=cluster_result(problems=problems))))
    assert len([r for r in dom.rows if "problem" in r["class"]]) == page.MAX_PROBLEM_ROWS
    assert dom.ids["count-problems"] == "600 problems"


# ---------------------------------------------------------------- the report directory and the index


def test_a_run_writes_json_and_html_atomically_with_mode_0644(tmp_path):
    result = health_page.run(params(tmp_path), check_mode=False, clock=lambda: 1735787045.5)
    run_dir = tmp_path / "reports" / "20250102T030405Z"
    assert result["json_path"] == str(run_dir / "report.json")
    assert result["html_path"] == str(run_dir / "report.html")
    assert result["index_path"] == str(tmp_path / "reports" / "index.html")
    assert result["problems"] == 0 and result["changed"] is True and result["runs"] == 1
    for path in (result["json_path"], result["html_path"], result["index_path"]):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert sorted(os.listdir(run_dir)) == ["report.html", "report.json"]  # no temporary file left
    with open(result["json_path"]) as handle:
        assert json.load(handle)["generated_at"] == "2025-01-02T03:04:05.500Z"


def test_check_mode_writes_nothing(tmp_path):
    result = health_page.run(params(tmp_path), check_mode=True, clock=lambda: 1735787045.0)
    assert not os.path.exists(tmp_path / "reports")
    assert result["changed"] is True
    assert result["msg"].startswith(
        "check mode: would write " + str(tmp_path / "reports" / "20250102T030405Z")
    )


def test_a_report_dir_that_cannot_be_created_says_what_to_do(tmp_path):
    (tmp_path / "file").write_text("x")
    bad = dict(params(tmp_path), report_dir=str(tmp_path / "file" / "reports"))
    with pytest.raises(StrataError) as caught:
        health_page.run(bad, check_mode=False)
    assert caught.value.error_kind == "report_dir"
    assert f"cannot create report_dir {tmp_path}/file/reports: Not a directory" in caught.value.msg
    assert "set health_check_report_dir to a directory" in caught.value.msg


def test_index_lists_runs_newest_first_with_a_sparkline(tmp_path):
    counts = [0, 2, 1, 0, 3]
    for i, n in enumerate(counts):
        problems = [
            {"kind": "Pod", "name": f"p{k}", "namespace": "n", "reason": "not Ready"} for k in range(n)
        ]
        result = health_page.run(
            params(tmp_path, cluster=cluster_result(problems=problems)),
            False,
            clock=lambda i=i: 1735787045 + 60 * i,
        )
    # two runs in the same second get their own directories
    again = health_page.run(params(tmp_path), False, clock=lambda: 1735787045 + 240)
    assert again["run_dir"].endswith("20250102T030805Z-2")
    with open(again["index_path"]) as handle:
        html = handle.read()
    dom = Dom(html)
    stamps = [r["attrs"]["data-stamp"] for r in dom.rows if "run" in r["class"]]
    assert stamps == sorted(stamps, key=files._stamp_key, reverse=True)
    assert stamps[:2] == ["20250102T030805Z-2", "20250102T030805Z"]
    assert len(stamps) == 6
    assert 'href="20250102T030405Z/report.html"' in html  # relative: works from file:// and in an artifact
    label = re.search(r"<title>problems per run, oldest to newest: ([0-9, ]+)</title>", html).group(1)
    assert label == "0, 2, 1, 0, 3, 0"
    assert html.count("<circle") == 6 and html.count('fill="#b3261e"') == 3
    assert dom.ids["verdict"].startswith("Latest: All fine")
    assert result["runs"] == 5


def test_index_keeps_the_newest_and_survives_an_unreadable_run(tmp_path):
    for i in range(4):
        health_page.run(params(tmp_path), False, clock=lambda i=i: 1735787045 + i)
    broken = tmp_path / "reports" / "20250102T030407Z" / "report.json"
    broken.write_text("{not json")
    result = health_page.run(params(tmp_path, keep=3), False, clock=lambda: 1735787045 + 10)
    assert result["runs"] == 3
    with open(result["index_path"]) as handle:
        dom = Dom(handle.read())
    runs = [r for r in dom.rows if "run" in r["class"]]
    assert [r["attrs"]["data-stamp"] for r in runs] == [
        "20250102T030415Z",
        "20250102T030408Z",
        "20250102T030407Z",
    ]
    assert "report.json unreadable" in runs[2]["text"]
    assert sorted(os.listdir(tmp_path / "reports"))[:5] == [
        "20250102T030405Z",
        "20250102T030406Z",
        "20250102T030407Z",
        "20250102T030408Z",
        "20250102T030415Z",
    ]  # the index lists 3; no run directory is removed


def test_sparkline_of_one_run_and_of_none():
    assert page.sparkline([]) == ""
    assert page.sparkline([None]) == ""
    one = page.sparkline([4])
    assert one.count("<circle") == 1 and "oldest to newest: 4" in one
