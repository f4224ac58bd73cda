"""CoAP report ingest, one run, same load generator, six servers.

Targets (each its own process on a free loopback port, one after the other):
hub with the fast path (durable SQLite, synchronous=FULL), hub with
--no-fast-path (aiocoap), a bare aiocoap server whose POST /r handler does
nothing, libcoap's coap-server-notls (answers 4.04/4.05 to POST /r: counted
as answered, it is the raw CoAP baseline), a bare Python
recvfrom/sendto loop that parses nothing, and `fast-echo`: the fast path's own
front end (recvmmsg, CoAP parsing, response cache, sendmmsg) answering every
report at once with nothing behind it -- the ceiling of the design here.

Load (tools/coapload.py, C loop in fast/loadgen.pyx): 500 peers, <= 250
msg/s each, CON POST /r with a 4-record SenML-CBOR pack, 4 exchanges in
flight per peer, RFC 7252 retransmission. Figures are ratios within the run
(acked/s vs the baselines' answered/s) plus p50/p99 latency and CPU
microseconds per answered report (the target's and the load generator's: on
two shared cores their sum bounds any target's rate); the hubs are also
measured at half of the fast hub's throughput for the latency goal.

Not part of `make test` (testpaths = tests). Run:

    .venv/bin/pytest benchmarks/test_ingest_bench.py --benchmark-only -s
    SMARTPARK_INGEST_SECONDS=5 SMARTPARK_INGEST_HOLD=600 ...   # longer runs, 10-minute hold

test_pipeline_store_only measures the pipeline and durable store alone (no
sockets): the part of the fast hub's cost that is Python.

`smartpark bench` can call smartpark.tools.coapload.compare() (same rows) and
smartpark.tools.coapload.table(rows) for the Markdown table.
"""

import os
import sys

import pytest
from smartpark import fast as _fast

coapload = pytest.importorskip("smartpark.tools.coapload")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="recvmmsg fast path and loadgen are Linux only")


def test_ingest_hub_fast_vs_aiocoap_libcoap_bare(benchmark):
    if _fast.loadgen is None:
        pytest.skip("smartpark.fast.loadgen: %s" % _fast.UNAVAILABLE["loadgen"])
    seconds = float(os.environ.get("SMARTPARK_INGEST_SECONDS", "3"))
    hold = float(os.environ.get("SMARTPARK_INGEST_HOLD", "0"))
    rows = benchmark.pedantic(
        coapload.compare, kwargs={"seconds": seconds, "peers": 500, "peer_rate": 250.0,
                                  "window": 4, "hold": hold,
                                  "say": lambda s: print(s, file=sys.stderr, flush=True)},
        rounds=1, iterations=1)
    table = coapload.table(rows)
    print("\n" + table)
    by = {r["target"]: r for r in rows}
    # scalars only: `smartpark bench` prints extra_info beneath the group
    for r in rows:
        name = r["target"].replace("-", "_")
        benchmark.extra_info[name + "_acked_per_s"] = round(r["acked_per_s"])
        benchmark.extra_info[name + "_answered_per_s"] = round(r["answered_per_s"])
        benchmark.extra_info[name + "_p99_ms"] = r["p99_ms"]
        benchmark.extra_info[name + "_cpu_us_per_report"] = r["cpu_us"]
        benchmark.extra_info[name + "_loadgen_cpu_us_per_report"] = r["loadgen_cpu_us"]
        benchmark.extra_info[name + "_kernel_us_per_report"] = r["sys_us"]
        benchmark.extra_info[name + "_loadgen_kernel_us_per_report"] = r["loadgen_sys_us"]
        if "half_p99_ms" in r:
            benchmark.extra_info[name + "_half_load_p99_ms"] = r["half_p99_ms"]
    fast = by["hub-fast"]
    for key in ("x_aiocoap", "x_libcoap", "x_bare"):
        if key in fast:
            benchmark.extra_info["hub_fast_" + key] = round(fast[key], 2)
    if "hub" in by and by["hub"]["acked_per_s"]:
        benchmark.extra_info["fast_vs_no_fast"] = round(
            fast["acked_per_s"] / by["hub"]["acked_per_s"], 2)
    # sanity, not speed: every hub answer to this load is a 2.04 (no 4.xx/5.xx)
    assert set(fast["codes"]) <= {"2.04", "5.03"}, fast["codes"]


