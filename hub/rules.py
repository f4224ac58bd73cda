"""Input rules the hub enforces at its edges: node ids, reading times, node configs.

Scope: pure checks, no I/O; each returns None when the input is fine or a
short text naming what is wrong (the caller turns it into 4.00 / 400).

Node ids (POST /r names, RD `ep`): the firmware and `smartpark flash` allow
1-32 of [A-Za-z0-9_-] starting with a letter or digit (protocol/configschema.py
valid_ident, tools/nodeconfig.py check_node_id). The hub accepts exactly
those, plus '.' and ':' and up to 64 characters, so that a plain RFC 8428
sender naming itself "urn:dev:mac:0024befffe804ff1/" still fits (SenML name
characters, RFC 8428 section 4.5.1). Never '/', so every node is reachable
as one path segment in /latest/<node>/<sensor> and /api/series/<node>/...

Reading times: a reading more than `max_future` seconds ahead of the hub's
clock, or before 2000-01-01, is refused (it would stay "latest" for ever and
make every later reading late for its rollup bucket).

Node configs (PUT /api/nodes/{node}/config): the node's own rules, from the
one node-config schema (protocol/configschema.py: a node rejects a config
that fails them, so the hub refuses it up front), on the keys present, plus
"firmware" (the version the node should run, a hub-side key) and "version"
(ignored: the hub sets it). Nesting is limited below cbor.loads' depth
limit. The same tables give the body's JSON Schema (config_json_schema, for
the OpenAPI document) and turn integral JSON floats into ints
(config_normalize).
"""

import math

from smartpark.protocol import configschema as schema

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
HUB_ONLY_KEYS = ("firmware", "version")  # the wanted firmware; the version the hub sets
KNOWN_KEYS = tuple(sorted({row[0] for row in schema.KEYS if row[0] != "node"} | {"firmware"}))


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


def _intish(v):
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2 ** 53 else v


_INTEGRAL = (schema.integer, schema.off_or, schema.gpio, schema.i2c_address)


def _normalized(d, table):
    out = dict(d)
    for name, check, a, _b, _default in table:
        v = out.get(name)
        if v is None:
            continue
        if check in _INTEGRAL:
            out[name] = _intish(v)
        elif check is schema.section and isinstance(v, dict):
            out[name] = _normalized(v, a)
        elif check is schema.sensor_list and isinstance(v, list):
            out[name] = [_normalized(s, a) if isinstance(s, dict) else s for s in v]
        elif check is schema.pins and isinstance(v, dict):
            out[name] = {p: _intish(n) for p, n in v.items()}
        elif check is schema.params and isinstance(v, dict):
            out[name] = _normalized(v, a)
    return out


def config_normalize(doc):
    """JSON has one number type: 30.0 for an integer key becomes 30 (the firmware insists
    on integers there). Returns a new dict; anything else is left for config_error()."""
    return _normalized(doc, schema.KEYS) if isinstance(doc, dict) else doc


def config_error(doc):
    """None when `doc` (a node config overlay from PUT) is acceptable, else (key, message).

    The node's own rules (protocol/configschema.py) on the keys present, plus what only
    the hub has: a "firmware" key, the "version" it sets itself, and a nesting limit."""
    if not isinstance(doc, dict):
        return "body", "body must be a JSON object"
    if not _depth(doc, CONFIG_MAX_DEPTH):
        return "body", "config nests deeper than %d levels" % CONFIG_MAX_DEPTH
    for key in doc:
        if key not in KNOWN_KEYS and key not in HUB_ONLY_KEYS:
            return key, "unknown config key %r (known: %s)" % (key, ", ".join(KNOWN_KEYS))
    if "firmware" in doc and not isinstance(doc["firmware"], str):
        return "firmware", "firmware must be a string"
    try:
        schema.validate({k: v for k, v in doc.items() if k not in HUB_ONLY_KEYS}, partial=True)
    except schema.ConfigError as e:
        # "report_interval must be between 1 and 86400"; "hub: port is not a number"
        sep = " " if e.why.startswith("must ") else ": "
        return e.key, "%s%s%s" % (e.key, sep, e.why)
    return None


# ---- the same rules as JSON Schema (the OpenAPI document's Config body) -------------------

