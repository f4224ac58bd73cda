"""Input the hub must refuse at its edges (hub/rules.py): absurd reading times, node ids
that are not one path segment, bad RD ep/lt, bad node configs; and sum-only readings
served back through /latest (CoAP GET and Observe)."""

import asyncio
import os
import sys
import time

import aiocoap
import cbor2
import pytest
from hubutil import ROOT, T0, coap_post, require, run, senml_cbor
from smartpark.hub.rules import config_error
from smartpark.protocol import senml
from smartpark.protocol.report import decode_ack


def _post_all(h, payloads, cf=112):
    async def go():
        ctx = await aiocoap.Context.create_client_context()
        try:
            return [await coap_post(ctx, h.coap + "/r", p, cf) for p in payloads]
        finally:
            await ctx.shutdown()

    return run(go())


def _pack(node, records):
    """records: list of dicts with int SenML-CBOR keys; bn on the first."""
    records = [dict(r) for r in records]
    records[0][-2] = node + "/"
    return cbor2.dumps(records)


def test_absurd_times_get_4_00_and_do_not_poison_the_series(shared_hub):
    h = shared_hub
    node = "skew-" + h.path
    before = h.metric("smartpark_errors_total", kind="time")
    now = time.time()
    bad = [
        _pack(node, [{0: "temp", 2: 1.0, 6: 1e300}]),
        _pack(node, [{0: "temp", 2: 2.0, 6: now + 2 * 86400}]),
        _pack(node, [{0: "temp", 2: 3.0, 6: 946684799.0}]),  # 1999-12-31T23:59:59Z
        # a good record and a bad one: the whole pack is refused, nothing stored
        _pack(node, [{0: "temp", 2: 4.0, 6: T0}, {0: "temp", 2: 5.0, 6: now + 1e9}]),
    ]
    responses = _post_all(h, bad)
    for r in responses:
        assert r.code == aiocoap.BAD_REQUEST, r
    texts = [r.payload.decode() for r in responses]
    assert "record 0" in texts[0] and "ahead of the hub's clock" in texts[0]
    assert "record 0" in texts[1] and "ahead" in texts[1]
    assert "record 0" in texts[2] and "before 2000-01-01" in texts[2]
    assert "record 1" in texts[3]
    assert h.metric("smartpark_errors_total", kind="time") == before + 4
    assert h.get("/api/nodes/" + node)[0] == 404  # nothing of it was stored

    # readings at sane times are stored; the latest is the newest of them
    (ok,) = _post_all(h, [_pack(node, [{0: "temp", 2: 4.0, 6: T0},
                                      {0: "temp", 2: 6.0, 6: now + 3600}])])
    assert ok.code == aiocoap.CHANGED
    assert decode_ack(ok.payload)["stored"] == 2  # the T0 record was not kept from the 4.00
    latest = [x for x in h.get("/api/latest")[1] if x["node"] == node]
    assert [(x["time"], x["value"]) for x in latest] == [(now + 3600, 6.0)]


def test_node_id_with_slash_is_refused(shared_hub):
    h = shared_hub
    before = h.metric("smartpark_errors_total", kind="node_id")
    r1, r2, r3 = _post_all(h, [
        senml_cbor("a/b", [("temp", 1.0, 0)]),
        _pack("x" * 65, [{0: "temp", 2: 1.0, 6: T0}]),
        senml_cbor("ok-" + h.path, [("temp", 1.0, 0)]),
    ])
    assert r1.code == aiocoap.BAD_REQUEST and "node id 'a/b'" in r1.payload.decode()
    assert r2.code == aiocoap.BAD_REQUEST and "longer than 64" in r2.payload.decode()
    assert r3.code == aiocoap.CHANGED
    assert h.metric("smartpark_errors_total", kind="node_id") == before + 2
    assert all(n["id"] not in ("a/b", "a") for n in h.get("/api/nodes")[1])
    # a plain RFC 8428 name (urn, split at the last ':') is still a node
    (r4,) = _post_all(h, [cbor2.dumps([{0: "urn:dev:mac:0024befffe80%s:temp" % h.path[:2].encode().hex(),
                                        2: 20.0, 6: T0}])])
    assert r4.code == aiocoap.CHANGED


