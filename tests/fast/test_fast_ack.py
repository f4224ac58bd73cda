"""fast/ack.pyx against protocol/report.py (its reference): the same bytes for every ack, and
ack_head is the ack without its last two fields (what Endpoint.respond_many completes)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from peers import require
from smartpark import fast
from smartpark.protocol import report as ref

pytestmark = pytest.mark.compiled


@pytest.fixture(autouse=True, scope="module")
def _ack_built():
    require(fast.EXTENSIONS["ack"], "smartpark.fast.ack: %s" % fast.UNAVAILABLE.get("ack"))


@settings(max_examples=400, deadline=None)
@given(t=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 2 ** 40),
                   st.floats(1.6e9, 1.9e9)),
       cv=st.integers(0, 2 ** 64), fw=st.one_of(st.none(), st.just(""), st.text(max_size=40)),
       stored=st.integers(0, 2 ** 33), dup=st.integers(0, 70000))
def test_encode_ack_twin_is_byte_identical(t, cv, fw, stored, dup):
    assert fast.encode_ack(t, cv, fw, stored, dup) == ref.encode_ack(t, cv, fw, stored, dup)


@settings(max_examples=300, deadline=None)
@given(t=st.one_of(st.floats(1.6e9, 1.9e9), st.integers(0, 2 ** 40), st.just(1e9 + 0.5)),
       cv=st.integers(0, 2 ** 40), fw=st.one_of(st.none(), st.just(""), st.text(max_size=40)),
       stored=st.integers(0, 2 ** 33))
def test_ack_head_is_encode_ack_without_its_last_two_fields(t, cv, fw, stored):
    from smartpark.hub import ingest

    tail = ref.encode_ack(t, cv, fw, stored, 0)[len(fast.ack_head(t, cv, fw)):]
    assert fast.ack_head(t, cv, fw) + tail == ref.encode_ack(t, cv, fw, stored, 0)
    assert tail[:1] == b"\x04" and tail[-2:] == b"\x05\x00"
    assert fast.ack_head(t, cv, fw) == ref.ack_head(t, cv, fw) == ingest.ack_head(t, cv, fw)
