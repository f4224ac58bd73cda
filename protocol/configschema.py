"""The node config (config.json): every key, its type, range and default, and the one check.

The node validates its config.json with it (firmware/config.py), the hub checks
a config before it sends one to a node (hub/rules.py config_error, which also
derives its JSON Schema from these tables), and `smartpark flash` checks the
file it writes (tools/nodeconfig.py). A key is one row of a table:

    (name, check, a, b, default)

`check(value, a, b, key, out)` returns the value to keep or raises
ConfigError(key, why); `a` and `b` are its arguments (a range, a length, the
choices, a sub-table). `default` is the value of an absent key, or REQUIRED
(absent: "missing") or OPTIONAL (absent or null: left out). Adding a key is adding
a row; a new kind of value is a new check function.

    validate(raw)                -> new dict, defaults filled in (raises ConfigError)
    validate(doc, partial=True)  -> the same checks on the keys present only (the
                                    hub's overlay: no key is required)
    parse_hub("host:port")       -> ("host", port), None for "auto"
    valid_ident(s, maxlen=32)    -> node and sensor names: 1-maxlen of ASCII letters,
                                    digits, _ or -, starting with a letter or digit

parse_hub, valid_ident and ConfigError live in names.py and errors.py (a
node keeps those loaded and this table only while it validates) and are
re-exported here. ConfigError's `key` is the path of the fault ("sensors[2].pins.sda"), `why`
says what is wrong, and str(e) is "config key <key>: <why>". Runs on
MicroPython and CPython.
"""

from .errors import ConfigError
from .names import COAP_PORT, parse_hub, valid_ident  # noqa: F401 - part of this module's API
from .names import only as _only

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

GPIO_MAX = const(48)
RESERVED_NAME = "health"  # health readings are <node>/health.<key>

REQUIRED = ("required",)  # default of a key that must be given
OPTIONAL = ("optional",)  # default of a key that may be absent (or null) and then is left out
_HEX = "0123456789ABCDEFabcdef"

# config "driver" name -> the kind of bus it needs (firmware/drivers MODULES has the code)
DRIVERS = {
    "bme280": "i2c", "bmp280": "i2c", "sht4x": "i2c", "scd4x": "i2c", "bh1750": "i2c",
    "pms5003": "uart", "ds18b20": "onewire", "pir": "pin", "hcsr04": "pin",
    "adc": "adc", "pulse": "pin",
}
# bus kind -> (bus name when none is given, prefix a bus name must have, pin names)
BUSES = {
    "i2c": ("i2c0", "i2c", ("sda", "scl")),
    "uart": ("uart", "uart", ("rx", "tx")),
    "onewire": ("onewire", "o", ("data",)),
    "adc": ("adc", "adc", ("adc",)),
    "pin": ("pin", "pin", ("in",)),
}
OWN_PINS = {"hcsr04": ("trig", "echo")}  # drivers whose pins are not their bus kind's


# ---- checks: check(value, a, b, key, out) -> value to keep, or raise ConfigError(key, why)

def integer(v, lo, hi, key, out):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(key, "must be an integer")
    return number(v, lo, hi, key, out)


def number(v, lo, hi, key, out):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(key, "must be a number")
    if not lo <= v <= hi:  # also false for NaN
        raise ConfigError(key, "must be between %s and %s" % (lo, hi))
    return v


def off_or(v, least, hi, key, out):
    """0 (off), or least..hi."""
    integer(v, 0, hi, key, out)
    if 0 < v < least:
        raise ConfigError(key, "must be 0 (off) or at least %d" % least)
    return v


def positive(v, a, b, key, out):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ConfigError(key, "must be a positive number")
    return v


def text(v, least, most, key, out):
    """A string; of least..most characters unless `most` is None."""
    if isinstance(v, str) and (most is None or least <= len(v) <= most):
        return v
    if most is None:
        raise ConfigError(key, "must be a string")
    if least:
        raise ConfigError(key, "must be a string of %d-%d characters" % (least, most))
    raise ConfigError(key, "must be a string of at most %d characters" % most)


def flag(v, a, b, key, out):
    if v is not True and v is not False:
        raise ConfigError(key, "must be true or false")
    return v


def choice(v, options, b, key, out):
    if not isinstance(v, str) or v not in options:
        raise ConfigError(key, "must be \"%s\"" % "\" or \"".join(options))
    return v


def ident(v, least, most, key, out):
    if not valid_ident(v, most):
        raise ConfigError(key, "must be %d-%d of letters, digits, _ or -, starting with a "
                               "letter or digit" % (least, most))
    return v


def hub_address(v, a, b, key, out):
    parse_hub(v)
    return v


