"""Issue 7: CoAP report ingest, one run, same load generator, five servers.

Targets (each its own process on a free loopback port, one after the other):
hub with the fast path (durable SQLite, synchronous=FULL), hub with
--no-fast-path (aiocoap), a bare aiocoap server whose POST /r handler does
nothing, libcoap's coap-server-notls (answers 4.04/4.05 to POST /r: counted
as answered, it is the raw CoAP baseline), and a bare Python
recvfrom/sendto loop that parses nothing.

Load (tools/coapload.py, C loop in fast/loadgen.pyx): 500 peers, <= 250
msg/s each, CON POST /r with a 4-record SenML-CBOR pack, 4 exchanges in
flight per peer, RFC 7252 retransmission. Figures are ratios within the run
(acked/s vs the baselines' answered/s) plus p50/p99 latency; the hubs are
also measured at half of the fast hub's throughput for the latency goal.

Not part of `make test` (testpaths = tests). Run:

    .venv/bin/pytest benchmarks/test_ingest_bench.py --benchmark-only -s
    SMARTPARK_INGEST_SECONDS=5 SMARTPARK_INGEST_HOLD=600 ...   # longer runs, 10-minute hold

`smartpark bench` can call smartpark.tools.coapload.compare() (same rows) and
smartpark.tools.coapload.table(rows) for the Markdown table.
"""

import os
import sys

import pytest

coapload = pytest.importorskip("smartpark.tools.coapload")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="recvmmsg fast path and loadgen are Linux only")


def test_ingest_hub_fast_vs_aiocoap_libcoap_bare(benchmark):
    pytest.importorskip("smartpark.fast.loadgen")
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
