"""The node's CoAP client against servers nobody here wrote: aiocoap and libcoap's coap-server.

Packs are decoded with cbor2 (not our codec) and checked against the node's ledger.
"""

import asyncio
import os
import subprocess
import threading
import time

import aiocoap
import aiocoap.resource as resource
import cbor2
import harness
import pytest
from smartpark.protocol import report

pytestmark = pytest.mark.micropython


def resolve_cbor2(payload):
    """SenML resolution (RFC 8428 section 4.6) written against cbor2's output."""
    out = []
    bn, bt = "", 0
    for rec in cbor2.loads(payload):
        bn = rec.get(-2, bn)
        bt = rec.get(-3, bt)
        if 0 not in rec:
            continue
        t = bt + rec.get(6, 0)
        out.append((bn + rec[0], t))
    return out


class _Report(resource.Resource):
    def __init__(self, server):
        super().__init__()
        self.server = server

    async def render_post(self, request):
        self.server.posts += 1
        if self.server.delay:
            await asyncio.sleep(self.server.delay)   # aiocoap answers with an Empty ACK first
        self.server.packs.append(request.payload)
        return aiocoap.Message(code=aiocoap.CHANGED,
                               payload=report.encode_ack(time.time(), self.server.cfg_version))


class _Cfg(resource.Resource):
    """GET /cfg/<node>: whatever config the test sets, CBOR (the hub would refuse a bad one)."""

    def __init__(self, server):
        super().__init__()
        self.server = server

    async def render_get(self, request):
        self.server.cfg_gets += 1
        body = dict(self.server.cfg_body, version=self.server.cfg_version)
        return aiocoap.Message(code=aiocoap.CONTENT, payload=cbor2.dumps(body), content_format=60)


class _RD(resource.Resource):
    def __init__(self, server):
        super().__init__()
        self.server = server

    async def render_post(self, request):
        self.server.registrations.append((request.opt.uri_query, request.payload))
        return aiocoap.Message(code=aiocoap.CREATED, location_path=("reg", "1"))


class _Reg(resource.Resource):
    def __init__(self, server):
        super().__init__()
        self.server = server

    async def render_post(self, request):
        self.server.updates.append(request.opt.uri_query)
        if self.server.forget:
            return aiocoap.Message(code=aiocoap.NOT_FOUND)   # the RD lost the registration
        return aiocoap.Message(code=aiocoap.CHANGED)


