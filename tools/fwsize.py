"""What the node firmware needs of a board: flash and heap, measured, per board class.

`smartpark firmware build` ends with this report and `smartpark firmware size
BUNDLE` prints it for a bundle already built. For every board class a park
buys (BOARD_CLASSES: a plain ESP32 without PSRAM, an ESP32-C3, an ESP32-S3
with PSRAM) and every way of putting the code on it (LAYOUTS: .mpy files on
the filesystem, or a ROMFS image whose bytecode runs in place from flash) it
states what the node needs against that board's budget, with the share used.

Heap is measured, never guessed from file sizes. The bundle runs on the
MicroPython unix port (64-bit) against a real hub on loopback, as a node of
the reference configuration (REFERENCE_SENSORS, or --config):

  resident  gc.mem_alloc() after `import node` and Node(), after a collection,
            less what the interpreter held before (the simulation's parts and
            world are imported first and not counted: an ESP32 never loads them);
  peak      the smallest heap (`-X heapsize`) in which the node boots and runs
            one whole report cycle (sample every sensor, health, RD
            registration, time sync, drain, deep sleep), less the same start;
            found by trying a dozen heap sizes at once, twice or three times
            (measure_probes), to within a few RESOLUTION bytes. A
            shortfall shows as a MemoryError in the node's output, which is how
            a run that "finished" with a sensor down is told from a good one;
  per report  peak - resident.

A 32-bit ESP32 stores objects in half the bytes a 64-bit port does, bytecode in
the same bytes, so the 64-bit figures are scaled by RATIO_32, measured once per
figure and layout on two unix builds (32 and 64 bit) of one MicroPython source
(`smartpark firmware size --calibrate`; docs/firmware-size.md says how).

The budget for heap is BUDGET_SHARE (70 %) of the heap free at boot, so that
fragmentation has room; the node's peak (its OSCORE included: the probe nodes
carry keys) plus the allowance still reserved for code that does not exist yet
(RESERVED: OTA download buffers) must fit under it. Flash: both firmware slots (an OTA update writes the new version
beside the running one), the outbox at the default 2,000 readings (twice:
compaction writes a copy before it renames), keys, config and state files, each rounded up
to whole filesystem blocks, must leave FLASH_MARGIN of the filesystem free; in
the ROMFS layout the image must fit the ROMFS partition, and the filesystem
holds boot.py, main.py, the manifest, the data and room to stage the next
image.

Exit codes of `smartpark firmware size` (and of `firmware build`, which adds them
to its own): 6 a target class does not fit in any layout (--force: report
only); 7 the heap could not be measured (no micropython binary, the node did not
complete a cycle in the largest heap, or the hub did not start).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from smartpark.tools.progress import say

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_TOO_BIG = 6
EXIT_UNMEASURED = 7

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIM_SOURCE = os.path.join(ROOT, "firmware", "sim")
ROMFS_IMAGE = "code.romfs"          # in the bundle directory, beside manifest.json
# never in the ROMFS image; oscore.json (the node's key, written by flash) is listed so that
# a bundle that carries one by mistake never bakes a key into a code image
FS_ONLY = ("boot.py", "main.py", "manifest.json", ROMFS_IMAGE, "oscore.json")
BLOCK = 4096                        # LittleFS block of an ESP32's filesystem
KIB = 1024

BUDGET_SHARE = 0.70                 # of the heap free at boot
FLASH_MARGIN = 0.25                 # of the filesystem left free
RESOLUTION = 512                    # bytes: the peak's precision
LARGEST_HEAP = 2 * 1024 * 1024      # a node that cannot run in this is broken, not big

# A node with the heaviest parts a park deploys on one board: an outdoor air
# station (climate, CO2, particulates, light) that also counts a meter and
# watches its battery. Six drivers: the ones with the most code.
REFERENCE_SENSORS = [
    {"name": "air", "driver": "bme280", "pins": {"sda": 21, "scl": 22}},
    {"name": "co2", "driver": "scd4x", "pins": {"sda": 21, "scl": 22}},
    {"name": "light", "driver": "bh1750", "pins": {"sda": 21, "scl": 22}},
    {"name": "pm", "driver": "pms5003", "bus": "uart2", "pins": {"rx": 16, "tx": 17}},
    {"name": "meter", "driver": "pulse", "bus": "pin", "pins": {"in": 4}},
    {"name": "battery", "driver": "adc", "bus": "adc", "pins": {"adc": 35}},
]
OUTBOX_RECORDS = 2000               # the config schema's default outbox_size
OUTBOX_RECORD_BYTES = 46            # one reading in outbox.log (firmware/outbox.py framing)
STATE_FILES = 10                    # config, keys, clock, ident, hub.addr, pulses, status, crash log, ...

# 64-bit -> 32-bit heap, per figure and layout: bytes on a 32-bit build divided by
# bytes on a 64-bit build of the same MicroPython source, same bundle, same node
# (`smartpark firmware size --calibrate`; docs/firmware-size.md); the highest of
# the runs, so that an estimate errs high.
RATIO_32 = {
    ("fs", "resident"): 0.692,
    ("fs", "peak"): 0.713,
    ("romfs", "resident"): 0.577,
    ("romfs", "peak"): 0.630,
}

# Heap held back from every budget, in 32-bit bytes, for what the probe's report cycle
# does not run: an OTA download. 4 KB is the target the download must meet, and it is
# missed: benchmarks/test_ota_bench.py measures +12,902 to +13,547 B with ROMFS (32-bit
# estimate), 8.8-9.5 KB over. Of the 20 KB it takes on the 64-bit port, 14.6 KB is MicroPython's qstr
# pool taking its next chunk when the update's new names (ota.py, otaman.py) no longer
# fit; ota.py and remotecfg.py themselves are 5 KB (docs/firmware-size.md, "What an
# update costs").
# Nothing is held back for OSCORE: the probe nodes carry keys and the hub verifies
# them, so its module, security context and protected exchanges are in the measured
# resident and peak figures (OSCORE adds about 5 KB to the peak with ROMFS and 11 KB
# with .mpy files, 32-bit; docs/firmware-size.md).
RESERVED = {"oscore": 0, "ota": 4 * KIB}


class BoardClass:
    def __init__(self, key, title, heap, heap_source, filesystems, romfs, note=""):
        self.key = key
        self.title = title
        self.heap = heap                    # bytes: gc.mem_free() at boot, Wi-Fi's share kept aside
        self.heap_source = heap_source
        self.filesystems = filesystems      # {partition table: filesystem bytes}
        self.romfs = romfs                  # bytes of a ROMFS partition, when a table has one
        self.note = note

    def budget(self):
        return int(self.heap * BUDGET_SHARE)


# MicroPython 1.28's ESP32 port (ports/esp32): the GC heap starts at 56 KiB (ESP32)
# or 64 KiB (C3, S3) and grows on demand into ESP-IDF's free memory
# (MICROPY_GC_SPLIT_HEAP_AUTO); gc.mem_free() counts that room ("max new split").
# Its filesystem is created at first boot from the end of the last partition to
# the end of flash: 2 MiB on 4 MiB flash with the default table
# (partitions-4MiBplus.csv), 960 KiB with the OTA table (partitions-4MiB-ota.csv:
# two 1.5 MiB app slots). partitions-4MiB-romfs.csv adds a 128 KiB "romfs"
# partition; no stock board enables ROMFS (MICROPY_VFS_ROM), so the ROMFS layout
# needs a build of MicroPython with it (docs/firmware-size.md).
BOARD_CLASSES = {
    "esp32": BoardClass(
        "esp32", "ESP32 (no PSRAM)", 111936,
        "MicroPython's own figure for an ESP32's GC heap after its first growth, with "
        "about 40 KB left to ESP-IDF for Wi-Fi and sockets (micropython commit f6d630877c)",
        {"default": 2048 * KIB, "ota": 960 * KIB}, 128 * KIB),
    "esp32c3": BoardClass(
        "esp32c3", "ESP32-C3", 150912,
        "gc.mem_free() of a LOLIN C3 Mini on MicroPython 1.22.2 (52,608 free + 139,264 "
        "max new split; github.com/micropython/micropython/issues/14293) less 40 KB kept for Wi-Fi, as on the ESP32",
        {"default": 2048 * KIB, "ota": 960 * KIB}, 128 * KIB),
    "esp32s3": BoardClass(
        "esp32s3", "ESP32-S3 with PSRAM", 2048 * KIB - 64 * KIB,
        "the smallest PSRAM part (2 MiB) less 64 KiB; an 8 MiB board shows 8,319,360 "
        "(github.com/micropython/micropython/issues/12237)",
        {"default": 2048 * KIB, "ota": 960 * KIB}, 128 * KIB),
}
LAYOUTS = ("fs", "romfs")


BOOT_ALLOC = 2048  # heap MicroPython itself holds after boot (1.4 KB measured on the unix port)


def need_on_board(size, layout, platform):
    """(bytes of heap the node needs on a board, text of how) from a manifest's size section:
    the 32-bit estimate on an ESP32, the 64-bit measurement (plus the reserve) elsewhere."""
    if platform == "esp32":
        est = size["estimate_32bit"].get(layout)
        if est is None:
            return None, None
        return est["total"], "resident %d + per report %d + reserved %d, 32-bit estimate" % (
            est["resident"], est["per_report"], est["reserved"])
    m = size["measured_64bit"].get(layout)
    if m is None:
        return None, None
    reserved = int(sum(size["reserved"].values()) / RATIO_32[(layout, "peak")])
    return m["peak"] + reserved, "peak %d + reserved %d, measured on the 64-bit unix port" % (
        m["peak"], reserved)


def board_budget(heap):
    """The heap budget of a board whose gc.mem_free() + gc.mem_alloc() is `heap`."""
    return int(BUDGET_SHARE * max(0, heap - BOOT_ALLOC))


class SizeError(Exception):
    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code


# -- measuring on the unix port ----------------------------------------------------

# Runs under MicroPython in a node's flash directory. argv: [romfs image path or "",
# "cycle" (a whole report cycle, ending in deep sleep) or "resident" (stop after Node())].
PROBE = """
import gc, sys, json
if len(sys.argv) > 1 and sys.argv[1]:
    import vfs
    vfs.mount(vfs.VfsRom(open(sys.argv[1], "rb").read()), "/rom")
    sys.path.insert(1, "/rom/lib")
    sys.path.insert(1, "/rom")
