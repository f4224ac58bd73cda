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
"state", "result", "reason", "failed"}; "file" -1 is the manifest being
fetched, -2 the manifest whole and not yet read by otaman.py. The block a download resumes at is
the size of the file on flash / 512, so a power cut between a block's write
and the progress file loses nothing; a file whose size is not a whole number
of blocks (a torn write) is fetched again. SHA-256 cannot be resumed in
MicroPython, so each file is hashed from flash once it is complete.

A file whose bytes the running version already has (same size and SHA-256,
found along sys.path) is copied on flash instead of fetched, so a version
that changes a few files downloads those files and the manifest only.

Heap: one 512-byte block at a time goes straight to flash; the manifest
too, which otaman.py then reads back as a stream, one file entry at a time,
in a call of its own: node.update() unloads this module before it imports
otaman, so the two halves never share the heap.
"""

import hashlib
import os
import sys

from compat import exists, log, ticks_ms
from node import load_json
from node import save_json as _save
from smartpark.protocol import coap

STATE = "ota.json"
BOOT = "boot.json"
MARKER = "version"
INDEX = "files.lst"
MANIFEST = "manifest.json"
BLOCK = 512
SZX = 5


def slot_dir(s):
    return "app_" + s


def load(path):
    d = load_json(path, {})
    return d if isinstance(d, dict) else {}


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


def _settle(node, st):
    """The outcome of the last switch, recorded before anything else: main.py's fall-back,
    a trial version to confirm, a full image set to boot; False when there is none."""
    boot = getattr(sys.modules.get("node"), "BOOT", None)
    if boot is not None and boot.get("reason"):
        return rolled_back(boot)
    if boot is not None and boot.get("trial"):
        return confirm(boot) if node.fw_acked else None
    if st.get("kind") == "image" and st.get("state") == "updating":
        import otaimage  # a full image set to boot: confirm it, or report its roll-back
        return otaimage.booted(node, st)
    return False


async def step(node, left=None):
    """Records main.py's fall-back (rolled_back), confirms a trial version whose report the hub
    acked, or fetches one wake's share of node.fw_wanted (`left`: blocks of it still to use,
    when this is the wake's second call); the new (state, result, reason), or None, or, when
    the manifest is whole and otaman.check() is to read it, the number of blocks left of the
    wake's share. Once every file is verified, the state is "downloaded" for one cycle (the
    hub hears it), then the next switches (and resets the board)."""
    st = load(STATE)
    got = _settle(node, st)
    if got is not False:
        return got
    want = node.fw_wanted
    if want is None:
        if node.fw_acked and st.get("state") in ("downloading", "downloaded"):
            return _withdrawn(st)   # the hub no longer wants it: stop, the slot stays staged
        return None
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
    budget = [o["blocks_per_wake"] if left is None else left]
    try:
        if st["file"] == -2:
            return budget[0]
        got = await _manifest(node, st, d, budget) if st["file"] < 0 else None
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
    if st["state"] == "downloading":   # reported first: the switch comes at the next cycle
        st["state"] = "downloaded"
        _save(st, STATE)
        return "downloaded", None, None
    switch(node, st, boot, slot)
    return None


async def _manifest(node, st, d, budget):
    """The manifest into the slot; the blocks left once it is whole (file -2: otaman reads it)."""
    if not await _fetch(node, "/fw/" + st["version"], d + "/" + MANIFEST, budget):
        return _progress(st, _size(d + "/" + MANIFEST) // BLOCK)
    st["file"] = -2
    _save(st, STATE)
    return budget[0]


async def _files(node, st, d, budget, o):
    """The files, one after the other, each verified from flash; None when all are."""
    if st.get("kind") == "image":
        import otaimage  # MicroPython itself, into the next app partition
        return await otaimage.step(node, st, d, budget, o)
    while True:
        e = file_entry(d, st["file"])
        if e is None:
            return None
        p, size, sha = e
        dest = d + "/" + p
        if "/" in p:
            makedirs(dest[:dest.rfind("/")])
        if _size(dest) != size and not _copy_running(p, size, sha, dest):
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
            _save(st, STATE)
            continue
        st["file"] += 1
        st["block"] = 0
        _save(st, STATE)


def _copy_running(p, size, sha, dest):
    """Copy file `p` from the running version when it holds the same bytes (size, then
    SHA-256), found as the import system finds it (sys.path: the running slot, the root, /rom;
    a bundle's lib/ is on the path too); True when copied. A version that changes a few
    files costs the radio those files only."""
    for d in sys.path:
        if d.startswith("app_") and d[4:5] == dest[4:5]:
            continue   # the slot being written
        for q in (p, p[4:] if p[:4] == "lib/" else None):
            src = (d + "/" + q if d else q) if q else None
            if src and _size(src) == size and sha256_file(src) == sha:
                buf = bytearray(BLOCK)
                with open(src, "rb") as f, open(dest, "wb") as out:
                    while True:
                        n = f.readinto(buf)
                        if not n:
                            return True
                        out.write(buf if n == BLOCK else buf[:n])
    return False


def _withdrawn(st):
    st["state"] = "idle"
    st["result"] = None
    st["reason"] = None
    _save(st, STATE)
    log("OTA", st.get("version"), "withdrawn by the hub")
    return "idle", None, None


def _progress(st, block, result=None):
    st["block"] = block
    if result:
        st["result"] = result
    _save(st, STATE)
    return st["state"], st.get("result"), st.get("reason")


def _finish(st, state, result, reason, failed):
    st["state"] = state
    st["result"] = result
    st["reason"] = reason
    if failed:
        st["failed"] = failed
    _save(st, STATE)
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
    _save(st, STATE)
    _save({"slot": slot, "trial": True, "boots": 0, "prev": running_slot(boot),
           "max": node.cfg["ota"]["trial_boots"]}, BOOT)
    log("OTA: firmware", st["version"], "in slot", slot, "- restarting on trial")
    restart(node)


def restart(node):
    """Save what deep sleep saves, then reset the board (also otaimage.py's, after set_boot)."""
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
    _save(st, STATE)
    _save(b, BOOT)
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
    _save(st, STATE)
    b = {"slot": boot.get("slot"), "trial": False, "boots": 0, "prev": boot.get("prev")}
    _save(b, BOOT)
    boot.clear()
    boot.update(b)
    log("OTA:", failed, "rolled back:", why)
    return "idle", "rolled_back", why
