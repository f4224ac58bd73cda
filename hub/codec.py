"""SenML payloads to storable rows, for a batch of reports at once.

Scope: turn (payload, content format) pairs into rows
(node, sensor, unit, t, kind, val, sum, est) or a DecodeError per payload; `est` is 1
for a reading whose time the node estimated (the SenML extension label "est": true,
fast/_common.py EST_LABEL), else None.

SenML-CBOR goes through fast/'s selector (`smartpark.fast.decode_batch`, then
`smartpark.fast.batch_rows`: the Cython twins, or their pure-Python twins under
SMARTPARK_PUREPYTHON=1) one batch at a time; SenML-JSON through the reference
`smartpark.protocol.senml`. The hub has no SenML decoder of its own.

Kinds are those of fast/kinds.py, the one numbering from the decoder to the
store, so a row's kind is the decoder's.

Names: a resolved name splits into (node, sensor) at the last '/', or at the
last ':' when there is no '/'; a record whose name has neither is rejected
(4.00), as is a non-finite numeric value.
"""

import math

from smartpark import fast as _fast
from smartpark.fast import EST_LABEL
from smartpark.fast.kinds import BOOL as KIND_BOOL
from smartpark.fast.kinds import DATA as KIND_DATA
from smartpark.fast.kinds import NUM as KIND_NUM
from smartpark.fast.kinds import STR as KIND_STR
from smartpark.protocol.errors import DecodeError, SenMLError

from .interfaces import CT_SENML_CBOR

COMPILED = _fast.COMPILED

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
                     None if sm is None else float(sm), 1 if r.get(EST_LABEL) is True else None))
    if not rows:
        raise SenMLError("pack has no records")
    return rows


class Decoder:
    """Decodes batches of reports; holds fast/'s SeriesTable for its lifetime."""

    def __init__(self, use_fast=True):
        self.use_fast = use_fast
        self.table = _fast.SeriesTable() if self.use_fast else None
        self._names = {}  # fast series id -> (node, sensor) or None
        self.lane = None

    def enable_lane(self, newest):
        """Take ordinary reports as columns (fast/lane.pyx) sharing the store's NewestTime.
        Returns the Lane, or None when this build cannot (pure path, no extension)."""
        if _fast.Lane is not None and self.use_fast and isinstance(newest, _fast.NewestTime):
            self.lane = _fast.Lane(newest)
        return self.lane

    def decode_lane(self, payloads, now, lo, hi):
        """SenML-CBOR payloads through the column lane. Returns (batch, take, node, block,
        out): take[p] says payload p is in `block` (its node is lane.nodes[node[p]]);
        out[p] is the rows or DecodeError of every other payload, as `decode` gives."""
        batch = _fast.decode_batch(payloads, now, self.table)
        take, node, block = self.lane.select(batch, lo, hi)
        out = [None] * len(payloads)
        rest = [p for p in range(len(payloads)) if not take[p]]
        if rest:
            _fast.batch_rows(batch, self.table, self._names, rest, out, split_name, SenMLError,
                             DecodeError, rest)
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
        batch = _fast.decode_batch(payloads, now, self.table)
        _fast.batch_rows(batch, self.table, self._names, where, out, split_name, SenMLError,
                         DecodeError)
