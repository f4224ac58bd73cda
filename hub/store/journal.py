"""The journal: where every acknowledged reading waits until it is in `readings`.

One holding area, a file beside the database (hub.journal.sqlite3, WAL,
synchronous=FULL; layout in hub/store/schema.py). Each group commit writes, in
ONE journal transaction: the column lane's readings as one `blocks` row (four
column blobs), the row path's new readings as `rows` rows, and the batch's
node last-seen updates (`seen`). That commit is what makes the readings
"stored" and lets their acks go out; the database itself is not touched.

`Mover` moves them into the database in a thread of its own: the rows, then
the blocks (through fast/mover.pyx, SQLite's C API with the GIL released, when
it is usable, else through Python's sqlite3), then `seen` into `nodes`. A move
sorts its readings by (series, t): the rows in one SQL statement (the journal
attached), the blocks in slices of `slice_rows` of their sorted order, each
transaction recording how far it got (`rows_moved`, `block_moved`); so other
writers of the database wait for one slice at most (or one rows move, which
is small beside the lane), readers of the raw tables skip what the marks
cover, and a crash
anywhere in between only means the move runs again (INSERT OR IGNORE: the
primary key of `readings` stays the exactly-once guarantee). Because the
journal is another file, a move holds the database's write lock, never the
journal's: acks never wait for a move.

Threads: the store thread is the journal's only writer (it commits, and in its
next commit deletes what the mover reports as moved: `take_drops`) and asks
for `flush()` before any query that reads raw readings; the mover thread owns
the connections opened in `open()` and only reads the journal.
"""

import array
import logging
import os
import threading
import time

from smartpark.fast import BlockMover, kinds

from . import queries, schema

log = logging.getLogger("smartpark.hub.store")

INSERT_BLOCK = "INSERT INTO blocks(n, series, t, kind, val) VALUES (?, ?, ?, ?, ?)"
INSERT_ROW = "INSERT INTO rows(series, t, kind, val, sum, id, est) VALUES (?, ?, ?, ?, ?, ?, ?)"
INSERT_SEEN = ("INSERT INTO seen(node, address, t) VALUES (?, ?, ?) ON CONFLICT(node) DO UPDATE"
               " SET address = excluded.address, t = excluded.t WHERE excluded.t >= seen.t")
NODE_SEEN = (
    "INSERT INTO nodes(id, address, last_seen, first_seen, online) VALUES (?, ?, ?, ?, 1) "
    "ON CONFLICT(id) DO UPDATE SET address = excluded.address, "
    "last_seen = max(coalesce(last_seen, 0), excluded.last_seen)"
)
_MOVE_ROWS = ("INSERT OR IGNORE INTO main.readings(series, t, kind, val, sum, est)"
              " SELECT series, t, kind, val, sum, est FROM j.rows WHERE id > ? AND id <= ?"
              " ORDER BY series, t")
_COUNT_ROWS = "SELECT count(*) FROM j.rows WHERE id > ? AND id <= ?"
_BLOCKS_MARK = ("INSERT OR REPLACE INTO block_moved(k, done_id, last_id, series, t)"
                " VALUES (1, ?, ?, -1, 0.0)")
_ROWS_MARK = "INSERT OR REPLACE INTO rows_moved(k, done_id) VALUES (1, ?)"
NO_MARK = (0, 0, -1, 0.0)

# moved blocks / rows deleted from the journal per group commit (the ack path): bounded
DROP_BLOCKS_PER_COMMIT = 32
DROP_ROWS_PER_COMMIT = 4096
_DROP_BLOCKS = ("DELETE FROM blocks WHERE id IN"
                " (SELECT id FROM blocks WHERE id <= ? ORDER BY id LIMIT ?)")
_DROP_ROWS = "DELETE FROM rows WHERE id IN (SELECT id FROM rows WHERE id <= ? ORDER BY id LIMIT ?)"