_PORT = "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# "auto", "[v6]", "[v6]:port", "host", "host:port", or anything with two colons or more (a
# bare IPv6 address): schema.parse_hub; ports written with leading zeros are left out here
HUB_PATTERN = "^(auto|\\[[^ \\]]+\\](:%s)?|[^ :\\[][^ :]*(:%s)?|([^ :\\[][^ :]*)?:[^ :]*:[^ ]*)$" % (
    _PORT, _PORT)
_SCALARS = {
    schema.integer: lambda a, b: {"type": "integer", "minimum": a, "maximum": b},
    schema.number: lambda a, b: {"type": "number", "minimum": a, "maximum": b},
    schema.off_or: lambda a, b: {"oneOf": [{"type": "integer", "enum": [0]},
                                          {"type": "integer", "minimum": a, "maximum": b}]},
    schema.positive: lambda a, b: {"type": "number", "exclusiveMinimum": 0},
    schema.text: lambda a, b: ({"type": "string"} if b is None else
                               {"type": "string", "minLength": a, "maxLength": b}),
    schema.flag: lambda a, b: {"type": "boolean"},
    schema.choice: lambda a, b: {"type": "string", "enum": list(a)},
    schema.ident: lambda a, b: {"type": "string",
                                "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,%d}$" % (b - 1)},
    schema.hub_address: lambda a, b: {"type": "string", "pattern": HUB_PATTERN},
    schema.ntp_server: lambda a, b: {"type": ["boolean", "string"]},
    schema.object_or_null: lambda a, b: {"type": ["object", "null"]},
    schema.gpio: lambda a, b: {"type": "integer", "minimum": a, "maximum": b},
    schema.i2c_address: lambda a, b: {"type": "integer", "minimum": a, "maximum": b},
    schema.hex_digits: lambda a, b: {"type": "string", "pattern": "^[0-9A-Fa-f]{%d}$" % a},
}


def _required(row, out=None):
    """Whether a row's key may be left out (its default passes its own check)."""
    name, check, a, b, default = row
    if default is schema.OPTIONAL:
        return False
    if default is schema.REQUIRED:
        return True
    try:
        check(default, a, b, name, out)
    except schema.ConfigError:
        return True
    return False


def _properties(table, out=None):
    props = {row[0]: _property(row) for row in table}
    return props, [row[0] for row in table if _required(row, out)]


def _property(row):
    name, check, a, b, default = row
    if check in _SCALARS:
        out = _SCALARS[check](a, b)
        if default is schema.OPTIONAL:  # null is the same as absent
            out["type"] = [out["type"], "null"]
        return out
    if check is schema.section:
        props, required = _properties(a)
        out = {"type": ["object", "null"], "additionalProperties": False, "properties": props}
        if required:
            out["required"] = required
        return out
    if check is schema.sensor_list:
        return {"type": "array", "maxItems": b,
                "items": {"anyOf": [_sensor(d, a) for d in sorted(schema.DRIVERS)]}}
    raise ValueError("no JSON Schema for config key %s" % name)


def _sensor(drv, table):
    """The sensor entry for one driver: its bus, its pins, its parameters."""
    _bus, prefix, _pins = schema.BUSES[schema.DRIVERS[drv]]
    gpio = _SCALARS[schema.gpio](0, schema.GPIO_MAX)
    known = {"driver": drv}
    props, required = _properties([r for r in table if r[0] in ("name", "interval")], known)
    props["driver"] = {"const": drv}
    props["bus"] = {"type": "string", "pattern": "^" + prefix}
    props["pins"] = {"type": "object", "additionalProperties": False,
                     "properties": {p: gpio for p in schema.pin_names(drv)}}
    props["params"] = {"type": "object", "properties": {
        name: _SCALARS[check](a, b) for name, check, a, b, only in schema.PARAMS
        if only is None or only == drv}}
    return {"type": "object", "additionalProperties": False, "properties": props,
            "required": required + ["driver"]}


def config_json_schema():
    """PUT /api/nodes/{node}/config: what config_error() accepts, as JSON Schema (sensor
    names must also be unique and not "health": not expressible here)."""
    props, _required_keys = _properties([r for r in schema.KEYS if r[0] != "node"])
    props["firmware"] = {"type": "string", "description": "firmware version the node should run"}
    props["version"] = {"description": "ignored: the hub sets the version"}
    return {"type": "object", "additionalProperties": False, "properties": props,
            "maxProperties": 64}