class AiocoapServer:
    def __init__(self, delay=0.0):
        self.delay = delay
        self.packs = []
        self.posts = 0
        self.registrations = []
        self.updates = []
        self.forget = False
        self.cfg_version = 0
        self.cfg_body = {}
        self.cfg_gets = 0
        self.port = harness.free_udp_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.ctx = None
        self._thread.start()
        assert self._ready.wait(10) and self.ctx is not None, "aiocoap server did not start"

    def _run(self):
        asyncio.set_event_loop(self._loop)
        site = resource.Site()
        site.add_resource(["r"], _Report(self))
        site.add_resource(["rd"], _RD(self))
        site.add_resource(["reg", "1"], _Reg(self))
        site.add_resource(["cfg", "a3"], _Cfg(self))
        for _ in range(10):
            # the port was free a moment ago; another test may have taken it since
            try:
                self.ctx = self._loop.run_until_complete(
                    aiocoap.Context.create_server_context(site, bind=("127.0.0.1", self.port)))
                break
            except OSError:
                self.port = harness.free_udp_port()
        self._ready.set()
        self._loop.run_forever()

    def close(self):
        async def _shutdown():
            await self.ctx.shutdown()
        fut = asyncio.run_coroutine_threadsafe(_shutdown(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def aiocoap_server(request):
    s = AiocoapServer(delay=getattr(request, "param", 0.0))
    yield s
    s.close()


def _check(node, server):
    ledger, unresolved = node.ledger()
    assert unresolved == 0
    got = {}
    for p in server.packs:
        for name, t in resolve_cbor2(p):
            got[(name, t)] = got.get((name, t), 0) + 1
    for name, t in ledger:
        key = (node_name(node) + "/" + name, t)
        assert key in got, "reading %r never reached aiocoap" % (key,)


def node_name(node):
    return os.path.basename(node.flash)


@pytest.mark.parametrize("aiocoap_server", [0.0, 0.5], indirect=True, ids=["piggybacked", "separate"])
def test_reports_to_aiocoap(aiocoap_server, make_node):
    n = make_node("a1", harness.node_config("a1", "127.0.0.1:%d" % aiocoap_server.port))
    assert n.run(timeout=60, SMARTPARK_CYCLES=3) == 0, n.output()
    assert n.run(timeout=60, SMARTPARK_DRAIN=1) == 0, n.output()
    st = n.status()
    assert st["depth"] == 0 and st["synced"], st
    _check(n, aiocoap_server)
    q, links = aiocoap_server.registrations[0]
    assert "ep=a1" in q and any(x.startswith("lt=") for x in q)
    assert b'</air>;rt="smartpark.bme280"' in links
    if aiocoap_server.delay:
        # every exchange went Empty ACK + separate response; no pack was handled twice
        assert len(aiocoap_server.packs) == aiocoap_server.posts


def test_registration_refreshed_and_redone_when_forgotten(aiocoap_server, make_node):
    cfg = harness.node_config("a2", "127.0.0.1:%d" % aiocoap_server.port, lifetime=10)
    n = make_node("a2", cfg)
    n.start()
    t0 = time.time()
    while time.time() - t0 < 30 and not aiocoap_server.updates:
        time.sleep(0.2)
    assert aiocoap_server.updates, "no refresh before the lifetime ran out"
    assert list(aiocoap_server.updates[0]) == ["lt=10"]
    aiocoap_server.forget = True
    n_regs = len(aiocoap_server.registrations)
    while time.time() - t0 < 45 and len(aiocoap_server.registrations) == n_regs:
        time.sleep(0.2)
    n.stop()
    assert len(aiocoap_server.registrations) > n_regs, n.output()
    assert "registering again" in n.output()


def test_config_from_the_server_is_validated_before_use(aiocoap_server, make_node):
    # our hub refuses a config the firmware would refuse; another server may not
    n = make_node("a3", harness.node_config("a3", "127.0.0.1:%d" % aiocoap_server.port))
    n.start()
    try:
        assert harness.wait_for(lambda: n.status().get("registered"), 30), n.output()
        aiocoap_server.cfg_body = {"sensors": [{"name": "lux", "driver": "bh1750", "pins": {"sda": 99}}]}
        aiocoap_server.cfg_version = 1
        assert harness.wait_for(lambda: "sensors[0].pins.sda" in n.output(), 30), n.output()
        gets = aiocoap_server.cfg_gets
        c0 = n.status().get("cycles", 0)
        assert harness.wait_for(lambda: n.status().get("cycles", 0) >= c0 + 3, 30), n.output()
        assert n.status()["config_version"] == 0          # refused: the old config runs on
        aiocoap_server.cfg_body = {"report_interval": 1, "sensors": [{"name": "lux", "driver": "bh1750"}]}
        aiocoap_server.cfg_version = 2
        assert harness.wait_for(lambda: n.status().get("config_version") == 2, 30), n.output()
        assert aiocoap_server.cfg_gets == gets + 1, "a refused version must not be fetched again"
        n_packs = len(aiocoap_server.packs)
        assert harness.wait_for(lambda: any(name.endswith("/lux.lux") for p in aiocoap_server.packs[n_packs:]
                                  for name, _ in resolve_cbor2(p)), 30), n.output()
    finally:
        n.stop()


def test_reports_to_libcoap_server(coap_server_bin, coap_client_bin, make_node):
    port = harness.free_udp_port()
    srv = subprocess.Popen([coap_server_bin, "-A", "127.0.0.1", "-p", str(port), "-d", "50", "-v", "0"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        cfg = harness.node_config("lc1", "127.0.0.1:%d" % port, ntp=True)
        n = make_node("lc1", cfg)
        assert n.run(timeout=60, SMARTPARK_CYCLES=3) == 0, n.output()
        assert n.run(timeout=60, SMARTPARK_DRAIN=1) == 0, n.output()
        st = n.status()
        ledger, _ = n.ledger()
        # every recorded reading left the outbox on a 2.xx: none dropped, none refused
        assert len(ledger) > 0 and st["depth"] == 0 and st["dropped"] == 0 and st["refused"] == 0, st
        # libcoap's dynamic /r keeps the last pack: it must be SenML-CBOR of this node
        out = subprocess.run([coap_client_bin, "-m", "get", "coap://127.0.0.1:%d/r" % port],
                             capture_output=True, timeout=20).stdout
        recs = resolve_cbor2(out)
        assert recs and all(name.startswith("lc1/") for name, _ in recs)
        ledger_keys = {("lc1/" + nm, t) for nm, t in ledger}
        assert all(r in ledger_keys for r in recs)
    finally:
        srv.terminate()
        srv.wait(10)
