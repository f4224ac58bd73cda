# Part of fast/decode.pyx (included there, not compiled on its own): the CBOR reader.
#
# Validates as protocol/cbor.py decodes (RFC 8949): well-formed UTF-8, no
# indefinite-length integers or tags, no two-byte simple values below 32,
# bignums only over byte strings, limits on depth and size; map keys are
# reduced to a canonical form so duplicates are found as Python dict keys
# compare. The common heads, numbers and short strings are read inline.

cdef bint utf8_ok(const uint8_t* s, Py_ssize_t n) noexcept nogil:
    """Well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, <= U+10FFFF)."""
    cdef Py_ssize_t i = 0, k, j
    cdef uint8_t b, lo, hi
    cdef uint64_t w
    while i + 8 <= n:  # ASCII fast path, 8 bytes at a time
        memcpy(&w, s + i, 8)
        if w & 0x8080808080808080ULL:
            break
        i += 8
    while i < n:
        b = s[i]
        if b < 0x80:
            i += 1
            continue
        if b >= 0xC2 and b <= 0xDF:
            k = 1
            lo = 0x80
            hi = 0xBF
        elif b >= 0xE0 and b <= 0xEF:
            k = 2
            lo = 0xA0 if b == 0xE0 else 0x80
            hi = 0x9F if b == 0xED else 0xBF
        elif b >= 0xF0 and b <= 0xF4:
            k = 3
            lo = 0x90 if b == 0xF0 else 0x80
            hi = 0x8F if b == 0xF4 else 0xBF
        else:
            return False
        if i + k >= n:
            return False
        if s[i + 1] < lo or s[i + 1] > hi:
            return False
        for j in range(i + 2, i + k + 1):
            if s[j] < 0x80 or s[j] > 0xBF:
                return False
        i += k + 1
    return True


cdef inline int head(Ctx* c, Rd* r, int* mt, uint64_t* arg, int* ai) noexcept nogil:
    """Initial byte + argument; ai == 31 means indefinite length (arg 0)."""
    cdef Py_ssize_t p = r.pos
    cdef int k
    cdef uint64_t v
    if UNLIKELY(p >= r.n):
        return fail(c, E_TRUNC, p)
    cdef uint8_t ib = r.p[p]
    mt[0] = ib >> 5
    ai[0] = ib & 0x1F
    if LIKELY(ai[0] < 24):
        arg[0] = ai[0]
        r.pos = p + 1
        return 0
    if ai[0] == 31:
        arg[0] = 0
        r.pos = p + 1
        return 0
    if ai[0] > 27:
        return fail(c, E_RESERVED, p, ai[0])
    k = 1 << (ai[0] - 24)
    if UNLIKELY(p + 1 + k > r.n):
        return fail(c, E_TRUNC, p)
    v = 0
    for p in range(r.pos + 1, r.pos + 1 + k):
        v = (v << 8) | r.p[p]
    arg[0] = v
    r.pos += 1 + k
    return 0


cdef inline double pow2_small(int e) noexcept nogil:
    """2.0**e for a normal exponent (-1022..1023), from the bits."""
    cdef uint64_t u = <uint64_t>(e + 1023) << 52
    cdef double d
    memcpy(&d, &u, 8)
    return d


cdef inline double half_to_double(uint64_t h) noexcept nogil:
    cdef int e = (h >> 10) & 0x1F
    cdef int m = h & 0x3FF
    cdef double v
    if e == 0:
        v = m * 5.9604644775390625e-08  # m * 2**-24, exact
    elif e == 31:
        v = NAN if m else INFINITY
    else:
        v = (m + 1024) * pow2_small(e - 25)  # exact, as ldexp
    return -v if h & 0x8000 else v


cdef inline double bits_to_double(uint64_t b) noexcept nogil:
    cdef double d
    memcpy(&d, &b, 8)
    return d


cdef inline double bits_to_float(uint64_t b) noexcept nogil:
    cdef uint32_t u = <uint32_t>b
    cdef float f
    memcpy(&f, &u, 4)
    return <double>f


