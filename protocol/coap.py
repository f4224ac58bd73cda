"""CoAP messages (RFC 7252): parse and build, plus the option values we use.

One `Message` type for node and hub. `parse(data)` turns a datagram into a
Message and `Message.encode()` turns it back into bytes; every malformed
datagram ends in `CoAPDecodeError` with the byte offset of the fault (never an
IndexError). Options are a list of `(number, bytes)` pairs kept in number
order (repeatable options keep their relative order), exactly as on the wire.

Also here: helpers that build a request, a piggybacked response, an empty
ACK and an RST. The named constants (types, codes, option numbers, content
formats) and the option value codecs (uint, Block1/Block2 per RFC 7959,
Observe per RFC 7641) live in coapopts.py and are re-exported here, so
`coap.CHANGED` and `coap.block_encode` work.

Scope: this is the message layer only -- no retransmission, deduplication or
sockets (firmware/ and hub/ do those). A message whose code is in a reserved
class parses fine (the code is just a number); what to do with it is the
caller's business. An Empty message (0.00) with a token, options or payload is
a format error (RFC 7252 section 4.1).

Runs on MicroPython and CPython.
"""

from .coapopts import *  # noqa: F403 - coap re-exports every constant and value codec
from .coapopts import (
    ACCEPT,
    ACK,
    BLOCK1,
    BLOCK2,
    CODE_NAMES,
    CON,
    CONTENT_FORMAT,
    EMPTY,
    ETAG,
    LOCATION_PATH,
    LOCATION_QUERY,
    MAX_AGE,
    NON,
    OBSERVE,
    OPTION_NAMES,
    PROXY_SCHEME,
    PROXY_URI,
    RST,
    SIZE1,
    SIZE2,
    TYPE_NAMES,
    URI_HOST,
    URI_PATH,
    URI_PORT,
    URI_QUERY,
    VERSION,
    block_decode,
    code_str,
    decode_uint,
    encode_uint,
)
from .errors import CoAPDecodeError, EncodeError

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# How __repr__ shows a value: as text, as an unsigned integer, or as hex.
_STRING_OPTIONS = (URI_HOST, LOCATION_PATH, URI_PATH, URI_QUERY, LOCATION_QUERY,
                   PROXY_URI, PROXY_SCHEME)
_UINT_OPTIONS = (OBSERVE, URI_PORT, CONTENT_FORMAT, MAX_AGE, ACCEPT, SIZE2, SIZE1)

_MARKER = const(0xFF)
_MAX_TOKEN = const(8)
_MAX_OPTION_NUMBER = const(65535)
_MAX_EXT = const(65804)  # 65535 + 269: the largest delta or length


def _hex(b):
    return "".join("%02x" % x for x in b)


def _as_option_value(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int):
        return encode_uint(value)
    raise EncodeError("option value must be bytes, str or int, got %r" % (value,))


def _text(value, name):
    try:
        return value.decode()
    except UnicodeError:
        raise CoAPDecodeError("%s option is not valid UTF-8" % name)


