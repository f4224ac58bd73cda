"""The node's OSCORE client (firmware/coapc.py, security.py) on the real micropython, against
aiocoap's OSCORE server, rogue responders, and SIGKILLs.

The server side is aiocoap's (aiocoap.oscore_sitewrapper.OscoreSiteWrapper with a
FilesystemSecurityContext directory holding the node's key from the hub's side), so
the node's protection is judged by an implementation nobody here wrote. Its site
serves only authenticated requests, as the hub does with security.mode "oscore".
Between node and server a UDP relay on loopback sees every datagram: it checks
the wire (outer POST, no Uri-Path or payload in the clear, a (kid, PIV) never
reused for a different message) and plays the rogue on the path when told to.
"""

import asyncio
import json
import os
import random
import socket
import sys
import threading
import time

import cbor2
import pytest
from smartpark.protocol import coap, oscore, report

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_TESTS, "e2e"))
import harness  # noqa: E402
from peers import require  # noqa: E402

aiocoap = pytest.importorskip("aiocoap")
try:
    import aiocoap.resource as resource
    from aiocoap.credentials import CredentialsMap
    from aiocoap.oscore_sitewrapper import OscoreSiteWrapper
    from aiocoap.transports.oscore import OSCOREAddress
except ImportError as e:   # aiocoap without its "oscore" extra (a test dependency)
    OscoreSiteWrapper = None
    _MISSING = repr(e)

pytestmark = pytest.mark.micropython

ROGUE_TIME = 978307200.0     # the first second of 2001: a clock the rogue would like the node to take
ROGUE_CFG_VERSION = 77
SIM_RTC_SKEW_MS = -800000000 * 1000   # firmware/sim/board.py's default rtc_skew_s


@pytest.fixture(autouse=True)
def _aiocoap_oscore():
    require(OscoreSiteWrapper is not None,
                    "aiocoap's OSCORE support cannot be imported: %s"
                    % (globals().get("_MISSING"),))


def make_key(sender_id=None):
    """The node's oscore.json content (the node's point of view)."""
    return {"sender_id": (sender_id or os.urandom(3)).hex(), "recipient_id": "",
            "secret": os.urandom(16).hex(), "salt": os.urandom(8).hex()}


