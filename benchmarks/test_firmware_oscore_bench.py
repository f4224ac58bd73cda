"""What OSCORE costs the node (benchmarks, not tests; see docs/firmware-size.md#what-oscore-costs).

The baseline in the same run is always the same firmware without a key, talking
plain CoAP to a hub with security "off"; the node with its key talks to a hub
with security "oscore" (its key from the hub's store, as `smartpark flash` gives
it).

1. Heap, measured as `smartpark firmware size` measures it (tools/fwsize.py's
   probes: the ESP32 bundle on the unix port, resident and the smallest heap
   that runs a whole report cycle) for both layouts, with and without a key;
   the difference scaled to 32 bits by fwsize.RATIO_32.
2. One report cycle of the real firmware (17 readings): heap allocated with the
   collector off, and its time; a bare POST of a same-size pack by the same
   client.
3. The node's CPU for one report on the unix port: protecting a 392-byte and a
   1,024-byte pack, verifying the hub's 27-byte ack, and deriving the context
   at boot (HKDF).

    .venv/bin/pytest benchmarks/test_firmware_oscore_bench.py --benchmark-only -s
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIRMWARE = os.path.join(ROOT, "firmware")
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import harness  # noqa: E402
from peers import find_program, require  # noqa: E402
from smartpark.hub.process import start_hub  # noqa: E402
from smartpark.tools import bundle, fwsize, provision  # noqa: E402
from test_firmware_bench import _MP_SCRIPT  # noqa: E402


def _micropython():
    mp = find_program("micropython")
    require(mp is not None, "the micropython unix port is not installed")
    return mp


class _Hub:
    """A hub with security "oscore" or "off", shaped as fwsize's probes want it."""

    node = fwsize._Hub.node

    def __init__(self, work, security):
        self.data = os.path.join(work, "hub-" + security)
        os.makedirs(self.data)
        self.handle = start_hub(["--data", self.data, "--coap-bind", "127.0.0.1", "--coap-port", "0",
                                 "--http-bind", "127.0.0.1", "--http-port", "0", "--no-zeroconf",
                                 "--no-multicast", "--security", security],
                                timeout=60, log_path=os.path.join(self.data, "hub.log"))
        self.port, self.http_port = self.handle.coap_port, self.handle.http_port

    def close(self):
        self.handle.stop()


def _med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def test_oscore_heap_on_the_node(benchmark, tmp_path):
    mp = _micropython()
    work = str(tmp_path)
    out = os.path.join(work, "fw")
    bundle.build_bundle(out=out, quiet=True)
    image = os.path.join(out, fwsize.ROMFS_IMAGE)
    if not os.path.isfile(image):
        fwsize.build_romfs(out, image)
    hubs = {s: _Hub(work, s) for s in ("off", "oscore")}
    real = provision.provision_dir
    probes = {}

    def keys_for_the_oscore_hub(data, node, node_dir, rotate=False):
        if data == hubs["oscore"].data:
            return real(data, node, node_dir, rotate)
        return None

    try:
        for layout in fwsize.LAYOUTS:
            for sec in ("off", "oscore"):
                probes[(layout, sec)] = fwsize.Probe(out, mp, hubs[sec],
                                                     os.path.join(work, "%s-%s" % (layout, sec)),
                                                     fwsize.REFERENCE_SENSORS,
                                                     image if layout == "romfs" else None)
        provision.provision_dir = keys_for_the_oscore_hub
        figs = fwsize.measure_probes(list(probes.values()))
    finally:
        provision.provision_dir = real
        for h in hubs.values():
            h.close()
        shutil.rmtree(out, ignore_errors=True)
    fig = {}
    for layout in fwsize.LAYOUTS:
        plain, prot = figs[probes[(layout, "off")]], figs[probes[(layout, "oscore")]]
        for what in ("resident", "peak"):
            d = prot[what] - plain[what]
            fig["%s %s without key (64-bit)" % (layout, what)] = plain[what]
            fig["%s %s with key (64-bit)" % (layout, what)] = prot[what]
            fig["%s %s added by OSCORE (64-bit)" % (layout, what)] = d
            fig["%s %s added by OSCORE (32-bit estimate)" % (layout, what)] = int(
                d * fwsize.RATIO_32[(layout, what)])
    benchmark.extra_info.update(fig)
    print("\nOSCORE heap on the node:", json.dumps(fig, indent=1))
    benchmark.group = "node OSCORE heap (figures in extra_info)"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


