"""The store side under a sustained load: nodes' last-seen times are stored at most
every SEEN_EVERY seconds (exact in memory, written at shutdown), the block mover moves at most
`move_max` readings at a time and runs at a lower priority, and while its backlog is over
`max_backlog` readings the hub answers 5.03 instead of letting the journal grow."""

import array
import asyncio
import os
import sys

import pytest
from hubutil import T0, senml_cbor  # noqa: E402
from peers import require
from smartpark import fast
from smartpark.fast import Block  # None without the lane: the tests that need it are `compiled`
from smartpark.hub import ingest  # noqa: E402
from smartpark.hub.codec import Decoder  # noqa: E402
from smartpark.hub.events import EventBus  # noqa: E402
from smartpark.hub.ingest import Pipeline  # noqa: E402
from smartpark.hub.metrics import Metrics  # noqa: E402
from smartpark.hub.registry import Registry  # noqa: E402
from smartpark.hub.store import SqliteStore  # noqa: E402


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


async def _pipeline(path, clock, lane=False, **store_kw):
    store = SqliteStore(path, **store_kw)
    await store.start(asyncio.get_running_loop())
    events = EventBus()
    registry = Registry(store, events)
    registry.load(await store.load_state())
    decoder = Decoder()
    if lane:
        assert decoder.enable_lane(store.newest) is not None
    return store, registry, Pipeline(store, decoder, registry, events, Metrics(), clock=clock)


async def _stored_node(store, node):
    """The node's row as stored (load_state waits until the journal's last-seen rows are
    applied to `nodes`)."""
    rows = [r for r in (await store.load_state())["nodes"] if r["id"] == node]
    return (rows[0]["address"], rows[0]["last_seen"]) if rows else None


def test_last_seen_is_stored_at_most_every_seen_every_seconds_and_at_shutdown(tmp_path):
    path = str(tmp_path / "hub.sqlite3")
    clock = Clock(T0 + 100)

    def pack(k):
        return senml_cbor("seen-1", [("temp", 20.0 + k, 0, "Cel")], bt=T0 + k)

    async def main():
        store, registry, pipe = await _pipeline(path, clock)
        try:
            got = []
            for k, (dt, address) in enumerate([(0.0, "10.0.0.1:5683"), (1.0, "10.0.0.1:5683"),
                                               (1.5, "10.0.0.2:5683"), (1.9, "10.0.0.2:5683"),
                                               (3.6, "10.0.0.2:5683"), (4.0, "10.0.0.2:5683")]):
                clock.t = T0 + 100 + dt
                res = await pipe.ingest([(address, pack(k), 112)])
                assert res[0].code == 0x44 and res[0].stored == 1
                # in memory: exact, every report
                assert registry.nodes["seen-1"].last_seen == clock.t
                assert registry.nodes["seen-1"].address == address
                got.append(await _stored_node(store, "seen-1"))
            await pipe.flush_seen()
            got.append(await _stored_node(store, "seen-1"))
            return got
        finally:
            await store.close()

    got = asyncio.run(main())
    assert got == [
        ("10.0.0.1:5683", T0 + 100),  # first report: stored
        ("10.0.0.1:5683", T0 + 100),  # 1 s later, same address: held back
        ("10.0.0.2:5683", T0 + 101.5),  # another address: stored at once
        ("10.0.0.2:5683", T0 + 101.5),  # held back
        ("10.0.0.2:5683", T0 + 103.6),  # SEEN_EVERY after the last stored one
        ("10.0.0.2:5683", T0 + 103.6),  # held back ...
        ("10.0.0.2:5683", T0 + 104.0),  # ... until flush_seen (the hub's stop)
    ]
    assert ingest.SEEN_EVERY == 2.0


def _blocks(store, node, n_blocks, first=1):
    """Commit `n_blocks` lane blocks of 3 readings (series node/x, node/y, node/z)."""
    async def go():
        for s in ("x", "y", "z"):
            await store.write_many([[(node, s, None, T0, 0, 0.0, None)]], [])
        sids = [store.series_index[(node, s)][0] for s in ("x", "y", "z")]
        for k in range(first, first + n_blocks):
            await _block(store, sids, k)
        return sids
    return go()


