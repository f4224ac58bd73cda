"""config.json: load, validate (naming the key at fault), persist atomically.

A valid config is a dict with these keys (defaults in DEFAULTS):

  node             node id, 1-32 of [A-Za-z0-9_-]                   (required)
  hub              "auto" | "host" | "host:port" | "[v6]:port"      ("auto")
  hub_mdns         mDNS name tried after multicast discovery        ("smartpark-hub.local")
  hub_port         UDP port for multicast discovery and mDNS answers (5683)
  report_interval  seconds between reports, 1..86400                (30)
  sensors          list of {name, driver, bus, pins, params, interval}
                   params: address (I2C), rom (DS18B20), kind (adc), per_pulse,
                   single_shot (scd4x: true by default when deep_sleep is on)
  wifi             {"ssid": str, "password": str} (needed on an ESP32)
  deep_sleep       "off" | "between_reports"                        ("off")
  outbox_size      records kept while the hub is unreachable, 16..200000 (2000)
  config_version   version of this config on the hub                 (0)
  lifetime         Resource Directory registration lifetime, s, 10..86400 (3600)
  health_every     send health every N reports, 1..1000              (1)
  batch_max        readings per report, 1..200                       (40)
  coap             {"ack_timeout": s, "ack_random_factor": >= 1, "max_retransmit": 0..10}
  ntp              false | true | "host"   (true on unix: trust the host clock)
  watchdog_ms      0 (off) or 5000..600000                           (60000)
  ledger           true: append every recorded reading to ledger.log (tests)
  sim              dict for the unix board (seed, indoor, fault_rate, rtc_skew_s)

validate() returns a new dict with defaults filled in, or raises ConfigError
whose `key` is the path to the fault ("sensors[2].pins.sda").
"""

import json
import os

from drivers import BUS_KIND, MODULES

FILE = "config.json"

DEFAULTS = {
    "hub": "auto",
    "hub_mdns": "smartpark-hub.local",
    "hub_port": 5683,
    "report_interval": 30,
    "sensors": [],
    "wifi": None,
    "deep_sleep": "off",
    "outbox_size": 2000,
    "config_version": 0,
    "lifetime": 3600,
    "health_every": 1,
    "batch_max": 40,
    "coap": None,
    "ntp": False,
    "watchdog_ms": 60000,
    "ledger": False,
    "sim": None,
}

COAP_DEFAULTS = {"ack_timeout": 2.0, "ack_random_factor": 1.5, "max_retransmit": 4}

_PINS = {
    "i2c": ("sda", "scl"), "uart": ("rx", "tx"), "onewire": ("data",),
    "adc": ("adc",), "pin": ("in",),
}


class ConfigError(ValueError):
    def __init__(self, key, why):
        super().__init__("config key %s: %s" % (key, why))
        self.key = key
        self.why = why


def valid_ident(s, maxlen=32):
    if not isinstance(s, str) or not 1 <= len(s) <= maxlen:
        return False
    if not (s[0].isalpha() or s[0].isdigit()):
        return False   # SenML names start with a letter or digit (RFC 8428 section 4.5.1)
    for c in s:
        if not (c.isalpha() or c.isdigit() or c in "_-"):
            return False
    return True


def _num(cfg, key, lo, hi, integer=True, path=None):
    v = cfg[key]
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok_type:
        raise ConfigError(path or key, "must be %s" % ("an integer" if integer else "a number"))
    if not lo <= v <= hi:
        raise ConfigError(path or key, "must be between %s and %s" % (lo, hi))
    return v


