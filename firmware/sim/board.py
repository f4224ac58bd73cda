"""Simulated board for the MicroPython unix port: the node's "flash" is its working directory.

board/__init__.py imports this Board everywhere but on an ESP32; the ESP32
bundle leaves the whole sim/ package out. Buses and parts come from
sim/parts.py, wired as config.json's sensors say, and measure the seeded
World (sim/world.py). Hardware that keeps state across resets is simulated
with files in the flash directory:

- rtc.mem: the 2 KB of ESP32 RTC slow memory. It survives a process being
  killed (a reset) and a simulated deep sleep, like the real RTC memory; a
  missing file is a power-on.
- the RTC clock is the host clock plus a skew chosen at power-on (a fresh
  ESP32 counts from 2000-01-01), so the node must take its time from the hub
  unless config "ntp" is true (the host clock stands in for NTP).

Deep sleep is "exit with status 75 (EX_TEMPFAIL) and let the supervisor
start us again"; the reset cause after that is DEEPSLEEP_RESET.

The watchdog only counts feeds, unless the config's sim section has
"watchdog": true: then sim/wdt.py resets the board as the ESP32's WDT does
when no feed came for the timeout (a hung loop or a blocked interpreter),
and the next boot's reset cause is WDT_RESET. Off by default, so a node
starved of CPU on a loaded test machine is not reset by it.
"""

import os
import sys
import time

from board import DEEPSLEEP_RESET, HARD_RESET, PWRON_RESET, WDT_RESET
from compat import exists

from sim import parts as sp
from sim.world import World

_RTC_FILE = "rtc.mem"
_SLEEP_FLAG = "deepsleep.flag"
_WDT_FLAG = "wdt.flag"   # sim/wdt.py leaves it when it resets the board
EXIT_DEEPSLEEP = 75


class _SimWDT:
    """Counts feeds; the simulated node has no hardware to reset it (sim/wdt.py does)."""

    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self.fed = 0

    def feed(self):
        self.fed += 1


