"""Discovery: zeroconf advertising (and withdrawal), CoAP multicast /.well-known/core."""

import os
import socket
import struct

import pytest
from hubutil import HubProc
from smartpark.protocol import coap


def _start(tmp_path, name, extra=()):
    cfg = tmp_path / "hub.toml"
    cfg.write_text('[discovery]\nname = "%s"\n' % name)
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    return HubProc(str(d), config=str(cfg), extra=list(extra), discovery=True)


def test_zeroconf_advertises_and_withdraws(tmp_path):
    zeroconf = pytest.importorskip("zeroconf")
    name = "sp-test-%d" % os.getpid()
    h = _start(tmp_path, name).start()
    try:
        health = h.get("/healthz")[1]
        if not health["zeroconf"]:
            pytest.skip("this host has no multicast for mDNS (the hub runs on without it)")
        zc = zeroconf.Zeroconf()
        try:
            coap_info = zc.get_service_info("_coap._udp.local.", name + "._coap._udp.local.",
                                            timeout=5000)
            http_info = zc.get_service_info("_http._tcp.local.", name + "._http._tcp.local.",
                                            timeout=5000)
        finally:
            zc.close()
        assert coap_info is not None and http_info is not None
        assert coap_info.port == h.coap_port and http_info.port == h.http_port
        assert coap_info.properties[b"path"] == b"/r"
        assert http_info.properties[b"path"] == b"/api"
        assert coap_info.properties[b"version"] == health["version"].encode()
        rc, _ = h.stop()
        assert rc == 0
        zc = zeroconf.Zeroconf()
        try:
            gone = zc.get_service_info("_coap._udp.local.", name + "._coap._udp.local.",
                                       timeout=1500)
        finally:
            zc.close()
        assert gone is None
    finally:
        h.kill()


def test_multicast_well_known_core_rd_discovery(tmp_path):
    h = _start(tmp_path, "sp-mc-%d" % os.getpid())
    h.bind = "::"
    h.start()
    try:
        req = coap.make_request(coap.GET, "/.well-known/core", mid=77, token=b"mc",
                                mtype=coap.NON, query="rt=core.rd*")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, struct.pack("b", 1))
            s.settimeout(3)
            try:
                s.sendto(req.encode(), ("224.0.1.187", h.coap_port))
                data, _ = s.recvfrom(4096)
            except OSError as e:
                pytest.skip("no multicast route to 224.0.1.187 on this host (%s)" % e)
        finally:
            s.close()
        resp = coap.parse(data)
        assert resp.code == coap.CONTENT
        assert b'rt="core.rd"' in resp.payload
        assert b"smartpark.report" not in resp.payload
    finally:
        h.kill()
