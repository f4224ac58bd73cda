"""Registering with the hub's Resource Directory (RFC 9176), and the hub last found.

Finding the hub is discover.py's (multicast, mDNS), loaded only while a node
looks for it; the last hub that answered a registration (with OSCORE: an
answer that verified) is remembered here, in flash (hub.addr), never one that
only answered the discovery. A configured "host[:port]" is used directly.

Registration: POST /rd?ep=<node>&lt=<lifetime>&fw=<version> with one link per
sensor (</name>;rt="smartpark.<driver>"), answered 2.01 with a Location.
The node refreshes with POST <location>?lt=.. when 3/4 of the lifetime has
passed, and registers from scratch when the refresh gets 4.04 (the hub forgot
it) or fails.
"""

from compat import log, ticks_diff, ticks_ms, unload
from smartpark.protocol import coap

_HUB_FILE = "hub.addr"
_LINKFORMAT = "smartpark.protocol.linkformat"


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
    """The registration's payload: one link per sensor (link-format loaded for the moment)."""
    from smartpark.protocol import linkformat
    try:
        return linkformat.serialize([("/" + s["name"], {"rt": "smartpark." + s["driver"]})
                                     for s in sensors])
    finally:
        unload(_LINKFORMAT)
