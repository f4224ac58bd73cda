"""Rollups (1 min, 15 min, 1 h, 1 day) fed from fast/'s `Rollups`, kept in SQLite.

Scope: glue between the store thread and `smartpark.fast.Rollups` (Cython twin,
or its pure twin via the selector). Everything here runs in the store thread:
`on_commit` feeds the readings a group commit actually inserted (so a
duplicate never counts twice) and writes every bucket fast/ closed;
`advance(now)` closes buckets of idle series.

Restart: open buckets live in memory only. At start-up `replay` feeds, per
series, the raw readings of every bucket that may still be open (from the
start of the day bucket holding `last reading - lateness`); re-closed buckets
are written again with the same values (INSERT OR REPLACE).

A reading older than its series' already-closed bucket is a late drop in
fast/ (counted in /metrics as smartpark_rollup_late_total), stored raw but
not in the rollup.
"""

from .store.sqlite import KIND_BOOL, KIND_NUM, leaves_readings, q_upsert_rollups

WINDOWS = {"1m": 60, "15m": 900, "1h": 3600, "1d": 86400}

try:
    from smartpark.fast import Rollups as _Rollups
except ImportError:  # fast/ selector not built
    _Rollups = None


class RollupFeeder:
    def __init__(self, lateness=120.0):
        if _Rollups is None:
            raise RuntimeError("rollups need smartpark.fast (Rollups), not available in this build")
        self.lateness = lateness
        self.roll = _Rollups(windows=tuple(WINDOWS.values()), lateness=lateness)
        self.written = 0

    @property
    def late(self):
        """Readings too late for their bucket (the C counter: issue 7 dropped the per-block
        drain of per-series late counts, a Python loop over every series a block touched)."""
        return next(iter(self.roll.late_dropped.values()), 0)

    def on_commit(self, conn, new):
        """`new`: the (series, t, kind, val, sum) rows a group commit inserted, in
        (series, t) order (issue 7: the store's insert rows themselves, no copy)."""
        add = self.roll.add
        for sid, t, kind, val, _sum in new:
            if val is not None and (kind == KIND_NUM or kind == KIND_BOOL):
                add(sid, t, float(val))
        self._write(conn)

    def on_block(self, conn, block):
        """Issue 7: a committed column-lane block (fast.lane.Block: store series ids,
        times, fast kinds 0/1, values) goes to the C rollups in one call."""
        self.roll.add_batch(block)
        self._write(conn)

    @leaves_readings
    def advance(self, conn, watermark):
        self.roll.advance(watermark)
        self.roll.drain_late()  # per-series counts are not used; keep them from growing
        return self._write(conn)

    def _write(self, conn):
        closed = self.roll.drain_closed()
        if not len(closed):
            return 0
        rows = []
        for i in range(len(closed)):
            count = closed.count[i]
            rows.append((closed.series[i], int(closed.window[i]), closed.start[i], count,
                         closed.min[i], closed.max[i],
                         closed.sum[i] / count if count else None,
                         closed.p50[i], closed.p95[i], closed.p99[i]))
        q_upsert_rollups(conn, rows)
        self.written += len(rows)
        return len(rows)

    def replay(self, conn):
        """Rebuild open buckets from raw readings after a restart (store thread)."""
        day = WINDOWS["1d"]
        add = self.roll.add
        fed = 0
        sids = [r[0] for r in conn.execute("SELECT id FROM series")]
        for sid in sids:
            row = conn.execute("SELECT max(t) FROM readings WHERE series = ?", (sid,)).fetchone()
            if row is None or row[0] is None:
                continue
            start = ((row[0] - self.lateness) // day) * day
            for t, val in conn.execute(
                    "SELECT t, val FROM readings WHERE series = ? AND t >= ? AND kind IN (?, ?)"
                    " AND val IS NOT NULL ORDER BY t", (sid, start, KIND_NUM, KIND_BOOL)):
                add(sid, t, float(val))
                fed += 1
        self._write(conn)
        return fed
