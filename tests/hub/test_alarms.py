"""Alarms on a running hub (hub/alarms.py): rules from the TOML file and the API, threshold
hysteresis and duration, scope by tag, offline, battery, a sensor fault, dropped readings, a
failed firmware update, the ack/clear lifecycle, the SSE event, the CoAP Observe notification, the webhook's
retries against a real receiver (503 answers, an answer slower than the timeout), a restart
that neither loses nor doubles an alarm, and the refusals of bad rules.

Readings arrive as a node sends them: SenML-CBOR packs POSTed over CoAP with OSCORE (aiocoap's
client with the node's key from the hub's key store), stamped with the present time. One hub (alarms checked every 0.2 s, nodes offline 1 s after their
last report, a webhook receiver on 127.0.0.1) serves every test but the restart; each test
uses its own nodes.
"""

import asyncio
import json
import os
import threading
import time

import aiocoap
import cbor2
import pytest
from aiohttp import web
from hubutil import HubProc, coap_post, run, senml_cbor
from smartpark.hub import keys

TOKEN = "al-admin"
EXTRA = ["--admin-token", TOKEN, "--security", "oscore"]
# every node of these tests, keyed before the hub starts
NODES = ("th-1", "th-2", "hl-1", "off-1", "lc-1", "sc-1", "ev-1", "wh-1", "wt-1", "rs-1")

RULES = """
[[rule]]
id = "co2-high"
type = "threshold"
sensor = "co2"
above = 1500
clear = 1200
for = 1.0
tag = "meeting"
severity = "critical"

[[rule]]
id = "offline"
type = "offline"
node = "off-*"
severity = "major"

[[rule]]
id = "battery"
type = "battery"
below = 3.3
severity = "minor"

[[rule]]
id = "ota"
type = "ota"
severity = "warning"

[[rule]]
id = "dropped"
type = "dropped"
node = "hl-*"

[[rule]]
id = "sensor-fault"
type = "fault"
node = "hl-*"
"""

PARK = """
[nodes.th-1]
name = "Meeting room 1"
zone = "hq/floor-1/room-1"
tags = ["meeting"]
"""


class Receiver:
    """A webhook receiver (aiohttp on 127.0.0.1, in a thread): answers 503 to the first
    `fail` deliveries of each alarm change of a node named wh-*, the first of a node named
    wt-* only after 3 s (past the hub's webhook_timeout), 200 to everything else."""

    def __init__(self, fail=2):
        self.fail = fail
        self.got = []  # (status answered, body)
        self.port = None
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _serve(self, ready):
        asyncio.set_event_loop(self.loop)

        async def hook(request):
            doc = await request.json()
            a = doc["alarm"]
            key = (a["id"], doc["event"], a["updated"])
            tries = sum(1 for _s, d in self.got
                        if (d["alarm"]["id"], d["event"], d["alarm"]["updated"]) == key)
            if a["node"].startswith("wt-") and tries == 0:  # slower than webhook_timeout
                self.got.append(("slow", doc))
                await asyncio.sleep(3)
                return web.Response(status=200)
            status = 503 if a["node"].startswith("wh-") and tries < self.fail else 200
            self.got.append((status, doc))
            return web.Response(status=status)

        async def start():
            app = web.Application()
            app.router.add_post("/hook", hook)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]

        self.loop.run_until_complete(start())
        ready.set()
        self.loop.run_forever()


@pytest.fixture(scope="module")
def receiver():
    return Receiver()


def write(d, name, text):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def config(d, webhook=""):
    rules = write(d, "alarms.toml", RULES)
    park = write(d, "park.toml", PARK)
    return write(d, "hub.toml", (
        '[alarms]\nfile = "%s"\ncheck_interval = 0.2\nwebhook = "%s"\nwebhook_retries = 3\n'
        'webhook_timeout = 1.0\n'
        '[park]\nfile = "%s"\n[liveness]\nfactor = 1.0\ndefault_interval = 1.0\n'
        'check_interval = 0.2\n') % (rules, webhook, park))


