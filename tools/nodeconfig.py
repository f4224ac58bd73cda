"""The node's config.json, as `smartpark flash` and `smartpark simulate` make it.

make_config() turns command-line options into the dict the firmware reads
from config.json in its working directory, checking everything a technician
can get wrong (node id, hub address, Wi-Fi, sensors file) with a message
naming the field, then checks the whole file against the node-config schema
(protocol/configschema.py, the firmware's own rules: the keys, their ranges,
the drivers). The file holds only what was given (node, hub, wifi, sensors,
anything given with --set); the node fills in the defaults, so a firmware
update can change them. A few checks here are stricter than the schema,
because they are about what a technician types: a hub address must be a
host name or IP address, and a WPA2 password 8-64 characters (or '' for an
open network).

check_config() runs the check of the firmware that will read the file (the
bundle being flashed, or firmware/) under the real `micropython` binary, so
a bundle built from other sources cannot disagree with the host either.
"""

import json
import os
import re
import subprocess
import tempfile

from smartpark.protocol import configschema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE_DIR = os.path.join(ROOT, "firmware")
DEFAULT_COAP_PORT = configschema.COAP_PORT
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


class ConfigError(ValueError):
    pass


def check_node_id(node_id):
    if not configschema.valid_ident(node_id):
        raise ConfigError("node id %r: use 1-32 letters, digits, '_' or '-', starting with a "
                          "letter or digit (it becomes the SenML base name '<id>/')" % (node_id,))
    return node_id


def parse_hub(text):
    """'auto' -> None; 'host', 'host:port', '[v6]:port', 'v6' -> (host, port)."""
    if text is None or text == "auto":
        return None
    text = text.strip()
    port = DEFAULT_COAP_PORT
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ConfigError("hub address %r: missing ']' after the IPv6 address" % text)
        if rest:
            if not rest.startswith(":"):
                raise ConfigError("hub address %r: expected ':PORT' after ']'" % text)
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = _port(p, text)
    else:
        host = text  # hostname, IPv4, or a bare IPv6 address
    if not host:
        raise ConfigError("hub address %r has no host" % text)
    if ":" not in host and not _HOSTNAME.match(host):
        raise ConfigError("hub address %r: %r is not a host name or IP address" % (text, host))
    if ":" in host:
        import ipaddress
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError("hub address %r: %r is not an IPv6 address" % (text, host)) from None
    return host, port


def _port(text, whole):
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ConfigError("hub address %r: port must be 1-65535" % whole)
    return port


def load_sensors(path):
    try:
        with open(path) as f:
            sensors = json.load(f)
    except OSError as e:
        raise ConfigError("sensors file %s: %s" % (path, e.strerror)) from None
    except ValueError as e:
        raise ConfigError("sensors file %s is not valid JSON: %s" % (path, e)) from None
    if isinstance(sensors, dict) and "sensors" in sensors:
        sensors = sensors["sensors"]
    if not isinstance(sensors, list):
        raise ConfigError("sensors file %s: expected a JSON list of sensors" % path)
    known = configschema.DRIVERS
    for i, s in enumerate(sensors):
        if not isinstance(s, dict):
            raise ConfigError("sensors file %s: entry %d is not an object" % (path, i))
        drv = s.get("driver")
        if not isinstance(drv, str):
            raise ConfigError("sensors file %s: entry %d has no \"driver\"" % (path, i))
        if drv not in known:
            raise ConfigError("sensors file %s: entry %d: unknown driver %r (known: %s)"
                              % (path, i, drv, ", ".join(sorted(known))))
    return sensors


def make_config(node_id, hub="auto", wifi=None, wifi_password=None, sensors_file=None,
                sensors=None, extra=None):
    """The config.json dict for one node; raises ConfigError naming the bad field.

    Defaults are left to the node; the result passes the node-config schema."""
    cfg = {"node": check_node_id(node_id)}
    target = parse_hub(hub)
    cfg["hub"] = "auto" if target is None else "%s:%d" % (
        "[%s]" % target[0] if ":" in target[0] else target[0], target[1])
    if wifi is not None:
        if not wifi or len(wifi.encode()) > 32:
            raise ConfigError("--wifi SSID must be 1-32 bytes")
        if wifi_password is None:
            raise ConfigError("--wifi needs --wifi-password ('' for an open network)")
        if wifi_password and not 8 <= len(wifi_password) <= 64:
            raise ConfigError("--wifi-password must be 8-64 characters (WPA2), or '' for open")
        cfg["wifi"] = {"ssid": wifi, "password": wifi_password}
    elif wifi_password is not None:
        raise ConfigError("--wifi-password given without --wifi")
    if sensors_file:
        cfg["sensors"] = load_sensors(sensors_file)
    elif sensors is not None:
        cfg["sensors"] = sensors
    if extra:
        cfg.update(extra)
    return validate(cfg)


def validate(cfg):
    """`cfg` when the node-config schema accepts it, else ConfigError with the firmware's
    message ("config key report_interval: must be between 1 and 86400")."""
    try:
        configschema.validate(cfg)
    except configschema.ConfigError as e:
        raise ConfigError("the firmware rejects this config: %s" % e) from None
    return cfg


def parse_sets(items):
    """['key=value', ...] -> dict; value parsed as JSON when it is JSON, else kept as text."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set %r: expected KEY=VALUE" % item)
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _firmware_path(bundle_dir):
    """MICROPYPATH entries under which `import config` is the firmware's own."""
    if bundle_dir:
        return [bundle_dir, os.path.join(bundle_dir, "lib")], bundle_dir
    return [FIRMWARE_DIR], FIRMWARE_DIR


def check_config(cfg, bundle_dir=None, micropython=None, timeout=60):
    """Validate `cfg` with the firmware's own config.validate() under micropython.

    The firmware that will read the file decides: the bundle's config module
    (or firmware/config.py when no bundle is given) runs on the real unix
    port. Returns `cfg`; raises ConfigError with the firmware's message.
    """
    paths, where = _firmware_path(bundle_dir)
    if not any(os.path.isfile(os.path.join(where, "config" + ext)) for ext in (".py", ".mpy")):
        raise ConfigError("%s has no config module: cannot check config.json against the "
                          "firmware that will read it" % where)
    from smartpark.tools.ptyboard import find_micropython
    mp = micropython or find_micropython()
    work = tempfile.mkdtemp(prefix="sp-cfgchk-")
    try:
        if not bundle_dir:
            os.makedirs(os.path.join(work, "smartpark"))
            os.symlink(os.path.join(ROOT, "protocol"), os.path.join(work, "smartpark", "protocol"))
            paths = paths + [work]
        with open(os.path.join(work, "candidate.json"), "w") as f:
            json.dump(cfg, f)
        code = ("import json, config\n"
                "try:\n config.validate(json.load(open('candidate.json')))\n"
                "except ValueError as e:\n print('INVALID', e)\nelse:\n print('VALID')\n")
        env = dict(os.environ, MICROPYPATH=":".join([".frozen"] + paths))
        try:
            proc = subprocess.run([mp, "-c", code], cwd=work, env=env, capture_output=True,
                                  text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ConfigError("could not run the firmware's config check: %s" % e) from None
    finally:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    out = proc.stdout.strip().splitlines()
    if out and out[-1] == "VALID":
        return cfg
    if out and out[-1].startswith("INVALID"):
        raise ConfigError("the firmware rejects this config: " + out[-1][8:])
    raise ConfigError("the firmware's config check did not run: %s"
                      % (proc.stdout + proc.stderr).strip()[-400:])
