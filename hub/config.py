"""Hub configuration: defaults, a TOML file (tomllib) and command-line flags.

Precedence, lowest first: built-in defaults, the TOML file given with
`--config`, the environment (SMARTPARK_READ_TOKEN, SMARTPARK_ADMIN_TOKEN: the
HTTP tokens, kept off the command line), then flags. Every value is checked before anything starts; a wrong
one raises ConfigError naming the key (as written in TOML, e.g.
`coap.port`) and what is expected, and `smartpark hub` exits with that text.

TOML layout (every key optional):

    data_dir = "./data"
    [coap]
    bind = "::"            # "::" = IPv4 and IPv6 (dual stack); "0.0.0.0" = IPv4 only
    port = 5683
    multicast = true        # join 224.0.1.187 / ff02::fd where the host allows
    max_payload = 8192      # bytes; larger reports get 4.13
    max_future = 86400.0    # s; readings further ahead of the hub's clock get 4.00
    fast_path = true        # POST /r via the recvmmsg fast path (hub/fastpath.py)
    column_lane = true      # ordinary reports stored as columns (fast/lane.pyx)
    [http]
    bind = "127.0.0.1"      # loopback: reads need no token; any other address: they do
    port = 8080
    read_token = ""         # bearer token for reads (env SMARTPARK_READ_TOKEN)
    admin_token = ""        # bearer token for writes and reads (env SMARTPARK_ADMIN_TOKEN);
                            # empty = writes disabled. `token` is its old name, still accepted
    open_reads = false      # true: reads need no token on any address
    tls_cert = ""           # PEM certificate chain and key: serve HTTPS (both or neither)
    tls_key = ""
    [store]
    retention_days = 30     # raw readings; rollups are kept
    retention_interval = 3600
    cache_mb = 64           # page cache of each SQLite connection
    memory_mb = 48          # SQLite's memory for the whole hub, all connections together
    reserve_mb = 200.0      # free disk kept: below max(reserve_mb, reserve_percent) new
    reserve_percent = 2.0   # readings get 5.03 (at most a quarter of the filesystem)
    check_seconds = 10.0    # time bound of the integrity check of the files at start
    [liveness]
    factor = 3.0            # offline after factor x expected interval without a report
    default_interval = 60.0 # s, when neither config nor history gives one
    check_interval = 1.0
    [metrics]
    per_node = false        # /metrics: battery, RSSI, outbox and sensor errors per node (one
                            # series per node each: mind the cardinality of a large park)
    [discovery]
    zeroconf = true
    name = "smartpark hub"
    [nodes]
    firmware = ""           # firmware version wanted on every node ("" = none)
    [rollouts]
    check_interval = 5.0    # s between evaluations of the staged rollouts (hub/rollouts.py)
    [security]
    mode = "oscore"         # "oscore": nodes must use OSCORE; "off": development only
    replay_window = 32      # sequence numbers per node the hub remembers (1..64)
    [park]
    file = ""               # TOML file of node metadata read at start (hub/park.py)
    [alarms]
    file = ""               # TOML file of alarm rules read at start (docs/alarms.md)
    check_interval = 0.5    # s between evaluations of the alarm rules
    webhook = ""            # URL each alarm change is POSTed to ("" = none)
    webhook_timeout = 5.0   # s per delivery attempt
    webhook_retries = 3     # attempts after the first, waits doubling from 0.5 s
"""

import os
import tomllib


class ConfigError(ValueError):
    """A configuration value that cannot be used; names the key."""

    def __init__(self, key, expected, got=None):
        self.key = key
        self.expected = expected
        text = "config key %r: expected %s" % (key, expected)
        if got is not None:
            text += ", got %r" % (got,)
        super().__init__(text)


