"""HIL: flash, protocol vectors and driver self-tests on the board, exactly-once across a reset,
and an over-the-air update.

Runs against a real ESP32 with --hil-port, else against the pty board (see
conftest.py). The tests run in file order on one board: flash first, then
code on the board's REPL, then the node running on its own, then its update.
"""

import hashlib
import json
import os
import shutil
import time

import pytest
from conftest import _stop_node
from ledger import parse_ledger
from mpharness import check_case, collect_cases, parse_results
from smartpark.tools import fwsize
from toolhelp import hub_rows, smartpark

NODE = "hil-node"   # the node id tests/hil/conftest.py flashes (hil_flash["node"])

pytestmark = pytest.mark.micropython

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
ROOT = os.path.dirname(TESTS)
CASE_DIRS = {"protocol": os.path.join(TESTS, "protocol", "cases"),
             "firmware": os.path.join(TESTS, "firmware", "cases")}
VECTORS = os.path.join(os.path.dirname(ROOT), "shared", "vectors")
BOARD_DIR = "hil"   # scratch directory on the board for cases and vectors


def _collect(kind):
    if kind == "firmware":
        return collect_cases(CASE_DIRS[kind], os.path.join(ROOT, "firmware"))
    return collect_cases(CASE_DIRS[kind])


# ---- 1. flashing ---------------------------------------------------------------------------

def test_flash_verified(hil_flash, hil, hil_hub):
    assert hil_flash["node"] == NODE
    proc = hil_flash["proc"]
    assert proc.returncode == 0, proc.stderr
    s = json.load(open(hil_flash["summary"]))
    manifest = json.load(open(os.path.join(hil_flash["bundle"], "manifest.json")))
    on_fs = [e for e in manifest["files"]
             if s["layout"] == "fs" or e["path"] in fwsize.FS_ONLY]
    # + config.json, oscore.seq and oscore.json (a new key), manifest.json
    assert s["files"] == len(on_fs) + (4 if s["oscore"]["action"] != "kept" else 3)
    assert "verified by SHA-256 on the board" in proc.stderr
    if hil.kind == "pty":
        assert s["layout"] == "romfs"      # the pty board has a ROMFS partition
    with hil.session() as b:
        for e in on_fs:
            assert b.sha256(e["path"]) == e["sha256"], e["path"]
        if s["layout"] == "romfs":
            image = manifest["romfs"]
            assert b.romfs_sha256(image["size"]) == image["sha256"]
        cfg = json.loads(b.read("config.json"))
        key = json.loads(b.read("oscore.json"))
    assert cfg["node"] == NODE and cfg["ledger"] is True
    # the node's half of the key the test hub holds for it
    from smartpark.hub import keys
    assert key == keys.node_half(keys.get(hil_hub["data"], NODE))
    assert s["oscore"]["key_id"] == key["sender_id"]


# ---- 2. code on the board's REPL -----------------------------------------------------------

_UPLOADED = {}
_RESULTS = {}


def _upload(b, kind, extra=()):
    if _UPLOADED.get(kind):
        return
    b.makedirs(BOARD_DIR)
    files = [(os.path.join(TESTS, "mprunner.py"), "mprunner.py")] + list(extra)
    d = CASE_DIRS[kind]
    files += [(os.path.join(d, f), f) for f in sorted(os.listdir(d))
              if f.startswith("case_") and f.endswith(".py")]
    if kind == "protocol" and os.path.isdir(VECTORS):
        for base, _dirs, names in os.walk(VECTORS):
            for n in sorted(names):
                src = os.path.join(base, n)
                rel = os.path.relpath(src, VECTORS).replace(os.sep, "/")
                files.append((src, "vectors/" + rel))
    for src, rel in files:
        data = open(src, "rb").read()
        dest = BOARD_DIR + "/" + rel
        if "/" in rel:
            b.makedirs(dest.rpartition("/")[0])
        if b.sha256(dest) != hashlib.sha256(data).hexdigest():
            b.write(dest, data)
    _UPLOADED[kind] = True


