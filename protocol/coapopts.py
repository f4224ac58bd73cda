"""CoAP constants and option values (RFC 7252, RFC 7959, RFC 7641).

The numbers of message types, codes, options and content formats, and the
codecs of option values that are more than bytes: uint (`encode_uint`,
`decode_uint`), Block1/Block2 (`block_encode`, `block_decode`) and Observe
(`observe_encode`, `observe_newer`). Split from coap.py (which re-exports
all of it, so `coap.CHANGED` and `coap.block_encode` work) to keep each
module small; use it directly when only the values are needed.

Runs on MicroPython and CPython.
"""

from .errors import CoAPDecodeError, EncodeError

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

VERSION = const(1)

# Message types (section 3)
CON = const(0)
NON = const(1)
ACK = const(2)
RST = const(3)
TYPE_NAMES = ("CON", "NON", "ACK", "RST")

# Codes (section 12.1): class << 5 | detail
EMPTY = const(0x00)
GET = const(0x01)
POST = const(0x02)
PUT = const(0x03)
DELETE = const(0x04)
FETCH = const(0x05)
CREATED = const(0x41)
DELETED = const(0x42)
VALID = const(0x43)
CHANGED = const(0x44)
CONTENT = const(0x45)
CONTINUE = const(0x5f)
BAD_REQUEST = const(0x80)
UNAUTHORIZED = const(0x81)
BAD_OPTION = const(0x82)
FORBIDDEN = const(0x83)
NOT_FOUND = const(0x84)
METHOD_NOT_ALLOWED = const(0x85)
NOT_ACCEPTABLE = const(0x86)
REQUEST_ENTITY_INCOMPLETE = const(0x88)
PRECONDITION_FAILED = const(0x8c)
REQUEST_ENTITY_TOO_LARGE = const(0x8d)
UNSUPPORTED_CONTENT_FORMAT = const(0x8f)
INTERNAL_SERVER_ERROR = const(0xa0)
NOT_IMPLEMENTED = const(0xa1)
BAD_GATEWAY = const(0xa2)
SERVICE_UNAVAILABLE = const(0xa3)
GATEWAY_TIMEOUT = const(0xa4)

CODE_NAMES = {
    EMPTY: "Empty", GET: "GET", POST: "POST", PUT: "PUT", DELETE: "DELETE",
    FETCH: "FETCH", CREATED: "Created", DELETED: "Deleted", VALID: "Valid",
    CHANGED: "Changed", CONTENT: "Content", CONTINUE: "Continue",
    BAD_REQUEST: "Bad Request", UNAUTHORIZED: "Unauthorized",
    BAD_OPTION: "Bad Option", FORBIDDEN: "Forbidden", NOT_FOUND: "Not Found",
    METHOD_NOT_ALLOWED: "Method Not Allowed", NOT_ACCEPTABLE: "Not Acceptable",
    REQUEST_ENTITY_INCOMPLETE: "Request Entity Incomplete",
    PRECONDITION_FAILED: "Precondition Failed",
    REQUEST_ENTITY_TOO_LARGE: "Request Entity Too Large",
    UNSUPPORTED_CONTENT_FORMAT: "Unsupported Content-Format",
    INTERNAL_SERVER_ERROR: "Internal Server Error",
    NOT_IMPLEMENTED: "Not Implemented", BAD_GATEWAY: "Bad Gateway",
    SERVICE_UNAVAILABLE: "Service Unavailable", GATEWAY_TIMEOUT: "Gateway Timeout",
}

# Option numbers (section 5.10, RFC 7641, RFC 7959, RFC 8613, RFC 9175)
IF_MATCH = const(1)
URI_HOST = const(3)
ETAG = const(4)
IF_NONE_MATCH = const(5)
OBSERVE = const(6)
URI_PORT = const(7)
LOCATION_PATH = const(8)
OSCORE = const(9)
URI_PATH = const(11)
CONTENT_FORMAT = const(12)
MAX_AGE = const(14)
URI_QUERY = const(15)
ACCEPT = const(17)
LOCATION_QUERY = const(20)
BLOCK2 = const(23)
BLOCK1 = const(27)
SIZE2 = const(28)
PROXY_URI = const(35)
PROXY_SCHEME = const(39)
SIZE1 = const(60)
ECHO = const(252)         # RFC 9175

