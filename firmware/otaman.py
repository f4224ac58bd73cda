"""The manifest half of an over-the-air update: read the downloaded manifest, check it fits.

ota.py fetches manifest.json into the staging slot; once the whole file is on
flash, ota.step() answers with the blocks left of the wake's share, and
node.update() unloads ota, runs check() here, unloads it and gives ota.step()
the rest of the share for the files. The two halves are never in the heap
together: the download's extra heap is the larger of the two, not their sum
(docs/firmware-size.md, "What an update costs"). check() streams the
manifest (scan(), one file entry at a time), writes the slot's file index
files.lst ("path size sha256" per line, the loader's own boot.py and main.py
left out), refuses a bundle this node cannot run (unsupported_bundle: another
version, board or MicroPython; a bad path) or hold (not_enough_flash), and
marks the state so the next ota.step() fetches the first file.
"""

import json
import os
import sys

from compat import log, unload
from node import load_json, save_json

STATE = "ota.json"
INDEX = "files.lst"
MANIFEST = "manifest.json"
LOADER = ("boot.py", "main.py")   # the loader stays the flashed one


def scan(f, entry):  # noqa: C901 - one pass of a small JSON tokenizer over a stream
    """The manifest's small top-level values ({"firmware_version": ..., "micropython": {...}}),
    read from stream `f` 256 bytes at a time; each object of its "files" array goes to
    `entry(dict)` as it is read, so only one file entry is ever in the heap. Top-level values
    longer than 1 KB (none but "files" in a bundle) are skipped."""
    top = {}
    depth = 0
    instr = esc = False
    key = None
    kb = None        # a top-level key being read
    cur = None       # the raw bytes of the value or file entry being collected
    big = False
    while True:
        chunk = f.read(256)
        if not chunk:
            break
        for c in chunk:
            if instr:
                if cur is not None:
                    cur.append(c)
                if esc:
                    esc = False
                elif c == 92:
                    esc = True
                elif c == 34:
                    instr = False
                    if kb is not None:
                        key = bytes(kb).decode()
                        kb = None
                elif kb is not None:
                    kb.append(c)
                continue
            if c in (32, 9, 10, 13):
                continue
            if depth == 1 and c in (44, 125):    # ',' or '}' ends a top-level value
                if cur is not None and not big and key is not None and key != "files":
                    top[key] = json.loads(bytes(cur))
                cur = None
                key = None
                big = False
                if c == 44:
                    continue
            if depth == 1 and key is None and c == 34:   # a top-level key starts
                kb = bytearray()
                instr = True
                continue
            if depth == 1 and c == 58:   # ':' - the value follows
                if key != "files":
                    cur = bytearray()
                continue
            if key == "files" and depth == 2 and c == 123:
                cur = bytearray()
            if cur is not None:
                cur.append(c)
                if len(cur) > 1024:
                    cur = None
                    big = True
            if c == 34:
                instr = True
            elif c in (123, 91):
                depth += 1
            elif c in (125, 93):
                depth -= 1
                if key == "files" and depth == 2 and cur is not None:
                    entry(json.loads(bytes(cur)))
                    cur = None
    return top


def _mp_version():
    v = sys.implementation.version
    return (v[0], v[1], v[2])


def _parse_version(t):
    try:
        p = str(t).lstrip("v").split("-")[0].split(".")
        return (int(p[0]), int(p[1]), int(p[2]) if len(p) > 2 else 0)
    except (ValueError, IndexError):
        return None


def _check_bundle(top, want):
    """None, or why the bundle cannot run here (unsupported_bundle)."""
    if top.get("firmware_version") != want:
        return "manifest is for %s" % top.get("firmware_version")
    board = "esp32" if sys.platform == "esp32" else "unix"
    if top.get("board", board) != board:
        return "bundle for board %s" % top.get("board")
    mp = top.get("micropython") or {}
    here = _mp_version()
    least = _parse_version(mp.get("min", "0.0"))
    target = _parse_version(mp.get("target", "0.0"))
    if least is None or target is None:
        return "bad MicroPython version in manifest"
    if here < least:
        return "needs MicroPython %d.%d.%d" % least
    if top.get("kind") == "mpy" and target[:2] > here[:2]:
        return "compiled for MicroPython %d.%d" % target[:2]
    return None


def index(d, want):
    """Read the slot's manifest.json into files.lst ("path size sha256" per line); None, or
    why the bundle cannot be installed here."""
    bad = [""]

    def entry(e):
        p = e.get("path") if isinstance(e, dict) else None
        if not isinstance(p, str) or not p or p[0] == "/" or ".." in p or " " in p:
            bad[0] = "bad file path %r" % (p,)
            return
        if p in LOADER:
            return
        out.write("%s %d %s\n" % (p, int(e["size"]), e["sha256"]))

    with open(d + "/" + INDEX + ".tmp", "w") as out:
        with open(d + "/" + MANIFEST, "rb") as f:
            try:
                top = scan(f, entry)
            except (ValueError, KeyError, TypeError) as e:
                return "manifest unreadable: %r" % e, None
    os.rename(d + "/" + INDEX + ".tmp", d + "/" + INDEX)
    return bad[0] or _check_bundle(top, want), top.get("kind")


def _need(d, bsize):
    need = 0
    with open(d + "/" + INDEX) as f:
        for line in f:
            size = int(line.split()[1])
            need += (size + bsize - 1) // bsize * bsize
    return need


def free_flash():
    try:
        st = os.statvfs(".")
        return st[0] * st[4], st[0]
    except (AttributeError, OSError):
        return None, 4096


def _end(st, result, reason, failed=None):
    st["state"] = "idle"
    st["result"] = result
    st["reason"] = reason
    if failed:
        st["failed"] = failed
    save_json(st, STATE)
    log("OTA", st.get("version"), "->", result + ":", reason)
    return "idle", result, reason


def check(o):
    """Index and check the manifest in the staging slot (ota.json names it); None when the
    files can be fetched, else the new (state, result, reason). `o`: the config's ota section."""
    st = load_json(STATE, {})
    if not isinstance(st, dict) or st.get("file") != -2:
        return None
    d = "app_" + st["slot"]
    want = st["version"]
    try:
        why, kind = index(d, want)
        if why:
            return _end(st, "unsupported_bundle", why, want)
        if kind == "image":   # MicroPython itself, for the next app partition (otaimage.py)
            import otaimage
            try:
                bad = otaimage.fits(d)
            finally:
                unload("otaimage")
            if bad:
                return _end(st, bad[0], bad[1], want)
            st["kind"] = "image"
            free = None
        else:
            free, bsize = free_flash()
            need = _need(d, bsize) + o["flash_margin"]
    except MemoryError:
        return _end(st, "out_of_memory", "reading the manifest")
    except OSError as e:
        if e.args and e.args[0] == 28:
            return _end(st, "not_enough_flash", "flash full")
        return _end(st, "unsupported_bundle", "manifest unreadable: %r" % e, want)
    if free is not None and free < need:
        return _end(st, "not_enough_flash", "%d B free, %d B needed" % (free, need))
    st["file"] = 0
    st["block"] = 0
    save_json(st, STATE)
    return None
