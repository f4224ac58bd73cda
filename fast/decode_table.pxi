# Part of fast/decode.pyx (included there, not compiled on its own): the series table.
#
# Interned names and units (open addressing over an arena), the RFC 8428 name
# check, and SeriesTable, the Python face of the tables: ids are dense and
# stable for the table's life. Per distinct base name, a small cache maps the
# names seen under it to their series ids (the resolver tries it first).

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
