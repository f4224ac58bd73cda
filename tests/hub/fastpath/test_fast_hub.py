"""The fast path inside a real hub process: differential against the aiocoap path, mutated
datagrams, overload and recovery, and aiocoap/libcoap peers on the same port."""

import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest
from hubutil import T0, HubProc, db_state, senml_cbor, senml_json  # noqa: E402
from peers import require
from smartpark import fast as _fast
from smartpark.protocol import coap, report
from smartpark.protocol.errors import DecodeError

pytestmark = [pytest.mark.compiled,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="the recvmmsg fast path is Linux only")]


@pytest.fixture(autouse=True, scope="module")
def _udp_built():
    require(_fast.udp is not None, "smartpark.fast.udp: %s" % _fast.UNAVAILABLE.get("udp"))


def _need_loadgen():
    require(_fast.loadgen is not None,
            "smartpark.fast.loadgen: %s" % _fast.UNAVAILABLE.get("loadgen"))


_STARTED = []


@pytest.fixture(autouse=True)
def _no_stray_hubs():
    """Whatever a test asserts, every hub it started is gone afterwards."""
    yield
    while _STARTED:
        _STARTED.pop().kill()


def _start(tmp_path, name, fast, extra=()):
    d = str(tmp_path / name)
    os.makedirs(d, exist_ok=True)
    h = HubProc(d, extra=list(extra) + ([] if fast else ["--no-fast-path"])
                + ["--security", "off"])  # plaintext reports
    _STARTED.append(h)
    h.start()
    assert ("fastpath=on" in h.ready_line) == fast, h.ready_line
    return h


def _stop(h):
    """SIGTERM; returns the hub's log (stdout + stderr), which must hold no traceback."""
    res = h.stop(signal.SIGTERM, 30)
    return "" if res is None else res[1]


def _report_msg(mid, token, payload, cf=112, mtype=coap.CON, path="/r", extra_opts=()):
    m = coap.make_request(coap.POST, path, mid, token=token, payload=payload, mtype=mtype)
    if cf is not None:
        m.add_option(coap.CONTENT_FORMAT, coap.encode_uint(cf))
    for num, val in extra_opts:
        m.add_option(num, val)
    return m.encode()


def _stream():
    """The datagram stream both hubs get: reports (CBOR, JSON, bad), retransmissions,
    duplicates with a new MID, and requests that are not reports."""
    out = []
    mid = 1000
    for k in range(40):  # 40 reports over 20 minutes of two nodes: rollup buckets close
        node = "dn%d" % (k % 2)
        recs = [("temp", 20.0 + k * 0.25, 0, "Cel"), ("hum", 40 + k, 0, "%RH"),
                ("door", k % 3 == 0, 0), ("state", "s%d" % k, 0)]
        mid += 1
        out.append(_report_msg(mid, b"t%d" % k, senml_cbor(node, recs, bt=T0 + 30 * k)))
        if k % 10 == 3:
            out.append(out[-1])  # a retransmission: the identical response
        if k % 10 == 5:
            mid += 1  # the same readings again in a new message: 2.04, all duplicates
            out.append(_report_msg(mid, b"d%d" % k, senml_cbor(node, recs, bt=T0 + 30 * k)))
    mid += 1
    out.append(_report_msg(mid, b"j", senml_json("dj", [("temp", 1.5, 0)]), cf=110))
    mid += 1
    out.append(_report_msg(mid, b"n", senml_cbor("dn0", [("x", 1, 0)]), cf=None))  # 4.15
    mid += 1
    out.append(_report_msg(mid, b"z", senml_cbor("dn0", [("x", 1, 0)]), cf=0))  # 4.15
    mid += 1
    out.append(_report_msg(mid, b"b", b"\x9f\x01"))  # 4.00
    mid += 1
    out.append(_report_msg(mid, b"u", b"\x81\xa1\x00anoslash"))  # 4.00: no node in the name
    mid += 1
    out.append(_report_msg(mid, b"", senml_cbor("dnt", [("x", 2, 0)])))  # empty token
    mid += 1
    out.append(_report_msg(mid, b"q", senml_cbor("dnq", [("x", 3, 0)]),
                           extra_opts=[(coap.URI_QUERY, b"a=1")]))  # to aiocoap
    mid += 1
    out.append(_report_msg(mid, b"h", senml_cbor("dnh", [("x", 4, 0)]),
                           extra_opts=[(coap.URI_HOST, b"hub.local")]))
    mid += 1
    out.append(coap.make_request(coap.GET, "/.well-known/core", mid, token=b"w").encode())
    mid += 1
    out.append(coap.make_request(coap.GET, "/cfg/dn0", mid, token=b"c").encode())
    mid += 1
    out.append(_report_msg(mid, b"p", b"x", path="/nothere"))
    return out


