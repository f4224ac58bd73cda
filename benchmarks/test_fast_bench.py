"""fast/ throughput: decode-only and decode+rollup, against a Python baseline in the same run.

Workload: realistic node packs as the firmware sends them (protocol.senml.encode:
bn "<node>/", bt, 8 records - temperature, humidity, pressure, CO2, PM2.5, noise as
mixed ints and half/single/double floats, door and occupancy as booleans), 256
payloads per batch, every node reporting every 10 s so rollup buckets open and
close as in service. Two park sizes: 2,048 nodes (16,384 series) and 20,480
nodes (163,840 series).

Baseline (same run, same payloads): cbor2.loads + SenML resolution in Python
(base fields, relative time, name interning in a dict) + fast/rollup_py.py, the
plain-Python dict-based rollups.

    .venv/bin/python -m pytest benchmarks/test_fast_bench.py --benchmark-only -s

records/s (median round and mean; the machine is shared: the median hides
other tenants' bursts, the mean also carries the periodic bucket closing) and
the ratios are printed at the end of the module (terminal
reporter) and stored in each benchmark's extra_info. Nothing here asserts a
speed; these are measurements, not tests.
"""

import json
import os
import random
import struct
import subprocess
import sys

import cbor2
import pytest
from smartpark import fast
from smartpark.fast import rollup_py
from smartpark.protocol import senml

BATCH = 256
CADENCE = 10.0          # seconds between two reports of one node
T0 = 1_700_000_000.0
RESULTS = {}


BT_PLACEHOLDER = T0 + 0.5  # a float64 bt, patched per report


def node_pack(rnd, node, t):
    recs = [
        {"n": node + "/temp", "u": "Cel", "v": round(rnd.gauss(21.0, 2.0), 2), "t": t},
        {"n": node + "/hum", "u": "%RH", "v": rnd.randint(30, 70), "t": t},
        {"n": node + "/pressure", "u": "Pa", "v": rnd.randint(98000, 103000), "t": t},
        {"n": node + "/co2", "u": "ppm", "v": rnd.randint(400, 1500), "t": t},
        {"n": node + "/pm25", "u": "ug/m3", "v": rnd.choice([1.5, 2.0, 3.5, 7.25]), "t": t},
        {"n": node + "/noise", "u": "dB", "v": round(rnd.uniform(35, 80), 1), "t": t},
        {"n": node + "/door", "vb": rnd.random() < 0.2, "t": t},
        {"n": node + "/occupied", "vb": rnd.random() < 0.5, "t": t},
    ]
    return senml.encode(recs)


def make_batches(nodes, seconds, seed=7, variants=4):
    """Batches of BATCH packs: every node once per CADENCE, in time order.

    Each node has `variants` packs made by protocol.senml.encode (as the
    firmware makes them); a report is one of them with its bt rewritten.
    """
    rnd = random.Random(seed)
    names = ["park-%05d" % i for i in range(nodes)]
    marker = b"\xfb" + struct.pack(">d", BT_PLACEHOLDER)
    base = []
    for name in names:
        vs = []
        for _ in range(variants):
            raw = node_pack(rnd, name, BT_PLACEHOLDER)
            vs.append((raw, raw.index(marker) + 1))
        base.append(vs)
    per_cycle = nodes // BATCH
    batches = []
    for cycle in range(int(seconds / CADENCE)):
        for b in range(per_cycle):
            t = T0 + cycle * CADENCE + b * CADENCE / per_cycle
            batch = []
            for i in range(BATCH):
                raw, off = base[b * BATCH + i][(cycle + i) % variants]
                buf = bytearray(raw)
                struct.pack_into(">d", buf, off, t + i * 1e-3)
                batch.append(bytes(buf))
            batches.append(batch)
    return batches


_LABELS = senml.LABELS


class BaselineTable:
    def __init__(self):
        self.ids = {}

    def intern(self, name):
        sid = self.ids.get(name)
        if sid is None:
            sid = self.ids[name] = len(self.ids)
        return sid


