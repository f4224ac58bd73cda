"""SQLite store: one file, one thread, group commit; "acknowledged means stored".

Scope: every SQLite statement the hub runs happens here, in the store's own
thread. The event loop hands work over through a queue and awaits an asyncio
future that the thread resolves (via call_soon_threadsafe) once the work is
done -- for writes, once the transaction that holds them is committed with
journal_mode=WAL and synchronous=FULL, i.e. fsync'd.

Group commit: the thread takes *every* job waiting in the queue, writes all
pending reports in one transaction, commits once, then resolves all their
futures. Under load a transaction carries hundreds of reports and costs one
fsync; when idle a lone report is committed at once (no timer, no added
latency).

Layout (see hub/README.md for why):
  series(id, node, sensor, unit)          -- small; (node, sensor) unique
  readings(series, t, kind, val, sum)     -- PRIMARY KEY (series, t) WITHOUT ROWID:
      one B-tree that is at the same time the uniqueness check for
      (node, sensor, time), the series/time-range index for the API, and
      the table itself (no second index to maintain). Rows of a group commit
      are inserted sorted by that key, so neighbouring rows share pages.
  inbox(series, t, kind, val, sum)        -- issue 7: a group commit appends its new
      readings here (rowid order: always the last page); `_compact` moves them into
      `readings` in (series, t) order every 100,000 readings, when idle, before any
      query and at close/start, so the cost of a commit no longer grows with the
      size of `readings` (see hub/README.md, "Store change").
  block_moved(done_id, last_id, series, t) -- issue 7: how far the moves of the column
      lane's blocks got. The blocks themselves (fast/lane.pyx: ONE row per group commit
      holding four column blobs) are committed to a journal file beside this one
      (hub.lane.sqlite3) and moved into `readings` by a thread of their own: see
      hub/store/lanejournal.py.
  rollups(series, win, t, count, min, max, mean, p50, p95, p99)
  nodes(id, address, firmware, lt, registered, rd, last_seen, online, interval, first_seen)
  node_configs(node, version, body, created)
"""

import json
import logging
import math
import operator
import os
import queue
import sqlite3
import threading
import time

from . import lanejournal

try:  # issue 7: the column lane's shared MaxT
    from smartpark.fast.lane import MaxT
except ImportError:  # not built: the row path alone, MaxT is a dict
    MaxT = dict

log = logging.getLogger("smartpark.hub.store")

KIND_NUM = 0
KIND_STR = 1
KIND_BOOL = 2
KIND_DATA = 3

# moved blocks / applied last-seen rows deleted from the lane journal per group commit
DROP_BLOCKS_PER_COMMIT = 32
DROP_SEEN_PER_COMMIT = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS series(
    id INTEGER PRIMARY KEY, node TEXT NOT NULL, sensor TEXT NOT NULL, unit TEXT,
    UNIQUE(node, sensor));
