"""Sampler: record names, per-sensor strictly increasing stamps, failures counted (both interpreters)."""

import asyncio

import sampler
from drivers import load
from sim import parts as sp


class _FrozenClock:
    """The RTC reading the same ms for every stamp (a coarse RTC); flags 1 = absolute."""

    def stamp(self):
        return 1, 0, 1763979000000


class _Nan:
    FIELDS = (("x", "Cel", "v"), ("y", "Cel", "v"))
    status = 0

    def start(self):
        return 0

    def measure(self):
        return True

    def value(self, i):
        return float("nan") if i == 0 else 2.5


class _Raises(_Nan):
    def measure(self):
        raise RuntimeError("driver bug")


def _run(coro):
    return asyncio.run(coro)


def test_records_names_units_and_stamps():
    bus = sp.SimI2C()
    bus.devices[0x76] = sp.SimBME280(lambda: (20.0, 100000.0, 50.0))
    drv = load("bme280")(bus, {})
    got = []
    s = sampler.Sampler([({"name": "air"}, drv)], got.extend, _FrozenClock(), 1)
    for _ in range(3):
        assert _run(s.sample_once({"name": "air"}, drv)) == 3
    assert [r[5] for r in got[0:3]] == ["air.temp", "air.press", "air.hum"]
    assert [r[6] for r in got[0:3]] == ["Cel", "Pa", "%RH"]
    stamps = [r[2] for r in got]
    assert stamps[0:3] == [1763979000000] * 3          # one time per measurement
    assert stamps[3] == 1763979000001 and stamps[6] == 1763979000002   # distinct per sensor
    assert all(r[0] == 1 and r[3] == "v" for r in got)


def test_failures_counted_not_recorded():
    bus = sp.SimI2C()
    drv = load("sht4x")(bus, {})     # nothing at 0x44: every read fails
    got = []
    s = sampler.Sampler([], got.extend, _FrozenClock(), 1)
    assert _run(s.sample_once({"name": "rh"}, drv)) == 0
    assert _run(s.sample_once({"name": "bug"}, _Raises())) == 0
    assert got == [] and s.failures == {"rh": 1, "bug": 1}
    assert s.status["rh"] == 1 and s.status["bug"] == -1


def test_non_finite_values_are_not_recorded():
    got = []
    s = sampler.Sampler([], got.extend, _FrozenClock(), 1)
    assert _run(s.sample_once({"name": "n"}, _Nan())) == 1
    assert [(r[5], r[4]) for r in got] == [("n.y", 2.5)]


def test_sample_all_runs_every_sensor():
    got = []
    pins = [sp.SimPin(), sp.SimPin()]
    sensors = [({"name": "p%d" % i}, load("pir")(pins[i], {})) for i in range(2)]
    pins[1].fire(2)
    s = sampler.Sampler(sensors, got.extend, _FrozenClock(), 1)
    assert _run(s.sample_all()) == 4
    assert sorted((r[5], r[4]) for r in got) == [("p0.motion", 0), ("p0.occupied", False),
                                               ("p1.motion", 2), ("p1.occupied", True)]
