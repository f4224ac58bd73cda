"""Full-image updates (firmware/otaimage.py): MicroPython itself into the next app partition, on
the real micropython against aiocoap's OSCORE server (test_ota_node.FwServer) serving an image
bundle (tools/bundle.py --image). The partitions, NOR flash and the bootloader's choice are the
simulation's (firmware/sim/partition.py); the images are made here in the ESP-IDF app image
format (header, app description, segments, checksum, appended SHA-256), which the simulated
set_boot() and bootloader verify.

Each run of `micropython main.py` is one boot; exit status 75 is the reset after set_boot().
"""

import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import time

import pytest
from smartpark.tools import bundle

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_ota_node as O  # noqa: E402

T = O.T
pytestmark = pytest.mark.micropython

IMG = "mp-1.29.0-img"
PART = 512 * 1024   # the simulated app partitions (config sim.partition_size)


@pytest.fixture
def key():
    return T.make_key()


def app_image(size, seed=1):
    """An ESP-IDF app image of about `size` bytes: esp_image_header_t (hash appended), a segment
    that starts with esp_app_desc_t, a second segment, the checksum and the SHA-256."""
    rnd = random.Random(seed)
    desc = struct.pack("<II8x32s32s16s16s32s", 0xABCD5432, 0, b"v1.29.0", b"micropython",
                       b"00:00:00", b"Jan  1 2000", b"v5.2.2")
    seg1 = desc + bytes(256 - len(desc)) + rnd.randbytes(1024)
    seg2 = rnd.randbytes(max(size - len(seg1) - 64, 4) & ~3)
    out = struct.pack("<BBBBIB3sHBHH4sB", 0xE9, 2, 2, 0x20, 0x40080000, 0xEE, bytes(3), 0, 0, 0,
                      0xFFFF, bytes(4), 1)
    check = 0xEF
    for addr, seg in ((0x3F400020, seg1), (0x400D0020, seg2)):
        out += struct.pack("<II", addr, len(seg)) + seg
        for b in seg:
            check ^= b
    out += bytes(15 - len(out) % 16) + bytes([check])
    return out + hashlib.sha256(out).digest()


def image_bundle(tmp_path, data, version=IMG, name="img"):
    src = tmp_path / (name + ".bin")
    src.write_bytes(data)
    out = str(tmp_path / name)
    bundle.build_image_bundle(str(src), out=out, version=version, board="unix", quiet=True)
    return out


def node_for(tmp_path, mp_bin, mp_path, srv, key, **ota):
    return O.node_for(tmp_path, mp_bin, mp_path, srv, key,
                      cfg={"sim": {"seed": 3, "partition_size": PART}}, **ota)


def older_image(node):
    """ota_1 holds what an earlier update left there: the new image's sectors must be erased."""
    with open(os.path.join(node.flash, "flash_ota_1.bin"), "wb") as f:
        f.write(random.Random(2).randbytes(PART))


def partition(node, label):
    try:
        with open(os.path.join(node.flash, "flash_%s.bin" % label), "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_image_over_several_wakes_boots_and_is_confirmed(tmp_path, micropython_bin, micropython_path,
                                                         key):
    data = app_image(60000)
    srv = O.start(tmp_path, image_bundle(tmp_path, data), key, wanted=IMG)
    try:
        node = node_for(tmp_path, micropython_bin, micropython_path, srv, key, blocks_per_wake=50)
        older_image(node)
        assert O.boot(node, cycles=1) == 0, node.output()[-3000:]
        st = O.readf(node, "ota.json")
        assert st["kind"] == "image" and st["part"] == "ota_1" and 0 < st["block"] * 512 < len(data), st
        codes = [0]
        while codes[-1] != 75 and len(codes) < 8:
            codes.append(O.boot(node, cycles=1))
        out = node.output()
        assert codes[-1] == 75 and len(codes) >= 3, (codes, out[-3000:])
        assert O.readf(node, "ota.json")["state"] == "updating"
        otadata = O.readf(node, "otadata.json")
        assert otadata["boot"] == "ota_1" and otadata["state"] == "new" and otadata["running"] == "ota_0"
        assert partition(node, "ota_1")[:len(data)] == data
        # the reset: the bootloader starts the image on trial; the first acked report confirms it
        assert O.boot(node, cycles=2) == 0, node.output()[-3000:]
        otadata = O.readf(node, "otadata.json")
        assert otadata["running"] == "ota_1" and otadata["state"] == "valid", otadata
        st = O.readf(node, "ota.json")
        assert st["result"] == "success" and st["state"] == "idle", st
        assert O.readf(node, "image.json")["version"] == IMG
        assert O.health(srv, "fw")[0] != IMG and O.health(srv, "fw")[-1] == IMG
        assert "downloading" in O.health(srv, "ota_state")
        assert O.health(srv, "ota_result")[-1] == "success"
        assert O.health(srv, "ota_reason")[-1].startswith("MicroPython 1.29.0 in ota_1")
        # the next boots run it, report it, fetch nothing
        blocks = srv.blocks
        srv.packs.clear()
        assert O.boot(node, cycles=2) == 0
        assert srv.blocks == blocks and O.health(srv, "fw") == [IMG]
        assert O.readf(node, "otadata.json")["running"] == "ota_1"
    finally:
        srv.close()


