"""make bench's results page in a real browser (Debian's chromium, headless), and bench/run on its
cheapest real benchmark (bench storage with 5 datasets on the test bed's pool, a few seconds)
writing results.json, results.html and latest."""

import json
import os
import subprocess
import sys

import pytest

from tests.unit.test_bench_report import sample_document, table_rows

from .browser import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .browser import SIZES, browse, console_errors, png_pixels, screenshots
from .conftest import REPO

sys.path.insert(0, os.path.join(REPO, "bench"))

import report

OURS, BASELINE = (0x2B, 0x6C, 0xB0), (0xA0, 0xAE, 0xC0)  # the bars' fills in report.CSS


def colours(shot):
    _w, _h, rows = png_pixels(shot)
    return {pixel for row in rows for pixel in row}


def check_page(chromium, html_path, document):
    """The DOM chromium built holds every row and the verdict, and the page logged nothing."""
    dom, err = browse(chromium, html_path, "--dump-dom")
    assert console_errors(err) == [], console_errors(err)
    with open(html_path, encoding="utf-8") as handle:
        written = table_rows(handle.read())
    assert len(written) == len(document["benchmarks"])
    assert table_rows(dom) == written
    assert report.verdict(document)[0] in dom
    return dom


def test_sample_page_renders_in_chromium(chromium, tmp_path, monkeypatch):
    document = sample_document(tmp_path / "rows.jsonl", monkeypatch)
    _json_path, html_path = report.write_run(str(tmp_path), document)
    dom = check_page(chromium, html_path, document)
    assert "<script" not in dom.replace("&lt;script", "")
    shots = screenshots(chromium, html_path, str(tmp_path), "bench")
    assert png_pixels(shots["desktop"])[:2] == SIZES["desktop"] == (1280, 800)
    seen = colours(shots["desktop"])
    assert OURS in seen and BASELINE in seen, "no chart bars in the 1280x800 view"


@pytest.mark.needs("zfs")
def test_bench_run_writes_results_json_and_page(zfs_pool, chromium, tmp_path):
    out = tmp_path / "bench"
    env = dict(
        os.environ,
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        STRATA_BENCH_OUT=str(out),
        BENCH_STORAGE_DATASETS="5",
        BENCH_STORAGE_CREATE="5",
        BENCH_STORAGE_NOOP="5",
        BENCH_STORAGE_KEEP="0",
        BENCH_STORAGE_POOL=zfs_pool,
    )
    env.pop("STRATA_BENCH_RESULTS", None)
    run = [os.path.join(REPO, "bench", "run"), "storage"]
    proc = subprocess.run(run, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    latest = out / "latest"
    run_dir = out / os.readlink(latest)
    summary = proc.stdout.split("== bench summary", 1)[1]
    assert f"results: {run_dir / 'results.json'}" in summary
    assert f"page:    {run_dir / 'results.html'}" in summary
    # each benchmark's whole output is kept beside the results; its last line is the summary's
    assert (run_dir / "storage.log").read_text().splitlines()[-1] in summary
    document = json.loads((latest / "results.json").read_text())
    assert document["ran"] == ["storage"] and document["failed"] == []
    rows = document["benchmarks"]
    assert {r["benchmark"] for r in rows} == {"storage"} and all(r["size"] == {"datasets": 5} for r in rows)
    # create and noop against the CLI (at 5: no goal, it is set at 200), and the playbook comparison
    assert len(rows) == 4, [r["metric"] for r in rows]
    (row,) = [r for r in rows if r["baseline_name"] == "community.general.zfs in a loop"]
    assert row["unit"] == "s" and row["goal"] == ">= 10x"
    assert row["ours"] > 0 and row["baseline"] > 0 and isinstance(row["met"], bool)
    assert row["ratio"] == pytest.approx(row["baseline"] / row["ours"])
    check_page(chromium, str(latest / "results.html"), document)

    # A failing benchmark: bench/run exits 1, and the document and page say which one failed.
    env["BENCH_STORAGE_POOL"] = "strata-no-such-pool"
    proc = subprocess.run(run, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 1, proc.stdout[-3000:]
    failed_dir = out / os.readlink(latest)
    assert failed_dir != run_dir
    document = json.loads((failed_dir / "results.json").read_text())
    assert document["failed"] == ["storage"] and document["benchmarks"] == []
    dom = check_page(chromium, str(failed_dir / "results.html"), document)
    assert "FAILED: storage" in dom

    # An unknown benchmark: exit 2, as before, and no run directory.
    proc = subprocess.run(
        [run[0], "nonesuch"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2 and "no such benchmark" in proc.stdout
    assert sorted(os.listdir(out)) == sorted(["latest", run_dir.name, failed_dir.name])
