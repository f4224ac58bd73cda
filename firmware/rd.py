"""Finding the hub and registering with its Resource Directory (RFC 9176).

Discovery when config "hub" is "auto", in this order:
1. multicast GET /.well-known/core?rt=core.rd* to 224.0.1.187 (the
   "All CoAP Nodes" group, RFC 7252 section 12.8) on hub_port, NON; the first
   answer that lists an RD resource names the hub (its source address);
2. the mDNS name config "hub_mdns" through getaddrinfo (ESP-IDF resolves
   .local names over mDNS; the unix port uses the host resolver);
3. the last hub that answered, remembered in flash (hub.addr).
A configured "host[:port]" is used directly.

Registration: POST /rd?ep=<node>&lt=<lifetime>&fw=<version> with one link per
sensor (</name>;rt="smartpark.<driver>"), answered 2.01 with a Location.
The node refreshes with POST <location>?lt=.. when 3/4 of the lifetime has
passed, and registers from scratch when the refresh gets 4.04 (the hub forgot
it) or fails.
"""

import socket

from compat import log, sleep_ms, ticks_diff, ticks_ms, urandom_int
from smartpark.protocol import coap, linkformat
from smartpark.protocol.errors import DecodeError

ALL_COAP_NODES = "224.0.1.187"
_HUB_FILE = "hub.addr"


def remembered():
    try:
        with open(_HUB_FILE) as f:
            host, port = f.read().split()
            return host, int(port)
    except (OSError, ValueError):
        return None


def remember(host, port):
    try:
        with open(_HUB_FILE, "w") as f:
            f.write("%s %d" % (host, port))
    except OSError:
        pass


async def multicast(port, wait_ms=1500, group=ALL_COAP_NODES):
    """(host, port) of the first RD that answers the multicast query, or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        req = coap.make_request(coap.GET, "/.well-known/core", urandom_int(16),
                                urandom_int(32).to_bytes(4, "big"), coap.NON,
                                query=["rt=core.rd*"])
        try:
            s.sendto(req.encode(), socket.getaddrinfo(group, port)[0][-1])
        except OSError as e:
            log("discovery: multicast send failed", e)
            return None
        t0 = ticks_ms()
        while ticks_diff(ticks_ms(), t0) < wait_ms:
            try:
                data, addr = s.recvfrom(1280)
            except OSError:
                await sleep_ms(20)
                continue
            try:
                r = coap.parse(data)
                if r.token != req.token or r.code != coap.CONTENT:
                    continue
                links = linkformat.parse(r.payload.decode())
            except (DecodeError, UnicodeError):
                continue
            for target, attrs in links:
                rt = attrs.get("rt", "")
                if isinstance(rt, (list, tuple)):
                    rt = " ".join(rt)
                if "core.rd" in rt:
                    host = addr_host(addr)
                    if host:
                        return host, port
        return None
    finally:
        s.close()


def addr_host(addr):
    """Host text of a sockaddr (a tuple on CPython, bytes on MicroPython's unix port)."""
    if isinstance(addr, tuple):
        return addr[0]
    try:
        return socket.inet_ntop(socket.AF_INET, bytes(addr[4:8]))  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None


def mdns(name, port):
    try:
        ai = socket.getaddrinfo(name, port, 0, socket.SOCK_DGRAM)
    except OSError:
        return None
    if not ai:
        return None
    return addr_host(ai[0][-1]), port


class Registration:
    def __init__(self, client, node, lifetime, links, fw):
        self.client = client
        self.node = node
        self.lifetime = lifetime
        self.links = links
        self.fw = fw
        self.location = None
        self._at = None
        self.count = 0

    def due(self):
        if self.location is None or self._at is None:
            return True
        return ticks_diff(ticks_ms(), self._at) > self.lifetime * 750

    def forget(self):
        self.location = None

    async def ensure(self):
        """Register or refresh when due; True when registered."""
        if not self.due():
            return True
        c = self.client
        if self.location is not None:
            r = await c.request(coap.POST, self.location, query=["lt=%d" % self.lifetime])
            if r.code == coap.CHANGED:
                self._at = ticks_ms()
                return True
            log("rd: update got", coap.code_str(r.code), "- registering again")
            self.location = None
        r = await c.request(coap.POST, "/rd", self.links.encode(), coap.LINK_FORMAT,
                            query=["ep=" + self.node, "lt=%d" % self.lifetime, "fw=" + self.fw])
        if r.code != coap.CREATED:
            log("rd: registration got", coap.code_str(r.code))
            return False
        self.location = r.location_path
        self._at = ticks_ms()
        self.count += 1
        return True


def links_for(sensors):
    return linkformat.serialize([("/" + s["name"], {"rt": "smartpark." + s["driver"]})
                                 for s in sensors])
