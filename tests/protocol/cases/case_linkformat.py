"""Cases for protocol/linkformat.py (run under CPython and MicroPython).

The examples are those of RFC 6690 (sections 2 and 5) and RFC 9176, written
out by hand with the structure they mean.
"""

import sys

from smartpark.protocol import linkformat as lf
from smartpark.protocol.errors import DecodeError, EncodeError, LinkFormatError

# dict order is kept on CPython; MicroPython may reorder a dict's attributes
ORDERED_DICTS = sys.implementation.name != "micropython"

# Links from the examples of RFC 6690 section 5, wrapped over lines as the RFC shows them
RFC6690_EX = (
    '</sensors>;ct=40;title="Sensor Index",\n'
    '</sensors/temp>;rt="temperature-c";if="sensor",\n'
    '</sensors/light>;rt="light-lux";if="sensor",\n'
    '<http://www.example.com/sensors/t123>;anchor="/sensors/temp"\n'
    ';rel="describedby",\n'
    '</t>;anchor="/sensors/temp";rel="alternate"'
)
RFC6690_LINKS = [
    ("/sensors", {"ct": 40, "title": "Sensor Index"}),
    ("/sensors/temp", {"rt": "temperature-c", "if": "sensor"}),
    ("/sensors/light", {"rt": "light-lux", "if": "sensor"}),
    ("http://www.example.com/sensors/t123", {"anchor": "/sensors/temp", "rel": "describedby"}),
    ("/t", {"anchor": "/sensors/temp", "rel": "alternate"}),
]

# What a hub offers at /.well-known/core (RFC 9176 section 4.3 names)
HUB = ('</rd>;rt="core.rd";ct=40,</rd-lookup/ep>;rt="core.rd-lookup-ep";ct=40,'
       '</rd-lookup/res>;rt="core.rd-lookup-res";ct=40,'
       '</r>;rt="smartpark.report";ct="110 112",</s/1>;rt="temperature-c light-lux";obs')


def _error(text, offset=None):
    try:
        lf.parse(text)
    except LinkFormatError as e:
        assert isinstance(e, DecodeError)
        if offset is not None:
            assert e.offset == offset, "%r: offset %r, want %r (%s)" % (text, e.offset, offset, e)
        return
    raise AssertionError("no LinkFormatError for %r" % (text,))


def _encode_error(links):
    try:
        lf.serialize(links)
    except EncodeError:
        return
    raise AssertionError("no EncodeError for %r" % (links,))


def _targets(links):
    return [t for t, _ in links]


def test_rfc6690_example_parses():
    assert lf.parse(RFC6690_EX) == RFC6690_LINKS


def test_rfc6690_example_serializes():
    pairs = [(t, sorted(a.items())) for t, a in RFC6690_LINKS]
    want = ('</sensors>;ct=40;title="Sensor Index",'
            '</sensors/light>;if="sensor";rt="light-lux",')
    got = lf.serialize([pairs[0], pairs[2]]) + ","
    assert got == want, got
    assert lf.parse(lf.serialize(pairs)) == RFC6690_LINKS


def test_serialize_exact():
    links = [("/sensors/temp", [("rt", "temperature-c"), ("if", "sensor")]),
             ("/sensors/light", [("rt", "light-lux"), ("if", "sensor")])]
    assert lf.serialize(links) == ('</sensors/temp>;rt="temperature-c";if="sensor",'
                                   '</sensors/light>;rt="light-lux";if="sensor"')
    assert lf.serialize([("/s/1", [("obs", True), ("sz", 262144), ("ct", 112)])]) == \
        "</s/1>;obs;sz=262144;ct=112"
    assert lf.serialize([("/a", {"rt": ["x", "y"]})]) == '</a>;rt="x";rt="y"'
    assert lf.serialize([]) == ""
    assert lf.serialize([("/", {})]) == "</>"


def test_quoting_when_needed():
    cases = (
        ("ep", "node-1", "ep=node-1"),
        ("ep", "a b", 'ep="a b"'),
        ("x", "a,b;c", 'x="a,b;c"'),
        ("x", 'say "hi"', 'x="say \\"hi\\""'),
        ("x", "back\\slash", 'x="back\\\\slash"'),
        ("x", "", 'x=""'),
        ("x", "0042", 'x="0042"'),      # would come back as an int unquoted
        ("x", "12", 'x="12"'),
        ("x", "a/b:c", 'x="a/b:c"'),
        ("title", "plain", 'title="plain"'),
        ("title", "Temp \u00b0C", 'title="Temp \u00b0C"'),
    )
    for name, value, text in cases:
        got = lf.serialize([("/a", [(name, value)])])
        assert got == "</a>;" + text, (value, got)
        assert lf.parse(got) == [("/a", {name: value})], got


def test_quoted_separators_inside():
    text = '</a>;title="x, y; z";rt="q",</b>;title="<c>=d"'
    assert lf.parse(text) == [("/a", {"title": "x, y; z", "rt": "q"}),
                              ("/b", {"title": "<c>=d"})]


