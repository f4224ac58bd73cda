"""Sensor drivers, one file per part, and the table that maps config names to them.

Every driver follows one contract:

- `__init__(bus, params)` allocates its buffers once and may probe the part.
- `start()` kicks off a conversion and returns how many ms to wait before
  `measure()` (0 when the part needs no wait). The sampler awaits that delay,
  so no driver sleeps for long; a driver may block for 1-2 ms between a
  command and its read, as the datasheets ask.
- `measure()` fills the driver's buffer and returns True, or returns False and
  sets `status` to a non-zero code. It never raises into the main loop.
- `FIELDS` names what the part gives: a tuple of (suffix, SenML unit, kind)
  where kind is "v" (value), "vb" (boolean) or "s" (sum). `value(i)` returns
  field i of the last good measurement, or None.

Status codes are shared: 0 ok, 1 bus error (no ACK / OSError), 2 CRC or
checksum mismatch, 3 not ready / no data, 4 wrong part (chip id), 5 out of range.
"""

from compat import const

try:  # the drivers' blocking waits: a few ms between a command and its answer
    from time import sleep_ms as wait_ms  # type: ignore[attr-defined]
    from time import sleep_us as wait_us  # type: ignore[attr-defined]
except ImportError:  # CPython (host tests)
    from time import sleep as _sleep

    def wait_ms(ms):  # type: ignore[misc]
        _sleep(ms / 1000)

    def wait_us(us):  # type: ignore[misc]
        _sleep(us / 1e6)

OK = const(0)
E_BUS = const(1)
E_CRC = const(2)
E_NOT_READY = const(3)
E_CHIP = const(4)
E_RANGE = const(5)

# config "driver" name -> module in this package (imported only when used,
# so a node without a part never loads its driver). The bus each one needs and
# its pins are the node-config schema's (protocol/configschema.py DRIVERS).
MODULES = {
    "bme280": "bme280",
    "bmp280": "bme280",
    "sht4x": "sht4x",
    "scd4x": "scd4x",
    "bh1750": "bh1750",
    "pms5003": "pms5003",
    "ds18b20": "ds18b20",
    "pir": "pir",
    "hcsr04": "hcsr04",
    "adc": "adc",
    "pulse": "pulse",
}


def load(name):
    """The driver class for config name `name` (raises KeyError when unknown)."""
    modname = MODULES[name]
    mod = __import__("drivers." + modname, None, None, ["Driver"])
    return mod.Driver


def sensirion_crc8(buf, start=0, end=None):
    """Sensirion CRC-8: polynomial 0x31, init 0xFF, no reflection (SHT4x/SCD4x datasheets)."""
    if end is None:
        end = len(buf)
    crc = 0xFF
    for i in range(start, end):
        crc ^= buf[i]
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc
