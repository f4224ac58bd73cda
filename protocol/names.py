"""Node and sensor names, and the hub's address as a config gives it.

    valid_ident(s, maxlen=32)  -> True for 1-maxlen ASCII letters, digits, _ or -,
                                  starting with a letter or digit (SenML-safe)
    parse_hub("host:port")     -> ("host", port); None for "auto"; ConfigError
                                  (key "hub") when malformed

Split from configschema.py (which re-exports both) because a node needs
these at every report cycle, and the whole schema only while it checks a
config: the node keeps this small module loaded and imports the schema for
the moment it validates. Runs on MicroPython and CPython.
"""

from .errors import ConfigError

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

COAP_PORT = const(5683)  # the hub's port when "hub" names none
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def only(s, chars):
    """True when every character of s is one of chars."""
    for c in s:
        if c not in chars:
            return False
    return True


def valid_ident(s, maxlen=32):
    """SenML-safe name (RFC 8428 section 4.5.1): ASCII, so both interpreters agree."""
    if not isinstance(s, str) or not 1 <= len(s) <= maxlen or s[0] not in ALNUM:
        return False
    for c in s:
        if c not in ALNUM and c != "_" and c != "-":
            return False
    return True


def parse_hub(hub):
    """("host", port) from "host", "host:port", "[v6]:port", "v6" or None for "auto"."""
    if hub == "auto":
        return None
    if not isinstance(hub, str) or not hub or " " in hub:
        raise ConfigError("hub", "must be \"auto\" or host[:port]")
    port_text = None  # None: the default port
    host = hub
    if hub[0] == "[":
        end = hub.find("]")
        if end < 0:
            raise ConfigError("hub", "unclosed [ in IPv6 address")
        host = hub[1:end]
        rest = hub[end + 1:]
        if rest:
            if rest[0] != ":":
                raise ConfigError("hub", "junk after ]")
            port_text = rest[1:]
    elif hub.count(":") == 1:
        host, port_text = hub.split(":")
    port = COAP_PORT
    if port_text is not None:
        if not 1 <= len(port_text) <= 5 or not only(port_text, "0123456789"):
            raise ConfigError("hub", "port is not a number")
        port = int(port_text)
    if not 0 < port < 65536 or not host:
        raise ConfigError("hub", "port out of range or empty host")
    return host, port
