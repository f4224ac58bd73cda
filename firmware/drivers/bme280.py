"""Bosch BME280 / BMP280: temperature, pressure (and humidity on the BME280) over I2C.

Follows the BME280 datasheet (BST-BME280-DS002): register map section 5.3
(chip id 0xD0 = 0x60, BMP280 = 0x58; ctrl_hum 0xF2, status 0xF3, ctrl_meas
0xF4, data 0xF7..0xFE), trimming parameters section 4.2.2 (Table 16:
calib00..25 at 0x88..0xA1, calib26..41 at 0xE1..0xF0), forced mode section
3.3.3, and the integer compensation formulas of section 4.2.3 (32-bit
temperature, 64-bit pressure, 32-bit humidity), which give the datasheet's
own results bit for bit (BMP280 datasheet section 3.12 worked example:
adc_T 519888 -> 25.08 degC, adc_P 415148 -> 100653.27 Pa).

Integers are exact on MicroPython (arbitrary precision), so no float rounding
of the ESP32's single-precision floats enters the compensation.
"""

from compat import const

from drivers import E_BUS, E_CHIP, E_NOT_READY, OK

_REG_CALIB0 = const(0x88)
_REG_CALIB26 = const(0xE1)
_REG_ID = const(0xD0)
_REG_CTRL_HUM = const(0xF2)
_REG_STATUS = const(0xF3)
_REG_CTRL_MEAS = const(0xF4)
_REG_DATA = const(0xF7)
_ID_BME280 = const(0x60)
_ID_BMP280 = const(0x58)
_FORCED_X1 = const(0x25)   # osrs_t = x1, osrs_p = x1, mode = forced (section 5.4.5)
_MEASURE_MS = const(10)    # max measurement time, all x1 (section 9.1: 9.3 ms)


def _u16(b, i):
    return b[i] | (b[i + 1] << 8)


def _s16(b, i):
    v = b[i] | (b[i + 1] << 8)
    return v - 65536 if v & 0x8000 else v


def _s8(v):
    return v - 256 if v & 0x80 else v


def _tdiv(a, b):
    """C integer division (truncates toward zero), as the datasheet code does."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


class Driver:
    FIELDS = (("temp", "Cel", "v"), ("press", "Pa", "v"), ("hum", "%RH", "v"))

    def __init__(self, bus, params):
        self._bus = bus
        self._addr = params.get("address", 0x76)
        self._buf = bytearray(8)
        self._forced = bytes((_FORCED_X1,))
        self._cal = bytearray(33)   # 26 bytes from 0x88, 7 from 0xE1
        self._vals = [None, None, None]  # type: list
        self.status = OK
        self.humidity = False
        self.T = self.P = self.H = ()  # type: tuple
        try:
            self._setup()
        except OSError:
            self.status = E_BUS

    def _setup(self):
        bus, a = self._bus, self._addr
        chip = bytearray(1)
        bus.readfrom_mem_into(a, _REG_ID, chip)
        if chip[0] not in (_ID_BME280, _ID_BMP280):
            self.status = E_CHIP
            return
        self.humidity = chip[0] == _ID_BME280
        c = self._cal
        bus.readfrom_mem_into(a, _REG_CALIB0, memoryview(c)[0:26])
        self.T = (_u16(c, 0), _s16(c, 2), _s16(c, 4))
        self.P = (_u16(c, 6),) + tuple(_s16(c, 8 + 2 * i) for i in range(8))
        if self.humidity:
            bus.readfrom_mem_into(a, _REG_CALIB26, memoryview(c)[26:33])
            e4, e5, e6 = c[29], c[30], c[31]
            h4 = (_s8(e4) << 4) | (e5 & 0x0F)
            h5 = (_s8(e6) << 4) | (e5 >> 4)
            self.H = (c[25], _s16(c, 26), c[28], h4, h5, _s8(c[32]))
        self.status = OK

    def start(self):
        if not self.T:
            try:
                self._setup()
            except OSError:
                self.status = E_BUS
            if not self.T:
                return 0
        try:
            if self.humidity:
                self._bus.writeto_mem(self._addr, _REG_CTRL_HUM, b"\x01")
            self._bus.writeto_mem(self._addr, _REG_CTRL_MEAS, self._forced)
        except OSError:
            self.status = E_BUS
        return _MEASURE_MS

    def measure(self):
        self._vals[0] = self._vals[1] = self._vals[2] = None
        if not self.T:
            return False
        b = self._buf
        try:
            st = memoryview(b)[0:1]
            self._bus.readfrom_mem_into(self._addr, _REG_STATUS, st)
            if b[0] & 0x08:
                self.status = E_NOT_READY
                return False
            self._bus.readfrom_mem_into(self._addr, _REG_DATA, b if self.humidity else memoryview(b)[0:6])
        except OSError:
            self.status = E_BUS
            return False
        adc_p = (b[0] << 12) | (b[1] << 4) | (b[2] >> 4)
        adc_t = (b[3] << 12) | (b[4] << 4) | (b[5] >> 4)
        if adc_t == 0x80000:   # skipped / not measured (section 4: reset value)
            self.status = E_NOT_READY
            return False
        t_fine, t = self.compensate_t(adc_t)
        self._vals[0] = t / 100
        p = self.compensate_p(adc_p, t_fine)
        self._vals[1] = p / 256 if p else None
        if self.humidity:
            self._vals[2] = self.compensate_h((b[6] << 8) | b[7], t_fine) / 1024
        self.status = OK
        return True

    def value(self, i):
        return self._vals[i] if i < len(self._vals) else None

    def temperature(self):
        return self._vals[0]

    def pressure(self):
        return self._vals[1]

    def relative_humidity(self):
        return self._vals[2]

    # Section 4.2.3, integer formulas.
    def compensate_t(self, adc_t):
        t1, t2, t3 = self.T
        var1 = (((adc_t >> 3) - (t1 << 1)) * t2) >> 11
        d = (adc_t >> 4) - t1
        var2 = (((d * d) >> 12) * t3) >> 14
        t_fine = var1 + var2
        return t_fine, (t_fine * 5 + 128) >> 8

    def compensate_p(self, adc_p, t_fine):
        p1, p2, p3, p4, p5, p6, p7, p8, p9 = self.P
        var1 = t_fine - 128000
        var2 = var1 * var1 * p6
        var2 = var2 + ((var1 * p5) << 17)
        var2 = var2 + (p4 << 35)
        var1 = ((var1 * var1 * p3) >> 8) + ((var1 * p2) << 12)
        var1 = (((1 << 47) + var1) * p1) >> 33
        if var1 == 0:
            return 0   # avoid division by zero (datasheet)
        p = 1048576 - adc_p
        p = _tdiv(((p << 31) - var2) * 3125, var1)
        var1 = (p9 * (p >> 13) * (p >> 13)) >> 25
        var2 = (p8 * p) >> 19
        return ((p + var1 + var2) >> 8) + (p7 << 4)

    def compensate_h(self, adc_h, t_fine):
        h1, h2, h3, h4, h5, h6 = self.H
        v = t_fine - 76800
        v = ((((adc_h << 14) - (h4 << 20) - (h5 * v)) + 16384) >> 15) * \
            (((((((v * h6) >> 10) * (((v * h3) >> 11) + 32768)) >> 10) + 2097152) * h2 + 8192) >> 14)
        v = v - (((((v >> 15) * (v >> 15)) >> 7) * h1) >> 4)
        v = 0 if v < 0 else v
        v = 419430400 if v > 419430400 else v
        return v >> 12
