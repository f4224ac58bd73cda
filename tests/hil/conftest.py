"""Hardware-in-the-loop plugin: one board, flashed by `smartpark flash`, checked end to end.

    .venv/bin/pytest tests/hil                         # the pty board (unix port)
    .venv/bin/pytest tests/hil --hil-port /dev/ttyUSB0 \\
        --hil-hub-host 192.168.1.20 --hil-wifi park-lab --hil-wifi-password ... \\
        [--hil-sensors bench-sensors.json]             # a real ESP32 on the bench

The options live here (tests/hil/conftest.py), so they are known when pytest
is pointed at tests/hil (or a file in it), as above. Without --hil-port the
same tests run against a MicroPython unix-port REPL on a pseudo-terminal
(tools/ptyboard.py), so the flashing path is tested on every `make test`.

Fixtures (session-wide; the tests in test_hil.py run in file order):
  hil          the target: port, kind ("pty"/"serial"), reset() = hard reset
  hil_hub      `smartpark hub` on this host (SQLite in a temp dir), with an admin
               token ("token_file") for the update test's rollout
  hil_bundle   `smartpark firmware build --all-protocol` (the vectors need
               every protocol module on the board), for the board under test:
               --board esp32 for a real board, --board unix for the pty
               board, whose node runs on the simulation (firmware/sim/); with
               its ROMFS image (the heap is tested on the board itself, not
               from the size report, which it skips). The pty board has a 128 KiB
               ROMFS partition, so the code goes there, as on an ESP32 whose
               MicroPython has one; a real board takes what it has
  hil_flash    the result of `smartpark flash --wipe` onto the board, and
               "sim_files": the simulated parts the firmware cases drive
               the drivers with, as .mpy from a --board unix build, for a
               board whose bundle has no sim/ (an ESP32); none on the pty
               board, which has them from its bundle
"""

import json
import os
import secrets
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))
from toolhelp import ROOT, require, smartpark  # noqa: E402

NODE = "hil-node"
ROMFS_PARTITION = 128 * 1024   # the "romfs" partition of MicroPython's partitions-4MiB-romfs.csv


def pytest_addoption(parser):
    g = parser.getgroup("hil", "hardware-in-the-loop (tests/hil)")
    g.addoption("--hil-port", default=None, metavar="PORT",
                help="serial port of a real ESP32 running MicroPython (default: a pty board)")
    g.addoption("--hil-hub-host", default=None, metavar="ADDR",
                help="this host's address as the board sees it (real board; default 127.0.0.1)")
    g.addoption("--hil-wifi", default=None, metavar="SSID", help="Wi-Fi the real board joins")
    g.addoption("--hil-wifi-password", default=None, metavar="PW", help="its password")
    g.addoption("--hil-sensors", default=None, metavar="FILE",
                help="JSON list of the sensors wired on the bench (firmware config format)")
    g.addoption("--hil-timeout", default=120.0, type=float, metavar="S",
                help="upper bound for each wait on the board (default 120)")


def _opt(config, name):
    try:
        return config.getoption(name)
    except ValueError:  # options not registered (pytest not started on tests/hil)
        return None


class Target:
    """The board under test, by its port, with a hard reset."""

    def __init__(self, port, kind, ptyboard=None):
        self.port = port
        self.kind = kind
        self.ptyboard = ptyboard

    def reset(self):
        """Hard reset: the pty board's process is killed and rebooted; an ESP32's EN line
        is pulsed through RTS (DevKit auto-reset circuit), as esptool does."""
        if self.ptyboard is not None:
            self.ptyboard.reset()
            return
        import serial
        s = serial.Serial(self.port, 115200)
        try:
            s.dtr = False
            s.rts = True
            time.sleep(0.2)
            s.rts = False
        finally:
            s.close()

    def session(self):
        from smartpark.tools.board import Board
        return Board(self.port)


@pytest.fixture(scope="session")
def hil_timeout(pytestconfig):
    return _opt(pytestconfig, "--hil-timeout") or 120.0


@pytest.fixture(scope="session")
def hil(pytestconfig, micropython_bin):
    port = _opt(pytestconfig, "--hil-port")
    if port:
        missing = [o for o in ("--hil-hub-host", "--hil-wifi") if not _opt(pytestconfig, o)]
        if missing:
            pytest.fail("a real board (--hil-port) also needs %s: the board joins Wi-Fi and "
                        "reports to this host's LAN address" % " and ".join(missing),
                        pytrace=False)
        yield Target(port, "serial")
        return
    from smartpark.tools.ptyboard import PtyBoard
    # with a ROMFS partition, as an ESP32 the node fits has: flash puts the code there
    board = PtyBoard(micropython=micropython_bin, romfs_size=ROMFS_PARTITION)
    board.start()
    try:
        assert board.wait_output(b">>> ", 30), board.console()
        yield Target(board.port, "pty", board)
    finally:
        board.stop()


