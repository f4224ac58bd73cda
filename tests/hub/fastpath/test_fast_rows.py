"""fast/rows.pyx against its pure twin fast/rows_py.py (the reference): the same rows, the
same errors with the same texts, for generated packs (cbor2 encodes them); and the rows the
hub's Decoder gives, whichever twin the selector picked."""

import math

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers import require
from smartpark import fast
from smartpark.fast import kinds, rows_py
from smartpark.hub import codec
from smartpark.protocol.errors import DecodeError, SenMLError

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
    if draw(st.integers(0, 3)) == 0:   # time provenance; only true marks the reading
        r["est"] = draw(st.sampled_from([True, False, 1, "yes", None]))
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


def _rows(batch_rows, batch, table, pick=None):
    n = batch.n_payloads if pick is None else len(pick)
    out = [None] * n
    batch_rows(batch, table, {}, list(range(n)), out, codec.split_name, SenMLError, DecodeError,
               pick)
    return _norm(out)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packs(), min_size=1, max_size=6), st.randoms(use_true_random=False))
def _twins_agree(payloads, rnd):
    table = fast.SeriesTable()
    batch = fast.decode_batch(payloads, NOW, table)
    assert _rows(fast.batch_rows, batch, table) == _rows(rows_py.batch_rows, batch, table)
    pick = rnd.sample(range(len(payloads)), rnd.randint(0, len(payloads)))
    assert (_rows(fast.batch_rows, batch, table, pick)
            == _rows(rows_py.batch_rows, batch, table, pick))


@pytest.mark.compiled
def test_compiled_rows_match_the_pure_twin():
    require(fast.EXTENSIONS["rows"], "smartpark.fast.rows: %s" % fast.UNAVAILABLE.get("rows"))
    assert fast.batch_rows is not rows_py.batch_rows
    _twins_agree()


def test_rows_twin_example():
    pack = cbor2.dumps([{-2: "n1/", -3: 1.7e9, 0: "temp", 2: 21.5, -4: "Cel"},
                        {0: "door", 4: True}, {0: "state", 3: "ok"}, {0: "bad", 2: float("nan")}])
    out = codec.Decoder().decode([(pack, 112), (pack[:-10], 112)], NOW)
    assert str(out[0]) == "record 3: value is not a finite number"
    assert type(out[1]).__name__ == "CBORDecodeError"
    good = cbor2.dumps([{-2: "n1/", -3: 1.7e9, 0: "temp", 2: 21.5, 1: "Cel", "est": True},
                        {0: "door", 4: True, 6: 1, "est": 1}])
    (rows,) = codec.Decoder().decode([(good, 112)], NOW)
    assert rows == [("n1", "temp", "Cel", 1.7e9, kinds.NUM, 21.5, None, 1),
                    ("n1", "door", None, 1.7e9 + 1, kinds.BOOL, 1, None, None)]
    # a sum without a value is stored as a number with no value
    (rows,) = codec.Decoder().decode([(cbor2.dumps([{0: "n1/e", 5: 3.5, 6: 1.7e9}]), 112)], NOW)
    assert rows == [("n1", "e", None, 1.7e9, kinds.NUM, None, 3.5, None)]
    # the JSON path reads the same label
    (rows,) = codec.Decoder().decode([(b'[{"n": "n1/t", "v": 1, "t": 1.7e9, "est": true}]', 110)],
                                     NOW)
    assert rows == [("n1", "t", None, 1.7e9, kinds.NUM, 1.0, None, 1)]
