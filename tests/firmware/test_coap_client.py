"""firmware/coapc.py under the real micropython against a scripted peer on a real UDP socket.

The peer (this test, plain sockets + protocol/coap.py to read and build
messages) drops, delays, duplicates and resets, and checks what the node's
client put on the wire: RFC 7252 retransmission with the same MID and token,
at most MAX_RETRANSMIT retransmissions, Empty ACK + separate response
(acknowledged, duplicates re-acknowledged and ignored), RST, stale responses.
"""

import os
import socket
import subprocess
import threading

import pytest
from smartpark.protocol import coap

HERE = os.path.dirname(os.path.abspath(__file__))
FIRMWARE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "firmware")

pytestmark = pytest.mark.micropython

SCRIPT = r'''
import sys, asyncio
from coapc import Client, CoapTimeout, CoapReset
from smartpark.protocol import coap
port = int(sys.argv[1]); n = int(sys.argv[2])
c = Client({"ack_timeout": 0.15, "ack_random_factor": 1.5, "max_retransmit": 3, "separate_timeout": 2})
c.connect("127.0.0.1", port)
async def main():
    for i in range(n):
        try:
            r = await c.request(coap.POST, "/r", b"pack%d" % i, 112)
            print("OK", i, coap.code_str(r.code), r.payload.decode(), "retx=%d" % c.retx)
        except CoapTimeout as e:
            print("TIMEOUT", i, "retx=%d" % c.retx)
        except CoapReset:
            print("RESET", i)
asyncio.run(main())
'''


class Peer:
    """Answers each request by a scenario function: f(msg, copy_number, sock, addr)."""

    def __init__(self, scenario):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.scenario = scenario
        self.got = []          # every datagram received, parsed
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        copies = {}
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(2048)
            except (socket.timeout, OSError):
                continue
            m = coap.parse(data)
            self.got.append(m)
            if m.mtype == coap.CON and m.code == coap.POST:
                copies[m.mid] = copies.get(m.mid, 0) + 1
                self.scenario(m, copies[m.mid], self.sock, addr)

    def close(self):
        self._stop = True
        self._t.join(2)
        self.sock.close()


def _run(micropython_bin, micropython_path, peer, n):
    env = dict(os.environ, MICROPYPATH=":".join([".frozen", FIRMWARE, micropython_path]))
    p = subprocess.run([micropython_bin, "-c", SCRIPT.replace("sys.argv[1]", str(peer.port))
                        .replace("sys.argv[2]", str(n))],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout.split("\n")


def _exchange(micropython_bin, micropython_path, scen, n):
    """Run n POSTs of the node's client against a Peer playing `scen`; (output lines, peer)."""
    peer = Peer(scen)
    try:
        return _run(micropython_bin, micropython_path, peer, n), peer
    finally:
        peer.close()


def _reply(sock, addr, m, code=coap.CHANGED, payload=b"ok"):
    sock.sendto(coap.make_response(m, code, payload).encode(), addr)


def _posts(peer):
    return [m for m in peer.got if m.mtype == coap.CON and m.code == coap.POST]


def test_lost_requests_are_retransmitted_with_same_mid_and_token(micropython_bin, micropython_path):
    def scen(m, k, sock, addr):
        if k >= 3:                       # the first two copies are "lost"
            _reply(sock, addr, m, payload=m.payload)
    out, peer = _exchange(micropython_bin, micropython_path, scen, 2)
    assert out[0] == "OK 0 2.04 pack0 retx=2", out
    assert out[1] == "OK 1 2.04 pack1 retx=4", out
    posts = _posts(peer)
    assert len(posts) == 6
    first, second = posts[0:3], posts[3:6]
    for group in (first, second):
        assert len({(m.mid, m.token, m.payload) for m in group}) == 1   # identical copies
        assert group[0].content_format == 112 and group[0].uri_path == "/r"
    assert second[0].mid == (first[0].mid + 1) & 0xFFFF
    assert second[0].token != first[0].token and len(first[0].token) == 4


def test_gives_up_after_max_retransmit(micropython_bin, micropython_path):
    out, peer = _exchange(micropython_bin, micropython_path, lambda m, k, sock, addr: None, 1)
    assert out[0] == "TIMEOUT 0 retx=3", out
    assert len(_posts(peer)) == 1 + 3


def test_separate_response_acknowledged_and_duplicate_ignored(micropython_bin, micropython_path):
    def scen(m, k, sock, addr):
        sock.sendto(coap.empty_ack(m).encode(), addr)
        resp = coap.Message(coap.CON, coap.CHANGED, 0x7000 + (m.mid & 0xFF), m.token, payload=b"sep")
        sock.sendto(resp.encode(), addr)
        sock.sendto(resp.encode(), addr)        # a retransmitted separate response
    out, peer = _exchange(micropython_bin, micropython_path, scen, 2)
    assert out[0] == "OK 0 2.04 sep retx=0", out
    assert out[1] == "OK 1 2.04 sep retx=0", out
    assert len(_posts(peer)) == 2                      # the Empty ACK stopped retransmission
    acks = [m for m in peer.got if m.mtype == coap.ACK and m.code == coap.EMPTY]
    first_resp_mid = 0x7000 + (_posts(peer)[0].mid & 0xFF)
    assert sum(1 for a in acks if a.mid == first_resp_mid) == 2   # both copies acknowledged


def test_stale_and_foreign_answers_are_ignored_then_reset_ends(micropython_bin, micropython_path):
    def scen(m, k, sock, addr):
        if m.payload == b"pack0":
            # wrong token on our MID, another MID with our token, then the real answer
            bad = coap.Message(coap.ACK, coap.CHANGED, m.mid, b"\xde\xad\xbe\xef", payload=b"stale")
            sock.sendto(bad.encode(), addr)
            other = coap.Message(coap.ACK, coap.CHANGED, (m.mid + 77) & 0xFFFF, m.token, payload=b"x")
            sock.sendto(other.encode(), addr)
            sock.sendto(b"\x40garbage", addr)
            _reply(sock, addr, m, payload=b"real")
        else:
            sock.sendto(coap.make_rst(m).encode(), addr)
    out, peer = _exchange(micropython_bin, micropython_path, scen, 2)
    assert out[0] == "OK 0 2.04 real retx=0", out
    assert out[1] == "RESET 1", out


def test_initial_message_ids_differ_between_boots(micropython_bin, micropython_path):
    mids = []
    for _ in range(3):
        _, peer = _exchange(micropython_bin, micropython_path, lambda m, k, sock, addr: _reply(sock, addr, m), 1)
        mids.append(_posts(peer)[0].mid)
    assert len(set(mids)) == 3, mids
