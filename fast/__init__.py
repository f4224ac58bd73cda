"""smartpark.fast: the hot path (SenML-CBOR decode to columns, windowed rollups).

Selector (msgpack/yarl style): the compiled Cython twins unless
SMARTPARK_PUREPYTHON=1 is set or they failed to import, in which case the
pure-Python twins serve the same API. COMPILED says which one is live; a test
marked `compiled` asserts it is True so a broken build cannot hide.
"""

import os

from ._common import (  # noqa: F401
    KIND_NAMES,
    KIND_S,
    KIND_V,
    KIND_VB,
    KIND_VD,
    KIND_VS,
    Batch,
    ClosedBuckets,
    Sketch,
    split_series,
)

PUREPYTHON = os.environ.get("SMARTPARK_PUREPYTHON", "") not in ("", "0")
IMPORT_ERROR = None

if not PUREPYTHON:
    try:
        from .decode import DEFAULT_TABLE, SeriesTable, decode_batch
        from .rollup import Rollups
        COMPILED = True
    except ImportError as e:  # not built: fall back, and let the `compiled` test say so
        IMPORT_ERROR = e
        PUREPYTHON = True

if PUREPYTHON:
    from .decode_py import DEFAULT_TABLE, SeriesTable, decode_batch  # noqa: F811
    from .rollup_py import Rollups  # noqa: F811
    COMPILED = False

__all__ = [
    "COMPILED", "DEFAULT_TABLE", "IMPORT_ERROR", "Batch", "ClosedBuckets", "KIND_NAMES",
    "KIND_S", "KIND_V", "KIND_VB", "KIND_VD", "KIND_VS", "Rollups", "SeriesTable", "Sketch",
    "decode_batch", "split_series",
]
