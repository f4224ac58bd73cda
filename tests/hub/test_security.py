"""OSCORE on the hub (hub/security.py, hub/coap/oscore_site.py, the identity checks in
hub/ingest.py and hub/coap/rd.py) against real peers.

The peer is aiocoap's OSCORE client with the context `smartpark keys export --aiocoap`
writes (hub/keys.write_aiocoap); attacks are built from the bytes it sent (captured by a
relay between it and the hub) or with protocol/oscore.py. Hub tests run twice: POST /r
through aiocoap alone and with the fast path in front of it.
"""

import asyncio
import os
import random
import socket
import time

import aiocoap
import pytest
from hubutil import run, senml_cbor, senml_json
from smartpark.hub import keys
from smartpark.hub.codec import Decoder
from smartpark.hub.events import EventBus
from smartpark.hub.ingest import Pipeline
from smartpark.hub.metrics import Metrics
from smartpark.hub.registry import Registry
from smartpark.hub.security import Security
from smartpark.hub.store import SqliteStore
from smartpark.protocol import coap, oscore
from smartpark.protocol.report import decode_ack

CT_SENML_CBOR = 112
CT_SENML_JSON = 110


# ---- peers --------------------------------------------------------------------------------

def export(data_dir, node, tmp_path):
    """The node's side of its key as an aiocoap context directory."""
    out = str(tmp_path / ("ctx-" + node))
    keys.write_aiocoap(out, keys.get(data_dir, node))
    return out


class Peer:
    """aiocoap client contexts, one per node key (aiocoap picks the key by URI)."""

    def __init__(self):
        self.contexts = {}
        self.secctx = {}

    async def ctx(self, hub, node=None, ctxdir=None):
        key = (hub.coap, node)
        c = self.contexts.get(key)
        if c is None:
            c = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
            if node is not None:
                sc = self.secctx.get(node)
                if sc is None:
                    c.client_credentials.load_from_dict(
                        {hub.coap + "/*": {"oscore": {"basedir": ctxdir}}})
                    self.secctx[node] = c.client_credentials[hub.coap + "/*"]
                else:  # the same context (sequence numbers) towards a restarted hub
                    c.client_credentials[hub.coap + "/*"] = sc
            self.contexts[key] = c
        return c

    async def request(self, hub, code, path, payload=b"", cf=None, node=None, ctxdir=None,
                      uri=None):
        c = await self.ctx(hub, node, ctxdir)
        m = aiocoap.Message(code=code, uri=uri or hub.coap + path, payload=payload)
        if cf is not None:
            m.opt.content_format = cf
        return await asyncio.wait_for(c.request(m).response, 20)

    async def close(self):
        for c in self.contexts.values():
            await c.shutdown()
        self.contexts.clear()


class Relay(asyncio.DatagramProtocol):
    """A UDP relay between a client and the hub that keeps every request datagram."""

    def __init__(self, hub_port):
        self.hub = ("127.0.0.1", hub_port)
        self.sent = []
        self.client = None
        self.front = None
        self.back = None

    async def start(self):
        loop = asyncio.get_running_loop()
        relay = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                relay.front.sendto(data, relay.client)

        self.back, _ = await loop.create_datagram_endpoint(Back, local_addr=("127.0.0.1", 0))
        self.front, _ = await loop.create_datagram_endpoint(lambda: self,
                                                            local_addr=("127.0.0.1", 0))
        return self.front.get_extra_info("sockname")[1]

    def datagram_received(self, data, addr):
        self.client = addr
        self.sent.append(data)
        self.back.sendto(data, self.hub)

    def close(self):
        self.front.close()
        self.back.close()

    def requests(self):
        """The protected requests sent (CON, with an OSCORE option)."""
        return [d for d in self.sent if coap.parse(d).get_option(coap.OSCORE) is not None]


