"""fast/oscore.pyx against its pure twin fast/oscore_py.py, against `cryptography`, under
fuzzing, and in a real hub (aiocoap's OSCORE client -> the fast path).

- AES-CCM-16-64-128 through OpenSSL against cryptography's AESCCM (the outside judge);
- the C Table and the pure Table fed the same generated messages (reports and other
  requests, replays, old sequence numbers, unknown kids, bit flips, cuts): the same Opened
  fields, the same OscoreError codes and texts, the same replay decisions and windows, the
  same protected responses; `open_reports` takes exactly the reports the pure table would
  open and accept, and changes no state for the rest; `seal_acks` seals the ack bytes
  respond_many sends in the clear, as the pure table's protect_response would;
- random option values and ciphertexts: only OscoreError, never a crash (bounded loops);
- end to end: an aiocoap OSCORE client's report goes through the fast path (its counters)
  and is stored once; the same datagram replayed gets 4.01 and stores nothing.
"""

import asyncio
import os
import random
import socket
import sys

import pytest
from peers import require
from smartpark import fast
from smartpark.fast import oscore_py
from smartpark.protocol import coap, oscore
from smartpark.protocol.errors import OscoreError
from smartpark.protocol.report import ack_head, decode_ack, encode_ack

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "hub"))

pytestmark = pytest.mark.compiled


@pytest.fixture(scope="module")
def C():
    require(fast.EXTENSIONS.get("oscore"),
            "smartpark.fast.oscore: %s" % fast.UNAVAILABLE.get("oscore"))
    from smartpark.fast import oscore as mod
    return mod


def _outcome(fn, *args, **kw):
    """('ok', value) or ('err', type name, code, text) -- what the twins must agree on."""
    try:
        return ("ok", fn(*args, **kw))
    except OscoreError as e:
        return ("err", "OscoreError", e.code, str(e))
    except (ValueError, TypeError) as e:
        return ("err", type(e).__name__, None, str(e))


def _opened(o):
    return (o.node, o.kid, o.piv, o.seq, o.code, o.options, o.payload, o.echo, o.own_piv)


# ---- AES-CCM ------------------------------------------------------------------------------

def test_ccm_agrees_with_cryptography(C):
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM
    rnd = random.Random(1)
    for _ in range(300):
        key, nonce = rnd.randbytes(16), rnd.randbytes(13)
        pt, aad = rnd.randbytes(rnd.randrange(0, 300)), rnd.randbytes(rnd.randrange(0, 60))
        want = AESCCM(key, 8).encrypt(nonce, pt, aad)
        assert C.aes_ccm_encrypt(key, nonce, pt, aad) == want
        assert C.aes_ccm_decrypt(key, nonce, want, aad) == pt
        bad = bytearray(want)
        bad[rnd.randrange(len(bad))] ^= 1 << rnd.randrange(8)
        with pytest.raises(OscoreError) as e:
            C.aes_ccm_decrypt(key, nonce, bytes(bad), aad)
        assert e.value.code == 0x80
        # the context is reusable after a failure
        assert C.aes_ccm_decrypt(key, nonce, want, aad) == pt
    for data in (b"short", bytes(20)):  # the reference's errors, code and text
        want = _outcome(oscore.aes_ccm_decrypt, bytes(16), bytes(13), data, b"")
        assert want[0] == "err" and _outcome(C.aes_ccm_decrypt, bytes(16), bytes(13), data,
                                             b"") == want
    with pytest.raises(ValueError):
        C.aes_ccm_encrypt(bytes(15), bytes(13), b"", b"")


# ---- generated messages -------------------------------------------------------------------

CF_CBOR = coap.encode_uint(112)