cdef int spill_put(Ctx* c, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef void* q
    cdef int64_t ncap
    if c.spill_len + n > c.spill_cap:
        ncap = c.spill_cap * 2 if c.spill_cap else 4096
        while ncap < c.spill_len + n:
            ncap *= 2
        q = realloc(c.spill, ncap)
        if q == NULL:
            return -1
        c.spill = <uint8_t*>q
        c.spill_cap = ncap
    memcpy(c.spill + c.spill_len, p, n)
    c.spill_len += n
    return 0


cdef int read_string(Ctx* c, Rd* r, int want_mt, uint64_t arg, int ai, Py_ssize_t start,
                     Str* out) noexcept nogil:
    """The body of a byte/text string whose head was read; chunked ones go to spill."""
    cdef int cmt, cai
    cdef uint64_t carg
    cdef Py_ssize_t cp
    out.spill = -1
    if LIKELY(ai != 31):
        if UNLIKELY(arg > <uint64_t>(r.n - r.pos)):
            return fail(c, E_TRUNC, start)
        out.p = r.p + r.pos
        out.n = <Py_ssize_t>arg
        r.pos += out.n
        if want_mt == 3 and not utf8_ok(out.p, out.n):
            return fail(c, E_UTF8, start)
        return 0
    out.spill = c.spill_len
    out.n = 0
    while True:
        if r.pos >= r.n:
            return fail(c, E_TRUNC, start)
        if r.p[r.pos] == 0xFF:
            r.pos += 1
            break
        cp = r.pos
        if head(c, r, &cmt, &carg, &cai) < 0:
            return -1
        if cmt != want_mt or cai == 31:
            return fail(c, E_BAD_CHUNK, cp)
        if carg > <uint64_t>(r.n - r.pos):
            return fail(c, E_TRUNC, cp)
        if want_mt == 3 and not utf8_ok(r.p + r.pos, <Py_ssize_t>carg):
            return fail(c, E_UTF8, cp)  # each chunk on its own (RFC 8949 §3.2.3)
        if spill_put(c, r.p + r.pos, <Py_ssize_t>carg) < 0:
            return fail(c, E_NOMEM, cp)
        r.pos += <Py_ssize_t>carg
        out.n += <Py_ssize_t>carg
    out.p = NULL  # resolve with str_ptr(): spill may move while more is added
    return 0


cdef inline const uint8_t* str_ptr(Ctx* c, Str* s) noexcept nogil:
    if s.spill >= 0:
        return c.spill + s.spill
    return s.p


cdef int skip_item(Ctx* c, Rd* r, int depth, int* kind) noexcept nogil:
    """Skip one well-formed data item (validated like the reference decoder).

    kind: 0 scalar, 1 container (array/map or a tag holding one): unhashable
    as a map key in the reference.
    """
    cdef Py_ssize_t start = r.pos
    cdef int mt, ai, sub
    cdef uint64_t arg, i
    cdef Str s
    kind[0] = 0
    if head(c, r, &mt, &arg, &ai) < 0:
        return -1
    if mt == 0 or mt == 1:
        if ai == 31:
            return fail(c, E_INDEF_INT, start)
        return 0
    if mt == 2 or mt == 3:
        return read_string(c, r, mt, arg, ai, start, &s)
    if mt == 7:
        if ai == 31:
            return fail(c, E_BREAK, start)
        if ai == 24 and arg < 32:
            return fail(c, E_SIMPLE2, start)
        return 0
    if depth >= c.max_depth:
        return fail(c, E_MAX_DEPTH, start, c.max_depth)
    depth += 1
    if mt == 6:
        if ai == 31:
            return fail(c, E_INDEF_TAG, start)
        if arg == 2 or arg == 3:
            if r.pos >= r.n:
                return fail(c, E_TRUNC, r.pos)
            if (r.p[r.pos] >> 5) != 2:
                # the reference decodes the content first: report its errors first
                if skip_item(c, r, depth, &sub) < 0:
                    return -1
                return fail(c, E_BIGNUM, start)
        return skip_item(c, r, depth, kind)
    kind[0] = 1
    if mt == 4:
        if ai == 31:
            while True:
                if r.pos >= r.n:
                    return fail(c, E_TRUNC, start)
                if r.p[r.pos] == 0xFF:
                    r.pos += 1
                    return 0
                if skip_item(c, r, depth, &sub) < 0:
                    return -1
        if arg > <uint64_t>(r.n - r.pos):
            return fail(c, E_TRUNC, start)
        for i in range(arg):
            if skip_item(c, r, depth, &sub) < 0:
                return -1
        return 0
    # mt == 5: a map, with its keys checked for duplicates like a Python dict
    cdef int64_t kbase = c.nkeys, kbuf_base = c.kbuf_len
    cdef KeyInfo ki
    if ai == 31:
        while True:
            if r.pos >= r.n:
                return fail(c, E_TRUNC, start)
            if r.p[r.pos] == 0xFF:
                r.pos += 1
                break
            if canon_key(c, r, depth, &ki) < 0:
                return -1
            if skip_item(c, r, depth, &sub) < 0:
                return -1
    else:
        if arg > <uint64_t>((r.n - r.pos) // 2):
            return fail(c, E_TRUNC, start)
        for i in range(arg):
            if canon_key(c, r, depth, &ki) < 0:
                return -1
            if skip_item(c, r, depth, &sub) < 0:
                return -1
    if c.nkeys - kbase >= 2 and check_dups(c, kbase) < 0:  # two or more other keys
        return -1
    c.nkeys = kbase
    c.kbuf_len = kbuf_base
    return 0


# ---------------------------------------------------------------- map keys

cdef enum:
    KT_INT = 0      # int (or bignum, bool); ival valid when fits
    KT_TEXT = 1
    KT_OTHER = 2    # hashable, neither int nor text (float, bytes, null, tag, simple)

cdef struct KeyInfo:
    int cls
    bint ival_ok
    int64_t ival
    Str text


cdef int kput(Ctx* c, const void* p, Py_ssize_t n) noexcept nogil:
    cdef void* q
    cdef int64_t ncap
    if c.kbuf_len + n > c.kbuf_cap:
        ncap = c.kbuf_cap * 2 if c.kbuf_cap else 1024
        while ncap < c.kbuf_len + n:
            ncap *= 2
        q = realloc(c.kbuf, ncap)
        if q == NULL:
            return -1
        c.kbuf = <uint8_t*>q
        c.kbuf_cap = ncap
    memcpy(c.kbuf + c.kbuf_len, p, n)
    c.kbuf_len += n
    return 0


cdef inline int kput_int(Ctx* c, uint8_t sign, uint64_t mag) noexcept nogil:
    # 'N', sign (1: the value is -1 - mag), magnitude: ints, bools, integral floats
    cdef uint8_t tagc = b'N'
    if kput(c, &tagc, 1) < 0 or kput(c, &sign, 1) < 0:
        return -1
    return kput(c, &mag, 8)


cdef int canon_key(Ctx* c, Rd* r, int depth, KeyInfo* ki) noexcept nogil:
    """Read a map key, validate it, and record its canonical form (Python equality)."""
    cdef Py_ssize_t start = r.pos
    cdef int64_t kstart = c.kbuf_len
    cdef KeyEnt* e
    cdef void* q
    cdef int64_t ncap
    if canon_item(c, r, depth, ki) < 0:
        return -1
    if ki.cls < 0:
        return fail(c, E_UNHASHABLE, start)
    if c.nkeys == c.keys_cap:
        ncap = c.keys_cap * 2 if c.keys_cap else 256
        q = realloc(c.keys, ncap * sizeof(KeyEnt))
        if q == NULL:
            return fail(c, E_NOMEM, start)
        c.keys = <KeyEnt*>q
        c.keys_cap = ncap
    e = &c.keys[c.nkeys]
    e.off = kstart
    e.n = c.kbuf_len - kstart
    e.h = hash_bytes(c.kbuf + kstart, e.n)
    e.pos = start
    c.nkeys += 1
    return 0


cdef int canon_item(Ctx* c, Rd* r, int depth, KeyInfo* ki) noexcept nogil:
    """One data item as a key: ki.cls = -1 when unhashable (a container)."""
    cdef Py_ssize_t start = r.pos
    cdef int mt, ai, sub, k
    cdef uint64_t arg, mag
    cdef Str s
    cdef double d
    cdef uint8_t tagc
    cdef const uint8_t* bp
    cdef Py_ssize_t i, nz
    ki.cls = KT_OTHER
    ki.ival_ok = False
    if head(c, r, &mt, &arg, &ai) < 0:
        return -1
    if mt == 0 or mt == 1:
        if ai == 31:
            return fail(c, E_INDEF_INT, start)
        ki.cls = KT_INT
        if arg <= 0x7FFFFFFFFFFFFFFFULL:
            ki.ival_ok = True
            ki.ival = <int64_t>arg if mt == 0 else -1 - <int64_t>arg
        if kput_int(c, mt, arg) < 0:
            return fail(c, E_NOMEM, start)
        return 0
    if mt == 2 or mt == 3:
        if read_string(c, r, mt, arg, ai, start, &s) < 0:
            return -1
        tagc = b'T' if mt == 3 else b'B'
        if kput(c, &tagc, 1) < 0 or kput(c, str_ptr(c, &s), s.n) < 0:
            return fail(c, E_NOMEM, start)
        if mt == 3:
            ki.cls = KT_TEXT
            ki.text = s
        return 0
    if mt == 7:
        if ai == 31:
            return fail(c, E_BREAK, start)
        if ai == 24 and arg < 32:
            return fail(c, E_SIMPLE2, start)
        if ai == 20 or ai == 21:  # False == 0, True == 1 as dict keys
            ki.cls = KT_OTHER
            return -1 if kput_int(c, 0, <uint64_t>(ai - 20)) < 0 else 0
        if ai == 25 or ai == 26 or ai == 27:
            d = half_to_double(arg) if ai == 25 else (bits_to_float(arg) if ai == 26
                                                       else bits_to_double(arg))
            if isnan(d):  # NaN keys are never equal to anything
                tagc = b'X'
                c.nan_serial += 1
                if kput(c, &tagc, 1) < 0 or kput(c, &c.nan_serial, 8) < 0:
                    return fail(c, E_NOMEM, start)
                return 0
            if d == floor(d) and d > -18446744073709551616.0 and d < 18446744073709551616.0:
                if d >= 0:
                    return -1 if kput_int(c, 0, <uint64_t>d) < 0 else 0
                return -1 if kput_int(c, 1, <uint64_t>(-d - 1.0)) < 0 else 0
            tagc = b'F'
            if kput(c, &tagc, 1) < 0 or kput(c, &d, 8) < 0:
                return fail(c, E_NOMEM, start)
            return 0
        tagc = b'S'
        if kput(c, &tagc, 1) < 0 or kput(c, &arg, 8) < 0:
            return fail(c, E_NOMEM, start)
        return 0
    if depth >= c.max_depth:
        return fail(c, E_MAX_DEPTH, start, c.max_depth)
    if mt == 6:
        if ai == 31:
            return fail(c, E_INDEF_TAG, start)
        if arg == 2 or arg == 3:
            if r.pos >= r.n:
                return fail(c, E_TRUNC, r.pos)
            if (r.p[r.pos] >> 5) != 2:
                if skip_item(c, r, depth + 1, &sub) < 0:
                    return -1
                return fail(c, E_BIGNUM, start)
            i = r.pos
            if head(c, r, &mt, &mag, &ai) < 0:
                return -1
            if read_string(c, r, 2, mag, ai, i, &s) < 0:
                return -1
            bp = str_ptr(c, &s)
            nz = 0
            while nz < s.n and bp[nz] == 0:
                nz += 1
            ki.cls = KT_INT
            if s.n - nz <= 8:
                mag = 0
                for i in range(nz, s.n):
                    mag = (mag << 8) | bp[i]
                if mag <= 0x7FFFFFFFFFFFFFFFULL:
                    ki.ival_ok = True
                    ki.ival = <int64_t>mag if arg == 2 else -1 - <int64_t>mag
                return -1 if kput_int(c, <uint8_t>(arg - 2), mag) < 0 else 0
            tagc = b'I'
            k = <int>(arg - 2)
            if kput(c, &tagc, 1) < 0 or kput(c, &k, 4) < 0 or kput(c, bp + nz, s.n - nz) < 0:
                return fail(c, E_NOMEM, start)
            return 0
        tagc = b'G'
        if kput(c, &tagc, 1) < 0 or kput(c, &arg, 8) < 0:
            return fail(c, E_NOMEM, start)
        if canon_item(c, r, depth + 1, ki) < 0:
            return -1
        if ki.cls >= 0:
            ki.cls = KT_OTHER
        return 0
    # array or map: unhashable; still has to be well-formed
    r.pos = start
    if skip_item(c, r, depth, &sub) < 0:
        return -1
    ki.cls = -1
    return 0


cdef int key_cmp(const void* a, const void* b) noexcept nogil:
    cdef uint64_t x = (<KeyEnt*>a).h, y = (<KeyEnt*>b).h
    if x < y:
        return -1
    if x > y:
        return 1
    if (<KeyEnt*>a).pos < (<KeyEnt*>b).pos:
        return -1
    return 1 if (<KeyEnt*>a).pos > (<KeyEnt*>b).pos else 0


cdef extern from "stdlib.h":
    void qsort(void* base, size_t n, size_t size, int (*cmp)(const void*, const void*) noexcept nogil) nogil


cdef int check_dups(Ctx* c, int64_t base) noexcept nogil:
    """E_DUPKEY when two keys of the map (keys[base:]) are equal."""
    cdef int64_t n = c.nkeys - base, i, j
    cdef KeyEnt* k = c.keys + base
    if n < 2:
        return 0
    if n <= 16:
        for i in range(1, n):
            for j in range(i):
                if k[i].h == k[j].h and k[i].n == k[j].n and memcmp(
                        c.kbuf + k[i].off, c.kbuf + k[j].off, k[i].n) == 0:
                    return fail(c, E_DUPKEY, k[i].pos)
        return 0
    qsort(k, n, sizeof(KeyEnt), key_cmp)
    for i in range(1, n):
        j = i - 1
        while j >= 0 and k[j].h == k[i].h:
            if k[i].n == k[j].n and memcmp(c.kbuf + k[i].off, c.kbuf + k[j].off, k[i].n) == 0:
                return fail(c, E_DUPKEY, k[i].pos)
            j -= 1
    return 0


cdef inline bint short_num(Rd* r, Num* out) noexcept nogil:
    """The common numbers inline: an int with a 0..4-byte argument, a float16, 32 or
    64. False: not that case (nothing consumed), the caller takes read_num."""
    cdef Py_ssize_t pos = r.pos, left = r.n - r.pos
    cdef uint8_t ib
    cdef uint64_t arg
    cdef uint32_t w
    cdef int k
    if UNLIKELY(left <= 0):
        return False
    ib = r.p[pos]
    if ib == 0xFB:
        if left < 9:
            return False
        memcpy(&arg, r.p + pos + 1, 8)
        out.is_int = False
        out.d = bits_to_double(bswap64(arg) if LITTLE_ENDIAN else arg)
        r.pos = pos + 9
        return True
    if ib == 0xFA:
        if left < 5:
            return False
        memcpy(&w, r.p + pos + 1, 4)
        out.is_int = False
        out.d = bits_to_float(bswap32(w) if LITTLE_ENDIAN else w)
        r.pos = pos + 5
        return True
    if ib == 0xF9:
        if left < 3:
            return False
        out.is_int = False
        out.d = half_to_double((<uint64_t>r.p[pos + 1] << 8) | r.p[pos + 2])
        r.pos = pos + 3
        return True
    if ib >= 0x40 or (ib & 0x1F) > 26:  # not a major type 0/1 head with <= 4 bytes
        return False
    k = ib & 0x1F
    if k < 24:
        arg = <uint64_t>k
        k = 0
    else:
        k = 1 << (k - 24)
        if left < 1 + k:
            return False
        arg = r.p[pos + 1]
        if k >= 2:
            arg = (arg << 8) | r.p[pos + 2]
        if k == 4:
            arg = (arg << 16) | (<uint64_t>r.p[pos + 3] << 8) | r.p[pos + 4]
    out.is_int = True
    out.i = <int64_t>arg if ib < 0x20 else -1 - <int64_t>arg
    out.d = <double>out.i
    r.pos = pos + 1 + k
    return True


cdef int read_num(Ctx* c, Rd* r, int depth, int field, Num* out) noexcept nogil:
    """A SenML number: CBOR int, float16/32/64, or bignum (tags 2/3)."""
    cdef Py_ssize_t start = r.pos
    cdef int mt, ai, sub
    cdef uint64_t arg
    cdef Str s
    cdef double d
    cdef Py_ssize_t i
    cdef const uint8_t* bp
    cdef uint64_t big, tag
    if head(c, r, &mt, &arg, &ai) < 0:
        return -1
    if mt == 7:
        if ai == 27:
            out.is_int = False
            out.d = bits_to_double(arg)
            return 0
        if ai == 26:
            out.is_int = False
            out.d = bits_to_float(arg)
            return 0
        if ai == 25:
            out.is_int = False
            out.d = half_to_double(arg)
            return 0
        if ai == 31:
            return fail(c, E_BREAK, start)
        if ai == 24 and arg < 32:
            return fail(c, E_SIMPLE2, start)
        return fail(c, E_TYPE, start, field)
    if mt == 0:
        if ai == 31:
            return fail(c, E_INDEF_INT, start)
        if arg <= 0x7FFFFFFFFFFFFFFFULL:
            out.is_int = True
            out.i = <int64_t>arg
            out.d = <double>out.i
        else:
            out.is_int = False
            out.d = <double>arg
        return 0
    if mt == 1:
        if ai == 31:
            return fail(c, E_INDEF_INT, start)
        if arg <= 0x7FFFFFFFFFFFFFFFULL:
            out.is_int = True
            out.i = -1 - <int64_t>arg
            out.d = <double>out.i
        else:
            if arg == 0xFFFFFFFFFFFFFFFFULL:
                return fail(c, E_RANGE, start, field)  # -2**64: outside the reference's range
            out.is_int = False
            out.d = -1.0 - <double>arg
        return 0
    if mt == 6 and (arg == 2 or arg == 3) and ai != 31:
        if depth >= c.max_depth:
            return fail(c, E_MAX_DEPTH, start, c.max_depth)
        if r.pos >= r.n:
            return fail(c, E_TRUNC, r.pos)
        if (r.p[r.pos] >> 5) != 2:
            if skip_item(c, r, depth + 1, &sub) < 0:
                return -1
            return fail(c, E_BIGNUM, start)
        tag = arg  # 2 positive, 3 negative (arg is the byte string's length below)
        i = r.pos
        if head(c, r, &mt, &arg, &ai) < 0:
            return -1
        if read_string(c, r, 2, arg, ai, i, &s) < 0:
            return -1
        arg = tag
        bp = str_ptr(c, &s)
        # the reference turns a bignum into an int and keeps it only within 64 bits
        big = 0
        for i in range(s.n):
            if big >> 56:
                return fail(c, E_RANGE, start, field)
            big = (big << 8) | bp[i]
        if arg == 3 and big == 0xFFFFFFFFFFFFFFFFULL:
            return fail(c, E_RANGE, start, field)
        if big <= 0x7FFFFFFFFFFFFFFFULL:
            out.is_int = True
            out.i = <int64_t>big if arg == 2 else -1 - <int64_t>big
            out.d = <double>out.i
        else:
            out.is_int = False
            out.d = <double>big if arg == 2 else -1.0 - <double>big
        return 0
    # anything else is the wrong type, but must still be well-formed CBOR
    r.pos = start
    if skip_item(c, r, depth, &sub) < 0:
        return -1
    return fail(c, E_TYPE, start, field)


cdef extern from *:
    bint __builtin_add_overflow(int64_t a, int64_t b, int64_t* res) nogil


cdef inline void num_add(Num* a, Num* b, Num* out) noexcept nogil:
    cdef int64_t s
    if a.is_int and b.is_int and not __builtin_add_overflow(a.i, b.i, &s):
        out.is_int = True
        out.i = s
        out.d = <double>s
    else:
        out.is_int = False
        out.d = (<double>a.i if a.is_int else a.d) + (<double>b.i if b.is_int else b.d)