def _exchange(sock, data):
    """Send one datagram; return the normalised answer (request MID echoed, code, token,
    options, payload with the ack's hub time removed)."""
    sock.send(data)
    first = coap.parse(sock.recv(4096))
    final = first
    if first.code == 0 and first.mtype == coap.ACK:  # separate response (aiocoap, slow store)
        final = coap.parse(sock.recv(4096))
        if final.mtype == coap.CON:
            sock.send(coap.empty_ack(final).encode())
    payload = final.payload
    if final.content_format == 60 and final.code == coap.CHANGED:
        ack = report.decode_ack(payload)
        ack.pop("time")
        payload = tuple(sorted(ack.items()))
    return (first.mid, final.code, final.token, tuple(final.options), payload)


def test_differential_fast_path_on_and_off(tmp_path):
    stream = _stream()
    results = {}
    for fast in (True, False):
        h = _start(tmp_path, "fast" if fast else "slow", fast)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(10)
        s.connect(("127.0.0.1", h.coap_port))
        answers = [_exchange(s, d) for d in stream]
        fp = h.metric("smartpark_fastpath_reports")
        s.close()
        err = _stop(h)
        assert "Traceback" not in err
        results[fast] = (answers, db_state(h.data_dir), fp)
    answers_on, (readings_on, rollups_on), fp_on = results[True]
    answers_off, (readings_off, rollups_off), fp_off = results[False]
    assert fp_on >= 40 and fp_off == 0  # the fast hub really took the reports
    for i, (a, b) in enumerate(zip(answers_on, answers_off, strict=True)):
        assert a == b, "datagram %d: fast %r != aiocoap %r" % (i, a, b)
    codes = [a[1] for a in answers_on]
    assert codes.count(coap.CHANGED) >= 45 and coap.BAD_REQUEST in codes
    assert coap.UNSUPPORTED_CONTENT_FORMAT in codes
    assert len(readings_on) == 40 * 4 + 4 and readings_on == readings_off
    assert rollups_on and rollups_on == rollups_off


def _mutations(rnd, base, n):
    for i in range(n):
        d = bytearray(base)
        for _ in range(rnd.randint(1, 3)):
            op = rnd.random()
            if op < 0.4 and d:
                d[rnd.randrange(len(d))] = rnd.randrange(256)
            elif op < 0.7:
                d = d[:rnd.randrange(len(d) + 1)]
            elif op < 0.85:
                d[rnd.randrange(len(d) + 1):0] = bytes(rnd.randrange(256) for _ in range(4))
            else:
                d = bytearray(rnd.randbytes(rnd.randrange(1, 60)))
        if len(d) >= 4:
            d[2:4] = (i & 0xFFFF).to_bytes(2, "big")
        yield bytes(d)


def test_mutated_datagrams_into_the_hot_path(tmp_path):
    h = _start(tmp_path, "fuzz", True)
    rnd = random.Random(2024)
    base = _report_msg(1, b"ab", senml_cbor("fz", [("temp", 21.5, 0), ("hum", 40, 1)]))
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
    try:
        for i, d in enumerate(_mutations(rnd, base, 4000)):
            socks[i % 8].sendto(d, ("127.0.0.1", h.coap_port))
            if i % 200 == 199:
                time.sleep(0.02)  # bounded pace: the point is bad input, not overload
        assert h.alive()
        ok = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ok.settimeout(10)
        ok.connect(("127.0.0.1", h.coap_port))
        good = _report_msg(4242, b"ok", senml_cbor("fzok", [("temp", 1.0, 0)]))
        answer = _exchange(ok, good)
        assert answer[1] == coap.CHANGED
        ok.close()
        assert h.metric("smartpark_fastpath_errors") == 0
        assert h.metric("smartpark_fastpath_reports") > 100  # mutations that stayed reports
        assert h.metric("smartpark_fastpath_other") > 100  # and those handed to aiocoap
    finally:
        for s in socks:
            s.close()
    err = _stop(h)
    assert "Traceback" not in err and "fast path read error" not in err


