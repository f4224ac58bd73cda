# Mirrors fast/rollup_py.py (the plain-Python rollup reference) in C data, without the GIL.
"""Windowed per-series rollups: count, min, max, sum, sum of squares, first/last
(time, value) and a mergeable DDSketch-style quantile sketch (p50/p95/p99).

A reading updates only the finest window; coarser windows are rollups of
rollups (a closing finest bucket is merged into them), so the hot loop touches
one bucket (two cache lines) per reading whatever the number of windows.

State lives in C memory: one block per live series (watermark, per-window
"closed through" time and late counter, and a ring of open buckets per
window, ceil(lateness / window) + 1 slots, which is the most that can be open
at once; one slot per coarser window). A bucket's sketch holds at most max_bins (key, count) bins. Closed
buckets are appended to C output columns until drain_closed() hands them out
as a ClosedBuckets of array.array columns. add_batch / advance / flush run
their loops without the GIL.

Semantics are those of fast/rollup_py.py, line for line, so the two twins
give identical results (the sketch keys: the interpolated index of
fast/_common.py, the same constants and double operations in the same order).
"""

cimport cython
from cpython.array cimport array, clone
from libc.math cimport INFINITY, NAN, ceil, fabs, floor, isfinite, isnan, ldexp, sqrt
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memmove, memset

from smartpark.fast._common import (
    DEFAULT_ALPHA, DEFAULT_LATENESS, DEFAULT_MAX_BINS, DEFAULT_WINDOWS,
)
from smartpark.fast._common import MIN_INDEXABLE as _MIN_INDEXABLE
from smartpark.fast._common import _MAP_A, _MAP_B, sketch_mapping
from smartpark.fast._common import ClosedBuckets as _ClosedBuckets
from smartpark.fast.rollup_py import check_config, window_parents

cdef enum:
    MAXW = 16

cdef double MIN_INDEXABLE = _MIN_INDEXABLE
cdef double MAP_A = _MAP_A
cdef double MAP_B = _MAP_B

cdef inline double pow2(int e) noexcept nogil:
    """2.0**e for -1022 <= e <= 1023, from the bits."""
    cdef uint64_t u = <uint64_t>(e + 1023) << 52
    cdef double d
    memcpy(&d, &u, 8)
    return d


cdef struct Bin:
    int32_t key
    uint32_t count

cdef enum:
    INLINE_BINS = 4
    VCACHE = 1024         # bin value cache entries (a power of two)
    PREFETCH = 8          # records ahead: the bucket
    PREFETCH_HDR = 16     # records ahead: the series header

cdef struct Bucket:       # 128 bytes: two cache lines, 64-byte aligned
    double start          # NaN: slot empty
    int64_t count
    double mn
    double mx
    double sm
    double sq
    double ft
    double fv
    double lt
    double lv
    Bin* bins             # -> inl until more than INLINE_BINS bins are needed
    int32_t nbins
    int32_t cap
    Bin inl[INLINE_BINS]

cdef struct SState:
    # followed in the same block by ct[nw] (closed through: bucket starts below
    # are closed), late[nw] (late drops since drain_late) and, from offset
    # slots_off (64-aligned), the bucket rings of every window
    double max_t
    double thr            # no bucket can close while t - lateness < thr (skip the divisions)

cdef extern from "stdlib.h":
    void* aligned_alloc(size_t alignment, size_t size) nogil

cdef extern from *:
    void prefetch "__builtin_prefetch"(const void* p) noexcept nogil

cdef struct Grow:         # a growable C column
    char* p
    int64_t n
    int64_t cap
    int32_t item


cdef int grow_push(Grow* g, const void* x) noexcept nogil:
    cdef int64_t ncap
    cdef void* q
    if g.n == g.cap:
        ncap = g.cap * 2 if g.cap else 1024
        q = realloc(g.p, ncap * g.item)
        if q == NULL:
            return -1
        g.p = <char*>q
        g.cap = ncap
    memcpy(g.p + g.n * g.item, x, g.item)
    g.n += 1
    return 0


