"""SQLite store: one database, one journal, one store thread, group commit.

Scope: the `Store` boundary of hub/interfaces.py on SQLite. Every method hands
its work to the store thread through a queue and returns an asyncio future
that the thread resolves (via call_soon_threadsafe) once the work is done --
for writes, once the journal transaction holding them is committed (WAL,
synchronous=FULL: fsync'd). "Acknowledged means stored."

Group commit: the thread takes *every* job waiting in the queue, writes all
pending batches in one journal transaction, then resolves all their futures.
Under load a commit carries hundreds of reports and costs one fsync; when idle
a lone report is committed at once (no timer, no added latency).

A batch is the column lane's readings (one block, new by construction) plus
the row path's reports as rows (node, sensor, unit, t, kind, val, sum, est). A row
path reading is new when its time is above its series' newest time
(`NewestTime`, shared with the lane; loaded lazily, only ever raised); only
the others -- resends, mostly -- are looked up, in the journal and in
`readings`. New readings go to the journal (hub/store/journal.py); its mover
brings them into `readings`. A raw-series query reads `readings` and the journal's unmoved
readings of that series together (no move forced: polling a chart does not
slow ingest); the few queries that read every raw reading (start-up state,
counts) first wait for the move, so they see every acknowledged reading.

Disk space: with a `DiskGuard` (store/disk.py) a group commit is refused with
`DiskFull` while free space is below the reserve; the journal's clean-up of
moved readings goes on meanwhile (`housekeeping`), so what is held reaches
`readings` and its room is reused once ingest resumes.

Modules: schema.py (layout, migrations), queries.py (the SQL), journal.py
(the holding area and its mover), this file (the thread and the methods).
"""

import logging
import queue
import sqlite3
import threading
import time

from smartpark.fast import NewestTime, mover

from ..faults import from_sqlite_error
from ..interfaces import StoreClosed
from . import damage, journal, queries, schema
from .disk import DiskFull

log = logging.getLogger("smartpark.hub.store")


class _Batch:
    """Reports of one ingest batch (rows lists), their last-seen updates and the lane's
    block, with ONE future: resolved with [(stored, duplicates, new_rows)] per report."""

    __slots__ = ("reports", "seen", "block", "future")

    def __init__(self, reports, seen, block, future):
        self.reports = reports
        self.seen = seen
        self.block = block
        self.future = future