def keyed(d, cfg):
    """A hub with a key for every node in NODES, and the nodes' aiocoap contexts."""
    h = HubProc(d, extra=EXTRA, config=cfg)
    h.ctxdirs, h.secctx = {}, {}
    for n in NODES:
        keys.add(d, n)
        out = os.path.join(d, "..", "%s-ctx-%s" % (os.path.basename(d), n))
        keys.write_aiocoap(out, keys.get(d, n))
        h.ctxdirs[n] = out
    return h


@pytest.fixture(scope="module")
def hub(tmp_path_factory, receiver):
    d = str(tmp_path_factory.mktemp("alhub"))
    h = keyed(d, config(d, "http://127.0.0.1:%d/hook" % receiver.port))
    h.start()
    yield h
    h.kill()


def post(h, node, records):
    """One OSCORE-protected report from `node`, readings stamped now (records: (sensor,
    value[, unit]))."""
    async def go():
        ctx = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
        key = h.coap + "/*"
        sc = h.secctx.get(node)  # one security context per node, kept: it holds the sequence
        if sc is None:
            ctx.client_credentials.load_from_dict({key: {"oscore": {
                "basedir": h.ctxdirs[node]}}})
            h.secctx[node] = ctx.client_credentials[key]
        else:
            ctx.client_credentials[key] = sc
        try:
            r = await coap_post(ctx, h.coap + "/r", senml_cbor(
                node, [(rec[0], rec[1], 0) + tuple(rec[2:]) for rec in records],
                bt=time.time()), 112)
            assert r.code == aiocoap.CHANGED, (r, r.payload)
        finally:
            await ctx.shutdown()

    run(go())


def evaluated(h):
    """Wait until the hub evaluated its rules twice more: once after what was acked so far."""
    n = h.metric("smartpark_alarm_evaluations")
    assert wait_for(lambda: h.metric("smartpark_alarm_evaluations") >= n + 2)


def admin(h, method, path, body=None):
    return h.request(method, path, body, {"Authorization": "Bearer " + TOKEN})


def alarms(h, **q):
    qs = "&".join("%s=%s" % kv for kv in q.items())
    status, body = h.get("/api/alarms" + ("?" + qs if qs else ""))
    assert status == 200
    return body


