"""POST /r from real CoAP peers (aiocoap, libcoap's coap-client), read back over HTTP."""

import asyncio
import subprocess

import aiocoap
import cbor2
import pytest
from hubutil import T0, coap_post, require, run, senml_cbor, senml_json
from smartpark.protocol.report import decode_ack


def test_aiocoap_post_cbor_and_json_read_back(shared_hub):
    h = shared_hub

    async def go():
        ctx = await aiocoap.Context.create_client_context()
        try:
            r1 = await coap_post(ctx, h.coap + "/r", senml_cbor(
                "ing-a", [("temp", 21.5, 0, "Cel"), ("hum", 40.25, 0, "%RH"),
                          ("door", True, 1), ("state", "idle", 2)]), 112)
            r2 = await coap_post(ctx, h.coap + "/r", senml_json(
                "ing-b", [("temp", -3.5, 0, "Cel"), ("temp", -3.0, 60, "Cel")]), 110)
            return r1, r2
        finally:
            await ctx.shutdown()

    r1, r2 = run(go())
    assert str(r1.code) == "2.04 Changed" and r1.opt.content_format == 60
    ack = decode_ack(r1.payload)
    assert ack["stored"] == 4 and ack["duplicates"] == 0
    assert ack["config_version"] == 0 and ack["time"] > T0
    assert decode_ack(r2.payload)["stored"] == 2

    status, series = h.get("/api/series/ing-a/temp?from=0")
    assert status == 200
    assert series == {"node": "ing-a", "sensor": "temp", "unit": "Cel", "window": "raw",
                      "points": [{"time": T0, "value": 21.5}]}
    assert h.get("/api/series/ing-a/door?from=0")[1]["points"] == [{"time": T0 + 1, "value": True}]
    assert h.get("/api/series/ing-a/state?from=0")[1]["points"] == [
        {"time": T0 + 2, "value": "idle"}]
    pts = h.get("/api/series/ing-b/temp?from=0")[1]["points"]
    assert pts == [{"time": T0, "value": -3.5}, {"time": T0 + 60, "value": -3.0}]
    # time range: from inclusive, to exclusive
    pts = h.get("/api/series/ing-b/temp?from=%r&to=%r" % (T0 + 1, T0 + 61))[1]["points"]
    assert pts == [{"time": T0 + 60, "value": -3.0}]

    status, node = h.get("/api/nodes/ing-a")
    assert status == 200
    assert node["id"] == "ing-a" and node["online"] is True
    assert node["sensors"] == ["door", "hum", "state", "temp"]
    assert node["last_seen"] > T0
    latest = [x for x in h.get("/api/latest")[1] if x["node"] == "ing-b"]
    assert latest == [{"node": "ing-b", "sensor": "temp", "unit": "Cel", "time": T0 + 60,
                       "value": -3.0}]


def test_same_pack_twice_new_mid_is_stored_once(shared_hub):
    h = shared_hub
    before = h.metric("smartpark_reports_duplicate_total")
    pack = senml_cbor("dup-1", [("a", 1.0, 0), ("b", 2.0, 0), ("c", 3.0, 0), ("d", 4.0, 0)])

    async def go():
        ctx = await aiocoap.Context.create_client_context()
        try:
            # two separate requests: aiocoap gives each its own message ID and token
            a = await coap_post(ctx, h.coap + "/r", pack, 112)
            b = await coap_post(ctx, h.coap + "/r", pack, 112)
            return a, b
        finally:
            await ctx.shutdown()

    a, b = run(go())
    assert a.mid != b.mid
    assert decode_ack(a.payload)["stored"] == 4
    ack_b = decode_ack(b.payload)
    assert ack_b["stored"] == 0 and ack_b["duplicates"] == 4
    assert h.metric("smartpark_reports_duplicate_total") - before == 1
    for s in "abcd":
        assert len(h.get("/api/series/dup-1/%s?from=0" % s)[1]["points"]) == 1


