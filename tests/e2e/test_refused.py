"""A pack the hub refuses, end to end: the node drops it, counts it by CoAP code, and the
hub shows the count in /api/nodes/{node} (diagnostics.refused, health.refused).

The refusal is the real firmware's, at a real hub: the hub's report limit
(hub config coap.max_payload) is below one single reading of this node, its
health.config_rejected text (a config from the hub it refuses, as in
test_diagnostics.py). The node halves its packs on 4.13 down to one reading;
a pack of one reading that is still too large is one the hub will never take,
so the node drops it and counts it as "4.13" (firmware/node.py drain,
docs/diagnostics.md). Its other readings, each small enough, keep going in and
are stored, the health.refused reading among them.

A 4.00 is out of the firmware's reach here: the sampler leaves non-finite values
out of its records (firmware/sampler.py), and node and sensor names are SenML-safe
identifiers the hub always splits (protocol/names.py valid_ident, hub/codec.py
split_name).
"""

import json
import re
import urllib.request

import harness
import pytest

pytestmark = pytest.mark.micropython

_NODE = "refusal"
_CYCLES = 6
# bytes: a pack of one ordinary reading (the first of its pack, so with bn and bt) is
# 40-55 bytes; health.config_rejected, up to 120 characters of text, is over 150
_MAX_PAYLOAD = 96
_REFUSED = re.compile(r"hub refused a pack: (\d\.\d\d) (.*) - dropping (\d+)")


def _get(hub, path):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (hub.http_port, path),
                                 headers={"Authorization": "Bearer " + hub.TOKEN})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def _json(hub, path):
    return json.loads(_get(hub, path))


@pytest.fixture(scope="module")
def run(tmp_path_factory, micropython_bin, micropython_path):
    """The hub and the node after _CYCLES report cycles: (hub, node, /api/nodes view)."""
    tmp = tmp_path_factory.mktemp("refused")
    toml = tmp / "hub.toml"
    toml.write_text("[coap]\nmax_payload = %d\n" % _MAX_PAYLOAD)
    hub = harness.Hub(tmp / "hub", config=toml).start()
    node = None
    try:
        cfg = harness.node_config(_NODE, "127.0.0.1:%d" % hub.port)
        # the hub's config (deep sleep) clashes with the pulse input on GPIO 23, which
        # cannot wake an ESP32: the node refuses it and says why in health.config_rejected
        cfg["sensors"][2]["pins"] = {"in": 23}
        hub.put_config(_NODE, {"deep_sleep": "between_reports"})
        hub.provision(_NODE, tmp / _NODE)
        node = harness.Node(tmp / _NODE, cfg, micropython_bin, micropython_path)
        assert node.start(SMARTPARK_CYCLES=_CYCLES).wait(60) == 0, node.output()[-3000:]
        yield hub, node, _json(hub, "/api/nodes/" + _NODE)
    finally:
        if node is not None:
            node.kill()
        hub.stop()


def _refusals(node):
    """[(code, hub's text, readings dropped)] of every pack the node says the hub refused."""
    return [m.groups() for m in _REFUSED.finditer(node.output())]


def test_the_hub_answers_the_oversized_reading_with_4_13(run):
    hub, node, _view = run
    out = node.output()
    assert "cfg from hub rejected" in out, out[-3000:]
    refusals = _refusals(node)
    assert refusals, out[-3000:]
    for code, text, dropped in refusals:
        assert code == "4.13", refusals
        # a pack of one reading: the halving on 4.13 went down to one before giving up
        assert dropped == "1", refusals
        m = re.search(r"report of (\d+) bytes exceeds (\d+)", text)
        assert m and int(m.group(2)) == _MAX_PAYLOAD < int(m.group(1)), refusals
    metrics = _get(hub, "/metrics")
    m = re.search(r'^smartpark_errors_total\{kind="too_large"\} (\S+)$', metrics, re.M)
    # the hub counts every 4.13, the halvings' too
    assert m and float(m.group(1)) >= len(refusals), metrics[-2000:]


def test_the_refusal_is_in_the_nodes_diagnostics(run):
    _hub, node, view = run
    refused = view["diagnostics"]["refused"]
    assert set(refused) == {"4.13"}, (view["diagnostics"], node.output()[-3000:])
    # the hub shows the node's count as of its last health report, at most the node's total
    total = node.status()["refused"]
    assert 1 <= refused["4.13"] <= total == len(_refusals(node)), (refused, total)
    assert view["health"]["refused"] == "4.13:%d" % refused["4.13"], view["health"]


def test_only_the_oversized_reading_was_lost(run):
    """The reading that never fits is the one dropped: the hub never got a config_rejected
    from this node. The node kept reporting: its sensors' readings are stored, some taken
    after the hub first stored a health.refused, that is after the first refusal."""
    hub, node, view = run
    assert view["diagnostics"]["config"]["rejected"] is None, view["diagnostics"]
    assert "config_rejected" not in view["health"], view["health"]
    points = _json(hub, "/api/series/%s/health.refused?from=0&limit=1000" % _NODE)["points"]
    counted = [p for p in points if p["value"]]   # "" while nothing was refused
    assert counted and counted[0]["value"].startswith("4.13:"), points
    t_refused = counted[0]["time"]
    for sensor in ("air.temp", "air.hum", "bay.dist", "meter.total"):
        got = _json(hub, "/api/series/%s/%s?from=0&limit=1000" % (_NODE, sensor))["points"]
        later = [p for p in got if p["time"] > t_refused]
        assert later, (sensor, t_refused, got[-3:], node.output()[-2000:])
    assert node.status()["depth"] == 0, node.status()   # nothing left waiting either