async def _block(store, sids, k):
    """Commit one lane block: a reading at T0 + k for each series of `sids`."""
    blk = Block(array.array("i", sids), array.array("d", [T0 + k] * len(sids)),
                array.array("B", [0] * len(sids)), array.array("d", [float(k)] * len(sids)))
    for sid in sids:
        store.newest[sid] = T0 + k
    await store.write_many([], [], block=blk)


@pytest.mark.compiled
def test_a_move_takes_at_most_move_max_readings_and_the_rest_follows(tmp_path):
    require(Block is not None, "smartpark.fast.lane: %s" % fast.UNAVAILABLE.get("lane"))
    path = str(tmp_path / "hub.sqlite3")

    async def main():
        store = SqliteStore(path, move_after=10 ** 9, move_idle=3600, move_max=4)
        await store.start(asyncio.get_running_loop())
        try:
            await _blocks(store, "cap-1", 5)
            assert store.pending_readings == 3 + 15  # the row path's first readings too
            moves = store.stats()["moves"]
            assert await store.count_readings() == 3 + 15  # the query waits for all
            return store.stats()["moves"] - moves, store.pending_readings
        finally:
            await store.close()

    moves, pending = asyncio.run(main())
    # 15 readings in blocks of 3, at most 4 a move (at least one block): 6+6 would exceed the
    # cap, so 6 (two blocks reach 4), 6, 3
    assert moves == 3 and pending == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_the_block_mover_runs_at_a_lower_priority(tmp_path):
    import threading

    async def main():
        store = SqliteStore(str(tmp_path / "hub.sqlite3"))
        await store.start(asyncio.get_running_loop())
        try:
            for _ in range(100):
                movers = [t for t in threading.enumerate() if t.name == "sqlite-mover"]
                if movers:
                    break
                await asyncio.sleep(0.01)
            assert movers, "no mover thread"
            with open("/proc/self/task/%d/stat" % movers[0].native_id) as f:
                stat = f.read()
            main_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            # field 19 of stat (after the command in parentheses) is the nice value
            return int(stat[stat.rindex(")") + 2:].split()[16]), main_nice
        finally:
            await store.close()

    mover_nice, main_nice = asyncio.run(main())
    assert mover_nice == min(19, main_nice + 10)


@pytest.mark.compiled
def test_a_backlog_over_max_backlog_gets_503_until_the_mover_caught_up(tmp_path):
    require(Block is not None, "smartpark.fast.lane: %s" % fast.UNAVAILABLE.get("lane"))
    path = str(tmp_path / "hub.sqlite3")
    clock = Clock(T0 + 100)

    async def main():
        store, _registry, pipe = await _pipeline(path, clock, move_after=10 ** 9,
                                                 move_idle=3600)
        try:
            await _blocks(store, "bk-1", 4)
            pipe.max_backlog = 11  # 12 pending
            report = senml_cbor("bk-2", [("temp", 1.0, 0, "Cel")], bt=T0 + 50)
            over = await pipe.ingest([("10.0.0.9:5683", report, 112)])
            assert await store.count_readings() == 3 + 12  # moves the backlog
            after = await pipe.ingest([("10.0.0.9:5683", report, 112)])
            return over[0], after[0], store.pending_readings
        finally:
            await store.close()

    over, after, pending = asyncio.run(main())
    assert (over.code, over.max_age, over.error) == (0xA3, ingest.RETRY_AFTER, "backlog")
    assert b"backlog" in over.payload
    assert (after.code, after.stored, pending) == (0x44, 1, 1)  # the new one waits to move


@pytest.mark.compiled
def test_a_query_sees_lane_readings_committed_after_everything_else_was_moved(tmp_path):
    """A query waits for the move of lane-only commits too (they must not stay invisible
    until the mover's idle timer or its move_after threshold moves them)."""
    require(Block is not None, "smartpark.fast.lane: %s" % fast.UNAVAILABLE.get("lane"))

    async def main():
        store = SqliteStore(str(tmp_path / "hub.sqlite3"), move_after=10 ** 9,
                            move_idle=3600)
        await store.start(asyncio.get_running_loop())
        try:
            await store.write_many([[("q-1", "x", None, T0, 0, 0.0, None)]], [])
            first = await store.count_readings()  # moves the journal
            sid = store.series_index[("q-1", "x")][0]
            store.newest[sid] = T0 + 1
            await store.write_many([], [("q-1", "10.0.0.3:5683", T0 + 1)], block=Block(
                array.array("i", [sid]), array.array("d", [T0 + 1]), array.array("B", [0]),
                array.array("d", [1.0])))
            return first, await store.count_readings(), await _stored_node(store, "q-1")
        finally:
            await store.close()

    assert asyncio.run(main()) == (1, 2, ("10.0.0.3:5683", T0 + 1))


