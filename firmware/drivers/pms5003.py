"""Plantower PMS5003: particulate matter PM1.0 / PM2.5 / PM10 over UART (9600 8N1).

Follows the PMS5003 datasheet, Appendix I "transport protocol - active mode":
a 32-byte frame 0x42 0x4D, frame length (2*13+2 = 28), thirteen big-endian
data words (data 4..6 are PM1.0 / PM2.5 / PM10 in ug/m3 "under atmospheric
environment"), and a check code equal to the 16-bit sum of the 30 bytes
before it. In active mode the part sends a frame every 0.2-2.3 s; measure()
takes the newest whole, valid frame from what the UART holds.
"""

from compat import const

from drivers import E_BUS, E_CRC, E_NOT_READY, OK

_FRAME = const(32)
_BUF = const(96)


class Driver:
    FIELDS = (("pm1", "ug/m3", "v"), ("pm25", "ug/m3", "v"), ("pm10", "ug/m3", "v"))

    def __init__(self, bus, params):
        self._uart = bus
        self._buf = bytearray(_BUF)
        self._n = 0
        self._vals = [None, None, None]  # type: list
        self.status = OK

    def start(self):
        return 0

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
                    return True
                bad = True
            i -= 1
        self.status = E_CRC if bad else E_NOT_READY
        return False

    def value(self, i):
        return self._vals[i] if i < 3 else None

    def pm25(self):
        return self._vals[1]
