"""Finding the hub when config "hub" is "auto" (loaded only while the node looks).

In this order:
1. multicast GET /.well-known/core?rt=core.rd* to 224.0.1.187 (the
   "All CoAP Nodes" group, RFC 7252 section 12.8) on hub_port, NON; the first
   answer that lists an RD resource names the hub (its source address);
2. the same to ff02::fd (All CoAP Nodes, link-local IPv6) where the node has
   IPv6 (an IPv6 socket can send there);
3. config "hub_mdns" when it is not the default name: an operator's override;
4. DNS-SD: browse "_coap._udp.local" with one mDNS query (RFC 6762 section 6.7,
   a one-shot query from an ordinary port, answered by unicast): PTR -> the
   instances, SRV -> host and port, A/AAAA -> the address (asked again when the
   answer left them out). An instance whose TXT says path=/r (the hub's
   zeroconf advertisement, hub/discovery.py) comes first;
5. the default "hub_mdns" name through getaddrinfo (ESP-IDF resolves .local
   names over mDNS; the unix port uses the host resolver);
6. the last hub that answered (rd.remembered, kept in flash).

Whatever found it, the node trusts a hub only once it proved its key: with
OSCORE the registration's response must verify (node._save_hub), so a
stranger answering a discovery is never remembered nor sent a reading.

node.find_hub imports this module, calls find(), and unloads it and
link-format again (compat.unload): a node with a hub spends no heap on them.
"""

import socket

import rd
from compat import log, sleep_ms, ticks_diff, ticks_ms, urandom_int
from smartpark.protocol import coap, linkformat
from smartpark.protocol.errors import DecodeError

ALL_COAP_NODES = "224.0.1.187"
ALL_COAP_NODES_V6 = "ff02::fd"
MDNS_GROUP = "224.0.0.251"
MDNS_PORT = 5353
SERVICE = "_coap._udp.local"
DEFAULT_NAME = "smartpark-hub.local"   # configschema's hub_mdns default
_PTR, _SRV, _TXT, _A, _AAAA = 12, 33, 16, 1, 28
MODULES = ("discover", "smartpark.protocol.linkformat")  # what find_hub unloads after a search


async def find(port, mdns_name):
    """((host, port), how) of the hub, or (None, None)."""
    hp = await multicast(port)
    if hp is not None:
        return hp, "multicast"
    hp = await multicast(port, 1000, ALL_COAP_NODES_V6)
    if hp is not None:
        return hp, "multicast6"
    if mdns_name and mdns_name != DEFAULT_NAME:
        hp = mdns(mdns_name, port)
        if hp is not None:
            return hp, "mdns"
    hp = await browse()
    if hp is not None:
        return hp, "dns-sd"
    if mdns_name == DEFAULT_NAME:
        hp = mdns(mdns_name, port)
        if hp is not None:
            return hp, "mdns"
    hp = rd.remembered()
    return hp, ("remembered" if hp is not None else None)


async def multicast(port, wait_ms=1500, group=ALL_COAP_NODES):
    """(host, port) of the first RD that answers the multicast query, or None."""
    v6 = ":" in group
    try:
        s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    except (AttributeError, OSError):
        return None   # no IPv6 on this node
    try:
        s.setblocking(False)
        req = coap.make_request(coap.GET, "/.well-known/core", urandom_int(16),
                                urandom_int(32).to_bytes(4, "big"), coap.NON,
                                query=["rt=core.rd*"])
        try:
            s.sendto(req.encode(), socket.getaddrinfo(group, port)[0][-1])
        except (OSError, IndexError) as e:
            if not v6:
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
    """Host text of a sockaddr (a tuple on CPython, bytes on MicroPython's unix port: a
    struct sockaddr_in or sockaddr_in6, family in its first two bytes). A link-local IPv6
    address keeps its interface ("fe80::1%3"): a hub answering ff02::fd from one is
    reachable only through it."""
    if isinstance(addr, tuple):
        if len(addr) >= 4 and addr[3] and "%" not in addr[0]:
            return "%s%%%d" % (addr[0], addr[3])
        return addr[0]
    try:
        b = bytes(addr)
        if len(b) >= 24 and b[0] | b[1] << 8 == socket.AF_INET6:
            host = socket.inet_ntop(socket.AF_INET6, b[8:24])  # type: ignore[attr-defined]
            scope = int.from_bytes(b[24:28], "little") if len(b) >= 28 else 0
            return "%s%%%d" % (host, scope) if scope else host
        return socket.inet_ntop(socket.AF_INET, b[4:8])  # type: ignore[attr-defined]
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


# --- DNS-SD over mDNS (RFC 6762, RFC 6763): a one-shot query and its unicast answer ---

