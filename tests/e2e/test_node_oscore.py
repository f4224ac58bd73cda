"""A real unix-port node with its OSCORE key against a real `smartpark hub` that requires OSCORE.

The hub requires OSCORE and the node's key comes from its key store the way
`smartpark flash` and `simulate` give it (harness.make_node, tools/provision.py).
Exactly once is checked against the node's ledger and the hub's SQLite file,
across a hub that is killed (it loses its replay windows and asks every node
for an Echo) and started again.
"""

import json
import os
import signal

import harness
import pytest

pytestmark = pytest.mark.micropython


def test_protected_node_exactly_once_across_a_hub_crash(hub, make_node):
    cfg = harness.node_config("s1", "127.0.0.1:%d" % hub.port)
    n = make_node("s1", cfg)     # with its key from the hub's store
    assert os.path.isfile(os.path.join(n.flash, "oscore.json"))
    assert n.run(timeout=60, SMARTPARK_CYCLES=3) == 0, n.output()
    st = n.status()
    assert st["oscore"] and st["registered"] and st["synced"] and st["stored"] > 0, st
    assert st["echoes"] == 0 and st["strays"] == 0, st
    # the hub dies without saving its replay windows and comes back on the same port
    hub.proc.send_signal(signal.SIGKILL)
    hub.proc.wait(10)
    hub.start()
    hub.put_config("s1", {"report_interval": 2})
    assert n.run(timeout=60, SMARTPARK_CYCLES=2) == 0, n.output()
    st = n.status()
    # its first request got a protected 4.01 with an Echo value, the retry went through
    assert st["echoes"] == 1 and st["stored"] > 0 and st["strays"] == 0, (st, n.output())
    # the config came over OSCORE (only the node's own key may read it)
    assert st["config_version"] >= 1, (st, n.output())
    with open(os.path.join(n.flash, "config.json")) as f:
        assert json.load(f)["report_interval"] == 2
    assert n.run(timeout=60, SMARTPARK_DRAIN=1) == 0, n.output()
    assert n.status()["depth"] == 0
    ledger, unresolved = n.ledger()
    assert unresolved == 0
    recorded, _extra = harness.check_exactly_once(ledger, hub.readings("s1"), max_timeless=3)
    assert recorded >= 5 * 3
    out = n.output()
    assert "no oscore.json" not in out and "OSCORE: requests protected" in out
    with open(os.path.join(n.flash, "oscore.json")) as f:
        secret = json.load(f)["secret"]
    assert secret not in out and secret not in open(os.path.join(hub.data, "hub.out")).read()


def test_node_without_a_key_keeps_its_readings_at_an_oscore_hub(hub, make_node):
    # with the host's clock (ntp), so that the node has packs to send without the hub's time
    n = make_node("s2", harness.node_config("s2", "127.0.0.1:%d" % hub.port, ntp=True), key=False)
    assert n.run(timeout=60, SMARTPARK_CYCLES=2) == 0, n.output()
    st = n.status()
    out = n.output()
    # the hub answers 4.01 to plain requests: nothing is stored, nothing dropped or refused
    assert "no oscore.json: plain CoAP" in out and "hub answered 4.01 Unauthorized" in out, out
    assert st["stored"] == 0 and st["refused"] == 0 and st["dropped"] == 0 and st["depth"] > 0, st
    assert hub.readings("s2") == []
