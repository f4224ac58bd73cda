"""fast.Rollups against the plain-Python reference (fast/rollup_py.py), exact
quantiles, and its stated bounds.

Float tolerance between twins: none for counts, min, max, first/last, bucket
starts and sketch bins (same arithmetic in the same order); 1e-12 relative for
sum, sum of squares and the quantile estimates. Sketch vs exact quantiles:
relative error <= alpha (plus 1e-9 absolute for the zero bin).
"""

import math
import random

import pytest
from fastgen import NOW
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers import require
from smartpark import fast
from smartpark.fast import rollup_py
from smartpark.fast._common import MIN_INDEXABLE, ClosedBuckets, Sketch, sketch_mapping

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

EXACT = ("series", "window", "count", "start", "min", "max", "first_t", "first_v", "last_t",
         "last_v", "bin_off", "bin_key", "bin_count")
CLOSE = ("sum", "sumsq", "p50", "p95", "p99")


def _key(c, i):
    return (c.series[i], c.window[i], c.start[i])


def assert_same_closed(a, b):
    assert len(a) == len(b)
    assert sorted(_key(a, i) for i in range(len(a))) == sorted(_key(b, i) for i in range(len(b)))
    for name in EXACT:
        x, y = getattr(a, name).tolist(), getattr(b, name).tolist()
        assert len(x) == len(y), name
        for u, v in zip(x, y, strict=True):
            assert u == v or (u != u and v != v), (name, u, v)
    for name in CLOSE:
        for u, v in zip(getattr(a, name), getattr(b, name), strict=True):
            assert u == v or math.isclose(u, v, rel_tol=1e-12), (name, u, v)


values = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-12, -1e-12, 21.5, float("nan"), float("inf")]),
    st.integers(-1000, 1000).map(float),
)
readings = st.lists(st.tuples(st.integers(0, 5), st.floats(-400, 4000), values), max_size=300)
# the finest window and coarser ones that are multiples of it
windows = st.tuples(st.sampled_from([1.0, 10.0, 60.0, 90.0]),
                    st.lists(st.sampled_from([2, 3, 15, 60, 1440]), max_size=3, unique=True)
                    ).map(lambda p: [p[0]] + [p[0] * k for k in p[1]])


@SETTINGS
@given(readings, windows, st.sampled_from([0.0, 5.0, 60.0, 120.0, 1000.0]),
       st.sampled_from([0.01, 0.02, 0.05]), st.sampled_from([4, 16, 512]),
       st.floats(0, 6000))
def test_twins_agree(rs, ws, lateness, alpha, max_bins, watermark):
    ours = fast.Rollups(windows=ws, lateness=lateness, alpha=alpha, max_bins=max_bins)
    ref = rollup_py.Rollups(windows=ws, lateness=lateness, alpha=alpha, max_bins=max_bins)
    base = 1_700_000_000.0
    for sid, t, v in rs:
        assert ours.add(sid, base + t, v) == ref.add(sid, base + t, v)
    assert ours.late_dropped == ref.late_dropped
    assert ours.nonfinite_skipped == ref.nonfinite_skipped
    assert ours.drain_late() == ref.drain_late()
    assert_same_closed(ours.drain_closed(), ref.drain_closed())
    ours.advance(base + watermark)
    ref.advance(base + watermark)
    assert_same_closed(ours.drain_closed(), ref.drain_closed())
    assert ours.open_buckets() == ref.open_buckets()
    ours.flush()
    ref.flush()
    assert_same_closed(ours.drain_closed(), ref.drain_closed())
    assert ours.open_buckets() == ref.open_buckets() == 0


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2 ** 32))
def test_twins_agree_on_decoded_batches(seed):
    rnd = random.Random(seed)
    import cbor2
    payloads = []
    for k in range(20):
        recs = [{-2: "n%d/" % rnd.randrange(5), -3: 1_700_000_000 + k * 7 + rnd.uniform(-90, 5)}]
        recs[0].update({0: "temp", 2: rnd.gauss(20, 3)})
        recs.append({0: "door", 4: rnd.random() < 0.5})
        recs.append({0: "label", 3: "x"})
        recs.append({0: "count", 2: rnd.randrange(100), 6: rnd.randrange(-30, 1)})
        recs.append({0: "energy", 5: rnd.uniform(0, 100)})
        payloads.append(cbor2.dumps(recs))
    batch = fast.decode_batch(payloads, NOW, fast.SeriesTable())
    ours, ref = fast.Rollups(), rollup_py.Rollups()
    n = ours.add_batch(batch)
    assert n == ref.add_batch(batch) == 60  # temp, door, count per payload; not vs / s-only
    ours.flush()
    ref.flush()
    assert_same_closed(ours.drain_closed(), ref.drain_closed())


