"""Configs the node did not boot with: safe mode's stand-in, and a config fetched from the hub.

Safe mode (config.json missing or invalid): the node still needs a node id
and a hub to report its health to. safe_config() takes them from the broken
file where those keys are fine, else from the last good id (ident.json) or
the board's unique id, and keeps the few other keys that validate.

From the hub: GET /cfg/<node> answers a CBOR map (with "version"). merge()
lays it over the file's dict (or safe mode's stand-in), so keys the hub does
not set keep their local value, validates the result and returns it. The
hub's version-0 default is not a config made for this node and never ends
safe mode.
"""

import json
import os

import config
from smartpark.protocol import cbor

IDENT_FILE = "ident.json"   # last good node id, kept for safe mode
_KEEP_IN_SAFE_MODE = ("sim", "coap", "ledger", "report_interval", "hub_port")


def load_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def remember_ident(node):
    """Keep the node id of a valid config for a later safe mode (written only when it changes)."""
    if load_json(IDENT_FILE, {}).get("node") == node:
        return
    with open(IDENT_FILE + ".tmp", "w") as f:
        json.dump({"node": node}, f)
    os.rename(IDENT_FILE + ".tmp", IDENT_FILE)


def safe_config(raw, unique_id):
    """A valid config with no sensors from what can be saved of `raw` (any value)."""
    node = None
    hub = "auto"
    if isinstance(raw, dict):
        node = raw.get("node")
        try:
            config.parse_hub(raw.get("hub", "auto"))
            hub = raw.get("hub", "auto")
        except config.ConfigError:
            pass
    last = load_json(IDENT_FILE, {})
    if not config.valid_ident(node):
        node = last.get("node") if config.valid_ident(last.get("node")) else "node-" + unique_id[-12:]
    safe = {"node": node, "hub": hub}
    if isinstance(raw, dict):
        for k in _KEEP_IN_SAFE_MODE:
            if k in raw:
                try:
                    config.validate(dict(safe, **{k: raw[k]}))
                    safe[k] = raw[k]
                except config.ConfigError:
                    pass
    cfg = config.validate(safe)
    # report often enough that the operator sees the node waiting for a config
    cfg["report_interval"] = min(cfg["report_interval"], 10)
    return cfg


def _safe_raw(cfg):
    out = {"node": cfg["node"], "hub": cfg["hub"]}
    for k in ("sim", "ledger", "hub_port"):
        out[k] = cfg[k]
    out["coap"] = dict(cfg["coap"])
    return out


def merge(body, raw, cfg, safe, want):
    """(merged dict to save, validated config) from the hub's CBOR `body`, or None.

    None: in safe mode the hub only has its version-0 default. Raises
    DecodeError (not CBOR) or config.ConfigError (not a valid config).
    """
    new = cbor.loads(body)
    if not isinstance(new, dict):
        raise config.ConfigError("(hub)", "config is not a map")
    if safe and not new.get("version"):
        return None
    merged = dict(raw or _safe_raw(cfg))
    for k in new:
        if k != "version":
            merged[k] = new[k]
    merged["node"] = cfg["node"]
    merged["config_version"] = new.get("version", want or 0)
    return merged, config.validate(merged)
