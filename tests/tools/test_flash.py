"""`smartpark flash` against the pseudo-terminal board (real micropython, real mpremote).

The error boards are honest versions of the real failures:
- no device: a port path that does not exist;
- busy: a real `mpremote` session holds the port (mpremote locks it, as
  pyserial's exclusive mode does), and separately a plain flock as picocom
  takes it;
- no REPL: a pseudo-terminal nobody answers on;
- too old: a board whose ROM boot script puts a sys wrapper reporting
  MicroPython 1.19.1 into sys.modules (what `import sys` then returns);
- no space: a board whose os.statvfs reports a 20 kB filesystem;
- mismatch: a board whose REPL open() flips a byte of the first N writes of
  one file (a failing flash); N=1 must be healed by the retry, N=9 must not;
- an ESP32: a board whose ROM boot script puts a sys wrapper reporting
  sys.platform "esp32" into sys.modules, which is what flash chooses the
  bundle by (the ESP32 bundle, without the simulation).
"""

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time

import pytest
from smartpark.tools import board as boardmod
from smartpark.tools.ptyboard import PtyBoard
from toolhelp import smartpark

pytestmark = pytest.mark.micropython


def _flash(port, bundle_dir, *extra, node="node-7"):
    """Flash with the test's options; without a key option, with --no-key (the key's own
    tests are at the end)."""
    if not {"--data", "--hub-key-file"} & {str(x) for x in extra}:
        extra += ("--no-key",)
    return smartpark("flash", "--port", port, "--node-id", node, "--hub", "127.0.0.1:5999",
                     "--bundle", bundle_dir, *extra)


def _check_files(flash_dir, bundle_dir):
    manifest = json.load(open(os.path.join(bundle_dir, "manifest.json")))
    for e in manifest["files"]:
        data = open(os.path.join(flash_dir, e["path"]), "rb").read()
        assert hashlib.sha256(data).hexdigest() == e["sha256"], e["path"]
    on_board = json.load(open(os.path.join(flash_dir, "manifest.json")))
    assert on_board["files"] == manifest["files"]
    return manifest


def test_flash_real_firmware_lands_verified_and_configured(unix_bundle, pty_board, tmp_path):
    summary = tmp_path / "summary.json"
    proc = _flash(pty_board.port, unix_bundle, "--json", summary)
    assert proc.returncode == 0, proc.stderr
    manifest = _check_files(pty_board.flash_dir, unix_bundle)
    cfg = json.load(open(os.path.join(pty_board.flash_dir, "config.json")))
    assert cfg["node"] == "node-7" and cfg["hub"] == "127.0.0.1:5999"
    s = json.load(open(summary))
    assert s["files"] == len(manifest["files"]) + 2 and s["written"] == s["files"]
    assert "verified by SHA-256 on the board" in proc.stderr
    # reset = the unix interpreter exits and the pty board boots a new one
    assert pty_board.wait_output(b"smartpark pty board: boot", 10)
    deadline = time.monotonic() + 10
    while pty_board.boots < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pty_board.boots == 2


