"""config.json: load, validate (naming the key at fault), persist atomically.

The keys, their ranges and defaults and the check itself are the node-config
schema shared with the hub and `smartpark flash`: protocol/configschema.py
(a table, one row per key). validate() returns a new dict with defaults
filled in, or raises ConfigError whose `key` is the path to the fault
("sensors[2].pins.sda"); str(e) is "config key <key>: <why>". The schema is
about 20 KB of heap on the unix port: it is imported for each validation and
unloaded again (compat.unload), so it is never resident.
"""

import json
import os

from compat import unload
from smartpark.protocol.errors import ConfigError
from smartpark.protocol.names import parse_hub, valid_ident  # noqa: F401 - the node's config API

_SCHEMA = "smartpark.protocol.configschema"

FILE = "config.json"


def validate(raw, partial=False):
    """configschema.validate, with the schema in the heap only while it runs."""
    from smartpark.protocol import configschema
    try:
        return configschema.validate(raw, partial)
    finally:
        unload(_SCHEMA)


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
