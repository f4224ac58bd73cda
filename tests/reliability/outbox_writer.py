"""Helper run by the real micropython: append to the outbox forever, ack now and then.

After each append returns, the records go to writer.ledger, a line "seq value ."
each. Killed with SIGKILL at random moments by test_outbox_kill.py -- which can cut
the ledger's own write of a big batch at a page boundary too; a new writer first ends
such a torn line, so it stays a line of its own (no " ." at its end: not a record)
instead of running into the next writer's first line.
"""

import os
import random

import outbox


def _end_torn_line(path):
    try:
        size = os.stat(path)[6]
    except OSError:
        return
    if size:
        with open(path, "rb") as f:
            f.seek(size - 1)
            last = f.read(1)
        if last != b"\n":
            with open(path, "a") as f:
                f.write("\n")


_end_torn_line("writer.ledger")

o = outbox.Outbox(3000)
led = open("writer.ledger", "a")
i = o.next
while True:
    # mostly one measurement's worth; now and then a big batch, one write() of many
    # pages, which a SIGKILL can cut at a page boundary (a torn record on disk)
    n = 1 + random.getrandbits(3) if random.getrandbits(2) else 400 + random.getrandbits(8)
    recs = [(outbox.FLAG_ABS, 0, 1700000000000 + i + k, "v", (i + k) * 0.25, "s%d.x" % ((i + k) % 5), "Cel")
            for k in range(n)]
    seqs = o.append(recs)
    led.write("".join("%d %r .\n" % (seqs + j, recs[j][4]) for j in range(len(recs))))
    led.flush()
    i += n
    if random.getrandbits(3) == 0 and o.depth() > 5:
        o.ack(o.head + random.getrandbits(2))
