"""Exactly-once, durable ingest: clean restart, SIGKILL mid-stream, rollups across restarts."""

import asyncio
import math
import os
import signal
import sqlite3

import aiocoap
import pytest
from hubutil import T0, coap_post, run, senml_cbor
from smartpark.hub.store import stored_readings
from smartpark.protocol.report import decode_ack


def _db_rows(h):
    conn = sqlite3.connect(h.data_dir + "/hub.sqlite3")
    try:
        return conn.execute(
            "SELECT s.node, s.sensor, r.t, r.val FROM readings r JOIN series s ON s.id = r.series"
        ).fetchall()
    finally:
        conn.close()


def _killed_rows(data_dir):
    """Every reading the killed hub left, from readings AND its journal (acknowledged
    readings wait there until the mover puts them into readings, e.g. at the next start),
    read before any restart: a duplicate in either, or across them, shows here. readings
    alone could never show one (its primary key is (series, t))."""
    return [(nd, sensor, t, val) for nd, sensor, t, _k, val in
            stored_readings(os.path.join(data_dir, "hub.sqlite3"))]


def test_sigterm_restart_keeps_everything(hub_factory):
    h = hub_factory(extra=["--http-token", "tok"])
    vals = [12.0, 14.0, 13.0, 30.0]

    async def feed(hub):
        ctx = await aiocoap.Context.create_client_context()
        try:
            for i, v in enumerate(vals):
                r = await coap_post(ctx, hub.coap + "/r", senml_cbor(
                    "keep-1", [("temp", v, 0, "Cel"), ("health.uptime", 10 + i, 0)],
                    bt=T0 + 10 * i), 112)
                assert r.code.is_successful()
            # far later: closes the 1-minute bucket that holds the four readings
            r = await coap_post(ctx, hub.coap + "/r",
                                senml_cbor("keep-1", [("temp", 1.0, 0, "Cel")], bt=T0 + 3600), 112)
            assert r.code.is_successful()
        finally:
            await ctx.shutdown()

    run(feed(h))
    assert h.request("PUT", "/api/nodes/keep-1/config",
                     {"report_interval": 20, "deep_sleep": "off"},
                     {"Authorization": "Bearer tok"})[0] == 200
    before_nodes = h.get("/api/nodes/keep-1")[1]
    start = math.floor(T0 / 60) * 60
    win = h.get("/api/series/keep-1/temp?from=0&window=1m")[1]
    rc, out = h.stop(signal.SIGTERM)
    assert rc == 0 and "stopped" in out

    h2 = hub_factory(data_dir=h.data_dir)
    assert h2.get("/api/nodes/keep-1/config")[1] == {
        "node": "keep-1", "version": 1, "config": {"report_interval": 20, "deep_sleep": "off"}}
    assert h2.get("/api/nodes/keep-1")[1]["expected_interval"] == 20
    pts = h2.get("/api/series/keep-1/temp?from=0")[1]["points"]
    assert [p["value"] for p in pts] == vals + [1.0]
    node = h2.get("/api/nodes/keep-1")[1]
    assert node["last_seen"] == before_nodes["last_seen"]
    assert node["health"] == {"uptime": 13.0}
    assert node["sensors"] == ["temp"]
    latest = [x for x in h2.get("/api/latest?node=keep-1")[1] if x["sensor"] == "temp"]
    assert latest[0]["time"] == T0 + 3600 and latest[0]["value"] == 1.0
    # rollups: the closed bucket was written before the restart and is still there
    win2 = h2.get("/api/series/keep-1/temp?from=0&window=1m")[1]
    # (the bucket of the last reading closes only by the hub's clock, which may or may
    # not have ticked before either GET; every bucket closed by data must be identical)
    def closed(w):
        return [b for b in w["points"] if b["time"] < T0 + 3000]

    assert closed(win) and closed(win2) == closed(win)
    buckets = {b["time"]: b for b in win2["points"]}
    first = [b for t, b in buckets.items() if t <= T0 < t + 60]
    in_bucket = [v for i, v in enumerate(vals) if start <= T0 + 10 * i < start + 60]
    assert first and first[0]["count"] == len(in_bucket)
    assert first[0]["min"] == min(in_bucket) and first[0]["max"] == max(in_bucket)
    assert abs(first[0]["mean"] - sum(in_bucket) / len(in_bucket)) < 1e-9

    # after the restart, resending the same pack is a duplicate, not a new row
    async def resend():
        ctx = await aiocoap.Context.create_client_context()
        try:
            return await coap_post(ctx, h2.coap + "/r", senml_cbor(
                "keep-1", [("temp", vals[0], 0, "Cel"), ("health.uptime", 10, 0)], bt=T0), 112)
        finally:
            await ctx.shutdown()

    ack = decode_ack(run(resend()).payload)
    assert ack["stored"] == 0 and ack["duplicates"] == 2