def credentials_dir(path, key, window_lost=False):
    """An aiocoap FilesystemSecurityContext directory for the hub's half of `key`.
    window_lost: the server restarted without its replay window (Echo recovery)."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "settings.json"), "w") as f:
        json.dump({"sender-id_hex": key["recipient_id"], "recipient-id_hex": key["sender_id"],
                   "secret_hex": key["secret"], "salt_hex": key["salt"],
                   "algorithm": "AES-CCM-16-64-128", "kdf-hashfun": "sha256"}, f)
    if window_lost:
        with open(os.path.join(path, "sequence.json"), "w") as f:
            json.dump({"next-to-send": 0, "received": "unknown"}, f)
    return path


# -- the server: aiocoap, OSCORE only ------------------------------------------------------------

def _authenticated(request):
    return isinstance(request.remote, OSCOREAddress)


class _Res(resource.Resource):
    def __init__(self, server, handler):
        super().__init__()
        self.server = server
        self.handler = handler

    async def render_post(self, request):
        if self.server.delay:
            await asyncio.sleep(self.server.delay)   # aiocoap sends an Empty ACK first
        return self._render(request)

    async def render_get(self, request):
        return self._render(request)

    def _render(self, request):
        if not _authenticated(request):
            self.server.plain += 1
            return aiocoap.Message(code=aiocoap.UNAUTHORIZED, payload=b"OSCORE required")
        return self.handler(request)


class OscoreServer:
    """aiocoap with OscoreSiteWrapper: /r (report ack), /rd and /reg/1, /cfg/<node>."""

    def __init__(self, creds_dir, cfg_version=0, cfg_body=None):
        self.creds_dir = creds_dir
        self.packs = []
        self.registrations = []
        self.updates = 0
        self.cfg_gets = []
        self.plain = 0
        self.delay = 0.0
        self.cfg_version = cfg_version
        self.cfg_body = cfg_body or {}
        self.port = harness.free_udp_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.ctx = None
        self.error = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(15) and self.ctx is not None, "aiocoap did not start: %r" % self.error

    def _report(self, request):
        self.packs.append(request.payload)
        return aiocoap.Message(code=aiocoap.CHANGED,
                               payload=report.encode_ack(time.time(), self.cfg_version))

    def _rd(self, request):
        self.registrations.append((request.opt.uri_query, request.payload))
        return aiocoap.Message(code=aiocoap.CREATED, location_path=("reg", "1"))

    def _reg(self, request):
        self.updates += 1
        return aiocoap.Message(code=aiocoap.CHANGED)

    def _cfg(self, request):
        self.cfg_gets.append(request.opt.block2)   # aiocoap renders once, then serves blocks
        body = dict(self.cfg_body, version=self.cfg_version)
        return aiocoap.Message(code=aiocoap.CONTENT, payload=cbor2.dumps(body), content_format=60)

    def site(self):
        site = resource.Site()
        site.add_resource(["r"], _Res(self, self._report))
        site.add_resource(["rd"], _Res(self, self._rd))
        site.add_resource(["reg", "1"], _Res(self, self._reg))
        site.add_resource(["cfg", self.cfg_node], _Res(self, self._cfg))
        creds = CredentialsMap()
        creds.load_from_dict({":node": {"oscore": {"basedir": self.creds_dir}}})
        return OscoreSiteWrapper(site, creds)

    cfg_node = "n1"

    def _run(self):
        asyncio.set_event_loop(self._loop)
        try:
            site = self.site()
            for _ in range(10):
                try:
                    self.ctx = self._loop.run_until_complete(
                        aiocoap.Context.create_server_context(site, bind=("127.0.0.1", self.port)))
                    break
                except OSError:
                    self.port = harness.free_udp_port()
        except Exception as e:  # noqa: BLE001 - reported by __init__
            self.error = e
        self._ready.set()
        self._loop.run_forever()

    def close(self):
        if self.ctx is not None:
            asyncio.run_coroutine_threadsafe(self.ctx.shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# -- the relay: sees every datagram, and plays the rogue when told to ----------------------------

def oscore_option(value):
    """(piv, kid) of an OSCORE option value, decoded here (RFC 8613 section 6.1), not by
    protocol/oscore.py."""
    if not value:
        return None, None
    n = value[0] & 7
    pos = 1 + n
    piv = bytes(value[1:pos])
    if value[0] & 0x10:
        pos += 1 + value[pos]
    kid = bytes(value[pos:]) if value[0] & 0x08 else None
    return piv, kid


class Relay:
    """UDP relay node <-> server. `rogue(msg, relay)` -> datagram or None: called for each
    request once `forward` requests went through; a datagram answers the node in place of
    the server, None drops the request."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.up.bind(("127.0.0.1", 0))
        self.up.settimeout(0.1)
        self.requests = []      # (kid, piv, datagram) of every request datagram
        self.responses = []     # every datagram from the server, parsed
        self.forward = None     # None: everything; n: the first n distinct requests only
        self.rogue = None
        self.node_addr = None
        self._stop = False
        self._threads = [threading.Thread(target=self._down, daemon=True),
                         threading.Thread(target=self._up, daemon=True)]
        for t in self._threads:
            t.start()

    def distinct(self):
        """Distinct protected requests seen, in order: [(kid, piv)]."""
        out = []
        for kid, piv, _d in self.requests:
            if (kid, piv) not in out:
                out.append((kid, piv))
        return out

    def _down(self):
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            self.node_addr = addr
            try:
                m = coap.parse(data)
            except ValueError:
                continue
            if m.code == coap.EMPTY:        # the node's ACK of a separate response
                self.up.sendto(data, ("127.0.0.1", self.upstream))
                continue
            piv, kid = oscore_option(m.get_option(coap.OSCORE))
            self.requests.append((kid, piv, data))
            if self.forward is not None and len(self.distinct()) > self.forward:
                answer = self.rogue(m, self) if self.rogue else None
                if answer is not None:
                    self.sock.sendto(answer, addr)
                continue
            self.up.sendto(data, ("127.0.0.1", self.upstream))

    def _up(self):
        while not self._stop:
            try:
                data, _ = self.up.recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            try:
                self.responses.append(coap.parse(data))
            except ValueError:
                pass
            if self.node_addr is not None:
                self.sock.sendto(data, self.node_addr)

    def close(self):
        self._stop = True
        for t in self._threads:
            t.join(2)
        self.sock.close()
        self.up.close()


