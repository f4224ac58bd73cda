"""A reporting node is SIGKILLed at random moments, many times, and restarted.

Each kill is a reset (RTC memory survives, like an ESP32 watchdog reset).
At the end a final drain empties the outbox, and every reading the node
recorded is in the hub exactly once. Readings written to the outbox just
before a kill but not yet to the ledger may be at the hub without a ledger
line (at most one sample batch per kill).
"""

import random
import time

import harness
import pytest

pytestmark = pytest.mark.micropython


@pytest.mark.slow
def test_node_survives_random_sigkills(hub, make_node):
    rng = random.Random(11)
    cfg = harness.node_config("k1", "127.0.0.1:%d" % hub.port)
    for s in cfg["sensors"]:
        s["interval"] = 0.2       # many outbox writes per second
    n = make_node("k1", cfg)
    kills = 25
    t_end = time.time() + 45
    done = 0
    while done < kills and time.time() < t_end:
        n.start()
        time.sleep(rng.uniform(0.05, 1.2))
        n.kill()
        done += 1
    assert done >= 10
    assert n.run(timeout=60, SMARTPARK_DRAIN=1) == 0, n.output()[-3000:]
    st = n.status()
    assert st["depth"] == 0 and st["dropped"] == 0, st
    assert st["boot"] > done // 2   # kills before the first RTC-memory write do not count a boot
    ledger, unresolved = n.ledger()
    assert unresolved == 0
    recorded, extra = harness.check_exactly_once(ledger, hub.readings("k1"), max_timeless=done + 2,
                                                 extra_ok=done * 8)
    assert recorded > 50
    assert "Traceback" not in n.output()
