"""The hub's OSCORE state (RFC 8613): node keys, the context table, and what outlives a restart.

Scope: build and keep the one table of security contexts that both CoAP
front ends use (`smartpark.fast.OscoreTable`: fast/oscore.pyx, else its pure
twin fast/oscore_py.py), so a request accepted by one of them is a replay to
the other. No aiocoap types here: hub/coap/oscore_site.py puts the table in
front of the aiocoap site, hub/fastpath.py in front of POST /r.

`security.mode` (hub/config.py): "oscore" (the default) requires a protected
request for everything a node writes or that is a node's own (POST /r, the
RD's registrations, /cfg); "off" is for development: unprotected requests are
served as they were before OSCORE, and protected ones are still verified.

Keys: one file per node in `<data_dir>/keys/` (hub/keys.py reads and writes
them). They are loaded at start, and again whenever the directory changes
(checked once a second) or a request names a key id the table does not know
(at most once a second), so `smartpark keys add|rotate|revoke` take effect
on a running hub. A key file that is unchanged keeps its replay window.

State in `<data_dir>/oscore/` (directory mode 0700):

    seq            the hub's own sender sequence number, one counter for every
                   context, persisted ahead in chunks (protocol/oscore.SeqStore)
    windows.json   every context's replay window, written on a clean stop
    clean          written after windows.json on a clean stop; removed at start

A start that finds no `clean` marker (the hub was killed, or the host lost
power) cannot trust any window, so every context needs the Echo exchange of
RFC 8613 Appendix B.1.2 (RFC 9175) before its requests are processed again;
so does a key that was not in the table at the last clean stop. The first
start of a data directory (no `oscore/` yet) starts every window empty.
"""

import asyncio
import hmac
import json
import logging
import os
import time

from smartpark import fast
from smartpark.protocol import oscore

from . import keys

log = logging.getLogger("smartpark.hub.security")

MODES = ("oscore", "off")
STATE_DIR = "oscore"
SEQ_FILE = "seq"
WINDOWS_FILE = "windows.json"
CLEAN_FILE = "clean"
RESCAN_EVERY = 1.0  # s: the fewest seconds between two loads of the key directory


def _load_keys(data_dir):
    """[{node, sender_id, recipient_id, secret, salt}] of the key store; a damaged file is
    logged and left out (the other nodes keep working)."""
    def damaged(e):
        log.error("node key not loaded: %s", e)

    return keys.load_all(data_dir, on_error=damaged)


