"""Cases for protocol/coap.py (run under CPython and MicroPython).

Exact-bytes encodings in the style of aiocoap's test_encoding.py: each known
message is written out by hand from RFC 7252 sections 3 and 3.1 (and the
examples of its Appendix A), then both directions are checked: encode gives
those bytes, parse gives that message back.
"""

from binascii import unhexlify

from smartpark.protocol import coap
from smartpark.protocol.errors import CoAPDecodeError, DecodeError, EncodeError


def h(s):
    return unhexlify(s.replace(" ", ""))


def _decode_error(data, offset=None, words=None):
    try:
        coap.parse(data)
    except CoAPDecodeError as e:
        assert isinstance(e, DecodeError)
        if offset is not None:
            assert e.offset == offset, "offset %r, want %r: %s" % (e.offset, offset, e)
        if words is not None:
            assert words in str(e), str(e)
        return e
    raise AssertionError("no CoAPDecodeError for %r" % (data,))


def _encode_error(fn, *args):
    try:
        fn(*args)
    except EncodeError:
        return
    raise AssertionError("no EncodeError")


def _both_ways(msg, wire):
    got = msg.encode()
    assert got == wire, "encoded %s, want %s" % (got, wire)
    back = coap.parse(wire)
    assert back == msg, "parsed %r, want %r" % (back, msg)
    assert back.encode() == wire


# -- known messages ------------------------------------------------------------

def test_empty_con():
    _both_ways(coap.Message(coap.CON, coap.EMPTY, 0), b"@\x00\x00\x00")


def test_rfc7252_figure16_get_temperature():
    req = coap.Message(coap.CON, coap.GET, 0x7D34, options=[(coap.URI_PATH, b"temperature")])
    _both_ways(req, h("40 01 7d 34 bb") + b"temperature")
    resp = coap.Message(coap.ACK, coap.CONTENT, 0x7D34, payload=b"22.3 C")
    _both_ways(resp, h("60 45 7d 34 ff") + b"22.3 C")


def test_rfc7252_figure17_with_token():
    req = coap.make_request(coap.GET, "/temperature", 0x7D35, b"\x20")
    _both_ways(req, h("41 01 7d 35 20 bb") + b"temperature")
    resp = coap.make_response(req, coap.CONTENT, b"22.3 C")
    _both_ways(resp, h("61 45 7d 35 20 ff") + b"22.3 C")


def test_report_post():
    msg = coap.make_request(coap.POST, "/r", 0x1234, b"\x01\x02", payload=b"\xa0",
                            content_format=coap.SENML_CBOR)
    _both_ways(msg, h("42 02 12 34 01 02 b1 72 11 70 ff a0"))
    assert msg.uri_path == "/r"
    assert msg.content_format == 112


def test_max_token_and_types():
    tok = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    _both_ways(coap.Message(coap.NON, coap.GET, 0xFFFF, tok),
               h("58 01 ff ff") + tok)
    _both_ways(coap.Message(coap.RST, coap.EMPTY, 0xABCD), h("70 00 ab cd"))
    _both_ways(coap.Message(coap.ACK, coap.EMPTY, 0xABCD), h("60 00 ab cd"))


def test_repeated_options_and_zero_uint():
    msg = coap.Message(coap.CON, coap.GET, 1)
    msg.set_uri_path("/a/b")
    msg.add_option(coap.CONTENT_FORMAT, 0)
    _both_ways(msg, h("40 01 00 01 b1 61 01 62 10"))
    assert msg.content_format == coap.TEXT_PLAIN
    assert msg.get_options(coap.URI_PATH) == [b"a", b"b"]


def test_option_delta_boundaries():
    # (option number, wire bytes of its header with an empty value)
    for number, head in ((12, "c0"), (13, "d0 00"), (268, "d0 ff"),
                         (269, "e0 00 00"), (270, "e0 00 01"), (65535, "e0 fe f2")):
        msg = coap.Message(coap.CON, coap.GET, 2, options=[(number, b"")])
        _both_ways(msg, h("40 01 00 02 " + head))


