"""make bench's results: bench/results.py's record() line, bench/report.py's document (what
bench/run writes as results.json) and its self-contained page (results.html)."""

import html
import json
import os
import re
import subprocess
import sys

import pytest

from tests.unit.fakes.page import Dom

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "bench"))

import report  # noqa: E402
import results  # noqa: E402

EVIL = "<script>alert(1)</script>"
ROW_KEYS = {
    "benchmark",
    "metric",
    "ours",
    "baseline",
    "baseline_name",
    "limit",
    "limit_name",
    "unit",
    "ratio",
    "better",
    "values_better",
    "goal",
    "met",
    "size",
    "notes",
}


def sample_rows(path, monkeypatch):
    """Rows as the benchmarks record them: sizes, a limit, a skip, units of time and of rate, and a
    hostile benchmark name and metric."""
    monkeypatch.setenv(results.ENV, str(path))
    for datasets, ours, theirs in ((50, 0.5, 2.0), (200, 1.0, 12.0)):
        results.record(
            "storage",
            metric="ensure datasets",
            ours=ours,
            baseline=theirs,
            baseline_name="community.general.zfs loop",
            unit="s",
            ratio=theirs / ours,
            goal=">= 10x",
            met=theirs / ours >= 10,
            size={"datasets": datasets},
        )
    results.record(
        "snapshots",
        metric="download rate",
        ours=120.0,
        baseline=60.0,
        baseline_name="aria2c",
        limit=128.0,
        limit_name="min(connections x C, link)",
        unit="MiB/s",
        ratio=2.0,
        goal=">= 0.90x limit",
        met=True,
        notes="fetch 0.94 of the limit",
    )
    results.record(
        "shutdown",
        metric="last pod DELETED -> return",
        ours=None,
        baseline=None,
        baseline_name="kubectl wait",
        unit="s",
        ratio=None,
        notes="SKIPPED: no control plane",
    )
    results.record(
        EVIL,
        metric=f"metric {EVIL} & more",
        ours=3.0,
        baseline=4.0,
        baseline_name=f"base {EVIL}",
        unit="s",
        ratio=1.5,
        notes=f"note {EVIL}",
    )


def sample_document(rows_path, monkeypatch):
    """The document bench/run writes for the sample rows (transfer ran and failed)."""
    sample_rows(rows_path, monkeypatch)
    return report.build_document(
        str(rows_path),
        ran=["snapshots", "shutdown", "storage", "transfer", EVIL],
        failed=["transfer"],
        date="2026-12-03T10:00:00Z",
    )


def test_record_appends_the_documented_line(tmp_path, monkeypatch):
    path = tmp_path / "rows.jsonl"
    monkeypatch.setenv(results.ENV, str(path))
    for number in (1, 2):
        results.record(
            "storage",
            metric="ensure datasets",
            ours=1.0 * number,
            baseline=12.0,
            baseline_name="community.general.zfs loop",
            unit="s",
            ratio=12.0 / number,
            goal=">= 10x",
            met=number == 1,
            size={"datasets": 200},
            notes="n",
        )
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    row = json.loads(lines[0])
    assert set(row) == ROW_KEYS
    assert row == {
        "benchmark": "storage",
        "metric": "ensure datasets",
        "ours": 1.0,
        "baseline": 12.0,
        "baseline_name": "community.general.zfs loop",
        "limit": None,
        "limit_name": None,
        "unit": "s",
        "ratio": 12.0,
        "better": "higher",
        "values_better": "lower",
        "goal": ">= 10x",
        "met": True,
        "size": {"datasets": 200},
        "notes": "n",
    }
    assert json.loads(lines[1])["met"] is False


def test_record_without_the_variable_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(results.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert results.record("x", metric="m", ours=1, baseline=2, baseline_name="b", unit="s", ratio=2) is None
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "case",
    [
        (1.0, 12.0, 12.0, None, "s", "higher"),  # baseline/ours of a time
        (10.0, 2.0, 5.0, None, "s", "lower"),  # ours/baseline of a time (converge)
        (10.0, 2.0, 5.0, "<= 5x", "s", "lower"),
        (80.0, 100.0, 0.8, None, "MB/s", "higher"),  # ours/baseline of a rate
        (0.05, 0.5, 10.0, "<= 1 s (ours)", "s", "higher"),  # an absolute goal: from the figures
        (None, None, None, None, "s", "lower"),
    ],
)
def test_ratio_direction(case):
    """(ours, baseline, ratio, goal, unit, which way the ratio is better)"""
    *figures, better = case
    assert results.ratio_better(*figures) == better


def test_record_stores_no_infinity(tmp_path, monkeypatch):
    path = tmp_path / "rows.jsonl"
    monkeypatch.setenv(results.ENV, str(path))
    results.record("x", metric="m", ours=0.0, baseline=2, baseline_name="b", unit="s", ratio=float("inf"))
    assert json.loads(path.read_text())["ratio"] is None


