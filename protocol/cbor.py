"""CBOR (RFC 8949): dumps(obj) -> bytes, loads(data) -> obj.

The reference codec for node firmware (MicroPython) and hub (CPython). The
fast/ twin mirrors its decoder; both are tested against cbor2.

Type mapping:
  unsigned/negative int   <-> int (tags 2/3 bignums decode to int; ints beyond
                              64 bits encode as tag 2/3)
  byte string             <-> bytes   (bytearray/memoryview encode as bytes)
  text string             <-> str     (invalid UTF-8 is an error)
  array / map             <-> list (tuple encodes too) / dict
  tag                     <-> Tag(tag, value)
  false/true/null         <-> False/True/None
  undefined               <-> `undefined`;  other simple values <-> Simple(n)
  float16/32/64           <-> float; encoding picks the shortest width that
                              round-trips exactly (RFC 8949 §4.2 preferred
                              serialisation), NaN as f97e00.

Decoding enforces limits given as keyword arguments (see loads). Every
malformed input ends in CBORDecodeError or LimitError with the byte offset;
nothing is allocated for a declared length before the input is known to hold it.

MicroPython notes: half floats are converted by hand (struct 'e' is missing on
some ports); int.bit_length and keyword arguments to int.from_bytes are
missing; bool is not an int subclass there; str decoding does not reject
overlong/surrogate UTF-8, so text is validated here when needed.
"""

import math
import struct

from .errors import CBORDecodeError, EncodeError, LimitError

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# Defaults for loads(): a report pack is a few hundred bytes; these leave a
# large margin while keeping a hostile input cheap to reject.
MAX_DEPTH = const(32)
MAX_ITEMS = const(65536)
MAX_BYTES = const(1048576)

_MT_UINT = const(0)
_MT_NINT = const(1)
_MT_BYTES = const(2)
_MT_TEXT = const(3)
_MT_ARRAY = const(4)
_MT_MAP = const(5)
_MT_TAG = const(6)
_MT_SIMPLE = const(7)
MT_ARRAY = const(4)  # for head(): a streaming writer's arrays and maps
MT_MAP = const(5)
_BREAK = const(0xFF)
_ENCODE_DEPTH = const(100)

_U64 = 0xFFFFFFFFFFFFFFFF
_NEG64 = -1 - _U64  # the most negative int that major type 1 holds


class Tag:
    """A tagged data item (major type 6) other than the bignum tags 2/3."""

    __slots__ = ("tag", "value")

    def __init__(self, tag, value):
        if not isinstance(tag, int) or isinstance(tag, bool) or tag < 0 or tag > _U64:
            raise ValueError("tag number must be an int in 0..2**64-1")
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash((self.tag, self.value))

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


class Simple:
    """A simple value (major type 7) without a Python counterpart."""

    __slots__ = ("value",)

    def __init__(self, value):
        # 20..23 are false/true/null/undefined, 24..31 are reserved.
        if not isinstance(value, int) or isinstance(value, bool) or not (
            0 <= value < 20 or 32 <= value < 256
        ):
            raise ValueError("simple value must be 0..19 or 32..255")
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Simple) and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(("simple", self.value))

    def __repr__(self):
        return "Simple(%d)" % self.value


class _Undefined:
    """The CBOR `undefined` simple value (f7); use the `undefined` singleton."""

    __slots__ = ()

    def __repr__(self):
        return "undefined"

    def __bool__(self):
        return False


undefined = _Undefined()


# ---------------------------------------------------------------- half floats

def _half_to_float(h):
    """IEEE 754 binary16 bits -> float (by hand: no struct 'e' everywhere)."""
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        val = math.ldexp(mant, -24)
    elif exp == 31:
        val = float("nan") if mant else float("inf")
    else:
        val = math.ldexp(mant + 1024, exp - 25)
    return -val if h & 0x8000 else val


# ---------------------------------------------------------------- UTF-8

def _bad_utf8_seq(raw):
    """Offset of the first ill-formed UTF-8 sequence in raw, or -1 (RFC 3629)."""
    i = 0
    n = len(raw)
    while i < n:
        b = raw[i]
        if b < 0x80:
            i += 1
            continue
        if 0xC2 <= b <= 0xDF:
            k, lo, hi = 1, 0x80, 0xBF
        elif 0xE0 <= b <= 0xEF:
            k = 2
            lo, hi = (0xA0, 0xBF) if b == 0xE0 else ((0x80, 0x9F) if b == 0xED else (0x80, 0xBF))
        elif 0xF0 <= b <= 0xF4:
            k = 3
            lo, hi = (0x90, 0xBF) if b == 0xF0 else ((0x80, 0x8F) if b == 0xF4 else (0x80, 0xBF))
        else:
            return i
        if i + k >= n:
            return i  # sequence cut short
        if not lo <= raw[i + 1] <= hi:
            return i
        for j in range(i + 2, i + k + 1):
            if not 0x80 <= raw[j] <= 0xBF:
                return i
        i += k + 1
    return -1


