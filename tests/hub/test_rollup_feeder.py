"""hub/rollups.py's feeder on a real SQLite connection: late readings are counted from the C
rollups' own counter (issue 7 took the per-block drain of per-series counts off the store
thread), and the per-series counts are drained by the clock's advance."""

import sqlite3

from smartpark.hub.rollups import RollupFeeder
from smartpark.hub.store.sqlite import _SCHEMA


def test_late_readings_are_counted_once_and_advance_drains_the_per_series_counts():
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(_SCHEMA)
    f = RollupFeeder(lateness=60.0)
    t0 = 1_800_000_000.0  # a minute boundary
    f.on_commit(conn, [(1, t0 + 1, 0, 20.0, None), (2, t0 + 2, 0, 5.0, None)])
    assert f.late == 0
    assert f.advance(conn, t0 + 3600) > 0  # closes (and writes) the open buckets
    assert conn.execute("SELECT count(*) FROM rollups").fetchone()[0] > 0
    # readings for buckets that are closed already: late, stored raw, not rolled up
    f.on_commit(conn, [(1, t0 + 5, 0, 21.0, None), (1, t0 + 6, 0, 22.0, None),
                       (2, t0 + 7, 0, 6.0, None)])
    assert f.late == 3
    f.advance(conn, t0 + 3700)
    assert f.roll.drain_late() == []  # advance drained the per-series counts
    assert f.late == 3  # the total stays
