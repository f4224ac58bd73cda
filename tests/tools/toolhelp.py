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


def hub_rows(data_dir, node=None):
    """[(node, sensor, t)] of every reading in the hub's SQLite file under `data_dir`,
    read-only (while the hub runs or after); [] while the hub has not made its tables.
    Committed readings wait in the journal before they move into `readings`
    (hub/store/journal.py): all count, and a reading stored twice shows twice."""
    import sqlite3

    from smartpark.hub.store import stored_readings
    try:
        return [(nd, sensor, t) for nd, sensor, t, _k, _v in
                stored_readings(os.path.join(data_dir, "hub.sqlite3"), node)]
    except sqlite3.OperationalError as e:
        if "unable to open" in str(e):
            return []
        raise