def _cycle(mp, security, work, k=20):
    hub = _Hub(work, security)
    top = os.path.join(work, "mpy-" + security)
    os.makedirs(os.path.join(top, "smartpark"))
    os.symlink(os.path.join(ROOT, "protocol"), os.path.join(top, "smartpark", "protocol"))
    flash = os.path.join(work, "node-" + security)
    os.makedirs(flash)
    name = "bench-" + security
    cfg = harness.node_config(name, "127.0.0.1:%d" % hub.port, ledger=False)
    cfg["sensors"] += [
        {"name": "co2", "driver": "scd4x"}, {"name": "lux", "driver": "bh1750"},
        {"name": "hall", "driver": "pir", "bus": "pin"},
        {"name": "bat", "driver": "adc", "bus": "adc", "params": {"kind": "battery"}},
    ]
    with open(os.path.join(flash, "config.json"), "w") as f:
        json.dump(cfg, f)
    if security == "oscore":
        provision.provision_dir(hub.data, name, flash)
    # the baseline POST names the node itself: an OSCORE hub takes a pack of the key's node only
    script = _MP_SCRIPT.replace('pack.build(n.node + "-bench", items)', "pack.build(n.node, items)")
    with open(os.path.join(flash, "bench.py"), "w") as f:
        f.write(script)
    env = dict(os.environ, MICROPYPATH=":".join([".frozen", FIRMWARE, top]))
    try:
        proc = subprocess.run([mp, "bench.py", str(k)], cwd=flash, env=env, capture_output=True,
                              text=True, timeout=300)
    finally:
        hub.close()
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(line[0][7:])


def test_oscore_report_cycle(benchmark, tmp_path):
    mp = _micropython()
    res = {sec: _cycle(mp, sec, str(tmp_path)) for sec in ("off", "oscore")}
    fig = {}
    for sec, r in res.items():
        fig["%s: readings per cycle" % sec] = _med(r["readings"])
        fig["%s: heap allocated per report cycle, bytes (median)" % sec] = _med(r["cycle_alloc"])
        fig["%s: heap allocated per report cycle, max" % sec] = max(r["cycle_alloc"])
        fig["%s: report cycle, ms (median)" % sec] = _med(r["cycle_us"]) / 1000
        fig["%s: bare POST of same-size pack, ms (median)" % sec] = _med(r["post_us"]) / 1000
    benchmark.extra_info.update(fig)
    print("\nunix-port node, plain vs OSCORE:", json.dumps(fig, indent=1))
    benchmark.group = "node OSCORE report cycle (figures in extra_info)"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


_CPU_SCRIPT = r'''
import gc, time, json
from smartpark.protocol import coap, oscore
import security
KEY = {"sender_id": "a1b2c3", "recipient_id": "", "secret": "00112233445566778899aabbccddeeff",
       "salt": "0011223344556677"}
with open("oscore.seq", "w") as f:   # provisioning writes it with the key
    f.write("0")
with open("oscore.json", "w") as f:
    json.dump(KEY, f)
def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]
res = {}
ts = []
for i in range(20):
    t0 = time.ticks_us()
    sec = security.load("oscore.json", "oscore.seq")
    ts.append(time.ticks_diff(time.ticks_us(), t0))
res["load_us"] = med(ts)
hub = oscore.Context(bytes.fromhex(KEY["secret"]), bytes.fromhex(KEY["salt"]), b"",
                     bytes.fromhex(KEY["sender_id"]))
for n in (392, 1024):
    tp, tv, ap, av = [], [], [], []
    for i in range(100):
        msg = coap.make_request(coap.POST, "/r", 1, b"abcd", coap.CON, bytes(n), 112)
        gc.collect(); a0 = gc.mem_alloc(); t0 = time.ticks_us()
        outer, binding = sec.protect(msg)
        data = outer.encode()
        tp.append(time.ticks_diff(time.ticks_us(), t0)); ap.append(gc.mem_alloc() - a0)
        inner, b2, seq = oscore.unprotect_request(hub, coap.parse(data))
        r = coap.parse(oscore.protect_response(hub, b2, coap.make_response(inner, coap.CHANGED,
                                                                          bytes(27))).encode())
        gc.collect(); a0 = gc.mem_alloc(); t0 = time.ticks_us()
        assert sec.verify(binding, r) is not None
        tv.append(time.ticks_diff(time.ticks_us(), t0)); av.append(gc.mem_alloc() - a0)
    res["protect_%d_us" % n] = med(tp)
    res["protect_%d_alloc" % n] = med(ap)
    res["verify_us"] = med(tv)
    res["verify_alloc"] = med(av)
print("RESULT " + json.dumps(res))
'''


def test_oscore_cpu_per_report(benchmark, tmp_path):
    mp = _micropython()
    top = tempfile.mkdtemp(prefix="sp-mpy-")
    try:
        os.makedirs(os.path.join(top, "smartpark"))
        os.symlink(os.path.join(ROOT, "protocol"), os.path.join(top, "smartpark", "protocol"))
        env = dict(os.environ, MICROPYPATH=":".join([".frozen", FIRMWARE, top]))
        proc = subprocess.run([mp, "-c", _CPU_SCRIPT], cwd=str(tmp_path), env=env,
                              capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads(line[0][7:])
    benchmark.extra_info.update(res)
    print("\nOSCORE on the unix port (us, bytes):", json.dumps(res, indent=1))
    benchmark.group = "node OSCORE CPU (figures in extra_info)"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
