"""A wall clock that steps an hour forward and back while the hub runs.

The hub reads wall time through hub/clock.py; its test seam
(SMARTPARK_CLOCK_OFFSET_FILE) adds the number in a file to the system clock,
re-read when the file changes. The monotonic clock is not touched: just as with
a real step. (libfaketime would step time.time() itself, but with a real
monotonic clock Python's time.sleep fails under it with EINVAL.)
"""

import asyncio
import os
import time

import aiocoap
from hubutil import HubProc, senml_cbor
from smartpark.hub.clock import HubClock
from smartpark.protocol.report import decode_ack


def test_steady_time_does_not_jump_with_the_wall_clock(tmp_path):
    off = tmp_path / "offset"
    off.write_text("0")
    c = HubClock(offset_file=str(off))
    before = c.steady()
    w0 = c.wall()
    for offset, step in ((3600, 3600), (0, -3600)):  # an hour forward, then back
        off.write_text(str(offset))
        os.utime(off, ns=(time.time_ns(), time.time_ns() + 1))  # a new mtime, surely
        time.sleep(0.06)  # past the seam's re-read interval
        assert abs(c.wall() - (time.time() + offset)) < 1.0  # timestamps follow the step
        s = c.steady()
        # the decision clock moved on by the elapsed time, not by the step
        assert before <= s < before + 5.0
        assert abs(c.last_step - step) < 10
        before = s
    assert c.steps == 2 and w0 > 0


async def _post(port, node, t):
    ctx = await aiocoap.Context.create_client_context()
    try:
        m = aiocoap.Message(code=aiocoap.POST, uri="coap://127.0.0.1:%d/r" % port,
                            payload=senml_cbor(node, [("temp", 21.5, 0, "Cel")], bt=t))
        m.opt.content_format = 112
        return await ctx.request(m).response
    finally:
        await ctx.shutdown()


def _step(path, seconds):
    with open(path, "w") as f:
        f.write(str(seconds))


def test_an_hour_step_either_way_keeps_nodes_online_and_readings_accepted(tmp_path):
    d = str(tmp_path / "data")
    os.makedirs(d)
    off = str(tmp_path / "offset")
    _step(off, 0)
    os.environ["SMARTPARK_CLOCK_OFFSET_FILE"] = off
    try:
        h = HubProc(d, extra=["--security", "off", "--no-fast-path"]).start()
    finally:
        del os.environ["SMARTPARK_CLOCK_OFFSET_FILE"]
    try:
        r = asyncio.run(_post(h.coap_port, "clk-1", time.time()))
        assert r.code == aiocoap.CHANGED
        assert abs(decode_ack(r.payload)["time"] - time.time()) < 5
        for step, jump in ((3600, 3600), (-3600, -7200)):  # an hour ahead, an hour behind
            _step(off, step)
            # the liveness check runs every second; the clock watch notices the step
            deadline = time.monotonic() + 10
            while h.get("/healthz")[1]["clock"]["steps"] < (1 if step > 0 else 2):
                assert time.monotonic() < deadline, "the step was not noticed"
                time.sleep(0.2)
            time.sleep(1.5)  # a liveness check or two after the step
            node = h.get("/api/nodes/clk-1")[1]
            assert node["online"] is True, "a clock step sent the node offline"
            health = h.get("/healthz")[1]
            assert abs(health["clock"]["last_step"] - jump) < 30
            assert health["status"] == "ok"  # a step is reported, not a fault
            # the node still stamps with the time it had: accepted either way
            r = asyncio.run(_post(h.coap_port, "clk-1", time.time()))
            assert r.code == aiocoap.CHANGED, r.payload
            # and its ack carries the hub's (stepped) wall clock: the node follows it
            assert abs(decode_ack(r.payload)["time"] - (time.time() + step)) < 5
        assert h.metric("smartpark_clock_steps") == 2
    finally:
        rc, log = h.stop()
    assert rc == 0 and log.count("wall clock stepped by") == 2
