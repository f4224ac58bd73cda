"""protocol/coap.py and linkformat.py against libcoap over real UDP sockets.

Two directions, loopback only, ports picked by the OS:
- our messages to libcoap's `coap-server-notls`: GET /.well-known/core (read
  with linkformat.parse), the same resource in 16-byte Block2 pieces, and an
  Observe registration cancelled with our RST;
- libcoap's `coap-client-notls` to a small UDP server built on coap.parse /
  make_response: a POST with Content-Format 112 and a query, and a blockwise
  GET of link-format text that our server cuts with block_decode/block_encode.
"""

import socket
import subprocess
import threading
import time

import pytest
from smartpark.protocol import coap
from smartpark.protocol import linkformat as lf

pytestmark = pytest.mark.coap_client


def _free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Client:
    """A UDP socket that sends our messages and parses what comes back."""

    def __init__(self, port):
        self.addr = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(1.0)
        self.mid = 0x2000

    def next_mid(self):
        self.mid += 1
        return self.mid

    def send(self, msg):
        self.sock.sendto(msg.encode(), self.addr)

    def recv(self):
        data, _ = self.sock.recvfrom(70000)
        return coap.parse(data)

    def request(self, msg):
        self.send(msg)
        while True:
            resp = self.recv()
            if resp.mid == msg.mid and resp.mtype in (coap.ACK, coap.RST):
                return resp

    def close(self):
        self.sock.close()