@pytest.mark.compiled
def test_moved_blocks_leave_the_journal_a_bounded_piece_per_commit(tmp_path):
    """After a move the store thread deletes the moved blocks DROP_BLOCKS_PER_COMMIT at a
    time, one piece per group commit (a whole move's blocks in one ack-path commit made
    that commit's fsync the half-load p99)."""
    require(Block is not None, "smartpark.fast.lane: %s" % fast.UNAVAILABLE.get("lane"))
    import sqlite3

    from smartpark.hub.store import journal
    from smartpark.hub.store.schema import journal_path

    path = str(tmp_path / "hub.sqlite3")
    per = journal.DROP_BLOCKS_PER_COMMIT

    def in_journal():
        j = sqlite3.connect(journal_path(path))
        try:
            return j.execute("SELECT count(*) FROM blocks").fetchone()[0]
        finally:
            j.close()

    async def main():
        store = SqliteStore(path, move_after=10 ** 9, move_idle=3600)
        await store.start(asyncio.get_running_loop())
        try:
            n_blocks = 2 * per + 5
            sids = await _blocks(store, "drop-1", n_blocks)
            assert await store.count_readings() == 3 + 3 * n_blocks  # all moved
            counts = [in_journal()]
            for k in range(4):  # each later commit (one new block) takes a piece away
                await _block(store, sids, n_blocks + 1 + k)
                counts.append(in_journal())
            return n_blocks, counts
        finally:
            await store.close()

    n_blocks, counts = asyncio.run(main())
    assert counts[0] == n_blocks
    # piece k removes min(per, left) moved blocks and adds one new (unmoved) block
    assert counts[1:] == [n_blocks - per + 1, n_blocks - 2 * per + 2, 3, 4]
    assert in_journal() == 0  # close moved and dropped everything


@pytest.mark.compiled
def test_lane_acks_share_heads_and_count_every_report_of_a_node(tmp_path):
    """Pipeline.ingest(lane_acks=True): a stored lane report's result is (ack head, stored);
    reports of one node in one batch share the head of its config version and firmware, the
    registry counts each of them and keeps the address of the last one."""
    require(Block is not None, "smartpark.fast.lane: %s" % fast.UNAVAILABLE.get("lane"))
    from smartpark.protocol.report import ack_head, decode_ack

    clock = Clock(T0 + 100)

    def pack(node, k):
        return senml_cbor(node, [("temp", 20.0 + k, 0, "Cel"), ("hum", 40.0 + k, 0, "%RH")],
                          bt=T0 + k)

    async def main():
        store, registry, pipe = await _pipeline(str(tmp_path / "hub.sqlite3"), clock, lane=True)
        try:
            first = await pipe.ingest([("10.0.0.1:5683", pack("la-1", 0), 112),
                                       ("10.0.0.2:5683", pack("la-2", 0), 112)])
            assert all(r.code == 0x44 for r in first)  # row path: the series are new
            registry.set_config("la-2", 7, b"\xa1\x68firmware\x651.2.3", 60.0)
            before = registry.nodes["la-1"].reports
            res = await pipe.ingest([("10.0.0.1:5683", pack("la-1", 1), 112),
                                     ("10.0.0.2:5683", pack("la-2", 1), 112),
                                     ("10.0.0.9:5683", pack("la-1", 2), 112),
                                     ("10.0.0.1:5683", pack("la-1", 3), 112)], lane_acks=True)
            return res, registry.nodes["la-1"].reports - before, registry.nodes["la-1"].address
        finally:
            await store.close()

    res, counted, address = asyncio.run(main())
    assert [type(r) for r in res] == [tuple] * 4, res
    assert [r[1] for r in res] == [2, 2, 2, 2]
    now = T0 + 100
    assert res[0][0] == res[2][0] == res[3][0] == ack_head(now, 0, None)
    assert res[1][0] == ack_head(now, 7, "1.2.3")
    ack = decode_ack(res[1][0] + b"\x04\x02\x05\x00")
    assert (ack["config_version"], ack["firmware"], ack["stored"]) == (7, "1.2.3", 2)
    assert counted == 3 and address == "10.0.0.1:5683"
