"""Entry point: start the node, and never crash-loop.

A bad config is not an exception here (node.py runs in safe mode). Anything
unexpected is logged to crash.log in flash; an ESP32 then resets after 10 s
(WDT-like, so a transient fault clears), the unix port restarts the node in
the same process after 2 s. Tests and tools may run a bounded number of
cycles with SMARTPARK_CYCLES=<n>, or only empty the outbox with SMARTPARK_DRAIN=1
(exit status 0 when empty, 3 when not; unix port only).

It is also the loader of the app slots (ota.py): before any firmware module is
imported, boot() reads the boot pointer boot.json, puts the slot it names
(app_a or app_b, when the slot holds a whole version) first on sys.path, counts
a trial version's boots and falls back to the previous slot when they exceed
its limit or when importing it raises; a version that hangs is reset by the
watchdog, and each such boot counts too (the reason then says "hung"). This
file and boot.py are never replaced over the air.
"""

import sys

_BOOT = "boot.json"


def _save(doc):
    import json
    import os
    with open(_BOOT + ".tmp", "w") as f:
        json.dump(doc, f)
    os.rename(_BOOT + ".tmp", _BOOT)


def _slot_version(s):
    try:
        with open("app_%s/version" % s) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _fall_back(b, why):
    """Back to the previous slot; `reason` stays for the node to report (ota.rolled_back)."""
    b = {"slot": b.get("prev", "a"), "trial": False, "boots": 0, "prev": b.get("slot"),
         "reason": why, "failed_version": _slot_version(b.get("slot"))}
    _save(b)
    return b


def _watchdog_reset():
    """The last reset was the watchdog's (the simulated board leaves wdt.flag, sim/board.py)."""
    if sys.platform == "esp32":
        import machine
        return machine.reset_cause() == machine.WDT_RESET
    import os
    try:
        os.stat("wdt.flag")
        return True
    except OSError:
        return False


def boot():
    """The boot pointer (dict, or None for the factory code) with "fw", the running version
    (None: the factory code's own)."""
    import json
    try:
        with open(_BOOT) as f:
            b = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(b, dict):
        return None
    if b.get("trial"):
        b["boots"] = b.get("boots", 0) + 1   # a reset, the watchdog's included, is a boot
        if b["boots"] > 1 and _watchdog_reset():
            b["hung"] = b.get("hung", 0) + 1
        if b["boots"] > b.get("max", 3):
            why = "%d boots without an acknowledged report" % (b["boots"] - 1)
            if b.get("hung"):
                why = "hung: %d of %s ended by the watchdog" % (b["hung"], why)
            b = _fall_back(b, why)
        else:
            _save(b)
    s = b.get("slot")
    v = _slot_version(s) if s in ("a", "b") else None
    b["fw"] = v
    if v is not None:
        sys.path.insert(0, "app_%s/lib" % s)
        sys.path.insert(0, "app_" + s)
    return b


def _reset():
    if sys.platform == "esp32":
        import machine
        machine.reset()
    sys.exit(75)   # the unix port: as a reset, its supervisor starts it again


BOOT = boot()
try:
    import asyncio

    from compat import log, tune_gc
    tune_gc()   # before the node's modules load: see compat.tune_gc
    import node
except Exception as e:  # noqa: BLE001 - a new version that does not import goes back
    if BOOT is None or not BOOT.get("trial"):
        raise
    print("[node] firmware", BOOT.get("fw"), "does not import:", repr(e))
    _fall_back(BOOT, "import failed: %r" % e)
    _reset()
node.BOOT = BOOT
if BOOT is not None and BOOT.get("fw"):
    node.FIRMWARE = BOOT["fw"]


def _env(name):
    try:
        import os
        v = os.getenv(name)  # type: ignore[attr-defined]
        return int(v) if v else None
    except (AttributeError, ImportError, ValueError):
        return None


def _note_crash(e):
    try:
        import crashlog  # the last few crashes only, a few hundred bytes (crashlog.py)
        crashlog.note(e)
    except Exception:  # noqa: BLE001 - noting a crash must not crash
        pass


def main():
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
            if BOOT is not None and BOOT.get("trial"):
                _reset()   # a trial version's crash counts as a failed boot on any port
            if sys.platform == "esp32":
                import time
                time.sleep(10)
                import machine
                machine.reset()
            import time
            time.sleep(2)   # (asyncio.run(asyncio.sleep(2)): MicroPython's sleep() is no coroutine)


if __name__ == "__main__":
    sys.exit(main())