def _run_on_board(hil, kind, modname, timeout, extra=()):
    """Run one case module on the board; `extra`: (local file, path under hil/) to upload too."""
    key = (kind, modname)
    if key not in _RESULTS:
        # The cases write files in their cwd (the outbox cases make outbox.log): run them
        # in a scratch directory, never in the node's own flash root, with absolute paths.
        code = ("import sys, gc, os\n"
                "gc.collect()\n"
                "_root = os.getcwd().rstrip('/')\n"
                "_path = list(sys.path)\n"
                "sys.path[:] = [_root + '/' + %r, _root or '/', _root + '/lib', '.frozen',"
                " '/rom', '/rom/lib']\n"
                "sys.argv[:] = ['mprunner', %r, _root + '/' + %r]\n"
                "os.chdir(_root + '/' + %r)\n"
                "try:\n"
                " exec(open(_root + '/' + %r).read(), {'__name__': 'mprunner'})\n"
                "finally:\n"
                " os.chdir(_root or '/')\n"
                " sys.path[:] = _path\n"
                " sys.modules.pop(%r, None)\n"
                % (BOARD_DIR, modname, BOARD_DIR + "/vectors", BOARD_DIR + "/run",
                   BOARD_DIR + "/mprunner.py", modname))
        try:
            with hil.session() as b:
                _upload(b, kind, extra)
                b.makedirs(BOARD_DIR + "/run")
                out = b.exec(code, "running %s on the board" % modname, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - report it for every case of the module
            out = "CRASH %s" % e
        results = parse_results(out)
        if "__crash__" in results and hil.ptyboard is not None:
            # what the board itself printed (and why any boot ended) explains a lost session
            results["__crash__"] += "\n--- pty board console, last 1500 bytes ---\n" + \
                hil.ptyboard.console()[-1500:].decode("utf-8", "replace")
        _RESULTS[key] = results
    return _RESULTS[key]


@pytest.mark.parametrize("modname,name", _collect("protocol"))
def test_protocol_vectors_on_board(hil_flash, hil, hil_timeout, modname, name):
    assert hil_flash["proc"].returncode == 0
    check_case(_run_on_board(hil, "protocol", modname, hil_timeout), modname, name, "on the board")


@pytest.mark.parametrize("modname,name", _collect("firmware"))
def test_driver_and_firmware_cases_on_board(hil_flash, hil, hil_timeout, modname, name):
    assert hil_flash["proc"].returncode == 0
    # the drivers are driven against the simulated parts (sim.parts): an ESP32's bundle has
    # no sim/, so they go up beside the cases (hil/sim/, first on the cases' path)
    check_case(_run_on_board(hil, "firmware", modname, hil_timeout, hil_flash["sim_files"]),
               modname, name, "on the board")


_SELFTEST = """
import json, time, config, drivers
from board import Board
cfg, err = config.load()
if err is not None:
    raise err
b = Board(cfg.get('sim'))
out = []
for i, s in enumerate(cfg['sensors']):
    try:
        d = drivers.load(s['driver'])(b.bus(s, i), s['params'])
        w = d.start()
        if w:
            time.sleep_ms(w)
        ok = d.measure()
        vals = [d.value(j) for j in range(len(d.FIELDS))]
        out.append([s['name'], ok, d.status, [f[0] for f in d.FIELDS], vals])
    except Exception as e:
        out.append([s['name'], False, repr(e), [], []])
print('SELFTEST ' + json.dumps(out))
"""


def test_sensor_self_test_on_board(hil_flash, hil, hil_timeout):
    """Every sensor in the board's config answers through the firmware's own HAL and driver
    (real parts on the bench; the simulated parts of firmware/sim/ on the pty board)."""
    assert hil_flash["proc"].returncode == 0
    with hil.session() as b:
        out = b.exec(_SELFTEST, "self-testing the sensors", timeout=hil_timeout)
    line = [x for x in out.splitlines() if x.startswith("SELFTEST ")]
    assert line, out[-1500:]
    results = json.loads(line[-1][9:])
    cfg_sensors = json.load(open(os.path.join(os.path.dirname(hil_flash["summary"]),
                                              "sensors.json"))) if hil.kind == "pty" else None
    if cfg_sensors is not None:
        assert [r[0] for r in results] == [s["name"] for s in cfg_sensors]
    bad = [r for r in results if not r[1] or all(v is None for v in r[4])]
    assert not bad, "sensors that did not measure: %r" % bad


# ---- 3. the node on its own: exactly once, across a reset ----------------------------------

def _hub_rows(hub):
    """[(sensor, t)] the hub stored for the node: its readings and its journal's rows and blocks
    (tests/tools/toolhelp.py), so a reading stored twice shows as two rows."""
    return [(sensor, t) for _node, sensor, t in hub_rows(hub["data"], NODE)]


def _wait_rows(hub, at_least, timeout):
    deadline = time.monotonic() + timeout
    rows = _hub_rows(hub)
    while len(rows) < at_least and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = _hub_rows(hub)
    return rows


def _ledger(b):
    """[(sensor, hub time)] the node recorded, from ledger.log and clock.json on the board."""
    raw = b.read("ledger.log") or b""
    return parse_ledger(raw.decode(), (b.read("clock.json") or b"[]").decode())


_DRAIN = """
import asyncio, node
n = node.Node()
print('DRAINED', asyncio.run(n.run_drain()), n.outbox.depth(), n.outbox.dropped)
"""


def test_readings_arrive_exactly_once_across_a_reset(hil_flash, hil, hil_hub, hil_timeout):
    assert hil_flash["proc"].returncode == 0
    hil.reset()                                  # boot: main.py starts the node
    before = _wait_rows(hil_hub, 30, hil_timeout)
    assert len(before) >= 30, "the node did not report (hub has %d rows)" % len(before)
    hil.reset()                                  # hard reset mid-stream
    after = _wait_rows(hil_hub, len(before) + 30, hil_timeout)
    assert len(after) >= len(before) + 30, "no reports after the reset"
    with hil.session() as b:                     # Ctrl-C stops the node; drain what it holds
        out = b.exec(_DRAIN, "draining the outbox", timeout=hil_timeout)
        assert "DRAINED True 0" in out, out[-800:]
        ledger, unresolved = _ledger(b)
        status = json.loads(b.read("status.json") or b"{}")
    rows = _hub_rows(hil_hub)
    assert len(rows) == len(set(rows))
    counts = {}
    for k in ledger:
        counts[k] = counts.get(k, 0) + 1
    assert all(n == 1 for n in counts.values()), "the node recorded a reading twice"
    assert len(counts) >= len(after) - 16, (len(counts), len(after))
    stored = set(rows)
    missing = [k for k in counts if k not in stored]
    assert not missing, "%d recorded readings never reached the hub: %r" % (len(missing), missing[:5])
    extra = [k for k in stored if k not in counts]
    # allowed: time-less clock-sync readings, and what a hard reset caught between the
    # outbox append and the ledger line (at most one measurement per sensor)
    not_sync = [k for k in extra if k[0] != "health.uptime"]
    assert len(not_sync) <= 16, "hub holds readings the node never recorded: %r" % not_sync[:5]
    assert unresolved == 0 or status.get("dropped", 0) >= unresolved
    assert status.get("boot", 0) >= 2


# ---- 4. the heap the node holds while it runs, against the budget -------------------------

def test_heap_within_the_budget_on_board(hil_flash, hil, hil_hub):
    """The node reports its free heap after a collection (health.heap_free); with the board's
    whole heap (gc.mem_free() + gc.mem_alloc()) that is what the running node holds. That,
    plus the heap reserved for OSCORE and OTA, must fit the budget (70 % of the heap)
    tests/firmware/test_heap_budget.py enforces on the unix port: on a real board its own,
    on the pty board (64-bit) a plain ESP32's, through the calibrated 32-bit ratio."""
    from smartpark.tools import demo
    assert hil_flash["proc"].returncode == 0
    view = demo._get_json("http://127.0.0.1:%d/api/nodes/%s" % (hil_hub["http"], NODE))
    free = view["health"].get("heap_free")
    assert isinstance(free, (int, float)) and free > 0, view["health"]
    with hil.session() as b:
        total = b.info()["heap"]
    layout = json.load(open(hil_flash["summary"]))["layout"]
    in_use = int(total - free)
    reserved = sum(fwsize.RESERVED.values())
    if hil.kind == "pty":
        if layout == "romfs":
            # a board maps its ROMFS partition; the pty board reads it into its heap
            in_use -= hil.ptyboard.romfs_size
        in_use_32 = int(in_use * fwsize.RATIO_32[(layout, "resident")])
        budget = fwsize.BOARD_CLASSES["esp32"].budget()
    else:
        in_use_32 = in_use
        budget = fwsize.board_budget(total)
    assert in_use_32 + reserved <= budget, (
        "the running node holds %d bytes of heap (%s layout; %d on this board of %d); with %d "
        "reserved that is over the budget of %d" % (in_use_32, layout, in_use, total, reserved,
                                                   budget))


# ---- 5. an over-the-air update, the operator's way ------------------------------------------

HIL_NEW = "hil-ota-2"


def test_update_over_the_air_through_the_hub(hil_flash, hil, hil_hub, hil_timeout, tmp_path):
    """The next version (a driver fix) reaches the board as an operator ships it: `smartpark
    firmware build --version`, `firmware publish` into the hub's store, `rollout start`. The
    node downloads what changed over OSCORE with Block2 (the rest it copies from the code it
    runs), switches slots, runs the new version on trial and confirms it with its first acked
    report; the hub shows the update's result."""
    from smartpark.tools import demo
    board = "unix" if hil.kind == "pty" else "esp32"
    fw = str(tmp_path / "fw")
    shutil.copytree(os.path.join(ROOT, "firmware"), fw, ignore=shutil.ignore_patterns("__pycache__"))
    with open(os.path.join(fw, "drivers", "bme280.py"), "a") as f:
        f.write("\n# %s\n" % HIL_NEW)
    out = str(tmp_path / "bundle")
    proc = smartpark("firmware", "build", "--all-protocol", "--board", board, "-q", "--no-size",
                     "--version", HIL_NEW, "--firmware-dir", fw, "--out", out)
    assert proc.returncode == 0, proc.stderr
    proc = smartpark("firmware", "publish", out, "--data", hil_hub["data"])
    assert proc.returncode == 0, proc.stderr
    url = "http://127.0.0.1:%d" % hil_hub["http"]
    proc = smartpark("rollout", "start", HIL_NEW, "--nodes", NODE, "--canary", "100",
                     "--soak", "0", "--hub", url, "--token-file", hil_hub["token_file"])
    assert proc.returncode == 0, proc.stdout + proc.stderr

    hil.reset()   # the node runs: the next ack wants HIL_NEW
    deadline = time.monotonic() + 3 * hil_timeout
    update = {}
    while time.monotonic() < deadline:
        update = demo._get_json(url + "/api/nodes/" + NODE).get("update") or {}
        if update.get("running") == HIL_NEW and update.get("result") == "success":
            break
        time.sleep(1)
    console = hil.ptyboard.console()[-2000:] if hil.ptyboard is not None else b""
    rollouts = demo._get_json(url + "/api/rollouts")
    assert update.get("running") == HIL_NEW and update.get("result") == "success", (
        update, rollouts, console)
    _stop_node(hil)
    with hil.session() as b:
        assert (b.read("app_b/version") or b"").decode().strip() == HIL_NEW
        boot = json.loads(b.read("boot.json") or b"{}")
    assert boot.get("slot") == "b" and not boot.get("trial"), boot
