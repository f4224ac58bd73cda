"""Over-the-air update, the node's side: download a version into the other app slot, verify, switch.

Loaded only while an update is wanted or its outcome is being recorded; node.py
imports it inside the call and unloads it after (compat.unload).

Slots. Two app slot directories, `app_a` and `app_b`, beside config.json. A
slot holds a whole version (the bundle's files at their device paths, its
manifest.json, files.lst, the index of its files, and `version`, the marker
written once every file is verified). The factory code (the flashed root files,
or /rom in the ROMFS layout) is slot "a" until an update first writes `app_a`:
a slot without its marker is never run, the loader (main.py) falls back to the
factory code. boot.py and main.py are the loader: they are never replaced over
the air, and the bundle's copies are not downloaded.

boot.json, the boot pointer, written last (temp + rename):
  {"slot": "a"|"b", "trial": bool, "boots": n, "prev": "a"|"b", "max": n}
A new version boots on trial; main.py counts its boots and falls back to
"prev" when they exceed "max" (config ota.trial_boots) or when importing it
raises, leaving the "reason" in boot.json. Its first report the hub acks
confirms it (confirm()). rolled_back() records the fall-back in ota.json for
the version that runs again.

ota.json, the progress (temp + rename after each file and at the end of each
wake): {"version", "slot", "file" (-1: the manifest), "block", "tries",
"state", "result", "reason", "failed"}. The block a download resumes at is
the size of the file on flash / 512, so a power cut between a block's write
and the progress file loses nothing; a file whose size is not a whole number
of blocks (a torn write) is fetched again. SHA-256 cannot be resumed in
MicroPython, so each file is hashed from flash once it is complete.

Heap: one 512-byte block at a time goes straight to flash; the manifest
too, which is then read back as a stream (scan()), one file entry at a time.
"""

import hashlib
import json
import os
import sys

from compat import exists, log, ticks_ms
from smartpark.protocol import coap

STATE = "ota.json"
BOOT = "boot.json"
MARKER = "version"
INDEX = "files.lst"
MANIFEST = "manifest.json"
BLOCK = 512
SZX = 5
LOADER = ("boot.py", "main.py")   # the loader stays the flashed one


def slot_dir(s):
    return "app_" + s


