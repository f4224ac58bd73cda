"""The dashboard's first load with 10,000 nodes: time and bytes, in Debian's chromium.

One hub (fast path, security off) gets 10,000 nodes from the load generator
(tools/coapload.py: one report each, four series a node), then a fresh browser tab
opens `/` and waits until the overview's node table is shown and its event stream is
live. Measured: the time from navigation to that, and the bytes the browser fetched
(bodies as sent, gzip where the hub compresses, plus headers), three times, the median
counting. For comparison, the bytes of the whole node list and latest values
(`/api/nodes` + `/api/latest`), which the overview does not read.

    .venv/bin/pytest benchmarks/test_dashboard_bench.py --benchmark-only -s
    SMARTPARK_DASHBOARD_NODES=2000 ...   # another park size
"""

import os
import statistics
import sys
import time
import urllib.request

import pytest
from smartpark import fast as _fast

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
from peers import require  # noqa: E402

coapload = pytest.importorskip("smartpark.tools.coapload")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the load generator is Linux only")

CHROMIUM = "/usr/bin/chromium"


def _bytes(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return len(r.read())


def test_dashboard_first_load_with_10000_nodes(benchmark, tmp_path):
    if _fast.loadgen is None:
        pytest.skip("smartpark.fast.loadgen: %s" % _fast.UNAVAILABLE["loadgen"])
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require(sync_playwright is not None, "Playwright for Python is not installed")
    require(os.access(CHROMIUM, os.X_OK), "chromium is not installed (Debian: chromium)")
    nodes = int(os.environ.get("SMARTPARK_DASHBOARD_NODES", "10000"))
    d = str(tmp_path / "hub")
    os.makedirs(d)
    cmd = [sys.executable, "-m", "smartpark.tools.cli", "hub", "--data", d, "--coap-bind",
           "127.0.0.1", "--coap-port", "0", "--http-bind", "127.0.0.1", "--http-port", "0",
           "--no-zeroconf", "--no-multicast", "--security", "off"]
    tg = coapload.Target("hub", cmd, 0, cwd=d, ready="smartpark hub ready")
    tg.start()
    try:
        r = coapload.load("127.0.0.1", tg.port, peers=nodes, peer_rate=1.0, seconds=1.5,
                          window=1, node_prefix="park")
        base = "http://127.0.0.1:%d" % tg.http
        whole = _bytes(base + "/api/nodes") + _bytes(base + "/api/latest")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])

            runs = []

            def first_load():
                ctx = browser.new_context(viewport={"width": 1280, "height": 900})
                page = ctx.new_page()
                done = []
                page.on("requestfinished", lambda q: done.append(q))
                t0 = time.perf_counter()
                page.goto(base + "/")
                page.wait_for_selector("#nodes tbody tr")
                page.wait_for_function("document.getElementById('live').textContent"
                                       " === 'live'")
                took = time.perf_counter() - t0
                size = sum(q.sizes()["responseBodySize"] + q.sizes()["responseHeadersSize"]
                           for q in done)
                rows = page.locator("#nodes tbody tr").count()
                total = page.locator("#nodes-shown").text_content()
                ctx.close()
                runs.append((took, size, rows, total))

            benchmark.pedantic(first_load, rounds=3, iterations=1)
            browser.close()
    finally:
        tg.stop()
    took = statistics.median(x[0] for x in runs)
    size = statistics.median(x[1] for x in runs)
    rows, shown = runs[0][2], runs[0][3]
    print("\n%d nodes (%d acked reports): first load %.0f ms, %d bytes; %d rows shown (%s); "
          "/api/nodes + /api/latest would be %d bytes" % (
              nodes, r["acked"], 1000 * took, size, rows, shown, whole))
    benchmark.extra_info.update({"nodes": nodes, "first_load_ms": round(1000 * took),
                                 "first_load_bytes": size, "rows": rows,
                                 "whole_lists_bytes": whole})
    # sanity, not speed: the park is there and the page shows its first rows
    assert r["acked"] >= nodes * 0.99 and rows == 200