def _qname(name):
    out = bytearray()
    for label in name.split("."):
        if label:
            out.append(len(label))
            out.extend(label.encode())
    out.append(0)
    return out


def query(qid, questions):
    """A DNS query message: questions [(name, type)], class IN."""
    m = bytearray(qid.to_bytes(2, "big") + b"\x00\x00" + len(questions).to_bytes(2, "big")
                  + b"\x00\x00\x00\x00\x00\x00")
    for name, qtype in questions:
        m.extend(_qname(name))
        m.extend(qtype.to_bytes(2, "big") + b"\x00\x01")
    return m


def _name(m, i):
    """(dotted lower-case name, index after it) at m[i], following compression pointers."""
    labels = []
    end = None
    for _ in range(64):
        n = m[i]
        if n >= 0xC0:
            if end is None:
                end = i + 2
            i = ((n & 0x3F) << 8) | m[i + 1]
            continue
        if n == 0:
            break
        labels.append(bytes(m[i + 1:i + 1 + n]).decode().lower())
        i += 1 + n
    return ".".join(labels), (end if end is not None else i + 1)


def records(m, qid):
    """[(name, type, rdata-offset, rdlength)] of a DNS response with id `qid` (every
    section), or [] when it is not one."""
    if len(m) < 12 or int.from_bytes(m[0:2], "big") != qid or not m[2] & 0x80:
        return []
    qd = int.from_bytes(m[4:6], "big")
    rr = int.from_bytes(m[6:8], "big") + int.from_bytes(m[8:10], "big") \
        + int.from_bytes(m[10:12], "big")
    i = 12
    for _ in range(qd):
        i = _name(m, i)[1] + 4
    out = []
    for _ in range(rr):
        name, i = _name(m, i)
        rtype = int.from_bytes(m[i:i + 2], "big")
        ln = int.from_bytes(m[i + 8:i + 10], "big")
        out.append((name, rtype, i + 10, ln))
        i += 10 + ln
    return out


def pick(m, rrs, service=SERVICE):
    """(instance, host, port, address or None) the answer names, the one whose TXT says
    path=/r first; None when it names no instance with an SRV."""
    service = service.lower()
    inst = []
    srv = {}
    txt = {}
    addr = {}
    addr6 = {}
    for name, rtype, at, ln in rrs:
        if rtype == _PTR and name == service:
            inst.append(_name(m, at)[0])
        elif rtype == _SRV:
            srv[name] = (_name(m, at + 6)[0], int.from_bytes(m[at + 4:at + 6], "big"))
        elif rtype == _TXT:
            txt[name] = b"path=/r" in bytes(m[at:at + ln])
        elif rtype == _A and ln == 4:   # IPv4 first: what every node can reach
            addr[name] = "%d.%d.%d.%d" % tuple(m[at:at + 4])
        elif rtype == _AAAA and ln == 16:
            try:
                addr6[name] = socket.inet_ntop(socket.AF_INET6, bytes(m[at:at + 16]))  # type: ignore[attr-defined]
            except (AttributeError, OSError, ValueError):
                pass
    best = None
    for name in inst:
        if name in srv:
            host, port = srv[name]
            cand = (name, host, port, addr.get(host) or addr6.get(host))
            if txt.get(name):
                return cand
            if best is None:
                best = cand
    return best


async def _ask(s, dest, questions, wait_ms):
    qid = urandom_int(16)
    s.sendto(query(qid, questions), dest)
    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < wait_ms:
        try:
            data, _addr = s.recvfrom(1500)
        except OSError:
            await sleep_ms(20)
            continue
        try:
            rrs = records(data, qid)
        except (IndexError, UnicodeError):
            continue
        if rrs:
            return data, rrs
    return None, None


async def browse(wait_ms=800):
    """(host, port) of the hub's _coap._udp instance on the link, or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        dest = socket.getaddrinfo(MDNS_GROUP, MDNS_PORT)[0][-1]
        data, rrs = await _ask(s, dest, [(SERVICE, _PTR)], wait_ms)
        if data is None:
            return None
        got = pick(data, rrs)
        if got is None:
            return None
        inst, host, port, ip = got
        if ip is None:   # the responder left the address out: ask for it
            data, rrs = await _ask(s, dest, [(host, _A), (host, _AAAA)], wait_ms)
            if data is not None:
                for name, rtype, at, ln in rrs:
                    if name == host and rtype == _A and ln == 4:
                        ip = "%d.%d.%d.%d" % tuple(data[at:at + 4])
        if ip is None:
            return None
        log("dns-sd:", inst, "->", host, ip, port)
        return ip, port
    except OSError as e:
        log("dns-sd: mDNS query failed", e)
        return None
    finally:
        s.close()
