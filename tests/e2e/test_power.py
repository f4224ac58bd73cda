"""Deep sleep between reports (unix port: exit 75 and start again) and the watchdog feed."""

import time

import harness
import pytest

pytestmark = pytest.mark.micropython

EXIT_DEEPSLEEP = 75


def test_deep_sleep_wakes_report_and_keep_time(hub, make_node):
    cfg = harness.node_config("d1", "127.0.0.1:%d" % hub.port, deep_sleep="between_reports")
    n = make_node("d1", cfg)
    wakes = 6
    for i in range(wakes):
        assert n.run(timeout=60) == EXIT_DEEPSLEEP, n.output()
        st = n.status()
        assert st["depth"] == 0, st
        if i == 0:
            assert st["reset"] == 1 and st["syncs"] >= 1     # power-on, clock from the hub
        else:
            assert st["reset"] == 4, st                       # DEEPSLEEP_RESET
        time.sleep(0.2)
    ledger, unresolved = n.ledger()
    assert unresolved == 0
    recorded, extra = harness.check_exactly_once(ledger, hub.readings("d1"), max_timeless=1)
    # one sample of each sensor per wake-up, plus health
    temps = [t for name, t in ledger if name == "air.temp"]
    assert len(temps) == wakes and temps == sorted(temps)
    # the time sync survived deep sleep in RTC memory: only the first wake asked for it
    assert extra <= 1


def test_deep_sleep_gives_co2_by_single_shot(hub, make_node):
    # periodic mode's first sample comes 5 s after its start: a wake-up would never see it
    cfg = harness.node_config("d2", "127.0.0.1:%d" % hub.port, deep_sleep="between_reports")
    cfg["sensors"] = [{"name": "co2", "driver": "scd4x", "pins": {"sda": 21, "scl": 22}}]
    n = make_node("d2", cfg)
    wakes = 2
    for _ in range(wakes):
        assert n.run(timeout=60) == EXIT_DEEPSLEEP, n.output()
        assert n.status()["depth"] == 0, n.status()
    ledger, unresolved = n.ledger()
    assert unresolved == 0
    harness.check_exactly_once(ledger, hub.readings("d2"), max_timeless=1)
    co2 = [t for name, t in ledger if name == "co2.co2"]
    assert len(co2) == wakes, (ledger, n.output())


def test_watchdog_is_fed_by_the_main_loop(hub, make_node):
    cfg = harness.node_config("w1", "127.0.0.1:%d" % hub.port, watchdog_ms=5000)
    n = make_node("w1", cfg)
    n.start()
    t0 = time.time()
    while time.time() - t0 < 20 and (n.status().get("wdt_feeds") or 0) < 3:
        time.sleep(0.3)
    st = n.status()
    n.stop()
    assert st.get("wdt_feeds", 0) >= 3, st
