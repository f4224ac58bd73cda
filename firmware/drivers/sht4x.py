"""Sensirion SHT4x (SHT40/41/45): temperature and relative humidity over I2C.

Follows the SHT4x datasheet (v6.5): command 0xFD "measure T & RH with high
precision" (section 4.5, Table 7; max duration 8.3 ms, section 3.2), the
6-byte answer T_msb T_lsb CRC RH_msb RH_lsb CRC checked with the Sensirion
CRC-8 of section 4.4 (poly 0x31, init 0xFF; CRC(0xBEEF) = 0x92), and the
conversion of section 4.6: T = -45 + 175 * S_T / 65535,
RH = -6 + 125 * S_RH / 65535, cropped to 0..100 %RH.
"""

from compat import const

from drivers import E_BUS, E_CRC, OK, sensirion_crc8

_CMD_MEASURE_HIGH = const(0xFD)
_MEASURE_MS = const(9)


class Driver:
    FIELDS = (("temp", "Cel", "v"), ("hum", "%RH", "v"))

    def __init__(self, bus, params):
        self._bus = bus
        self._addr = params.get("address", 0x44)
        self._buf = bytearray(6)
        self._cmd = bytes((_CMD_MEASURE_HIGH,))
        self._vals = [None, None]  # type: list
        self.status = OK

    def start(self):
        try:
            self._bus.writeto(self._addr, self._cmd)
        except OSError:
            self.status = E_BUS
        return _MEASURE_MS

    def measure(self):
        self._vals[0] = self._vals[1] = None
        b = self._buf
        try:
            self._bus.readfrom_into(self._addr, b)
        except OSError:
            self.status = E_BUS
            return False
        if sensirion_crc8(b, 0, 2) != b[2] or sensirion_crc8(b, 3, 5) != b[5]:
            self.status = E_CRC
            return False
        st = (b[0] << 8) | b[1]
        srh = (b[3] << 8) | b[4]
        self._vals[0] = -45 + 175 * st / 65535
        rh = -6 + 125 * srh / 65535
        self._vals[1] = 0.0 if rh < 0 else (100.0 if rh > 100 else rh)
        self.status = OK
        return True

    def value(self, i):
        return self._vals[i] if i < 2 else None

    def temperature(self):
        return self._vals[0]

    def relative_humidity(self):
        return self._vals[1]
