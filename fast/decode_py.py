"""Pure-Python twin of fast/decode.pyx, built on protocol.senml + protocol.cbor.

Same output (a fast._common.Batch with array columns) from the reference
decoder: every payload goes through senml.decode(payload, "cbor") and
senml.resolve(pack, now). vs/vd values cannot reference the payload here
(the reference hands back copies), so they live in batch.spill and
Batch.string_value() reads them from there. Used when SMARTPARK_PUREPYTHON=1
and as the judge in the differential tests.
"""

from smartpark.protocol import senml
from smartpark.protocol.errors import DecodeError, LimitError, SenMLError

from ._common import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_RECORDS,
    EST_LABEL,
    KIND_S,
    KIND_V,
    KIND_VB,
    KIND_VD,
    KIND_VS,
    Batch,
)


class SeriesTable:
    """Names <-> series ids (dense from 0), units <-> unit ids (from 1; 0 = none)."""

    def __init__(self):
        self._ids = {}
        self._names = []
        self._unit_ids = {}
        self._units = [None]

    def __len__(self):
        return len(self._names)

    def __repr__(self):
        return "<SeriesTable %d series, %d units>" % (len(self._names), len(self._units) - 1)

    def name(self, sid):
        if sid < 0 or sid >= len(self._names):
            raise IndexError("no series %d" % sid)
        return self._names[sid]

    def node(self, sid):
        from ._common import split_series
        return split_series(self.name(sid))[0]

    def sensor(self, sid):
        from ._common import split_series
        return split_series(self.name(sid))[1]

    def unit(self, uid):
        if uid < 0 or uid >= len(self._units):
            raise IndexError("no unit %d" % uid)
        return self._units[uid]

    def lookup(self, name):
        return self._ids.get(name, -1)

    def intern(self, name):
        sid = self._ids.get(name)
        if sid is None:
            if not senml.valid_name(name):
                raise SenMLError("invalid name %r (RFC 8428 §4.5.1 characters)" % name)
            sid = len(self._names)
            self._ids[name] = sid
            self._names.append(name)
        return sid

    def unit_id(self, u):
        if u is None:
            return 0
        uid = self._unit_ids.get(u)
        if uid is None:
            uid = len(self._units)
            self._unit_ids[u] = uid
            self._units.append(u)
        return uid

    def names_list(self):
        return list(self._names)

    def memory_bytes(self):
        import sys
        return sum(sys.getsizeof(n) for n in self._names) + sys.getsizeof(self._ids)


DEFAULT_TABLE = SeriesTable()
_NAN = float("nan")


def _rows(payload, now, table, max_records, max_bytes):
    if len(payload) > max_bytes:
        raise LimitError("payload of %d bytes exceeds max_bytes" % len(payload), 0)
    pack = senml.decode(bytes(payload), "cbor", max_bytes=max_bytes)
    if len(pack) > max_records:
        raise LimitError("pack has more than max_records=%d records" % max_records, 0)
    rows = []
    for rec in senml.resolve(pack, now):
        sid = table.intern(rec["n"])
        uid = table.unit_id(rec.get("u"))
        s = rec.get("s")
        if "v" in rec:
            kind, value, ref = KIND_V, float(rec["v"]), None
        elif "vb" in rec:
            kind, value, ref = KIND_VB, 1.0 if rec["vb"] else 0.0, None
        elif "vs" in rec:
            kind, value, ref = KIND_VS, _NAN, rec["vs"].encode("utf-8")
        elif "vd" in rec:
            kind, value, ref = KIND_VD, _NAN, bytes(rec["vd"])
        else:
            kind, value, ref = KIND_S, float(s), None
        rows.append((sid, float(rec["t"]), value, kind, uid,
                     _NAN if s is None else float(s), s is not None, ref,
                     rec.get(EST_LABEL) is True))
    return rows


def decode_batch(payloads, now, table=None, *, max_records=DEFAULT_MAX_RECORDS,
                 max_bytes=DEFAULT_MAX_BYTES, max_depth=DEFAULT_MAX_DEPTH):
    """Decode SenML-CBOR payloads into one Batch (reference behaviour).

    max_depth is accepted for signature parity; the reference decoder applies
    protocol.cbor's own nesting limit (the same default, 32).
    """
    if table is None:
        table = DEFAULT_TABLE
    payloads = tuple(payloads)
    now = float(now)
    b = Batch(table, payloads)
    spill = bytearray()
    n = 0
    for pi, payload in enumerate(payloads):
        try:
            rows = _rows(payload, now, table, max_records, max_bytes)
        except DecodeError as e:
            b.ok.append(0)
            b.first.append(n)
            b.count.append(0)
            b.errors.append(e)
            continue
        b.ok.append(1)
        b.first.append(n)
        b.count.append(len(rows))
        b.errors.append(None)
        for sid, t, value, kind, uid, s, has_s, ref, est in rows:
            b.series.append(sid)
            b.time.append(t)
            b.value.append(value)
            b.kind.append(kind)
            b.unit.append(uid)
            b.sum.append(s)
            b.has_sum.append(1 if has_s else 0)
            b.est.append(1 if est else 0)
            b.payload.append(pi)
            if ref is None:
                b.ref_off.append(-1)
                b.ref_len.append(-1)
            else:
                b.ref_off.append(-len(spill) - 2)
                b.ref_len.append(len(ref))
                spill += ref
        n += len(rows)
    b.n_records = n
    b.spill = bytes(spill)
    return b
