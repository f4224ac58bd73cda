"""Simulated parts for sim/board.py, answering like the real ones at register level.

Each part takes a `source` callable giving the physical quantities it should
report now (the seeded World, or fixed values in tests) and encodes them the
way the part does: BME280 raw ADC words under its trimming parameters,
Sensirion words with CRC-8, BH1750 counts, PMS5003 frames with checksum,
a DS18B20 scratchpad with Maxim CRC. Tests can instead force raw words
(`raw = ...`) to check a driver against the datasheets' worked examples.

The buses mirror MicroPython's machine.I2C / machine.UART / onewire.OneWire /
machine.Pin / machine.ADC methods that the drivers call; a missing address
raises OSError(ENODEV) like a NACK does on a board, and `fault_rate` makes a
share of transactions fail (EIO) to exercise the drivers' status flags.
"""

import random
import struct

_ENODEV = 19
_EIO = 5


# The parts' CRCs are computed here on their own, not with the drivers' functions:
# a driver test against a part that shares the driver's CRC code could not fail.

def sensirion_word(v):
    """Two bytes of `v` followed by their Sensirion CRC-8 (the part's own framing)."""
    b = bytearray(((v >> 8) & 0xFF, v & 0xFF, 0))
    crc = 0xFF
    for x in b[0:2]:
        crc ^= x
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    b[2] = crc
    return bytes(b)


def maxim_crc(data):
    crc = 0
    for b in data:
        for _ in range(8):
            mix = (crc ^ b) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            b >>= 1
    return crc


class SimI2C:
    """machine.I2C look-alike: devices keyed by 7-bit address, each with write()/read()."""

    def __init__(self, fault_rate=0.0, rng=None):
        self.devices = {}
        self.fault_rate = fault_rate
        self._rng = rng or random

    def _dev(self, addr):
        d = self.devices.get(addr)
        if d is None:
            raise OSError(_ENODEV)
        if self.fault_rate and self._rng.random() < self.fault_rate:
            raise OSError(_EIO)
        return d

    def scan(self):
        return sorted(self.devices)

    def writeto(self, addr, buf, stop=True):
        self._dev(addr).write(bytes(buf))
        return 1

    def readfrom_into(self, addr, buf, stop=True):
        data = self._dev(addr).read(len(buf))
        buf[0:len(buf)] = data

    def writeto_mem(self, addr, reg, buf, addrsize=8):
        self._dev(addr).write(bytes((reg,)) + bytes(buf))

    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        d = self._dev(addr)
        d.write(bytes((reg,)))
        buf[0:len(buf)] = d.read(len(buf))


# --- Bosch BME280 / BMP280 --------------------------------------------------