# ---------------------------------------------------------------- sketch bound

def exact_quantile(xs, q):
    s = sorted(xs)
    return s[math.floor(q * (len(s) - 1))]


def within(est, exact, alpha):
    return abs(est - exact) <= alpha * abs(exact) + MIN_INDEXABLE * 1.0001


magnitudes = st.one_of(st.floats(1e-2, 1e2), st.floats(100.0, 1e6), st.just(0.0))
signed = st.tuples(magnitudes, st.booleans()).map(lambda p: -p[0] if p[1] else p[0])


@SETTINGS
@given(st.lists(signed, min_size=1, max_size=400), st.sampled_from([0.01, 0.02]))
def test_sketch_within_alpha_of_exact(xs, alpha):
    # values span at most 4 decades per sign: below gamma**max_bins, no collapse
    lo = min((abs(x) for x in xs if x), default=1.0)
    xs = [x for x in xs if x == 0 or abs(x) <= lo * 1e4]
    ours = fast.Rollups(windows=(86400.0,), lateness=0.0, alpha=alpha)
    sk = Sketch(alpha)
    for i, x in enumerate(xs):
        ours.add(0, 1_700_006_400.0 + i * 1e-3, x)
        sk.add(x)
    ours.flush()
    closed = ours.drain_closed()
    assert len(closed) == 1 and closed.count[0] == len(xs)
    for q, col in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        exact = exact_quantile(xs, q)
        assert within(getattr(closed, col)[0], exact, alpha), (q, exact)
        assert within(sk.quantile(q), exact, alpha)
    for q in (0.0, 0.1, 0.25, 0.75, 1.0):
        assert within(closed.sketch(0).quantile(q), exact_quantile(xs, q), alpha)


@SETTINGS
@given(st.lists(st.lists(signed, min_size=1, max_size=50), min_size=2, max_size=5))
def test_sketches_merge(parts):
    lo = min((abs(x) for p in parts for x in p if x), default=1.0)
    parts = [[x for x in p if x == 0 or abs(x) <= lo * 1e4] or [0.0] for p in parts]
    whole = Sketch()
    merged = Sketch()
    for p in parts:
        s = Sketch()
        for x in p:
            s.add(x)
            whole.add(x)
        merged.merge(s)
    allx = [x for p in parts for x in p]
    assert merged.bins == whole.bins and merged.count == len(allx)
    for q in (0.5, 0.95, 0.99):
        assert within(merged.quantile(q), exact_quantile(allx, q), 0.01)


# the interpolated index: edges of octaves and of the zero bin, the extremes
EDGES = sorted({sign * x for sign in (1.0, -1.0) for x in (
    [MIN_INDEXABLE, math.nextafter(MIN_INDEXABLE, 1.0), 1e-8, 0.1, 1.0, 1.5, 2.0, 3.0, 21.37,
     1e6, 98_765.4321, 1e300, 1.7976931348623157e308]
    + [math.ldexp(1.0, e) * f for e in range(-29, 1023, 7)
       for f in (1.0, 1.0 - 2.0 ** -53, 1.0 + 2.0 ** -52, 1.5, 1.9999999999999998)])})