OPTION_NAMES = {
    IF_MATCH: "If-Match", URI_HOST: "Uri-Host", ETAG: "ETag",
    IF_NONE_MATCH: "If-None-Match", OBSERVE: "Observe", URI_PORT: "Uri-Port",
    LOCATION_PATH: "Location-Path", OSCORE: "OSCORE", URI_PATH: "Uri-Path",
    CONTENT_FORMAT: "Content-Format", MAX_AGE: "Max-Age", URI_QUERY: "Uri-Query",
    ACCEPT: "Accept", LOCATION_QUERY: "Location-Query", BLOCK2: "Block2",
    BLOCK1: "Block1", SIZE2: "Size2", PROXY_URI: "Proxy-Uri",
    PROXY_SCHEME: "Proxy-Scheme", SIZE1: "Size1", ECHO: "Echo",
}

# Content formats (section 12.3 and the IANA registry)
TEXT_PLAIN = const(0)
LINK_FORMAT = const(40)
OCTET_STREAM = const(42)
JSON = const(50)
CBOR = const(60)
SENML_JSON = const(110)
SENML_CBOR = const(112)

DEFAULT_MAX_AGE = const(60)  # seconds, when a response carries no Max-Age
OBSERVE_REGISTER = const(0)
OBSERVE_DEREGISTER = const(1)


def code_str(code):
    """A code in dotted form: 0x44 -> "2.04"."""
    return "%d.%02d" % (code >> 5, code & 0x1F)


def is_request(code):
    return 1 <= code <= 31


def is_response(code):
    return 64 <= code <= 191


def is_critical(number):
    """Critical options (odd numbers) must be understood or the message rejected."""
    return number & 1 == 1


# -- uint option values (section 3.2) ---------------------------------------

def encode_uint(value):
    """Shortest big-endian form of a non-negative int; 0 is the empty string."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise EncodeError("uint option value must be a non-negative int: %r" % (value,))
    if value >= 1 << 64:
        raise EncodeError("uint option value too large: %d" % value)
    n = 0
    while value >> (8 * n):
        n += 1
    out = bytearray(n)
    while n:
        n -= 1
        out[n] = value & 0xFF
        value >>= 8
    return bytes(out)


def decode_uint(data, max_len=8):
    """Value of a uint option (leading zero bytes are allowed)."""
    if len(data) > max_len:
        raise CoAPDecodeError("uint option value longer than %d bytes" % max_len)
    value = 0
    for b in data:
        value = (value << 8) | b
    return value


# -- Block1/Block2 (RFC 7959 section 2.2) --------------------------------------

def block_size(szx):
    """Block size in bytes for SZX 0..6 (16..1024)."""
    if not 0 <= szx <= 6:
        raise EncodeError("block SZX must be 0..6, got %r" % (szx,))
    return 16 << szx


def block_encode(num, more, szx):
    """Block option value for block number `num`, more flag, size exponent."""
    if not 0 <= szx <= 6:
        raise EncodeError("block SZX must be 0..6 (7 is reserved), got %r" % (szx,))
    if not isinstance(num, int) or not 0 <= num < 1 << 20:
        raise EncodeError("block number must be 0..2**20-1, got %r" % (num,))
    return encode_uint((num << 4) | (8 if more else 0) | szx)


def block_decode(data):
    """(num, more, szx) from a Block1/Block2 option value."""
    if len(data) > 3:
        raise CoAPDecodeError("block option value longer than 3 bytes")
    value = decode_uint(data)
    szx = value & 7
    if szx == 7:
        raise CoAPDecodeError("block SZX 7 is reserved")
    return value >> 4, bool(value & 8), szx


# -- Observe (RFC 7641) -----------------------------------------------------------

def observe_encode(seq):
    """Observe option value: the low 24 bits of a sequence number."""
    return encode_uint(seq & 0xFFFFFF)


def observe_newer(v1, t1, v2, t2):
    """True when notification (v2, t2) is fresher than (v1, t1) (RFC 7641 s3.4).

    v1, v2 are 24-bit Observe values; t1, t2 are local receive times in seconds.
    """
    if (v1 < v2 and v2 - v1 < 1 << 23) or (v1 > v2 and v1 - v2 > 1 << 23):
        return True
    return t2 > t1 + 128