cdef int grow_to(Grow* g, int64_t need) noexcept nogil:
    cdef int64_t ncap
    cdef void* q
    if need <= g.cap:
        return 0
    ncap = g.cap * 2 if g.cap else 1024
    while ncap < need:
        ncap *= 2
    q = realloc(g.p, ncap * g.item)
    if q == NULL:
        return -1
    g.p = <char*>q
    g.cap = ncap
    return 0


cdef enum:
    C_SERIES = 0
    C_WINDOW = 1
    C_START = 2
    C_COUNT = 3
    C_MIN = 4
    C_MAX = 5
    C_SUM = 6
    C_SUMSQ = 7
    C_FT = 8
    C_FV = 9
    C_LT = 10
    C_LV = 11
    C_P50 = 12
    C_P95 = 13
    C_P99 = 14
    C_BINOFF = 15
    C_BINKEY = 16
    C_BINCNT = 17
    NCOL = 18

_COLNAMES = ("series", "window", "start", "count", "min", "max", "sum", "sumsq", "first_t",
             "first_v", "last_t", "last_v", "p50", "p95", "p99", "bin_off", "bin_key",
             "bin_count")
_COLTYPES = "idd" + "q" + "d" * 11 + "qiq"
cdef tuple _TEMPLATES = tuple(array(c) for c in _COLTYPES)  # clone() sources
cdef tuple _NAMES = tuple(_COLNAMES)


