#!/usr/bin/env python3
"""make bench's results: the rows the benchmarks recorded (bench/results.py) as results.json, and
that document as one self-contained HTML page (inline CSS and SVG; no script, nothing fetched).

    python bench/report.py results.json > results.html      # render a document
    python bench/report.py --collect RUN_DIR --rows FILE --ran NAME... [--failed NAME...] [--date ISO]
                           [--seconds NAME=SECONDS...]
        # bench/run: results.json and results.html into RUN_DIR, then RUN_DIR/../latest -> RUN_DIR

docs/performance.md ("Results: bench JSON and page") describes the document.
"""

import argparse
import datetime
import html
import json
import os
import platform
import socket
import subprocess
import sys

FORMAT = 1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The chart's geometry (SVG user units): a label column, then the bars scaled to the largest value.
LABEL_W, BAR_W, VALUE_W, BAR_H, LINE_H = 290, 400, 110, 14, 18
SERIES = (("ours", "ours"), ("baseline", "baseline"), ("limit", "limit"))


def read_rows(path):
    """(rows, problems): every JSON line of the file; a line that is not a row becomes a problem."""
    rows, problems = [], []
    if not path or not os.path.exists(path):
        return rows, problems
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                problems.append(f"{os.path.basename(path)} line {number}: not JSON ({exc})")
                continue
            if not isinstance(row, dict) or not row.get("benchmark") or not row.get("metric"):
                problems.append(f"{os.path.basename(path)} line {number}: not a row")
                continue
            rows.append(row)
    return rows, problems


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def memory_bytes():
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine():
    return {
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "memory_bytes": memory_bytes(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
    }


def git(repo, *args):
    proc = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def build_document(rows_path, *, ran, failed, date=None, seconds=None, repo=REPO):
    """The results document of one bench/run: its rows, the benchmarks run and failed, how long
    each took (``seconds``: {name: wall seconds}), where and on what it ran. ``date`` defaults to
    now (UTC, ISO 8601)."""
    rows, problems = read_rows(rows_path)
    status = git(repo, "status", "--porcelain", "--untracked-files=no")
    return {
        "format": FORMAT,
        "date": date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git(repo, "rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "machine": machine(),
        "ran": list(ran),
        "benchmarks": rows,
        "failed": list(failed),
        "seconds": dict(seconds or {}),
        "problems": problems,
    }


def figure(value):
    if value is None:
        return "-"
    size = abs(value)
    if size >= 100 or value == int(value):
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 0.01:
        return f"{value:.2f}"
    return f"{value:.3g}"


def with_unit(value, unit):
    return "-" if value is None else f"{figure(value)} {unit}"


def size_label(size):
    return ", ".join(
        f"{figure(v) if isinstance(v, (int, float)) else v} {k}" for k, v in (size or {}).items()
    )


def esc(value):
    return html.escape(str(value), quote=True)


def met_cell(row):
    if row.get("met") is True:
        return '<td class="met">met</td>'
    if row.get("met") is False:
        return '<td class="missed">missed</td>'
    return '<td class="none">-</td>'


def named(value, unit, name):
    text = esc(with_unit(value, unit))
    return f"{text}<br><small>{esc(name)}</small>" if name else text


def table(rows):
    head = "".join(
        f"<th>{name}</th>"
        for name in ("metric", "ours", "baseline", "limit", "ratio", "goal", "met", "notes")
    )
    body = []
    for row in rows:
        unit = row.get("unit", "")
        metric = esc(row["metric"])
        if row.get("size"):
            metric += f"<br><small>{esc(size_label(row['size']))}</small>"
        ratio = "-" if row.get("ratio") is None else f"{figure(row['ratio'])}x"
        shown_better = row.get("better") and row.get("ratio") is not None
        better = f" <small>({esc(row['better'])} is better)</small>" if shown_better else ""
        body.append(
            "<tr>"
            f"<td>{metric}</td>"
            f'<td class="num">{esc(with_unit(row.get("ours"), unit))}</td>'
            f'<td class="num">{named(row.get("baseline"), unit, row.get("baseline_name"))}</td>'
            f'<td class="num">{named(row.get("limit"), unit, row.get("limit_name"))}</td>'
            f'<td class="num">{esc(ratio)}{better}</td>'
            f"<td>{esc(row.get('goal') or '-')}</td>"
            f"{met_cell(row)}"
            f'<td class="notes">{esc(row.get("notes") or "")}</td>'
            "</tr>"
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def short(text, most=44):
    text = str(text)
    return text if len(text) <= most else text[: most - 1] + "\u2026"


def chart(rows, unit):
    """One horizontal bar chart for the rows in ``unit``: per size a group, per row its bars (ours,
    the baseline, the limit), all scaled to the largest value in the chart."""
    values = [row[key] for row in rows for key, _cls in SERIES if row.get(key) is not None]
    top = max((v for v in values if v > 0), default=0)
    groups = {}
    for row in rows:
        groups.setdefault(size_label(row.get("size")), []).append(row)
    parts, y = [], 4
    for label, members in groups.items():
        if label:
            parts.append(f'<text class="group" x="0" y="{y + 12}">{esc(label)}</text>')
            y += LINE_H + 2
        for row in members:
            parts.append(f'<text class="metric" x="0" y="{y + 12}">{esc(short(row["metric"], 90))}</text>')
            y += LINE_H
            for key, cls in SERIES:
                value = row.get(key)
                if value is None:
                    continue
                name = "ours" if key == "ours" else row.get(f"{key}_name") or key
                width = BAR_W * max(value, 0) / top if top else 0
                parts.append(
                    f'<text class="series" x="12" y="{y + 11}">{esc(short(name))}</text>'
                    f'<rect class="bar {cls}" x="{LABEL_W}" y="{y}" width="{width:.3f}" height="{BAR_H}"'
                    f' data-value="{value!r}">'
                    f"<title>{esc(name)}: {esc(with_unit(value, unit))}</title></rect>"
                    f'<text class="value" x="{LABEL_W + width + 4:.3f}" y="{y + 11}">'
                    f"{esc(with_unit(value, unit))}</text>"
                )
                y += LINE_H
            y += 6
    total_w = LABEL_W + BAR_W + VALUE_W
    return (
        f'<svg class="chart" role="img" viewBox="0 0 {total_w} {y}" width="{total_w}" height="{y}"'
        f' data-unit="{esc(unit)}" aria-label="{esc(unit)}: ours, baseline and limit">'
        f"{''.join(parts)}</svg>"
    )


def verdict(document):
    rows = document.get("benchmarks", [])
    met = sum(1 for row in rows if row.get("met") is True)
    missed = sum(1 for row in rows if row.get("met") is False)
    other = len(rows) - met - missed
    text = f"Goals: {met} met, {missed} missed, {other} rows without a goal or a verdict"
    failed = document.get("failed") or []
    if failed:
        text += f"; FAILED: {', '.join(failed)}"
    return text, ("bad" if missed or failed else "good")


def machine_line(info):
    memory = info.get("memory_bytes")
    parts = [
        info.get("hostname"),
        f"{info['cpus']} CPUs" if info.get("cpus") else None,
        f"{memory / 2**30:.1f} GiB memory" if memory else None,
        info.get("cpu_model"),
        f"kernel {info['kernel']}" if info.get("kernel") else None,
        f"Python {info['python']}" if info.get("python") else None,
    ]
    return ", ".join(str(p) for p in parts if p)


def benchmark_names(document):
    names = list(document.get("ran") or [])
    for row in document.get("benchmarks", []):
        if row["benchmark"] not in names:
            names.append(row["benchmark"])
    for name in document.get("failed") or []:
        if name not in names:
            names.append(name)
    return names


def section(name, rows, failed):
    out = [f'<section id="bench-{esc(name)}"><h2>{esc(name)}</h2>']
    if name in failed:
        out.append('<p class="failed">FAILED: see bench/run\'s console output.</p>')
    if not rows:
        if name not in failed:
            out.append('<p class="none">No results recorded (skipped or nothing to compare).</p>')
        out.append("</section>")
        return "".join(out)
    out.append(table(rows))
    units = []
    for row in rows:
        if row.get("unit") not in units:
            units.append(row.get("unit"))
    for unit in units:
        charted = [r for r in rows if r.get("unit") == unit]
        if any(r.get(key) is not None for r in charted for key, _cls in SERIES):
            better = charted[0].get("values_better")
            caption = f"{unit}, {better} is better" if better else unit
            out.append(f"<figure><figcaption>{esc(caption)}</figcaption>{chart(charted, unit)}</figure>")
    out.append("</section>")
    return "".join(out)


CSS = """
body{font:14px/1.4 "DejaVu Sans",Arial,sans-serif;margin:0;padding:0 16px 32px;color:#1a202c;background:#fff}
header{border-bottom:3px solid #2b6cb0;padding:12px 0 8px;margin-bottom:12px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:20px 0 6px}
.meta{color:#4a5568;font-size:13px;margin:2px 0}
.verdict{font-weight:bold;padding:6px 10px;border-radius:4px;display:inline-block;margin-top:6px}
.verdict.good{background:#c6f6d5;color:#22543d}.verdict.bad{background:#fed7d7;color:#822727}
table{border-collapse:collapse;margin:6px 0;max-width:100%;display:block;overflow-x:auto}
th,td{border:1px solid #cbd5e0;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#edf2f7}td.num{text-align:right;white-space:nowrap}td.notes{max-width:360px;font-size:12px}
td.met{background:#c6f6d5}td.missed{background:#fed7d7;font-weight:bold}
small{color:#4a5568}.failed{color:#822727;font-weight:bold}.none{color:#718096}
figure{margin:8px 0}figcaption{font-size:12px;color:#4a5568}
svg.chart{max-width:100%;height:auto;font-size:12px}
svg .bar.ours{fill:#2b6cb0}svg .bar.baseline{fill:#a0aec0}
svg .bar.limit{fill:#fbd38d;stroke:#c05621;stroke-width:1}
svg .group{font-weight:bold}svg .metric{fill:#1a202c}svg .series,svg .value{fill:#4a5568}
"""


def render(document):
    """The page: the header (date, commit, machine, verdict), then per benchmark its table and
    charts. Every text from the document is escaped."""
    failed = document.get("failed") or []
    rows = document.get("benchmarks", [])
    text, mood = verdict(document)
    commit = document.get("git_commit") or "unknown"
    if document.get("git_dirty"):
        commit += " (with uncommitted changes)"
    problems = "".join(f'<p class="failed">{esc(p)}</p>' for p in document.get("problems") or [])
    sections = "".join(
        section(name, [r for r in rows if r["benchmark"] == name], failed)
        for name in benchmark_names(document)
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>strata.ops benchmarks {esc(document.get('date', ''))}</title>"
        f"<style>{CSS}</style></head><body>"
        "<header><h1>strata.ops benchmarks</h1>"
        f'<p class="meta" id="date">Date: {esc(document.get("date", "unknown"))}</p>'
        f'<p class="meta" id="commit">Commit: {esc(commit)}</p>'
        f'<p class="meta" id="machine">Machine: {esc(machine_line(document.get("machine") or {}))}</p>'
        f"{durations_line(document.get('seconds') or {})}"
        f'<p class="verdict {mood}" id="verdict">{esc(text)}</p></header>'
        f"{problems}{sections}</body></html>\n"
    )


def durations_line(seconds):
    """How long the run and each benchmark took, or nothing when the document does not say."""
    if not seconds:
        return ""
    each = ", ".join(f"{name} {int(s)} s" for name, s in seconds.items())
    total = int(sum(seconds.values()))
    return f'<p class="meta" id="durations">Took {total // 60} min {total % 60} s: {esc(each)}</p>'


def parse_seconds(pairs):
    """{name: seconds} from NAME=SECONDS arguments."""
    found = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--seconds takes NAME=SECONDS, not {pair!r}")
        found[name] = float(value)
    return found


def write_run(run_dir, document):
    """results.json and results.html in run_dir; their paths."""
    json_path = os.path.join(run_dir, "results.json")
    html_path = os.path.join(run_dir, "results.html")
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2, sort_keys=True, allow_nan=False)
        handle.write("\n")
    with open(html_path, "w", encoding="utf-8") as handle:
        handle.write(render(document))
    return json_path, html_path


def update_latest(run_dir):
    """<run_dir>/../latest: a relative symlink to the newest run, replaced atomically."""
    parent = os.path.dirname(os.path.abspath(run_dir))
    link = os.path.join(parent, "latest")
    staging = f"{link}.new.{os.getpid()}"
    os.symlink(os.path.basename(os.path.abspath(run_dir)), staging)
    os.replace(staging, link)
    return link


def shown(path):
    """path relative to the current directory when it is below it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("document", nargs="?", help="a results.json to render as HTML on stdout")
    parser.add_argument("--collect", metavar="RUN_DIR", help="write results.json and results.html here")
    parser.add_argument("--rows", help="the rows file the benchmarks appended to (STRATA_BENCH_RESULTS)")
    parser.add_argument("--ran", nargs="*", default=[], help="the benchmarks run, in order")
    parser.add_argument("--failed", nargs="*", default=[], help="the benchmarks that failed")
    parser.add_argument("--date", help="when the run started (default: now), UTC ISO 8601")
    parser.add_argument("--seconds", nargs="*", default=[], help="NAME=SECONDS: how long each benchmark took")
    args = parser.parse_args(argv)
    if args.collect:
        try:
            seconds = parse_seconds(args.seconds)
        except ValueError as exc:
            parser.error(str(exc))
        document = build_document(
            args.rows, ran=args.ran, failed=args.failed, date=args.date, seconds=seconds
        )
        json_path, html_path = write_run(args.collect, document)
        update_latest(args.collect)
        print(f"results: {shown(json_path)}")
        print(f"page:    {shown(html_path)}")
        return 0
    if not args.document:
        parser.error("give a results.json to render, or --collect RUN_DIR")
    with open(args.document, encoding="utf-8") as handle:
        sys.stdout.write(render(json.load(handle)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
