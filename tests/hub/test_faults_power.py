"""Power loss: SIGKILL of the hub at random points, again and again, under load.

Kills land during start-up (while the mover brings in what the previous kill
left in the journal: the start-up move, its checkpoint), during ingest (group
commits, the journal's clean-up of moved readings) and right after it (the
idle move into `readings`). After every fifth kill the files are read as the
kill left them: no reading is held twice (journal and `readings` together).
At the end, after a clean start and stop, every acknowledged reading is there.
"""

import asyncio
import os
import random
import subprocess
import time

import aiocoap
import pytest
from hubutil import T0, senml_cbor
from smartpark.hub.process import READY, hub_command
from smartpark.hub.store import stored_readings

# 50 with the compiled store (the hub as it is deployed), 12 in the pure-Python pass (the
# suite's time budget); SMARTPARK_POWER_KILLS=N for another count
KILLS = int(os.environ.get("SMARTPARK_POWER_KILLS",
                           "12" if os.environ.get("SMARTPARK_PUREPYTHON") else "50"))


def _ready_port(log, start):
    with open(log, "rb") as f:
        f.seek(start)
        data = f.read()
    i = data.find(READY.encode())
    if i < 0 or data.find(b"\n", i) < 0:
        return None
    fields = dict(p.split("=", 1) for p in data[i:data.find(b"\n", i)].decode().split()[3:]
                  if "=" in p)
    return int(fields["coap"])


async def _load(port, acked, seconds, cycle, senders=8):
    ctx = await aiocoap.Context.create_client_context()
    end = time.monotonic() + seconds

    async def sender(k):
        i = 0
        while time.monotonic() < end:
            node = "pw-%d" % k
            bt = T0 + cycle * 1000 + i * 10
            i += 1
            m = aiocoap.Message(code=aiocoap.POST, uri="coap://127.0.0.1:%d/r" % port,
                                payload=senml_cbor(node, [("s%d" % j, float(i), j)
                                                          for j in range(10)], bt=bt))
            m.opt.content_format = 112
            try:
                r = await asyncio.wait_for(ctx.request(m).response, 2)
            except Exception:  # noqa: BLE001 - no answer: not acknowledged
                continue
            if r.code == aiocoap.CHANGED:
                acked.update((node, "s%d" % j, bt + j) for j in range(10))

    try:
        await asyncio.gather(*(sender(k) for k in range(senders)))
    finally:
        await ctx.shutdown()


def _held(d):
    return [(n, s, t) for n, s, t, _k, _v in stored_readings(os.path.join(d, "hub.sqlite3"))]


@pytest.mark.slow
def test_kills_under_load_lose_nothing_acknowledged(tmp_path):
    d = str(tmp_path / "data")
    os.makedirs(d)
    log = str(tmp_path / "hub.log")
    args = ["--data", d, "--coap-bind", "127.0.0.1", "--coap-port", "0", "--http-bind",
            "127.0.0.1", "--http-port", "0", "--no-zeroconf", "--no-multicast",
            "--security", "off"]
    rnd = random.Random(1234)
    acked = set()
    during_start = after_load = 0
    for cycle in range(KILLS):
        start = os.path.getsize(log) if os.path.exists(log) else 0
        with open(log, "ab") as f:
            proc = subprocess.Popen(hub_command(args), stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        try:
            if cycle % 2 == 1:  # during start-up: the move of what the last kill left
                time.sleep(rnd.uniform(0.05, 0.8))
                during_start += _ready_port(log, start) is None
            else:
                deadline = time.monotonic() + 60
                while (port := _ready_port(log, start)) is None:
                    assert proc.poll() is None, "the hub exited at start after a kill"
                    assert time.monotonic() < deadline, "no ready line"
                    time.sleep(0.02)
                asyncio.run(_load(port, acked, rnd.uniform(0.05, 0.4), cycle))
                time.sleep(rnd.choice((0.0, 0.0, rnd.uniform(0.4, 0.7))))  # the idle move
                after_load += 1
        finally:
            proc.kill()
            proc.wait()
        if cycle % 5 == 4:
            held = _held(d)
            assert len(held) == len(set(held)), "a reading held twice after kill %d" % cycle
    assert during_start >= KILLS // 5 and after_load >= KILLS // 2 and len(acked) > 1000
    start = os.path.getsize(log)
    with open(log, "ab") as f:  # a clean start and stop: everything moved in
        proc = subprocess.Popen(hub_command(args), stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while _ready_port(log, start) is None:
            time.sleep(0.05)
            assert time.monotonic() < deadline
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    held = _held(d)
    assert len(held) == len(set(held))
    missing = acked - set(held)
    assert not missing, "%d acknowledged readings lost, e.g. %s" % (len(missing),
                                                                  sorted(missing)[:3])
    with open(log) as f:
        assert "Traceback" not in f.read()
