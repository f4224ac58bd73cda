"""A damaged database file: found at start, set aside, what it holds saved.

`check(path, seconds)` runs SQLite's `PRAGMA quick_check` on a database file
with a time bound (a progress handler interrupts it). quick_check reads every
page of every table and index and checks the B-tree structure, page links and
record formats (not that index entries match their rows: that is the slower
integrity_check). On a file too large to finish within the bound, what was
checked is: the header and the schema (read by any open), and every page the
check reached before the bound; the rest is checked by SQLite as it is read.
The answer says which.

`recover(path, ...)` handles a damaged file: it copies what can still be read
into a fresh file beside it, then renames the damaged one (with its -wal and
-shm) to `<name>.damaged-<UTC time>` -- never deleted -- and puts the fresh
one in its place (a crash before that leaves the damaged file to be found
again). What the copy takes: series (with their ids, which the
journal refers to), nodes, node configs, rollups and raw readings (per
series, forward to a damaged page and backward from the end to it). The
journal's acknowledged readings are moved into the new file by the mover as
at every start (the fresh file has no move marks, so all of the journal
moves again; INSERT OR IGNORE keeps each reading once). Liveness and
registrations the copy could not save are rebuilt as the nodes report.

A damaged journal is handled the same way: its blocks, rows and last-seen
rows are copied one by one into a fresh journal; what cannot be read is
counted and named in the report, never silently dropped.

Each recovery appends a record to `<data>/hub.damage.json` (what was found,
where the file went, what was saved and what was not), which
`smartpark hub doctor` prints.
"""

import json
import logging
import os
import sqlite3
import time

from . import schema

log = logging.getLogger("smartpark.hub.store")

REPORT = "hub.damage.json"


def check(path, seconds=10.0):
    """(state, detail) of the database file at `path`: state "ok", "partial" (the bound
    ran out before the check finished), "damaged" or "missing"."""
    if not os.path.exists(path):
        return "missing", "no file"
    if os.path.getsize(path) == 0:
        return "ok", "empty file"
    deadline = time.monotonic() + seconds
    try:
        conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
    except sqlite3.Error as e:
        return "damaged", str(e)
    try:
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10000)
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(20)")]
    except sqlite3.OperationalError as e:
        if "interrupted" in str(e):
            return "partial", ("quick_check stopped after %gs; checked: the header, the"
                               " schema and the pages reached" % seconds)
        return _damaged_or_raise(e)
    except sqlite3.DatabaseError as e:
        return _damaged_or_raise(e)
    finally:
        conn.close()
    if rows == ["ok"]:
        return "ok", "quick_check ok"
    return "damaged", "; ".join(rows[:5])


def inspect(path, seconds=10.0):
    """check() for a report: a file that cannot be opened (locked, no permission) is
    "unreadable" instead of an exception."""
    try:
        return check(path, seconds)
    except sqlite3.Error as e:
        return "unreadable", str(e)


def journal_pending(path):
    """(blocks, readings in them, rows) of the journal at `path`, None when unreadable."""
    try:
        j = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
        try:
            b = j.execute("SELECT count(*), coalesce(sum(n), 0) FROM blocks").fetchone()
            r = j.execute("SELECT count(*) FROM rows").fetchone()[0]
        finally:
            j.close()
        return b[0], b[1], r
    except sqlite3.Error:
        return None


def damaged_blocks(path):
    """Journal blocks the mover set aside as damaged in the database at `path` (0 when
    none or unreadable)."""
    try:
        c = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
        try:
            return c.execute("SELECT count(*) FROM damaged_blocks").fetchone()[0]
        finally:
            c.close()
    except sqlite3.Error:
        return 0


def _damaged_or_raise(e):
    text = str(e)
    if "locked" in text or "busy" in text or "unable to open" in text:
        raise e  # not damage: the caller reports it as such
    return "damaged", text


def _stamp():
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def set_aside(path):
    """Rename `path` and its -wal/-shm to `<path>.damaged-<time>`; -> the new name."""
    dest = "%s.damaged-%s" % (path, _stamp())
    n = 0
    while os.path.exists(dest):
        n += 1
        dest = "%s.damaged-%s-%d" % (path, _stamp(), n)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.rename(path + suffix, dest + suffix)
    return dest


def _copy_rows(src, sql, args, insert, dst, deadline):
    """Copy the rows of `sql` to `dst` with `insert` until the end, an unreadable page or
    the deadline; -> (copied, last row copied or None, stopped by an error)."""
    n, last = 0, None
    batch = []
    try:
        for row in src.execute(sql, args):
            batch.append(tuple(row))
            last = batch[-1]
            if len(batch) >= 1000:
                dst.executemany(insert, batch)
                n += len(batch)
                batch = []
                if time.monotonic() > deadline:
                    break
        failed = False
    except sqlite3.DatabaseError:
        failed = True
    if batch:
        dst.executemany(insert, batch)
        n += len(batch)
    return n, last, failed