def _inner(rnd, kind, echo=None):
    """(code, options, payload) of one inner request."""
    pay = rnd.randbytes(rnd.randrange(1, 80))
    opts = [(coap.URI_PATH, b"r")]
    code = coap.POST
    if kind == "report":
        opts.append((coap.CONTENT_FORMAT, rnd.choice([CF_CBOR, coap.encode_uint(110), b""])))
    elif kind == "report_no_cf":
        pass
    elif kind == "query":
        opts += [(coap.CONTENT_FORMAT, CF_CBOR), (coap.URI_QUERY, b"x=1")]
    elif kind == "empty":
        pay = b""
    elif kind == "get":
        code, opts, pay = coap.GET, [(coap.URI_PATH, b"cfg"), (coap.URI_PATH, b"n")], b""
    elif kind == "path":
        opts = [(coap.URI_PATH, b"rd"), (coap.CONTENT_FORMAT, CF_CBOR)]
    if echo is not None:
        opts.append((coap.ECHO, echo))
    return code, opts, pay


def _protect(ctx, seq, code, opts, pay, mid=1, token=b"\x01\x02"):
    msg = coap.Message(coap.CON, code, mid, token, list(opts), pay)
    outer, _binding = oscore.protect_request(ctx, seq, msg)
    return outer.get_option(coap.OSCORE), outer.payload, outer.code


def _mutate(rnd, option, payload, code):
    what = rnd.randrange(6)
    if what == 0 and option:
        b = bytearray(option)
        b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
        return bytes(b), payload, code
    if what == 1 and payload:
        b = bytearray(payload)
        b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
        return option, bytes(b), code
    if what == 2:
        return option, payload[:rnd.randrange(len(payload) + 1)], code
    if what == 3:
        return option[:rnd.randrange(len(option) + 1)], payload, code
    if what == 4:
        return option, payload, rnd.choice([coap.GET, coap.PUT, coap.FETCH, 0x44])
    return bytes([option[0] | 0x10, 2, 0xAA, 0xBB]) + option[1:] if option else b"\x10", \
        payload, code


class Twins:
    """One node population in three tables: the C table used like the aiocoap path, the pure
    table, and a C table used like the fast path (batch open, aiocoap path for the rest)."""

    def __init__(self, C, rnd, nodes=12, window=32):
        self.c = C.Table(window)
        self.p = oscore_py.Table(window)
        self.b = C.Table(window)
        self.ctx = {}
        self.seq = {}
        for i in range(nodes):
            node = "n%d" % i
            sid, secret, salt = rnd.randbytes(rnd.choice([1, 3, 7])), rnd.randbytes(16), \
                rnd.randbytes(8)
            while any(sid == c.sender_id for c in self.ctx.values()):
                sid = rnd.randbytes(3)
            for t in (self.c, self.p, self.b):
                t.add(node, sid, b"", secret, salt)
            self.ctx[node] = oscore.Context(secret, salt, sid, b"")
            self.seq[node] = 0

    def next_seq(self, rnd, node):
        s = self.seq[node]
        r = rnd.random()
        if r < 0.1 and s:
            return rnd.randrange(max(0, s - 40), s)         # a replay or an old one
        if r < 0.15:
            s += rnd.randrange(30, 100)                     # a jump past the window
        self.seq[node] = s + 1
        return s

    def feed(self, option, payload, code):
        co = _outcome(self.c.unprotect, option, payload, code)
        po = _outcome(self.p.unprotect, option, payload, code)
        assert co[0] == po[0], (co, po)
        if co[0] == "err":
            assert co == po
        else:
            assert _opened(co[1]) == _opened(po[1])
        before = self.b.windows_state()
        # fast/udp.pyx hands the table outer POSTs only
        got = self.b.open_reports([option], [payload])[0] if code == coap.POST else None
        if co[0] == "err":
            assert got is None and self.b.windows_state() == before
            return None
        o_c, o_p = co[1], po[1]
        report = (code == coap.POST and o_p.code == coap.POST and o_p.payload != b""
                  and [n for n, _ in o_p.options] in ([coap.URI_PATH],
                                                      [coap.URI_PATH, coap.CONTENT_FORMAT])
                  and o_p.options[0][1] == b"r"
                  and all(len(v) <= 2 for n, v in o_p.options if n == coap.CONTENT_FORMAT))
        established = self.p.established(o_p.node)
        ca = _outcome(self.c.accept, o_c)
        pa = _outcome(self.p.accept, o_p)
        assert ca[0] == pa[0]
        if ca[0] == "err":
            assert ca[2] == pa[2] and (ca[3] == pa[3] or "Echo" in pa[3])
        if report and established and pa[0] == "ok":
            cf = [v for n, v in o_p.options if n == coap.CONTENT_FORMAT]
            assert got is not None
            assert got[:3] == (o_p.node, coap.decode_uint(cf[0]) if cf else None, o_p.payload)
        else:
            assert got is None
            assert self.b.windows_state() == before
            if pa[0] == "ok":   # the aiocoap path takes it from here, with the same table
                self.b.accept(self.b.unprotect(option, payload, code))
        assert self.b.windows_state() == self.p.windows_state() == self.c.windows_state()
        return (o_c, o_p, got) if pa[0] == "ok" else None


