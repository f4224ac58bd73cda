"""Finding the hub with config "hub": "auto": RFC 9176 multicast, then the mDNS name, then memory."""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys

import harness
import pytest

pytestmark = pytest.mark.micropython


def _multicast_works():
    """Does a datagram to 224.0.1.187 come back to a member socket on this host?"""
    port = harness.free_udp_port()
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    r.bind(("", port))
    try:
        r.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                     struct.pack("4sl", socket.inet_aton("224.0.1.187"), socket.INADDR_ANY))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"probe", ("224.0.1.187", port))
        s.close()
        r.settimeout(1.0)
        return r.recv(16) == b"probe"
    except OSError:
        return False
    finally:
        r.close()


_IN_NETNS = "SMARTPARK_TEST_NETNS"
_NETNS_SETUP = "ip link set lo up && ip route add 224.0.0.0/4 dev lo && exec \"$@\""


def _run_in_own_netns(test_id):
    """Run one test of this file in a new network namespace where multicast goes over lo.

    The host's routes are not ours to change; a namespace the test makes (and that
    dies with its process) has only `lo`, brought up with a 224.0.0.0/4 route.
    """
    cmd = ["unshare", "-n", "sh", "-c", _NETNS_SETUP, "sh",
           sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           "%s::%s" % (os.path.abspath(__file__), test_id)]
    env = dict(os.environ, **{_IN_NETNS: "1"})
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=180, cwd=harness.ROOT)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, "in its own network namespace:\n" + out[-3000:]
    assert " passed" in out and "skipped" not in out, out[-3000:]


def test_multicast_discovery_finds_the_rd(tmp_path, make_node):
    if not _multicast_works():
        if os.environ.get(_IN_NETNS):
            pytest.fail("no multicast even in the test's own network namespace", pytrace=False)
        can_ns = os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip")
        # not root (or no unshare/ip): skip locally, fail under CI=true
        harness.require(can_ns, "no IPv4 multicast route on this host, and not root "
                                "to make a network namespace with one")
        _run_in_own_netns("test_multicast_discovery_finds_the_rd")
        return
    port = harness.free_udp_port(socket.AF_INET6)
    hub = harness.Hub(tmp_path / "hub", port=port, bind="::", multicast=True).start()
    try:
        cfg = harness.node_config("m1", "auto", hub_port=port, hub_mdns="nonexistent.invalid")
        n = make_node("m1", cfg)
        assert n.run(timeout=60, SMARTPARK_CYCLES=2) == 0, n.output()
        assert "(multicast)" in n.output(), n.output()
        st = n.status()
        assert st["registered"] and st["synced"], (st, n.output())
        assert any(r[0] == "air.temp" for r in hub.readings("m1"))
    finally:
        hub.stop()


def test_mdns_name_then_remembered_hub(tmp_path, make_node):
    # no multicast answer (the hub does not join the group); the name resolves through the
    # host's resolver ("localhost" stands in for smartpark-hub.local), then the node remembers it
    hub = harness.Hub(tmp_path / "hub").start()
    try:
        cfg = harness.node_config("m2", "auto", hub_port=hub.port, hub_mdns="localhost")
        n = make_node("m2", cfg)
        assert n.run(timeout=60, SMARTPARK_CYCLES=1) == 0, n.output()
        assert "hub at 127.0.0.1:%d (mdns)" % hub.port in n.output(), n.output()
        cfg["hub_mdns"] = "nonexistent.invalid"     # the name is gone: memory must do
        with open(os.path.join(n.flash, "config.json"), "w") as f:
            json.dump(cfg, f)
        # a power cut: RTC memory (which keeps the hub across a reset) is gone, flash is not
        os.remove(os.path.join(n.flash, "rtc.mem"))
        before = len(hub.readings("m2"))
        assert n.run(timeout=60, SMARTPARK_CYCLES=1) == 0, n.output()
        assert "hub at 127.0.0.1:%d (remembered)" % hub.port in n.output(), n.output()
        assert len(hub.readings("m2")) > before, n.output()
    finally:
        hub.stop()
