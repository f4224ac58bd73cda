"""The column lane: which reports fast/lane.pyx takes, the store's blocks, and a hub
with the lane against the same hub without it (`--no-column-lane`, the row path)."""

import asyncio
import math
import os
import signal
import socket
import sqlite3

import pytest
from hubutil import T0, HubProc, db_state, senml_cbor  # noqa: E402
from peers import require
from smartpark import fast
from smartpark.fast import Block, BlockMover, Lane, NewestTime, SeriesTable, decode_batch, kinds
from smartpark.protocol import coap, report

pytestmark = pytest.mark.compiled  # every test here needs the lane (deselected in the pure run)


def _need_lane():
    require(Lane is not None, "smartpark.fast.lane: %s" % fast.UNAVAILABLE.get("lane"))


def _lane_with(table, newest, node, sensors, unit=None, sid0=0, newest0=-math.inf):
    """A Lane that knows node/<sensor> for each sensor (store ids sid0, sid0+1, ...)."""
    lane = Lane(newest)
    for k, sensor in enumerate(sensors):
        fs = table.intern("%s/%s" % (node, sensor))
        lane.register(fs, sid0 + k, table.unit_id(unit), node)
        newest[sid0 + k] = newest0
    return lane


def _select(lane, table, packs, lo=0.0, hi=4e9):
    batch = decode_batch(packs, T0, table)
    return lane.select(batch, lo, hi)


def test_lane_takes_known_series_and_leaves_the_rest_to_the_row_path():
    _need_lane()
    table, newest = SeriesTable(), NewestTime()
    lane = _lane_with(table, newest, "n1", ["a", "b"])
    packs = [
        senml_cbor("n1", [("a", 1.5, 0), ("b", True, 0)], bt=T0),        # taken
        senml_cbor("n1", [("a", 2.5, 0), ("c", 1.0, 0)], bt=T0 + 10),    # c is new: rows
        senml_cbor("n1", [("a", 3.5, 0)], bt=T0),                        # not newer: rows
        senml_cbor("n1", [("a", "text", 0)], bt=T0 + 20),                # a string: rows
        senml_cbor("n2", [("a", 4.0, 0)], bt=T0 + 30),                   # other node: rows
        b"\x9f\x01",                                                     # not decoded: rows
        senml_cbor("n1", [("a", 5.0, 0), ("b", False, 0)], bt=T0 + 40),  # taken
        senml_cbor("n1", [("a", 6.0, 0, "Cel")], bt=T0 + 50),            # other unit: rows
        senml_cbor("n1", [("a", 7.0, 0)], bt=T0 + 60),  # rows until the unit is registered
    ]
    take, node, block = _select(lane, table, packs)
    assert list(take) == [1, 0, 0, 0, 0, 0, 1, 0, 0]
    assert not lane.known(table.lookup("n1/a")) and lane.known(table.lookup("n1/b"))
    assert [node[p] for p in (0, 6)] == [0, 0] and lane.nodes == ["n1"]
    assert node[1] == -1
    assert isinstance(block, Block) and len(block) == 4
    assert list(block.series) == [0, 1, 0, 1]
    assert list(block.time) == [T0, T0, T0 + 40, T0 + 40]
    assert list(block.kind) == [0, 1, 0, 1]
    assert list(block.value) == [1.5, 1.0, 5.0, 0.0]
    # NewestTime went up for the lane's readings AND for the row path's readings of known series
    assert newest[0] == T0 + 40 and newest[1] == T0 + 40
    assert (lane.n_lane, lane.n_rows) == (2, 7)