# key -> (default, kind, extra) ; kinds: str, host, token, port, bool, posfloat, posint
_SPEC = {
    "data_dir": ("./data", "str"),
    "coap.bind": ("::", "host"),
    "coap.port": (5683, "port"),
    "coap.multicast": (True, "bool"),
    "coap.max_payload": (8192, "posint"),
    "coap.fast_path": (True, "bool"),
    "coap.column_lane": (True, "bool"),
    "coap.max_future": (86400.0, "posfloat"),
    "http.bind": ("127.0.0.1", "host"),
    "http.port": (8080, "port"),
    "http.read_token": ("", "token"),
    "http.admin_token": ("", "token"),
    "http.open_reads": (False, "bool"),
    "http.tls_cert": ("", "str"),
    "http.tls_key": ("", "str"),
    "store.retention_days": (30.0, "posfloat"),
    "store.retention_interval": (3600.0, "posfloat"),
    "store.cache_mb": (64, "posint"),
    "store.memory_mb": (48, "posint"),
    "store.reserve_mb": (200.0, "posfloat"),
    "store.reserve_percent": (2.0, "posfloat"),
    "store.check_seconds": (10.0, "posfloat"),
    "liveness.factor": (3.0, "posfloat"),
    "liveness.default_interval": (60.0, "posfloat"),
    "liveness.check_interval": (1.0, "posfloat"),
    "metrics.per_node": (False, "bool"),
    "discovery.zeroconf": (True, "bool"),
    "discovery.name": ("smartpark hub", "str"),
    "nodes.firmware": ("", "str"),
    "rollouts.check_interval": (5.0, "posfloat"),
    "security.mode": ("oscore", "str"),
    "security.replay_window": (32, "posint"),
    "park.file": ("", "str"),
    "alarms.file": ("", "str"),
    "alarms.check_interval": (0.5, "posfloat"),
    "alarms.webhook": ("", "str"),
    "alarms.webhook_timeout": (5.0, "posfloat"),
    "alarms.webhook_retries": (3, "posint"),
}

# flag dest -> key
FLAG_KEYS = {
    "data": "data_dir",
    "coap_bind": "coap.bind",
    "coap_port": "coap.port",
    "http_bind": "http.bind",
    "http_port": "http.port",
    "http_token": "http.token",
    "read_token": "http.read_token",
    "admin_token": "http.admin_token",
    "retention_days": "store.retention_days",
    "offline_factor": "liveness.factor",
    "no_zeroconf": "discovery.zeroconf",
    "no_multicast": "coap.multicast",
    "no_fast_path": "coap.fast_path",
    "no_column_lane": "coap.column_lane",
    "security": "security.mode",
}


# old key names still accepted -> the key they stand for
ALIASES = {"http.token": "http.admin_token"}
# environment variables read by load() -> key (secrets need not be on a command line)
ENV_KEYS = {"SMARTPARK_READ_TOKEN": "http.read_token",
            "SMARTPARK_ADMIN_TOKEN": "http.admin_token"}


def _unalias(items):
    """`items` (key -> value) with old key names replaced by the keys they stand for."""
    out = {k: v for k, v in items.items() if k not in ALIASES}
    for old, key in ALIASES.items():
        if old in items:
            if key in items and items[key] != items[old]:
                # values left out of the message: these are secrets
                raise ConfigError(old, "the same value as %s (it is that key's old name), "
                                       "or only one of the two" % key)
            out[key] = items[old]
    return out


def _check_token(key, value):
    """A bearer token: printable ASCII without spaces. The value never goes into a message."""
    if not isinstance(value, str):
        raise ConfigError(key, "a string")
    if not all("!" <= c <= "~" for c in value):
        raise ConfigError(key, "a token of printable ASCII characters without spaces")
    return value


def _check_park(checked):
    """The park and alarm rule files parse and hold only good entries (read again at start)."""
    from . import alarms, park

    if checked["park.file"]:
        try:
            park.read_file(checked["park.file"])
        except park.ParkError as e:
            raise ConfigError("park.file", "%s: %s" % (e.parameter, e.text),
                              checked["park.file"]) from None
    if checked["alarms.file"]:
        try:
            alarms.read_file(checked["alarms.file"])
        except alarms.AlarmError as e:
            raise ConfigError("alarms.file", "%s: %s" % (e.parameter, e.text),
                              checked["alarms.file"]) from None
    hook = checked["alarms.webhook"]
    if hook and not hook.startswith(("http://", "https://")):
        raise ConfigError("alarms.webhook", "an http:// or https:// URL")  # may hold a secret


