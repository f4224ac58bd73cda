"""Chart windows and CSV for GET /api/series/{node}/{sensor} (the handler is in api/http.py).

`max_points=N` asks for at most N points over [from, to) and leaves the resolution to the
hub, as Grafana's maxDataPoints does: the raw readings when there are at most N of them,
else the smallest rollup window whose buckets over the range number at most N (1 min,
15 min, 1 h, 1 day; 1 day when even that is more, cut at N). The chart asks with its
width in pixels, so a zoom out shows min/mean/max bands of coarser buckets and a zoom in
ends at the readings themselves.

Rollup buckets are the closed ones the store holds: the readings of a bucket still open
(the last minute or so of a 1 min window, the current day of a 1 day window) appear once
it closes, or at the raw resolution when the range is small enough.
"""

import csv
import io
import math
import time

from ..rollups import WINDOWS

RAW_COLUMNS = ("time", "iso_time", "value", "estimated")
BUCKET_COLUMNS = ("time", "iso_time", "count", "min", "max", "mean", "p50", "p95", "p99")


def rollup_window(t0, t1, max_points):
    """The name of the smallest rollup window with at most `max_points` buckets starting in
    [t0, t1) ("1d" when none has); an unbounded `t1` counts up to now."""
    if not math.isfinite(t1):
        t1 = max(time.time(), t0)
    span = max(t1 - t0, 0.0)
    for name, secs in sorted(WINDOWS.items(), key=lambda kv: kv[1]):
        if math.ceil(span / secs) <= max_points:
            return name
    return "1d"


def _iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + (".%03dZ" % int((t % 1) * 1000))


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def to_csv(window, points):
    """The points of a series answer as CSV text: a header row, then one row per point
    (times as epoch seconds and as UTC ISO 8601; empty cells for nulls). A raw reading's
    `estimated` is true when the node estimated its time (a JSON point's "est")."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = RAW_COLUMNS if window == "raw" else BUCKET_COLUMNS
    w.writerow(cols)
    for p in points:
        if window == "raw":
            cells = [_cell(p.get("value")), _cell(bool(p.get("est")))]
        else:
            cells = [_cell(p.get(c)) for c in cols[2:]]
        w.writerow([p["time"], _iso(p["time"])] + cells)
    return buf.getvalue()
