"""The upstream HTTP API against a running hub: errors, SSE, metrics, health."""

import json
import os
import socket
import threading

import aiocoap
import pytest
from hubutil import T0, coap_post, require, run, senml_cbor


@pytest.fixture(scope="module")
def seeded(shared_hub):
    async def go():
        ctx = await aiocoap.Context.create_client_context()
        try:
            r = await coap_post(ctx, shared_hub.coap + "/r",
                                senml_cbor("api-1", [("temp", 20.0, 0, "Cel"),
                                                     ("health.vbat", 3.7, 0, "V"),
                                                     ("health.rssi", -61, 0)]), 112)
            assert r.code.is_successful()
        finally:
            await ctx.shutdown()

    run(go())
    return shared_hub


@pytest.mark.parametrize("query,param", [
    ("from=abc", "from"),
    ("to=yesterday", "to"),
    ("from=nan", "from"),
    ("window=5m", "window"),
    ("limit=0", "limit"),
    ("limit=x", "limit"),
])
def test_bad_parameters_get_400_naming_them(seeded, query, param):
    status, body = seeded.get("/api/series/api-1/temp?" + query)
    assert status == 400
    assert body["parameter"] == param
    assert param in body["error"]


def test_empty_range_is_200_without_points(seeded):
    status, body = seeded.get("/api/series/api-1/temp?from=%r&to=%r" % (T0 + 5, T0))
    assert status == 200 and body["points"] == []


def test_unknown_node_and_series_are_404(seeded):
    status, body = seeded.get("/api/nodes/nope")
    assert status == 404 and body["node"] == "nope"
    assert seeded.get("/api/series/nope/temp")[0] == 404
    status, body = seeded.get("/api/series/api-1/nope")
    assert status == 404 and body["sensor"] == "nope"
    assert seeded.get("/api/nodes/nope/config")[0] == 404


def test_node_health_and_sensors(seeded):
    status, node = seeded.get("/api/nodes/api-1")
    assert status == 200
    assert node["health"] == {"vbat": 3.7, "rssi": -61}
    assert node["sensors"] == ["temp"]
    assert set(node) >= {"id", "online", "last_seen", "firmware", "health", "sensors"}
    nodes = seeded.get("/api/nodes")[1]
    assert any(n["id"] == "api-1" for n in nodes)


def test_latest_filter_and_shape(seeded):
    status, rows = seeded.get("/api/latest?node=api-1")
    assert status == 200
    assert {(r["sensor"], r["value"], r["unit"]) for r in rows} == {
        ("temp", 20.0, "Cel"), ("health.vbat", 3.7, "V"), ("health.rssi", -61, None)}
    assert all(r["time"] == T0 for r in rows)


def test_healthz_and_metrics(seeded):
    status, body = seeded.get("/healthz")
    assert status == 200 and body["status"] == "ok"
    # SenML-CBOR decoding and rollups come from smartpark.fast's selector
    # compiled unless the run asked for the pure twins (SMARTPARK_PUREPYTHON=1)
    if os.environ.get("SMARTPARK_PUREPYTHON") == "1":
        assert body["decoder"] == "fast-pure"
    else:
        require(body["decoder"] == "fast-compiled",
                "hub decodes with %r, not the compiled fast/ twin (build it: .venv/bin/python "
                "setup.py build_ext --inplace)" % body["decoder"])
    assert body["rollups"] is True
    status, text = seeded.get("/metrics")
    assert status == 200
    for name in ("smartpark_messages_total", "smartpark_readings_stored_total",
                 "smartpark_reports_duplicate_total", "smartpark_errors_total",
                 "smartpark_ingest_latency_seconds_bucket", "smartpark_store_queue_depth"):
        assert name in text
    # every sample line is "name{labels} value"
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            float(value)
            assert key.split("{")[0].startswith("smartpark_")
    assert seeded.metric("smartpark_readings_stored_total") >= 3
    # memory an operator watches: the process, and of it what SQLite's caches hold
    rss = seeded.metric("smartpark_process_rss_bytes")
    assert 10 << 20 < rss < 4 << 30
    if os.environ.get("SMARTPARK_PUREPYTHON") != "1":
        assert 0 < seeded.metric("smartpark_sqlite_memory_bytes") < rss


def _sse_reader(port, path, out, ready, until):
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n" % path).encode())
    buf = b""
    try:
        while not all(u in buf for u in until):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
            if b"smartpark hub" in buf:
                ready.set()
    except OSError:
        pass
    finally:
        s.close()
        ready.set()
        out.append(buf)


def test_sse_streams_readings_and_registrations(seeded):
    h = seeded
    out = []
    ready = threading.Event()
    t = threading.Thread(target=_sse_reader, args=(h.http_port, "/api/events", out, ready,
                                                    (b"event: registration", b"event: reading")))
    t.start()
    assert ready.wait(15)

    async def go():
        ctx = await aiocoap.Context.create_client_context()
        try:
            await coap_post(ctx, h.coap + "/r", senml_cbor("sse-1", [("lux", 99.0, 0, "lx")]),
                            112)
            m = aiocoap.Message(code=aiocoap.POST, uri=h.coap + "/rd?ep=sse-2&lt=60",
                                payload=b"</s/x>", content_format=40)
            await ctx.request(m).response
        finally:
            await ctx.shutdown()

    run(go())
    t.join(20)
    text = out[0].decode("utf-8", "replace")
    assert "text/event-stream" in text
    events = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line
                     and not line.startswith(":") and line.split(": ", 1)[0] in ("event", "data"))
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    assert ("reading", {"node": "sse-1", "sensor": "lux", "unit": "lx", "time": T0,
                        "value": 99.0}) in events
    assert any(k == "registration" and d["node"] == "sse-2" for k, d in events)
    assert any(k == "node" and d == {"node": "sse-1", "online": True} for k, d in events)


def test_sse_bad_type_is_400(seeded):
    status, body = seeded.get("/api/events?types=reading,bogus")
    assert status == 400 and body["parameter"] == "types"


def test_writes_disabled_without_token(hub_factory):
    h = hub_factory()
    status, body = h.request("PUT", "/api/nodes/x/config", {"report_interval": 5},
                             {"Authorization": "Bearer anything"})
    assert status == 403 and "token" in body["error"]