def test_sum_only_reading_served_by_latest_and_observe(shared_hub):
    h = shared_hub
    node = "sum-" + h.path

    async def go():
        ctx = await aiocoap.Context.create_client_context()
        try:
            r = await coap_post(ctx, h.coap + "/r", _pack(node, [{0: "energy", 5: 12.5, 6: T0}]),
                                112)
            assert r.code == aiocoap.CHANGED, r
            get = await ctx.request(aiocoap.Message(
                code=aiocoap.GET, uri=h.coap + "/latest/%s/energy" % node)).response
            req = aiocoap.Message(code=aiocoap.GET, uri=h.coap + "/latest/%s/energy" % node,
                                  observe=0)
            pr = ctx.request(req)
            first = await pr.response
            it = pr.observation.__aiter__()
            r = await coap_post(ctx, h.coap + "/r",
                                _pack(node, [{0: "energy", 5: 13.75, 6: T0 + 60}]), 112)
            assert r.code == aiocoap.CHANGED, r
            note = await asyncio.wait_for(it.__anext__(), 10)
            pr.observation.cancel()
            return get, first, note
        finally:
            await ctx.shutdown()

    get, first, note = run(go())
    assert get.code == aiocoap.CONTENT, get.payload
    want = [{"n": node + "/energy", "t": T0, "s": 12.5}]
    assert senml.resolve(senml.decode(get.payload, "cbor")) == want
    assert senml.resolve(senml.decode(first.payload, "cbor")) == want
    assert first.opt.observe is not None
    assert senml.resolve(senml.decode(note.payload, "cbor")) == [
        {"n": node + "/energy", "t": T0 + 60, "s": 13.75}]


BAD_EPS = ["", "a/b", "x" * 3000, "-lead", "sp ace"]
BAD_LTS = ["-1", "0", "99999999999999999999999", "4294967296", "1.5", "ten"]


def test_rd_refuses_bad_ep_and_lt(shared_hub):
    h = shared_hub
    ep = "rdv-" + h.path

    async def req(ctx, code, path, payload=b"", cf=None):
        m = aiocoap.Message(code=code, uri=h.coap + path, payload=payload)
        if cf is not None:
            m.opt.content_format = cf
        return await ctx.request(m).response

    async def go():
        ctx = await aiocoap.Context.create_client_context()
        try:
            out = {"ep": [], "lt": [], "upd": []}
            for bad in BAD_EPS:
                m = aiocoap.Message(code=aiocoap.POST, uri=h.coap + "/rd", payload=b"</t>",
                                    content_format=40)
                m.opt.uri_query = ("ep=" + bad, "lt=60")
                out["ep"].append(await ctx.request(m).response)
            for bad in BAD_LTS:
                out["lt"].append(await req(ctx, aiocoap.POST, "/rd?ep=%s&lt=%s" % (ep, bad),
                                           b"</t>", 40))
            good = await req(ctx, aiocoap.POST, "/rd?ep=%s&lt=300" % ep, b"</s/t>", 40)
            out["good"] = good
            loc = "/" + "/".join(good.opt.location_path)
            for bad in BAD_LTS:
                out["upd"].append(await req(ctx, aiocoap.POST, loc + "?lt=" + bad))
            # the node's row is still writable: a report and an update go through
            out["report"] = await coap_post(ctx, h.coap + "/r", senml_cbor(ep, [("t", 1.0, 0)]),
                                            112)
            out["upd_ok"] = await req(ctx, aiocoap.POST, loc + "?lt=4294967295")
            return out
        finally:
            await ctx.shutdown()

    out = run(go())
    for bad, r in zip(BAD_EPS, out["ep"], strict=True):
        assert r.code == aiocoap.BAD_REQUEST, (bad[:20], r)
        assert b"ep" in r.payload
    for bad, r in zip(BAD_LTS, out["lt"], strict=True):
        assert r.code == aiocoap.BAD_REQUEST, (bad, r)
        assert b"lt" in r.payload
    assert out["good"].code == aiocoap.CREATED
    for bad, r in zip(BAD_LTS, out["upd"], strict=True):
        assert r.code == aiocoap.BAD_REQUEST, (bad, r)
    assert out["report"].code == aiocoap.CHANGED
    assert out["upd_ok"].code == aiocoap.CHANGED
    ids = {n["id"] for n in h.get("/api/nodes")[1]}
    assert not ids & {"", "a/b", "x" * 3000, "-lead", "sp ace"}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the registry mirrors aiocoap's RD on the next loop turn
        node = h.get("/api/nodes/" + ep)[1]
        if node["lifetime"] == 4294967295:
            break
        time.sleep(0.05)
    assert node["lifetime"] == 4294967295 and node["registered"] is True


def _nest(n):
    v = 1
    for _ in range(n):
        v = [v]
    return v


def _shared_cases():
    """The one list of good and bad node configs (tests/protocol/cases/case_configschema.py)."""
    cases_dir = os.path.join(ROOT, "tests", "protocol", "cases")
    if cases_dir not in sys.path:
        sys.path.insert(0, cases_dir)
    import case_configschema
    return case_configschema


SHARED = _shared_cases()
# what only the hub checks: its own keys, the nesting limit, and "node" (the node's own)
HUB_BAD_CONFIGS = [
    ({"firmware": 3}, "firmware"),
    ({"sim": {"a": _nest(35)}}, "body"),
    ({"node": "n2"}, "node"),
]
BAD_CONFIGS = SHARED.BAD + HUB_BAD_CONFIGS
GOOD_CONFIGS = SHARED.GOOD + [{"firmware": "2.0.1"}, {"version": 7, "report_interval": 5}]