def _copy_table(src, dst, table, cols, deadline):
    sql = "SELECT %s FROM %s" % (", ".join(cols), table)
    insert = "INSERT OR IGNORE INTO %s(%s) VALUES (%s)" % (table, ", ".join(cols),
                                                          ", ".join("?" * len(cols)))
    n, _last, failed = _copy_rows(src, sql, (), insert, dst, deadline)
    return n, failed


_DB_TABLES = (
    ("series", ("id", "node", "sensor", "unit")),
    ("nodes", ("id", "address", "firmware", "lt", "registered", "rd", "last_seen", "online",
               "interval", "first_seen")),
    ("node_configs", ("node", "version", "body", "created")),
    ("rollups", ("series", "win", "t", "count", "min", "max", "mean", "p50", "p95", "p99")),
)
_READING = ("INSERT OR IGNORE INTO readings(series, t, kind, val, sum, est)"
            " VALUES (?, ?, ?, ?, ?, ?)")


def _est(src, table):
    """The select expression of `est` in a damaged file's `table`: the column, or NULL in a
    file of layout version 2, which had none."""
    try:
        return "est" if "est" in schema.columns(src, table) else "NULL"
    except sqlite3.DatabaseError:
        return "NULL"


def _cut_copy(old):
    """A copy of a file cut short (fewer pages than its header says) that SQLite will read:
    whole pages only, the header's page count set to them; None when it does not apply.
    The copy (`<old>.salvage`) is the caller's to remove; the damaged file stays as it is."""
    try:
        with open(old, "rb") as f:
            head = f.read(100)
        size = os.path.getsize(old)
    except OSError:
        return None
    if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
        return None
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = size // page
    if not page or int.from_bytes(head[28:32], "big") <= pages:
        return None
    copy = old + ".salvage"
    import shutil
    shutil.copyfile(old, copy)
    with open(copy, "r+b") as f:
        f.truncate(pages * page)
        f.seek(28)
        f.write(pages.to_bytes(4, "big"))
    return copy


