"""SenML payloads to storable rows, for a batch of reports at once.

Scope: turn (payload, content format) pairs into rows
(node, sensor, unit, t, kind, val, sum) or a DecodeError per payload.

SenML-CBOR goes through fast/'s selector (`smartpark.fast.decode_batch`: the
Cython twin, or its pure-Python twin under SMARTPARK_PUREPYTHON=1) one batch
at a time; SenML-JSON through the reference `smartpark.protocol.senml`. When
fast/'s selector is not importable, CBOR also goes through protocol.senml.
The hub has no SenML decoder of its own.

Names: a resolved name splits into (node, sensor) at the last '/', or at the
last ':' when there is no '/'; a record whose name has neither is rejected
(4.00), as is a non-finite numeric value.
"""

import math

from smartpark.protocol.errors import DecodeError, SenMLError

from .interfaces import CT_SENML_CBOR
from .store.sqlite import KIND_BOOL, KIND_DATA, KIND_NUM, KIND_STR

try:
    from smartpark import fast as _fast

    _decode_batch = _fast.decode_batch
    _SeriesTable = _fast.SeriesTable
    FAST = True
    COMPILED = bool(getattr(_fast, "COMPILED", False))
except (ImportError, AttributeError):  # fast/ selector not built
    _fast = None
    FAST = False
    COMPILED = False

_batch_rows = None  # issue 7: compiled twin of the row loop in Decoder._decode_fast
_Lane = _MaxT = None  # issue 7: the column lane (fast/lane.pyx)
if COMPILED:
    try:
        from smartpark.fast.rows import batch_rows as _batch_rows
    except ImportError:  # not built: the Python loop below does the same
        pass
    try:
        from smartpark.fast.lane import Lane as _Lane
        from smartpark.fast.lane import MaxT as _MaxT
    except ImportError:  # not built: every report takes the row path
        pass

try:
    from smartpark.protocol import senml as _senml
except ImportError:  # an install without smartpark.protocol: see _need_senml
    _senml = None


def split_name(name):
    """'n1/temp' -> ('n1', 'temp'); 'urn:dev:x:temp' -> ('urn:dev:x', 'temp'); else None."""
    i = name.rfind("/")
    if i < 0:
        i = name.rfind(":")
    if i <= 0 or i == len(name) - 1:
        return None
    return name[:i], name[i + 1:]


def _need_senml():
    if _senml is None:
        raise RuntimeError("smartpark.protocol.senml is not available in this build")
    return _senml


def _rows_from_records(records):
    rows = []
    for idx, r in enumerate(records):
        name = r.get("n")
        parts = split_name(name) if isinstance(name, str) else None
        if parts is None:
            raise SenMLError("record %d: name %r does not name a node ('<node>/<sensor>')"
                             % (idx, name))
        t = r.get("t")
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t):
            raise SenMLError("record %d: time is not a finite number" % idx)
        sm = r.get("s")
        if sm is not None and not (isinstance(sm, (int, float)) and math.isfinite(sm)):
            raise SenMLError("record %d: sum is not a finite number" % idx)
        if "v" in r:
            v = r["v"]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SenMLError("record %d: value is not a finite number" % idx)
            kind, val = KIND_NUM, float(v)
        elif "vb" in r:
            kind, val = KIND_BOOL, 1 if r["vb"] else 0
        elif "vs" in r:
            kind, val = KIND_STR, r["vs"]
        elif "vd" in r:
            vd = r["vd"]
            kind, val = KIND_DATA, bytes(vd) if isinstance(vd, (bytes, bytearray)) else vd
        elif sm is not None:
            kind, val = KIND_NUM, None
        else:
            raise SenMLError("record %d: no value" % idx)
        rows.append((parts[0], parts[1], r.get("u"), float(t), kind, val,
                     None if sm is None else float(sm)))
    if not rows:
        raise SenMLError("pack has no records")
    return rows


_FAST_KIND = {0: KIND_NUM, 1: KIND_BOOL, 2: KIND_STR, 3: KIND_DATA, 4: KIND_NUM}


