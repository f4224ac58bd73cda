"""Cases for protocol/oscore.py (run under CPython and MicroPython): RFC 8613 Appendix C.

The vectors are the RFC's: C.1-C.3 key derivation, C.4-C.6 protected requests,
C.7-C.8 protected responses. Under MicroPython AES-CCM runs on cryptolib's
ECB block; under CPython on `cryptography` (and the ECB construction is
checked against it in test_oscore_oracle.py).
"""

import os

from smartpark.protocol import coap, oscore
from smartpark.protocol.errors import DecodeError, OscoreError

try:
    from binascii import unhexlify as h
except ImportError:  # pragma: no cover
    h = bytes.fromhex

SECRET = h("0102030405060708090a0b0c0d0e0f10")
SALT = h("9e7ca92223786340")
ID_CTX = h("37cbf3210017a2d3")
C4_REQUEST = h("44015d1f00003974396c6f63616c686f737483747631")
C4_PROTECTED = h("44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e")
C7_RESPONSE = h("64455d1f00003974ff48656c6c6f20576f726c6421")
C7_PROTECTED = h("64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106")
C8_PROTECTED = h("64445d1f00003974920100ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e")


def _client():
    return oscore.Context(SECRET, SALT, b"", b"\x01")


def _server():
    return oscore.Context(SECRET, SALT, b"\x01", b"")


def _raises(fn, code):
    try:
        fn()
    except OscoreError as e:
        assert e.code == code, (e.code, str(e))
        assert isinstance(e, DecodeError)
        return e
    raise AssertionError("no OscoreError")


def test_c1_derivation():
    c = _client()
    assert c.sender_key == h("f0910ed7295e6ad4b54fc793154302ff")
    assert c.recipient_key == h("ffb14e093c94c9cac9471648b4f98710")
    assert c.common_iv == h("4622d4dd6d944168eefb54987c")
    assert c.nonce(b"", b"\x00") == h("4622d4dd6d944168eefb54987c")
    assert c.nonce(b"\x01", b"\x00") == h("4722d4dd6d944169eefb54987c")
    s = _server()
    assert s.sender_key == c.recipient_key and s.recipient_key == c.sender_key


def test_c2_derivation_without_salt():
    c = oscore.Context(SECRET, None, b"\x00", b"\x01")
    assert c.sender_key == h("321b26943253c7ffb6003b0b64d74041")
    assert c.recipient_key == h("e57b5635815177cd679ab4bcec9d7dda")
    assert c.common_iv == h("be35ae297d2dace910c52e99f9")
    assert c.nonce(b"\x00", b"\x00") == h("bf35ae297d2dace910c52e99f9")


def test_c3_derivation_with_id_context():
    c = oscore.Context(SECRET, SALT, b"", b"\x01", ID_CTX)
    assert c.sender_key == h("af2a1300a5e95788b356336eeecd2b92")
    assert c.recipient_key == h("e39a0c7c77b43f03b4b39ab9a268699f")
    assert c.common_iv == h("2ca58fb85ff1b81c0b7181b85e")


def test_c4_request():
    assert oscore.aad(b"", b"\x14") == h("8368456e63727970743040488501810a40411440")
    out, binding = oscore.protect_request(_client(), 20, coap.parse(C4_REQUEST))
    assert out.encode() == C4_PROTECTED
    assert binding[0] == b"" and binding[1] == b"\x14"


def test_c5_request_with_kid():
    c = oscore.Context(SECRET, None, b"\x00", b"\x01")
    out, _ = oscore.protect_request(
        c, 20, coap.parse(h("440171c30000b932396c6f63616c686f737483747631")))
    assert out.encode() == h(
        "440271c30000b932396c6f63616c686f737463091400ff4ed339a5a379b0b8bc731fffb0")


def test_c6_option_with_kid_context():
    # the option of C.6: Partial IV 0x14, kid context 0x37cbf3210017a2d3, kid empty
    value = oscore.encode_option(b"\x14", b"", ID_CTX)
    assert value == h("19140837cbf3210017a2d3")
    assert oscore.decode_option(value) == (b"\x14", b"", ID_CTX)


def test_c4_server_opens_request():
    inner, binding, seq = oscore.unprotect_request(_server(), coap.parse(C4_PROTECTED))
    assert seq == 20
    assert inner.code == coap.GET
    assert inner.get_options(coap.URI_PATH) == [b"tv1"]
    assert inner.get_option(coap.URI_HOST) == b"localhost"
    assert binding[:2] == (b"", b"\x14")


