"""Over-the-air updates through the real hub and a link that drops 30 % of datagrams both ways.

Two unix-port nodes, one always on and one deep-sleeping between reports, run the
firmware of this checkout; the hub's firmware store holds the next version (a bundle
that changes two files), and each node's config asks for it. Both download it over
OSCORE with Block2 through the lossy proxy while they go on reporting, switch, run it on
trial and confirm it once the hub acks a report; the hub shows each node's update state
and result. Every reading either node recorded is stored exactly once (node ledger
against the hub's database), across the switch.

The test is the nodes' supervisor: a run of `micropython main.py` ends with 75 when the
node resets into the new version or (the sleeper) goes to deep sleep, and is started again.
"""

import json
import os
import sys
import time
import urllib.request

import harness
import pytest
from smartpark.hub import firmware

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "firmware"))
from test_ota_node import make_bundle  # noqa: E402

pytestmark = pytest.mark.micropython

NEW = "9.9.9-hub"
CHANGED = ["drivers/bme280.py", "drivers/hcsr04.py"]   # a driver fix
EXIT_RESET = 75
DEADLINE = 240.0   # s, the bound of the whole update under loss


def _view(hub, node):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/api/nodes/%s" % (hub.http_port, node),
                                    timeout=10) as r:
            return json.load(r)
    except OSError:
        return None


def _confirmed(hub, node):
    v = _view(hub, node)
    u = (v or {}).get("update") or {}
    return u.get("running") == NEW and u.get("result") == "success" and u.get("state") == "idle"


def test_nodes_update_through_the_hub_and_a_lossy_link_while_they_report(hub, make_node, tmp_path):
    d = str(tmp_path / "bundle")
    make_bundle(d, version=NEW, changed=CHANGED)
    assert firmware.publish(hub.data, d)[0] == NEW
    proxy = harness.LossyProxy(hub.port, loss=0.3, seed=11)
    try:
        link = "127.0.0.1:%d" % proxy.port
        coap = {"ack_timeout": 0.15, "max_retransmit": 4}
        cfg = harness.node_config("up1", link, coap=coap, watchdog_ms=0,
                                  ota={"blocks_per_wake": 16})
        awake = make_node("up1", cfg)
        cfg = harness.node_config("up2", link, coap=coap, watchdog_ms=0, report_interval=1,
                                  deep_sleep="between_reports", ota={"blocks_per_wake": 16})
        cfg["sensors"] = cfg["sensors"][:1]
        sleeper = make_node("up2", cfg)
        nodes = {"up1": awake, "up2": sleeper}
        for name in nodes:
            hub.put_config(name, {"report_interval": 1, "firmware": NEW})

        runs = {name: [] for name in nodes}
        done = {}   # node -> seconds until its update was confirmed
        t0 = time.monotonic()
        for n in nodes.values():
            n.start()
        while time.monotonic() - t0 < DEADLINE:
            for name, n in nodes.items():
                code = n.proc.poll()
                if code is not None:
                    n.wait(5)
                    runs[name].append(code)
                    assert code == EXIT_RESET, (name, code, n.output()[-3000:])
                    n.start()   # the reset into the new version, or the end of a deep sleep
            for name in nodes:
                if name not in done and _confirmed(hub, name):
                    done[name] = round(time.monotonic() - t0, 1)
            if len(done) == len(nodes):
                break
            time.sleep(0.3)
        for n in nodes.values():
            n.stop()
        for name, n in nodes.items():
            assert _confirmed(hub, name), (name, _view(hub, name), n.output()[-3000:])
        print("confirmed after %r s; proxy passed %r, dropped %r; runs %r" % (
            done, proxy.passed, proxy.dropped, {k: len(v) for k, v in runs.items()}))
        assert proxy.dropped[0] > 0 and proxy.dropped[1] > 0

        for name, n in nodes.items():
            assert n.run(120, SMARTPARK_DRAIN=1) == 0, n.output()[-3000:]
            assert "crash:" not in n.output(), n.output()[-3000:]
            with open(os.path.join(n.flash, "app_b", "version")) as f:
                assert f.read().strip() == NEW
            ledger, unresolved = n.ledger()
            assert not unresolved
            want = len(ledger)
            harness.wait_for(lambda name=name, want=want: len(hub.readings(name)) >= want, 20)
            stored, _extra = harness.check_exactly_once(ledger, hub.readings(name))
            assert stored > 20, (name, stored)
        # the hub kept both sides of the switch: the old version's reports and the new one's
        db = os.path.join(hub.data, "hub.sqlite3")
        fws = {v for _n, s, _t, _k, v in harness.stored_readings(db, "up1") if s == "health.fw"}
        assert NEW in fws and len(fws) >= 2, fws
    finally:
        proxy.close()
