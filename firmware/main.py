"""Entry point: start the node, and never crash-loop.

A bad config is not an exception here (node.py runs in safe mode). Anything
unexpected is logged to crash.log in flash; an ESP32 then resets after 10 s
(WDT-like, so a transient fault clears), the unix port restarts the node in
the same process after 2 s. Tests and tools may run a bounded number of
cycles with SMARTPARK_CYCLES=<n>, or only empty the outbox with SMARTPARK_DRAIN=1
(exit status 0 when empty, 3 when not; unix port only).
"""

import asyncio
import sys

from compat import log, tune_gc

tune_gc()   # before the node's modules load: see compat.tune_gc


def _env(name):
    try:
        import os
        v = os.getenv(name)  # type: ignore[attr-defined]
        return int(v) if v else None
    except (AttributeError, ImportError, ValueError):
        return None


def _note_crash(e):
    try:
        with open("crash.log", "a") as f:
            f.write("%s: %s\n" % (type(e).__name__, e))
    except OSError:
        pass


def main():
    import node
    while True:
        try:
            n = node.Node()
            if _env("SMARTPARK_DRAIN"):
                return 0 if asyncio.run(n.run_drain()) else 3
            asyncio.run(n.run(_env("SMARTPARK_CYCLES")))
            return 0
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - the last line of defence
            log("crash:", repr(e))
            if hasattr(sys, "print_exception"):
                sys.print_exception(e)  # type: ignore[attr-defined]
            _note_crash(e)
            if sys.platform == "esp32":
                import time
                time.sleep(10)
                import machine
                machine.reset()
            asyncio.run(asyncio.sleep(2))


if __name__ == "__main__":
    sys.exit(main())
