# Mirrors protocol/senml.py (decode + resolve, RFC 8428) with the decoder half of protocol/cbor.py.
"""SenML-CBOR batch decoder: many payloads in, one columnar Batch out.

The hot loop runs without the GIL and creates no Python object per record:
it walks the CBOR bytes, resolves base fields (RFC 8428 §4.5), interns the
resolved name in a C hash table (SeriesTable) and writes straight into the
`array.array` columns of the Batch. Python objects are made only per
payload that fails (its DecodeError) and when a caller asks for a name.

Validation follows the reference (protocol/cbor.py + protocol/senml.py) so
both twins accept and reject the same payloads: well-formed CBOR (UTF-8 text,
no duplicate keys, limits), a pack is an array of maps, each field of its
type, at most one value field, a name made of RFC 8428 characters, bver no
newer than 10, no unknown must-understand label (ending in '_').

A SeriesTable must not be used by two decoding threads at once (the hub
decodes on one thread; the nogil section lets the event loop run meanwhile).
"""

from cpython.array cimport array, clone, resize
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from libc.math cimport INFINITY, NAN, floor, isfinite, isnan
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, strlen

from smartpark.fast._common import Batch as _Batch
from smartpark.fast._common import (
    DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, DEFAULT_MAX_RECORDS, split_series,
)
from smartpark.protocol.errors import CBORDecodeError, LimitError, SenMLError

cdef extern from *:
    """
    #define SP_LIKELY(x) __builtin_expect(!!(x), 1)
    #define SP_UNLIKELY(x) __builtin_expect(!!(x), 0)
    #define SP_LE (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
    """
    const bint LITTLE_ENDIAN "SP_LE"
    bint LIKELY "SP_LIKELY"(bint) noexcept nogil
    bint UNLIKELY "SP_UNLIKELY"(bint) noexcept nogil
    uint64_t bswap64 "__builtin_bswap64"(uint64_t) noexcept nogil
    uint32_t bswap32 "__builtin_bswap32"(uint32_t) noexcept nogil

# ------------------------------------------------------------------ intern table

cdef struct Intern:
    int32_t* slots      # open addressing, -1 = empty
    uint64_t mask
    uint64_t* hashes    # per id
    int64_t* off        # per id, into arena
    int32_t* length     # per id
    char* arena
    int64_t arena_len
    int64_t arena_cap
    int32_t n
    int32_t cap


