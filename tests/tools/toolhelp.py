"""Helpers shared by the tools and HIL tests (imported by name: tests/tools is on sys.path).

`require` is tests/peers.py's (skip locally, fail under CI=true).
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLI = [sys.executable, "-m", "smartpark.tools.cli"]

sys.path.insert(0, os.path.dirname(HERE))  # tests/, for peers
from peers import require  # noqa: E402,F401  (re-exported for the tools/HIL tests)


def smartpark(*args, timeout=180, **kw):
    """Run the real `smartpark` command; returns CompletedProcess (text)."""
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kw)


# The hub commits new readings to its `inbox` table and moves them into `readings`
# when idle (hub/store/sqlite.py): both are durable, so both count as stored. One
# statement reads both (one snapshot, so a compaction running meanwhile is not seen
# half done), and UNION ALL keeps a reading stored twice visible as two rows.
_STORED = ("SELECT s.node, s.sensor, r.t FROM (SELECT series, t FROM readings UNION ALL "
           "SELECT series, t FROM inbox) r JOIN series s ON s.id = r.series")


def hub_rows(data_dir, node=None):
    """[(node, sensor, t)] of every reading in the hub's SQLite file under `data_dir`,
    read-only (while the hub runs or after); [] while the hub has not made its tables."""
    import sqlite3
    c = sqlite3.connect("file:%s?mode=ro" % os.path.join(data_dir, "hub.sqlite3"), uri=True,
                        timeout=10)
    try:
        if node is None:
            return c.execute(_STORED).fetchall()
        return c.execute(_STORED + " WHERE s.node = ?", (node,)).fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise
    finally:
        c.close()
