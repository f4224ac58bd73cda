"""The hub's CoAP endpoint: one aiocoap context on one UDP port, IPv4 and IPv6.

Scope: build the site (/.well-known/core, /r, /rd + RD function sets, /cfg,
/latest, /fw) behind OSCORE (oscore_site.py), bind it, join the All-CoAP-Nodes groups (224.0.1.187, ff02::fd) on
every interface where the host allows it (failures are logged and
tolerated), and count datagrams aiocoap drops as unparsable.

Binding "::" gives one dual-stack socket (IPv6 with IPv4-mapped addresses),
so CoAP answers on IPv4 and IPv6 with a single port. "0.0.0.0" is honoured,
not widened to "::": aiocoap's udp6 socket is bound to ::ffff:0.0.0.0, so the
hub answers on every IPv4 address and not on IPv6.
"""

import logging
import socket

import aiocoap
from aiocoap.resource import Site, WKCResource

from .firmware import FirmwareIndex, FirmwareResource
from .oscore_site import OscoreSite
from .rd import HubRD
from .resources import ConfigIndex, ConfigResource, LatestIndex, LatestSite, ReportResource

log = logging.getLogger("smartpark.hub.coap")


class _DropCounter(logging.Filter):
    """Counts aiocoap's 'Ignoring unparsable message' records as errors{kind=unparsable}
    and keeps them out of the log (a flood of junk must not flood the log too)."""

    def __init__(self, metrics):
        super().__init__()
        self.metrics = metrics

    def filter(self, record):
        if str(record.msg).startswith("Ignoring unparsable"):
            self.metrics.errors.inc("unparsable")
            return False
        return True


def build_site(pipeline, registry, events, default_config, security, metrics=None,
               data_dir=None):
    """(the site to serve, the /latest resource, the RD). `security`: hub/security.py's
    Security, whose table verifies protected requests and whose mode says which paths
    need OSCORE. `data_dir`: the hub's data directory, whose firmware store /fw serves
    (no /fw without it)."""
    site = Site()
    site.add_resource((".well-known", "core"),
                      WKCResource(site.get_resources_as_linkheader, impl_info=None))
    site.add_resource(("r",), ReportResource(pipeline))
    site.add_resource(("cfg",), ConfigIndex())
    site.add_resource(("cfg",), ConfigResource(registry, default_config))
    if data_dir is not None:
        site.add_resource(("fw",), FirmwareIndex())
        site.add_resource(("fw",), FirmwareResource(data_dir))
    site.add_resource(("latest",), LatestIndex(registry))
    latest = LatestSite(registry, events, getattr(pipeline, "store", None))
    site.add_resource(("latest",), latest)
    rd = HubRD(registry)
    rd.mount(site)
    return OscoreSite(site, security, metrics), latest, rd


def _interfaces():
    try:
        return [name for _idx, name in socket.if_nameindex()]
    except OSError:
        return []


class CoapServer:
    def __init__(self, site, bind, port, multicast, metrics):
        self.site = site
        self.bind = bind
        self.port = port
        self.multicast = multicast
        self.metrics = metrics
        self.context = None
        self.multicast_joined = []

    def _probe_port(self, bind):
        """aiocoap binds with SO_REUSEPORT, so a second hub on the same port would silently
        share the traffic. A plain bind (no REUSEPORT) fails when anyone holds the port."""
        if not bind[1]:
            return
        try:
            infos = socket.getaddrinfo(bind[0], bind[1], socket.AF_INET6, socket.SOCK_DGRAM, 0,
                                       socket.AI_V4MAPPED)
        except socket.gaierror as e:
            raise OSError("CoAP bind address %r: %s" % (bind[0], e)) from None
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            probe.bind(infos[0][4])
        except OSError as e:
            raise OSError(e.errno, "CoAP port %s/udp on %s is not available (%s)"
                          % (bind[1], bind[0], e.strerror)) from None
        finally:
            probe.close()

    async def start(self):
        logging.getLogger("coap-server").addFilter(_DropCounter(self.metrics))
        groups = []
        if self.multicast and self.bind in ("::", "0.0.0.0", ""):
            groups = _interfaces()
        bind = ("::" if self.bind == "" else self.bind, self.port)
        self._probe_port(bind)
        try:
            self.context = await aiocoap.Context.create_server_context(
                self.site, bind=bind, multicast=groups, transports=["udp6"],
                loggername="coap-server")
            self.multicast_joined = groups
        except OSError:
            if not groups:
                raise
            log.warning("multicast join failed; serving unicast only")
            self.context = await aiocoap.Context.create_server_context(
                self.site, bind=bind, transports=["udp6"], loggername="coap-server")
        self.port = self.bound_port() or self.port
        return self

    def bound_port(self):
        """The UDP port actually bound (useful with port 0)."""
        try:
            for ri in self.context.request_interfaces:
                mi = getattr(getattr(ri, "token_interface", None), "message_interface", None)
                mi = getattr(mi, "message_interface", mi)
                tr = getattr(mi, "transport", None) or getattr(mi, "_transport", None)
                if tr is not None:
                    sock = tr.get_extra_info("socket")
                    if sock is not None:
                        return sock.getsockname()[1]
        except Exception:  # noqa: BLE001 - aiocoap internals differ between versions
            return None
        return None

    async def stop(self):
        if self.context is not None:
            await self.context.shutdown()
            self.context = None
