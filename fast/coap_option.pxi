# CoAP option headers (RFC 7252 section 3.1) for the fast path's C loops: the walker of its
# classifiers (fast/udp.pyx) and of the OSCORE plaintext check (fast/oscore.pyx), and the
# writer of the options its responses carry. Included, not cimported: both modules inline
# them. The including module cimports memcpy (libc.string).

cdef inline int next_option(const unsigned char *d, int n, int *pos, int *num,
                            int *length) noexcept nogil:
    """Step over the option header at d[pos[0]] (d is n bytes long).

    1: an option; num[0] advanced by its delta, length[0] its value's length, pos[0] at its
       value, which lies wholly inside d.
    2: the payload marker; pos[0] just past it, at a payload of at least one byte.
    0: the end of the message, a marker with no payload after it, or anything malformed (a
       reserved nibble 15, a header or value that runs past the end)."""
    cdef int p = pos[0], delta, ln
    if p >= n:
        return 0
    if d[p] == 0xFF:
        if p + 1 >= n:
            return 0
        pos[0] = p + 1
        return 2
    delta = d[p] >> 4
    ln = d[p] & 0x0F
    p += 1
    if delta == 13:
        if p >= n:
            return 0
        delta = d[p] + 13
        p += 1
    elif delta == 14:
        if p + 1 >= n:
            return 0
        delta = ((d[p] << 8) | d[p + 1]) + 269
        p += 2
    elif delta == 15:
        return 0
    if ln == 13:
        if p >= n:
            return 0
        ln = d[p] + 13
        p += 1
    elif ln == 14:
        if p + 1 >= n:
            return 0
        ln = ((d[p] << 8) | d[p + 1]) + 269
        p += 2
    elif ln == 15:
        return 0
    if p + ln > n:
        return 0
    num[0] += delta
    length[0] = ln
    pos[0] = p
    return 1


cdef inline int put_option(unsigned char *out, int pos, int delta, const unsigned char *val,
                           int ln) noexcept nogil:
    """Option header (delta < 269, length < 13: the few short options a response carries)
    and value at out[pos:]; the new pos."""
    if delta >= 13:
        out[pos] = (13 << 4) | ln
        out[pos + 1] = delta - 13
        pos += 2
    else:
        out[pos] = (delta << 4) | ln
        pos += 1
    memcpy(out + pos, val, ln)
    return pos + ln