def test_document_holds_rows_runs_failures_and_the_machine(tmp_path, monkeypatch):
    rows_path = tmp_path / "rows.jsonl"
    document = sample_document(rows_path, monkeypatch)
    with open(rows_path, "a") as handle:
        handle.write("{not json\n")
    again = report.build_document(str(rows_path), ran=["storage"], failed=[])
    assert document["format"] == 1
    assert document["date"] == "2026-12-03T10:00:00Z"
    assert re.fullmatch(r"[0-9a-f]{40}", document["git_commit"])
    assert set(document["machine"]) == {"hostname", "cpus", "memory_bytes", "kernel", "python", "cpu_model"}
    assert document["machine"]["cpus"] == os.cpu_count()
    assert document["machine"]["memory_bytes"] > 0
    assert [r["benchmark"] for r in document["benchmarks"]] == [
        "storage",
        "storage",
        "snapshots",
        "shutdown",
        EVIL,
    ]
    assert document["failed"] == ["transfer"]
    assert document["problems"] == []
    assert len(again["benchmarks"]) == 5
    assert again["problems"] == ["rows.jsonl line 6: not JSON (Expecting property name enclosed in "
                                 "double quotes: line 1 column 2 (char 1))"]  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", again["date"])


def table_rows(page):
    """The text of each body row of the page's tables, cells separated by spaces."""
    found = []
    for body in re.findall(r"<tbody>(.*?)</tbody>", page, re.S):
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S):
            found.append(" ".join(html.unescape(re.sub(r"<[^>]+>", " ", row)).split()))
    return found


def bars(svg):
    """(class, width, value) of each bar of one chart."""
    found = re.findall(r'<rect class="bar (\w+)"[^>]* width="([\d.]+)"[^>]* data-value="([^"]+)"', svg)
    return [(cls, float(width), float(value)) for cls, width, value in found]


def test_page_tables_hold_every_row(tmp_path, monkeypatch):
    document = sample_document(tmp_path / "rows.jsonl", monkeypatch)
    page = report.render(document)
    dom = Dom(page)
    rows = table_rows(page)
    assert len(rows) == len(document["benchmarks"])
    texts = " | ".join(rows)
    for needle in (
        "ensure datasets 50 datasets 0.50 s 2 s community.general.zfs loop - 4x (higher is better) "
        ">= 10x missed",
        "ensure datasets 200 datasets 1 s 12 s community.general.zfs loop - 12x (higher is better) "
        ">= 10x met",
        "download rate 120 MiB/s 60 MiB/s aria2c 128 MiB/s min(connections x C, link) 2x",
        "SKIPPED: no control plane",
    ):
        assert needle in texts, texts
    assert (
        dom.ids["verdict"].strip()
        == "Goals: 2 met, 1 missed, 2 rows without a goal or a verdict; FAILED: transfer"
    )
    assert "2026-12-03T10:00:00Z" in dom.ids["date"]
    assert document["git_commit"] in dom.ids["commit"]
    assert f"{os.cpu_count()} CPUs" in dom.ids["machine"]
    assert "FAILED: see bench/run" in page


def test_page_bars_are_proportional_to_the_values(tmp_path, monkeypatch):
    page = report.render(sample_document(tmp_path / "rows.jsonl", monkeypatch))
    charts = re.findall(r'<svg class="chart".*?</svg>', page, re.S)
    units = [re.search(r'data-unit="([^"]*)"', svg).group(1) for svg in charts]
    assert units == ["MiB/s", "s", "s"]  # snapshots; shutdown (all None) has none; storage; the EVIL one
    snapshots = bars(charts[0])
    assert [cls for cls, _w, _v in snapshots] == ["ours", "baseline", "limit"]
    storage = bars(charts[1])
    assert [(cls, v) for cls, _w, v in storage] == [
        ("ours", 0.5),
        ("baseline", 2.0),
        ("ours", 1.0),
        ("baseline", 12.0),
    ]
    for found in (snapshots, storage):
        top = max(v for _c, _w, v in found)
        for _cls, width, value in found:
            assert width == pytest.approx(report.BAR_W * value / top, abs=0.001)
    # per size a group, in the order recorded
    assert charts[1].index(">50 datasets<") < charts[1].index(">200 datasets<")


def test_page_escapes_everything_and_references_nothing(tmp_path, monkeypatch):
    page = report.render(sample_document(tmp_path / "rows.jsonl", monkeypatch))
    assert "<script" not in page.lower()
    assert "http://" not in page and "https://" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "metric &lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    tags = set(Dom(page).tags)
    assert "script" not in tags
    assert not tags & {"link", "img", "iframe", "object", "embed"}
    assert not re.search(r"\b(src|href)=", page)
    assert "url(" not in page and "@import" not in page


