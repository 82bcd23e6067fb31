"""The health report's sections beyond the layer rows: pool/dataset/ramdisk usage (storage_info
with usage), snapshots against the tip with the download's rate history, and the last transfer,
checkpoints and isolation - as report.json data and as the page shows them."""

import json

import pytest

from ansible_collections.strata.ops.plugins.module_utils import storage
from ansible_collections.strata.ops.plugins.module_utils.health_page import page, sections
from ansible_collections.strata.ops.plugins.module_utils.transfer.control import RateHistory
from tests.unit.fakes.page import Dom

from .test_health_page import (
    POOL_USAGE,
    RAMDISK,
    activity_entry,
    build,
    fetch_status,
    full_host,
    good_paths,
    snapshots_entry,
    with_usage,
)

# ---------------------------------------------------------------- the rate history of a download


@pytest.mark.parametrize(("seconds", "most"), [(5, 5), (300, 300), (301, 300), (3600, 300), (86400, 300)])
def test_rate_history_is_bounded_and_keeps_the_whole_download(seconds, most):
    history = RateHistory(started=1000.0, max_points=300)
    for i in range(seconds * 4):  # the download's progress callback runs every 0.25 s
        history.record(1000.0 + i / 4, 1_000_000 + i)
    samples = history.as_status()["rate_history"]
    assert len(samples) <= most
    assert samples[0][0] == 0.0 and samples[-1][0] >= seconds - 1 - history.interval
    assert [s[0] for s in samples] == sorted(s[0] for s in samples)
    json.dumps(history.as_status())  # goes into the status file as it is


# ---------------------------------------------------------------- storage_info usage


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1016M", 1016 * 1024**2),
        ("1.64M", int(1.64 * 1024**2)),
        ("0", 0),
        ("12.5G", int(12.5 * 1024**3)),
        ("-", None),
    ],
)
def test_zpool_sizes_are_read_in_binary_units(text, value):
    assert storage.human_to_bytes(text) == value


def test_pool_usage_is_one_zpool_list_per_pool():
    calls = []

    def run_command(argv):
        calls.append(argv)
        if argv[-1] == "lab":
            return 0, "lab\t1016M\t1.64M\t1014M\t0%\tONLINE\n", ""
        return 1, "", "cannot open 'gone': no such pool\n"

    got = storage.pool_usage(["lab", "gone"], run_command, "/sbin/zpool")
    assert calls == [
        ["/sbin/zpool", "list", "-H", "-o", "name,size,allocated,free,capacity,health", "lab"],
        ["/sbin/zpool", "list", "-H", "-o", "name,size,allocated,free,capacity,health", "gone"],
    ]
    assert got["lab"] == {
        "health": "ONLINE",
        "error": None,
        "size_bytes": 1016 * 1024**2,
        "allocated_bytes": int(1.64 * 1024**2),
        "free_bytes": 1014 * 1024**2,
        "capacity_percent": 0,
    }
    assert got["gone"]["health"] is None and got["gone"]["error"] == "cannot open 'gone': no such pool"
    assert got["gone"]["size_bytes"] is None


class Vfs:
    f_frsize, f_blocks, f_bfree, f_bavail = 4096, 16384, 12288, 12288  # 64 MiB, a quarter used


def test_dataset_and_tmpfs_usage_in_one_zfs_get():
    paths = {
        "/srv/kind": {"kind": "zfs", "dataset": "lab/DATA/srv/kind", "resolved": "/srv/kind"},
        RAMDISK: {"kind": "tmpfs", "dataset": None, "resolved": RAMDISK},
        "/srv": {"kind": "directory", "dataset": None, "resolved": "/srv"},
    }
    out = "\n".join(
        [
            "lab/DATA/srv/kind\tused\t614400",
            "lab/DATA/srv/kind\tavailable\t1030152192",
            "lab/DATA/srv/kind\tquota\t0",
            "lab/DATA/srv/kind\trefquota\t1073741824",
        ]
    )
    calls = []

    def run_command(argv):
        calls.append(argv)
        return 0, out, ""

    storage.add_usage(paths, run_command, "/sbin/zfs", statvfs=lambda _p: Vfs)
    assert calls == [
        [
            "/sbin/zfs",
            "get",
            "-Hp",
            "-o",
            "name,property,value",
            "used,available,quota,refquota",
            "lab/DATA/srv/kind",
        ]
    ]
    assert paths["/srv/kind"]["usage"] == {
        "used_bytes": 614400,
        "available_bytes": 1030152192,
        "quota_bytes": None,  # 0 is none
        "refquota_bytes": 1073741824,
        "percent": round(100.0 * 614400 / 1073741824, 1),
    }
    assert paths[RAMDISK]["usage"] == {
        "size_bytes": 64 << 20,
        "used_bytes": 16 << 20,
        "available_bytes": 48 << 20,
        "percent": 25.0,
    }
    assert paths["/srv"]["usage"] is None


