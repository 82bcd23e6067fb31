# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""strata.ops.health_report: one health_check run as report.json and a static report.html, and
an index.html of the runs (docs/health-report.md). Split by concern: rows (the layer 2/4 rows of a
host), report (the JSON document and its verdict line), page (HTML, pure functions), files (the
report directory, atomic writes, past runs)."""

import json
import os
import time

from ansible_collections.strata.ops.plugins.module_utils.common import utc_iso
from ansible_collections.strata.ops.plugins.module_utils.health_page.files import (
    free_stamp,
    make_run_dir,
    past_runs,
    stamp_of,
    write_atomic,
)
from ansible_collections.strata.ops.plugins.module_utils.health_page.page import render_index, render_page
from ansible_collections.strata.ops.plugins.module_utils.health_page.report import (
    broken_lines,
    build_report,
    check_params,
)

__all__ = ["build_report", "render_index", "render_page", "run"]


def run(params, check_mode, clock=time.time):
    """Write <report_dir>/<stamp>/report.json and report.html, then <report_dir>/index.html.

    params: report_dir, cluster, hosts, keep. In check mode nothing is written; the result names
    the files a run would write."""
    check_params(params)
    wall = clock()
    report_dir = os.path.abspath(params["report_dir"])
    keep = params.get("keep") or 50
    if check_mode:
        stamp = free_stamp(report_dir, stamp_of(wall)) if os.path.isdir(report_dir) else stamp_of(wall)
        run_dir = os.path.join(report_dir, stamp)
    else:
        stamp, run_dir = make_run_dir(report_dir, stamp_of(wall))
    report = build_report(params, utc_iso(wall), stamp)
    paths = {
        "json_path": os.path.join(run_dir, "report.json"),
        "html_path": os.path.join(run_dir, "report.html"),
        "index_path": os.path.join(report_dir, "index.html"),
    }
    page = render_page(report)
    result = dict(
        paths,
        changed=True,
        run_dir=run_dir,
        problems=report["problems"],
        healthy=report["healthy"],
        verdict=report["verdict"],
        broken=broken_lines(report),
        html_bytes=len(page.encode("utf-8")),
    )
    if check_mode:
        result["msg"] = (
            f"check mode: would write {paths['json_path']}, {paths['html_path']} ({len(page)} bytes) "
            f"and {paths['index_path']}"
        )
        return result
    write_atomic(paths["json_path"], json.dumps(report, indent=1, sort_keys=True) + "\n")
    write_atomic(paths["html_path"], page)
    runs = past_runs(report_dir, keep)
    write_atomic(paths["index_path"], render_index(runs))
    result["runs"] = len(runs)
    return result
