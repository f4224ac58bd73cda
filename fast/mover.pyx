# Mirrors hub/store/journal.py (its block move through Python's sqlite3) in SQLite's C API, without the GIL.
# cython: language_level=3
"""Move the journal's column blocks into the `readings` table through SQLite's C API.

The store commits the readings of the column lane (fast/lane.pyx) as one
`blocks` row per group commit, in a journal file of its own
(hub/store/journal.py); a mover thread later turns them into `readings` rows
of the hub's database. Python's sqlite3 holds the GIL for every row of an
executemany; here the same INSERT runs from C with the GIL released, so the
event loop keeps serving, and ROWS_PER_INSERT rows go in per statement
(benchmarks/test_ingest_bench.py::test_block_move_grouped_vs_single compares
that with one row per statement).

A block's kinds are the stored kinds (fast/kinds.py: one numbering from the
decoder to the database), so each reading is bound as it is: no translation.

It uses the very SQLite library Python's sqlite3 module is linked against
(the soname libsqlite3.so.0, linked as `-l:libsqlite3.so.0`, so no headers
are needed). `usable()` refuses when that cannot be shown — two copies of
SQLite in one process must not open the same file (their POSIX locks would
not see each other) — and the store then moves blocks with Python's sqlite3.
"""

from libc.stdint cimport int32_t
from libc.stdlib cimport free, malloc, qsort
from libc.string cimport memcpy

cdef extern from *:
    """
    typedef struct sqlite3 sqlite3;
    typedef struct sqlite3_stmt sqlite3_stmt;
    int sqlite3_open_v2(const char *filename, sqlite3 **ppDb, int flags, const char *zVfs);
    int sqlite3_close_v2(sqlite3 *db);
    int sqlite3_prepare_v2(sqlite3 *db, const char *zSql, int nByte, sqlite3_stmt **ppStmt,
                           const char **pzTail);
    int sqlite3_bind_int64(sqlite3_stmt *st, int i, long long v);
    int sqlite3_bind_double(sqlite3_stmt *st, int i, double v);
    int sqlite3_step(sqlite3_stmt *st);
    int sqlite3_reset(sqlite3_stmt *st);
    int sqlite3_finalize(sqlite3_stmt *st);
    int sqlite3_exec(sqlite3 *db, const char *sql, void *cb, void *arg, char **errmsg);
    int sqlite3_changes(sqlite3 *db);
    const char *sqlite3_errmsg(sqlite3 *db);
    int sqlite3_busy_timeout(sqlite3 *db, int ms);
    const char *sqlite3_libversion(void);
    long long sqlite3_memory_used(void);
    #define SP_SQLITE_OPEN_READWRITE 0x00000002
    #define SP_SQLITE_OPEN_NOMUTEX 0x00008000
    #define SP_SQLITE_DONE 101
    #define SP_SQLITE_OK 0
    typedef struct { int sid; int idx; double t; } sp_key;
    static int sp_key_cmp(const void *a, const void *b) {
        const sp_key *x = (const sp_key *)a, *y = (const sp_key *)b;
        if (x->sid != y->sid) return x->sid < y->sid ? -1 : 1;
        if (x->t != y->t) return x->t < y->t ? -1 : 1;
        return x->idx < y->idx ? -1 : (x->idx > y->idx);
    }
    """
    ctypedef struct sqlite3:
        pass
    ctypedef struct sqlite3_stmt:
        pass
    ctypedef struct sp_key:
        int sid
        int idx
        double t
    int sqlite3_open_v2(const char *filename, sqlite3 **ppDb, int flags, const char *zVfs) nogil
    int sqlite3_close_v2(sqlite3 *db) nogil
    int sqlite3_prepare_v2(sqlite3 *db, const char *zSql, int nByte, sqlite3_stmt **ppStmt,
                           const char **pzTail) nogil
    int sqlite3_bind_int64(sqlite3_stmt *st, int i, long long v) nogil
    int sqlite3_bind_double(sqlite3_stmt *st, int i, double v) nogil
    int sqlite3_step(sqlite3_stmt *st) nogil
    int sqlite3_reset(sqlite3_stmt *st) nogil
    int sqlite3_finalize(sqlite3_stmt *st) nogil
    int sqlite3_exec(sqlite3 *db, const char *sql, void *cb, void *arg, char **errmsg) nogil
    int sqlite3_changes(sqlite3 *db) nogil
    const char *sqlite3_errmsg(sqlite3 *db) nogil
    int sqlite3_busy_timeout(sqlite3 *db, int ms) nogil
    const char *sqlite3_libversion() nogil
    long long sqlite3_memory_used() nogil
    int SP_SQLITE_OPEN_READWRITE
    int SP_SQLITE_OPEN_NOMUTEX
    int SP_SQLITE_DONE
    int SP_SQLITE_OK
    int sp_key_cmp(const void *a, const void *b) noexcept nogil

