"""HC-SR04 ultrasonic ranger: parking bay distance and occupancy.

Follows the HC-SR04 user's manual (Elecfreaks): a 10 us high pulse on TRIG
starts a burst; ECHO is high for the round-trip time; distance = echo time
* 343 m/s / 2 (the manual's "us / 58 = centimetres"). No echo within 30 ms
(~5 m) is "nothing in range". A bay is occupied when the distance is below
params "occupied_below_m" (default 1.0 m, sensor mounted in the bay floor
or ceiling looking at the car).
"""

from compat import const

from drivers import E_BUS, E_RANGE, OK, wait_us

_TIMEOUT_US = const(30000)


class Driver:
    FIELDS = (("dist", "m", "v"), ("occupied", "", "vb"))

    def __init__(self, pins, params):
        self._trig, self._echo, self._pulse = pins  # (Pin out, Pin in, time_pulse_us)
        self._below = float(params.get("occupied_below_m", 1.0))
        self._vals = [None, None]  # type: list
        self.status = OK

    def start(self):
        return 0

    def measure(self):
        v = self._vals
        v[0] = v[1] = None
        try:
            self._trig.value(0)
            wait_us(2)
            self._trig.value(1)
            wait_us(10)          # the manual's 10 us trigger pulse
            self._trig.value(0)
            us = self._pulse(self._echo, 1, _TIMEOUT_US)
        except OSError:
            self.status = E_BUS
            return False
        if us < 0:   # -1 / -2: timeout waiting for the echo (machine.time_pulse_us)
            v[1] = False
            self.status = E_RANGE
            return True
        d = us * 343e-6 / 2
        v[0] = d
        v[1] = d < self._below
        self.status = OK
        return True

    def value(self, i):
        return self._vals[i] if i < 2 else None
