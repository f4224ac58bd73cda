# Mirrors fast/rows_py.py (a decoded Batch to the hub's storable rows), reading the columns through typed memoryviews.
# cython: language_level=3
"""Decoded batch to storable rows: the compiled twin of fast/rows_py.py.

The hub's pipeline turns fast.decode_batch's columns back into one row tuple
(node, sensor, unit, t, kind, val, sum, est) per reading; in Python that loop is
most of the pipeline's time. This twin runs the same checks in the same order
with the same error texts, reading the columns through typed memoryviews. The
selector (smartpark.fast.batch_rows) picks it unless SMARTPARK_PUREPYTHON=1;
tests/hub/fastpath/test_fast_rows.py checks the two agree.
"""

from libc.math cimport isfinite

from smartpark.fast import kinds as _kinds

cdef int NUM = _kinds.NUM
cdef int BOOL = _kinds.BOOL
cdef int STR = _kinds.STR
cdef int DATA = _kinds.DATA
cdef int SUM = _kinds.SUM


def batch_rows(batch, table, dict names, where, list out, split_name, error, decode_error,
               pick=None):
    """For payload p of `batch` (p = 0..len(where)-1) set out[where[p]] to its list of rows,
    or to the DecodeError of the batch, or to error(text) for a record the hub refuses.
    With `pick` (payload indices, as long as `where`), payload pick[j] goes to out[where[j]].
    `names` caches series id -> (node, sensor) or None; split_name splits a resolved name
    (None when it names no node); error is SenMLError, decode_error DecodeError."""
    cdef const int[:] series = batch.series
    cdef const double[:] times = batch.time
    cdef const double[:] values = batch.value
    cdef const unsigned char[:] kinds = batch.kind
    cdef const int[:] units = batch.unit
    cdef const double[:] sums = batch.sum
    cdef const unsigned char[:] has_sum = batch.has_sum
    cdef const unsigned char[:] est = batch.est
    cdef const unsigned char[:] ok = batch.ok
    cdef const int[:] firsts = batch.first
    cdef const int[:] counts = batch.count
    cdef Py_ssize_t p, j, r, first, n
    cdef int sid, k, u
    cdef double t, v, sm
    cdef list rows
    cdef dict unit_names = {}
    errors = batch.errors
    # boundscheck is off: check the shapes the loop relies on once, up front
    cdef Py_ssize_t nrec = series.shape[0]
    if (times.shape[0] < nrec or values.shape[0] < nrec or kinds.shape[0] < nrec
            or units.shape[0] < nrec or sums.shape[0] < nrec or has_sum.shape[0] < nrec
            or est.shape[0] < nrec):
        raise ValueError("batch columns are shorter than batch.series")
    cdef Py_ssize_t np_ = min(ok.shape[0], firsts.shape[0], counts.shape[0])
    if pick is None and len(where) > np_:
        raise ValueError("more payload slots (%d) than the batch has payloads (%d)"
                         % (len(where), ok.shape[0]))
    if pick is not None and len(pick) != len(where):
        raise ValueError("pick and where differ in length")
    for j in range(len(where)):
        i = where[j]
        if pick is None:
            p = j
        else:
            p = pick[j]
            if p < 0 or p >= np_:
                raise ValueError("payload %d is not in the batch" % p)
        if not ok[p]:
            err = errors[p]
            out[i] = err if isinstance(err, decode_error) else error(str(err))
            continue
        first = firsts[p]
        n = counts[p]
        if first < 0 or n < 0 or first + n > nrec:
            raise ValueError("payload %d: records %d..%d outside the batch's %d"
                             % (p, first, first + n, nrec))
        rows = []
        bad = None
        for r in range(first, first + n):
            sid = series[r]
            parts = names.get(sid, False)
            if parts is False:
                parts = split_name(table.name(sid))
                names[sid] = parts
            if parts is None:
                bad = error("record %d: name %r does not name a node ('<node>/<sensor>')"
                            % (r - first, table.name(sid)))
                break
            t = times[r]
            if not isfinite(t):
                bad = error("record %d: time is not a finite number" % (r - first))
                break
            k = kinds[r]
            if k == NUM:
                v = values[r]
                if not isfinite(v):
                    bad = error("record %d: value is not a finite number" % (r - first))
                    break
                val = v
            elif k == BOOL:
                val = 1 if values[r] else 0
            elif k == SUM:
                k = NUM  # a sum without a value is stored as a number with no value
                val = None
            elif k == STR or k == DATA:
                val = batch.string_value(r)
            else:
                raise ValueError("record %d: unknown kind %d" % (r, k))
            if has_sum[r]:
                sm = sums[r]
                if not isfinite(sm):
                    bad = error("record %d: sum is not a finite number" % (r - first))
                    break
                smo = sm
            else:
                smo = None
            u = units[r]
            if u:
                un = unit_names.get(u)
                if un is None:
                    un = table.unit(u)
                    unit_names[u] = un
            else:
                un = None
            rows.append((parts[0], parts[1], un, t, k, val, smo, 1 if est[r] else None))
        if bad is None and not rows:
            bad = error("pack has no records")
        out[i] = bad if bad is not None else rows