class Message:
    """One CoAP message. `options` is a list of (number, bytes) in number order."""

    def __init__(self, mtype, code, mid, token=b"", options=None, payload=b""):
        self.mtype = mtype
        self.code = code
        self.mid = mid
        self.token = bytes(token)
        self.options = []
        if options:
            for number, value in options:
                self.add_option(number, value)
        self.payload = bytes(payload)

    # -- options ---------------------------------------------------------------
    def add_option(self, number, value):
        """Append an option after any others with the same or lower number."""
        if not isinstance(number, int) or not 0 <= number <= _MAX_OPTION_NUMBER:
            raise EncodeError("option number must be 0..65535, got %r" % (number,))
        value = _as_option_value(value)
        opts = self.options
        i = len(opts)
        while i > 0 and opts[i - 1][0] > number:
            i -= 1
        opts.insert(i, (number, value))

    def remove_option(self, number):
        self.options = [o for o in self.options if o[0] != number]

    def set_option(self, number, value):
        """Replace every instance of option `number` with one; None removes it."""
        self.remove_option(number)
        if value is not None:
            self.add_option(number, value)

    def get_option(self, number, default=None):
        """First value of option `number` (bytes), or `default`."""
        for n, v in self.options:
            if n == number:
                return v
        return default

    def get_options(self, number):
        return [v for n, v in self.options if n == number]

    def _get_uint(self, number, max_len=4):
        v = self.get_option(number)
        if v is None:
            return None
        return decode_uint(v, max_len)

    @property
    def uri_path(self):
        """The Uri-Path options as one string: "/" or "/rd/abc"."""
        return "/" + "/".join(_text(v, "Uri-Path") for v in self.get_options(URI_PATH))

    def set_uri_path(self, path):
        """Uri-Path options from "/rd/abc" (a leading "/" is optional; "/" is none)."""
        self.remove_option(URI_PATH)
        if path.startswith("/"):
            path = path[1:]
        if path:
            for seg in path.split("/"):
                self.add_option(URI_PATH, seg)

    @property
    def uri_query(self):
        """The Uri-Query options as a list of strings, e.g. ["ep=n1", "lt=300"]."""
        return [_text(v, "Uri-Query") for v in self.get_options(URI_QUERY)]

    def set_uri_query(self, query):
        """Uri-Query options from a list of strings or from "a=1&b=2"."""
        self.remove_option(URI_QUERY)
        if isinstance(query, str):
            query = query.split("&") if query else []
        for item in query:
            self.add_option(URI_QUERY, item)

    @property
    def location_path(self):
        return "/" + "/".join(_text(v, "Location-Path") for v in self.get_options(LOCATION_PATH))

    @property
    def content_format(self):
        return self._get_uint(CONTENT_FORMAT, 2)

    @property
    def accept(self):
        return self._get_uint(ACCEPT, 2)

    @property
    def observe(self):
        return self._get_uint(OBSERVE, 3)

    @property
    def max_age(self):
        """Max-Age in seconds, or None when absent (meaning DEFAULT_MAX_AGE)."""
        return self._get_uint(MAX_AGE, 4)

    @property
    def etag(self):
        return self.get_option(ETAG)

    @property
    def block1(self):
        v = self.get_option(BLOCK1)
        return None if v is None else block_decode(v)

    @property
    def block2(self):
        v = self.get_option(BLOCK2)
        return None if v is None else block_decode(v)

    @property
    def size1(self):
        return self._get_uint(SIZE1, 4)

    @property
    def size2(self):
        return self._get_uint(SIZE2, 4)

    # -- wire ------------------------------------------------------------------
    def encode(self):
        mtype, code, mid, token = self.mtype, self.code, self.mid, self.token
        if mtype not in (CON, NON, ACK, RST):
            raise EncodeError("message type must be 0..3, got %r" % (mtype,))
        if not isinstance(code, int) or not 0 <= code <= 255:
            raise EncodeError("code must be 0..255, got %r" % (code,))
        if not isinstance(mid, int) or not 0 <= mid <= 0xFFFF:
            raise EncodeError("message ID must be 0..65535, got %r" % (mid,))
        if len(token) > _MAX_TOKEN:
            raise EncodeError("token longer than 8 bytes (%d)" % len(token))
        if code == EMPTY and (token or self.options or self.payload):
            raise EncodeError("an Empty message (0.00) has no token, options or payload")
        out = bytearray(4)
        out[0] = 0x40 | (mtype << 4) | len(token)
        out[1] = code
        out[2] = mid >> 8
        out[3] = mid & 0xFF
        out.extend(token)
        prev = 0
        for number, value in self.options:
            delta = number - prev
            if delta < 0:
                raise EncodeError("options are not in number order (%d after %d)" % (number, prev))
            if len(value) > _MAX_EXT:
                raise EncodeError("option %d value longer than 65804 bytes" % number)
            dn, dext = _nibble(delta)
            ln, lext = _nibble(len(value))
            out.append((dn << 4) | ln)
            out.extend(dext)
            out.extend(lext)
            out.extend(value)
            prev = number
        if self.payload:
            out.append(_MARKER)
            out.extend(self.payload)
        return bytes(out)

    def __eq__(self, other):
        return (isinstance(other, Message) and self.mtype == other.mtype
                and self.code == other.code and self.mid == other.mid
                and self.token == other.token and self.options == other.options
                and self.payload == other.payload)

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        t = TYPE_NAMES[self.mtype] if self.mtype in (0, 1, 2, 3) else str(self.mtype)
        code = self.code
        name = CODE_NAMES.get(code)
        parts = ["<CoAP %s %s%s mid=%s" % (t, code_str(code) if isinstance(code, int) else code,
                                          " " + name if name else "", self.mid)]
        if self.token:
            parts.append("token=" + _hex(self.token))
        for number, value in self.options:
            parts.append("%s=%s" % (OPTION_NAMES.get(number, "opt%d" % number),
                                    _repr_value(number, value)))
        if self.payload:
            parts.append("payload=%dB" % len(self.payload))
        return " ".join(parts) + ">"