def test_twins_agree_on_generated_messages(C):
    rnd = random.Random(7)
    tw = Twins(C, rnd)
    stranger = oscore.Context(rnd.randbytes(16), rnd.randbytes(8), b"\xee\xee\xee", b"")
    kinds = ["report"] * 6 + ["report_no_cf", "query", "empty", "get", "path"]
    accepted = 0
    for step in range(1500):
        node = rnd.choice(sorted(tw.ctx))
        ctx = stranger if rnd.random() < 0.03 else tw.ctx[node]
        seq = tw.next_seq(rnd, node)
        option, payload, code = _protect(ctx, seq, *_inner(rnd, rnd.choice(kinds)))
        if rnd.random() < 0.15:
            option, payload, code = _mutate(rnd, option, payload, code)
        res = tw.feed(option, payload, code)
        if res is not None:
            accepted += 1
            o_c, o_p, _got = res
            for own in (None, rnd.randrange(0, 1 << 40)):
                rc = _outcome(tw.c.protect_response, o_c, 0x44, [(12, b"\x3c")], b"ack", own)
                rp = _outcome(tw.p.protect_response, o_p, 0x44, [(12, b"\x3c")], b"ack", own)
                assert rc == rp
        if step % 500 == 499:  # a clean restart: the windows saved and restored
            state = tw.p.windows_state()
            assert state == tw.c.windows_state()
            for t in (tw.c, tw.p, tw.b):
                t.restore_windows(state)
    assert accepted > 500
    assert sum(tw.b.fallbacks().values()) > 100 and tw.b.n_opened > 300


def test_echo_after_lost_windows(C):
    rnd = random.Random(3)
    tw = Twins(C, rnd, nodes=2)
    node = "n0"
    ctx = tw.ctx[node]
    for t in (tw.c, tw.p, tw.b):
        t.lose_windows()
        assert not t.established(node) and t.windows_state() == {}
    opt, pay, code = _protect(ctx, 5, *_inner(rnd, "report"))
    assert tw.b.open_reports([opt], [pay]) == [None]
    assert tw.b.fallbacks()["echo"] == 1
    echoes = {}
    for name in ("c", "p", "b"):
        t = getattr(tw, name)
        with pytest.raises(OscoreError) as e:
            t.accept(t.unprotect(opt, pay, code))
        assert e.value.code == 0x81 and len(e.value.echo) == 8
        echoes[name] = e.value.echo
        with pytest.raises(OscoreError) as again:  # the same pending value until used
            t.accept(t.unprotect(opt, pay, code))
        assert again.value.echo == e.value.echo
    opened = {}
    for name in ("c", "p", "b"):
        t = getattr(tw, name)
        o2, p2, c2 = _protect(ctx, 6, *_inner(rnd, "report", echo=echoes[name]))
        # the request with Echo is not a report for the fast path: aiocoap's
        assert name != "b" or t.open_reports([o2], [p2]) == [None]
        wrong = _protect(ctx, 6, *_inner(rnd, "report", echo=b"\0" * 8))
        with pytest.raises(OscoreError):
            t.accept(t.unprotect(*wrong))
        o = t.unprotect(o2, p2, c2)
        t.accept(o)
        assert o.own_piv and t.established(node)
        opened[name] = o
        with pytest.raises(OscoreError) as e:
            t.protect_response(o, 0x44, [], b"")
        assert e.value.code == coap.INTERNAL_SERVER_ERROR
    assert tw.c.windows_state() == tw.p.windows_state() == tw.b.windows_state()
    assert (tw.c.protect_response(opened["c"], 0x44, [], b"x", own_seq=9)[0]
            == tw.p.protect_response(opened["p"], 0x44, [], b"x", own_seq=9)[0] == b"\x01\x09")
    # the window is back: reports take the fast path again
    o3, p3, _ = _protect(ctx, 7, *_inner(rnd, "report"))
    assert tw.b.open_reports([o3], [p3])[0] is not None