class _Query:
    """fn(conn, *args) in the store thread; `raw`: it reads raw readings (moved first)."""

    __slots__ = ("fn", "args", "raw", "future")

    def __init__(self, fn, args, raw, future):
        self.fn = fn
        self.args = args
        self.raw = raw
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
    """The SQLite backend. Create, `await start(loop)`, use, `await close()`.

    rollups: an optional rollup feeder (hub/rollups.py's RollupFeeder) fed in the store
    thread with every newly stored reading; the buckets it closes are written here.
    """

    def __init__(self, path, cache_mb=64, memory_mb=None, rollups=None, c_mover=True,
                 move_slice=4096, move_after=100000, move_idle=0.5, move_max=400000,
                 disk=None, check_seconds=None):
        self.path = path
        # the time bound of the integrity check at start (store/damage.py); None: no check
        self.check_seconds = check_seconds
        self.damage = None  # what the check found and saved, after start
        self.disk = disk  # store/disk.py's DiskGuard, or None (no reserve kept)
        self.cache_mb = cache_mb
        self.memory_mb = memory_mb  # SQLite's soft heap limit for the whole process
        self.rollups = rollups
        self._mover = journal.Mover(path, cache_mb, move_slice, move_after, move_idle,
                                    c_mover, max_move=move_max)
        self._q = queue.SimpleQueue()
        self._thread = None
        self._loop = None
        self._closed = False
        self._lconn = None
        self._series = {}  # (node, sensor) -> (id, unit)
        # a dict does the same where fast/lane.pyx is not built (no lane then)
        self._newest = NewestTime() if NewestTime is not None else {}
        # (series id, t) of readings in the journal, built when a commit first needs it (a
        # row path reading at or below its series' newest time); None until then
        self._pending_keys = None
        self._keys_mark = None  # the mover's mark when _pending_keys was built
        self._next_row = 1  # id of the journal's next row
        self.commits = 0
        self.committed_reports = 0
        self.last_batch = 0
        self.commit_seconds = 0.0

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self, loop):
        self._loop = loop
        ready = loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="sqlite-store",
                                        daemon=True)
        self._thread.start()
        try:
            await ready
        except BaseException:
            self._thread.join(timeout=10)  # it ended: close() has nothing to stop
            self._thread = None
            raise

    async def close(self):
        """Finish everything queued, move the journal into the database, close. Idempotent."""
        if self._thread is None:
            return
        self._closed = True
        done = self._loop.create_future()
        self._q.put((_STOP, done))
        await done
        self._thread.join(timeout=10)
        self._thread = None

    # ---- state other threads may read ---------------------------------------------------

    @property
    def queue_depth(self):
        return self._q.qsize()

    @property
    def refusing(self):
        """True while new readings are refused for want of disk space."""
        return self.disk is not None and self.disk.refusing

    @property
    def pending_readings(self):
        """Readings committed to the journal, not yet moved into `readings`."""
        return self._mover.pending

    @property
    def series_index(self):
        """(node, sensor) -> (store series id, unit): read-only for other threads."""
        return self._series

    @property
    def newest(self):
        """Per store series id, a time at or above the newest reading stored or being
        stored (fast.NewestTime): the column lane reads and raises it."""
        return self._newest

    def stats(self):
        """Counters for /metrics: name -> number."""
        m = self._mover
        return {
            "commits": self.commits, "committed_reports": self.committed_reports,
            "last_batch": self.last_batch, "commit_seconds": self.commit_seconds,
            "moves": m.moves, "move_steps": m.steps, "move_seconds": m.seconds,
            "pending_readings": m.pending, "damaged_blocks": m.damaged,
        }

    @property
    def mover_off(self):
        """Why journal blocks move through Python's sqlite3 (None: through fast/mover.pyx)."""
        return self._mover.off

    @staticmethod
    def sqlite_memory():
        """Bytes SQLite has allocated in this process (None when fast/mover.pyx, which
        reads it from the library, is not in use)."""
        return mover.memory() if mover is not None else None

    # ---- writes -------------------------------------------------------------------------

    def write_many(self, reports, seen, block=None):
        """Queue a batch: `reports` [rows, ...] (rows: (node, sensor, unit, t, kind, val, sum
        [, est]) as hub/codec.py makes them; est 1: a time the node estimated, else None),
        `seen` [(node, address, time)] last-seen updates, `block` the column lane's readings
        (fast.lane.Block) or None. Returns ONE future resolved after the commit that holds
        them with [(stored, duplicates, new_rows), ...] in report order (new_rows:
        (series id, node, sensor, unit, t, kind, val) of each reading stored), or with the
        commit's exception (then nothing of the batch was stored)."""
        if self._closed:
            raise StoreClosed("store is closing")
        fut = self._loop.create_future()
        self._q.put(_Batch(reports, seen, block, fut))
        return fut

    # ---- queries (each returns a future) ------------------------------------------------

    def load_state(self):
        """{series, latest, nodes, configs}: what the hub keeps in memory, at start-up."""
        return self._query(queries.load_state, raw=True)

    def raw(self, sid, t0, t1, limit):
        """[(t, kind, val, est)] of series `sid` in [t0, t1), oldest first: `readings` and
        the journal's readings of that series not moved yet (no move is forced). est: 1 for
        a time the node estimated, else None."""
        return self._query(self._raw, sid, t0, t1, limit)

    def housekeeping(self):
        """Check free space now and, while ingest is refused, delete what the mover has
        moved from the journal (its pages are reused) and checkpoint the journal's WAL;
        -> True while refusing. The hub calls it about once a second."""
        return self._query(self._housekeeping)

    def rollup_buckets(self, sid, win, t0, t1, limit):
        """[(t, count, min, max, mean, p50, p95, p99)] of one series and window (seconds)."""
        return self._query(queries.rollups, sid, win, t0, t1, limit)

    def count_readings(self, sid=None):
        return self._query(queries.count_readings, sid, raw=True)

    def sum_at(self, sid, t):
        """The stored sum of reading (sid, t), None when it has none."""
        return self._query(queries.sum_at, sid, t, raw=True)

    def upsert_nodes(self, nodes):
        """Write node rows (dicts with id and any node columns) in one transaction."""
        return self._query(queries.upsert_nodes, nodes)

    def put_config(self, node, make_body, now):
        """Store the node's next config version, body = make_body(version); -> version."""
        return self._query(queries.put_config, node, make_body, now)

    def prune(self, cutoff, after_sid=0, batch=100):
        """Delete raw readings older than `cutoff` for up to `batch` series after
        `after_sid`; -> (removed, last series id or None when done). What the journal still
        holds is pruned at the next pass."""
        return self._query(queries.prune, cutoff, after_sid, batch)

    def replay_rollups(self):
        """Feed the rollups the raw readings of every bucket that may still be open (after a
        restart); -> readings fed."""
        return self._query(self._replay_rollups, raw=True)

    def advance_rollups(self, watermark):
        """Close the rollup buckets of idle series up to `watermark`; -> buckets written."""
        return self._query(self._advance_rollups, watermark)

    def _query(self, fn, *args, raw=False):
        if self._closed:
            raise StoreClosed("store is closing")
        fut = self._loop.create_future()
        self._q.put(_Query(fn, args, raw, fut))
        return fut

    # ---- the thread ---------------------------------------------------------------------

    def _open(self):
        if self.check_seconds is not None:
            self.damage = damage.check_and_recover(self.path, self.check_seconds)
        conn = schema.open_database(self.path, self.cache_mb, self.memory_mb)
        for sid, node, sensor, unit in queries.series(conn):
            self._series[(node, sensor)] = (sid, unit)
        self._lconn = schema.open_journal(self.path)
        self._mover.open()
        self._next_row = self._mover.committed_row + 1  # journal row ids only ever grow
        self._mover.flush()  # readings acknowledged before a crash, not yet moved
        self._mover.start()
        return conn

    def _raw(self, conn, sid, t0, t1, limit):
        """`readings` and the journal's unmoved readings of one series (see raw())."""
        jrows, blocks = journal.series_pending(self._lconn, sid, t0, t1)
        conn.execute("BEGIN")  # the marks and `readings` of one moment (a move may end)
        try:
            out = queries.raw(conn, sid, t0, t1, limit)
            mark, rows_done = journal.read_marks(conn)
        finally:
            conn.execute("COMMIT")
        extra = [(t, k, v, est) for rid, t, k, v, est in jrows if rid > rows_done]
        extra.extend((t, k, v, None) for bid, t, k, v in blocks
                     if not journal.moved(mark, bid, sid, t))
        if not extra:
            return out
        out.extend(extra)
        out.sort(key=lambda r: r[0])
        return out[:limit]

    def _housekeeping(self, conn):
        if self.disk is None or not self.disk.check(force=True):
            return False
        upto, rows, seen = self._mover.take_drops()
        if upto or rows or seen:
            try:
                _n, _b, _r, more = journal.commit(self._lconn, [], [], {}, (upto, rows, seen))
                if more:
                    self._mover.give_back(upto, rows)
            except Exception:  # noqa: BLE001 - no room even for a delete: next time
                self._mover.give_back(upto, rows)
                return True
        try:
            self._lconn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception:  # noqa: BLE001 - busy (the mover reads): the next round
            pass
        return True

    def _run(self, ready):
        loop = self._loop
        try:
            try:
                conn = self._open()
            except sqlite3.Error as e:  # one line naming the file, an exit code of its own
                raise from_sqlite_error(e, self.path) from None
        except Exception as e:  # noqa: BLE001 - reported to the starter
            loop.call_soon_threadsafe(_resolve_all, [(ready, False, e)])
            return
        loop.call_soon_threadsafe(_resolve_all, [(ready, True, None)])
        stop = None
        while stop is None:
            jobs = [self._q.get()]
            while True:
                try:
                    jobs.append(self._q.get_nowait())
                except queue.Empty:
                    break
            batches = [j for j in jobs if isinstance(j, _Batch)]
            asked = [j for j in jobs if isinstance(j, _Query)]
            stop = next((j for j in jobs if isinstance(j, tuple)), None)
            done = self._commit(conn, batches) if batches else []
            if asked:
                if any(q.raw for q in asked) and self._mover.behind():
                    loop.call_soon_threadsafe(_resolve_all, done)  # acks do not wait
                    done = []
                    self._flush_quietly()
                done.extend(self._answer(conn, asked))
            if done:
                loop.call_soon_threadsafe(_resolve_all, done)
        self._shut(conn, stop[1])

    def _answer(self, conn, asked):
        out = []
        for q in asked:
            try:
                out.append((q.future, True, q.fn(conn, *q.args)))
            except Exception as e:  # noqa: BLE001 - handed to the awaiting caller
                if conn.in_transaction:
                    conn.rollback()
                out.append((q.future, False, e))
        return out

    def _flush_quietly(self):
        try:
            self._mover.flush()
        except Exception as e:  # noqa: BLE001 - the readings stay in the journal; the query
            log.error("moving journal readings before a query failed: %s", e)  # sees less

    def _shut(self, conn, stopped):
        late = []  # anything that raced in after the stop marker
        while True:
            try:
                j = self._q.get_nowait()
            except queue.Empty:
                break
            if isinstance(j, (_Batch, _Query)):
                late.append((j.future, False, StoreClosed("store closed")))
        try:
            self._mover.stop()  # everything into the database, then its thread ends
        except Exception as e:  # noqa: BLE001 - the journal keeps them: moved at the next start
            log.error("moving journal readings at close failed (%s: %s); they stay in the"
                      " journal %s and move at the next start", type(e).__name__, e,
                      schema.journal_path(self.path))
        self._lconn.close()
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        conn.close()
        late.append((stopped, True, None))
        self._loop.call_soon_threadsafe(_resolve_all, late)

    # ---- group commit -------------------------------------------------------------------

    def _commit(self, conn, batches):
        """One group commit of `batches`; returns the (future, ok, value) triples."""
        writes = []
        blocks = []
        seen = {}  # node -> (address, t): the latest of each node
        for b in batches:
            writes.extend(b.reports)
            if b.block is not None:
                blocks.append(b.block)
            for node, address, t in b.seen:
                prev = seen.get(node)
                if prev is None or t >= prev[1]:
                    seen[node] = (address, t)
        t0 = time.perf_counter()
        if self.disk is not None and self.disk.check():
            self._housekeeping(conn)
            e = DiskFull("%s bytes free on %s, below the reserve of %s bytes"
                         % (self.disk.free, self.disk.path, self.disk.reserve))
            return [(b.future, False, e) for b in batches]
        try:
            new, results = self._store(conn, writes, blocks, seen)
        except Exception as e:  # noqa: BLE001 - every waiting report learns of the failure
            if self.disk is not None and "full" in str(e):
                self.disk.check(force=True)  # the reserve was too small for this burst
            self._pending_keys = None  # it may hold keys of the rolled-back readings
            self._series.clear()
            for sid, node, sensor, unit in queries.series(conn):
                self._series[(node, sensor)] = (sid, unit)
            return [(b.future, False, e) for b in batches]
        self.commits += 1
        self.committed_reports += len(writes)
        self.last_batch = len(writes)
        self.commit_seconds += time.perf_counter() - t0
        self._feed_rollups(conn, new, blocks)
        out = []
        start = 0
        for b in batches:
            out.append((b.future, True, results[start:start + len(b.reports)]))
            start += len(b.reports)
        return out

    def _store(self, conn, writes, blocks, seen):
        """The journal commit of a group: the lane's `blocks`, the row path's new readings
        of `writes` and the last-seen updates. Returns (new readings as (series, t, kind,
        val, sum, journal id) in (series, t) order, [(stored, duplicates, new_rows)] per
        report)."""
        flat = self._with_series(conn, writes)
        if self._pending_keys is not None:
            if self._keys_mark != self._mover.mark:
                self._pending_keys = None  # moved readings left the journal: rebuilt if needed
            else:
                _add_block_keys(self._pending_keys, blocks)
        new, results, top = self._new_readings(conn, flat, len(writes), blocks)
        drop_blocks, drop_rows, drop_seen = self._mover.take_drops()
        n_block, last_block, last_row, more = journal.commit(
            self._lconn, blocks, new, seen, (drop_blocks, drop_rows, drop_seen))
        self._next_row += len(new)
        if more:
            self._mover.give_back(drop_blocks, drop_rows)
        newest = self._newest
        for sid, t in top.items():
            if t > newest[sid]:
                newest[sid] = t
        if n_block or new or seen:
            self._mover.committed(last_block, last_row, n_block + len(new), bool(seen))
        if self._pending_keys is not None:
            self._pending_keys.update((r[0], r[1]) for r in new)
        return new, results

    def _with_series(self, conn, writes):
        """[(series id, t, report index, record index, row)] of every row, sorted. New
        series (and unit changes) are written in one database transaction, begun at the
        first one: most commits need none."""
        series = self._series
        flat = []
        add = flat.append
        try:
            for wi, w in enumerate(writes):
                for j, row in enumerate(w):
                    hit = series.get((row[0], row[1]))
                    if hit is None or (row[2] is not None and row[2] != hit[1]):
                        if not conn.in_transaction:
                            conn.execute("BEGIN IMMEDIATE")
                        sid = self._series_id(conn, row[0], row[1], row[2])
                    else:
                        sid = hit[0]
                    add((sid, row[3], wi, j, row))
            if conn.in_transaction:
                conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        # (series, t), then report and record order: the earlier report keeps a reading
        # sent twice. (wi, j) is unique, so the row tuples themselves are never compared.
        flat.sort()
        return flat

    def _series_id(self, conn, node, sensor, unit):
        key = (node, sensor)
        hit = self._series.get(key)
        if hit is not None:
            sid, old_unit = hit
            if unit is not None and unit != old_unit:
                conn.execute(queries.UPDATE_UNIT, (unit, sid))
                self._series[key] = (sid, unit)
            return sid
        sid = conn.execute(queries.INSERT_SERIES, (node, sensor, unit)).lastrowid
        self._series[key] = (sid, unit)
        return sid

    def _new_readings(self, conn, flat, n, blocks):
        """Which sorted rows are new: (new, results, {series: newest new t}); `new` as
        journal rows (series, t, kind, val, sum, id, est), ids from self._next_row on."""
        newest = self._newest
        stored = [0] * n
        dups = [0] * n
        per = [[] for _ in range(n)]
        new = []
        top = {}
        prev_sid = prev_t = None
        rid = self._next_row
        for sid, t, wi, _j, row in flat:
            if t == prev_t and sid == prev_sid:  # the same reading twice in this commit
                dups[wi] += 1
                continue
            prev_sid, prev_t = sid, t
            m = newest.get(sid)
            if m is None:
                m = newest[sid] = queries.max_t(conn, sid)
            if t <= m and self._is_stored(conn, sid, t, blocks):
                dups[wi] += 1
                continue
            kind, val = row[4], row[5]
            # est (1 or None) may be left out by a caller with only measured readings
            new.append((sid, t, kind, val, row[6], rid, row[7] if len(row) > 7 else None))
            rid += 1
            stored[wi] += 1
            per[wi].append((sid, row[0], row[1], row[2], t, kind, val))
            top[sid] = t  # sorted by (series, t): the last one is the largest
        return new, list(zip(stored, dups, per, strict=True)), top

    def _is_stored(self, conn, sid, t, blocks):
        """Reading (sid, t) is in the journal, in `readings` or in `blocks`, the lane's
        readings of this very commit (not in the journal yet)."""
        keys = self._pending_keys
        if keys is None and (blocks or self._mover.pending):
            self._keys_mark = self._mover.mark
            keys = self._pending_keys = journal.pending_keys(self._lconn)
            _add_block_keys(keys, blocks)
        if keys is not None and (sid, t) in keys:
            return True
        return conn.execute(queries.EXISTS, (sid, t)).fetchone() is not None

    # ---- rollups (store thread) ---------------------------------------------------------

    def _feed_rollups(self, conn, new, blocks):
        if self.rollups is None or not (new or blocks):
            return
        try:
            for b in blocks:
                self.rollups.add_block(b)
            if new:
                self.rollups.add_rows(new)
            queries.upsert_rollups(conn, self.rollups.closed_rows())
        except Exception:  # noqa: BLE001 - rollups must not undo an acknowledged commit
            log.exception("rollups failed on a committed batch")

    def _advance_rollups(self, conn, watermark):
        if self.rollups is None:
            return 0
        self.rollups.advance(watermark)
        return queries.upsert_rollups(conn, self.rollups.closed_rows())

    def _replay_rollups(self, conn):
        if self.rollups is None:
            return 0
        fed = 0
        for sid, _node, _sensor, _unit in queries.series(conn):
            start = self.rollups.replay_start(queries.max_t(conn, sid))
            if start is None:
                continue
            for t, val in queries.numeric_since(conn, sid, start):
                self.rollups.add(sid, t, float(val))
                fed += 1
        queries.upsert_rollups(conn, self.rollups.closed_rows())
        return fed


