"""ROHM BH1750FVI: ambient light in lux over I2C.

Follows the BH1750FVI datasheet: instruction set (p. 5: power on 0x01,
one-time H-resolution mode 0x20, max 180 ms), measurement sequence example
(p. 7: a result of 0x8390 = 33680 counts is 33680 / 1.2 = 28067 lx with the
default measurement time MTreg = 69). The part powers down after a one-time
measurement, so each start() powers it on and triggers again.
"""

from compat import const

from drivers import E_BUS, E_NOT_READY, OK

_POWER_ON = const(0x01)
_ONE_TIME_H = const(0x20)
_MEASURE_MS = const(180)


class Driver:
    FIELDS = (("lux", "lx", "v"),)

    def __init__(self, bus, params):
        self._bus = bus
        self._addr = params.get("address", 0x23)
        self._buf = bytearray(2)
        self._on = bytes((_POWER_ON,))
        self._go = bytes((_ONE_TIME_H,))
        self._lux = None
        self.status = OK

    def start(self):
        try:
            self._bus.writeto(self._addr, self._on)
            self._bus.writeto(self._addr, self._go)
        except OSError:
            self.status = E_BUS
        return _MEASURE_MS

    def measure(self):
        self._lux = None
        try:
            self._bus.readfrom_into(self._addr, self._buf)
        except OSError:
            self.status = E_BUS
            return False
        raw = (self._buf[0] << 8) | self._buf[1]
        if raw == 0xFFFF:
            self.status = E_NOT_READY
            return False
        self._lux = raw / 1.2
        self.status = OK
        return True

    def value(self, i):
        return self._lux if i == 0 else None

    def lux(self):
        return self._lux