def ntp_server(v, a, b, key, out):
    if not isinstance(v, (bool, str)):
        raise ConfigError(key, "must be true, false or an NTP host name")
    return v


def object_or_null(v, a, b, key, out):
    if v is not None and not isinstance(v, dict):
        raise ConfigError(key, "must be an object")
    return v


def section(v, table, fill, key, out):
    """An object with the keys of `table`; null stays null, or is all defaults when `fill`."""
    if v is None:
        if not fill:
            return None
        v = {}
    if not isinstance(v, dict):
        raise ConfigError(key, "must be an object")
    return _object(v, table, key + ".", True)


def sensor_list(v, table, most, key, out):
    if not isinstance(v, list) or len(v) > most:
        raise ConfigError(key, "must be a list of at most %d sensors" % most)
    names = []
    got = []
    for i, s in enumerate(v):
        p = "%s[%d]" % (key, i)
        if not isinstance(s, dict):
            raise ConfigError(p, "must be an object")
        s = _object(s, table, p + ".", True)
        name = s["name"]
        if name in names or name == RESERVED_NAME:
            raise ConfigError(p + ".name", "duplicate or reserved name " + name)
        names.append(name)
        got.append(s)
    return got


def driver(v, a, b, key, out):
    if not isinstance(v, str) or v not in DRIVERS:
        raise ConfigError(key, "unknown driver %r (known: %s)" % (v, ", ".join(sorted(DRIVERS))))
    return v


def bus(v, a, b, key, out):
    drv = out["driver"]
    kind = DRIVERS[drv]
    name, prefix, _pins = BUSES[kind]
    if v is None:
        return name
    if not isinstance(v, str) or not v.startswith(prefix):
        raise ConfigError(key, "driver %s needs a %s bus" % (drv, kind))
    return v


def pin_names(drv):
    return OWN_PINS.get(drv) or BUSES[DRIVERS[drv]][2]


def pins(v, a, b, key, out):
    if not isinstance(v, dict):
        raise ConfigError(key, "must be an object")
    drv = out["driver"]
    need = pin_names(drv)
    for k in v:
        if k not in need:
            raise ConfigError("%s.%s" % (key, k), "unknown pin for driver %s (uses %s)"
                              % (drv, ", ".join(need)))
        gpio(v[k], 0, GPIO_MAX, "%s.%s" % (key, k), out)
    return dict(v)


def gpio(v, lo, hi, key, out):
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(key, "must be a GPIO number %d..%d" % (lo, hi))
    return v


def params(v, table, b, key, out):
    """Driver parameters: those in `table` are checked (rows name only this driver when
    their last field is a driver name); others are the driver's business."""
    if not isinstance(v, dict):
        raise ConfigError(key, "must be an object")
    drv = out["driver"]
    for name, check, x, y, only in table:
        if name in v and (only is None or only == drv):
            check(v[name], x, y, "%s.%s" % (key, name), out)
    return dict(v)


def i2c_address(v, lo, hi, key, out):
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(key, "must be a 7-bit I2C address 0x%02x..0x%02x" % (lo, hi))
    return v


def hex_digits(v, n, b, key, out):
    if not isinstance(v, str) or len(v) != n or not _only(v, _HEX):
        raise ConfigError(key, "must be %d hex digits" % n)
    return v


# ---- the tables ------------------------------------------------------------------------------