def assert_unique_pivs(relay):
    """A (kid, PIV) is never used for two different messages: the datagrams that carry the
    same pair are CoAP retransmissions of the same bytes."""
    seen = {}
    for kid, piv, data in relay.requests:
        assert kid is not None and piv is not None, "an unprotected request went out: %r" % data
        prev = seen.setdefault((kid, piv), data)
        assert prev == data, "(kid %s, PIV %s) used for two different requests" % (kid.hex(), piv.hex())
    return len(seen)


# -- the node --------------------------------------------------------------------------------------

def make_node(tmp_path, micropython_bin, micropython_path, port, key, name="n1", seq=True,
              **cfg):
    flash = tmp_path / name
    conf = harness.node_config(name, cfg.pop("hub", "127.0.0.1:%d" % port), **cfg)
    node = harness.Node(flash, conf, micropython_bin, micropython_path)
    if key is not None:
        if seq:   # provisioning writes the sequence file with the key (tools/provision.py)
            with open(os.path.join(node.flash, "oscore.seq"), "w") as f:
                f.write("0")
        with open(os.path.join(node.flash, "oscore.json"), "w") as f:
            json.dump(key, f)
    return node


def resolve(payload):
    out = []
    bn, bt = "", 0
    for rec in cbor2.loads(payload):
        bn = rec.get(-2, bn)
        bt = rec.get(-3, bt)
        if 0 in rec:
            out.append((bn + rec[0], bt + rec.get(6, 0)))
    return out


@pytest.fixture
def key():
    return make_key()


@pytest.fixture
def server(tmp_path, key):
    s = OscoreServer(credentials_dir(str(tmp_path / "creds"), key, window_lost=True))
    yield s
    s.close()


@pytest.fixture
def relay(server):
    r = Relay(server.port)
    yield r
    r.close()


