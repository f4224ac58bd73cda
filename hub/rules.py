"""Input rules the hub enforces at its edges: node ids, reading times, node configs.

Scope: pure checks, no I/O; each returns None when the input is fine or a
short text naming what is wrong (the caller turns it into 4.00 / 400).

Node ids (POST /r names, RD `ep`): the firmware and `smartpark flash` allow
1-32 of [A-Za-z0-9_-] starting with a letter or digit (firmware/config.py
valid_ident, tools/nodeconfig.py check_node_id). The hub accepts exactly
those, plus '.' and ':' and up to 64 characters, so that a plain RFC 8428
sender naming itself "urn:dev:mac:0024befffe804ff1/" still fits (SenML name
characters, RFC 8428 section 4.5.1). Never '/', so every node is reachable
as one path segment in /latest/<node>/<sensor> and /api/series/<node>/...

Reading times: a reading more than `max_future` seconds ahead of the hub's
clock, or before 2000-01-01, is refused (it would stay "latest" for ever and
make every later reading late for its rollup bucket).

Node configs (PUT /api/nodes/{node}/config): the keys and ranges of
firmware/config.py validate() (a node rejects a config that fails them, so
the hub refuses it up front), plus "firmware" (the version the node should
run, a hub-side key). Nesting is limited below cbor.loads' depth limit.
"""

import math

NODE_ID_MAX = 64
NODE_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"  # the same rule, for OpenAPI
_ID_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_ID_CHARS = _ID_FIRST | frozenset("_-.:")

MIN_TIME = 946684800.0  # 2000-01-01T00:00:00Z
DEFAULT_MAX_FUTURE = 86400.0  # s a reading may be ahead of the hub's clock

LT_MAX = 2 ** 32 - 1  # RFC 9176 section 5: lt is 1..4294967295 (seconds)


def node_id_error(node):
    """None when `node` is a usable node id, else why not."""
    if not isinstance(node, str) or not node:
        return "node id is empty"
    if len(node) > NODE_ID_MAX:
        return "node id is longer than %d characters" % NODE_ID_MAX
    if node[0] not in _ID_FIRST:
        return "node id %r must start with a letter or digit" % node[:NODE_ID_MAX]
    for c in node:
        if c not in _ID_CHARS:
            return "node id %r has %r (allowed: letters, digits, _ - . :)" % (node, c)
    return None


def time_error(t, now, max_future=DEFAULT_MAX_FUTURE):
    """None when reading time `t` is plausible at hub time `now`, else why not."""
    if not isinstance(t, (int, float)) or not math.isfinite(t):
        return "time is not a finite number"
    if t < MIN_TIME:
        return "time %.17g is before 2000-01-01" % t
    if t > now + max_future:
        return "time %.17g is more than %gs ahead of the hub's clock (%.0f)" % (
            t, max_future, now)
    return None


def lifetime_error(text):
    """RD `lt` (query text) -> None when 1..2**32-1 whole seconds, else why not."""
    if not isinstance(text, str) or not text.isdigit() or not text.isascii():
        return "lt must be a whole number of seconds 1..%d, got %r" % (LT_MAX, text[:40])
    if len(text) > 10 or not 1 <= int(text) <= LT_MAX:
        return "lt must be 1..%d seconds, got %s" % (LT_MAX, text[:40])
    return None


# ---- node configs ------------------------------------------------------------------------

CONFIG_MAX_DEPTH = 8  # cbor.loads allows 32; a node config never needs more than 4

_INT = "int"
_NUM = "num"
# key -> (kind, lo, hi): firmware/config.py validate()
_RANGES = {
    "hub_port": (_INT, 1, 65535),
    "report_interval": (_NUM, 1, 86400),
    "outbox_size": (_INT, 16, 200000),
    "config_version": (_INT, 0, 0xFFFFFFFF),
    "lifetime": (_INT, 10, 86400),
    "health_every": (_INT, 1, 1000),
    "batch_max": (_INT, 1, 200),
    "watchdog_ms": (_INT, 0, 600000),
}
_COAP = {"ack_timeout": (_NUM, 0.01, 60), "ack_random_factor": (_NUM, 1.0, 4.0),
         "max_retransmit": (_INT, 0, 10)}
_SENSOR_KEYS = ("name", "driver", "bus", "pins", "params", "interval")
KNOWN_KEYS = tuple(sorted(set(_RANGES) | {
    "hub", "hub_mdns", "sensors", "wifi", "deep_sleep", "coap", "ntp", "ledger", "sim",
    "firmware"}))