class Cols:
    """A block read back from the journal: the columns fast.lane.Block has."""

    __slots__ = ("series", "time", "kind", "value", "n")

    def __init__(self, series, t, kind, val):
        self.series = array.array("i")
        self.series.frombytes(series)
        self.time = array.array("d")
        self.time.frombytes(t)
        self.kind = array.array("B")
        self.kind.frombytes(kind)
        self.value = array.array("d")
        self.value.frombytes(val)
        self.n = len(self.series)
        if not (self.n == len(self.time) == len(self.kind) == len(self.value)):
            raise ValueError("journal block columns differ in length")

    def __len__(self):
        return self.n

    def rows(self):
        """(series, t, kind, val) per reading, as `readings` holds them."""
        return [(sid, t, kinds.BOOL, 1 if v else 0) if k == kinds.BOOL else (sid, t, k, v)
                for sid, t, k, v in zip(self.series, self.time, self.kind, self.value,
                                        strict=True)]


def read_blocks(lconn, after_id=0, upto_id=None, damaged=None):
    """[(id, Cols)] of the journal's blocks with after_id < id (<= upto_id), in id order. A
    damaged block is skipped with an error line (and its row appended to `damaged`)."""
    if upto_id is None:
        upto_id = 1 << 62
    out = []
    for bid, n, s, t, k, v in lconn.execute("SELECT id, n, series, t, kind, val FROM blocks"
                                            " WHERE id > ? AND id <= ? ORDER BY id",
                                            (after_id, upto_id)):
        try:
            out.append((bid, Cols(s, t, k, v)))
        except (ValueError, TypeError) as e:  # not written by this hub: skipped, said once
            log.error("journal block %d is damaged (%s); skipped", bid, e)
            if damaged is not None:
                damaged.append((bid, n, s, t, k, v))
    return out


def read_columns(lconn, after_id, upto_id, damaged=None):
    """The blocks with after_id < id <= upto_id as one set of columns, joined in id order:
    (readings in them, by the blocks' own count; bytes of int32 series ids, float64 times,
    uint8 kinds, float64 values). A damaged block (columns of unequal length, not bytes) is
    skipped with an error line, like read_blocks does (its row appended to `damaged`)."""
    ss, ts, ks, vs = [], [], [], []
    n = 0
    for bid, cnt, s, t, k, v in lconn.execute(
            "SELECT id, n, series, t, kind, val FROM blocks WHERE id > ? AND id <= ?"
            " ORDER BY id", (after_id, upto_id)):
        n += cnt
        m = len(k) if isinstance(k, bytes) else -1
        if not (m >= 0 and isinstance(s, bytes) and isinstance(t, bytes) and isinstance(v, bytes)
                and len(s) == 4 * m and len(t) == 8 * m and len(v) == 8 * m):
            log.error("journal block %d is damaged (columns of %s bytes); skipped", bid,
                      [len(x) if isinstance(x, bytes) else type(x).__name__
                       for x in (s, t, k, v)])
            if damaged is not None:
                damaged.append((bid, cnt, s, t, k, v))
            continue
        ss.append(s)
        ts.append(t)
        ks.append(k)
        vs.append(v)
    return n, (b"".join(ss), b"".join(ts), b"".join(ks), b"".join(vs))


def pending_keys(lconn):
    """{(series id, t)} of every reading in the journal (moved or not: a moved one is in
    `readings` too, so the set only ever answers "stored" rightly)."""
    keys = set(lconn.execute("SELECT series, t FROM rows"))
    for _bid, b in read_blocks(lconn):
        keys.update(zip(b.series, b.time, strict=True))
    return keys