def test_a_refused_report_undoes_its_newest_time_and_a_row_path_copy_never_enters_the_lane():
    _need_lane()
    table, newest = SeriesTable(), NewestTime()
    lane = _lane_with(table, newest, "n1", ["a", "b"])
    # record a is fine, record b is out of range: the whole report goes to the rows ...
    take, _node, block = _select(lane, table, [senml_cbor("n1", [("a", 1.0, 0), ("b", 2.0, 5)],
                                                          bt=T0)], hi=T0 + 1)
    assert list(take) == [0] and block is None
    # ... and NewestTime covers its readings (not higher than what was in range)
    assert newest[0] == T0 and newest[1] == -math.inf
    # so the same reading again (a retransmission in a later batch) is left to the rows too
    take, _node, block = _select(lane, table, [senml_cbor("n1", [("a", 1.0, 0)], bt=T0)])
    assert list(take) == [0] and block is None
    # the same reading twice in one pack: the second is not newer
    take, _n, _b = _select(lane, table, [senml_cbor("n1", [("a", 1.0, 0), ("a", 2.0, 0)],
                                                    bt=T0 + 5)])
    assert list(take) == [0]


def test_an_unknown_newest_time_times_out_of_range_and_non_finite_values_take_the_rows():
    _need_lane()
    table, newest = SeriesTable(), NewestTime()
    lane = Lane(newest)
    lane.register(table.intern("n1/a"), 7, 0, "n1")  # NewestTime of store series 7 unknown
    assert 7 not in newest and newest.get(7) is None
    take, _n, _b = _select(lane, table, [senml_cbor("n1", [("a", 1.0, 0)])])
    assert list(take) == [0]
    newest[7] = -math.inf
    assert list(_select(lane, table, [senml_cbor("n1", [("a", 1.0, 0)])])[0]) == [1]
    assert list(_select(lane, table, [senml_cbor("n1", [("a", 2.0, 0)], bt=T0 + 10)],
                        lo=T0 + 20)[0]) == [0]
    assert list(_select(lane, table, [senml_cbor("n1", [("a", math.inf, 0)],
                                                 bt=T0 + 30)])[0]) == [0]
    # a sum makes it a row-path report too
    pack = senml_cbor("n1", [("a", 1.0, 0)], bt=T0 + 40)
    import cbor2
    recs = cbor2.loads(pack)
    recs[0][5] = 3.0
    assert list(_select(lane, table, [cbor2.dumps(recs)])[0]) == [0]
    # so does an estimated time: only the row path stores the flag
    recs = cbor2.loads(senml_cbor("n1", [("a", 1.0, 0)], bt=T0 + 50))
    recs[0]["est"] = True
    assert list(_select(lane, table, [cbor2.dumps(recs)])[0]) == [0]
    recs = cbor2.loads(senml_cbor("n1", [("a", 1.0, 0)], bt=T0 + 60))
    recs[0]["est"] = False   # only true marks a reading
    assert list(_select(lane, table, [cbor2.dumps(recs)])[0]) == [1]
    lane.forget(table.lookup("n1/a"))
    assert not lane.known(table.lookup("n1/a"))


def test_newest_time_behaves_like_the_dict_it_replaces():
    _need_lane()
    m = NewestTime()
    with pytest.raises(KeyError):
        m[3]
    m[3] = 5.0
    m[100000] = -math.inf
    assert m[3] == 5.0 and m.get(3) == 5.0 and m.get(4, "x") == "x" and 100000 in m
    with pytest.raises(ValueError):
        m[1] = math.nan
    with pytest.raises(KeyError):
        m[-1] = 1.0
    m.clear()
    assert m.get(3) is None


# ---- the store: blocks, their move into readings, crash leftovers -------------------------

def _journal_blocks(path):
    from smartpark.hub.store.schema import journal_path
    j = sqlite3.connect(journal_path(path))
    try:
        return j.execute("SELECT count(*) FROM blocks").fetchone()[0]
    finally:
        j.close()


def _journal_rows(path):
    from smartpark.hub.store.schema import journal_path
    j = sqlite3.connect(journal_path(path))
    try:
        return j.execute("SELECT count(*) FROM rows").fetchone()[0]
    finally:
        j.close()


def _restart_count(path):
    """Start a store on `path` (it moves what a crash left), count readings, close."""
    from smartpark.hub.store import SqliteStore

    async def restart():
        st = SqliteStore(path)
        await st.start(asyncio.get_running_loop())
        n = await st.count_readings()
        await st.close()
        return n

    return asyncio.run(restart())