def test_wrong_hash_is_integrity_failure_and_boot_unchanged(tmp_path, micropython_bin, micropython_path,
                                                            key):
    d = image_bundle(tmp_path, app_image(20000))
    srv = O.start(tmp_path, d, key, wanted=IMG, damage=bundle.IMAGE_NAME)
    try:
        node = node_for(tmp_path, micropython_bin, micropython_path, srv, key, blocks_per_wake=5000,
                        retries=0)
        assert O.boot(node, cycles=2) == 0, node.output()[-3000:]
        st = O.readf(node, "ota.json")
        assert st["result"] == "integrity_failure" and st["failed"] == IMG, st
        assert "hash differs" in st["reason"]
        assert O.readf(node, "otadata.json") is None   # nothing was set to boot
        assert "integrity_failure" in O.health(srv, "ota_result")
        blocks = srv.blocks
        assert O.boot(node, cycles=1) == 0   # not fetched again
        assert srv.blocks == blocks
    finally:
        srv.close()


def test_unconfirmed_image_is_rolled_back_by_the_bootloader(tmp_path, micropython_bin,
                                                            micropython_path, key):
    srv = O.start(tmp_path, image_bundle(tmp_path, app_image(20000)), key, wanted=IMG)
    try:
        node = node_for(tmp_path, micropython_bin, micropython_path, srv, key, blocks_per_wake=5000)
        assert O.boot(node, cycles=2) == 75, node.output()[-3000:]
        srv.refuse = True   # the image's reports are never acked
        assert O.boot(node, cycles=1) == 0
        otadata = O.readf(node, "otadata.json")
        assert otadata["running"] == "ota_1" and otadata["state"] == "pending", otadata
        assert O.readf(node, "image.json") is None
        srv.refuse = False
        srv.packs.clear()
        assert O.boot(node, cycles=2) == 0, node.output()[-3000:]   # the reset after: back to ota_0
        otadata = O.readf(node, "otadata.json")
        assert otadata["running"] == otadata["boot"] == "ota_0" and otadata["aborted"] == "ota_1"
        st = O.readf(node, "ota.json")
        assert st["result"] == "rolled_back" and st["failed"] == IMG, st
        assert O.health(srv, "ota_result") == ["rolled_back"]
        assert "ota_0 again, not ota_1" in O.health(srv, "ota_reason")[-1]
        assert IMG not in O.health(srv, "fw")
        blocks = srv.blocks
        assert O.boot(node, cycles=1) == 0   # that version is not fetched again
        assert srv.blocks == blocks
    finally:
        srv.close()


def test_file_that_is_not_an_app_image_is_unsupported(tmp_path, micropython_bin, micropython_path,
                                                      key):
    d = image_bundle(tmp_path, app_image(20000))
    junk = random.Random(5).randbytes(20000)   # the builder refuses it: swapped in after the build
    with open(os.path.join(d, bundle.IMAGE_NAME), "wb") as f:
        f.write(junk)
    with open(os.path.join(d, "manifest.json")) as f:
        m = json.load(f)
    m["files"][0].update(size=len(junk), sha256=hashlib.sha256(junk).hexdigest())
    bundle.write_manifest(d, m)
    srv = O.start(tmp_path, d, key, wanted=IMG)
    try:
        node = node_for(tmp_path, micropython_bin, micropython_path, srv, key, blocks_per_wake=5000)
        assert O.boot(node, cycles=2) == 0, node.output()[-3000:]
        st = O.readf(node, "ota.json")
        assert st["result"] == "unsupported_bundle" and st["failed"] == IMG, st
        assert "not an ESP32 app image" in st["reason"]
        assert partition(node, "ota_1") == b"" and O.readf(node, "otadata.json") is None
        assert O.health(srv, "ota_result")[-1] == "unsupported_bundle"
    finally:
        srv.close()


