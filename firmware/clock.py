"""Node time: the RTC, its correction from the hub, and readings taken before the first sync.

The board's RTC (`board.rtc_ms()`) counts milliseconds but is not trusted
until synced: a fresh ESP32 starts at 2000-01-01. Each stretch of time the
RTC runs without losing power is a *run* with a random 16-bit id kept in RTC
memory (an ESP32 keeps RTC memory across deep sleep, WDT and soft resets, not
across a power cut; on the unix port rtc.mem plays that part).

- Before the first sync of a run, a reading is stored with the raw RTC ms and
  the run id (outbox flag 0).
- The first sync of a run fixes that run's correction, delta0 = hub time -
  RTC, which is persisted (RTC memory and clock.json in flash, the last 8
  runs) and never changed afterwards. Every unsynced reading of the run is
  resolved with delta0, always to the same time, so a resend after a reboot
  carries the same time and the hub's (node, sensor, time) key drops it.
- After a sync, readings are stored with absolute Unix ms (flag 1) using the
  newest correction, so later syncs correct drift for new readings only.
- Readings of a run that ended before any sync (power cut before the hub
  answered) cannot be placed in time; they are dropped and counted in
  "dropped" rather than sent with a made-up time.

The hub's time arrives as a CBOR float64 (protocol/report.py key 1). MicroPython
on the ESP32 has single-precision floats (24-bit mantissa: 128 s steps at
today's epoch), so `ack_time_ms()` turns the float64 bits into integer ms
without ever making a float.
"""

import json
import os

from compat import ticks_diff, ticks_ms

_STATE_FILE = "clock.json"


def ack_time_ms(payload, fallback=None):
    """Hub time (key 1 of the report ack) as integer Unix ms.

    Key 1 is the ack map's first entry (smallest key, written first); its
    float64/float32/uint value is converted exactly. Any other layout falls
    back to the decoded float `fallback` (seconds), or None.
    """
    b = payload
    if len(b) >= 4 and b[0] & 0xE0 == 0xA0 and b[1] == 0x01:
        h = b[2]
        if h == 0xFB and len(b) >= 11:
            return _f64_bits_to_ms(int.from_bytes(bytes(b[3:11]), "big"))
        if h == 0xFA and len(b) >= 7:
            bits = int.from_bytes(bytes(b[3:7]), "big")
            sign, exp, man = bits >> 31, (bits >> 23) & 0xFF, bits & 0x7FFFFF
            return _f64_bits_to_ms((sign << 63) | ((exp - 127 + 1023) << 52) | (man << 29))
        if h == 0xF9:
            bits = (b[3] << 8) | b[4]
            sign, exp, man = bits >> 15, (bits >> 10) & 0x1F, bits & 0x3FF
            if exp == 0 or exp == 0x1F:
                return None
            return _f64_bits_to_ms((sign << 63) | ((exp - 15 + 1023) << 52) | (man << 42))
        if h <= 0x17:
            return h * 1000
        if h == 0x1A and len(b) >= 7:
            return int.from_bytes(bytes(b[3:7]), "big") * 1000
        if h == 0x1B and len(b) >= 11:
            return int.from_bytes(bytes(b[3:11]), "big") * 1000
    if fallback is None:
        return None
    return int(fallback * 1000)


def _f64_bits_to_ms(bits):
    if bits >> 63:
        return None
    exp = (bits >> 52) & 0x7FF
    if exp == 0 or exp == 0x7FF:
        return None
    man = (bits & ((1 << 52) - 1)) | (1 << 52)
    shift = exp - 1075            # value = man * 2**shift
    if shift >= 0:
        return (man << shift) * 1000
    return (man * 1000 + (1 << (-shift - 1))) >> -shift   # rounded to ms


class Clock:
    def __init__(self, board, state):
        """`state` is the dict kept in RTC memory (node.py owns its layout)."""
        self.board = board
        self.state = state
        if "run" not in state:
            state["run"] = (int.from_bytes(os.urandom(2), "big") or 1)
        self.run = state["run"]
        self.delta = state.get("delta")        # newest correction, ms (None: unsynced)
        self.deltas = {}                       # run -> delta0
        self._order = []                       # runs, oldest first (last 8 kept)
        try:
            with open(_STATE_FILE) as f:
                for run, d in json.load(f):
                    self.deltas[run] = d
                    self._order.append(run)
        except (OSError, ValueError, TypeError):
            pass
        if self.run in self.deltas and self.delta is None:
            self.delta = self.deltas[self.run]
        self.syncs = 0
        self._t0 = ticks_ms()

    def synced(self):
        return self.delta is not None

    def uptime_s(self):
        return ticks_diff(ticks_ms(), self._t0) // 1000

    def stamp(self):
        """(flags, run, t) for a reading taken now (flags 1: t is Unix ms)."""
        rtc = self.board.rtc_ms()
        if self.delta is not None:
            return 1, 0, rtc + self.delta
        return 0, self.run, rtc

    def now_ms(self):
        return None if self.delta is None else self.board.rtc_ms() + self.delta

    def sync(self, hub_ms, rtt_ms=0):
        """Take the hub's time (ms) as received now; rtt_ms halves into the one-way delay."""
        if hub_ms is None:
            return
        self.delta = hub_ms + rtt_ms // 2 - self.board.rtc_ms()
        self.state["delta"] = self.delta
        self.syncs += 1
        if self.run not in self.deltas:
            self.deltas[self.run] = self.delta
            self._order.append(self.run)
            while len(self._order) > 8:
                self.deltas.pop(self._order.pop(0), None)
            tmp = _STATE_FILE + ".tmp"
            with open(tmp, "w") as f:
                json.dump([[r, self.deltas[r]] for r in self._order], f)
            os.rename(tmp, _STATE_FILE)

    def resolve(self, flags, run, t):
        """Unix ms of a stored reading; None: not yet (this run, unsynced); -1: never."""
        if flags & 1:
            return t
        d = self.deltas.get(run)
        if d is not None:
            return t + d
        return None if run == self.run else -1
