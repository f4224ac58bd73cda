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
        slept = int(f.read().split()[0])
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
        assert int(f.read().split()[0]) <= 1000
    h = harness.wait_for(lambda: _health(hub, "lb1").get("low_battery") is False
                         and _health(hub, "lb1"), 5)
    assert h["low_battery"] is False, h



def _crash_node(hub, make_node, name):
    cfg = _sleeper(hub, name)
    cfg["sim"]["crash_once"] = True     # the simulated board raises once, before the first cycle
    n = make_node(name, cfg)
    with open(os.path.join(n.flash, "crash.log"), "w") as f:
        f.write("".join("OSError old.py:%d an old crash\n" % i for i in range(50)))
    assert n.run(timeout=60) == EXIT_DEEPSLEEP, n.output()   # main.py restarted the node
    return n


def test_crash_log_stays_bounded_and_the_crash_and_reset_cause_reach_the_hub_on_change(hub, make_node):
    n = _crash_node(hub, make_node, "cr1")
    with open(os.path.join(n.flash, "crash.log")) as f:
        text = f.read()
    log = text.splitlines()
    assert len(log) == 4 and len(text) <= 400, log
    assert log[-1].startswith("RuntimeError board.py:") and "simulated fault" in log[-1], log
    # the restart after the crash: the simulated board keeps rtc.mem, as a hard reset would
    assert harness.wait_for(lambda: _health(hub, "cr1").get("reset") == 2, 5)
    for _ in range(2):   # deep sleep: the cause changes once, then stays
        assert n.run(timeout=60) == EXIT_DEEPSLEEP, n.output()
    rows = [s for s, _t in hub.readings("cr1")]
    assert rows.count("health.reset") == 2, rows
    assert harness.wait_for(lambda: _health(hub, "cr1")["reset"] == 4, 5)
    # each crash once, as a text reading (type, file and line): the log's newest at the first
    # boot (old.py), then the simulated fault; none on the later wakes
    assert rows.count("health.crash") == 2, rows
    crash = _health(hub, "cr1")["crash"]
    assert crash.startswith("RuntimeError board.py:") and int(crash.split(":")[1]) > 0, crash


def test_pms5003_is_read_after_its_warm_up_and_sleeps_with_the_node(hub, make_node):
    import sys
    sys.path.insert(0, harness.FIRMWARE)
    from sim.world import World
    cfg = _sleeper(hub, "pm1")
    cfg["sensors"] = [{"name": "pm", "driver": "pms5003", "bus": "uart2", "pins": {"rx": 16, "tx": 17},
                       "params": {"warmup_ms": 1500}}]
    cfg["sim"]["pms_warmup_s"] = 1.5    # the part's frames are off for 1.5 s after a wake-up
    n = make_node("pm1", cfg)
    for _ in range(2):
        t0 = time.time()
        assert n.run(timeout=60) == EXIT_DEEPSLEEP, n.output()
        assert time.time() - t0 > 1.5        # the wake-up lasted the warm-up
    world = World(cfg["sim"]["seed"])
    db = os.path.join(hub.data, "hub.sqlite3")
    pm = [(t, v) for _n, s, t, _k, v in harness.stored_readings(db, "pm1") if s == "pm.pm25"]
    assert len(pm) == 2, pm
    for t, v in pm:   # a settled frame: the world's value, not the warm-up's half of it
        assert abs(v - int(world.pm(t)[1])) <= 1, (v, world.pm(t))


def test_meter_pulses_while_asleep_are_counted(hub, make_node):
    import sys
    sys.path.insert(0, harness.FIRMWARE)
    from sim.world import World
    cfg = _sleeper(hub, "pu1", report_interval=4)
    cfg["sensors"] = [{"name": "meter", "driver": "pulse", "bus": "pin", "pins": {"in": 27},
                       "params": {"per_pulse": 1, "unit": "count"}}]
    cfg["sim"].update(seed=7, pulse_rate=5.0)   # 5 pulses a second (the awake pin counts 10)
    n = make_node("pu1", cfg)
    world = World(7)

    def total():
        with open(os.path.join(n.flash, "pulse.json")) as f:
            return json.load(f)["meter"]

    assert n.run(timeout=60) == EXIT_DEEPSLEEP, n.output()
    ta, va = time.time(), total()
    time.sleep(1.5)
    assert n.run(timeout=60) == EXIT_DEEPSLEEP, n.output()   # woken by pulses: counts, sleeps on
    assert total() > va
    with open(os.path.join(n.flash, "deepsleep.flag")) as f:
        assert int(f.read().split()[0]) < 4000              # the rest of the interval only
    assert n.status()["cycles"] == 1 and n.status().get("rd_requests") == 1   # no report then
    time.sleep(2.6)
    assert n.run(timeout=60) == EXIT_DEEPSLEEP, n.output()   # the report is due: a reading
    tb, vb = time.time(), total()
    want = world.pulses(tb, 0, 5.0) - world.pulses(ta, 0, 5.0)
    assert want > 10 and abs((vb - va) - want) <= 3, (va, vb, want)   # none lost while asleep
    db = os.path.join(hub.data, "hub.sqlite3")
    rows = [t for _n, s, t, _k, _v in harness.stored_readings(db, "pu1") if s == "meter.total"]
    assert len(rows) == 2, rows
