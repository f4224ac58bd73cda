"""Figures for firmware/ (benchmarks, not tests; see firmware/README.md#figures).

1. Wire bytes per reading: a typical report (13 sensor readings + 7 health
   readings) packed by firmware/pack.py, as the CoAP datagram the node sends,
   against protocol/senml.encode as SenML-CBOR and as SenML-JSON of the same
   readings (the baselines, same run).
2. On the real unix-port `micropython`, a node (the real firmware, simulated
   parts) against a real `smartpark hub`: heap allocated by one report cycle
   (gc.mem_alloc delta with the collector off) against an idle stretch of the
   same node, and report-cycle time against a bare CoAP POST of the same
   pack by the same client (the baseline).
3. pytest-benchmark timing of pack.build vs senml.encode on CPython.

    .venv/bin/pytest benchmarks/test_firmware_bench.py --benchmark-only -s
"""

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIRMWARE = os.path.join(ROOT, "firmware")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from peers import find_program, require  # noqa: E402  (the suite's peer lookup)

sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, FIRMWARE)
import harness  # noqa: E402
import pack  # noqa: E402
from smartpark.protocol import coap, senml  # noqa: E402

T0 = 1763979000123
SENSORS = [
    ("air.temp", "Cel", 21.37), ("air.press", "Pa", 101325.2), ("air.hum", "%RH", 48.5),
    ("co2.co2", "ppm", 612), ("co2.temp", "Cel", 22.1), ("co2.hum", "%RH", 45.2),
    ("lux.lux", "lx", 830.5), ("hall.motion", "", 3), ("bay1.dist", "m", 0.41),
    ("meter.total", "J", 7200.0), ("bat.vbat", "V", 3.71), ("soil.moisture", "%", 41.5),
    ("pm.pm25", "ug/m3", 12),
]
HEALTH = [("health.uptime", "s", 3600), ("health.heap_free", "B", 1800000), ("health.reset", "", 1),
          ("health.vbat", "V", 3.71), ("health.outbox", "", 20), ("health.dropped", "", 0),
          ("health.retx", "", 2)]


def _items():
    out = []
    for i, (n, u, v) in enumerate(SENSORS):
        out.append((T0 + 7 * i, n, u, "v", v))
    for n, u, v in HEALTH:
        out.append((T0 + 200, n, u, "v", v))
    return out


def _records(items):
    return [{"n": "park-n17/" + n, "u": u, "v": v, "t": t / 1000} if u else
            {"n": "park-n17/" + n, "v": v, "t": t / 1000} for t, n, u, _k, v in items]


def _datagram(payload):
    return coap.make_request(coap.POST, "/r", 0x1234, b"\x01\x02\x03\x04", coap.CON, payload,
                             coap.SENML_CBOR).encode()


def test_wire_bytes_per_reading(benchmark):
    items = _items()
    mine = pack.build("park-n17", items)
    base_cbor = senml.encode(_records(items), "cbor")
    base_json = senml.encode(_records(items), "json")
    n = len(items)
    fig = {
        "readings": n,
        "firmware pack bytes/reading": round(len(mine) / n, 1),
        "CoAP datagram bytes/reading": round(len(_datagram(mine)) / n, 1),
        "with UDP+IPv4 headers": round((len(_datagram(mine)) + 28) / n, 1),
        "senml.encode CBOR bytes/reading (baseline)": round(len(base_cbor) / n, 1),
        "senml.encode JSON bytes/reading (baseline)": round(len(base_json) / n, 1),
    }
    benchmark.group = "firmware pack.build vs senml.encode (CPython), %d readings" % n
    benchmark.extra_info.update(fig)
    print("\nwire:", json.dumps(fig))
    got = benchmark(pack.build, "park-n17", items)
    assert got == mine and senml.resolve(senml.decode(mine, "cbor"))


def _diagnostics():
    """The diagnostics records a healthy node sends on the heartbeat (firmware/diag.py)."""
    return [("health.safe_mode", "", "vs", ""), ("health.sensor_fault", "", "vs", ""),
            ("health.sensor_errors", "", "vs", ""), ("health.config", "", "v", 3),
            ("health.config_rejected", "", "vs", ""), ("health.clock_unsynced", "s", "v", 0),
            ("health.estimated", "", "v", 17), ("health.refused", "", "vs", "")]


def test_wire_bytes_per_reading_with_diagnostics(benchmark):
    """Diagnostics travel on change and on the heartbeat (every 16th health report): the
    typical pack above, the heartbeat's pack (the same + every diagnostic),
    their average over one heartbeat period, and a pack marked as estimated (before sync)."""
    items = _items()
    n = len(items)
    typical = pack.build("park-n17", items)
    diag = [(T0 + 200, name, u, k, v) for name, u, k, v in _diagnostics()]
    beat = pack.build("park-n17", items + diag)
    est = pack.build("park-n17", items, est=True)
    fig = {
        "readings": n, "diagnostics records on the heartbeat": len(diag),
        "typical pack bytes/reading": round(len(typical) / n, 1),
        "heartbeat pack bytes/reading (its readings + diagnostics)": round(len(beat) / n, 1),
        "average over a heartbeat period (16 packs)": round((15 * len(typical) + len(beat))
                                                            / (16 * n), 1),
        "estimated-time pack bytes/reading": round(len(est) / n, 1),
    }
    benchmark.group = "firmware pack.build with diagnostics, %d readings" % n
    benchmark.extra_info.update(fig)
    print("\nwire with diagnostics:", json.dumps(fig))
    got = benchmark(pack.build, "park-n17", items + diag)
    assert got == beat and len(senml.resolve(senml.decode(beat, "cbor"))) == n + len(diag)


