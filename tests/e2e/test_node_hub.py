"""A real unix-port node (the firmware, simulated parts) against a real `smartpark hub`.

Exactly once is checked against the node's ledger (every reading it wrote to
its outbox) and the hub's SQLite file.
"""

import json
import os
import time
import urllib.error

import harness
import pytest
from smartpark.protocol import report

pytestmark = pytest.mark.micropython


_wait = harness.wait_for


def test_node_reports_every_reading_exactly_once(hub, make_node):
    cfg = harness.node_config("n1", "127.0.0.1:%d" % hub.port)
    cfg["sensors"].append({"name": "bat", "driver": "adc", "bus": "adc", "params": {"kind": "battery"}})
    n = make_node("n1", cfg)
    assert n.run(timeout=60, SMARTPARK_CYCLES=5) == 0, n.output()
    assert n.run(timeout=60, SMARTPARK_DRAIN=1) == 0, n.output()
    st = n.status()
    assert st["depth"] == 0 and st["synced"] and st["dropped"] == 0
    ledger, unresolved = n.ledger()
    assert unresolved == 0
    rows = hub.readings("n1")
    recorded, extra = harness.check_exactly_once(ledger, rows, max_timeless=2)
    names = {r[0] for r in rows}
    assert {"air.temp", "air.press", "air.hum", "bay.occupied", "meter.total", "bat.vbat"} <= names
    # every health key but the radio's RSSI, which the unix port has not got
    want = {report.HEALTH_PREFIX + k for k in report.HEALTH_KEYS if k != "rssi"}
    assert want <= names, sorted(want - names)
    assert recorded >= 5 * 6


def test_readings_before_the_first_sync_get_hub_time(hub, make_node, tmp_path):
    # the RTC is 800 Ms off (a fresh ESP32 counts from 2000); the first readings are
    # stored unsynced and must land at the hub with correct times
    cfg = harness.node_config("n2", "127.0.0.1:%d" % hub.port)
    n = make_node("n2", cfg)
    t0 = time.time()
    assert n.run(timeout=60, SMARTPARK_CYCLES=2) == 0, n.output()
    assert n.run(timeout=60, SMARTPARK_DRAIN=1) == 0, n.output()
    with open(os.path.join(n.flash, "ledger.log")) as f:
        first = f.readline().split()
    assert first[1] == "0", "first reading should be stored before the clock is synced"
    ledger, unresolved = n.ledger()
    assert unresolved == 0
    harness.check_exactly_once(ledger, hub.readings("n2"), max_timeless=2)
    for _name, t in ledger:
        assert t0 - 2 < t < time.time() + 1, t


def test_config_from_hub_is_validated_persisted_applied(hub, make_node):
    n = make_node("n3", harness.node_config("n3", "127.0.0.1:%d" % hub.port))
    n.start()
    assert _wait(lambda: n.status().get("registered"), 30), n.output()
    # the hub refuses a config the firmware would refuse, naming the key (the node's own
    # check of a served config: test_interop.py, with a server that does not check)
    try:
        hub.put_config("n3", {"sensors": [{"name": "lux", "driver": "bh1750", "pins": {"sda": 99}}]})
        raise AssertionError("the hub took a config with pin 99")
    except urllib.error.HTTPError as e:
        assert e.code == 400 and "sensors[0].pins.sda" in e.read().decode(), e
    version = hub.put_config("n3", {"report_interval": 1, "sensors": [
        {"name": "lux", "driver": "bh1750"},
        {"name": "air", "driver": "bme280"}]})["version"]
    assert _wait(lambda: n.status().get("config_version") == version, 30), n.output()
    assert _wait(lambda: any(r[0] == "lux.lux" for r in hub.readings("n3")), 30)
    n.stop()
    with open(os.path.join(n.flash, "config.json")) as f:
        saved = json.load(f)
    assert saved["config_version"] == version and saved["sensors"][0]["name"] == "lux"
    assert saved["node"] == "n3" and saved["ledger"] is True