def test_error_codes_and_counters(shared_hub):
    h = shared_hub
    before = {k: h.metric("smartpark_errors_total", kind=k)
              for k in ("invalid", "content_format", "too_large")}

    async def go():
        ctx = await aiocoap.Context.create_client_context()
        try:
            out = {}
            out["text"] = await coap_post(ctx, h.coap + "/r", b"hello", 0)
            out["none"] = await coap_post(ctx, h.coap + "/r", senml_cbor("err-1", [("x", 1, 0)]),
                                          None)
            out["garbage"] = await coap_post(ctx, h.coap + "/r", b"\xff\xff\x00", 112)
            out["badjson"] = await coap_post(ctx, h.coap + "/r", b"[{\"n\": ", 110)
            out["noname"] = await coap_post(ctx, h.coap + "/r", cbor2.dumps([{2: 1.0}]), 112)
            out["nonode"] = await coap_post(ctx, h.coap + "/r",
                                            cbor2.dumps([{0: "lonely", 2: 1.0}]), 112)
            out["big"] = await coap_post(ctx, h.coap + "/r", senml_cbor(
                "err-2", [("s%d" % i, float(i), i) for i in range(900)]), 112)
            return out
        finally:
            await ctx.shutdown()

    out = run(go())
    assert str(out["text"].code) == "4.15 Unsupported Content-Format" or \
        out["text"].code == aiocoap.numbers.codes.UNSUPPORTED_CONTENT_FORMAT
    assert out["none"].code == aiocoap.numbers.codes.UNSUPPORTED_CONTENT_FORMAT
    for k in ("garbage", "badjson", "noname", "nonode"):
        assert out[k].code == aiocoap.numbers.codes.BAD_REQUEST, k
        assert out[k].payload.startswith(b"invalid pack: "), out[k].payload
        assert len(out[k].payload) <= 120
    assert b"node" in out["nonode"].payload
    assert out["big"].code == aiocoap.numbers.codes.REQUEST_ENTITY_TOO_LARGE
    assert h.metric("smartpark_errors_total", kind="invalid") - before["invalid"] == 4
    assert h.metric("smartpark_errors_total", kind="content_format") - before["content_format"] == 2
    assert h.metric("smartpark_errors_total", kind="too_large") - before["too_large"] == 1
    assert h.get("/api/nodes/err-1")[0] == 404
    assert h.get("/api/nodes/err-2")[0] == 404


def _coap_client(binary, *args, timeout=20):
    return subprocess.run([binary, "-B", "10", *args], capture_output=True, timeout=timeout)


@pytest.mark.coap_client
def test_libcoap_client_post_cbor_and_json(shared_hub, coap_client_bin, tmp_path):
    h = shared_hub
    f1 = tmp_path / "p.cbor"
    f1.write_bytes(senml_cbor("lib-1", [("lux", 812.0, 0, "lx"), ("co2", 455.0, 0, "ppm")]))
    out = tmp_path / "ack.bin"
    r = _coap_client(coap_client_bin, "-m", "post", "-t", "112", "-f", str(f1), "-o", str(out),
                     h.coap + "/r")
    assert r.returncode == 0, r.stderr
    f2 = tmp_path / "p.json"
    f2.write_bytes(senml_json("lib-2", [("noise", 48.5, 0, "dB")]))
    r2 = _coap_client(coap_client_bin, "-m", "post", "-t", "110", "-f", str(f2), h.coap + "/r")
    assert r2.returncode == 0, r2.stderr
    assert h.get("/api/series/lib-1/lux?from=0")[1]["points"] == [{"time": T0, "value": 812.0}]
    assert h.get("/api/series/lib-1/co2?from=0")[1]["unit"] == "ppm"
    assert h.get("/api/series/lib-2/noise?from=0")[1]["points"] == [{"time": T0, "value": 48.5}]
    # coap-client -o writes the 2.04 payload (the CBOR ack) as received
    ack = decode_ack(out.read_bytes())
    assert ack["stored"] == 2 and ack["duplicates"] == 0


