"""Over-the-air updates, the node's side (firmware/ota.py, the loader in main.py), on the real
micropython against aiocoap's OSCORE server serving /fw/<version> and its files from a real
bundle (tools/bundle.py, source build for the unix port).

Each run of `micropython main.py` is one boot: the node exits after SMARTPARK_CYCLES report
cycles (status 0), or with 75 when it resets into a new version or back to the old one; the
tests are its supervisor, as for a deep-sleeping node.
"""

import hashlib
import json
import os
import random
import shutil
import sys
import time

import cbor2
import pytest
from smartpark.tools import bundle

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_oscore_node as T  # noqa: E402

aiocoap = T.aiocoap
from aiocoap.optiontypes import BlockOption  # noqa: E402

BlockwiseTuple = BlockOption.BlockwiseTuple
harness = T.harness
pytestmark = pytest.mark.micropython

NEW = "9.9.9-ota"
NEW2 = "9.9.10-ota"
KILLS = 50


# a version whose report cycle blocks the interpreter soon after the watchdog is armed (a driver
# read that never returns): only the watchdog can end it
HANG = """
async def _hang(self):
    await sleep_ms(100)
    import time
    while True:
        time.sleep(1)
Node.cycle = _hang
"""


def make_bundle(out, version=NEW, break_node=False, hang=False, changed=None):
    """A source bundle for the unix port stamped `version`, whose firmware files all differ from
    the running ones (a comment naming the version; `changed`: only these, by device path), so
    the node fetches them rather than copying its own (ota._copy_running); with break_node, its
    node.py raises at import; with hang, its report cycle never returns (HANG)."""
    fw = os.path.join(os.path.dirname(out), "fw-" + os.path.basename(out))
    shutil.copytree(bundle.FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("__pycache__"))
    for root, _dirs, files in os.walk(fw):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), fw)
            if name.endswith(".py") and (changed is None or rel in changed):
                with open(os.path.join(root, name), "a") as f:
                    f.write("\n# firmware %s\n" % version)
    if break_node or hang:
        with open(os.path.join(fw, "node.py"), "a") as f:
            f.write(HANG if hang else "\nraise RuntimeError('broken build')\n")
    m = bundle.build_bundle(out=out, source=True, board="unix", quiet=True, firmware_dir=fw)
    m["firmware_version"] = version
    bundle.write_manifest(out, m)
    return m


class _FwRes(T._Res):
    async def needs_blockwise_assembly(self, request):
        return False


class FwServer(T.OscoreServer):
    """The OSCORE test server whose report ack wants `wanted`, and which serves a bundle
    directory under /fw/<version> (files by device path; `damage`: path whose bytes differ), and
    the `more` bundle directories beside it."""

    def __init__(self, creds_dir, bundle_dir, wanted=NEW, damage=None, more=()):
        self.bundle_dirs = [bundle_dir] + list(more)
        self.wanted = wanted
        self.damage = damage
        self.blocks = 0
        T.OscoreServer.__init__(self, creds_dir)

    refuse = False

    def _report(self, request):
        if self.refuse:   # no ack: the new version never gets its report confirmed
            return aiocoap.Message(code=aiocoap.SERVICE_UNAVAILABLE)
        self.packs.append(request.payload)
        return aiocoap.Message(code=aiocoap.CHANGED, payload=T.report.encode_ack(
            time.time(), self.cfg_version, self.wanted))

    def _file(self, bundle_dir, path):
        def render(request):
            self.blocks += 1
            with open(os.path.join(bundle_dir, path), "rb") as f:
                data = f.read()
            if path == self.damage:
                data = data[:-1] + bytes([data[-1] ^ 1])
            # any block by its number, as the hub serves them (aiocoap's own Block2 needs block 0
            # of the same exchange first)
            num, _m, szx = request.opt.block2 or (0, False, 6)
            size = 1 << (szx + 4)
            more = len(data) > (num + 1) * size
            resp = aiocoap.Message(code=aiocoap.CONTENT, payload=data[num * size:(num + 1) * size],
                                   content_format=50 if path == "manifest.json" else 42)
            resp.opt.block2 = BlockwiseTuple(num, more, szx)
            return resp
        return render

    def site(self):
        site = T.resource.Site()
        site.add_resource(["r"], T._Res(self, self._report))
        site.add_resource(["rd"], T._Res(self, self._rd))
        site.add_resource(["reg", "1"], T._Res(self, self._reg))
        for d in self.bundle_dirs:
            self._add_fw(site, d)
        creds = T.CredentialsMap()
        creds.load_from_dict({":node": {"oscore": {"basedir": self.creds_dir}}})
        return T.OscoreSiteWrapper(site, creds)

    def _add_fw(self, site, d):
        with open(os.path.join(d, "manifest.json")) as f:
            m = json.load(f)
        v = m["firmware_version"]
        site.add_resource(["fw", v], _FwRes(self, self._file(d, "manifest.json")))
        for e in m["files"]:
            site.add_resource(["fw", v] + e["path"].split("/"), _FwRes(self, self._file(d, e["path"])))


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("fw") / "bundle")
    make_bundle(d)
    return d


