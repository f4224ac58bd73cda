"""Field diagnostics end to end: unix-port nodes in trouble, read back from /api/nodes/{node}.

One hub for the module; the nodes of all scenarios run side by side (firmware/diag.py,
docs/diagnostics.md): a sensor unplugged in the simulation, a node that crashed once,
a config from the hub the node refuses, a node that boots into safe mode, and readings
taken before the clock's first sync, marked as estimated.
"""

import csv
import io
import json
import os
import sys
import urllib.request

import harness
import pytest

pytestmark = pytest.mark.micropython

_ROOT = harness.ROOT
_CYCLES = 6


def _get(hub, path):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (hub.http_port, path),
                                 headers={"Authorization": "Bearer " + hub.TOKEN})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def park(tmp_path_factory, micropython_bin, micropython_path):
    """The hub, and the scenarios' nodes after _CYCLES report cycles each."""
    tmp = tmp_path_factory.mktemp("diag")
    toml = tmp / "hub.toml"
    toml.write_text("[metrics]\nper_node = true\n")
    hub = harness.Hub(tmp / "hub", config=toml).start()
    addr = "127.0.0.1:%d" % hub.port
    cfgs = {}
    # a bme280 that never answers on the bus, and one crash (then main.py starts over)
    cfgs["unplugged"] = harness.node_config("unplugged", addr)
    cfgs["unplugged"]["sim"].update(unplugged=["air"], crash_once=True)
    # the hub's config (deep sleep) clashes with the node's own pulse input on GPIO 23,
    # which cannot wake an ESP32: the node refuses it, naming the key
    cfgs["refuser"] = harness.node_config("refuser", addr)
    cfgs["refuser"]["sensors"][2]["pins"] = {"in": 23}
    # an invalid key in config.json: safe mode
    cfgs["safe"] = harness.node_config("safe", addr, health_every=0)
    hub.put_config("refuser", {"deep_sleep": "between_reports"})
    nodes = {}
    try:
        for name, cfg in cfgs.items():
            hub.provision(name, tmp / name)
            nodes[name] = harness.Node(tmp / name, cfg, micropython_bin, micropython_path).start(
                SMARTPARK_CYCLES=_CYCLES)
        for n in nodes.values():
            assert n.wait(90) == 0, n.output()[-3000:]
        views = {name: _get(hub, "/api/nodes/" + name) for name in nodes}
        yield hub, nodes, views
    finally:
        for n in nodes.values():
            n.kill()
        hub.stop()


def test_an_unplugged_sensor_is_named_with_its_error_count(park):
    _hub, nodes, views = park
    d = views["unplugged"]["diagnostics"]
    air = d["sensors"]["air"]
    assert air["status"] == "not_found", (d, nodes["unplugged"].output()[-2000:])
    assert air["errors"] >= 1, d
    assert d["sensors"]["bay"]["status"] == "ok" and d["sensors"]["meter"]["status"] == "ok", d
    assert d["sensor_fault"] == "air:not_found", d
    assert views["unplugged"]["health"]["sensor_fault"] == d["sensor_fault"]
    # a node whose sensors all work says so in the same names
    ok = views["refuser"]["diagnostics"]
    assert ok["sensor_fault"] is None and ok["sensors"]["air"] == {"status": "ok", "errors": 0}, ok


def test_a_crash_is_reported_after_the_restart(park):
    _hub, nodes, views = park
    out = nodes["unplugged"].output()
    assert "simulated fault" in out, out[-2000:]
    d = views["unplugged"]["diagnostics"]
    assert d["crash"] is not None and d["crash"].startswith("RuntimeError board.py:"), d
    assert d["reset"] is not None, d


def test_a_config_the_node_refuses_is_shown_with_key_and_reason(park):
    _hub, nodes, views = park
    v = views["refuser"]
    d = v["diagnostics"]
    assert v["config_version"] == 1
    assert d["config"]["applied"] == 0, d
    rejected = d["config"]["rejected"]
    assert rejected is not None and rejected.startswith("1 sensors[2].pins.in: "), d
    assert "wake the ESP32" in rejected, rejected
    assert "cfg from hub rejected" in nodes["refuser"].output()


def test_a_node_in_safe_mode_names_the_bad_key(park):
    _hub, nodes, views = park
    v = views["safe"]
    d = v["diagnostics"]
    assert d["safe_mode"] == {"active": True, "key": "health_every"}, (
        d, nodes["safe"].output()[-2000:])
    assert d["sensors"] == {} and d["sensor_fault"] is None, d   # safe mode runs no sensors
    ok = views["refuser"]["diagnostics"]["safe_mode"]
    assert ok == {"active": False, "key": None}, ok


