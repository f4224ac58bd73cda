"""The hub's two clocks: wall time for timestamps, a step-free time for decisions.

The system's wall clock can step (NTP correcting a wrong start, a misset RTC,
an operator). The hub uses

  - `wall()` for timestamps: the hub time in every ack, `last_seen`, the input
    rule "not more than coap.max_future ahead", retention's cutoff. The hub
    cannot tell which side of a step is right, so it follows the system clock
    (NTP's step is the common case) and says so: each step is logged once, and
    /healthz "clock" and /metrics `smartpark_clock_step_seconds` show it;
  - the monotonic clock for durations: node liveness (hub/registry.py measures
    the time since a node's last report on it, so a step neither sends every
    node offline nor keeps a silent one online);
  - `steady()` for decisions on the time axis of the readings (the rollup
    watermark): wall time that never jumps. It follows the wall clock while
    the two agree within STEP seconds; after a larger step it slews towards
    the new wall time at SLEW (5 %: an hour's step is absorbed over 20 hours),
    so a step forward closes no rollup bucket early and a step back reopens none.

Test seam: with the environment variable SMARTPARK_CLOCK_OFFSET_FILE naming a
file that holds a number of seconds, `wall()` is the system clock plus that
offset, re-read when the file changes -- a wall clock step a test can make
without changing the machine's clock (the monotonic clock is not affected,
just as with a real step).
"""

import logging
import os
import threading
import time

log = logging.getLogger("smartpark.hub")

STEP = 2.0  # s: wall and steady time further apart than this is a step
SLEW = 0.05  # steady time catches up with a step at this fraction of the elapsed time
ENV_OFFSET_FILE = "SMARTPARK_CLOCK_OFFSET_FILE"


class HubClock:
    def __init__(self, offset_file=None):
        self.offset_file = offset_file if offset_file is not None else os.environ.get(
            ENV_OFFSET_FILE) or None
        self._offset = 0.0
        self._offset_mtime = None
        self._offset_checked = 0.0
        self._lock = threading.Lock()
        mono = time.monotonic()
        self._steady = self.wall()
        self._mono = mono
        self._skew = self._steady - mono  # wall minus monotonic at the last look
        self.steps = 0  # wall clock steps seen
        self.last_step = 0.0  # s, the last one (+ forward, - back)
        self.last_step_at = None  # wall time when it was seen
        self.stepping = False  # steady time is still catching up with a step

    def _read_offset(self):
        now = time.monotonic()
        if now - self._offset_checked < 0.05:
            return self._offset
        self._offset_checked = now
        try:
            m = os.stat(self.offset_file).st_mtime_ns
            if m != self._offset_mtime:
                with open(self.offset_file) as f:
                    self._offset = float(f.read().strip() or 0)
                self._offset_mtime = m
        except (OSError, ValueError):
            pass
        return self._offset

    def wall(self):
        """The system's wall clock (with the test seam's offset)."""
        if self.offset_file is None:
            return time.time()
        return time.time() + self._read_offset()

    def __call__(self):
        return self.wall()

    def steady(self):
        """Wall time without steps (see the module); also notices steps (call it often:
        the hub does once a second)."""
        with self._lock:
            mono = time.monotonic()
            wall = self.wall()
            elapsed = max(0.0, mono - self._mono)
            est = self._steady + elapsed
            diff = wall - est
            jump = (wall - mono) - self._skew
            self._skew = wall - mono
            if abs(jump) > STEP:  # the wall clock moved against the monotonic one: a step
                self.steps += 1
                self.last_step = jump
                self.last_step_at = wall
                log.warning("clock: the wall clock stepped by %+.1f s; timestamps and the"
                            " nodes' time follow it, liveness does not notice, rollup closing"
                            " follows at %d %% of real time", jump, SLEW * 100)
            if abs(diff) <= STEP:
                if self.stepping:
                    self.stepping = False
                    log.warning("clock: decisions follow the wall clock again")
                out = max(wall, self._steady)  # never backwards: held until wall catches up
            else:
                self.stepping = True
                adj = SLEW * elapsed
                out = est + max(-adj, min(adj, diff))
                out = max(out, self._steady)  # never backwards
            self._steady, self._mono = out, mono
            return out

    def health(self):
        return {"steps": self.steps, "last_step": self.last_step,
                "last_step_at": self.last_step_at, "catching_up": self.stepping}
