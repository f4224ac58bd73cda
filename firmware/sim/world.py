"""The simulated park: seeded, realistic signals that the simulated parts measure.

Everything is a pure function of (seed, place, time), so a node restarted
after SIGKILL or a simulated deep sleep sees the same world, and two nodes
with different seeds see different ones. Time is the host's epoch seconds.

- temperature: diurnal sine (min ~05:00, max ~15:00) around a seasonal mean,
  plus slow noise; indoor places are damped towards 21 degC.
- occupancy: office hours on weekdays, 0..1, with lunch dip.
- CO2: 420 ppm outdoor baseline, rising with occupancy (people exhale
  ~20 l/h each) with a ~20 min lag.
- light: daylight bell between sunrise and sunset, clouds as noise; lamps
  when occupied.
- parking bays: occupied/free in 5-minute slots, busier in office hours.
- meters: pulse rate proportional to a base load plus occupancy.
"""

import math

_DAY = 86400.0


def _hash01(seed, a, b):
    """Deterministic pseudo-random number in [0, 1) from three integers."""
    x = (seed * 0x9E3779B1 + a * 0x85EBCA77 + b * 0xC2B2AE3D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
    x ^= x >> 12
    x = (x * 0x297A2D39) & 0xFFFFFFFF
    x ^= x >> 15
    return x / 4294967296.0


def _smooth_noise(seed, place, t, period):
    """Value noise in [-1, 1], continuous in t, changing over `period` seconds."""
    k = int(t // period)
    f = (t - k * period) / period
    f = f * f * (3 - 2 * f)
    a = _hash01(seed, place, k) * 2 - 1
    b = _hash01(seed, place, k + 1) * 2 - 1
    return a + (b - a) * f


class World:
    def __init__(self, seed=1, indoor=False):
        self.seed = int(seed)
        self.indoor = indoor

    def hour(self, t):
        return (t % _DAY) / 3600.0

    def occupancy(self, t):
        wd = int(t // _DAY + 3) % 7   # 1970-01-01 was a Thursday; 0 = Monday
        if wd >= 5:
            return 0.05
        h = self.hour(t)
        if h < 7 or h > 19:
            return 0.0
        o = math.sin(math.pi * (h - 7) / 12)
        if 12 <= h < 13:
            o *= 0.6
        return max(0.0, o + 0.1 * _smooth_noise(self.seed, 7, t, 600))

    def temperature(self, t, place=0):
        h = self.hour(t)
        day = (t // _DAY) % 365
        mean = 11 + 8 * math.sin(2 * math.pi * (day - 110) / 365)
        outdoor = mean + 5 * math.sin(2 * math.pi * (h - 9) / 24) + \
            0.8 * _smooth_noise(self.seed, 11 + place, t, 900)
        if self.indoor:
            return 21 + 0.15 * (outdoor - 21) + 1.5 * self.occupancy(t - 1200)
        return outdoor

    def humidity(self, t, place=0):
        rh = 65 - 1.8 * (self.temperature(t, place) - 12) + 5 * _smooth_noise(self.seed, 21 + place, t, 1800)
        return min(99.0, max(5.0, rh))

    def pressure(self, t):
        return 101325 + 900 * _smooth_noise(self.seed, 31, t, 6 * 3600)

    def co2(self, t, place=0):
        return 420 + 650 * self.occupancy(t - 1200) + 15 * _smooth_noise(self.seed, 41 + place, t, 300)

    def lux(self, t, place=0):
        h = self.hour(t)
        sun = math.sin(math.pi * (h - 6) / 13) if 6 < h < 19 else 0.0
        cloud = 0.6 + 0.4 * _smooth_noise(self.seed, 51 + place, t, 1200)
        lamps = 400 if self.indoor and self.occupancy(t) > 0.1 else 0
        return max(0.0, 30000 * sun * cloud * (0.05 if self.indoor else 1.0) + lamps)

    def pm(self, t):
        base = 8 + 6 * (_smooth_noise(self.seed, 61, t, 3600) + 1)
        return (base * 0.7, base, base * 1.6)

    def bay_occupied(self, t, bay):
        slot = int(t // 300)
        p = 0.15 + 0.7 * self.occupancy(slot * 300)
        return _hash01(self.seed, 1000 + bay, slot) < p

    def motion_events(self, t0, t1, place=0):
        """Motion events between t0 and t1: Poisson-like, rate with occupancy."""
        rate = 0.02 + 0.3 * self.occupancy(t1)   # per second
        n = 0
        k0, k1 = int(t0), int(t1)
        for k in range(k0, k1):
            if _hash01(self.seed, 2000 + place, k) < rate:
                n += 1
        return n

    def pulses(self, t, place=0, base_per_s=0.3):
        """Cumulative meter pulses at time t (monotonic in t): base load plus working hours."""
        days, s = divmod(t, _DAY)
        h = min(12.0, max(0.0, s / 3600.0 - 7))   # hours of the 07:00-19:00 load today
        extra = days * 12 * 3600 + h * 3600        # seconds of office load so far
        return int(base_per_s * (t + 0.5 * extra)) + place

    def battery_uv(self, t):
        # a 3.7 V cell behind a 1:1 divider, slowly discharging
        return int((3.95 - 0.0000002 * (t % 3e6)) / 2 * 1e6)

    def soil_uv(self, t):
        return int(1600000 + 250000 * _smooth_noise(self.seed, 71, t, 4 * 3600))
