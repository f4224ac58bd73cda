"""Many nodes, a hub outage, and a lossy network: still every reading exactly once.

All bounded (about a minute each) and marked slow.
"""

import time

import harness
import pytest

pytestmark = [pytest.mark.micropython, pytest.mark.slow]


def _drain_all(nodes, timeout=90):
    for n in nodes:
        n.start(SMARTPARK_DRAIN=1)
    for n in nodes:
        assert n.wait(timeout) == 0, n.output()[-2000:]


def test_twenty_nodes_report_exactly_once(hub, make_node):
    nodes = []
    for i in range(20):
        name = "f%02d" % i
        cfg = harness.node_config(name, "127.0.0.1:%d" % hub.port, report_interval=2)
        nodes.append(make_node(name, cfg))
    for n in nodes:
        n.start()
    time.sleep(20)
    for n in nodes:
        n.stop()
    _drain_all(nodes)
    total = 0
    for n in nodes:
        name = n.flash.rsplit("/", 1)[-1]
        ledger, unresolved = n.ledger()
        assert unresolved == 0, name
        assert n.status()["depth"] == 0
        recorded, _ = harness.check_exactly_once(ledger, hub.readings(name), max_timeless=3,
                                                 extra_ok=8)
        assert recorded > 0, name
        total += recorded
    assert total > 20 * 20


def test_hub_stopped_30s_backlog_drains(tmp_path, make_node):
    hub = harness.Hub(tmp_path / "hub").start()
    try:
        nodes = [make_node("o%d" % i, harness.node_config("o%d" % i, "127.0.0.1:%d" % hub.port))
                 for i in range(2)]
        for n in nodes:
            n.start()
        time.sleep(5)
        port = hub.port
        hub.stop()
        before = {n.flash: n.status().get("depth", 0) for n in nodes}
        time.sleep(30)
        depth = {n.flash: n.status().get("depth", 0) for n in nodes}
        for n in nodes:
            assert depth[n.flash] > before[n.flash] + 20, "no backlog built up while the hub was down"
        hub = harness.Hub(tmp_path / "hub", port=port).start()
        # the nodes drain the backlog by themselves while still sampling
        t0 = time.time()
        while time.time() - t0 < 30 and any(n.status().get("depth", 99) > 20 for n in nodes):
            time.sleep(0.5)
        for n in nodes:
            assert n.status()["depth"] <= 20, n.status()
            n.stop()
        _drain_all(nodes)
        for n in nodes:
            name = n.flash.rsplit("/", 1)[-1]
            ledger, unresolved = n.ledger()
            assert unresolved == 0
            assert n.status()["dropped"] == 0
            recorded, _ = harness.check_exactly_once(ledger, hub.readings(name), max_timeless=3,
                                                     extra_ok=8)
            assert recorded > 35 * 5
    finally:
        hub.stop()


def test_thirty_percent_loss_both_ways_exactly_once(hub, make_node):
    proxy = harness.LossyProxy(hub.port, loss=0.3, seed=3)
    try:
        nodes = []
        for i in range(2):
            name = "l%d" % i
            cfg = harness.node_config(name, "127.0.0.1:%d" % proxy.port,
                                      coap={"ack_timeout": 0.1, "max_retransmit": 4})
            nodes.append(make_node(name, cfg))
        for n in nodes:
            n.start()
        time.sleep(25)
        for n in nodes:
            n.stop()
        retx = sum(n.status().get("retx", 0) for n in nodes)   # before the drain run resets it
        _drain_all(nodes, timeout=120)
        assert proxy.dropped[0] > 10 and proxy.dropped[1] > 10
        for n in nodes:
            name = n.flash.rsplit("/", 1)[-1]
            ledger, unresolved = n.ledger()
            assert unresolved == 0
            st = n.status()
            assert st["depth"] == 0 and st["dropped"] == 0, st
            harness.check_exactly_once(ledger, hub.readings(name), max_timeless=10, extra_ok=8)
        assert retx > 0
    finally:
        proxy.close()