cdef inline uint64_t hash_bytes(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = 0x9E3779B97F4A7C15ULL ^ (<uint64_t>n * 0xFF51AFD7ED558CCDULL)
    cdef uint64_t w
    cdef uint32_t w4
    cdef Py_ssize_t i = 0, j
    while i + 8 <= n:
        memcpy(&w, p + i, 8)
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL
        h ^= h >> 29
        i += 8
    if i < n:
        # tail without a variable-size memcpy (a call and a store-forwarding stall)
        w = 0
        j = 0
        if n - i >= 4:
            memcpy(&w4, p + i, 4)
            w = w4
            j = 4
        while i + j < n:
            w |= (<uint64_t>p[i + j]) << (8 * j)
            j += 1
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL
        h ^= h >> 29
    h ^= h >> 32
    return h


cdef int intern_init(Intern* t) noexcept nogil:
    t.mask = 1023
    t.slots = <int32_t*>malloc(1024 * sizeof(int32_t))
    t.cap = 256
    t.hashes = <uint64_t*>malloc(t.cap * sizeof(uint64_t))
    t.off = <int64_t*>malloc(t.cap * sizeof(int64_t))
    t.length = <int32_t*>malloc(t.cap * sizeof(int32_t))
    t.arena_cap = 8192
    t.arena = <char*>malloc(t.arena_cap)
    t.arena_len = 0
    t.n = 0
    if t.slots == NULL or t.hashes == NULL or t.off == NULL or t.length == NULL or t.arena == NULL:
        return -1
    cdef uint64_t i
    for i in range(1024):
        t.slots[i] = -1
    return 0


cdef void intern_free(Intern* t) noexcept nogil:
    free(t.slots)
    free(t.hashes)
    free(t.off)
    free(t.length)
    free(t.arena)
    t.slots = NULL
    t.hashes = NULL
    t.off = NULL
    t.length = NULL
    t.arena = NULL


cdef inline bint bytes_eq(const uint8_t* a, const uint8_t* b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if n > 24:
        return memcmp(a, b, n) == 0
    for i in range(n):
        if a[i] != b[i]:
            return False
    return True


cdef inline int32_t intern_find(Intern* t, const uint8_t* p, Py_ssize_t n, uint64_t h) noexcept nogil:
    cdef uint64_t i = h & t.mask
    cdef int32_t sid
    while True:
        sid = t.slots[i]
        if sid < 0:
            return -1
        if t.hashes[sid] == h and t.length[sid] == n and bytes_eq(
                <const uint8_t*>t.arena + t.off[sid], p, n):
            return sid
        i = (i + 1) & t.mask


cdef int32_t intern_add(Intern* t, const uint8_t* p, Py_ssize_t n, uint64_t h) noexcept nogil:
    """Add a name known to be absent; its id, or -1 when memory ran out."""
    cdef uint64_t i, nslots
    cdef int32_t* nslot
    cdef int32_t sid
    cdef void* q
    if t.n >= 0x7FFFFFF0:
        return -1
    if t.n + 1 > t.cap:
        t.cap *= 2
        q = realloc(t.hashes, t.cap * sizeof(uint64_t))
        if q == NULL:
            return -1
        t.hashes = <uint64_t*>q
        q = realloc(t.off, t.cap * sizeof(int64_t))
        if q == NULL:
            return -1
        t.off = <int64_t*>q
        q = realloc(t.length, t.cap * sizeof(int32_t))
        if q == NULL:
            return -1
        t.length = <int32_t*>q
    while t.arena_len + n > t.arena_cap:
        q = realloc(t.arena, t.arena_cap * 2)
        if q == NULL:
            return -1
        t.arena = <char*>q
        t.arena_cap *= 2
    if <uint64_t>(t.n + 1) * 2 > t.mask + 1:
        nslots = (t.mask + 1) * 2
        nslot = <int32_t*>malloc(nslots * sizeof(int32_t))
        if nslot == NULL:
            return -1
        for i in range(nslots):
            nslot[i] = -1
        for sid in range(t.n):
            i = t.hashes[sid] & (nslots - 1)
            while nslot[i] >= 0:
                i = (i + 1) & (nslots - 1)
            nslot[i] = sid
        free(t.slots)
        t.slots = nslot
        t.mask = nslots - 1
    sid = t.n
    memcpy(t.arena + t.arena_len, p, n)
    t.off[sid] = t.arena_len
    t.length[sid] = <int32_t>n
    t.hashes[sid] = h
    t.arena_len += n
    t.n += 1
    i = h & t.mask
    while t.slots[i] >= 0:
        i = (i + 1) & t.mask
    t.slots[i] = sid
    return sid


cdef inline bint name_char_ok(uint8_t c) noexcept nogil:
    return ((c >= b'a' and c <= b'z') or (c >= b'A' and c <= b'Z') or (c >= b'0' and c <= b'9')
            or c == b'-' or c == b':' or c == b'.' or c == b'/' or c == b'_')


cdef inline bint name_ok(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """RFC 8428 §4.5.1: [A-Za-z0-9-:./_]+, starting with a letter or digit."""
    cdef Py_ssize_t i
    if n <= 0:
        return False
    cdef uint8_t c = p[0]
    if not ((c >= b'a' and c <= b'z') or (c >= b'A' and c <= b'Z') or (c >= b'0' and c <= b'9')):
        return False
    for i in range(1, n):
        if not name_char_ok(p[i]):
            return False
    return True


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


cdef struct NEnt:         # one sensor under a base name
    uint64_t a              # n <= 16 bytes: n itself, zero-padded, in two words;
    uint64_t b              # longer n: a = hash of n, b = 0 (then compared in full)
    int32_t sid
    int32_t nlen


cdef inline void short_key(const uint8_t* p, Py_ssize_t n, const uint8_t* end,
                           uint64_t* a, uint64_t* b) noexcept nogil:
    """n <= 16 bytes as two zero-padded words (without reading past `end`)."""
    cdef Py_ssize_t i
    if LITTLE_ENDIAN and p + 16 <= end:
        memcpy(a, p, 8)
        memcpy(b, p + 8, 8)
        if n < 8:
            a[0] &= (1ULL << (8 * n)) - 1
            b[0] = 0
        elif n < 16:
            b[0] &= (1ULL << (8 * (n - 8))) - 1
        return
    a[0] = 0
    b[0] = 0
    for i in range(n):
        if i < 8:
            a[0] |= (<uint64_t>p[i]) << (8 * i)
        else:
            b[0] |= (<uint64_t>p[i]) << (8 * (i - 8))


cdef struct NodeCache:    # per distinct bn: the names seen under it (bn + n -> sid)
    NEnt* e
    int32_t n
    int32_t cap


cdef enum:
    NODE_CACHE_MAX = 64
    UNIT_CACHE = 16


cdef int64_t _intern_bytes(Intern* t) noexcept:
    return (t.mask + 1) * 4 + t.cap * (8 + 8 + 4) + t.arena_cap


cdef class SeriesTable:
    """Names <-> series ids and units <-> unit ids, stable for the table's life.

    Series ids are dense from 0, unit ids from 1 (0 = no unit). The names live
    in C memory; Python strings are made only by the accessors.
    """

    cdef Intern names
    cdef Intern units
    cdef Intern bns           # distinct base names, keys of the node caches
    cdef NodeCache* nc
    cdef int64_t nc_cap
    cdef bint busy            # a decode is using the table (without the GIL)

    def __cinit__(self):
        self.nc = NULL
        self.nc_cap = 0
        self.busy = False
        if (intern_init(&self.names) < 0 or intern_init(&self.units) < 0
                or intern_init(&self.bns) < 0):
            raise MemoryError()

    def __dealloc__(self):
        cdef int64_t i
        intern_free(&self.names)
        intern_free(&self.units)
        intern_free(&self.bns)
        for i in range(self.nc_cap):
            free(self.nc[i].e)
        free(self.nc)

    def __len__(self):
        return self.names.n

    cdef int _check(self) except -1:
        if self.busy:
            raise RuntimeError("this SeriesTable is being decoded into by another thread")
        return 0

    def __repr__(self):
        return "<SeriesTable %d series, %d units>" % (self.names.n, self.units.n)

    cdef str _get(self, Intern* t, int32_t i):
        return (t.arena + t.off[i])[:t.length[i]].decode("utf-8")

    def name(self, int sid):
        """The resolved SenML name of series sid."""
        self._check()
        if sid < 0 or sid >= self.names.n:
            raise IndexError("no series %d" % sid)
        return self._get(&self.names, sid)

    def node(self, int sid):
        return split_series(self.name(sid))[0]

    def sensor(self, int sid):
        return split_series(self.name(sid))[1]

    def unit(self, int uid):
        """The unit string of unit id uid; None for 0 (no unit)."""
        self._check()
        if uid == 0:
            return None
        if uid < 0 or uid > self.units.n:
            raise IndexError("no unit %d" % uid)
        return self._get(&self.units, uid - 1)

    def lookup(self, name):
        """Series id of a resolved name, or -1."""
        self._check()
        cdef bytes raw = name.encode("utf-8")
        cdef const uint8_t* p = <const uint8_t*><char*>raw
        return intern_find(&self.names, p, len(raw), hash_bytes(p, len(raw)))

    def intern(self, name):
        """Series id of a resolved name, adding it (validated) when new."""
        self._check()
        cdef bytes raw = name.encode("utf-8")
        cdef uint64_t h = hash_bytes(<const uint8_t*><char*>raw, len(raw))
        cdef int32_t sid = intern_find(&self.names, <const uint8_t*><char*>raw, len(raw), h)
        if sid >= 0:
            return sid
        if not name_ok(<const uint8_t*><char*>raw, len(raw)):
            raise SenMLError("invalid name %r (RFC 8428 §4.5.1 characters)" % name)
        sid = intern_add(&self.names, <const uint8_t*><char*>raw, len(raw), h)
        if sid < 0:
            raise MemoryError()
        return sid

    def unit_id(self, u):
        """Unit id of unit string u (None -> 0), adding it when new."""
        self._check()
        if u is None:
            return 0
        cdef bytes raw = u.encode("utf-8")
        cdef uint64_t h = hash_bytes(<const uint8_t*><char*>raw, len(raw))
        cdef int32_t uid = intern_find(&self.units, <const uint8_t*><char*>raw, len(raw), h)
        if uid < 0:
            uid = intern_add(&self.units, <const uint8_t*><char*>raw, len(raw), h)
            if uid < 0:
                raise MemoryError()
        return uid + 1

    def names_list(self):
        self._check()
        return [self._get(&self.names, i) for i in range(self.names.n)]

    def memory_bytes(self):
        """C memory held by the table (names, units, base-name caches)."""
        self._check()
        cdef int64_t i, total = self.nc_cap * sizeof(NodeCache)
        for i in range(self.nc_cap):
            total += self.nc[i].cap * sizeof(NEnt)
        return (_intern_bytes(&self.names) + _intern_bytes(&self.units)
                + _intern_bytes(&self.bns) + total)


# ------------------------------------------------------------------ decoder state

cdef enum:
    E_OK = 0
    # CBOR well-formedness (CBORDecodeError)
    E_TRUNC = 1
    E_RESERVED = 2
    E_INDEF_INT = 3
    E_BAD_CHUNK = 4
    E_UTF8 = 5
    E_BREAK = 6
    E_SIMPLE2 = 7
    E_TRAILING = 8
    E_BIGNUM = 9
    E_DUPKEY = 10
    E_UNHASHABLE = 11
    E_INDEF_TAG = 12
    # limits (LimitError)
    E_MAX_BYTES = 20
    E_MAX_RECORDS = 21
    E_MAX_DEPTH = 22
    E_NOMEM = 23
    # SenML (SenMLError)
    E_NOT_ARRAY = 30
    E_NOT_MAP = 31
    E_TYPE = 32
    E_MULTI_VALUE = 33
    E_NO_VALUE = 34
    E_NO_NAME = 35
    E_BAD_NAME = 36
    E_VERSION = 37
    E_MUST_UNDERSTAND = 38
    E_LABEL_TYPE = 39
    E_EMPTY = 40
    E_RANGE = 41
    E_TIME = 42
    E_TEXT_LABEL = 43
    E_BVER_CHANGE = 44

# field slots, indexed by CBOR label + 6 (labels -6..8)
cdef enum:
    F_BS = 0      # -6
    F_BV = 1      # -5
    F_BU = 2      # -4
    F_BT = 3      # -3
    F_BN = 4      # -2
    F_BVER = 5    # -1
    F_N = 6       # 0
    F_U = 7       # 1
    F_V = 8       # 2
    F_VS = 9      # 3
    F_VB = 10     # 4
    F_S = 11      # 5
    F_T = 12      # 6
    F_UT = 13     # 7
    F_VD = 14     # 8

_LABEL_NAMES = ("bs", "bv", "bu", "bt", "bn", "bver", "n", "u", "v", "vs", "vb", "s", "t",
                "ut", "vd")

cdef struct Num:
    int64_t i
    double d
    bint is_int


cdef struct Str:
    const uint8_t* p
    Py_ssize_t n
    int64_t spill   # >= 0: chunked string copied to the spill buffer at this offset


cdef struct Rd:
    const uint8_t* p
    Py_ssize_t n
    Py_ssize_t pos


cdef struct KeyEnt:
    uint64_t h
    int64_t off
    int64_t n
    Py_ssize_t pos


cdef struct Ctx:
    # output columns (array.array data) and their capacity
    int32_t* o_series
    double* o_time
    double* o_value
    uint8_t* o_kind
    int32_t* o_unit
    double* o_sum
    uint8_t* o_has_sum
    int32_t* o_payload
    int32_t* o_ref_off
    int32_t* o_ref_len
    Py_ssize_t cap
    Py_ssize_t nrec
    # per payload
    uint8_t* ok
    int32_t* first
    int32_t* count
    int32_t* err_code
    int64_t* err_off
    int32_t* err_detail
    # tables, limits, time
    Intern* names
    Intern* units
    Intern* bns
    NodeCache** nc
    int64_t* nc_cap
    double now
    int64_t max_records
    int64_t max_bytes
    int32_t max_depth
    # scratch for resolved names and chunked strings
    uint8_t* scratch
    Py_ssize_t scratch_cap
    uint8_t* spill
    int64_t spill_len
    int64_t spill_cap
    # current error
    int32_t err
    int64_t eoff
    int32_t edetail
    # unit cache (per batch): short unit strings -> unit ids
    Py_ssize_t uc_len[UNIT_CACHE]
    uint64_t uc_a[UNIT_CACHE]
    uint64_t uc_b[UNIT_CACHE]
    int32_t uc_id[UNIT_CACHE]
    # canonical map keys (duplicate detection as Python dict keys compare)
    uint8_t* kbuf
    int64_t kbuf_len
    int64_t kbuf_cap
    KeyEnt* keys
    int64_t nkeys
    int64_t keys_cap
    uint64_t nan_serial


cdef inline int fail(Ctx* c, int code, Py_ssize_t off, int detail=0) noexcept nogil:
    c.err = code
    c.eoff = off
    c.edetail = detail
    return -1


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
                       bint* has_ext) noexcept nogil:
    """A key that is no RFC 8428 integer label (already read by canon_key): check it, skip its value."""
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
                    if unknown_label(c, r, &ki, kpos, &has_ext) < 0:
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
        c.o_kind[o] = 0
    elif seen & (1u << F_VB):
        c.o_value[o] = 1.0 if vb else 0.0
        c.o_kind[o] = 1
    elif seen & (1u << F_VS):
        c.o_value[o] = NAN
        c.o_kind[o] = 2
        c.o_ref_off[o] = <int32_t>(vs_s.p - r.p) if vs_s.spill < 0 else <int32_t>(-vs_s.spill - 2)
        c.o_ref_len[o] = <int32_t>vs_s.n
    elif seen & (1u << F_VD):
        c.o_value[o] = NAN
        c.o_kind[o] = 3
        c.o_ref_off[o] = <int32_t>(vd_s.p - r.p) if vd_s.spill < 0 else <int32_t>(-vd_s.spill - 2)
        c.o_ref_len[o] = <int32_t>vd_s.n
    else:
        c.o_value[o] = c.o_sum[o]
        c.o_kind[o] = 4
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


cdef dict _MESSAGES = {
    E_TRUNC: (CBORDecodeError, "truncated CBOR data item"),
    E_RESERVED: (CBORDecodeError, "reserved additional information %d"),
    E_INDEF_INT: (CBORDecodeError, "indefinite length on an integer"),
    E_BAD_CHUNK: (CBORDecodeError, "bad chunk in indefinite-length string"),
    E_UTF8: (CBORDecodeError, "invalid UTF-8 in text string"),
    E_BREAK: (CBORDecodeError, "unexpected break"),
    E_SIMPLE2: (CBORDecodeError, "simple value %d in two-byte form"),
    E_TRAILING: (CBORDecodeError, "%d trailing bytes after the data item"),
    E_BIGNUM: (CBORDecodeError, "bignum tag needs a byte string"),
    E_DUPKEY: (CBORDecodeError, "duplicate map key"),
    E_UNHASHABLE: (CBORDecodeError, "unhashable map key"),
    E_INDEF_TAG: (CBORDecodeError, "indefinite length on a tag"),
    E_MAX_BYTES: (LimitError, "payload of %d bytes exceeds max_bytes"),
    E_MAX_RECORDS: (LimitError, "pack has more than max_records=%d records"),
    E_MAX_DEPTH: (LimitError, "nesting deeper than max_depth=%d"),
    E_NOMEM: (LimitError, "out of memory while decoding"),
    E_NOT_ARRAY: (SenMLError, "a SenML pack must be an array"),
    E_NOT_MAP: (SenMLError, "a SenML record must be a map"),
    E_TYPE: (SenMLError, "wrong type for field %r"),
    E_MULTI_VALUE: (SenMLError, "record has more than one value field"),
    E_NO_VALUE: (SenMLError, "record has no value and no sum"),
    E_NO_NAME: (SenMLError, "record has no name (no bn and no n)"),
    E_BAD_NAME: (SenMLError, "invalid name (RFC 8428 §4.5.1 characters)"),
    E_VERSION: (SenMLError, "unsupported SenML version %d (bver, this decoder knows 10)"),
    E_MUST_UNDERSTAND: (SenMLError, "unknown must-understand label (ends with '_')"),
    E_LABEL_TYPE: (SenMLError, "a label must be an integer or a text string"),
    E_EMPTY: (CBORDecodeError, "empty payload"),
    E_RANGE: (SenMLError, "%r is out of range (integers stay within 64 bits)"),
    E_TIME: (SenMLError, "%r is not a finite time"),
    E_TEXT_LABEL: (SenMLError, "a RFC 8428 label must be its integer code in SenML-CBOR"),
    E_BVER_CHANGE: (SenMLError, "bver changes within the pack"),
}


cdef object make_error(int code, int64_t off, int detail):
    cls, text = _MESSAGES[code]
    if "%r" in text:
        text = text % (_LABEL_NAMES[detail],)
    elif "%d" in text:
        text = text % detail
    return cls(text, off)


cdef inline Py_ssize_t _records_bound(const uint8_t* p, Py_ssize_t n,
                                      Py_ssize_t max_records) noexcept:
    """Most records a payload can yield: its declared array length when it has
    one, never more than a record per 3 bytes (map head, label, value)."""
    cdef Py_ssize_t bound = n // 3 + 1, declared = bound
    if n >= 1 and 0x80 <= p[0] <= 0x97:
        declared = p[0] & 0x1F
    elif n >= 2 and p[0] == 0x98:
        declared = p[1]
    elif n >= 3 and p[0] == 0x99:
        declared = (p[1] << 8) | p[2]
    return min(bound, declared, max_records)


cdef SeriesTable _default_table = SeriesTable()
DEFAULT_TABLE = _default_table

cdef array _tmpl_i = array("i")
cdef array _tmpl_d = array("d")
cdef array _tmpl_B = array("B")
cdef array _tmpl_q = array("q")


def decode_batch(payloads, double now, SeriesTable table=None, *,
                 Py_ssize_t max_records=DEFAULT_MAX_RECORDS,
                 Py_ssize_t max_bytes=DEFAULT_MAX_BYTES, int max_depth=DEFAULT_MAX_DEPTH):
    """Decode SenML-CBOR payloads (a sequence of bytes-like) into one Batch."""
    if table is None:
        table = _default_table
    cdef tuple ptuple = tuple(payloads)
    payloads = ptuple
    cdef Py_ssize_t npay = len(payloads), k, cap = 0, ln
    cdef Py_buffer* bufs = <Py_buffer*>malloc((npay if npay else 1) * sizeof(Py_buffer))
    cdef uint8_t* held = <uint8_t*>malloc(npay if npay else 1)
    if bufs == NULL or held == NULL:
        free(bufs)
        free(held)
        raise MemoryError()
    cdef Py_ssize_t got = 0
    cdef Ctx c
    c.scratch = NULL
    c.spill = NULL
    c.kbuf = NULL
    c.keys = NULL
    # not Batch.__init__: it would make 13 empty arrays only to replace them
    batch = _Batch.__new__(_Batch)
    batch.table = table
    batch.payloads = payloads
    batch.n_payloads = npay
    batch.spill = b""
    try:
        for k in range(npay):
            item = ptuple[k]
            if PyBytes_CheckExact(item):
                # bytes are immutable and the tuple keeps them alive: no buffer to hold
                bufs[k].buf = PyBytes_AS_STRING(item)
                bufs[k].len = PyBytes_GET_SIZE(item)
                held[k] = 0
            else:
                try:
                    PyObject_GetBuffer(item, &bufs[k], PyBUF_SIMPLE)
                except TypeError:
                    raise TypeError("payload %d is not bytes-like (%s)"
                                    % (k, type(item).__name__)) from None
                held[k] = 1
            got += 1
            ln = bufs[k].len
            if ln <= max_bytes:
                cap += _records_bound(<const uint8_t*>bufs[k].buf, ln, max_records)
        series = clone(_tmpl_i, cap, False)
        time = clone(_tmpl_d, cap, False)
        value = clone(_tmpl_d, cap, False)
        kind = clone(_tmpl_B, cap, False)
        unit = clone(_tmpl_i, cap, False)
        sums = clone(_tmpl_d, cap, False)
        has_sum = clone(_tmpl_B, cap, False)
        payload = clone(_tmpl_i, cap, False)
        ref_off = clone(_tmpl_i, cap, False)
        ref_len = clone(_tmpl_i, cap, False)
        ok = clone(_tmpl_B, npay, False)
        first = clone(_tmpl_i, npay, False)
        count = clone(_tmpl_i, npay, False)
        err_code = clone(_tmpl_i, npay, False)
        err_off = clone(_tmpl_q, npay, False)  # decode_all sets every entry
        err_detail = clone(_tmpl_i, npay, False)
        c.o_series = <int32_t*>(<array>series).data.as_ints
        c.o_time = (<array>time).data.as_doubles
        c.o_value = (<array>value).data.as_doubles
        c.o_kind = (<array>kind).data.as_uchars
        c.o_unit = <int32_t*>(<array>unit).data.as_ints
        c.o_sum = (<array>sums).data.as_doubles
        c.o_has_sum = (<array>has_sum).data.as_uchars
        c.o_payload = <int32_t*>(<array>payload).data.as_ints
        c.o_ref_off = <int32_t*>(<array>ref_off).data.as_ints
        c.o_ref_len = <int32_t*>(<array>ref_len).data.as_ints
        c.cap = cap
        c.nrec = 0
        c.ok = (<array>ok).data.as_uchars
        c.first = <int32_t*>(<array>first).data.as_ints
        c.count = <int32_t*>(<array>count).data.as_ints
        c.err_code = <int32_t*>(<array>err_code).data.as_ints
        c.err_off = <int64_t*>(<array>err_off).data.as_longlongs
        c.err_detail = <int32_t*>(<array>err_detail).data.as_ints
        c.names = &table.names
        c.units = &table.units
        c.bns = &table.bns
        c.nc = &table.nc
        c.nc_cap = &table.nc_cap
        c.now = now
        c.max_records = max_records
        c.max_bytes = max_bytes
        c.max_depth = max_depth
        c.scratch = NULL
        c.scratch_cap = 0
        c.spill = NULL
        c.spill_len = 0
        c.spill_cap = 0
        c.kbuf = NULL
        c.kbuf_len = 0
        c.kbuf_cap = 0
        c.keys = NULL
        c.nkeys = 0
        c.keys_cap = 0
        c.nan_serial = 0
        for k in range(UNIT_CACHE):
            c.uc_len[k] = -1
        if table.busy:
            raise RuntimeError("this SeriesTable is being decoded into by another thread")
        table.busy = True
        try:
            with nogil:
                decode_all(&c, bufs, npay)
        finally:
            table.busy = False
        n = c.nrec
        resize(series, n)
        resize(time, n)
        resize(value, n)
        resize(kind, n)
        resize(unit, n)
        resize(sums, n)
        resize(has_sum, n)
        resize(payload, n)
        resize(ref_off, n)
        resize(ref_len, n)
        batch.series = series
        batch.time = time
        batch.value = value
        batch.kind = kind
        batch.unit = unit
        batch.sum = sums
        batch.has_sum = has_sum
        batch.payload = payload
        batch.ref_off = ref_off
        batch.ref_len = ref_len
        batch.ok = ok
        batch.first = first
        batch.count = count
        batch.n_records = n
        if c.spill_len:
            batch.spill = (<char*>c.spill)[:c.spill_len]
        errors = [None] * npay
        for k in range(npay):
            if not c.ok[k]:
                errors[k] = make_error(c.err_code[k], c.err_off[k], c.err_detail[k])
        batch.errors = errors
    finally:
        for k in range(got):
            if held[k]:
                PyBuffer_Release(&bufs[k])
        free(bufs)
        free(held)
        free(c.scratch)
        free(c.spill)
        free(c.kbuf)
        free(c.keys)
    return batch


cdef void decode_all(Ctx* c, Py_buffer* bufs, Py_ssize_t npay) noexcept nogil:
    cdef Py_ssize_t k, start
    for k in range(npay):
        start = c.nrec
        c.err = 0
        c.nkeys = 0
        c.kbuf_len = 0
        if decode_payload(c, <const uint8_t*>bufs[k].buf, bufs[k].len, <int32_t>k) < 0:
            c.nrec = start
            c.ok[k] = 0
            c.first[k] = <int32_t>start
            c.count[k] = 0
            c.err_code[k] = c.err
            c.err_off[k] = c.eoff
            c.err_detail[k] = c.edetail
        else:
            c.ok[k] = 1
            c.first[k] = <int32_t>start
            c.count[k] = <int32_t>(c.nrec - start)
            c.err_code[k] = 0
            c.err_off[k] = 0
            c.err_detail[k] = 0