import sim.parts, sim.world
gc.collect()
base = gc.mem_alloc()
import compat
compat.tune_gc()
import node, asyncio
gc.collect()
imported = gc.mem_alloc() - base
n = node.Node()
gc.collect()
print("HEAPPROBE " + json.dumps({"base": base, "imported": imported,
                                 "resident": gc.mem_alloc() - base, "sensors": len(n.sensors)}))
if sys.argv[2] == "cycle":
    asyncio.run(n.run(1))
"""
DEEP_SLEEP_EXIT = 75  # the simulated board's deep sleep ends the process with this status


def _compiled_sim(bundle_dir, work):
    """A MICROPYPATH entry holding sim/: the bundle's own (unix bundle), else firmware/sim."""
    if os.path.isdir(os.path.join(bundle_dir, "sim")):
        return bundle_dir
    top = os.path.join(work, "simsrc")
    shutil.copytree(SIM_SOURCE, os.path.join(top, "sim"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return top


def build_romfs(bundle_dir, out):
    """The bundle's code (everything but FS_ONLY) as a ROMFS image, by mpremote."""
    stage = tempfile.mkdtemp(prefix="smartpark-romfs-")
    try:
        for name in os.listdir(bundle_dir):
            if name in FS_ONLY:
                continue
            src = os.path.join(bundle_dir, name)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(stage, name))
            else:
                shutil.copyfile(src, os.path.join(stage, name))
        proc = subprocess.run([sys.executable, "-m", "mpremote", "romfs", "--no-mpy", "-o", out,
                               "build", stage], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not os.path.isfile(out):
            raise SizeError(EXIT_UNMEASURED, "mpremote romfs build failed: %s"
                            % (proc.stderr or proc.stdout).strip()[-800:])
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return os.path.getsize(out)


class _Hub:
    """A real hub on loopback for the measuring nodes to report to."""

    def __init__(self, work):
        from smartpark.tools import demo
        self._demo = demo
        self.data = os.path.join(work, "hub")
        self.handle, self.port, self.http_port = demo.start_hub(self.data, 0, 0)
        if self.handle is None:
            raise SizeError(EXIT_UNMEASURED, "the hub for the heap measurement did not start "
                            "(log: %s)" % os.path.join(work, "hub", "hub.log"))

    def node(self, node_id):
        """The hub's view of a node (GET /api/nodes/<id>), None when it does not know it."""
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/api/nodes/%s" % (self.http_port, node_id),
                                        timeout=5) as r:
                return json.loads(r.read().decode())
        except (OSError, ValueError, urllib.error.HTTPError):
            return None

    def close(self):
        self._demo.stop_hub(self.handle)


class Probe:
    """Runs a bundle's node under one micropython binary, in one layout, at chosen heap sizes.

    The node is configured as on a board (no test ledger, deep sleep after one
    cycle); a run counts as complete when the process reached deep sleep, its
    output has no MemoryError (the node logs the ones it survives: a sensor that
    did not start, a measurement that raised) and the hub holds a reading of
    every configured sensor and the node's registration."""

    def __init__(self, bundle_dir, micropython, hub, work, sensors, romfs=None):
        self.bundle = os.path.abspath(bundle_dir)
        self.micropython = micropython
        self.hub = hub
        self.work = work
        os.makedirs(work, exist_ok=True)
        self.sensors = sensors
        self.romfs = romfs
        self.sim = _compiled_sim(self.bundle, work)
        self._n = 0

    def start(self, heap, resident_only=False):
        self._n += 1
        node_id = "size-%s-%d" % (os.path.basename(self.work), self._n)
        flash = os.path.join(self.work, "node%d" % self._n)
        os.makedirs(flash)
        cfg = {"node": node_id, "hub": "127.0.0.1:%d" % self.hub.port,
               "report_interval": 60, "deep_sleep": "between_reports", "watchdog_ms": 0,
               "coap": {"ack_timeout": 1.0, "max_retransmit": 4},
               "sim": {"seed": 1}, "sensors": self.sensors}
        with open(os.path.join(flash, "config.json"), "w") as f:
            json.dump(cfg, f)
        # its OSCORE key, as flash gives a board one: the heap figures include OSCORE
        from smartpark.tools import provision
        provision.provision_dir(self.hub.data, node_id, flash)
        if self.romfs:
            path = [".frozen", self.sim]
        else:
            path = [".frozen", self.bundle, os.path.join(self.bundle, "lib"), self.sim]
        env = dict(os.environ, MICROPYPATH=":".join(path))
        out = open(os.path.join(flash, "node.out"), "wb")
        proc = subprocess.Popen([self.micropython, "-X", "heapsize=%d" % heap, "-c", PROBE,
                                 self.romfs or "", "resident" if resident_only else "cycle"],
                                cwd=flash, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        return _Run(self, heap, node_id, proc, out, flash)


class _Run:
    def __init__(self, probe, heap, node_id, proc, out, flash):
        self.probe = probe
        self.heap = heap
        self.node_id = node_id
        self.proc = proc
        self._out = out
        self.flash = flash

    def finish(self, deadline):
        try:
            rc = self.proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._out.close()
        with open(os.path.join(self.flash, "node.out"), "rb") as f:
            text = f.read().decode("utf-8", "replace")
        figures = None
        for line in text.splitlines():
            if line.startswith("HEAPPROBE "):
                figures = json.loads(line[len("HEAPPROBE "):])
        seen = self.probe.hub.node(self.node_id) if rc == DEEP_SLEEP_EXIT else None
        series = (seen or {}).get("sensors") or []
        names = set()
        for s in series:
            names.add((s.get("name") if isinstance(s, dict) else str(s)).split(".")[0])
        reported = all(s["name"] in names for s in self.probe.sensors)
        ok = (rc == DEEP_SLEEP_EXIT and "MemoryError" not in text and figures is not None
              and bool(seen and seen.get("registered")) and reported)
        return {"ok": ok, "rc": rc, "figures": figures, "seen": sorted(names), "tail": text[-800:]}


def run_all(starts, timeout=120):
    """Start every (probe, heap, resident only) at once, then collect them:
    {(probe, heap): outcome}."""
    runs = [p.start(h, only) for p, h, only in starts]
    deadline = time.monotonic() + timeout
    return {(r.probe, r.heap): r.finish(deadline) for r in runs}


def _bracket(probe, results, lo_default):
    """(largest failing heap below the smallest passing one, smallest passing one, the
    figures of a passing run) among this probe's results, or None when none passed."""
    mine = sorted((h, o) for (q, h), o in results.items() if q is probe)
    passing = [h for h, o in mine if o["ok"]]
    if not passing:
        return None
    hi = min(passing)
    failing = [h for h, o in mine if not o["ok"] and h < hi]
    return (max(failing) if failing else lo_default, hi,
            [o for h, o in mine if o["ok"]][-1]["figures"])


def _fine(lo, hi, width):
    """Up to `width` heap sizes strictly between lo and hi, at least RESOLUTION apart."""
    step = max(RESOLUTION, (hi - lo) // (width + 1) // RESOLUTION * RESOLUTION)
    return list(range(lo + step, hi, step))[:width]


def measure_probes(probes, width=12):
    """64-bit figures for each probe: {probe: {"resident", "imported", "peak", "base", "sensors"}}.

    Every run of a step runs at once (the runs mostly wait on the sensors; the
    host's CPU is what bounds a step, so each has few runs):
    1. the resident figure, from a run that stops after Node();
    2. `width` sizes from there to 1.8 times it (a report cycle has never needed
       more than 1.35), and LARGEST_HEAP, which must pass;
    3. `width` sizes between the largest that failed and the smallest that passed,
       and once more if that bracket is still wider than 4 * RESOLUTION (as it
       is when step 2 passed only in LARGEST_HEAP)."""
    first = run_all([(p, LARGEST_HEAP, True) for p in probes])
    grids = {}
    for p in probes:
        f = first[(p, LARGEST_HEAP)]["figures"]
        if f is None:
            raise SizeError(EXIT_UNMEASURED, "the node did not start in a %d-byte heap (%s):\n%s"
                            % (LARGEST_HEAP, p.micropython, first[(p, LARGEST_HEAP)]["tail"]))
        lo = f["base"] + f["resident"]
        grids[p] = (lo, _fine(lo, int(lo * 1.8), width) + [LARGEST_HEAP])
    coarse = run_all([(p, h, False) for p, (_lo, sizes) in grids.items() for h in sizes])
    brackets = {}
    for p, (lo, _sizes) in grids.items():
        b = _bracket(p, coarse, lo)
        if b is None:
            top = coarse[(p, LARGEST_HEAP)]
            raise SizeError(EXIT_UNMEASURED, "the node did not complete a report cycle in a "
                            "%d-byte heap (%s; exit %s; the hub saw %s):\n%s"
                            % (LARGEST_HEAP, p.micropython, top["rc"], top["seen"], top["tail"]))
        brackets[p] = b
    for _round in range(2):
        todo = [(p, h, False) for p, (lo, hi, _f) in brackets.items() for h in _fine(lo, hi, width)]
        if not todo:
            break
        found = run_all(todo)
        for p, (lo, hi, f) in list(brackets.items()):
            found[(p, hi)] = {"ok": True, "figures": f}   # hi passed before
            brackets[p] = _bracket(p, found, lo)
        if all(hi - lo <= 4 * RESOLUTION for lo, hi, _f in brackets.values()):
            break
    out = {}
    for p, (_lo, hi, f) in brackets.items():
        out[p] = {"resident": f["resident"], "imported": f["imported"], "peak": hi - f["base"],
                  "base": f["base"], "sensors": f["sensors"]}
    return out


def measure(bundle_dir, micropython=None, sensors=None, layouts=LAYOUTS, quiet=False, extra=None):
    """64-bit heap figures of a bundle: {layout: figures}; `extra` maps more binaries
    ({name: path}) to be measured the same way, reported under "<layout>@<name>"."""
    if not micropython:
        from smartpark.tools.ptyboard import find_micropython
        try:
            micropython = find_micropython()
        except FileNotFoundError as e:
            raise SizeError(EXIT_UNMEASURED, "no micropython binary to measure the heap with: "
                            "%s" % e) from None
    work = tempfile.mkdtemp(prefix="smartpark-size-")
    hub = None
    try:
        hub = _Hub(work)
        image = os.path.join(bundle_dir, ROMFS_IMAGE)
        if "romfs" in layouts and not os.path.isfile(image):
            image = os.path.join(work, ROMFS_IMAGE)
            build_romfs(bundle_dir, image)
        binaries = [("", micropython)] + sorted((extra or {}).items())
        probes = {}
        for layout in layouts:
            for name, binary in binaries:
                key = layout + ("@" + name if name else "")
                probes[key] = Probe(bundle_dir, binary, hub, os.path.join(work, key.replace("@", "-")),
                                    sensors or REFERENCE_SENSORS, image if layout == "romfs" else None)
        if not quiet:
            say("firmware size: measuring the node's heap on the unix port (%s)" % ", ".join(probes))
        figures = measure_probes(list(probes.values()))
        return {key: figures[p] for key, p in probes.items()}
    finally:
        if hub is not None:
            hub.close()
        shutil.rmtree(work, ignore_errors=True)


# -- estimates and budgets ----------------------------------------------------------

def blocks(size):
    return ((size + BLOCK - 1) // BLOCK) * BLOCK if size else 0


def flash_need(manifest, layout, image_size=None, outbox_records=OUTBOX_RECORDS):
    """Filesystem bytes the node needs (both firmware slots, data), whole blocks."""
    code = 0
    fs = 0
    for f in manifest["files"]:
        if f["path"].startswith("sim/"):
            continue
        if layout == "romfs" and f["path"] not in FS_ONLY:
            continue
        if f["path"] in FS_ONLY:
            fs += blocks(f["size"])
        else:
            code += blocks(f["size"])
    # an OTA update writes the new version beside the running one: in the ROMFS layout the
    # new image is staged on the filesystem before it replaces the partition's
    slots = 2 * (code + fs) if layout == "fs" else 2 * fs + blocks(image_size or code)
    outbox = 2 * blocks(outbox_records * OUTBOX_RECORD_BYTES)
    return {"slots": slots, "outbox": outbox, "state": STATE_FILES * BLOCK,
            "total": slots + outbox + STATE_FILES * BLOCK, "romfs_image": image_size}


def estimate(figures, layout):
    """32-bit heap estimate (resident, per report, reserved, total) from 64-bit figures."""
    res = int(figures["resident"] * RATIO_32[(layout, "resident")])
    peak = int(figures["peak"] * RATIO_32[(layout, "peak")])
    reserved = sum(RESERVED.values())
    return {"resident": res, "per_report": max(0, peak - res), "peak": peak,
            "reserved": reserved, "total": peak + reserved}


def assess(manifest, measured, classes=None, image_size=None):
    """Rows of the report: one per (board class, layout, partition table)."""
    rows = []
    for key in (BOARD_CLASSES if classes is None else classes):
        bc = BOARD_CLASSES[key]
        for layout in LAYOUTS:
            if layout not in measured:
                continue
            est = estimate(measured[layout], layout)
            tables = ("default", "ota") if layout == "fs" else ("default",)
            fl = flash_need(manifest, layout, image_size)
            for table in tables:
                fsize = bc.filesystems[table]
                flash_ok = fl["total"] <= fsize * (1 - FLASH_MARGIN)
                if layout == "romfs":
                    flash_ok = flash_ok and image_size is not None and image_size <= bc.romfs
                rows.append({
                    "class": key, "title": bc.title, "layout": layout, "table": table,
                    "heap": bc.heap, "budget": bc.budget(), "ram": est,
                    "ram_ok": est["total"] <= bc.budget(),
                    "filesystem": fsize, "flash": fl, "flash_ok": flash_ok,
                    "romfs_partition": bc.romfs if layout == "romfs" else None,
                })
    return rows


def verdicts(rows):
    """{class: [layouts (with table) that fit]}."""
    out = {}
    for r in rows:
        fits = out.setdefault(r["class"], [])
        if r["ram_ok"] and r["flash_ok"]:
            fits.append("%s/%s" % (r["layout"], r["table"]))
    return out


def _pct(part, whole):
    return "%3d %%" % round(100.0 * part / whole) if whole else "  - "


def format_report(manifest, measured, rows):
    lines = []
    code = sum(f["size"] for f in manifest["files"] if not f["path"].startswith("sim/"))
    lines.append("firmware %s (%s bundle): %d bytes of code and boot files"
                 % (manifest.get("firmware_version"), manifest.get("board"), code))
    for layout in LAYOUTS:
        if layout in measured:
            m = measured[layout]
            lines.append("  heap measured on the unix port (64-bit), %s layout, %d sensors: "
                         "resident %d B, peak over a report cycle %d B"
                         % (layout, m["sensors"], m["resident"], m["peak"]))
    if not rows:
        lines.append("  (a unix-port bundle: no board budget applies)")
        return "\n".join(lines)
    lines.append("  %-20s %-13s %9s %9s %9s %9s %9s %6s  %s"
                 % ("board", "layout", "resident", "report", "reserved", "total", "budget", "ram",
                    "flash (need / filesystem)"))
    for r in rows:
        e = r["ram"]
        fl = r["flash"]
        flash = "%d / %d %s" % (fl["total"], r["filesystem"], _pct(fl["total"], r["filesystem"]))
        if r["layout"] == "romfs":
            flash += ", image %s / %d" % (fl["romfs_image"], r["romfs_partition"])
        mark = "" if r["ram_ok"] and r["flash_ok"] else "  <-- does not fit" + (
            "" if r["ram_ok"] else " (heap)") + ("" if r["flash_ok"] else " (flash)")
        lines.append("  %-20s %-13s %9d %9d %9d %9d %9d %6s  %s%s"
                     % (r["title"], "%s/%s" % (r["layout"], r["table"]), e["resident"],
                        e["per_report"], e["reserved"], e["total"], r["budget"],
                        _pct(e["total"], r["budget"]), flash, mark))
    lines.append("  (heap in 32-bit bytes, OSCORE included; budget = %d %% of the heap free at "
                 "boot; reserved = OTA %d)" % (BUDGET_SHARE * 100, RESERVED["ota"]))
    return "\n".join(lines)


# -- the bundle's size section, the report, the command ---------------------------------

def parse_targets(text):
    keys = [t.strip() for t in (text or "").split(",") if t.strip()] or list(BOARD_CLASSES)
    bad = [k for k in keys if k not in BOARD_CLASSES]
    if bad:
        raise SizeError(EXIT_USAGE, "no such board class: %s (expected %s)"
                        % (", ".join(bad), ", ".join(BOARD_CLASSES)))
    return keys


def load_sensors(path):
    """The sensors of a node config file (the reference node's when path is None)."""
    if not path:
        return REFERENCE_SENSORS
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise SizeError(EXIT_USAGE, "cannot read the node config %s: %s" % (path, e)) from None
    from smartpark.protocol import configschema
    try:
        cfg = configschema.validate(doc if "node" in doc else dict(doc, node="size", hub="auto"))
    except configschema.ConfigError as e:
        raise SizeError(EXIT_USAGE, "%s: %s" % (path, e)) from None
    return cfg["sensors"]


def size_section(measured, targets, sensors):
    """What `smartpark flash` needs to judge a board: the measured 64-bit figures and
    the 32-bit estimates per layout."""
    section = {
        "sensors": [s["driver"] for s in sensors],
        "measured_64bit": measured,
        "estimate_32bit": {layout: estimate(measured[layout], layout) for layout in measured},
        "budget_share": BUDGET_SHARE,
        "reserved": RESERVED,
        "targets": targets,
    }
    return section


def report_bundle(bundle_dir, manifest, targets=None, sensors=None, force=False, quiet=False,
                  micropython=None, out=sys.stderr):
    """Measure a bundle (both layouts when it has a ROMFS image), write the size section
    into its manifest, print the report.
    Returns (exit code, rows)."""
    targets = parse_targets(targets) if not isinstance(targets, list) else targets
    sensors = sensors or REFERENCE_SENSORS
    image_size = (manifest.get("romfs") or {}).get("size")
    layouts = LAYOUTS if image_size else ("fs",)
    measured = measure(bundle_dir, micropython=micropython, sensors=sensors, layouts=layouts,
                       quiet=quiet)
    if manifest.get("board") != "esp32":
        targets = []   # a unix-port bundle carries the simulation: no ESP32 budget applies
    manifest["size"] = size_section(measured, targets, sensors)
    from smartpark.tools.bundle import write_manifest
    write_manifest(bundle_dir, manifest)
    rows = assess(manifest, measured, targets, image_size)
    print(format_report(manifest, measured, rows), file=out)
    fits = verdicts(rows)
    short = [k for k in targets if not fits.get(k)]
    for k in targets:
        if fits.get(k):
            print("  %s: fits (%s)" % (BOARD_CLASSES[k].title, ", ".join(fits[k])), file=out)
    if short:
        msg = "does not fit %s in any layout" % ", ".join(BOARD_CLASSES[k].title for k in short)
        if force:
            print("  warning: %s (--force: reported, not refused)" % msg, file=out)
            return EXIT_OK, rows
        print("  error: %s; the bundle is written, but flash it only to a board that fits "
              "(or pass --force, or --target the classes you deploy)" % msg, file=out)
        return EXIT_TOO_BIG, rows
    return EXIT_OK, rows


def calibrate(bundle_dir, micropython32, micropython64, sensors=None, out=sys.stderr):
    """RATIO_32 afresh: the same bundle on a 32-bit and a 64-bit unix build of one source."""
    layouts = LAYOUTS
    measured = measure(bundle_dir, micropython=micropython64, sensors=sensors, layouts=layouts,
                       extra={"32": micropython32})
    ratios = {}
    for layout in layouts:
        for fig in ("resident", "peak"):
            ratios["%s %s" % (layout, fig)] = measured[layout + "@32"][fig] / float(measured[layout][fig])
    for layout in layouts:
        print("%-6s 64-bit %s   32-bit %s" % (layout, json.dumps(measured[layout]),
                                              json.dumps(measured[layout + "@32"])), file=out)
    for k, v in sorted(ratios.items()):
        print("RATIO_32 %-16s %.3f" % (k, v), file=out)
    return ratios


def add_parser(sub):
    s = sub.add_parser(
        "size",
        help="what a bundle needs of each board class: flash, heap (measured), budgets",
        description=__doc__.split("\n\n", 1)[1].split("\n\nExit codes")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("bundle", nargs="?", default=None, metavar="BUNDLE_DIR",
                   help="a bundle built by `smartpark firmware build` (default: build/firmware)")
    add_options(s)
    s.add_argument("--calibrate", metavar="MICROPYTHON_32BIT", default=None,
                   help="measure RATIO_32: run the bundle on this 32-bit unix build and on "
                        "--against (a 64-bit build of the same source)")
    s.add_argument("--against", metavar="MICROPYTHON_64BIT", default=None,
                   help="the 64-bit build for --calibrate")
    s.set_defaults(func=run)


def add_options(p):
    p.add_argument("--target", default=None, metavar="CLASS[,CLASS]",
                   help="board classes the bundle must fit (default: %s)" % ",".join(BOARD_CLASSES))
    p.add_argument("--config", default=None, metavar="FILE",
                   help="measure with this node config's sensors instead of the reference node's")
    p.add_argument("--force", action="store_true",
                   help="report a class the bundle does not fit, but do not fail")


def run(args):
    from smartpark.tools import bundle as bundlemod
    bundle_dir = args.bundle or bundlemod.DEFAULT_OUT
    try:
        manifest = bundlemod.load_manifest(bundle_dir)
        sensors = load_sensors(args.config)
        if args.calibrate:
            if not args.against:
                raise SizeError(EXIT_USAGE, "--calibrate needs --against MICROPYTHON_64BIT")
            calibrate(bundle_dir, args.calibrate, args.against, sensors)
            return EXIT_OK
        code, _rows = report_bundle(bundle_dir, manifest, args.target, sensors, args.force)
        return code
    except bundlemod.BundleError as e:
        say("smartpark firmware size: error: %s" % e)
        return e.code
    except SizeError as e:
        say("smartpark firmware size: error: %s" % e)
        return e.code
