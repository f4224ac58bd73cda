"""Finding the hub when config "hub" is "auto" (loaded only while the node looks).

In this order:
1. multicast GET /.well-known/core?rt=core.rd* to 224.0.1.187 (the
   "All CoAP Nodes" group, RFC 7252 section 12.8) on hub_port, NON; the first
   answer that lists an RD resource names the hub (its source address);
2. the mDNS name config "hub_mdns" through getaddrinfo (ESP-IDF resolves
   .local names over mDNS; the unix port uses the host resolver);
3. the last hub that answered (rd.remembered, kept in flash).

node.find_hub imports this module, calls find(), and unloads it and
link-format again (compat.unload): a node with a hub spends no heap on them.
"""

import socket

import rd
from compat import log, sleep_ms, ticks_diff, ticks_ms, urandom_int
from smartpark.protocol import coap, linkformat
from smartpark.protocol.errors import DecodeError

ALL_COAP_NODES = "224.0.1.187"
MODULES = ("discover", "smartpark.protocol.linkformat")  # what find_hub unloads after a search


async def find(port, mdns_name):
    """((host, port), how) of the hub, or (None, None)."""
    hp = await multicast(port)
    if hp is not None:
        return hp, "multicast"
    hp = mdns(mdns_name, port)
    if hp is not None:
        return hp, "mdns"
    hp = rd.remembered()
    return hp, ("remembered" if hp is not None else None)


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
