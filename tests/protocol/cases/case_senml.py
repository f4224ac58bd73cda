"""Cases for protocol/senml.py (run under CPython and MicroPython).

The RFC 8428 examples come from ../shared/vectors/senml: every exN.json (and
its normalised exN.gen.json) must resolve to exN.gen.resolved.json. Records
without an absolute time resolve relative to "now", which the generator of
those files fixed to its own clock, so such times are checked against our own
`now` instead: a time is absolute exactly when it does not move with `now`.
"""

import json
from binascii import unhexlify

from smartpark.protocol import cbor, senml
from smartpark.protocol.errors import DecodeError, EncodeError, SenMLError

_DIR = [""]
NOW1 = 1700000000.0
NOW2 = 1800000000.0
EXAMPLES = ("ex1", "ex2", "ex3", "ex4", "ex5", "ex6", "ex7", "ex8", "ex9", "ex10", "ex11",
            "ex12", "ex13")


def setup(vectors_dir):
    _DIR[0] = vectors_dir + "/senml/"


def _read(name):
    with open(_DIR[0] + name, "rb") as f:
        return f.read()


def _exists(name):
    try:
        open(_DIR[0] + name).close()
        return True
    except OSError:
        return False


def raises(exc, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    raise AssertionError("%s not raised by %r%r" % (exc.__name__, fn, args))


def _hexdump(text):
    """Bytes of an `offset hex... |ascii|` dump."""
    out = []
    for line in text.decode().splitlines():
        out.extend(line.split("|")[0].split()[1:])
    return unhexlify("".join(out))


def _compare_resolved(label, pack, want):
    """Resolve pack at two different nows and check against want."""
    got1 = [r for r in senml.resolve(pack, now=NOW1) if "vd" not in r]
    got2 = [r for r in senml.resolve(pack, now=NOW2) if "vd" not in r]
    assert len(got1) == len(want), "%s: %d records, want %d" % (label, len(got1), len(want))
    for i in range(len(want)):
        g, g2, w = got1[i], got2[i], want[i]
        keys = sorted(g.keys())
        assert keys == sorted(w.keys()), "%s[%d]: keys %r want %r" % (label, i, keys, sorted(w.keys()))
        for k in keys:
            if k == "t":
                if g["t"] == g2["t"]:  # absolute
                    assert g["t"] == w["t"], "%s[%d]: t %r want %r" % (label, i, g["t"], w["t"])
                else:
                    rel = g["t"] - NOW1
                    assert g2["t"] - NOW2 == rel and -(2 ** 28) < rel < 2 ** 28, label
            else:
                assert g[k] == w[k], "%s[%d].%s: %r want %r" % (label, i, k, g[k], w[k])


# ------------------------------------------------------------------ vectors

def test_vectors_present():
    for ex in EXAMPLES:
        assert _exists(ex + ".json"), ex
    assert _exists("ex3.gen.cbor.hex")


def test_examples_resolve():
    done = 0
    for ex in EXAMPLES:
        if not _exists(ex + ".gen.resolved.json"):
            continue
        want = json.loads(_read(ex + ".gen.resolved.json"))
        for src in (ex + ".json", ex + ".gen.json"):
            pack = senml.decode(_read(src), "json")
            _compare_resolved(src, pack, want)
            done += 1
    assert done >= 22


def test_ex13_relative_times():
    # No resolved file: check by hand (bt plus fractional t, bu applies to all).
    got = senml.resolve(senml.decode(_read("ex13.json"), "json"), now=NOW1)
    assert [r["t"] for r in got] == [1.320078429e9, 1.320078429e9, 1.320078429e9 + 0.1,
                                      1.320078429e9 + 0.1]
    assert [r["u"] for r in got] == ["/"] * 4
    assert [r["v"] for r in got] == [0.5, 0.5, 0, 0]


def test_ex7_vd():
    got = senml.resolve(senml.decode(_read("ex7.json"), "json"), now=NOW1)
    assert got[3]["vd"] == b"hi \n"
    assert got[3]["n"] == "urn:dev:ow:10e2073a01080063:nfv-reader"
    assert got[2]["vb"] is False


def test_ex3_cbor_matches_json():
    raw = _hexdump(_read("ex3.gen.cbor.hex"))
    assert len(raw) == 0xC3
    from_cbor = senml.decode(raw, "cbor")
    from_json = senml.decode(_read("ex3.json"), "json")
    assert from_cbor == from_json, "%r != %r" % (from_cbor, from_json)
    assert from_cbor[0]["bver"] == 5 and from_cbor[6]["t"] == 0
    want = json.loads(_read("ex3.gen.resolved.json"))
    _compare_resolved("ex3.gen.cbor.hex", from_cbor, want)
    assert senml.decode(raw, senml.CT_SENML_CBOR) == from_cbor


# ------------------------------------------------------------------ rules

def _j(text):
    return senml.decode(text.encode(), "json")


def test_resolve_base_fields():
    pack = _j('[{"bn":"a/","bt":1600000000,"bu":"V","bv":10,"bs":100,"n":"x","v":1,"s":2},'
              '{"n":"y","t":5,"v":-1.5,"u":"A"},{"bn":"b:","n":"z","s":1},'
              '{"n":"w","t":-1600000000,"vs":"hi"}]')
    got = senml.resolve(pack, now=NOW1)
    assert got[0] == {"n": "a/x", "t": 1600000000, "u": "V", "v": 11, "s": 102}
    assert got[1] == {"n": "a/y", "t": 1600000005, "u": "A", "v": 8.5}
    assert got[2] == {"n": "b:z", "t": 1600000000, "u": "V", "s": 101}
    assert got[3] == {"n": "b:w", "t": NOW1, "u": "V", "vs": "hi"}


def test_relative_time_limit():
    got = senml.resolve([{"n": "a", "t": 2 ** 28 - 1, "v": 1}, {"n": "a", "t": 2 ** 28, "v": 1}],
                        now=NOW1)
    assert got[0]["t"] == NOW1 + 2 ** 28 - 1 and got[1]["t"] == 2 ** 28


def test_resolve_now_default_is_clock():
    got = senml.resolve(_j('[{"n":"a","v":1}]'))
    assert got[0]["t"] > 1.6e9


def test_bad_names():
    for name in ("", "-a", "_a", ".a", "/a", "a b", "a\u00fc", "a#1", "a?", "a+b"):
        pack = [{"n": name, "v": 1}]
        e = raises(SenMLError, senml.resolve, pack, 0)
        assert "name" in str(e)
    for name in ("a", "0", "a-b:c.d/e_f", "Z9/"):
        assert senml.resolve([{"n": name, "v": 1}], 0)[0]["n"] == name
    # the resolved name counts: a valid bn makes "-x" fine
    assert senml.resolve([{"bn": "a", "n": "-x", "v": 1}], 0)[0]["n"] == "a-x"


def test_value_rules():
    raises(SenMLError, _j, '[{"n":"a","v":1,"vs":"x"}]')
    raises(SenMLError, _j, '[{"n":"a","vb":true,"vd":"aGk"}]')
    raises(SenMLError, senml.resolve, [{"n": "a", "v": 1, "vb": True}], 0)
    raises(SenMLError, senml.resolve, _j('[{"n":"a","u":"V"}]'), 0)
    raises(SenMLError, senml.resolve, _j('[{"bn":"a","t":1}]'), 0)
    assert senml.resolve(_j('[{"bn":"a"},{"bu":"V"}]'), 0) == []
    assert senml.resolve(_j('[{"n":"a","s":3}]'), 0) == [{"n": "a", "t": 0, "s": 3}]


def test_field_types():
    for text in ('[{"n":1,"v":1}]', '[{"n":"a","v":"1"}]', '[{"n":"a","v":true}]',
                 '[{"n":"a","vs":1}]', '[{"n":"a","vb":1}]', '[{"n":"a","vd":5}]',
                 '[{"n":"a","v":1,"t":"x"}]', '[{"bt":null,"n":"a","v":1}]',
                 '[{"bver":1.5,"n":"a","v":1}]', '[{"n":"a","v":1,"u":3}]',
                 '[{"n":"a","vd":"a!b"}]', '[{"n":"a","vd":"a"}]', '[1]', '{"n":"a"}', '[[]]',
                 '[{"n":"a","v":1', '', '[{"bver":0,"n":"a","v":1}]'):
        raises(SenMLError, _j, text)


def test_versions_and_labels():
    assert _j('[{"bver":10,"n":"a","v":1}]')[0]["bver"] == 10
    e = raises(SenMLError, _j, '[{"bver":11,"n":"a","v":1}]')
    assert "version" in str(e)
    raises(SenMLError, senml.resolve, _j('[{"bver":5,"n":"a","v":1},{"bver":6,"n":"b","v":1}]'), 0)
    e = raises(SenMLError, _j, '[{"n":"a","v":1,"foo_":2}]')
    assert "foo_" in str(e)
    assert _j('[{"n":"a","v":1,"foo":2}]') == [{"n": "a", "v": 1, "foo": 2}]
    assert senml.resolve(_j('[{"n":"a","v":1,"foo":2}]'), 0)[0]["foo"] == 2


def test_cbor_labels():
    raw = cbor.dumps([{-2: "n1/", 0: "t", 2: 21.5, 99: "ignored", "l": "x"}])
    assert senml.decode(raw, "cbor") == [{"bn": "n1/", "n": "t", "v": 21.5, "l": "x"}]
    raises(SenMLError, senml.decode, cbor.dumps([{"n": "a", 2: 1}]), "cbor")
    raises(SenMLError, senml.decode, cbor.dumps([{0: "a", 2: 1, "x_": 1}]), "cbor")
    raises(SenMLError, senml.decode, cbor.dumps([{0: "a", 2: 1, b"k": 1}]), "cbor")
    raises(SenMLError, senml.decode, cbor.dumps([{0: "a", 8: "aGk"}]), "cbor")
    raises(SenMLError, senml.decode, cbor.dumps({0: "a"}), "cbor")
    raises(DecodeError, senml.decode, b"\x81\xa1\x00", "cbor")
    raises(DecodeError, senml.decode, b"\x81\xa1\x00\x61", "cbor")
    raises(ValueError, senml.decode, b"[]", "xml")
    # bignum numbers are refused (they would overflow float arithmetic in resolve)
    raises(SenMLError, senml.decode, cbor.dumps([{-3: -(1 << 2000), 0: "a", 2: 1}]), "cbor")
    raises(SenMLError, senml.decode, cbor.dumps([{0: "a", 2: 1 << 64}]), "cbor")
    assert senml.decode(cbor.dumps([{0: "a", 2: (1 << 64) - 1}]), "cbor")[0]["v"] == (1 << 64) - 1


# ------------------------------------------------------------------ encode

RECORDS = [
    {"n": "n17/temp", "t": 1763979000.0, "u": "Cel", "v": 21.5},
    {"n": "n17/hum", "t": 1763979000.0, "u": "%RH", "v": 48.25},
    {"n": "n17/co2", "t": 1763979000.5, "u": "ppm", "v": 612},
    {"n": "n17/door", "t": 1763979001.0, "vb": True},
    {"n": "n17/label", "t": 1763979001.0, "vs": "north gate"},
    {"n": "n17/raw", "t": 1763979002.0, "vd": b"\x00\xff\x10"},
    {"n": "n17/energy", "t": 1763979002.0, "u": "J", "s": 1234.5},
    {"n": "n17/health.vbat", "t": 1763979003.0, "u": "V", "v": 3.71, "ut": 60},
]


def test_encode_roundtrip_both_formats():
    for fmt in ("cbor", "json", senml.CT_SENML_CBOR, senml.CT_SENML_JSON):
        payload = senml.encode(RECORDS, fmt)
        pack = senml.decode(payload, fmt)
        assert pack[0]["bn"] == "n17/" and pack[0]["bt"] == 1763979000.0
        assert "t" not in pack[0] and pack[2]["t"] == 0.5
        assert senml.resolve(pack, now=NOW1) == RECORDS, fmt


def test_encode_picks_bases():
    recs = [{"n": "n1/a", "t": 1763979000, "u": "V", "v": 1},
            {"n": "n1/b", "t": 1763979010, "u": "V", "v": 2},
            {"n": "n1/c", "t": 1763979020, "u": "A", "v": 3}]
    assert senml.decode(senml.encode(recs), "cbor") == [
        {"bn": "n1/", "bt": 1763979000, "bu": "V", "n": "a", "v": 1},
        {"n": "b", "t": 10, "v": 2}, {"n": "c", "t": 20, "u": "A", "v": 3}]
    assert senml.encode(recs) == cbor.dumps([
        {-2: "n1/", -3: 1763979000, -4: "V", 0: "a", 2: 1},
        {0: "b", 6: 10, 2: 2}, {0: "c", 6: 20, 1: "A", 2: 3}])
    # No '/' in the common prefix: no bn. A record without time: no bt.
    recs2 = [{"n": "ab", "v": 1}, {"n": "ac", "t": 5, "v": 2}]
    assert senml.decode(senml.encode(recs2), "cbor") == [{"n": "ab", "v": 1},
                                                         {"n": "ac", "t": 5, "v": 2}]
    # Explicit base name; the name equal to it drops "n".
    pack = senml.decode(senml.encode([{"n": "x:y", "v": 1}, {"n": "x:yz", "v": 2}],
                                     "json", base_name="x:y"), "json")
    assert pack == [{"bn": "x:y", "v": 1}, {"n": "z", "v": 2}]
    assert senml.decode(senml.encode([]), "cbor") == []


def test_encode_errors():
    raises(EncodeError, senml.encode, [{"n": "a b", "v": 1}])
    raises(EncodeError, senml.encode, [{"n": "a", "v": 1, "vs": "x"}])
    raises(EncodeError, senml.encode, [{"n": "a"}])
    raises(EncodeError, senml.encode, [{"n": "a", "v": "1"}])
    raises(EncodeError, senml.encode, [{"n": "a", "bn": "x", "v": 1}])
    raises(EncodeError, senml.encode, [{"n": "a/b", "v": 1}], "cbor", "b/")
    raises(EncodeError, senml.encode, [{"n": "a", "v": float("nan")}], "json")
    raises(ValueError, senml.encode, [], "xml")
    # NaN is fine in CBOR (a failed sensor read)
    v = senml.resolve(senml.decode(senml.encode([{"n": "a", "v": float("nan")}]), "cbor"), 0)
    assert v[0]["v"] != v[0]["v"]