def test_sigkill_during_the_image_write_resumes(tmp_path, micropython_bin, micropython_path, key):
    """10 SIGKILLs at random moments of the download (each a power cut): every boot resumes from
    the blocks ota.json counts, and the partition ends up holding exactly the image."""
    data = app_image(480000, seed=9)
    srv = O.start(tmp_path, image_bundle(tmp_path, data), key, wanted=IMG)
    rnd = random.Random(11)
    try:
        node = node_for(tmp_path, micropython_bin, micropython_path, srv, key, blocks_per_wake=1000)
        older_image(node)
        kills = 0
        progress = []   # (killed, blocks written by ota.json) after each boot
        t0 = time.monotonic()
        while kills < 10 and time.monotonic() - t0 < 30:
            node.start(SMARTPARK_CYCLES=3)
            time.sleep(rnd.uniform(0.1, 0.35))
            killed = node.proc.poll() is None
            if killed:
                node.kill()
                kills += 1
            else:
                node.wait(5)
            st = O.readf(node, "ota.json") or {}
            progress.append((killed, st.get("block")))
            if st.get("state") == "updating" or O.readf(node, "otadata.json"):
                break   # set to boot: a kill now would be a reset before the confirmation
        codes = []
        while O.readf(node, "otadata.json") is None and len(codes) < 15:
            codes.append(O.boot(node, cycles=1))
        assert codes[-1:] == [75] or O.readf(node, "ota.json")["state"] == "updating", (
            codes, node.output()[-3000:])
        assert O.boot(node, cycles=2) == 0, node.output()[-3000:]
        out = node.output()
        print("%d kills, blocks written at each boot's end: %r" % (kills, progress))
        mid = [b for killed, b in progress if killed and b and b * 512 < len(data)]
        assert len(mid) >= 3, "only %d kills in the middle of the image: %r" % (len(mid), progress)
        blocks = [b or 0 for _killed, b in progress]
        assert blocks == sorted(blocks), progress   # each boot went on from where the last stopped
        assert "Traceback" not in out and "crash:" not in out, out[-3000:]
        assert partition(node, "ota_1")[:len(data)] == data
        assert O.readf(node, "ota.json")["result"] == "success"
        assert O.readf(node, "otadata.json")["state"] == "valid"
    finally:
        srv.close()


_NOR = """
import sys
from sim.partition import Partition, boot, load
p = Partition("ota_1")
print("geometry", p.ioctl(4, 0), p.ioctl(5, 0), p.info()[3])
p.ioctl(6, 0)
p.writeblocks(0, b"\\x0f" * 16, 0)
p.writeblocks(0, b"\\xf1" * 16, 0)     # no erase between: bits only clear
b = bytearray(16); p.readblocks(0, b, 0); print("and", b[0])
p.ioctl(6, 0); p.readblocks(0, b, 0); print("erased", b[0])
try:
    p.set_boot()
except OSError as e:
    print("set_boot", e.args[0])
"""


def test_simulated_flash_is_nor_and_the_bootloader_checks(tmp_path, micropython_bin):
    """The simulation's flash: a write without an erase ANDs into what is there, an erase sets
    0xFF; set_boot() refuses what is not an app image (OSError(-ESP_ERR_OTA_VALIDATE_FAILED))."""
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"sim": {"partition_size": 65536}}, f)
    env = dict(os.environ, MICROPYPATH=bundle.FIRMWARE_DIR)
    proc = subprocess.run([micropython_bin, "-c", _NOR], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split("\n")[:4] == ["geometry 16 4096 65536", "and 1", "erased 255",
                                           "set_boot -5379"], proc.stdout
