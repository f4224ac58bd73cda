"""The hub's OSCORE work per report: fast/oscore.pyx's batches against the pure table, same run.

Workload: 1,024 protected reports (the load generator's 4-record SenML-CBOR pack,
about 110 bytes of plaintext) from 256 nodes, each node's sequence numbers going
up from round to round; per report the hub opens the request (option, kid lookup,
AES-CCM, the inner request, the replay window) and seals its 2.04 ack (the ack
payload and Content-Format, AES-CCM).

- fast: `Table.open_batch` over the batch + `Table.seal_acks` (C, OpenSSL EVP,
  the GIL released), as hub/fastpath.py calls them;
- baseline: fast/oscore_py.py's `Table`, per report `unprotect` + `accept` +
  `protect_response`, the aiocoap side's calls (on protocol/oscore.py, whose
  AES-CCM is cryptography's AESCCM).

    .venv/bin/pytest benchmarks/test_oscore_bench.py --benchmark-only -s

Microseconds per report (median round) and the ratio are printed at the end.
Nothing here asserts a speed.
"""

import os
import time

import pytest
from smartpark import fast
from smartpark.fast import oscore_py
from smartpark.protocol import coap, oscore
from smartpark.protocol.report import ack_head

NODES = 256
BATCH = 1024
RESULTS = {}


def _report(node):
    payload = (b"\x84\xa5\x21" + bytes([0x60 + len(node) + 1]) + node.encode() + b"/\x22\xfb"
               + b"\x41\xd9\x54\xfc\x40\x00\x00\x00\x00\x64temp\x01\x63Cel\x02\xfb"
               + b"\x40\x35\x80\x00\x00\x00\x00\x00"
               + b"\xa2\x00\x63hum\x02\xfb\x40\x44\x20\x00\x00\x00\x00\x00"
               + b"\xa2\x00\x64pm25\x02\xfb\x40\x1e\x00\x00\x00\x00\x00\x00"
               + b"\xa2\x00\x63co2\x02\xfb\x40\x83\x20\x00\x00\x00\x00\x00")
    m = coap.make_request(coap.POST, "r", 0, token=b"\x01\x02\x03\x04", payload=payload)
    m.add_option(coap.CONTENT_FORMAT, coap.encode_uint(112))
    return m


class Workload:
    def __init__(self, table_cls):
        self.table = table_cls(32)
        self.ctx = []
        for i in range(NODES):
            secret, salt, kid = os.urandom(16), os.urandom(8), i.to_bytes(3, "big")
            self.table.add("bench-%d" % i, kid, b"", secret, salt)
            self.ctx.append(oscore.Context(secret, salt, kid, b""))
        self.messages = [_report("bench-%d" % i) for i in range(NODES)]
        self.round = 0

    def batch(self):
        """The next round's protected requests, as udp.pyx's candidates."""
        out = []
        for k in range(BATCH):
            i = k % NODES
            msg = self.messages[i]
            msg.mid = k
            outer, _ = oscore.protect_request(self.ctx[i], self.round * 8 + k // NODES, msg)
            data = outer.encode()
            opt = outer.get_option(coap.OSCORE)
            off = data.index(opt, 8)
            out.append((None, k, msg.token, off, len(opt), None, data, outer))
        self.round += 1
        return out


@pytest.fixture(scope="module")
def oscore_c():
    if not fast.EXTENSIONS.get("oscore"):
        pytest.skip("smartpark.fast.oscore: %s" % fast.UNAVAILABLE.get("oscore"))
    from smartpark.fast import oscore as mod
    return mod


def _run(benchmark, name, setup, work):
    times = []

    def timed(*args):
        t = time.perf_counter()
        n = work(*args)
        times.append((time.perf_counter() - t) / n)

    benchmark.pedantic(timed, setup=setup, rounds=15, iterations=1)
    times.sort()
    RESULTS[name] = times[len(times) // 2] * 1e6
    benchmark.extra_info["us_per_report"] = RESULTS[name]


def test_oscore_batches_fast(benchmark, oscore_c):
    w = Workload(oscore_c.Table)
    head = ack_head(1.7e9)

    def setup():
        return (w.batch(),), {}

    def work(cands):
        reports, left = [], []
        w.table.open_batch(cands, reports, left)
        assert not left
        acks = w.table.seal_acks(reports, [(head, 4)] * len(reports), 0)
        assert None not in acks
        return len(cands)

    _run(benchmark, "fast", setup, work)


def test_oscore_batches_baseline(benchmark):
    w = Workload(oscore_py.Table)
    ack = (0x44, [(coap.CONTENT_FORMAT, b"\x3c")], ack_head(1.7e9) + b"\x04\x04\x05\x00")

    def setup():
        return (w.batch(),), {}

    def work(cands):
        for e in cands:
            outer = e[7]
            o = w.table.unprotect(outer.get_option(coap.OSCORE), outer.payload, outer.code)
            w.table.accept(o)
            w.table.protect_response(o, *ack)
        return len(cands)

    _run(benchmark, "baseline", setup, work)


def teardown_module(module):
    if "fast" in RESULTS and "baseline" in RESULTS:
        print("\nOSCORE per report: fast %.2f us, pure table %.2f us, %.1fx"
              % (RESULTS["fast"], RESULTS["baseline"], RESULTS["baseline"] / RESULTS["fast"]))
