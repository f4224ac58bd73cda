"""Simulated esp32.Partition for the unix port: two app partitions in files, NOR flash, a bootloader.

The subset of MicroPython's esp32.Partition (ports/esp32/esp32_partition.c)
that a full-image update uses (otaimage.py, through board.partition()):
Partition(Partition.RUNNING / BOOT / label), find(), info(), get_next_update(),
readblocks / writeblocks in both forms (the extended one, with an offset, never
erases), ioctl 4 (block count), 5 (block size), 6 (erase one 4096-byte block),
set_boot() and mark_app_valid_cancel_rollback().

The partition table is that of MicroPython's OTA builds (partitions-4MiB-ota.csv):
app partitions ota_0 at 0x10000 and ota_1 after it, each 1.5 MiB, or
config.json's sim.partition_size bytes. Each is a file in the flash directory,
flash_ota_0.bin and flash_ota_1.bin; a file shorter than its partition reads
as erased (0xFF) past its end. The factory-flashed image in ota_0 is not held:
its file starts empty and the bootloader trusts it.

NOR flash: a write can only clear bits (the new byte is old AND written) and an
erase sets a whole 4096-byte sector to 0xFF, so a write over data that was not
erased first leaves wrong bytes, which the update's SHA-256 check then finds.

The bootloader: otadata.json (the otadata partition's part) names the
partition set to boot, its state and the partition that runs:
{"boot", "state", "prev", "running", "aborted", "why"}. set_boot() checks
the image as esp_ota_set_boot_partition does (esp_image_verify: header,
segments, checksum, the appended SHA-256; OSError(-0x1503) when it does not
verify) and marks it "new". boot() is the bootloader's choice at a reset;
sim/__init__.py runs it once per process when otadata.json exists (the
process is one boot): a "new" image is verified again and runs "pending"; a
"pending" image that was not marked valid before this reset is "aborted" and
the previous partition runs again (CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE);
mark_app_valid_cancel_rollback() makes the running pending image "valid". A
wake from deep sleep (sim/board.py's deepsleep.flag still there) skips the
choice and runs the partition that ran before, as MicroPython's bootloader
does with CONFIG_BOOTLOADER_SKIP_VALIDATE_IN_DEEP_SLEEP.
"""

import hashlib
import json
import os

DATA = "otadata.json"
_SLEEP_FLAG = "deepsleep.flag"   # sim/board.py's: there while a deep-sleep wake boots
SECTOR = 4096
LABELS = ("ota_0", "ota_1")
_BASE = 0x10000
_SIZE = 0x180000                 # partitions-4MiB-ota.csv: 1.5 MiB each
_VALIDATE_FAILED = 0x1503        # ESP_ERR_OTA_VALIDATE_FAILED
_APP_DESC = b"\x32\x54\xcd\xab"  # esp_app_desc_t.magic_word 0xABCD5432, at byte 32


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _size():
    try:
        with open("config.json") as f:
            sim = json.load(f).get("sim") or {}
        return int(sim.get("partition_size", _SIZE))
    except (OSError, ValueError, TypeError, AttributeError):
        return _SIZE


def load():
    """The otadata; when there is none (as flashed) the first OTA partition boots, valid."""
    try:
        with open(DATA) as f:
            d = json.load(f)
        if isinstance(d, dict) and d.get("boot") in LABELS and d.get("running") in LABELS:
            return d
    except (OSError, ValueError):
        pass
    return {"boot": LABELS[0], "state": "valid", "prev": LABELS[0], "running": LABELS[0]}


def _save(d):
    with open(DATA + ".tmp", "w") as f:
        json.dump(d, f)
    os.rename(DATA + ".tmp", DATA)


def _back(d, why):
    d["aborted"] = d["boot"]
    d["why"] = why
    d["boot"] = d["running"] = d.get("prev", LABELS[0])
    d["state"] = "valid"


def boot():
    """The bootloader's choice at a reset (once per process, see the module's docstring)."""
    if _exists(_SLEEP_FLAG):
        return   # a deep-sleep wake: the partition that ran before, nothing chosen
    d = load()
    if d.get("state") == "new":
        why = verify(Partition(d["boot"]))
        if why is None:
            d["state"] = "pending"
            d["running"] = d["boot"]
        else:
            _back(d, "invalid image: " + why)
    elif d.get("state") == "pending":
        _back(d, "not marked valid before the next reset")
    else:
        d["running"] = d["boot"]
    _save(d)