def test_flash_tiny_bundle_config_and_incremental_reflash(tiny_bundle, pty_board, tmp_path):
    sensors = tmp_path / "sensors.json"
    sensors.write_text(json.dumps([{"name": "air", "driver": "bme280", "bus": "i2c0",
                                    "params": {"address": 118}}]))
    proc = _flash(pty_board.port, tiny_bundle, "--wifi", "park-iot", "--wifi-password",
                  "s3cret-pass", "--sensors", sensors, "--set", "report_interval=5", "--no-reset")
    assert proc.returncode == 0, proc.stderr
    _check_files(pty_board.flash_dir, tiny_bundle)
    cfg = json.load(open(os.path.join(pty_board.flash_dir, "config.json")))
    assert cfg == {"node": "node-7", "hub": "127.0.0.1:5999",
                   "wifi": {"ssid": "park-iot", "password": "s3cret-pass"},
                   "sensors": [{"name": "air", "driver": "bme280", "bus": "i2c0",
                                "params": {"address": 118}}],
                   "report_interval": 5}
    assert pty_board.boots == 1  # --no-reset
    # the node's data, and a firmware file the new bundle no longer has
    outbox = os.path.join(pty_board.flash_dir, "outbox")
    os.makedirs(outbox)
    open(os.path.join(outbox, "seg-000001"), "wb").write(b"unsent readings")
    stale_path = os.path.join(pty_board.flash_dir, "old_module.mpy")
    open(stale_path, "wb").write(b"M\x06old")
    m = json.load(open(os.path.join(pty_board.flash_dir, "manifest.json")))
    m["files"].append({"path": "old_module.mpy", "size": 5, "sha256": "0" * 64})
    json.dump(m, open(os.path.join(pty_board.flash_dir, "manifest.json"), "w"))
    # one firmware file damaged on the board: only it (and the manifest) is rewritten
    with open(os.path.join(pty_board.flash_dir, "app.mpy"), "r+b") as f:
        f.write(b"X")
    summary = tmp_path / "s.json"
    proc = _flash(pty_board.port, tiny_bundle, "--no-reset", "--json", summary, node="node-8")
    assert proc.returncode == 0, proc.stderr
    s = json.load(open(summary))
    assert s["written"] == 3 and s["kept"] == s["files"] - 3  # app.mpy, config.json, manifest
    _check_files(pty_board.flash_dir, tiny_bundle)
    assert json.load(open(os.path.join(pty_board.flash_dir, "config.json")))["node"] == "node-8"
    assert open(os.path.join(outbox, "seg-000001"), "rb").read() == b"unsent readings"
    assert not os.path.exists(stale_path)
    # --wipe: the outbox goes too
    proc = _flash(pty_board.port, tiny_bundle, "--no-reset", "--wipe")
    assert proc.returncode == 0, proc.stderr
    assert not os.path.exists(outbox)
    _check_files(pty_board.flash_dir, tiny_bundle)


def test_no_device(tiny_bundle, tmp_path):
    proc = _flash(str(tmp_path / "ttyUSB9"), tiny_bundle)
    assert proc.returncode == boardmod.EXIT_NO_DEVICE == 10
    assert "no device at" in proc.stderr


def test_regular_file_is_not_a_port(tiny_bundle, tmp_path):
    f = tmp_path / "notaport"
    f.write_text("x")
    proc = _flash(str(f), tiny_bundle)
    assert proc.returncode == boardmod.EXIT_NO_DEVICE and "not a serial port" in proc.stderr


def test_port_busy_with_a_running_mpremote_session(tiny_bundle, pty_board):
    holder = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "mpremote"), "connect", pty_board.port,
         "resume", "exec", "import time\ntime.sleep(30)"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                boardmod.probe_port(pty_board.port)
            except boardmod.BoardError as e:
                if e.code == boardmod.EXIT_PORT_BUSY:
                    break
            time.sleep(0.1)
        proc = _flash(pty_board.port, tiny_bundle)
        assert proc.returncode == boardmod.EXIT_PORT_BUSY == 11, proc.stderr
        assert "busy" in proc.stderr
    finally:
        holder.kill()
        holder.wait()