def series_pending(lconn, sid, t0, t1):
    """The journal's readings of series `sid` with t0 <= t < t1, moved or not (the caller
    sorts that out with the marks): ([(row id, t, kind, val, est)], [(block id, t, kind, val)]).
    Only blocks holding the series are decoded (a scan of their series column first)."""
    rows = [tuple(r) for r in lconn.execute(
        "SELECT id, t, kind, val, est FROM rows WHERE series = ? AND t >= ? AND t < ?",
        (sid, t0, t1))]
    out = []
    probe = array.array("i", [sid]).tobytes()
    hits = []
    for bid, s in lconn.execute("SELECT id, series FROM blocks"):
        if not isinstance(s, bytes) or probe not in s:
            continue
        ids = array.array("i")
        ids.frombytes(s[:len(s) - len(s) % 4])
        if sid in ids:
            hits.append(bid)
    for bid in hits:
        for _bid, b in read_blocks(lconn, bid - 1, bid):
            for rsid, t, k, v in b.rows():
                if rsid == sid and t0 <= t < t1:
                    out.append((bid, t, k, v))
    return rows, out


def commit(lconn, blocks, rows, seen, drops):
    """One journal transaction: `drops` (blocks up to, rows up to, [(node, t)] of `seen`:
    what the mover has moved, each bounded per commit), the lane's `blocks`, the row path's
    new `rows` [(series, t, kind, val, sum, id, est)] (ids ever increasing) and the last-seen
    updates `seen` {node: (address, t)}. Returns (readings in blocks, last block
    id or 0, last row id or 0, whether moved blocks or rows are still left to drop)."""
    drop_blocks, drop_rows, drop_seen = drops
    n = last_block = last_row = 0
    more = False
    lconn.execute("BEGIN IMMEDIATE")
    try:
        if drop_blocks:
            more = lconn.execute(_DROP_BLOCKS, (drop_blocks, DROP_BLOCKS_PER_COMMIT)
                                 ).rowcount == DROP_BLOCKS_PER_COMMIT
        if drop_rows:
            more = lconn.execute(_DROP_ROWS, (drop_rows, DROP_ROWS_PER_COMMIT)
                                 ).rowcount == DROP_ROWS_PER_COMMIT or more
        if drop_seen:
            lconn.executemany("DELETE FROM seen WHERE node = ? AND t <= ?", drop_seen)
        for b in blocks:
            last_block = lconn.execute(INSERT_BLOCK, (
                len(b), b.series.tobytes(), b.time.tobytes(), b.kind.tobytes(),
                b.value.tobytes())).lastrowid
            n += len(b)
        if rows:
            lconn.executemany(INSERT_ROW, rows)
            last_row = rows[-1][5]  # ids were given in the order of the rows
        if seen:
            lconn.executemany(INSERT_SEEN, [(node, address, t)
                                            for node, (address, t) in seen.items()])
        lconn.execute("COMMIT")
    except BaseException:
        if lconn.in_transaction:
            lconn.rollback()
        raise
    return n, last_block, last_row, more


def read_marks(conn):
    """((done_id, last_id, series, t) of block moves, done_id of row moves) from the
    database; NO_MARK / 0 when nothing was moved yet."""
    try:
        row = conn.execute("SELECT done_id, last_id, series, t FROM block_moved").fetchone()
        rows_row = conn.execute("SELECT done_id FROM rows_moved").fetchone()
    except Exception as e:  # noqa: BLE001 - a database older than the tables: nothing moved
        if "no such table" not in str(e):
            raise
        return NO_MARK, 0
    return (tuple(row) if row is not None else NO_MARK), (rows_row[0] if rows_row else 0)


def moved(mark, bid, sid, t):
    """True when reading (sid, t) of journal block `bid` is in `readings` already."""
    return bid <= mark[0] or (bid <= mark[1] and (sid, t) <= (mark[2], mark[3]))


