"""What a report's 2.04 response carries back to the node, and health names.

The hub answers a `POST /r` with a piggybacked 2.04 Changed whose payload is
a small CBOR map with integer keys (see protocol/README.md):

    1: hub time, seconds since the epoch (float)       -- the node's clock source
    2: configuration version for this node (uint)      -- fetch GET /cfg/<node> when newer
    3: wanted firmware version (text), absent if none  -- the node may start OTA
    4: readings stored by this report (uint)
    5: readings in the report that were already stored (uint, duplicates)

Runs on MicroPython and CPython.
"""

from . import cbor
from .errors import DecodeError

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

ACK_TIME = const(1)
ACK_CONFIG_VERSION = const(2)
ACK_FIRMWARE = const(3)
ACK_STORED = const(4)
ACK_DUPLICATES = const(5)

# Health readings ride in the same pack as measurements, named
# "<node>/health.<key>", so that they are ordinary series on the hub.
HEALTH_PREFIX = "health."
HEALTH_KEYS = (
    "uptime",      # s since boot
    "heap_free",   # bytes free after a garbage collection (what the node's state leaves)
    "reset",       # reset cause code (machine.reset_cause())
    "rssi",        # dBm (ESP32)
    "vbat",        # V
    "outbox",      # records waiting in the outbox
    "dropped",     # records dropped from a full outbox, since the outbox was made
    "retx",        # CoAP retransmissions since boot
)


def encode_ack(hub_time, config_version=0, firmware=None, stored=0, duplicates=0):
    m = {ACK_TIME: float(hub_time), ACK_CONFIG_VERSION: int(config_version),
         ACK_STORED: int(stored), ACK_DUPLICATES: int(duplicates)}
    if firmware:
        m[ACK_FIRMWARE] = firmware
    return cbor.dumps(m)


def ack_head(hub_time, config_version=0, firmware=None):
    """The ack's bytes before its `stored` field: encode_ack(t, cv, fw, s, d) is
    ack_head(t, cv, fw) + 0x04 <s> 0x05 <d>, because keys 4 and 5 come last in the
    deterministic map. The hub's fast path shares one head among a node's acks of a batch."""
    return encode_ack(hub_time, config_version, firmware, 0, 0)[:-4]


def decode_ack(payload):
    """Return a dict with keys time, config_version, firmware, stored, duplicates."""
    m = cbor.loads(payload)
    if not isinstance(m, dict):
        raise DecodeError("report ack is not a CBOR map")
    t = m.get(ACK_TIME)
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        raise DecodeError("report ack has no hub time")
    cv = m.get(ACK_CONFIG_VERSION, 0)
    fw = m.get(ACK_FIRMWARE)
    if not isinstance(cv, int) or (fw is not None and not isinstance(fw, str)):
        raise DecodeError("report ack has a malformed field")
    return {
        "time": float(t),
        "config_version": cv,
        "firmware": fw,
        "stored": m.get(ACK_STORED, 0),
        "duplicates": m.get(ACK_DUPLICATES, 0),
    }
