"""CoRE link-format (RFC 6690): serialise, parse and filter links.

A link is `(target, attrs)`: `target` is the URI-reference between the angle
brackets ("/r", "coap://[::1]/rd"), `attrs` maps attribute names to values:

    str   a value (quoted on output when needed, and always for rt, if,
          rel, rev, anchor, title, as RFC 6690 and common use expect)
    int   a non-negative number written unquoted (sz, ct, lt)
    True  a flag: the name without a value ("obs")
    list  a repeated attribute: rt="a";rt="b" <-> {"rt": ["a", "b"]}

`serialize(links)` also takes `attrs` as a list of (name, value) pairs when
the order matters (MicroPython dicts do not keep insertion order).
`parse(text)` returns dicts; an unquoted all-digit value (no leading zero)
comes back as an int, a quoted one as a str, and an attribute seen twice as a
list. Whitespace around ",", ";" and "=" is tolerated (RFC 6690 has none, but
people write it). Malformed text -> LinkFormatError with the byte offset.

`match(links, name, value)` and `query_filter(links, queries)` apply the
/.well-known/core query semantics of RFC 6690 section 4.1: "href" matches the
target, a value ending in "*" is a prefix match, and a space-separated
attribute value (rt="a b") matches when any of its parts does.

Runs on MicroPython and CPython. Parsing works on the UTF-8 bytes, so offsets
are byte offsets and non-ASCII text costs no per-character indexing on the
device.
"""

from .errors import EncodeError, LinkFormatError

# Attributes whose values are quoted on output even when they need not be.
QUOTED_ATTRS = ("rt", "if", "rel", "rev", "anchor", "title")

