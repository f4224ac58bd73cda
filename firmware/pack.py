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

The CBOR labels are RFC 8428 Table 4's, as constants: protocol/senml.py,
which holds them as a table (senml.CODES), is the hub's decoder and ~10 KB of
heap a node does not need (tests/firmware check the two agree). Packs decode
with senml.decode/resolve (tested on both interpreters).
"""

from compat import const
from smartpark.protocol import cbor

_BN = const(-2)
_BT = const(-3)
_N = const(0)
_U = const(1)
_V = const(2)
_VS = const(3)
_VB = const(4)
_S = const(5)
_T = const(6)
_KIND = {"v": _V, "vb": _VB, "s": _S, "vs": _VS}

CT_SENML_CBOR = const(112)  # RFC 8428 section 12.3
# The time-provenance marker: the text label "est" with the value true, on each record whose
# time was estimated. RFC 8428 section 4.4 lets a pack carry labels a reader does not
# know; only labels ending in "_" must be understood, so a reader without "est" still
# takes the record and its time (docs/diagnostics.md). 4 bytes, only on such records.
ESTIMATED = b"\x63est\xf5"
# a float32 holds k/1024 exactly for k < 2**24: keep a pack's span below that
MAX_SPAN_TICKS = 1 << 24


def ms_to_tick(ms):
    return ms * 1024 // 1000


def build(node, items, extra=(), est=False):
    """Pack for items [(t_ms, name, unit, kind, value), ...] (t_ms None: "now"), as a
    bytearray. node.drain turns it into bytes and lets the bytearray go before the
    request; coap.Message then takes the bytes as they are (no second copy).

    `est`: the items' times are estimated (taken before the node's clock had the hub's
    time, resolved with the run's first correction, clock.py); each record then carries
    the extension label "est" (true), see ESTIMATED.

    `extra` are records without time (resolved to the hub's now), used only
    to ask for the time before the node has any.

    Written straight into one bytearray, record by record: no dict per record
    and no sorting (a 40-reading pack would otherwise leave ~4 KB of dicts for
    the GC on an ESP32). Keys go in the order cbor.dumps sorts them to (by
    their encoded bytes: n 0x00, u 0x01, v 0x02, vb 0x04, s 0x05, t 0x06, bn
    0x21, bt 0x22), so the bytes are the same as dumps() of the dicts.
    """
    buf = bytearray()
    sc = bytearray(9)
    count = len(items) + len(extra)
    if not count:
        cbor.head(buf, cbor.MT_ARRAY, 1)
        cbor.head(buf, cbor.MT_MAP, 1)
        _key(buf, _BN)
        cbor.encode_into(buf, node + "/", sc)
        return buf
    cbor.head(buf, cbor.MT_ARRAY, count)
    bt = None
    first = True
    for t_ms, name, unit, kind, value in items:
        off = None
        base = None
        if t_ms is not None:
            tick = ms_to_tick(t_ms)
            if bt is None:
                bt = base = tick >> 10
            off = tick - (bt << 10)
        _record(buf, sc, name, unit, kind, value, off / 1024 if off else None,
                node + "/" if first else None, base, est)
        first = False
    for name, unit, kind, value in extra:
        _record(buf, sc, name, unit, kind, value, None, node + "/" if first else None, None)
        first = False
    return buf


def _key(buf, label):
    # labels are -3..6: one byte each (major 0 for 0..6, major 1 for -1..-3)
    buf.append(label if label >= 0 else 0x20 | (-1 - label))


def _record(buf, sc, name, unit, kind, value, t, bn, bt, est=False):
    cbor.head(buf, cbor.MT_MAP, 2 + (1 if unit else 0) + (t is not None) + (bn is not None)
              + (bt is not None) + est)
    _key(buf, _N)
    cbor.encode_into(buf, name, sc)
    if unit:
        _key(buf, _U)
        cbor.encode_into(buf, unit, sc)
    _key(buf, _KIND[kind])
    cbor.encode_into(buf, value, sc)
    if t is not None:
        _key(buf, _T)
        cbor.encode_into(buf, t, sc)
    if bn is not None:
        _key(buf, _BN)
        cbor.encode_into(buf, bn, sc)
    if bt is not None:
        _key(buf, _BT)
        cbor.encode_into(buf, bt, sc)
    if est:
        buf.extend(ESTIMATED)   # a text label sorts after the integer ones


def fits(first_ms, t_ms):
    """True when t_ms can share a pack with a pack starting at first_ms."""
    a = ms_to_tick(first_ms)
    b = ms_to_tick(t_ms)
    return -MAX_SPAN_TICKS < b - ((a >> 10) << 10) < MAX_SPAN_TICKS
