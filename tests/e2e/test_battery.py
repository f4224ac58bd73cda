"""A battery node between deep sleeps: what it keeps, what it spares, what it reports."""

import json
import os
import sqlite3
import time
import urllib.request

import harness
import pytest

pytestmark = pytest.mark.micropython

EXIT_DEEPSLEEP = 75


def _registered_at(hub, node):
    """The hub's registration time of `node` (nodes.registered), None when none."""
    con = sqlite3.connect("file:%s?mode=ro" % os.path.join(hub.data, "hub.sqlite3"), uri=True)
    try:
        row = con.execute("SELECT registered FROM nodes WHERE id = ?", (node,)).fetchone()
    finally:
        con.close()
    return row[0] if row else None


def _sleeper(hub, name, **kw):
    cfg = harness.node_config(name, "127.0.0.1:%d" % hub.port, deep_sleep="between_reports",
                              **kw)
    cfg["sensors"] = [{"name": "air", "driver": "bme280", "pins": {"sda": 21, "scl": 22}}]
    return cfg


def test_wakes_within_the_lifetime_do_not_register_again(hub, make_node):
    n = make_node("rd1", _sleeper(hub, "rd1", lifetime=3600))
    seen = []
    for _ in range(4):
        assert n.run(timeout=60) == EXIT_DEEPSLEEP, n.output()
        st = n.status()
        assert st["depth"] == 0, st
        seen.append(harness.wait_for(lambda: _registered_at(hub, "rd1"), 5))
    st = n.status()
    assert st["rd_requests"] == 1, (st, n.output())      # one registration, no refresh
    assert st["discoveries"] == 0
    assert len(set(seen)) == 1 and seen[0], seen           # the hub saw it once
    assert os.path.exists(os.path.join(n.flash, "rd.json"))


def test_refresh_at_half_the_lifetime_and_rediscovery_when_the_hub_is_silent(hub, make_node):
    cfg = _sleeper(hub, "rd2", lifetime=10, coap={"ack_timeout": 0.2, "max_retransmit": 1})
    cfg["hub"] = "auto"
    n = make_node("rd2", cfg)
    with open(os.path.join(n.flash, "hub.addr"), "w") as f:
        f.write("127.0.0.1 %d" % hub.port)   # found by the last resort of discovery
    assert n.run(timeout=60) == EXIT_DEEPSLEEP, n.output()
    st = n.status()
    assert st["discoveries"] == 1 and st["rd_requests"] == 1, (st, n.output())
    assert n.run(timeout=60) == EXIT_DEEPSLEEP, n.output()
    st = n.status()
    assert st["discoveries"] == 1 and st["rd_requests"] == 1, (st, n.output())
    time.sleep(5.2)   # half of the 10 s lifetime later: one refresh, not a registration
    assert n.run(timeout=60) == EXIT_DEEPSLEEP, n.output()
    st = n.status()
    assert st["discoveries"] == 1 and st["rd_requests"] == 2, (st, n.output())
    assert "registering again" not in n.output()
    hub.stop()
    assert n.run(timeout=60) == EXIT_DEEPSLEEP, n.output()   # silence: the hub is lost
    assert n.status()["discoveries"] == 1
    assert n.run(timeout=60) == EXIT_DEEPSLEEP, n.output()   # this wake looks again
    assert n.status()["discoveries"] == 2, n.output()


def _health(hub, node):
    req = urllib.request.Request("http://127.0.0.1:%d/api/nodes/%s" % (hub.http_port, node),
                                 headers={"Authorization": "Bearer " + hub.TOKEN})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["health"]


def test_low_battery_spaces_reports_and_raises_the_health_flag(hub, make_node):
    cfg = _sleeper(hub, "lb1", battery={"low_v": 3.5, "interval_factor": 5})
    cfg["sensors"].append({"name": "bat", "driver": "adc", "bus": "adc", "pins": {"adc": 35}})
    cfg["sim"]["vbat"] = 3.3
    n = make_node("lb1", cfg)
    assert n.run(timeout=60) == EXIT_DEEPSLEEP, n.output()
    with open(os.path.join(n.flash, "deepsleep.flag")) as f:
        slept = int(f.read())
    assert 4000 < slept <= 5000, slept          # 5 x the 1 s interval
    assert "battery 3.3 V: low" in n.output()
    h = harness.wait_for(lambda: "low_battery" in _health(hub, "lb1") and _health(hub, "lb1"), 5)
    assert h["low_battery"] is True and abs(h["vbat"] - 3.3) < 0.01, h
    # charged again (above low_v + 0.1 V): the flag falls and the interval is back
    cfg["sim"]["vbat"] = 3.9
    with open(os.path.join(n.flash, "config.json"), "w") as f:
        json.dump(cfg, f)
    assert n.run(timeout=60) == EXIT_DEEPSLEEP, n.output()
    with open(os.path.join(n.flash, "deepsleep.flag")) as f:
        assert int(f.read()) <= 1000
    h = harness.wait_for(lambda: _health(hub, "lb1").get("low_battery") is False
                         and _health(hub, "lb1"), 5)
    assert h["low_battery"] is False, h