def _store_roundtrip(tmp_path, c_mover, name):
    from smartpark.hub.store import SqliteStore, stored_readings

    path = str(tmp_path / name / "hub.sqlite3")

    async def main():
        loop = asyncio.get_running_loop()
        st = SqliteStore(path, c_mover=c_mover)
        await st.start(loop)
        # two series through the row path first (the lane only takes known series)
        done = await st.write_many([[("n1", "a", None, T0, 0, 1.0, None),
                                     ("n1", "b", None, T0, kinds.BOOL, 1, None)]],
                                   [("n1", "127.0.0.1", T0)])
        assert done[0][:2] == (2, 0)
        sa, sb = st._series[("n1", "a")][0], st._series[("n1", "b")][0]
        import array
        blk = Block(array.array("i", [sa, sb, sa]), array.array("d", [T0 + 1, T0 + 1, T0 + 2]),
                    array.array("B", [0, 1, 0]), array.array("d", [2.5, 0.0, 3.5]))
        st.newest[sa] = T0 + 2
        st.newest[sb] = T0 + 1
        # a block and, in the same commit, the row path re-sending a block reading
        done = await st.write_many([[("n1", "a", None, T0 + 1, 0, 2.5, None)]], [], block=blk)
        assert done[0][:2] == (0, 1), "a reading in a block not yet moved is a duplicate"
        before = sorted(stored_readings(path))
        assert len(before) == 5 and len(set((r[0], r[1], r[2]) for r in before)) == 5
        raw = await st.raw(sa, 0, 4e9, 10)  # a query moves everything into readings
        assert raw == [(T0, 0, 1.0, None), (T0 + 1, 0, 2.5, None), (T0 + 2, 0, 3.5, None)]
        assert await st.count_readings() == 5
        assert (st.mover_off is None) == c_mover
        await st.close()
        return before

    before = asyncio.run(main())
    conn = sqlite3.connect(path)
    try:
        assert _journal_blocks(path) == 0
        rows = sorted(conn.execute("SELECT series, t, kind, val, sum FROM readings").fetchall())
    finally:
        conn.close()
    assert sorted(stored_readings(path)) == before
    return rows


def test_blocks_move_into_readings_the_same_through_c_and_python(tmp_path):
    _need_lane()
    require(BlockMover is not None, "fast/mover.pyx is not built")
    c_rows = _store_roundtrip(tmp_path, True, "c")
    py_rows = _store_roundtrip(tmp_path, False, "py")
    assert c_rows == py_rows
    bools = [r for r in c_rows if r[2] == kinds.BOOL]
    assert bools and all(isinstance(r[3], int) for r in bools)


def _rows_then_blocks_then_crash(path, node, blocks):
    """A store on `path` commits one row-path reading of node/a at T0, then `blocks`
    one-reading lane blocks (T0 + k, value k), and is never closed: as in a power cut
    after the commits, the blocks stay in the journal."""
    import array

    from smartpark.hub.store import SqliteStore

    async def go():
        st = SqliteStore(path)
        await st.start(asyncio.get_running_loop())
        await st.write_many([[(node, "a", None, T0, 0, 1.0, None)]], [])
        sid = st.series_index[(node, "a")][0]
        st.newest[sid] = T0 + blocks
        for k in range(1, blocks + 1):
            await st.write_many([], [], block=Block(array.array("i", [sid]),
                                                     array.array("d", [T0 + k]),
                                                     array.array("B", [0]),
                                                     array.array("d", [float(k)])))

    asyncio.run(go())


def test_blocks_a_crash_left_are_moved_at_start(tmp_path):
    _need_lane()

    from smartpark.hub.store import stored_readings

    path = str(tmp_path / "hub.sqlite3")

    _rows_then_blocks_then_crash(path, "n9", 1)
    assert _journal_blocks(path) == 1
    assert len(stored_readings(path)) == 2

    assert _restart_count(path) == 2
    assert _journal_blocks(path) == 0


# ---- a hub with the lane against the same hub without it ------------------------------------