def _write_atomic(path, data):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class Security:
    """The context table of a hub and its state on disk. `start()` before the CoAP site
    serves, `stop()` after both front ends stopped (a clean stop keeps the windows)."""

    def __init__(self, data_dir, mode="oscore", window=32, clock=time.monotonic,
                 load_keys=_load_keys, stamp=keys.stamp):
        if mode not in MODES:
            raise ValueError("security mode must be one of %s, got %r" % (MODES, mode))
        self.data_dir = data_dir
        self.mode = mode
        self.window = window
        self.clock = clock
        self._load_keys = load_keys
        self._stamp = stamp
        self.table = fast.OscoreTable(window)
        self.state_dir = os.path.join(data_dir, STATE_DIR)
        self.keys_dir = keys.keys_dir(data_dir)
        self.seq = None
        self.clean_start = False  # the windows of the last run were restored
        self._last_unknown = None
        self._keys_stamp = None
        self.nodes = set()  # nodes whose key is in the table
        self._loaded = {}   # node -> its key's bytes as last put in the table
        self.scans = 0
        self.key_errors = 0

    @property
    def required(self):
        """True when nodes must use OSCORE (mode "oscore")."""
        return self.mode == "oscore"

    # ---- life cycle ---------------------------------------------------------------------

    def start(self):
        first = not os.path.isdir(self.state_dir)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        os.chmod(self.state_dir, 0o700)  # also when it was made more open
        self.rescan()
        clean = os.path.join(self.state_dir, CLEAN_FILE)
        windows = os.path.join(self.state_dir, WINDOWS_FILE)
        state = None
        if os.path.exists(clean):
            try:
                with open(windows) as f:
                    state = json.load(f)
            except (OSError, ValueError) as e:
                log.warning("OSCORE replay windows not readable (%s): every node needs the "
                            "Echo exchange", e)
        if isinstance(state, dict):
            self.table.restore_windows(state)
            self.clean_start = True
        elif first:  # no OSCORE state yet: this hub has never accepted a protected request
            self.clean_start = True
        else:
            self.table.lose_windows()
        # from here on a crash leaves no marker: the next start asks every node for Echo
        for path in (clean, windows):
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
        self.seq = oscore.SeqStore(os.path.join(self.state_dir, SEQ_FILE))
        return self

    def stop(self):
        """Save the replay windows, then the marker that says they are complete."""
        if self.seq is None:
            return
        state = self.table.windows_state()
        _write_atomic(os.path.join(self.state_dir, WINDOWS_FILE),
                      json.dumps(state, sort_keys=True).encode())
        _write_atomic(os.path.join(self.state_dir, CLEAN_FILE), b"")
        self.seq = None

    def own_seq(self):
        """A sequence number for a response with the hub's own Partial IV."""
        return self.seq.next()

    # ---- keys ---------------------------------------------------------------------------

    def rescan(self):
        """Load the key store into the table (new and rotated keys in, revoked keys out);
        True when it loaded."""
        self._keys_stamp = self._stamp(self.data_dir)
        try:
            entries = self._load_keys(self.data_dir)
        except Exception as e:  # noqa: BLE001 - a broken key store keeps the keys loaded
            self.key_errors += 1
            log.error("cannot read the node keys in %s: %s", self.keys_dir, e)
            return False
        self.scans += 1
        seen = set()
        for k in entries:
            node = k["node"]
            try:
                raw = b"|".join((k["sender_id"], k["recipient_id"], k["secret"], k["salt"]))
                old = self._loaded.get(node)
                if old is None or not hmac.compare_digest(old, raw):
                    # (an unchanged key is not derived again: a rescan costs no HKDF)
                    self.table.add(node, k["sender_id"], k["recipient_id"], k["secret"],
                                   k["salt"])
                    self._loaded[node] = raw
            except (ValueError, KeyError, TypeError) as e:  # OscoreError is a ValueError too
                self.key_errors += 1
                log.error("key of node %r not used: %s", node, e)
                continue
            seen.add(node)
        for node in self.nodes - seen:
            self.table.remove(node)
            self._loaded.pop(node, None)
            log.info("key of node %r removed", node)
        self.nodes = seen
        return True

    def unknown_kid(self, kid):
        """A request named a key id the table does not know: maybe a key added since the
        last load. Loads the key store at most once per RESCAN_EVERY s (unknown key ids
        cost anyone nothing to send); True when the table knows the kid now."""
        now = self.clock()
        if self._last_unknown is not None and now - self._last_unknown < RESCAN_EVERY:
            return False
        self._last_unknown = now
        return self.rescan() and self.table.node_of(kid) is not None

    def poll(self):
        """Reload the keys when a key file was added, replaced or removed (keys.stamp: a
        stat per file)."""
        if self._stamp(self.data_dir) != self._keys_stamp:
            self.rescan()

    async def watch(self, every=RESCAN_EVERY):
        """Background task: poll the key directory."""
        while True:
            await asyncio.sleep(every)
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - never end the task over a file system hiccup
                log.exception("key directory check failed")

    # ---- reporting ----------------------------------------------------------------------

    def health(self):
        if self.mode == "off":
            return {"security": "off", "keys": len(self.table)}
        return {"security": "oscore", "keys": len(self.table)}

    def warnings(self):
        """Lines the hub logs at start."""
        out = []
        if self.mode == "off":
            out.append("SECURITY OFF: security.mode = \"off\" -- the hub accepts reports, RD "
                       "registrations and config requests without OSCORE from anyone who can "
                       "reach its CoAP port; use only for development")
        elif not len(self.table):
            out.append("no node keys in %s: every node's request gets 4.01 until keys are "
                       "added (smartpark keys add NODE)" % self.keys_dir)
        if self.seq is not None and not self.clean_start and len(self.table):
            out.append("OSCORE replay windows were not saved by a clean stop: each node's "
                       "first request gets 4.01 with an Echo value, and its retry is served")
        return out
