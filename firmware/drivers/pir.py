"""Passive infrared motion sensor (HC-SR501, AM312 style digital output): motion events.

The part drives its output high for a hold time after it sees motion. An IRQ
on the rising edge counts events; each measure() reports the number of
events since the previous one (SenML unit "count") and whether any motion
was seen in the interval ("occupied"). The counter is a plain int changed
only in the IRQ (no allocation in the handler).
"""

from drivers import OK


class Driver:
    FIELDS = (("motion", "count", "v"), ("occupied", "", "vb"))

    def __init__(self, pin, params):
        self._pin = pin
        self._count = int(params.get("start", 0))   # events not yet reported (kept over deep sleep)
        self._vals = [None, None]  # type: list
        self.status = OK
        pin.irq(self._irq, pin.IRQ_RISING)

    def _irq(self, _pin):
        self._count += 1

    def total(self):
        """Events not yet reported: the node keeps them with the pulse totals over a sleep."""
        return self._count

    def start(self):
        return 0

    def measure(self):
        n = self._count
        self._count -= n
        self._vals[0] = n
        self._vals[1] = n > 0 or bool(self._pin.value())
        self.status = OK
        return True

    def value(self, i):
        return self._vals[i] if i < 2 else None