@pytest.mark.parametrize("alpha", [1e-6, 0.001, 0.01, 0.02, 0.1, 0.5, 0.99])
def test_sketch_mapping_bound_and_order(alpha):
    """Every value is within alpha of its bin's value; keys never decrease with x;
    consecutive bin values differ by at most gamma (below the top bin)."""
    sk = Sketch(alpha)
    rnd = random.Random(alpha)
    xs = EDGES + [rnd.choice((1, -1)) * 10.0 ** rnd.uniform(-9, 308) for _ in range(5000)]
    for x in xs:
        v = sk.value_of(sk.key(x))
        if math.isfinite(v):
            assert abs(v - x) <= alpha * abs(x) + MIN_INDEXABLE, (x, v)
    xs.sort()
    keys = [sk.key(x) for x in xs]
    assert keys == sorted(keys)
    c, kbase = sketch_mapping(alpha)
    assert sk.key(math.nextafter(MIN_INDEXABLE, 1.0)) == 1 and sk.key(MIN_INDEXABLE) == 0
    gamma = (1 + alpha) / (1 - alpha)
    top = sk.key(1e300)
    for k in range(1, top, max(1, top // 3000)):
        assert sk.value_of(k + 1) / sk.value_of(k) <= gamma * (1 + 1e-12)


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_twins_same_bins_at_edges(alpha):
    """The C key (bits + polynomial) and the reference (frexp + polynomial) agree
    to the bin, and on the quantile values, at every edge value."""
    ours = fast.Rollups(windows=(86400.0,), lateness=0.0, alpha=alpha, max_bins=65536)
    ref = rollup_py.Rollups(windows=(86400.0,), lateness=0.0, alpha=alpha, max_bins=65536)
    for i, x in enumerate(EDGES):
        for r in (ours, ref):
            r.add(i, 1_700_006_400.0, x)  # one bucket per value: p50 is its bin's value
            r.add(10_000, 1_700_006_400.0 + i * 1e-3, x)
    ours.flush()
    ref.flush()
    a, b = ours.drain_closed(), ref.drain_closed()
    assert_same_closed(a, b)
    sk = Sketch(alpha)
    (row,) = [i for i in range(len(a)) if a.series[i] == 10_000]
    keys = a.bin_key[a.bin_off[row]:a.bin_off[row + 1]].tolist()
    assert keys == sorted({sk.key(x) for x in EDGES})
    for i in range(len(a)):  # a one-value bucket: its bin's value clamped to the value
        assert a.p50[i] == a.min[i] or a.count[i] > 1
    assert list(a.bin_key) == list(b.bin_key)


def test_collapse_keeps_high_quantiles_and_bounds_bins():
    xs = [10.0 ** (k / 50.0) for k in range(-600, 600)]  # 24 decades: far beyond 512 bins
    ours = fast.Rollups(windows=(60.0,), lateness=0.0, max_bins=64)
    for i, x in enumerate(xs):
        ours.add(3, 1_700_000_000.0 + i * 1e-3, x)
    ours.flush()
    c = ours.drain_closed()
    assert c.bin_off[1] - c.bin_off[0] == 64
    assert within(c.p99[0], exact_quantile(xs, 0.99), 0.01)
    assert within(c.p95[0], exact_quantile(xs, 0.95), 0.01)


# ---------------------------------------------------------------- semantics

def test_lateness_and_late_drops():
    r = fast.Rollups(windows=(60.0,), lateness=30.0)
    t0 = 1_700_000_040.0  # bucket [1_700_000_040, +60) since 1_700_000_040 % 60 == 0
    assert t0 % 60 == 0
    r.add(1, t0 + 10, 1.0)
    r.add(1, t0 + 70, 2.0)          # next bucket; the first stays open (lateness 30)
    r.add(1, t0 + 5, 3.0)           # out of order, within lateness: lands in bucket 1
    assert len(r.drain_closed()) == 0
    r.add(1, t0 + 95, 4.0)          # watermark - 30 = t0 + 65 >= end of bucket 1: closes it
    c = r.drain_closed()
    assert len(c) == 1 and c.start[0] == t0 and c.count[0] == 2
    assert (c.first_t[0], c.first_v[0], c.last_t[0], c.last_v[0]) == (t0 + 5, 3.0, t0 + 10, 1.0)
    assert (c.min[0], c.max[0], c.sum[0], c.sumsq[0]) == (1.0, 3.0, 4.0, 10.0)
    r.add(1, t0 + 20, 5.0)          # its bucket already closed: a late drop
    assert r.late_dropped == {60.0: 1}
    assert r.drain_late() == [(1, 60.0, 1)] and r.drain_late() == []
    r.flush()
    c = r.drain_closed()
    assert len(c) == 1 and c.count[0] == 2 and c.sum[0] == 6.0


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 3, allow_nan=False), values),
                max_size=200),
       st.sampled_from([(60.0, 900.0, 3600.0), (60.0, 900.0, 3600.0, 86400.0),
                        (60.0, 120.0, 180.0, 360.0, 900.0), (10.0, 30.0, 40.0, 120.0)]),
       st.sampled_from([3, 8, 512]))
