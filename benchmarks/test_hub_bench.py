"""End-to-end ingest through the hub's aiocoap path into SQLite, vs a bare aiocoap server.

Not a timed test: it measures and reports. Load: >= 500 client UDP sockets
(one per simulated node), each with one CON POST /r in flight and at most
250 msg/s (RFC 7252 message-ID lifetime), every message a distinct 4-record
SenML-CBOR pack (so the hub stores 4 new rows per message). Counted:
piggybacked or separate 2.04 responses per second ("acknowledged"), over a
fixed window after a warm-up. The baseline is the same aiocoap set-up
(hub/coap/server.py's CoapServer, udp6 transport) whose POST /r handler does
nothing, measured in the same run.

    .venv/bin/pytest benchmarks/test_hub_bench.py --benchmark-only -s

Sizes: SP_BENCH_PEERS (500), SP_BENCH_SECONDS (3.0), SP_BENCH_ROUNDS (3; bare and hub
alternate, medians reported).
"""

import collections
import os
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import cbor2
import pytest

PEERS = int(os.environ.get("SP_BENCH_PEERS", "500"))
SECONDS = float(os.environ.get("SP_BENCH_SECONDS", "3.0"))
ROUNDS = int(os.environ.get("SP_BENCH_ROUNDS", "3"))
WARMUP = 0.7
MIN_GAP = 1.0 / 250  # per peer
RETRANSMIT = 2.0

_BARE = r"""
import asyncio, sys
import aiocoap
from aiocoap.resource import Resource, Site
from smartpark.hub.coap.server import CoapServer
from smartpark.hub.metrics import Metrics

class Nothing(Resource):
    async def render_post(self, request):
        return aiocoap.Message(code=aiocoap.CHANGED)

async def main():
    site = Site()
    site.add_resource(("r",), Nothing())
    srv = CoapServer(site, "127.0.0.1", 0, False, Metrics())
    await srv.start()
    print("smartpark hub ready coap=%d http=0" % srv.port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _start(cmd, cwd):
    """(handle, CoAP port) of a server printing the hub's ready line (smartpark.hub.process)."""
    from smartpark.hub.process import start_hub

    h = start_hub(command=cmd, cwd=cwd, timeout=30)
    return h, h.coap_port


def _header(mtype, code, mid, token):
    return struct.pack("!BBH", 0x40 | (mtype << 4) | len(token), code, mid) + token


def _post(mid, token, payload):
    # Uri-Path "r" (option 11: delta 11, length 1), Content-Format 112 (option 12: delta 1, len 1)
    return _header(0, 0x02, mid, token) + b"\xb1r" + b"\x11\x70" + b"\xff" + payload


