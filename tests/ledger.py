"""The node's ledger (`ledger.log`, written with config "ledger": true) read back on the host.

One line per recorded reading: `seq flags run t name`. flags bit 0 set: t is
absolute Unix ms; otherwise t is RTC ms of RTC run `run`, placed in time by
that run's correction in clock.json ([[run, delta_ms], ...]). Used by the
e2e harness (unix-port nodes) and the HIL test (a board's files).
"""

import json


def parse_ledger(text, clock_json=None):
    """([(name, hub time), ...], unresolved) from the ledger text and clock.json text.

    A torn last line (a killed node) ends the ledger. The hub time is the one
    the node's pack gives: ms -> 1/1024 s ticks (firmware/pack.py). Readings
    of a run without a correction are counted in `unresolved`, not returned.
    """
    try:
        deltas = {run: d for run, d in json.loads(clock_json or "[]")}
    except ValueError:
        deltas = {}
    out = []
    unresolved = 0
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        _seq, flags, run, t, name = line.split()
        flags, run, t = int(flags), int(run), int(t)
        if not flags & 1:
            if run not in deltas:
                unresolved += 1
                continue
            t += deltas[run]
        out.append((name, (t * 1024 // 1000) / 1024))
    return out, unresolved