def test_repeated_attributes():
    links = lf.parse('</a>;rt="x";rt="y";rt=z;if="i"')
    assert links == [("/a", {"rt": ["x", "y", "z"], "if": "i"})]
    assert lf.parse(lf.serialize(links)) == links


def test_values_types():
    links = lf.parse("</a>;sz=0;ct=40;lt=007;obs;ct2=\"40\";n=-1;x=1.5")
    assert links[0][1] == {"sz": 0, "ct": 40, "lt": "007", "obs": True, "ct2": "40",
                           "n": "-1", "x": "1.5"}


def test_whitespace_tolerated():
    text = '  </a> ; rt = "x" ;obs ,\r\n\t</b>;if=sensor  '
    assert lf.parse(text) == [("/a", {"rt": "x", "obs": True}), ("/b", {"if": "sensor"})]
    assert lf.parse("") == [] and lf.parse(" \n ") == []


def test_bytes_input_and_utf8():
    data = '</t>;title="Temp \u00b0C"'.encode()
    assert lf.parse(data) == [("/t", {"title": "Temp \u00b0C"})]
    assert lf.parse(bytearray(data)) == lf.parse(data)
    _error(b'</t>;title="\xff"', 11)


def test_full_uris_and_ptoken_values():
    text = '<coap://[2001:db8::1]:5683/r?x=1>;anchor="coap://h/";type=text/plain;hreflang=en-GB'
    assert lf.parse(text) == [("coap://[2001:db8::1]:5683/r?x=1",
                               {"anchor": "coap://h/", "type": "text/plain", "hreflang": "en-GB"})]


def test_malformed():
    _error("a", 0)
    _error(" /a", 1)
    _error("</a", 0)
    _error("</a>;", 5)
    _error("</a>;=x", 5)
    _error("</a>;rt=", 8)
    _error("</a>;rt=,</b>", 8)
    _error('</a>;title="x', 11)
    _error('</a>;title="x\\', 11)
    _error("</a>,", 5)
    _error("</a>,,</b>", 5)
    _error("</a> </b>", 5)
    _error('</a>;rt="x"y', 11)
    _error('</a>;rt=a"b"', 9)
    _error("</a b>", 3)
    _error("</a<b>", 3)
    _error("</a>;r\u00e9=1", 6)


def test_serialize_rejects():
    _encode_error([("/a>", {})])
    _encode_error([("/a b", {})])
    _encode_error([(b"/a", {})])
    _encode_error([("/a", {"": "x"})])
    _encode_error([("/a", {"r t": "x"})])
    _encode_error([("/a", {"obs": False})])
    _encode_error([("/a", {"obs": None})])
    _encode_error([("/a", {"sz": -1})])
    _encode_error([("/a", {"sz": 1.5})])
    _encode_error([("/a", {"rt": []})])


def test_round_trips():
    samples = [
        [("/rd", {"rt": "core.rd", "ct": 40})],
        [("/s/%d" % i, {"rt": "t%d" % i, "if": "sensor", "obs": True, "sz": i}) for i in range(5)],
        [("/a", {"title": 'q"u\\o,t;e', "x": ["1", 2, True]})],
        [("", {})],
    ]
    for links in samples:
        text = lf.serialize(links)
        assert lf.parse(text) == links, text
        if ORDERED_DICTS:
            assert lf.serialize(lf.parse(text)) == text


def test_match_rt_prefix():
    links = lf.parse(HUB)
    assert _targets(lf.match(links, "rt", "core.rd*")) == ["/rd", "/rd-lookup/ep", "/rd-lookup/res"]
    assert _targets(lf.match(links, "rt", "core.rd")) == ["/rd"]
    assert _targets(lf.match(links, "rt", "core.rd-lookup-*")) == ["/rd-lookup/ep", "/rd-lookup/res"]
    assert _targets(lf.match(links, "rt", "light-lux")) == ["/s/1"]
    assert _targets(lf.match(links, "rt", "light*")) == ["/s/1"]
    assert _targets(lf.match(links, "rt", "lux")) == []
    assert _targets(lf.match(links, "rt", "*")) == _targets(links)


def test_match_href_flags_numbers():
    links = lf.parse(HUB)
    assert _targets(lf.match(links, "href", "/rd*")) == ["/rd", "/rd-lookup/ep", "/rd-lookup/res"]
    assert _targets(lf.match(links, "href", "/r")) == ["/r"]
    assert _targets(lf.match(links, "obs")) == ["/s/1"]
    assert _targets(lf.match(links, "ct", "40")) == ["/rd", "/rd-lookup/ep", "/rd-lookup/res"]
    assert _targets(lf.match(links, "ct", "112")) == ["/r"]
    assert _targets(lf.match(links, "if")) == []


def test_query_filter():
    links = lf.parse(HUB)
    assert lf.query_filter(links, []) == links
    assert _targets(lf.query_filter(links, ["rt=core.rd*", "href=/rd"])) == ["/rd"]
    assert _targets(lf.query_filter(links, ["obs"])) == ["/s/1"]
    assert _targets(lf.query_filter(links, ["rt=core.rd*", "obs"])) == []