def test_coarse_windows_equal_direct_aggregation(rs, ws, max_bins):
    """Rollups of rollups equal aggregating the readings directly (in-order input),
    whether a window's buckets come from the finest window or from a coarser one it
    is a multiple of (360 from 180, 120 from 40 and 30...), sketch collapse included."""
    t, readings = 1_700_000_000.0, []
    for sid, dt, v in rs:
        t += dt * 20
        readings.append((sid, t, v))
    nested = fast.Rollups(windows=ws, lateness=0.0, max_bins=max_bins)
    direct = {w: fast.Rollups(windows=(w,), lateness=0.0, max_bins=max_bins) for w in ws[1:]}
    for sid, t, v in readings:
        nested.add(sid, t, v)
        for r in direct.values():
            r.add(sid, t, v)
    nested.flush()
    got = nested.drain_closed()
    index = {(got.series[i], got.window[i], got.start[i]): i for i in range(len(got))}
    for w, r in direct.items():
        r.flush()
        want = r.drain_closed()
        rows = {(x["series"], x["start"]): x for x in got.rows() if x["window"] == w}
        assert len(rows) == len(want)
        for i, x in enumerate(want.rows()):
            y = rows[(x["series"], x["start"])]
            for k in ("count", "min", "max", "first_t", "first_v", "last_t", "last_v",
                      "p50", "p95", "p99"):
                assert x[k] == y[k] or (x[k] != x[k] and y[k] != y[k]), k
            for k in ("sum", "sumsq"):
                assert math.isclose(x[k], y[k], rel_tol=1e-9, abs_tol=1e-6), k
            j = index[(x["series"], w, x["start"])]
            assert got.sketch(j).bins == want.sketch(i).bins


def test_advance_closes_idle_series():
    r = fast.Rollups(windows=(60.0, 3600.0), lateness=10.0)
    r.add(0, 1_700_000_000.0, 1.0)
    r.advance(1_700_000_100.0)
    c = r.drain_closed()
    assert c.window.tolist() == [60.0]
    r.advance(1_700_010_000.0)
    assert r.drain_closed().window.tolist() == [3600.0]
    assert r.open_buckets() == 0


def test_add_batch_skips_strings_and_sum_only():
    import cbor2
    p = cbor2.dumps([{-2: "n/", -3: 1_700_000_000, 0: "a", 2: 2.0}, {0: "b", 3: "s"},
                     {0: "c", 5: 9.0}, {0: "d", 4: True}, {0: "e", 2: float("nan")}])
    batch = fast.decode_batch([p], NOW, fast.SeriesTable())
    r = fast.Rollups()
    assert r.add_batch(batch) == 2 and r.nonfinite_skipped == 1
    r.flush()
    c = r.drain_closed()
    assert len(c) == 2 * 4 and sorted(set(c.sum)) == [1.0, 2.0]


def test_config_errors():
    for kw in ({"windows": ()}, {"windows": (0,)}, {"windows": (60, 60)}, {"lateness": -1},
               {"windows": (60, 90)},
               {"alpha": 0}, {"alpha": 1.5}, {"alpha": 1e-7}, {"max_bins": 1}):
        with pytest.raises(ValueError):
            fast.Rollups(**kw)
    with pytest.raises(ValueError):
        fast.Rollups().add(-1, NOW, 1.0)


def test_closed_buckets_rows():
    r = fast.Rollups(windows=(60.0,), lateness=0.0)
    r.add(2, 1_700_000_000.0, 5.0)
    r.flush()
    c = r.drain_closed()
    assert isinstance(c, ClosedBuckets)
    (row,) = c.rows()
    assert row["series"] == 2 and row["count"] == 1 and row["p50"] == row["p99"] == 5.0


@pytest.mark.compiled
def test_memory_bounded_per_series():
    require(fast.EXTENSIONS["rollup"], "smartpark.fast.rollup: %s" % fast.UNAVAILABLE.get("rollup"))
    r = fast.Rollups()
    per_series = r.series_block_bytes()
    for sid in range(2000):
        for k in range(50):  # one reading every 10 s for 500 s, 50 distinct values
            r.add(sid, 1_700_000_000.0 + k * 10, float(k % 7) + sid * 1e-3)
    assert len(r) == 2000
    # fixed block + at most (max_bins + 1) bins of 8 bytes per ring slot + the index
    slots = 2 ** math.ceil(math.log2(math.ceil(120 / r.windows[0]) + 1)) + len(r.windows) - 1
    bound = per_series + slots * (r.max_bins + 1) * 8 + 8
    assert r.memory_bytes() / len(r) <= bound
    # and in practice far less: bins grow only as far as the data needs
    assert r.memory_bytes() / len(r) < per_series + slots * 16 * 8 + 64
    r.flush()
    assert len(r.drain_closed()) > 0
