"""Secret values in a node's config, and the views of a config that leave them out.

Scope: decide which config values are secret and produce the masked views the
hub serves; nothing here reads or stores configs. A node config
(protocol/configschema.py) holds one secret in its schema, `wifi.password`;
its free-form objects (`sim`, `sensors[i].params`) may hold more, so any key
named like a credential is secret too (`password`, `passwd`, `psk`, `secret`,
`token`, `oscore`, or ending in `_password`, `_psk`, `_secret`, `_token`,
`_key`). The whole value under such a key is secret, whatever its type.

Two views, one rule each:

    masked(doc)       HTTP: every secret value reads "***" (so an operator sees
                      that a password is set, never what it is)
    without(doc)      CoAP to anyone but the node itself: every top-level key
                      that holds a secret is left out. The firmware lays the
                      hub's config over its own per top-level key
                      (firmware/remotecfg.py merge), so a "***" or a `wifi`
                      section without its password would replace the node's
                      working Wi-Fi credentials; without the key it keeps them.
    restore(new, old) PUT: a secret given as "***" keeps the stored value, so a
                      config read over HTTP can be edited and written back.
"""

MASK = "***"
_NAMES = ("password", "passwd", "psk", "secret", "token", "oscore")
_SUFFIXES = ("_password", "_psk", "_secret", "_token", "_key")


def is_secret(name):
    """True for a config key whose value is secret (see the module docstring)."""
    if not isinstance(name, str):
        return False
    n = name.lower()
    return n in _NAMES or n.endswith(_SUFFIXES)


def has_secret(value):
    """True when `value` (any decoded config value) holds a secret anywhere inside."""
    if isinstance(value, dict):
        return any(is_secret(k) or has_secret(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_secret(v) for v in value)
    return False


def masked(value):
    """A copy of `value` with every secret value replaced by MASK (absent stays absent)."""
    if isinstance(value, dict):
        return {k: (MASK if is_secret(k) and v is not None else masked(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def without(doc):
    """A copy of the config map `doc` without the top-level keys that hold a secret."""
    if not isinstance(doc, dict):
        return doc
    return {k: v for k, v in doc.items() if not (is_secret(k) or has_secret(v))}


class MissingSecret(ValueError):
    """A "***" in a PUT where the stored config has no value to keep; `.path` names it."""

    def __init__(self, path):
        super().__init__("%s is %r (keep the stored value) but no value is stored"
                         % (path, MASK))
        self.path = path


def restore(new, old, path=""):
    """A copy of `new` in which each secret given as MASK takes the value at the same
    place in `old` (the stored config, or None). Raises MissingSecret naming the key."""
    if isinstance(new, dict):
        out = {}
        for k, v in new.items():
            p = "%s.%s" % (path, k) if path else str(k)
            prev = old.get(k) if isinstance(old, dict) else None
            if is_secret(k) and v == MASK:
                if prev is None or prev == MASK:
                    raise MissingSecret(p)
                out[k] = prev
            else:
                out[k] = restore(v, prev, p)
        return out
    if isinstance(new, list):
        olds = old if isinstance(old, list) else []
        return [restore(v, _counterpart(v, olds, i), "%s[%d]" % (path, i))
                for i, v in enumerate(new)]
    return new


def _counterpart(item, olds, i):
    """The stored list item `item` edits: the one of the same "name" (sensors), else the
    one at the same index."""
    name = item.get("name") if isinstance(item, dict) else None
    if name is not None:
        for o in olds:
            if isinstance(o, dict) and o.get("name") == name:
                return o
        return None
    return olds[i] if i < len(olds) else None
