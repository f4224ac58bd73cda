# No reference twin: a shortcut past the row path (hub/codec.py, then the store's duplicate check), which stays the reference.
# cython: language_level=3
"""The column lane of the report pipeline: whole reports checked and stored as columns.

Most reports a hub sees are the ordinary case — a node it knows sends new
readings of series it knows, with the units it knows, times in range, numbers
and booleans only. For those the pipeline needs no row tuple, no sort and no
duplicate lookup: `Lane.select` checks a decoded `Batch` (fast/decode.pyx) in
C and writes the readings of every such report straight into four columns
(store series id, time, kind, value) that the store commits as ONE row of its
`blocks` table (hub/store/journal.py). Everything else — a series or node seen
for the first time, a unit change, a string, data or sum value, a time out of
range, a reading not newer than its series' newest — is left to the row path
(hub/codec.py + the store's per-reading duplicate check), which is the
reference.

Why "newer than the series' newest" is enough for exactly-once: `NewestTime`
holds, per store series id, a time at or above the newest reading stored or
being stored. A reading above it cannot be a duplicate. The lane raises it
when it takes a reading, and also for every reading of a report it leaves to
the row path, so a later copy of that reading can never enter the lane: it
goes to the row path too, whose check runs after the first copy's (the store
handles jobs in order). NewestTime only ever goes up; a value that is too high
(a report that then failed) only sends readings to the slower row path.

Kinds are those of fast/kinds.py, the same in a Batch, a Block, the journal and
the store, so nothing here translates one.

Threads: the event loop calls `select`, the store thread reads and raises
`NewestTime`; every method holds the GIL, so each call is atomic to the other.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.math cimport NAN, isfinite, isnan
from libc.stdint cimport int32_t
from libc.stdlib cimport free, malloc, realloc

import array

from smartpark.fast import kinds as _kinds

cdef unsigned char NUM = _kinds.NUM
cdef unsigned char BOOL = _kinds.BOOL


# ---- per-series C columns, grown on demand (NewestTime, Lane and Latest use them) -----------------

cdef Py_ssize_t grown_cap(Py_ssize_t cap, Py_ssize_t index):
    """The capacity after growing `cap` (0: none yet) so that `index` fits: doubling."""
    cdef Py_ssize_t ncap = cap or 1024
    while ncap <= index:
        ncap *= 2
    return ncap


ctypedef unsigned char uchar

ctypedef fused elem_t:  # one array-grow helper for NewestTime, Lane and Latest's element types
    double
    int32_t
    uchar


cdef elem_t* grow(elem_t* p, Py_ssize_t cap, Py_ssize_t ncap, elem_t fill) except NULL:
    """realloc p from cap to ncap elements, the new ones set to fill."""
    cdef elem_t* q = <elem_t*>realloc(p, ncap * sizeof(elem_t))
    cdef Py_ssize_t i
    if q == NULL:
        raise MemoryError()
    for i in range(cap, ncap):
        q[i] = fill
    return q


cdef class NewestTime:
    """Per store series id: a time >= the newest reading stored or being stored.

    Behaves like the dict it replaces in the store: `get(sid)` (None when
    unknown), `newest[sid]`, `newest[sid] = t`, `clear()`."""

    cdef double* v
    cdef Py_ssize_t cap

    def __cinit__(self):
        self.v = NULL
        self.cap = 0

    def __dealloc__(self):
        free(self.v)

    cdef int _grow(self, Py_ssize_t sid) except -1:
        cdef Py_ssize_t ncap = grown_cap(self.cap, sid)
        self.v = grow[double](self.v, self.cap, ncap, NAN)
        self.cap = ncap
        return 0

    def get(self, Py_ssize_t sid, default=None):
        if 0 <= sid < self.cap and not isnan(self.v[sid]):
            return self.v[sid]
        return default

    def __getitem__(self, Py_ssize_t sid):
        if 0 <= sid < self.cap and not isnan(self.v[sid]):
            return self.v[sid]
        raise KeyError(sid)

    def __setitem__(self, Py_ssize_t sid, double t):
        if sid < 0:
            raise KeyError(sid)
        if isnan(t):
            raise ValueError("NewestTime: NaN is not a time")
        if sid >= self.cap:
            self._grow(sid)
        self.v[sid] = t

    def __contains__(self, Py_ssize_t sid):
        return 0 <= sid < self.cap and not isnan(self.v[sid])

    def clear(self):
        cdef Py_ssize_t i
        for i in range(self.cap):
            self.v[i] = NAN


cdef class Block:
    """The readings the lane took from one batch, as columns (store series id, time,
    kind: NUM or BOOL of fast/kinds.py, value) in record order; `bytes()` of each column
    is what the store writes."""

    cdef readonly object series   # array('i')
    cdef readonly object time     # array('d')
    cdef readonly object kind     # array('B')
    cdef readonly object value    # array('d')
    cdef readonly Py_ssize_t n

    def __init__(self, series, time, kind, value):
        if not (len(series) == len(time) == len(kind) == len(value)):
            raise ValueError("block columns differ in length")
        self.series = series
        self.time = time
        self.kind = kind
        self.value = value
        self.n = len(series)

    def __len__(self):
        return self.n

    # the attributes Rollups.add_batch reads (a Block feeds the rollups directly)
    @property
    def n_records(self):
        return self.n


cdef class Lane:
    """Which decoded reports can be stored as columns, and their block.

    Per fast/ series id (SeriesTable id): the store's series id, the unit id the
    store has for it, and the index of its node in `nodes` (-1: not known yet).
    `register` fills them after the row path stored (or found) a series."""

    cdef int32_t* sid_of
    cdef int32_t* unit_of
    cdef int32_t* node_of
    cdef Py_ssize_t cap
    cdef readonly NewestTime newest
    cdef readonly list nodes
    cdef dict node_index
    cdef readonly Py_ssize_t n_lane     # reports the lane took
    cdef readonly Py_ssize_t n_rows     # reports left to the row path

    def __cinit__(self):
        self.sid_of = NULL
        self.unit_of = NULL
        self.node_of = NULL
        self.cap = 0

    def __init__(self, NewestTime newest not None):
        self.newest = newest
        self.nodes = []
        self.node_index = {}
        self.n_lane = 0
        self.n_rows = 0

    def __dealloc__(self):
        free(self.sid_of)
        free(self.unit_of)
        free(self.node_of)

    cdef int _grow(self, Py_ssize_t fsid) except -1:
        cdef Py_ssize_t ncap = grown_cap(self.cap, fsid)
        self.sid_of = grow[int32_t](self.sid_of, self.cap, ncap, -1)
        self.unit_of = grow[int32_t](self.unit_of, self.cap, ncap, -1)
        self.node_of = grow[int32_t](self.node_of, self.cap, ncap, -1)
        self.cap = ncap
        return 0

    def known(self, Py_ssize_t fsid):
        return 0 <= fsid < self.cap and self.sid_of[fsid] >= 0

    def register(self, Py_ssize_t fsid, Py_ssize_t store_sid, int unit_id, node):
        """fast series `fsid` is the store's series `store_sid` with unit id `unit_id`
        (0 = none) of node `node` (a node id the hub accepted)."""
        if fsid < 0 or store_sid < 0 or store_sid > 0x7fffffff:
            raise ValueError("series ids must be >= 0")
        idx = self.node_index.get(node)
        if idx is None:
            idx = len(self.nodes)
            self.nodes.append(node)
            self.node_index[node] = idx
        if fsid >= self.cap:
            self._grow(fsid)
        self.sid_of[fsid] = <int32_t>store_sid
        self.unit_of[fsid] = unit_id
        self.node_of[fsid] = idx

    def forget(self, Py_ssize_t fsid):
        """Send `fsid` back to the row path (e.g. its unit changed)."""
        if 0 <= fsid < self.cap:
            self.sid_of[fsid] = -1

    def select(self, batch, double lo, double hi):
        """Split the payloads of `batch`: returns (take, node, block) where take[p] is 1
        when payload p's readings are in `block` (a Block, or None when none is), node[p]
        its node's index in `nodes` (-1 for the row path). Readings must have
        lo <= t <= hi. Raises NewestTime for every reading it sees of a known series."""
        cdef const int[::1] series = batch.series
        cdef const double[::1] times = batch.time
        cdef const double[::1] values = batch.value
        cdef const unsigned char[::1] kinds = batch.kind
        cdef const int[::1] units = batch.unit
        cdef const unsigned char[::1] has_sum = batch.has_sum
        cdef const unsigned char[::1] est = batch.est
        cdef const unsigned char[::1] ok = batch.ok
        cdef const int[::1] firsts = batch.first
        cdef const int[::1] counts = batch.count
        cdef Py_ssize_t np_ = batch.n_payloads, nrec = batch.n_records
        cdef Py_ssize_t p, r, first, cnt, nu, j, out_n = 0
        cdef int fs, ss, nd, k
        cdef double t, m
        cdef bint good
        cdef NewestTime newest = self.newest
        if (series.shape[0] < nrec or times.shape[0] < nrec or values.shape[0] < nrec
                or kinds.shape[0] < nrec or units.shape[0] < nrec or has_sum.shape[0] < nrec
                or est.shape[0] < nrec):
            raise ValueError("batch columns are shorter than n_records")
        if ok.shape[0] < np_ or firsts.shape[0] < np_ or counts.shape[0] < np_:
            raise ValueError("batch payload columns are shorter than n_payloads")
        take = bytearray(np_)
        node = array.array("i", [-1]) * np_
        cdef unsigned char[::1] take_v = take
        cdef int[::1] node_v = node
        if nrec == 0:
            return take, node, None
        # undo log for the payload being checked: (store sid, previous newest time)
        cdef int32_t* u_sid = <int32_t*>malloc(nrec * sizeof(int32_t))
        cdef double* u_old = <double*>malloc(nrec * sizeof(double))
        cdef int32_t* o_s = <int32_t*>malloc(nrec * sizeof(int32_t))
        cdef double* o_t = <double*>malloc(nrec * sizeof(double))
        cdef unsigned char* o_k = <unsigned char*>malloc(nrec)
        cdef double* o_v = <double*>malloc(nrec * sizeof(double))
        try:
            if not (u_sid and u_old and o_s and o_t and o_k and o_v):
                raise MemoryError()
            for p in range(np_):
                first = firsts[p]
                cnt = counts[p]
                if not ok[p] or cnt <= 0 or first < 0 or first + cnt > nrec:
                    self.n_rows += 1
                    continue
                good = True
                nd = -1
                nu = 0
                for r in range(first, first + cnt):
                    fs = series[r]
                    if fs < 0 or fs >= self.cap or self.sid_of[fs] < 0:
                        good = False
                        break
                    if nd < 0:
                        nd = self.node_of[fs]
                    elif self.node_of[fs] != nd:
                        good = False
                        break
                    if units[r] != self.unit_of[fs]:
                        # the row path changes the series' unit: until it has, and `register`
                        # brought the new one, later reports of the series go there too
                        self.sid_of[fs] = -1
                        good = False
                        break
                    k = kinds[r]
                    t = times[r]
                    # an estimated time (the label "est") is stored with its flag, which
                    # only the row path keeps
                    if ((k != NUM and k != BOOL) or has_sum[r] or est[r]
                            or not (t >= lo and t <= hi)
                            or (k == NUM and not isfinite(values[r]))):
                        good = False
                        break
                    ss = self.sid_of[fs]
                    if ss >= newest.cap:
                        good = False
                        break
                    m = newest.v[ss]
                    if isnan(m) or not t > m:
                        good = False
                        break
                    u_sid[nu] = ss
                    u_old[nu] = m
                    nu += 1
                    newest.v[ss] = t
                if good:
                    take_v[p] = 1
                    node_v[p] = nd
                    for r in range(first, first + cnt):
                        o_s[out_n] = self.sid_of[series[r]]
                        o_t[out_n] = times[r]
                        o_k[out_n] = kinds[r]
                        o_v[out_n] = values[r]
                        out_n += 1
                    self.n_lane += 1
                    continue
                self.n_rows += 1
                for j in range(nu - 1, -1, -1):
                    newest.v[u_sid[j]] = u_old[j]
                # the row path will store (or refuse) these: no later copy may enter the lane
                for r in range(first, first + cnt):
                    fs = series[r]
                    if fs < 0 or fs >= self.cap or self.sid_of[fs] < 0:
                        continue
                    ss = self.sid_of[fs]
                    t = times[r]
                    # (a time out of range gets the pack refused: nothing to cover)
                    if (t >= lo and t <= hi and ss < newest.cap and not isnan(newest.v[ss])
                            and t > newest.v[ss]):
                        newest.v[ss] = t
            if out_n == 0:
                return take, node, None
            s = array.array("i")
            s.frombytes(PyBytes_FromStringAndSize(<char*>o_s, out_n * sizeof(int32_t)))
            tt = array.array("d")
            tt.frombytes(PyBytes_FromStringAndSize(<char*>o_t, out_n * sizeof(double)))
            kk = array.array("B")
            kk.frombytes(PyBytes_FromStringAndSize(<char*>o_k, out_n))
            vv = array.array("d")
            vv.frombytes(PyBytes_FromStringAndSize(<char*>o_v, out_n * sizeof(double)))
            return take, node, Block(s, tt, kk, vv)
        finally:
            free(u_sid)
            free(u_old)
            free(o_s)
            free(o_t)
            free(o_k)
            free(o_v)


cdef class Latest:
    """The newest reading of each store series: sid -> (t, kind, val), as the registry's
    `latest` dict held it (kinds of fast/kinds.py: NUM with a float value, BOOL with 0 or
    1; STR and DATA as the row path gives them).

    Numbers and booleans live in C arrays, so a column-lane block updates them in one C
    loop (`update_block`) instead of a dict write per series; other values (text, data,
    a sum-only record) in a dict. A series is in one of the two at a time. Behaves like
    the dict it replaces: get, in, [], []=, update, len."""

    cdef double* t
    cdef double* v
    cdef unsigned char* k
    cdef unsigned char* in_other
    cdef Py_ssize_t cap
    cdef dict other
    cdef Py_ssize_t n_arr

    def __cinit__(self):
        self.t = NULL
        self.v = NULL
        self.k = NULL
        self.in_other = NULL
        self.cap = 0
        self.other = {}
        self.n_arr = 0

    def __dealloc__(self):
        free(self.t)
        free(self.v)
        free(self.k)
        free(self.in_other)

    cdef int _grow(self, Py_ssize_t sid) except -1:
        cdef Py_ssize_t ncap = grown_cap(self.cap, sid)
        self.t = grow[double](self.t, self.cap, ncap, NAN)
        self.v = grow[double](self.v, self.cap, ncap, 0.0)
        self.k = grow[uchar](self.k, self.cap, ncap, 0)
        self.in_other = grow[uchar](self.in_other, self.cap, ncap, 0)
        self.cap = ncap
        return 0

    cdef inline bint _has(self, Py_ssize_t sid):
        return 0 <= sid < self.cap and not isnan(self.t[sid])

    def get(self, Py_ssize_t sid, default=None):
        if self._has(sid):
            if self.k[sid] == BOOL:
                return (self.t[sid], BOOL, 1 if self.v[sid] != 0.0 else 0)
            return (self.t[sid], self.k[sid], self.v[sid])
        return self.other.get(sid, default)

    def __contains__(self, Py_ssize_t sid):
        return self._has(sid) or sid in self.other

    def __getitem__(self, Py_ssize_t sid):
        r = self.get(sid)
        if r is None:
            raise KeyError(sid)
        return r

    def __setitem__(self, Py_ssize_t sid, value):
        t, kind, val = value
        if sid < 0:
            raise KeyError(sid)
        if sid >= self.cap:
            self._grow(sid)
        if ((kind == NUM and type(val) in (float, int))
                or (kind == BOOL and type(val) is int and val in (0, 1))):
            if isnan(self.t[sid]):
                self.n_arr += 1
            self.t[sid] = t
            self.k[sid] = kind
            self.v[sid] = val
            if self.in_other[sid]:
                self.in_other[sid] = 0
                self.other.pop(sid, None)
        else:
            if not isnan(self.t[sid]):
                self.n_arr -= 1
                self.t[sid] = NAN
            self.in_other[sid] = 1
            self.other[sid] = (t, kind, val)

    def __len__(self):
        return self.n_arr + len(self.other)

    def update(self, mapping):
        for sid, value in mapping.items():
            self[sid] = value

    def update_block(self, block):
        """A committed column-lane block (kinds NUM and BOOL): each series' entry becomes
        its reading if that is not older than the entry."""
        cdef const int32_t[::1] s = block.series
        cdef const double[::1] tt = block.time
        cdef const unsigned char[::1] kk = block.kind
        cdef const double[::1] vv = block.value
        cdef Py_ssize_t i, sid, n = s.shape[0]
        cdef list later = []
        if tt.shape[0] < n or kk.shape[0] < n or vv.shape[0] < n:
            raise ValueError("block columns differ in length")
        for i in range(n):
            sid = s[i]
            if sid < 0:
                continue
            if sid >= self.cap:
                self._grow(sid)
            if self.in_other[sid]:  # a text value is the latest: compare in Python, rarely
                later.append(i)
                continue
            if isnan(self.t[sid]):
                self.n_arr += 1
            elif tt[i] < self.t[sid]:
                continue
            self.t[sid] = tt[i]
            if kk[i] == BOOL:
                self.k[sid] = BOOL
                self.v[sid] = 1.0 if vv[i] != 0.0 else 0.0
            else:
                self.k[sid] = NUM
                self.v[sid] = vv[i]
        for i in later:
            sid = s[i]
            cur = self.get(sid)
            if cur is None or tt[i] >= cur[0]:
                if kk[i] == BOOL:
                    self[sid] = (tt[i], BOOL, 1 if vv[i] != 0.0 else 0)
                else:
                    self[sid] = (tt[i], NUM, vv[i])