def _strict_decode_probe():
    try:
        b"\xed\xa0\x80".decode("utf-8")
        b"\xc0\x80".decode("utf-8")
    except UnicodeError:
        return True
    return False


_STRICT_UTF8 = _strict_decode_probe()  # True on CPython, False on MicroPython


# ---------------------------------------------------------------- decoding

class _Decoder:
    __slots__ = ("d", "n", "pos", "items", "max_depth")

    def __init__(self, data, max_depth, max_items):
        self.d = data
        self.n = len(data)
        self.pos = 0
        self.items = max_items
        self.max_depth = max_depth

    def _take(self, k, start):
        """k raw bytes at pos (k is checked against the input first)."""
        p = self.pos
        if k > self.n - p:
            raise CBORDecodeError("truncated: %d bytes declared, %d left" % (k, self.n - p), start)
        self.pos = p + k
        return self.d[p:p + k]

    def _head(self):
        """Initial byte and argument: (major, arg) with arg None = indefinite."""
        d = self.d
        p = self.pos
        if p >= self.n:
            raise CBORDecodeError("truncated: expected a data item", p)
        ib = d[p]
        mt = ib >> 5
        ai = ib & 0x1F
        if ai < 24:
            self.pos = p + 1
            return mt, ai
        if ai == 31:
            self.pos = p + 1
            return mt, None
        if ai > 27:
            raise CBORDecodeError("reserved additional information %d" % ai, p)
        k = 1 << (ai - 24)
        if p + 1 + k > self.n:
            raise CBORDecodeError("truncated: %d-byte argument" % k, p)
        if k == 1:
            arg = d[p + 1]
        elif k == 2:
            arg = (d[p + 1] << 8) | d[p + 2]
        elif k == 4:
            arg = struct.unpack_from(">I", d, p + 1)[0]
        else:
            arg = struct.unpack_from(">Q", d, p + 1)[0]
        self.pos = p + 1 + k
        return mt, arg

    def _count(self, k, start):
        self.items -= k
        if self.items < 0:
            raise LimitError("too many items (max_items)", start)

    def _string(self, mt, arg, start):
        """Byte string, or text string (mt 3) decoded; each chunk of an
        indefinite text string must be valid UTF-8 by itself (§3.2.3: a
        character cannot be split across chunks)."""
        if arg is not None:
            raw = self._take(arg, start)
            return self._text(raw, start) if mt == _MT_TEXT else raw
        # Indefinite length: definite chunks of the same major type until break.
        parts = []
        while True:
            p = self.pos
            if p >= self.n:
                raise CBORDecodeError("truncated: indefinite string without break", start)
            if self.d[p] == _BREAK:
                self.pos = p + 1
                break
            cmt, carg = self._head()
            if cmt != mt or carg is None:
                raise CBORDecodeError("bad chunk in indefinite-length string", p)
            self._count(1, p)
            chunk = self._take(carg, p)
            parts.append(self._text(chunk, p) if mt == _MT_TEXT else chunk)
        return (b"" if mt == _MT_BYTES else "").join(parts)

    def _text(self, raw, start):
        try:
            s = raw.decode("utf-8")
        except UnicodeError:
            raise CBORDecodeError("invalid UTF-8 in text string", start) from None
        if not _STRICT_UTF8 and len(s) != len(raw) and _bad_utf8_seq(raw) >= 0:
            raise CBORDecodeError("invalid UTF-8 in text string", start)
        return s

    def item(self, depth):  # noqa: C901 - dispatch on the major type with SenML's fast paths first; a call per branch costs on MicroPython
        start = self.pos
        if start < self.n:
            # Fast paths for what SenML packs are made of: small unsigned
            # ints, short text strings, doubles. Everything else: _head().
            ib = self.d[start]
            if ib < 0x18:
                self.pos = start + 1
                return ib
            if 0x20 <= ib < 0x38:
                self.pos = start + 1
                return 0x1F - ib  # -1 - (ib - 0x20)
            if 0x60 <= ib < 0x78:
                end = start + ib - 0x5F
                if end <= self.n:
                    self.pos = end
                    return self._text(self.d[start + 1:end], start)
            elif ib == 0xFB and start + 9 <= self.n:
                self.pos = start + 9
                return struct.unpack_from(">d", self.d, start + 1)[0]
        mt, arg = self._head()
        if mt == _MT_UINT:
            if arg is None:
                raise CBORDecodeError("indefinite length on an integer", start)
            return arg
        if mt == _MT_NINT:
            if arg is None:
                raise CBORDecodeError("indefinite length on an integer", start)
            return -1 - arg
        if mt == _MT_BYTES:
            return self._string(mt, arg, start)
        if mt == _MT_TEXT:
            return self._string(mt, arg, start)
        if mt == _MT_SIMPLE:
            return self._simple(arg, start)
        if depth >= self.max_depth:
            raise LimitError("nesting deeper than max_depth=%d" % self.max_depth, start)
        depth += 1
        if mt == _MT_ARRAY:
            return self._array(arg, depth, start)
        if mt == _MT_MAP:
            return self._map(arg, depth, start)
        # _MT_TAG
        if arg is None:
            raise CBORDecodeError("indefinite length on a tag", start)
        value = self.item(depth)
        if arg == 2 or arg == 3:
            if not isinstance(value, bytes):
                raise CBORDecodeError("bignum tag %d needs a byte string" % arg, start)
            n = int.from_bytes(value, "big") if value else 0
            return n if arg == 2 else -1 - n
        return Tag(arg, value)

    def _array(self, arg, depth, start):
        out = []
        if arg is None:
            while True:
                if self.pos >= self.n:
                    raise CBORDecodeError("truncated: indefinite array without break", start)
                if self.d[self.pos] == _BREAK:
                    self.pos += 1
                    return out
                self._count(1, self.pos)
                out.append(self.item(depth))
        # Each item takes at least one byte: reject impossible counts up front.
        if arg > self.n - self.pos:
            raise CBORDecodeError("truncated: array of %d items declared" % arg, start)
        self._count(arg, start)
        for _ in range(arg):
            out.append(self.item(depth))
        return out

    def _map(self, arg, depth, start):
        out = {}
        if arg is None:
            while True:
                if self.pos >= self.n:
                    raise CBORDecodeError("truncated: indefinite map without break", start)
                if self.d[self.pos] == _BREAK:
                    self.pos += 1
                    return out
                self._count(1, self.pos)
                self._pair(out, depth)
        if arg > (self.n - self.pos) // 2:
            raise CBORDecodeError("truncated: map of %d pairs declared" % arg, start)
        self._count(arg, start)
        for _ in range(arg):
            kpos = self.pos
            key = self.item(depth)
            value = self.item(depth)
            try:
                if key in out:
                    raise CBORDecodeError("duplicate map key %r" % (key,), kpos)
                out[key] = value
            except TypeError:
                raise CBORDecodeError("unhashable map key (%s)" % type(key).__name__,
                                      kpos) from None
        return out

    def _pair(self, out, depth):
        kpos = self.pos
        key = self.item(depth)
        value = self.item(depth)
        try:
            if key in out:
                raise CBORDecodeError("duplicate map key %r" % (key,), kpos)
            out[key] = value
        except TypeError:
            raise CBORDecodeError("unhashable map key (%s)" % type(key).__name__, kpos) from None

    def _simple(self, arg, start):
        ib = self.d[start] & 0x1F
        if ib < 20:
            return Simple(ib)
        if ib == 20:
            return False
        if ib == 21:
            return True
        if ib == 22:
            return None
        if ib == 23:
            return undefined
        if ib == 24:
            if arg < 32:
                raise CBORDecodeError("simple value %d in two-byte form" % arg, start)
            return Simple(arg)
        if ib == 25:
            return _half_to_float(arg)
        if ib == 26:
            return struct.unpack_from(">f", self.d, start + 1)[0]
        if ib == 27:
            return struct.unpack_from(">d", self.d, start + 1)[0]
        raise CBORDecodeError("unexpected break", start)  # ib == 31


