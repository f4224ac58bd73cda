"""fast/udp.pyx on its own: the report classifier against protocol.coap (reference) and the
ACK builder against aiocoap (outside judge); the per-peer response cache over real sockets.
(The report ack's encoder, fast/ack.pyx: tests/fast/test_fast_ack.py.)"""

import random
import resource
import socket
import sys
import tracemalloc

import aiocoap
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers import require
from smartpark import fast
from smartpark.fast import ack_head
from smartpark.protocol import coap
from smartpark.protocol.errors import DecodeError

udp = fast.udp  # None: not built, SMARTPARK_PUREPYTHON=1, or not Linux
pytestmark = [pytest.mark.compiled,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="recvmmsg/sendmmsg are Linux's")]


@pytest.fixture(autouse=True, scope="module")
def _udp_built():
    require(udp is not None, "smartpark.fast.udp: %s" % fast.UNAVAILABLE.get("udp"))

REPORT_OPTS = {coap.URI_HOST, coap.URI_PORT, coap.URI_PATH, coap.CONTENT_FORMAT}


def _expected(data):
    """What the classifier must say, decided with the reference parser."""
    try:
        m = coap.parse(data)
    except DecodeError:
        return None
    if m.mtype != coap.CON or m.code != coap.POST or not m.payload:
        return None
    nums = [n for n, _v in m.options]
    if not set(nums) <= REPORT_OPTS or any(nums.count(n) > 1 for n in set(nums)):
        return None
    if m.get_options(coap.URI_PATH) != [b"r"]:
        return None
    cf = m.get_option(coap.CONTENT_FORMAT)
    if cf is not None and len(cf) > 2:
        return None
    return (m.mid, m.token, m.content_format, m.payload)


option_numbers = st.sampled_from([coap.URI_HOST, coap.URI_PORT, coap.URI_PATH, coap.URI_PATH,
                                  coap.CONTENT_FORMAT, coap.CONTENT_FORMAT, coap.OBSERVE,
                                  coap.URI_QUERY, coap.BLOCK1, coap.SIZE1, coap.ACCEPT, 2049])
option_values = st.one_of(st.just(b"r"), st.just(b"p"), st.just(b"\x70"), st.just(b""),
                          st.binary(max_size=3), st.binary(min_size=12, max_size=300))


