"""Registering with the hub's Resource Directory (RFC 9176), and the hub last found.

Finding the hub is discover.py's (multicast, mDNS), loaded only while a node
looks for it; the last hub that answered a registration (with OSCORE: an
answer that verified) is remembered here, in flash (hub.addr), never one that
only answered the discovery. A configured "host[:port]" is used directly.

Registration: POST /rd?ep=<node>&lt=<lifetime>&fw=<version> with one link per
sensor (</name>;rt="smartpark.<driver>"), answered 2.01 with a Location.
The node refreshes with POST <location>?lt=.. when half the lifetime has
passed, and registers from scratch when the refresh gets 4.04 (the hub forgot
it) or fails.

A registration outlives the process: its state is [host, port, location,
registered at (RTC ms), lifetime, key] (key: CRC-32 of node, links and
firmware, so a changed sensor list or firmware registers again). The node
keeps it in RTC memory (deep sleep, soft resets) and in flash (`rd.json`,
written only when the registration changes: once per half lifetime), so a
deep-sleep wake within the lifetime neither registers nor looks for the hub.
The RTC ms of a flash copy may come from before a power cut (another time
base): restored from flash, the registration is refreshed on the first
cycle (an update, not a new registration, and no discovery).
"""

import json
import os

from compat import crc32, log, unload
from smartpark.protocol import coap

_HUB_FILE = "hub.addr"
_REG_FILE = "rd.json"
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


def state_file(st=0):
    """rd.json: state_file() reads the kept registration state (None when none);
    state_file(st) writes st (temp + rename), state_file(None) removes the file."""
    try:
        if st == 0:
            with open(_REG_FILE) as f:
                st = json.load(f)
            return st if isinstance(st, list) and len(st) == 6 else None
        if st is None:
            os.remove(_REG_FILE)
        else:
            with open(_REG_FILE + ".tmp", "w") as f:
                json.dump(st, f)
            os.rename(_REG_FILE + ".tmp", _REG_FILE)
    except (OSError, ValueError):
        pass
    return None


class Registration:
    def __init__(self, client, node, lifetime, links, fw, now_ms, hub=None, state=None):
        """now_ms(): the RTC's ms (keeps counting through deep sleep); hub: (host, port);
        state: the state of an earlier run (node.py keeps it), restored when hub, key and
        lifetime match."""
        self.client = client
        self.node = node
        self.lifetime = lifetime
        self.links = links
        self.fw = fw
        self.now_ms = now_ms
        self.hub = hub
        self.key = crc32(("%s|%s|%s" % (node, fw, links)).encode()) & 0xFFFFFFFF
        self.location = None
        self._at = None
        self.count = 0      # registrations sent by this process
        self.updates = 0    # refreshes sent by this process
        if (state and hub is not None and state[0] == hub[0] and state[1] == hub[1]
                and state[4] == lifetime and state[5] == self.key and state[2]):
            self.location = state[2]
            self._at = state[3]

    def due(self):
        if self.location is None or self._at is None:
            return True
        age = self.now_ms() - self._at
        return age < 0 or age > self.lifetime * 500   # negative: RTC of another power cycle

    def forget(self):
        self.location = None

    async def ensure(self):
        """Register or refresh when due; True when registered."""
        if not self.due():
            return True
        c = self.client
        if self.location is not None:
            self.updates += 1
            r = await c.request(coap.POST, self.location, query=["lt=%d" % self.lifetime])
            if r.code == coap.CHANGED:
                self._at = self.now_ms()
                return True
            log("rd: update got", coap.code_str(r.code), "- registering again")
            self.location = None
        self.count += 1
        r = await c.request(coap.POST, "/rd", self.links.encode(), coap.LINK_FORMAT,
                            query=["ep=" + self.node, "lt=%d" % self.lifetime, "fw=" + self.fw])
        if r.code != coap.CREATED:
            log("rd: registration got", coap.code_str(r.code))
            return False
        self.location = r.location_path
        self._at = self.now_ms()
        return True


def links_for(sensors):
    """The registration's payload: one link per sensor (link-format loaded for the moment)."""
    from smartpark.protocol import linkformat
    try:
        return linkformat.serialize([("/" + s["name"], {"rt": "smartpark." + s["driver"]})
                                     for s in sensors])
    finally:
        unload(_LINKFORMAT)
