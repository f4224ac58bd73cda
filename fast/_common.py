"""Shapes shared by both twins of fast/: the columnar Batch, ClosedBuckets, Sketch.

The compiled twins (decode.pyx, rollup.pyx) and the pure-Python twins
(decode_py.py, rollup_py.py) fill the same classes with `array.array`
columns, so callers and the differential tests never see which twin ran.
`Sketch` here is the reference quantile sketch; rollup.pyx computes the
identical bin keys in C (same constants from `sketch_mapping`, same double
operations in the same order, no libm call on the key path).
"""

import math
from array import array

from .kinds import BOOL as KIND_VB
from .kinds import DATA as KIND_VD
from .kinds import NAMES as KIND_NAMES  # noqa: F401 - re-exported by the selector
from .kinds import NUM as KIND_V
from .kinds import STR as KIND_VS
from .kinds import SUM as KIND_S  # noqa: F401 - re-exported by the selector

DEFAULT_WINDOWS = (60.0, 900.0, 3600.0, 86400.0)
DEFAULT_LATENESS = 120.0
DEFAULT_ALPHA = 0.01
DEFAULT_MAX_BINS = 512
MIN_INDEXABLE = 1e-9  # |x| below this counts in the zero bin
MIN_ALPHA = 1e-6  # below it the largest bin keys would not fit an int32

DEFAULT_MAX_RECORDS = 4096
DEFAULT_MAX_BYTES = 65536
DEFAULT_MAX_DEPTH = 32  # as protocol.cbor.MAX_DEPTH, so both twins agree

RELATIVE_TIME_LIMIT = 268435456  # 2**28, RFC 8428 §4.5.3

# The extension label of time provenance: a record carrying "est": true was timed by a
# node whose clock had not yet been set by the hub, so its time is an estimate. RFC 8428
# §4.4 lets a pack carry labels a reader does not know (only those ending in "_" must be
# understood); any other value of "est" is ignored, as an unknown label's would be. Both
# twins set Batch.est from it, and the hub stores it with the reading.
EST_LABEL = "est"


def split_series(name):
    """(node, sensor) of a resolved name: split at the last '/', else the last ':'."""
    i = name.rfind("/")
    if i < 0:
        i = name.rfind(":")
    if i < 0:
        return "", name
    return name[:i], name[i + 1:]


class Batch:
    """One decoded batch: per-record and per-payload columns (see fast/README.md)."""

    __slots__ = (
        "series", "time", "value", "kind", "unit", "sum", "has_sum", "est", "payload",
        "ref_off", "ref_len", "ok", "first", "count", "errors", "payloads", "spill",
        "table", "n_records", "n_payloads",
    )

    def __init__(self, table, payloads):
        self.table = table
        self.payloads = payloads
        self.series = array("i")
        self.time = array("d")
        self.value = array("d")
        self.kind = array("B")
        self.unit = array("i")
        self.sum = array("d")
        self.has_sum = array("B")
        self.est = array("B")
        self.payload = array("i")
        self.ref_off = array("i")
        self.ref_len = array("i")
        self.ok = array("B")
        self.first = array("i")
        self.count = array("i")
        self.errors = []
        self.spill = b""
        self.n_records = 0
        self.n_payloads = len(payloads)

    def __len__(self):
        return self.n_records

    def __repr__(self):
        bad = self.n_payloads - sum(self.ok)
        return "<Batch %d records from %d payloads, %d failed>" % (
            self.n_records, self.n_payloads, bad)

    def string_value(self, i):
        """The vs (str) or vd (bytes) value of record i, else None."""
        kind = self.kind[i]
        if kind != KIND_VS and kind != KIND_VD:
            return None
        off = self.ref_off[i]
        ln = self.ref_len[i]
        if off >= 0:
            raw = bytes(memoryview(self.payloads[self.payload[i]])[off:off + ln])
        else:
            off = -off - 2
            raw = bytes(self.spill[off:off + ln])
        return raw.decode("utf-8") if kind == KIND_VS else raw

    def record(self, i):
        """Record i as a resolved-record dict (like protocol.senml.resolve)."""
        rec = {"n": self.table.name(self.series[i]), "t": self.time[i]}
        uid = self.unit[i]
        if uid:
            rec["u"] = self.table.unit(uid)
        kind = self.kind[i]
        if kind == KIND_V:
            rec["v"] = self.value[i]
        elif kind == KIND_VB:
            rec["vb"] = self.value[i] != 0.0
        elif kind == KIND_VS:
            rec["vs"] = self.string_value(i)
        elif kind == KIND_VD:
            rec["vd"] = self.string_value(i)
        if self.has_sum[i]:
            rec["s"] = self.sum[i]
        if self.est[i]:
            rec[EST_LABEL] = True
        return rec

    def records(self, p=None):
        """Resolved records of payload p, or of the whole batch in column order."""
        if p is None:
            return [self.record(i) for i in range(self.n_records)]
        first = self.first[p]
        return [self.record(i) for i in range(first, first + self.count[p])]


