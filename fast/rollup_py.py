"""Pure-Python reference for fast/rollup.pyx: windowed per-series rollups.

Plain dicts, one reading at a time. Semantics (shared with the compiled twin,
see fast/README.md): readings go into the finest window only (bucket start =
floor(t / w0) * w0); a series' watermark is the largest time seen for it; a
finest bucket closes once watermark - lateness >= its end, and a reading whose
finest bucket already closed is a late drop (counted). Coarser windows (each a
multiple of the finest) are rollups of rollups: a closing finest bucket is
merged into the open bucket of every coarser window, which closes once every
finest bucket inside it has closed. All aggregates (count, min, max, sums,
first/last, the sketch) merge exactly, so this equals direct aggregation up
to floating-point summation order. Buckets are handed out columnar by
drain_closed().
"""

import math

from ._common import (
    DEFAULT_ALPHA,
    DEFAULT_LATENESS,
    DEFAULT_MAX_BINS,
    DEFAULT_WINDOWS,
    KIND_V,
    KIND_VB,
    MIN_ALPHA,
    QUANTILES,
    ClosedBuckets,
    Sketch,
)

_INF = math.inf


def check_config(windows, lateness, alpha, max_bins):
    """Validated (windows tuple of floats, lateness float); raises ValueError."""
    ws = tuple(sorted(float(w) for w in windows))
    if not ws or len(ws) > 16:
        raise ValueError("between 1 and 16 windows")
    for w in ws:
        if not (w > 0 and math.isfinite(w)):
            raise ValueError("windows must be positive finite seconds, not %r" % w)
    if len(set(ws)) != len(ws):
        raise ValueError("windows must be distinct")
    for w in ws[1:]:
        if w % ws[0] != 0:
            raise ValueError("every window must be a multiple of the finest (%r)" % ws[0])
    lateness = float(lateness)
    if not (lateness >= 0 and math.isfinite(lateness)):
        raise ValueError("lateness must be >= 0 seconds")
    if not MIN_ALPHA <= alpha < 1.0:
        raise ValueError("alpha must be in [%g, 1)" % MIN_ALPHA)
    if not 2 <= max_bins <= 65536:
        raise ValueError("max_bins must be in 2..65536")
    if math.ceil(lateness / ws[0]) + 1 > 4096:
        raise ValueError("lateness/window ratio too large (at most 4095 open buckets)")
    return ws, lateness


def window_parents(ws):
    """For each window (ascending), the coarsest finer window it is a multiple of
    (-1 for the finest): a closing bucket is merged into its children's buckets."""
    return [-1] + [max(j for j in range(i) if ws[i] % ws[j] == 0) for i in range(1, len(ws))]


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


def _merge(into, b):
    """Fold closed bucket b into the coarser bucket `into` (exact for every aggregate)."""
    into.count += b.count
    if b.min < into.min:
        into.min = b.min
    if b.max > into.max:
        into.max = b.max
    into.sum += b.sum
    into.sumsq += b.sumsq
    if b.first_t < into.first_t:
        into.first_t = b.first_t
        into.first_v = b.first_v
    if b.last_t >= into.last_t:
        into.last_t = b.last_t
        into.last_v = b.last_v
    bins = into.sketch.bins
    for key, n in b.sketch.bins.items():
        bins[key] = bins.get(key, 0) + n
    into.sketch._collapse()


class _Series:
    __slots__ = ("max_t", "closed_through", "open", "coarse", "late")

    def __init__(self, nw):
        self.max_t = -_INF
        self.closed_through = -_INF  # finest bucket starts below this are closed
        self.open = {}  # finest window: start -> bucket
        self.coarse = [None] * (nw - 1)  # the one open bucket of each coarser window
        self.late = 0