@st.composite
def messages(draw):
    mtype = draw(st.sampled_from([coap.CON, coap.CON, coap.CON, coap.NON, coap.ACK, coap.RST]))
    code = draw(st.sampled_from([coap.POST, coap.POST, coap.POST, coap.GET, coap.PUT, 0x44]))
    m = coap.Message(mtype, code, draw(st.integers(0, 0xFFFF)),
                     token=draw(st.binary(max_size=8)), payload=draw(st.binary(max_size=40)))
    if draw(st.booleans()):
        m.add_option(coap.URI_PATH, b"r")
        m.add_option(coap.CONTENT_FORMAT, bytes([112]))
    for _ in range(draw(st.integers(0, 3))):
        m.add_option(draw(option_numbers), draw(option_values))
    data = bytearray(m.encode())
    action = draw(st.sampled_from(["keep", "keep", "flip", "truncate", "extend", "empty"]))
    if action == "empty":
        data[1] = 0  # code 0.00 with whatever follows
    elif action == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= draw(st.integers(1, 255))
    elif action == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif action == "extend":
        data += draw(st.binary(max_size=8))
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_classifier_agrees_with_reference_parser(data):
    assert udp.parse_report(data) == _expected(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_classifier_random_bytes(data):
    assert udp.parse_report(data) == _expected(data)


def test_classifier_examples():
    m = coap.make_request(coap.POST, "/r", 7, token=b"\x01\x02", payload=b"\x80")
    m.add_option(coap.CONTENT_FORMAT, b"\x70")
    assert udp.parse_report(m.encode()) == (7, b"\x01\x02", 112, b"\x80")
    m.add_option(coap.URI_PORT, b"\x16\x33")  # what libcoap's coap-client sends
    assert udp.parse_report(m.encode()) == (7, b"\x01\x02", 112, b"\x80")
    for path in ("/r/x", "/rd", "/"):
        other = coap.make_request(coap.POST, path, 7, payload=b"\x80")
        assert udp.parse_report(other.encode()) is None, path
    nocf = coap.make_request(coap.POST, "/r", 9, payload=b"x")
    assert udp.parse_report(nocf.encode()) == (9, b"", None, b"x")
    non = coap.make_request(coap.POST, "/r", 9, mtype=coap.NON, payload=b"x")
    assert udp.parse_report(non.encode()) is None  # aiocoap answers NON with its own MID
    empty = coap.make_request(coap.POST, "/r", 9)
    assert udp.parse_report(empty.encode()) is None


@settings(max_examples=300, deadline=None)
@given(mid=st.integers(0, 0xFFFF), token=st.binary(max_size=8),
       code=st.sampled_from([0x44, 0x80, 0x8D, 0x8F, 0xA3]),
       cf=st.sampled_from([None, 0, 60]), max_age=st.sampled_from([None, 1, 5, 300, 70000]),
       payload=st.binary(max_size=60))
def test_ack_bytes_equal_aiocoap(mid, token, code, cf, max_age, payload):
    m = aiocoap.Message(mtype=aiocoap.ACK, mid=mid, token=token, code=aiocoap.Code(code),
                        payload=payload)
    if cf is not None:
        m.opt.content_format = cf
    if max_age is not None:
        m.opt.max_age = max_age
    assert udp.build_ack(mid, token, code, cf, max_age, payload) == m.encode()


# ---- the endpoint over real sockets --------------------------------------------------------

@pytest.fixture
def server():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    s.bind(("::1", 0))
    s.setblocking(False)
    yield s
    s.close()


def _client(server):
    c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    c.connect(server.getsockname()[:2])
    c.settimeout(5)
    return c


def _report(mid, payload=b"\x81\xa2\x00ax\x02\x01", token=b"tk"):
    m = coap.make_request(coap.POST, "/r", mid, token=token, payload=payload)
    m.add_option(coap.CONTENT_FORMAT, b"\x70")
    return m.encode()


def _pump(ep, room=1000, want=None):
    """recv+classify the next datagrams (already sent on loopback; wait up to 1 s)."""
    for _ in range(100):
        if ep.recv():
            reports, others = ep.classify(0.0, room)
            ep.flush()
            return reports, others
        select_wait(ep)
    return [], []


def select_wait(_ep, t=0.01):
    import select

    select.select([], [], [], t)


def test_retransmission_gets_identical_bytes(server):
    ep = udp.Endpoint(server.fileno())
    c = _client(server)
    req = _report(100)
    c.send(req)
    reports, others = _pump(ep)
    assert len(reports) == 1 and not others
    peer, mid, token, cf, payload, _pktinfo = reports[0]
    assert (mid, token, cf, payload) == (100, b"tk", 112, req[req.index(b"\xff") + 1:])
    assert peer.address.startswith("[::1]:")
    c.send(req)  # retransmitted while in flight: dropped, the response follows
    _pump(ep)
    assert ep.n_inflight_dropped == 1
    sent = ep.respond(peer, mid, token, 0x44, 60, None, b"\xa0", None)
    ep.flush()
    first = c.recv(100)
    assert first == sent and coap.parse(first).mtype == coap.ACK
    c.send(req)
    r2, _ = _pump(ep)
    assert r2 == [] and ep.n_resent == 1
    assert c.recv(100) == first  # the identical response from the cache
    # same MID, different request bytes: a new exchange (a rebooted node), not a duplicate
    c.send(_report(100, payload=b"\x81\xa2\x00ay\x02\x02"))
    r3, _ = _pump(ep)
    assert len(r3) == 1
    c.close()


def test_cache_ring_evicts_oldest_then_reingests(server):
    ep = udp.Endpoint(server.fileno(), ring=2)
    c = _client(server)
    for mid in (1, 2, 3):
        c.send(_report(mid))
        (rep,), _ = _pump(ep)
        ep.respond(rep[0], rep[1], rep[2], 0x44, 60, None, b"\xa0", None)
        ep.flush()
        c.recv(100)
    assert sorted(m for m, _s, _r in rep[0].cached()) == [2, 3]
    c.send(_report(1))  # evicted: handled again (POST /r is idempotent)
    again, _ = _pump(ep)
    assert [r[1] for r in again] == [1]
    c.close()


def test_overload_answers_503_with_max_age_and_does_not_cache(server):
    ep = udp.Endpoint(server.fileno())
    c = _client(server)
    c.send(_report(5))
    reports, _ = _pump(ep, room=0)
    assert reports == [] and ep.n_rejected == 1
    resp = coap.parse(c.recv(100))
    assert (resp.mtype, resp.code, resp.mid, resp.token, resp.max_age) == (
        coap.ACK, coap.SERVICE_UNAVAILABLE, 5, b"tk", 2)
    c.send(_report(5))  # once there is room, the same message is taken
    reports, _ = _pump(ep, room=10)
    assert [r[1] for r in reports] == [5]
    c.close()


def test_other_datagrams_pass_unchanged_with_address_and_pktinfo(server):
    ep = udp.Endpoint(server.fileno())
    c = _client(server)
    get = coap.make_request(coap.GET, "/.well-known/core", 77, token=b"g").encode()
    junk = b"\xff\x00junk"
    for d in (get, junk, b""):
        c.send(d)
    got = []
    for _ in range(100):
        _r, o = _pump(ep)
        got += o
        if len(got) >= 3:
            break
    assert [g[0] for g in got] == [get, junk, b""]
    for _data, anc, _flags, addr in got:
        assert addr == c.getsockname()
        assert [(lvl, typ) for lvl, typ, _d in anc] == [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO)]
    c.close()