def test_protected_reports_registration_echo_and_block2_config(tmp_path, micropython_bin,
                                                               micropython_path, key, server, relay):
    # a config big enough for Block2 (inner): the hub's answer to GET /cfg/n1 is > 1 KB
    server.cfg_body = {"hub_mdns": "h" * 1400 + ".local", "report_interval": 1}
    server.cfg_version = 1
    node = make_node(tmp_path, micropython_bin, micropython_path, relay.port, key)
    assert node.run(timeout=60, SMARTPARK_CYCLES=2) == 0, node.output()
    first = node.status()
    assert node.run(timeout=60, SMARTPARK_DRAIN=1) == 0, node.output()
    out = node.output()
    assert "OSCORE: requests protected, kid %s" % key["sender_id"] in out, out
    assert key["secret"] not in out and key["salt"] not in out
    st = node.status()
    assert st["oscore"] and st["depth"] == 0 and st["synced"] and st["stored"] > 0, st
    # aiocoap lost its replay window (sequence.json "unknown"): 4.01 + Echo, one retry
    assert first["echoes"] == 1 and st["echoes"] == 0, (first, st, out)
    assert first["strays"] == st["strays"] == 0 and server.plain == 0
    # the config (> 1 KB) came in two inner blocks, each its own protected exchange,
    # and was applied
    assert st["config_version"] == 1 and server.cfg_gets, st
    with open(os.path.join(node.flash, "config.json")) as f:
        assert json.load(f)["hub_mdns"] == server.cfg_body["hub_mdns"]
    sizes = [len(m.payload) for m in relay.responses]
    assert any(n > 1024 for n in sizes) and max(sizes) < 1100, sizes
    q, links = server.registrations[0]
    assert "ep=n1" in q and b'</air>;rt="smartpark.bme280"' in links
    # every reading the node recorded reached the server (through OSCORE only)
    ledger, unresolved = node.ledger()
    got = set()
    for p in server.packs:
        got.update(resolve(p))
    assert unresolved == 0
    assert all(("n1/" + name, t) in got for name, t in ledger), "readings missing at the server"
    # the wire: outer POST, no Uri-Path, nothing of the request in the clear
    for _kid, _piv, data in relay.requests:
        m = coap.parse(data)
        assert m.code == coap.POST and m.get_option(coap.URI_PATH) is None
        assert [n for n, _v in m.options] == [coap.OSCORE]
        assert b"n1" not in m.payload and b"ep=" not in data
    for m in relay.responses:
        if m.code != coap.EMPTY:
            assert m.get_option(coap.OSCORE) is not None and m.code == coap.CHANGED, m
    assert assert_unique_pivs(relay) >= 5
    # the hub that answered a verified registration is remembered for a later "auto"
    with open(os.path.join(node.flash, "hub.addr")) as f:
        assert f.read().split() == ["127.0.0.1", str(relay.port)]


def test_separate_protected_responses(tmp_path, micropython_bin, micropython_path, key, server,
                                      relay):
    server.delay = 0.3
    node = make_node(tmp_path, micropython_bin, micropython_path, relay.port, key)
    assert node.run(timeout=60, SMARTPARK_CYCLES=1) == 0, node.output()
    st = node.status()
    assert st["depth"] == 0 and st["stored"] > 0 and st["synced"] and st["strays"] == 0, st
    # the responses came as Empty ACK + a protected CON, which the node acknowledged
    seps = [m for m in relay.responses if m.mtype == coap.CON]
    assert seps and all(m.get_option(coap.OSCORE) is not None for m in seps)
    assert st["retx"] == 0 and assert_unique_pivs(relay) == len(relay.distinct())


# -- rogues ----------------------------------------------------------------------------------------

def _rogue_ack():
    return report.encode_ack(ROGUE_TIME, ROGUE_CFG_VERSION, "9.9.9")


def rogue_plain(m, relay):
    """A plain CoAP server's answer: 2.04 with a report ack, unprotected."""
    return coap.make_response(m, coap.CHANGED, _rogue_ack()).encode()


def rogue_wrong_key(m, relay):
    """A protected answer under a key that is not the node's (same kid, another secret)."""
    piv, kid = oscore_option(m.get_option(coap.OSCORE))
    ctx = oscore.Context(os.urandom(16), os.urandom(8), b"", kid)
    inner = coap.Message(m.mtype, coap.CHANGED, m.mid, m.token, payload=_rogue_ack())
    out = oscore.protect_response(ctx, (kid, piv, ctx.nonce(kid, piv)), inner)
    return coap.make_response(m, out.code, out.payload, out.options).encode()


def rogue_replay(m, relay):
    """The hub's genuine, verified answer to an earlier request, relabelled for this one."""
    old = [r for r in relay.responses if r.code == coap.CHANGED and r.payload]
    if not old:
        return None
    r = old[-1]
    return coap.Message(coap.ACK, r.code, m.mid, m.token, r.options, r.payload).encode()


def rogue_error(m, relay):
    """An unprotected 4.01, as the hub answers a request it has no key for."""
    return coap.make_response(m, coap.UNAUTHORIZED, b"Security context not found").encode()


