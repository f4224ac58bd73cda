"""The SQLite layout of the hub: the database, the journal beside it, and their migrations.

Two files in the data directory, both WAL with synchronous=FULL:

  hub.sqlite3          -- the database
    meta(key, value)                        -- "schema": the layout version below
    series(id, node, sensor, unit)          -- (node, sensor) unique
    readings(series, t, kind, val, sum, est) -- PRIMARY KEY (series, t) WITHOUT ROWID: one
        B-tree that is at once the uniqueness check for (node, sensor, time), the
        series/time index of the API and the table itself. Readings reach it only
        through the mover, sorted by that key, so neighbouring rows share pages.
        `est` is 1 for a reading whose time the node estimated (taken before its clock
        had the hub's time: the SenML label "est"), NULL for a measured time.
    rollups(series, win, t, count, min, max, mean, p50, p95, p99)
    nodes(id, address, firmware, lt, registered, rd, last_seen, online, interval, first_seen)
    node_configs(node, version, body, created)
    block_moved(done_id, last_id, series, t) -- how far the moves of journal blocks got
    rows_moved(done_id)                      -- how far the moves of journal rows got
    damaged_blocks(id, n, series, t, kind, val, found) -- journal blocks the mover found
        damaged, kept as they were (skipped by the move, counted in /metrics)

  hub.journal.sqlite3  -- the journal: acknowledged readings not yet in `readings`
    blocks(id, n, series, t, kind, val)     -- the column lane's readings, one row per
        group commit holding four column blobs (int32, float64, uint8, float64)
    rows(id, series, t, kind, val, sum, est) -- the row path's new readings; ids given by
        the store, ever increasing (a rowid would restart at 1 once every row is deleted)
    seen(node, address, t)                  -- node last-seen updates not yet in `nodes`

`kind` is the value kind of fast/kinds.py everywhere. Version 1 (no "schema" in
`meta`) numbered kinds differently (string 1, bool 2) and kept the row path's
readings in an `inbox` table of the database, in a journal file called
hub.lane.sqlite3; `migrate` converts such a data directory in place. Version 2 had no
`est` column (in `readings` and the journal's `rows`); opening adds it, empty (NULL:
measured), which SQLite does without rewriting a row.
"""

import os
import sqlite3

from smartpark.fast import kinds

VERSION = 3

DATABASE = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS series(
    id INTEGER PRIMARY KEY, node TEXT NOT NULL, sensor TEXT NOT NULL, unit TEXT,
    UNIQUE(node, sensor));
