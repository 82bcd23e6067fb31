# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""report.html and index.html: one static file each, CSS inline, no script, nothing fetched.

Pure functions from the report dict to text. Every value that comes from the cluster or a host
(names, labels, reasons, paths) goes through ``esc``: a pod's reason may hold ``<script>``.
"""

import html
import os

from ansible_collections.strata.ops.plugins.module_utils.health_page.rows import (
    LAYER_TOPICS,
    human_bytes,
)

# More problems than this are counted on the page and listed in report.json only (a page for a
# whole broken cluster stays small enough to open).
MAX_PROBLEM_ROWS = 500

CSS = """
:root{--bad:#b3261e;--bad-bg:#fdecea;--ok:#1b6e2e;--ok-bg:#e8f5ea;--warn:#8a5300;--mute:#5f6368;--line:#dadce0}
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
.badge.warn{background:var(--warn)}
.fix{color:var(--bad);font-weight:600}
.mute{color:var(--mute)}
code{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
td.name,.layers td:nth-child(-n+2){white-space:nowrap}
.layers td:nth-child(2),.storage td:nth-child(-n+3){font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
.storage td:last-child{overflow-wrap:anywhere;font-size:.8rem}
.storage tr.host th{color:inherit;padding-top:12px;white-space:normal}
.storage td:nth-child(n+4):nth-child(-n+7){white-space:nowrap}
.chips code{display:inline-block;background:#f1f3f4;border-radius:3px;padding:0 4px;margin:1px 2px 1px 0}
ul.pods{margin:4px 0;padding-left:18px;columns:14em}
ul.pods li.bad{color:var(--bad);font-weight:600}
ul.pods i{font-style:normal;color:var(--mute)}
details summary{cursor:pointer}
svg.spark{vertical-align:middle}
meter{width:5em;vertical-align:middle}
svg.rate,svg.lag{vertical-align:middle;background:#f8f9fa}
svg.rate polyline{fill:none;stroke:#1a73e8;stroke-width:1.5}
svg.lag .v{fill:#1a73e8} svg.lag .v.bad{fill:var(--bad)} svg.lag .t{stroke:var(--bad);stroke-width:2}
.snapshots td,.activity td{font-size:.85rem}
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
        (f"{counts.get('snapshot_warnings', 0)} snapshot warnings", False, "count-snapshots"),
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
            fix = ""
        else:
            fix = (
                f'<span class="problem">{esc(row["problem"])}.</span> '
                f'<span class="fix">{esc(row["fix"])}</span>'
            )
        state = "ok" if row["ok"] else "bad"
        rows.append(
            f'<tr class="layer-row {state}" data-layer="{esc(row["layer"])}"><td>{badge(row["ok"])} '
            f"{esc(row['layer'])}</td><td>{esc(row['path'])}</td><td>{esc(row['found'])}</td>"
            f"<td>{'as expected' if row['ok'] else esc(row['expected'])}</td><td>{fix}</td></tr>"
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


def _names(names):
    """Pod names of a workload, their common prefix (up to a '-') said once: 'app-7d9f-{a, b}'."""
    names = list(names)
    prefix = os.path.commonprefix(names) if len(names) > 2 else ""  # noqa: RUF071  # text, not paths
    prefix = prefix[: prefix.rfind("-") + 1]
    if len(prefix) < 4:
        return ", ".join(esc(n) for n in names)
    return f"{esc(prefix)}{{{', '.join(esc(n[len(prefix) :]) for n in names)}}}"


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
    names = _names(p.get("name") or "" for p in ready)
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


def meter(pct, fill=True):
    """A native bar for a percentage (no script): a fill is green, amber past 80 %, red past
    90 %; progress (``fill`` false) is plain."""
    if pct is None:
        return ""
    shown = f"{float(pct):.0f}"
    levels = "low=.8 high=.9 optimum=0 " if fill else ""
    return f"<meter {levels}value={float(pct) / 100:.3g}></meter> {shown}%"


def _size(value):
    return "" if value is None else esc(human_bytes(value))


def _pool_line(host):
    """Each pool as a badge (health) and its usage."""
    out = []
    for pool in host.get("usage", {}).get("pools") or []:
        ok = pool.get("health") == "ONLINE"
        used = ""
        if pool.get("size_bytes") is not None:
            used = (
                f" {_size(pool.get('allocated_bytes'))} of {_size(pool.get('size_bytes'))}, "
                f"{_size(pool.get('free_bytes'))} free {meter(pool.get('capacity_percent'))}"
            )
        out.append(
            f' <span class="pool" data-pool="{esc(pool["name"])}" '
            f'data-capacity="{esc(pool.get("capacity_percent"))}">'
            f'<b class="badge {"ok" if ok else "bad"}">pool {esc(pool["name"])} '
            f"{esc(pool.get('health') or 'not imported')}</b>{used}</span>"
        )
    if out or "usage" in host:
        return "".join(out)
    return "".join(  # a report without usage: the pools' health as before
        f' <span class="badge {"ok" if (state or {}).get("health") == "ONLINE" else "bad"}">'
        f"pool {esc(pool)} {esc((state or {}).get('health') or 'not imported')}</span>"
        for pool, state in sorted((host.get("pools") or {}).items())
    )


def _usage_cells(fact):
    usage = fact.get("usage")
    if not isinstance(usage, dict):
        size = f"of {_size(fact['size_bytes'])}" if fact.get("size_bytes") is not None else ""
        return f"<td>{size}</td>" + "<td></td>" * 3
    if usage.get("error"):
        return f'<td colspan=4 class="fix">{esc(usage["error"])}</td>'
    quota = usage.get("refquota_bytes") or usage.get("quota_bytes")
    of = f" of {_size(usage['size_bytes'])}" if usage.get("size_bytes") is not None else ""
    return (
        f"<td>{_size(usage.get('used_bytes'))}{of}</td><td>{_size(usage.get('available_bytes'))}</td>"
        f"<td>{_size(quota) or '-'}</td><td>{meter(usage.get('percent'))}</td>"
    )


def _storage_row(path, fact):
    kind = fact.get("kind")
    where = fact.get("dataset") or (fact.get("mount_point") if fact.get("mount_point") != path else "")
    attrs = ""
    if kind == "tmpfs" and isinstance(fact.get("usage"), dict):
        attrs = f' class="ramdisk" data-fill="{esc(fact["usage"].get("percent"))}"'
    return (
        f"<tr{attrs}><td>{esc(path)}</td><td>{esc(kind)}</td><td>{esc(where)}</td>"
        f"{_usage_cells(fact)}<td>{_fstab_cell(fact.get('fstab'))}</td></tr>"
    )


def _storage_section(report):
    """One table, a heading row per host (its pools), then each path read and how full it is."""
    rows = []
    for name, host in report["hosts"].items():
        paths = host.get("paths") or {}
        rows.append(
            f'<tr class="host" data-host="{esc(name)}"><th colspan=8>{esc(name)}{_pool_line(host)}</th></tr>'
        )
        if not paths:
            rows.append('<tr><td colspan=8 class="mute">No storage result from this host.</td></tr>')
        rows.extend(_storage_row(path, paths[path] or {}) for path in sorted(paths))
    columns = ["path", "kind", "dataset or mount", "used", "free", "quota", "fill", "fstab"]
    return (
        '<section id="storage"><h2>Storage: what backs each path, and how full it is</h2>'
        + _table(columns, rows, ' class="storage"')
        + "</section>"
    )


def _points(values, width, height, top):
    pad = 2
    step = (width - 2 * pad) / max(len(values) - 1, 1)
    return " ".join(
        f"{pad + i * step:.0f},{height - pad - (v * (height - 2 * pad) / top if top else 0):.0f}"
        for i, v in enumerate(values)
    )


def downsample(samples, points):
    """At most ``points`` rates: the mean of each run of neighbouring samples."""
    rates = [rate for _at, rate in samples]
    if len(rates) <= points:
        return rates
    size = len(rates) / points
    return [
        sum(rates[int(i * size) : int((i + 1) * size)]) // max(1, int((i + 1) * size) - int(i * size))
        for i in range(points)
    ]


RATE_POINTS = 32


def rate_chart(download, width=160, height=36):
    """An inline SVG of a download's rate over time (at most RATE_POINTS points drawn)."""
    samples = (download or {}).get("rate_history") or []
    if len(samples) < 2:
        return ""
    values = downsample(samples, RATE_POINTS)
    top = max(values) or 1
    label = (
        f"download rate over {samples[-1][0]:.0f} s: peak {human_bytes(max(r for _t, r in samples))}/s, "
        f"{len(samples)} samples"
    )
    return (
        f'<svg class="rate" width="{width}" height="{height}" role="img" data-points="{len(values)}">'
        f'<title>{esc(label)}</title><polyline points="{_points(values, width, height, top)}"/></svg>'
    )


def lag_bar(lag, limit, width=120, height=14):
    """The lag against the limit: a bar, red past the limit, and the limit as a red line."""
    if lag is None or limit is None:
        return ""
    scale = max(lag, limit, 1) * 1.25
    lag_width = max(0, lag) * width / scale
    at = limit * width / scale
    label = f"lag {lag} slots, limit {limit}"
    return (
        f'<svg class="lag" width="{width}" height="{height}" role="img"><title>{esc(label)}</title>'
        f'<rect class="v{" bad" if lag > limit else ""}" x="0" y="3" width="{lag_width:.0f}" height="8"/>'
        f'<line class="t" x1="{at:.0f}" y1="0" x2="{at:.0f}" y2="{height}"/></svg>'
    )


def _archive_cell(archive):
    if not archive:
        return '<span class="mute">none</span>'
    problem = f' <span class="fix">{esc(archive["problem"])}</span>' if archive.get("problem") else ""
    return f"slot {esc(archive.get('slot'))} <i class=mute>{_size(archive.get('size'))}</i>{problem}"


def _tip_cell(snap):
    if snap.get("tip_slot") is None:
        reason = esc(snap.get("tip_reason"))
        return f'<span class="badge warn">tip unknown</span> <span class="mute">{reason}</span>'
    lag = snap.get("lag_slots")
    if lag is None:
        return f"tip {esc(snap['tip_slot'])}, no local snapshot to compare"
    minutes = f" (~{lag * 0.4 / 60:.0f} min)" if lag is not None and lag >= 0 else ""
    return (
        f"tip {esc(snap['tip_slot'])}, lag {esc(lag)}{minutes} of {esc(snap.get('max_lag_slots'))} "
        f"{lag_bar(lag, snap.get('max_lag_slots'))}"
    )


def _download_cell(download):
    if not download:
        return '<span class="mute">no download recorded</span>'
    if download.get("error"):
        return f'<span class="fix">{esc(download["error"])}</span>'
    mean = download.get("mean_rate_bytes_per_s")
    rate = f", mean {_size(mean)}/s" if mean else ""
    return f"{esc(download.get('state'))}{rate} {rate_chart(download)}"


def _snapshots_section(report):
    rows = []
    for name, host in report["hosts"].items():
        snap = host.get("snapshots")
        if not snap:
            continue
        state = snap["state"]
        rows.append(
            f'<tr class="snap {state}" data-host="{esc(name)}" data-verdict="{esc(snap["verdict"])}">'
            f'<td>{esc(name)} <b class="badge {state}">{esc(snap["verdict"])}</b></td>'
            f"<td>{_archive_cell(snap.get('full'))}</td><td>{_archive_cell(snap.get('incremental'))}</td>"
            f"<td>{_tip_cell(snap)}</td><td>{_download_cell(snap.get('download'))}</td></tr>"
        )
    if not rows:
        return '<section id="snapshots"><h2>Snapshots</h2><p class="mute">Not read in this run.</p></section>'
    return (
        '<section id="snapshots"><h2>Snapshots: local slots against the tip, the last download</h2>'
        + _table(
            ["host", "full", "incremental", "tip and lag (limit drawn)", "last download"],
            rows,
            ' class="snapshots"',
        )
        + "</section>"
    )


NONE_HERE = '<span class="mute">none on this host</span>'


def _transfer_cell(transfer):
    if not transfer:
        return NONE_HERE
    if transfer.get("error"):
        return f'<span class="fix">{esc(transfer["error"])}</span>'
    failed = transfer.get("streams_failed")
    streams = f", {failed} of {transfer.get('streams')} streams failed" if failed else ""
    return (
        f"{esc(transfer.get('state'))}: {_size(transfer.get('bytes_done'))} of "
        f"{_size(transfer.get('bytes_total'))} "
        f"{meter(transfer.get('percent'), fill=False)}, "
        f"{_size(transfer.get('rate_bytes_s'))}/s{esc(streams)} "
        f"<i class=mute>to {esc(transfer.get('destination'))}, {esc(human_time(transfer.get('updated')))}</i>"
    )


def _checkpoints_cell(checkpoints):
    if not checkpoints:
        return NONE_HERE
    if checkpoints.get("error"):
        return f'<span class="fix">{esc(checkpoints["error"])}</span>'
    newest = (checkpoints.get("newest") or [{}])[0]
    how = "restorable" if newest.get("restorable") else "usable" if newest.get("usable") else "unusable"
    counted = f"{esc(checkpoints['count'])} ({esc(checkpoints['usable'])} usable)"
    return f"{counted}, newest {esc(newest.get('id'))} {how}"


def _isolation_cell(isolation):
    if not isolation:
        return NONE_HERE
    if isolation.get("error"):
        return f'<span class="fix">{esc(isolation["error"])}</span>'
    return (
        f'<b class="badge warn">isolated</b> since {esc(human_time(isolation.get("since")))}: node '
        f"{esc(isolation.get('node') or '-')}, {esc(isolation.get('runners'))} runners paused, "
        f"workloads {esc(', '.join(isolation.get('workloads') or []) or '-')}"
    )


def _activity_section(report):
    shown = [(name, name, host["activity"]) for name, host in report["hosts"].items() if host.get("activity")]
    controller = report.get("controller")
    if controller:
        shown.append((controller["name"], f"{controller['name']} (controller)", controller["activity"]))
    rows = [
        f'<tr class="activity-row" data-host="{esc(name)}"><td>{esc(label)}</td>'
        f"<td>{_transfer_cell(activity.get('transfer'))}</td>"
        f"<td>{_checkpoints_cell(activity.get('checkpoints'))}</td>"
        f"<td>{_isolation_cell(activity.get('isolation'))}</td></tr>"
        for name, label, activity in shown
    ]
    if not rows:
        return ""
    return (
        '<section id="activity"><h2>Last transfer, checkpoints, experiment isolation</h2>'
        + _table(["host", "last transfer", "checkpoints", "isolation"], rows, ' class="activity"')
        + "</section>"
    )


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
        + _snapshots_section(report)
        + _activity_section(report)
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