def load(path):
    try:
        with open(path) as f:
            d = json.load(f)
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def save(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.rename(tmp, path)


def slot_version(s):
    try:
        with open(slot_dir(s) + "/" + MARKER) as f:
            return f.read().strip() or None
    except OSError:
        return None


def running_slot(boot):
    s = boot.get("slot") if boot else None
    return s if s in ("a", "b") and slot_version(s) else "a"


def _isdir(p):
    try:
        return os.stat(p)[0] & 0x4000 != 0
    except OSError:
        return False


def rmtree(p):
    if _isdir(p):
        for name in os.listdir(p):
            rmtree(p + "/" + name)
        os.rmdir(p)
    elif exists(p):
        os.remove(p)


def makedirs(p):
    cur = ""
    for part in p.split("/"):
        cur = cur + "/" + part if cur else part
        if not _isdir(cur):
            os.mkdir(cur)


def _size(p):
    try:
        return os.stat(p)[6]
    except OSError:
        return -1


def sha256_file(p):
    h = hashlib.sha256()
    buf = bytearray(BLOCK)
    with open(p, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(buf if n == BLOCK else buf[:n])
    return h.digest()


# --- the manifest, streamed ---

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
                return "manifest unreadable: %r" % e
    os.rename(d + "/" + INDEX + ".tmp", d + "/" + INDEX)
    return bad[0] or _check_bundle(top, want)


def file_entry(d, i):
    """(path, size, sha256 bytes) of file i of the slot's index, or None past the end."""
    with open(d + "/" + INDEX) as f:
        n = 0
        for line in f:
            if n == i:
                p, size, sha = line.split()
                return p, int(size), bytes.fromhex(sha)
            n += 1
    return None


def free_flash():
    try:
        st = os.statvfs(".")
        return st[0] * st[4], st[0]
    except (AttributeError, OSError):
        return None, 4096


# --- the update ---

def _vbat(node):
    for _s, drv in node.sensors:
        if drv.FIELDS[0][0] == "vbat":
            try:
                return drv.value(0)
            except Exception:  # noqa: BLE001 - no reading: no battery condition
                return None
    return None


async def _block(node, path, num):
    r = await node.client.request(coap.GET, path, options=[(coap.BLOCK2, coap.block_encode(num, False, SZX))])
    if r.code != coap.CONTENT:
        raise OtaError("unsupported_bundle" if r.code == coap.NOT_FOUND else "connection_lost",
                       "%s %s" % (coap.code_str(r.code), path))
    blk = r.block2
    more = bool(blk and blk[1])
    if blk and blk[0] != num:
        raise OtaError("connection_lost", "asked block %d, got %d" % (num, blk[0]))
    return r.payload, more


class OtaError(Exception):
    def __init__(self, result, reason):
        super().__init__(reason)
        self.result = result
        self.reason = reason


def _fresh(st, want, slot):
    d = slot_dir(slot)
    rmtree(d + "/" + MARKER)   # first: a half-written slot is never bootable
    rmtree(d)
    makedirs(d)
    keep = st.get("failed")
    st.clear()
    st.update({"version": want, "slot": slot, "file": -1, "block": 0, "tries": 0,
               "state": "downloading", "result": None, "reason": None, "failed": keep})


async def _fetch(node, path, dest, budget):
    """Fetch `path` into file `dest` from where it stands, at most budget[0] blocks; True when
    the whole file is on flash."""
    size = max(_size(dest), 0)
    if size % BLOCK:
        os.remove(dest)   # a torn write: fetch the file again
        size = 0
    num = size // BLOCK
    while budget[0] > 0:
        budget[0] -= 1
        node._alive = ticks_ms()
        data, more = await _block(node, path, num)
        with open(dest, "ab" if num else "wb") as f:
            f.write(data)
        del data
        num += 1
        if not more:
            return True
    return False


async def step(node):
    """Records main.py's fall-back (rolled_back), confirms a trial version whose report the hub
    acked, or fetches one wake's share of node.fw_wanted; the new (state, result, reason), or
    None. Switches (and resets the board) once the version is complete."""
    boot = getattr(sys.modules.get("node"), "BOOT", None)
    if boot is not None and boot.get("reason"):
        return rolled_back(boot)
    if boot is not None and boot.get("trial"):
        return confirm(boot) if node.fw_acked else None
    want = node.fw_wanted
    if want is None:
        return None
    st = load(STATE)
    if want == st.get("failed"):
        return None
    o = node.cfg["ota"]
    v = _vbat(node)
    low = getattr(sys.modules.get("node"), "low_battery", None)   # config battery.low_v
    if v is not None and (v < o["min_battery"] or (low is not None and low())):
        return _finish(st, st.get("state") or "idle", "deferred_low_battery", "battery %.2f V" % v, None)
    boot = load(BOOT)
    slot = "b" if running_slot(boot) == "a" else "a"
    if st.get("version") != want or st.get("slot") != slot or st.get("state") in (None, "idle"):
        _fresh(st, want, slot)
    d = slot_dir(slot)
    budget = [o["blocks_per_wake"]]
    try:
        got = await _manifest(node, st, d, budget, o) if st["file"] < 0 else None
        if got is None:
            got = await _files(node, st, d, budget, o)
        if got is not None:
            return got
    except MemoryError:
        return _finish(st, "idle", "out_of_memory", "during the download", None)
    except OtaError as e:
        return _finish(st, "idle" if e.result == "unsupported_bundle" else st["state"],
                       e.result, e.reason, None)
    except OSError as e:   # CoapTimeout, CoapReset, the network; ENOSPC
        if e.args and e.args[0] == 28:
            return _finish(st, "idle", "not_enough_flash", "flash full", None)
        return _finish(st, st["state"], "connection_lost", str(e) or repr(e), None)
    switch(node, st, boot, slot)
    return None


async def _manifest(node, st, d, budget, o):
    """The manifest into the slot, read into files.lst and checked; None when done."""
    want = st["version"]
    if not await _fetch(node, "/fw/" + want, d + "/" + MANIFEST, budget):
        return _progress(st, _size(d + "/" + MANIFEST) // BLOCK)
    why = index(d, want)
    if why:
        return _finish(st, "idle", "unsupported_bundle", why, want)
    free, bsize = free_flash()
    need = _need(d, bsize) + o["flash_margin"]
    if free is not None and free < need:
        return _finish(st, "idle", "not_enough_flash", "%d B free, %d B needed" % (free, need), None)
    st["file"] = 0
    save(STATE, st)
    return None


async def _files(node, st, d, budget, o):
    """The files, one after the other, each verified from flash; None when all are."""
    while True:
        e = file_entry(d, st["file"])
        if e is None:
            return None
        p, size, sha = e
        dest = d + "/" + p
        if "/" in p:
            makedirs(dest[:dest.rfind("/")])
        if _size(dest) != size:
            if not await _fetch(node, "/fw/%s/%s" % (st["version"], p), dest, budget):
                return _progress(st, _size(dest) // BLOCK)
        if _size(dest) != size or sha256_file(dest) != sha:
            os.remove(dest)   # from scratch, at most ota.retries times
            st["tries"] = st.get("tries", 0) + 1
            if st["tries"] > o["retries"]:
                return _finish(st, "idle", "integrity_failure", "%s: hash or size differs" % p,
                               st["version"])
            st["result"] = "integrity_failure"
            st["reason"] = "%s: hash or size differs, fetching it again" % p
            save(STATE, st)
            continue
        st["file"] += 1
        st["block"] = 0
        save(STATE, st)


def _need(d, bsize):
    need = 0
    with open(d + "/" + INDEX) as f:
        for line in f:
            size = int(line.split()[1])
            need += (size + bsize - 1) // bsize * bsize
    return need


def _progress(st, block, result=None):
    st["block"] = block
    if result:
        st["result"] = result
    save(STATE, st)
    return st["state"], st.get("result"), st.get("reason")


def _finish(st, state, result, reason, failed):
    st["state"] = state
    st["result"] = result
    st["reason"] = reason
    if failed:
        st["failed"] = failed
    save(STATE, st)
    log("OTA", st.get("version"), "->", result + ":", reason)
    return state, result, reason


def switch(node, st, boot, slot):
    """Every file verified: mark the slot complete, point boot.json at it (written last), reset."""
    d = slot_dir(slot)
    tmp = d + "/" + MARKER + ".tmp"
    with open(tmp, "w") as f:
        f.write(st["version"])
    os.rename(tmp, d + "/" + MARKER)
    st["state"] = "updating"
    st["result"] = None
    st["reason"] = None
    save(STATE, st)
    save(BOOT, {"slot": slot, "trial": True, "boots": 0, "prev": running_slot(boot),
                "max": node.cfg["ota"]["trial_boots"]})
    log("OTA: firmware", st["version"], "in slot", slot, "- restarting on trial")
    node._save_rtc()   # what deep sleep saves
    node._save_pulses()
    node.write_status()
    node.outbox.close()
    node.board.reset()


def confirm(boot):
    """The running trial version got its first acked report: keep it."""
    st = load(STATE)
    b = {"slot": boot.get("slot"), "trial": False, "boots": 0, "prev": boot.get("prev")}
    st["state"] = "idle"
    st["result"] = "success"
    st["reason"] = None
    save(STATE, st)
    save(BOOT, b)
    boot.update(b)
    log("OTA: firmware", st.get("version"), "confirmed")
    return "idle", "success", None


def rolled_back(boot):
    """main.py fell back to the previous slot (boot["reason"]): record it, never retry that
    version (until the hub wants another)."""
    st = load(STATE)
    why = boot.get("reason")
    failed = boot.get("failed_version") or st.get("version")
    st["state"] = "idle"
    st["result"] = "rolled_back"
    st["reason"] = why
    st["failed"] = failed
    save(STATE, st)
    b = {"slot": boot.get("slot"), "trial": False, "boots": 0, "prev": boot.get("prev")}
    save(BOOT, b)
    boot.clear()
    boot.update(b)
    log("OTA:", failed, "rolled back:", why)
    return "idle", "rolled_back", why
