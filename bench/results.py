"""What each benchmark records for make bench's results.json and results.html (bench/report.py).

``record(...)`` appends one JSON line to the file named by STRATA_BENCH_RESULTS (bench/run sets
it to a fresh file per run); without it, record does nothing, so a benchmark run on its own only
prints. One row per comparison (and per size, ``size={"datasets": 200}``); docs/performance.md
describes the fields.
"""

import json
import math
import os

ENV = "STRATA_BENCH_RESULTS"


def values_better(unit):
    """Rates (MB/s, MiB/s) are better higher; durations, bytes and counts lower."""
    return "higher" if unit.endswith("/s") else "lower"


def ratio_better(ours, baseline, ratio, goal, unit):
    """Which way the ratio is better: from a ratio goal (``<= 2x``, ``>= 10x``) when there is one,
    else from how it is formed - ours/baseline keeps the values' direction, baseline/ours flips it."""
    text = (goal or "").strip()
    if text.endswith("x") and text[:1] in "<>":
        return "lower" if text.startswith("<") else "higher"
    direction = values_better(unit)
    if not ours or not baseline or not ratio or ours <= 0 or baseline <= 0 or ratio <= 0:
        return direction
    forward = abs(math.log(ratio) - math.log(ours / baseline))
    backward = abs(math.log(ratio) - math.log(baseline / ours))
    if forward <= backward:
        return direction
    return "lower" if direction == "higher" else "higher"


def number(value):
    """A finite float or None (JSON has no infinity; a division by a zero median gives one)."""
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def record(
    benchmark,
    *,
    metric,
    ours,
    baseline,
    baseline_name,
    unit,
    ratio,
    goal=None,
    met=None,
    limit=None,
    limit_name=None,
    size=None,
    notes="",
):
    """Append one row to $STRATA_BENCH_RESULTS; nothing when it is unset. ``ratio``: how many
    times better than the baseline, as the benchmark prints it; ``goal`` a short text (">= 10x");
    ``met`` True, False or None (no goal, or not measured)."""
    path = os.environ.get(ENV)
    if not path:
        return None
    ours, baseline, ratio, limit = number(ours), number(baseline), number(ratio), number(limit)
    row = {
        "benchmark": str(benchmark),
        "metric": str(metric),
        "ours": ours,
        "baseline": baseline,
        "baseline_name": str(baseline_name),
        "limit": limit,
        "limit_name": None if limit_name is None else str(limit_name),
        "unit": str(unit),
        "ratio": ratio,
        "better": ratio_better(ours, baseline, ratio, goal, unit),
        "values_better": values_better(unit),
        "goal": None if goal is None else str(goal),
        "met": None if met is None else bool(met),
        "size": dict(size) if size else None,
        "notes": str(notes),
    }
    line = json.dumps(row, sort_keys=True, allow_nan=False) + "\n"
    # One write on an O_APPEND descriptor: rows of one run never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
    return row