# sensors[i].params: (name, check, a, b, only for this driver or None)
PARAMS = (
    ("address", i2c_address, 0x08, 0x77, None),
    ("kind", choice, ("battery", "soil"), 0, "adc"),
    ("per_pulse", positive, 0, 0, None),
    ("divider", positive, 0, 0, None),
    ("occupied_below_m", positive, 0, 0, None),
    ("single_shot", flag, 0, 0, None),   # scd4x: true by default when deep_sleep is on
    ("rom", hex_digits, 16, 0, None),     # ds18b20
)
SENSOR = (
    ("name", ident, 1, 24, ""),
    ("driver", driver, 0, 0, None),
    ("bus", bus, 0, 0, None),            # None: the driver's bus kind (i2c: "i2c0")
    ("pins", pins, 0, 0, {}),
    ("params", params, PARAMS, 0, {}),
    ("interval", number, 0.1, 86400, OPTIONAL),  # s; absent: the report interval
)
COAP = (
    ("ack_timeout", number, 0.01, 60, 2.0),
    ("ack_random_factor", number, 1.0, 4.0, 1.5),
    ("max_retransmit", integer, 0, 10, 4),
)
OTA = (
    ("blocks_per_wake", integer, 1, 100000, 64),   # 512-byte blocks fetched per report cycle
    ("min_battery", number, 0, 100, 3.4),        # V; no download below it (with a battery reading)
    ("flash_margin", integer, 0, 1 << 48, 65536),   # B kept free beyond the new files
    ("retries", integer, 0, 100, 3),             # fetches again of a file whose hash is wrong
    ("trial_boots", integer, 1, 100, 3),         # boots of a new version before its first ack
)
BATTERY = (
    ("low_v", number, 0, 10, 0),                 # V of the battery reading (adc kind battery); 0: off
    ("interval_factor", number, 1, 100, 4),      # report interval multiplier while low
)
WIFI = (
    ("ssid", text, 1, 32, None),
    ("password", text, 0, 64, ""),
)
KEYS = (
    ("node", ident, 1, 32, REQUIRED),
    ("hub", hub_address, 0, 0, "auto"),
    ("hub_mdns", text, 0, None, "smartpark-hub.local"),  # tried after multicast discovery
    ("hub_port", integer, 1, 65535, 5683),       # multicast discovery and mDNS answers
    ("report_interval", number, 1, 86400, 30),   # s
    ("sensors", sensor_list, SENSOR, 32, []),
    ("wifi", section, WIFI, False, None),        # needed on an ESP32
    ("deep_sleep", choice, ("off", "between_reports"), 0, "off"),
    ("outbox_size", integer, 16, 200000, 2000),  # readings kept while the hub is away
    ("config_version", integer, 0, 0xFFFFFFFF, 0),  # set from the hub's config
    ("lifetime", integer, 10, 86400, 3600),      # s, Resource Directory registration
    ("health_every", integer, 1, 1000, 1),       # health readings every N reports
    ("batch_max", integer, 1, 200, 40),          # readings per report
    ("coap", section, COAP, True, None),
    ("battery", section, BATTERY, True, None),   # low battery: reports spaced wider, no update
    ("ota", section, OTA, True, None),           # over-the-air updates (firmware/ota.py)
    ("ntp", ntp_server, 0, 0, False),            # true on unix: trust the host clock
    ("watchdog_ms", off_or, 5000, 600000, 60000),
    ("ledger", flag, 0, 0, False),               # append every reading to ledger.log (tests)
    ("sim", object_or_null, 0, 0, None),         # the unix board's simulation
)


def _object(d, table, prefix, full):
    for k in d:
        for row in table:
            if row[0] == k:
                break
        else:
            raise ConfigError("%s%s" % (prefix, k), "unknown key")
    out = {}
    for name, check, a, b, default in table:
        if name in d:
            v = d[name]
            if v is None and default is OPTIONAL:
                continue
        elif not full or default is OPTIONAL:
            continue
        elif default is REQUIRED:
            raise ConfigError(prefix + name, "missing")
        else:
            v = default
        out[name] = check(v, a, b, prefix + name, out)
    return out


# ESP32 GPIOs of the RTC domain: the only ones that can wake the chip from deep sleep (ext0/ext1)
RTC_GPIOS = (0, 2, 4, 12, 13, 14, 15, 25, 26, 27, 32, 33, 34, 35, 36, 37, 38, 39)
WAKE_DRIVERS = ("pulse", "pir")   # inputs whose edges must be counted while the node sleeps


def wake_inputs(out):
    """Deep sleep keeps pulse and PIR events only through a wake on their pin (ext0: one pin):
    refuse a pin outside the RTC domain, and a second such input."""
    if out.get("deep_sleep", "off") == "off":
        return
    first = None
    for i, s in enumerate(out.get("sensors") or ()):
        if s["driver"] not in WAKE_DRIVERS:
            continue
        key = "sensors[%d]" % i
        pin = s["pins"].get("in")
        if pin is not None and pin not in RTC_GPIOS:
            raise ConfigError(key + ".pins.in", "a %s input with deep_sleep must be able to wake the "
                              "ESP32 to count its events: an RTC GPIO (0, 2, 4, 12-15, 25-27, 32-39), "
                              "not %d" % (s["driver"], pin))
        if first is not None:
            raise ConfigError(key, "only one pulse or pir input can wake the ESP32 from deep sleep "
                              "(%s is one): its events would be lost while the node sleeps; "
                              "use deep_sleep \"off\" or one such input" % first)
        first = s["name"]


def validate(raw, partial=False):
    """The config with defaults filled in; `partial`: only the keys present are checked."""
    if not isinstance(raw, dict):
        raise ConfigError("(top)", "config must be a JSON object")
    out = _object(raw, KEYS, "", not partial)
    if not partial or ("deep_sleep" in out and "sensors" in out):
        wake_inputs(out)
    return out