def _rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_overload_503_bounded_memory_and_recovery(tmp_path):
    coapload = pytest.importorskip("smartpark.tools.coapload")
    _need_loadgen()
    h = _start(tmp_path, "overload", True)
    try:
        port = h.coap_port
        warm = coapload.load("127.0.0.1", port, peers=200, peer_rate=250, seconds=1.5, window=4,
                             node_prefix="warm")
        sustainable = warm["acked_per_s"]
        assert sustainable > 0
        rss0 = _rss_kb(h.proc.pid)
        # three times what the hub just sustained, offered by 1,200 peers with 4 exchanges
        # each in flight (4,800 outstanding: more than the 4,096 the queue holds); bounded:
        # 3 s, at most 250 msg/s per peer
        rate = min(250.0, 3 * sustainable / 1200)
        over = coapload.load("127.0.0.1", port, peers=1200, peer_rate=rate, seconds=3.0,
                             window=4, drain=2.0, node_prefix="over")
        rss1 = _rss_kb(h.proc.pid)
        assert over["codes"].get("5.03", 0) > 0, over
        assert h.metric("smartpark_fastpath_overload") > 0
        assert h.metric("smartpark_fastpath_queue_peak") <= 4096
        # memory: the queue is bounded, so RSS growth is bounded by the queued reports
        # (<= 4096 x a few kB) plus SQLite's page cache (64 MB), not by the offered load
        assert rss1 - rss0 < 160 * 1024, (rss0, rss1)
        time.sleep(2.5)  # Max-Age of the 5.03s
        light = coapload.load("127.0.0.1", port, peers=50, peer_rate=20, seconds=1.0, window=1,
                              node_prefix="after")
        assert light["codes"] == {"2.04": light["sent"]}, light
        assert h.alive()
    finally:
        err = _stop(h)
    assert "Traceback" not in err


def test_load_continued_by_the_same_peers_is_stored_not_deduplicated(tmp_path):
    """The bench's hold keeps its peers (sockets) from window to window, as nodes keep their
    source port (message IDs move on, as a client's do): the sockets stay usable across runs
    and every report of every window is stored."""
    coapload = pytest.importorskip("smartpark.tools.coapload")
    _need_loadgen()
    h = _start(tmp_path, "continued", True)
    try:
        socks = coapload.peer_sockets("127.0.0.1", h.coap_port, 20)
        try:
            runs = []
            mid = 100
            for _ in range(3):
                runs.append(coapload.load("127.0.0.1", h.coap_port, peers=20, peer_rate=50,
                                          seconds=1.0, window=2, node_prefix="cont",
                                          socks=socks, mid_base=mid))
                mid += 50 + 5
        finally:
            for s in socks:
                s.close()
        acked = sum(r["acked"] for r in runs)
        assert all(r["codes"] == {"2.04": r["sent"]} and r["sent"] > 20 for r in runs), runs
        assert h.metric("smartpark_reports_duplicate_total") == 0
        # 4 readings a report, every one stored
        assert h.metric("smartpark_readings_stored_total") == 4 * acked
        # 1,000 reports/s arrive a few per wake-up: the reader paused to coalesce them,
        # and nothing was lost or answered late enough to be retransmitted
        assert h.metric("smartpark_fastpath_pauses") > 0
        assert sum(r["retransmissions"] for r in runs) == 0, runs
    finally:
        err = _stop(h)
    assert "Traceback" not in err