def test_report_cli_renders_a_document(tmp_path, monkeypatch):
    document = sample_document(tmp_path / "rows.jsonl", monkeypatch)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(document))
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "report.py"), str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout == report.render(document)


def test_collect_writes_the_run_and_points_latest_at_it(tmp_path, monkeypatch):
    rows = tmp_path / "rows.jsonl"
    sample_rows(rows, monkeypatch)
    runs = []
    for stamp in ("20261203T100000Z", "20261203T110000Z"):
        run_dir = tmp_path / "bench" / stamp
        run_dir.mkdir(parents=True)
        argv = ["--collect", str(run_dir), "--rows", str(rows), "--ran", "storage", "transfer"]
        assert report.main([*argv, "--failed", "transfer", "--date", "2026-12-03T10:00:00Z"]) == 0
        runs.append(run_dir)
    latest = tmp_path / "bench" / "latest"
    assert os.readlink(latest) == "20261203T110000Z"
    document = json.loads((latest / "results.json").read_text())
    assert document["ran"] == ["storage", "transfer"] and document["failed"] == ["transfer"]
    assert len(document["benchmarks"]) == 5
    assert (latest / "results.html").read_text() == report.render(document)
    assert (runs[0] / "results.html").exists()
    assert document["seconds"] == {}
    assert 'id="durations"' not in report.render(document)


def test_collect_keeps_how_long_each_benchmark_took(tmp_path, monkeypatch):
    rows = tmp_path / "rows.jsonl"
    sample_rows(rows, monkeypatch)
    argv = ["--collect", str(tmp_path), "--rows", str(rows), "--ran", "storage", "transfer"]
    assert report.main([*argv, "--seconds", "storage=128", "transfer=75"]) == 0
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["seconds"] == {"storage": 128, "transfer": 75}
    page = (tmp_path / "results.html").read_text()
    assert '<p class="meta" id="durations">Took 3 min 23 s: storage 128 s, transfer 75 s</p>' in page
    with pytest.raises(SystemExit):
        report.main([*argv, "--seconds", "storage"])