# Trimming parameters: T and P are the BMP280 datasheet's worked example
# (section 3.12); H are those of a typical production BME280.
DEFAULT_TP = (27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
DEFAULT_H = (75, 362, 0, 313, 50, 30)


def bme280_calibration(tp=DEFAULT_TP, h=DEFAULT_H):
    """(calib00..25 bytes, calib26..41 bytes) as the part stores them (Table 16)."""
    a = bytearray(struct.pack("<HhhHhhhhhhhh", *tp)) + bytearray(2)
    a[25] = h[0]
    h4, h5 = h[3], h[4]
    b = bytearray(struct.pack("<hB", h[1], h[2]))
    b += bytes(((h4 >> 4) & 0xFF, (h4 & 0x0F) | ((h5 & 0x0F) << 4), (h5 >> 4) & 0xFF,
                h[5] & 0xFF))
    b += bytearray(16 - len(b))
    return bytes(a), bytes(b)


class SimBME280:
    def __init__(self, source=None, chip_id=0x60, tp=DEFAULT_TP, h=DEFAULT_H):
        self.mem = bytearray(256)
        self.mem[0xD0] = chip_id
        c0, c26 = bme280_calibration(tp, h)
        self.mem[0x88:0x88 + 26] = c0
        self.mem[0xE1:0xE1 + 16] = c26
        self.mem[0xFA] = 0x80   # temperature reset value 0x80000 (not measured)
        self.tp, self.h = tp, h
        self.source = source
        self.raw = None          # (adc_t, adc_p, adc_h) to force in tests
        self._ptr = 0
        self.conversions = 0

    def write(self, data):
        self._ptr = data[0]
        for i, b in enumerate(data[1:]):
            r = (data[0] + i) & 0xFF
            self.mem[r] = b
            if r == 0xE0 and b == 0xB6:
                pass   # soft reset: trimming stays, as on the part
            if r == 0xF4 and b & 0x03 in (1, 2):
                self._convert()

    def read(self, n):
        out = bytes(self.mem[(self._ptr + i) & 0xFF] for i in range(n))
        self._ptr = (self._ptr + n) & 0xFF
        return out

    def _convert(self):
        self.conversions += 1
        if self.raw is not None:
            at, ap, ah = self.raw
        else:
            t, p, rh = self.source()
            at = _bisect(lambda x: self._t(x) / 5120.0, t, 0, 1 << 20)
            tf = self._t(at)
            ap = _bisect(lambda x: -self._p(x, tf), -p, 0, 1 << 20)
            ah = _bisect(lambda x: self._h(x, tf), rh, 0, 1 << 16)
        m = self.mem
        m[0xF7], m[0xF8], m[0xF9] = (ap >> 12) & 0xFF, (ap >> 4) & 0xFF, (ap & 0x0F) << 4
        m[0xFA], m[0xFB], m[0xFC] = (at >> 12) & 0xFF, (at >> 4) & 0xFF, (at & 0x0F) << 4
        if m[0xD0] == 0x60:
            m[0xFD], m[0xFE] = (ah >> 8) & 0xFF, ah & 0xFF
        m[0xF4] &= 0xFC   # back to sleep mode after a forced conversion

    # Datasheet section 8.1 (double precision), used only to invert the part.
    def _t(self, adc_t):
        t1, t2, t3 = self.tp[0:3]
        v1 = (adc_t / 16384.0 - t1 / 1024.0) * t2
        v2 = (adc_t / 131072.0 - t1 / 8192.0) ** 2 * t3
        return v1 + v2

    def _p(self, adc_p, t_fine):
        p1, p2, p3, p4, p5, p6, p7, p8, p9 = self.tp[3:12]
        v1 = t_fine / 2.0 - 64000.0
        v2 = v1 * v1 * p6 / 32768.0
        v2 = v2 + v1 * p5 * 2.0
        v2 = v2 / 4.0 + p4 * 65536.0
        v1 = (p3 * v1 * v1 / 524288.0 + p2 * v1) / 524288.0
        v1 = (1.0 + v1 / 32768.0) * p1
        if v1 == 0:
            return 0.0
        p = 1048576.0 - adc_p
        p = (p - v2 / 4096.0) * 6250.0 / v1
        return p + (p9 * p * p / 2147483648.0 + p * p8 / 32768.0 + p7) / 16.0

    def _h(self, adc_h, t_fine):
        h1, h2, h3, h4, h5, h6 = self.h
        v = t_fine - 76800.0
        v = (adc_h - (h4 * 64.0 + h5 / 16384.0 * v)) * \
            (h2 / 65536.0 * (1.0 + h6 / 67108864.0 * v * (1.0 + h3 / 67108864.0 * v)))
        v = v * (1.0 - h1 * v / 524288.0)
        return min(100.0, max(0.0, v))


def _bisect(f, target, lo, hi):
    """Smallest integer x in [lo, hi) with f(x) >= target, f non-decreasing."""
    while lo < hi - 1:
        mid = (lo + hi) // 2
        if f(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi if hi < (1 << 20) else lo


# --- Sensirion SHT4x / SCD4x, ROHM BH1750 -------------------------------------

class SimSHT4x:
    def __init__(self, source=None):
        self.source = source
        self.raw = None   # (S_T, S_RH)
        self._out = b""
        self.corrupt = False

    def write(self, data):
        if data[0] == 0xFD:
            if self.raw is not None:
                st, srh = self.raw
            else:
                t, rh = self.source()
                st = int(round((t + 45) * 65535 / 175))
                srh = int(round((rh + 6) * 65535 / 125))
            out = bytearray(sensirion_word(st) + sensirion_word(srh))
            if self.corrupt:
                out[4] ^= 0x01
            self._out = bytes(out)
        elif data[0] == 0x94:   # soft reset
            self._out = b""

    def read(self, n):
        if not self._out:
            raise OSError(_EIO)   # no measurement pending: the part NACKs the read
        out, self._out = self._out[:n], b""
        return out


class SimSCD4x:
    """SCD41 at command level: periodic mode (5 s), single shot 0x219D (5 s), stop 0x3F86.

    In periodic mode the part NACKs measure_single_shot (datasheet 3.6); a
    single shot's data are ready 5 s after the command (3.10.1).
    """

    def __init__(self, source=None, clock=None, period_s=5.0, periodic=False):
        self.source = source
        self.raw = None   # (co2, S_T, S_RH)
        self.clock = clock
        self.period = period_s
        self._periodic = periodic
        self._shot = None     # time of a pending single shot
        self._since = None    # time periodic measurement was started
        self._last = None
        self._out = b""

    def _ready(self):
        if self._shot is not None:
            return self.clock is None or self.clock() - self._shot >= self.period
        if not self._periodic:
            return False
        if self.clock is None:
            return True
        now = self.clock()
        since = self._last if self._last is not None else self._since
        return since is None or now - since >= self.period   # first sample 5 s after the start

    def write(self, data):
        cmd = (data[0] << 8) | data[1]
        if cmd == 0x21B1:
            self._periodic = True
            self._since = self.clock() if self.clock else None
            self._last = None
            self._out = b""
        elif cmd == 0x3F86:
            self._periodic = False
        elif cmd == 0x219D:
            if self._periodic:
                raise OSError(_EIO)
            self._shot = self.clock() if self.clock else 0.0
        elif cmd == 0xE4B8:
            self._out = sensirion_word(0x8006 if self._ready() else 0x8000)
        elif cmd == 0xEC05:
            if self.raw is not None:
                co2, st, srh = self.raw
            else:
                c, t, rh = self.source()
                co2 = int(round(c))
                st = int((t + 45) * 65536 / 175)
                srh = int(rh * 65536 / 100)
            if self._shot is not None and not self._ready():
                self._out = b""          # no data yet: the read gets nothing valid
                return
            self._out = sensirion_word(co2) + sensirion_word(st) + sensirion_word(srh)
            self._last = self.clock() if self.clock else None
            self._shot = None

    def read(self, n):
        if not self._out:
            raise OSError(_EIO)   # nothing to answer: the part NACKs the read
        out, self._out = self._out[:n], b""
        return out


class SimBH1750:
    def __init__(self, source=None):
        self.source = source
        self.raw = None
        self._on = False
        self._out = b"\xff\xff"

    def write(self, data):
        c = data[0]
        if c == 0x01:
            self._on = True
        elif c == 0x00:
            self._on = False
        elif c == 0x20 and self._on:
            counts = self.raw if self.raw is not None else min(65535, int(self.source() * 1.2))
            self._out = bytes(((counts >> 8) & 0xFF, counts & 0xFF))
            self._on = False   # one-time mode powers down afterwards

    def read(self, n):
        return self._out[:n]


# --- Plantower PMS5003 (UART) -------------------------------------------------

def pms5003_frame(pm_cf1, pm_atm, counts=(0, 0, 0, 0, 0, 0)):
    words = tuple(pm_cf1) + tuple(pm_atm) + tuple(counts) + (0,)
    body = b"\x42\x4d" + struct.pack(">H", 28) + struct.pack(">13H", *words)
    return body + struct.pack(">H", sum(body) & 0xFFFF)


class SimUART:
    """machine.UART look-alike fed by a PMS5003 that sends one frame per second.

    The part follows the sleep (42 4D E4 00 00 01 73) and wake-up (42 4D E4 00 01
    01 74) commands: asleep it sends nothing; for `warmup_s` after a wake-up (or
    the power-on) its fan has not settled and its frames read half the true
    values, counted in `unsettled`. `sleeps` / `wakes` count the commands.
    """

    SLEEP = b"\x42\x4d\xe4\x00\x00\x01\x73"
    WAKE = b"\x42\x4d\xe4\x00\x01\x01\x74"

    def __init__(self, source=None, clock=None, warmup_s=30.0):
        self.source = source
        self.clock = clock
        self.warmup_s = warmup_s
        self.rx = bytearray()
        self._next = None
        self.asleep = False
        self.woke = clock() if clock else None
        self.sleeps = 0
        self.wakes = 0
        self.unsettled = 0

    def feed(self, data):
        self.rx += data

    def write(self, data):
        data = bytes(data)
        if data == self.SLEEP:
            self.asleep = True
            self.sleeps += 1
        elif data == self.WAKE:
            if self.asleep or self.woke is None:
                self.woke = self.clock() if self.clock else None
            self.asleep = False
            self.wakes += 1
            self._next = self.woke      # the first frame comes right after the wake-up
        return len(data)

    def _produce(self):
        if self.source is None or self.clock is None:
            return
        now = self.clock()
        if self.asleep:
            return
        if self._next is None:
            self._next = now
        skip = int(now - self._next) - 2
        if skip > 0:   # frames a UART FIFO would have overwritten: only the last 3 matter
            if self.woke is not None:
                self.unsettled += max(0, min(skip, int(self.woke + self.warmup_s - self._next)))
            self._next += skip
        n = 0
        while self._next <= now and n < 3:
            pm1, pm25, pm10 = self.source()
            atm = (int(pm1), int(pm25), int(pm10))
            if self.woke is not None and self._next - self.woke < self.warmup_s:
                atm = (atm[0] // 2, atm[1] // 2, atm[2] // 2)   # the fan has not settled
                self.unsettled += 1
            self.rx += pms5003_frame(atm, atm)
            self._next += 1.0
            n += 1
        if self._next <= now:
            self._next = now + 1.0

    def any(self):
        self._produce()
        return len(self.rx)

    def readinto(self, buf):
        n = min(len(buf), len(self.rx))
        if not n:
            return None
        buf[0:n] = self.rx[0:n]
        self.rx = self.rx[n:]
        return n


# --- Maxim DS18B20 (1-Wire) -------------------------------------------------

class SimOneWire:
    """onewire.OneWire look-alike with DS18B20s answering ROM and function commands."""

    def __init__(self):
        self.devices = []   # SimDS18B20
        self._state = "idle"
        self._sel = []
        self._out = b""

    def reset(self, required=False):
        self._state = "rom"
        self._sel = list(self.devices)
        present = bool(self.devices)
        if required and not present:
            raise OSError(_ENODEV)
        return present

    def select_rom(self, rom):
        self.writebyte(0x55)
        self.write(rom)

    def write(self, buf):
        for b in buf:
            self.writebyte(b)

    def writebyte(self, b):
        st = self._state
        if st == "rom":
            if b == 0xCC:
                self._state = "func"
            elif b == 0x55:
                self._state = "match"
                self._rom = bytearray()
            else:
                self._state = "idle"
        elif st == "match":
            self._rom.append(b)
            if len(self._rom) == 8:
                self._sel = [d for d in self.devices if d.rom == bytes(self._rom)]
                self._state = "func"
        elif st == "func":
            if b == 0x44:
                for d in self._sel:
                    d.convert()
                self._state = "idle"
            elif b == 0xBE and len(self._sel) == 1:
                self._out = self._sel[0].scratchpad()
                self._state = "read"
            else:
                self._state = "idle"

    def readbyte(self):
        if self._out:
            b, self._out = self._out[0], self._out[1:]
            return b
        return 0xFF   # released bus reads as ones

    def readinto(self, buf):
        for i in range(len(buf)):
            buf[i] = self.readbyte()


class SimDS18B20:
    def __init__(self, source=None, serial=1):
        body = bytes((0x28,)) + serial.to_bytes(6, "little")
        self.rom = body + bytes((maxim_crc(body),))
        self.source = source
        self.raw = 0x0550   # power-on value: +85 degC
        self.forced = None

    def convert(self):
        if self.forced is None and self.source is not None:
            self.raw = int(round(self.source() * 16)) & 0xFFFF

    def scratchpad(self):
        raw = self.forced if self.forced is not None else self.raw
        sp = bytes((raw & 0xFF, raw >> 8, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10))
        return sp + bytes((maxim_crc(sp),))


# --- Pins, ADC, ranger ----------------------------------------------------------

class SimPin:
    IN = 1
    OUT = 3
    IRQ_FALLING = 1
    IRQ_RISING = 2

    def __init__(self, level=0):
        self._level = level
        self._handler = None
        self.on_write = None

    def value(self, v=None):
        if v is None:
            return self._level
        self._level = 1 if v else 0
        if self.on_write:
            self.on_write(self._level)
        return None

    def irq(self, handler=None, trigger=3):
        self._handler = handler

    def fire(self, n=1):
        """Deliver n edges to the IRQ handler, as the part's output would."""
        for _ in range(n):
            if self._handler:
                self._handler(self)


class SimADC:
    def __init__(self, source=None):
        self.source = source
        self.raw_uv = None

    def read_uv(self):
        return self.raw_uv if self.raw_uv is not None else int(self.source())


class SimRanger:
    """HC-SR04: a trigger pulse arms an echo whose width is the round trip to the target."""

    def __init__(self, source=None):
        self.source = source   # distance in m, or None for nothing in range
        self.trig = SimPin()
        self.echo = SimPin()
        self._armed = False
        self.trig.on_write = self._on_trig

    def _on_trig(self, level):
        if level == 0 and self._armed is not None:
            self._armed = True

    def time_pulse_us(self, pin, level, timeout_us):
        if not self._armed:
            return -2
        self._armed = False
        d = self.source()
        if d is None:
            return -1
        us = int(d * 2 / 343e-6)
        return us if us <= timeout_us else -1
