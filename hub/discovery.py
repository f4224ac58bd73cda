"""mDNS/DNS-SD advertising with zeroconf: `_coap._udp` and `_http._tcp`, withdrawn on shutdown.

TXT records: `path` (the report resource for CoAP, the API root for HTTP) and
`version` (the hub's). Hosts without multicast (containers, CI) make zeroconf
fail; that is logged and the hub runs on without advertising.
"""

import logging
import socket

log = logging.getLogger("smartpark.hub.discovery")


def _addresses():
    out = []
    try:
        for fam, _t, _p, _c, sa in socket.getaddrinfo(socket.gethostname(), None):
            if fam == socket.AF_INET and not sa[0].startswith("127."):
                packed = socket.inet_aton(sa[0])
                if packed not in out:
                    out.append(packed)
    except OSError:
        pass
    return out or [socket.inet_aton("127.0.0.1")]


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
            self._zc = AsyncZeroconf(ip_version=IPVersion.V4Only)
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