import sqlite3 as _pysqlite

from smartpark.fast import kinds as _kinds

cdef enum:
    ROWS_PER_INSERT = 32

cdef unsigned char BOOL = _kinds.BOOL  # a boolean is stored as the integer 0 or 1

_INSERT = (b"INSERT OR IGNORE INTO readings(series, t, kind, val, sum)"
           b" VALUES (?, ?, ?, ?, NULL)")
# the same for ROWS_PER_INSERT rows at once: one statement execution (VDBE start, reset,
# change count) per group instead of per row
_INSERT_MANY = (b"INSERT OR IGNORE INTO readings(series, t, kind, val, sum) VALUES "
                + b", ".join([b"(?, ?, ?, ?, NULL)"] * ROWS_PER_INSERT))
_MARK = (b"INSERT OR REPLACE INTO block_moved(k, done_id, last_id, series, t)"
         b" VALUES (1, ?, ?, ?, ?)")


def library_version():
    return sqlite3_libversion().decode()


def memory():
    """Bytes SQLite has allocated in this process, all connections together (Python's
    sqlite3 and this module share one libsqlite3: see usable())."""
    return sqlite3_memory_used()


def usable():
    """None when this module may write the hub's database, else the reason it may not."""
    mine = library_version()
    if mine != _pysqlite.sqlite_version:
        return ("SQLite %s here but %s in Python's sqlite3 (two copies of SQLite)"
                % (mine, _pysqlite.sqlite_version))
    try:
        import _sqlite3
        with open(_sqlite3.__file__, "rb") as f:
            linked = b"libsqlite3.so.0" in f.read()
    except (ImportError, OSError, AttributeError) as e:
        return "cannot tell which SQLite Python's sqlite3 uses (%s)" % e
    if not linked:
        return "Python's sqlite3 has SQLite built in (a second copy would be loaded)"
    return None


class MoveError(_pysqlite.OperationalError):
    """A statement of the block mover failed; its transaction was rolled back."""


cdef class BlockMover:
    """Its own connection to the hub's database file, used by one thread at a time."""

    cdef sqlite3* db
    cdef sqlite3_stmt* ins
    cdef sqlite3_stmt* ins_many
    cdef sqlite3_stmt* mark
    cdef readonly bint grouped

    def __cinit__(self):
        self.db = NULL
        self.ins = NULL
        self.ins_many = NULL
        self.mark = NULL

    def __init__(self, path, int cache_mb=64, int autocheckpoint=256, bint grouped=True):
        """grouped: insert ROWS_PER_INSERT readings per statement (False: one per
        statement, the baseline of benchmarks/test_ingest_bench.py)."""
        self.grouped = grouped
        reason = usable()
        if reason is not None:
            raise RuntimeError(reason)
        cdef bytes p = path.encode() if isinstance(path, str) else bytes(path)
        if sqlite3_open_v2(p, &self.db, SP_SQLITE_OPEN_READWRITE | SP_SQLITE_OPEN_NOMUTEX,
                           NULL) != SP_SQLITE_OK:
            msg = self._err()
            self.close()
            raise MoveError("cannot open %s: %s" % (path, msg))
        sqlite3_busy_timeout(self.db, 30000)
        # its own page cache as large as the store's: the move reads readings' leaf pages
        pragma = ("PRAGMA cache_size=%d" % (-1024 * cache_mb)).encode()
        sqlite3_exec(self.db, pragma, NULL, NULL, NULL)
        # checkpoint often and small: a checkpoint's fsync of the database shares the
        # disk with the lane journal's commit fsyncs (the acks); 4 MB at a time showed in
        # the half-load p99
        pragma = ("PRAGMA wal_autocheckpoint=%d" % autocheckpoint).encode()
        sqlite3_exec(self.db, pragma, NULL, NULL, NULL)
        if (sqlite3_prepare_v2(self.db, _INSERT, -1, &self.ins, NULL) != SP_SQLITE_OK or
                sqlite3_prepare_v2(self.db, _INSERT_MANY, -1, &self.ins_many, NULL)
                != SP_SQLITE_OK or
                sqlite3_prepare_v2(self.db, _MARK, -1, &self.mark, NULL) != SP_SQLITE_OK):
            msg = self._err()
            self.close()
            raise MoveError("cannot prepare the block move: %s" % msg)

    def __dealloc__(self):
        self.close()

    cdef str _err(self):
        if self.db == NULL:
            return "out of memory"
        return sqlite3_errmsg(self.db).decode("utf-8", "replace")

    def close(self):
        if self.ins != NULL:
            sqlite3_finalize(self.ins)
            self.ins = NULL
        if self.ins_many != NULL:
            sqlite3_finalize(self.ins_many)
            self.ins_many = NULL
        if self.mark != NULL:
            sqlite3_finalize(self.mark)
            self.mark = NULL
        if self.db != NULL:
            sqlite3_close_v2(self.db)
            self.db = NULL

    def start(self, blocks, long long done_id, long long last_id):
        """A Move of the readings of `blocks` (fast.lane.Block objects: the journal's
        blocks with done_id < id <= last_id) into `readings`, sorted by (series, t) once;
        run it with `Move.step`."""
        if self.db == NULL:
            raise MoveError("block mover is closed")
        return Move(self, blocks, done_id, last_id)

    def start_columns(self, series, t, kind, val, long long done_id, long long last_id):
        """The same Move from the journal's columns of those blocks joined in id order
        (`journal.read_columns`: int32 series ids, float64 times, uint8 kinds, float64
        values, native byte order): copied and sorted with the GIL released, so a large
        move does not stall the acks."""
        if self.db == NULL:
            raise MoveError("block mover is closed")
        return Move(self, None, done_id, last_id, (series, t, kind, val))


