"""The compiled twins really loaded (yarl's test_quoting_c_loaded).

Without this, a failed Cython build would hide behind the pure-Python
fallback and every other test would still pass. Skipped only when the pure
path is forced on purpose (SMARTPARK_PUREPYTHON=1, where make test also
deselects the `compiled` marker).
"""

import importlib.machinery
import os

import pytest
from smartpark import fast

FORCED_PURE = os.environ.get("SMARTPARK_PUREPYTHON", "") not in ("", "0")


@pytest.mark.compiled
@pytest.mark.skipif(FORCED_PURE, reason="SMARTPARK_PUREPYTHON=1 forces the pure twins")
def test_compiled_twins_loaded():
    assert fast.IMPORT_ERROR is None, "compiled fast/ failed to import: %r" % fast.IMPORT_ERROR
    assert fast.COMPILED is True
    from smartpark.fast import decode, rollup
    for mod in (decode, rollup):
        assert mod.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), mod.__file__
    assert fast.decode_batch is decode.decode_batch
    assert fast.SeriesTable is decode.SeriesTable
    assert fast.Rollups is rollup.Rollups


def test_pure_twins_importable():
    from smartpark.fast import decode_py, rollup_py
    assert callable(decode_py.decode_batch) and rollup_py.Rollups