CREATE TABLE IF NOT EXISTS readings(
    series INTEGER NOT NULL, t REAL NOT NULL, kind INTEGER NOT NULL, val, sum REAL,
    PRIMARY KEY(series, t)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox(
    series INTEGER NOT NULL, t REAL NOT NULL, kind INTEGER NOT NULL, val, sum REAL);
CREATE TABLE IF NOT EXISTS rollups(
    series INTEGER NOT NULL, win INTEGER NOT NULL, t REAL NOT NULL,
    count INTEGER NOT NULL, min REAL, max REAL, mean REAL, p50 REAL, p95 REAL, p99 REAL,
    PRIMARY KEY(series, win, t)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nodes(
    id TEXT PRIMARY KEY, address TEXT, firmware TEXT, lt REAL, registered REAL,
    rd TEXT, last_seen REAL, online INTEGER, interval REAL, first_seen REAL);
CREATE TABLE IF NOT EXISTS node_configs(
    node TEXT NOT NULL, version INTEGER NOT NULL, body BLOB NOT NULL, created REAL NOT NULL,
    PRIMARY KEY(node, version));
"""

_INSERT = "INSERT OR IGNORE INTO readings(series, t, kind, val, sum) VALUES (?, ?, ?, ?, ?)"
_EXISTS = "SELECT 1 FROM readings WHERE series = ? AND t = ?"
_INBOX = "INSERT INTO inbox(series, t, kind, val, sum) VALUES (?, ?, ?, ?, ?)"
_COMPACT = ("INSERT OR IGNORE INTO readings(series, t, kind, val, sum)"
            " SELECT series, t, kind, val, sum FROM inbox ORDER BY series, t")
_INBOX_KEYS = "SELECT series, t FROM inbox"
_MAX_T = "SELECT max(t) FROM readings WHERE series = ?"
_BY_KEY = operator.itemgetter(0, 1)


class StoreClosed(RuntimeError):
    """The store no longer accepts work (shutting down or closed)."""


class WriteResult:
    """What one report's write did: counts, and the rows that were new."""

    __slots__ = ("stored", "duplicates", "new_rows")

    def __init__(self):
        self.stored = 0
        self.duplicates = 0
        # (series_id, node, sensor, unit, t, kind, val) of rows actually inserted
        self.new_rows = []


class _Write:
    __slots__ = ("rows", "seen", "future")

    def __init__(self, rows, seen, future):
        self.rows = rows
        self.seen = seen
        self.future = future


class _WriteMany:
    """Issue 7: a whole batch of reports (one rows list each, plus the batch's node
    last-seen updates, plus the column lane's block) with ONE future, resolved with one
    (stored, duplicates, new_rows) tuple per rows report, in order -- no object per report."""

    __slots__ = ("reports", "seen", "future", "block")

    def __init__(self, reports, seen, future, block=None):
        self.reports = reports
        self.seen = seen
        self.future = future
        self.block = block


class _Call:
    __slots__ = ("fn", "args", "future")

    def __init__(self, fn, args, future):
        self.fn = fn
        self.args = args
        self.future = future


_STOP = object()


def _resolve_all(pairs):
    for fut, ok, value in pairs:
        if fut.cancelled():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class SqliteStore:
    """The SQLite backend. Create, `await start()`, use, `await close()`."""

    def __init__(self, path, cache_mb=64, on_commit=None, compact_rows=100000, compact_idle=0.5,
                 on_block=None, c_mover=True, move_slice=4096, move_max=400000, memory_mb=None):
        self.path = path
        self.cache_mb = cache_mb
        # SQLite's soft heap limit for the whole process (PRAGMA soft_heap_limit): over it
        # every connection's page cache recycles its least recently used pages instead of
        # growing, so the store's connections together stay near this budget.
        self.memory_mb = memory_mb
        # on_commit(conn, new): runs in the store thread after each group commit with
        # every newly inserted row as (series, t, kind, val, sum), in (series, t) order
        # (used to feed the rollups).
        self.on_commit = on_commit
        # on_block(conn, block): the same for a column-lane block (fast.lane.Block)
        self.on_block = on_block
        self.c_mover = c_mover
        self.move_slice = move_slice
        self.move_max = move_max  # readings per block move (hub/store/lanejournal.py)
        self._lconn = None  # the lane journal (hub/store/lanejournal.py)
        self._drop_upto = 0  # moved blocks up to this id are to leave the journal ...
        self._drop_more = False  # ... and some of them are still there
        self._drop_seen = []  # applied last-seen rows [(node, t)] still in the journal
        self._moves = None  # its BlockMoves
        self._moved_seen = 0  # _moves.done_id when _inbox_keys was last reset
        self._q = queue.SimpleQueue()
        self._thread = None
        self._loop = None
        self._closed = False
        self._series = {}  # (node, sensor) -> (id, unit)
        # series id -> a time >= the largest t stored or being stored (issue 7: skips most
        # duplicate checks); shared with the column lane (fast/lane.pyx), which raises it
        self.maxt = self._max_t = MaxT()
        # issue 7: committed readings not yet moved from `inbox` into `readings`
        self._inbox_n = 0  # readings in `inbox`
        # their (series id, t) keys, read from `inbox` only when a commit first needs them
        # (a reading at or below its series' largest time); None until then
        self._inbox_keys = None
        self.compact_rows = compact_rows
        self.compact_idle = compact_idle
        self.compactions = 0
        self.compact_seconds = 0.0
        self.commits = 0
        self.committed_reports = 0
        self.last_batch = 0
        self.commit_seconds = 0.0

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self, loop):
        self._loop = loop
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        ready = loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="sqlite-store",
                                        daemon=True)
        self._thread.start()
        await ready

    async def close(self):
        """Finish everything queued, then close the database. Idempotent."""
        if self._thread is None:
            return
        self._closed = True
        done = self._loop.create_future()
        self._q.put((_STOP, done))
        await done
        self._thread.join(timeout=10)
        self._thread = None

    @property
    def queue_depth(self):
        return self._q.qsize()

    @property
    def series_index(self):
        """(node, sensor) -> (store series id, unit): read-only for other threads."""
        return self._series

    @property
    def mover_off(self):
        return self._moves.off if self._moves is not None else "not started"

    @property
    def move_steps(self):
        return self._moves.steps if self._moves is not None else 0

    @property
    def block_moves(self):
        return self._moves.moves if self._moves is not None else 0

    @property
    def block_move_seconds(self):
        return self._moves.seconds if self._moves is not None else 0.0

    @property
    def blocks_pending(self):
        """Lane readings committed to the journal, not yet in `readings`."""
        return self._moves.pending if self._moves is not None else 0

    # ---- API for the event loop ---------------------------------------------------------

    def write(self, rows, seen):
        """Queue a report's rows; return a future resolved with a WriteResult after commit.

        rows: list of (node, sensor, unit, t, kind, val, sum)
        seen: list of (node, address, time) -- node registry last-seen updates
        """
        if self._closed:
            raise StoreClosed("store is closing")
        fut = self._loop.create_future()
        self._q.put(_Write(rows, seen, fut))
        return fut

    def write_many(self, reports, seen, block=None):
        """Queue a batch of reports [rows, ...] (rows as in `write`) with the batch's
        last-seen updates `seen` [(node, address, time), ...]; return ONE future resolved with
        [(stored, duplicates, new_rows), ...] (same order; new_rows as in WriteResult) after
        the group commit that holds them all, or with the commit's exception (then none of
        them was stored). `block`: the column lane's readings of the same batch
        (fast.lane.Block), committed in the same transaction, before the rows."""
        if self._closed:
            raise StoreClosed("store is closing")
        fut = self._loop.create_future()
        self._q.put(_WriteMany(reports, seen, fut, block))
        return fut

    def call(self, fn, *args):
        """Run fn(conn, *args) in the store thread; returns an awaitable future. Every
        committed reading is in `readings` when it runs, unless fn is marked
        `leaves_readings` (it touches no raw readings)."""
        if self._closed:
            raise StoreClosed("store is closing")
        fut = self._loop.create_future()
        self._q.put(_Call(fn, args, fut))
        return fut

    # ---- the thread ---------------------------------------------------------------------

    def _open(self):
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA cache_size=%d" % (-1024 * int(self.cache_mb)))
        if self.memory_mb:
            conn.execute("PRAGMA soft_heap_limit=%d" % (int(self.memory_mb) << 20))
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.executescript(_SCHEMA)
        for sid, node, sensor, unit in conn.execute("SELECT id, node, sensor, unit FROM series"):
            self._series[(node, sensor)] = (sid, unit)
        self._lconn = lanejournal.open_journal(self.path)
        self._moves = lanejournal.BlockMoves(self.path, self.cache_mb, self.move_slice,
                                             self.compact_rows, self.compact_idle, self.c_mover,
                                             max_move=self.move_max)
        self._moves.open()
        self._inbox_n = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
        # readings acknowledged before a crash, not yet moved (and last-seen updates)
        self._moves.flush()
        self._compact_inbox(conn)
        self._moves.start()
        return conn

    def _compact(self, conn):
        """Everything committed into `readings`: the lane journal's blocks (the mover
        thread, waited for) and the inbox. Before queries that read raw readings, at
        start and at close."""
        t0 = time.perf_counter()
        self._moves.flush()
        self.compact_seconds += time.perf_counter() - t0
        self._compact_inbox(conn)
        self._inbox_keys = None

    def _compact_inbox(self, conn):
        """Move the inbox into `readings` in (series, t) order, in one transaction.

        Issue 7: a group commit appends the row path's new readings to `inbox` (a
        rowid table: every insert lands on the last page), which keeps the cost of a
        commit independent of the size of `readings`. Here, every `compact_rows`
        readings, when the store is idle for `compact_idle` s, before any query and at
        close, SQLite moves them in key order, so each series' leaf page takes many rows
        at once instead of one per commit. The primary key of `readings` is still what
        makes a reading unique; `_inbox_keys` lets the duplicate check see the inbox
        and the lane journal. That key set is built lazily: a commit whose readings are
        all newer than their series' largest time (the common case) never hashes a key.
        """
        if not self._inbox_n:
            return
        t0 = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_COMPACT)
            conn.execute("DELETE FROM inbox")
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.rollback()
            raise
        self._inbox_n = 0
        self._inbox_keys = None
        self.compactions += 1
        self.compact_seconds += time.perf_counter() - t0

    def _inbox_key_set(self, cur):
        """(series id, t) of every committed reading that may not be in `readings` yet:
        the inbox and every block still in the lane journal."""
        self._moved_seen = self._moves.done_id
        keys = set(cur.execute(_INBOX_KEYS))
        for _bid, b in lanejournal.read_blocks(self._lconn):
            keys.update(zip(b.series, b.time, strict=True))
        return keys

    def _run(self, ready):
        loop = self._loop
        try:
            conn = self._open()
        except Exception as e:  # noqa: BLE001 - reported to the starter
            loop.call_soon_threadsafe(_resolve_all, [(ready, False, e)])
            return
        loop.call_soon_threadsafe(_resolve_all, [(ready, True, None)])
        stop = None
        while stop is None:
            if self._inbox_n:
                try:
                    jobs = [self._q.get(timeout=self.compact_idle)]
                except queue.Empty:
                    self._quietly(self._compact_inbox, conn)
                    continue
            else:
                jobs = [self._q.get()]
            while True:
                try:
                    jobs.append(self._q.get_nowait())
                except queue.Empty:
                    break
            writes = []  # rows of every report in this group commit
            blocks = []  # the column lane's blocks of this group commit
            seen = []  # node last-seen updates of all of them
            owners = []  # (job, index of its first report in `writes`)
            calls = []
            for j in jobs:
                if isinstance(j, _WriteMany):
                    owners.append((j, len(writes)))
                    writes.extend(j.reports)
                    seen.extend(j.seen)
                    if j.block is not None:
                        blocks.append(j.block)
                elif isinstance(j, _Write):
                    owners.append((j, len(writes)))
                    writes.append(j.rows)
                    seen.extend(j.seen)
                elif isinstance(j, _Call):
                    calls.append(j)
                else:
                    stop = j
            done = []
            if writes or blocks or seen:
                err, results = self._group_commit(conn, writes, seen, blocks)
                for job, start in owners:
                    if err is not None:
                        done.append((job.future, False, err))
                    elif isinstance(job, _WriteMany):
                        done.append((job.future, True,
                                     results[start:start + len(job.reports)]))
                    else:
                        res = WriteResult()
                        res.stored, res.duplicates, res.new_rows = results[start]
                        done.append((job.future, True, res))
            if (self._inbox_n or self._moves.behind()) and (stop is not None or any(
                    getattr(c.fn, "reads_readings", True) for c in calls)):
                if done:  # acks first: they do not wait for the move
                    loop.call_soon_threadsafe(_resolve_all, done)
                    done = []
                self._compact_quietly(conn)  # every query sees every committed reading
            for c in calls:
                try:
                    done.append((c.future, True, c.fn(conn, *c.args)))
                except Exception as e:  # noqa: BLE001 - handed to the awaiting caller
                    if conn.in_transaction:
                        conn.rollback()
                    done.append((c.future, False, e))
            if done:
                loop.call_soon_threadsafe(_resolve_all, done)
            if self._inbox_n >= self.compact_rows:
                self._quietly(self._compact_inbox, conn)
        # drain anything that raced in after the stop marker
        late = []
        while True:
            try:
                j = self._q.get_nowait()
            except queue.Empty:
                break
            if isinstance(j, (_Write, _Call, _WriteMany)) and j.future is not None:
                late.append((j.future, False, StoreClosed("store closed")))
        try:
            self._moves.stop()  # every lane block into readings, then its thread ends
        except sqlite3.Error:  # the journal keeps them: moved at the next start
            log.exception("moving lane blocks at close failed")
        self._lconn.close()
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        conn.close()
        late.append((stop[1], True, None))
        loop.call_soon_threadsafe(_resolve_all, late)

    def _compact_quietly(self, conn):
        self._quietly(self._compact, conn)

    def _quietly(self, fn, conn):
        try:
            fn(conn)
        except sqlite3.Error:  # disk full or similar: inbox and blocks stay, retried later
            log.exception("compaction failed")

    def _series_id(self, conn, node, sensor, unit):
        key = (node, sensor)
        hit = self._series.get(key)
        if hit is not None:
            sid, old_unit = hit
            if unit is not None and unit != old_unit:
                conn.execute("UPDATE series SET unit = ? WHERE id = ?", (unit, sid))
                self._series[key] = (sid, unit)
            return sid
        cur = conn.execute("INSERT INTO series(node, sensor, unit) VALUES (?, ?, ?)",
                           (node, sensor, unit))
        sid = cur.lastrowid
        self._series[key] = (sid, unit)
        return sid

    def _journal_commit(self, blocks, seen):
        """The lane's blocks and the node last-seen updates, one journal transaction.
        Returns (readings in the blocks, id of the last block)."""
        lconn = self._lconn
        n = 0
        last_id = 0
        last = {}
        for node, address, seen_at in seen:
            prev = last.get(node)
            if prev is None or seen_at >= prev[1]:
                last[node] = (address, seen_at)
        # What the mover put into the database leaves the journal, a bounded piece per
        # commit: deleting a whole move's blocks (~1,250 at half load) in one ack-path
        # commit took 4 ms and made its fsync 12 ms (the p99 at half load).
        upto, dropped_seen = self._moves.take_drops()
        if upto > self._drop_upto:
            self._drop_upto = upto
            self._drop_more = True
        self._drop_seen.extend(dropped_seen)
        seen_now = self._drop_seen[:DROP_SEEN_PER_COMMIT]
        if not blocks and not last and not self._drop_more and not seen_now:
            return 0, 0
        more = self._drop_more
        try:
            lconn.execute("BEGIN IMMEDIATE")
            if self._drop_more:
                more = lconn.execute(lanejournal.DROP_SOME, (
                    self._drop_upto, DROP_BLOCKS_PER_COMMIT)).rowcount == DROP_BLOCKS_PER_COMMIT
            lanejournal.drop(lconn, 0, seen_now, in_transaction=True)
            for b in blocks:
                last_id = lconn.execute(lanejournal.INSERT_BLOCK, (
                    len(b), b.series.tobytes(), b.time.tobytes(), b.kind.tobytes(),
                    b.value.tobytes())).lastrowid
                n += len(b)
            if last:
                lconn.executemany(lanejournal.INSERT_SEEN, [
                    (node, address, seen_at) for node, (address, seen_at) in last.items()])
            lconn.execute("COMMIT")
        except sqlite3.Error:
            if lconn.in_transaction:
                lconn.rollback()
            raise  # the drops stay due: the next commit tries them again
        self._drop_more = more
        del self._drop_seen[:len(seen_now)]
        return n, last_id

    def _group_commit(self, conn, writes, seen, blocks=()):
        """Commit the column lane's `blocks` and the node last-seen updates `seen`
        [(node, address, time), ...] to the lane journal, then every report of `writes`
        [rows, ...] to the database (two transactions; the acks wait for both). A block's
        readings are new by construction (fast/lane.pyx: each is newer than anything its
        series has stored or being stored), so they need no check; the rows are checked
        against them like against the inbox. Returns
        (None, [(stored, duplicates, new_rows) per report]) or (exception, None): then
        nothing of them was stored."""
        t0 = time.perf_counter()
        try:
            # the lane journal first: the blocks and every last-seen update, one commit
            n_block, last_block = self._journal_commit(blocks, seen)
            if self._inbox_keys is not None and self._moves.done_id != self._moved_seen:
                self._inbox_keys = None  # moved blocks left the journal: rebuild when needed
            if n_block and self._inbox_keys is not None:
                for b in blocks:
                    self._inbox_keys.update(zip(b.series, b.time, strict=True))
            if writes:  # a lane-only batch does not touch the database (the mover's lock)
                conn.execute("BEGIN IMMEDIATE")
            # Issue 7: per-row execute() + rowcount cost ~20 us a row. Instead, decide in
            # Python which rows are new and insert them with one executemany. A reading is
            # new for sure when its time is above the largest time stored for its series
            # (self._max_t, loaded lazily and only ever raised after a commit); only readings
            # at or below it (retransmitted outboxes) are looked up. The primary key stays
            # the guarantee (INSERT OR IGNORE), so exactly-once holds as before.
            series = self._series
            maxt = self._max_t
            inbox = self._inbox_keys
            flat = []
            add = flat.append
            for wi, w in enumerate(writes):
                for j, row in enumerate(w):
                    hit = series.get((row[0], row[1]))
                    unit = row[2]
                    if hit is None or (unit is not None and unit != hit[1]):
                        sid = self._series_id(conn, row[0], row[1], unit)
                    else:
                        sid = hit[0]
                    add((sid, row[3], wi, j, row))
            # (series, t), then report and record order: the earlier report keeps a reading
            # sent twice. (wi, j) is unique, so the row tuples themselves are never compared.
            flat.sort()
            cur = conn.cursor()
            new = []
            # per report: counts and new rows, in lists indexed like `writes`
            n = len(writes)
            stored = [0] * n
            dups = [0] * n
            per = [[] for _ in range(n)]
            top = {}
            prev_sid = prev_t = None
            for sid, t, wi, _j, row in flat:
                if t == prev_t and sid == prev_sid:  # the same reading twice in this commit
                    dups[wi] += 1
                    continue
                prev_sid, prev_t = sid, t
                m = maxt.get(sid)
                if m is None:
                    m = cur.execute(_MAX_T, (sid,)).fetchone()[0]
                    m = maxt[sid] = -math.inf if m is None else m
                if t <= m:
                    if inbox is None and (self._inbox_n or n_block or
                                          self._moves.pending):
                        inbox = self._inbox_keys = self._inbox_key_set(cur)
                    if ((inbox is not None and (sid, t) in inbox) or
                            cur.execute(_EXISTS, (sid, t)).fetchone() is not None):
                        dups[wi] += 1
                        continue
                kind = row[4]
                val = row[5]
                new.append((sid, t, kind, val, row[6]))
                stored[wi] += 1
                r = (sid, row[0], row[1], row[2], t, kind, val)
                per[wi].append(r)
                top[sid] = t  # sorted by (series, t): the last one is the largest
            if new:
                cur.executemany(_INBOX, new)
            if writes:
                conn.execute("COMMIT")
            for sid, t in top.items():
                if t > maxt[sid]:
                    maxt[sid] = t
            self._inbox_n += len(new)
            if n_block or seen:
                self._moves.committed(last_block, n_block, bool(seen))
            if inbox is not None:
                inbox.update(map(_BY_KEY, new))
            results = list(zip(stored, dups, per, strict=True))
        except Exception as e:  # noqa: BLE001 - every waiting report learns of the failure
            if conn.in_transaction:
                conn.rollback()
            self._inbox_keys = None  # it may hold keys of the rolled-back blocks
            self._series.clear()
            for sid, node, sensor, unit in conn.execute("SELECT id, node, sensor, unit FROM series"):
                self._series[(node, sensor)] = (sid, unit)
            return e, None
        self.commits += 1
        self.committed_reports += len(writes)
        self.last_batch = len(writes)
        self.commit_seconds += time.perf_counter() - t0
        if self.on_block is not None:
            for b in blocks:
                try:
                    self.on_block(conn, b)
                except Exception:  # noqa: BLE001 - rollups must not undo an acknowledged commit
                    log.exception("rollups failed on a committed block")
        if self.on_commit is not None and new:
            try:
                self.on_commit(conn, new)
            except Exception:  # noqa: BLE001 - rollups must not undo an acknowledged commit
                import traceback

                traceback.print_exc()
        return None, results


