"""Pure-Python reference for fast/rollup.pyx: windowed per-series rollups.

Plain dicts, one reading at a time. Semantics (shared with the compiled twin,
see fast/README.md): bucket start = floor(t / w) * w; a series' watermark is
the largest time seen for it; a bucket closes once watermark - lateness >= its
end; a reading whose bucket already closed is a late drop (counted). Buckets
close in (series event, window order, ascending start) order and are handed
out columnar by drain_closed().
"""

import math

from ._common import (
    DEFAULT_ALPHA,
    DEFAULT_LATENESS,
    DEFAULT_MAX_BINS,
    DEFAULT_WINDOWS,
    KIND_V,
    KIND_VB,
    QUANTILES,
    ClosedBuckets,
    Sketch,
)

_INF = math.inf


def check_config(windows, lateness, alpha, max_bins):
    """Validated (windows tuple of floats, lateness float); raises ValueError."""
    ws = tuple(float(w) for w in windows)
    if not ws or len(ws) > 16:
        raise ValueError("between 1 and 16 windows")
    for w in ws:
        if not (w > 0 and math.isfinite(w)):
            raise ValueError("windows must be positive finite seconds, not %r" % w)
    if len(set(ws)) != len(ws):
        raise ValueError("windows must be distinct")
    lateness = float(lateness)
    if not (lateness >= 0 and math.isfinite(lateness)):
        raise ValueError("lateness must be >= 0 seconds")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    if not 2 <= max_bins <= 65536:
        raise ValueError("max_bins must be in 2..65536")
    for w in ws:
        if math.ceil(lateness / w) + 1 > 4096:
            raise ValueError("lateness/window ratio too large (at most 4095 open buckets)")
    return ws, lateness


class _Bucket:
    __slots__ = ("start", "count", "min", "max", "sum", "sumsq", "first_t", "first_v",
                 "last_t", "last_v", "sketch")

    def __init__(self, start, alpha, max_bins):
        self.start = start
        self.count = 0
        self.min = _INF
        self.max = -_INF
        self.sum = 0.0
        self.sumsq = 0.0
        self.first_t = _INF
        self.first_v = math.nan
        self.last_t = -_INF
        self.last_v = math.nan
        self.sketch = Sketch(alpha, max_bins)


class _Series:
    __slots__ = ("max_t", "closed_through", "open", "late")

    def __init__(self, nw):
        self.max_t = -_INF
        self.closed_through = [-_INF] * nw
        self.open = [{} for _ in range(nw)]
        self.late = [0] * nw


