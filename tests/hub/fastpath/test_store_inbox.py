"""The store's inbox (issue 7): group commits append to `inbox`, compaction moves readings into
`readings` in key order. Exactly-once and the ack counts must not notice; real SQLite files."""

import asyncio
import sqlite3

from smartpark.hub.store.sqlite import SqliteStore, q_count_readings, q_raw


def _rows(node, times, sensors=("temp", "hum")):
    return [(node, s, "Cel", t, 0, float(t), None) for t in times for s in sensors]


async def _until(cond, seconds=5.0):
    for _ in range(int(seconds / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in %.0f s" % seconds)


async def _write(st, rows):
    return await st.write(rows, [(rows[0][0], "127.0.0.1:1", 0.0)])


def test_duplicates_across_inbox_and_readings_and_queries_see_everything(tmp_path):
    path = str(tmp_path / "h.sqlite3")

    async def go():
        st = SqliteStore(path, compact_rows=10, compact_idle=30.0)
        await st.start(asyncio.get_running_loop())
        try:
            r1 = await _write(st, _rows("n1", [1.0, 2.0, 3.0]))  # 6 readings: in the inbox
            assert (r1.stored, r1.duplicates) == (6, 0) and st.compactions == 0
            r2 = await _write(st, _rows("n1", [2.0, 3.0, 4.0]))  # 4 dups found in the inbox
            assert (r2.stored, r2.duplicates) == (2, 4)
            assert st.compactions == 0
            r3 = await _write(st, _rows("n1", [5.0, 6.0]))  # inbox reaches 12 >= 10: compacted
            assert (r3.stored, r3.duplicates) == (4, 0)
            await _until(lambda: st.compactions == 1)  # right after the acks went out
            r4 = await _write(st, _rows("n1", [1.0, 6.0, 7.0]))  # dups now found in readings
            assert (r4.stored, r4.duplicates) == (2, 4)
            # a reading sent twice in the same group commit: stored once
            f5 = st.write(_rows("n2", [1.0]), [])
            f6 = st.write(_rows("n2", [1.0]), [])
            r5, r6 = await asyncio.gather(f5, f6)
            assert (r5.stored, r6.stored, r6.duplicates) == (2, 0, 2)
            # a query compacts first, so it sees every acknowledged reading
            assert await st.call(q_count_readings) == 6 + 2 + 4 + 2 + 2
            sid = r4.new_rows[0][0]
            assert [r[0] for r in await st.call(q_raw, sid, 0.0, 100.0, 100)] == [
                1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        finally:
            await st.close()

    asyncio.run(go())
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 16
    conn.close()


def test_inbox_left_by_a_crash_is_moved_at_start(tmp_path):
    path = str(tmp_path / "h.sqlite3")

    async def first():
        st = SqliteStore(path)
        await st.start(asyncio.get_running_loop())
        r = await _write(st, _rows("n1", [1.0]))
        await st.close()
        return r.new_rows[0][0]

    sid = asyncio.run(first())
    # what a SIGKILL after an acknowledged commit leaves: readings still in the inbox
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO inbox(series, t, kind, val, sum) VALUES (?, 9.0, 0, 9.0, NULL)",
                 (sid,))
    conn.execute("INSERT INTO inbox(series, t, kind, val, sum) VALUES (?, 1.0, 0, 1.0, NULL)",
                 (sid,))  # already in readings: must not appear twice
    conn.commit()
    conn.close()

    async def second():
        st = SqliteStore(path)
        await st.start(asyncio.get_running_loop())
        try:
            assert st.compactions == 1
            again = await _write(st, [("n1", "temp", "Cel", 9.0, 0, 9.0, None)])
            assert (again.stored, again.duplicates) == (0, 1)
            return [r[0] for r in await st.call(q_raw, sid, 0.0, 100.0, 10)]
        finally:
            await st.close()

    assert asyncio.run(second()) == [1.0, 9.0]


def test_idle_store_compacts_by_itself(tmp_path):
    path = str(tmp_path / "h.sqlite3")

    async def go():
        st = SqliteStore(path, compact_idle=0.05)
        await st.start(asyncio.get_running_loop())
        try:
            await _write(st, _rows("n1", [1.0]))
            await _until(lambda: st.compactions == 1)
        finally:
            await st.close()

    asyncio.run(go())
