"""The SQL the store thread runs on the database, one function per operation.

Each function takes the store thread's connection (hub/store/schema.py's
layout) and plain values, and returns plain values: tuples, lists, dicts. The
Store methods of hub/store/sqlite.py run them in the store thread and hand
their results to the event loop; nothing here is seen outside hub/store/.
The journal's own SQL lives in hub/store/journal.py.
"""

import json
import math

from smartpark.fast import kinds

NODE_COLUMNS = ("address", "firmware", "lt", "registered", "rd", "last_seen", "online",
                "interval", "first_seen")

INSERT_SERIES = "INSERT INTO series(node, sensor, unit) VALUES (?, ?, ?)"
UPDATE_UNIT = "UPDATE series SET unit = ? WHERE id = ?"
EXISTS = "SELECT 1 FROM readings WHERE series = ? AND t = ?"
MAX_T = "SELECT max(t) FROM readings WHERE series = ?"


def series(conn):
    """[(id, node, sensor, unit)] of every series."""
    return [tuple(r) for r in conn.execute("SELECT id, node, sensor, unit FROM series")]


def max_t(conn, sid):
    """The newest time stored in `readings` for series `sid`, -inf when none."""
    m = conn.execute(MAX_T, (sid,)).fetchone()[0]
    return -math.inf if m is None else m


def load_state(conn):
    """Everything the hub keeps in memory, read at start-up."""
    rows = series(conn)
    latest = {}
    for sid, _node, _sensor, _unit in rows:
        row = conn.execute(
            "SELECT t, kind, val FROM readings WHERE series = ? ORDER BY t DESC LIMIT 1", (sid,)
        ).fetchone()
        if row is not None:
            latest[sid] = tuple(row)
    nodes = [
        dict(zip(("id",) + NODE_COLUMNS, r, strict=True))
        for r in conn.execute("SELECT id, %s FROM nodes" % ", ".join(NODE_COLUMNS))
    ]
    configs = {}
    for node, version, body in conn.execute(
            "SELECT node, version, body FROM node_configs c WHERE version ="
            " (SELECT max(version) FROM node_configs d WHERE d.node = c.node)"):
        configs[node] = (version, bytes(body))
    return {"series": rows, "latest": latest, "nodes": nodes, "configs": configs}


def raw(conn, sid, t0, t1, limit):
    """[(t, kind, val, est)] of series `sid` in [t0, t1), oldest first, at most `limit`."""
    return [tuple(r) for r in conn.execute(
        "SELECT t, kind, val, est FROM readings WHERE series = ? AND t >= ? AND t < ? ORDER BY t LIMIT ?",
        (sid, t0, t1, limit))]


def rollups(conn, sid, win, t0, t1, limit):
    """[(t, count, min, max, mean, p50, p95, p99)] of one series and window."""
    return [tuple(r) for r in conn.execute(
        "SELECT t, count, min, max, mean, p50, p95, p99 FROM rollups"
        " WHERE series = ? AND win = ? AND t >= ? AND t < ? ORDER BY t LIMIT ?",
        (sid, win, t0, t1, limit))]


def count_readings(conn, sid=None):
    if sid is None:
        return conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    return conn.execute("SELECT count(*) FROM readings WHERE series = ?", (sid,)).fetchone()[0]


def sum_at(conn, sid, t):
    """The stored sum of reading (sid, t), None when it has none."""
    row = conn.execute("SELECT sum FROM readings WHERE series = ? AND t = ?", (sid, t)).fetchone()
    return None if row is None else row[0]


def upsert_rollups(conn, rows):
    """rows: (series, win, t, count, min, max, mean, p50, p95, p99); replaces buckets."""
    if not rows:
        return 0
    with_transaction(conn, lambda: conn.executemany(
        "INSERT OR REPLACE INTO rollups(series, win, t, count, min, max, mean, p50, p95, p99)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows))
    return len(rows)


def numeric_since(conn, sid, start):
    """(t, val) of the numbers and booleans of series `sid` from `start` on, in time order
    (what a rollup bucket is built from)."""
    return conn.execute(
        "SELECT t, val FROM readings WHERE series = ? AND t >= ? AND kind IN (?, ?)"
        " AND val IS NOT NULL ORDER BY t", (sid, start) + kinds.NUMERIC)


def upsert_nodes(conn, nodes):
    """nodes: dicts with id and any of NODE_COLUMNS (missing columns are left alone), all in
    one transaction -- one fsync, however many nodes the liveness check turned offline."""
    def write():
        for node in nodes:
            cols = [k for k in NODE_COLUMNS if k in node]
            values = [node[k] for k in cols]
            if isinstance(node.get("rd"), (dict, list)):
                values[cols.index("rd")] = json.dumps(node["rd"])
            sets = ", ".join("%s = excluded.%s" % (c, c) for c in cols) or "id = id"
            conn.execute(
                "INSERT INTO nodes(id%s) VALUES (?%s) ON CONFLICT(id) DO UPDATE SET %s"
                % ("".join(", " + c for c in cols), ", ?" * len(cols), sets),
                [node["id"]] + values)
    with_transaction(conn, write)


def put_config(conn, node, make_body, now):
    """Store the next config version of `node`: body = make_body(version). Returns the
    version (the store thread is the only writer, so versions never collide)."""
    def write():
        row = conn.execute("SELECT max(version) FROM node_configs WHERE node = ?",
                           (node,)).fetchone()
        version = (row[0] or 0) + 1
        conn.execute("INSERT INTO node_configs(node, version, body, created) VALUES (?, ?, ?, ?)",
                     (node, version, make_body(version), now))
        return version
    return with_transaction(conn, write)


def prune(conn, cutoff, after_sid=0, batch=100):
    """Delete raw readings older than `cutoff` for up to `batch` series with id > after_sid.

    Returns (rows removed, last series id handled or None when done); the retention task
    calls it repeatedly so that ingest commits interleave."""
    sids = [r[0] for r in conn.execute(
        "SELECT id FROM series WHERE id > ? ORDER BY id LIMIT ?", (after_sid, batch))]
    if not sids:
        return 0, None

    def delete():
        return sum(conn.execute("DELETE FROM readings WHERE series = ? AND t < ?",
                                (sid, cutoff)).rowcount for sid in sids)
    return with_transaction(conn, delete), sids[-1]


def with_transaction(conn, fn, begin="BEGIN IMMEDIATE"):
    """fn() inside BEGIN IMMEDIATE (or `begin`) ... COMMIT; rolled back when it raises."""
    conn.execute(begin)
    try:
        out = fn()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    return out
