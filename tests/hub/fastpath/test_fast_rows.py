"""fast/rows.pyx against the Python row loop of hub/codec.Decoder (its reference): the same rows,
the same errors with the same texts, for generated packs (cbor2 encodes them)."""

import math

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smartpark.hub import codec

pytestmark = pytest.mark.skipif(codec._batch_rows is None,
                                reason="smartpark.fast.rows not built (or pure path forced)")

NOW = 1.7e9

names = st.sampled_from(["n1/", "n2/", "urn:dev:x:", "", "solo", "a/b/"])
sensors = st.sampled_from(["temp", "hum", "x", "", "health.rssi", "é"])
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10 ** 6))


@st.composite
def records(draw, first):
    r = {}
    if first:
        bn = draw(names)
        if bn:
            r[-2] = bn
        if draw(st.booleans()):
            r[-3] = draw(st.one_of(st.floats(1e9, 2e9), st.floats(allow_nan=True),
                                   st.integers(0, 1000)))
        if draw(st.booleans()):
            r[-4] = draw(st.sampled_from(["Cel", "%RH"]))
    r[0] = draw(sensors)
    kind = draw(st.sampled_from(["v", "vb", "vs", "vd", "s", "none"]))
    if kind == "v":
        r[2] = draw(numbers)
    elif kind == "vb":
        r[4] = draw(st.booleans())
    elif kind == "vs":
        r[3] = draw(st.text(max_size=8))
    elif kind == "vd":
        r[8] = draw(st.binary(max_size=8))
    if kind == "s" or draw(st.integers(0, 4)) == 0:
        r[5] = draw(numbers)
    if draw(st.booleans()):
        r[6] = draw(st.one_of(st.integers(-5, 5), st.floats(allow_nan=True)))
    if draw(st.integers(0, 5)) == 0:
        r[1] = draw(st.sampled_from(["V", "W"]))
    return r


@st.composite
def packs(draw):
    n = draw(st.integers(0, 5))
    recs = [draw(records(i == 0)) for i in range(n)]
    data = cbor2.dumps(recs)
    if draw(st.integers(0, 9)) == 0:
        data = data[:draw(st.integers(0, len(data)))]
    return data


def _norm(out):
    res = []
    for o in out:
        if isinstance(o, Exception):
            res.append((type(o).__name__, str(o)))
        else:
            res.append([tuple("nan" if isinstance(x, float) and math.isnan(x) else x for x in row)
                        for row in o])
    return res


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packs(), min_size=1, max_size=6))
def test_rows_twin_matches_python_loop(payloads):
    items = [(p, 112) for p in payloads]
    twin = codec.Decoder()
    ref = codec.Decoder(compiled_rows=False)
    assert twin.rows_twin is not None and ref.rows_twin is None
    assert _norm(twin.decode(items, NOW)) == _norm(ref.decode(items, NOW))


def test_rows_twin_example():
    pack = cbor2.dumps([{-2: "n1/", -3: 1.7e9, 0: "temp", 2: 21.5, -4: "Cel"},
                        {0: "door", 4: True}, {0: "state", 3: "ok"}, {0: "bad", 2: float("nan")}])
    out = codec.Decoder().decode([(pack, 112), (pack[:-10], 112)], NOW)
    assert str(out[0]) == "record 3: value is not a finite number"
    assert type(out[1]).__name__ == "CBORDecodeError"
    good = cbor2.dumps([{-2: "n1/", -3: 1.7e9, 0: "temp", 2: 21.5, 1: "Cel"},
                        {0: "door", 4: True, 6: 1}])
    (rows,) = codec.Decoder().decode([(good, 112)], NOW)
    assert rows == [("n1", "temp", "Cel", 1.7e9, 0, 21.5, None),
                    ("n1", "door", None, 1.7e9 + 1, 2, 1, None)]