def test_senml_encode_baseline(benchmark):
    items = _items()
    benchmark.group = "firmware pack.build vs senml.encode (CPython), %d readings" % len(items)
    recs = _records(items)
    benchmark(senml.encode, recs, "cbor")


_MP_SCRIPT = r'''
import gc, sys, time, asyncio
import node, pack
from smartpark.protocol import coap
K = int(sys.argv[1])
n = node.Node()
res = {"cycle_alloc": [], "cycle_us": [], "post_us": [], "idle_alloc": [], "pack_bytes": [],
       "readings": []}

async def main():
    await n.cycle()                   # find hub, register, sync: not part of the figure
    await n.sampler.sample_all()
    await n.cycle()
    for i in range(K):
        await n.sampler.sample_all()  # one report interval's worth of readings
        depth = n.outbox.depth() + len(n.health())
        gc.collect(); gc.disable()
        a0 = gc.mem_alloc(); t0 = time.ticks_us()
        await n.cycle()
        t1 = time.ticks_us(); a1 = gc.mem_alloc()
        gc.enable()
        res["cycle_alloc"].append(a1 - a0); res["cycle_us"].append(time.ticks_diff(t1, t0))
        res["readings"].append(depth)
        # baseline: the same client POSTing an already built pack of the same size
        items = [(1763979000000 + j, "x.temp", "Cel", "v", 21.5) for j in range(depth)]
        p = pack.build(n.node, items)   # its own name: an OSCORE hub refuses another's
        res["pack_bytes"].append(len(p))
        t0 = time.ticks_us()
        await n.client.request(coap.POST, "/r", p, pack.CT_SENML_CBOR)
        res["post_us"].append(time.ticks_diff(time.ticks_us(), t0))
        gc.collect(); gc.disable()
        a0 = gc.mem_alloc()
        await asyncio.sleep_ms(200)   # idle: the loop waiting, nothing to do
        res["idle_alloc"].append(gc.mem_alloc() - a0)
        gc.enable()
    print("RESULT " + repr(res).replace("'", '"'))

asyncio.run(main())
'''


def test_unix_port_report_cycle(benchmark, tmp_path):
    mp = find_program("micropython")
    require(mp is not None, "the micropython unix port is not installed")
    hub = harness.Hub(tmp_path / "hub").start()
    top = tempfile.mkdtemp(prefix="sp-mpy-")
    try:
        os.makedirs(os.path.join(top, "smartpark"))
        os.symlink(os.path.join(ROOT, "protocol"), os.path.join(top, "smartpark", "protocol"))
        flash = tmp_path / "node"
        flash.mkdir()
        hub.provision("bench1", flash)   # its OSCORE key, as flash gives one
        cfg = harness.node_config("bench1", "127.0.0.1:%d" % hub.port, ledger=False)
        cfg["sensors"] += [
            {"name": "co2", "driver": "scd4x"}, {"name": "lux", "driver": "bh1750"},
            {"name": "hall", "driver": "pir", "bus": "pin"},
            {"name": "bat", "driver": "adc", "bus": "adc", "params": {"kind": "battery"}},
        ]
        (flash / "config.json").write_text(json.dumps(cfg))
        (flash / "bench.py").write_text(_MP_SCRIPT)
        env = dict(os.environ, MICROPYPATH=":".join([".frozen", FIRMWARE, top]))
        proc = subprocess.run([mp, "bench.py", "20"], cwd=flash, env=env, capture_output=True,
                              text=True, timeout=300)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
        res = json.loads(line[0][7:])
    finally:
        hub.stop()
        import shutil
        shutil.rmtree(top, ignore_errors=True)

    def med(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2]

    fig = {
        "readings per cycle": med(res["readings"]),
        "heap allocated per report cycle, bytes (median)": med(res["cycle_alloc"]),
        "heap allocated per report cycle, max": max(res["cycle_alloc"]),
        "idle 200 ms, bytes": med(res["idle_alloc"]),
        "report cycle, ms (median)": med(res["cycle_us"]) / 1000,
        "bare POST of same-size pack, ms (median, baseline)": med(res["post_us"]) / 1000,
        "cycle / bare POST": round(med(res["cycle_us"]) / max(1, med(res["post_us"])), 2),
        "pack bytes": med(res["pack_bytes"]),
    }
    benchmark.extra_info.update(fig)
    print("\nunix-port node:", json.dumps(fig))
    benchmark.group = "unix-port node report cycle (figures in extra_info)"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