def test_add_remove_and_kid_lookup(C):
    rnd = random.Random(5)
    c, p = C.Table(), oscore_py.Table()
    live = {}
    for step in range(3000):
        if live and rnd.random() < 0.3:
            node = rnd.choice(sorted(live))
            c.remove(node)
            p.remove(node)
            del live[node]
        else:
            node = "m%d" % rnd.randrange(1500)
            sid = rnd.randbytes(rnd.choice([0, 1, 2, 3, 7])) or b"\x00"
            args = (node, sid, b"", rnd.randbytes(16), rnd.randbytes(8))
            rc, rp = _outcome(c.add, *args), _outcome(p.add, *args)
            assert rc == rp
            if rc[0] == "ok":
                live = {n: k for n, k in live.items() if n != node}
                live[node] = sid
        if step % 100 == 0:
            assert len(c) == len(p) == len(live)
            assert c.nodes() == p.nodes()
            for node, sid in live.items():
                assert c.node_of(sid) == p.node_of(sid) == node
            for _ in range(20):
                kid = rnd.randbytes(rnd.randrange(0, 9))
                assert c.node_of(kid) == p.node_of(kid)
    with pytest.raises(ValueError):
        C.Table(0)
    with pytest.raises(ValueError):
        C.Table(65)


def test_seal_acks_are_respond_many_acks_protected(C):
    from smartpark.hub.interfaces import ReportResult
    rnd = random.Random(11)
    tw = Twins(C, rnd, nodes=3)
    head = ack_head(1.7e9, 3)
    chunk, expect = [], []
    for i in range(40):
        node = "n%d" % (i % 3)
        seq = tw.seq[node]
        tw.seq[node] += 1
        token = rnd.randbytes(rnd.randrange(0, 9))
        opt, pay, code = _protect(tw.ctx[node], seq, *_inner(rnd, "report"))
        po = tw.p.unprotect(opt, pay, code)
        tw.p.accept(po)
        peer, pktinfo, left = object(), rnd.choice([None, b"p" * 20]), []
        n = len(chunk)
        dgram = b"\x44\x02\x00\x01" + bytes([0x90 | len(opt)]) + opt + b"\xff" + pay
        assert tw.b.open_batch([(peer, 1000 + i, token, 5, len(opt), pktinfo, dgram)], chunk,
                               left) == 1 and not left
        assert chunk[n][:3] == (peer, 1000 + i, token) and chunk[n][5:7] == (pktinfo, node)
        assert chunk[n][3:5] == (coap.decode_uint(po.options[1][1]), po.payload)
        if i % 4 == 3:
            res = ReportResult(0xA3, b"busy", max_age=2, error="backlog")
            inner = (0xA3, [(coap.CONTENT_FORMAT, b""), (coap.MAX_AGE, b"\x02")], b"busy")
        elif i % 4 == 2:
            res = ReportResult(0x8F, b"too big", content_format=0)
            inner = (0x8F, [(coap.CONTENT_FORMAT, b"")], b"too big")
        else:
            stored = rnd.choice([0, 4, 23, 24, 300, 70000, 1 << 33])
            res = (head, stored)
            payload = encode_ack(1.7e9, 3, stored=stored)  # what respond_many sends
            inner = (0x44, [(coap.CONTENT_FORMAT, b"\x3c")], payload)
        expect.append((res, po, inner, token))
    acks = tw.b.seal_acks(chunk, [e[0] for e in expect], 0)
    assert tw.b.n_sealed == 40
    for ack, (res, po, inner, token), e in zip(acks, expect, chunk, strict=True):
        m = coap.parse(ack)
        assert (m.mtype, m.code, m.mid, m.token) == (coap.ACK, 0x44, e[1], token)
        assert m.options == [(coap.OSCORE, b"")]
        assert m.payload == tw.p.protect_response(po, *inner)[1]
        ctx = tw.ctx[po.node]
        back = oscore.unprotect_response(ctx, (po.kid, po.piv, ctx.nonce(po.kid, po.piv)), m)
        assert (back.code, back.options, back.payload) == inner
        if back.code == 0x44:
            assert decode_ack(back.payload)["stored"] == res[1]
    # a context replaced between open and seal: no ack (the node retries)
    tw.b.add("n0", tw.ctx["n0"].sender_id, b"", b"\x01" * 16, b"\x02" * 8)
    again = tw.b.seal_acks(chunk[:3], [e[0] for e in expect[:3]], 0)
    assert again[0] is None and again[1] is not None and tw.b.n_seal_lost == 1
    with pytest.raises(TypeError):
        tw.b.seal_acks([chunk[0][:7] + (b"short",)], [expect[0][0]])