def test_benchmarks_turn_their_figures_into_rows(tmp_path, monkeypatch):
    """The record code of the long benchmarks, fed the figures they measure (a typo there would
    surface only at the end of a 15-minute make bench)."""
    import bench_checkpoint  # noqa: PLC0415
    import bench_health  # noqa: PLC0415
    import bench_shutdown  # noqa: PLC0415
    import bench_snapshots  # noqa: PLC0415
    import bench_transfer  # noqa: PLC0415

    path = tmp_path / "rows.jsonl"
    monkeypatch.setenv(results.ENV, str(path))
    size = 1 << 30
    dump = {"written": size, "criu_s": 1.0, "module_s": 1.4, "sync_s": 0.5}
    dd = {"durable_s": 1.25, "cache_s": 0.5}
    spreads = {"durable": (0.8, 0.7, 0.9), "cache": (0.4, 0.3, 0.5), "module": (0.6, 0.5, 0.7)}
    bench_checkpoint.record_rows([dict(spreads, gib=1, size=size, dumps=[dump], dds=[dd], rounds=[{}])])
    run = {"bound": 128 * 2**20, "fetch": [0.95], "aria2": [0.6], "fetch_e2e": [0.8], "aria2_e2e": [0.5]}
    bench_snapshots.record_run(dict(run, c_text="C=4 MiB/s"), {"MiB": 2048, "mirrors": 2}, "1 round")
    checks = {"ours": 10.0, "rsync": 50.0, "rsync_md5": 80.0, "kept": 1.0}
    resume = {"wire": 1.02, "payload": 1.0, "wire_bytes": 102e6, "missing_bytes": 100e6}
    bench_transfer.record_rows({"rate": 72e6, "wall_rate": 60e6}, {"rate": 8e6}, resume, checks, 4e9)
    shutdown = {"rounds": 20, "ours50": 0.04, "ours95": 0.09, "kub50": 0.08, "kub95": 0.1, "whole": 1.6}
    assert bench_shutdown.record_rows(1, "module", dict(shutdown, rss=40.0, kub_rss=50.0)) is True
    assert (
        bench_shutdown.record_rows(1, "playbook", dict(shutdown, ours50=1.5, rss=80.0, kub_rss=50.0)) is False
    )
    assert (
        bench_shutdown.record_rows(1000, "module", dict(shutdown, ours50=0.3, rss=90.0, kub_rss=60.0))
        is False
    )
    health = {"rounds": 3, "ours_all": [1.0, 1.2, 1.1], "kubectl_all": [0.7, 0.8, 0.75], "seen": (52, 2010)}
    health.update(ours=1.1, kubectl=0.75, rss=120.0, kub_rss=90.0, playbook=3.0)
    assert bench_health.record_rows(50, 2000, health) is True
    assert bench_health.record_rows(5, 200, dict(health, ours=0.5)) is None
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(set(row) == ROW_KEYS for row in rows)
    judged = {
        (r["benchmark"], r["metric"]): (r["ratio"], r["better"], r["met"])
        for r in rows
        if r["goal"] and r["benchmark"] not in ("shutdown", "health")
    }
    assert judged == {
        ("checkpoint", "dump + fsync (durable) write rate"): (0.8, "higher", True),
        ("snapshots", "download rate (transfer), C=4 MiB/s per request"): (
            pytest.approx(0.95 / 0.6),
            "higher",
            True,
        ),
        ("snapshots", "whole process rate, C=4 MiB/s per request"): (
            pytest.approx(0.8 / 0.5),
            "higher",
            True,
        ),
        ("transfer", "copy rate: bytes sent / the streams' time"): (9.0, "higher", True),
        ("transfer", "resume after kill -9: bytes on the wire"): (1.02, "lower", True),
        ("transfer", "verify (xxh128 manifests both sides)"): (5.0, "higher", False),
    }
    shutdown_rows = {
        (r["metric"], r["size"]["pods"]): (r["ratio"], r["better"], r["goal"], r["met"])
        for r in rows
        if r["benchmark"] == "shutdown"
    }
    assert shutdown_rows == {
        ("last pod DELETED -> the stop returns (module process, p50)", 1): (
            pytest.approx(0.5),
            "lower",
            "<= 1x kubectl wait (p50 and p95)",
            True,
        ),
        ("peak RSS of the module process", 1): (pytest.approx(0.8), "lower", None, None),
        ("last pod DELETED -> the stop returns (ansible-playbook, p50)", 1): (
            pytest.approx(1.5 / 0.08),
            "lower",
            "<= 0.15 s (ansible-playbook)",
            False,
        ),
        ("last pod DELETED -> the stop returns (module process, p50)", 1000): (
            pytest.approx(0.3 / 0.08),
            "lower",
            "<= 2x kubectl wait",
            False,
        ),
        ("peak RSS of the module process", 1000): (pytest.approx(1.5), "lower", None, None),
    }
    health_rows = [r for r in rows if r["benchmark"] == "health"]
    assert [(r["metric"], r["size"], r["goal"], r["met"]) for r in health_rows] == [
        ("one cluster_health run (module process)", {"nodes": 50, "pods": 2000}, "<= 2x kubectl get", True),
        ("peak RSS of the cluster_health process", {"nodes": 50, "pods": 2000}, None, None),
        ("one cluster_health run (module process)", {"nodes": 5, "pods": 200}, None, None),
        ("peak RSS of the cluster_health process", {"nodes": 5, "pods": 200}, None, None),
    ]
    assert health_rows[0]["ratio"] == pytest.approx(1.1 / 0.75) and health_rows[0]["better"] == "lower"
    assert "52 nodes and 2010 pods" in health_rows[0]["notes"] and health_rows[0]["ours"] == 1.1
    checkpoint = rows[0]
    assert (
        checkpoint["ours"] == pytest.approx(size / 1.5 / 1e6) and checkpoint["baseline"] == size / 1.25 / 1e6
    )
    assert checkpoint["size"] == {"GiB": 1}
    assert len(rows) == 3 + 2 + 6 + 5 + 4


def test_storage_records_a_row_per_size_and_its_goals_where_issue_21_sets_them(tmp_path, monkeypatch):
    import bench_storage  # noqa: PLC0415

    path = tmp_path / "rows.jsonl"
    monkeypatch.setenv(results.ENV, str(path))
    create = ({20: 0.7, 200: 4.7}, {20: 0.6, 200: 5.0})
    noop = ({200: 0.4, 2000: 3.3}, {200: 0.5, 2000: 9.0}, {200: 0.2, 2000: 5.5})
    bench_storage.record_cli_rows(create, noop)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(set(row) == ROW_KEYS for row in rows)
    seen = [(r["metric"], r["size"]["datasets"], r["goal"], r["met"]) for r in rows]
    assert seen == [
        ("create datasets (module process)", 20, None, None),
        ("create datasets (module process)", 200, "<= 1.2x", True),
        ("noop (module process) vs zfs get -d 1 of all", 200, "<= 1.2x", True),
        ("noop (module process) vs zfs get -d 1 of the 3 properties", 200, None, None),
        ("noop (module process) vs zfs get -d 1 of all", 2000, "<= 1.2x", True),
        ("noop (module process) vs zfs get -d 1 of the 3 properties", 2000, None, None),
    ]
    assert rows[1]["ratio"] == pytest.approx(4.7 / 5.0) and rows[1]["better"] == "lower"
    assert rows[3]["ratio"] == pytest.approx(2.0) and rows[3]["better"] == "lower"