# readings a day old: the hub refuses times far ahead of its clock (hub/rules.py)
_T0 = float(int(time.time()) // 3600 * 3600 - 86400)


def _pack(node, seq):
    t = _T0 + seq
    return cbor2.dumps([{-2: "b%d/" % node, -3: t, 0: "temp", 1: "Cel", 2: 20.0 + seq % 7},
                        {0: "hum", 1: "%RH", 2: 40.0}, {0: "co2", 1: "ppm", 2: 500.0},
                        {0: "lux", 1: "lx", 2: 300.0}])


def drive(port, peers=PEERS, seconds=SECONDS, warmup=WARMUP):  # noqa: C901 - one selector loop sends, receives, retransmits and counts
    """Run the load; return (acknowledged msgs/s in the window, errors, retransmissions)."""
    sel = selectors.DefaultSelector()
    socks = []
    state = {}
    for i in range(peers):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect(("127.0.0.1", port))
        socks.append(s)
        state[s] = {"i": i, "mid": (i * 7919) & 0xFFFF, "seq": 0, "sent": 0.0, "msg": None,
                    "next": 0.0}
        sel.register(s, selectors.EVENT_READ)
    start = time.monotonic()
    t_measure = start + warmup
    t_end = t_measure + seconds
    acked = 0
    errors = 0
    retx = 0

    def send(s, st, now):
        st["mid"] = (st["mid"] + 1) & 0xFFFF
        st["seq"] += 1
        token = struct.pack("!I", st["seq"])
        st["token"] = token
        st["msg"] = _post(st["mid"], token, _pack(st["i"], st["seq"]))
        st["sent"] = now
        s.send(st["msg"])

    now = time.monotonic()
    for s in socks:
        send(s, state[s], now)
    delayed = collections.deque()  # peers waiting out MIN_GAP, in time order (FIFO)
    next_retx_scan = now + 0.25
    while True:
        now = time.monotonic()
        if now >= t_end:
            break
        timeout = 0.05
        if delayed:
            timeout = max(0.0, min(timeout, state[delayed[0]]["next"] - now))
        for key, _ev in sel.select(timeout=timeout):
            s = key.fileobj
            st = state[s]
            try:
                data = s.recv(2048)
            except OSError:
                continue
            if len(data) < 4:
                continue
            b0, code, mid = struct.unpack("!BBH", data[:4])
            mtype = (b0 >> 4) & 3
            tkl = b0 & 0xF
            token = data[4:4 + tkl]
            if mtype == 0:  # separate CON response: ACK it
                s.send(_header(2, 0, mid, b""))
            if code == 0 or token != st.get("token") or st["msg"] is None:
                continue  # empty ACK, or a stale answer
            now = time.monotonic()
            if code == 0x44:
                if now >= t_measure:
                    acked += 1
            else:
                errors += 1
            st["msg"] = None
            st["next"] = st["sent"] + MIN_GAP
            if now >= st["next"]:
                send(s, st, now)
            else:
                delayed.append(s)
        now = time.monotonic()
        while delayed and state[delayed[0]]["next"] <= now:
            s = delayed.popleft()
            send(s, state[s], now)
        if now >= next_retx_scan:
            next_retx_scan = now + 0.25
            for s in socks:
                st = state[s]
                if st["msg"] is not None and now - st["sent"] > RETRANSMIT:
                    retx += 1
                    st["sent"] = now
                    s.send(st["msg"])
    for s in socks:
        sel.unregister(s)
        s.close()
    return acked / seconds, errors, retx


def _measure(cmd, cwd):
    h, port = _start(cmd, cwd)
    try:
        return drive(port)
    finally:
        h.stop(timeout=20)
        h.cleanup()


def _hub_flags():
    out = subprocess.run([sys.executable, "-m", "smartpark.tools.cli", "hub", "--help"],
                         capture_output=True, text=True, timeout=60).stdout
    # POST /r must go through aiocoap here: switch off the fast path where it exists
    return ["--no-fast-path"] if "--no-fast-path" in out else []


@pytest.mark.slow
def test_hub_ingest_vs_bare_aiocoap(benchmark, tmp_path):
    """Alternates bare and hub ROUNDS times (the machine is shared; drift hits both) and
    reports the medians and their ratio."""
    hub_flags = _hub_flags()
    runs = {"bare": [], "hub": []}

    def hub_cmd():
        data = tempfile.mkdtemp(dir=str(tmp_path))
        return [sys.executable, "-m", "smartpark.tools.cli", "hub", "--data", data,
                "--coap-bind", "127.0.0.1", "--coap-port", "0", "--http-bind", "127.0.0.1",
                "--http-port", "0", "--no-zeroconf", "--no-multicast",
                "--security", "off"] + hub_flags  # plaintext CoAP, like the bare server

    def one_round():
        runs["bare"].append(_measure([sys.executable, "-c", _BARE], str(tmp_path)))
        runs["hub"].append(_measure(hub_cmd(), str(tmp_path)))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    bare = statistics.median(r[0] for r in runs["bare"])
    hub = statistics.median(r[0] for r in runs["hub"])
    ratio = hub / bare if bare else float("nan")
    hub_errors = sum(r[1] for r in runs["hub"])
    benchmark.extra_info.update({
        "peers": PEERS, "window_s": SECONDS, "rounds": ROUNDS,
        "bare_aiocoap_msgs_per_s": [round(r[0]) for r in runs["bare"]],
        "hub_msgs_per_s": [round(r[0]) for r in runs["hub"]],
        "median_bare": round(bare), "median_hub": round(hub),
        "median_hub_readings_per_s": round(hub * 4), "hub_vs_bare": round(ratio, 3),
        "hub_errors": hub_errors,
    })
    sys.stdout.write(
        "\n%d peers, %d x %.1f s: bare aiocoap %s msg/s (median %.0f); hub (aiocoap + SQLite) "
        "%s msg/s (median %.0f = %.0f readings/s); hub/bare %.2f; hub errors %d\n"
        % (PEERS, ROUNDS, SECONDS, [round(r[0]) for r in runs["bare"]], bare,
           [round(r[0]) for r in runs["hub"]], hub, hub * 4, ratio, hub_errors))
    assert hub_errors == 0
    assert hub > 0 and bare > 0


@pytest.mark.slow
def test_pipeline_without_coap(benchmark, tmp_path):
    """Where the hub's own time goes: Pipeline.ingest driven in-process (no CoAP, real
    SQLite store thread), one report per call (as the aiocoap resource does) vs batches
    of PEERS (as a batching front end does). Same packs as the end-to-end test."""
    import asyncio

    from smartpark.hub import config as hubconfig
    from smartpark.hub.app import Hub

    rounds = 10

    async def measure(batch, data):
        cfg = hubconfig.load(None, {
            "data_dir": data, "coap.bind": "127.0.0.1", "coap.port": 0,
            "http.bind": "127.0.0.1", "http.port": 0, "discovery.zeroconf": False,
            "coap.multicast": False})
        hub = Hub(cfg, out=open(os.devnull, "w"))
        await hub.start()
        try:
            packs = [[_pack(i, s) for i in range(PEERS)] for s in range(1, rounds + 1)]
            t0 = time.perf_counter()
            commits0, store0 = hub.store.commits, hub.store.commit_seconds
            n = 0
            for s in range(rounds):
                if batch:
                    res = await hub.pipeline.ingest([("127.0.0.1:1", p, 112) for p in packs[s]])
                else:
                    res = await asyncio.gather(*(hub.pipeline.ingest([("127.0.0.1:1", p, 112)])
                                                 for p in packs[s]))
                    res = [r[0] for r in res]
                assert all(r.code == 0x44 and r.stored == 4 for r in res)
                n += len(res)
            dt = time.perf_counter() - t0
            return n / dt, hub.store.commits - commits0, hub.store.commit_seconds - store0
        finally:
            await hub.stop()

    out = {}

    def both():
        out["single"] = asyncio.run(measure(False, tempfile.mkdtemp(dir=str(tmp_path))))
        out["batch"] = asyncio.run(measure(True, tempfile.mkdtemp(dir=str(tmp_path))))

    benchmark.pedantic(both, rounds=1, iterations=1)
    for k, (rate, commits, store_s) in out.items():
        benchmark.extra_info[k] = {"reports_per_s": round(rate), "commits": commits,
                                   "store_seconds": round(store_s, 3)}
        sys.stdout.write("\npipeline, %s: %.0f reports/s (%d reports in %d commits, "
                         "store thread %.3f s)" % (k, rate, rounds * PEERS, commits, store_s))
    sys.stdout.write("\n")
