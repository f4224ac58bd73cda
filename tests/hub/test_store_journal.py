"""The store's one holding area: the row path's new readings wait in the journal with the
lane's blocks until the mover puts them into `readings`. Exactly-once and the ack counts
must not notice where a reading waits; real SQLite files, a real store thread."""

import asyncio
import os
import sqlite3

from smartpark.fast import kinds
from smartpark.hub.store import SqliteStore, stored_readings
from smartpark.hub.store.schema import journal_path


def _rows(node, times, sensors=("temp", "hum")):
    return [(node, s, "Cel", t, kinds.NUM, float(t), None) for t in times for s in sensors]


async def _until(cond, seconds=5.0):
    for _ in range(int(seconds / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in %.0f s" % seconds)


async def _write(st, rows):
    (res,) = await st.write_many([rows], [(rows[0][0], "127.0.0.1:1", 0.0)])
    return res


def _script(path, sql):
    """Run `sql` on the SQLite file at `path` (made by hand: an older layout) and close it."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(sql)
        conn.commit()
    finally:
        conn.close()


def _count(path, table):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM %s" % table).fetchone()[0]
    finally:
        conn.close()


def test_duplicates_across_journal_and_readings_and_queries_see_everything(tmp_path):
    path = str(tmp_path / "h.sqlite3")

    async def go():
        st = SqliteStore(path, move_after=10, move_idle=30.0)
        await st.start(asyncio.get_running_loop())
        try:
            r1 = await _write(st, _rows("n1", [1.0, 2.0, 3.0]))  # 6 readings: in the journal
            assert r1[:2] == (6, 0)
            assert st.pending_readings == 6
            assert _count(journal_path(path), "rows") == 6
            assert _count(path, "readings") == 0  # the database was not touched by the ack
            r2 = await _write(st, _rows("n1", [2.0, 3.0, 4.0]))  # 4 dups found in the journal
            assert r2[:2] == (2, 4)
            r3 = await _write(st, _rows("n1", [5.0, 6.0]))  # 12 pending >= 10: a move starts
            assert r3[:2] == (4, 0)
            await _until(lambda: st.pending_readings == 0)
            r4 = await _write(st, _rows("n1", [1.0, 6.0, 7.0]))  # dups now found in readings
            assert r4[:2] == (2, 4)
            # a reading sent twice in the same group commit: stored once
            f5 = st.write_many([_rows("n2", [1.0])], [])
            f6 = st.write_many([_rows("n2", [1.0])], [])
            (r5,), (r6,) = await asyncio.gather(f5, f6)
            assert (r5[0], r6[0], r6[1]) == (2, 0, 2)
            # a query waits for the move, so it sees every acknowledged reading
            assert await st.count_readings() == 6 + 2 + 4 + 2 + 2
            sid = r4[2][0][0]
            assert [r[0] for r in await st.raw(sid, 0.0, 100.0, 100)] == [
                1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        finally:
            await st.close()

    asyncio.run(go())
    assert _count(path, "readings") == 16
    assert _count(journal_path(path), "rows") == 0  # moved, then dropped at close


def test_every_kind_and_the_sum_wait_in_the_journal_and_arrive_unchanged(tmp_path):
    path = str(tmp_path / "h.sqlite3")
    rows = [("k1", "v", "W", 1.0, kinds.NUM, 2.5, 10.0),
            ("k1", "b", None, 1.0, kinds.BOOL, 1, None),
            ("k1", "s", None, 1.0, kinds.STR, "open", None),
            ("k1", "d", None, 1.0, kinds.DATA, b"\x00\xff", None),
            ("k1", "e", "Wh", 1.0, kinds.NUM, None, 123.0)]  # a sum without a value

    async def go():
        st = SqliteStore(path, move_after=10 ** 9, move_idle=3600)
        await st.start(asyncio.get_running_loop())
        try:
            (res,) = await st.write_many([rows], [])
            before = sorted(stored_readings(path), key=repr)  # from the journal
            sid_e = st.series_index[("k1", "e")][0]
            return res, before, await st.sum_at(sid_e, 1.0)  # waits for the move
        finally:
            await st.close()

    res, before, total = asyncio.run(go())
    assert res[:2] == (5, 0)
    expect = sorted([("k1", "v", 1.0, kinds.NUM, 2.5), ("k1", "b", 1.0, kinds.BOOL, 1),
                     ("k1", "s", 1.0, kinds.STR, "open"), ("k1", "d", 1.0, kinds.DATA, b"\x00\xff"),
                     ("k1", "e", 1.0, kinds.NUM, None)], key=repr)
    assert before == expect
    assert sorted(stored_readings(path), key=repr) == expect  # from readings, after close
    assert total == 123.0


def test_journal_left_by_a_crash_is_moved_at_start_and_nothing_twice(tmp_path):
    path = str(tmp_path / "h.sqlite3")

    async def first():
        st = SqliteStore(path)
        await st.start(asyncio.get_running_loop())
        r = await _write(st, _rows("n1", [1.0]))
        await st.close()
        return r[2][0][0]

    sid = asyncio.run(first())
    # what a SIGKILL after an acknowledged commit leaves: readings still in the journal,
    # one of them (1.0) moved already -- its row outlived the move's mark
    j = sqlite3.connect(journal_path(path))
    for rid, t in ((100, 9.0), (101, 1.0)):  # ids above the mark, as the store gives them
        j.execute("INSERT INTO rows(id, series, t, kind, val, sum) VALUES (?, ?, ?, 0, ?, NULL)",
                  (rid, sid, t, t))
    j.commit()
    j.close()
    assert len(stored_readings(path)) == 2 + 2  # 1.0 counted twice: in readings and journal

    async def second():
        st = SqliteStore(path)
        await st.start(asyncio.get_running_loop())
        try:
            assert st.pending_readings == 0  # moved before the first job
            again = await _write(st, [("n1", "temp", "Cel", 9.0, kinds.NUM, 9.0, None)])
            assert again[:2] == (0, 1)
            return [r[0] for r in await st.raw(sid, 0.0, 100.0, 10)]
        finally:
            await st.close()

    assert asyncio.run(second()) == [1.0, 9.0]
    assert len(stored_readings(path)) == 3


def test_idle_store_moves_by_itself(tmp_path):
    path = str(tmp_path / "h.sqlite3")

    async def go():
        st = SqliteStore(path, move_idle=0.05)
        await st.start(asyncio.get_running_loop())
        try:
            await _write(st, _rows("n1", [1.0]))
            await _until(lambda: st.pending_readings == 0)
            assert st.stats()["moves"] >= 1
        finally:
            await st.close()

    asyncio.run(go())


def test_a_version_1_data_directory_is_migrated_in_place(tmp_path):
    """The earlier layout: kinds numbered string 1 / bool 2, the row path's readings in an
    `inbox` table, the lane's journal in hub.lane.sqlite3. Nothing acknowledged is lost."""
    path = str(tmp_path / "hub.sqlite3")
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
        CREATE TABLE series(id INTEGER PRIMARY KEY, node TEXT NOT NULL, sensor TEXT NOT NULL,
            unit TEXT, UNIQUE(node, sensor));
        CREATE TABLE readings(series INTEGER NOT NULL, t REAL NOT NULL, kind INTEGER NOT NULL,
            val, sum REAL, PRIMARY KEY(series, t)) WITHOUT ROWID;
        CREATE TABLE inbox(series INTEGER NOT NULL, t REAL NOT NULL, kind INTEGER NOT NULL,
            val, sum REAL);
        INSERT INTO series VALUES (1, 'm', 'door', NULL), (2, 'm', 'open', NULL),
            (3, 'm', 'temp', 'Cel');
        INSERT INTO readings VALUES (1, 1.0, 1, 'shut', NULL), (2, 1.0, 2, 1, NULL),
            (3, 1.0, 0, 20.5, NULL);
        INSERT INTO inbox VALUES (1, 2.0, 1, 'ajar', NULL), (2, 2.0, 2, 0, NULL);
    """)
    conn.commit()
    conn.close()
    old = str(tmp_path / "hub.lane.sqlite3")
    j = sqlite3.connect(old)
    j.executescript("""
        CREATE TABLE blocks(id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL,
            series BLOB NOT NULL, t BLOB NOT NULL, kind BLOB NOT NULL, val BLOB NOT NULL);
        CREATE TABLE seen(node TEXT PRIMARY KEY, address TEXT, t REAL NOT NULL);
    """)
    import array
    j.execute("INSERT INTO blocks(n, series, t, kind, val) VALUES (1, ?, ?, ?, ?)", (
        array.array("i", [3]).tobytes(), array.array("d", [2.0]).tobytes(),
        bytes([kinds.NUM]), array.array("d", [21.0]).tobytes()))
    j.commit()
    j.close()

    async def go():
        st = SqliteStore(path)
        await st.start(asyncio.get_running_loop())
        try:
            return await st.raw(1, 0, 10, 10), await st.raw(2, 0, 10, 10), \
                await st.raw(3, 0, 10, 10)
        finally:
            await st.close()

    door, open_, temp = asyncio.run(go())
    assert door == [(1.0, kinds.STR, "shut", None), (2.0, kinds.STR, "ajar", None)]
    assert open_ == [(1.0, kinds.BOOL, 1, None), (2.0, kinds.BOOL, 0, None)]
    assert temp == [(1.0, kinds.NUM, 20.5, None), (2.0, kinds.NUM, 21.0, None)]
    assert not os.path.exists(old) and os.path.exists(journal_path(path))
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "inbox" not in tables
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("3",)
    finally:
        conn.close()


def test_an_estimated_time_is_stored_with_its_reading_in_the_journal_and_after_the_move(
        tmp_path):
    """A row's `est` (1: the node estimated the time) waits in the journal with the reading
    and reaches `readings` with it; a measured reading has none, whichever way it came."""
    path = str(tmp_path / "hub.sqlite3")
    rows = [("n1", "temp", "Cel", 1.0, kinds.NUM, 20.0, None, 1),
            ("n1", "temp", "Cel", 2.0, kinds.NUM, 20.5, None, None),
            ("n1", "temp", "Cel", 3.0, kinds.NUM, 21.0, None)]   # est may be left out

    async def go():
        st = SqliteStore(path, move_after=10 ** 9, move_idle=3600.0)
        await st.start(asyncio.get_running_loop())
        try:
            assert (await _write(st, rows))[:2] == (3, 0)
            waiting = await st.raw(1, 0.0, 10.0, 10)
            assert st.pending_readings == 3     # not moved: read from the journal
            # the same reading again (a resend, now measured) is a duplicate: the first stays
            again = [("n1", "temp", "Cel", 1.0, kinds.NUM, 20.0, None, None)]
            assert (await _write(st, again))[:2] == (0, 1)
            await st.count_readings()           # waits for the move
            return waiting, await st.raw(1, 0.0, 10.0, 10)
        finally:
            await st.close()

    waiting, moved = asyncio.run(go())
    want = [(1.0, kinds.NUM, 20.0, 1), (2.0, kinds.NUM, 20.5, None), (3.0, kinds.NUM, 21.0, None)]
    assert waiting == want and moved == want
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT t FROM readings WHERE est = 1").fetchall() == [(1.0,)]
    finally:
        conn.close()


def test_a_version_2_data_directory_gains_the_est_column(tmp_path):
    """Layout 2 had no `est`: the database's readings and a journal row left unmoved by a
    crash keep their values, read as measured; new readings carry their flag."""
    path = str(tmp_path / "hub.sqlite3")
    _script(path, """
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
        INSERT INTO meta VALUES ('schema', '2');
        CREATE TABLE series(id INTEGER PRIMARY KEY, node TEXT NOT NULL, sensor TEXT NOT NULL,
            unit TEXT, UNIQUE(node, sensor));
        CREATE TABLE readings(series INTEGER NOT NULL, t REAL NOT NULL, kind INTEGER NOT NULL,
            val, sum REAL, PRIMARY KEY(series, t)) WITHOUT ROWID;
        INSERT INTO series VALUES (1, 'm', 'temp', 'Cel');
        INSERT INTO readings VALUES (1, 1.0, 0, 20.5, NULL);
    """)
    _script(journal_path(path), """
        CREATE TABLE rows(id INTEGER PRIMARY KEY, series INTEGER NOT NULL, t REAL NOT NULL,
            kind INTEGER NOT NULL, val, sum REAL);
        INSERT INTO rows VALUES (1, 1, 2.0, 0, 21.0, NULL);
    """)

    async def go():
        st = SqliteStore(path)
        await st.start(asyncio.get_running_loop())
        try:
            res = await _write(st, [("m", "temp", "Cel", 3.0, kinds.NUM, 21.5, None, 1)])
            assert res[:2] == (1, 0)
            return await st.raw(1, 0, 10, 10)
        finally:
            await st.close()

    assert asyncio.run(go()) == [(1.0, kinds.NUM, 20.5, None), (2.0, kinds.NUM, 21.0, None),
                                 (3.0, kinds.NUM, 21.5, 1)]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("3",)
        assert conn.execute("SELECT t, est FROM readings ORDER BY t").fetchall() == [
            (1.0, None), (2.0, None), (3.0, 1)]
    finally:
        conn.close()


def test_a_raw_series_read_sees_the_journal_without_forcing_a_move(tmp_path):
    """A chart polling raw readings must not make the mover move everything first (that
    halved ingest): raw() reads `readings` and the journal's unmoved readings of the one
    series. The lane's blocks (when fast/lane.pyx is built) and the row path's rows both."""
    from hubutil import senml_cbor
    from smartpark.hub.codec import Decoder
    from smartpark.hub.events import EventBus
    from smartpark.hub.ingest import Pipeline
    from smartpark.hub.metrics import Metrics
    from smartpark.hub.registry import Registry

    path = str(tmp_path / "h.sqlite3")
    t0 = 1_700_000_000.0

    async def go():
        st = SqliteStore(path, move_after=10**9, move_idle=3600.0)
        await st.start(asyncio.get_running_loop())
        events = EventBus()
        registry = Registry(st, events)
        registry.load(await st.load_state())
        dec = Decoder()
        dec.enable_lane(st.newest)
        pipe = Pipeline(st, dec, registry, events, Metrics())

        async def send(first, n):
            for k in range(first, first + n):
                (r,) = await pipe.ingest([("10.0.0.1:1", senml_cbor(
                    "raw-1", [("a", float(k), 0), ("b", -float(k), 0)], bt=t0 + k), 112)])
                assert r.code == 0x44 or isinstance(r, tuple)
            # a resend of the first one: stored once, wherever it waits
            await pipe.ingest([("10.0.0.1:1", senml_cbor(
                "raw-1", [("a", float(first), 0), ("b", -float(first), 0)], bt=t0 + first), 112)])

        try:
            await send(0, 50)
            sid = st.series_index[("raw-1", "a")][0]
            got = await st.raw(sid, t0, t0 + 1000, 1000)
            assert [(t - t0, v) for t, _k, v, _e in got] == [(float(k), float(k)) for k in range(50)]
            assert st.pending_readings == 100 and _count(path, "readings") == 0  # not moved
            assert await st.count_readings() == 100  # this one does wait for the move
            await send(50, 30)  # now half in `readings`, half in the journal
            got = await st.raw(sid, t0 + 40, t0 + 60, 1000)
            assert [t - t0 for t, _k, _v, _e in got] == [float(k) for k in range(40, 60)]
            assert st.pending_readings == 60
            got = await st.raw(sid, t0, t0 + 1000, 7)  # the limit holds across both
            assert [t - t0 for t, _k, _v, _e in got] == [float(k) for k in range(7)]
        finally:
            await st.close()
        assert _count(path, "readings") == 160

    asyncio.run(go())


def test_a_damaged_journal_block_is_skipped_counted_and_kept(tmp_path):
    """A journal block whose columns disagree (not written by this hub: a bad sector, a
    bug) is skipped by the move, kept as it was in the database's damaged_blocks and
    counted; the blocks around it move."""
    path = str(tmp_path / "h.sqlite3")

    async def first():
        st = SqliteStore(path, move_after=10**9, move_idle=3600.0)
        await st.start(asyncio.get_running_loop())
        try:
            await _write(st, _rows("n1", [1.0, 2.0]))
        finally:
            await st.close()
    asyncio.run(first())
    j = sqlite3.connect(journal_path(path))
    try:
        j.execute("INSERT INTO blocks(id, n, series, t, kind, val) VALUES (7, 3, ?, ?, ?, ?)",
                  (b"\x01\x00\x00\x00" * 3, b"\x00" * 20, b"\x00" * 3, b"\x00" * 24))
        j.commit()
    finally:
        j.close()

    async def second():
        st = SqliteStore(path)
        await st.start(asyncio.get_running_loop())  # the start-up move meets the block
        try:
            assert st.stats()["damaged_blocks"] == 1
            assert await st.count_readings() == 4
        finally:
            await st.close()
    asyncio.run(second())
    c = sqlite3.connect(path)
    try:
        assert c.execute("SELECT id, n, length(t) FROM damaged_blocks").fetchall() == [(7, 3, 20)]
    finally:
        c.close()
    assert _count(journal_path(path), "blocks") == 0  # dropped from the journal: kept above


def test_the_salvage_of_a_damaged_file_keeps_est_and_reads_a_layout_2_file_as_measured(
        tmp_path):
    """hub/store/damage.py copies readings and journal rows one by one: `est` goes along,
    and a file of layout 2 (no such column) gives NULL, measured."""
    from smartpark.hub.store import damage

    def database(path, est_column):
        _script(path, """
            CREATE TABLE series(id INTEGER PRIMARY KEY, node TEXT NOT NULL,
                sensor TEXT NOT NULL, unit TEXT, UNIQUE(node, sensor));
            CREATE TABLE readings(series INTEGER NOT NULL, t REAL NOT NULL,
                kind INTEGER NOT NULL, val, sum REAL%s, PRIMARY KEY(series, t)) WITHOUT ROWID;
            INSERT INTO series VALUES (1, 'm', 'temp', 'Cel');
            INSERT INTO readings VALUES (1, 1.0, 0, 20.5, NULL%s);
        """ % ((", est INTEGER", ", 1") if est_column else ("", "")))
        _script(journal_path(path), """
            CREATE TABLE rows(id INTEGER PRIMARY KEY, series INTEGER NOT NULL,
                t REAL NOT NULL, kind INTEGER NOT NULL, val, sum REAL%s);
            INSERT INTO rows VALUES (1, 1, 2.0, 0, 21.0, NULL%s);
        """ % ((", est INTEGER", ", 1") if est_column else ("", "")))

    for est_column, want in ((True, 1), (False, None)):
        path = str(tmp_path / ("v3" if est_column else "v2") / "hub.sqlite3")
        os.makedirs(os.path.dirname(path))
        database(path, est_column)
        damage.recover(path, "a test", journal=False)
        damage.recover(journal_path(path), "a test", journal=True)
        for file, sql in ((path, "SELECT t, est FROM readings"),
                          (journal_path(path), "SELECT t, est FROM rows")):
            conn = sqlite3.connect(file)
            try:
                got = conn.execute(sql).fetchall()
            finally:
                conn.close()
            assert got == [(1.0 if file == path else 2.0, want)], (file, got)