@pytest.mark.coap_client
def test_libcoap_client_well_known_core(shared_hub, coap_client_bin):
    r = _coap_client(coap_client_bin, "-m", "get", shared_hub.coap + "/.well-known/core")
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode()
    assert '</r>;ct="112 110";rt="smartpark.report"' in text
    assert '</rd>;ct="40";rt="core.rd"' in text
    assert 'rt="core.rd-lookup-ep"' in text and 'rt="core.rd-lookup-res"' in text
    assert '</cfg>' in text and '</latest>' in text
    r = _coap_client(coap_client_bin, "-m", "get", shared_hub.coap + "/.well-known/core?rt=core.rd*")
    text = r.stdout.decode()
    assert "core.rd" in text and "smartpark.report" not in text


def test_observe_latest_gets_notification(shared_hub):
    h = shared_hub

    async def go():
        ctx = await aiocoap.Context.create_client_context()
        try:
            r = await coap_post(ctx, h.coap + "/r", senml_cbor("obs-1", [("t", 1.0, 0)]), 112)
            assert r.code.is_successful()
            req = aiocoap.Message(code=aiocoap.GET, uri=h.coap + "/latest/obs-1/t", observe=0)
            pr = ctx.request(req)
            first = await pr.response
            assert first.opt.observe is not None
            it = pr.observation.__aiter__()
            r = await coap_post(ctx, h.coap + "/r", senml_cbor("obs-1", [("t", 2.5, 10)]), 112)
            assert r.code.is_successful()
            note = await asyncio.wait_for(it.__anext__(), 10)
            pr.observation.cancel()
            return first, note
        finally:
            await ctx.shutdown()

    first, note = run(go())
    assert first.opt.content_format == 112
    assert cbor2.loads(first.payload) == [{-2: "obs-1/", 0: "t", -3: T0, 2: 1.0}] or \
        _flat(first.payload) == ("obs-1/t", T0, 1.0)
    assert _flat(note.payload) == ("obs-1/t", T0 + 10, 2.5)


def _flat(payload):
    from smartpark.protocol import senml

    (rec,) = senml.resolve(senml.decode(payload, "cbor"))
    return rec["n"], rec["t"], rec["v"]


def test_cfg_etag_and_http_config_put(shared_hub):
    h = shared_hub

    async def get_cfg(ctx, etag=None):
        m = aiocoap.Message(code=aiocoap.GET, uri=h.coap + "/cfg/cfg-1")
        if etag:
            m.opt.etags = [etag]
        return await ctx.request(m).response

    async def go():
        ctx = await aiocoap.Context.create_client_context()
        try:
            await coap_post(ctx, h.coap + "/r", senml_cbor("cfg-1", [("x", 1, 0)]), 112)
            a = await get_cfg(ctx)
            again = await get_cfg(ctx, a.opt.etag)
            status, body = h.request("PUT", "/api/nodes/cfg-1/config", {"report_interval": 30},
                                     {"Authorization": "Bearer s3cret"})
            b = await get_cfg(ctx, a.opt.etag)
            r = await coap_post(ctx, h.coap + "/r", senml_cbor("cfg-1", [("x", 2, 5)]), 112)
            return a, again, (status, body), b, r
        finally:
            await ctx.shutdown()

    a, again, (status, body), b, r = run(go())
    assert a.code == aiocoap.CONTENT and a.opt.content_format == 60 and a.opt.etag
    assert cbor2.loads(a.payload)["version"] == 0
    assert again.code == aiocoap.VALID and again.payload == b""
    assert status == 200 and body["version"] == 1
    assert b.code == aiocoap.CONTENT and b.opt.etag != a.opt.etag
    assert cbor2.loads(b.payload) == {"report_interval": 30, "version": 1}
    assert decode_ack(r.payload)["config_version"] == 1
    assert h.get("/api/nodes/cfg-1")[1]["expected_interval"] == 30
    # writes need the token
    assert h.request("PUT", "/api/nodes/cfg-1/config", {"report_interval": 5})[0] == 401
    assert h.request("PUT", "/api/nodes/cfg-1/config", {"report_interval": 5},
                     {"Authorization": "Bearer wrong"})[0] == 401
    st, err = h.request("PUT", "/api/nodes/cfg-1/config", {"report_interval": -1},
                        {"Authorization": "Bearer s3cret"})
    assert st == 400 and err["parameter"] == "report_interval"