def test_readings_before_the_first_sync_are_counted_as_estimated(park):
    _hub, _nodes, views = park
    for name in ("unplugged", "refuser", "safe"):
        d = views[name]["diagnostics"]
        # the first cycle's readings were taken before the hub gave the time
        assert d["estimated"] >= 1, (name, d)
        assert d["clock"]["synced"] is True, (name, d)
        assert views[name]["health"]["clock_unsynced"] == 0


def test_the_hub_stores_which_readings_had_an_estimated_time(park):
    """Each node's first cycle ran before the hub gave it the time: those readings come
    back from /api/series with "est": true (and "true" in the CSV export), the later ones
    without; in every series the estimated ones come first."""
    hub, _nodes, views = park
    flagged = 0
    for sensor in _sensors(hub, "refuser"):
        path = "/api/series/refuser/%s?from=0&limit=1000" % sensor
        points = _get(hub, path)["points"]
        marks = [p.get("est", False) for p in points]
        assert all(m is True or m is False for m in marks), points[:3]
        n = marks.count(True)
        assert marks == [True] * n + [False] * (len(marks) - n), (sensor, marks)
        req = urllib.request.Request("http://127.0.0.1:%d%s&format=csv" % (hub.http_port, path),
                                     headers={"Authorization": "Bearer " + hub.TOKEN})
        with urllib.request.urlopen(req, timeout=10) as r:
            rows = list(csv.reader(io.StringIO(r.read().decode())))
        assert rows[0] == ["time", "iso_time", "value", "estimated"], rows[0]
        assert [row[3] == "true" for row in rows[1:]] == marks, (sensor, rows)
        flagged += n
    assert flagged >= 1, "no reading of refuser came back marked as estimated"
    assert views["refuser"]["diagnostics"]["estimated"] >= 1


def _sensors(hub, node):
    return sorted(x["sensor"] for x in _get(hub, "/api/latest?node=" + node))


def test_per_node_gauges_on_metrics(park):
    hub, _nodes, views = park
    req = urllib.request.Request("http://127.0.0.1:%d/metrics" % hub.http_port,
                                 headers={"Authorization": "Bearer " + hub.TOKEN})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    lines = dict(ln.rsplit(" ", 1) for ln in text.splitlines() if ln.startswith("smartpark_node_"))
    errors = views["unplugged"]["diagnostics"]["sensors"]["air"]["errors"]
    assert float(lines['smartpark_node_sensor_errors{node="unplugged"}']) == errors, lines
    assert float(lines['smartpark_node_sensor_errors{node="refuser"}']) == 0, lines
    for node in ("unplugged", "refuser", "safe"):
        assert float(lines['smartpark_node_outbox_depth{node="%s"}' % node]) == \
            views[node]["health"]["outbox"], lines
    assert "# TYPE smartpark_node_battery_volts gauge" in text   # no node here reports one


def test_the_estimated_marker_is_senml_the_hub_reads():
    """pack.build's marker: a text label (RFC 8428 section 4.4 extension, not must-understand),
    carried through by the reference decoder and taken by the hub's decoder."""
    sys.path.insert(0, os.path.join(_ROOT, "firmware"))
    try:
        import pack
    finally:
        sys.path.remove(os.path.join(_ROOT, "firmware"))
    from smartpark.hub import codec
    from smartpark.protocol import senml
    items = [(1_700_000_000_000, "air.temp", "Cel", "v", 21.5),
             (1_700_000_000_500, "air.rh", "%RH", "v", 40.0)]
    plain = bytes(pack.build("n1", items))
    est = bytes(pack.build("n1", items, est=True))
    assert len(est) - len(plain) == 2 * len(pack.ESTIMATED)
    recs = senml.decode(est, "cbor")
    assert [r.get("est") for r in recs] == [True, True]
    assert all("est" not in r for r in senml.decode(plain, "cbor"))
    for use_fast in (True, False):   # the hub's decoders take the marked pack as the plain one
        got = codec.Decoder(use_fast).decode([(est, codec.CT_SENML_CBOR),
                                              (plain, codec.CT_SENML_CBOR)], 0)
        assert len(got[0]) == 2 and [r[:7] for r in got[0]] == [r[:7] for r in got[1]], got
        assert [r[7] for r in got[0]] == [1, 1] and [r[7] for r in got[1]] == [None, None], got