# ---- queries: functions run in the store thread via store.call(fn, ...) ---------------------


def leaves_readings(fn):
    """Mark a store function that needs no pending readings in `readings`: `store.call`
    runs it without first moving the inbox and blocks into `readings` (issue 7: node
    and config writes during load no longer wait for a whole compaction). Such a function
    touches no raw readings, or (retention) deletes old ones where they are: what is
    still pending is pruned at the next pass."""
    fn.reads_readings = False
    return fn


def q_load_state(conn):
    """Everything the hub keeps in memory, read at start-up."""
    series = [tuple(r) for r in conn.execute("SELECT id, node, sensor, unit FROM series")]
    latest = {}
    for sid, _node, _sensor, _unit in series:
        row = conn.execute(
            "SELECT t, kind, val FROM readings WHERE series = ? ORDER BY t DESC LIMIT 1", (sid,)
        ).fetchone()
        if row is not None:
            latest[sid] = tuple(row)
    nodes = [
        dict(zip(("id", "address", "firmware", "lt", "registered", "rd", "last_seen", "online",
                  "interval", "first_seen"), r, strict=False))
        for r in conn.execute(
            "SELECT id, address, firmware, lt, registered, rd, last_seen, online, interval,"
            " first_seen FROM nodes")
    ]
    configs = {}
    for node, version, body in conn.execute(
            "SELECT node, version, body FROM node_configs c WHERE version ="
            " (SELECT max(version) FROM node_configs d WHERE d.node = c.node)"):
        configs[node] = (version, bytes(body))
    return {"series": series, "latest": latest, "nodes": nodes, "configs": configs}


