# Part of fast/decode.pyx (included there, not compiled on its own): the SenML resolver.
#
# One record of a pack (RFC 8428 §4.5): base fields carried to the records
# after them, the resolved name interned through the base name's cache, the
# unit, the time (relative below 2**28), the value of its kind; then the pack
# as a whole (an array of records, nothing after it).

cdef struct Pack:
    Str bn
    Num bt
    Str bu
    bint has_bu
    Num bv
    bint has_bv
    Num bs
    bint has_bs
    int64_t bver   # 0 = none seen yet
    int32_t bn_id  # node cache of bn, -1 = not looked up yet
    int32_t hint   # node cache entry to try first


cdef inline bint short_text(Rd* r, Str* out) noexcept nogil:
    """The common text field inline: a definite text string under 24 bytes, all
    ASCII (checked a word at a time when 16 bytes can be read). False: not that
    case (nothing consumed), the caller takes read_text_field's general path."""
    cdef Py_ssize_t pos = r.pos, n
    cdef uint64_t a, b
    if UNLIKELY(pos >= r.n):
        return False
    n = <Py_ssize_t>r.p[pos] - 0x60
    if n < 0 or n >= 24 or n >= r.n - pos:
        return False
    if LITTLE_ENDIAN and pos + 1 + 16 <= r.n and n <= 16:
        memcpy(&a, r.p + pos + 1, 8)
        memcpy(&b, r.p + pos + 9, 8)
        if n < 8:
            a &= (1ULL << (8 * n)) - 1
            b = 0
        elif n < 16:
            b &= (1ULL << (8 * (n - 8))) - 1
        if (a | b) & 0x8080808080808080ULL:
            return False
    elif not utf8_ok(r.p + pos + 1, n):
        return False
    out.p = r.p + pos + 1
    out.n = n
    out.spill = -1
    r.pos = pos + 1 + n
    return True


cdef int read_text_field(Ctx* c, Rd* r, int want_mt, int field, Str* out) noexcept nogil:
    cdef Py_ssize_t start = r.pos
    cdef int mt, ai, sub
    cdef uint64_t arg
    if head(c, r, &mt, &arg, &ai) < 0:
        return -1
    if mt == want_mt:
        return read_string(c, r, mt, arg, ai, start, out)
    r.pos = start
    if skip_item(c, r, 2, &sub) < 0:
        return -1
    return fail(c, E_TYPE, start, field)


cdef inline int ensure_scratch(Ctx* c, Py_ssize_t n) noexcept nogil:
    cdef void* q
    if n <= c.scratch_cap:
        return 0
    q = realloc(c.scratch, n * 2)
    if q == NULL:
        return -1
    c.scratch = <uint8_t*>q
    c.scratch_cap = n * 2
    return 0


cdef const char* LABEL_TEXT[15]
LABEL_TEXT[:] = [b"bs", b"bv", b"bu", b"bt", b"bn", b"bver", b"n", b"u", b"v", b"vs", b"vb",
                 b"s", b"t", b"ut", b"vd"]