# Bin-key mapping (DDSketch's "interpolated" index, quadratic here): for x > 0 with
# x = 2**E * (1 + s), s in [0, 1) read from the float's bits, the index is
#     L(x) = E + 1023 + P(s),   P(s) = s * (4 - s) / 3,
# a continuous, increasing stand-in for log2(x) (P(0) = 0, P(1) = 1) that costs two
# multiplications instead of a log(). Bin k holds the x with floor(c * L(x)) = k.
# Bound: d L / d ln(x) = P'(s) (1 + s) = (4 + 2s - 2s**2) / 3 >= 4/3 on [0, 1], so a
# bin (width 1/c in L) spans at most 3 / (4c) in ln(x). With c = 3 / (4 ln(gamma)) a
# bin's hi / lo <= gamma = (1 + alpha) / (1 - alpha), and its representative value
# 2 * lo * hi / (lo + hi) is within (hi - lo) / (hi + lo) <= alpha of every x in it.
# c carries a 1e-6 relative margin so the float rounding of L and of the bounds
# (~1e-13) cannot push a bin past gamma. Cost: 3 / (4 ln 2) = 1.082 times the bins
# of the exact log mapping (124.6 per decade at alpha = 0.01 instead of 115.1).
_MAP_A = 4.0 / 3.0
_MAP_B = 1.0 / 3.0
_MAP_MARGIN = 1.0 + 1e-6


def _index(x):
    """L(x) for x > 0 normal: the same double operations as rollup.pyx's _key."""
    m, e = math.frexp(x)  # x = m * 2**e, m in [0.5, 1): 1 + s = 2m exactly
    s = 2.0 * m - 1.0
    return (e + 1022) + s * (_MAP_A - _MAP_B * s)


def _unindex(y):
    """(1 + s, E + 1023) of the x with L(x) = y (y >= 0): P inverted on y's octave."""
    e = math.floor(y)
    f = y - e
    return 1.0 + (2.0 - math.sqrt(4.0 - 3.0 * f)), e


def sketch_mapping(alpha):
    """(c, kbase): key(x) = floor(c * L(x)) - kbase for x > MIN_INDEXABLE (>= 1)."""
    gamma = (1.0 + alpha) / (1.0 - alpha)
    c = 0.75 / math.log(gamma) * _MAP_MARGIN
    kbase = math.floor(_index(MIN_INDEXABLE) * c) - 1
    return c, kbase


def sketch_value(key, c, kbase):
    """The representative value of bin `key` (0 for the zero bin; negatives mirror):
    2 lo hi / (lo + hi) of its bounds, computed on the mantissas so that it cannot
    overflow before the final scaling (rollup.pyx does the same operations)."""
    if key == 0:
        return 0.0
    k = (key if key > 0 else -key) + kbase
    m1, e1 = _unindex(k / c)
    m2, e2 = _unindex((k + 1) / c)
    m2 = math.ldexp(m2, e2 - e1)
    try:
        v = math.ldexp(2.0 * m1 / (1.0 + m1 / m2), e1 - 1023)
    except OverflowError:  # C's ldexp gives inf; quantiles clamp it to the max
        v = math.inf
    return v if key > 0 else -v