def _depth(x, limit):
    """True when x nests no deeper than `limit` containers."""
    stack = [(x, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            if d > limit:
                return False
            items = v.values() if isinstance(v, dict) else v
            stack.extend((c, d + 1) for c in items)
    return True


def _range(key, v, kind, lo, hi):
    ok = isinstance(v, int) if kind == _INT else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok:
        return key, "%s must be %s" % (key, "an integer" if kind == _INT else "a number")
    if not (lo <= v <= hi):  # also false for NaN
        return key, "%s must be between %s and %s" % (key, lo, hi)
    return None


def _ident(s, maxlen):
    return (isinstance(s, str) and 1 <= len(s) <= maxlen and s[0] in _ID_FIRST
            and all(c in _ID_FIRST or c in "_-" for c in s))


def _sensor_error(i, s):
    p = "sensors[%d]" % i
    if not isinstance(s, dict):
        return p, "%s must be an object" % p
    for k in s:
        if k not in _SENSOR_KEYS:
            return "%s.%s" % (p, k), "unknown sensor key %r" % (k,)
    if not _ident(s.get("name"), 24) or s.get("name") == "health":
        return p + ".name", "%s.name must be 1-24 of letters, digits, _ or -" % p
    if not isinstance(s.get("driver"), str):
        return p + ".driver", "%s.driver must be a driver name" % p
    if "bus" in s and not isinstance(s["bus"], str):
        return p + ".bus", "%s.bus must be a string" % p
    for k in ("pins", "params"):
        if k in s and not isinstance(s[k], dict):
            return "%s.%s" % (p, k), "%s.%s must be an object" % (p, k)
    for k, v in s.get("pins", {}).items():
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 48:
            return "%s.pins.%s" % (p, k), "%s.pins.%s must be a GPIO number 0..48" % (p, k)
    if "interval" in s:
        return _range(p + ".interval", s["interval"], _NUM, 0.1, 86400)
    return None


def _intish(v):
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2 ** 53 else v


def config_normalize(doc):
    """JSON has one number type: 30.0 for an integer key becomes 30 (the firmware insists
    on integers there). Returns a new dict; anything else is left for config_error()."""
    if not isinstance(doc, dict):
        return doc
    out = dict(doc)
    for k, (kind, _lo, _hi) in _RANGES.items():
        if kind == _INT and k in out:
            out[k] = _intish(out[k])
    if isinstance(out.get("coap"), dict) and "max_retransmit" in out["coap"]:
        out["coap"] = dict(out["coap"], max_retransmit=_intish(out["coap"]["max_retransmit"]))
    if isinstance(out.get("sensors"), list):
        sensors = []
        for sensor in out["sensors"]:
            if isinstance(sensor, dict) and isinstance(sensor.get("pins"), dict):
                sensor = dict(sensor, pins={p: _intish(n) for p, n in sensor["pins"].items()})
            sensors.append(sensor)
        out["sensors"] = sensors
    return out


def config_error(doc):
    """None when `doc` (a node config overlay from PUT) is acceptable, else (key, message)."""
    if not isinstance(doc, dict):
        return "body", "body must be a JSON object"
    if not _depth(doc, CONFIG_MAX_DEPTH):
        return "body", "config nests deeper than %d levels" % CONFIG_MAX_DEPTH
    for key, v in doc.items():
        if key == "version":
            continue  # set by the hub
        if key not in KNOWN_KEYS:
            return key, "unknown config key %r (known: %s)" % (key, ", ".join(KNOWN_KEYS))
        if key in _RANGES:
            err = _range(key, v, *_RANGES[key])
            if err:
                return err
            if key == "watchdog_ms" and 0 < v < 5000:
                return key, "watchdog_ms must be 0 (off) or at least 5000"
        elif key in ("hub", "hub_mdns", "firmware"):
            if not isinstance(v, str) or (key == "hub" and (not v or " " in v)):
                return key, "%s must be a %sstring" % (key, "non-empty " if key == "hub" else "")
        elif key == "deep_sleep":
            if v not in ("off", "between_reports"):
                return key, 'deep_sleep must be "off" or "between_reports"'
        elif key == "ntp":
            if not isinstance(v, (bool, str)):
                return key, "ntp must be true, false or an NTP host name"
        elif key == "ledger":
            if not isinstance(v, bool):
                return key, "ledger must be true or false"
        elif key == "sim":
            if v is not None and not isinstance(v, dict):
                return key, "sim must be an object"
        elif key == "wifi":
            if v is None:
                continue
            if not isinstance(v, dict) or not isinstance(v.get("ssid"), str) \
                    or not 1 <= len(v["ssid"]) <= 32:
                return "wifi.ssid", "wifi.ssid must be a string of 1-32 characters"
            pw = v.get("password", "")
            if not isinstance(pw, str) or len(pw) > 64:
                return "wifi.password", "wifi.password must be a string of at most 64 characters"
            for k in v:
                if k not in ("ssid", "password"):
                    return "wifi." + str(k), "unknown wifi key %r" % (k,)
        elif key == "coap":
            if v is None:
                continue
            if not isinstance(v, dict):
                return key, "coap must be an object"
            for k, x in v.items():
                if k not in _COAP:
                    return "coap." + str(k), "unknown coap key %r" % (k,)
                err = _range("coap." + k, x, *_COAP[k])
                if err:
                    return err
        elif key == "sensors":
            if not isinstance(v, list) or len(v) > 32:
                return key, "sensors must be a list of at most 32 sensors"
            names = set()
            for i, s in enumerate(v):
                err = _sensor_error(i, s)
                if err:
                    return err
                if s["name"] in names:
                    return "sensors[%d].name" % i, "duplicate sensor name %r" % s["name"]
                names.add(s["name"])
    return None
