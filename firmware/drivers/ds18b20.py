"""Maxim DS18B20: temperature over 1-Wire.

Follows the DS18B20 datasheet (19-7487): ROM commands (Skip ROM 0xCC, Match
ROM 0x55), function commands (Convert T 0x44, max 750 ms at 12 bits; Read
Scratchpad 0xBE), the 9-byte scratchpad whose byte 8 is the Dallas/Maxim
CRC-8 (x^8 + x^5 + x^4 + 1, "CRC Generation" section), and the temperature
register format of Table 1 (signed 16-bit, 1/16 degC per LSB: 0x0191 =
+25.0625 degC, 0xFF5E = -10.125 degC). The bus is a MicroPython
`onewire.OneWire` (reset, writebyte, readinto, select_rom).
"""

from compat import const

from drivers import E_BUS, E_CRC, E_NOT_READY, OK

_SKIP_ROM = const(0xCC)
_CONVERT_T = const(0x44)
_READ_SCRATCH = const(0xBE)
_CONVERT_MS = const(750)


def crc8_maxim(buf, end=None):
    """Dallas/Maxim 1-Wire CRC-8 (reflected polynomial 0x8C), over buf[0:end]."""
    crc = 0
    for i in range(len(buf) if end is None else end):
        b = buf[i]
        for _ in range(8):
            mix = (crc ^ b) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            b >>= 1
    return crc


class Driver:
    FIELDS = (("temp", "Cel", "v"),)

    def __init__(self, bus, params):
        self._ow = bus
        rom = params.get("rom")
        self._rom = bytes(int(rom[i:i + 2], 16) for i in range(0, 16, 2)) if rom else None
        self._buf = bytearray(9)
        self._t = None
        self.status = OK

    def _select(self):
        if not self._ow.reset():
            raise OSError(19)  # no presence pulse
        if self._rom is None:
            self._ow.writebyte(_SKIP_ROM)
        else:
            self._ow.select_rom(self._rom)

    def start(self):
        try:
            self._select()
            self._ow.writebyte(_CONVERT_T)
        except OSError:
            self.status = E_BUS
        return _CONVERT_MS

    def measure(self):
        self._t = None
        b = self._buf
        try:
            self._select()
            self._ow.writebyte(_READ_SCRATCH)
            self._ow.readinto(b)
        except OSError:
            self.status = E_BUS
            return False
        if b[4] == 0 and b[0] == b[1] == b[8] == 0:
            self.status = E_BUS   # all zeros: a shorted bus passes the CRC, reject it
            return False
        if crc8_maxim(b, 8) != b[8]:
            self.status = E_CRC
            return False
        raw = b[0] | (b[1] << 8)
        if raw & 0x8000:
            raw -= 65536
        if b[4] & 0x80:  # config byte bit 7 is always 0 on a real part
            self.status = E_NOT_READY
            return False
        self._t = raw / 16
        self.status = OK
        return True

    def value(self, i):
        return self._t if i == 0 else None

    def temperature(self):
        return self._t