@pytest.fixture
def libcoap_server(coap_server_bin):
    port = _free_udp_port()
    proc = subprocess.Popen([coap_server_bin, "-A", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = Client(port)
    try:
        for _ in range(50):  # until the server answers (at most ~50 s)
            try:
                client.request(coap.make_request(coap.GET, "/", client.next_mid(), b"w"))
                break
            except socket.timeout:
                assert proc.poll() is None, "coap-server-notls exited"
        else:
            pytest.fail("coap-server-notls did not answer on port %d" % port)
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_wellknown_core_from_libcoap(libcoap_server):
    c = libcoap_server
    req = coap.make_request(coap.GET, "/.well-known/core", c.next_mid(), b"\x01\x02\x03")
    resp = c.request(req)
    assert (resp.mtype, resp.code, resp.mid, resp.token) == (coap.ACK, coap.CONTENT, req.mid, req.token)
    assert resp.content_format == coap.LINK_FORMAT
    links = lf.parse(resp.payload)
    time_links = [a for t, a in links if t == "/time"]
    # libcoap's example server describes its clock resource this way
    assert time_links == [{"if": "clock", "rt": "ticks", "title": "Internal Clock", "ct": 0,
                           "obs": True}]
    assert [t for t, _ in lf.match(links, "rt", "tick*")] == ["/time"]
    assert [t for t, _ in lf.match(links, "obs")] == ["/time", "/example_data"]


def test_block2_from_libcoap(libcoap_server):
    c = libcoap_server
    whole = c.request(coap.make_request(coap.GET, "/.well-known/core", c.next_mid(), b"a")).payload
    got = bytearray()
    num = 0
    for _ in range(100):
        req = coap.make_request(coap.GET, "/.well-known/core", c.next_mid(), b"b")
        req.add_option(coap.BLOCK2, coap.block_encode(num, False, 0))
        resp = c.request(req)
        assert resp.code == coap.CONTENT
        bnum, more, szx = resp.block2
        assert (bnum, szx) == (num, 0)
        assert len(resp.payload) == 16 or not more
        got += resp.payload
        if not more:
            break
        num += 1
    assert num > 2
    assert bytes(got) == whole


def test_observe_from_libcoap(libcoap_server):
    c = libcoap_server
    req = coap.make_request(coap.GET, "/time", c.next_mid(), b"obs1")
    req.add_option(coap.OBSERVE, coap.OBSERVE_REGISTER)
    first = c.request(req)
    assert first.code == coap.CONTENT and first.observe is not None
    t1 = time.monotonic()
    c.sock.settimeout(5.0)
    note = c.recv()  # /time notifies about once a second
    assert note.token == b"obs1" and note.code == coap.CONTENT
    assert coap.observe_newer(first.observe, t1, note.observe, time.monotonic())
    if note.mtype == coap.CON:
        c.send(coap.make_rst(note))  # cancels the observation (RFC 7641 section 3.6)
    else:
        dereg = coap.make_request(coap.GET, "/time", c.next_mid(), b"obs1")
        dereg.add_option(coap.OBSERVE, coap.OBSERVE_DEREGISTER)
        assert c.request(dereg).observe is None


# -- libcoap's client against a server built on coap.py ----------------------------

LINKS = [("/r", {"rt": "smartpark.report", "ct": [110, 112]}),
         ("/rd", {"rt": "core.rd", "ct": 40}),
         ("/s/%d" % 7, {"rt": "temperature-c", "if": "sensor", "obs": True,
                        "title": "Temp; \"inside\", north"})]


class OurServer(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self.errors = []
        self.stopping = False

    def run(self):
        while not self.stopping:
            try:
                data, peer = self.sock.recvfrom(70000)
            except socket.timeout:
                continue
            try:
                msg = coap.parse(data)
                self.requests.append(msg)
                resp = self.handle(msg)
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(e)
                continue
            if resp is not None:
                self.sock.sendto(resp.encode(), peer)

    def handle(self, msg):
        if msg.mtype != coap.CON:
            return None
        path = msg.uri_path
        if msg.code == coap.POST and path == "/r":
            return coap.make_response(msg, coap.CHANGED, b"stored", content_format=coap.TEXT_PLAIN)
        if msg.code == coap.GET and path == "/.well-known/core":
            body = lf.serialize(lf.query_filter(LINKS, msg.uri_query)).encode()
            resp = coap.make_response(msg, coap.CONTENT, content_format=coap.LINK_FORMAT)
            if msg.block2 is None:
                resp.payload = body
                return resp
            num, _, szx = msg.block2
            size = coap.block_size(szx)
            resp.payload = body[num * size:(num + 1) * size]
            resp.add_option(coap.BLOCK2, coap.block_encode(num, (num + 1) * size < len(body), szx))
            return resp
        return coap.make_response(msg, coap.NOT_FOUND)

    def stop(self):
        self.stopping = True
        self.join(timeout=5)
        self.sock.close()


@pytest.fixture
def our_server():
    srv = OurServer()
    srv.start()
    yield srv
    srv.stop()


def _client(coap_client_bin, *args):
    proc = subprocess.run([coap_client_bin, *args], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def test_libcoap_client_post(our_server, coap_client_bin):
    out = _client(coap_client_bin, "-m", "post", "-t", "112", "-e", "hello",
                  "coap://127.0.0.1:%d/r?ep=n1&lt=300" % our_server.port)
    assert out.strip() == b"stored"
    assert not our_server.errors
    (msg,) = our_server.requests
    assert (msg.mtype, msg.code) == (coap.CON, coap.POST)
    assert msg.uri_path == "/r" and msg.uri_query == ["ep=n1", "lt=300"]
    assert msg.content_format == coap.SENML_CBOR and msg.payload == b"hello"


def test_libcoap_client_blockwise_wellknown(our_server, coap_client_bin):
    out = _client(coap_client_bin, "-m", "get", "-b", "16",
                  "coap://127.0.0.1:%d/.well-known/core" % our_server.port)
    assert not our_server.errors
    assert lf.parse(out.strip()) == LINKS
    nums = [m.block2[0] for m in our_server.requests if m.block2 is not None]
    assert nums[-1] >= 3 and nums[-1] == len(nums) - 1


def test_libcoap_client_wellknown_query(our_server, coap_client_bin):
    out = _client(coap_client_bin, "-m", "get",
                  "coap://127.0.0.1:%d/.well-known/core?rt=core.rd*" % our_server.port)
    assert lf.parse(out.strip()) == [LINKS[1]]