def parse_hub(hub):
    """("host", port) from "host", "host:port", "[v6]:port", "v6" or None for "auto"."""
    if hub == "auto":
        return None
    if not isinstance(hub, str) or not hub or " " in hub:
        raise ConfigError("hub", "must be \"auto\" or host[:port]")
    port_text = "5683"
    host = hub
    if hub.startswith("["):
        end = hub.find("]")
        if end < 0:
            raise ConfigError("hub", "unclosed [ in IPv6 address")
        host = hub[1:end]
        rest = hub[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError("hub", "junk after ]")
            port_text = rest[1:]
    elif hub.count(":") == 1:
        host, port_text = hub.split(":")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError("hub", "port is not a number") from None
    if not 0 < port < 65536 or not host:
        raise ConfigError("hub", "port out of range or empty host")
    return host, port


def _sensor(i, s, names):
    p = "sensors[%d]" % i
    if not isinstance(s, dict):
        raise ConfigError(p, "must be an object")
    for k in s:
        if k not in ("name", "driver", "bus", "pins", "params", "interval"):
            raise ConfigError(p + "." + str(k), "unknown key")
    name = s.get("name", "")
    if not valid_ident(name, 24):
        raise ConfigError(p + ".name", "must be 1-24 of letters, digits, _ or -, starting with a letter or digit")
    if name in names or name == "health":
        raise ConfigError(p + ".name", "duplicate or reserved name " + name)
    names.append(name)
    drv = s.get("driver")
    if drv not in MODULES:
        raise ConfigError(p + ".driver", "unknown driver %r (known: %s)" % (drv, ", ".join(sorted(MODULES))))
    kind = BUS_KIND[drv]
    bus = s.get("bus", kind + "0" if kind in ("i2c",) else kind)
    if not isinstance(bus, str) or not bus.startswith(kind if kind != "onewire" else "o"):
        raise ConfigError(p + ".bus", "driver %s needs a %s bus" % (drv, kind))
    pins = s.get("pins", {})
    if not isinstance(pins, dict):
        raise ConfigError(p + ".pins", "must be an object")
    need = ("trig", "echo") if drv == "hcsr04" else _PINS[kind]
    for k in pins:
        if k not in need:
            raise ConfigError(p + ".pins." + k, "unknown pin for driver %s (uses %s)" % (drv, ", ".join(need)))
        v = pins[k]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 48:
            raise ConfigError(p + ".pins." + k, "must be a GPIO number 0..48")
    params = s.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(p + ".params", "must be an object")
    addr = params.get("address")
    if addr is not None and (isinstance(addr, bool) or not isinstance(addr, int) or not 0x08 <= addr <= 0x77):
        raise ConfigError(p + ".params.address", "must be a 7-bit I2C address 0x08..0x77")
    if drv == "adc" and params.get("kind", "battery") not in ("battery", "soil"):
        raise ConfigError(p + ".params.kind", "must be \"battery\" or \"soil\"")
    for k in ("per_pulse", "divider", "occupied_below_m"):
        if k in params and (isinstance(params[k], bool) or not isinstance(params[k], (int, float))
                            or params[k] <= 0):
            raise ConfigError(p + ".params." + k, "must be a positive number")
    if "single_shot" in params and not isinstance(params["single_shot"], bool):
        raise ConfigError(p + ".params.single_shot", "must be true or false")
    rom = params.get("rom")
    if rom is not None:
        try:
            ok = isinstance(rom, str) and len(rom) == 16 and bytes.fromhex(rom) is not None
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(p + ".params.rom", "must be 16 hex digits")
    out = {"name": name, "driver": drv, "bus": bus, "pins": pins, "params": params}
    iv = s.get("interval")
    if iv is not None:
        out["interval"] = iv
        _num(out, "interval", 0.1, 86400, False, p + ".interval")
    return out


def validate(raw):
    if not isinstance(raw, dict):
        raise ConfigError("(top)", "config must be a JSON object")
    for k in raw:
        if k != "node" and k not in DEFAULTS:
            raise ConfigError(k, "unknown key")
    if "node" not in raw:
        raise ConfigError("node", "missing")
    if not valid_ident(raw["node"]):
        raise ConfigError("node", "must be 1-32 of letters, digits, _ or -, starting with a letter or digit")
    cfg = dict(DEFAULTS)
    cfg.update(raw)
    parse_hub(cfg["hub"])
    if not isinstance(cfg["hub_mdns"], str):
        raise ConfigError("hub_mdns", "must be a string")
    _num(cfg, "hub_port", 1, 65535)
    _num(cfg, "report_interval", 1, 86400, False)
    _num(cfg, "outbox_size", 16, 200000)
    _num(cfg, "config_version", 0, 0xFFFFFFFF)
    _num(cfg, "lifetime", 10, 86400)
    _num(cfg, "health_every", 1, 1000)
    _num(cfg, "batch_max", 1, 200)
    wd = _num(cfg, "watchdog_ms", 0, 600000)
    if 0 < wd < 5000:
        raise ConfigError("watchdog_ms", "must be 0 (off) or at least 5000")
    if cfg["deep_sleep"] not in ("off", "between_reports"):
        raise ConfigError("deep_sleep", "must be \"off\" or \"between_reports\"")
    w = cfg["wifi"]
    if w is not None:
        if not isinstance(w, dict) or not isinstance(w.get("ssid"), str) or not 1 <= len(w["ssid"]) <= 32:
            raise ConfigError("wifi.ssid", "must be a string of 1-32 characters")
        if not isinstance(w.get("password", ""), str) or len(w.get("password", "")) > 64:
            raise ConfigError("wifi.password", "must be a string of at most 64 characters")
    c = dict(COAP_DEFAULTS)
    if cfg["coap"] is not None:
        if not isinstance(cfg["coap"], dict):
            raise ConfigError("coap", "must be an object")
        for k in cfg["coap"]:
            if k not in COAP_DEFAULTS:
                raise ConfigError("coap." + k, "unknown key")
        c.update(cfg["coap"])
    _num(c, "ack_timeout", 0.01, 60, False, "coap.ack_timeout")
    _num(c, "ack_random_factor", 1.0, 4.0, False, "coap.ack_random_factor")
    _num(c, "max_retransmit", 0, 10, True, "coap.max_retransmit")
    cfg["coap"] = c
    if not isinstance(cfg["ntp"], (bool, str)):
        raise ConfigError("ntp", "must be true, false or an NTP host name")
    if not isinstance(cfg["sensors"], list) or len(cfg["sensors"]) > 32:
        raise ConfigError("sensors", "must be a list of at most 32 sensors")
    names = []  # type: list
    cfg["sensors"] = [_sensor(i, s, names) for i, s in enumerate(cfg["sensors"])]
    if cfg["sim"] is not None and not isinstance(cfg["sim"], dict):
        raise ConfigError("sim", "must be an object")
    return cfg


def load(path=FILE):
    """(validated config, None) or (raw dict or None, ConfigError)."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError:
        return None, ConfigError("(file)", "cannot read " + path)
    except ValueError as e:
        return None, ConfigError("(file)", "not valid JSON: %s" % e)
    try:
        return validate(raw), None
    except ConfigError as e:
        return raw, e


def save(raw, path=FILE):
    """Write atomically: a power cut leaves the old or the new file, never half of one."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(raw, f)
    os.rename(tmp, path)
