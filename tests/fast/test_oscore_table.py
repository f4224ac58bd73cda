"""The hub's OSCORE context table (fast.OscoreTable: fast/oscore.pyx, else fast/oscore_py.py).

A node's requests, protected by protocol/oscore.py, are opened, accepted
once, refused when replayed, answered with responses the node verifies; the
Echo exchange re-establishes a lost window. Both twins run these tests (the
pure one under SMARTPARK_PUREPYTHON=1 or when the extension is absent)."""

import os

import pytest
from smartpark import fast
from smartpark.fast.oscore_py import Table as PureTable
from smartpark.protocol import coap, oscore
from smartpark.protocol.errors import OscoreError

TABLES = [pytest.param(PureTable, id="pure")]
if fast.EXTENSIONS.get("oscore"):
    TABLES.append(pytest.param(fast.OscoreTable, id="compiled"))


def _node(kid=b"\x01\x02\x03"):
    secret, salt = os.urandom(16), os.urandom(8)
    return dict(sender_id=kid, recipient_id=b"", secret=secret, salt=salt)


def _report(ctx, seq, payload=b"\xa1\x00\x61x", echo=None):
    m = coap.make_request(coap.POST, "/r", seq & 0xFFFF, b"\x01", payload=payload,
                          content_format=112)
    if echo is not None:
        m.add_option(coap.ECHO, echo)
    return oscore.protect_request(ctx, seq, m)


def _table(cls, *nodes):
    t = cls(window=32)
    for i, n in enumerate(nodes):
        t.add("node-%d" % i, **n)
    return t


@pytest.mark.parametrize("cls", TABLES)
def test_open_accept_respond(cls):
    n = _node()
    t = _table(cls, n)
    ctx = oscore.Context(n["secret"], n["salt"], n["sender_id"], b"")
    outer, binding = _report(ctx, 5)
    o = t.unprotect(outer.get_option(coap.OSCORE), outer.payload, outer.code)
    assert (o.node, o.seq, o.code, o.payload) == ("node-0", 5, coap.POST, b"\xa1\x00\x61x")
    assert (coap.URI_PATH, b"r") in o.options
    t.accept(o)
    with pytest.raises(OscoreError) as e:
        t.accept(t.unprotect(outer.get_option(coap.OSCORE), outer.payload, outer.code))
    assert e.value.code == coap.UNAUTHORIZED and "replay" in str(e.value)
    value, ct = t.protect_response(o, coap.CHANGED, [(coap.CONTENT_FORMAT, b"\x3c")], b"ack")
    resp = coap.Message(coap.ACK, coap.CHANGED, 5, b"\x01", [(coap.OSCORE, value)], ct)
    got = oscore.unprotect_response(ctx, binding, coap.parse(resp.encode()))
    assert got.code == coap.CHANGED and got.payload == b"ack"


@pytest.mark.parametrize("cls", TABLES)
def test_errors(cls):
    n = _node()
    t = _table(cls, n)
    ctx = oscore.Context(n["secret"], n["salt"], n["sender_id"], b"")
    outer, _ = _report(ctx, 1)
    opt = outer.get_option(coap.OSCORE)
    stranger = oscore.Context(os.urandom(16), b"", b"\x09\x09\x09", b"")
    so, _ = _report(stranger, 1)
    cases = [
        ((b"\xe0", outer.payload), coap.BAD_OPTION),
        ((so.get_option(coap.OSCORE), so.payload), coap.UNAUTHORIZED),
        ((opt, outer.payload[:-1] + bytes((outer.payload[-1] ^ 1,))), coap.BAD_REQUEST),
        ((opt, b""), coap.BAD_REQUEST),
    ]
    for (o, p), code in cases:
        with pytest.raises(OscoreError) as e:
            t.unprotect(o, p, coap.POST)
        assert e.value.code == code
    # a wrong key for this kid: the tag does not verify
    forged = oscore.Context(os.urandom(16), n["salt"], n["sender_id"], b"")
    fo, _ = _report(forged, 2)
    with pytest.raises(OscoreError) as e:
        t.unprotect(fo.get_option(coap.OSCORE), fo.payload, coap.POST)
    assert e.value.code == coap.BAD_REQUEST


@pytest.mark.parametrize("cls", TABLES)
def test_echo_after_lost_window(cls):
    n = _node()
    t = _table(cls, n)
    ctx = oscore.Context(n["secret"], n["salt"], n["sender_id"], b"")
    t.accept(t.unprotect(*_opt(_report(ctx, 10)[0])))
    t.lose_windows()
    o = t.unprotect(*_opt(_report(ctx, 11)[0]))
    with pytest.raises(OscoreError) as e:
        t.accept(o)
    echo = e.value.echo
    assert e.value.code == coap.UNAUTHORIZED and echo and len(echo) == 8
    # the 4.01 goes out with the hub's own Partial IV
    t.protect_response(o, coap.UNAUTHORIZED, [(coap.ECHO, echo)], b"", own_seq=1)
    # a wrong Echo is refused again, with the same value to use
    bad = t.unprotect(*_opt(_report(ctx, 12, echo=b"x" * 8)[0]))
    with pytest.raises(OscoreError) as e2:
        t.accept(bad)
    assert e2.value.echo == echo
    good = t.unprotect(*_opt(_report(ctx, 13, echo=echo)[0]))
    t.accept(good)
    assert good.own_piv
    with pytest.raises(OscoreError):
        t.protect_response(good, coap.CHANGED, [], b"")  # must use its own PIV
    t.protect_response(good, coap.CHANGED, [], b"", own_seq=2)
    with pytest.raises(OscoreError):  # the window now holds 13
        t.accept(t.unprotect(*_opt(_report(ctx, 13, echo=echo)[0])))
    t.accept(t.unprotect(*_opt(_report(ctx, 14)[0])))


@pytest.mark.parametrize("cls", TABLES)
def test_windows_survive_a_clean_restart(cls):
    n = _node()
    t = _table(cls, n)
    ctx = oscore.Context(n["secret"], n["salt"], n["sender_id"], b"")
    for s in (3, 4, 7):
        t.accept(t.unprotect(*_opt(_report(ctx, s)[0])))
    state = t.windows_state()
    t2 = _table(cls, n)
    t2.restore_windows(state)
    with pytest.raises(OscoreError):
        t2.accept(t2.unprotect(*_opt(_report(ctx, 4)[0])))
    t2.accept(t2.unprotect(*_opt(_report(ctx, 5)[0])))
    t3 = _table(cls, n)
    t3.restore_windows({})
    assert not t3.established("node-0")


@pytest.mark.parametrize("cls", TABLES)
def test_keys(cls):
    a, b = _node(b"\x01"), _node(b"\x02")
    t = _table(cls, a, b)
    assert len(t) == 2 and t.node_of(b"\x02") == "node-1" and t.node_of(b"\x03") is None
    with pytest.raises(ValueError):
        t.add("node-9", **a)   # kid of node-0
    ctx = oscore.Context(a["secret"], a["salt"], a["sender_id"], b"")
    t.accept(t.unprotect(*_opt(_report(ctx, 1)[0])))
    t.add("node-0", **a)   # the same key again keeps the window
    with pytest.raises(OscoreError):
        t.accept(t.unprotect(*_opt(_report(ctx, 1)[0])))
    t.remove("node-0")
    with pytest.raises(OscoreError) as e:
        t.unprotect(*_opt(_report(ctx, 2)[0]))
    assert e.value.code == coap.UNAUTHORIZED


def _opt(outer):
    return outer.get_option(coap.OSCORE), outer.payload, outer.code