CREATE TABLE IF NOT EXISTS readings(
    series INTEGER NOT NULL, t REAL NOT NULL, kind INTEGER NOT NULL, val, sum REAL,
    est INTEGER, PRIMARY KEY(series, t)) WITHOUT ROWID;
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
CREATE TABLE IF NOT EXISTS block_moved(
    k INTEGER PRIMARY KEY CHECK (k = 1), done_id INTEGER NOT NULL, last_id INTEGER NOT NULL,
    series INTEGER NOT NULL, t REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rows_moved(
    k INTEGER PRIMARY KEY CHECK (k = 1), done_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS damaged_blocks(
    id INTEGER PRIMARY KEY, n INTEGER, series BLOB, t BLOB, kind BLOB, val BLOB,
    found REAL NOT NULL);
"""

JOURNAL = """
CREATE TABLE IF NOT EXISTS blocks(
    id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, series BLOB NOT NULL,
    t BLOB NOT NULL, kind BLOB NOT NULL, val BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rows(
    id INTEGER PRIMARY KEY, series INTEGER NOT NULL, t REAL NOT NULL,
    kind INTEGER NOT NULL, val, sum REAL, est INTEGER);
CREATE TABLE IF NOT EXISTS seen(node TEXT PRIMARY KEY, address TEXT, t REAL NOT NULL);
"""

_OLD_JOURNAL_SUFFIX = ".lane.sqlite3"
_JOURNAL_SUFFIX = ".journal.sqlite3"
_WAL_SUFFIXES = ("", "-wal", "-shm")

# version 1 -> 2: string 1 -> 2, bool 2 -> 1; numbers (0) and data (3) keep theirs
_V1_KIND = "CASE kind WHEN 1 THEN %d WHEN 2 THEN %d ELSE kind END" % (kinds.STR, kinds.BOOL)


def journal_path(path):
    """hub.sqlite3 -> hub.journal.sqlite3 (never "-journal": SQLite's own suffix)."""
    return os.path.splitext(path)[0] + _JOURNAL_SUFFIX


def connect(path, cache_mb=None, memory_mb=None, same_thread=False):
    """A connection in autocommit mode (transactions are explicit), WAL, synchronous=FULL."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30,
                           check_same_thread=same_thread)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    if cache_mb:
        conn.execute("PRAGMA cache_size=%d" % (-1024 * int(cache_mb)))
    if memory_mb:
        # SQLite's soft heap limit for the whole process: over it every connection's
        # page cache recycles its least recently used pages instead of growing
        conn.execute("PRAGMA soft_heap_limit=%d" % (int(memory_mb) << 20))
    return conn


def open_database(path, cache_mb=None, memory_mb=None):
    """The database at `path`, created or migrated to VERSION (the journal beside it too);
    for the store thread alone."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _rename_old_journal(path)
    conn = connect(path, cache_mb, memory_mb, same_thread=True)
    conn.execute("PRAGMA foreign_keys=OFF")
    tables = _tables(conn)
    version = _version(conn) if "meta" in tables else None
    if version is not None and version > VERSION:
        conn.close()
        raise RuntimeError("%s has layout version %d; this hub knows up to %d (downgrade?)"
                           % (path, version, VERSION))
    conn.executescript(DATABASE)
    if "readings" in tables and version is None:
        _migrate_v1(conn, path, "inbox" in tables)
    add_column(conn, "readings", "est", "INTEGER")  # version 2 -> 3
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', ?)", (str(VERSION),))
    return conn


def open_journal(path, cache_mb=None):
    """The journal beside the database at `path` (any thread, one at a time)."""
    conn = connect(journal_path(path), cache_mb)
    conn.executescript(JOURNAL)
    add_column(conn, "rows", "est", "INTEGER")  # a journal of version 2
    return conn


def columns(conn, table):
    """The column names of `table`."""
    return [r[1] for r in conn.execute("PRAGMA table_info(%s)" % table)]


def add_column(conn, table, column, decl):
    """Add `column` to `table` when it lacks it (no row is rewritten: its value is NULL)."""
    if column not in columns(conn, table):
        conn.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, column, decl))


def _tables(conn):
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _version(conn):
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    return int(row[0]) if row is not None else None


def _rename_old_journal(path):
    old = os.path.splitext(path)[0] + _OLD_JOURNAL_SUFFIX
    new = journal_path(path)
    if os.path.exists(old) and not os.path.exists(new):
        for suffix in _WAL_SUFFIXES:  # the WAL holds committed blocks: it moves too
            if os.path.exists(old + suffix):
                os.rename(old + suffix, new + suffix)


def _migrate_v1(conn, path, has_inbox):
    """Version 1 -> 2 in one transaction: stored kinds renumbered, the inbox's readings
    into `readings` (they were acknowledged), the inbox dropped."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE readings SET kind = %s WHERE kind IN (1, 2)" % _V1_KIND)
        if has_inbox:
            conn.execute("INSERT OR IGNORE INTO readings(series, t, kind, val, sum)"
                         " SELECT series, t, %s, val, sum FROM inbox ORDER BY series, t"
                         % _V1_KIND)
            conn.execute("DROP TABLE inbox")
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', ?)",
                     (str(VERSION),))
        conn.execute("COMMIT")
    except sqlite3.Error:
        if conn.in_transaction:
            conn.rollback()
        raise