class Decoder:
    """Decodes batches of reports; holds fast/'s SeriesTable for its lifetime."""

    def __init__(self, use_fast=True, compiled_rows=True):
        self.use_fast = use_fast and FAST
        self.rows_twin = _batch_rows if compiled_rows and self.use_fast else None
        self.table = _SeriesTable() if self.use_fast else None
        self._names = {}  # fast series id -> (node, sensor) or None
        self.lane = None

    def enable_lane(self, maxt):
        """Issue 7: take ordinary reports as columns (fast/lane.pyx) sharing the store's
        MaxT. Returns the Lane, or None when this build cannot (pure path, no extension)."""
        if _Lane is not None and self.use_fast and self.rows_twin is not None and \
                isinstance(maxt, _MaxT):
            self.lane = _Lane(maxt)
        return self.lane

    def decode_lane(self, payloads, now, lo, hi):
        """SenML-CBOR payloads through the column lane. Returns (batch, take, node, block,
        out): take[p] says payload p is in `block` (its node is lane.nodes[node[p]]);
        out[p] is the rows or DecodeError of every other payload, as `decode` gives."""
        batch = _decode_batch(payloads, now, self.table)
        take, node, block = self.lane.select(batch, lo, hi)
        out = [None] * len(payloads)
        rest = [p for p in range(len(payloads)) if not take[p]]
        if rest:
            self.rows_twin(batch, self.table, self._names, rest, out, split_name, _FAST_KIND,
                           SenMLError, DecodeError, rest)
        return batch, take, node, block, out

    def lane_learn(self, batch, payload, series_of):
        """After the row path stored payload `payload` of `batch`: let the lane take its
        series from now on, with the unit the store now has for each (the row path is
        where a unit changes). series_of: (node, sensor) -> (store series id, unit)."""
        lane = self.lane
        table = self.table
        names = self._names
        first = batch.first[payload]
        for r in range(first, first + batch.count[payload]):
            fs = batch.series[r]
            parts = names.get(fs)
            if not parts:
                continue
            hit = series_of.get(parts)
            if hit is None:
                continue
            lane.register(fs, hit[0], table.unit_id(hit[1]) if hit[1] is not None else 0,
                          parts[0])

    @property
    def path(self):
        if self.use_fast:
            return "fast-compiled" if COMPILED else "fast-pure"
        return "protocol.senml"

    def decode(self, items, now):
        """items: list of (payload, content_format); returns rows or DecodeError per item."""
        out = [None] * len(items)
        cbor_idx = []
        for i, (payload, cf) in enumerate(items):
            if cf == CT_SENML_CBOR and self.use_fast:
                cbor_idx.append(i)
                continue
            fmt = "cbor" if cf == CT_SENML_CBOR else "json"
            try:
                senml = _need_senml()
                pack = senml.decode(bytes(payload), fmt)
                out[i] = _rows_from_records(senml.resolve(pack, now=now))
            except DecodeError as e:
                out[i] = e
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                # the reference decoder promises DecodeError; anything else is still bad input
                out[i] = SenMLError("invalid pack (%s)" % e)
        if cbor_idx:
            self._decode_fast([items[i][0] for i in cbor_idx], now, cbor_idx, out)
        return out

    def _decode_fast(self, payloads, now, where, out):
        batch = _decode_batch(payloads, now, self.table)
        if self.rows_twin is not None:
            self.rows_twin(batch, self.table, self._names, where, out, split_name, _FAST_KIND,
                           SenMLError, DecodeError)
            return
        table = self.table
        names = self._names
        series, times, values, kinds = batch.series, batch.time, batch.value, batch.kind
        units, sums, has_sum = batch.unit, batch.sum, batch.has_sum
        for p, i in enumerate(where):
            if not batch.ok[p]:
                err = batch.errors[p]
                out[i] = err if isinstance(err, DecodeError) else SenMLError(str(err))
                continue
            first = batch.first[p]
            rows = []
            try:
                for r in range(first, first + batch.count[p]):
                    sid = series[r]
                    parts = names.get(sid, False)
                    if parts is False:
                        parts = split_name(table.name(sid))
                        names[sid] = parts
                    if parts is None:
                        raise SenMLError("record %d: name %r does not name a node "
                                         "('<node>/<sensor>')" % (r - first, table.name(sid)))
                    t = times[r]
                    if not math.isfinite(t):
                        raise SenMLError("record %d: time is not a finite number" % (r - first))
                    k = kinds[r]
                    kind = _FAST_KIND[k]
                    if k == 0:
                        val = values[r]
                        if not math.isfinite(val):
                            raise SenMLError("record %d: value is not a finite number"
                                             % (r - first))
                    elif k == 1:
                        val = 1 if values[r] else 0
                    elif k == 4:
                        val = None
                    else:
                        val = batch.string_value(r)
                    sm = sums[r] if has_sum[r] else None
                    if sm is not None and not math.isfinite(sm):
                        raise SenMLError("record %d: sum is not a finite number" % (r - first))
                    u = units[r]
                    rows.append((parts[0], parts[1], table.unit(u) if u else None, t, kind, val,
                                 sm))
                if not rows:
                    raise SenMLError("pack has no records")
            except DecodeError as e:
                out[i] = e
                continue
            out[i] = rows