def send_raw(port, data, timeout=5.0):
    """The hub's answer to one datagram sent from a fresh socket (not in any dedup cache)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(data, ("127.0.0.1", port))
        return coap.parse(s.recv(4096))
    finally:
        s.close()


def protected_post(rec, seq, payload, cf=CT_SENML_CBOR, path="r", mid=0x1234):
    """A protected POST built with protocol/oscore.py from a key record."""
    ctx = oscore.Context(rec["secret"], rec["salt"], rec["sender_id"], rec["recipient_id"])
    msg = coap.make_request(coap.POST, path, mid, token=b"\x01\x02", payload=payload)
    msg.add_option(coap.CONTENT_FORMAT, coap.encode_uint(cf))
    outer, binding = oscore.protect_request(ctx, seq, msg)
    return outer, binding, ctx


def points(h, node, sensor):
    status, body = h.get("/api/series/%s/%s?from=0" % (node, sensor))
    return body["points"] if status == 200 else []


@pytest.fixture
def secured(hub_factory, tmp_path):
    """(hub, data dir) with keys for nodes sa and sb, security.mode = "oscore"."""
    d = str(tmp_path / "data")

    def make(nodes=("sa", "sb"), extra=()):
        os.makedirs(d, exist_ok=True)
        for n in nodes:
            if keys.find(d, n) is None:
                keys.add(d, n)
        return hub_factory(extra=extra, data_dir=d, security="oscore"), d

    return make


# ---- the hub ------------------------------------------------------------------------------

def test_protected_reports_are_stored_and_plaintext_is_refused(secured, tmp_path):
    h, d = secured()
    assert h.fields["security"] == "oscore"
    ca = export(d, "sa", tmp_path)
    peer = Peer()

    async def go():
        try:
            r1 = await peer.request(h, aiocoap.POST, "/r", senml_cbor(
                "sa", [("temp", 20.5, 0, "Cel"), ("temp", 21.0, 60, "Cel")]), CT_SENML_CBOR,
                node="sa", ctxdir=ca)
            r2 = await peer.request(h, aiocoap.POST, "/r", senml_json(
                "sa", [("hum", 40.0, 0, "%RH")]), CT_SENML_JSON, node="sa", ctxdir=ca)
            plain = [await peer.request(h, aiocoap.POST, "/r", senml_cbor(
                "sa", [("temp", 22.0, 120, "Cel")]), CT_SENML_CBOR)]
            for code, path in ((aiocoap.GET, "/cfg/sa"), (aiocoap.GET, "/cfg"),
                               (aiocoap.POST, "/rd?ep=sa&lt=600")):
                plain.append(await peer.request(h, code, path))
            wkc = await peer.request(h, aiocoap.GET, "/.well-known/core")
            cfg = await peer.request(h, aiocoap.GET, "/cfg/sa", node="sa", ctxdir=ca)
            return r1, r2, plain, wkc, cfg
        finally:
            await peer.close()

    r1, r2, plain, wkc, cfg = run(go())
    assert r1.code == aiocoap.CHANGED and decode_ack(r1.payload)["stored"] == 2
    assert r2.code == aiocoap.CHANGED and decode_ack(r2.payload)["stored"] == 1
    for r in plain:
        assert r.code == aiocoap.UNAUTHORIZED and r.payload == b"OSCORE required", r
    assert wkc.code == aiocoap.CONTENT and b"</r>" in wkc.payload
    assert cfg.code == aiocoap.CONTENT and cfg.opt.content_format == 60
    assert [p["value"] for p in points(h, "sa", "temp")] == [20.5, 21.0]
    assert len(points(h, "sa", "hum")) == 1
    assert h.get("/healthz")[1]["security"] == "oscore"
    assert h.get("/healthz")[1]["keys"] == 2
    assert h.metric("smartpark_errors_total", kind="oscore_required") == 4


def test_attacks_store_nothing(secured, tmp_path):
    h, d = secured()
    ca, cb = export(d, "sa", tmp_path), export(d, "sb", tmp_path)
    peer = Peer()
    relay = Relay(h.coap_port)

    class Via:  # the hub as seen through the relay
        coap = None

    async def go():
        try:
            Via.coap = "coap://127.0.0.1:%d" % await relay.start()
            ok_b = await peer.request(h, aiocoap.POST, "/r", senml_cbor(
                "sb", [("temp", 5.0, 0, "Cel")]), CT_SENML_CBOR, node="sb", ctxdir=cb)
            ok_a = await peer.request(Via, aiocoap.POST, "/r", senml_cbor(
                "sa", [("temp", 1.0, 0, "Cel")]), CT_SENML_CBOR, node="sa", ctxdir=ca)
            # node sa's key, packs naming sb: the column lane knows sb/temp by now (CBOR)
            # and the row path takes the JSON one
            claim = [await peer.request(Via, aiocoap.POST, "/r", senml_cbor(
                         "sb", [("temp", 6.0, 60, "Cel")]), CT_SENML_CBOR, node="sa"),
                     await peer.request(Via, aiocoap.POST, "/r", senml_json(
                         "sb", [("temp", 7.0, 120, "Cel")]), CT_SENML_JSON, node="sa")]
            return ok_b, ok_a, claim
        finally:
            relay.close()
            await peer.close()

    ok_b, ok_a, claim = run(go())
    assert ok_b.code == aiocoap.CHANGED and ok_a.code == aiocoap.CHANGED
    for r in claim:
        assert r.code == aiocoap.FORBIDDEN, r
        assert r.payload == b"pack names node sb, key is node sa"
    assert [p["value"] for p in points(h, "sb", "temp")] == [5.0]

    captured = relay.requests()
    assert len(captured) == 3
    first = captured[0]  # sa's stored report, exactly as aiocoap sent it
    r = send_raw(h.coap_port, first)
    assert (r.code, r.payload) == (coap.UNAUTHORIZED, b"Replay detected")
    assert r.get_option(coap.OSCORE) is None  # an error nobody can protect

    m = coap.parse(first)
    m.payload = m.payload[:-1] + bytes((m.payload[-1] ^ 1,))  # one bit of the tag
    r = send_raw(h.coap_port, m.encode())
    assert r.code == coap.BAD_REQUEST and b"decrypt" in r.payload

    m = coap.parse(first)
    m.set_option(coap.OSCORE, b"\xe1\x00")  # reserved flag bits
    assert send_raw(h.coap_port, m.encode()).code == coap.BAD_OPTION

    stranger = keys.new_record("stranger", taken=[keys.get(d, "sa")["sender_id"],
                                                  keys.get(d, "sb")["sender_id"]])
    outer, _b, _c = protected_post(stranger, 0, senml_cbor("stranger", [("temp", 9.0, 0)]))
    r = send_raw(h.coap_port, outer.encode())
    assert r.code == coap.UNAUTHORIZED and b"unknown key" in r.payload

    assert [p["value"] for p in points(h, "sa", "temp")] == [1.0]
    assert [p["value"] for p in points(h, "sb", "temp")] == [5.0]
    assert points(h, "stranger", "temp") == []
    for kind, n in (("identity", 2), ("oscore_replay", 1), ("oscore_verify", 1),
                    ("oscore_option", 1), ("oscore_key", 1)):
        assert h.metric("smartpark_errors_total", kind=kind) == n, kind


def test_echo_after_an_unclean_restart_then_windows_kept_by_a_clean_one(secured, tmp_path):
    h, d = secured(nodes=("sa",))
    ca = export(d, "sa", tmp_path)
    peer = Peer()
    relay = Relay(h.coap_port)

    class Via:
        coap = None

    async def before():
        Via.coap = "coap://127.0.0.1:%d" % await relay.start()
        r = await peer.request(Via, aiocoap.POST, "/r", senml_cbor(
            "sa", [("temp", 1.0, 0)]), CT_SENML_CBOR, node="sa", ctxdir=ca)
        relay.close()
        return r

    async def after(hub, t):
        return await peer.request(hub, aiocoap.POST, "/r", senml_cbor(
            "sa", [("temp", float(t), t)]), CT_SENML_CBOR, node="sa")

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(before()).code == aiocoap.CHANGED
        old = relay.requests()[-1]
        h.proc.kill()  # SIGKILL: no clean-stop marker
        h.proc.wait(10)
        h.kill()
        h2 = secured(nodes=("sa",))[0]
        # the captured request is not processed: a protected 4.01 with Echo answers it
        r = send_raw(h2.coap_port, old)
        assert r.code == coap.CHANGED and r.get_option(coap.OSCORE)
        # aiocoap's client answers the Echo (RFC 8613 B.1.2) and the report is stored once
        r = loop.run_until_complete(after(h2, 60))
        assert r.code == aiocoap.CHANGED, r
        ack = decode_ack(r.payload)
        assert (ack["stored"], ack["duplicates"]) == (1, 0)
        assert h2.metric("smartpark_errors_total", kind="oscore_echo") == 2
        assert [p["value"] for p in points(h2, "sa", "temp")] == [1.0, 60.0]
        # clean stop: the window survives, a replay is still refused and no Echo is needed
        relay2 = Relay(h2.coap_port)
        Via.coap = None

        async def capture():
            Via.coap = "coap://127.0.0.1:%d" % await relay2.start()
            c = await peer.ctx(Via, "sa")
            m = aiocoap.Message(code=aiocoap.POST, uri=Via.coap + "/r", payload=senml_cbor(
                "sa", [("temp", 2.0, 90)]), content_format=CT_SENML_CBOR)
            r = await asyncio.wait_for(c.request(m).response, 20)
            relay2.close()
            return r

        assert loop.run_until_complete(capture()).code == aiocoap.CHANGED
        seen = relay2.requests()[-1]
        rc, _log = h2.stop()
        assert rc == 0
        assert os.path.exists(os.path.join(d, "oscore", "clean"))
        h3 = secured(nodes=("sa",))[0]
        assert not os.path.exists(os.path.join(d, "oscore", "clean"))
        r = send_raw(h3.coap_port, seen)
        assert (r.code, r.payload) == (coap.UNAUTHORIZED, b"Replay detected")
        r = loop.run_until_complete(after(h3, 120))
        assert r.code == aiocoap.CHANGED and decode_ack(r.payload)["stored"] == 1
        assert h3.metric("smartpark_errors_total", kind="oscore_echo") == 0
        assert [p["value"] for p in points(h3, "sa", "temp")] == [1.0, 60.0, 2.0, 120.0]
    finally:
        loop.run_until_complete(peer.close())
        loop.close()


def test_rd_and_cfg_only_for_their_own_node(secured, tmp_path):
    h, d = secured(extra=["--admin-token", "tok"])
    ca, cb = export(d, "sa", tmp_path), export(d, "sb", tmp_path)
    big = "x" * 3000  # the config outgrows a datagram: Block2 inside OSCORE
    status, _ = h.request("PUT", "/api/nodes/sa/config",
                          {"report_interval": 30, "wifi": {"ssid": "park", "password": "pw1"},
                           "sim": {"note": big}},
                          headers={"Authorization": "Bearer tok"})
    assert status == 200
    peer = Peer()

    async def go():
        try:
            reg = await peer.request(h, aiocoap.POST, "/rd?ep=sa&lt=600", b"</s/temp>", 40,
                                     node="sa", ctxdir=ca)
            stolen = await peer.request(h, aiocoap.POST, "/rd?ep=sa&lt=600", b"</s/x>", 40,
                                        node="sb", ctxdir=cb)
            loc = "/" + "/".join(reg.opt.location_path)
            upd_b = await peer.request(h, aiocoap.POST, loc + "?lt=900", node="sb")
            del_b = await peer.request(h, aiocoap.DELETE, loc, node="sb")
            lookup = await peer.request(h, aiocoap.GET, "/rd-lookup/ep?ep=sa")
            own = await peer.request(h, aiocoap.GET, "/cfg/sa", node="sa")
            other = await peer.request(h, aiocoap.GET, "/cfg/sa", node="sb")
            upd_a = await peer.request(h, aiocoap.POST, loc + "?lt=900", node="sa")
            del_a = await peer.request(h, aiocoap.DELETE, loc, node="sa")
            return reg, stolen, upd_b, del_b, lookup, own, other, upd_a, del_a
        finally:
            await peer.close()

    reg, stolen, upd_b, del_b, lookup, own, other, upd_a, del_a = run(go())
    assert reg.code == aiocoap.CREATED
    assert stolen.code == aiocoap.FORBIDDEN
    assert stolen.payload == b"registration names node sa, key is node sb"
    assert upd_b.code == aiocoap.FORBIDDEN and del_b.code == aiocoap.FORBIDDEN
    assert lookup.code == aiocoap.CONTENT and b'ep="sa"' in lookup.payload
    import cbor2
    mine = cbor2.loads(own.payload)
    assert mine["wifi"]["password"] == "pw1" and mine["sim"]["note"] == big
    theirs = cbor2.loads(other.payload)
    assert "wifi" not in theirs and theirs["report_interval"] == 30
    assert upd_a.code == aiocoap.CHANGED and del_a.code == aiocoap.DELETED


def test_key_added_to_a_running_hub_is_used_and_a_revoked_one_refused(secured, tmp_path):
    h, d = secured(nodes=())
    assert h.get("/healthz")[1]["keys"] == 0
    keys.add(d, "late")
    cl = export(d, "late", tmp_path)
    peer = Peer()

    async def go():
        try:
            return await peer.request(h, aiocoap.POST, "/r", senml_cbor(
                "late", [("temp", 3.0, 0)]), CT_SENML_CBOR, node="late", ctxdir=cl)
        finally:
            await peer.close()

    r = run(go())
    assert r.code == aiocoap.CHANGED and decode_ack(r.payload)["stored"] == 1
    rec = keys.get(d, "late")
    keys.revoke(d, "late")
    deadline = time.monotonic() + 10
    while h.get("/healthz")[1]["keys"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert h.get("/healthz")[1]["keys"] == 0
    outer, _b, _c = protected_post(rec, 1000, senml_cbor("late", [("temp", 4.0, 60)]))
    assert send_raw(h.coap_port, outer.encode()).code == coap.UNAUTHORIZED
    assert [p["value"] for p in points(h, "late", "temp")] == [3.0]


def test_security_off_serves_plaintext_and_says_so(hub_factory):
    h = hub_factory(security="off")
    assert h.fields["security"] == "off"

    async def go():
        ctx = await aiocoap.Context.create_client_context()
        try:
            m = aiocoap.Message(code=aiocoap.POST, uri=h.coap + "/r", payload=senml_cbor(
                "plain", [("temp", 1.0, 0)]), content_format=CT_SENML_CBOR)
            return await ctx.request(m).response
        finally:
            await ctx.shutdown()

    assert run(go()).code == aiocoap.CHANGED
    assert len(points(h, "plain", "temp")) == 1
    assert h.get("/healthz")[1]["security"] == "off"
    _rc, log = h.stop()
    assert "SECURITY OFF" in log


# ---- in process ---------------------------------------------------------------------------

def test_pipeline_refuses_reports_for_another_node_on_both_paths(tmp_path):
    async def go():
        store = SqliteStore(os.path.join(str(tmp_path), "hub.sqlite3"))
        await store.start(asyncio.get_running_loop())
        events = EventBus()
        registry = Registry(store, events)
        registry.load(await store.load_state())
        decoder = Decoder()
        lane = decoder.enable_lane(store.newest)
        pipe = Pipeline(store, decoder, registry, events, Metrics(), require_key=True)
        try:
            first = await pipe.ingest([("a:1", senml_cbor("pb", [("t", 1.0, 0)]), 112, "pb")])
            batch = [("a:1", senml_cbor("pb", [("t", 2.0, 10)]), 112, "pb"),
                     ("a:2", senml_cbor("pb", [("t", 3.0, 20)]), 112, "pa"),  # lane's
                     ("a:2", senml_json("pb", [("t", 4.0, 30)]), 110, "pa"),  # row path
                     ("a:2", senml_cbor("pa", [("t", 5.0, 0)]), 112, "pa"),
                     ("a:3", senml_cbor("pb", [("t", 6.0, 40)]), 112)]  # no key
            res = await pipe.ingest(batch)
            rows = await store.raw(registry.series_by_name[("pb", "t")], 0, 2e9, 100)
            return first, res, rows, lane
        finally:
            await store.close()

    first, res, rows, lane = asyncio.run(go())
    assert first[0].code == 0x44
    assert [r.code for r in res] == [0x44, 0x83, 0x83, 0x44, 0x81]
    assert res[1].payload == b"pack names node pb, key is node pa"
    assert [r[2] for r in rows] == [1.0, 2.0]


def _records(*nodes):
    out = []
    for i, n in enumerate(nodes):
        rec = keys.new_record(n, taken=[r["sender_id"] for r in out])
        out.append(rec)
        assert i == len(out) - 1
    return out


def test_security_state_marker_windows_and_sequence_numbers(tmp_path):
    recs = _records("n1", "n2")
    d = str(tmp_path)
    sec = Security(d, load_keys=lambda _d: recs, stamp=lambda _d: None).start()
    assert sec.clean_start  # a new data directory: nothing to distrust
    outer, _b, _c = protected_post(recs[0], 5, senml_cbor("n1", [("t", 1.0, 0)]))
    opened = sec.table.unprotect(outer.get_option(coap.OSCORE), outer.payload, coap.POST)
    sec.table.accept(opened)
    s1 = sec.own_seq()
    sec.stop()
    assert sorted(os.listdir(os.path.join(d, "oscore"))) == ["clean", "seq", "windows.json"]
    assert oct(os.stat(os.path.join(d, "oscore")).st_mode & 0o777) == "0o700"

    sec = Security(d, load_keys=lambda _d: recs, stamp=lambda _d: None).start()
    assert sec.clean_start and os.listdir(os.path.join(d, "oscore")) == ["seq"]
    with pytest.raises(oscore.OscoreError) as e:
        sec.table.accept(opened)  # the same sequence number after a clean restart
    assert e.value.echo is None
    assert sec.own_seq() > s1  # never a Partial IV twice
    # no stop(): a crash; the next start distrusts every window
    sec = Security(d, load_keys=lambda _d: recs, stamp=lambda _d: None).start()
    assert not sec.clean_start
    with pytest.raises(oscore.OscoreError) as e:
        sec.table.accept(opened)
    assert e.value.echo is not None and len(e.value.echo) == 8
    assert any("Echo" in w for w in sec.warnings())


def test_key_rescans_are_rate_limited_and_keep_unchanged_windows(tmp_path):
    recs = _records("n1", "n2")
    now = [100.0]
    loaded = {"recs": recs[:1], "calls": 0}

    def load(_d):
        loaded["calls"] += 1
        return loaded["recs"]

    sec = Security(str(tmp_path), clock=lambda: now[0], load_keys=load,
                   stamp=lambda _d: len(loaded["recs"])).start()
    outer, _b, _c = protected_post(recs[0], 7, b"x")
    opened = sec.table.unprotect(outer.get_option(coap.OSCORE), outer.payload, coap.POST)
    sec.table.accept(opened)
    loaded["recs"] = recs
    assert sec.unknown_kid(recs[1]["sender_id"])
    assert len(sec.table) == 2
    calls = loaded["calls"]
    assert not sec.unknown_kid(b"\x99\x99\x99")  # within a second of the last: no load
    now[0] += 1.5
    assert not sec.unknown_kid(b"\x99\x99\x99") and loaded["calls"] == calls + 1
    with pytest.raises(oscore.OscoreError):  # n1's window survived the reload
        sec.table.accept(opened)
    loaded["recs"] = recs[1:]
    now[0] += 1.5
    sec.poll()
    assert sec.table.node_of(recs[0]["sender_id"]) is None and len(sec.table) == 1
    calls = loaded["calls"]
    sec.poll()  # nothing changed: no load
    assert loaded["calls"] == calls


def test_site_answers_a_protected_notification_with_own_partial_ivs():
    """Observe through the wrapper: every notification under a fresh Partial IV."""
    pytest.importorskip("aiocoap")
    from aiocoap.resource import ObservableResource, Site
    from smartpark.hub.coap.oscore_site import OscoreSite

    recs = _records("obs")

    class Counter(ObservableResource):
        def __init__(self):
            super().__init__()
            self.n = 0

        async def render_get(self, request):
            self.n += 1
            return aiocoap.Message(payload=b"%d %s" % (self.n, request.smartpark_node.encode()))

    async def go():
        import tempfile
        d = tempfile.mkdtemp()
        sec = Security(d, load_keys=lambda _d: recs, stamp=lambda _d: None).start()
        site = Site()
        res = Counter()
        site.add_resource(("c",), res)
        server = await aiocoap.Context.create_server_context(
            OscoreSite(site, sec), bind=("127.0.0.1", 0), transports=["udp6"])
        port = None
        for ri in server.request_interfaces:
            mi = ri.token_interface.message_interface
            mi = getattr(mi, "message_interface", mi)
            port = mi.transport.get_extra_info("socket").getsockname()[1]
        ctxdir = os.path.join(d, "ctx")
        keys.write_aiocoap(ctxdir, recs[0])
        client = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
        uri = "coap://127.0.0.1:%d" % port
        client.client_credentials.load_from_dict({uri + "/*": {"oscore": {"basedir":
                                                                          ctxdir}}})
        try:
            req = client.request(aiocoap.Message(code=aiocoap.GET, uri=uri + "/c", observe=0))
            first = await asyncio.wait_for(req.response, 10)
            res.updated_state()
            second = await asyncio.wait_for(req.observation.__aiter__().__anext__(), 10)
            req.observation.cancel()
            return first, second, sec.seq.seq
        finally:
            await client.shutdown()
            await server.shutdown()

    first, second, used = run(go())
    assert first.payload == b"1 obs" and second.payload == b"2 obs"
    assert used >= 2  # the registration response and the notification: own Partial IVs


def _mutate_protected(rng, outer, mid):
    """A protected request with its OSCORE option or ciphertext damaged (one of several ways)."""
    m = coap.parse(outer.encode())
    opt = bytearray(m.get_option(coap.OSCORE))
    ct = bytearray(m.payload)
    op = rng.randrange(7)
    if op == 0:   # flags byte: reserved bits, PIV lengths 0..7, kid/kid-context flags
        opt[0] ^= 1 + rng.randrange(255)
    elif op == 1:   # truncated or extended option
        opt = opt[:rng.randrange(len(opt))] if rng.random() < 0.5 else opt + bytes(
            rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    elif op == 2:   # another key id
        opt[-1] ^= 1 + rng.randrange(255)
    elif op == 3:   # a bit of the ciphertext or tag
        ct[rng.randrange(len(ct))] ^= 1 << rng.randrange(8)
    elif op == 4:   # truncated ciphertext, down to nothing
        ct = ct[:rng.randrange(len(ct))]
    elif op == 5:   # random ciphertext
        ct = bytearray(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
    else:   # the Partial IV changed (nonce and AAD no longer match)
        opt[1] ^= 1 + rng.randrange(255)
    m.set_option(coap.OSCORE, bytes(opt))
    m.payload = bytes(ct)
    m.mid = mid   # a new MID each: CoAP deduplication would answer a repeated one from cache
    return m.encode()


def test_fuzzed_oscore_requests_get_only_4xx_and_the_hub_keeps_serving(secured, tmp_path):
    """Damaged OSCORE options and ciphertexts, fast path and aiocoap path: every answer is
    an unprotected 4.00/4.01/4.02, each counted; nothing is stored; a good report after
    them is stored."""
    h, d = secured(nodes=("sa",))
    rec = keys.get(d, "sa")
    rng = random.Random(8613)
    before = sum(h.metric("smartpark_errors_total", kind=k)
                 for k in ("oscore_option", "oscore_key", "oscore_verify", "oscore_replay"))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    codes = {}
    try:
        for i in range(300):
            outer, _, _ = protected_post(rec, i, senml_cbor("sa", [("fz", float(i), i, "Cel")]))
            s.sendto(_mutate_protected(rng, outer, 0x2000 + i), ("127.0.0.1", h.coap_port))
            resp = coap.parse(s.recv(4096))
            assert resp.get_option(coap.OSCORE) is None, resp
            assert resp.code in (coap.BAD_REQUEST, coap.UNAUTHORIZED, coap.BAD_OPTION), resp
            codes[resp.code] = codes.get(resp.code, 0) + 1
    finally:
        s.close()
    assert len(codes) == 3, codes   # every kind of refusal came up
    after = sum(h.metric("smartpark_errors_total", kind=k)
                for k in ("oscore_option", "oscore_key", "oscore_verify", "oscore_replay"))
    assert after - before == 300
    assert points(h, "sa", "fz") == []
    outer, binding, ctx = protected_post(rec, 1000, senml_cbor("sa", [("ok", 1.0, 0, "Cel")]))
    resp = oscore.unprotect_response(ctx, binding, send_raw(h.coap_port, outer.encode()))
    assert resp.code == coap.CHANGED and decode_ack(resp.payload)["stored"] == 1
    assert len(points(h, "sa", "ok")) == 1
