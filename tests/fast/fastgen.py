"""Helpers for the fast/ tests: SenML pack strategies, CBOR encodings, comparisons.

Packs are generated as lists of dicts keyed by the JSON labels (RFC 8428
Table 4) and encoded to CBOR with integer labels by cbor2 (the outside
judge) or, for the encodings cbor2 does not produce (indefinite lengths,
half floats on demand), by the small hand encoder `enc` below.
"""

import math
import struct

import cbor2
from hypothesis import strategies as st

CODES = {"bver": -1, "bn": -2, "bt": -3, "bu": -4, "bv": -5, "bs": -6, "n": 0, "u": 1,
         "v": 2, "vs": 3, "vb": 4, "s": 5, "t": 6, "ut": 7, "vd": 8}
NOW = 1_700_000_000.25

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-:./_"


def to_cbor_labels(rec):
    return {CODES.get(k, k): v for k, v in rec.items()}


def cbor2_pack(pack, canonical=False):
    """cbor2 encoding with integer labels (canonical: shortest floats)."""
    return cbor2.dumps([to_cbor_labels(r) for r in pack], canonical=canonical)


# ---------------------------------------------------------------- hand encoder

def _head(mt, n):
    if n < 24:
        return bytes([mt << 5 | n])
    for ai, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([mt << 5 | ai]) + struct.pack(fmt, n)
    raise ValueError(n)


def _float(f, width):
    if width == 2:
        try:
            h = struct.pack(">e", f)
            if struct.unpack(">e", h)[0] == f or math.isnan(f):
                return b"\xf9" + h
        except (OverflowError, struct.error):
            pass
    if width <= 4:
        try:
            s = struct.pack(">f", f)
            if struct.unpack(">f", s)[0] == f or math.isnan(f):
                return b"\xfa" + s
        except (OverflowError, struct.error):
            pass
    return b"\xfb" + struct.pack(">d", f)


def enc(obj, indef=False, width=8):
    """CBOR of obj; indef: indefinite-length strings (2 chunks), arrays, maps."""
    if obj is True:
        return b"\xf5"
    if obj is False:
        return b"\xf4"
    if obj is None:
        return b"\xf6"
    if isinstance(obj, int):
        n = obj if obj >= 0 else -1 - obj
        if n >= 1 << 64:  # bignum, tag 2 / 3
            raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
            return bytes([0xC2 if obj >= 0 else 0xC3]) + _head(2, len(raw)) + raw
        return _head(0, obj) if obj >= 0 else _head(1, -1 - obj)
    if isinstance(obj, float):
        return _float(obj, width)
    if isinstance(obj, (str, bytes)):
        mt = 3 if isinstance(obj, str) else 2
        raw = obj.encode("utf-8") if mt == 3 else obj
        if not indef:
            return _head(mt, len(raw)) + raw
        # split at a character boundary for text: each chunk must be valid UTF-8
        cut = len(obj) // 2
        parts = [obj[:cut], obj[cut:]]
        body = b"".join(enc(p, False) for p in parts)
        return bytes([mt << 5 | 31]) + body + b"\xff"
    if isinstance(obj, (list, tuple)):
        body = b"".join(enc(x, indef, width) for x in obj)
        return (b"\x9f" + body + b"\xff") if indef else _head(4, len(obj)) + body
    if isinstance(obj, dict):
        body = b"".join(enc(k, indef, width) + enc(v, indef, width) for k, v in obj.items())
        return (b"\xbf" + body + b"\xff") if indef else _head(5, len(obj)) + body
    raise TypeError(type(obj))


def hand_pack(pack, indef=False, width=8):
    return enc([to_cbor_labels(r) for r in pack], indef, width)


# ---------------------------------------------------------------- strategies

good_name = st.text(NAME_CHARS, min_size=1, max_size=12).filter(lambda s: s[0].isalnum())
odd_name = st.one_of(
    st.text(min_size=0, max_size=6),                        # unicode, spaces, empty
    st.sampled_from(["temp\u00e9", "caf\u00e9/x", "-x", "a b", "", "\u6e29\u5ea6", "x\x00"]),
)
name = st.one_of(good_name, good_name, good_name, odd_name)
base_name = st.one_of(
    st.builds(lambda s: s + "/", good_name),
    st.builds(lambda s: "urn:dev:ow:" + s + ":", good_name),
    good_name, odd_name,
)
rel_time = st.one_of(st.integers(-3600, 3600), st.floats(-3600, 3600, allow_nan=False))
abs_time = st.one_of(st.integers(1 << 28, 2_000_000_000),
                     st.floats(268435456.0, 2e9, allow_nan=False))
