"""protocol/README.md's node-config key table and driver table say what the schema says.

The key, value and default columns of every row are made here from
protocol/configschema.py's tables; on a mismatch the message has the rows to
paste (the last column, what a key is for, is the README's own).
"""

import json
import os

from smartpark.protocol import configschema as S

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "protocol", "README.md")


def _value(check, a, b):
    if check in (S.integer, S.number):
        return "%s %s..%s" % ("integer" if check is S.integer else "number", a, b)
    if check is S.i2c_address:
        return "integer 0x%02x..0x%02x" % (a, b)
    if check is S.text:
        if b is None:
            return "string"
        return "string of %d-%d characters" % (a, b) if a else "string of at most %d characters" % b
    if check is S.choice:
        return " / ".join('`"%s"`' % x for x in a)
    if check is S.ident:
        return "%d-%d of `A-Za-z0-9_-`, first a letter or digit" % (a, b)
    if check is S.off_or:
        return "0 (off) or %d..%d" % (a, b)
    if check is S.sensor_list:
        return "list of at most %d sensors" % b
    if check is S.hex_digits:
        return "%d hex digits" % a
    fixed = {
        S.positive: "number > 0", S.flag: "true / false", S.ntp_server: "true / false / NTP host name",
        S.hub_address: '`"auto"` / host / host:port / [v6]:port / v6',
        S.object_or_null: "object / null", S.section: "object / null", S.params: "object",
        S.driver: "one of the drivers below",
        S.bus: "a name starting with the driver's bus prefix",
        S.pins: "{pin: GPIO 0..%d}, the driver's pin names" % S.GPIO_MAX,
    }
    return fixed[check]


def _default(check, a, b, default):
    if default is S.OPTIONAL:
        return "absent"
    if check is S.bus:
        return "the driver's"
    if check is S.section and b:
        return "each key's"
    try:
        if default is S.REQUIRED:
            raise S.ConfigError("", "missing")
        check(default, a, b, "", {"driver": "pir"})  # any driver: pins and params need one
    except S.ConfigError:
        return "required"
    return "`%s`" % json.dumps(default)


def _rows(table, prefix=""):
    for name, check, a, b, default in table:
        yield prefix + name, _value(check, a, b), _default(check, a, b, default)
        if check is S.section:
            yield from _rows(a, prefix + name + ".")
        elif check is S.sensor_list:
            yield from _rows(a, prefix + name + "[].")
        elif check is S.params:
            for pname, pcheck, pa, pb, only in a:
                value = _value(pcheck, pa, pb) + (" (%s)" % only if only else "")
                yield "%s%s.%s" % (prefix, name, pname), value, "absent"


def _readme_rows(header):
    lines = open(README, encoding="utf-8").read().splitlines()
    start = lines.index(header) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(tuple(c.strip() for c in line.strip("|").split("|")))
    return rows


def test_key_table():
    want = [("`%s`" % k, v, d) for k, v, d in _rows(S.KEYS)]
    got = [r[:3] for r in _readme_rows("| key | value | default | what |")]
    assert got == want, "protocol/README.md key table, first three columns:\n" + "\n".join(
        "| %s | %s | %s |" % r for r in want)


def test_driver_table():
    want = []
    for drv in sorted(S.DRIVERS):
        kind = S.DRIVERS[drv]
        name, prefix, _pins = S.BUSES[kind]
        want.append(("`%s`" % drv, kind, "`%s`" % name, "`%s`" % prefix,
                     ", ".join(S.pin_names(drv))))
    got = _readme_rows("| driver | bus kind | bus when none is given | bus names start with | pins |")
    assert got == want, "protocol/README.md driver table:\n" + "\n".join(
        "| %s |" % " | ".join(r) for r in want)