def _msg(mid, token, payload):
    m = coap.make_request(coap.POST, "/r", mid, token=token, payload=payload)
    m.add_option(coap.CONTENT_FORMAT, coap.encode_uint(112))
    return m.encode()


def _lane_stream():
    """Numbers and booleans only (what the lane takes), with what it must leave to the rows:
    first reports of a series, replays of old packs, the same readings in a new message,
    retransmissions, a unit change, a new sensor mid-stream and a time out of range."""
    out = []
    mid = 2000
    for k in range(60):
        node = "ln%d" % (k % 3)
        recs = [("temp", 20.0 + k * 0.5, 0, "Cel"), ("hum", 40 + k % 7, 0, "%RH"),
                ("door", k % 4 == 0, 0), ("count", k * 3, 0)]
        if k >= 30 and node == "ln1":
            recs.append(("lux", 100 + k, 0, "lx"))  # a new series half way
        if k == 45:
            recs[0] = ("temp", 99.0, 0, "K")  # a unit change
        mid += 1
        pack = senml_cbor(node, recs, bt=T0 + 20 * k)
        if k % 17 == 5:  # readings the node timed before its clock was set
            import cbor2
            pack = cbor2.dumps([dict(r, est=True) for r in cbor2.loads(pack)])
        out.append(_msg(mid, b"l%d" % k, pack))
        if k % 9 == 4:
            out.append(out[-1])  # retransmission
        if k % 11 == 6:
            mid += 1
            out.append(_msg(mid, b"d%d" % k, pack))  # the same readings, new message
        if k % 13 == 12:
            mid += 1  # an old pack replayed from an outbox (all duplicates)
            out.append(_msg(mid, b"r%d" % k, senml_cbor(node, recs, bt=T0 + 20 * (k - 6))))
    mid += 1
    out.append(_msg(mid, b"far", senml_cbor("ln0", [("temp", 1.0, 0, "Cel")], bt=T0 + 9e6)))
    return out


def _answer(sock, data):
    sock.send(data)
    m = coap.parse(sock.recv(4096))
    payload = m.payload
    if m.content_format == 60 and m.code == coap.CHANGED:
        ack = report.decode_ack(payload)
        ack.pop("time")
        payload = tuple(sorted(ack.items()))
    elif m.code == coap.BAD_REQUEST:
        payload = payload.split(b"clock")[0]  # the diagnostic ends with the hub's clock
    return (m.mid, m.code, m.token, payload)


@pytest.mark.parametrize("front", ["fastpath", "aiocoap"])
def test_differential_column_lane_on_and_off(tmp_path, front):
    _need_lane()
    stream = _lane_stream()
    out = {}
    for lane in (True, False):
        d = str(tmp_path / ("lane" if lane else "rows"))
        os.makedirs(d)
        extra = ([] if lane else ["--no-column-lane"]) + (
            ["--no-fast-path"] if front == "aiocoap" else []) + ["--security", "off"]
        h = HubProc(d, extra=extra)
        try:
            h.start()
            assert ("lane=on" in h.ready_line) == lane, h.ready_line
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(10)
            s.connect(("127.0.0.1", h.coap_port))
            answers = [_answer(s, x) for x in stream]
            s.close()
            taken = h.metric("smartpark_lane_reports") if lane else None
            res = h.stop(signal.SIGTERM, 30)
            assert res is not None and "Traceback" not in res[1]
        finally:
            h.kill()
        out[lane] = (answers, db_state(d), taken)
    answers_on, state_on, taken = out[True]
    answers_off, state_off, _ = out[False]
    assert taken >= 30, "the lane took only %s reports" % taken
    for i, (a, b) in enumerate(zip(answers_on, answers_off, strict=True)):
        assert a == b, "datagram %d: lane %r != rows %r" % (i, a, b)
    codes = [a[1] for a in answers_on]
    assert codes.count(coap.CHANGED) == len(codes) - 1 and codes[-1] == coap.BAD_REQUEST
    dups = sum(dict(a[3]).get("duplicates", 0) for a in answers_on if a[1] == coap.CHANGED)
    assert dups > 0
    readings_on, rollups_on = state_on
    assert readings_on == state_off[0]
    lux = sum(1 for k in range(30, 60) if k % 3 == 1)
    assert len(readings_on) == len({r[:2] + (r[3],) for r in readings_on}) == 60 * 4 + lux
    assert rollups_on and rollups_on == state_off[1]
    est = {r[3] for r in readings_on if r[7] == 1}
    assert est == {T0 + 20 * k for k in range(60) if k % 17 == 5}, est