def _decoder(data, max_depth, max_items, max_bytes):
    if isinstance(data, (memoryview, bytearray)):
        data = bytes(data)  # slices of bytes are bytes (str decoding needs them)
    elif not isinstance(data, bytes):
        raise TypeError("cbor.loads needs bytes, not %s" % type(data).__name__)
    if len(data) > max_bytes:
        raise LimitError("input of %d bytes exceeds max_bytes=%d" % (len(data), max_bytes), 0)
    return _Decoder(data, max_depth, max_items)


def loads_prefix(data, max_depth=MAX_DEPTH, max_items=MAX_ITEMS, max_bytes=MAX_BYTES):
    """Decode the first data item of data; return (obj, end offset)."""
    dec = _decoder(data, max_depth, max_items, max_bytes)
    obj = _run(dec)
    return obj, dec.pos


def _run(dec):
    # max_depth bounds the recursion; a board with a smaller stack (or heap)
    # than the limits assume still gets a DecodeError, not a crash.
    try:
        return dec.item(0)
    except RuntimeError:  # RecursionError on CPython; MicroPython's depth error
        raise LimitError("nesting too deep for this interpreter's stack", dec.pos) from None
    except MemoryError:
        raise LimitError("out of memory while decoding", dec.pos) from None


def loads(data, max_depth=MAX_DEPTH, max_items=MAX_ITEMS, max_bytes=MAX_BYTES,
          allow_trailing=False):
    """Decode one CBOR data item from data (bytes, bytearray or memoryview).

    max_depth: nesting of arrays, maps and tags; max_items: array elements +
    map pairs + string chunks in total; max_bytes: length of the input.
    Bytes after the item are an error unless allow_trailing=True (use
    loads_prefix to learn where the item ended).
    """
    dec = _decoder(data, max_depth, max_items, max_bytes)
    obj = _run(dec)
    if dec.pos != dec.n and not allow_trailing:
        raise CBORDecodeError("%d trailing bytes after the data item" % (dec.n - dec.pos), dec.pos)
    return obj


