"""The column lane's journal: blocks committed beside the hub database, moved into
`readings` by a thread of its own.

Scope (issue 7): the column lane (fast/lane.pyx) hands the store one block of
readings per batch (four columns). The store commits them as one row of the
`blocks` table of a journal file next to the database (`hub.lane.sqlite3`
beside `hub.sqlite3`, WAL, synchronous=FULL): that commit is what makes the
readings "stored" and lets their acks go out. Node last-seen updates of the
same group commit go to the journal's `seen` table in the same transaction.

`BlockMoves` moves the blocks into `readings` (and `seen` into `nodes`) in its
own thread, through fast/blockstore.pyx (SQLite's C API, GIL released) when it
is usable, else through Python's sqlite3. Because the journal is another file,
a move holds the database's write lock, never the journal's: acks do not wait
for moves. A move sorts all pending readings by (series, t) and inserts them in
slices of `slice_rows`, one transaction each, so the row path's commits (the
database) wait for one slice at most. Every slice records in `block_moved`
(same transaction) how far it got; readers of the raw tables skip what that
mark covers, and the journal rows are deleted after the last slice. A crash
anywhere in between only means the move runs again (INSERT OR IGNORE: the
primary key of `readings` stays the guarantee).

Threads: the store thread commits blocks (its own journal connection), is the
journal's only writer while the mover runs (it also deletes what the mover
moved, in its next commit: `take_drops`), and asks for `flush()` before any
query that reads raw readings; the mover thread owns the connections opened in
`open()` and only reads the journal.
"""

import array
import logging
import os
import sqlite3
import threading
import time

try:
    from smartpark.fast.blockstore import BlockMover
except ImportError:  # not built (or no libsqlite3.so.0): blocks move through sqlite3
    BlockMover = None

log = logging.getLogger("smartpark.hub.store")

