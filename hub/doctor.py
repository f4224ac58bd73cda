"""`smartpark hub doctor --data DIR`: what state a hub's data directory is in.

Read-only (it never moves or repairs anything; the hub does that at start) and
safe while the hub runs. It reports:

  - whether a hub holds the directory's lock (and its pid);
  - the database and the journal: size, the result of a time-bounded
    quick_check, and the acknowledged readings still waiting in the journal;
  - damaged files the hub set aside (`*.damaged-<time>`) and, from
    hub.damage.json, what each recovery found, saved and could not save;
  - free space on the filesystem.

Exit code 0 when the current files check out, 1 when one of them is damaged
(the next start of the hub sets it aside and recovers what it can).
"""

import os
import sys

from .faults import LOCK_NAME, holder_pid, locked
from .store import damage, schema


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def report(data_dir, seconds=10.0, out=None):
    """Write the report; -> exit code."""
    out = out or sys.stdout
    w = out.write
    code = 0
    data_dir = os.path.abspath(data_dir)
    w("smartpark hub doctor: %s\n" % data_dir)
    if not os.path.isdir(data_dir):
        w("  no such directory\n")
        return 1
    if locked(data_dir):
        w("  hub: running (pid %s, lock %s)\n" % (
            holder_pid(os.path.join(data_dir, LOCK_NAME)), os.path.join(data_dir, LOCK_NAME)))
    else:
        w("  hub: not running\n")
    db = os.path.join(data_dir, "hub.sqlite3")
    for name, path in (("database", db), ("journal", schema.journal_path(db))):
        state, detail = damage.inspect(path, seconds)
        size = _size(path)
        w("  %s %s: %s (%s)%s\n" % (name, path, state.upper() if state == "damaged" else state,
                                    detail, "" if size is None else ", %d bytes" % size))
        if state == "damaged":
            code = 1
        if name == "database" and state in ("ok", "partial"):
            n = damage.damaged_blocks(path)
            if n:
                w("    journal blocks found damaged and kept in its table damaged_blocks: %d\n"
                  % n)
        if name == "journal" and state in ("ok", "partial"):
            p = damage.journal_pending(path)
            if p is not None:
                w("    waiting to be moved into the database: %d readings in %d blocks, %d"
                  " rows\n" % (p[1], p[0], p[2]))
    aside = sorted(f for f in os.listdir(data_dir) if ".damaged-" in f
                   and not f.endswith(("-wal", "-shm")))
    for f in aside:
        w("  set aside: %s (%s bytes; kept, never deleted: remove it when no longer"
          " needed)\n" % (os.path.join(data_dir, f), _size(os.path.join(data_dir, f))))
    for r in damage.read_report(data_dir):
        w("  recovery at %s: %s was damaged (%s)\n" % (
            _when(r.get("time")), r.get("file"), r.get("found")))
        w("    moved to %s\n" % r.get("moved_to"))
        saved = r.get("saved") or {}
        w("    saved: %s\n" % (", ".join("%d %s" % (v, k) for k, v in saved.items())
                               or "nothing"))
        w("    not saved: %s\n" % ("; ".join(r.get("not_saved") or []) or "nothing"))
    if not aside and not damage.read_report(data_dir):
        w("  no damaged files found so far\n")
    st = os.statvfs(data_dir)
    w("  disk: %d bytes free of %d\n" % (st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize))
    return code


def _when(t):
    import time
    if not isinstance(t, (int, float)):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