def baseline_decode(payloads, now, table):
    """cbor2.loads + Python SenML resolution: [(series, time, value)] numeric readings."""
    out = []
    for p in payloads:
        bn, bt, bv = "", 0, 0
        for rec in cbor2.loads(p):
            bn = rec.get(-2, bn)
            bt = rec.get(-3, bt)
            bv = rec.get(-5, bv)
            t = bt + rec.get(6, 0)
            if t < 268435456:
                t += now
            name = bn + rec.get(0, "")
            sid = table.intern(name)
            if 2 in rec:
                out.append((sid, float(t), float(rec[2] + bv)))
            elif 4 in rec:
                out.append((sid, float(t), 1.0 if rec[4] else 0.0))
    return out


class Cursor:
    def __init__(self, batches):
        self.batches = batches
        self.i = 0

    def next(self):
        b = self.batches[self.i % len(self.batches)]
        self.i += 1
        return b


@pytest.fixture(scope="module", params=[2048, 20480], ids=["16k-series", "164k-series"])
def workload(request):
    """(nodes, batches): 600 s of reports for 16k series, 300 s for 164k series, so
    60 s buckets open and close (lateness 120 s) as in service."""
    nodes = request.param
    seconds = 600.0 if nodes <= 2048 else 300.0
    return nodes, make_batches(nodes, seconds)


def _records(batches):
    return sum(len(b) for b in batches) * 8


def _run(benchmark, label, nodes, batches, fn, warmup):
    """Time fn once per batch after `warmup` batches (the first sight of every series)."""
    # one group per (what, size): the table's ratio column then reads baseline / fast
    benchmark.group = "%s, %d series" % (label.rsplit(" ", 1)[0], nodes * 8)
    benchmark.pedantic(fn, rounds=len(batches) - warmup, iterations=1, warmup_rounds=warmup)
    if benchmark.stats is None:  # --benchmark-disable: run once, nothing timed
        return None
    # the median: the machine is shared, the mean carries other tenants' bursts
    stats = benchmark.stats.stats
    rps = BATCH * 8 / stats.median
    benchmark.extra_info["records_per_s_median"] = rps
    benchmark.extra_info["records_per_s_best"] = BATCH * 8 / stats.min
    benchmark.extra_info["records_per_s_mean"] = BATCH * 8 / stats.mean
    RESULTS[(nodes, label + " (mean)")] = BATCH * 8 / stats.mean
    benchmark.extra_info["batch"] = BATCH
    benchmark.extra_info["series"] = nodes * 8
    RESULTS[(nodes, label)] = rps
    return rps