cdef bint is_known_label(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """A JSON label of RFC 8428 Table 4 (must be an integer in SenML-CBOR)."""
    cdef int i
    cdef const char* lab
    for i in range(15):
        lab = LABEL_TEXT[i]
        if strlen(lab) == <size_t>n and memcmp(lab, p, n) == 0:
            return True
    return False


cdef int unknown_label(Ctx* c, Rd* r, KeyInfo* ki, Py_ssize_t kpos,
                       bint* has_ext, bint* est) noexcept nogil:
    """A key that is no RFC 8428 integer label (already read by canon_key): check it, skip its
    value. The extension label "est" with the value true sets `est` (the record's time is an
    estimate, fast/_common.py EST_LABEL); any other value of it is ignored, as an unknown
    label's would be."""
    cdef int sub
    cdef const uint8_t* sp
    if ki.cls == KT_INT:
        return skip_item(c, r, 2, &sub)  # an unregistered integer label: ignored
    if ki.cls == KT_TEXT:
        sp = str_ptr(c, &ki.text)
        if is_known_label(sp, ki.text.n):
            return fail(c, E_TEXT_LABEL, kpos)
        has_ext[0] = True
        if ki.text.n > 0 and sp[ki.text.n - 1] == b'_':
            # must-understand (RFC 8428 §4.4)
            return fail(c, E_MUST_UNDERSTAND, kpos)
        if (ki.text.n == 3 and sp[0] == b'e' and sp[1] == b's' and sp[2] == b't'
                and r.pos < r.n and r.p[r.pos] == 0xF5):
            est[0] = True
        return skip_item(c, r, 2, &sub)
    return fail(c, E_LABEL_TYPE, kpos)


cdef int32_t node_cache_of(Ctx* c, const uint8_t* bnp, Py_ssize_t n, bint create) noexcept nogil:
    """Id of the node cache for base name bnp[:n]; -2 when absent and not created
    (a cache is made only once a name under that bn validated: hostile input
    cannot grow it), -1 when memory ran out."""
    cdef uint64_t h = hash_bytes(bnp, n)
    cdef int32_t bid = intern_find(c.bns, bnp, n, h)
    cdef int64_t ncap, i
    cdef void* q
    if bid >= 0:
        return bid
    if not create:
        return -2
    bid = intern_add(c.bns, bnp, n, h)
    if bid < 0:
        return -1
    if bid >= c.nc_cap[0]:
        ncap = c.nc_cap[0] * 2 if c.nc_cap[0] else 256
        while ncap <= bid:
            ncap *= 2
        q = realloc(c.nc[0], ncap * sizeof(NodeCache))
        if q == NULL:
            return -1
        c.nc[0] = <NodeCache*>q
        for i in range(c.nc_cap[0], ncap):
            c.nc[0][i].e = NULL
            c.nc[0][i].n = 0
            c.nc[0][i].cap = 0
        c.nc_cap[0] = ncap
    return bid


cdef inline bint plain_record(Rd* r, uint32_t* seen, Str* n_s, Str* u_s, Num* v_n,
                              bint* vb) noexcept nogil:
    """The records a node sends after its first: {0: n, 1: u, 2: v}, {0: n, 2: v} or
    {0: n, 4: vb}, a definite map with the labels in that order, short ASCII
    text and a common number (short_text, short_num). True: read, with `seen`
    as the general loop would set it. False: nothing consumed, take that loop."""
    cdef Py_ssize_t pos0 = r.pos
    cdef uint8_t hb, lb
    if pos0 + 2 >= r.n or r.p[pos0 + 1] != 0x00:
        return False
    hb = r.p[pos0]
    if hb != 0xA3 and hb != 0xA2:
        return False
    r.pos = pos0 + 2
    if not short_text(r, n_s) or r.pos >= r.n:
        r.pos = pos0
        return False
    lb = r.p[r.pos]
    if hb == 0xA3:
        if lb != 0x01:
            r.pos = pos0
            return False
        r.pos += 1
        if not short_text(r, u_s) or r.pos >= r.n or r.p[r.pos] != 0x02:
            r.pos = pos0
            return False
        r.pos += 1
        if not short_num(r, v_n):
            r.pos = pos0
            return False
        seen[0] = (1u << F_N) | (1u << F_U) | (1u << F_V)
        return True
    if lb == 0x02:
        r.pos += 1
        if not short_num(r, v_n):
            r.pos = pos0
            return False
        seen[0] = (1u << F_N) | (1u << F_V)
        return True
    if lb == 0x04 and r.pos + 1 < r.n and (r.p[r.pos + 1] == 0xF4 or r.p[r.pos + 1] == 0xF5):
        vb[0] = r.p[r.pos + 1] == 0xF5
        r.pos += 2
        seen[0] = (1u << F_N) | (1u << F_VB)
        return True
    r.pos = pos0
    return False


cdef int decode_record(Ctx* c, Rd* r, Pack* pk, int32_t pi) noexcept nogil:
    cdef Py_ssize_t start = r.pos, kpos, npairs, j
    cdef int mt, ai, f, nvalues
    cdef uint64_t arg, karg
    cdef int kmt, kai
    cdef uint32_t seen = 0
    cdef Str n_s, u_s, vs_s, vd_s, bn_s, bu_s
    cdef Num bt_n, bv_n, bs_n, v_n, s_n, t_n, ut_n, tt
    cdef bint vb = False
    cdef int64_t bver
    cdef KeyInfo ki
    cdef int64_t kbase = c.nkeys, kbuf_base = c.kbuf_len
    cdef bint indef
    cdef Py_ssize_t nlen
    cdef uint64_t h
    cdef int32_t sid, uid
    cdef const uint8_t* bnp
    cdef const uint8_t* np_
    cdef double tval
    cdef Py_ssize_t o, nn
    cdef bint have_u
    cdef NodeCache* ncp
    cdef uint64_t ka, kb
    cdef int32_t k
    cdef void* q
    cdef bint has_ext = False
    cdef bint est = False

    if c.max_depth > 1 and plain_record(r, &seen, &n_s, &u_s, &v_n, &vb):
        pass  # the common shapes, read inline (see plain_record)
    else:
        if head(c, r, &mt, &arg, &ai) < 0:
            return -1
        if mt != 5:
            r.pos = start
            if skip_item(c, r, 1, &f) < 0:
                return -1
            return fail(c, E_NOT_MAP, start)
        if c.max_depth <= 1:
            return fail(c, E_MAX_DEPTH, start, c.max_depth)
        indef = ai == 31
        npairs = <Py_ssize_t>arg
        if not indef and arg > <uint64_t>((r.n - r.pos) // 2):
            return fail(c, E_TRUNC, start)
        j = 0
        while True:
            if indef:
                if r.pos >= r.n:
                    return fail(c, E_TRUNC, start)
                if r.p[r.pos] == 0xFF:
                    r.pos += 1
                    break
            elif j >= npairs:
                break
            j += 1
            kpos = r.pos
            f = -1
            if LIKELY(r.pos < r.n and r.p[r.pos] <= 0x08):
                f = r.p[r.pos] + 6          # fast path: labels 0..8
                r.pos += 1
            elif r.pos < r.n and r.p[r.pos] >= 0x20 and r.p[r.pos] <= 0x25:
                f = 5 - (r.p[r.pos] - 0x20)  # labels -1..-6
                r.pos += 1
            else:
                if canon_key(c, r, 2, &ki) < 0:
                    return -1
                if ki.cls == KT_INT and ki.ival_ok and ki.ival >= -6 and ki.ival <= 8:
                    f = <int>ki.ival + 6     # a long-form or bignum integer label
                    c.nkeys -= 1             # tracked by `seen` instead
                else:
                    if unknown_label(c, r, &ki, kpos, &has_ext, &est) < 0:
                        return -1
                    continue
            if seen & (1u << f):
                return fail(c, E_DUPKEY, kpos)
            seen |= 1u << f
            if f == F_N:
                if not short_text(r, &n_s) and read_text_field(c, r, 3, f, &n_s) < 0:
                    return -1
            elif f == F_V:
                if not short_num(r, &v_n) and read_num(c, r, 2, f, &v_n) < 0:
                    return -1
            elif f == F_T:
                o = r.pos
                if read_num(c, r, 2, f, &t_n) < 0:
                    return -1
                if not t_n.is_int and not isfinite(t_n.d):
                    return fail(c, E_TIME, o, f)
            elif f == F_BN:
                if not short_text(r, &bn_s) and read_text_field(c, r, 3, f, &bn_s) < 0:
                    return -1
            elif f == F_BT:
                o = r.pos
                if read_num(c, r, 2, f, &bt_n) < 0:
                    return -1
                if not bt_n.is_int and not isfinite(bt_n.d):
                    return fail(c, E_TIME, o, f)
            elif f == F_U:
                if not short_text(r, &u_s) and read_text_field(c, r, 3, f, &u_s) < 0:
                    return -1
            elif f == F_BU:
                if read_text_field(c, r, 3, f, &bu_s) < 0:
                    return -1
            elif f == F_VB:
                o = r.pos
                if r.pos < r.n and (r.p[r.pos] == 0xF4 or r.p[r.pos] == 0xF5):
                    vb = r.p[r.pos] == 0xF5
                    r.pos += 1
                else:
                    if skip_item(c, r, 2, &mt) < 0:
                        return -1
                    return fail(c, E_TYPE, o, f)
            elif f == F_VS:
                if read_text_field(c, r, 3, f, &vs_s) < 0:
                    return -1
            elif f == F_VD:
                if read_text_field(c, r, 2, f, &vd_s) < 0:
                    return -1
            elif f == F_S:
                if read_num(c, r, 2, f, &s_n) < 0:
                    return -1
            elif f == F_BV:
                if read_num(c, r, 2, f, &bv_n) < 0:
                    return -1
            elif f == F_BS:
                if read_num(c, r, 2, f, &bs_n) < 0:
                    return -1
            elif f == F_UT:
                o = r.pos
                if read_num(c, r, 2, f, &ut_n) < 0:
                    return -1
                if not ut_n.is_int and not isfinite(ut_n.d):
                    return fail(c, E_TIME, o, f)
            elif f == F_BVER:
                o = r.pos
                if read_num(c, r, 2, f, &tt) < 0:
                    return -1
                if not tt.is_int:
                    return fail(c, E_TYPE, o, f)
                if tt.i > 10 or tt.i < 1:
                    return fail(c, E_VERSION, o, <int>(tt.i if tt.i < 1000000000 and tt.i > -1000000000 else 0))
                if pk.bver != 0 and pk.bver != tt.i:
                    return fail(c, E_BVER_CHANGE, o)
                pk.bver = tt.i

    if c.nkeys - kbase >= 2 and check_dups(c, kbase) < 0:  # two or more other keys
        return -1
    c.nkeys = kbase
    c.kbuf_len = kbuf_base

    # base fields apply to this record and the ones after it
    if seen & (1u << F_BN):
        pk.bn = bn_s
        pk.bn_id = -1
        pk.hint = 0
    if seen & (1u << F_BT):
        pk.bt = bt_n
    if seen & (1u << F_BU):
        pk.bu = bu_s
        pk.has_bu = True
    if seen & (1u << F_BV):
        pk.bv = bv_n
        pk.has_bv = True
    if seen & (1u << F_BS):
        pk.bs = bs_n
        pk.has_bs = True

    nvalues = ((seen >> F_V) & 1) + ((seen >> F_VS) & 1) + ((seen >> F_VB) & 1) + ((seen >> F_VD) & 1)
    if nvalues > 1:
        return fail(c, E_MULTI_VALUE, start)
    if nvalues == 0 and not (seen & (1u << F_S)):
        if has_ext or seen & ((1u << F_N) | (1u << F_U) | (1u << F_T) | (1u << F_UT)):
            return fail(c, E_NO_VALUE, start)
        return 0  # only base fields (or nothing): no record

    if UNLIKELY(c.nrec >= c.cap):
        return fail(c, E_NOMEM, start)

    # resolved name = bn + n, interned; first through the node cache of bn
    bnp = str_ptr(c, &pk.bn)
    if seen & (1u << F_N):
        np_ = str_ptr(c, &n_s)
        nn = n_s.n
    else:
        np_ = bnp
        nn = 0
    if pk.bn_id == -1:
        pk.bn_id = node_cache_of(c, bnp, pk.bn.n, False)
    if nn == 0:
        ka = 0
        kb = 0
    elif nn <= 16:
        if n_s.spill >= 0:
            short_key(np_, nn, c.spill + c.spill_len, &ka, &kb)
        else:
            short_key(np_, nn, r.p + r.n, &ka, &kb)
    else:
        ka = hash_bytes(np_, nn)
        kb = 0
    sid = -1
    ncp = &c.nc[0][pk.bn_id] if pk.bn_id >= 0 else NULL
    # packs list a node's sensors in the same order every time: try the entry
    # after the last match first, then the rest
    for j in range(ncp.n if ncp != NULL else 0):
        k = pk.hint + <int32_t>j
        if k >= ncp.n:
            k -= ncp.n
        if ncp.e[k].a == ka and ncp.e[k].b == kb and ncp.e[k].nlen == nn and (
                nn <= 16 or bytes_eq(<const uint8_t*>c.names.arena + c.names.off[ncp.e[k].sid]
                                     + pk.bn.n, np_, nn)):
            sid = ncp.e[k].sid
            pk.hint = k + 1
            break
    if sid < 0:
        nlen = pk.bn.n + nn
        if nlen == 0:
            return fail(c, E_NO_NAME, start)
        if ensure_scratch(c, nlen) < 0:
            return fail(c, E_NOMEM, start)
        if pk.bn.n:
            memcpy(c.scratch, bnp, pk.bn.n)
        if nn:
            memcpy(c.scratch + pk.bn.n, np_, nn)
        h = hash_bytes(c.scratch, nlen)
        sid = intern_find(c.names, c.scratch, nlen, h)
        if sid < 0:
            if not name_ok(c.scratch, nlen):
                return fail(c, E_BAD_NAME, start)
            sid = intern_add(c.names, c.scratch, nlen, h)
            if sid < 0:
                return fail(c, E_NOMEM, start)
        if ncp == NULL:
            pk.bn_id = node_cache_of(c, bnp, pk.bn.n, True)
            if pk.bn_id < 0:
                return fail(c, E_NOMEM, start)
            ncp = &c.nc[0][pk.bn_id]
        if ncp.n < NODE_CACHE_MAX:
            if ncp.n == ncp.cap:
                k = ncp.cap * 2 if ncp.cap else 8
                q = realloc(ncp.e, k * sizeof(NEnt))
                if q == NULL:
                    return fail(c, E_NOMEM, start)
                ncp.e = <NEnt*>q
                ncp.cap = k
            ncp.e[ncp.n].a = ka
            ncp.e[ncp.n].b = kb
            ncp.e[ncp.n].sid = sid
            ncp.e[ncp.n].nlen = <int32_t>nn
            ncp.n += 1
            pk.hint = ncp.n

    # unit
    uid = 0
    have_u = False
    if seen & (1u << F_U):
        have_u = True
    elif pk.has_bu:
        u_s = pk.bu
        have_u = True
    if have_u:
        np_ = str_ptr(c, &u_s)
        k = -1
        if u_s.n <= 16:  # a small per-batch cache of unit strings -> ids
            if u_s.spill >= 0:
                short_key(np_, u_s.n, c.spill + c.spill_len, &ka, &kb)
            else:
                short_key(np_, u_s.n, r.p + r.n, &ka, &kb)
            k = <int32_t>((ka ^ (ka >> 29) ^ kb ^ <uint64_t>u_s.n) & (UNIT_CACHE - 1))
            if c.uc_len[k] == u_s.n and c.uc_a[k] == ka and c.uc_b[k] == kb:
                uid = c.uc_id[k]
        if uid == 0:
            h = hash_bytes(np_, u_s.n)
            uid = intern_find(c.units, np_, u_s.n, h)
            if uid < 0:
                uid = intern_add(c.units, np_, u_s.n, h)
                if uid < 0:
                    return fail(c, E_NOMEM, start)
            uid += 1
            if k >= 0:
                c.uc_len[k] = u_s.n
                c.uc_a[k] = ka
                c.uc_b[k] = kb
                c.uc_id[k] = uid

    # time: bt + t; below 2**28 it is relative to now
    if seen & (1u << F_T):
        num_add(&pk.bt, &t_n, &tt)
    else:
        tt = pk.bt
    if tt.is_int:
        tval = <double>tt.i
        if tt.i < 268435456:
            tval = c.now + tval
    else:
        tval = tt.d
        if tval < 268435456.0:
            tval = c.now + tval

    o = c.nrec
    c.o_series[o] = sid
    c.o_time[o] = tval
    c.o_unit[o] = uid
    c.o_payload[o] = pi
    c.o_est[o] = est
    c.o_ref_off[o] = -1
    c.o_ref_len[o] = -1
    if seen & (1u << F_S):
        if pk.has_bs:
            num_add(&pk.bs, &s_n, &tt)
        else:
            tt = s_n
        c.o_sum[o] = <double>tt.i if tt.is_int else tt.d
        c.o_has_sum[o] = 1
    else:
        c.o_sum[o] = NAN
        c.o_has_sum[o] = 0
    if seen & (1u << F_V):
        if pk.has_bv:
            num_add(&pk.bv, &v_n, &tt)
        else:
            tt = v_n
        c.o_value[o] = <double>tt.i if tt.is_int else tt.d
        c.o_kind[o] = KIND_NUM
    elif seen & (1u << F_VB):
        c.o_value[o] = 1.0 if vb else 0.0
        c.o_kind[o] = KIND_BOOL
    elif seen & (1u << F_VS):
        c.o_value[o] = NAN
        c.o_kind[o] = KIND_STR
        c.o_ref_off[o] = <int32_t>(vs_s.p - r.p) if vs_s.spill < 0 else <int32_t>(-vs_s.spill - 2)
        c.o_ref_len[o] = <int32_t>vs_s.n
    elif seen & (1u << F_VD):
        c.o_value[o] = NAN
        c.o_kind[o] = KIND_DATA
        c.o_ref_off[o] = <int32_t>(vd_s.p - r.p) if vd_s.spill < 0 else <int32_t>(-vd_s.spill - 2)
        c.o_ref_len[o] = <int32_t>vd_s.n
    else:
        c.o_value[o] = c.o_sum[o]
        c.o_kind[o] = KIND_SUM
    c.nrec = o + 1
    return 0


cdef int decode_payload(Ctx* c, const uint8_t* p, Py_ssize_t n, int32_t pi) noexcept nogil:
    cdef Rd r
    cdef Pack pk
    cdef int mt, ai, sub
    cdef uint64_t arg, i
    cdef bint indef
    cdef int64_t nitems = 0
    r.p = p
    r.n = n
    r.pos = 0
    if n > c.max_bytes:
        return fail(c, E_MAX_BYTES, 0, <int>min(n, 0x7FFFFFFF))
    if n == 0:
        return fail(c, E_EMPTY, 0)
    pk.bn.p = p
    pk.bn.n = 0
    pk.bn.spill = -1
    pk.bt.is_int = True
    pk.bt.i = 0
    pk.bt.d = 0.0
    pk.has_bu = False
    pk.has_bv = False
    pk.has_bs = False
    pk.bver = 0
    pk.bn_id = -1
    pk.hint = 0
    if head(c, &r, &mt, &arg, &ai) < 0:
        return -1
    if mt != 4:
        r.pos = 0
        if skip_item(c, &r, 0, &sub) < 0:
            return -1
        if r.pos != r.n:
            return fail(c, E_TRAILING, r.pos, <int>(r.n - r.pos))
        return fail(c, E_NOT_ARRAY, 0)
    if c.max_depth <= 0:
        return fail(c, E_MAX_DEPTH, 0, c.max_depth)
    indef = ai == 31
    if not indef:
        if arg > <uint64_t>(r.n - r.pos):
            return fail(c, E_TRUNC, 0)
        if arg > <uint64_t>c.max_records:
            return fail(c, E_MAX_RECORDS, 0, c.max_records)
        for i in range(arg):
            if decode_record(c, &r, &pk, pi) < 0:
                return -1
    else:
        while True:
            if r.pos >= r.n:
                return fail(c, E_TRUNC, 0)
            if r.p[r.pos] == 0xFF:
                r.pos += 1
                break
            nitems += 1
            if nitems > c.max_records:
                return fail(c, E_MAX_RECORDS, 0, c.max_records)
            if decode_record(c, &r, &pk, pi) < 0:
                return -1
    if r.pos != r.n:
        return fail(c, E_TRAILING, r.pos, <int>(r.n - r.pos))
    return 0