def test_aiocoap_and_libcoap_clients_on_the_fast_port(tmp_path, coap_client_bin):
    """Standard clients see one server: POST /r (fast), discovery and /cfg (aiocoap)."""
    import asyncio

    import aiocoap

    h = _start(tmp_path, "clients", True)
    try:
        async def go():
            ctx = await aiocoap.Context.create_client_context()
            try:
                req = aiocoap.Message(code=aiocoap.POST, uri=h.coap + "/r",
                                      payload=senml_cbor("ac1", [("temp", 3.0, 0)]))
                req.opt.content_format = 112
                r1 = await ctx.request(req).response
                r2 = await ctx.request(aiocoap.Message(
                    code=aiocoap.GET, uri=h.coap + "/.well-known/core")).response
                return r1, r2
            finally:
                await ctx.shutdown()

        r1, r2 = asyncio.run(asyncio.wait_for(go(), 30))
        assert r1.code == aiocoap.CHANGED and report.decode_ack(r1.payload)["stored"] == 1
        assert b"</r>" in r2.payload
        p = tmp_path / "pack.cbor"
        p.write_bytes(senml_cbor("lc1", [("temp", 4.0, 0)]))
        out = subprocess.run([coap_client_bin, "-m", "post", "-t", "112", "-f", str(p),
                              h.coap + "/r"], capture_output=True, timeout=30)
        assert out.returncode == 0
        assert report.decode_ack(out.stdout.rstrip(b"\n"))["stored"] == 1
        assert h.metric("smartpark_fastpath_reports") == 2
    finally:
        _stop(h)


def test_unknown_peer_datagram_types_still_reach_aiocoap(tmp_path):
    """ACK, RST and NON to the fast port are aiocoap's; the hub keeps answering."""
    h = _start(tmp_path, "types", True)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.connect(("127.0.0.1", h.coap_port))
    try:
        s.send(coap.Message(coap.RST, 0, 1).encode())
        s.send(coap.Message(coap.ACK, 0, 2).encode())
        s.send(_report_msg(3, b"nn", senml_cbor("non1", [("temp", 1.0, 0)]), mtype=coap.NON))
        resp = coap.parse(s.recv(4096))
        assert (resp.mtype, resp.code, resp.token) == (coap.NON, coap.CHANGED, b"nn")
        try:
            report.decode_ack(resp.payload)
        except DecodeError as e:  # pragma: no cover - would be a real failure
            pytest.fail("bad ack: %s" % e)
        assert h.metric("smartpark_fastpath_other") >= 3
    finally:
        s.close()
        assert "Traceback" not in _stop(h)


def test_fast_echo_baseline_answers_like_the_hub_and_the_bench_says_where_cpu_went(tmp_path):
    """The bench's `fast-echo` target (the fast path's front end with nothing behind it)
    answers a report with the hub's 2.04 ack, a retransmission with the same bytes, and
    compare() reports CPU microseconds per answer for the target and the load generator."""
    coapload = pytest.importorskip("smartpark.tools.coapload")
    _need_loadgen()
    (tg,) = coapload.targets(str(tmp_path), ("fast-echo",))
    tg.start()
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        try:
            msg = _report_msg(0x1234, b"\x07\x08", senml_cbor("echo1", [("temp", 1.0, 0)]))
            s.sendto(msg, ("127.0.0.1", tg.port))
            first = s.recv(2048)
            s.sendto(msg, ("127.0.0.1", tg.port))  # a retransmission: the cached answer
            again = s.recv(2048)
        finally:
            s.close()
        assert tg.proc.poll() is None
    finally:
        tg.stop()
    m = coap.parse(first)
    assert (m.mtype, m.code, m.mid, m.token) == (coap.ACK, coap.CHANGED, 0x1234, b"\x07\x08")
    ack = report.decode_ack(m.payload)
    assert ack["stored"] == 4 and ack["duplicates"] == 0, ack
    assert again == first
    rows = coapload.compare(seconds=0.5, peers=20, peer_rate=50.0, window=1, half_load=False,
                            names=("fast-echo", "bare"), workdir=str(tmp_path / "cmp"))
    assert [r["target"] for r in rows] == ["fast-echo", "bare"]
    for r in rows:
        assert r["codes"] == {"2.04": sum(r["codes"].values())} and r["answered_per_s"] > 0, r
        assert r["cpu_us"] is not None and r["cpu_us"] > 0, r
        assert r["loadgen_cpu_us"] > 0, r
    assert "CPU us/report" in coapload.table(rows)