def test_a_failed_zfs_get_is_shown_per_dataset():
    paths = {"/srv/kind": {"kind": "zfs", "dataset": "lab/DATA/srv/kind", "resolved": "/srv/kind"}}
    storage.add_usage(paths, lambda _argv: (1, "", "cannot open 'lab/DATA/srv/kind'\n"), "/sbin/zfs")
    assert paths["/srv/kind"]["usage"] == {"error": "cannot open 'lab/DATA/srv/kind'"}


# ---------------------------------------------------------------- snapshots


@pytest.mark.parametrize(
    ("verdict", "state"),
    [
        ("fresh", "ok"),
        ("missing", "warn"),
        ("unknown", "warn"),
        ("stale", "bad"),
        ("ahead", "bad"),
        ("unusable", "bad"),
    ],
)
def test_snapshot_verdicts_are_green_amber_or_red(verdict, state, tmp_path):
    entry = snapshots_entry(verdict=verdict)
    assert sections.snapshot_section(entry)["state"] == state
    host = dict(full_host(), snapshots=entry)
    doc = build(tmp_path, hosts={"strata-lab-1": host})
    assert doc["counts"]["snapshot_warnings"] == (state != "ok")
    assert doc["problems"] == 0  # what the next deploy fetches is not a broken invariant
    [row] = [r for r in Dom(page.render_page(doc)).rows if "snap" in r["class"]]
    assert state in row["class"] and row["attrs"]["data-verdict"] == verdict


@pytest.mark.parametrize(
    ("endpoints", "reason"),
    [
        (0, "no RPC endpoint configured (health_check_rpc_endpoints, workload_deploy_rpc_endpoints)"),
        (1, "no RPC endpoint answered (http://10.0.0.1:8899: refused)"),
    ],
)
def test_without_a_tip_the_page_says_why(endpoints, reason, tmp_path):
    entry = dict(snapshots_entry(verdict="unknown", tip=None, endpoints=endpoints), rpc_endpoints=endpoints)
    snap = sections.snapshot_section(entry)
    assert snap["tip_slot"] is None and snap["tip_reason"] == reason
    doc = build(tmp_path, hosts={"strata-lab-1": dict(full_host(), snapshots=entry)})
    [row] = [r for r in Dom(page.render_page(doc)).rows if "snap" in r["class"]]
    assert "tip unknown" in row["text"] and reason in row["text"]


def test_lag_and_limit_are_drawn_and_the_download_rate_is_a_chart(tmp_path):
    doc = build(tmp_path, hosts={"strata-lab-1": full_host()})
    snap = doc["hosts"]["strata-lab-1"]["snapshots"]
    assert (snap["full"]["slot"], snap["incremental"]["slot"], snap["lag_slots"]) == (
        350_000_000,
        350_001_500,
        2000,
    )
    download = snap["download"]
    assert len(download["rate_history"]) == 300 and download["peak_rate_bytes_per_s"] == 1_980_000
    html = page.render_page(doc)
    [row] = [r for r in Dom(html).rows if "snap" in r["class"]]
    assert "tip 350003500, lag 2000" in row["text"] and "of 20000" in row["text"]
    assert "<title>lag 2000 slots, limit 20000</title>" in html
    assert '<line class="t" x1="96"' in html  # the limit, at 20000 / 25000 of the bar's 120 px
    chart = html[html.index('<svg class="rate"') :]
    chart = chart[: chart.index("</svg>")]
    assert 'data-points="32"' in chart and len(chart.split('points="')[2].split()) == 32
    assert "<title>download rate over 299 s: peak 1.888 MiB/s, 300 samples</title>" in chart


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (None, "no download recorded"),
        ("{not json", "is not JSON"),
        ('["a list"]', "does not hold a JSON object"),
        (fetch_status(samples=1), "done, mean 1.335 MiB/s"),  # one sample: no chart yet
    ],
)
def test_a_missing_or_broken_status_file_is_said_not_fatal(text, shown, tmp_path):
    entry = dict(snapshots_entry(), status_text=text)
    doc = build(tmp_path, hosts={"strata-lab-1": dict(full_host(), snapshots=entry)})
    html = page.render_page(doc)
    [row] = [r for r in Dom(html).rows if "snap" in r["class"]]
    assert shown in " ".join(row["text"].split())
    assert '<svg class="rate"' not in html


# ---------------------------------------------------------------- transfer, checkpoints, isolation


def test_none_on_this_host_for_each_absent_record(tmp_path):
    host = dict(full_host(), activity=activity_entry(transfer=False, checkpoints=False, isolation=False))
    doc = build(tmp_path, hosts={"strata-lab-1": host})
    assert doc["hosts"]["strata-lab-1"]["activity"] == {
        "transfer": None,
        "checkpoints": None,
        "isolation": None,
    }
    [row] = [r for r in Dom(page.render_page(doc)).rows if "activity-row" in r["class"]]
    assert row["text"].count("none on this host") == 3


