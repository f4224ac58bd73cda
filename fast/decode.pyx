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

The module is one extension built from parts, `include`d in dependency order
(as msgpack builds its _cmsgpack):

    decode_table.pxi  SeriesTable: names and units <-> ids in C memory, the
                      RFC 8428 name check, the per-base-name caches
    (here)            the decoder state: error codes, field slots, Ctx
    decode_cbor.pxi   the CBOR reader: heads, numbers, strings, skipping an
                      item, map keys and duplicate detection
    decode_senml.pxi  the SenML resolver: one record (base fields, name,
                      unit, time, value) into the output columns; a payload
    (here)            the batch output: decode_batch, the errors it reports
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
from smartpark.fast import kinds as _kinds
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

# value kinds of the output (fast/kinds.py), as C values the nogil loop writes
cdef uint8_t KIND_NUM = _kinds.NUM
cdef uint8_t KIND_BOOL = _kinds.BOOL
cdef uint8_t KIND_STR = _kinds.STR
cdef uint8_t KIND_DATA = _kinds.DATA
cdef uint8_t KIND_SUM = _kinds.SUM


include "decode_table.pxi"


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
    uint8_t* o_est
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


include "decode_cbor.pxi"
include "decode_senml.pxi"


# ------------------------------------------------------------------ batch output

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
        est = clone(_tmpl_B, cap, False)
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
        c.o_est = (<array>est).data.as_uchars
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
        resize(est, n)
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
        batch.est = est
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