def test_mutated_datagrams_never_raise(server):
    ep = udp.Endpoint(server.fileno(), nmsg=64)
    c = _client(server)
    rnd = random.Random(7)
    base = _report(1)
    sent = 0
    for i in range(3000):
        d = bytearray(base)
        for _ in range(rnd.randint(1, 4)):
            op = rnd.random()
            if op < 0.5 and d:
                d[rnd.randrange(len(d))] = rnd.randrange(256)
            elif op < 0.8:
                d = d[:rnd.randrange(len(d) + 1)]
            else:
                d[rnd.randrange(len(d) + 1):0] = bytes(rnd.randrange(256) for _ in range(3))
        d[2:4] = (i & 0xFFFF).to_bytes(2, "big")
        c.send(bytes(d))
        sent += 1
        if i % 50 == 49:
            for _ in range(20):
                if not ep.recv():
                    break
                reports, _others = ep.classify(0.0, 1000)
                for rep in reports:
                    ep.respond(rep[0], rep[1], rep[2], 0x44, None, None, b"", None)
                ep.flush()
    assert ep.n_received > 0
    assert ep.n_reports + ep.n_other == ep.n_received
    c.close()


def test_peer_table_is_bounded_and_memory_measured(server):
    """10,000 peers through an endpoint limited to 2,000: the oldest are evicted; the
    memory held per cached peer is measured with tracemalloc."""
    ep = udp.Endpoint(server.fileno(), max_peers=2000)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 10300:
        pytest.skip("needs 10,300 file descriptors (hard limit %d)" % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 10300), hard))
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    clients = []
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    try:
        for chunk in range(100):
            batch = [_client(server) for _ in range(100)]
            clients += batch
            for k, c in enumerate(batch):
                c.send(_report(chunk * 100 + k))
            seen = 0
            for _ in range(400):
                if ep.recv():
                    reports, _o = ep.classify(0.0, 100000)
                    for rep in reports:
                        ep.respond(rep[0], rep[1], rep[2], 0x44, 60, None, b"\xa5" + b"x" * 20,
                                   None)
                    ep.flush()
                    seen += len(reports)
                if seen >= 100:
                    break
                select_wait(ep, 0.001)
            for c in batch:
                c.recv(100)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
        for c in clients:
            c.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert ep.peer_count == 2000
    assert ep.n_reports == 10000  # every datagram answered (the clients got their ACK)
    assert ep.n_evicted == 10000 - 2000
    per_peer = grown / ep.peer_count
    # one Peer: object, 28-byte address key, printable address, sockaddr tuple, ring of
    # cached responses -- well under 2 kB each; 10,000 peers stay under 20 MB.
    assert per_peer < 2048, per_peer
    assert ep.memory_bytes() < 2000 * 2048 + ep.nmsg * (ep.bufsize + 1024)


