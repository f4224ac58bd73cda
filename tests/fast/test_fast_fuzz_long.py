"""Long differential fuzz (marker `slow`): mutated SenML-CBOR payloads, compiled vs reference.

Seed packs come from the hypothesis strategies in fastgen (cbor2 and the hand
encoder with indefinite lengths and short floats); each case flips, sets,
inserts, deletes or cuts bytes, then decodes in a two-payload batch that shares
one SeriesTable across all cases (so the name and node caches are exercised),
and must agree with protocol.senml on accept/reject and on the records.

    .venv/bin/pytest tests/fast/test_fast_fuzz_long.py -m slow
    FAST_FUZZ_CASES=5000000 .venv/bin/pytest tests/fast/test_fast_fuzz_long.py -m slow
"""

import os
import random

import pytest
from fastgen import NOW, cbor2_pack, hand_pack, pack, records_equal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smartpark import fast
from smartpark.protocol import senml
from smartpark.protocol.errors import DecodeError

pytestmark = pytest.mark.slow

CASES = int(os.environ.get("FAST_FUZZ_CASES", "20000"))


def _reference(raw):
    try:
        return senml.resolve(senml.decode(raw, "cbor"), NOW)
    except DecodeError:
        return None


def _mutate(rnd, raw):
    raw = bytearray(raw)
    for _ in range(rnd.randint(1, 5)):
        op = rnd.randrange(5)
        pos = rnd.randrange(len(raw)) if raw else 0
        if op == 0 and raw:
            raw[pos] ^= 1 << rnd.randrange(8)
        elif op == 1 and raw:
            raw[pos] = rnd.randrange(256)
        elif op == 2:
            del raw[pos:]
        elif op == 3:
            raw[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 4)))
        elif op == 4 and raw:
            del raw[pos]
    return bytes(raw)


@settings(max_examples=1, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.lists(pack(), min_size=200, max_size=200), st.integers(0, 2 ** 32))
def test_mutated_payloads_long(seeds, seed):
    rnd = random.Random(seed)
    corpus = []
    for p in seeds:
        corpus.append(cbor2_pack(p))
        corpus.append(hand_pack(p, True, rnd.choice([2, 4, 8])))
    table = fast.SeriesTable()
    bad = []
    for _ in range(CASES):
        raw = _mutate(rnd, rnd.choice(corpus))
        other = rnd.choice(corpus)
        batch = fast.decode_batch([raw, other], NOW, table)
        for i, payload in enumerate((raw, other)):
            want = _reference(payload)
            if (want is None) != (not batch.ok[i]) or (
                    want is not None and not records_equal(batch.records(i), want)):
                bad.append((payload.hex(), batch.errors[i]))
    assert not bad, bad[:5]