@pytest.mark.parametrize("rogue", [rogue_plain, rogue_wrong_key, rogue_replay, rogue_error],
                         ids=["plain", "wrong-key", "other-request", "unprotected-4.01"])
def test_rogue_answers_ack_nothing_and_set_nothing(tmp_path, micropython_bin, micropython_path,
                                                  key, server, relay, rogue):
    # registration (after the Echo round: aiocoap lost its window) and the first time
    # sync go to the hub; from the first report on a rogue on the path answers in its
    # place (and the hub never hears of it)
    relay.forward = 3
    relay.rogue = rogue
    # (the hub's own answers must come within 1.2 s: 0.4 s, then a retransmission 0.8 s)
    node = make_node(tmp_path, micropython_bin, micropython_path, relay.port, key,
                     coap={"ack_timeout": 0.4, "max_retransmit": 1})
    assert node.run(timeout=60, SMARTPARK_CYCLES=1) == 0, node.output()
    out = node.output()
    st = node.status()
    assert st["registered"] and st["syncs"] == 1, (st, out)   # the hub's time, once
    assert st["stored"] == 0 and st["refused"] == 0 and st["depth"] > 0, (st, out)
    assert st["config_version"] == 0 and "hub wants firmware" not in out
    assert len(relay.distinct()) == 4, "the node went on after an unverified answer"
    assert len(server.packs) == 1 and b"health.uptime" in server.packs[0]   # the time sync
    with open(os.path.join(node.flash, "clock.json")) as f:
        (_run, delta), = json.load(f)
    # the simulated RTC runs SIM_RTC_SKEW_MS behind the host: the hub's correction undoes it
    assert abs(delta + SIM_RTC_SKEW_MS) < 60000, "the node took the rogue's clock (%d ms)" % delta
    if rogue is rogue_error:
        assert "the hub refused our OSCORE request: 4.01" in out, out
        assert st["strays"] == 0
    else:
        assert "hub silent" in out and st["strays"] >= 1, (st, out)


def test_server_with_a_wrong_key_is_never_an_ack(tmp_path, micropython_bin, micropython_path, key):
    wrong = dict(key, secret=os.urandom(16).hex())
    server = OscoreServer(credentials_dir(str(tmp_path / "creds"), wrong))
    try:
        node = make_node(tmp_path, micropython_bin, micropython_path, server.port, key,
                         coap={"ack_timeout": 0.2, "max_retransmit": 1})
        assert node.run(timeout=60, SMARTPARK_CYCLES=1) == 0, node.output()
    finally:
        server.close()
    out = node.output()
    st = node.status()
    # aiocoap cannot decrypt: an unprotected 4.00, which ends the exchange as an error
    assert "the hub refused our OSCORE request: 4.00" in out, out
    assert not st["registered"] and not st["synced"] and st["stored"] == 0 and st["depth"] > 0


class _AnyAck(resource.Resource):
    """A plain CoAP server's answer to anything: 2.04 with the rogue's report ack."""

    async def render_post(self, request):
        return aiocoap.Message(code=aiocoap.CHANGED, payload=_rogue_ack())


class PlainServer(OscoreServer):
    """A server without OSCORE that answers everything with 2.04 and a report ack."""

    def site(self):
        site = resource.Site()
        site.add_resource([], _AnyAck())
        return site


def test_plain_aiocoap_server_gets_protected_requests_and_is_ignored(tmp_path, micropython_bin,
                                                                     micropython_path, key):
    server = PlainServer(None)
    try:
        node = make_node(tmp_path, micropython_bin, micropython_path, server.port, key,
                         coap={"ack_timeout": 0.2, "max_retransmit": 1})
        assert node.run(timeout=60, SMARTPARK_CYCLES=1) == 0, node.output()
    finally:
        server.close()
    st = node.status()
    assert not st["registered"] and not st["synced"] and st["stored"] == 0, st
    assert st["strays"] >= 1 and "hub silent" in node.output()