def _pipeline_store_only(batches=60, size=1024, peers=500, lane=False):
    """Pipeline.ingest -> SqliteStore (WAL, synchronous=FULL) -> rollups, in
    process, no sockets: `batches` batches of `size` 4-reading reports, 2 in flight (as
    hub/fastpath.py runs them), through the row path or (lane=True) the column lane as
    the hub runs it. Returns reports/s, CPU us per report, readings stored."""
    import asyncio
    import shutil
    import struct
    import tempfile
    import time

    from smartpark.hub.codec import Decoder
    from smartpark.hub.events import EventBus
    from smartpark.hub.ingest import Pipeline
    from smartpark.hub.metrics import Metrics
    from smartpark.hub.registry import Registry
    from smartpark.hub.rollups import RollupFeeder
    from smartpark.hub.store import SqliteStore

    async def run(d):
        roll = RollupFeeder()
        st = SqliteStore(os.path.join(d, "hub.sqlite"), rollups=roll)
        await st.start(asyncio.get_running_loop())
        events = EventBus()
        reg = Registry(st, events)
        reg.load(await st.load_state())
        dec = Decoder()
        if lane and dec.enable_lane(st.newest) is None:
            raise RuntimeError("the column lane is not built")
        pipe = Pipeline(st, dec, reg, events, Metrics())
        bt0 = float(int(time.time()) - 2 * 86400)
        tmpl = []
        for i in range(peers):
            msg, off = coapload.template("pb-%d" % i)
            start = msg.index(b"\xff") + 1
            tmpl.append((msg[start:], off - start))
        work = []
        k = 0
        for _ in range(batches):
            items = []
            for _ in range(size):
                payload, off = tmpl[k % peers]
                b = bytearray(payload)
                b[off:off + 8] = struct.pack(">d", bt0 + (k // peers) * 0.001)
                items.append(("127.0.0.1:%d" % (k % peers), bytes(b), 112))
                k += 1
            work.append(items)
        codes = set()
        gate = asyncio.Semaphore(2)

        async def one(items):
            async with gate:
                codes.update(r.code for r in await pipe.ingest(items, path="fast"))

        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(w) for w in work))
        # timed up to the last reading being in `readings` (the count query waits for the
        # journal's move), so deferred work is not left out
        stored = await st.count_readings()
        t1, c1 = time.perf_counter(), time.process_time()
        await st.close()
        n = batches * size
        return {"reports_per_s": n / (t1 - t0), "cpu_us_per_report": (c1 - c0) / n * 1e6,
                "codes": sorted(codes), "readings": stored, "expected": 4 * n,
                "lane": dec.lane.n_lane if dec.lane is not None else 0}

    d = tempfile.mkdtemp(prefix="smartpark-pipebench-")
    try:
        return asyncio.run(run(d))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_pipeline_store_only(benchmark):
    """The hub's ingest pipeline and durable store without CoAP (what the fast path feeds):
    the row path and the column lane alternated in one run (rows, lane, rows, lane)."""
    pytest.importorskip("smartpark.fast")

    def both():
        return [_pipeline_store_only(lane=lane) for lane in (False, True, False, True)]

    runs = benchmark.pedantic(both, rounds=1, iterations=1)
    for r, name in zip(runs, ("rows", "lane", "rows", "lane"), strict=True):
        print("\npipeline + store (%s): %.0f reports/s, %.1f us CPU per report"
              % (name, r["reports_per_s"], r["cpu_us_per_report"]))
        # sanity, not speed: every report acknowledged, every reading stored exactly once
        assert r["codes"] == [0x44], r["codes"]
        assert r["readings"] == r["expected"], r
    rows, lane = runs[0::2], runs[1::2]
    assert all(r["lane"] == 0 for r in rows) and all(r["lane"] > 0 for r in lane)
    best = {name: max(r["reports_per_s"] for r in rs) for name, rs in (("rows", rows),
                                                                       ("lane", lane))}
    for name, rs in (("rows", rows), ("lane", lane)):
        benchmark.extra_info[name + "_reports_per_s"] = round(best[name])
        benchmark.extra_info[name + "_cpu_us_per_report"] = round(
            min(r["cpu_us_per_report"] for r in rs), 1)
    benchmark.extra_info["lane_vs_rows"] = round(best["lane"] / best["rows"], 2)
    print("lane / rows: %.2fx (best of two each)" % (best["lane"] / best["rows"]))


