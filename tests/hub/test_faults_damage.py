"""A damaged database file: bytes flipped in a page, or the file cut mid-page.

A real hub stores readings (the first part moved into `readings` and the hub
stopped cleanly, the second still in the journal when the hub is SIGKILLed),
the test damages hub.sqlite3 on disk, and the hub starts again: the bad file
is set aside (not deleted), the journal's acknowledged readings are in the new
database, /healthz says degraded, and `smartpark hub doctor` tells what
happened.
"""

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys

import aiocoap
import pytest
from hubutil import T0, HubProc, senml_cbor
from smartpark.hub.store import stored_readings

PAGE = 4096


async def _send(port, node, first, count, per=25, concurrency=20):
    """`count` reports of `per` readings from `node`, times from T0 + first*per on;
    -> the acknowledged (sensor, t)."""
    ctx = await aiocoap.Context.create_client_context()
    acked = set()
    sem = asyncio.Semaphore(concurrency)

    async def one(i):
        bt = T0 + (first + i) * per
        recs = [("s%d" % j, float(i), j) for j in range(per)]
        m = aiocoap.Message(code=aiocoap.POST, uri="coap://127.0.0.1:%d/r" % port,
                            payload=senml_cbor(node, recs, bt=bt))
        m.opt.content_format = 112
        async with sem:
            r = await ctx.request(m).response
        if r.code == aiocoap.CHANGED:
            acked.update(("s%d" % j, bt + j) for j in range(per))

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        await ctx.shutdown()
    return acked


def _database_keys(path):
    c = sqlite3.connect(path)
    try:
        return set(c.execute("SELECT s.sensor, r.t FROM readings r JOIN series s"
                             " ON s.id = r.series"))
    finally:
        c.close()


def _flip_page(path):
    """Bytes of a page in the middle of the file (a `readings` leaf) turned to garbage."""
    pages = os.path.getsize(path) // PAGE
    with open(path, "r+b") as f:
        f.seek((pages // 2) * PAGE)
        f.write(bytes((0xA5 ^ i) & 0xFF for i in range(512)))


def _cut_mid_page(path):
    size = os.path.getsize(path)
    os.truncate(path, size - PAGE - PAGE // 2)


def _wreck_header(path):
    """The first page's header overwritten: not a database any more, nothing readable."""
    with open(path, "r+b") as f:
        f.write(b"\xff" * 100)


EXTRA = ["--security", "off", "--no-fast-path"]


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A data directory as a SIGKILL left it, made once for the module: 5,000 readings in
    the database (moved, checkpointed at a clean stop), then more acknowledged readings
    still in the journal. -> (directory, early readings, journal readings)."""
    d = str(tmp_path_factory.mktemp("killed") / "data")
    os.makedirs(d)
    h = HubProc(d, extra=EXTRA).start()
    early = asyncio.run(_send(h.coap_port, "dmg-1", 0, 200))
    assert h.stop()[0] == 0  # all of it moved into the database, the WAL checkpointed
    db = os.path.join(d, "hub.sqlite3")
    assert _database_keys(db) == early
    h.start()
    late = asyncio.run(_send(h.coap_port, "dmg-1", 400, 40))
    h.kill()  # within the mover's idle time: the late readings wait in the journal
    held = {(sensor, t) for _n, sensor, t, _k, _v in stored_readings(db)}
    in_journal = held - _database_keys(db)
    assert late <= held and in_journal, "the late readings were to wait in the journal"
    os.unlink(os.path.join(d, "hub.log"))
    return d, early, in_journal


@pytest.mark.parametrize("harm", [_flip_page, _cut_mid_page, _wreck_header],
                         ids=["flipped", "truncated", "header"])
def test_damaged_database_is_set_aside_and_the_journal_survives(killed, tmp_path, harm):
    d = str(tmp_path / "data")
    shutil.copytree(killed[0], d)
    _src, early, in_journal = killed
    db = os.path.join(d, "hub.sqlite3")
    harm(db)
    h = HubProc(d, extra=EXTRA).start()
    try:
        status, body = h.get("/healthz")
        assert status == 503 and body["status"] == "degraded"
        assert any("damaged file %s" % db in r for r in body["reasons"])
        aside = [f for f in os.listdir(d) if f.startswith("hub.sqlite3.damaged-")
                 and not f.endswith(("-wal", "-shm"))]
        assert len(aside) == 1  # set aside under a dated name, never deleted
        rows = stored_readings(db)
        keys = {(s, t) for _n, s, t, _k, _v in rows}
        if harm is _wreck_header:  # no series name saved: kept under placeholders
            assert {t for _s, t in in_journal} <= {t for _s, t in keys}
            assert {n for n, *_rest in rows} == {"_lost"}
            assert not keys & early
        else:
            assert in_journal <= keys, "acknowledged readings of the journal were lost"
            # most of the rest was read back from the damaged file
            assert len(keys & early) > len(early) // 2
        assert h.metric("smartpark_store_damaged_files") == 1
        # ingest goes on into the fresh file
        more = asyncio.run(_send(h.coap_port, "dmg-1", 1000, 4))
        assert more
    finally:
        rc, log = h.stop()
    assert rc == 0 and "DAMAGED database" in log and "Traceback" not in log
    doc = subprocess.run([sys.executable, "-m", "smartpark.tools.cli", "hub", "doctor",
                          "--data", d], capture_output=True, text=True, timeout=120)
    assert doc.returncode == 0, doc.stdout + doc.stderr
    out = doc.stdout
    assert "hub: not running" in out and "database %s: ok" % db in out
    assert "set aside: %s" % os.path.join(d, aside[0]) in out
    assert "was damaged" in out and "saved:" in out and " readings" in out
    with open(os.path.join(d, "hub.damage.json")) as f:
        rec = json.load(f)[0]
    assert rec["moved_to"] == os.path.join(d, aside[0])
    assert rec["saved"].get("series", 0) >= 25 or rec["saved"]["placeholder_series"] == 25


def test_a_damaged_journal_is_set_aside_and_its_readable_blocks_kept(tmp_path):
    d = str(tmp_path / "data")
    os.makedirs(d)
    h = HubProc(d, extra=["--security", "off", "--no-fast-path"]).start()
    late = asyncio.run(_send(h.coap_port, "jdm-1", 0, 200, concurrency=4))
    h.kill()  # the readings wait in the journal
    db = os.path.join(d, "hub.sqlite3")
    jpath = os.path.join(d, "hub.journal.sqlite3")
    c = sqlite3.connect(jpath)  # what a kill left in the WAL goes into the file, then a
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # page of it is damaged
    c.close()
    held = {(sensor, t) for _n, sensor, t, _k, _v in stored_readings(db)}
    assert late <= held
    _flip_page(jpath)
    h.start()
    try:
        status, body = h.get("/healthz")
        assert status == 503 and any("damaged file %s" % jpath in r for r in body["reasons"])
        keys = {(s, t) for _n, s, t, _k, _v in stored_readings(db)}
        # the readable blocks are kept; those on the damaged page are named in the report
        assert len(keys & late) > len(late) // 2
    finally:
        rc, log = h.stop()
    assert rc == 0 and "DAMAGED journal" in log
    with open(os.path.join(d, "hub.damage.json")) as f:
        rec = json.load(f)[0]
    assert rec["moved_to"].startswith(jpath + ".damaged-") and os.path.exists(rec["moved_to"])
    lost = len(late - keys)
    assert rec["saved"]["blocks"] + rec["saved"]["rows"] > 0
    assert lost == 0 or rec["not_saved"], "readings lost without a word"