_WS = b" \t\r\n"
# RFC 5988 parmname (attr-char) plus "*" for extended names like title*.
_NAME = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&+-.^_`|~*"
# RFC 6690 ptokenchar: what an unquoted value may contain when parsing.
_PTOKEN = _NAME + b"%'()/:<=>?@[]{}"
# Written unquoted only from this safer subset, which every parser reads as a
# token (some, like the one in aiocoap, split on ":" "/" "=" "?" and brackets).
_BARE = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
_DIGITS = b"0123456789"


def _only(data, allowed):
    for c in data:
        if c not in allowed:
            return False
    return True


def _value_text(name, value):
    if value is True:
        return name
    if isinstance(value, bool) or value is None:
        raise EncodeError("attribute %s: a flag is True; omit the attribute instead of %r"
                          % (name, value))
    if isinstance(value, int):
        if value < 0:
            raise EncodeError("attribute %s: numbers must be non-negative, got %d" % (name, value))
        return "%s=%d" % (name, value)
    if not isinstance(value, str):
        raise EncodeError("attribute %s: value must be str, int, True or a list, got %r"
                          % (name, value))
    raw = value.encode()
    if (name in QUOTED_ATTRS or not raw or not _only(raw, _BARE) or _only(raw, _DIGITS)):
        return '%s="%s"' % (name, value.replace("\\", "\\\\").replace('"', '\\"'))
    return "%s=%s" % (name, value)


def _attr_items(attrs):
    if isinstance(attrs, dict):
        return attrs.items()
    return attrs


def serialize(links):
    """Link-format text for a list of (target, attrs)."""
    out = []
    for target, attrs in links:
        if not isinstance(target, str):
            raise EncodeError("link target must be a str, got %r" % (target,))
        for c in target.encode():
            if c <= 0x20 or c in b'<>"':
                raise EncodeError("link target %r contains %r" % (target, chr(c)))
        parts = ["<" + target + ">"]
        for name, value in _attr_items(attrs):
            if not isinstance(name, str) or not name or not _only(name.encode(), _NAME):
                raise EncodeError("bad attribute name %r" % (name,))
            if isinstance(value, (list, tuple)):
                if not value:
                    raise EncodeError("attribute %s: empty list" % name)
                for v in value:
                    parts.append(_value_text(name, v))
            else:
                parts.append(_value_text(name, value))
        out.append(";".join(parts))
    return ",".join(out)


def _skip_ws(data, i, n):
    while i < n and data[i] in _WS:
        i += 1
    return i


def _text(raw, offset):
    try:
        return raw.decode()
    except UnicodeError:
        raise LinkFormatError("invalid UTF-8", offset)


def _add(attrs, name, value):
    if name not in attrs:
        attrs[name] = value
    elif isinstance(attrs[name], list):
        attrs[name].append(value)
    else:
        attrs[name] = [attrs[name], value]


def _quoted(data, i, n):
    """Value of the quoted-string opening at data[i]; returns (str, next index)."""
    start = i
    i += 1
    out = bytearray()
    while i < n:
        c = data[i]
        if c == 0x5C:  # backslash: quoted-pair
            if i + 1 >= n:
                break
            out.append(data[i + 1])
            i += 2
        elif c == 0x22:
            return _text(bytes(out), start), i + 1
        else:
            out.append(c)
            i += 1
    raise LinkFormatError("unterminated quoted string", start)


def parse(text):  # noqa: C901 - a hand-written scanner, one loop over the bytes
    """List of (target, attrs dict) from link-format text (str or UTF-8 bytes)."""
    if isinstance(text, str):
        data = text.encode()
    else:
        data = bytes(text)
    n = len(data)
    links = []
    i = _skip_ws(data, 0, n)
    if i == n:
        return links
    while True:
        if data[i] != 0x3C:  # "<"
            raise LinkFormatError("expected '<' to open a link", i)
        end = data.find(b">", i + 1)
        if end < 0:
            raise LinkFormatError("link target has no closing '>'", i)
        raw = data[i + 1:end]
        for k in range(len(raw)):
            if raw[k] <= 0x20 or raw[k] in b'<"':
                raise LinkFormatError("bad character in link target", i + 1 + k)
        target = _text(raw, i + 1)
        attrs = {}
        i = _skip_ws(data, end + 1, n)
        while i < n and data[i] == 0x3B:  # ";"
            i = _skip_ws(data, i + 1, n)
            start = i
            while i < n and data[i] in _NAME:
                i += 1
            if i == start:
                raise LinkFormatError("expected an attribute name", start)
            name = data[start:i].decode()
            i = _skip_ws(data, i, n)
            if i < n and data[i] == 0x3D:  # "="
                i = _skip_ws(data, i + 1, n)
                if i < n and data[i] == 0x22:
                    value, i = _quoted(data, i, n)
                else:
                    vstart = i
                    while i < n and data[i] in _PTOKEN:
                        i += 1
                    if i == vstart:
                        raise LinkFormatError("attribute %s: expected a value" % name, vstart)
                    raw = data[vstart:i]
                    if _only(raw, _DIGITS) and (raw[0] != 0x30 or len(raw) == 1):
                        value = int(raw.decode())
                    else:
                        value = raw.decode()
                i = _skip_ws(data, i, n)
            else:
                value = True
            _add(attrs, name, value)
        links.append((target, attrs))
        if i == n:
            return links
        if data[i] != 0x2C:  # ","
            raise LinkFormatError("expected ',' or ';' after a link", i)
        i = _skip_ws(data, i + 1, n)
        if i == n:
            raise LinkFormatError("expected a link after ','", i)


def _value_matches(value, pattern):
    if value is True:
        return pattern == ""
    value = str(value)
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        if value.startswith(prefix):
            return True
        for part in value.split(" "):
            if part.startswith(prefix):
                return True
        return False
    if value == pattern:
        return True
    return pattern in value.split(" ")


def link_matches(link, name, pattern=None):
    """True when `link` passes the filter name=pattern (RFC 6690 section 4.1).

    pattern None asks only that the attribute be present; "href" is the target.
    """
    target, attrs = link
    if name == "href":
        values = [target]
    else:
        value = attrs.get(name)
        if value is None:
            return False
        values = value if isinstance(value, list) else [value]
    if pattern is None:
        return True
    for v in values:
        if _value_matches(v, pattern):
            return True
    return False


def match(links, name, pattern=None):
    """The links that pass one filter, e.g. match(links, "rt", "core.rd*")."""
    return [link for link in links if link_matches(link, name, pattern)]


def query_filter(links, queries):
    """The links that pass every Uri-Query filter ("rt=core.rd*", "obs", ...)."""
    for q in queries:
        name, sep, pattern = q.partition("=")
        links = match(links, name, pattern if sep else None)
    return links