def _add_block_keys(keys, blocks):
    """The (series id, t) keys of the lane's `blocks` into the key set `keys`."""
    for b in blocks:
        keys.update(zip(b.series, b.time, strict=True))


def stored_readings(path, node=None):
    """[(node, sensor, t, kind, val)] of every acknowledged reading of the hub database at
    `path` -- `readings` and the journal's rows and blocks not moved yet -- read-only,
    while the hub runs or after. A reading stored twice shows as two rows. [] while the
    hub has not made its tables yet. For tests and inspection tools."""
    import os
    import sqlite3

    jrows, blocks = [], []
    jpath = schema.journal_path(path)
    if os.path.exists(jpath):  # the journal first: a move that ends meanwhile is then
        j = sqlite3.connect("file:%s?mode=ro" % jpath, uri=True, timeout=10)  # in readings
        try:
            j.execute("BEGIN")
            jrows = j.execute("SELECT id, series, t, kind, val FROM rows").fetchall()
            blocks = journal.read_blocks(j)
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):
                raise
        finally:
            j.close()
    c = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
    try:
        c.execute("BEGIN")  # one read transaction: a move meanwhile is not seen half done
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "readings" not in tables or "series" not in tables:
            return []
        names = {sid: (nd, sensor) for sid, nd, sensor in
                 c.execute("SELECT id, node, sensor FROM series")}
        raw = c.execute("SELECT series, t, kind, val FROM readings").fetchall()
        mark, rows_done = journal.read_marks(c)
        raw.extend(r[1:] for r in jrows if r[0] > rows_done)
        for bid, b in blocks:
            raw.extend(r for r in b.rows() if not journal.moved(mark, bid, r[0], r[1]))
        return [names.get(sid, (None, None)) + (t, kind, val) for sid, t, kind, val in raw
                if node is None or names.get(sid, (None,))[0] == node]
    finally:
        c.close()
