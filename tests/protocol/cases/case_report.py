"""Cases for protocol/report.py, the 2.04 report-ack payload (both interpreters).

The exact bytes below were cross-checked with cbor2's canonical encoder
(cbor2.dumps(m, canonical=True)), which orders keys the way cbor.dumps does.
"""

from binascii import hexlify, unhexlify

from smartpark.protocol import cbor, report
from smartpark.protocol.errors import DecodeError


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)


def test_encode_exact_bytes():
    got = report.encode_ack(1763979000.5, 3, "1.2.0", 8, 1)
    assert hexlify(got).decode() == "a501fb41da490bbe20000002030365312e322e3004080501"
    # no firmware wanted: key 3 absent; an int time is sent as a float
    got = report.encode_ack(1763979000, 0)
    assert hexlify(got).decode() == "a401fb41da490bbe000000020004000500"


def test_roundtrip():
    ack = report.decode_ack(report.encode_ack(1763979000.25, 7, "2.0.1", 12, 3))
    assert ack == {"time": 1763979000.25, "config_version": 7, "firmware": "2.0.1",
                   "stored": 12, "duplicates": 3}
    ack = report.decode_ack(report.encode_ack(5, 0))
    assert ack["firmware"] is None and ack["time"] == 5.0 and type(ack["time"]) is float


def test_decode_minimal_and_int_time():
    # Only the hub time is required; an integer time is accepted.
    ack = report.decode_ack(cbor.dumps({1: 1763979000}))
    assert ack == {"time": 1763979000.0, "config_version": 0, "firmware": None,
                   "stored": 0, "duplicates": 0}
    # Unknown keys are ignored (room for later fields).
    assert report.decode_ack(cbor.dumps({1: 1.5, 9: "x"}))["time"] == 1.5


def test_decode_errors():
    for obj in ([1.5], {2: 1}, {1: "now"}, {1: True}, {1: None}, {1: 1.5, 2: "3"},
                {1: 1.5, 3: 4}, {1: 1.5, 2: 1.5}):
        raises(DecodeError, report.decode_ack, cbor.dumps(obj))
    raises(DecodeError, report.decode_ack, b"")
    raises(DecodeError, report.decode_ack, unhexlify("a201fb41da"))
    raises(DecodeError, report.decode_ack, unhexlify("a101f93c0000"))  # trailing byte


def test_health_names_are_valid_senml():
    from smartpark.protocol import senml
    for key in report.HEALTH_KEYS:
        assert senml.valid_name("n17/" + report.HEALTH_PREFIX + key), key