@pytest.mark.parametrize("doc,key", BAD_CONFIGS)
def test_rules_config_error_names_key(doc, key):
    got, message = config_error(doc)
    assert got == key and (key in message or key == "body"), (got, message)


def test_rules_config_error_accepts_good_configs():
    for doc in GOOD_CONFIGS:
        assert config_error(doc) is None, doc


def test_rules_config_error_messages():
    assert config_error({"report_interval": 0}) == (
        "report_interval", "report_interval must be between 1 and 86400")
    assert config_error({"wifi": {"ssid": ""}}) == (
        "wifi.ssid", "wifi.ssid must be a string of 1-32 characters")
    assert config_error({"hub": "h:99999"}) == ("hub", "hub: port out of range or empty host")
    key, message = config_error({"led": 1})
    assert key == "led" and message.startswith("unknown config key 'led' (known: batch_max, ")


def test_http_config_put_checks_firmware_rules(shared_hub):
    h = shared_hub
    auth = {"Authorization": "Bearer s3cret"}
    for doc, key in BAD_CONFIGS:
        st, body = h.request("PUT", "/api/nodes/cfgv-1/config", doc, headers=auth)
        assert st == 400 and body["parameter"] == key, (doc, body)
    st, body = h.request("PUT", "/api/nodes/a%20b/config", {"report_interval": 5}, headers=auth)
    assert st == 400 and body["parameter"] == "node"
    for doc in GOOD_CONFIGS:
        st, body = h.request("PUT", "/api/nodes/cfgv-1/config", doc, headers=auth)
        assert st == 200, (doc, body)
    # JSON has one number type: an integral float is an integer key's integer
    st, body = h.request("PUT", "/api/nodes/cfgv-1/config",
                         {"batch_max": 20.0, "coap": {"max_retransmit": 2.0},
                          "sensors": [{"name": "t", "driver": "sht4x", "pins": {"sda": 21.0},
                                       "params": {"address": 68.0}}]}, headers=auth)
    assert st == 200, body
    cfg = body["config"]
    assert cfg["batch_max"] == 20 and cfg["coap"]["max_retransmit"] == 2
    assert cfg["sensors"][0]["pins"]["sda"] == 21 and cfg["sensors"][0]["params"]["address"] == 68


def _firmware_validate():
    """firmware/config.py validate() under CPython (its drivers package imports there)."""
    fw = os.path.join(ROOT, "firmware")
    sys.path.insert(0, fw)
    try:
        import config as fwconfig  # firmware/config.py
    except ImportError as e:
        fwconfig = None
        why = str(e)
    finally:
        sys.path.remove(fw)
        sys.modules.pop("config", None)
    require(fwconfig is not None, "firmware/config.py does not import under CPython: %s"
            % (fwconfig is None and why))
    return fwconfig


def test_rules_agree_with_firmware_validate():
    """The hub refuses exactly the configs the node refuses, naming the same key (the node
    checks the whole file: the overlay over a node id; under micropython too, in
    tests/firmware/cases/case_fw_config.py)."""
    fw = _firmware_validate()
    for doc in GOOD_CONFIGS:
        node_doc = {k: v for k, v in doc.items() if k not in ("firmware", "version")}
        fw.validate(SHARED.full(node_doc))  # raises when the hub would send a config nodes refuse
        assert config_error(doc) is None
    for doc, key in SHARED.BAD:
        with pytest.raises(fw.ConfigError) as e:
            fw.validate(SHARED.full(doc))
        assert e.value.key == key == config_error(doc)[0], (doc, e.value.key, key)


def test_openapi_config_schema_agrees():
    """The PUT body's JSON Schema (hub/openapi.py, made from the same tables) accepts the good
    configs and refuses the bad ones, but for unique sensor names, which it cannot say."""
    try:
        import jsonschema_rs
    except ImportError:
        jsonschema_rs = None
    require(jsonschema_rs is not None, "jsonschema_rs (with schemathesis) is not installed")
    from smartpark.hub.openapi import config_schema
    v = jsonschema_rs.validator_for(config_schema())
    for doc in GOOD_CONFIGS:
        assert v.is_valid(doc), doc
    for doc, key in BAD_CONFIGS:
        sensors = doc.get("sensors")
        names = [s.get("name") for s in sensors if isinstance(s, dict)] \
            if isinstance(sensors, list) else []
        if key.endswith(".name") and (len(set(names)) < len(names) or "health" in names):
            continue
        if key == "body":
            continue  # the nesting limit
        assert not v.is_valid(doc), (doc, key)
