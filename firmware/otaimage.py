"""Full-image updates: MicroPython itself, written into the next app partition (esp32.Partition).

Loaded only for a bundle whose manifest says "kind": "image" (one file, the
app image, tools/bundle.py --image), and unloaded after: otaman.check() asks
fits(), ota.step() hands it the files phase (step()) and, after the reset,
the new image's first boots (booted()). The manifest, the conditions, the
blocks and the results are ota.py's; ota.json has "kind": "image" and
"part", the label of the partition written.

Download. Partition(RUNNING).get_next_update() is the partition to write (on
MicroPython's OTA builds ota_0 and ota_1, 1.5 MiB each; blocks of 4096 bytes).
Each 512-byte Block2 block goes to its byte offset with the extended
writeblocks(sector, data, offset), which never erases: a block that starts a
sector erases it first (ioctl 6). The first block must start an app image
(esp_image_header_t's magic 0xE9 at byte 0, esp_app_desc_t's magic word at
byte 32), else unsupported_bundle. Progress is the number of blocks written,
"block" in ota.json, saved after every whole sector and at the end of a wake;
a sleep, reboot or power cut resumes there, writing again the blocks after it
that were already written: the same bytes over themselves, which NOR flash
keeps (a write only clears bits, so the result is what was there), and a
torn write finishes the same way; a block that starts a sector erases it
again. At most ota.blocks_per_wake blocks per cycle, as for files.

Switch. The whole image is hashed back from the partition (readblocks), a
wrong SHA-256 starts it again (ota.retries times, then integrity_failure);
then set_boot() (ESP-IDF checks the image again and raises OSError when it
does not verify: unsupported_bundle), state "updating", and ota.restart()
saves what deep sleep saves and resets the board. A hard reset, never deep
sleep, must follow set_boot(): a deep-sleep wake runs the partition that ran
before without reading the boot choice.

After the reset. booted() reads Partition(RUNNING): another partition than
the one written means the bootloader rolled back (the image did not start,
or a reset came before it was confirmed): rolled_back, and that version is
not fetched again. The new image confirms itself at the first report the hub
acks: mark_app_valid_cancel_rollback(), image.json ({"version", "app",
"part"}: node.py reports "version" as the running firmware while "app", the
app code's own version, runs), success. A reset before that (power-on, reset,
watchdog; not a deep-sleep wake) and the bootloader rolls back
(CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE).
"""

import hashlib
import sys

from compat import log, sleep_ms, ticks_ms
from node import save_json as save

try:
    from esp32 import Partition
except ImportError:  # the unix port: the board layer's simulation (sim/partition.py)
    from board import partition
    Partition = partition()  # type: ignore[misc,assignment]

SECTOR = 4096
BLOCK = 512
IMAGE = "image.json"
_APP_DESC = b"\x32\x54\xcd\xab"   # esp_app_desc_t.magic_word 0xABCD5432, little-endian


def _running():
    # the stubs type the id as a label; RUNNING and BOOT are ints (esp32_partition.c)
    return Partition(Partition.RUNNING)  # type: ignore[arg-type]


def not_app_image(head):
    """None when `head`, a file's first bytes, starts an ESP-IDF app image; else what is wrong."""
    if len(head) < 36 or head[0] != 0xE9:
        return "not an ESP32 app image (no 0xE9 at byte 0)"
    if head[32:36] != _APP_DESC:
        return "an ESP32 image but not an app (no app description at byte 32)"
    return None


def fits(d):
    """None when the staging slot's files.lst lists one file the next app partition holds, else
    (result, reason). Called by otaman.check() with the manifest indexed."""
    n = size = 0
    with open(d + "/files.lst") as f:
        for line in f:
            n += 1
            size = int(line.split()[1])
    if n != 1:
        return "unsupported_bundle", "an image bundle lists one file, this one %d" % n
    try:
        p = _running().get_next_update()
    except OSError as e:
        return "unsupported_bundle", "no app partition to write (%r): no OTA partition table" % e
    info = p.info()
    if size > info[3]:
        return "not_enough_flash", "image %d B, partition %s holds %d B" % (size, info[4], info[3])
    return None