def test_cfg_keeps_hub_only_keys_from_the_node(shared_hub):
    """A config asking for a firmware version: the node learns it from the ack, and /cfg
    serves the rest (the firmware refuses config keys it does not know)."""
    h = shared_hub
    st, _ = h.request("PUT", "/api/nodes/cfg-fw/config",
                      {"report_interval": 20, "firmware": "9.9.9"},
                      {"Authorization": "Bearer s3cret"})
    assert st == 200

    async def go():
        ctx = await aiocoap.Context.create_client_context()
        try:
            r = await coap_post(ctx, h.coap + "/r", senml_cbor("cfg-fw", [("x", 1, 0)]), 112)
            m = aiocoap.Message(code=aiocoap.GET, uri=h.coap + "/cfg/cfg-fw")
            return r, await ctx.request(m).response
        finally:
            await ctx.shutdown()

    r, cfg = run(go())
    assert decode_ack(r.payload)["firmware"] == "9.9.9"
    assert cbor2.loads(cfg.payload) == {"report_interval": 20, "version": 1}


def test_ipv6_loopback_bind(hub_factory):
    import socket

    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.close()
        have_v6 = True
    except OSError:
        have_v6 = False
    require(have_v6, "no IPv6 loopback (::1) on this host")
    h = hub_factory(bind="::1")

    async def go():
        ctx = await aiocoap.Context.create_client_context()
        try:
            return await coap_post(ctx, h.coap + "/r", senml_cbor("v6-1", [("x", 7.0, 0)]), 112)
        finally:
            await ctx.shutdown()

    assert decode_ack(run(go()).payload)["stored"] == 1
    assert h.get("/api/series/v6-1/x?from=0")[1]["points"] == [{"time": T0, "value": 7.0}]


def test_ipv4_any_bind_is_honoured(hub_factory):
    """--coap-bind 0.0.0.0 serves IPv4 only (it used to be widened to "::" silently)."""
    h = hub_factory(bind="0.0.0.0")

    async def go(uri):
        ctx = await aiocoap.Context.create_client_context()
        try:
            return await asyncio.wait_for(
                coap_post(ctx, uri, senml_cbor("v4any-1", [("x", 1.0, 0)]), 112), 10)
        except aiocoap.error.NetworkError as e:
            return e
        finally:
            await ctx.shutdown()

    r4 = run(go("coap://127.0.0.1:%d/r" % h.coap_port))
    assert r4.code == aiocoap.CHANGED
    r6 = run(go("coap://[::1]:%d/r" % h.coap_port))
    assert isinstance(r6, aiocoap.error.NetworkError), r6


def test_wanted_firmware_from_node_config_reaches_the_ack(shared_hub):
    h = shared_hub

    async def post(i):
        ctx = await aiocoap.Context.create_client_context()
        try:
            return await coap_post(ctx, h.coap + "/r", senml_cbor("fw-1", [("x", 1.0, i)]), 112)
        finally:
            await ctx.shutdown()

    assert decode_ack(run(post(0)).payload)["firmware"] is None
    status, _ = h.request("PUT", "/api/nodes/fw-1/config", {"firmware": "2.1.0"},
                          {"Authorization": "Bearer s3cret"})
    assert status == 200
    ack = decode_ack(run(post(1)).payload)
    assert ack["firmware"] == "2.1.0" and ack["config_version"] == 1
