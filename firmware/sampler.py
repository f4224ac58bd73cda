"""Sampler: one asyncio task per sensor, each on its own interval, writing readings to the outbox.

For a sensor every `interval` seconds (its own, else the report interval):
start() the conversion, await the part's conversion time, measure(), and
turn each field that has a value into an outbox record named
"<sensor>.<field>" with the sensor's unit and kind. All fields of one
measurement share one time stamp; a sensor's stamps are strictly increasing
(at least 1 ms apart), so (node, sensor, time) identifies a reading.
A failed measurement writes nothing and counts in `failures[name]`
(status code in `status[name]`); the task goes on.
"""

import asyncio

from compat import log, sleep_ms, ticks_diff, ticks_ms

_INF = (float("inf"), float("-inf"))


class Sampler:
    def __init__(self, sensors, record, clock, default_interval):
        """sensors: [(cfg, driver)], record(list of outbox tuples) persists them."""
        self.sensors = sensors
        self.record = record
        self.clock = clock
        self.default_interval = default_interval
        self.status = {}
        self.failures = {}
        self.samples = 0
        self._last = {}
        self._tasks = []

    def start(self):
        for cfg, drv in self.sensors:
            self._tasks.append(asyncio.create_task(self._run(cfg, drv)))

    def stop(self):
        for t in self._tasks:
            t.cancel()
        self._tasks = []

    def _stamp(self, name):
        flags, run, t = self.clock.stamp()
        last = self._last.get(name)
        if last is not None and last[0] == flags and t <= last[1]:
            t = last[1] + 1
        self._last[name] = (flags, t)
        return flags, run, t

    async def sample_once(self, cfg, drv):
        name = cfg["name"]
        try:
            wait = drv.start()
            if wait:
                await sleep_ms(wait)
            ok = drv.measure()
        except Exception as e:  # a driver bug must not stop the node
            log("sensor", name, "raised", repr(e))
            ok = False
            drv.status = -1
        self.status[name] = drv.status
        if not ok:
            self.failures[name] = self.failures.get(name, 0) + 1
            return 0
        flags, run, t = self._stamp(name)
        recs = []
        fields = drv.FIELDS
        for i in range(len(fields)):
            v = drv.value(i)
            if v is None:
                continue
            if isinstance(v, float) and (v != v or v in _INF):
                continue   # NaN/inf: no SenML reader would take the pack

            suffix, unit, kind = fields[i]
            recs.append((flags, run, t, kind, v, name + "." + suffix, unit))
        if recs:
            self.record(recs)
            self.samples += 1
        return len(recs)

    async def sample_all(self):
        """Every sensor once, conversions overlapping (deep-sleep mode: one pass per wake-up)."""
        res = await asyncio.gather(*[self.sample_once(cfg, drv) for cfg, drv in self.sensors])
        return sum(res)

    async def _run(self, cfg, drv):
        period_ms = int(cfg.get("interval", self.default_interval) * 1000)
        while True:
            t0 = ticks_ms()
            await self.sample_once(cfg, drv)
            rest = period_ms - ticks_diff(ticks_ms(), t0)
            await sleep_ms(rest if rest > 10 else 10)
