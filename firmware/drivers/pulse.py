"""Pulse counter for S0 energy meters and reed-switch water meters (SenML sum "s").

An S0 output (IEC 62053-31) or a reed contact closes once per unit consumed
(e.g. 1000 imp/kWh, 1 imp/litre). An IRQ on the falling edge counts pulses;
a pulse closer than `debounce_ms` (default 20) to the previous one is contact
bounce and ignored. The reading is the running total since the counter was
installed, reported as a SenML sum: s = pulses * per_pulse in `unit`
(defaults: 3600 J per pulse, i.e. 1000 imp/kWh). The total survives reboots:
the node saves `total()` with its state and passes it back as params "start".
"""

from compat import ticks_diff, ticks_ms

from drivers import OK


class Driver:
    def __init__(self, pin, params):
        self._pin = pin
        self._per = float(params.get("per_pulse", 3600.0))
        self.FIELDS = (("total", params.get("unit", "J"), "s"),)
        self._debounce = int(params.get("debounce_ms", 20))
        self._count = int(params.get("start", 0))
        self._last = ticks_ms()
        self._s = None
        self.status = OK
        pin.irq(self._irq, pin.IRQ_FALLING)

    def _irq(self, _pin):
        now = ticks_ms()
        if ticks_diff(now, self._last) >= self._debounce:
            self._count += 1
            self._last = now

    def total(self):
        return self._count

    def start(self):
        return 0

    def measure(self):
        self._s = self._count * self._per
        self.status = OK
        return True

    def value(self, i):
        return self._s if i == 0 else None
