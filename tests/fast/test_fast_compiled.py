"""The selector (smartpark.fast) picks what it says, and the compiled twins really loaded.

Without the `compiled` tests a failed Cython build would hide behind the
pure-Python fallbacks and every other test would still pass (yarl's
test_quoting_c_loaded). They are deselected in make test's second run
(SMARTPARK_PUREPYTHON=1, -m "not compiled"); the selector's pure side is
checked in a child process here, in both runs.
"""

import importlib
import importlib.machinery
import json
import os
import subprocess
import sys

import pytest
from peers import require
from smartpark import fast

FORCED_PURE = fast.PUREPYTHON

# per extension: the selector's names that must be the compiled module's own
SELECTED = {
    "decode": ("decode_batch", "SeriesTable", "DEFAULT_TABLE"),
    "rollup": ("Rollups",),
    "rows": ("batch_rows",),
    "ack": ("encode_ack", "ack_head"),
    "oscore": ("OscoreTable",),
    "udp": (),
    "loadgen": (),
    "lane": ("Lane", "NewestTime", "Latest", "Block"),
    "mover": ("BlockMover",),
}
MODULES = ("udp", "loadgen", "mover")  # exported as the module itself
# a built extension the selector may leave out for a reason of the machine, not the build
PLATFORM_REASONS = {"udp": "need Linux", "mover": "SQLite"}


def test_every_extension_is_known_to_the_selector():
    pyx = {os.path.splitext(f)[0] for f in os.listdir(os.path.dirname(fast.__file__))
           if f.endswith(".pyx")}
    assert pyx == set(SELECTED) == set(fast.EXTENSIONS)


@pytest.mark.compiled
@pytest.mark.parametrize("name", sorted(SELECTED))
def test_extension_built_and_selected(name):
    if FORCED_PURE:
        pytest.skip("SMARTPARK_PUREPYTHON=1 forces the pure twins")
    try:
        mod = importlib.import_module("smartpark.fast." + name)
    except ImportError as e:
        require(False, "smartpark.fast.%s is not built (python setup.py build_ext --inplace): %s"
                % (name, e))
    assert mod.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), mod.__file__
    if not fast.EXTENSIONS[name]:
        reason = fast.UNAVAILABLE[name]
        assert PLATFORM_REASONS.get(name, "\0") in reason, reason
        return
    assert name not in fast.UNAVAILABLE
    for attr in SELECTED[name]:
        assert getattr(fast, attr) is getattr(mod, attr), attr
    if name in MODULES:
        assert getattr(fast, name) is mod


@pytest.mark.compiled
def test_core_compiled():
    if FORCED_PURE:
        pytest.skip("SMARTPARK_PUREPYTHON=1 forces the pure twins")
    assert fast.IMPORT_ERROR is None, "compiled fast/ failed to import: %s" % fast.IMPORT_ERROR
    assert fast.COMPILED is True


def test_purepython_selects_every_pure_twin():
    """In a child process with SMARTPARK_PUREPYTHON=1: no extension is loaded, each says why,
    the twins are the pure ones and the compiled-only names are None."""
    code = r"""
import json, sys
from smartpark import fast
from smartpark.fast import decode_py, rollup_py, rows_py
from smartpark.protocol import report
print(json.dumps({
    "compiled": fast.COMPILED,
    "extensions": fast.EXTENSIONS,
    "unavailable": fast.UNAVAILABLE,
    "pure": [fast.decode_batch is decode_py.decode_batch, fast.SeriesTable is decode_py.SeriesTable,
             fast.Rollups is rollup_py.Rollups, fast.batch_rows is rows_py.batch_rows,
             fast.encode_ack is report.encode_ack, fast.ack_head is report.ack_head],
    "none": [getattr(fast, n) is None for n in ("udp", "loadgen", "mover", "Lane", "NewestTime",
                                                 "Latest", "Block", "BlockMover")],
    "loaded": sorted(m for m in sys.modules if m.startswith("smartpark.fast.")
                     and not m.endswith("_py") and m.split(".")[-1] in fast.EXTENSIONS),
}))
"""
    env = dict(os.environ, SMARTPARK_PUREPYTHON="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    got = json.loads(out)
    assert got["compiled"] is False
    assert set(got["extensions"]) == set(SELECTED) and not any(got["extensions"].values())
    assert got["unavailable"] == {n: "SMARTPARK_PUREPYTHON=1" for n in SELECTED}
    assert all(got["pure"]) and all(got["none"])
    assert got["loaded"] == []  # not even imported


def test_pure_twins_importable():
    from smartpark.fast import decode_py, rollup_py, rows_py
    assert callable(decode_py.decode_batch) and rollup_py.Rollups and rows_py.batch_rows