def q_raw(conn, sid, t0, t1, limit):
    return [tuple(r) for r in conn.execute(
        "SELECT t, kind, val FROM readings WHERE series = ? AND t >= ? AND t < ? ORDER BY t LIMIT ?",
        (sid, t0, t1, limit))]


@leaves_readings
def q_rollups(conn, sid, win, t0, t1, limit):
    return [tuple(r) for r in conn.execute(
        "SELECT t, count, min, max, mean, p50, p95, p99 FROM rollups"
        " WHERE series = ? AND win = ? AND t >= ? AND t < ? ORDER BY t LIMIT ?",
        (sid, win, t0, t1, limit))]


def q_count_readings(conn, sid=None):
    if sid is None:
        return conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    return conn.execute("SELECT count(*) FROM readings WHERE series = ?", (sid,)).fetchone()[0]


@leaves_readings
def q_upsert_rollups(conn, rows):
    """rows: (series, win, t, count, min, max, mean, p50, p95, p99); replaces buckets."""
    if not rows:
        return 0
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT OR REPLACE INTO rollups(series, win, t, count, min, max, mean, p50, p95, p99)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")
    return len(rows)


def q_readings_between(conn, sid, t0, t1):
    """Numeric/bool readings of one series in [t0, t1), for rebuilding a rollup bucket."""
    return [tuple(r) for r in conn.execute(
        "SELECT t, val FROM readings WHERE series = ? AND t >= ? AND t < ? AND kind IN (?, ?)"
        " ORDER BY t", (sid, t0, t1, KIND_NUM, KIND_BOOL))]