def test_a_sliced_block_move_is_seen_whole_at_every_slice_and_after_a_crash(tmp_path):
    _need_lane()
    import array

    require(BlockMover is not None, "fast/mover.pyx is not built")
    from smartpark.hub.store import SqliteStore, stored_readings
    from smartpark.hub.store.journal import read_blocks
    from smartpark.hub.store.schema import journal_path

    path = str(tmp_path / "hub.sqlite3")

    async def write_blocks():
        st = SqliteStore(path, move_after=10 ** 9, move_idle=3600)
        await st.start(asyncio.get_running_loop())
        for node in ("a", "b", "c"):
            await st.write_many([[(node, "x", None, T0, 0, 0.0, None)]], [])
        sids = [st._series[(node, "x")][0] for node in ("a", "b", "c")]
        for k in range(1, 4):  # three blocks, each with a reading of every series
            blk = Block(array.array("i", sids), array.array("d", [T0 + k] * 3),
                        array.array("B", [0, 1, 0]), array.array("d", [k, 1.0, -k]))
            for sid in sids:
                st.newest[sid] = T0 + k
            await st.write_many([], [], block=blk)
        # no close(): as in a power cut, the blocks stay where the commits put them

    asyncio.run(write_blocks())
    expect = sorted(stored_readings(path))
    assert len(expect) == 3 + 9
    conn = sqlite3.connect(path)
    j = sqlite3.connect(journal_path(path))
    pairs = read_blocks(j)
    j.close()
    blocks = [b for _bid, b in pairs]
    last_id = pairs[-1][0]
    mover = BlockMover(path)
    move = mover.start(blocks, 0, last_id)
    seen_marks = []
    for _ in range(2):  # two slices of 2 readings, then "the power goes"
        assert move.step(2) is False
        seen_marks.append(conn.execute("SELECT series, t FROM block_moved").fetchone())
        assert sorted(stored_readings(path)) == expect  # nothing twice, nothing missing
    assert seen_marks[0] < seen_marks[1]
    assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 4  # two slices
    assert _journal_rows(path) == 3  # the row path's readings wait in the journal too
    mover.close()
    conn.close()

    assert _restart_count(path) == 12
    assert _journal_blocks(path) == 0
    conn = sqlite3.connect(path)
    try:  # the mark says every block up to the last one is in readings
        assert conn.execute("SELECT done_id FROM block_moved").fetchone()[0] == last_id
    finally:
        conn.close()
    assert sorted(stored_readings(path)) == expect


def test_a_damaged_journal_block_is_skipped_and_the_rest_still_moves(tmp_path, caplog):
    _need_lane()

    from smartpark.hub.store.schema import journal_path

    path = str(tmp_path / "hub.sqlite3")

    _rows_then_blocks_then_crash(path, "n7", 2)
    j = sqlite3.connect(journal_path(path))
    j.execute("UPDATE blocks SET t = x'00' WHERE id = (SELECT min(id) FROM blocks)")
    j.commit()
    j.close()
    assert _restart_count(path) == 2  # the row path's reading and the good block's
    assert "damaged" in caplog.text


