"""Outbox records -> one SenML-CBOR pack (RFC 8428), with exact, resend-stable times.

The pack names the node in bn ("<node>/"), puts the first record's whole
second in bt (a CBOR integer) and gives each record t relative to it in units
of 1/1024 s (ms resolution: distinct ms stay distinct, see below). Both are
exact binary numbers, so the hub's bt + t is the same float whatever else the
pack holds: a reading resent in a different pack after a reboot lands on the
same (node, sensor, time) key and is dropped as a duplicate. Small binary
fractions also encode as CBOR half/single floats (3/5 bytes instead of 9).
No float ever holds an absolute time, which single-precision ESP32 floats
could not (128 s steps).

A ms time m becomes tick = m * 1024 // 1000; since 1024/1000 > 1, two
different ms never share a tick, and the tick is within 1 ms of m.

Labels and the CBOR layout are protocol/senml.py's (senml.CODES, cbor.dumps);
packs decode with senml.decode/resolve (tested on both interpreters).
"""

from smartpark.protocol import cbor, senml

_BN = senml.CODES["bn"]
_BT = senml.CODES["bt"]
_BU = senml.CODES["bu"]
_N = senml.CODES["n"]
_U = senml.CODES["u"]
_T = senml.CODES["t"]
_V = senml.CODES["v"]
_VB = senml.CODES["vb"]
_S = senml.CODES["s"]
_KIND = {"v": _V, "vb": _VB, "s": _S}

CT_SENML_CBOR = senml.CT_SENML_CBOR
# a float32 holds k/1024 exactly for k < 2**24: keep a pack's span below that
MAX_SPAN_TICKS = 1 << 24


def ms_to_tick(ms):
    return ms * 1024 // 1000


def build(node, items, extra=()):
    """Pack bytes for items [(t_ms, name, unit, kind, value), ...] (t_ms None: "now").

    `extra` are records without time (resolved to the hub's now), used only
    to ask for the time before the node has any.
    """
    recs = []
    bt = None
    for t_ms, name, unit, kind, value in items:
        r = {_N: name, _KIND[kind]: value}
        if unit:
            r[_U] = unit
        if t_ms is not None:
            tick = ms_to_tick(t_ms)
            if bt is None:
                bt = tick >> 10
                r[_BT] = bt
            off = tick - (bt << 10)
            if off:
                r[_T] = off / 1024
        recs.append(r)
    for name, unit, kind, value in extra:
        r = {_N: name, _KIND[kind]: value}
        if unit:
            r[_U] = unit
        recs.append(r)
    if not recs:
        return cbor.dumps([{_BN: node + "/"}])
    recs[0][_BN] = node + "/"
    return cbor.dumps(recs)


def fits(first_ms, t_ms):
    """True when t_ms can share a pack with a pack starting at first_ms."""
    a = ms_to_tick(first_ms)
    b = ms_to_tick(t_ms)
    return -MAX_SPAN_TICKS < b - ((a >> 10) << 10) < MAX_SPAN_TICKS