def test_sigkill_while_streaming_every_acked_report_is_stored_once(hub_factory):
    # (hub_factory runs this once through aiocoap and once through the fast path)
    h = hub_factory()
    acked = set()
    sent = set()
    n_clients = 8

    async def client(k, stop):
        ctx = await aiocoap.Context.create_client_context()
        i = 0
        try:
            while not stop.is_set() and i < 2000:
                key = (k, i)
                pack = senml_cbor("kill-%d" % k, [("a", float(i), 0), ("b", float(-i), 0),
                                                  ("c", 1.0, 0), ("d", 2.0, 0)],
                                  bt=T0 + i)
                sent.add(key)
                try:
                    r = await asyncio.wait_for(coap_post(ctx, h.coap + "/r", pack, 112), 5)
                except (asyncio.TimeoutError, aiocoap.error.Error, OSError):
                    return
                if r.code.is_successful():
                    ack = decode_ack(r.payload)
                    assert ack["stored"] + ack["duplicates"] == 4
                    acked.add(key)
                i += 1
        finally:
            await ctx.shutdown()

    async def go():
        stop = asyncio.Event()
        tasks = [asyncio.create_task(client(k, stop)) for k in range(n_clients)]
        # let reports flow, then kill the hub without warning while they still do
        while len(acked) < 150:
            await asyncio.sleep(0.02)
        h.proc.send_signal(signal.SIGKILL)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    run(go(), timeout=120)
    h.proc.wait()
    assert len(acked) >= 150

    rows = _killed_rows(h.data_dir)
    assert len(rows) == len(set((n, s, t) for n, s, t, _v in rows)), "duplicate readings"
    h2 = hub_factory(data_dir=h.data_dir)
    # after the restart (which moves what the journal held) the same readings are there, once
    assert sorted(_killed_rows(h2.data_dir)) == sorted(rows)
    stored = {}
    for node, sensor, t, _v in rows:
        stored.setdefault((int(node.split("-")[1]), int(t - T0)), set()).add(sensor)
    for key in acked:
        assert stored.get(key) == {"a", "b", "c", "d"}, "acknowledged report %r lost" % (key,)
    # nothing was stored that no client sent
    assert set(stored) <= sent
    # the hub is usable after the crash: the next report of an acked pack is a duplicate
    k, i = next(iter(acked))

    async def again():
        ctx = await aiocoap.Context.create_client_context()
        try:
            return await coap_post(ctx, h2.coap + "/r", senml_cbor(
                "kill-%d" % k, [("a", float(i), 0), ("b", float(-i), 0), ("c", 1.0, 0),
                                ("d", 2.0, 0)], bt=T0 + i), 112)
        finally:
            await ctx.shutdown()

    assert decode_ack(run(again()).payload)["duplicates"] == 4


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_with_an_open_event_stream_stops_cleanly(hub_factory, sig):
    import socket

    h = hub_factory()
    s = socket.create_connection(("127.0.0.1", h.http_port), timeout=10)
    try:
        s.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"text/event-stream" in s.recv(4096)
        rc, out = h.stop(sig)
        assert rc == 0 and "stopped" in out
    finally:
        s.close()
