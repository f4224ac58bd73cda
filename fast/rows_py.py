"""Pure-Python twin of fast/rows.pyx: a decoded Batch to the rows the hub stores.

The hub's pipeline (hub/codec.py) turns the columns of `decode_batch` back
into one row tuple (node, sensor, unit, t, kind, val, sum, est) per reading, or
refuses a payload: a name that does not split into node and sensor, a
non-finite time, value or sum, a pack without records. This is the reference
of that loop; fast/rows.pyx runs the same checks in the same order with the
same error texts, and tests/hub/fastpath/test_fast_rows.py checks the two agree.

A row's kind is the decoder's (fast/kinds.py), which is also the stored one;
a record with a sum and no value (SUM) is stored as NUM with no value. `est` is 1 when
the record's time is an estimate (the extension label "est", fast/_common.py EST_LABEL),
else None: what the store keeps.
"""

import math

from .kinds import BOOL, DATA, NUM, STR, SUM


def batch_rows(batch, table, names, where, out, split_name, error, decode_error, pick=None):
    """For payload p of `batch` (p = 0..len(where)-1) set out[where[p]] to its list of rows,
    or to the DecodeError of the batch, or to error(text) for a record the hub refuses.
    With `pick` (payload indices, as long as `where`), payload pick[j] goes to out[where[j]].
    `names` caches series id -> (node, sensor) or None; split_name splits a resolved name
    (None when it names no node); error is SenMLError, decode_error DecodeError."""
    nrec = len(batch.series)
    if min(len(batch.time), len(batch.value), len(batch.kind), len(batch.unit), len(batch.sum),
           len(batch.has_sum), len(batch.est)) < nrec:
        raise ValueError("batch columns are shorter than batch.series")
    ok, firsts, counts, errors = batch.ok, batch.first, batch.count, batch.errors
    np_ = min(len(ok), len(firsts), len(counts))
    if pick is None and len(where) > np_:
        raise ValueError("more payload slots (%d) than the batch has payloads (%d)"
                         % (len(where), len(ok)))
    if pick is not None and len(pick) != len(where):
        raise ValueError("pick and where differ in length")
    unit_names = {}
    for j, i in enumerate(where):
        p = j if pick is None else pick[j]
        if p < 0 or p >= np_:
            raise ValueError("payload %d is not in the batch" % p)
        if not ok[p]:
            err = errors[p]
            out[i] = err if isinstance(err, decode_error) else error(str(err))
            continue
        first, n = firsts[p], counts[p]
        if first < 0 or n < 0 or first + n > nrec:
            raise ValueError("payload %d: records %d..%d outside the batch's %d"
                             % (p, first, first + n, nrec))
        out[i] = _payload_rows(batch, table, names, unit_names, first, n, split_name, error)


def _payload_rows(batch, table, names, unit_names, first, n, split_name, error):
    """The rows of records first..first+n-1 (one payload), or error(text) for the first
    record the hub refuses."""
    rows = []
    for r in range(first, first + n):
        sid = batch.series[r]
        parts = names.get(sid, False)
        if parts is False:
            parts = names[sid] = split_name(table.name(sid))
        if parts is None:
            return error("record %d: name %r does not name a node ('<node>/<sensor>')"
                         % (r - first, table.name(sid)))
        t = batch.time[r]
        if not math.isfinite(t):
            return error("record %d: time is not a finite number" % (r - first))
        k, val = _value(batch, r)
        if k is None:
            return error("record %d: value is not a finite number" % (r - first))
        sm = batch.sum[r] if batch.has_sum[r] else None
        if sm is not None and not math.isfinite(sm):
            return error("record %d: sum is not a finite number" % (r - first))
        u = batch.unit[r]
        un = None
        if u:
            un = unit_names.get(u)
            if un is None:
                un = unit_names[u] = table.unit(u)
        rows.append((parts[0], parts[1], un, t, k, val, sm, 1 if batch.est[r] else None))
    return rows if rows else error("pack has no records")


def _value(batch, r):
    """(kind, value) of record r as stored; (None, None) for a number that is not finite."""
    k = batch.kind[r]
    if k == NUM:
        val = batch.value[r]
        return (k, val) if math.isfinite(val) else (None, None)
    if k == BOOL:
        return k, 1 if batch.value[r] else 0
    if k == SUM:
        return NUM, None  # a sum without a value is stored as a number with no value
    if k == STR or k == DATA:
        return k, batch.string_value(r)
    raise ValueError("record %d: unknown kind %d" % (r, k))