class Mover:
    """Moves the journal's readings into `readings` (a thread of its own; see the module)."""

    def __init__(self, path, cache_mb=64, slice_rows=4096, move_after=100000, idle=0.5,
                 c_mover=True, max_move=400000, nice=10):
        self.path = path
        # at most this many readings per move: bounds the mover's memory (~75 B a reading)
        # when it runs behind; the next move follows at once
        self.max_move = max(1, max_move)
        # the mover is background work: the event loop and the store thread (the acks) go
        # first when the CPU is short (Linux per-thread niceness; 0 leaves it as it is)
        self.nice = nice
        self.cache_mb = cache_mb
        self.slice_rows = slice_rows
        self.move_after = move_after  # readings pending that start a move at once
        self.idle = idle  # else a move starts after this long without commits
        self.c_mover = c_mover and BlockMover is not None
        self.off = None  # why blocks move through Python's sqlite3, when they do
        self.cv = threading.Condition()
        self.committed_id = 0  # the last block the store committed
        self.done_id = 0  # every block up to here is in `readings`
        self.committed_row = 0  # the last row the store committed
        self.rows_done = 0  # every row up to here is in `readings`
        self.pending = 0  # readings committed, not moved
        self.seen_dirty = True  # `seen` may hold updates not applied to `nodes`
        # what the journal may drop, deleted by the journal's writer (the store thread) in
        # its next commit: no second writer, no lock the acks would wait for
        self.drop_upto = 0
        self.drop_rows = 0
        self.drop_seen = []
        self.flush_req = False  # a flush() waits: move now
        self.stopping = False
        self.error = None
        self.failures = 0  # failed moves in a row
        self.damaged = 0  # journal blocks found damaged and set aside (damaged_blocks)
        self.last_commit = time.monotonic()
        self.moves = 0
        self.steps = 0
        self.seconds = 0.0
        self._thread = None
        self._conn = self._lconn = self._mover = None

    # ---- store thread -------------------------------------------------------------------

    def open(self):
        """Connections, the marks and what is pending (call before start())."""
        self._lconn = schema.open_journal(self.path)
        self._conn = schema.connect(self.path, self.cache_mb)
        self._conn.execute("ATTACH DATABASE ? AS j", (schema.journal_path(self.path),))
        if self.c_mover:
            try:
                self._mover = BlockMover(self.path, self.cache_mb)
            except Exception as e:  # noqa: BLE001 - the Python path does the same
                self.off = str(e)
        else:
            self.off = "fast/mover.pyx not built" if BlockMover is None else "off"
        if self.off:
            log.info("journal blocks move through Python's sqlite3: %s", self.off)
        mark, self.rows_done = read_marks(self._conn)
        self.damaged = self._conn.execute("SELECT count(*) FROM damaged_blocks").fetchone()[0]
        self.done_id = mark[0]
        blocks = self._lconn.execute("SELECT max(id), coalesce(sum(n), 0) FROM blocks"
                                     " WHERE id > ?", (self.done_id,)).fetchone()
        rows = self._lconn.execute("SELECT max(id), count(*) FROM rows WHERE id > ?",
                                   (self.rows_done,)).fetchone()
        self.committed_id = max(blocks[0] or 0, self.done_id)
        self.committed_row = max(rows[0] or 0, self.rows_done)
        self.pending = blocks[1] + rows[1]

    def start(self):
        self._thread = threading.Thread(target=self._run, name="sqlite-mover", daemon=True)
        self._thread.start()

    def committed(self, last_block, last_row, n, seen=False):
        """The store committed blocks up to `last_block` and rows up to `last_row` (0: none)
        holding `n` readings (and, with `seen`, last-seen updates)."""
        with self.cv:
            self.committed_id = max(self.committed_id, last_block)
            self.committed_row = max(self.committed_row, last_row)
            self.pending += n
            self.seen_dirty = self.seen_dirty or seen
            self.last_commit = time.monotonic()
            if self.pending >= self.move_after or self.flush_req:
                self.cv.notify_all()

    def behind(self):
        """True while something committed (readings or last-seen rows) is not in the
        database yet."""
        with self.cv:
            return self._behind()

    def _behind(self):
        return (self.done_id < self.committed_id or self.rows_done < self.committed_row
                or self.seen_dirty)

    @property
    def mark(self):
        """(done block id, done row id): what the moves got past; changes when one ends."""
        return self.done_id, self.rows_done

    def flush(self, timeout=600.0):
        """Return once everything committed so far is in the database (before a query)."""
        if self._thread is None:  # start-up and shutdown: in the caller's thread
            while self._behind():
                self._move_once()
            self._drop_now()  # nobody else writes the journal now
            return
        started = time.monotonic()
        deadline = started + timeout
        with self.cv:
            target, target_row = self.committed_id, self.committed_row
            while self.done_id < target or self.rows_done < target_row or self.seen_dirty:
                self.flush_req = True
                self.cv.notify_all()
                if self.error is not None and time.monotonic() - started > 5.0:
                    # still failing after the mover's retries: the query fails, not hangs
                    raise RuntimeError("moving journal readings failed: %s" % self.error)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("moving journal readings took over %.0f s" % timeout)
                self.cv.wait(min(left, 1.0))

    def take_drops(self):
        """(blocks up to this id, rows up to this id, [(node, t)] of `seen`) that are in the
        database now and may leave the journal; the caller deletes them in its own journal
        transaction (a bounded piece each time: what it leaves, it gives back)."""
        with self.cv:
            out = (self.drop_upto, self.drop_rows, self.drop_seen)
            self.drop_upto, self.drop_rows, self.drop_seen = 0, 0, []
        return out

    def give_back(self, blocks_upto, rows_upto):
        """Moved blocks/rows the caller's bounded drop left in the journal: next time."""
        with self.cv:
            self.drop_upto = max(self.drop_upto, blocks_upto)
            self.drop_rows = max(self.drop_rows, rows_upto)

    def _drop_now(self):
        upto, rows, seen = self.take_drops()
        if not (upto or rows or seen):
            return
        lconn = self._lconn

        def drop():
            if upto:
                lconn.execute("DELETE FROM blocks WHERE id <= ?", (upto,))
            if rows:
                lconn.execute("DELETE FROM rows WHERE id <= ?", (rows,))
            if seen:
                lconn.executemany("DELETE FROM seen WHERE node = ? AND t <= ?", seen)
        queries.with_transaction(lconn, drop)

    def stop(self):
        """Move everything, stop the thread, close the connections."""
        if self._thread is not None:
            with self.cv:
                self.stopping = True
                self.cv.notify_all()
            self._thread.join(timeout=600)
            self._thread = None
        try:
            self.flush()
        finally:
            if self._mover is not None:
                self._mover.close()
            for c in (self._conn, self._lconn):
                if c is not None:
                    try:
                        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    except Exception:  # noqa: BLE001 - closing anyway
                        pass
                    c.close()
            self._conn = self._lconn = self._mover = None

    # ---- mover thread -------------------------------------------------------------------

    def _due(self):
        if not self._behind():
            return False
        return (self.flush_req or self.pending >= self.move_after
                or time.monotonic() - self.last_commit >= self.idle)

    def _run(self):
        if self.nice:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except (AttributeError, OSError):  # not Linux: the mover runs at normal priority
                pass
        while True:
            with self.cv:
                while not self.stopping and not self._due():
                    self.cv.wait(self.idle)
                if self.stopping:
                    return
            try:
                self._move_once()
                if self.error is not None:
                    log.warning("moving journal readings works again (%d failed tries)",
                                self.failures)
                self.error = None
                self.failures = 0
            except Exception as e:  # noqa: BLE001 - disk full or similar: the readings stay
                # in the journal (durable) and the next round retries; said once, not per try
                if self.error is None or str(e) != str(self.error):
                    log.error("moving journal readings failed: %s: %s; the readings stay in"
                              " the journal, retrying every second", type(e).__name__, e)
                self.error = e
                self.failures += 1
                time.sleep(1.0)

    def _move_once(self):
        """Move the rows and blocks committed so far (at most max_move readings of each,
        in slices), then `seen`."""
        t0 = time.perf_counter()
        with self.cv:
            self.flush_req = False
            upto, rows_upto = self.committed_id, self.committed_row
        rows_upto = min(rows_upto, self.rows_done + self.max_move)
        n_rows = self._move_rows(rows_upto)
        upto = self._move_limit(upto)
        last_id, n = upto, 0
        if upto > self.done_id:
            damaged = []
            if self._mover is not None:
                n, cols = read_columns(self._lconn, self.done_id, upto, damaged)
                self._set_aside(damaged)
                move = self._mover.start_columns(*cols, self.done_id, upto)
                while not move.step(self.slice_rows):
                    self.steps += 1
                self.steps += 1
            else:
                blocks = read_blocks(self._lconn, self.done_id, upto, damaged)
                self._set_aside(damaged)
                n = sum(len(b) for _bid, b in blocks)
                self._move_blocks_python(blocks, last_id)
        applied = self._move_seen()
        with self.cv:
            self.drop_upto = max(self.drop_upto, last_id)
            self.drop_rows = max(self.drop_rows, rows_upto)
            self.drop_seen.extend(applied)
            self.done_id = max(self.done_id, last_id)
            self.rows_done = max(self.rows_done, rows_upto)
            self.pending = max(0, self.pending - n - n_rows)
            self.moves += 1
            self.seconds += time.perf_counter() - t0
            self.cv.notify_all()

    def _set_aside(self, damaged):
        """Damaged journal blocks into the database's `damaged_blocks`, as they were (before
        the move that skips them, and so before the journal drops them): counted, kept for
        inspection, never silently lost."""
        if not damaged:
            return
        conn = self._conn
        now = time.time()
        queries.with_transaction(conn, lambda: conn.executemany(
            "INSERT OR IGNORE INTO damaged_blocks(id, n, series, t, kind, val, found)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)", [row + (now,) for row in damaged]))
        self.damaged = conn.execute("SELECT count(*) FROM damaged_blocks").fetchone()[0]

    def _move_limit(self, upto):
        """The last block id up to `upto` whose move stays within max_move readings (at
        least one block)."""
        if self.pending <= self.max_move:
            return upto
        total = 0
        for bid, n in self._lconn.execute("SELECT id, n FROM blocks WHERE id > ? AND id <= ?"
                                          " ORDER BY id", (self.done_id, upto)):
            total += n
            if total >= self.max_move:
                return bid
        return upto

    def _move_rows(self, upto):
        """The journal's rows up to id `upto` into `readings` in one transaction, inside
        SQLite (the journal is attached to the mover's connection), sorted by (series, t)
        and committed with the rows mark. One statement for the whole move, not slices: a
        series' rows of many commits then land on its leaf page together (slices of a few
        thousand ids touched every series' page once a slice, ~6x the CPU). The row path
        is the uncommon one beside the lane, and its moves are bounded by max_move.
        Returns the rows moved."""
        done = self.rows_done
        if upto <= done:
            return 0
        conn = self._conn

        def insert():
            conn.execute(_MOVE_ROWS, (done, upto))
            conn.execute(_ROWS_MARK, (upto,))
            return conn.execute(_COUNT_ROWS, (done, upto)).fetchone()[0]
        # deferred: the write lock is the database's alone, the journal is only read
        moved_n = queries.with_transaction(conn, insert, begin="BEGIN")
        self.steps += 1
        return moved_n

    def _move_blocks_python(self, blocks, last_id):
        flat = []
        for _bid, b in blocks:
            flat.extend(b.rows())
        flat.sort()
        conn = self._conn

        def insert():
            conn.executemany("INSERT OR IGNORE INTO readings(series, t, kind, val, sum)"
                             " VALUES (?, ?, ?, ?, NULL)", flat)
            conn.execute(_BLOCKS_MARK, (last_id, last_id))
        queries.with_transaction(conn, insert)

    def _move_seen(self):
        with self.cv:
            self.seen_dirty = False
        rows = self._lconn.execute("SELECT node, address, t FROM seen").fetchall()
        if not rows:
            return []
        conn = self._conn
        queries.with_transaction(conn, lambda: conn.executemany(
            NODE_SEEN, [(node, a, t, t) for node, a, t in rows]))
        return [(node, t) for node, _a, t in rows]
