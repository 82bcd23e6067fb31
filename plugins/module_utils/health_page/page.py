# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""report.html and index.html: one static file each, CSS inline, no script, nothing fetched.

Pure functions from the report dict to text. Every value that comes from the cluster or a host
(names, labels, reasons, paths) goes through ``esc``: a pod's reason may hold ``<script>``.
"""

import html

from ansible_collections.strata.ops.plugins.module_utils.health_page.rows import (
    LAYER_PLAYBOOKS,
    LAYER_TOPICS,
    human_bytes,
)

# More problems than this are counted on the page and listed in report.json only (a page for a
# whole broken cluster stays small enough to open).
MAX_PROBLEM_ROWS = 500

CSS = """
:root{--bad:#b3261e;--bad-bg:#fdecea;--ok:#1b6e2e;--ok-bg:#e8f5ea;--mute:#5f6368;--line:#dadce0}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#202124}
header{padding:14px 18px;border-bottom:4px solid}
header.ok{background:var(--ok-bg);border-color:var(--ok)}
header.bad{background:var(--bad-bg);border-color:var(--bad)}
h1{margin:0;font-size:1.25rem;line-height:1.3;overflow-wrap:anywhere}
header.ok h1{color:var(--ok)} header.bad h1{color:var(--bad)}
.when{margin:4px 0 0;color:var(--mute);font-size:.9rem}
main{padding:8px 18px 28px;max-width:1400px}
h2{font-size:1.05rem;margin:22px 0 6px;border-bottom:1px solid var(--line);padding-bottom:3px}
h3{font-size:.95rem;margin:14px 0 4px}
.counts{display:flex;flex-wrap:wrap;gap:6px;margin:10px 0 0;padding:0;list-style:none}
.counts li{border:1px solid var(--line);border-radius:12px;padding:1px 9px;font-size:.85rem}
.counts li.bad{border-color:var(--bad);color:var(--bad);font-weight:600}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.88rem}
th,td{text-align:left;vertical-align:top;padding:4px 8px;border-bottom:1px solid var(--line)}
th{color:var(--mute);font-weight:600;white-space:nowrap}
tr.ok td:first-child{border-left:4px solid var(--ok)}
tr.bad td:first-child{border-left:4px solid var(--bad)}
tr.bad{background:var(--bad-bg)}
.badge{display:inline-block;border-radius:3px;padding:0 5px;font-size:.8rem;font-weight:700;color:#fff}
.badge.ok{background:var(--ok)} .badge.bad{background:var(--bad)} .badge.mute{background:var(--mute)}
.fix{color:var(--bad);font-weight:600}
.mute{color:var(--mute)}
code{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
td.name,.layers td:nth-child(-n+2){white-space:nowrap}
.storage td:not(:nth-child(2)):not(:nth-child(5)){font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
.storage td:last-child{overflow-wrap:anywhere}
.chips code{display:inline-block;background:#f1f3f4;border-radius:3px;padding:0 4px;margin:1px 2px 1px 0}
ul.pods{margin:4px 0;padding-left:18px;columns:14em}
ul.pods li.bad{color:var(--bad);font-weight:600}
ul.pods i{font-style:normal;color:var(--mute)}
details summary{cursor:pointer}
svg.spark{vertical-align:middle}
"""


def esc(value):
    """Text for HTML (content and attribute values): None is empty."""
    return "" if value is None else html.escape(str(value), quote=True)


def badge(ok, yes="OK", no="FAIL"):
    return f'<b class="badge {"ok" if ok else "bad"}">{yes if ok else no}</b>'


def _doc(title, header_class, body):
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n"
        f'<body class="{header_class}">\n{body}\n</body></html>\n'
    )


def _table(headers, rows, attrs=""):
    """A table in a horizontally scrolling box; ``attrs`` is markup already escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return (
        f'<div class="scroll"><table{attrs}><thead><tr>{head}</tr></thead><tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table></div>"
    )


def human_time(iso):
    """'2025-01-01T12:00:00.000Z' -> '2025-01-01 12:00:00 UTC'."""
    if not iso:
        return "?"
    return iso.replace("T", " ").split(".")[0].rstrip("Z") + " UTC"


def _header(report):
    ok = report["healthy"]
    counts = report["counts"]
    chips = [
        (f"{counts['problems']} problems", counts["problems"] > 0, "count-problems"),
        (f"{counts['storage_problems']} storage", counts["storage_problems"] > 0, "count-storage"),
        (f"{counts['cluster_problems']} cluster", counts["cluster_problems"] > 0, "count-cluster"),
        (f"{counts['hosts']} hosts", False, "count-hosts"),
        (f"{counts['nodes']} nodes", False, "count-nodes"),
        (f"{counts['pods']} pods", False, "count-pods"),
        (f"{counts['workloads']} workloads", False, "count-workloads"),
        (f"{counts['persistent_volumes']} PVs", False, "count-pvs"),
    ]
    chip_html = "".join(f'<li id="{i}"{" class=bad" if bad else ""}>{esc(t)}</li>' for t, bad, i in chips)
    return (
        f'<header class="{"ok" if ok else "bad"}"><h1 id="verdict">{esc(report["verdict"])}</h1>'
        f'<p class="when">Run <time id="run-time" datetime="{esc(report["generated_at"])}">'
        f"{esc(human_time(report['generated_at']))}</time> &middot; "
        '<a href="../index.html">all runs</a> &middot; <a href="report.json">report.json</a></p>'
        f'<ul class="counts">{chip_html}</ul></header>'
    )


def _layer_rows(host):
    rows = []
    for row in host["rows"]:
        if row["ok"]:
            fix = esc(LAYER_PLAYBOOKS.get(row["layer"], ""))
        else:
            fix = (
                f'<span class="problem">{esc(row["problem"])}.</span> '
                f'<span class="fix">{esc(row["fix"])}</span>'
            )
        state = "ok" if row["ok"] else "bad"
        rows.append(
            f'<tr class="layer-row {state}" data-layer="{esc(row["layer"])}"><td>{badge(row["ok"])} '
            f"{esc(row['layer'])}</td><td><code>{esc(row['path'])}</code></td><td>{esc(row['found'])}</td>"
            f"<td>{esc(row['expected'])}</td><td{' class=mute' if row['ok'] else ''}>{fix}</td></tr>"
        )
    return rows


def _hosts_section(report):
    parts = [
        '<section id="hosts"><h2>Hosts: what layers 2 and 4 assert</h2><p class="mute">Layer 2: '
        f"{LAYER_TOPICS[2]}; layer 4: {LAYER_TOPICS[4]}.</p>"
    ]
    if not report["hosts"]:
        parts.append('<p class="mute">No host storage in this report.</p>')
    # hosts with a broken invariant first: what needs doing is what the first screen shows
    hosts = sorted(report["hosts"].items(), key=lambda item: all(row["ok"] for row in item[1]["rows"]))
    for name, host in hosts:
        bad = sum(1 for row in host["rows"] if not row["ok"])
        state = badge(not bad, "OK", f"{bad} broken")
        parts.append(f'<h3 id="host-{esc(name)}">{esc(name)} {state}</h3>')
        attrs = f' class="layers" data-host="{esc(name)}"'
        parts.append(_table(["layer", "path", "found", "expected", "fix"], _layer_rows(host), attrs))
    parts.append("</section>")
    return "".join(parts)


def _problems_section(cluster):
    if cluster is None:
        return (
            '<section id="problems"><h2>Cluster</h2>'
            '<p class="mute">The cluster was not checked.</p></section>'
        )
    problems = cluster["problems"]
    if not problems:
        body = (
            f"<p>{badge(True)} No problem in the cluster. "
            f'<span class="mute">{esc(cluster["summary"])}</span></p>'
        )
        return f'<section id="problems"><h2>Cluster problems</h2>{body}</section>'
    rows = [
        f'<tr class="problem bad"><td>{esc(p.get("kind"))}</td>'
        f"<td class=name><code>{esc(p['namespace'] + '/' if p.get('namespace') else '')}"
        f"{esc(p.get('name'))}</code></td>"
        f"<td>{esc(p.get('reason'))}</td></tr>"
        for p in problems[:MAX_PROBLEM_ROWS]
    ]
    more = ""
    if len(problems) > MAX_PROBLEM_ROWS:
        more = (
            f'<p class="fix">and {len(problems) - MAX_PROBLEM_ROWS} more problems, listed in report.json</p>'
        )
    return (
        f'<section id="problems"><h2>Cluster problems ({len(problems)})</h2>'
        + _table(["kind", "name", "reason"], rows, ' id="problem-table"')
        + more
        + "</section>"
    )


def _chips(mapping):
    return "".join(f"<code>{esc(k)}={esc(v)}</code>" for k, v in sorted((mapping or {}).items()))


def _nodes_section(cluster):
    if not cluster:
        return ""
    rows = []
    for node in cluster["nodes"]:
        taints = "".join(
            f"<code>{esc(t.get('key'))}={esc(t.get('value') or '')}:{esc(t.get('effect'))}</code>"
            for t in node.get("taints") or []
        )
        cordon = ' <span class="badge mute">cordoned</span>' if node.get("unschedulable") else ""
        rows.append(
            f'<tr class="node {"ok" if node.get("ready") else "bad"}">'
            f"<td>{badge(node.get('ready'), 'Ready', 'NotReady')}"
            f"{cordon}</td><td><code>{esc(node.get('name'))}</code></td>"
            f'<td class="chips">{_chips(node.get("labels"))}</td><td class="chips">{taints or "-"}</td></tr>'
        )
    return (
        f'<section id="nodes"><h2>Nodes ({len(rows)})</h2>'
        + _table(["", "node", "labels", "taints"], rows)
        + "</section>"
    )


def _pods_list(pods):
    """The pods of a workload: a ready pod by name (its node in report.json), one that is not
    ready with its node and phase, in red."""
    if not pods:
        return '<span class="mute">no pods</span>'
    ready = [p for p in pods if p.get("ready")]
    not_ready = [p for p in pods if not p.get("ready")]
    items = "".join(
        f"<li class=bad>{esc(p.get('name'))} <i>{esc(p.get('node'))} {esc(p.get('phase'))} not ready</i></li>"
        for p in not_ready
    )
    names = ", ".join(esc(p.get("name")) for p in ready)
    return (
        f"<details{' open' if not_ready else ''}><summary>{len(pods)} pods, {len(not_ready)} not ready"
        f'</summary><ul class="pods">{items}</ul>{names}</details>'
    )


def _workloads_section(cluster):
    if not cluster:
        return ""
    rows = []
    for w in cluster["workloads"]:
        good = w.get("state") in ("ready", "stopped")
        state = f'<span class="badge {"ok" if good else "bad"}">{esc(w.get("state"))}</span>'
        rows.append(
            f'<tr class="workload {"ok" if good else "bad"}"><td>{state}</td><td>{esc(w.get("kind"))}</td>'
            f"<td><code>{esc(w.get('namespace'))}/{esc(w.get('name'))}</code></td>"
            f"<td>{esc(w.get('ready_replicas'))}/{esc(w.get('replicas'))}</td><td>{_pods_list(w.get('pods'))}</td></tr>"
        )
    phases = ", ".join(f"{esc(k)} {esc(v)}" for k, v in sorted((cluster.get("pods") or {}).items())) or "none"
    return (
        f'<section id="workloads"><h2>Workloads ({len(rows)})</h2><p class="mute">Pods by phase: {phases}</p>'
        + _table(["state", "kind", "name", "ready/desired", "pods"], rows)
        + "</section>"
    )


def _pvs_section(cluster):
    if not cluster:
        return ""
    pvs = cluster["persistent_volumes"]
    if not pvs:
        return '<section id="pvs"><h2>Persistent volumes</h2><p class="mute">None in scope.</p></section>'
    bad = {p.get("name") for p in cluster["problems"] if p.get("kind") == "PersistentVolume"}
    rows = [
        f'<tr class="{"bad" if pv.get("name") in bad else "ok"}"><td><code>{esc(pv.get("name"))}</code></td>'
        f"<td><code>{esc(pv.get('path'))}</code></td><td>{esc(pv.get('claim') or '-')}</td>"
        f"<td>{esc(pv.get('phase'))}</td></tr>"
        for pv in pvs
    ]
    return (
        f'<section id="pvs"><h2>Persistent volumes ({len(pvs)})</h2>'
        + _table(["PV", "path", "claim", "phase"], rows)
        + "</section>"
    )


def _fstab_cell(fstab):
    if not fstab:
        return "-"
    options = ",".join(fstab.get("options") or [])
    return f"{esc(fstab.get('source'))} {esc(fstab.get('fstype'))} {esc(options)}"


def _storage_section(report):
    parts = ['<section id="storage"><h2>Storage: what backs each path</h2>']
    for name, host in report["hosts"].items():
        paths = host.get("paths") or {}
        pools = "".join(
            f' <span class="badge {"ok" if (state or {}).get("health") == "ONLINE" else "bad"}">'
            f"pool {esc(pool)} {esc((state or {}).get('health') or 'not imported')}</span>"
            for pool, state in sorted((host.get("pools") or {}).items())
        )
        parts.append(f"<h3>{esc(name)}{pools}</h3>")
        if not paths:
            parts.append('<p class="mute">No storage result from this host.</p>')
            continue
        rows = []
        for path in sorted(paths):
            fact = paths[path] or {}
            size = human_bytes(fact.get("size_bytes")) if fact.get("kind") == "tmpfs" else ""
            rows.append(
                f"<tr><td>{esc(path)}</td><td>{esc(fact.get('kind'))}</td><td>{esc(fact.get('dataset'))}</td>"
                f"<td>{esc(fact.get('mount_point'))}</td><td>{esc(size)}</td><td>{_fstab_cell(fact.get('fstab'))}</td></tr>"
            )
        columns = ["path", "kind", "dataset", "mount point", "size", "fstab"]
        parts.append(_table(columns, rows, f' class="storage" data-host="{esc(name)}"'))
    parts.append("</section>")
    return "".join(parts)


def render_page(report):
    """report.html of one run."""
    cluster = report["cluster"]
    body = (
        _header(report)
        + "<main>"
        + _hosts_section(report)
        + _problems_section(cluster)
        + _workloads_section(cluster)
        + _nodes_section(cluster)
        + _pvs_section(cluster)
        + _storage_section(report)
        + f'<p class="mute">strata.ops health_report, {esc(report["schema"])}</p></main>'
    )
    return _doc(report["verdict"], "ok" if report["healthy"] else "bad", body)


def sparkline(counts, width=None, height=32):
    """An inline SVG of problem counts, oldest first, left to right; None (an unreadable run) is
    left out. A red dot where a run had problems, a green one where it had none."""
    values = [c for c in counts if c is not None]
    if not values:
        return ""
    step = 10
    width = width or max(40, step * (len(values) - 1) + 8)
    top = max(values) or 1
    pad = 4

    def point(i, value):
        x = pad + (i * (width - 2 * pad) / (len(values) - 1) if len(values) > 1 else (width - 2 * pad) / 2)
        y = height - pad - value * (height - 2 * pad) / top
        return f"{x:.1f}", f"{y:.1f}"

    points = [point(i, v) for i, v in enumerate(values)]
    line = " ".join(f"{x},{y}" for x, y in points)
    dots = "".join(
        f'<circle cx="{x}" cy="{y}" r="2.5" fill="{"#b3261e" if v else "#1b6e2e"}"/>'
        for (x, y), v in zip(points, values)
    )
    label = f"problems per run, oldest to newest: {', '.join(str(v) for v in values)}"
    return (
        f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}"><title>{esc(label)}</title>'
        f'<polyline fill="none" stroke="#5f6368" stroke-width="1.5" points="{line}"/>{dots}</svg>'
    )


def render_index(runs):
    """index.html: ``runs`` newest first, each {stamp, generated_at, problems, healthy, verdict}
    (problems None: its report.json could not be read)."""
    latest = runs[0] if runs else None
    ok = bool(latest and latest.get("healthy"))
    rows = []
    for run in runs:
        readable = run.get("problems") is not None
        good = readable and run.get("healthy")
        count = esc(run["problems"]) if readable else "?"
        rows.append(
            f'<tr class="run {"ok" if good else "bad"}" data-stamp="{esc(run["stamp"])}">'
            f"<td>{badge(good)}</td>"
            f'<td><a href="{esc(run["stamp"])}/report.html">'
            f"{esc(human_time(run.get('generated_at')))}</a></td>"
            f'<td class="problems">{count}</td><td>{esc(run.get("verdict") or "report.json unreadable")}</td>'
            f'<td><a href="{esc(run["stamp"])}/report.json">json</a></td></tr>'
        )
    spark = sparkline([r.get("problems") for r in reversed(runs)])
    verdict = latest["verdict"] if latest and latest.get("verdict") else "No readable run yet"
    body = (
        f'<header class="{"ok" if ok else "bad"}"><h1 id="verdict">Latest: {esc(verdict)}</h1>'
        f'<p class="when">{len(runs)} runs, newest first &middot; problems over time {spark}</p></header>'
        "<main>" + _table(["", "run (UTC)", "problems", "verdict", ""], rows, ' id="runs"') + "</main>"
    )
    return _doc("strata.ops health runs", "ok" if ok else "bad", body)
