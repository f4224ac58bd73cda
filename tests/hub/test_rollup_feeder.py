"""hub/rollups.py's feeder: late readings are counted from fast/'s own counter, the clock's
advance drains the per-series counts, and closed buckets come back as rows for the store."""

from smartpark.fast import kinds
from smartpark.hub.rollups import RollupFeeder


def test_late_readings_are_counted_once_and_advance_drains_the_per_series_counts():
    f = RollupFeeder(lateness=60.0)
    t0 = 1_800_000_000.0  # a minute boundary
    f.add_rows([(1, t0 + 1, kinds.NUM, 20.0, None), (2, t0 + 2, kinds.NUM, 5.0, None)])
    assert f.late == 0
    assert f.closed_rows() == []  # nothing closed yet
    f.advance(t0 + 3600)
    rows = f.closed_rows()  # buckets that ended a lateness before the watermark are closed
    assert {(r[0], r[1]) for r in rows} == {(s, w) for s in (1, 2) for w in (60, 900)}
    one = [r for r in rows if r[:2] == (1, 60)][0]
    assert one[2:7] == (t0, 1, 20.0, 20.0, 20.0)  # bucket start, count, min, max, mean
    assert f.written == len(rows)
    # readings for buckets that are closed already: late, stored raw, not rolled up
    f.add_rows([(1, t0 + 5, kinds.NUM, 21.0, None), (1, t0 + 6, kinds.NUM, 22.0, None),
                (2, t0 + 7, kinds.NUM, 6.0, None)])
    assert f.late == 3
    f.advance(t0 + 3700)
    assert f.roll.drain_late() == []  # advance drained the per-series counts
    assert f.late == 3  # the total stays


def test_rows_without_a_number_are_not_rolled_up_and_replay_starts_at_a_day():
    f = RollupFeeder(lateness=120.0)
    t0 = 1_800_000_000.0
    f.add_rows([(3, t0, kinds.STR, "open", None), (3, t0 + 1, kinds.NUM, None, 5.0),
                (4, t0, kinds.BOOL, 1, None)])
    f.advance(t0 + 86400 * 2)
    rows = f.closed_rows()
    assert {r[0] for r in rows} == {4}  # the text and the sum-only reading are not numbers
    assert f.replay_start(None) is None
    assert f.replay_start(float("-inf")) is None
    day = 86400
    assert f.replay_start(t0 + 500.0) == ((t0 + 500.0 - 120.0) // day) * day