class _Result:
    """What FastPath hands respond_many besides lane tuples: ReportResult's fields."""

    def __init__(self, code, payload, content_format=None, max_age=None):
        self.code, self.payload = code, payload
        self.content_format, self.max_age = content_format, max_age


def test_respond_many_sends_and_caches_what_respond_would(server):
    """One batch through respond_many (lane tuples and ReportResult-like objects mixed),
    the same batch through respond one by one: identical bytes on the wire and in the
    retransmission cache."""
    from smartpark.protocol import report as ref

    now = 1795528900.125
    tokens = [b"", b"a", b"tk", b"12345678"]
    results = [(ack_head(now, 3, None), 4), (ack_head(now, 0, "fw-9.1"), 300),
               _Result(0x80, b"invalid pack: x"), _Result(0xA3, b"", None, 5)]
    expect = [udp.build_ack(100, tokens[0], 0x44, 60, None, ref.encode_ack(now, 3, None, 4, 0)),
              udp.build_ack(101, tokens[1], 0x44, 60, None,
                            ref.encode_ack(now, 0, "fw-9.1", 300, 0)),
              udp.build_ack(102, tokens[2], 0x80, 0, None, b"invalid pack: x"),
              udp.build_ack(103, tokens[3], 0xA3, None, 5, b"")]
    wire = []
    for many in (True, False):
        ep = udp.Endpoint(server.fileno())
        c = _client(server)
        for k, tok in enumerate(tokens):
            c.send(_report(100 + k, token=tok))
        reports = []
        while len(reports) < 4:
            r, _ = _pump(ep)
            assert r
            reports.extend(r)
        if many:
            assert ep.respond_many(reports, results, 0) == 4
        else:
            acks = [ref.encode_ack(now, 3, None, 4, 0), ref.encode_ack(now, 0, "fw-9.1", 300, 0)]
            for e, res, ack in zip(reports, results, acks + [None, None], strict=True):
                if type(res) is tuple:
                    ep.respond(e[0], e[1], e[2], 0x44, 60, None, ack, e[5])
                else:
                    cf = res.content_format if res.content_format is not None or not \
                        res.payload else 0
                    ep.respond(e[0], e[1], e[2], res.code, cf, res.max_age, res.payload, e[5])
        ep.flush()
        got = [c.recv(200) for _ in range(4)]
        wire.append(got)
        assert [m for m in reports[0][0].cached()] == [(e[1], 2, m) for e, m in
                                                       zip(reports, got, strict=True)]
        c.close()
    assert wire[0] == expect
    assert wire[1] == expect


def test_respond_many_refuses_mismatched_input(server):
    ep = udp.Endpoint(server.fileno())
    c = _client(server)
    c.send(_report(7))
    reports, _ = _pump(ep)
    with pytest.raises(ValueError):
        ep.respond_many(reports, [], 0)
    with pytest.raises(TypeError):
        ep.respond_many(reports, [("not bytes", 1)], 0)
    assert ep.respond_many(reports, [(ack_head(1e9, 0, None), 1)], 0) == 1
    ep.flush()
    assert coap.parse(c.recv(200)).code == 0x44
    c.close()
