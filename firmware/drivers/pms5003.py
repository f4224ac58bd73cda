"""Plantower PMS5003: particulate matter PM1.0 / PM2.5 / PM10 over UART (9600 8N1).

Follows the PMS5003 datasheet, Appendix I "transport protocol - active mode":
a 32-byte frame 0x42 0x4D, frame length (2*13+2 = 28), thirteen big-endian
data words (data 4..6 are PM1.0 / PM2.5 / PM10 in ug/m3 "under atmospheric
environment"), and a check code equal to the 16-bit sum of the 30 bytes
before it. In active mode the part sends a frame every 0.2-2.3 s; measure()
takes the newest whole, valid frame from what the UART holds.

Sleep and warm-up (datasheet Appendix II, and its note that stable data come
at least 30 s after the wake-up, because of the fan): the fan and laser wear
out and draw ~100 mA, so the part sleeps between readings. start() sends the
wake-up command (42 4D E4 00 01 01 74) when the part sleeps and returns the
warm-up left plus 2.5 s, the longest gap between two frames: the newest frame
measure() then takes was sent after the warm-up. measure() refuses to read
before the warm-up is over (status 3) and, after a reading, sends the sleep
command (42 4D E4 00 00 01 73). params: "warmup_ms" (default 30000),
"sleep" (default true; false keeps the fan running, for intervals so short
that the part would hardly sleep). At boot the part's state is unknown: it is
woken and given its whole warm-up. In deep-sleep mode each wake-up therefore
lasts the warm-up (about 33 s with the radio off until the report).
"""

from compat import const, ticks_diff, ticks_ms

from drivers import E_BUS, E_CRC, E_NOT_READY, OK

_FRAME = const(32)
_BUF = const(96)
_GAP_MS = const(2500)    # frames come every 0.2-2.3 s
_WAKE = b"\x42\x4d\xe4\x00\x01\x01\x74"
_SLEEP = b"\x42\x4d\xe4\x00\x00\x01\x73"


class Driver:
    FIELDS = (("pm1", "ug/m3", "v"), ("pm25", "ug/m3", "v"), ("pm10", "ug/m3", "v"))

    def __init__(self, bus, params):
        self._uart = bus
        self._buf = bytearray(_BUF)
        self._n = 0
        self._vals = [None, None, None]  # type: list
        self._warm = int(params.get("warmup_ms", 30000))
        self._sleeps = params.get("sleep", True) is not False
        self._woke = None    # ticks_ms of the wake-up command; None: asleep
        self.status = OK

    def start(self):
        if self._woke is None:
            self._uart.write(_WAKE)
            self._woke = ticks_ms()
            self._n = 0      # what was buffered before is old
        left = self._warm - ticks_diff(ticks_ms(), self._woke)
        return left + _GAP_MS if left > 0 else 0

    def sleep(self):
        """Send the sleep command (the node also calls it before a deep sleep)."""
        if self._woke is not None:
            self._woke = None
            self._uart.write(_SLEEP)

    def _fill(self):
        """Append what the UART holds; keep the newest _BUF bytes."""
        u, b = self._uart, self._buf
        while True:
            avail = u.any()
            if not avail:
                return
            if self._n == _BUF:
                # keep the last frame's worth of bytes, drop older ones
                b[0:_FRAME] = b[_BUF - _FRAME:_BUF]
                self._n = _FRAME
            got = u.readinto(memoryview(b)[self._n:_BUF])
            if not got:
                return
            self._n += got

    def measure(self):
        v = self._vals
        v[0] = v[1] = v[2] = None
        if self._woke is None or ticks_diff(ticks_ms(), self._woke) < self._warm:
            # the fan has not settled: no reading yet
            self.status = E_NOT_READY
            return False
        try:
            self._fill()
        except OSError:
            self.status = E_BUS
            return False
        b, n = self._buf, self._n
        bad = False
        i = n - _FRAME
        while i >= 0:  # newest frame first
            if b[i] == 0x42 and b[i + 1] == 0x4D and b[i + 2] == 0 and b[i + 3] == 28:
                s = 0
                for k in range(i, i + 30):
                    s += b[k]
                if s & 0xFFFF == (b[i + 30] << 8) | b[i + 31]:
                    for f in range(3):
                        j = i + 10 + 2 * f
                        v[f] = (b[j] << 8) | b[j + 1]
                    # consume everything up to the end of this frame
                    rest = n - (i + _FRAME)
                    b[0:rest] = b[i + _FRAME:n]
                    self._n = rest
                    self.status = OK
                    if self._sleeps:
                        self.sleep()
                    return True
                bad = True
            i -= 1
        self.status = E_CRC if bad else E_NOT_READY
        return False

    def value(self, i):
        return self._vals[i] if i < 3 else None

    def pm25(self):
        return self._vals[1]
