"""What an over-the-air update costs (benchmarks, not tests; see
firmware/README.md#figures-of-an-update and docs/firmware-size.md#what-an-update-costs).

1. The wire and the wakes: a deep-sleeping unix-port node (the real micropython, the
   firmware of this checkout) updates through the real hub (tests/e2e/harness.Hub, the
   version in its store by hub.firmware.publish, the node's config {"firmware": V} by the
   HTTP API), with the default ota.blocks_per_wake. Two versions: (a) every file changed,
   the firmware's and the protocol modules' (a full download), (b) one driver changed
   (the rest copied on the node's flash). A relay between node and hub counts the UDP
   datagrams and bytes both ways, opens each OSCORE request with the hub's half of the
   node's key to tell the kinds of exchange apart (/fw blocks, reports, registration,
   config), and counts the Block2 requests and the wakes. The baseline in the same run:
   the same node's wakes without an update. The ESP32 bundle's full download is worked
   out from its manifest at the bytes per block measured.
2. The switch: from the node's log line of ota.switch() (every file verified, boot.json
   written) to the hub's ack of the first report of the new version, taken apart into
   the reset (the process ends and the supervisor starts it again), the boot up to the
   first request and the exchanges up to that ack; against a wake without an update.
3. The node's heap during a download: the smallest `micropython -X heapsize` (to 512 B)
   in which a wake completes, less the interpreter's start, as tools/fwsize.py measures
   the peak (the ESP32 bundle, .mpy files on the filesystem or its ROMFS image mounted at
   /rom, the reference node with its OSCORE key; its PMS5003 warms up in 0.3 s so that a
   wake takes seconds), with a wake's share of an update and without: the manifest phase
   (a first wake: ota.py fetches the manifest, otaman.py reads and checks it) against a
   first wake, the files phase (the next wake: ota.py fetches a wake's share of files)
   against a next wake. Scaled to 32 bits by fwsize.RATIO_32 and held against
   fwsize.RESERVED["ota"]; then, in a large heap, what importing remotecfg, ota and
   otaman adds to the live heap and to the qstr pool.
4. The hub's CPU per block served while it ingests reports at half of what the machine
   sustains (tools/coapload.py, OSCORE peers): its process CPU in windows with and
   without an aiocoap OSCORE client fetching 512-byte blocks, per block, as a ratio to its
   CPU per report in the same run; and per block on an idle hub.

    .venv/bin/pytest benchmarks/test_ota_bench.py --benchmark-only -s

Not part of `make test` (testpaths = tests).
"""

import asyncio
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIRMWARE = os.path.join(ROOT, "firmware")
MAIN = os.path.join(FIRMWARE, "main.py")
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, os.path.join(ROOT, "tests", "firmware"))
import harness  # noqa: E402
from peers import find_program, require  # noqa: E402
from smartpark.hub import firmware, keys  # noqa: E402
from smartpark.protocol import coap, configschema, oscore  # noqa: E402
from smartpark.tools import bundle, fwsize  # noqa: E402
from test_ota_node import make_bundle  # noqa: E402

BLOCK = 512
EXIT_WAKE = 75   # deep sleep, or the reset into a new version (firmware/sim/board.py)
FULL = "9.9.9-full"
ONE = "9.9.9-one"
ONE_CHANGED = ["drivers/bme280.py"]   # a driver fix: a driver the node runs
PLAIN_WAKES = 8                       # before the update: the first finds and registers


def _micropython():
    mp = find_program("micropython")
    require(mp is not None, "the micropython unix port is not installed")
    return mp


def _ota_default(key):
    return {k: d for k, _t, _lo, _hi, d in configschema.OTA}[key]


def _med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


# -- 1 and 2: the wire, the wakes, the switch -----------------------------------------------