cdef class Move:
    """One move of blocks into `readings`, in slices: each `step(max_rows)` inserts the
    next max_rows readings in (series, t) order in its own short transaction, so other
    writers of the database (the row path) wait for a slice, never a whole move.
    Each slice records how far the move got in `block_moved` in the same transaction:
    blocks with id <= done_id are in `readings` entirely; of those with done_id < id <=
    last_id, the readings at or below (series, t). The last slice sets done_id =
    last_id. A reader of the journal skips what the mark covers; after a crash the move
    runs again (INSERT OR IGNORE) and the journal's moved blocks are deleted then."""

    cdef BlockMover mover
    cdef sp_key* keys
    cdef int32_t* sids
    cdef double* ts
    cdef double* vs
    cdef unsigned char* ks
    cdef readonly Py_ssize_t total
    cdef readonly Py_ssize_t pos
    cdef long long last_id
    cdef long long done_id
    cdef readonly long long new
    cdef readonly bint done

    def __cinit__(self):
        self.keys = NULL
        self.sids = NULL
        self.ts = NULL
        self.vs = NULL
        self.ks = NULL

    def __init__(self, BlockMover mover not None, blocks, long long done_id, long long last_id,
                 columns=None):
        cdef Py_ssize_t total = 0, j, n, off = 0
        cdef const int[::1] bs
        cdef const double[::1] bt
        cdef const unsigned char[::1] bk
        cdef const double[::1] bv
        cdef const unsigned char[::1] cs, ct, ck, cv
        self.mover = mover
        self.last_id = last_id
        self.done_id = done_id
        self.new = 0
        self.pos = 0
        if columns is not None:
            cs, ct, ck, cv = columns
            total = ck.shape[0]
            if cs.shape[0] != 4 * total or ct.shape[0] != 8 * total or cv.shape[0] != 8 * total:
                raise ValueError("journal columns differ in length")
            self._alloc(total)
            if total:
                with nogil:  # the event loop and the store thread go on meanwhile
                    memcpy(self.sids, &cs[0], 4 * total)
                    memcpy(self.ts, &ct[0], 8 * total)
                    memcpy(self.ks, &ck[0], total)
                    memcpy(self.vs, &cv[0], 8 * total)
                    for j in range(total):
                        self.keys[j].sid = self.sids[j]
                        self.keys[j].t = self.ts[j]
                        self.keys[j].idx = <int>j
                    qsort(self.keys, total, sizeof(sp_key), sp_key_cmp)
            self.done = False
            return
        for b in blocks:
            total += len(b)
        self._alloc(total)
        for b in blocks:
            bs = b.series
            bt = b.time
            bk = b.kind
            bv = b.value
            n = len(b)
            if bt.shape[0] < n or bk.shape[0] < n or bv.shape[0] < n or bs.shape[0] < n:
                raise ValueError("block columns shorter than the block")
            for j in range(n):
                self.sids[off] = bs[j]
                self.ts[off] = bt[j]
                self.ks[off] = bk[j]
                self.vs[off] = bv[j]
                self.keys[off].sid = bs[j]
                self.keys[off].t = bt[j]
                self.keys[off].idx = <int>off
                off += 1
        with nogil:
            qsort(self.keys, total, sizeof(sp_key), sp_key_cmp)
        self.done = False

    cdef int _alloc(self, Py_ssize_t total) except -1:
        self.total = total
        self.keys = <sp_key*>malloc((total or 1) * sizeof(sp_key))
        self.sids = <int32_t*>malloc((total or 1) * sizeof(int32_t))
        self.ts = <double*>malloc((total or 1) * sizeof(double))
        self.vs = <double*>malloc((total or 1) * sizeof(double))
        self.ks = <unsigned char*>malloc(total or 1)
        if not (self.keys and self.sids and self.ts and self.vs and self.ks):
            raise MemoryError()
        return 0

    def __dealloc__(self):
        free(self.keys)
        free(self.sids)
        free(self.ts)
        free(self.vs)
        free(self.ks)

    cdef inline void _bind(self, sqlite3_stmt* st, int base, Py_ssize_t j) noexcept nogil:
        """Bind reading j to parameters base+1..base+4 (series, t, kind, val)."""
        sqlite3_bind_int64(st, base + 1, self.sids[j])
        sqlite3_bind_double(st, base + 2, self.ts[j])
        sqlite3_bind_int64(st, base + 3, self.ks[j])
        if self.ks[j] == BOOL:
            sqlite3_bind_int64(st, base + 4, 1 if self.vs[j] != 0.0 else 0)
        else:
            sqlite3_bind_double(st, base + 4, self.vs[j])

    def step(self, long long max_rows):
        """Insert the next slice (one transaction, GIL released); returns True when the
        move is complete. Raises MoveError (that slice rolled back) on failure."""
        if self.done:
            return True
        cdef BlockMover mv = self.mover
        if mv.db == NULL:
            raise MoveError("block mover is closed")
        cdef Py_ssize_t i, g, end = self.total
        if max_rows < end - self.pos:
            end = self.pos + max_rows
        cdef bint last = end >= self.total
        cdef int rc = SP_SQLITE_OK, step_rc = SP_SQLITE_DONE
        cdef long long new = 0
        cdef sp_key* kp
        with nogil:
            # Only the last slice's COMMIT syncs the WAL (synchronous=FULL); that one fsync
            # makes every earlier slice of the move durable too (they are earlier frames of
            # the same WAL file). A power cut before it may take back some slices together
            # with their progress marks -- harmless: the journal drops blocks only after the
            # whole move (BlockMoves), and a move runs again with INSERT OR IGNORE.
            sqlite3_exec(mv.db, "PRAGMA synchronous=FULL" if last else "PRAGMA synchronous=NORMAL",
                         NULL, NULL, NULL)
            rc = sqlite3_exec(mv.db, "BEGIN IMMEDIATE", NULL, NULL, NULL)
            if rc == SP_SQLITE_OK:
                i = self.pos
                while mv.grouped and i + ROWS_PER_INSERT <= end:
                    for g in range(ROWS_PER_INSERT):
                        self._bind(mv.ins_many, 4 * g, self.keys[i + g].idx)
                    step_rc = sqlite3_step(mv.ins_many)
                    sqlite3_reset(mv.ins_many)
                    if step_rc != SP_SQLITE_DONE:
                        break
                    new += sqlite3_changes(mv.db)
                    i += ROWS_PER_INSERT
                while step_rc == SP_SQLITE_DONE and i < end:
                    self._bind(mv.ins, 0, self.keys[i].idx)
                    step_rc = sqlite3_step(mv.ins)
                    sqlite3_reset(mv.ins)
                    if step_rc != SP_SQLITE_DONE:
                        break
                    new += sqlite3_changes(mv.db)
                    i += 1
                if step_rc == SP_SQLITE_DONE:
                    sqlite3_bind_int64(mv.mark, 1, self.last_id if last else self.done_id)
                    sqlite3_bind_int64(mv.mark, 2, self.last_id)
                    if end > 0:
                        kp = &self.keys[end - 1]
                        sqlite3_bind_int64(mv.mark, 3, kp.sid)
                        sqlite3_bind_double(mv.mark, 4, kp.t)
                    else:
                        sqlite3_bind_int64(mv.mark, 3, -1)
                        sqlite3_bind_double(mv.mark, 4, 0.0)
                    step_rc = sqlite3_step(mv.mark)
                    sqlite3_reset(mv.mark)
                if step_rc == SP_SQLITE_DONE:
                    rc = sqlite3_exec(mv.db, "COMMIT", NULL, NULL, NULL)
                else:
                    rc = step_rc
        if rc != SP_SQLITE_OK:
            msg = mv._err()
            sqlite3_exec(mv.db, "ROLLBACK", NULL, NULL, NULL)
            raise MoveError("moving block readings %d..%d of %d failed: %s"
                                  % (self.pos, end, self.total, msg))
        self.pos = end
        self.new += new
        if last:
            self.done = True
            free(self.keys)
            self.keys = NULL
        return self.done
