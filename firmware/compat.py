"""The one place for interpreter shims (MicroPython <-> CPython).

Firmware modules import `const`, the ticks functions, `mem_free`, the async
`sleep_ms` and `exists` from here, so the same files import on CPython (type
checking, host-side unit tests) and run unchanged on MicroPython. The one
other shim is the drivers' blocking `wait_us`/`wait_ms` at the top of
drivers/__init__.py: the house rules keep time.sleep out of a module with
async code, and this one has `sleep_ms`.
"""

import gc
import time

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[no-redef,misc]
        return x

try:
    from time import ticks_add, ticks_diff, ticks_ms  # type: ignore[attr-defined]
except ImportError:  # CPython
    def ticks_ms():  # type: ignore[misc]
        return int(time.monotonic() * 1000) & 0x3FFFFFFF  # type: ignore[attr-defined]

    def ticks_diff(a, b):  # type: ignore[misc,no-redef]
        d = (a - b) & 0x3FFFFFFF
        return d - 0x40000000 if d & 0x20000000 else d

    def ticks_add(a, b):  # type: ignore[misc,no-redef]
        return (a + b) & 0x3FFFFFFF

try:
    from asyncio import sleep_ms  # type: ignore[attr-defined]
except ImportError:  # CPython
    import asyncio as _aio

    async def sleep_ms(ms):  # type: ignore[misc,no-redef]
        await _aio.sleep(ms / 1000)

GC_THRESHOLD = const(2048)   # the least; a 128th of the heap on a bigger board


def tune_gc():
    """Collect garbage after every few KB allocated, not only when the heap is full.

    MicroPython's collector does not move objects: left to run only when an
    allocation fails, it leaves live objects scattered through the heap, and a
    1 KB buffer (a datagram, a pack) later finds no hole big enough although
    the heap has room. Collecting often keeps the free space in few large
    holes: with GC_THRESHOLD, a full report cycle on an ESP32 needs ~10 KB less
    heap (measured with `smartpark firmware size`; docs/firmware-size.md), for a
    collection every 2 KB allocated (its time on an ESP32 is a bench's to measure).
    A collection sweeps the whole
    heap, so a board with megabytes of PSRAM (or the unix port) collects after a
    128th of its heap instead (the same 2 KB up to a 256 KB heap): it has the
    room, and would otherwise spend its time sweeping. main.py calls this before it imports the node."""
    f = getattr(gc, "threshold", None)
    if f is None:
        return
    f(max(GC_THRESHOLD, (gc.mem_free() + gc.mem_alloc()) // 128))


def unload(name):
    """Forget module `name` (dotted) so the GC can take its code and tables back.

    For code a node needs for a moment (the config schema while it validates,
    link-format and discovery while it registers): import it inside the
    function that uses it, then unload it. On CPython (host tests) nothing is
    unloaded: tests hold their own references to these modules."""
    import sys
    if sys.implementation.name != "micropython":
        return
    sys.modules.pop(name, None)
    dot = name.rfind(".")
    if dot > 0:
        parent = sys.modules.get(name[:dot])
        if parent is not None:
            try:
                delattr(parent, name[dot + 1:])
            except AttributeError:
                pass


def exists(path):
    """Does `path` exist (MicroPython has no os.path)?"""
    import os
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def mem_free(collect=False):
    """Free heap in bytes (-1 when the interpreter does not say); after a collection when
    `collect`, so that the figure is what the node's live state leaves, not chance garbage."""
    f = getattr(gc, "mem_free", None)
    if f is None:
        return -1
    if collect:
        gc.collect()
    return f()


def mem_alloc():
    """Allocated heap in bytes (-1 when the interpreter does not say)."""
    f = getattr(gc, "mem_alloc", None)
    return f() if f else -1


def urandom_int(bits):
    """A random integer of `bits` bits from the OS / hardware RNG (os.urandom)."""
    import os
    return int.from_bytes(os.urandom((bits + 7) // 8), "big") & ((1 << bits) - 1)


def log(*parts):
    """One line to the console: the firmware's only logger (no `logging` on device)."""
    print("[node]", *parts)


try:
    from binascii import crc32
except ImportError:  # a port built without binascii.crc32
    def crc32(data, crc=0):  # type: ignore[misc]
        crc ^= 0xFFFFFFFF
        for b in data:
            crc ^= b
            for _ in range(8):
                crc = (crc >> 1) ^ 0xEDB88320 if crc & 1 else crc >> 1
        return crc ^ 0xFFFFFFFF