def _full_bundle(out, version):
    """A unix source bundle of `version` in which every file differs from the running ones:
    the firmware's and the protocol modules' (a comment naming the version)."""
    src = os.path.join(os.path.dirname(out), "src-" + os.path.basename(out))
    fw, proto = os.path.join(src, "firmware"), os.path.join(src, "protocol")
    shutil.copytree(bundle.FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(bundle.PROTOCOL_DIR, proto, ignore=shutil.ignore_patterns("__pycache__"))
    for top in (fw, proto):
        for root, _dirs, files in os.walk(top):
            for name in files:
                if name.endswith(".py"):
                    with open(os.path.join(root, name), "a") as f:
                        f.write("\n# firmware %s\n" % version)
    m = bundle.build_bundle(out=out, source=True, board="unix", quiet=True, firmware_dir=fw,
                            protocol_dir=proto)
    m["firmware_version"] = version
    bundle.write_manifest(out, m)
    return m


class _Wire:
    """A UDP relay between the node and the hub that counts what passes, by kind of exchange.

    Each protected request is opened with the hub's half of the node's key (its inner
    Uri-Path names the kind: fw, r, rd, reg, cfg); a response is counted with the
    request of its token (its MID for an empty ACK), and opened too, for its inner code.
    `log` holds (time, "up"|"down", kind, size, detail) per datagram; a request with the
    bytes of the one before it with its MID from the same address is a retransmission."""

    def __init__(self, upstream, rec):
        self.upstream = upstream
        # the hub's side opens requests, the node's side responses
        secret, salt, node, hub = rec["secret"], rec["salt"], rec["sender_id"], rec["recipient_id"]
        self.hub = oscore.Context(secret, salt, hub, node)
        self.node = oscore.Context(secret, salt, node, hub)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ, None)
        self.peers = {}
        self.log = []
        self.errors = []
        self._token = {}   # token -> (kind, binding, inner request)
        self._mid = {}     # MID of a request (or of the hub's CON) -> kind
        self._sent = {}    # (node address, MID) -> the request's bytes
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            for key, _ev in self.sel.select(0.2):
                try:
                    data, addr = key.fileobj.recvfrom(4096)
                except OSError:
                    continue
                now = time.monotonic()
                if key.data is None:   # from the node
                    up = self.peers.get(addr)
                    if up is None:
                        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        up.bind(("127.0.0.1", 0))
                        self.peers[addr] = up
                        self.sel.register(up, selectors.EVENT_READ, addr)
                    up.sendto(data, ("127.0.0.1", self.upstream))
                else:
                    self.sock.sendto(data, key.data)
                way = "up" if key.data is None else "down"
                try:
                    seen = self._up(data, addr) if way == "up" else self._down(data)
                except Exception as e:  # noqa: BLE001 - counted, and said at the end
                    seen = ("other", len(data), repr(e))
                    self.errors.append(repr(e))
                self.log.append((now, way) + seen)

    def _up(self, data, addr):
        m = coap.parse(data)
        if m.code == 0:   # an empty ACK or RST: of the exchange its MID belongs to
            return self._mid.get(m.mid, "other"), len(data), "empty"
        # the same bytes from the same endpoint (a wake's process): a retransmission
        retx = self._sent.get((addr, m.mid)) == data
        self._sent[(addr, m.mid)] = data
        try:
            inner, binding, _seq = oscore.unprotect_request(self.hub, m)
        except Exception:  # noqa: BLE001 - not ours to judge: counted as other
            return "other", len(data), "unopened"
        path = inner.uri_path
        kind = path.split("/")[1] if path.count("/") else "other"
        if kind == "fw":
            kind = "fw-manifest" if path.count("/") == 2 else "fw-file"
        self._mid[m.mid] = kind
        self._token[m.token] = (kind, binding)
        return kind, len(data), "retx" if retx else "req"

    def _down(self, data):
        m = coap.parse(data)
        if m.code == 0:
            return self._mid.get(m.mid, "other"), len(data), "empty"
        kind, binding = self._token.get(m.token, ("other", None))
        if m.mtype == coap.CON:
            self._mid[m.mid] = kind   # a separate response: the node's ACK is of this kind
        code = None
        if binding is not None:
            try:
                code = oscore.unprotect_response(self.node, binding, m).code
            except Exception:  # noqa: BLE001 - not opened: no code
                code = None
        return kind, len(data), code

    def close(self):
        self._stop = True
        self._thread.join(2)
        for s in self.peers.values():
            s.close()
        self.sock.close()


def _tally(entries):
    """{kind: {"up", "down" (bytes), "datagrams", "requests", "retx"}} of a slice of the log."""
    out = {}
    for _t, way, kind, size, detail in entries:
        k = out.setdefault(kind, {"up": 0, "down": 0, "datagrams": 0, "requests": 0, "retx": 0})
        k[way] += size
        k["datagrams"] += 1
        if detail == "req":
            k["requests"] += 1
        elif detail == "retx":
            k["retx"] += 1
    return out