T0 = 1_700_000_000.0  # reading times of the block-move benchmark


def _block_moves(tmp, grouped, per_series, series=2000, moves=8):
    """The block mover alone (fast/mover.pyx): `moves` moves of `per_series`
    readings for each of `series` series into a fresh hub database; CPU us per reading
    over the second half (the table is large by then) and the readings inserted."""
    import array
    import tempfile
    import time

    from smartpark.fast import BlockMover
    from smartpark.hub.store.schema import DATABASE, connect

    path = os.path.join(tempfile.mkdtemp(dir=tmp), "hub.sqlite3")  # a new database each run
    conn = connect(path)
    conn.executescript(DATABASE)
    mover = BlockMover(path, 48, grouped=grouped)
    cpu = new = 0.0
    try:
        for k in range(moves):
            s, t, kd, v = array.array("i"), array.array("d"), array.array("B"), array.array("d")
            for j in range(per_series):
                for sid in range(series):
                    s.append(sid)
                    t.append(T0 + (k * per_series + j) * 10.0 + sid * 1e-3)
                    kd.append(1 if sid % 8 == 7 else 0)  # a boolean sensor in eight
                    v.append(j * 0.5)
            c0 = time.process_time()
            m = mover.start_columns(s.tobytes(), t.tobytes(), kd.tobytes(), v.tobytes(), k, k + 1)
            while not m.step(4096):
                pass
            if k >= moves // 2:
                cpu += time.process_time() - c0
                new += m.new
    finally:
        mover.close()
    count = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    conn.close()
    return {"cpu_us_per_reading": cpu / new * 1e6, "readings": count,
            "expected": moves * per_series * series}


@pytest.mark.parametrize("per_series", [50, 200])
def test_block_move_grouped_vs_single(benchmark, tmp_path, per_series):
    """One statement per 32 readings against one per reading (the baseline), same run, moves
    of 50 and 200 readings a series (2,000 series: 100,000 and 400,000 a move)."""
    if _fast.BlockMover is None:
        pytest.skip("smartpark.fast.mover: %s" % _fast.UNAVAILABLE["mover"])
    out = {}

    def both():
        for grouped in (False, True, False, True):
            r = _block_moves(str(tmp_path), grouped, per_series)
            assert r["readings"] == r["expected"], r  # sanity: every reading, once
            name = "grouped" if grouped else "single"
            out[name] = min(out.get(name, 1e9), r["cpu_us_per_reading"])

    benchmark.pedantic(both, rounds=1, iterations=1)
    benchmark.extra_info.update({k + "_cpu_us_per_reading": round(v, 3) for k, v in out.items()})
    benchmark.extra_info["single_vs_grouped"] = round(out["single"] / out["grouped"], 2)
    print("\nblock move, %d a series: %.3f us CPU a reading grouped, %.3f single (%.2fx)"
          % (per_series, out["grouped"], out["single"], out["single"] / out["grouped"]))