@leaves_readings
def q_rollup_exists(conn, sid, win, t):
    return conn.execute("SELECT 1 FROM rollups WHERE series = ? AND win = ? AND t = ?",
                        (sid, win, t)).fetchone() is not None


@leaves_readings
def q_upsert_nodes(conn, nodes):
    """nodes: dicts with id and any of the nodes columns (missing columns are left alone),
    all in one transaction -- one fsync: the liveness check may turn hundreds of nodes
    offline in one pass, and the store thread is on the ack path."""
    conn.execute("BEGIN IMMEDIATE")  # a failure is rolled back by the store thread
    for node in nodes:
        cols = [k for k in ("address", "firmware", "lt", "registered", "rd", "last_seen",
                            "online", "interval", "first_seen") if k in node]
        values = [node[k] for k in cols]
        if isinstance(node.get("rd"), (dict, list)):
            values[cols.index("rd")] = json.dumps(node["rd"])
        sets = ", ".join("%s = excluded.%s" % (c, c) for c in cols) or "id = id"
        conn.execute(
            "INSERT INTO nodes(id%s) VALUES (?%s) ON CONFLICT(id) DO UPDATE SET %s"
            % ("".join(", " + c for c in cols), ", ?" * len(cols), sets),
            [node["id"]] + values)
    conn.execute("COMMIT")