# ---------------------------------------------------------------- encoding
#
# The encoder avoids heap churn on a node: heads are appended byte by byte,
# and floats are analysed in one 9-byte scratch buffer per dumps() call
# instead of trying each width with struct.pack.

def _head(buf, mt, n):
    mt <<= 5
    if n < 24:
        buf.append(mt | n)
    elif n < 0x100:
        buf.append(mt | 24)
        buf.append(n)
    elif n < 0x10000:
        buf.append(mt | 25)
        buf.append(n >> 8)
        buf.append(n & 0xFF)
    elif n < 0x100000000:
        buf.append(mt | 26)
        buf.append(n >> 24)
        buf.append((n >> 16) & 0xFF)
        buf.append((n >> 8) & 0xFF)
        buf.append(n & 0xFF)
    else:
        buf.extend(struct.pack(">BQ", mt | 27, n))


def _bignum(buf, tag, n):
    k = 9  # n > 2**64 - 1 needs at least 9 bytes
    while n >> (8 * k):
        k += 1
    buf.append(0xC0 | tag)
    _head(buf, _MT_BYTES, k)
    buf.extend(n.to_bytes(k, "big"))


def _fits(e, tz, p, emin, emax):
    """Does 1.m * 2**e, m with tz trailing zero bits of 52, fit a binary format
    with p mantissa bits and normal exponents emin..emax (subnormals too)?"""
    if e > emax:
        return False
    if e >= emin:
        return tz >= 52 - p
    if e >= emin - p:
        return tz >= 52 - p + (emin - e)
    return False


def _float(buf, f, sc):
    if f != f:
        buf.extend(b"\xf9\x7e\x00")  # NaN, canonical quiet form
        return
    struct.pack_into(">d", sc, 1, f)
    sign = sc[1] & 0x80
    e = ((sc[1] & 0x7F) << 4) | (sc[2] >> 4)  # biased exponent
    if e == 0x7FF:
        buf.extend(b"\xf9\xfc\x00" if sign else b"\xf9\x7c\x00")
        return
    # Trailing zero bits of the 52-bit mantissa (52 when it is all zero).
    tz = 0
    i = 8
    while i > 2 and sc[i] == 0:
        tz += 8
        i -= 1
    x = sc[i] if i > 2 else (sc[2] & 0x0F) | 0x10
    while not x & 1:
        x >>= 1
        tz += 1
    if e == 0:  # zero, or a double subnormal (too small for any shorter width)
        if tz >= 52:
            buf.append(0xF9)
            buf.append(sign)
            buf.append(0)
            return
        e = -2000
    else:
        e -= 1023
    if _fits(e, tz, 10, -14, 15):
        m = ((sc[2] & 0x0F) << 6) | (sc[3] >> 2)  # top 10 mantissa bits
        if e >= -14:
            h = ((e + 15) << 10) | m
        else:
            h = (0x400 | m) >> (-14 - e)
        buf.append(0xF9)
        buf.append(sign | (h >> 8))
        buf.append(h & 0xFF)
        return
    if _fits(e, tz, 23, -126, 127):
        struct.pack_into(">f", sc, 1, f)
        sc[0] = 0xFA
        for j in range(5):
            buf.append(sc[j])
        return
    sc[0] = 0xFB
    buf.extend(sc)