# ---- fuzz ---------------------------------------------------------------------------------

def test_fuzz_option_and_ciphertext_only_oscore_errors(C):
    rnd = random.Random(13)
    tw = Twins(C, rnd, nodes=4)
    kids = [c.sender_id for c in tw.ctx.values()]
    valid = [_protect(tw.ctx["n1"], s, *_inner(rnd, "report")) for s in range(50)]
    for _ in range(4000):
        r = rnd.random()
        if r < 0.4:   # random bytes
            option = rnd.randbytes(rnd.randrange(0, 16))
            payload = rnd.randbytes(rnd.randrange(0, 64))
        elif r < 0.7:  # a plausible option with a known kid, random ciphertext
            piv = rnd.randbytes(rnd.randrange(0, 7))
            option = bytes([rnd.choice([0x08, 0x18, 0x00, 0x20]) | (len(piv) & 7)]) + piv \
                + rnd.choice(kids)
            payload = rnd.randbytes(rnd.randrange(0, 40))
        else:          # a valid message, mutated
            option, payload, _ = _mutate(rnd, *rnd.choice(valid))
        code = rnd.choice([coap.POST, coap.POST, coap.FETCH, coap.GET, 0])
        co = _outcome(tw.c.unprotect, option, payload, code)
        po = _outcome(tw.p.unprotect, option, payload, code)
        assert co[0] == po[0] and (co[0] == "ok" or co == po), (option, payload, co, po)
        assert co[0] == "ok" or co[1] == "OscoreError"
        if co[0] == "ok":
            assert _opened(co[1]) == _opened(po[1])
    batch_o = [rnd.randbytes(rnd.randrange(0, 12)) for _ in range(500)]
    batch_p = [rnd.randbytes(rnd.randrange(0, 100)) for _ in range(500)]
    assert tw.b.open_reports(batch_o, batch_p) == [None] * 500
    cands = [(None, i, b"", 4, len(o), None, b"\x44\x02\x00\x00" + o + b"\xff" + p)
             for i, (o, p) in enumerate(zip(batch_o, batch_p, strict=True))]
    cands += [(None, 0, b"", 4, 100, None, b"short"), (None, 0, b"", -1, 0, None, b"\xff" * 9)]
    reports, left = [], []
    assert tw.b.open_batch(cands, reports, left) == 0 and left == cands and not reports
    with pytest.raises(TypeError):
        tw.b.open_reports([bytearray(b"\x09")], [b"x" * 20])
    with pytest.raises(ValueError):
        tw.b.open_reports([b""], [])


