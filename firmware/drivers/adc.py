"""Analog inputs through the ESP32 ADC: battery voltage (divider) and soil moisture.

Uses machine.ADC.read_uv(), which applies the ESP32's eFuse calibration
(ESP-IDF "ADC calibration" guide), with 11 dB attenuation (0.15-2.45 V).
params:
  kind "battery": V = read_uv * divider (default 2.0, a 1:1 divider), unit V.
  kind "soil": capacitive probe; % = 100 * (dry_uv - uv) / (dry_uv - wet_uv),
  clipped to 0..100 (defaults 2_200_000 / 1_000_000 uV), unit %.
measure() averages `samples` reads (default 8).
"""

from drivers import E_BUS, OK


class Driver:
    def __init__(self, adc, params):
        self._adc = adc
        self._kind = params.get("kind", "battery")
        self._div = float(params.get("divider", 2.0))
        self._dry = int(params.get("dry_uv", 2200000))
        self._wet = int(params.get("wet_uv", 1000000))
        self._n = int(params.get("samples", 8))
        if self._kind == "soil":
            self.FIELDS = (("moisture", "%", "v"),)
        else:
            self.FIELDS = (("vbat", "V", "v"),)
        self._v = None
        self.status = OK

    def start(self):
        return 0

    def measure(self):
        self._v = None
        total = 0
        try:
            for _ in range(self._n):
                total += self._adc.read_uv()
        except OSError:
            self.status = E_BUS
            return False
        uv = total // self._n
        if self._kind == "soil":
            pct = 100 * (self._dry - uv) / (self._dry - self._wet)
            self._v = 0.0 if pct < 0 else (100.0 if pct > 100 else pct)
        else:
            self._v = uv * self._div / 1e6
        self.status = OK
        return True

    def value(self, i):
        return self._v if i == 0 else None