def test_latest_behaves_like_the_dict_it_replaces():
    """fast.lane.Latest against a plain dict fed the same updates (the registry's rules:
    row-path values set as given, lane blocks only where not older)."""
    _need_lane()
    import array
    import random

    from smartpark.fast import Latest

    rnd = random.Random(7)
    lat, ref = Latest(), {}
    for step in range(3000):
        sid = rnd.randrange(40)
        t = float(rnd.randrange(100))
        if rnd.random() < 0.5:  # a row-path value, any kind
            kind = rnd.choice([kinds.NUM, kinds.BOOL, kinds.STR, kinds.DATA, kinds.NUM])
            val = {kinds.NUM: rnd.choice([1.5, -2.0, 7, None]), kinds.STR: "s%d" % step,
                   kinds.BOOL: rnd.choice([0, 1]), kinds.DATA: b"\x00\x01"}[kind]
            lat[sid] = ref[sid] = (t, kind, val)
        else:  # a lane block of a few readings
            n = rnd.randrange(1, 6)
            sids = [rnd.randrange(40) for _ in range(n)]
            ts = [float(rnd.randrange(100)) for _ in range(n)]
            ks = [rnd.choice([kinds.NUM, kinds.BOOL]) for _ in range(n)]
            vs = [float(rnd.choice([0, 1, 3])) for _ in range(n)]
            lat.update_block(Block(array.array("i", sids), array.array("d", ts),
                                   array.array("B", ks), array.array("d", vs)))
            for s_, t_, k_, v_ in zip(sids, ts, ks, vs, strict=True):
                cur = ref.get(s_)
                if cur is None or t_ >= cur[0]:
                    ref[s_] = ((t_, kinds.BOOL, 1 if v_ else 0) if k_ == kinds.BOOL
                               else (t_, kinds.NUM, v_))
        assert len(lat) == len(ref)
    for sid in range(45):
        assert lat.get(sid) == ref.get(sid), sid
        assert (sid in lat) == (sid in ref)
        if sid in ref:
            assert lat[sid] == ref[sid]
            assert type(lat[sid][2]) is type(ref[sid][2]) or ref[sid][1] == kinds.NUM
    with pytest.raises(KeyError):
        lat[1000]


def test_grouped_block_move_stores_what_one_row_at_a_time_stores(tmp_path):
    """The mover inserts 32 readings per statement; the same move one reading per statement
    gives the same `readings` and the same count of new rows -- with readings already
    stored, a reading twice in one group, booleans, and slices that end mid-group."""
    import array
    import random

    require(BlockMover is not None, "fast/mover.pyx is not built")
    from smartpark.hub.store.schema import DATABASE, connect

    rnd = random.Random(5)
    cols = [(rnd.randrange(7), T0 + rnd.randrange(40), rnd.randrange(2), rnd.uniform(-5, 5))
            for _ in range(300)]
    cols += cols[:10]  # the same readings again, later in the move
    before = [(sid, t, 0, 1.0, None) for sid, t, _k, _v in cols[50:60]]  # stored before

    def move(grouped):
        path = str(tmp_path / ("g%d.sqlite3" % grouped))
        conn = connect(path)
        conn.executescript(DATABASE)
        conn.executemany("INSERT OR IGNORE INTO readings(series, t, kind, val, sum) VALUES (?, ?, ?, ?, ?)", before)
        mover = BlockMover(path, grouped=grouped)
        m = mover.start_columns(array.array("i", [c[0] for c in cols]).tobytes(),
                                array.array("d", [c[1] for c in cols]).tobytes(),
                                array.array("B", [c[2] for c in cols]).tobytes(),
                                array.array("d", [c[3] for c in cols]).tobytes(), 0, 1)
        steps = 1
        while not m.step(45):
            steps += 1
        mover.close()
        rows = conn.execute("SELECT series, t, kind, val FROM readings ORDER BY series, t"
                            ).fetchall()
        conn.close()
        return m.new, steps, rows

    new_g, steps, rows_g = move(True)
    new_s, _steps, rows_s = move(False)
    assert steps == 7  # 310 readings in slices of 45
    assert rows_g == rows_s
    assert new_g == new_s == len(rows_g) - len({(s, t) for s, t, *_ in before})
    assert {(s, t) for s, t, *_ in rows_g} == {(c[0], c[1]) for c in cols}
    assert {k for _s, _t, k, _v in rows_g} == {kinds.NUM, kinds.BOOL}  # stored as they came
