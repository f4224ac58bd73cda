"""SIGKILL a real micropython process at random moments while it writes the outbox.

After every kill the outbox must open cleanly (a torn tail is cut at the last
whole record), hold consecutive sequence numbers, and contain every record
the writer had finished appending (its ledger) that was not yet acknowledged,
with the same content.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
FIRMWARE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "firmware")
sys.path.insert(0, FIRMWARE)

import outbox  # noqa: E402

pytestmark = pytest.mark.micropython


def test_outbox_survives_sigkill_during_writes(tmp_path, micropython_bin, micropython_path, monkeypatch):
    rng = random.Random(7)
    env = dict(os.environ, MICROPYPATH=":".join([".frozen", FIRMWARE, HERE, micropython_path]))
    torn = 0
    torn_ledger = set()  # line numbers of ledger lines a kill cut short
    kills = 40
    for _ in range(kills):
        p = subprocess.Popen([micropython_bin, os.path.join(HERE, "outbox_writer.py")], cwd=tmp_path,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ledger = tmp_path / "writer.ledger"
        deadline = time.monotonic() + 10   # the first writer has started (a loaded machine
        while not ledger.exists() and time.monotonic() < deadline:   # may take a while)
            time.sleep(0.01)
        time.sleep(rng.uniform(0.02, 0.25))
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        monkeypatch.chdir(tmp_path)
        o = outbox.Outbox(3000)
        torn += 1 if o.recovered_bytes else 0
        assert o.lost == 0 and o.resync_bytes == 0, "a kill can only tear the tail"
        recs = o.peek(10_000)
        seqs = [r[0] for r in recs]
        assert seqs == list(range(o.head, o.next)), "outbox not contiguous after a kill"
        byseq = {r[0]: r for r in recs}
        with open(tmp_path / "writer.ledger") as f:
            for lineno, line in enumerate(f):
                fields = line.split()
                if len(fields) != 3 or fields[2] != "." or not line.endswith("\n"):
                    torn_ledger.add(lineno)  # the ledger's own write cut by a kill
                    continue
                seq, val = int(fields[0]), fields[1]
                if seq >= o.head:
                    assert seq in byseq, "record %d was appended but is gone" % seq
                    assert byseq[seq][5] == float(val)
        o.close()
    assert os.path.getsize(tmp_path / "writer.ledger") > 0
    # A SIGKILL cuts a write() only between pages (Linux stops a file write at a page
    # boundary once a fatal signal is pending), so torn tails are rare here;
    # tests/firmware/cases/case_fw_outbox.py cuts a write at every byte instead. The
    # ledger's own big writes tear the same way: once a torn ledger line ran into the
    # next writer's first line ("2785" + "278689 ...") and read as record 2785278689.
    print("kills:", kills, "torn tails recovered:", torn, "torn ledger lines:", len(torn_ledger))
