"""Ingest while the dashboard's readers poll the API, against ingest with no readers, in one run.

One hub (fast path, security off). The load generator (tools/coapload.py: 2,000 peers x 4
readings a report, about 25 reports/s each) drives it for a few seconds with no reader, then
with two reader threads polling in a loop what a dashboard asks: /api/latest, a node
(/api/nodes/{node}), its 1-minute series and its raw series of the last minute (the read that
once moved every pending reading into `readings` first), alternating, twice each; the better
run of each counts. Printed: acked reports/s of both, their ratio, and each query's latency
p50/p99 while the load runs.

    .venv/bin/pytest benchmarks/test_reads_bench.py --benchmark-only -s
    SMARTPARK_READS_SECONDS=10 ...   # longer runs
"""

import json
import os
import sys
import threading
import time
import urllib.request

import pytest
from smartpark import fast as _fast

coapload = pytest.importorskip("smartpark.tools.coapload")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the load generator is Linux only")

PEERS = 2000
PREFIX = "rd"


def hub_target(workdir):
    d = os.path.join(workdir, "hub")
    os.makedirs(d, exist_ok=True)
    cmd = [sys.executable, "-m", "smartpark.tools.cli", "hub", "--data", d, "--coap-bind",
           "127.0.0.1", "--coap-port", "0", "--http-bind", "127.0.0.1", "--http-port", "0",
           "--no-zeroconf", "--no-multicast", "--security", "off"]
    return coapload.Target("hub", cmd, 0, cwd=d, ready="smartpark hub ready")


class Readers:
    """Threads polling the dashboard's reads until stopped; latencies per kind of query."""

    def __init__(self, http_port, threads=2):
        self.base = "http://127.0.0.1:%d" % http_port
        self.lat = {"latest": [], "node": [], "series_1m": [], "series_raw": []}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]

    def _get(self, kind, path):
        t0 = time.perf_counter()
        with urllib.request.urlopen(self.base + path, timeout=30) as r:
            r.read()
        self.lat[kind].append(time.perf_counter() - t0)

    def _run(self, k):
        i = k
        while not self.stop.is_set():
            node = "%s-%d" % (PREFIX, (i * 37) % PEERS)
            now = time.time()
            self._get("latest", "/api/latest?node=" + node)
            self._get("node", "/api/nodes/" + node)
            self._get("series_1m", "/api/series/%s/temp?window=1m&from=%d" % (node, now - 3600))
            self._get("series_raw", "/api/series/%s/temp?from=%d" % (node, now - 60))
            i += 2

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000.0 if xs else float("nan")


def test_ingest_while_the_dashboard_reads(benchmark, tmp_path):
    if _fast.loadgen is None:
        pytest.skip("smartpark.fast.loadgen: %s" % _fast.UNAVAILABLE["loadgen"])
    seconds = float(os.environ.get("SMARTPARK_READS_SECONDS", "5"))
    tg = hub_target(str(tmp_path))

    def run():
        best = {}
        tg.start()
        try:
            coapload.load("127.0.0.1", tg.port, peers=PEERS, peer_rate=25.0, seconds=2,
                          window=4, node_prefix=PREFIX)   # the nodes and series exist
            for _round in range(2):
                for name in ("quiet", "read"):
                    if name == "read":
                        with Readers(tg.http) as rd:
                            r = coapload.load("127.0.0.1", tg.port, peers=PEERS, peer_rate=25.0,
                                              seconds=seconds, window=4, node_prefix=PREFIX)
                        best.setdefault("lat", rd.lat)
                    else:
                        r = coapload.load("127.0.0.1", tg.port, peers=PEERS, peer_rate=25.0,
                                          seconds=seconds, window=4, node_prefix=PREFIX)
                    best[name] = max(best.get(name, 0.0), r["acked_per_s"])
            with urllib.request.urlopen("http://127.0.0.1:%d/api/series/%s-1/temp" % (
                    tg.http, PREFIX), timeout=30) as resp:
                best["raw_rows"] = len(json.load(resp).get("points", []))
        finally:
            tg.stop()
        return best

    best = benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = best["read"] / best["quiet"] if best["quiet"] else None
    print("\ningest acked/s: no readers %.0f, dashboard reads %.0f, ratio %.3f"
          % (best["quiet"], best["read"], ratio or 0))
    for kind, xs in best["lat"].items():
        print("  %-10s %5d queries, p50 %.1f ms, p99 %.1f ms" % (kind, len(xs), _pct(xs, 0.5),
                                                                 _pct(xs, 0.99)))
    benchmark.extra_info.update({"quiet": best["quiet"], "read": best["read"], "ratio": ratio})
    assert best["raw_rows"] > 0   # the raw read answers with the readings of the load
    assert all(best["lat"][k] for k in best["lat"])