def test_transfer_checkpoints_and_isolation_as_read(tmp_path):
    doc = build(tmp_path, hosts={"strata-lab-1": full_host()})
    activity = doc["hosts"]["strata-lab-1"]["activity"]
    assert activity["transfer"]["state"] == "finished" and activity["transfer"]["percent"] == 50.0
    assert activity["checkpoints"]["count"] == 5 and activity["checkpoints"]["usable"] == 4
    assert len(activity["checkpoints"]["newest"]) == sections.CHECKPOINTS_SHOWN
    assert activity["isolation"] == {
        "path": "/var/lib/strata-ops/runner_isolation.json",
        "isolated": True,
        "since": "2025-01-02T02:00:00.000Z",
        "node": "strata-lab-2",
        "runners": 2,
        "workloads": ["minio"],
        "stopped": [],
        "error": None,
    }
    [row] = [r for r in Dom(page.render_page(doc)).rows if "activity-row" in r["class"]]
    text = " ".join(row["text"].split())
    assert "finished: 8 MiB of 16 MiB" in text and "4 MiB/s" in text
    assert "5 (4 usable), newest prod-app-worker-20250101T000000.000Z restorable" in text
    assert "isolated since 2025-01-02 02:00:00 UTC: node strata-lab-2, 2 runners paused" in text


def test_a_progress_record_ansible_already_parsed_is_read_the_same(tmp_path):
    """ansible-core before 2.19 turns the role's JSON text of a progress file into a dict."""
    host = full_host()
    parsed = dict(
        host, activity=dict(host["activity"], transfer_text=json.loads(host["activity"]["transfer_text"]))
    )
    as_text = build(tmp_path, hosts={"strata-lab-1": host})["hosts"]["strata-lab-1"]["activity"]
    as_dict = build(tmp_path, hosts={"strata-lab-1": parsed})["hosts"]["strata-lab-1"]["activity"]
    assert as_dict == as_text and as_dict["transfer"]["state"] == "finished"


def test_a_failed_stream_and_an_unreadable_record_are_shown(tmp_path):
    activity = activity_entry()
    progress = json.loads(activity["transfer_text"])
    activity["transfer_text"] = json.dumps(dict(progress, streams=[{"state": "failed"}, {"state": "done"}]))
    activity["isolation"] = {"path": "/x", "error": "/x is not a runner isolation record this role can read"}
    doc = build(tmp_path, hosts={"strata-lab-1": dict(full_host(), activity=activity)})
    got = doc["hosts"]["strata-lab-1"]["activity"]
    assert got["transfer"]["state"] == "failed" and got["transfer"]["streams_failed"] == 1
    assert got["isolation"]["isolated"] is None
    [row] = [r for r in Dom(page.render_page(doc)).rows if "activity-row" in r["class"]]
    assert "1 of 2 streams failed" in row["text"] and "is not a runner isolation record" in row["text"]


def test_section_values_are_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    activity = activity_entry()
    activity["checkpoints"]["checkpoints"][0]["id"] = evil
    activity["isolation"]["node"] = '"><img src=x>'
    entry = dict(snapshots_entry(), status_text="{" + evil)
    doc = build(tmp_path, hosts={"h<b>": dict(full_host(), activity=activity, snapshots=entry)})
    html = page.render_page(doc)
    assert "<script" not in html and "<img" not in html and "<b>" not in html
    assert "script" not in Dom(html).tags


# ---------------------------------------------------------------- storage usage on the page


def test_pool_usage_and_ramdisk_fill_are_shown(tmp_path):
    paths = with_usage(good_paths(), fill=95.0)
    host = dict(full_host(), storage={"paths": paths, "pools": POOL_USAGE})
    doc = build(tmp_path, hosts={"strata-lab-1": host})
    usage = doc["hosts"]["strata-lab-1"]["usage"]
    assert [p["name"] for p in usage["pools"]] == ["lab"] and usage["pools"][0]["capacity_percent"] == 0
    assert [d["path"] for d in usage["datasets"]] == ["/srv/kind", "/srv/kind/solana"]
    assert [(r["path"], r["percent"]) for r in usage["ramdisks"]] == [(RAMDISK, 95.0)]
    html = page.render_page(doc)
    dom = Dom(html)
    [ramdisk] = [r for r in dom.rows if "ramdisk" in r["class"]]
    assert ramdisk["attrs"]["data-fill"] == "95.0" and "16 MiB" not in ramdisk["text"]
    assert "60.8 MiB of 64 MiB" in ramdisk["text"] and "95%" in ramdisk["text"]
    assert '<span class="pool" data-pool="lab" data-capacity="0">' in html
    assert "1.64 MiB of 1016 MiB, 1014 MiB free" in html
    storage_html = html[html.index('<section id="storage">') : html.index('<section id="snapshots">')]
    assert storage_html.count("<meter") == 4  # the pool, two datasets, the ramdisk


def test_a_report_without_the_new_reads_still_renders(tmp_path):
    """An older role (no usage, no sections): the page as before, no empty sections."""
    doc = build(tmp_path)
    html = page.render_page(doc)
    assert (
        doc["hosts"]["strata-lab-1"]["snapshots"] is None and doc["hosts"]["strata-lab-1"]["activity"] is None
    )
    assert 'id="activity"' not in html and "Not read in this run." in html