@pytest.fixture
def key():
    return T.make_key()


def start(tmp_path, bundle_dir, key, **kw):
    return FwServer(T.credentials_dir(str(tmp_path / "creds"), key), bundle_dir, **kw)


def node_for(tmp_path, mp_bin, mp_path, server, key, cfg=None, **ota):
    o = {"blocks_per_wake": 200}
    o.update(ota)
    c = {"coap": {"ack_timeout": 0.5, "max_retransmit": 3}, "watchdog_ms": 0}
    c.update(cfg or {})
    return T.make_node(tmp_path, mp_bin, mp_path, server.port, key, ota=o, **c)


def boot(node, cycles=1, timeout=60):
    return node.run(timeout, SMARTPARK_CYCLES=cycles)


def health(server, key):
    """The string values of health.<key> in the packs the server got, oldest first."""
    out = []
    for p in server.packs:
        for rec in cbor2.loads(p):
            if rec.get(0) == "health." + key and 3 in rec:
                out.append(rec[3])
    return out


def readf(node, name):
    try:
        with open(os.path.join(node.flash, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def test_download_over_several_wakes_switch_and_confirm(tmp_path, micropython_bin, micropython_path,
                                                       good_bundle, key):
    srv = start(tmp_path, good_bundle, key)
    try:
        node = node_for(tmp_path, micropython_bin, micropython_path, srv, key, blocks_per_wake=150)
        codes = []
        for _ in range(12):
            codes.append(boot(node, cycles=2))
            b = readf(node, "boot.json")
            if b and b.get("slot") == "b" and not b.get("trial"):
                break
        out = node.output()
        assert 75 in codes, out[-3000:]
        assert codes.index(75) >= 1, "the download took one boot only: %r" % codes
        b = readf(node, "boot.json")
        assert b == {"slot": "b", "trial": False, "boots": 0, "prev": "a"}, (b, out[-3000:])
        with open(os.path.join(node.flash, "app_b", "version")) as f:
            assert f.read() == NEW
        assert health(srv, "fw")[0] != NEW and health(srv, "fw")[-1] == NEW
        assert "downloading" in health(srv, "ota_state")
        assert health(srv, "ota_result")[-1] == "success"
        assert readf(node, "ota.json")["result"] == "success"
        # the hub keeps wanting NEW: it runs, nothing more is fetched
        blocks = srv.blocks
        assert boot(node, cycles=2) == 0
        assert srv.blocks == blocks
    finally:
        srv.close()


def test_wrong_hash_is_integrity_failure(tmp_path, micropython_bin, micropython_path, good_bundle, key):
    srv = start(tmp_path, good_bundle, key, damage="pack.py")
    try:
        node = node_for(tmp_path, micropython_bin, micropython_path, srv, key, blocks_per_wake=5000,
                        retries=1)
        assert boot(node, cycles=2) == 0, node.output()[-3000:]
        st = readf(node, "ota.json")
        assert st["result"] == "integrity_failure" and st["failed"] == NEW, st
        assert "pack.py" in st["reason"]
        assert not os.path.exists(os.path.join(node.flash, "app_b", "version"))
        assert readf(node, "boot.json") is None
        assert "integrity_failure" in health(srv, "ota_result")
        blocks = srv.blocks
        assert boot(node, cycles=1) == 0   # no second try of that version
        assert srv.blocks == blocks
    finally:
        srv.close()


def test_version_that_raises_at_import_is_rolled_back(tmp_path, micropython_bin, micropython_path, key):
    d = str(tmp_path / "broken")
    make_bundle(d, break_node=True)
    srv = start(tmp_path, d, key)
    try:
        node = node_for(tmp_path, micropython_bin, micropython_path, srv, key, blocks_per_wake=5000)
        assert boot(node, cycles=2) == 75, node.output()[-3000:]     # downloaded, switched
        assert readf(node, "boot.json")["trial"] is True
        assert boot(node, cycles=2) == 75                            # import fails: back to "a"
        b = readf(node, "boot.json")
        assert b["slot"] == "a" and b["reason"].startswith("import failed"), b
        assert boot(node, cycles=2) == 0, node.output()[-3000:]     # the old version reports it
        st = readf(node, "ota.json")
        assert st["result"] == "rolled_back" and st["failed"] == NEW, st
        assert health(srv, "ota_result")[-1] == "rolled_back"
        assert "broken build" in health(srv, "ota_reason")[-1]
        assert health(srv, "fw")[-1] != NEW
        assert readf(node, "boot.json") == {"slot": "a", "trial": False, "boots": 0, "prev": "b"}
    finally:
        srv.close()


def test_version_without_an_acked_report_is_rolled_back(tmp_path, micropython_bin, micropython_path,
                                                        good_bundle, key):
    srv = start(tmp_path, good_bundle, key)
    try:
        node = node_for(tmp_path, micropython_bin, micropython_path, srv, key, blocks_per_wake=5000,
                        trial_boots=2)
        assert boot(node, cycles=2) == 75, node.output()[-3000:]
        srv.refuse = True
        for n in (1, 2):
            assert boot(node, cycles=1) == 0
            b = readf(node, "boot.json")
            assert b["slot"] == "b" and b["trial"] and b["boots"] == n, b
        srv.refuse = False
        srv.packs.clear()
        assert boot(node, cycles=2) == 0, node.output()[-3000:]   # the third boot: back to "a"
        st = readf(node, "ota.json")
        assert st["result"] == "rolled_back" and st["reason"] == "2 boots without an acknowledged report"
        assert health(srv, "ota_result") == ["rolled_back"] and health(srv, "fw")[-1] != NEW
        assert readf(node, "boot.json") == {"slot": "a", "trial": False, "boots": 0, "prev": "b"}
    finally:
        srv.close()


def test_version_that_hangs_is_reset_by_the_watchdog_and_rolled_back(tmp_path, micropython_bin,
                                                                    micropython_path, key):
    d = str(tmp_path / "hangs")
    make_bundle(d, hang=True)
    srv = start(tmp_path, d, key)
    try:
        node = node_for(tmp_path, micropython_bin, micropython_path, srv, key,
                        cfg={"watchdog_ms": 5000, "sim": {"seed": 3, "watchdog": True}},
                        blocks_per_wake=5000, trial_boots=1)
        assert boot(node, cycles=2) == 75, node.output()[-3000:]    # downloaded, switched
        assert boot(node, cycles=2, timeout=30) == -9               # hangs: the watchdog resets it
        assert os.path.exists(os.path.join(node.flash, "wdt.flag"))
        assert boot(node, cycles=2) == 0, node.output()[-3000:]    # second boot: back to "a"
        st = readf(node, "ota.json")
        assert st["result"] == "rolled_back" and st["failed"] == NEW, st
        assert st["reason"] == "hung: 1 of 1 boots without an acknowledged report ended by the watchdog"
        assert health(srv, "ota_reason")[-1] == st["reason"]
        assert health(srv, "fw")[-1] != NEW
        resets = [rec.get(2) for p in srv.packs for rec in cbor2.loads(p) if rec.get(0) == "health.reset"]
        assert resets[-1] == 3, resets   # WDT_RESET (firmware/board/__init__.py)
    finally:
        srv.close()


def test_not_enough_flash(tmp_path, micropython_bin, micropython_path, good_bundle, key):
    srv = start(tmp_path, good_bundle, key)
    try:
        node = node_for(tmp_path, micropython_bin, micropython_path, srv, key, blocks_per_wake=5000,
                        flash_margin=1 << 48)
        assert boot(node, cycles=2) == 0, node.output()[-3000:]
        assert readf(node, "ota.json")["result"] == "not_enough_flash"
        assert health(srv, "ota_result")[-1] == "not_enough_flash"
    finally:
        srv.close()


def test_sigkill_during_download_and_switch(tmp_path, micropython_bin, micropython_path, good_bundle, key):
    """50 SIGKILLs at random moments of downloads and switches, the hub wanting another version
    each time the node has confirmed one (NEW in slot b, NEW2 in slot a, ...): every boot runs a
    whole version, every confirmed version is the one wanted, and every reading the node
    recorded reaches the server."""
    second = str(tmp_path / "second")
    make_bundle(second, version=NEW2)
    srv = start(tmp_path, good_bundle, key, more=[second])
    rnd = random.Random(7)
    try:
        node = node_for(tmp_path, micropython_bin, micropython_path, srv, key, blocks_per_wake=24)
        kills = switched = updates = 0
        t0 = time.monotonic()
        while kills < KILLS and time.monotonic() - t0 < 120:
            node.start(SMARTPARK_CYCLES=3)
            time.sleep(rnd.uniform(0.05, 0.6))
            if node.proc.poll() is None:
                node.kill()
                kills += 1
            else:
                node.wait(5)
            b = readf(node, "boot.json")
            if b is not None:   # the pointer names a whole, verified version, always
                assert os.path.exists(os.path.join(node.flash, "app_" + b["slot"], "version")), b
                switched += 1
                if not b.get("trial") and _slot_version(node, b["slot"]) == srv.wanted:
                    updates += 1   # confirmed: now the hub wants the other one
                    srv.wanted = NEW2 if srv.wanted == NEW else NEW
        print("%d kills, %d boots after a switch, %d updates confirmed" % (kills, switched, updates))
        for _ in range(40):   # the last version the hub asked for, finished without kills
            b = readf(node, "boot.json")
            if b and not b.get("trial") and _slot_version(node, b["slot"]) == srv.wanted:
                break
            boot(node, cycles=4)
        out = node.output()
        assert kills >= KILLS, "only %d kills" % kills
        assert updates >= 1 and switched, "no update confirmed under the kills"
        assert "Traceback" not in out and "crash:" not in out, out[-3000:]
        b = readf(node, "boot.json")
        assert not b["trial"] and _slot_version(node, b["slot"]) == srv.wanted, (b, out[-3000:])
        assert node.run(60, SMARTPARK_DRAIN=1) == 0
        ledger, _unresolved = node.ledger()
        got = set()
        for p in srv.packs:
            got.update(T.resolve(p))
        lost = [r for r in ledger if ("n1/" + r[0], r[1]) not in got]
        assert not lost, "%d readings lost, e.g. %r" % (len(lost), lost[:3])
    finally:
        srv.close()


def _slot_version(node, slot):
    try:
        with open(os.path.join(node.flash, "app_" + slot, "version")) as f:
            return f.read().strip()
    except OSError:
        return None


def test_a_version_that_changes_one_file_fetches_that_file_only(tmp_path, micropython_bin,
                                                                  micropython_path, key):
    d = str(tmp_path / "one")
    m = make_bundle(d, changed=["drivers/bh1750.py"])
    srv = start(tmp_path, d, key)
    try:
        node = node_for(tmp_path, micropython_bin, micropython_path, srv, key, blocks_per_wake=5000)
        assert boot(node, cycles=2) == 75, node.output()[-3000:]    # downloaded, switched
        size = {e["path"]: e["size"] for e in m["files"]}
        with open(os.path.join(d, "manifest.json"), "rb") as f:
            manifest = len(f.read())
        blocks = -(-manifest // 512) + -(-size["drivers/bh1750.py"] // 512)
        assert srv.blocks == blocks, (srv.blocks, blocks)
        assert boot(node, cycles=2) == 0, node.output()[-3000:]    # the new version confirmed
        assert readf(node, "ota.json")["result"] == "success"
        slot = os.path.join(node.flash, "app_b")
        for e in m["files"]:   # every file of the version is in its slot, copied or fetched
            if e["path"] in ("boot.py", "main.py"):
                continue   # the loader stays the flashed one
            with open(os.path.join(slot, e["path"]), "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == e["sha256"], e["path"]
    finally:
        srv.close()


def test_a_download_the_hub_withdraws_stops(tmp_path, micropython_bin, micropython_path, good_bundle,
                                            key):
    srv = start(tmp_path, good_bundle, key)
    try:
        node = node_for(tmp_path, micropython_bin, micropython_path, srv, key, blocks_per_wake=8)
        assert boot(node, cycles=2) == 0, node.output()[-3000:]
        assert readf(node, "ota.json")["state"] == "downloading"
        srv.wanted = None   # a halted rollout, or a config that no longer names the version
        blocks = srv.blocks
        assert boot(node, cycles=2) == 0, node.output()[-3000:]
        assert readf(node, "ota.json")["state"] == "idle"
        assert health(srv, "ota_state")[-1] == "idle"
        assert srv.blocks == blocks and readf(node, "boot.json") is None
    finally:
        srv.close()