class Sketch:
    """Mergeable DDSketch-style quantile sketch (the reference implementation).

    Bin key of x: sign(x) * (floor(c * L(x)) - kbase), 0 for |x| < MIN_INDEXABLE,
    with L the interpolated log2 above and c = 3 / (4 ln gamma), gamma = (1 +
    alpha) / (1 - alpha): a bin spans a ratio of at most gamma, so its value
    2 * lo * hi / (lo + hi) is within relative error alpha of every x in it.
    When more than max_bins bins exist, the lowest two are merged.
    """

    __slots__ = ("alpha", "max_bins", "bins", "count", "min", "max", "_c", "_kbase")

    def __init__(self, alpha=DEFAULT_ALPHA, max_bins=DEFAULT_MAX_BINS):
        if not MIN_ALPHA <= alpha < 1.0:
            raise ValueError("alpha must be in [%g, 1)" % MIN_ALPHA)
        if max_bins < 2:
            raise ValueError("max_bins must be at least 2")
        self.alpha = alpha
        self.max_bins = max_bins
        self._c, self._kbase = sketch_mapping(alpha)
        self.bins = {}
        self.count = 0
        self.min = math.inf
        self.max = -math.inf

    def key(self, x):
        if x > MIN_INDEXABLE:
            return math.floor(_index(x) * self._c) - self._kbase
        if x < -MIN_INDEXABLE:
            return -(math.floor(_index(-x) * self._c) - self._kbase)
        return 0

    def value_of(self, key):
        return sketch_value(key, self._c, self._kbase)

    def add_key(self, key, n=1):
        bins = self.bins
        bins[key] = bins.get(key, 0) + n
        if len(bins) > self.max_bins:
            self._collapse()

    def _collapse(self):
        bins = self.bins
        while len(bins) > self.max_bins:
            keys = sorted(bins)
            lo, nxt = keys[0], keys[1]
            bins[nxt] += bins.pop(lo)

    def add(self, x):
        x = float(x)
        if not math.isfinite(x):
            raise ValueError("sketch values must be finite")
        self.add_key(self.key(x))
        self.count += 1
        self.min = min(self.min, x)
        self.max = max(self.max, x)

    def merge(self, other):
        if other.alpha != self.alpha:
            raise ValueError("cannot merge sketches with different alpha")
        for key, n in other.bins.items():
            self.bins[key] = self.bins.get(key, 0) + n
        self._collapse()
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def quantile(self, q):
        """Estimate of the sample at rank floor(q * (count - 1)); NaN when empty."""
        if self.count == 0:
            return math.nan
        if not 0.0 <= q <= 1.0:
            raise ValueError("q must be in [0, 1]")
        rank = math.floor(q * (self.count - 1))
        cum = 0
        for key in sorted(self.bins):
            cum += self.bins[key]
            if cum > rank:
                v = self.value_of(key)
                return min(max(v, self.min), self.max)
        return self.max


QUANTILES = (0.5, 0.95, 0.99)


class ClosedBuckets:
    """Closed rollup buckets, columnar (see fast/README.md)."""

    COLUMNS = ("start", "min", "max", "sum", "sumsq", "first_t", "first_v", "last_t",
               "last_v", "p50", "p95", "p99")

    __slots__ = ("series", "window", "count", "bin_off", "bin_key", "bin_count", "alpha",
                 "max_bins") + COLUMNS

    def __init__(self, alpha=DEFAULT_ALPHA, max_bins=DEFAULT_MAX_BINS):
        self.alpha = alpha
        self.max_bins = max_bins
        self.series = array("i")
        self.window = array("d")
        self.count = array("q")
        for name in self.COLUMNS:
            setattr(self, name, array("d"))
        self.bin_off = array("q", [0])
        self.bin_key = array("i")
        self.bin_count = array("q")

    def __len__(self):
        return len(self.series)

    def rows(self):
        out = []
        for i in range(len(self.series)):
            row = {"series": self.series[i], "window": self.window[i], "count": self.count[i]}
            for name in self.COLUMNS:
                row[name] = getattr(self, name)[i]
            out.append(row)
        return out

    def sketch(self, i):
        """The mergeable quantile sketch of closed bucket i."""
        sk = Sketch(self.alpha, self.max_bins)
        for j in range(self.bin_off[i], self.bin_off[i + 1]):
            sk.bins[self.bin_key[j]] = self.bin_count[j]
        sk.count = self.count[i]
        sk.min = self.min[i]
        sk.max = self.max[i]
        return sk