def test_a_hub_found_but_never_verified_is_not_remembered(tmp_path, micropython_bin,
                                                         micropython_path, key):
    # "hub": "auto": the mDNS name (the host's resolver: localhost) leads to a plain server
    # that answers everything; the node must not keep it in flash as its hub
    server = PlainServer(None)
    try:
        node = make_node(tmp_path, micropython_bin, micropython_path, server.port, key,
                         hub="auto", hub_port=server.port, hub_mdns="localhost",
                         coap={"ack_timeout": 0.2, "max_retransmit": 1})
        assert node.run(timeout=60, SMARTPARK_CYCLES=1) == 0, node.output()
    finally:
        server.close()
    assert "hub at 127.0.0.1:%d (mdns)" % server.port in node.output(), node.output()
    assert not os.path.exists(os.path.join(node.flash, "hub.addr"))


def test_without_a_key_the_node_talks_plain_coap_and_says_so(tmp_path, micropython_bin,
                                                             micropython_path):
    relay = Relay(harness.free_udp_port())   # nobody behind it: only the wire matters
    try:
        node = make_node(tmp_path, micropython_bin, micropython_path, relay.port, None,
                         coap={"ack_timeout": 0.1, "max_retransmit": 0})
        assert node.run(timeout=60, SMARTPARK_CYCLES=1) == 0, node.output()
    finally:
        relay.close()
    out = node.output()
    assert out.count("no oscore.json: plain CoAP") == 1, out
    m = coap.parse(relay.requests[0][2])
    assert m.get_option(coap.OSCORE) is None and m.uri_path == "/rd"


def test_a_broken_key_file_sends_nothing(tmp_path, micropython_bin, micropython_path, key):
    relay = Relay(harness.free_udp_port())
    try:
        node = make_node(tmp_path, micropython_bin, micropython_path, relay.port,
                         dict(key, secret="zz" + key["secret"][2:]))
        assert node.run(timeout=60, SMARTPARK_CYCLES=1) == 0, node.output()
    finally:
        relay.close()
    out = node.output()
    assert "oscore.json: secret is not hex" in out and "zz" + key["secret"][2:] not in out, out
    assert relay.requests == [] and node.status()["depth"] > 0


def test_a_key_without_its_sequence_file_sends_nothing(tmp_path, micropython_bin,
                                                       micropython_path, key):
    """A lost oscore.seq would restart the numbers at 0 under a used key: refused."""
    relay = Relay(harness.free_udp_port())
    try:
        node = make_node(tmp_path, micropython_bin, micropython_path, relay.port, key, seq=False)
        assert node.run(timeout=60, SMARTPARK_CYCLES=1) == 0, node.output()
    finally:
        relay.close()
    assert "oscore.seq: missing; the node needs a new key" in node.output()
    assert relay.requests == [] and node.status()["depth"] > 0


# -- power cuts ------------------------------------------------------------------------------------

def test_sigkill_never_reuses_a_sequence_number(tmp_path, micropython_bin, micropython_path, key,
                                                server, relay):
    rng = random.Random(8613)
    node = make_node(tmp_path, micropython_bin, micropython_path, relay.port, key,
                     coap={"ack_timeout": 0.3, "max_retransmit": 2})
    kills = 0
    t0 = time.monotonic()
    while kills < 25 and time.monotonic() - t0 < 40:
        before = len(relay.requests)
        node.start()
        # a kill at a random moment after the node's first request of this life
        harness.wait_for(lambda n=before: len(relay.requests) > n or node.proc.poll() is not None,
                         10, step=0.01)
        time.sleep(rng.uniform(0, 0.4))
        node.kill()
        kills += 1
    assert kills == 25, "only %d kills in the time" % kills
    assert node.run(timeout=60, SMARTPARK_DRAIN=1) == 0, node.output()
    n = assert_unique_pivs(relay)
    assert n > 25, n
    # the server never saw a replay, and the node's last life still got its answers
    assert all(b"Replay" not in r.payload for r in relay.responses)
    assert node.status()["depth"] == 0
