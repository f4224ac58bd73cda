"""smartpark.fast: the hub's hot path, and the one selector of its compiled twins.

Selector (msgpack/yarl style): every name below is the compiled Cython twin
unless SMARTPARK_PUREPYTHON=1 is set or the extension failed to import; then
it is the pure twin with the same API, or None for an extension that has no
pure twin (the hub then takes its reference path). This module is the only
place that tries the imports: everything else imports these names.

Twins (compiled, else pure):
    decode_batch, SeriesTable, DEFAULT_TABLE   decode.pyx      | decode_py.py
    Rollups                                    rollup.pyx      | rollup_py.py
    batch_rows                                 rows.pyx        | rows_py.py
    encode_ack, ack_head                       ack.pyx         | protocol/report.py
    OscoreTable (the hub's OSCORE contexts)    oscore.pyx      | oscore_py.py

Compiled only (else None):
    udp          udp.pyx     recvmmsg front for POST /r (else aiocoap serves it)
    loadgen      loadgen.pyx the load generator's C loop (tools/coapload.py)
    Lane, NewestTime, Latest, Block
                 lane.pyx    the column lane (else every report takes the row path)
    mover, BlockMover
                 mover.pyx   journal blocks into `readings` (else Python's sqlite3)

COMPILED is True when the core twins (decode and rollup) are compiled;
EXTENSIONS says, per extension, whether its compiled module is in use, and
UNAVAILABLE why not. A test marked `compiled` asserts the compiled modules
loaded, so a broken build cannot hide behind the fallbacks.

Import the names from here, not the submodules: `import smartpark.fast.udp`
loads the extension whatever SMARTPARK_PUREPYTHON says.
"""

import importlib
import os
import sys

from . import kinds  # noqa: F401 - the one numbering of value kinds
from ._common import (  # noqa: F401
    EST_LABEL,
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

EXTENSIONS = {}   # extension -> True when its compiled module is in use
UNAVAILABLE = {}  # extension -> why its compiled module is not in use


def _extension(name):
    """The compiled module smartpark.fast.<name>, or None (the reason in UNAVAILABLE)."""
    EXTENSIONS[name] = False
    if PUREPYTHON:
        UNAVAILABLE[name] = "SMARTPARK_PUREPYTHON=1"
        return None
    try:
        mod = importlib.import_module(__name__ + "." + name)
    except ImportError as e:
        UNAVAILABLE[name] = "not built (%s)" % e
        return None
    EXTENSIONS[name] = True
    return mod


def _unusable(name, reason):
    EXTENSIONS[name] = False
    UNAVAILABLE[name] = reason


# ---- twins

_decode = _extension("decode")
if _decode is not None:
    from .decode import DEFAULT_TABLE, SeriesTable, decode_batch
else:
    from .decode_py import DEFAULT_TABLE, SeriesTable, decode_batch

_rollup = _extension("rollup")
if _rollup is not None:
    from .rollup import Rollups
else:
    from .rollup_py import Rollups

_rows = _extension("rows")
if _rows is not None:
    from .rows import batch_rows
else:
    from .rows_py import batch_rows

_ack = _extension("ack")
if _ack is not None:
    from .ack import ack_head, encode_ack
else:
    from smartpark.protocol.report import ack_head, encode_ack

_oscore = _extension("oscore")
if _oscore is not None:
    from .oscore import Table as OscoreTable  # noqa: F401 - the selector exports it
else:
    from .oscore_py import Table as OscoreTable  # noqa: F401 - the selector exports it
    if not PUREPYTHON:  # setup.py skips it where OpenSSL's headers are missing
        UNAVAILABLE["oscore"] += "; it is built only where OpenSSL's headers are (libssl-dev)"

COMPILED = EXTENSIONS["decode"] and EXTENSIONS["rollup"]
# why the core is not compiled when it should be (None when compiled or forced pure)
IMPORT_ERROR = None if COMPILED or PUREPYTHON else "; ".join(
    "%s: %s" % (n, UNAVAILABLE[n]) for n in ("decode", "rollup") if n in UNAVAILABLE)

# ---- compiled only

udp = _extension("udp")
if udp is not None and not (sys.platform.startswith("linux") and udp.AVAILABLE):
    _unusable("udp", "recvmmsg/sendmmsg need Linux (platform %s)" % sys.platform)
    udp = None

loadgen = _extension("loadgen")

_lane = _extension("lane")
if _lane is not None:
    from .lane import Block, Lane, Latest, NewestTime
else:
    Block = Lane = Latest = NewestTime = None

mover = _extension("mover")
if mover is not None and mover.usable() is not None:  # two SQLite libraries in one process
    _unusable("mover", mover.usable())
    mover = None
BlockMover = mover.BlockMover if mover is not None else None

__all__ = [
    "COMPILED", "DEFAULT_TABLE", "EXTENSIONS", "IMPORT_ERROR", "PUREPYTHON", "UNAVAILABLE",
    "Batch", "Block", "BlockMover", "ClosedBuckets", "KIND_NAMES", "KIND_S", "KIND_V",
    "KIND_VB", "KIND_VD", "KIND_VS", "Lane", "Latest", "NewestTime", "Rollups", "SeriesTable",
    "Sketch", "ack_head", "batch_rows", "decode_batch", "encode_ack", "kinds", "loadgen",
    "mover", "split_series", "udp",
]