def _open_schema(path):
    src = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
    try:
        return src, {r[0] for r in src.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError:
        src.close()
        raise


def _salvage_db(old, new, deadline):
    saved, lost = {}, []
    copy = None
    try:
        src, tables = _open_schema(old)
    except sqlite3.DatabaseError as e:
        copy = _cut_copy(old)  # a file cut mid-page: read the pages it still has
        try:
            if copy is None:
                raise
            src, tables = _open_schema(copy)
            lost.append("the pages cut off the end of the file")
        except sqlite3.DatabaseError:
            if copy is not None:
                os.unlink(copy)
            schema.open_database(new).close()
            return saved, ["the whole file: its schema cannot be read (%s)" % e]
    try:
        dst = schema.open_database(new)
        dst.execute("BEGIN")
        for table, cols in _DB_TABLES:
            if table not in tables:
                continue
            n, failed = _copy_table(src, dst, table, cols, deadline)
            saved[table] = n
            if failed:
                lost.append("part of table %s (unreadable pages)" % table)
        sids = [r[0] for r in dst.execute("SELECT id FROM series ORDER BY id")]
        readings = 0
        est = _est(src, "readings") if "readings" in tables else "NULL"
        for sid in sids if "readings" in tables else ():
            base = "SELECT series, t, kind, val, sum, %s FROM readings WHERE series = ?" % est
            n, last, failed = _copy_rows(src, base + " ORDER BY t", (sid,), _READING, dst,
                                         deadline)
            readings += n
            if failed:  # from the end back to the damaged page
                lo = last[1] if last else float("-inf")
                n2, _l, failed2 = _copy_rows(src, base + " AND t > ? ORDER BY t DESC",
                                             (sid, lo), _READING, dst, deadline)
                readings += n2
                lost.append("readings of series %d%s" % (
                    sid, " between two damaged pages" if failed2 else " on a damaged page"))
            if time.monotonic() > deadline:
                lost.append("readings of series after %d: the salvage's time ran out" % sid)
                break
        saved["readings"] = readings
        dst.execute("COMMIT")
        dst.close()
    finally:
        src.close()
        if copy is not None:
            os.unlink(copy)
    return saved, lost


LOST_NODE = "_lost"


def _placeholders(db, jpath, saved, lost):
    """Series the journal's readings refer to that the copy could not save get a row named
    node "_lost", sensor "series-<id>": the readings stay findable, and a new series never
    takes their id (and with it their readings)."""
    import array

    sids = set()
    try:
        j = sqlite3.connect("file:%s?mode=ro" % jpath, uri=True, timeout=5)
        try:
            sids.update(r[0] for r in j.execute("SELECT DISTINCT series FROM rows"))
            for (blob,) in j.execute("SELECT series FROM blocks"):
                if isinstance(blob, bytes):
                    a = array.array("i")
                    a.frombytes(blob[:len(blob) - len(blob) % 4])
                    sids.update(a)
        finally:
            j.close()
    except sqlite3.Error:
        return
    if not sids:
        return
    c = schema.connect(db)
    try:
        have = {r[0] for r in c.execute("SELECT id FROM series")}
        missing = sorted(sids - have)
        if missing:
            c.executemany("INSERT INTO series(id, node, sensor, unit) VALUES (?, ?, ?, NULL)",
                          [(sid, LOST_NODE, "series-%d" % sid) for sid in missing])
            saved["placeholder_series"] = len(missing)
            lost.append("the names of %d series: their journal readings are kept under node"
                        " %s" % (len(missing), LOST_NODE))
    finally:
        c.close()


def _salvage_journal(old, new, deadline):
    """Blocks, rows and seen of a damaged journal, one by one; -> (saved, lost)."""
    saved, lost = {}, []
    try:
        src = sqlite3.connect("file:%s?mode=ro" % old, uri=True, timeout=5)
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as e:
        return saved, ["the whole journal (%s)" % e]
    dst = schema.connect(new)
    dst.executescript(schema.JOURNAL)
    try:
        for table, cols in (("blocks", ("id", "n", "series", "t", "kind", "val")),
                            ("rows", ("id", "series", "t", "kind", "val", "sum", "est")),
                            ("seen", ("node", "address", "t"))):
            insert = "INSERT OR IGNORE INTO %s(%s) VALUES (%s)" % (
                table, ", ".join(cols), ", ".join("?" * len(cols)))
            picks = [_est(src, table) if c == "est" else c for c in cols]
            sel = "SELECT %s FROM %s" % (", ".join(picks), table)
            if table == "seen":
                n, failed = _copy_table(src, dst, table, cols, deadline)
                saved[table] = n
                if failed:
                    lost.append("part of the nodes' last-seen times (rebuilt as they report)")
                continue
            try:
                top = src.execute("SELECT max(id) FROM %s" % table).fetchone()[0] or 0
            except sqlite3.DatabaseError:
                top = None
            n, after, skipped = 0, 0, []
            while True:
                got, last, failed = _copy_rows(src, sel + " WHERE id > ? ORDER BY id", (after,),
                                               insert, dst, deadline)
                n += got
                if last is not None:
                    after = last[0]
                if not failed or top is None or after >= top:
                    break
                skipped.append(after + 1)  # the id after the last readable one
                after += 1
            saved[table] = n
            if skipped:
                what = "block" if table == "blocks" else "row"
                lost.append("%d unreadable %s id(s) of the journal, from %s" % (
                    len(skipped), what, ", ".join(str(i) for i in skipped[:10])))
    finally:
        dst.close()
        src.close()
    return saved, lost


def recover(path, found, journal=False, seconds=60.0):
    """Set the damaged file at `path` aside, start a fresh one, save what can be read;
    -> the report record (also appended to hub.damage.json). `journal`: the file is the
    journal, not the database."""
    # the copy is made beside it first and takes the file's place only when complete: a
    # crash or power loss meanwhile leaves the damaged file where it was, found again at
    # the next start
    fresh = path + ".salvage-new"
    _remove(fresh)
    deadline = time.monotonic() + seconds
    if journal:
        saved, lost = _salvage_journal(path, fresh, deadline)
    else:
        saved, lost = _salvage_db(path, fresh, deadline)
        _placeholders(fresh, schema.journal_path(path), saved, lost)
    moved = set_aside(path)
    for suffix in ("-wal", "-shm", ""):  # the copy's connections are closed: no WAL left
        if os.path.exists(fresh + suffix):
            os.rename(fresh + suffix, path + suffix)
    record = {"time": time.time(), "file": path, "found": found, "moved_to": moved,
              "saved": saved, "not_saved": lost}
    log.critical("DAMAGED %s %s (%s): set aside as %s; a fresh file was started; saved %s;"
                 " not saved: %s", "journal" if journal else "database", path, found, moved,
                 ", ".join("%d %s" % (v, k) for k, v in saved.items()) or "nothing",
                 "; ".join(lost) or "nothing")
    append_report(os.path.dirname(os.path.abspath(path)), record)
    return record


def _remove(path):
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass


def append_report(data_dir, record):
    p = os.path.join(data_dir, REPORT)
    records = read_report(data_dir)
    records.append(record)
    tmp = p + ".tmp"
    with open(tmp, "w") as f:
        json.dump(records, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def read_report(data_dir):
    """The recovery records of a data directory, oldest first ([] when none)."""
    try:
        with open(os.path.join(data_dir, REPORT)) as f:
            out = json.load(f)
        return out if isinstance(out, list) else []
    except (OSError, ValueError):
        return []


def check_and_recover(path, seconds=10.0):
    """At start: check the database at `path` and its journal; recover each one found
    damaged. -> {"database": (state, detail), "journal": (state, detail),
    "recovered": [records]}."""
    out = {"recovered": []}
    for name, p, is_journal in (("database", path, False),
                                ("journal", schema.journal_path(path), True)):
        state, detail = check(p, seconds)
        out[name] = (state, detail)
        if state == "partial":
            log.warning("%s %s: %s", name, p, detail)
        if state == "damaged":
            out["recovered"].append(recover(p, detail, journal=is_journal,
                                            seconds=max(60.0, 6 * seconds)))
    return out
