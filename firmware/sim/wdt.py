"""The simulated board's watchdog that resets it (config sim.watchdog: true; sim/board.py).

A thread checks the feeds: when none came for the timeout (a hung loop or a blocked
interpreter), it leaves wdt.flag, for the reset cause WDT_RESET at the next boot, and
kills the process (SIGKILL, status -9 to the supervisor), as the ESP32's WDT resets the
chip. Its own module, so a node without it never holds its code.
"""

import os
import time

FLAG = "wdt.flag"


class ResettingWDT:
    def __init__(self, timeout_ms):
        import _thread
        self.timeout_ms = timeout_ms
        self.fed = 0
        self.last = time.ticks_ms()  # type: ignore[attr-defined]
        _thread.start_new_thread(self._watch, ())

    def feed(self):
        self.fed += 1
        self.last = time.ticks_ms()  # type: ignore[attr-defined]

    def _watch(self):
        while True:
            time.sleep_ms(self.timeout_ms // 8)  # type: ignore[attr-defined]
            if time.ticks_diff(time.ticks_ms(), self.last) > self.timeout_ms:  # type: ignore[attr-defined]
                with open(FLAG, "w") as f:
                    f.write("%d" % self.timeout_ms)
                os.system("kill -9 $PPID")  # type: ignore[attr-defined]
