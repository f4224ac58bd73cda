"""Discovery: zeroconf advertising (and withdrawal), CoAP multicast /.well-known/core.

Both run in a network namespace of their own (tests/hub/netns.py): hub and client
share a loopback with multicast routed to it, so the result does not depend on the
host's network. Without root (or zeroconf) they skip locally and fail under CI=true.
"""

import json
import os

from hubutil import HubProc, require
from netns import exec_prefix, netns, run_in


def _hub(tmp_path, name, ns):
    cfg = tmp_path / "hub.toml"
    cfg.write_text('[discovery]\nname = "%s"\n' % name)
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    return HubProc(str(d), config=str(cfg), bind="::", discovery=True, wrap=exec_prefix(ns))


_BROWSE = """
import json, sys, urllib.request
import zeroconf
name, http_port = sys.argv[1], int(sys.argv[2])
out = {}
if http_port:
    with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % http_port, timeout=10) as r:
        out["health"] = json.loads(r.read())
zc = zeroconf.Zeroconf()
try:
    for key, typ in (("coap", "_coap._udp.local."), ("http", "_http._tcp.local.")):
        info = zc.get_service_info(typ, name + "." + typ, timeout=int(sys.argv[3]))
        out[key] = None if info is None else {
            "port": info.port,
            "props": {k.decode(): (v or b"").decode() for k, v in info.properties.items()}}
finally:
    zc.close()
print(json.dumps(out))
"""


def _browse(ns, name, http_port, timeout_ms):
    script = "import sys; sys.argv = %r\n" % (["-", name, str(http_port), str(timeout_ms)],)
    return json.loads(run_in(ns, script + _BROWSE).strip().splitlines()[-1])


def test_zeroconf_advertises_and_withdraws(tmp_path):
    try:
        import zeroconf  # noqa: F401 - the client below imports it in the namespace
        have = True
    except ImportError:
        have = False
    require(have, "python-zeroconf is not installed (pip install zeroconf)")
    name = "sp-test-%d" % os.getpid()
    with netns() as ns:
        h = _hub(tmp_path, name, ns).start()
        try:
            seen = _browse(ns, name, h.http_port, 5000)
            assert seen["health"]["zeroconf"] is True
            assert seen["coap"] is not None and seen["http"] is not None
            assert seen["coap"]["port"] == h.coap_port and seen["http"]["port"] == h.http_port
            assert seen["coap"]["props"]["path"] == "/r"
            assert seen["http"]["props"]["path"] == "/api"
            assert seen["coap"]["props"]["version"] == seen["health"]["version"]
            rc, _ = h.stop()
            assert rc == 0
            gone = _browse(ns, name, 0, 1500)
            assert gone["coap"] is None and gone["http"] is None
        finally:
            h.kill()


_MULTICAST = """
import socket, struct, sys
from smartpark.protocol import coap
port = int(sys.argv[1])
req = coap.make_request(coap.GET, "/.well-known/core", mid=77, token=b"mc", mtype=coap.NON,
                        query="rt=core.rd*")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, struct.pack("b", 1))
s.settimeout(5)
s.sendto(req.encode(), ("224.0.1.187", port))
data, _ = s.recvfrom(4096)
print(data.hex())
"""


def test_multicast_well_known_core_rd_discovery(tmp_path):
    from smartpark.protocol import coap

    with netns() as ns:
        h = _hub(tmp_path, "sp-mc-%d" % os.getpid(), ns).start()
        try:
            script = "import sys; sys.argv = ['-', %r]\n" % str(h.coap_port)
            data = bytes.fromhex(run_in(ns, script + _MULTICAST).strip())
        finally:
            h.kill()
    resp = coap.parse(data)
    assert resp.code == coap.CONTENT
    assert b'rt="core.rd"' in resp.payload
    assert b"smartpark.report" not in resp.payload