def test_port_busy_with_a_lock(tiny_bundle, pty_board):
    fd = os.open(pty_board.port, os.O_RDWR | os.O_NOCTTY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = _flash(pty_board.port, tiny_bundle)
        assert proc.returncode == boardmod.EXIT_PORT_BUSY, proc.stderr
    finally:
        os.close(fd)
    # released: flashing works again
    assert _flash(pty_board.port, tiny_bundle, "--no-reset").returncode == 0


def test_no_repl_on_the_port(tiny_bundle):
    master, slave = os.openpty()
    try:
        proc = _flash(os.ttyname(slave), tiny_bundle)
        assert proc.returncode == boardmod.EXIT_NO_REPL == 12, proc.stderr
        assert "no MicroPython REPL" in proc.stderr
    finally:
        os.close(master)
        os.close(slave)


@pytest.fixture
def special_board(request, micropython_bin):
    board = PtyBoard(micropython=micropython_bin, **request.param)
    board.start()
    assert board.wait_output(b">>> ", 20), board.console()
    yield board
    board.stop()


@pytest.mark.parametrize("special_board", [{"fake_version": (1, 19, 1)}], indirect=True)
def test_micropython_too_old(tiny_bundle, special_board):
    proc = _flash(special_board.port, tiny_bundle)
    assert proc.returncode == boardmod.EXIT_TOO_OLD == 13, proc.stderr
    assert "1.19.1 on the board is too old" in proc.stderr and "1.22.0" in proc.stderr
    assert os.listdir(special_board.flash_dir) == []  # nothing written


@pytest.mark.parametrize("special_board", [{"flash_limit": 20000}], indirect=True)
def test_not_enough_flash(tiny_bundle, special_board):
    proc = _flash(special_board.port, tiny_bundle)
    assert proc.returncode == boardmod.EXIT_NO_SPACE == 14, proc.stderr
    assert "not enough flash" in proc.stderr
    assert os.listdir(special_board.flash_dir) == []


@pytest.mark.parametrize("special_board", [{"corrupt_writes": ("app.mpy", 1)}], indirect=True)
def test_mismatch_is_retried(tiny_bundle, special_board):
    proc = _flash(special_board.port, tiny_bundle, "--no-reset")
    assert proc.returncode == 0, proc.stderr
    assert "app.mpy read back with SHA-256" in proc.stderr and "retry 1/2" in proc.stderr
    _check_files(special_board.flash_dir, tiny_bundle)


@pytest.mark.parametrize("special_board", [{"corrupt_writes": ("app.mpy", 9)}], indirect=True)
def test_mismatch_that_persists_fails(tiny_bundle, special_board):
    proc = _flash(special_board.port, tiny_bundle, "--no-reset")
    assert proc.returncode == boardmod.EXIT_VERIFY == 15, proc.stderr
    assert "verification failed for app.mpy" in proc.stderr and "after 2 retries" in proc.stderr
    # an unverified install has no manifest: it does not look complete
    assert not os.path.exists(os.path.join(special_board.flash_dir, "manifest.json"))


@pytest.mark.parametrize("args,needle", [
    (["--node-id", "bad/id"], "node id 'bad/id'"),
    (["--node-id", "n1", "--hub", "host:99999"], "port must be 1-65535"),
    (["--node-id", "n1", "--hub", "[::1"], "missing ']'"),
    (["--node-id", "n1", "--wifi", "park"], "--wifi needs --wifi-password"),
    (["--node-id", "n1", "--wifi", "park", "--wifi-password", "short"], "8-64 characters"),
    (["--node-id", "n1", "--set", "novalue"], "expected KEY=VALUE"),
    (["--node-id", "n1", "--sensors", "/dev/null"], "not valid JSON"),
    (["--node-id", "n1", "--sensors", "/nonexistent.json"], "sensors file /nonexistent.json"),
])
def test_bad_options_fail_before_touching_the_board(args, needle, tiny_bundle, tmp_path):
    proc = smartpark("flash", "--port", str(tmp_path / "nope"), "--bundle", tiny_bundle, *args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr


def test_the_firmware_itself_validates_the_config(tmp_path):
    """No --bundle: firmware/config.py's validate() runs under micropython before any build."""
    proc = smartpark("flash", "--port", str(tmp_path / "nope"), "--node-id", "n1",
                     "--set", "report_interval=0")
    assert proc.returncode == 2, proc.stderr
    assert "the firmware rejects this config" in proc.stderr and "report_interval" in proc.stderr
    sensors = tmp_path / "s.json"
    sensors.write_text(json.dumps([{"name": "air", "driver": "bme280", "pins": {"sda": 99}}]))
    proc = smartpark("flash", "--port", str(tmp_path / "nope"), "--node-id", "n1",
                     "--sensors", sensors)
    assert proc.returncode == 2 and "sensors[0].pins.sda" in proc.stderr, proc.stderr


def test_unknown_driver_in_sensors_file(tiny_bundle, tmp_path):
    sensors = tmp_path / "s.json"
    sensors.write_text(json.dumps([{"driver": "flux-capacitor"}]))
    proc = smartpark("flash", "--port", str(tmp_path / "nope"), "--bundle", tiny_bundle,
                     "--node-id", "n1", "--sensors", sensors)
    assert proc.returncode == 2 and "unknown driver 'flux-capacitor'" in proc.stderr


def test_port_busy_with_a_uucp_lock_file(pty_board, tmp_path, monkeypatch):
    """minicom/picocom announce a held port with /var/lock/LCK..<name> holding their PID."""
    monkeypatch.setattr(boardmod, "LOCK_DIRS", (str(tmp_path),))
    lock = tmp_path / ("LCK.." + os.path.basename(pty_board.port))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text("%10d\n" % holder.pid)
        with pytest.raises(boardmod.BoardError) as e:
            boardmod.probe_port(pty_board.port)
        assert e.value.code == boardmod.EXIT_PORT_BUSY and str(holder.pid) in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    boardmod.probe_port(pty_board.port)  # a stale lock (dead PID) does not block


@pytest.mark.parametrize("special_board", [{"flash_limit": 100000}], indirect=True)
def test_space_check_comes_before_wipe_and_counts_what_wipe_frees(tiny_bundle, special_board):
    """24 blocks of 4 kB; the tiny firmware needs ~11 + 4 for the outbox margin."""
    data = os.path.join(special_board.flash_dir, "outbox.log")
    open(data, "wb").write(b"u" * 40000)                 # 10 blocks of node data
    proc = _flash(special_board.port, tiny_bundle, "--no-reset")
    assert proc.returncode == boardmod.EXIT_NO_SPACE, proc.stderr
    assert os.path.getsize(data) == 40000                # nothing touched
    proc = _flash(special_board.port, tiny_bundle, "--no-reset", "--wipe")
    assert proc.returncode == 0, proc.stderr              # fits once the old data is gone
    assert not os.path.exists(data)
    _check_files(special_board.flash_dir, tiny_bundle)


@pytest.mark.parametrize("special_board", [{"flash_limit": 40000}], indirect=True)
def test_wipe_is_not_done_when_the_firmware_cannot_fit_anyway(tiny_bundle, special_board):
    data = os.path.join(special_board.flash_dir, "outbox.log")
    open(data, "wb").write(b"u" * 8000)
    proc = _flash(special_board.port, tiny_bundle, "--no-reset", "--wipe")
    assert proc.returncode == boardmod.EXIT_NO_SPACE, proc.stderr
    assert os.path.getsize(data) == 8000                 # not wiped for nothing


def test_flash_builds_the_bundle_when_none_is_given(unix_bundle, pty_board):
    """No --bundle: flash builds the firmware itself; builds are reproducible, so the board
    ends up with exactly the files of a separate `smartpark firmware build`."""
    proc = smartpark("flash", "--port", pty_board.port, "--node-id", "n-auto", "--no-reset",
                     "--no-key",
                     timeout=300)
    assert proc.returncode == 0, proc.stderr
    # the unix port (sys.platform "linux") gets the unix bundle, simulation included
    assert "building the firmware bundle for board unix" in proc.stderr
    _check_files(pty_board.flash_dir, unix_bundle)
    assert os.path.isfile(os.path.join(pty_board.flash_dir, "sim", "board.mpy"))
    cfg = json.load(open(os.path.join(pty_board.flash_dir, "config.json")))
    assert cfg == {"node": "n-auto", "hub": "auto"}


@pytest.mark.parametrize("special_board", [{"fake_platform": "esp32"}], indirect=True)
def test_flash_builds_the_esp32_bundle_for_an_esp32(esp32_bundle, special_board, tmp_path):
    """No --bundle, a board whose sys.platform is "esp32": the ESP32 bundle goes on, no sim/."""
    summary = tmp_path / "s.json"
    proc = smartpark("flash", "--port", special_board.port, "--node-id", "n-esp", "--no-reset",
                     "--no-key",
                     "--json", summary, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "building the firmware bundle for board esp32" in proc.stderr
    manifest = _check_files(special_board.flash_dir, esp32_bundle)
    assert manifest["board"] == "esp32"
    assert not os.path.exists(os.path.join(special_board.flash_dir, "sim"))
    s = json.load(open(summary))
    assert s["bundle_board"] == "esp32" and s["board"]["platform"] == "esp32"


def test_esp32_bundle_is_refused_by_the_unix_port(esp32_bundle, pty_board):
    proc = _flash(pty_board.port, esp32_bundle, "--no-reset")
    assert proc.returncode == boardmod.EXIT_WRONG_BOARD == 18, proc.stderr
    assert "the bundle is for an ESP32" in proc.stderr and "--board unix" in proc.stderr
    assert os.listdir(pty_board.flash_dir) == []  # nothing written


@pytest.mark.parametrize("special_board", [{"fake_platform": "esp32"}], indirect=True)
def test_unix_bundle_is_refused_by_an_esp32(tiny_bundle, special_board):
    proc = _flash(special_board.port, tiny_bundle, "--no-reset")
    assert proc.returncode == boardmod.EXIT_WRONG_BOARD, proc.stderr
    assert "the bundle is for the MicroPython unix port" in proc.stderr
    assert "--board esp32" in proc.stderr
    assert os.listdir(special_board.flash_dir) == []


# -- layout and heap ----------------------------------------------------------------------

def test_layout_follows_the_board_and_the_bundle():
    from smartpark.tools.flash import FlashError, choose_layout
    image = {"romfs": {"path": "code.romfs", "size": 60000, "sha256": "x"}}
    assert choose_layout({"romfs": 131072}, image) == "romfs"
    assert choose_layout({"romfs": 131072}, image, "fs") == "fs"
    assert choose_layout({"romfs": None}, image) == "fs"           # stock firmware: no ROMFS
    assert choose_layout({"romfs": 32768}, image) == "fs"          # image bigger than partition
    assert choose_layout({"romfs": 131072}, {}) == "fs"            # built with --no-size
    with pytest.raises(boardmod.BoardError) as e:
        choose_layout({"romfs": None}, image, "romfs")
    assert e.value.code == boardmod.EXIT_NO_SPACE and "no ROMFS partition" in str(e.value)
    with pytest.raises(boardmod.BoardError) as e:
        choose_layout({"romfs": 32768}, image, "romfs")
    assert "60000" in str(e.value) and "32768" in str(e.value)
    with pytest.raises(FlashError):
        choose_layout({"romfs": 131072}, {}, "romfs")


@pytest.mark.parametrize("special_board", [{"romfs_size": 128 * 1024}], indirect=True)
def test_flash_puts_the_code_in_the_boards_romfs_partition(sized_unix_bundle, special_board,
                                                             tmp_path):
    """A board whose MicroPython has a ROMFS partition gets the code as the bundle's image
    (mpremote romfs deploy), its filesystem only boot.py, main.py, the config, the OSCORE
    key and its sequence file, and the manifest; after the reset the node boots from /rom and looks for its hub."""
    summary = tmp_path / "s.json"
    data = tmp_path / "hub"
    proc = smartpark("flash", "--port", special_board.port, "--node-id", "rom-7", "--hub",
                     "127.0.0.1:5999", "--bundle", sized_unix_bundle, "--json", summary,
                     "--data", data)
    assert proc.returncode == 0, proc.stderr
    assert "ROMFS: writing the" in proc.stderr and "romfs layout" in proc.stderr
    assert sorted(os.listdir(special_board.flash_dir)) == ["boot.py", "config.json", "main.py",
                                                           "manifest.json", "oscore.json",
                                                           "oscore.seq"]
    s = json.load(open(summary))
    assert s["layout"] == "romfs" and s["romfs"] == "written"
    on_board = json.load(open(os.path.join(special_board.flash_dir, "manifest.json")))
    assert on_board["layout"] == "romfs"
    assert special_board.wait_output(b"[node] hub at 127.0.0.1:5999", 20), special_board.console()
    assert b"Traceback" not in special_board.console().split(b"ended")[-1]
    # flashed again: the image is already there, nothing is rewritten
    proc = smartpark("flash", "--port", special_board.port, "--node-id", "rom-7", "--hub",
                     "127.0.0.1:5999", "--bundle", sized_unix_bundle, "--no-reset",
                     "--data", data)
    assert proc.returncode == 0, proc.stderr
    assert "already holds this image" in proc.stderr
    assert "(1 written, 4 already up to date" in proc.stderr   # the manifest always lands last


@pytest.mark.parametrize("special_board", [{"romfs_size": 128 * 1024}], indirect=True)
def test_a_filesystem_install_moves_into_romfs_without_leftovers(sized_unix_bundle, special_board):
    """Code files on the filesystem would shadow /rom (sys.path puts '' first): going from
    the fs layout to ROMFS removes them, and the outbox stays."""
    assert _flash(special_board.port, sized_unix_bundle, "--layout", "fs",
                  "--no-reset").returncode == 0
    assert os.path.isfile(os.path.join(special_board.flash_dir, "node.mpy"))
    with open(os.path.join(special_board.flash_dir, "outbox.log"), "wb") as f:
        f.write(b"unsent readings")
    proc = _flash(special_board.port, sized_unix_bundle, "--no-reset")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(special_board.flash_dir)) == [
        "boot.py", "config.json", "main.py", "manifest.json", "outbox.log"]


@pytest.mark.parametrize("special_board", [{"heapsize": "96k"}], indirect=True)
def test_a_board_without_the_heap_is_refused(sized_unix_bundle, special_board):
    proc = _flash(special_board.port, sized_unix_bundle, "--no-reset")
    assert proc.returncode == boardmod.EXIT_NO_HEAP == 19, proc.stderr
    err = proc.stderr
    assert "not enough heap on the board" in err and "70 %" in err and "fs layout" in err, err
    manifest = json.load(open(os.path.join(sized_unix_bundle, "manifest.json")))
    assert str(manifest["size"]["measured_64bit"]["fs"]["peak"]) in err
    assert os.listdir(special_board.flash_dir) == []   # nothing written
    proc = _flash(special_board.port, sized_unix_bundle, "--no-reset", "--force")
    assert proc.returncode == 0, proc.stderr
    assert "warning: not enough heap" in proc.stderr


# -- the node's OSCORE key -------------------------------------------------------------------

def _board_key(flash_dir):
    with open(os.path.join(flash_dir, "oscore.json")) as f:
        return json.load(f)


def test_flash_provisions_the_oscore_key_and_keeps_it(tiny_bundle, pty_board, tmp_path):
    """--data: the key is made in the hub's store, its node half lands on the board as
    oscore.json; a re-flash keeps it (and the node's sequence number file), --rotate-key
    and --wipe replace it, and the store always holds the board's key."""
    from smartpark.hub import keys
    data = tmp_path / "hub"
    summary = tmp_path / "s.json"
    proc = _flash(pty_board.port, tiny_bundle, "--no-reset", "--data", data, "--json", summary)
    assert proc.returncode == 0, proc.stderr
    rec = keys.get(str(data), "node-7")
    assert _board_key(pty_board.flash_dir) == keys.node_half(rec)
    assert rec["recipient_id"] == b"" and len(rec["sender_id"]) == 3
    assert os.stat(keys.key_path(str(data), "node-7")).st_mode & 0o777 == 0o600
    s = json.load(open(summary))
    assert s["oscore"]["action"] == "new" and s["oscore"]["key_id"] == rec.kid_hex
    assert rec["secret"].hex() not in proc.stderr + proc.stdout + open(summary).read()
    # the node has counted some sequence numbers: a re-flash keeps key and counter
    seq = os.path.join(pty_board.flash_dir, "oscore.seq")
    open(seq, "w").write("1234")
    proc = _flash(pty_board.port, tiny_bundle, "--no-reset", "--data", data, "--json", summary)
    assert proc.returncode == 0, proc.stderr
    assert "key id %s, kept" % rec.kid_hex in proc.stderr
    assert json.load(open(summary))["oscore"]["action"] == "kept"
    assert keys.get(str(data), "node-7") == rec
    assert _board_key(pty_board.flash_dir) == keys.node_half(rec)
    assert open(seq).read() == "1234"
    # --rotate-key: new secret and key id on both sides; the old counter goes
    proc = _flash(pty_board.port, tiny_bundle, "--no-reset", "--data", data, "--rotate-key")
    assert proc.returncode == 0, proc.stderr
    new = keys.get(str(data), "node-7")
    assert new["secret"] != rec["secret"] and new["sender_id"] != rec["sender_id"]
    assert _board_key(pty_board.flash_dir) == keys.node_half(new)
    assert open(seq).read() == "0"   # a new key starts its own count
    # a board that lost its sequence file cannot keep its key
    os.remove(seq)
    proc = _flash(pty_board.port, tiny_bundle, "--no-reset", "--data", data)
    assert proc.returncode == 0, proc.stderr
    assert "not its sequence number" in proc.stderr and open(seq).read() == "0"
    new = keys.get(str(data), "node-7")
    # --wipe erases the counter, so the key cannot stay
    proc = _flash(pty_board.port, tiny_bundle, "--no-reset", "--data", data, "--wipe")
    assert proc.returncode == 0, proc.stderr
    wiped = keys.get(str(data), "node-7")
    assert wiped["sender_id"] != new["sender_id"] and "the wipe erases" in proc.stderr
    assert _board_key(pty_board.flash_dir) == keys.node_half(wiped)
    # another board (or one that lost its key) for the same node: a new key too
    os.remove(os.path.join(pty_board.flash_dir, "oscore.json"))
    proc = _flash(pty_board.port, tiny_bundle, "--no-reset", "--data", data)
    assert proc.returncode == 0, proc.stderr
    assert keys.get(str(data), "node-7")["sender_id"] != wiped["sender_id"]
    assert "does not hold its key" in proc.stderr
    assert len(keys.list_keys(str(data))) == 1


def test_flash_for_a_hub_on_another_machine(tiny_bundle, pty_board, tmp_path):
    """--hub-key-file: the hub's half goes to a 0600 file that `smartpark keys import`
    takes on the hub; a re-flash with the same file keeps the key."""
    from smartpark.hub import keys
    hub_file = tmp_path / "node-7.key.json"
    proc = _flash(pty_board.port, tiny_bundle, "--no-reset", "--hub-key-file", hub_file)
    assert proc.returncode == 0, proc.stderr
    assert os.stat(hub_file).st_mode & 0o777 == 0o600
    rec = keys.read_file(str(hub_file))
    assert rec["node"] == "node-7"
    assert _board_key(pty_board.flash_dir) == keys.node_half(rec)
    proc = _flash(pty_board.port, tiny_bundle, "--no-reset", "--hub-key-file", hub_file)
    assert proc.returncode == 0 and ", kept" in proc.stderr, proc.stderr
    assert keys.read_file(str(hub_file)) == rec
    hub_data = tmp_path / "far-hub"
    proc = smartpark("keys", "import", hub_file, "--data", hub_data)
    assert proc.returncode == 0, proc.stderr
    assert keys.load_all(str(hub_data)) == [rec]
    # a hub file of another node is not overwritten
    proc = _flash(pty_board.port, tiny_bundle, "--no-reset", "--hub-key-file", hub_file,
                  node="node-8")
    assert proc.returncode == 20 and "holds the key of node node-7" in proc.stderr, proc.stderr
    assert keys.read_file(str(hub_file)) == rec


def test_flash_needs_a_key_option(tiny_bundle, tmp_path):
    proc = smartpark("flash", "--port", str(tmp_path / "nope"), "--node-id", "n1",
                     "--bundle", tiny_bundle)
    assert proc.returncode == 2 and "--data DIR" in proc.stderr and "--no-key" in proc.stderr
    proc = smartpark("flash", "--port", str(tmp_path / "nope"), "--node-id", "n1",
                     "--bundle", tiny_bundle, "--no-key", "--rotate-key")
    assert proc.returncode == 2, proc.stderr
    proc = smartpark("flash", "--port", str(tmp_path / "nope"), "--node-id", "n1",
                     "--bundle", tiny_bundle, "--no-key", "--data", tmp_path)
    assert proc.returncode == 2 and "not allowed with" in proc.stderr