def test_decode_fast(benchmark, workload):
    nodes, batches = workload
    table = fast.SeriesTable()
    cur = Cursor(batches)
    _run(benchmark, "decode fast", nodes, batches,
         lambda: fast.decode_batch(cur.next(), T0, table), nodes // BATCH)


def test_decode_rollup_fast(benchmark, workload):
    nodes, batches = workload
    table = fast.SeriesTable()
    roll = fast.Rollups()
    cur = Cursor(batches)

    def step():
        batch = fast.decode_batch(cur.next(), T0, table)
        roll.add_batch(batch)
        roll.drain_closed()

    _run(benchmark, "decode+rollup fast", nodes, batches, step, nodes // BATCH)
    per = roll.memory_bytes() / max(1, len(roll))
    benchmark.extra_info["rollup_bytes_per_series"] = per
    RESULTS[(nodes, "rollup C bytes/series after the run")] = per


def test_decode_baseline(benchmark, workload):
    nodes, batches = workload
    table = BaselineTable()
    cur = Cursor(batches[: 3 * nodes // BATCH])  # one cycle to warm up, two measured
    _run(benchmark, "decode baseline", nodes, cur.batches,
         lambda: baseline_decode(cur.next(), T0, table), nodes // BATCH)


def test_decode_rollup_baseline(benchmark, workload):
    nodes, batches = workload
    table = BaselineTable()
    roll = rollup_py.Rollups()
    # the Python rollups are slow: through the first bucket closes (about 200 s)
    # for the small park; for the large one, one cycle warm, two measured, no
    # bucket closes yet (which favours the baseline)
    cycles = 22 if nodes <= 2048 else 3
    cur = Cursor(batches[: cycles * nodes // BATCH])

    def step():
        for sid, t, v in baseline_decode(cur.next(), T0, table):
            roll.add(sid, t, v)
        roll.drain_closed()

    _run(benchmark, "decode+rollup baseline", nodes, cur.batches, step,
         len(cur.batches) - 2 * nodes // BATCH)


_MEMORY_PROBE = r"""
import json, resource, sys
from smartpark import fast

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

n, t0 = int(sys.argv[1]), float(sys.argv[2])
table = fast.SeriesTable()
names = ["park-%05d/s%d" % (i // 8, i % 8) for i in range(n)]
before = rss()
for name in names:
    table.intern(name)
mid = rss()
roll = fast.Rollups()
for k in range(6):  # six readings 10 s apart: every window has an open bucket
    for sid in range(n):
        roll.add(sid, t0 + k * 10.0 + sid * 1e-4, 20.0 + (sid % 13) * 0.1 + k)
after = rss()
print(json.dumps({"table_rss": (mid - before) / n, "rollup_rss": (after - mid) / n,
                  "table_c": table.memory_bytes() / n, "rollup_c": roll.memory_bytes() / n,
                  "block": roll.series_block_bytes(), "open": roll.open_buckets() / n}))
"""


def test_memory_per_live_series(benchmark):
    """RSS delta (a fresh interpreter) and the C accounting for 100k live series."""
    n = 100_000
    out = {}

    def probe():
        res = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(n), str(T0)],
                             capture_output=True, text=True, timeout=300, check=True)
        out.update(json.loads(res.stdout))

    benchmark.pedantic(probe, rounds=1, iterations=1)
    benchmark.extra_info.update(out)
    RESULTS["memory"] = out


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    rep = request.config.pluginmanager.getplugin("terminalreporter")
    if rep is None or not RESULTS:
        return
    rep.write_line("")
    rep.write_line("fast/ benchmark (batch %d payloads x 8 records, pid %d, %s cores):"
                   % (BATCH, os.getpid(), os.cpu_count()))
    for nodes in (2048, 20480):
        row = {k[1]: v for k, v in RESULTS.items() if isinstance(k, tuple) and k[0] == nodes}
        if not row:
            continue
        rep.write_line("  %d series:" % (nodes * 8))
        for label in ("decode fast", "decode+rollup fast", "decode baseline",
                      "decode+rollup baseline"):
            if label in row:
                rep.write_line("    %-24s %12.0f records/s median round, %12.0f mean"
                               % (label, row[label], row[label + " (mean)"]))
        per = row.get("rollup C bytes/series after the run")
        if per:
            rep.write_line("    %-24s %12.0f B/series (C state)" % ("rollups after the run", per))
        for what in ("decode", "decode+rollup"):
            f, b = row.get(what + " fast"), row.get(what + " baseline")
            if f and b:
                fm, bm = row[what + " fast (mean)"], row[what + " baseline (mean)"]
                rep.write_line("    %-24s %12.1fx baseline (means: %.1fx)" % (what, f / b, fm / bm))
    mem = RESULTS.get("memory")
    if mem:
        rep.write_line("  100k live series, per series: rollups RSS %.0f B (C state %.0f B, "
                       "fixed block %d B, %.1f open buckets); SeriesTable RSS %.0f B (C %.0f B)"
                       % (mem["rollup_rss"], mem["rollup_c"], mem["block"], mem["open"],
                          mem["table_rss"], mem["table_c"]))
