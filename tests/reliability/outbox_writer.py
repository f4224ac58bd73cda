"""Helper run by the real micropython: append to the outbox forever, ack now and then.

After each append returns, the records go to writer.ledger ("seq value name").
Killed with SIGKILL at random moments by test_outbox_kill.py.
"""

import random

import outbox

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
    led.write("".join("%d %r\n" % (seqs + j, recs[j][4]) for j in range(len(recs))))
    led.flush()
    i += n
    if random.getrandbits(3) == 0 and o.depth() > 5:
        o.ack(o.head + random.getrandbits(2))
