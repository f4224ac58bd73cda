"""Outbox recovery fits a small heap: the real micropython with a 96 KB heap opens a 90 KB log.

An ESP32 (no PSRAM) has roughly 100 KB of free heap once Wi-Fi runs, in
pieces; a full outbox (2000 records) is about 90 KB of flash. Recovery reads
the log through a 1 KB window and keeps no index of its records, so nothing
of the log has to fit in the heap (most of these 96 KB go to compiling
outbox.py from source). Reading the log whole needed a 160 KB heap here.
"""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
FIRMWARE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "firmware")
sys.path.insert(0, FIRMWARE)

import outbox  # noqa: E402

pytestmark = pytest.mark.micropython

_SCRIPT = """
import outbox
o = outbox.Outbox(5000)
recs = o.peek(40)
print("OK", o.depth(), o.recovered_bytes, recs[0][0], recs[-1][0])
"""


def test_a_full_outbox_recovers_in_a_96k_heap(tmp_path, micropython_bin, micropython_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    o = outbox.Outbox(5000)
    for i in range(0, 2000, 50):
        o.append([(outbox.FLAG_ABS, 0, 1700000000000 + k, "v", k * 0.25, "air%d.temp" % (k % 4), "Cel")
                  for k in range(i, i + 50)])
    o.close()
    with open("outbox.log", "ab") as f:
        f.write(b"\xa5\x00\x30torn")            # a power cut in the next append
    size = os.path.getsize("outbox.log")
    assert size > 64 * 1024
    env = dict(os.environ, MICROPYPATH=":".join([".frozen", FIRMWARE, micropython_path]))
    p = subprocess.run([micropython_bin, "-X", "heapsize=96k", "-c", _SCRIPT], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.split() == ["OK", "2000", "7", "0", "39"], \
        (size, p.stdout[-500:], p.stderr[-1500:])
