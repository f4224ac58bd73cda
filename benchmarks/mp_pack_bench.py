"""Encode a typical node pack and report time, heap and size (MicroPython or CPython).

usage: micropython benchmarks/mp_pack_bench.py [ROUNDS]
       (MICROPYPATH must hold smartpark/protocol; benchmarks/test_protocol_bench.py
       sets that up and runs this script)

Prints one JSON line: per-encode time (us, mean over ROUNDS after a warm-up),
heap allocated by one encode (gc.mem_alloc delta with the collector off; None
on CPython), and the pack size as SenML-CBOR and SenML-JSON.
"""

import gc
import json
import sys

from smartpark.protocol import senml

try:
    from time import ticks_diff, ticks_us
except ImportError:  # CPython
    from time import perf_counter

    def ticks_us():
        return int(perf_counter() * 1000000)

    def ticks_diff(a, b):
        return a - b

NODE = "park-n17/"
T0 = 1763979000


def typical_records(n=8):
    """What a mains node reports each minute: six sensors plus two health readings."""
    rows = [
        ("temp", "Cel", 21.37), ("hum", "%RH", 48.5), ("pres", "Pa", 101325), ("co2", "ppm", 612),
        ("lux", "lx", 830.5), ("noise", "dB", 54.2), ("health.vbat", "V", 3.71),
        ("health.rssi", "dBm", -67),
    ]
    recs = []
    for i in range(n):
        sensor, unit, value = rows[i % len(rows)]
        recs.append({"n": NODE + sensor, "t": T0 + (i // 4), "u": unit, "v": value})
    return recs


def _heap(fn, arg, fmt):
    if not hasattr(gc, "mem_alloc"):
        return None
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        fn(arg, fmt)
        return gc.mem_alloc() - before
    finally:
        gc.enable()


def _time(fn, arg, fmt, rounds):
    fn(arg, fmt)  # warm-up
    gc.collect()
    start = ticks_us()
    for _ in range(rounds):
        fn(arg, fmt)
    return ticks_diff(ticks_us(), start) / rounds


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    out = {"interpreter": sys.implementation.name, "rounds": rounds}
    for n in (8, 4):
        recs = typical_records(n)
        for fmt in ("cbor", "json"):
            key = "%s%d" % (fmt, n)
            out["size_" + key] = len(senml.encode(recs, fmt))
            out["encode_us_" + key] = round(_time(senml.encode, recs, fmt, rounds), 1)
            out["heap_bytes_" + key] = _heap(senml.encode, recs, fmt)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