def test_udp_classifies_protected_candidates():
    require(fast.udp is not None, "smartpark.fast.udp: %s" % fast.UNAVAILABLE.get("udp"))
    udp = fast.udp
    rnd = random.Random(17)
    ctx = oscore.Context(rnd.randbytes(16), rnd.randbytes(8), b"\x01\x02\x03", b"")
    msg = coap.make_request(coap.POST, "r", 0x1234, token=b"\x05\x06", payload=b"\x80")
    msg.add_option(coap.CONTENT_FORMAT, CF_CBOR)
    outer, _ = oscore.protect_request(ctx, 77, msg)
    data = outer.encode()
    assert udp.parse_report(data) is None
    assert udp.parse_protected(data) == (0x1234, b"\x05\x06", outer.get_option(coap.OSCORE),
                                         outer.payload)
    outer.add_option(coap.URI_HOST, b"hub")
    assert udp.parse_protected(outer.encode()) is not None
    for bad in (msg.encode(),  # plaintext
                data[:data.index(b"\xff") + 1],  # no payload
                bytes([data[0] & 0xCF | 0x10]) + data[1:]):  # NON
        assert udp.parse_protected(bad) is None
    outer.add_option(coap.URI_QUERY, b"a")
    assert udp.parse_protected(outer.encode()) is None
    for _ in range(3000):  # truncations and random bytes never crash
        cut = data[:rnd.randrange(len(data) + 1)]
        got = udp.parse_protected(cut)
        assert got is None or cut == data[:len(cut)]
        udp.parse_protected(rnd.randbytes(rnd.randrange(0, 40)))


# ---- the hub ------------------------------------------------------------------------------

def test_hub_fast_path_takes_aiocoap_oscore_reports_and_refuses_a_replay(C, tmp_path):
    require(fast.udp is not None, "smartpark.fast.udp: %s" % fast.UNAVAILABLE.get("udp"))
    import aiocoap
    from hubutil import HubProc, run, senml_cbor
    from smartpark.hub import keys

    d = str(tmp_path / "data")
    os.makedirs(d)
    rec = keys.add(d, "fo1")
    ctxdir = str(tmp_path / "ctx")
    keys.write_aiocoap(ctxdir, rec)
    h = HubProc(d, extra=["--security", "oscore"]).start()
    try:
        assert h.fields["security"] == "oscore" and h.fields["fastpath"] == "on"

        async def client():
            c = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
            try:
                c.client_credentials.load_from_dict({h.coap + "/*": {"oscore": {
                    "basedir": ctxdir}}})
                m = aiocoap.Message(code=aiocoap.POST, uri=h.coap + "/r", payload=senml_cbor(
                    "fo1", [("temp", 20.5, 0, "Cel"), ("hum", 40.0, 0, "%RH")]))
                m.opt.content_format = 112
                return await asyncio.wait_for(c.request(m).response, 20)
            finally:
                await c.shutdown()

        r = run(client())
        assert r.code == aiocoap.CHANGED and decode_ack(r.payload)["stored"] == 2
        assert h.metric("smartpark_fastpath_oscore_opened") == 1
        assert h.metric("smartpark_fastpath_oscore_to_aiocoap") == 0

        # a report built with protocol/oscore.py; the same datagram again from the same
        # socket (a CoAP retransmission: the response cache answers, before OSCORE), then
        # from another socket (not a retransmission: a replay)
        ctx = oscore.Context(rec["secret"], rec["salt"], rec["sender_id"], rec["recipient_id"])
        msg = coap.make_request(coap.POST, "r", 0x4242, token=b"\x07",
                                payload=senml_cbor("fo1", [("temp", 21.5, 60, "Cel")]))
        msg.add_option(coap.CONTENT_FORMAT, CF_CBOR)
        outer, binding = oscore.protect_request(ctx, 1000, msg)
        data = outer.encode()
        raw = []
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
        try:
            for s in (socks[0], socks[0], socks[1]):
                s.settimeout(10)
                s.sendto(data, ("127.0.0.1", h.coap_port))
                raw.append(s.recv(4096))
        finally:
            for s in socks:
                s.close()
        assert raw[1] == raw[0] and h.metric("smartpark_fastpath_resent") == 1
        first, replay = coap.parse(raw[0]), coap.parse(raw[2])
        inner = oscore.unprotect_response(ctx, binding, first)
        assert first.code == coap.CHANGED and decode_ack(inner.payload)["stored"] == 1
        assert replay.code == coap.UNAUTHORIZED and replay.get_option(coap.OSCORE) is None
        assert h.metric("smartpark_fastpath_oscore_opened") == 2
        assert h.metric("smartpark_fastpath_oscore_to_aiocoap") == 1
        status, body = h.get("/api/series/fo1/temp?from=0")
        assert status == 200 and [p["value"] for p in body["points"]] == [20.5, 21.5]
    finally:
        h.stop()