def verify(p):
    """None when partition `p` holds an app image that verifies; else why not. The walk of
    esp_image_verify: esp_image_header_t (magic 0xE9, 1 to 16 segments), esp_app_desc_t's magic
    word after the first segment header, each segment (8-byte header, data) inside the
    partition, the checksum byte (0xEF XOR every data byte) at the end of the image padded to
    16 bytes, and with hash_appended (byte 23) the SHA-256 of all that in the 32 bytes after."""
    head = p.read(0, 36)
    if head[0] != 0xE9:
        return "no image header (byte 0 is 0x%02x)" % head[0]
    if not 1 <= head[1] <= 16:
        return "%d segments" % head[1]
    if head[32:36] != _APP_DESC:
        return "no app description"
    pos = 24
    check = 0xEF
    for _ in range(head[1]):
        seg = p.read(pos, 8)
        n = int.from_bytes(seg[4:8], "little")
        pos += 8
        if pos + n > p.size:
            return "a segment runs past the partition"
        end = pos + n
        while pos < end:
            for b in p.read(pos, min(SECTOR, end - pos)):
                check ^= b
            pos = min(pos + SECTOR, end)
    length = (pos + 16) & ~15
    if length + 32 > p.size:
        return "the image runs past the partition"
    if p.read(length - 1, 1)[0] != check:
        return "checksum"
    if head[23] == 1:
        h = hashlib.sha256()
        at = 0
        while at < length:
            h.update(p.read(at, min(SECTOR, length - at)))
            at += SECTOR
        if h.digest() != p.read(length, 32):
            return "SHA-256"
    return None


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=SECTOR):
        if id == Partition.BOOT or id == Partition.RUNNING:
            label = load()["boot" if id == Partition.BOOT else "running"]
        elif isinstance(id, int):
            raise ValueError(id)
        elif id in LABELS:
            label = id
        else:
            raise OSError(2)   # ENOENT, as for a label the partition table lacks
        self.label = label
        self.bs = block_size
        self.size = _size()
        self.file = "flash_%s.bin" % label

    def __repr__(self):
        t, s, a, n, label, enc = self.info()
        return "<Partition type=%d, subtype=%d, address=%d, size=%d, label=%s, encrypted=%d>" % (
            t, s, a, n, label, enc)

    @staticmethod
    def find(type=TYPE_APP, subtype=0xFF, label=None, block_size=SECTOR):
        if type != Partition.TYPE_APP:
            return []
        return [Partition(n, block_size) for i, n in enumerate(LABELS)
                if subtype in (0xFF, 0x10 + i) and label in (None, n)]

    def info(self):
        i = LABELS.index(self.label)
        return (Partition.TYPE_APP, 0x10 + i, _BASE + i * self.size, self.size, self.label, False)

    def get_next_update(self):
        return Partition(LABELS[(LABELS.index(self.label) + 1) % len(LABELS)])

    # --- the flash ---
    def read(self, pos, n):
        if pos < 0 or pos + n > self.size:
            raise OSError(22)
        try:
            with open(self.file, "rb") as f:
                f.seek(pos)
                b = f.read(n)
        except OSError:
            b = b""
        return b + b"\xff" * (n - len(b))

    def _put(self, pos, data):
        """Store the bytes as they are (a file shorter than `pos` is filled with 0xFF)."""
        if not _exists(self.file):
            open(self.file, "wb").close()
        with open(self.file, "r+b") as f:
            end = f.seek(0, 2)
            while end < pos:
                end += f.write(b"\xff" * min(SECTOR, pos - end))
            f.seek(pos)
            f.write(data)

    def _program(self, pos, data):
        if pos < 0 or pos + len(data) > self.size:
            raise OSError(22)
        old = self.read(pos, len(data))
        self._put(pos, bytes(a & b for a, b in zip(old, data)))

    def _erase(self, pos, n):
        if pos % SECTOR or n % SECTOR or pos < 0 or pos + n > self.size:
            raise OSError(22)
        for at in range(pos, pos + n, SECTOR):
            self._put(at, b"\xff" * SECTOR)

    def readblocks(self, block, buf, offset=0):
        buf[:] = self.read(block * self.bs + offset, len(buf))

    def writeblocks(self, block, buf, offset=None):
        pos = block * self.bs
        if offset is None:
            self._erase(pos, len(buf))   # the simple form erases first
        else:
            pos += offset                # the extended form never does
        self._program(pos, bytes(buf))

    def ioctl(self, op, arg=None):
        if op in (1, 2, 3):
            return 0
        if op == 4:
            return self.size // self.bs
        if op == 5:
            return self.bs
        if op == 6:
            if self.bs != SECTOR:
                return -22
            self._erase(arg * SECTOR, SECTOR)
            return 0
        return None

    # --- the bootloader's part ---
    def set_boot(self):
        if verify(self) is not None:
            raise OSError(-_VALIDATE_FAILED)
        d = load()
        d["prev"] = d["running"]
        d["boot"] = self.label
        d["state"] = "new"
        _save(d)

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        d = load()
        if d.get("state") == "pending" and d["running"] == d["boot"]:
            d["state"] = "valid"
            _save(d)