@leaves_readings
def q_put_config(conn, node, body, now):
    conn.execute("BEGIN IMMEDIATE")
    row = conn.execute("SELECT max(version) FROM node_configs WHERE node = ?", (node,)).fetchone()
    version = (row[0] or 0) + 1
    conn.execute("INSERT INTO node_configs(node, version, body, created) VALUES (?, ?, ?, ?)",
                 (node, version, body, now))
    conn.execute("COMMIT")
    return version


@leaves_readings  # one retention pass used to force ~(series / 100) whole block moves
def q_prune(conn, cutoff, after_sid=0, batch=100):
    """Delete raw readings older than `cutoff` for up to `batch` series with id > after_sid.

    Returns (rows removed, last series id handled or None when done). The hub's
    retention task calls this repeatedly so that ingest commits interleave.
    """
    sids = [r[0] for r in conn.execute(
        "SELECT id FROM series WHERE id > ? ORDER BY id LIMIT ?", (after_sid, batch))]
    if not sids:
        return 0, None
    removed = 0
    conn.execute("BEGIN IMMEDIATE")
    for sid in sids:
        removed += conn.execute("DELETE FROM readings WHERE series = ? AND t < ?",
                                (sid, cutoff)).rowcount
    conn.execute("COMMIT")
    return removed, sids[-1]


