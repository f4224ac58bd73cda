"""Sensirion SCD4x (SCD40/41): CO2 (photoacoustic NDIR), temperature, humidity over I2C.

Follows the SCD4x datasheet (v1.4): the sensor runs in periodic measurement
mode (start_periodic_measurement 0x21B1, section 3.5.1; a new sample every
5 s); get_data_ready_status 0xE4B8 (section 3.9.2: data ready when the low 11
bits of the word are not 0); read_measurement 0xEC05 (section 3.5.2: three
words CO2 ppm, T, RH, each followed by its Sensirion CRC-8, section 3.11);
T = -45 + 175 * word / 2^16, RH = 100 * word / 2^16. Commands need 1 ms
before the answer is read (section 3.5, "max. command duration").

Single shot (params "single_shot": true; the node sets it in deep-sleep
mode, where a wake-up is far shorter than the periodic mode's first 5 s):
measure_single_shot 0x219D (SCD41 only, section 3.10.1: the answer is ready
after max. 5000 ms), then get_data_ready_status and read_measurement as
above. The part only takes it when idle (section 3.6: in periodic mode it
answers only a few commands), so after a failed command the next start()
sends stop_periodic_measurement 0x3F86 instead (section 3.5.3, 500 ms; that
pass gives no sample).
"""

from compat import const

from drivers import E_BUS, E_CRC, E_NOT_READY, OK, sensirion_crc8, wait_ms

_CMD_START_PERIODIC = const(0x21B1)
_CMD_READ = const(0xEC05)
_CMD_DATA_READY = const(0xE4B8)
_CMD_SINGLE_SHOT = const(0x219D)
_CMD_STOP_PERIODIC = const(0x3F86)
_SINGLE_SHOT_MS = const(5000)
_STOP_MS = const(500)


class Driver:
    FIELDS = (("co2", "ppm", "v"), ("temp", "Cel", "v"), ("hum", "%RH", "v"))

    def __init__(self, bus, params):
        self._bus = bus
        self._addr = params.get("address", 0x62)
        self._buf = bytearray(9)
        self._cmd = bytearray(2)
        self._vals = [None, None, None]  # type: list
        self.status = OK
        self._started = False
        self._single = bool(params.get("single_shot", False))
        self._stop_first = False
        self._stopping = False

    def _command(self, cmd):
        self._cmd[0] = cmd >> 8
        self._cmd[1] = cmd & 0xFF
        self._bus.writeto(self._addr, self._cmd)

    def start(self):
        if self._single:
            return self._start_single()
        try:
            if not self._started:
                self._command(_CMD_START_PERIODIC)
                self._started = True
            self._command(_CMD_DATA_READY)
        except OSError:
            self.status = E_BUS
            self._started = False
        return 1

    def _start_single(self):
        try:
            if self._stop_first:
                # after a failure: the part may have been left measuring. Stop it; this
                # pass gives no sample (the stop takes 500 ms), the next one shoots.
                self._command(_CMD_STOP_PERIODIC)
                self._stop_first = False
                self._stopping = True
                return _STOP_MS
            self._command(_CMD_SINGLE_SHOT)
        except OSError:
            self.status = E_BUS
            self._stop_first = True
            return 0
        return _SINGLE_SHOT_MS

    def measure(self):
        v = self._vals
        v[0] = v[1] = v[2] = None
        b = self._buf
        if self._single and (self._stopping or self._stop_first):
            self._stopping = False
            if not self._stop_first:
                self.status = E_NOT_READY
            return False          # nothing is being measured in this pass
        try:
            if self._single:
                self._command(_CMD_DATA_READY)
                wait_ms(1)
            self._bus.readfrom_into(self._addr, memoryview(b)[0:3])
            if sensirion_crc8(b, 0, 2) != b[2]:
                self.status = E_CRC
                return False
            if ((b[0] << 8) | b[1]) & 0x07FF == 0:
                self.status = E_NOT_READY
                return False
            self._command(_CMD_READ)
            wait_ms(1)  # datasheet 3.5.2: 1 ms before the answer
            self._bus.readfrom_into(self._addr, b)
        except OSError:
            self.status = E_BUS
            self._stop_first = self._single
            return False
        for i in (0, 3, 6):
            if sensirion_crc8(b, i, i + 2) != b[i + 2]:
                self.status = E_CRC
                return False
        v[0] = (b[0] << 8) | b[1]
        v[1] = -45 + 175 * ((b[3] << 8) | b[4]) / 65536
        v[2] = 100 * ((b[6] << 8) | b[7]) / 65536
        self.status = OK
        return True

    def value(self, i):
        return self._vals[i] if i < 3 else None

    def co2(self):
        return self._vals[0]