class Rollups:
    """Per-series windowed aggregates (reference twin; see fast/README.md)."""

    def __init__(self, windows=DEFAULT_WINDOWS, lateness=DEFAULT_LATENESS, alpha=DEFAULT_ALPHA,
                 max_bins=DEFAULT_MAX_BINS):
        self.windows, self.lateness = check_config(windows, lateness, alpha, max_bins)
        self.alpha = alpha
        self.max_bins = max_bins
        parents = window_parents(self.windows)
        self._children = [[i for i, p in enumerate(parents) if p == lvl]
                          for lvl in range(len(self.windows))]
        self._keyer = Sketch(alpha, max_bins)
        self._series = {}
        self._closed = ClosedBuckets(alpha, max_bins)
        self._late_total = 0
        self.nonfinite_skipped = 0

    @property
    def late_dropped(self):
        """window -> late readings: a late reading is missing from every window."""
        return dict.fromkeys(self.windows, self._late_total)

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
        w = self.windows[0]
        if t > st.max_t:
            st.max_t = t
            nct = math.floor((t - self.lateness) / w) * w
            if nct > st.closed_through:
                self._close(sid, st, nct)
                st.closed_through = nct
        start = math.floor(t / w) * w
        if start < st.closed_through:
            st.late += 1
            self._late_total += 1
            return True
        b = st.open.get(start)
        if b is None:
            b = st.open[start] = _Bucket(start, self.alpha, self.max_bins)
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
        b.sketch.add_key(self._keyer.key(v))
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

    def _close(self, sid, st, before):
        """Close the finest buckets starting before `before` (ascending), then the
        coarser buckets that are complete (ascending windows)."""
        for start in sorted(s for s in st.open if s < before):
            self._close_bucket(sid, st, 0, st.open.pop(start))
        for ci in range(len(st.coarse)):
            cb = st.coarse[ci]
            if cb is not None and cb.start + self.windows[ci + 1] <= before:
                st.coarse[ci] = None
                self._close_bucket(sid, st, ci + 1, cb)

    def _close_bucket(self, sid, st, lvl, b):
        """Merge closing bucket b (window lvl) into the open bucket of each window
        whose parent is lvl (closing that one first if it is older), emit b."""
        for wi in self._children[lvl]:
            w = self.windows[wi]
            cstart = math.floor(b.start / w) * w
            cb = st.coarse[wi - 1]
            if cb is not None and cb.start != cstart:
                st.coarse[wi - 1] = None
                self._close_bucket(sid, st, wi, cb)
                cb = None
            if cb is None:
                cb = st.coarse[wi - 1] = _Bucket(cstart, self.alpha, self.max_bins)
            _merge(cb, b)
        self._emit(sid, self.windows[lvl], b)

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
        w = self.windows[0]
        nct = math.floor((watermark - self.lateness) / w) * w
        for sid in sorted(self._series):
            st = self._series[sid]
            if nct > st.closed_through:
                self._close(sid, st, nct)
                st.closed_through = nct

    def flush(self):
        """Close every open bucket (shutdown); later readings for them are late."""
        w = self.windows[0]
        for sid in sorted(self._series):
            st = self._series[sid]
            if st.max_t == -_INF:
                continue
            self._close(sid, st, _INF)
            st.closed_through = max(st.closed_through, math.floor(st.max_t / w) * w + w)

    def drain_closed(self):
        out = self._closed
        self._closed = ClosedBuckets(self.alpha, self.max_bins)
        return out

    def drain_late(self):
        """[(series_id, finest window, count)] of late drops since the last call."""
        out = []
        for sid in sorted(self._series):
            st = self._series[sid]
            if st.late:
                out.append((sid, self.windows[0], st.late))
                st.late = 0
        return out

    def open_buckets(self):
        return sum(len(st.open) + sum(1 for b in st.coarse if b is not None)
                   for st in self._series.values())

    def memory_bytes(self):
        """A rough count (the reference twin is not about memory)."""
        return len(self._series) * 300 + self.open_buckets() * 400