def stored_readings(path, node=None):
    """[(node, sensor, t, kind, val)] of every committed reading in the hub database at
    `path`: `readings`, the `inbox` and the blocks of the lane journal beside it (all are
    durable, i.e. acknowledged), read-only, while the hub runs or after. A reading stored
    twice shows as two rows. [] while the hub has not made its tables yet."""
    blocks = []
    jpath = lanejournal.journal_path(path)
    if os.path.exists(jpath):  # the journal first: a move that ends meanwhile is then
        j = sqlite3.connect("file:%s?mode=ro" % jpath, uri=True, timeout=10)  # in readings
        try:
            blocks = lanejournal.read_blocks(j)
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):
                raise
        finally:
            j.close()
    c = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
    try:
        c.execute("BEGIN")  # one read transaction: a compaction meanwhile is not seen half done
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "readings" not in tables or "series" not in tables:
            return []
        names = {sid: (nd, sensor) for sid, nd, sensor in
                 c.execute("SELECT id, node, sensor FROM series")}
        raw = c.execute("SELECT series, t, kind, val FROM readings").fetchall()
        if "inbox" in tables:
            raw += c.execute("SELECT series, t, kind, val FROM inbox").fetchall()
        mark = lanejournal.read_mark(c)  # what the moves put into readings already
        for bid, b in blocks:
            raw.extend(r for r in b.rows() if not lanejournal.moved(mark, bid, r[0], r[1]))
        out = []
        for sid, t, kind, val in raw:
            nd, sensor = names.get(sid, (None, None))
            if node is None or nd == node:
                out.append((nd, sensor, t, kind, val))
        return out
    finally:
        c.close()


def finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