def test_option_length_boundaries():
    for length, head in ((12, "1c"), (13, "1d 00"), (268, "1d ff"),
                         (269, "1e 00 00"), (65804, "1e ff ff")):
        value = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
        msg = coap.Message(coap.CON, coap.GET, 3, options=[(coap.IF_MATCH, value)])
        _both_ways(msg, h("40 01 00 03 " + head) + value)


def test_delta_and_length_both_extended():
    value = b"x" * 20
    msg = coap.Message(coap.CON, coap.GET, 4, options=[(300, value)])
    _both_ways(msg, h("40 01 00 04 ed 00 1f 07") + value)


def test_options_kept_in_number_order():
    msg = coap.Message(coap.CON, coap.POST, 5, options=[
        (coap.URI_QUERY, b"b"), (coap.URI_PATH, b"rd"), (coap.URI_QUERY, b"a")])
    assert [n for n, _ in msg.options] == [11, 15, 15]
    assert msg.uri_query == ["b", "a"]
    msg.add_option(coap.CONTENT_FORMAT, coap.LINK_FORMAT)
    assert [n for n, _ in msg.options] == [11, 12, 15, 15]
    # out-of-order list assigned directly cannot be sent
    msg.options = [(15, b"a"), (11, b"x")]
    _encode_error(msg.encode)


def test_parse_accepts_bytearray_and_memoryview():
    wire = h("42 02 12 34 01 02 b1 72 11 70 ff a0")
    a = coap.parse(bytearray(wire))
    b = coap.parse(memoryview(wire))
    assert a == b
    assert a.payload == b"\xa0" and isinstance(a.payload, bytes)
    assert a.token == b"\x01\x02"


# -- malformed input ----------------------------------------------------------

def test_short_header():
    for data in (b"", b"\x40", b"\x40\x01\x00"):
        _decode_error(data, 0)


def test_bad_version():
    for b0 in (0x00, 0x80, 0xC0):
        _decode_error(bytes((b0, 1, 0, 0)), 0, "version")


def test_token_length_reserved():
    for tkl in range(9, 16):
        _decode_error(bytes((0x40 | tkl, 1, 0, 0)) + b"\x00" * 16, 0, "token length")


def test_token_truncated():
    _decode_error(h("42 01 00 00 01"), 4, "token")


def test_nibble_15():
    _decode_error(h("40 01 00 00 f0"), 4, "nibble 15")
    _decode_error(h("40 01 00 00 1f"), 4, "nibble 15")
    _decode_error(h("40 01 00 00 b1 61 f1 00"), 6, "nibble 15")


def test_marker_with_empty_payload():
    _decode_error(h("40 01 00 00 ff"), 4, "payload")
    _decode_error(h("40 01 00 00 b1 61 ff"), 6, "payload")


def test_no_marker_means_empty_payload():
    assert coap.parse(h("40 01 00 00 b1 61")).payload == b""


def test_truncated_options():
    _decode_error(h("40 01 00 00 d0"), 5, "extension truncated")
    _decode_error(h("40 01 00 00 e0 00"), 5, "extension truncated")
    _decode_error(h("40 01 00 00 1d"), 5, "extension truncated")
    _decode_error(h("40 01 00 00 13 61 62"), 5, "truncated")
    _decode_error(h("40 01 00 00 1e 00 01") + b"x" * 100, 7, "truncated")


def test_option_number_over_16_bits():
    _decode_error(h("40 01 00 00 e0 fe f2 10"), 7, "65535")


def test_empty_message_with_content():
    _decode_error(h("40 00 00 00 ff 00"), 4, "Empty")
    _decode_error(h("41 00 00 00 01"), 4, "Empty")