class Rollups:
    """Per-series windowed aggregates (reference twin; see fast/README.md)."""

    def __init__(self, windows=DEFAULT_WINDOWS, lateness=DEFAULT_LATENESS, alpha=DEFAULT_ALPHA,
                 max_bins=DEFAULT_MAX_BINS):
        self.windows, self.lateness = check_config(windows, lateness, alpha, max_bins)
        self.alpha = alpha
        self.max_bins = max_bins
        self._keyer = Sketch(alpha, max_bins)
        self._series = {}
        self._closed = ClosedBuckets(alpha, max_bins)
        self._late_total = [0] * len(self.windows)
        self.nonfinite_skipped = 0

    @property
    def late_dropped(self):
        return dict(zip(self.windows, self._late_total, strict=True))

    def __len__(self):
        return len(self._series)

    def add(self, sid, t, v):
        """Aggregate one reading; False when skipped (non-finite)."""
        t = float(t)
        v = float(v)
        if sid < 0:
            raise ValueError("series id must be >= 0")
        if not (math.isfinite(t) and math.isfinite(v)):
            self.nonfinite_skipped += 1
            return False
        st = self._series.get(sid)
        if st is None:
            st = self._series[sid] = _Series(len(self.windows))
        if t > st.max_t:
            st.max_t = t
            for wi, w in enumerate(self.windows):
                nct = math.floor((t - self.lateness) / w) * w
                if nct > st.closed_through[wi]:
                    self._close(sid, st, wi, nct)
                    st.closed_through[wi] = nct
        key = self._keyer.key(v)
        for wi, w in enumerate(self.windows):
            start = math.floor(t / w) * w
            if start < st.closed_through[wi]:
                st.late[wi] += 1
                self._late_total[wi] += 1
                continue
            b = st.open[wi].get(start)
            if b is None:
                b = st.open[wi][start] = _Bucket(start, self.alpha, self.max_bins)
            b.count += 1
            if v < b.min:
                b.min = v
            if v > b.max:
                b.max = v
            b.sum += v
            b.sumsq += v * v
            if t < b.first_t:
                b.first_t = t
                b.first_v = v
            if t >= b.last_t:
                b.last_t = t
                b.last_v = v
            b.sketch.add_key(key)
        return True

    def add_batch(self, batch):
        """Aggregate the numeric records (v, vb) of a Batch; returns how many."""
        n = 0
        kind = batch.kind
        series = batch.series
        time = batch.time
        value = batch.value
        for i in range(batch.n_records):
            k = kind[i]
            if k == KIND_V or k == KIND_VB:
                if self.add(series[i], time[i], value[i]):
                    n += 1
        return n

    def _close(self, sid, st, wi, before):
        w = self.windows[wi]
        opened = st.open[wi]
        for start in sorted(s for s in opened if s < before):
            self._emit(sid, w, opened.pop(start))

    def _emit(self, sid, w, b):
        c = self._closed
        c.series.append(sid)
        c.window.append(w)
        c.count.append(b.count)
        sk = b.sketch
        sk.count = b.count
        sk.min = b.min
        sk.max = b.max
        qs = [sk.quantile(q) for q in QUANTILES]
        for name, val in (("start", b.start), ("min", b.min), ("max", b.max), ("sum", b.sum),
                          ("sumsq", b.sumsq), ("first_t", b.first_t), ("first_v", b.first_v),
                          ("last_t", b.last_t), ("last_v", b.last_v), ("p50", qs[0]),
                          ("p95", qs[1]), ("p99", qs[2])):
            getattr(c, name).append(val)
        for key in sorted(sk.bins):
            c.bin_key.append(key)
            c.bin_count.append(sk.bins[key])
        c.bin_off.append(len(c.bin_key))

    def advance(self, watermark):
        """Close, for every series, the buckets with end + lateness <= watermark."""
        watermark = float(watermark)
        for sid in sorted(self._series):
            st = self._series[sid]
            for wi, w in enumerate(self.windows):
                nct = math.floor((watermark - self.lateness) / w) * w
                if nct > st.closed_through[wi]:
                    self._close(sid, st, wi, nct)
                    st.closed_through[wi] = nct

    def flush(self):
        """Close every open bucket (shutdown); later readings for them are late."""
        for sid in sorted(self._series):
            st = self._series[sid]
            if st.max_t == -_INF:
                continue
            for wi, w in enumerate(self.windows):
                self._close(sid, st, wi, _INF)
                st.closed_through[wi] = max(st.closed_through[wi],
                                            math.floor(st.max_t / w) * w + w)

    def drain_closed(self):
        out = self._closed
        self._closed = ClosedBuckets(self.alpha, self.max_bins)
        return out

    def drain_late(self):
        out = []
        for sid in sorted(self._series):
            st = self._series[sid]
            for wi, w in enumerate(self.windows):
                if st.late[wi]:
                    out.append((sid, w, st.late[wi]))
                    st.late[wi] = 0
        return out

    def open_buckets(self):
        return sum(len(o) for st in self._series.values() for o in st.open)

    def memory_bytes(self):
        """A rough count (the reference twin is not about memory)."""
        per_bucket = 400
        return len(self._series) * 300 + self.open_buckets() * per_bucket