class Board:
    name = "unix"

    def __init__(self, sim=None):
        sim = sim or {}
        self.sim = sim
        self.world = World(sim.get("seed", 1), sim.get("indoor", False))
        self._fault = float(sim.get("fault_rate", 0.0))
        import random
        self._rng = random
        self._buses = {}
        self._pins = []    # (SimPin, kind, place) fed by background()
        self._cause = PWRON_RESET
        self._slept = None     # when a sleep with a wake pin began (sleep_events)
        self.pin_woke = False  # an edge of the wake input woke the board
        if exists(_WDT_FLAG):
            self._cause = WDT_RESET
            os.remove(_WDT_FLAG)
        elif exists(_SLEEP_FLAG):
            self._cause = DEEPSLEEP_RESET
            try:
                with open(_SLEEP_FLAG) as f:
                    _ms, at, wake = f.read().split()
                if int(wake):
                    self._slept = float(at)
            except (OSError, ValueError):
                pass
            os.remove(_SLEEP_FLAG)
        elif exists(_RTC_FILE):
            self._cause = HARD_RESET
        self._skew_ms = int(sim.get("rtc_skew_s", -800000000)) * 1000

    # --- clock and persistent hardware state ---
    def now(self):
        return time.time()

    def rtc_ms(self):
        return int(time.time() * 1000) + self._skew_ms

    def rtc_memory(self):
        try:
            with open(_RTC_FILE, "rb") as f:
                return f.read()
        except OSError:
            return b""

    def rtc_memory_write(self, data):
        with open(_RTC_FILE + ".tmp", "wb") as f:
            f.write(data)
        os.rename(_RTC_FILE + ".tmp", _RTC_FILE)

    def reset_cause(self):
        return self._cause

    def unique_id(self):
        return "sim" + os.getcwd().rstrip("/").split("/")[-1][-8:]

    def network_up(self, wifi):
        if self.sim.get("crash_once") and not exists("crashed.sim"):
            with open("crashed.sim", "w") as f:   # once per flash directory
                f.write("1")
            raise RuntimeError("simulated fault")
        return True

    def ntp_ms(self, host):
        """Unix ms from "NTP": the host clock plays the NTP server. The RTC is not set."""
        return int(time.time() * 1000)

    def rssi(self):
        return None

    def heap_free(self):
        import gc
        return gc.mem_free() if hasattr(gc, "mem_free") else -1

    def watchdog(self, timeout_ms):
        if self.sim.get("watchdog"):
            from sim.wdt import ResettingWDT  # only then: it is no part of a node's heap
            return ResettingWDT(timeout_ms)
        return _SimWDT(timeout_ms)

    def deepsleep(self, ms, wake=None):
        """Exit 75; the flag holds the sleep's length, its start and whether a pin may wake it."""
        with open(_SLEEP_FLAG, "w") as f:
            f.write("%d %.3f %d" % (ms, time.time(), 1 if wake else 0))
        sys.exit(EXIT_DEEPSLEEP)

    def sleep_events(self, driver, place):
        """Edges of the wake input while the board slept: the world's pulses or motion events
        since the sleep began (an ESP32 wakes on each and counts it, see board/esp32.py)."""
        if self._slept is None:
            return 0
        now = time.time()
        w = self.world
        if driver == "pulse":
            rate = float(self.sim.get("pulse_rate", 0.3))
            n = w.pulses(now, place, rate) - w.pulses(self._slept, place, rate)
        else:
            n = w.motion_events(self._slept, now, place)
        self._slept = None   # one wake input (configschema.wake_inputs)
        self.pin_woke = n > 0
        return n

    def reset(self):
        sys.exit(EXIT_DEEPSLEEP)

    # --- buses and simulated parts ---
    def bus(self, sensor, place=0):
        drv = sensor["driver"]
        w = self.world
        clock = time.time
        bus_name = sensor.get("bus", "")
        if drv in ("bme280", "bmp280", "sht4x", "scd4x", "bh1750"):
            i2c = self._buses.get(bus_name)
            if i2c is None:
                i2c = self._buses[bus_name] = sp.SimI2C(self._fault, self._rng)
            addr = sensor.get("params", {}).get("address")
            part = None  # type: object
            if drv in ("bme280", "bmp280"):
                part = sp.SimBME280(lambda: (w.temperature(clock(), place), w.pressure(clock()),
                                             w.humidity(clock(), place)),
                                    chip_id=0x60 if drv == "bme280" else 0x58)
                addr = addr or 0x76
            elif drv == "sht4x":
                part = sp.SimSHT4x(lambda: (w.temperature(clock(), place), w.humidity(clock(), place)))
                addr = addr or 0x44
            elif drv == "scd4x":
                part = sp.SimSCD4x(lambda: (w.co2(clock(), place), w.temperature(clock(), place),
                                            w.humidity(clock(), place)), clock=clock)
                addr = addr or 0x62
            else:
                part = sp.SimBH1750(lambda: w.lux(clock(), place))
                addr = addr or 0x23
            if sensor.get("name") not in self.sim.get("unplugged", ()):
                i2c.devices[addr] = part   # "unplugged": the part never answers on the bus
            return i2c
        if drv == "pms5003":
            return sp.SimUART(lambda: w.pm(clock()), clock=clock,
                              warmup_s=float(self.sim.get("pms_warmup_s", 30)))
        if drv == "ds18b20":
            ow = self._buses.get(bus_name)
            if ow is None:
                ow = self._buses[bus_name] = sp.SimOneWire()
            ow.devices.append(sp.SimDS18B20(lambda: w.temperature(clock(), place) - 4.0,
                                            serial=place + 1))
            return ow
        if drv in ("pir", "pulse"):
            pin = sp.SimPin()
            self._pins.append((pin, drv, place, [None]))
            return pin
        if drv == "hcsr04":
            bay = sensor.get("params", {}).get("bay", place)
            r = sp.SimRanger(lambda: (0.35 + 0.05 * w.occupancy(clock())) if w.bay_occupied(clock(), bay)
                             else (2.6 if bay % 3 else None))
            return (r.trig, r.echo, r.time_pulse_us)
        if drv == "adc":
            kind = sensor.get("params", {}).get("kind", "battery")
            if kind == "soil":
                return sp.SimADC(lambda: w.soil_uv(clock()))
            vbat = self.sim.get("vbat")   # a fixed battery voltage (tests), else the world's
            if vbat is not None:
                div = float(sensor.get("params", {}).get("divider", 2.0))
                return sp.SimADC(lambda: int(vbat / div * 1e6))
            return sp.SimADC(lambda: w.battery_uv(clock()))
        raise ValueError("no simulated part for driver " + drv)

    def background(self):
        """Coroutines that make the simulated pins move (motion, meter pulses)."""
        if not self._pins:
            return ()
        return (self._pin_task(),)

    async def _pin_task(self):
        from compat import sleep_ms
        w = self.world
        while True:
            now = time.time()
            for pin, kind, place, last in self._pins:
                if kind == "pir":
                    if last[0] is not None:
                        pin.fire(w.motion_events(last[0], now, place))
                    last[0] = now
                else:
                    total = w.pulses(now, place, float(self.sim.get("pulse_rate", 0.3)))
                    if last[0] is not None and total > last[0]:
                        pin.fire(1)      # at most one edge per 100 ms (debounce-safe)
                        total = last[0] + 1
                    last[0] = total
            await sleep_ms(100)