@cython.final
cdef class Rollups:
    """Per-series windowed aggregates (see fast/README.md for the API)."""

    cdef int nw
    cdef double win[MAXW]
    cdef int K[MAXW]
    cdef int parent[MAXW]     # the window a window's buckets are merged from
    cdef int base[MAXW]
    cdef int total_slots
    cdef double lateness_
    cdef double alpha_
    cdef double kc           # bin key = floor(kc * L(|x|)) - kbase (see fast/_common.py)
    cdef int64_t kbase
    cdef int max_bins_
    cdef SState** states
    cdef int64_t nstates
    cdef int64_t live
    cdef Grow out[NCOL]
    cdef int64_t late_total[MAXW]
    cdef int64_t nonfinite
    cdef int64_t mem
    cdef int64_t nclosed
    cdef int64_t slots_off
    cdef Bin* mbuf
    cdef int mcap
    cdef bint busy            # a call is running without the GIL
    cdef double invw[MAXW]
    cdef int32_t vc_key[VCACHE]   # key -> value cache (key 0 -> 0.0 is right as zeroed)
    cdef double vc_val[VCACHE]

    def __cinit__(self):
        self.states = NULL
        self.nstates = 0
        self.mbuf = NULL
        self.mcap = 0
        self.busy = False
        memset(self.out, 0, sizeof(self.out))
        memset(self.vc_key, 0, sizeof(self.vc_key))
        memset(self.vc_val, 0, sizeof(self.vc_val))

    def __init__(self, windows=DEFAULT_WINDOWS, lateness=DEFAULT_LATENESS, alpha=DEFAULT_ALPHA,
                 max_bins=DEFAULT_MAX_BINS):
        ws, lateness = check_config(windows, lateness, alpha, max_bins)
        cdef list parents = window_parents(ws)
        cdef int i, need
        self.nw = len(ws)
        self.lateness_ = lateness
        self.total_slots = 0
        for i in range(self.nw):
            self.win[i] = ws[i]
            # finest window: a ring, a power of two >= ceil(lateness / w) + 1 slots (the
            # most that can be open at once); a coarser window has one open bucket
            self.K[i] = 1
            if i == 0:
                need = <int>ceil(lateness / ws[i]) + 1
                while self.K[i] < need:
                    self.K[i] *= 2
            self.base[i] = self.total_slots
            self.parent[i] = parents[i]
            self.invw[i] = 1.0 / ws[i]
            self.total_slots += self.K[i]
            self.late_total[i] = 0
        self.slots_off = ((sizeof(SState) + self.nw * (sizeof(double) + sizeof(uint32_t)) + 63)
                          // 64) * 64
        self.alpha_ = alpha
        self.kc, self.kbase = sketch_mapping(alpha)
        self.max_bins_ = max_bins
        self.nonfinite = 0
        self.mem = 0
        self.live = 0
        for i in range(NCOL):
            self.out[i].item = 8
        self.out[C_SERIES].item = 4
        self.out[C_BINKEY].item = 4
        cdef int64_t zero = 0
        grow_push(&self.out[C_BINOFF], &zero)

    def __dealloc__(self):
        cdef int64_t i
        cdef int j
        if self.states != NULL:
            free(self.mbuf)
            for i in range(self.nstates):
                if self.states[i] != NULL:
                    for j in range(self.total_slots):
                        if self._slots(self.states[i])[j].bins != self._slots(self.states[i])[j].inl:
                            free(self._slots(self.states[i])[j].bins)
                    free(self.states[i])
            free(self.states)
        for j in range(NCOL):
            free(self.out[j].p)

    # -------------------------------------------------------------- properties

    @property
    def windows(self):
        return tuple(self.win[i] for i in range(self.nw))

    @property
    def lateness(self):
        return self.lateness_

    @property
    def alpha(self):
        return self.alpha_

    @property
    def max_bins(self):
        return self.max_bins_

    @property
    def late_dropped(self):
        """window -> late readings: a late reading is missing from every window."""
        return {self.win[i]: self.late_total[0] for i in range(self.nw)}

    @property
    def nonfinite_skipped(self):
        return self.nonfinite

    def __len__(self):
        return self.live

    def memory_bytes(self):
        """C memory held by the open state (series blocks, rings, sketch bins, index)."""
        return self.mem + self.nstates * sizeof(SState*)

    def series_block_bytes(self):
        """Fixed bytes per live series (watermarks + bucket rings), sketch bins excluded."""
        return self._block_size()

    cdef int64_t _block_size(self) noexcept nogil:
        return self.slots_off + self.total_slots * sizeof(Bucket)

    cdef inline double* _ct(self, SState* st) noexcept nogil:
        return <double*>(<char*>st + sizeof(SState))

    cdef inline uint32_t* _late(self, SState* st) noexcept nogil:
        return <uint32_t*>(<char*>st + sizeof(SState) + self.nw * sizeof(double))

    cdef inline Bucket* _slots(self, SState* st) noexcept nogil:
        return <Bucket*>(<char*>st + self.slots_off)

    # -------------------------------------------------------------- C core

    cdef SState* _state(self, int32_t sid) noexcept nogil:
        cdef int64_t ncap, i
        cdef void* q
        cdef SState* st
        cdef char* blk
        cdef int j
        if sid >= self.nstates:
            ncap = self.nstates * 2 if self.nstates else 1024
            while ncap <= sid:
                ncap *= 2
            q = realloc(self.states, ncap * sizeof(SState*))
            if q == NULL:
                return NULL
            self.states = <SState**>q
            for i in range(self.nstates, ncap):
                self.states[i] = NULL
            self.nstates = ncap
        st = self.states[sid]
        if st != NULL:
            return st
        blk = <char*>aligned_alloc(64, self._block_size())
        if blk == NULL:
            return NULL
        st = <SState*>blk
        st.max_t = -INFINITY
        st.thr = -INFINITY
        cdef double* ct = self._ct(st)
        cdef uint32_t* late = self._late(st)
        cdef Bucket* slots = self._slots(st)
        for j in range(self.nw):
            ct[j] = -INFINITY
            late[j] = 0
        for j in range(self.total_slots):
            slots[j].start = NAN
            slots[j].bins = slots[j].inl
            slots[j].nbins = 0
            slots[j].cap = INLINE_BINS
            slots[j].count = 0
        self.states[sid] = st
        self.mem += self._block_size()
        self.live += 1
        return st

    cdef inline int32_t _key(self, double v) noexcept nogil:
        """Sketch.key: the interpolated log2 index from the float's bits, no log()."""
        cdef double a, s, idx
        cdef uint64_t u
        cdef int32_t k
        if v > MIN_INDEXABLE:
            a = v
        elif v < -MIN_INDEXABLE:
            a = -v
        else:
            return 0
        memcpy(&u, &a, 8)
        u = (u & 0x000FFFFFFFFFFFFFULL) | 0x3FF0000000000000ULL  # 1 + s
        memcpy(&s, &u, 8)
        s = s - 1.0
        memcpy(&u, &a, 8)
        idx = <double>(u >> 52) + s * (MAP_A - MAP_B * s)
        k = <int32_t>(<int64_t>(idx * self.kc) - self.kbase)  # positive: truncation = floor
        return k if v > 0 else -k

    cdef inline double _value_of(self, int32_t key) noexcept nogil:
        """sketch_value(): 2 lo hi / (lo + hi) of the bin's bounds, same operations
        (ldexp by a power of two made from its bits: exact, as ldexp, when normal)."""
        cdef int64_t k
        cdef double y, e1, e2, m1, m2, v
        if key == 0:
            return 0.0
        k = (key if key > 0 else -key) + self.kbase
        y = <double>k / self.kc
        e1 = floor(y)
        m1 = 1.0 + (2.0 - sqrt(4.0 - 3.0 * (y - e1)))
        y = <double>(k + 1) / self.kc
        e2 = floor(y)
        m2 = 1.0 + (2.0 - sqrt(4.0 - 3.0 * (y - e2)))
        m2 = m2 * pow2(<int>(e2 - e1))
        v = 2.0 * m1 / (1.0 + m1 / m2)
        if e1 >= 2047.0:  # the top bin's scale is not a double: as ldexp, overflow
            v = INFINITY
        else:
            v = v * pow2(<int>e1 - 1023)
        return v if key > 0 else -v

    cdef inline int _bin_add(self, Bucket* b, int32_t key) noexcept nogil:
        cdef int lo = 0, hi = b.nbins, mid, i
        cdef Bin* bins = b.bins
        if hi <= 8:
            # a few bins (the common case): count the smaller keys without branching
            for i in range(hi):
                lo += bins[i].key < key
        else:
            while lo < hi:
                mid = (lo + hi) >> 1
                if bins[mid].key < key:
                    lo = mid + 1
                else:
                    hi = mid
        if lo < b.nbins and bins[lo].key == key:
            bins[lo].count += 1
            return 0
        return self._bin_insert(b, lo, key)

    cdef int _bin_insert(self, Bucket* b, int lo, int32_t key) noexcept nogil:
        cdef int ncap, i
        cdef void* q
        if b.nbins == b.cap:
            ncap = b.cap * 2
            if ncap > self.max_bins_ + 1:
                ncap = self.max_bins_ + 1
            if b.bins == b.inl:
                q = malloc(ncap * sizeof(Bin))
                if q == NULL:
                    return -1
                memcpy(q, b.inl, b.nbins * sizeof(Bin))
                self.mem += ncap * sizeof(Bin)
            else:
                q = realloc(b.bins, ncap * sizeof(Bin))
                if q == NULL:
                    return -1
                self.mem += (ncap - b.cap) * sizeof(Bin)
            b.bins = <Bin*>q
            b.cap = ncap
        i = b.nbins
        while i > lo:
            b.bins[i] = b.bins[i - 1]
            i -= 1
        b.bins[lo].key = key
        b.bins[lo].count = 1
        b.nbins += 1
        if b.nbins > self.max_bins_:
            # collapse: the lowest bin merges into the next one
            b.bins[1].count += b.bins[0].count
            memmove(&b.bins[0], &b.bins[1], (b.nbins - 1) * sizeof(Bin))
            b.nbins -= 1
        return 0

    cdef inline double _clamped(self, Bucket* b, int32_t key) noexcept nogil:
        # bin values through a small direct-mapped cache: a park's readings fall in a
        # few hundred bins, and _value_of costs three divisions and two square roots
        cdef int slot = key & (VCACHE - 1)
        cdef double v
        if self.vc_key[slot] == key:
            v = self.vc_val[slot]
        else:
            v = self._value_of(key)
            self.vc_key[slot] = key
            self.vc_val[slot] = v
        if v < b.mn:
            v = b.mn
        if v > b.mx:
            v = b.mx
        return v

    cdef int _emit(self, int32_t sid, int wi, Bucket* b) noexcept nogil:
        """Append bucket b as a closed row (columns + bins) and empty the slot."""
        cdef int64_t r = self.out[C_SERIES].n, nb = self.out[C_BINKEY].n
        cdef int64_t rank[3]
        cdef double qv[3]
        cdef int64_t cum = 0
        cdef int i, j, qi = 0
        cdef int32_t qkey = 0
        if r + 1 > self.out[C_SERIES].cap:
            for j in range(C_BINOFF):  # the row columns share one length and grow together
                if grow_to(&self.out[j], r + 1) < 0:
                    return -1
        if (grow_to(&self.out[C_BINOFF], self.out[C_BINOFF].n + 1) < 0
                or grow_to(&self.out[C_BINKEY], nb + b.nbins) < 0
                or grow_to(&self.out[C_BINCNT], nb + b.nbins) < 0):
            return -1
        # p50, p95, p99 in one pass over the bins (as Sketch.quantile, clamped)
        # floor(q * (count - 1)): non-negative, so truncation
        rank[0] = <int64_t>(0.5 * (b.count - 1))
        rank[1] = <int64_t>(0.95 * (b.count - 1))
        rank[2] = <int64_t>(0.99 * (b.count - 1))
        for i in range(b.nbins):
            cum += b.bins[i].count
            while qi < 3 and cum > rank[qi]:
                # p95 and p99 often share a bin (always below 21 readings)
                qv[qi] = qv[qi - 1] if qi and b.bins[i].key == qkey else self._clamped(b, b.bins[i].key)
                qkey = b.bins[i].key
                qi += 1
            (<int32_t*>self.out[C_BINKEY].p)[nb + i] = b.bins[i].key
            (<int64_t*>self.out[C_BINCNT].p)[nb + i] = b.bins[i].count
        while qi < 3:
            qv[qi] = b.mx
            qi += 1
        (<int32_t*>self.out[C_SERIES].p)[r] = sid
        (<double*>self.out[C_WINDOW].p)[r] = self.win[wi]
        (<double*>self.out[C_START].p)[r] = b.start
        (<int64_t*>self.out[C_COUNT].p)[r] = b.count
        (<double*>self.out[C_MIN].p)[r] = b.mn
        (<double*>self.out[C_MAX].p)[r] = b.mx
        (<double*>self.out[C_SUM].p)[r] = b.sm
        (<double*>self.out[C_SUMSQ].p)[r] = b.sq
        (<double*>self.out[C_FT].p)[r] = b.ft
        (<double*>self.out[C_FV].p)[r] = b.fv
        (<double*>self.out[C_LT].p)[r] = b.lt
        (<double*>self.out[C_LV].p)[r] = b.lv
        (<double*>self.out[C_P50].p)[r] = qv[0]
        (<double*>self.out[C_P95].p)[r] = qv[1]
        (<double*>self.out[C_P99].p)[r] = qv[2]
        for j in range(C_BINOFF):
            self.out[j].n = r + 1
        self.out[C_BINKEY].n = nb + b.nbins
        self.out[C_BINCNT].n = nb + b.nbins
        (<int64_t*>self.out[C_BINOFF].p)[self.out[C_BINOFF].n] = nb + b.nbins
        self.out[C_BINOFF].n += 1
        self.nclosed += 1
        b.start = NAN
        b.count = 0
        b.nbins = 0
        return 0

    cdef int _merge(self, Bucket* into, Bucket* b) noexcept nogil:
        """Fold closed bucket b into the coarser bucket `into` (as rollup_py._merge)."""
        cdef int i = 0, j = 0, n = 0, need, ncap, drop
        cdef Bin* out
        cdef void* q
        into.count += b.count
        if b.mn < into.mn:
            into.mn = b.mn
        if b.mx > into.mx:
            into.mx = b.mx
        into.sm += b.sm
        into.sq += b.sq
        if b.ft < into.ft:
            into.ft = b.ft
            into.fv = b.fv
        if b.lt >= into.lt:
            into.lt = b.lt
            into.lv = b.lv
        # common case: every key of b is already in `into`: add the counts in place
        while j < b.nbins:
            while i < into.nbins and into.bins[i].key < b.bins[j].key:
                i += 1
            if i >= into.nbins or into.bins[i].key != b.bins[j].key:
                break
            j += 1
        if j == b.nbins:
            i = 0
            for j in range(b.nbins):
                while into.bins[i].key != b.bins[j].key:
                    i += 1
                into.bins[i].count += b.bins[j].count
            return 0
        i = 0
        j = 0
        # union of two sorted bin lists into scratch, then collapse from below
        need = into.nbins + b.nbins
        if need > self.mcap:
            q = realloc(self.mbuf, need * sizeof(Bin))
            if q == NULL:
                return -1
            self.mbuf = <Bin*>q
            self.mcap = need
        out = self.mbuf
        while i < into.nbins or j < b.nbins:
            if j >= b.nbins or (i < into.nbins and into.bins[i].key < b.bins[j].key):
                out[n] = into.bins[i]
                i += 1
            elif i >= into.nbins or b.bins[j].key < into.bins[i].key:
                out[n] = b.bins[j]
                j += 1
            else:
                out[n].key = into.bins[i].key
                out[n].count = into.bins[i].count + b.bins[j].count
                i += 1
                j += 1
            n += 1
        drop = 0
        if n > self.max_bins_:
            drop = n - self.max_bins_
            for i in range(drop):
                out[drop].count += out[i].count
        n -= drop
        if n > into.cap:
            ncap = into.cap
            while ncap < n:
                ncap *= 2
            if ncap > self.max_bins_ + 1:
                ncap = self.max_bins_ + 1
            if into.bins == into.inl:
                q = malloc(ncap * sizeof(Bin))
                if q == NULL:
                    return -1
                self.mem += ncap * sizeof(Bin)
            else:
                q = realloc(into.bins, ncap * sizeof(Bin))
                if q == NULL:
                    return -1
                self.mem += (ncap - into.cap) * sizeof(Bin)
            into.bins = <Bin*>q
            into.cap = ncap
        memcpy(into.bins, out + drop, n * sizeof(Bin))
        into.nbins = n
        return 0

    cdef inline void _open(self, Bucket* b, double start) noexcept nogil:
        b.start = start
        b.count = 0
        b.mn = INFINITY
        b.mx = -INFINITY
        b.sm = 0.0
        b.sq = 0.0
        b.ft = INFINITY
        b.fv = NAN
        b.lt = -INFINITY
        b.lv = NAN
        b.nbins = 0

    cdef int _close(self, int32_t sid, SState* st, double before) noexcept nogil:
        """Close the finest buckets starting before `before` (ascending), then the
        coarser buckets that are complete (ascending windows); see _close_bucket."""
        cdef int j, best, wi, nc = 0, m
        cdef Bucket* slots = self._slots(st)
        cdef Bucket* cb
        cdef int cand[16]
        if self.K[0] <= 16:
            # one pass over the ring: the slots to close, in start order (usually one)
            for j in range(self.K[0]):
                if slots[j].start < before:  # False for an empty slot (NaN)
                    m = nc
                    while m > 0 and slots[cand[m - 1]].start > slots[j].start:
                        cand[m] = cand[m - 1]
                        m -= 1
                    cand[m] = j
                    nc += 1
            for j in range(nc):
                if self._close_bucket(sid, slots, 0, &slots[cand[j]]) < 0:
                    return -1
        while self.K[0] > 16:
            best = -1
            for j in range(self.K[0]):
                if not isnan(slots[j].start) and slots[j].start < before:
                    if best < 0 or slots[j].start < slots[best].start:
                        best = j
            if best < 0:
                break
            if self._close_bucket(sid, slots, 0, &slots[best]) < 0:
                return -1
        for wi in range(1, self.nw):
            cb = slots + self.base[wi]
            if not isnan(cb.start) and cb.start + self.win[wi] <= before:
                if self._close_bucket(sid, slots, wi, cb) < 0:
                    return -1
        return 0

    cdef int _close_bucket(self, int32_t sid, Bucket* slots, int lvl, Bucket* b) noexcept nogil:
        """Merge closing bucket b (window lvl) into the open bucket of each window whose
        parent is lvl (closing that one first if it is an older bucket), emit b."""
        cdef int wi
        cdef Bucket* cb
        cdef double cstart, w
        for wi in range(lvl + 1, self.nw):
            if self.parent[wi] != lvl:
                continue
            w = self.win[wi]
            cstart = floor(b.start / w) * w
            cb = slots + self.base[wi]
            if not isnan(cb.start) and cb.start != cstart:
                if self._close_bucket(sid, slots, wi, cb) < 0:
                    return -1
            if isnan(cb.start):
                self._open(cb, cstart)
            if self._merge(cb, b) < 0:
                return -1
        return self._emit(sid, lvl, b)

    cdef inline void _prefetch_hdr(self, int32_t sid) noexcept nogil:
        if 0 <= sid < self.nstates and self.states[sid] != NULL:
            prefetch(self.states[sid])

    cdef inline void _prefetch(self, int32_t sid, double t) noexcept nogil:
        """Ask for the bucket a later reading will touch (an estimate is enough; its
        header was asked for PREFETCH_HDR readings ahead). Also fetching a closing
        series' ring and coarser buckets measured no faster: closes are compute."""
        cdef SState* st
        cdef char* b
        if sid < 0 or sid >= self.nstates:
            return
        st = self.states[sid]
        if st == NULL:
            return
        b = <char*>(self._slots(st) + ((<int64_t>(t * self.invw[0])) & (self.K[0] - 1)))
        prefetch(b)
        prefetch(b + 64)

    cdef int _add(self, int32_t sid, double t, double v) noexcept nogil:
        """0 added (or counted late), 1 skipped (non-finite), -1 out of memory."""
        cdef SState* st
        cdef double w, nct, start, q
        cdef int64_t qi
        cdef Bucket* b
        cdef double* ct
        if not (isfinite(t) and isfinite(v)):
            self.nonfinite += 1
            return 1
        st = self.states[sid] if sid < self.nstates else NULL
        if st == NULL:
            st = self._state(sid)
            if st == NULL:
                return -1
        ct = self._ct(st)
        w = self.win[0]
        if t > st.max_t:
            st.max_t = t
            if t - self.lateness_ >= st.thr:
                nct = floor((t - self.lateness_) / w) * w
                if nct > ct[0]:
                    if self._close(sid, st, nct) < 0:
                        return -1
                    ct[0] = nct
                self._set_thr(st)
        q = floor(t / w)
        start = q * w
        if start < ct[0]:
            self._late(st)[0] += 1
            self.late_total[0] += 1
            return 0
        qi = <int64_t>q
        b = self._slots(st) + (qi & (self.K[0] - 1))
        if b.start != start:
            if not isnan(b.start):
                # cannot happen (see the ring size); never overwrite data silently
                if self._emit(sid, 0, b) < 0:
                    return -1
            self._open(b, start)
        b.count += 1
        # unconditional stores (minsd/maxsd): the comparisons would mispredict
        b.mn = v if v < b.mn else b.mn
        b.mx = v if v > b.mx else b.mx
        b.sm += v
        b.sq += v * v
        if t < b.ft:
            b.ft = t
            b.fv = v
        if t >= b.lt:
            b.lt = t
            b.lv = v
        return self._bin_add(b, self._key(v))

    cdef inline void _set_thr(self, SState* st) noexcept nogil:
        # ct + w minus a relative margin far above the float rounding of t / w
        cdef double m = self._ct(st)[0] + self.win[0]
        st.thr = m - 1e-9 * fabs(m) - 1e-9

    # -------------------------------------------------------------- Python API

    cdef int _enter(self) except -1:
        self._check()
        self.busy = True
        return 0

    cdef int _check(self) except -1:
        if self.busy:
            raise RuntimeError("these Rollups are in use by another thread")
        return 0

    def add(self, int sid, double t, double v):
        """Aggregate one reading; False when skipped (non-finite)."""
        if sid < 0:
            raise ValueError("series id must be >= 0")
        self._check()
        cdef int rc = self._add(sid, t, v)
        if rc < 0:
            raise MemoryError()
        return rc == 0

    def add_batch(self, batch):
        """Aggregate the numeric records (v, vb) of a Batch; returns how many."""
        cdef const int[::1] series = batch.series
        cdef const double[::1] time = batch.time
        cdef const double[::1] value = batch.value
        cdef const unsigned char[::1] kind = batch.kind
        cdef Py_ssize_t i, n = batch.n_records
        cdef int64_t added = 0
        cdef int rc = 0
        if n == 0:
            return 0
        if series.shape[0] < n or time.shape[0] < n or value.shape[0] < n or kind.shape[0] < n:
            raise ValueError("batch columns shorter than n_records")
        self._enter()
        with nogil:
            for i in range(n):
                if i + PREFETCH_HDR < n:
                    self._prefetch_hdr(series[i + PREFETCH_HDR])
                if i + PREFETCH < n:
                    self._prefetch(series[i + PREFETCH], time[i + PREFETCH])
                if kind[i] > 1 or series[i] < 0:
                    continue
                rc = self._add(series[i], time[i], value[i])
                if rc < 0:
                    break
                if rc == 0:
                    added += 1
        self.busy = False
        if rc < 0:
            raise MemoryError()
        return added

    def advance(self, double watermark):
        """Close, for every series, the buckets with end + lateness <= watermark."""
        cdef int64_t sid
        cdef int rc = 0
        cdef double w = self.win[0]
        cdef double nct = floor((watermark - self.lateness_) / w) * w
        cdef SState* st
        self._enter()
        with nogil:
            for sid in range(self.nstates):
                st = self.states[sid]
                if st == NULL:
                    continue
                if nct > self._ct(st)[0]:
                    if self._close(<int32_t>sid, st, nct) < 0:
                        rc = -1
                    self._ct(st)[0] = nct
                    self._set_thr(st)
        self.busy = False
        if rc < 0:
            raise MemoryError()

    def flush(self):
        """Close every open bucket (shutdown); later readings for them are late."""
        cdef int64_t sid
        cdef int rc = 0
        cdef double w = self.win[0]
        cdef double nct
        cdef SState* st
        self._enter()
        with nogil:
            for sid in range(self.nstates):
                st = self.states[sid]
                if st == NULL or st.max_t == -INFINITY:
                    continue
                if self._close(<int32_t>sid, st, INFINITY) < 0:
                    rc = -1
                nct = floor(st.max_t / w) * w + w
                if nct > self._ct(st)[0]:
                    self._ct(st)[0] = nct
                self._set_thr(st)
        self.busy = False
        if rc < 0:
            raise MemoryError()

    def drain_closed(self):
        """The buckets closed since the last call, as ClosedBuckets (columnar)."""
        self._check()
        # called once per batch: no ClosedBuckets.__init__ (it would make 14 arrays
        # only to replace them), every column cloned from a template
        out = _ClosedBuckets.__new__(_ClosedBuckets)
        out.alpha = self.alpha_
        out.max_bins = self.max_bins_
        cdef int j
        cdef array col
        for j in range(NCOL):
            col = clone(<array>_TEMPLATES[j], self.out[j].n, False)
            if self.out[j].n:
                memcpy(col.data.as_voidptr, self.out[j].p, self.out[j].n * self.out[j].item)
            setattr(out, <str>_NAMES[j], col)
            self.out[j].n = 0
        cdef int64_t zero = 0
        grow_push(&self.out[C_BINOFF], &zero)
        self.nclosed = 0
        return out

    def drain_late(self):
        """[(series_id, finest window, count)] of late drops since the last call."""
        self._check()
        res = []
        cdef int64_t sid
        cdef SState* st
        for sid in range(self.nstates):
            st = self.states[sid]
            if st != NULL and self._late(st)[0]:
                res.append((sid, self.win[0], self._late(st)[0]))
                self._late(st)[0] = 0
        return res

    def open_buckets(self):
        cdef int64_t sid, total = 0
        cdef int j
        cdef SState* st
        for sid in range(self.nstates):
            st = self.states[sid]
            if st == NULL:
                continue
            for j in range(self.total_slots):
                if not isnan(self._slots(st)[j].start):
                    total += 1
        return total
