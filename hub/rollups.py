"""Rollups (1 min, 15 min, 1 h, 1 day) of every numeric series, from fast/'s `Rollups`.

Scope: the feeder between the store and `smartpark.fast.Rollups` (the Cython
twin, or its pure twin through the selector). It does no I/O: the store feeds
it in its own thread with the readings a group commit actually stored (so a
duplicate never counts twice) and writes the buckets it hands back
(`closed_rows`); `advance(now)` closes buckets of idle series.

Restart: open buckets live in memory only. At start-up the store replays, per
series, the raw readings of every bucket that may still be open (from the
start of the day bucket holding `newest reading - lateness`: `replay_start`);
re-closed buckets are written again with the same values (INSERT OR REPLACE).

A reading older than its series' already-closed bucket is a late drop in
fast/ (counted in /metrics as smartpark_rollup_late_total), stored raw but
not in the rollup.
"""

import math

from smartpark.fast import Rollups as _Rollups
from smartpark.fast import kinds

WINDOWS = {"1m": 60, "15m": 900, "1h": 3600, "1d": 86400}


class RollupFeeder:
    def __init__(self, lateness=120.0):
        self.lateness = lateness
        self.roll = _Rollups(windows=tuple(WINDOWS.values()), lateness=lateness)
        self.written = 0

    @property
    def late(self):
        """Readings too late for their bucket (fast/'s running counter)."""
        return next(iter(self.roll.late_dropped.values()), 0)

    def add(self, sid, t, val):
        self.roll.add(sid, t, val)

    def add_rows(self, new):
        """`new`: (series, t, kind, val, ...) readings newly stored, in (series, t) order."""
        add = self.roll.add
        for r in new:
            if r[3] is not None and r[2] in kinds.NUMERIC:
                add(r[0], r[1], float(r[3]))

    def add_block(self, block):
        """The column lane's readings (fast.lane.Block: numbers and booleans), in one call."""
        self.roll.add_batch(block)

    def advance(self, watermark):
        self.roll.advance(watermark)
        self.roll.drain_late()  # per-series counts are not used; keep them from growing

    def replay_start(self, newest):
        """Where a series' replay starts, given its newest stored time (None: nothing)."""
        if newest is None or not math.isfinite(newest):
            return None
        day = WINDOWS["1d"]
        return ((newest - self.lateness) // day) * day

    def closed_rows(self):
        """Buckets closed since the last call, as rows (series, win, t, count, min, max,
        mean, p50, p95, p99) for the store to write."""
        closed = self.roll.drain_closed()
        rows = []
        for i in range(len(closed)):
            count = closed.count[i]
            rows.append((closed.series[i], int(closed.window[i]), closed.start[i], count,
                         closed.min[i], closed.max[i],
                         closed.sum[i] / count if count else None,
                         closed.p50[i], closed.p95[i], closed.p99[i]))
        self.written += len(rows)
        return rows
