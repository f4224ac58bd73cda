# Mirrors protocol/report.py (encode_ack, ack_head) with the encoder half of protocol/cbor.py, byte for byte.
# cython: language_level=3
"""The hub's 2.04 report ack in C: the same bytes as protocol/report.py gives.

The ack is a deterministic CBOR map (keys 1..5: hub time as the shortest
float that keeps it, config version, wanted firmware when there is one,
stored, duplicates). Values this encoder does not handle itself (negative or
huge integers, NaN or infinite times, a time a float32 holds exactly, a
firmware that is not a str) go to the reference, so every input gets the
reference's bytes. tests/hub/fastpath/test_fast_wire.py checks the two agree.

The pipeline (hub/ingest.py) takes encode_ack and ack_head from the selector
(smartpark.fast), which falls back to protocol/report.py itself.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

include "cbor_head.pxi"


def ack_head(hub_time, config_version=0, firmware=None):
    """The ack up to its `stored` field: encode_ack(t, cv, fw, s, d) is ack_head(t, cv, fw)
    followed by 0x04 <s> 0x05 <d> (keys 4 and 5 come last in the deterministic map), so a
    batch of acks for one node and time shares one head (Endpoint.respond_many)."""
    return encode_ack(hub_time, config_version, firmware, 0, 0)[:-4]


def encode_ack(hub_time, config_version=0, firmware=None, stored=0, duplicates=0):
    """Byte-identical twin of smartpark.protocol.report.encode_ack (deterministic CBOR map,
    keys 1..5, shortest float for the hub time); falls back to the reference for values it
    does not handle (negative or huge ints, NaN/inf, times a float32 holds exactly)."""
    cdef double t = float(hub_time)
    cdef float f32 = <float>t
    cdef unsigned char buf[64]
    cdef int pos = 1
    cdef uint64_t u
    cdef int i
    cdef bytes fw = None
    cv, st, du = int(config_version), int(stored), int(duplicates)
    if (t != t or t - t != 0 or <double>f32 == t or not 0 <= cv < 2 ** 63
            or not 0 <= st < 2 ** 63 or not 0 <= du < 2 ** 63):
        from smartpark.protocol.report import encode_ack as ref
        return ref(hub_time, config_version, firmware, stored, duplicates)
    buf[0] = 0xA5 if firmware else 0xA4
    buf[pos] = 0x01
    buf[pos + 1] = 0xFB
    memcpy(&u, &t, 8)
    for i in range(8):
        buf[pos + 2 + i] = (u >> (56 - 8 * i)) & 0xFF
    pos += 10
    buf[pos] = 0x02
    pos += 1 + put_head(buf + pos + 1, 0, cv)
    head = PyBytes_FromStringAndSize(<char *>buf, pos)
    pos = 0
    buf[pos] = 0x04
    pos += 1 + put_head(buf + pos + 1, 0, st)
    buf[pos] = 0x05
    pos += 1 + put_head(buf + pos + 1, 0, du)
    tail = PyBytes_FromStringAndSize(<char *>buf, pos)
    if firmware:
        fw = firmware.encode("utf-8") if isinstance(firmware, str) else None
        if fw is None:
            from smartpark.protocol.report import encode_ack as ref
            return ref(hub_time, config_version, firmware, stored, duplicates)
        pos = 1 + put_head(buf + 1, 3, len(fw))
        buf[0] = 0x03
        return head + PyBytes_FromStringAndSize(<char *>buf, pos) + fw + tail
    return head + tail
