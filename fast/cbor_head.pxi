# Included by fast/ack.pyx and fast/udp.pyx: one CBOR head writer for the report ack.
#
# A CBOR head (major type + argument) in its shortest form, as protocol/cbor.py's
# encoder writes it (RFC 8949 §3, preferred serialization). Returns the bytes written
# (1, 2, 3, 5 or 9); `out` must have room for 9.

cdef int put_head(unsigned char *out, int major, unsigned long long v) noexcept nogil:
    cdef int i, n
    major <<= 5
    if v < 24:
        out[0] = major | v
        return 1
    if v < 0x100:
        out[0] = major | 24
        out[1] = v
        return 2
    if v < 0x10000:
        out[0] = major | 25
        n = 2
    elif v < 0x100000000ULL:
        out[0] = major | 26
        n = 4
    else:
        out[0] = major | 27
        n = 8
    for i in range(n):
        out[1 + i] = (v >> (8 * (n - 1 - i))) & 0xFF
    return 1 + n