KIND_NUM = 0  # the stored kinds of hub/store/sqlite.py
KIND_BOOL = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks(
    id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, series BLOB NOT NULL,
    t BLOB NOT NULL, kind BLOB NOT NULL, val BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS seen(node TEXT PRIMARY KEY, address TEXT, t REAL NOT NULL);
"""
# in the hub database: how far the moves got (see fast/blockstore.pyx, Move)
MAIN_SCHEMA = """
CREATE TABLE IF NOT EXISTS block_moved(
    k INTEGER PRIMARY KEY CHECK (k = 1), done_id INTEGER NOT NULL, last_id INTEGER NOT NULL,
    series INTEGER NOT NULL, t REAL NOT NULL);
"""
INSERT_BLOCK = "INSERT INTO blocks(n, series, t, kind, val) VALUES (?, ?, ?, ?, ?)"
INSERT_SEEN = ("INSERT INTO seen(node, address, t) VALUES (?, ?, ?) ON CONFLICT(node) DO UPDATE"
               " SET address = excluded.address, t = excluded.t WHERE excluded.t >= seen.t")
NODE_SEEN = (
    "INSERT INTO nodes(id, address, last_seen, first_seen, online) VALUES (?, ?, ?, ?, 1) "
    "ON CONFLICT(id) DO UPDATE SET address = excluded.address, "
    "last_seen = max(coalesce(last_seen, 0), excluded.last_seen)"
)
_MARK = ("INSERT OR REPLACE INTO block_moved(k, done_id, last_id, series, t)"
         " VALUES (1, ?, ?, -1, 0.0)")
NO_MARK = (0, 0, -1, 0.0)


def journal_path(path):
    """hub.sqlite3 -> hub.lane.sqlite3 (never "-journal": SQLite's own suffix)."""
    root, _ext = os.path.splitext(path)
    return root + ".lane.sqlite3"


def connect(path, cache_mb=None):
    # one thread at a time: the store thread at start and close, the mover thread between
    conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    if cache_mb:
        conn.execute("PRAGMA cache_size=%d" % (-1024 * int(cache_mb)))
    return conn


def open_journal(path):
    conn = connect(journal_path(path))
    conn.executescript(SCHEMA)
    return conn


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
        """(series, t, stored kind, val) per reading, as `readings` holds them."""
        return [(sid, t, KIND_BOOL, 1 if v else 0) if k else (sid, t, KIND_NUM, v)
                for sid, t, k, v in zip(self.series, self.time, self.kind, self.value,
                                        strict=True)]


def read_blocks(lconn, after_id=0, upto_id=None):
    """[(id, Cols)] of the journal's blocks with after_id < id (<= upto_id), in id order."""
    if upto_id is None:
        rows = lconn.execute("SELECT id, series, t, kind, val FROM blocks WHERE id > ?"
                             " ORDER BY id", (after_id,)).fetchall()
    else:
        rows = lconn.execute("SELECT id, series, t, kind, val FROM blocks WHERE id > ? AND"
                             " id <= ? ORDER BY id", (after_id, upto_id)).fetchall()
    out = []
    for bid, s, t, k, v in rows:
        try:
            out.append((bid, Cols(s, t, k, v)))
        except (ValueError, TypeError) as e:  # not written by this hub: skipped, said once
            log.error("lane journal block %d is damaged (%s); skipped", bid, e)
    return out


# the oldest `limit` moved blocks (id <= ?) -- the store thread's bounded piece per commit
DROP_SOME = ("DELETE FROM blocks WHERE id IN"
             " (SELECT id FROM blocks WHERE id <= ? ORDER BY id LIMIT ?)")


def read_columns(lconn, after_id, upto_id):
    """The blocks with after_id < id <= upto_id as one set of columns, joined in id order:
    (readings in them, by the blocks' own count; bytes of int32 series ids, float64 times,
    uint8 kinds, float64 values). A damaged block (columns of unequal length, not bytes) is
    skipped with an error line, like read_blocks does."""
    ss, ts, ks, vs = [], [], [], []
    n = 0
    for bid, cnt, s, t, k, v in lconn.execute(
            "SELECT id, n, series, t, kind, val FROM blocks WHERE id > ? AND id <= ?"
            " ORDER BY id", (after_id, upto_id)):
        n += cnt
        m = len(k) if isinstance(k, bytes) else -1
        if not (m >= 0 and isinstance(s, bytes) and isinstance(t, bytes) and isinstance(v, bytes)
                and len(s) == 4 * m and len(t) == 8 * m and len(v) == 8 * m):
            log.error("lane journal block %d is damaged (columns of %s bytes); skipped", bid,
                      [len(x) if isinstance(x, bytes) else type(x).__name__
                       for x in (s, t, k, v)])
            continue
        ss.append(s)
        ts.append(t)
        ks.append(k)
        vs.append(v)
    return n, (b"".join(ss), b"".join(ts), b"".join(ks), b"".join(vs))


def drop(lconn, upto, seen, in_transaction=False):
    """Delete moved blocks (id <= upto) and applied last-seen rows from the journal."""
    if not upto and not seen:
        return
    if not in_transaction:
        lconn.execute("BEGIN IMMEDIATE")
    try:
        if upto:
            lconn.execute("DELETE FROM blocks WHERE id <= ?", (upto,))
        if seen:
            lconn.executemany("DELETE FROM seen WHERE node = ? AND t <= ?", seen)
        if not in_transaction:
            lconn.execute("COMMIT")
    except sqlite3.Error:
        if not in_transaction and lconn.in_transaction:
            lconn.rollback()
        raise


def read_mark(conn):
    """(done_id, last_id, series, t) from the database's `block_moved`, NO_MARK if none."""
    try:
        row = conn.execute("SELECT done_id, last_id, series, t FROM block_moved").fetchone()
    except sqlite3.OperationalError:  # a database without the table: nothing moved yet
        return NO_MARK
    return tuple(row) if row is not None else NO_MARK


def moved(mark, bid, sid, t):
    """True when reading (sid, t) of journal block `bid` is in `readings` already."""
    return bid <= mark[0] or (bid <= mark[1] and (sid, t) <= (mark[2], mark[3]))


class BlockMoves:
    """Moves the journal's blocks into `readings` (a thread of its own; see the module)."""

    def __init__(self, path, cache_mb=64, slice_rows=4096, compact_rows=100000, idle=0.5,
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
        self.compact_rows = compact_rows
        self.idle = idle
        self.c_mover = c_mover and BlockMover is not None
        self.off = None  # why blocks move through Python's sqlite3, when they do
        self.cv = threading.Condition()
        self.committed_id = 0  # the last block the store committed
        self.done_id = 0  # every block up to here is in `readings`
        self.pending = 0  # readings committed, not moved
        self.seen_dirty = True  # `seen` may hold updates not applied to `nodes`
        # what the journal may drop, deleted by the journal's writer (the store thread) in
        # its next commit: no second writer, no lock the acks would wait for
        self.drop_upto = 0
        self.drop_seen = []
        self.flush_req = False  # a flush() waits: move now
        self.stopping = False
        self.error = None
        self.last_commit = time.monotonic()
        self.moves = 0
        self.steps = 0
        self.seconds = 0.0
        self._thread = None
        self._conn = self._lconn = self._mover = None

    # ---- store thread -------------------------------------------------------------------

    def open(self):
        """Connections, the mark and what is pending (call before start())."""
        self._conn = connect(self.path, self.cache_mb)
        self._conn.executescript(MAIN_SCHEMA)
        self._lconn = open_journal(self.path)
        if self.c_mover:
            try:
                self._mover = BlockMover(self.path, self.cache_mb)
            except Exception as e:  # noqa: BLE001 - the Python path does the same
                self.off = str(e)
        else:
            self.off = "fast/blockstore.pyx not built" if BlockMover is None else "off"
        if self.off:
            log.info("column blocks move through Python's sqlite3: %s", self.off)
        mark = read_mark(self._conn)
        self.done_id = mark[0]
        row = self._lconn.execute("SELECT max(id), coalesce(sum(n), 0) FROM blocks"
                                  " WHERE id > ?", (self.done_id,)).fetchone()
        self.committed_id = max(row[0] or 0, self.done_id)
        self.pending = row[1]

    def start(self):
        self._thread = threading.Thread(target=self._run, name="sqlite-block-mover", daemon=True)
        self._thread.start()

    def committed(self, last_id, n, seen=False):
        """The store committed blocks up to `last_id` holding `n` readings (and, with
        `seen`, last-seen updates)."""
        with self.cv:
            if last_id > self.committed_id:
                self.committed_id = last_id
            self.pending += n
            self.seen_dirty = self.seen_dirty or seen
            self.last_commit = time.monotonic()
            if self.pending >= self.compact_rows or self.flush_req:
                self.cv.notify_all()

    def behind(self):
        """True while something committed (blocks or last-seen rows) is not in the
        database yet."""
        with self.cv:
            return self.done_id < self.committed_id or self.seen_dirty

    def flush(self, timeout=600.0):
        """Return once every block committed so far is in `readings` (before a query)."""
        if self._thread is None:  # start-up and shutdown: in the caller's thread
            self._move_once()
            while self.done_id < self.committed_id:
                self._move_once()
            drop(self._lconn, *self.take_drops())  # nobody else writes the journal now
            return
        started = time.monotonic()
        deadline = started + timeout
        with self.cv:
            target = self.committed_id
            while self.done_id < target or self.seen_dirty:
                self.flush_req = True
                self.cv.notify_all()
                if self.error is not None and time.monotonic() - started > 5.0:
                    # still failing after the mover's retries: the query fails, not hangs
                    raise sqlite3.OperationalError("moving lane blocks failed: %s" % self.error)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise sqlite3.OperationalError("moving lane blocks took over %.0f s" % timeout)
                self.cv.wait(min(left, 1.0))

    def take_drops(self):
        """(blocks up to this id, [(node, t)] of `seen`) that are in the database now and
        may leave the journal; the caller deletes them in its own journal transaction."""
        with self.cv:
            upto, seen = self.drop_upto, self.drop_seen
            self.drop_upto, self.drop_seen = 0, []
        return upto, seen

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
                    except sqlite3.Error:
                        pass
                    c.close()
            self._conn = self._lconn = self._mover = None

    # ---- mover thread -------------------------------------------------------------------

    def _due(self):
        if self.done_id >= self.committed_id and not self.seen_dirty:
            return False
        return (self.flush_req or self.pending >= self.compact_rows
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
                self.error = None
            except Exception as e:  # noqa: BLE001 - disk full or similar: the blocks stay
                self.error = e  # in the journal (durable) and the next round retries
                log.exception("moving lane blocks failed")
                time.sleep(1.0)

    def _move_once(self):
        """Move every block committed so far (one Move, in slices), then `seen`."""
        t0 = time.perf_counter()
        with self.cv:
            self.flush_req = False
            upto = self.committed_id
        upto = self._move_limit(upto)
        last_id, n = upto, 0
        if self._mover is not None:
            if upto > self.done_id:
                n, cols = read_columns(self._lconn, self.done_id, upto)
                move = self._mover.start_columns(*cols, self.done_id, upto)
                while not move.step(self.slice_rows):
                    self.steps += 1
                self.steps += 1
        else:
            blocks = read_blocks(self._lconn, self.done_id, upto)
            if blocks:
                last_id = blocks[-1][0]
                n = sum(len(b) for _bid, b in blocks)
                self._move_python(blocks, last_id)
        applied = self._move_seen()
        with self.cv:
            self.drop_upto = max(self.drop_upto, last_id)
            self.drop_seen.extend(applied)
            self.done_id = max(self.done_id, last_id)
            self.pending = max(0, self.pending - n)
            self.moves += 1
            self.seconds += time.perf_counter() - t0
            self.cv.notify_all()

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

    def _move_python(self, blocks, last_id):
        flat = []
        for _bid, b in blocks:
            flat.extend(b.rows())
        flat.sort()
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR IGNORE INTO readings(series, t, kind, val, sum)"
                             " VALUES (?, ?, ?, ?, NULL)", flat)
            conn.execute(_MARK, (last_id, last_id))
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.rollback()
            raise

    def _move_seen(self):
        with self.cv:
            self.seen_dirty = False
        rows = self._lconn.execute("SELECT node, address, t FROM seen").fetchall()
        if not rows:
            return []
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(NODE_SEEN, [(node, a, t, t) for node, a, t in rows])
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.rollback()
            raise
        return [(node, t) for node, _a, t in rows]