def _int_keys(obj):
    """True when every key of obj is an int of at most 64 bits."""
    for k in obj:
        if type(k) is not int or k > _U64 or k < _NEG64:
            return False
    return True


def _before(a, b):
    """Does int key a encode (bytewise) before int key b? Unsigned ints come
    first in numeric order, then negative ints as -1, -2, ... (§4.2.1)."""
    if a >= 0:
        return b < 0 or a < b
    return b < 0 and a > b


def _first(pair):
    return pair[0]


def _map(buf, obj, depth, sc):
    n = len(obj)
    _head(buf, _MT_MAP, n)
    if n == 1:
        for k in obj:
            _enc(buf, k, depth, sc)
            _enc(buf, obj[k], depth, sc)
        return
    if n <= 16 and _int_keys(obj):
        # Small int-keyed maps (SenML records, report acks): pick the keys in
        # order by selection, which allocates nothing.
        prev = None
        for _ in range(n):
            best = None
            for k in obj:
                if (prev is None or _before(prev, k)) and (best is None or _before(k, best)):
                    best = k
            _enc(buf, best, depth, sc)
            _enc(buf, obj[best], depth, sc)
            prev = best
        return
    # General case: sort by the encoded bytes of each key.
    keyed = []
    for k in obj:
        kb = bytearray()
        _enc(kb, k, depth, sc)
        keyed.append((bytes(kb), k))
    keyed.sort(key=_first)
    for kb, k in keyed:
        buf.extend(kb)
        _enc(buf, obj[k], depth, sc)


def _enc(buf, obj, depth, sc):  # noqa: C901 - dispatch on the type; calls cost on MicroPython
    # bool before int: CPython's bool is an int; MicroPython's is not.
    if obj is False:
        buf.append(0xF4)
    elif obj is True:
        buf.append(0xF5)
    elif obj is None:
        buf.append(0xF6)
    elif isinstance(obj, int):
        if obj >= 0:
            if obj <= _U64:
                _head(buf, _MT_UINT, obj)
            else:
                _bignum(buf, 2, obj)
        else:
            n = -1 - obj
            if n <= _U64:
                _head(buf, _MT_NINT, n)
            else:
                _bignum(buf, 3, n)
    elif isinstance(obj, float):
        _float(buf, obj, sc)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        _head(buf, _MT_TEXT, len(raw))
        buf.extend(raw)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _head(buf, _MT_BYTES, len(obj))
        buf.extend(obj)
    else:
        if depth >= _ENCODE_DEPTH:
            raise EncodeError("nesting deeper than %d (a cycle?)" % _ENCODE_DEPTH)
        depth += 1
        if isinstance(obj, (list, tuple)):
            _head(buf, _MT_ARRAY, len(obj))
            for x in obj:
                _enc(buf, x, depth, sc)
        elif isinstance(obj, dict):
            _map(buf, obj, depth, sc)
        elif isinstance(obj, Tag):
            _head(buf, _MT_TAG, obj.tag)
            _enc(buf, obj.value, depth, sc)
        elif isinstance(obj, Simple):
            if obj.value < 24:
                buf.append(0xE0 | obj.value)
            else:
                buf.append(0xF8)
                buf.append(obj.value)
        elif obj is undefined:
            buf.append(0xF7)
        else:
            raise EncodeError("cannot encode %s as CBOR" % type(obj).__name__)


def head(buf, major, n):
    """Append the head of an item of major type `major` (MT_ARRAY, MT_MAP) and
    argument n to buf: how a streaming writer opens an array or a map of n items."""
    _head(buf, major, n)


def encode_into(buf, obj, scratch):
    """Append obj's CBOR to buf (a bytearray), as dumps() encodes it; `scratch` is a
    bytearray(9) the caller keeps, so that a writer of many items allocates nothing more."""
    _enc(buf, obj, 0, scratch)


def dumps(obj):
    """Encode obj as CBOR: preferred serialisation, definite lengths, map keys
    sorted by their encoded bytes (so the output is deterministic)."""
    buf = bytearray()
    _enc(buf, obj, 0, bytearray(9))
    return bytes(buf)