def test_c7_response_reusing_request_nonce():
    _, binding, _ = oscore.unprotect_request(_server(), coap.parse(C4_PROTECTED))
    out = oscore.protect_response(_server(), binding, coap.parse(C7_RESPONSE))
    assert out.encode() == C7_PROTECTED
    _, cbinding = oscore.protect_request(_client(), 20, coap.parse(C4_REQUEST))
    r = oscore.unprotect_response(_client(), cbinding, coap.parse(C7_PROTECTED))
    assert r.code == coap.CONTENT and r.payload == b"Hello World!"


def test_c8_response_with_own_partial_iv():
    _, binding, _ = oscore.unprotect_request(_server(), coap.parse(C4_PROTECTED))
    out = oscore.protect_response(_server(), binding, coap.parse(C7_RESPONSE), seq=0)
    assert out.encode() == C8_PROTECTED
    _, cbinding = oscore.protect_request(_client(), 20, coap.parse(C4_REQUEST))
    r = oscore.unprotect_response(_client(), cbinding, coap.parse(C8_PROTECTED))
    assert r.payload == b"Hello World!"


def test_ecb_ccm_matches_vector():
    nonce = h("4622d4dd6d944168eefb549868")
    a = h("8368456e63727970743040488501810a40411440")
    ct = oscore.ccm_encrypt_ecb(h("f0910ed7295e6ad4b54fc793154302ff"), nonce, h("01b3747631"), a)
    assert ct == h("612f1092f1776f1c1668b3825e")
    assert oscore.ccm_decrypt_ecb(h("f0910ed7295e6ad4b54fc793154302ff"), nonce, ct,
                                  a) == h("01b3747631")


def test_tampered_ciphertext_fails():
    m = coap.parse(C4_PROTECTED)
    m.payload = m.payload[:-1] + bytes((m.payload[-1] ^ 1,))
    _raises(lambda: oscore.unprotect_request(_server(), m), 0x80)
    m = coap.parse(C4_PROTECTED)
    m.payload = m.payload[:5]
    _raises(lambda: oscore.unprotect_request(_server(), m), 0x80)


def test_response_to_another_request_fails():
    _, cbinding = oscore.protect_request(_client(), 21, coap.parse(C4_REQUEST))
    _raises(lambda: oscore.unprotect_response(_client(), cbinding, coap.parse(C7_PROTECTED)),
            0x80)


def test_unprotected_response_is_refused():
    _, cbinding = oscore.protect_request(_client(), 20, coap.parse(C4_REQUEST))
    _raises(lambda: oscore.unprotect_response(_client(), cbinding, coap.parse(C7_RESPONSE)),
            0x81)


def test_bad_options():
    for value in (b"\x20", b"\x06\x01\x02\x03\x04\x05\x06", b"\x03\x01", b"\x11\x01",
                  b"\x00", b"\x19\x14\x09ab"):
        _raises(lambda v=value: oscore.decode_option(v), 0x82)
    m = coap.parse(C4_PROTECTED)
    m.set_option(coap.OSCORE, b"\x01\x14")   # no kid in a request
    _raises(lambda: oscore.unprotect_request(_server(), m), 0x82)


def test_piv():
    assert oscore.piv_bytes(0) == b"\x00"
    assert oscore.piv_bytes(20) == b"\x14"
    assert oscore.piv_bytes(256) == b"\x01\x00"
    assert oscore.piv_int(b"\x01\x00") == 256
    _raises(lambda: oscore.piv_bytes(1 << 40), 0x80)


def test_replay_window():
    w = oscore.ReplayWindow(32)
    for s in (0, 1, 5, 3):
        w.accept(s)
    for s in (0, 1, 5, 3):
        _raises(lambda s=s: w.check(s), 0x81)
    w.accept(4)
    w.accept(100)
    _raises(lambda: w.check(68), 0x81)   # older than the window
    w.check(69)
    w2 = oscore.ReplayWindow.restore(w.state(), 32)
    _raises(lambda: w2.check(100), 0x81)
    w2.accept(99)
    w.establish(500)
    _raises(lambda: w.check(500), 0x81)
    w.check(501)


def test_seq_store_persists_ahead(tmp="oscore-case.seq"):
    for f in (tmp, tmp + ".tmp"):
        try:
            os.remove(f)
        except OSError:
            pass
    s = oscore.SeqStore(tmp, chunk=4)
    got = [s.next() for _ in range(6)]
    assert got == [0, 1, 2, 3, 4, 5]
    # a "crash" now: a new store never hands out a number already used
    s2 = oscore.SeqStore(tmp, chunk=4)
    assert s2.next() >= 6
    with open(tmp, "w") as f:
        f.write("garbage")
    _raises(lambda: oscore.SeqStore(tmp), 0x80)
    os.remove(tmp)