def test_encode_rejects():
    _encode_error(coap.Message(coap.CON, coap.GET, 1, b"123456789").encode)
    _encode_error(coap.Message(4, coap.GET, 1).encode)
    _encode_error(coap.Message(coap.CON, 256, 1).encode)
    _encode_error(coap.Message(coap.CON, coap.GET, 65536).encode)
    _encode_error(coap.Message(coap.CON, coap.EMPTY, 1, b"t").encode)
    _encode_error(coap.Message(coap.CON, coap.GET, 1, options=[(1, b"x" * 65805)]).encode)
    _encode_error(coap.Message(coap.CON, coap.GET, 1).add_option, 65536, b"")
    _encode_error(coap.encode_uint, -1)


# -- option values --------------------------------------------------------------

def test_uint():
    for value, wire in ((0, b""), (1, b"\x01"), (255, b"\xff"), (256, b"\x01\x00"),
                        (0xFFFFFF, b"\xff\xff\xff"), (0x1000000, b"\x01\x00\x00\x00")):
        assert coap.encode_uint(value) == wire
        assert coap.decode_uint(wire) == value
    assert coap.decode_uint(b"\x00\x00\x05") == 5
    try:
        coap.decode_uint(b"\x01" * 9)
    except CoAPDecodeError:
        pass
    else:
        raise AssertionError("9-byte uint accepted")


def test_block_known_values():
    assert coap.block_encode(0, False, 0) == b""
    assert coap.block_encode(0, True, 6) == b"\x0e"
    assert coap.block_encode(1, False, 6) == b"\x16"
    assert coap.block_encode(0xFFFFF, True, 6) == b"\xff\xff\xfe"
    assert coap.block_decode(b"\x16") == (1, False, 6)
    assert coap.block_size(6) == 1024 and coap.block_size(0) == 16


def test_block_round_trips():
    for num in (0, 1, 15, 16, 4095, 4096, 0xFFFFF):
        for more in (False, True):
            for szx in range(7):
                assert coap.block_decode(coap.block_encode(num, more, szx)) == (num, more, szx)


def test_block_errors():
    for args in ((0, False, 7), (0, False, -1), (1 << 20, False, 0), (-1, True, 0)):
        _encode_error(coap.block_encode, *args)
    for bad in (b"\x07", b"\x0f", b"\x00\x00\x00\x00"):
        try:
            coap.block_decode(bad)
        except CoAPDecodeError:
            continue
        raise AssertionError("block value %r accepted" % (bad,))


def test_block_options_on_message():
    msg = coap.Message(coap.CON, coap.PUT, 9)
    msg.add_option(coap.BLOCK1, coap.block_encode(3, True, 2))
    back = coap.parse(msg.encode())
    assert back.block1 == (3, True, 2)
    assert back.block2 is None


def test_observe():
    msg = coap.Message(coap.ACK, coap.CONTENT, 7, b"t", options=[(coap.OBSERVE, coap.observe_encode(0x1234567))])
    assert coap.parse(msg.encode()).observe == 0x234567
    req = coap.make_request(coap.GET, "/s", 8)
    req.add_option(coap.OBSERVE, coap.OBSERVE_REGISTER)
    assert req.get_option(coap.OBSERVE) == b"" and req.observe == 0


def test_observe_freshness():
    assert coap.observe_newer(1, 0, 2, 0)
    assert not coap.observe_newer(2, 0, 1, 0)
    assert not coap.observe_newer(5, 0, 5, 0)
    assert coap.observe_newer(0xFFFFFF, 0, 0, 0)          # wrapped around
    assert not coap.observe_newer(0, 0, 0xFFFFFF, 0)
    assert coap.observe_newer(0, 0, 1 << 23, 0) is False   # exactly 2**23 apart: neither rule
    assert coap.observe_newer(5, 0, 3, 128.5)              # over 128 s later wins anyway
    assert not coap.observe_newer(5, 0, 3, 128)