def _repr_value(number, value):
    if number in _STRING_OPTIONS:
        try:
            return repr(value.decode())
        except UnicodeError:
            pass
    elif number in _UINT_OPTIONS and len(value) <= 4:
        return str(decode_uint(value))
    elif number in (BLOCK1, BLOCK2) and len(value) <= 3:
        v = decode_uint(value)
        return "%d%s/%d" % (v >> 4, "+" if v & 8 else "", 16 << (v & 7) if v & 7 != 7 else -1)
    return "0x" + _hex(value) if value else "''"


def _nibble(n):
    """(nibble, extension bytes) for an option delta or length."""
    if n < 13:
        return n, b""
    if n < 269:
        return 13, bytes((n - 13,))
    n -= 269
    return 14, bytes((n >> 8, n & 0xFF))


def parse(data):
    """Decode one datagram into a Message; CoAPDecodeError on malformed input."""
    if not isinstance(data, bytes):
        data = bytes(data)
    end = len(data)
    if end < 4:
        raise CoAPDecodeError("message shorter than the 4-byte header (%d bytes)" % end, 0)
    b0 = data[0]
    if b0 >> 6 != VERSION:
        raise CoAPDecodeError("unsupported CoAP version %d" % (b0 >> 6), 0)
    mtype = (b0 >> 4) & 3
    tkl = b0 & 0x0F
    if tkl > _MAX_TOKEN:
        raise CoAPDecodeError("token length %d is reserved (9-15)" % tkl, 0)
    code = data[1]
    mid = (data[2] << 8) | data[3]
    if code == EMPTY and (tkl or end > 4):
        raise CoAPDecodeError("an Empty message (0.00) must be exactly 4 bytes", 4)
    pos = 4 + tkl
    if pos > end:
        raise CoAPDecodeError("token truncated (%d of %d bytes)" % (end - 4, tkl), 4)
    msg = Message(mtype, code, mid, data[4:pos])
    opts = msg.options
    number = 0
    while pos < end:
        start = pos
        b = data[pos]
        pos += 1
        if b == _MARKER:
            if pos == end:
                raise CoAPDecodeError("payload marker followed by an empty payload", start)
            msg.payload = data[pos:]
            break
        delta, pos = _ext(data, b >> 4, pos, end, start, "delta")
        length, pos = _ext(data, b & 0x0F, pos, end, start, "length")
        number += delta
        if number > _MAX_OPTION_NUMBER:
            raise CoAPDecodeError("option number %d exceeds 65535" % number, start)
        if pos + length > end:
            raise CoAPDecodeError("option %d value truncated (%d of %d bytes)"
                                  % (number, end - pos, length), pos)
        opts.append((number, data[pos:pos + length]))
        pos += length
    return msg


def _ext(data, nib, pos, end, start, what):
    if nib < 13:
        return nib, pos
    if nib == 13:
        if pos + 1 > end:
            raise CoAPDecodeError("option %s extension truncated" % what, pos)
        return data[pos] + 13, pos + 1
    if nib == 14:
        if pos + 2 > end:
            raise CoAPDecodeError("option %s extension truncated" % what, pos)
        return ((data[pos] << 8) | data[pos + 1]) + 269, pos + 2
    raise CoAPDecodeError("option %s nibble 15 is reserved" % what, start)


# -- building requests and responses --------------------------------------------

def make_request(code, path, mid, token=b"", mtype=CON, payload=b"",
                 content_format=None, query=None, accept=None):
    """A request for `path` ("/r"), with optional query ("a=1&b=2" or a list)."""
    msg = Message(mtype, code, mid, token, payload=payload)
    msg.set_uri_path(path)
    if query:
        msg.set_uri_query(query)
    if content_format is not None:
        msg.add_option(CONTENT_FORMAT, content_format)
    if accept is not None:
        msg.add_option(ACCEPT, accept)
    return msg


def make_response(request, code, payload=b"", options=None, content_format=None, mid=None):
    """A response to `request`: piggybacked in the ACK of a CON (same mid and
    token); for a NON request a NON with the same token and the given new `mid`."""
    if request.mtype == CON:
        mtype, rmid = ACK, request.mid
    elif request.mtype == NON:
        if mid is None:
            raise EncodeError("a response to a NON request needs its own message ID")
        mtype, rmid = NON, mid
    else:
        raise EncodeError("cannot respond to a %s message" % TYPE_NAMES[request.mtype])
    msg = Message(mtype, code, rmid, request.token, options, payload)
    if content_format is not None:
        msg.set_option(CONTENT_FORMAT, content_format)
    return msg


def empty_ack(msg):
    """An Empty ACK for a CON message (a separate response follows later)."""
    return Message(ACK, EMPTY, msg.mid)


def make_rst(msg):
    """An RST for a message we cannot process (or to cancel an observation)."""
    return Message(RST, EMPTY, msg.mid)