async def _sha(node, p, size):
    """The SHA-256 of the image read back from the partition; the loop yields every sector, so
    the watchdog task feeds on through a 1.5 MiB read."""
    h = hashlib.sha256()
    buf = bytearray(BLOCK)
    pos = 0
    while pos < size:
        if size - pos < BLOCK:
            buf = bytearray(size - pos)
        sector, off = divmod(pos, SECTOR)
        p.readblocks(sector, buf, off)
        h.update(buf)
        pos += len(buf)
        if not off:
            node._alive = ticks_ms()
            await sleep_ms(0)
    return h.digest()


def _again(ota, st, o, why):
    """The image from its first block again, or integrity_failure after ota.retries tries."""
    st["tries"] = st.get("tries", 0) + 1
    if st["tries"] > o["retries"]:
        return ota._finish(st, "idle", "integrity_failure", why, st["version"])
    st["reason"] = why + ", fetching it again"
    return ota._progress(st, 0, "integrity_failure")


async def step(node, st, d, budget, o):
    """One wake's share of the image: (state, result, reason), never None (ota.step switches
    slots on None); once the image is whole and verified, set to boot and the board reset."""
    import ota  # loaded: step() is called by ota.step()
    path, size, sha = ota.file_entry(d, 0)
    p = _running()
    if p.info()[4] == st.get("part"):   # set to boot, and reset before ota.json said so
        st["state"] = "updating"
        return booted(node, st) or ota._progress(st, st.get("block", 0))
    p = p.get_next_update()
    if st.get("part") != p.info()[4]:
        st["part"] = p.info()[4]
        st["block"] = 0
    num = st.get("block", 0)
    url = "/fw/%s/%s" % (st["version"], path)
    while num * BLOCK < size:
        if budget[0] <= 0:
            return ota._progress(st, num)
        budget[0] -= 1
        node._alive = ticks_ms()
        data, more = await ota._block(node, url, num)
        pos = num * BLOCK
        why = not_app_image(data) if num == 0 else None
        if why:
            return ota._finish(st, "idle", "unsupported_bundle", "%s: %s" % (path, why), st["version"])
        if len(data) > BLOCK or pos + len(data) > size or not more and pos + len(data) < size:
            return _again(ota, st, o, "%s: size differs" % path)
        sector, off = divmod(pos, SECTOR)
        if not off:
            p.ioctl(6, sector)   # erase: the extended writeblocks does not
        p.writeblocks(sector, data, off)
        num += 1
        if off + len(data) == SECTOR:
            st["block"] = num
            save(st, ota.STATE)
    if await _sha(node, p, size) != sha:
        return _again(ota, st, o, "%s: hash differs" % path)
    try:
        p.set_boot()
    except OSError as e:
        return ota._finish(st, "idle", "unsupported_bundle", "the bootloader refuses %s: %r" % (path, e),
                           st["version"])
    st["block"] = num
    st["state"] = "updating"
    st["result"] = st["reason"] = None
    save(st, ota.STATE)
    log("OTA: MicroPython image", st["version"], "in", st["part"], "- restarting into it")
    ota.restart(node)
    return ota._progress(st, num)   # not reached: the board resets


def booted(node, st):
    """After the reset into the image: rolled_back when another partition runs; success (and
    the image marked valid) once a report was acked; None until then."""
    import ota  # loaded: booted() is called by ota.step()
    running = _running().info()[4]
    v = st.get("version")
    if running != st.get("part"):
        return ota._finish(st, "idle", "rolled_back",
                           "the bootloader started %s again, not %s" % (running, st.get("part")), v)
    if not node.fw_acked:
        return None
    why = "MicroPython %d.%d.%d in %s" % (sys.implementation.version[:3] + (running,))
    try:
        Partition.mark_app_valid_cancel_rollback()
    except OSError as e:   # a bootloader without roll-back: nothing to confirm
        why += ", no roll-back to cancel (%r)" % e
    nm = sys.modules.get("node")
    b = getattr(nm, "BOOT", None)
    app = b.get("fw") if b else None
    if not app:   # the factory code, as main.py says
        from smartpark.protocol.version import VERSION
        app = VERSION
    save({"version": v, "app": app, "part": running}, IMAGE)
    if nm is not None:
        setattr(nm, "FIRMWARE", v)   # what the hub wanted runs now
    node.fw_wanted = None
    return ota._finish(st, "idle", "success", why, None)