@pytest.fixture(scope="session")
def hil_hub(pytestconfig, tmp_path_factory, hil):
    from smartpark.tools import demo
    data = str(tmp_path_factory.mktemp("hil-hub"))
    bind = "0.0.0.0" if hil.kind == "serial" else "127.0.0.1"
    # an admin token, so that the update test rolls out as an operator does (smartpark rollout)
    token = secrets.token_urlsafe(24)
    token_file = os.path.join(str(tmp_path_factory.mktemp("hil-admin")), "admin.token")
    with open(token_file, "w") as f:
        f.write(token + "\n")
    was = os.environ.get("SMARTPARK_ADMIN_TOKEN")
    os.environ["SMARTPARK_ADMIN_TOKEN"] = token
    try:
        proc, coap_port, http_port = demo.start_hub(data, 0, 0, bind=bind)
    finally:
        if was is None:
            os.environ.pop("SMARTPARK_ADMIN_TOKEN", None)
        else:
            os.environ["SMARTPARK_ADMIN_TOKEN"] = was
    assert proc is not None, open(os.path.join(data, "hub.log")).read()[-2000:]
    host = _opt(pytestconfig, "--hil-hub-host") or "127.0.0.1"
    yield {"data": data, "host": host, "coap": coap_port, "http": http_port, "proc": proc,
           "token_file": token_file}
    demo.stop_hub(proc)


@pytest.fixture(scope="session")
def hil_bundle(tmp_path_factory, hil):
    require(os.path.isfile(os.path.join(ROOT, "firmware", "main.py")),
            "firmware/main.py is not there yet: nothing to flash")
    out = str(tmp_path_factory.mktemp("hil-bundle") / "firmware")
    board = "unix" if hil.kind == "pty" else "esp32"
    proc = smartpark("firmware", "build", "--all-protocol", "--board", board, "-q", "--no-size",
                     "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def _sim_files(bundle_dir, tmp):
    """(local file, path on the board) of the sim/ package, when the bundle lacks it."""
    with open(os.path.join(bundle_dir, "manifest.json")) as f:
        manifest = json.load(f)
    if manifest.get("board") == "unix":
        return []
    out = str(tmp / "sim-bundle")
    proc = smartpark("firmware", "build", "--board", "unix", "-q", "--out", out,
                     "--micropython-version", manifest["micropython"]["target"])
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(out, "manifest.json")) as f:
        files = json.load(f)["files"]
    return [(os.path.join(out, e["path"]), e["path"]) for e in files
            if e["path"].startswith("sim/")]


def _stop_node(hil, attempts=3):
    """Ctrl-C the node that the reset started, so that the REPL tests find the board idle.
    A Ctrl-C that lands while a loaded host is still starting the node's interpreter can
    leave mpremote without its raw REPL; it is sent again, as a person at the console would."""
    from smartpark.tools.board import BoardError
    for attempt in range(attempts):
        try:
            with hil.session():
                return
        except BoardError:
            if attempt == attempts - 1:
                raise
            time.sleep(2)


@pytest.fixture(scope="session")
def hil_flash(pytestconfig, hil, hil_hub, hil_bundle, tmp_path_factory):
    from smartpark.tools import simulate
    tmp = tmp_path_factory.mktemp("hil-flash")
    sensors_file = _opt(pytestconfig, "--hil-sensors")
    if not sensors_file:
        sensors_file = str(tmp / "sensors.json")
        # the pty board simulates these parts (firmware/sim/); a real board
        # without --hil-sensors gets none and reports health only
        sensors = simulate.SENSOR_SETS[0] if hil.kind == "pty" else []
        with open(sensors_file, "w") as f:
            json.dump(sensors, f)
    summary = str(tmp / "flash.json")
    args = ["flash", "--port", hil.port, "--node-id", NODE,
            "--hub", "%s:%d" % (hil_hub["host"], hil_hub["coap"]), "--bundle", hil_bundle,
            "--sensors", sensors_file, "--wipe", "--no-reset", "--json", summary,
            "--data", hil_hub["data"],     # the node's OSCORE key, in the test hub's store
            "--set", "report_interval=2", "--set", "ledger=true", "--set", "watchdog_ms=0",
            "--set", 'coap={"ack_timeout": 1.0, "max_retransmit": 4}']
    if hil.kind == "pty":
        args += ["--set", "ntp=true"]
    wifi = _opt(pytestconfig, "--hil-wifi")
    if wifi:
        args += ["--wifi", wifi, "--wifi-password", _opt(pytestconfig, "--hil-wifi-password") or ""]
    proc = smartpark(*args, timeout=900)
    if proc.returncode == 0 and json.load(open(summary)).get("layout") == "romfs":
        # a ROMFS image is mounted at boot: reset once so that /rom holds the new code
        # (the node starts; the next session's Ctrl-C stops it, as on a board)
        boots = hil.ptyboard.boots if hil.ptyboard is not None else 0
        hil.reset()
        if hil.ptyboard is not None:
            assert hil.ptyboard.boots == boots + 1
            assert hil.ptyboard.wait_output(b"[node]", 30), hil.ptyboard.console()[-1500:]
        else:
            time.sleep(3)
        _stop_node(hil)
    return {"proc": proc, "summary": summary, "bundle": hil_bundle, "node": NODE,
            "sim_files": _sim_files(hil_bundle, tmp)}