def test_getters_absent_and_present():
    msg = coap.Message(coap.CON, coap.GET, 1)
    assert msg.uri_path == "/" and msg.uri_query == []
    for name in ("content_format", "accept", "observe", "max_age", "etag", "size1", "size2"):
        assert getattr(msg, name) is None, name
    msg.add_option(coap.ACCEPT, coap.SENML_JSON)
    msg.add_option(coap.MAX_AGE, 3600)
    msg.add_option(coap.ETAG, b"\xde\xad")
    msg.add_option(coap.SIZE1, 70000)
    back = coap.parse(msg.encode())
    assert back.accept == 110 and back.max_age == 3600
    assert back.etag == b"\xde\xad" and back.size1 == 70000


def test_uri_path_and_query_setters():
    msg = coap.Message(coap.CON, coap.POST, 1)
    msg.set_uri_path("/.well-known/core")
    assert msg.get_options(coap.URI_PATH) == [b".well-known", b"core"]
    msg.set_uri_path("rd")
    assert msg.uri_path == "/rd"
    msg.set_uri_path("/")
    assert msg.get_options(coap.URI_PATH) == []
    msg.set_uri_query("ep=node-1&lt=300")
    assert msg.uri_query == ["ep=node-1", "lt=300"]
    msg.set_uri_query(["rt=core.rd*"])
    assert msg.uri_query == ["rt=core.rd*"]
    msg.set_option(coap.URI_QUERY, None)
    assert msg.uri_query == []


def test_bad_utf8_path():
    msg = coap.parse(h("40 01 00 00 b1 ff"))
    try:
        path = msg.uri_path
    except CoAPDecodeError:
        return
    raise AssertionError("invalid UTF-8 Uri-Path accepted: %r" % (path,))


def test_code_str_and_names():
    assert coap.code_str(coap.CHANGED) == "2.04"
    assert coap.code_str(coap.CONTENT) == "2.05"
    assert coap.code_str(coap.NOT_FOUND) == "4.04"
    assert coap.code_str(coap.REQUEST_ENTITY_TOO_LARGE) == "4.13"
    assert coap.code_str(coap.UNSUPPORTED_CONTENT_FORMAT) == "4.15"
    assert coap.code_str(coap.SERVICE_UNAVAILABLE) == "5.03"
    assert coap.code_str(coap.POST) == "0.02"
    assert coap.is_request(coap.POST) and not coap.is_request(coap.CHANGED)
    assert coap.is_response(coap.CHANGED) and not coap.is_response(coap.EMPTY)


def test_response_helpers():
    req = coap.make_request(coap.POST, "/r", 0x4242, b"\xaa\xbb", payload=b"x")
    resp = coap.make_response(req, coap.CHANGED, b"\xa0", content_format=coap.CBOR)
    assert (resp.mtype, resp.code, resp.mid, resp.token) == (coap.ACK, coap.CHANGED, 0x4242, b"\xaa\xbb")
    assert resp.content_format == 60 and resp.payload == b"\xa0"
    ack = coap.empty_ack(req)
    assert ack.encode() == h("60 00 42 42")
    rst = coap.make_rst(req)
    assert rst.encode() == h("70 00 42 42")
    non = coap.make_request(coap.GET, "/s", 1, b"\x01", mtype=coap.NON)
    _encode_error(coap.make_response, non, coap.CONTENT)
    r2 = coap.make_response(non, coap.CONTENT, b"ok", mid=77)
    assert (r2.mtype, r2.mid, r2.token) == (coap.NON, 77, b"\x01")


def test_repr():
    msg = coap.make_request(coap.POST, "/r", 0x1234, b"\x01\x02", payload=b"\xa0" * 5,
                            content_format=coap.SENML_CBOR)
    msg.add_option(coap.BLOCK1, coap.block_encode(2, True, 6))
    text = repr(msg)
    for part in ("CON", "0.02", "POST", "mid=4660", "token=0102", "Uri-Path='r'",
                 "Content-Format=112", "Block1=2+/1024", "payload=5B"):
        assert part in text, (part, text)
    assert "2.04 Changed" in repr(coap.Message(coap.ACK, coap.CHANGED, 1))