def test_loadgen_speaks_oscore_and_does_the_echo_exchange(C, tmp_path):
    """The load generator's OSCORE against a real hub: every ack verifies; after a hub
    killed (replay windows lost) each peer gets one verified 4.01 with Echo, retries with
    it and is acked again."""
    require(fast.udp is not None and fast.loadgen is not None,
            "smartpark.fast.udp/loadgen: %s" % fast.UNAVAILABLE)
    from hubutil import HubProc
    from smartpark.tools import coapload

    d = str(tmp_path / "data")
    os.makedirs(d)
    peers = coapload.oscore_peers_for_hub(d, 4)
    h = HubProc(d, extra=["--security", "oscore"]).start()
    try:
        r = coapload.load("127.0.0.1", h.coap_port, peers=4, peer_rate=20, seconds=0.5,
                          drain=2.0, oscore=peers)
        assert r["codes"] == {"2.04": r["sent"]} and r["sent"] >= 8
        assert r["unverified"] == r["unprotected"] == 0
        assert h.metric("smartpark_fastpath_oscore_opened") == r["sent"]
    finally:
        h.kill()
    h = HubProc(d, extra=["--security", "oscore"]).start()
    try:
        r = coapload.load("127.0.0.1", h.coap_port, peers=4, peer_rate=20, seconds=1.0,
                          drain=2.0, oscore=peers)
        assert r["unverified"] == r["unprotected"] == 0 and r["timeouts"] == 0
        assert r["codes"]["4.01"] == r["echoes"] == 4
        assert r["codes"]["2.04"] == r["sent"] - 4
        assert h.metric("smartpark_fastpath_oscore_opened") >= r["sent"] - 8
    finally:
        h.stop()


def test_a_second_thread_during_a_batch_gets_runtimeerror(C):
    """A batch runs with the GIL released; another thread touching the table meanwhile is
    refused instead of changing the table under it."""
    import threading
    rnd = random.Random(19)
    tw = Twins(C, rnd, nodes=4)
    msgs = [_protect(tw.ctx["n%d" % (k % 4)], k // 4, *_inner(rnd, "report"))
            for k in range(2000)]
    opts, pays = [m[0] for m in msgs] * 40, [m[1] for m in msgs] * 40
    refused, done = [], threading.Event()

    def batch():
        try:
            tw.b.open_reports(opts, pays)
        finally:
            done.set()

    t = threading.Thread(target=batch)
    t.start()
    while not done.is_set():
        try:
            tw.b.add("late", b"\x55\x55", b"", bytes(16), bytes(8))
            tw.b.remove("late")
        except RuntimeError as e:
            refused.append(str(e))
    t.join()
    assert refused and "in use by another thread" in refused[0]
    assert tw.b.n_opened == 2000  # the first of each sequence number; the rest replays
