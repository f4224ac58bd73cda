"""mDNS/DNS-SD advertising with zeroconf: `_coap._udp` and `_http._tcp`, withdrawn on shutdown.

TXT records: `path` (the report resource for CoAP, the API root for HTTP) and
`version` (the hub's). Hosts without multicast (containers, CI) make zeroconf
fail; that is logged and the hub runs on without advertising.
"""

import logging
import socket

log = logging.getLogger("smartpark.hub.discovery")


def _addresses():
    """Packed addresses to advertise: those of the host's interfaces (ifaddr, which zeroconf
    brings), IPv4 and global IPv6, loopback only when there is nothing else; else what the
    host name resolves to. A host name mapped to 127.0.1.1 (Debian) must not hide the LAN
    address a node can reach."""
    out = []
    loop = []
    try:
        import ifaddr

        for adapter in ifaddr.get_adapters():
            for ip in adapter.ips:
                if isinstance(ip.ip, str):
                    packed = socket.inet_aton(ip.ip)
                    (loop if ip.ip.startswith("127.") else out).append(packed)
                elif not ip.ip[0].lower().startswith("fe80"):   # link-local needs a scope
                    packed = socket.inet_pton(socket.AF_INET6, ip.ip[0])
                    (loop if ip.ip[0] == "::1" else out).append(packed)
    except Exception:  # noqa: BLE001 - no interface list here: the host name below
        pass
    if not out:
        try:
            for fam, _t, _p, _c, sa in socket.getaddrinfo(socket.gethostname(), None):
                if fam == socket.AF_INET and not sa[0].startswith("127."):
                    out.append(socket.inet_aton(sa[0]))
        except OSError:
            pass
    seen = []
    for a in out or loop or [socket.inet_aton("127.0.0.1")]:
        if a not in seen:
            seen.append(a)
    return seen


class Advertiser:
    def __init__(self, name, coap_port, http_port, version):
        self.name = name
        self.coap_port = coap_port
        self.http_port = http_port
        self.version = version
        self._zc = None
        self._infos = []
        self.error = None

    async def start(self):
        try:
            from zeroconf import IPVersion, ServiceInfo
            from zeroconf.asyncio import AsyncZeroconf

            host = socket.gethostname().split(".")[0] or "smartpark"
            addrs = _addresses()
            self._infos = [
                ServiceInfo("_coap._udp.local.", "%s._coap._udp.local." % self.name,
                            addresses=addrs, port=self.coap_port,
                            properties={"path": "/r", "version": self.version},
                            server="%s.local." % host),
                ServiceInfo("_http._tcp.local.", "%s._http._tcp.local." % self.name,
                            addresses=addrs, port=self.http_port,
                            properties={"path": "/api", "version": self.version},
                            server="%s.local." % host),
            ]
            self._zc = AsyncZeroconf(ip_version=IPVersion.V4Only)   # AAAA records go out too
            for info in self._infos:
                await self._zc.async_register_service(info, allow_name_change=True)
            return True
        except Exception as e:  # noqa: BLE001 - no multicast here: run without advertising
            self.error = "%s: %s" % (type(e).__name__, e)
            log.warning("zeroconf advertising unavailable (%s)", self.error)
            await self.stop()
            return False

    @property
    def active(self):
        return self._zc is not None

    async def stop(self):
        zc, self._zc = self._zc, None
        if zc is None:
            return
        try:
            await zc.async_unregister_all_services()
        except Exception:  # noqa: BLE001 - withdrawal is best effort on the way out
            pass
        try:
            await zc.async_close()
        except Exception:  # noqa: BLE001
            pass