class _Sleeper:
    """A deep-sleeping node: each wake() is one run of `micropython main.py` (it ends with 75,
    in deep sleep or resetting into a new version), its output lines timestamped as they
    come."""

    def __init__(self, flash, mp, mpypath):
        self.flash = str(flash)
        self.mp = mp
        self.env = dict(os.environ, MICROPYPATH=":".join([".frozen", FIRMWARE, mpypath]))
        self.lines = []   # (time, line)
        self.wakes = []   # (start, end, exit status)

    def wake(self, timeout=120):
        t0 = time.monotonic()
        p = subprocess.Popen([self.mp, "-X", "heapsize=4M", MAIN], cwd=self.flash, env=self.env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            for raw in p.stdout:
                self.lines.append((time.monotonic(), raw.decode("utf-8", "replace").rstrip()))
            rc = p.wait()
        finally:
            timer.cancel()
            p.stdout.close()
        self.wakes.append((t0, time.monotonic(), rc))
        return rc

    def output(self, since=0):
        return "\n".join(line for _t, line in self.lines[since:])

    def read(self, name):
        try:
            with open(os.path.join(self.flash, name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None


def _mpy_path(top):
    os.makedirs(os.path.join(top, "smartpark"))
    os.symlink(os.path.join(ROOT, "protocol"), os.path.join(top, "smartpark", "protocol"))
    return top


def _first_ack(wire, since, kind="r"):
    """Time of the first 2.xx response of `kind` the relay passed after `since`."""
    for t, way, k, _size, code in wire.log:
        if t > since and way == "down" and k == kind and isinstance(code, int) and code >> 5 == 2:
            return t
    return None


def _update(hub, mp, mpypath, work, name, version):
    """One node from the factory code to `version` confirmed: the figures of its wakes."""
    flash = os.path.join(work, name)
    os.makedirs(flash)
    hub.provision(name, flash)
    wire = _Wire(hub.port, keys.get(hub.data, name))
    try:
        cfg = harness.node_config(name, "127.0.0.1:%d" % wire.port, ledger=False,
                                  deep_sleep="between_reports", watchdog_ms=0)
        del cfg["coap"]   # the RFC 7252 timing every node has by default
        with open(os.path.join(flash, "config.json"), "w") as f:
            json.dump(cfg, f)
        node = _Sleeper(flash, mp, mpypath)
        plain = []   # wakes without an update: the first finds, registers, syncs; then typical
        for _ in range(PLAIN_WAKES):
            n0 = len(wire.log)
            assert node.wake() == EXIT_WAKE, node.output()[-3000:]
            plain.append((node.wakes[-1], wire.log[n0:]))
        hub.put_config(name, {"firmware": version})
        wakes = []   # (wake, relay log, output line index at its start)
        for _ in range(60):
            n0, l0 = len(wire.log), len(node.lines)
            assert node.wake() == EXIT_WAKE, node.output(l0)[-3000:]
            wakes.append((node.wakes[-1], wire.log[n0:], l0))
            st = node.read("ota.json") or {}
            boot = node.read("boot.json") or {}
            if st.get("result") == "success" and boot.get("trial") is False:
                break
            assert st.get("result") in (None, "success"), (st, node.output(l0)[-3000:])
        else:
            raise AssertionError("no confirmed update after 60 wakes: %s" % node.output()[-3000:])
        with open(os.path.join(flash, "app_b", "version")) as f:
            assert f.read().strip() == version
        return _figures(node, wire, plain, wakes)
    finally:
        wire.close()


def _figures(node, wire, plain, wakes):
    typical = [_tally(log) for _w, log in plain[1:]]
    per_plain = {"up": _med([sum(k["up"] for k in t.values()) for t in typical]),
                 "down": _med([sum(k["down"] for k in t.values()) for t in typical]),
                 "datagrams": _med([sum(k["datagrams"] for k in t.values()) for t in typical])}
    plain_ms = _med([(_first_ack(wire, w[0]) - w[0]) * 1000 for w, _log in plain[1:]])
    everything = [e for _w, log, _l in wakes for e in log]
    t = _tally(everything)
    fw = [t.get(k, {}) for k in ("fw-manifest", "fw-file")]
    downloading = sum(1 for _w, log, _l in wakes if any(e[2].startswith("fw") for e in log))
    # the switch: ota.switch's log line, then the reset, the boot, the first acked report
    sw = [ts for ts, line in node.lines if "restarting on trial" in line]
    assert len(sw) == 1, node.output()[-3000:]
    t_switch = sw[0]
    ended = [w for w in node.wakes if w[0] < t_switch <= w[1]][0][1]
    started = [w for w in node.wakes if w[0] >= t_switch][0][0]
    first_req = [e for e in wire.log if e[0] > started and e[1] == "up"][0]
    t_ack = _first_ack(wire, t_switch)
    confirmed = [ts for ts, line in node.lines if ts > t_switch and "confirmed" in line][0]
    before_ack = [e[2] for e in wire.log if started < e[0] <= t_ack and e[1] == "up"]
    blocks = sum(k.get("requests", 0) for k in fw)
    fig = {
        "wakes with /fw blocks": downloading,
        "wakes from the first block to the confirmation": len(wakes) - 1,
        "Block2 requests (manifest + files)": "%d + %d" % (fw[0].get("requests", 0),
                                                           fw[1].get("requests", 0)),
        "Block2 requests": blocks,
        "retransmissions of /fw requests": sum(k.get("retx", 0) for k in fw),
        "/fw bytes up (UDP payload)": sum(k.get("up", 0) for k in fw),
        "/fw bytes down (UDP payload)": sum(k.get("down", 0) for k in fw),
        "/fw datagrams": sum(k.get("datagrams", 0) for k in fw),
        "/fw bytes per block, both ways": round(sum(k.get("up", 0) + k.get("down", 0) for k in fw)
                                                / max(1, blocks), 1),
        "all bytes of those wakes, up/down": "%d/%d" % (sum(k["up"] for k in t.values()),
                                                        sum(k["down"] for k in t.values())),
        "exchanges of those wakes by kind (requests)": {k: v["requests"] for k, v in t.items()},
        "a wake without an update, bytes up/down, datagrams": "%d/%d, %d" % (
            per_plain["up"], per_plain["down"], per_plain["datagrams"]),
        "switch: ota.switch log line -> first acked report of the new version, ms": round(
            (t_ack - t_switch) * 1000),
        "  of it, the reset (the process ends, the supervisor starts it), ms": round(
            (started - t_switch) * 1000),
        "  the boot up to its first request, ms": round((first_req[0] - started) * 1000),
        "  the first request up to the report's ack, ms": round((t_ack - first_req[0]) * 1000),
        "  requests before that ack": before_ack,
        "switch -> 'confirmed' (ota.json, boot.json written), ms": round(
            (confirmed - t_switch) * 1000),
        "a wake without an update: start -> its report's ack, ms (median)": round(plain_ms),
        "  (the wake that switched ended, ms after the log line)": round(
            (ended - t_switch) * 1000),
    }
    return fig


@pytest.fixture(scope="module")
def updates(tmp_path_factory):
    """Both updates, (a) every file and (b) one driver, through one real hub."""
    mp = _micropython()
    work = str(tmp_path_factory.mktemp("ota-wire"))
    mpypath = _mpy_path(os.path.join(work, "mpy"))
    hub = harness.Hub(os.path.join(work, "hub")).start()
    out = {}
    try:
        for version, changed in ((FULL, None), (ONE, ONE_CHANGED)):
            d = os.path.join(work, "bundle-" + version)
            m = _full_bundle(d, version) if changed is None else make_bundle(
                d, version=version, changed=changed)
            assert firmware.publish(hub.data, d)[0] == version
            size = os.path.getsize(os.path.join(d, "manifest.json"))
            files = [e for e in m["files"] if e["path"] not in ("boot.py", "main.py")]
            fig = {"bundle: files downloaded or copied, bytes": "%d, %d" % (
                len(files), sum(e["size"] for e in files)),
                "manifest bytes": size}
            fig.update(_update(hub, mp, mpypath, work, "ota-" + version.split("-")[1], version))
            out[version] = fig
    finally:
        hub.stop()
    return out


def _esp32_estimate(per_block):
    """The full download of the ESP32 bundle (.mpy files) at the measured bytes per block."""
    d = tempfile.mkdtemp(prefix="sp-esp32-")
    try:
        m = bundle.build_bundle(out=os.path.join(d, "b"), quiet=True)
        man = os.path.getsize(os.path.join(d, "b", "manifest.json"))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    files = [e for e in m["files"] if e["path"] not in ("boot.py", "main.py")]
    blocks = -(-man // BLOCK) + sum(-(-e["size"] // BLOCK) for e in files)
    per_wake = _ota_default("blocks_per_wake")
    return {"ESP32 bundle (.mpy): files, bytes, manifest bytes": "%d, %d, %d" % (
        len(files), sum(e["size"] for e in files), man),
        "ESP32 bundle: Block2 requests for every file": blocks,
        "ESP32 bundle: wakes with blocks at %d a wake" % per_wake: -(-blocks // per_wake),
        "ESP32 bundle: /fw bytes both ways at the measured bytes per block": round(
            blocks * per_block)}


def test_update_wire_and_wakes(benchmark, updates):
    fig = {}
    for version, name in ((FULL, "a) every file"), (ONE, "b) one driver")):
        for k, v in updates[version].items():
            if not k.startswith(("switch", "  ", "a wake without an update: start")):
                fig["%s: %s" % (name, k)] = v
    fig["ota.blocks_per_wake (default)"] = _ota_default("blocks_per_wake")
    fig.update(_esp32_estimate(updates[FULL]["/fw bytes per block, both ways"]))
    benchmark.extra_info.update({k: v if isinstance(v, (int, float, str)) else json.dumps(v)
                                 for k, v in fig.items()})
    print("\nOTA on the wire:", json.dumps(fig, indent=1))
    benchmark.group = "OTA wire and wakes (figures in extra_info)"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


def test_switch_time(benchmark, updates):
    fig = {}
    for version, name in ((FULL, "a) every file"), (ONE, "b) one driver")):
        for k, v in updates[version].items():
            if k.startswith(("switch", "  ", "a wake without an update: start")):
                fig["%s: %s" % (name, k)] = v
    benchmark.extra_info.update({k: v if isinstance(v, (int, float, str)) else json.dumps(v)
                                 for k, v in fig.items()})
    print("\nOTA switch:", json.dumps(fig, indent=1))
    benchmark.group = "OTA switch time (figures in extra_info)"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


# -- 3: the node's heap during a download ---------------------------------------------------

HEAP_SEARCH = (64 * 1024, 640 * 1024)   # 64-bit heap sizes the smallest complete wake lies in
HEAP_WINDOW = 64 * 1024                  # the first round's sizes: this much above the resident
HEAP_POINTS = 11                         # sizes tried at once per probe and round
LARGE_HEAP = 2 * 1024 * 1024             # the preparing wake's heap
# the size report's reference node; its PMS5003 with a short warm-up (the part's params and
# the simulation's), so that a wake takes seconds rather than the datasheet's 30 s
SENSORS = [dict(s, params={"warmup_ms": 300}) if s["driver"] == "pms5003" else s
           for s in fwsize.REFERENCE_SENSORS]
SIM = {"seed": 1, "pms_warmup_s": 0.3}


class _HeapHub:
    """A hub with security "oscore" on loopback; `wanted`: its nodes.firmware, served from
    its store."""

    def __init__(self, work, name, wanted=None, bundle_dir=None):
        from smartpark.hub.process import start_hub
        self.data = os.path.join(work, name)
        os.makedirs(self.data)
        args = ["--data", self.data, "--coap-bind", "127.0.0.1", "--coap-port", "0",
                "--http-bind", "127.0.0.1", "--http-port", "0", "--no-zeroconf",
                "--no-multicast", "--security", "oscore"]
        if wanted:
            firmware.publish(self.data, bundle_dir)
            toml = os.path.join(self.data, "hub.toml")
            with open(toml, "w") as f:
                f.write('[nodes]\nfirmware = "%s"\n' % wanted)
            args += ["--config", toml]
        self.handle = start_hub(args, timeout=60, log_path=os.path.join(self.data, "hub.log"))
        self.port = self.handle.coap_port

    def readings(self, node):
        from smartpark.hub.store import stored_readings
        db = os.path.join(self.data, "hub.sqlite3")
        return {(s, t) for _n, s, t, _k, _v in stored_readings(db, node)}

    def close(self):
        self.handle.stop()


class _HeapProbe:
    """One kind of wake, in one layout, at chosen heap sizes: a fresh node (its own id and key)
    per run, optionally brought to a state first by a wake in a large heap (`prep`: its
    ota.blocks_per_wake), then the measured wake (`blocks`: its ota.blocks_per_wake) in the
    heap tried. The wake is fwsize.PROBE's (one whole report cycle to deep sleep); it
    completes when the process reaches deep sleep, its output has no MemoryError or
    traceback, the hub stored a reading of every sensor from it, and the update got as far
    as it should (`expect`: blocks of the manifest and of files on flash, or None)."""

    def __init__(self, name, layout, hub, code, romfs, sim, mp, work, prep=None, blocks=None,
                 expect=None):
        self.name, self.layout, self.hub = name, layout, hub
        self.romfs, self.mp, self.work = romfs, mp, work
        self.prep, self.blocks, self.expect = prep, blocks, expect
        path = [".frozen", sim] if romfs else [".frozen", code, os.path.join(code, "lib"), sim]
        self.env = dict(os.environ, MICROPYPATH=":".join(path))
        self.results = {}   # heap -> (ok, figures, tail)
        self._n = 0
        self._lock = threading.Lock()

    def _config(self, flash, node, blocks):
        cfg = {"node": node, "hub": "127.0.0.1:%d" % self.hub.port, "report_interval": 1,
               "deep_sleep": "between_reports", "watchdog_ms": 0,
               "coap": {"ack_timeout": 1.0, "max_retransmit": 4}, "sim": SIM,
               "sensors": SENSORS}
        if blocks is not None:
            cfg["ota"] = {"blocks_per_wake": blocks}
        with open(os.path.join(flash, "config.json"), "w") as f:
            json.dump(cfg, f)

    def _wake(self, flash, heap):
        p = subprocess.run([self.mp, "-X", "heapsize=%d" % heap, "-c", fwsize.PROBE,
                            self.romfs or "", "cycle"], cwd=flash, env=self.env,
                           capture_output=True, timeout=120)
        return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")

    def run(self, heap):
        from smartpark.tools import provision
        with self._lock:
            self._n += 1
            node = "heap-%s-%s-%d" % (self.layout, self.name.split()[0], self._n)
        flash = os.path.join(self.work, node)
        os.makedirs(flash)
        provision.provision_dir(self.hub.data, node, flash)
        if self.prep is not None:
            self._config(flash, node, self.prep)
            rc, text = self._wake(flash, LARGE_HEAP)
            assert rc == EXIT_WAKE and "MemoryError" not in text, text[-2000:]
            # the next wake a whole interval later: else a pulse on the meter's pin would wake
            # the node before its report is due, and it would sleep on without reporting
            time.sleep(1.5)
        before = self.hub.readings(node)
        self._config(flash, node, self.blocks)
        rc, text = self._wake(flash, heap)
        figures = None
        for line in text.splitlines():
            if line.startswith("HEAPPROBE "):
                figures = json.loads(line[len("HEAPPROBE "):])
        why = ("exit %s" % rc if rc != EXIT_WAKE else "no figures" if figures is None
               else "MemoryError" if "MemoryError" in text or "Traceback" in text
               else self._stored(node, before) or self._got(flash))
        self.results[heap] = (why is None, figures, "%s\n%s" % (why, text[-1500:]))
        return why is None

    def _stored(self, node, before):
        """None when the hub stored a reading of every sensor from this wake, else what is
        missing."""
        # the SCD41's single shot is read 5,000 ms after it starts (the datasheet's longest);
        # now and then the simulated part is not ready by then, and that wake reports no CO2
        # but completed all the same
        want = {s["name"] for s in SENSORS if s["driver"] != "scd4x"}
        for _ in range(20):
            missing = want - {s.split(".")[0] for s, _t in self.hub.readings(node) - before}
            if not missing:
                return None
            time.sleep(0.1)
        return "readings missing at the hub: %s" % ", ".join(sorted(missing))

    def _got(self, flash):
        """None when the update got as far as expected, else what it got."""
        if self.expect is None:
            return None
        st = _read_json(os.path.join(flash, "ota.json")) or {}
        d = os.path.join(flash, "app_" + st.get("slot", "b"))
        try:
            man = -(-os.path.getsize(os.path.join(d, "manifest.json")) // BLOCK)
        except OSError:
            man = 0
        files = 0
        for root, _dirs, names in os.walk(d):
            for name in names:
                rel = os.path.relpath(os.path.join(root, name), d)
                if rel not in ("manifest.json", "files.lst", "files.lst.tmp", "version"):
                    files += -(-os.path.getsize(os.path.join(root, name)) // BLOCK)
        got = (st.get("state"), st.get("result"), st.get("file", -1) >= 0, man, files)
        return None if got == ("downloading", None, True) + self.expect else "ota %r" % (got,)

    def peak(self):
        """The smallest heap tried from which on every run completed, less the interpreter's
        own start (fwsize's peak); near the edge a run's luck with fragmentation differs."""
        failed = [h for h, (ok, _f, _t) in self.results.items() if not ok]
        above = max(failed, default=0)
        heap = min(h for h, (ok, _f, _t) in self.results.items() if ok and h > above)
        return heap - self.results[heap][1]["base"]


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _search(probes):
    """Bisect every probe's smallest completing heap to fwsize.RESOLUTION: a run in the largest
    heap (it must complete; it gives the resident heap, below which nothing completes), then
    rounds of HEAP_POINTS sizes per probe, the first round over HEAP_WINDOW above the
    resident heap, each next one between the largest size that failed and the smallest that
    completed. Every run of a round at once: a wake mostly waits on its sensors."""
    from concurrent.futures import ThreadPoolExecutor
    res = fwsize.RESOLUTION
    with ThreadPoolExecutor(len(probes) * HEAP_POINTS) as pool:
        top = HEAP_SEARCH[1]
        for p, ok in zip(probes, pool.map(lambda p: p.run(top), probes), strict=True):
            assert ok, "%s/%s did not complete in %d B:\n%s" % (p.layout, p.name, top,
                                                                p.results[top][2])
        bounds = {}
        for p in probes:
            f = p.results[top][1]
            bounds[p] = [max(HEAP_SEARCH[0], (f["base"] + f["resident"]) // res * res), top]
        window = HEAP_WINDOW
        while True:
            todo = []
            for p, (lo, hi) in bounds.items():
                hi = min(hi, lo + window)
                step = max(res, (hi - lo) // HEAP_POINTS // res * res)
                todo += [(p, h) for h in range(hi, lo, -step)][:HEAP_POINTS]
            todo = [(p, h) for p, h in todo
                    if h < bounds[p][1] and bounds[p][1] - bounds[p][0] > res]
            if not todo:
                break
            for (p, h), ok in zip(todo, pool.map(lambda ph: ph[0].run(ph[1]), todo), strict=True):
                lo, hi = bounds[p]
                if ok and h < hi:
                    bounds[p][1] = h
                elif not ok and h > lo:
                    bounds[p][0] = h
            for p, (lo, hi) in bounds.items():   # a failure above a pass: a run's own luck
                if lo >= hi:
                    bounds[p][0] = hi - res
            window = 1 << 40


def test_heap_during_a_download(benchmark, tmp_path):
    mp = _micropython()
    work = str(tmp_path)
    code = os.path.join(work, "fw")
    bundle.build_bundle(out=code, quiet=True)   # the ESP32 bundle, as the size report runs it
    image = os.path.join(code, fwsize.ROMFS_IMAGE)
    if not os.path.isfile(image):
        fwsize.build_romfs(code, image)
    sim = fwsize._compiled_sim(code, work)
    new = os.path.join(work, "new")
    _full_bundle(new, FULL)
    man = -(-os.path.getsize(os.path.join(new, "manifest.json")) // BLOCK)
    share = _ota_default("blocks_per_wake")
    hubs = {"plain": _HeapHub(work, "hub-plain"), "update": _HeapHub(work, "hub-update", FULL, new)}
    probes = []
    where = {}
    try:
        for layout in fwsize.LAYOUTS:
            kw = {"code": code, "romfs": image if layout == "romfs" else None, "sim": sim,
                  "mp": mp, "work": work}
            probes += [
                _HeapProbe("first wake, no update", layout, hubs["plain"], **kw),
                _HeapProbe("manifest phase", layout, hubs["update"], blocks=man,
                           expect=(man, 0), **kw),
                _HeapProbe("next wake, no update", layout, hubs["plain"], prep=share, **kw),
                _HeapProbe("files phase", layout, hubs["update"], prep=man,
                           expect=(man, share), **kw),
            ]
        t0 = time.monotonic()
        _search(probes)
        took = time.monotonic() - t0
        for p in probes:   # where the extra goes, in the files phase's wake
            if p.name == "files phase":
                where[p.layout] = _where(p)
    finally:
        for h in hubs.values():
            h.close()
    fig = {"manifest blocks": man, "blocks per wake": share, "search took, s": round(took)}
    peaks = {(p.layout, p.name): p.peak() for p in probes}
    for layout in fwsize.LAYOUTS:
        ratio = fwsize.RATIO_32[(layout, "peak")]
        for name, base in (("manifest phase", "first wake, no update"),
                           ("files phase", "next wake, no update")):
            extra = peaks[(layout, name)] - peaks[(layout, base)]
            fig["%s %s: peak, against %s (64-bit)" % (layout, name, base)] = "%d vs %d" % (
                peaks[(layout, name)], peaks[(layout, base)])
            fig["%s %s: extra (64-bit)" % (layout, name)] = extra
            fig["%s %s: extra (32-bit estimate)" % (layout, name)] = int(extra * ratio)
        worst = max(fig["%s %s: extra (32-bit estimate)" % (layout, n)]
                    for n in ("manifest phase", "files phase"))
        fig["%s: the download's extra, 32-bit, against RESERVED['ota'] %d" % (
            layout, fwsize.RESERVED["ota"])] = "%d (%+d)" % (worst, worst - fwsize.RESERVED["ota"])
        for name, w in where[layout].items():
            fig["%s: importing %s.py (64-bit): live, new qstrs, qstr pool grew" % (
                layout, name)] = "%d B, %d, %d B" % (w["live"], w["qstrs"], w["qstr pool"])
    for p in probes:   # how sharp each edge was: the runs near it, and any odd one out
        peak = min(h for h, r in p.results.items() if r[0])   # the smallest that completed
        print("%s/%s:" % (p.layout, p.name), " ".join(
            "%d%s" % (h, "+" if r[0] else "-" if r[2].startswith("exit 1") else "?")
            for h, r in sorted(p.results.items()) if peak - 4096 <= h <= peak + 4096))
        for h, r in sorted(p.results.items()):
            if h > peak and not r[0]:
                print("  failed above it, at %d: %s" % (h, r[2].split("\n")[0]))
    benchmark.extra_info.update(fig)
    print("\nnode heap during a download:", json.dumps(fig, indent=1))
    benchmark.group = "OTA node heap (figures in extra_info)"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


# A wake as fwsize.PROBE runs it, in a large heap, that takes apart what the update brings in
# before node.update() runs as usual: live heap (gc.mem_alloc() after a collection) and the
# qstr pool (micropython.qstr_info(); its next line follows each QSTR marker) around
# importing remotecfg (which the node unloads at boot), ota and, with ota unloaded, otaman.
_WHERE = fwsize.PROBE.replace("asyncio.run(n.run(1))", r"""
    import micropython, compat
    where = {}
    def live():
        gc.collect()
        return gc.mem_alloc()
    orig = node.Node.update
    async def update(self):
        for name in ("remotecfg", "ota", "otaman"):
            if name == "otaman":
                compat.unload("ota")
            print("QSTR before", name)
            micropython.qstr_info()
            a0 = live()
            __import__(name)
            where[name] = live() - a0
            print("QSTR after", name)
            micropython.qstr_info()
        compat.unload("otaman")
        print("WHERE " + json.dumps(where))
        await orig(self)
    node.Node.update = update
    asyncio.run(n.run(1))
""")


def _where(probe):
    """What importing the update's modules costs in a wake of `probe` (a large heap): live
    bytes per module, and the qstr pool's growth (bytes, new qstrs) per module."""
    saved = fwsize.PROBE
    fwsize.PROBE = _WHERE
    try:
        probe.run(LARGE_HEAP)
    finally:
        fwsize.PROBE = saved
    ok, _f, text = probe.results.pop(LARGE_HEAP)
    assert ok, text
    out, pools = {}, {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("QSTR "):
            f = dict(kv.split("=") for kv in lines[i + 1].split(":", 1)[1].replace(",", "").split())
            pools[line[5:]] = (int(f["n_qstr"]), int(f["n_total_bytes"]))
        elif line.startswith("WHERE "):
            out = json.loads(line[6:])
    return {name: {"live": live, "qstrs": pools["after " + name][0] - pools["before " + name][0],
                   "qstr pool": pools["after " + name][1] - pools["before " + name][1]}
            for name, live in out.items()}



# -- 4: the hub's CPU per block served, at half load ----------------------------------------

PEERS = 500
LOAD_SECONDS = 1.5     # each window at half load: without blocks, with, without, ... (PAIRS)
PAIRS = 4
IN_FLIGHT = 4          # the block client's requests outstanding


class _BlockClient:
    """An aiocoap OSCORE client (a node's key, from the hub's key store) on an event loop of its
    own thread: between start() and stop() it fetches 512-byte blocks of a stored version's
    files, IN_FLIGHT at a time, and counts the 2.05 answers (`blocks`) and the rest
    (`errors`)."""

    def __init__(self, port, ctxdir, version, manifest):
        self.uri = "coap://127.0.0.1:%d" % port
        self.ctxdir = ctxdir
        self.work = [(["fw", version] + e["path"].split("/"), n) for e in manifest["files"]
                     for n in range(-(-e["size"] // BLOCK))]
        self.blocks = 0
        self.errors = 0
        self._next = 0
        self._running = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.ctx = self._call(self._context())

    def _call(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _context(self):
        import aiocoap
        ctx = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
        ctx.client_credentials.load_from_dict({self.uri + "/*": {"oscore": {
            "basedir": self.ctxdir}}})
        return ctx

    async def _worker(self):
        import aiocoap
        from aiocoap.optiontypes import BlockOption
        while self._running:
            path, num = self.work[self._next % len(self.work)]
            self._next += 1
            m = aiocoap.Message(code=aiocoap.GET, uri=self.uri + "/fw")
            m.opt.uri_path = tuple(path)
            m.opt.block2 = BlockOption.BlockwiseTuple(num, False, 5)
            try:
                r = await asyncio.wait_for(self.ctx.request(m, handle_blockwise=False).response,
                                           10)
                if r.code == aiocoap.CONTENT:
                    self.blocks += 1
                else:
                    self.errors += 1
            except Exception:  # noqa: BLE001 - counted; the run says how many
                self.errors += 1

    def start(self):
        """Fetch from now on; returns once the first block came back."""
        self.blocks = self.errors = 0
        self._running = True

        async def go():
            return asyncio.gather(*(self._worker() for _ in range(IN_FLIGHT)))

        self._tasks = self._call(go())
        t0 = time.monotonic()
        while self.blocks == 0 and time.monotonic() - t0 < 20:
            time.sleep(0.01)
        assert self.blocks, "no block served (%d errors)" % self.errors
        return self

    def stop(self):
        self._running = False

        async def done():
            await self._tasks

        self._call(done())

    def close(self):
        self._call(self.ctx.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def test_hub_cpu_per_block_at_half_load(benchmark, tmp_path):
    from smartpark import fast
    if fast.loadgen is None:
        pytest.skip("smartpark.fast.loadgen: %s" % fast.UNAVAILABLE["loadgen"])
    from smartpark.tools import coapload
    work = str(tmp_path)
    [tg] = coapload.targets(work, names=("hub-oscore",), peers=PEERS)
    d = os.path.join(work, "fw")
    m = make_bundle(d, version=FULL)
    firmware.publish(tg.cwd, d)
    ctxdir = os.path.join(work, "ctx-ota")
    keys.write_aiocoap(ctxdir, keys.ensure(tg.cwd, "ota-cpu")[0])
    tg.start(timeout=60)
    rows = []
    client = None
    try:
        client = _BlockClient(tg.port, ctxdir, FULL, m)
        pid = tg.proc.pid

        def window(blocks, rate=None, seconds=LOAD_SECONDS):
            """Hub CPU over `seconds` of reports at `rate` per peer (None: none) and with
            `blocks` fetched or not; the blocks counted over the same stretch."""
            if blocks:
                client.start()
            b0, c0 = client.blocks, coapload._cpu_s(pid)[0]
            if rate is None:
                time.sleep(seconds)
                answered = 0
            else:
                r = coapload.load("127.0.0.1", tg.port, peers=PEERS, peer_rate=rate,
                                  seconds=seconds, window=4, drain=0.5, oscore=tg.oscore)
                answered = sum(r["codes"].values())
            b1, c1 = client.blocks, coapload._cpu_s(pid)[0]
            if blocks:
                client.stop()
            rows.append({"blocks": b1 - b0 if blocks else 0, "reports": answered,
                         "cpu_s": c1 - c0, "errors": client.errors if blocks else 0})
            return rows[-1]

        coapload.load("127.0.0.1", tg.port, peers=50, peer_rate=50, seconds=0.5, window=1,
                      drain=1.0, oscore=tg.oscore)   # every peer known to the hub
        window(True, None, 1.0)                      # the files read into the hub's cache
        full = coapload.load("127.0.0.1", tg.port, peers=PEERS, peer_rate=250.0, seconds=3.0,
                             window=4, drain=1.0, oscore=tg.oscore)["acked_per_s"]
        half = max(1.0, min(250.0, full / 2 / PEERS))
        window(False, half, 2.0)                     # settled at half load
        rows.clear()
        quiet = window(False, None, 2.0)
        idle = window(True, None, 2.0)
        runs = [window(b, half) for b in (False, True) * PAIRS + (False,)]
    finally:
        if client is not None:
            client.close()
        tg.stop()
    # each window with blocks against the windows without on either side of it
    per_block, per_report = [], []
    for i in range(1, len(runs), 2):
        plain = [runs[i - 1], runs[i + 1]]
        us = sum(r["cpu_s"] for r in plain) / sum(r["reports"] for r in plain)
        per_report.append(us)
        per_block.append((runs[i]["cpu_s"] - runs[i]["reports"] * us) / runs[i]["blocks"])
    report_us, block_us = _med(per_report) * 1e6, _med(per_block) * 1e6
    idle_us = (idle["cpu_s"] - quiet["cpu_s"]) / idle["blocks"] * 1e6
    fig = {
        "full load, acked reports/s": round(full),
        "half load offered, reports/s": round(half * PEERS),
        "hub CPU per report at half load, us (median of %d)" % len(per_report): round(report_us, 1),
        "blocks served at half load, per window of %g s (+0.5 s drain)" % LOAD_SECONDS: _med(
            [r["blocks"] for r in runs if r["blocks"]]),
        "hub CPU per block at half load, us (median of %d)" % len(per_block): round(block_us),
        "  its spread, us": "%d..%d" % (min(per_block) * 1e6, max(per_block) * 1e6),
        "per block / per report": round(block_us / report_us, 1),
        "hub CPU per block, idle hub, us": round(idle_us),
        "  idle hub / at half load": round(idle_us / block_us, 2),
        "block requests that failed": sum(r["errors"] for r in rows),
        "windows (blocks, reports, hub CPU s)": json.dumps(
            [(r["blocks"], r["reports"], round(r["cpu_s"], 3)) for r in rows]),
    }
    benchmark.extra_info.update(fig)
    print("\nhub CPU per OTA block at half load:", json.dumps(fig, indent=1))
    benchmark.group = "OTA hub CPU per block (figures in extra_info)"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