def wait_for(pred, timeout=15.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


def alarm_of(h, rule, source, **want):
    """The alarm of (rule, source) once it has every field of `want`, else None."""
    def one():
        for a in alarms(h, node=source.split("/")[0]):
            if a["rule"] == rule and a["source"] == source and all(
                    a[k] == v for k, v in want.items()):
                return a
        return None

    return wait_for(one)


def history(h, aid):
    status, body = h.get("/api/alarms/%d/history" % aid)
    assert status == 200
    return [e["event"] for e in body]


def test_threshold_hysteresis_duration_and_scope(hub):
    post(hub, "th-2", [("co2", 1700.0, "ppm")])  # no tag "meeting": out of scope
    t_reading = time.time()
    post(hub, "th-1", [("co2", 1600.0, "ppm")])
    a = alarm_of(hub, "co2-high", "th-1/co2", state="active")
    assert a, alarms(hub)
    assert a["severity"] == "critical" and a["value"] == 1600.0 and not a["acked"]
    assert a["zone"] == "hq/floor-1/room-1" and a["sensor"] == "co2"
    assert a["raised"] - t_reading >= 1.0 - 0.05  # held for its `for` before it raised
    assert [x for x in alarms(hub, node="th-2") if x["rule"] == "co2-high"] == []
    post(hub, "th-1", [("co2", 1300.0, "ppm")])  # between clear and above: stays active
    assert alarm_of(hub, "co2-high", "th-1/co2", value=1300.0, state="active")
    post(hub, "th-1", [("co2", 1100.0, "ppm")])
    c = alarm_of(hub, "co2-high", "th-1/co2", state="cleared")
    assert c["id"] == a["id"] and c["cleared"] >= c["raised"]
    assert history(hub, a["id"]) == ["raised", "updated", "cleared"]
    # filters and the summary
    assert [x["id"] for x in alarms(hub, state="cleared", severity="critical", zone="hq")] \
        == [a["id"]]
    assert alarms(hub, state="active", zone="hq") == []
    status, s = hub.get("/api/alarms/summary")
    assert status == 200 and set(s["active"]) == {"critical", "major", "minor", "warning"}


def test_offline_battery_sensor_fault_dropped_and_failed_update(hub):
    post(hub, "hl-1", [("health.vbat", 3.1, "V"), ("health.dropped", 0),
                       ("health.ota_state", "idle"), ("health.ota_result", "rolled_back"),
                       ("health.sensor_fault", "air:read_error")])
    fault = alarm_of(hub, "sensor-fault", "hl-1", state="active")
    assert fault and fault["value"] == "air:read_error"
    bat = alarm_of(hub, "battery", "hl-1", state="active")
    assert bat and bat["severity"] == "minor" and bat["value"] == 3.1
    ota = alarm_of(hub, "ota", "hl-1", state="active")
    assert ota and ota["value"] == "rolled_back" and "update failed" in ota["message"]
    post(hub, "hl-1", [("health.vbat", 3.6, "V"), ("health.dropped", 5),
                       ("health.ota_result", "success"), ("health.sensor_fault", "")])
    assert alarm_of(hub, "sensor-fault", "hl-1", state="cleared")
    assert alarm_of(hub, "dropped", "hl-1", state="active", value=5)
    assert alarm_of(hub, "battery", "hl-1", state="cleared")
    assert alarm_of(hub, "ota", "hl-1", state="cleared")
    post(hub, "hl-1", [("health.dropped", 5)])
    assert alarm_of(hub, "dropped", "hl-1", state="cleared")
    # offline: one report, then silence (liveness: 1 s here)
    post(hub, "off-1", [("temp", 20.0, "Cel")])
    off = alarm_of(hub, "offline", "off-1", state="active")
    assert off and off["severity"] == "major" and off["sensor"] is None
    post(hub, "off-1", [("temp", 20.5, "Cel")])
    back = alarm_of(hub, "offline", "off-1", state="cleared")
    assert back["id"] == off["id"]
    assert [x for x in alarms(hub, node="hl-1") if x["rule"] == "offline"] == []  # scope


def test_ack_clear_lifecycle(hub):
    status, _ = admin(hub, "POST", "/api/alarm-rules", {
        "id": "temp-high", "type": "threshold", "sensor": "temp", "above": 30, "clear": 28,
        "node": "lc-*", "severity": "warning"})
    assert status == 201
    post(hub, "lc-1", [("temp", 35.0, "Cel")])
    a = alarm_of(hub, "temp-high", "lc-1/temp", state="active")
    assert hub.request("POST", "/api/alarms/%d/ack" % a["id"])[0] == 401  # no token
    status, acked = admin(hub, "POST", "/api/alarms/%d/ack" % a["id"])
    assert status == 200 and acked["acked"] and acked["acked_at"] and acked["state"] == "active"
    status, cleared = admin(hub, "POST", "/api/alarms/%d/clear" % a["id"])
    assert status == 200 and cleared["state"] == "cleared" and cleared["acked"]
    # still above: a cleared alarm stays cleared until the condition went away
    post(hub, "lc-1", [("temp", 36.0, "Cel")])
    evaluated(hub)
    assert alarm_of(hub, "temp-high", "lc-1/temp")["state"] == "cleared"
    post(hub, "lc-1", [("temp", 20.0, "Cel")])
    evaluated(hub)
    post(hub, "lc-1", [("temp", 40.0, "Cel")])
    again = alarm_of(hub, "temp-high", "lc-1/temp", state="active", value=40.0)
    assert again["id"] == a["id"] and not again["acked"] and again["acked_at"] is None
    status, hist = hub.get("/api/alarms/%d/history" % a["id"])
    assert [(e["event"], e["by"]) for e in hist] == [
        ("raised", "rule"), ("acked", "operator"), ("cleared", "operator"), ("raised", "rule")]
    assert [x["id"] for x in alarms(hub, node="lc-1", acked="false")] == [a["id"]]
    assert hub.get("/api/alarms/999999")[0] == 404
    # deleting the rule clears its alarm
    status, _ = admin(hub, "DELETE", "/api/alarm-rules/temp-high")
    assert status == 200
    assert alarm_of(hub, "temp-high", "lc-1/temp", state="cleared")


def test_rules_from_the_file_and_the_api(hub):
    status, rules = hub.get("/api/alarm-rules")
    by_id = {r["id"]: r for r in rules}
    assert by_id["co2-high"]["origin"] == "file" and by_id["co2-high"]["clear"] == 1200
    status, r = admin(hub, "POST", "/api/alarm-rules", {"type": "nodata", "sensor": "temp",
                                                        "for": 3600, "zone": "nowhere"})
    assert status == 201 and r["origin"] == "api" and r["id"].startswith("r")
    status, r2 = admin(hub, "PUT", "/api/alarm-rules/" + r["id"], {
        "type": "nodata", "sensor": "temp", "for": 60, "zone": "nowhere", "severity": "minor"})
    assert status == 200 and r2["for"] == 60 and r2["severity"] == "minor"
    assert hub.get("/api/alarm-rules/" + r["id"])[1]["for"] == 60
    assert admin(hub, "PUT", "/api/alarm-rules/co2-high", {"type": "offline"})[0] == 409
    assert admin(hub, "DELETE", "/api/alarm-rules/co2-high")[0] == 409
    assert admin(hub, "POST", "/api/alarm-rules", dict(r2, id=r["id"]))[0] in (400, 409)
    assert admin(hub, "DELETE", "/api/alarm-rules/" + r["id"])[0] == 200
    assert admin(hub, "DELETE", "/api/alarm-rules/" + r["id"])[0] == 404
    assert hub.request("POST", "/api/alarm-rules", {"type": "offline"})[0] == 401
    # a rule changed so that its scope leaves the node out: its alarm clears
    rule = {"id": "sc", "type": "threshold", "sensor": "temp", "above": 0, "node": "sc-1"}
    assert admin(hub, "POST", "/api/alarm-rules", rule)[0] == 201
    post(hub, "sc-1", [("temp", 5.0, "Cel")])
    a = alarm_of(hub, "sc", "sc-1/temp", state="active")
    assert admin(hub, "PUT", "/api/alarm-rules/sc", dict(rule, node="sc-2"))[0] == 200
    assert alarm_of(hub, "sc", "sc-1/temp", state="cleared")
    assert hub.get("/api/alarms/%d/history" % a["id"])[1][-1]["by"] == "out of the rule's scope"


@pytest.mark.parametrize("body,field", [
    ({"type": "threshold", "sensor": "co2", "above": 1500, "clear": 1600}, "clear"),
    ({"type": "threshold", "sensor": "co2"}, "above"),
    ({"type": "threshold", "sensor": "co2", "above": "high"}, "above"),
    ({"type": "threshold", "sensor": "co2", "above": 1, "for": -1}, "for"),
    ({"type": "rate", "sensor": "temp"}, "above"),
    ({"type": "nodata", "sensor": "temp"}, "for"),
    ({"type": "siren"}, "type"),
    ({"type": "offline", "severity": "fatal"}, "severity"),
    ({"type": "offline", "colour": "red"}, "colour"),
    ({"type": "offline", "id": "a b"}, "id"),
    ({"type": "battery", "below": 3.3, "clear": 3.0}, "clear"),
    ({"type": "hub"}, "condition"),
    ({"type": "hub", "condition": "disk", "node": "n1"}, "node"),
    ([1, 2], "body"),
])
def test_bad_rules_are_refused_naming_the_field(hub, body, field):
    status, err = admin(hub, "POST", "/api/alarm-rules", body)
    assert status == 400, err
    assert err["parameter"] == field and err["error"]


def test_bad_queries_and_ids(hub):
    for q, field in (("state=open", "state"), ("severity=high", "severity"),
                     ("acked=yes", "acked")):
        status, err = hub.get("/api/alarms?" + q)
        assert status == 400 and err["parameter"] == field
    status, err = hub.get("/api/alarms/x1")
    assert status == 400 and err["parameter"] == "id"


def test_sse_and_observe_see_every_change(hub):
    """An SSE client (types=alarm) and a CoAP observer of /alarms both see the raise."""
    got = {}

    async def go():
        import aiohttp

        ctx = await aiocoap.Context.create_client_context()
        obs_req = ctx.request(aiocoap.Message(code=aiocoap.GET, uri=hub.coap + "/alarms",
                                              observe=0))
        first = await obs_req.response
        assert first.code == aiocoap.CONTENT and first.opt.observe is not None
        notes = []

        async def observe():
            async for m in obs_req.observation:
                doc = cbor2.loads(m.payload)
                if any(a["node"] == "ev-1" for a in doc["changed"]):
                    notes.append(doc)
                    return

        async with aiohttp.ClientSession() as s:
            async with s.get(hub.url("/api/events?types=alarm")) as resp:
                await resp.content.readline()  # the greeting comment
                ot = asyncio.ensure_future(observe())
                await asyncio.get_running_loop().run_in_executor(
                    None, post, hub, "ev-1", [("health.vbat", 3.0, "V")])
                while True:
                    line = (await resp.content.readline()).decode()
                    if line.startswith("data: "):
                        doc = json.loads(line[6:])
                        if doc["node"] == "ev-1":
                            got["sse"] = doc
                            break
                await asyncio.wait_for(ot, 15)
        got["coap"] = notes[0]
        obs_req.observation.cancel()
        await ctx.shutdown()

    run(go(), timeout=30)
    assert got["sse"]["rule"] == "battery" and got["sse"]["state"] == "active"
    assert [a["id"] for a in got["coap"]["changed"] if a["node"] == "ev-1"] == [got["sse"]["id"]]
    assert got["sse"]["id"] in got["coap"]["active"]
    assert got["coap"]["summary"]["active"]["minor"] >= 1


def test_webhook_retries_a_failing_receiver(hub, receiver):
    post(hub, "wh-1", [("health.vbat", 2.9, "V")])
    a = alarm_of(hub, "battery", "wh-1", state="active")

    def tries():
        return [s for s, d in receiver.got if d["alarm"]["id"] == a["id"]
                and d["event"] == "raised"]

    assert wait_for(lambda: len(tries()) >= 3)
    assert tries() == [503, 503, 200]


def test_webhook_times_out_a_slow_receiver_and_retries(hub, receiver):
    post(hub, "wt-1", [("health.vbat", 2.9, "V")])
    a = alarm_of(hub, "battery", "wt-1", state="active")

    def tries():
        return [s for s, d in receiver.got if d["alarm"]["id"] == a["id"]
                and d["event"] == "raised"]

    assert wait_for(lambda: len(tries()) >= 2)
    assert tries() == ["slow", 200]


def test_a_restart_neither_loses_nor_doubles_an_alarm(tmp_path):
    d = str(tmp_path / "rs")
    os.makedirs(d)
    h = keyed(d, config(d)).start()
    try:
        post(h, "rs-1", [("health.vbat", 3.0, "V")])
        a = alarm_of(h, "battery", "rs-1", state="active")
        assert a
        h.kill()  # SIGKILL: no clean stop
        h.start()
        status, again = h.get("/api/alarms/%d" % a["id"])
        assert status == 200 and again["state"] == "active" and again["raised"] == a["raised"]
        # evaluated again from the stored reading, then a new one: still the one alarm
        post(h, "rs-1", [("health.vbat", 3.05, "V")])
        assert alarm_of(h, "battery", "rs-1", value=3.05)
        assert history(h, a["id"]) == ["raised", "updated"]
        assert len([x for x in alarms(h, node="rs-1") if x["rule"] == "battery"]) == 1
        assert h.stop()[0] == 0
        h.start()
        assert history(h, a["id"]) == ["raised", "updated"]
    finally:
        h.kill()


def test_bad_rule_file_stops_the_hub_naming_the_key(tmp_path):
    d = str(tmp_path)
    rules = write(d, "alarms.toml", '[[rule]]\nid = "x"\ntype = "threshold"\nsensor = "co2"\n')
    cfg = write(d, "hub.toml", '[alarms]\nfile = "%s"\n' % rules)
    h = HubProc(d, extra=EXTRA, config=cfg)
    with pytest.raises(RuntimeError) as e:
        h.start()
    assert "alarms.file" in str(e.value) and "rule[0].above" in str(e.value)