any_time = st.one_of(rel_time, abs_time, st.integers(-(1 << 63), (1 << 64) - 1))
number = st.one_of(
    st.integers(-1000, 1000),
    st.integers(-(1 << 64) + 1, (1 << 64) - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-6e4, 6e4, allow_nan=False, width=16),
    st.floats(-1e6, 1e6, allow_nan=False, width=32),
)
unit = st.one_of(st.sampled_from(["Cel", "%RH", "V", "A", "W", "lx", "dB", "/", "ppm"]),
                 st.text(max_size=4))


@st.composite
def record(draw, first=False):  # noqa: C901 - a hypothesis strategy drawing every optional SenML field
    rec = {}
    if draw(st.booleans()) if first else draw(st.integers(0, 9)) == 0:
        rec["bn"] = draw(base_name)
    if draw(st.integers(0, 3)) == 0 or first and draw(st.booleans()):
        rec["bt"] = draw(st.one_of(abs_time, rel_time))
    if draw(st.integers(0, 6)) == 0:
        rec["bu"] = draw(unit)
    if draw(st.integers(0, 8)) == 0:
        rec["bv"] = draw(number)
    if draw(st.integers(0, 8)) == 0:
        rec["bs"] = draw(number)
    if draw(st.integers(0, 12)) == 0:
        rec["bver"] = draw(st.sampled_from([10, 10, 5, 11, 0, -1]))
    if draw(st.integers(0, 5)) != 0:
        rec["n"] = draw(name)
    if draw(st.integers(0, 3)) == 0:
        rec["u"] = draw(unit)
    kind = draw(st.sampled_from(["v", "v", "v", "vb", "vs", "vd", "s", "none", "two"]))
    if kind == "v":
        rec["v"] = draw(number)
    elif kind == "vb":
        rec["vb"] = draw(st.booleans())
    elif kind == "vs":
        rec["vs"] = draw(st.text(max_size=8))
    elif kind == "vd":
        rec["vd"] = draw(st.binary(max_size=8))
    elif kind == "two":
        rec["v"] = draw(number)
        rec["vb"] = draw(st.booleans())
    if kind == "s" or draw(st.integers(0, 6)) == 0:
        rec["s"] = draw(number)
    if draw(st.booleans()):
        rec["t"] = draw(st.one_of(rel_time, rel_time, any_time))
    if draw(st.integers(0, 15)) == 0:
        rec["ut"] = draw(st.one_of(rel_time, st.just(float("nan"))))
    if draw(st.integers(0, 20)) == 0:
        rec[draw(st.sampled_from(["l", "x_", 42, -99]))] = draw(st.one_of(
            st.text(max_size=3), st.integers(), st.lists(st.integers(), max_size=2)))
    return rec


@st.composite
def pack(draw, max_records=6):
    first = draw(record(first=True))
    rest = draw(st.lists(record(), max_size=max_records - 1))
    return [first] + rest


# ---------------------------------------------------------------- comparison

def same_float(a, b):
    """Equal, both NaN, or within 1e-15 relative (ints beyond 2**63 add in floats)."""
    a = float(a)
    b = float(b)
    if a == b or (a != a and b != b):
        return True
    return math.isclose(a, b, rel_tol=1e-15, abs_tol=0.0)


def comparable(rec):
    """A resolved record reduced to what a Batch carries (no ut, no extensions)."""
    out = {"n": rec["n"], "t": float(rec["t"])}
    if rec.get("u") is not None:
        out["u"] = rec["u"]
    for k in ("v", "vb", "vs", "vd", "s"):
        if k in rec:
            val = rec[k]
            out[k] = float(val) if k in ("v", "s") else val
    return out


def records_equal(got, want):
    if len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):
        g = comparable(g)
        w = comparable(w)
        if set(g) != set(w):
            return False
        for k in g:
            if k in ("t", "v", "s"):
                if not same_float(g[k], w[k]):
                    return False
            elif g[k] != w[k]:
                return False
    return True
