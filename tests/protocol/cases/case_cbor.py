"""Cases for protocol/cbor.py (run under CPython and MicroPython).

The RFC 8949 Appendix A vectors come from ../shared/vectors; items given only
in diagnostic notation are parsed by the tiny parser below (it knows just the
forms that appear there). Floats are compared bit for bit (NaN as NaN).
"""

import json
import struct
from binascii import hexlify, unhexlify

from smartpark.protocol import cbor
from smartpark.protocol.errors import CBORDecodeError, DecodeError, EncodeError, LimitError

_VECTORS = []


def setup(vectors_dir):
    with open(vectors_dir + "/cbor-rfc8949-appendix-a.json") as f:
        _VECTORS[:] = json.load(f)


# ------------------------------------------------------------------ helpers

def same(a, b):
    """Equal value AND equal type, floats bit for bit, recursively."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if a != a:
            return b != b
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(a[i], b[i]) for i in range(len(a)))
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        for k in a:
            match = [k2 for k2 in b if same(k, k2)]
            if len(match) != 1 or not same(a[k], b[match[0]]):
                return False
        return True
    if isinstance(a, cbor.Tag):
        return a.tag == b.tag and same(a.value, b.value)
    return a == b


class _Diag:
    """Parser for the diagnostic-notation forms used in Appendix A."""

    WORDS = (("-Infinity", float("-inf")), ("Infinity", float("inf")), ("NaN", float("nan")),
             ("undefined", cbor.undefined), ("true", True), ("false", False), ("null", None))

    def __init__(self, s):
        self.s = s
        self.i = 0

    def ws(self):
        while self.i < len(self.s) and self.s[self.i] in " \n":
            self.i += 1

    def expect(self, c):
        self.ws()
        assert self.s[self.i] == c, "diag: expected %r at %d in %r" % (c, self.i, self.s)
        self.i += 1

    def seq(self, close):
        """Comma-separated values up to `close`."""
        out = []
        self.ws()
        if self.s[self.i] == close:
            self.i += 1
            return out
        while True:
            out.append(self.value())
            self.ws()
            c = self.s[self.i]
            self.i += 1
            if c == close:
                return out
            assert c == ",", "diag: bad separator in %r" % self.s

    def value(self):
        self.ws()
        s = self.s
        for word, val in self.WORDS:
            if s.startswith(word, self.i):
                self.i += len(word)
                return val
        if s.startswith("simple(", self.i):
            self.i += 7
            n = self.number()
            self.expect(")")
            return cbor.Simple(n)
        if s.startswith("h'", self.i):
            end = s.index("'", self.i + 2)
            raw = unhexlify(s[self.i + 2:end])
            self.i = end + 1
            return raw
        c = s[self.i]
        if c == '"':
            end = s.index('"', self.i + 1)
            text = s[self.i + 1:end]
            self.i = end + 1
            return text
        if c == "[":
            self.i += 1
            return self.seq("]")
        if c == "{":
            self.i += 1
            out = {}
            while True:
                self.ws()
                if s[self.i] == "}":
                    self.i += 1
                    return out
                k = self.value()
                self.expect(":")
                out[k] = self.value()
                self.ws()
                if s[self.i] == ",":
                    self.i += 1
        if s.startswith("(_", self.i):
            self.i += 2
            parts = self.seq(")")
            return parts[0][:0].join(parts)
        n = self.number()
        self.ws()
        if self.i < len(s) and s[self.i] == "(":
            self.i += 1
            v = self.value()
            self.expect(")")
            return cbor.Tag(n, v)
        return n

    def number(self):
        j = self.i
        while self.i < len(self.s) and self.s[self.i] in "-+.0123456789e":
            self.i += 1
        text = self.s[j:self.i]
        return float(text) if ("." in text or "e" in text) else int(text)


def diag(s):
    p = _Diag(s)
    v = p.value()
    p.ws()
    assert p.i == len(s), "diag: trailing text in %r" % s
    return v


def raises(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s not raised by %r%r" % (exc.__name__, fn, args))


def h(text):
    return unhexlify(text.replace(" ", ""))


# ------------------------------------------------------------------ vectors

def test_vectors_present():
    assert len(_VECTORS) >= 80, "appendix A vectors not loaded"
    assert any(v["hex"] == "f818" for v in _VECTORS)


def test_appendix_a_decodes():
    bad = []
    for v in _VECTORS:
        if v["hex"] == "f818":
            continue
        want = v["decoded"] if "decoded" in v else diag(v["diagnostic"])
        try:
            got = cbor.loads(unhexlify(v["hex"]))
        except DecodeError as e:
            bad.append("%s raised %s" % (v["hex"], e))
            continue
        if not same(got, want):
            bad.append("%s: got %r want %r" % (v["hex"], got, want))
    assert not bad, "; ".join(bad)


def test_appendix_a_roundtrips():
    bad = []
    n = 0
    for v in _VECTORS:
        if v["hex"] == "f818":
            continue
        obj = cbor.loads(unhexlify(v["hex"]))
        enc = cbor.dumps(obj)
        if v["roundtrip"]:
            n += 1
            if enc != unhexlify(v["hex"]):
                bad.append("%s encoded as %s" % (v["hex"], hexlify(enc).decode()))
        # Either way our own encoding must decode to the same value.
        if not same(cbor.loads(enc), obj):
            bad.append("%s does not survive dumps/loads" % v["hex"])
    assert n > 60
    assert not bad, "; ".join(bad)


def test_f818_not_well_formed():
    e = raises(CBORDecodeError, cbor.loads, h("f818"))
    assert e.offset == 0
    for k in range(32):
        raises(CBORDecodeError, cbor.loads, bytes([0xF8, k]))
    assert cbor.loads(h("f820")) == cbor.Simple(32)


def test_diag_parser_itself():
    assert same(diag("(_ h'0102', h'030405')"), b"\x01\x02\x03\x04\x05")
    assert same(diag('{1: 2, 3: 4}'), {1: 2, 3: 4})
    assert same(diag("1(1363896240.5)"), cbor.Tag(1, 1363896240.5))
    assert not same(diag("1(1363896240)"), cbor.Tag(1, 1363896240.0))
    assert not same(0.0, -0.0) and not same(1, 1.0) and not same(1, True)


# ------------------------------------------------------------------ encoding

def test_encode_exact_bytes():
    cases = [
        ([], "80"), ({}, "a0"), ((1, 2), "820102"), (b"", "40"), (bytearray(b"\x01"), "4101"),
        ("", "60"), (-1, "20"), (-24, "37"), (-25, "3818"), (255, "18ff"), (256, "190100"),
        (65535, "19ffff"), (65536, "1a00010000"), (4294967295, "1affffffff"),
        (4294967296, "1b0000000100000000"), (-18446744073709551616, "3bffffffffffffffff"),
        (1 << 72, "c24a01000000000000000000"),
        (cbor.Tag(1 << 40, None), "db0000010000000000f6"), (cbor.Simple(0), "e0"),
        (cbor.Simple(19), "f3"), (cbor.Simple(32), "f820"), (cbor.undefined, "f7"),
        (memoryview(b"ab"), "426162"), ("\u00fc", "62c3bc"),
    ]
    for obj, want in cases:
        got = hexlify(cbor.dumps(obj)).decode()
        assert got == want, "%r -> %s, want %s" % (obj, got, want)


def test_shortest_float():
    cases = [
        (0.0, "f90000"), (-0.0, "f98000"), (65504.0, "f97bff"), (65505.0, "fa477fe100"),
        (65536.0, "fa47800000"), (2.0 ** -24, "f90001"), (2.0 ** -25, "fa33000000"),
        (2.0 ** -14, "f90400"), (1023 * 2.0 ** -24, "f903ff"), (-5.5, "f9c580"),
        (1.0 / 3, "fb3fd5555555555555"), (3.4028234663852886e38, "fa7f7fffff"),
        (3.4028235677973366e38, "fb47effffff0000000"), (float("nan"), "f97e00"),
        (float("inf"), "f97c00"), (float("-inf"), "f9fc00"), (1e-45, "fb3696d601ad376ab9"),
        (1.401298464324817e-45, "fa00000001"), (0.1, "fb3fb999999999999a"),
    ]
    for f, want in cases:
        got = hexlify(cbor.dumps(f)).decode()
        assert got == want, "%r -> %s, want %s" % (f, got, want)
        back = cbor.loads(unhexlify(want))
        assert same(back, f), "%s decodes to %r" % (want, back)


def test_half_floats_all_decode_and_reencode():
    # Every non-NaN binary16 value must come back as the same two bytes.
    for bits in range(0, 0x10000, 7):
        raw = bytes([0xF9, bits >> 8, bits & 0xFF])
        f = cbor.loads(raw)
        if f != f:
            continue
        assert cbor.dumps(f) == raw, "half %04x" % bits


def test_encode_errors():
    raises(EncodeError, cbor.dumps, {1, 2})
    raises(EncodeError, cbor.dumps, object())
    deep = []
    for _ in range(200):
        deep = [deep]
    raises(EncodeError, cbor.dumps, deep)
    raises(ValueError, cbor.Simple, 24)
    raises(ValueError, cbor.Simple, 20)  # that is false
    raises(ValueError, cbor.Simple, 31)
    raises(ValueError, cbor.Simple, 256)
    raises(ValueError, cbor.Tag, -1, 0)


# ------------------------------------------------------------------ decoding

def test_decode_types_and_equality():
    assert cbor.loads(h("d9d9f780")) == cbor.Tag(55799, [])
    assert cbor.Tag(1, 2) != cbor.Tag(1, 3) and cbor.Tag(1, 2) != cbor.Tag(2, 2)
    assert cbor.Simple(16) == cbor.Simple(16) and cbor.Simple(16) != cbor.Simple(17)
    assert {cbor.Tag(1, "a"): 1}[cbor.Tag(1, "a")] == 1
    assert not cbor.undefined
    assert cbor.loads(h("c240")) == 0 and cbor.loads(h("c340")) == -1
    assert cbor.loads(h("5f40ff")) == b"" and cbor.loads(h("7fff")) == ""
    assert cbor.loads(h("7f 62 c3 bc 60 61 61 ff")) == "\u00fca"
    assert cbor.loads(bytearray(h("83010203"))) == [1, 2, 3]
    assert cbor.loads(memoryview(h("83010203"))) == [1, 2, 3]


def test_map_keys():
    assert cbor.loads(h("a2 4161 01 f6 02")) == {b"a": 1, None: 2}
    e = raises(CBORDecodeError, cbor.loads, h("a2 01 02 01 03"))
    assert e.offset == 3 and "duplicate" in str(e)
    e = raises(CBORDecodeError, cbor.loads, h("a1 80 01"))
    assert e.offset == 1 and "unhashable" in str(e)
    raises(CBORDecodeError, cbor.loads, h("a1 a0 01"))
    raises(CBORDecodeError, cbor.loads, h("a1 c1 80 01"))  # Tag holding a list


def test_malformed_offsets():
    cases = [
        ("", 0), ("18", 0), ("1c", 0), ("1d", 0), ("1e", 0), ("1f", 0), ("3f", 0), ("df", 0),
        ("ff", 0), ("8201", 0), ("83 01 02 ff", 3), ("5f 01 ff", 1), ("5f 61 61 ff", 1),
        ("5f 5f 40 ff ff", 1), ("7f 40 ff", 1), ("7f 61 c3 61 bc ff", 1), ("62 c3 28", 0), ("61 80", 0),
        ("64 f4 90 80 80", 0), ("63 ed a0 80", 0), ("62 c0 80", 0), ("c2 01", 0),
        ("c3 a0", 0), ("fc", 0), ("f9 00", 0), ("fa 00 00 00", 0), ("fb 00", 0),
        ("81 82 01", 1), ("9f 01", 0), ("bf 01 ff", 2), ("bf 01", 2), ("a1 01", 0),
        ("5a ff ff ff ff 00", 0), ("7b 00 00 01 00 00 00 00 00", 0),
        ("9a ff ff ff ff 00", 0), ("ba 7f ff ff ff 00", 0),
    ]
    for text, off in cases:
        e = raises(CBORDecodeError, cbor.loads, h(text))
        assert e.offset == off, "%s: offset %r, want %d (%s)" % (text, e.offset, off, e)


def test_trailing_bytes():
    e = raises(CBORDecodeError, cbor.loads, h("0102"))
    assert e.offset == 1 and "trailing" in str(e)
    assert cbor.loads(h("0102"), allow_trailing=True) == 1
    assert cbor.loads_prefix(h("8201 02 ff")) == ([1, 2], 3)
    raises(CBORDecodeError, cbor.loads_prefix, h("82 01"))


def test_limits():
    deep = b"\x81" * 100000 + b"\x00"
    e = raises(LimitError, cbor.loads, deep)
    assert e.offset == cbor.MAX_DEPTH
    assert cbor.loads(b"\x81" * 5 + b"\x00", max_depth=5) == [[[[[0]]]]]
    raises(LimitError, cbor.loads, b"\x81" * 6 + b"\x00", max_depth=5)
    # A max_depth beyond what the interpreter's stack holds is still a LimitError.
    raises(LimitError, cbor.loads, b"\x81" * 100000 + b"\x00", max_depth=1000000)
    raises(LimitError, cbor.loads, b"\xc1" * 40 + b"\x00")  # tags nest too
    raises(LimitError, cbor.loads, b"\x9f" * 40 + b"\xff" * 40)
    assert cbor.loads(h("83010203"), max_items=3) == [1, 2, 3]
    raises(LimitError, cbor.loads, h("83010203"), max_items=2)
    raises(LimitError, cbor.loads, h("9f010203ff"), max_items=2)
    raises(LimitError, cbor.loads, h("a2010203 04"), max_items=1)
    raises(LimitError, cbor.loads, h("5f 41 01 41 02 41 03 ff"), max_items=2)
    raises(LimitError, cbor.loads, h("83010203"), max_bytes=3)
    # A huge declared length is refused without allocating it.
    for text in ("5b 7f ff ff ff ff ff ff ff", "9b 00 00 00 01 00 00 00 00 00",
                 "bb 7f ff ff ff ff ff ff ff 00 00"):
        raises(CBORDecodeError, cbor.loads, h(text))


def test_loads_type_error():
    raises(TypeError, cbor.loads, "83010203")
    raises(TypeError, cbor.loads, None)