def test_bad_config_gives_safe_mode_that_reports_health_and_takes_a_new_config(hub, make_node):
    cfg = harness.node_config("n4", "127.0.0.1:%d" % hub.port)
    cfg["sensors"][0]["pins"]["sda"] = "GPIO21"
    n = make_node("n4", cfg)
    n.start()
    assert _wait(lambda: n.status().get("safe"), 30), n.output()
    assert n.status()["error_key"] == "sensors[0].pins.sda"
    assert "sensors[0].pins.sda" in n.output()
    assert _wait(lambda: any(r[0] == "health.uptime" for r in hub.readings("n4")), 30)
    hub.put_config("n4", {"report_interval": 1, "sensors": [{"name": "air", "driver": "bme280"}]})
    assert _wait(lambda: n.status().get("safe") is False, 30), n.output()
    assert _wait(lambda: any(r[0] == "air.temp" for r in hub.readings("n4")), 30), n.output()
    n.stop()


def test_unreadable_config_file_still_reports_health(hub, make_node):
    n = make_node("n5", harness.node_config("n5", "127.0.0.1:%d" % hub.port))
    assert n.run(timeout=60, SMARTPARK_CYCLES=1) == 0, n.output()
    with open(os.path.join(n.flash, "config.json"), "w") as f:
        f.write('{"node": "n5", "hub": "127.0.0.1:%d", "ledger": true, ' % hub.port)  # torn file
    n.start()
    assert _wait(lambda: "config key (file): not valid JSON" in n.output(), 30), n.output()
    before = len(hub.readings("n5"))
    # same node id and hub as before the file broke (remembered in flash)
    assert _wait(lambda: len(hub.readings("n5")) >= before + 6, 30), n.output()   # health
    assert n.proc.poll() is None   # running, not crash-looping
    n.stop()


def test_failing_bus_gives_no_reading_and_a_status_never_a_crash(hub, make_node):
    cfg = harness.node_config("n6", "127.0.0.1:%d" % hub.port,
                              sim={"seed": 5, "fault_rate": 0.4})
    cfg["sensors"].append({"name": "rh", "driver": "sht4x"})
    n = make_node("n6", cfg)
    assert n.run(timeout=60, SMARTPARK_CYCLES=6) == 0, n.output()
    failures = n.status()["failures"]
    assert n.run(timeout=60, SMARTPARK_DRAIN=1) == 0, n.output()
    assert "Traceback" not in n.output()
    ledger, _ = n.ledger()
    harness.check_exactly_once(ledger, hub.readings("n6"), max_timeless=2)
    names = [name for name, _t in ledger]
    assert failures.get("air", 0) + failures.get("rh", 0) > 0, failures
    assert "bay" not in failures        # the pin-based part is not on the failing bus
    # every sampling round of a sensor gave either a reading or a counted failure
    rounds = names.count("bay.occupied")   # written every round, even with nothing in range
    for s, field in (("air", "air.temp"), ("rh", "rh.temp")):
        assert abs(names.count(field) + failures.get(s, 0) - rounds) <= 1, (s, names.count(field),
                                                                           failures, rounds)


@pytest.mark.parametrize("power_cut", [False, True], ids=["reset", "power-cut"])
def test_readings_from_before_any_sync_survive_a_reset(tmp_path, make_node, power_cut):
    """Readings taken while the hub never answered, then a reset (RTC memory kept) or a
    power cut (RTC memory lost): after a reset they reach the hub with true times; after
    a power cut they cannot be placed in time and are dropped and counted, never sent."""
    port = harness.free_udp_port()
    cfg = harness.node_config("s1", "127.0.0.1:%d" % port)
    n = make_node("s1", cfg)
    t0 = time.time()
    n.start()
    time.sleep(3)                       # nobody listens yet: readings pile up unsynced
    n.kill()
    early, unresolved = n.ledger()
    assert early == [] and unresolved > 5      # none could be given a time yet
    if power_cut:
        os.remove(os.path.join(n.flash, "rtc.mem"))
    hub = harness.Hub(tmp_path / "hub", port=port).start()
    hub.provision("s1", n.flash)
    try:
        assert n.run(timeout=60, SMARTPARK_CYCLES=2) == 0, n.output()
        assert n.run(timeout=60, SMARTPARK_DRAIN=1) == 0, n.output()
        st = n.status()
        ledger, still_unresolved = n.ledger()
        rows = hub.readings("s1")
        if power_cut:
            assert still_unresolved == unresolved and st["dropped"] == unresolved, st
            harness.check_exactly_once(ledger, rows, max_timeless=2)
        else:
            assert still_unresolved == 0 and st["dropped"] == 0, st
            harness.check_exactly_once(ledger, rows, max_timeless=2)
            first = min(t for _name, t in ledger)
            assert t0 - 1 < first < t0 + 3, (t0, first)   # the early readings, at their true time
    finally:
        hub.stop()