def _check_security(checked):
    if checked["security.mode"] not in ("oscore", "off"):
        raise ConfigError("security.mode", '"oscore" or "off"', checked["security.mode"])
    if not 1 <= checked["security.replay_window"] <= 64:
        raise ConfigError("security.replay_window", "1..64", checked["security.replay_window"])


def _check_http(checked):
    """Rules across the http.* keys; adds `http.token` (the admin token's old name)."""
    cert, key = checked["http.tls_cert"], checked["http.tls_key"]
    if bool(cert) != bool(key):
        raise ConfigError("http.tls_key" if cert else "http.tls_cert",
                          "to be set together with %s" % ("http.tls_cert" if cert else "http.tls_key"))
    for name, path in (("http.tls_cert", cert), ("http.tls_key", key)):
        if path and not os.access(path, os.R_OK):
            raise ConfigError(name, "a readable PEM file", path)
    checked["http.token"] = checked["http.admin_token"]


def _check(key, kind, value, text_ok=True):  # noqa: C901 - one branch per value kind, each with its own message
    """text_ok: a string may stand for a number (flags); TOML must use real numbers."""
    if not text_ok and isinstance(value, str) and kind in ("port", "posint", "posfloat"):
        expected = {"port": "a port number 0..65535", "posint": "a positive integer",
                    "posfloat": "a positive number"}[kind]
        raise ConfigError(key, expected + ", not a string (write it without quotes)", value)
    if kind == "token":
        return _check_token(key, value)
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(key, "a string", value)
        return value
    if kind == "host":
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            raise ConfigError(key, "a host name or IP address (\"::\" for all)", value)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(key, "true or false", value)
        return value
    if kind == "port":
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise ConfigError(key, "a port number 0..65535 (0 = any free port)", value)
        return value
    if kind == "posint":
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(key, "a positive integer", value)
        return value
    if kind == "posfloat":
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(key, "a positive number", value) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(key, "a positive number", value)
        if value != value or value == float("inf"):
            raise ConfigError(key, "a finite positive number", value)
        return float(value)
    raise AssertionError(kind)


def _flatten(table, prefix, out):
    for k, v in table.items():
        key = prefix + k
        if isinstance(v, dict):
            _flatten(v, key + ".", out)
        else:
            out[key] = v


class Config:
    """Checked settings; read them as attributes with dots replaced: c.coap_port."""

    def __init__(self, values):
        self._values = dict(values)
        for key, value in values.items():
            setattr(self, key.replace(".", "_"), value)

    def get(self, key):
        return self._values[key]

    def as_dict(self):
        return dict(self._values)

    @property
    def db_path(self):
        return os.path.join(self.data_dir, "hub.sqlite3")


def load(path=None, overrides=None, environ=None):
    """Defaults <- TOML file at `path` <- the environment (ENV_KEYS; `environ`, default
    os.environ) <- `overrides` (key -> value). Raises ConfigError."""
    values = {k: spec[0] for k, spec in _SPEC.items()}
    if path is not None:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise ConfigError("--config", "a readable TOML file", "%s (%s)" % (path, e.strerror)) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("--config", "valid TOML (%s)" % e, path) from None
        flat = {}
        _flatten(doc, "", flat)
        for key, value in _unalias(flat).items():
            if key not in _SPEC:
                raise ConfigError(key, "one of the known keys: " + ", ".join(sorted(_SPEC)))
            values[key] = value
    for name, key in ENV_KEYS.items():
        value = (os.environ if environ is None else environ).get(name)
        if value:
            values[key] = value
    overrides = _unalias({k: v for k, v in (overrides or {}).items() if v is not None})
    for key, value in overrides.items():
        if key not in _SPEC:
            raise ConfigError(key, "a known key")
        values[key] = value
    flagged = set(overrides)
    checked = {}
    for key, value in values.items():
        checked[key] = _check(key, _SPEC[key][1], value, text_ok=key in flagged)
    _check_http(checked)
    _check_security(checked)
    _check_park(checked)
    return Config(checked)


def overrides_from_args(args):
    """Turn parsed `smartpark hub` flags into config overrides (unset flags are None)."""
    out = {}
    for dest, key in FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest.startswith("no_"):
            value = not value if value else None
            if value is None:
                continue
        out[key] = value
    return out
