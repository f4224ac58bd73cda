"""OSCORE keys onto nodes: the one rule `smartpark flash`, `simulate` and `demo` share.

The hub keeps its half of each node's key in its key store (hub/keys.py,
`<data_dir>/keys/<node>.json`), or, for a hub on another machine, in a file
that `smartpark keys import` takes there (`--hub-key-file`). The node keeps its
half as `oscore.json` in its root directory, beside config.json, and its sender
sequence number in `oscore.seq`.

Which key a node gets:

- none yet (or --rotate-key): a new one;
- the node already holds the hub's key for it (its oscore.json is that key)
  and its oscore.seq: kept, with its sequence numbers;
- otherwise (the board or directory holds no key or another one, its
  oscore.seq is gone, or --wipe erases both): a new one. Nothing else
  remembers the sequence numbers the old key was used with, so keeping it
  could send two messages with one nonce.

A new key comes with a new oscore.seq that starts at 0, written before the
key. The node refuses to use a key without its oscore.seq (firmware/
security.py), so a lost sequence file never restarts the numbers at 0 under
a used key.
The hub's side is written after the node's: a failure in between leaves a
node whose key the hub does not know yet, and the next run replaces both.
"""

import json
import os

from smartpark.hub import keys as keystore

NODE_FILE = "oscore.json"
SEQ_FILE = "oscore.seq"
SEQ_START = b"0"   # a new key's oscore.seq: its first sequence number


class ProvisionError(Exception):
    """The hub's half cannot be read or written; the message names the file."""


class StoreSide:
    """The hub's half in a hub data directory's key store."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self._taken = None      # key ids in the store and handed out here: read once

    def where(self):
        return keystore.keys_dir(self.data_dir)

    def current(self, node):
        return keystore.find(self.data_dir, node)

    def fresh(self, node, old):
        if self._taken is None:
            self._taken = {r["sender_id"] for r in
                           keystore.load_all(self.data_dir, on_error=lambda e: None)}
        rec = keystore.new_record(node, self._taken)
        self._taken.add(rec["sender_id"])
        return rec

    def save(self, rec):
        keystore.put(self.data_dir, rec, replace=True)


class FileSide:
    """The hub's half in a file for `smartpark keys import` on the hub's machine."""

    def __init__(self, path):
        self.path = path

    def where(self):
        return self.path

    def current(self, node):
        if not os.path.exists(self.path):
            return None
        rec = keystore.read_file(self.path)
        if rec["node"] != node:
            raise keystore.KeyStoreError("%s holds the key of node %s, not %s: give another "
                                         "--hub-key-file" % (self.path, rec["node"], node))
        return rec

    def fresh(self, node, old):
        # the hub's store is elsewhere: `keys import` there refuses a key id it has
        return keystore.new_record(node, {old["sender_id"]} if old else ())

    def save(self, rec):
        keystore.write_private(self.path, rec.to_json())


def held(node, raw):
    """The Record in a node's oscore.json bytes, or None (missing or not a key)."""
    if not raw:
        return None
    try:
        return keystore.from_node_half(node, json.loads(raw), created=0.0)
    except (ValueError, UnicodeDecodeError):
        return None


class Plan:
    """What one node gets: .action ("kept", "new", "rotated"), .why, .record, .node_bytes,
    .new_seq (write SEQ_START as the node's oscore.seq, before the key)."""

    def __init__(self, side, node, action, why, record):
        self.side = side
        self.node = node
        self.action = action
        self.why = why
        self.record = record
        self.node_bytes = keystore.node_half_bytes(record)
        self.new_seq = action != "kept"

    def commit(self):
        """Store the hub's half (nothing to do for a kept key)."""
        if self.action == "kept":
            return
        try:
            self.side.save(self.record)
        except (keystore.KeyStoreError, OSError) as e:
            raise ProvisionError("the node holds key id %s, but the hub's half could not be "
                                 "written to %s: %s; run this again (it makes a new key)"
                                 % (self.record.kid_hex, self.side.where(), e)) from None

    def summary(self):
        return {"key_id": self.record.kid_hex, "action": self.action, "hub_side": self.side.where()}

    def text(self):
        return "OSCORE key of %s: key id %s, %s%s (hub's half: %s)" % (
            self.node, self.record.kid_hex, self.action, " (%s)" % self.why if self.why else "",
            self.side.where())


def plan(side, node, on_node=None, wipe=False, rotate=False, has_seq=True):
    """The Plan for `node` whose oscore.json holds `on_node` (bytes or None) and which
    holds an oscore.seq when `has_seq`."""
    try:
        current = side.current(node)
        if current is None:
            return Plan(side, node, "new", "", side.fresh(node, None))
        if rotate:
            return Plan(side, node, "rotated", "--rotate-key", side.fresh(node, current))
        if wipe:
            return Plan(side, node, "rotated", "the wipe erases the node's sequence number, "
                        "so its key is replaced", side.fresh(node, current))
        have = held(node, on_node)
        if have is not None and keystore.same_key(have, current):
            if has_seq:
                return Plan(side, node, "kept", "", current)
            return Plan(side, node, "rotated", "the node holds its key %s but not its "
                        "sequence number (%s): a new key, so that no sequence number repeats"
                        % (current.kid_hex, SEQ_FILE), side.fresh(node, current))
        return Plan(side, node, "rotated", "the node does not hold its key %s (another "
                    "board, or erased): a new key, so that no sequence number repeats under "
                    "the old one" % current.kid_hex, side.fresh(node, current))
    except keystore.KeyStoreError as e:
        raise ProvisionError(str(e)) from None


def provision_dir(data_dir, node, node_dir, rotate=False):
    """Give the node whose flash directory is `node_dir` its key from the key store of
    `data_dir` (simulate, demo, tests); returns the Plan, committed."""
    return provision_dirs(data_dir, [(node, node_dir)], rotate)[0]


def provision_dirs(data_dir, nodes, rotate=False):
    """provision_dir() for many (node, node_dir): the store is read once and written
    under one lock. Returns the Plans, committed."""
    side = StoreSide(data_dir)
    plans = []
    for node, node_dir in nodes:
        path = os.path.join(node_dir, NODE_FILE)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError:
            raw = None
        p = plan(side, node, raw, rotate=rotate,
                 has_seq=os.path.exists(os.path.join(node_dir, SEQ_FILE)))
        if p.action != "kept":
            os.makedirs(node_dir, exist_ok=True)
            keystore.write_private(os.path.join(node_dir, SEQ_FILE), SEQ_START)
            keystore.write_private(path, p.node_bytes)
        plans.append(p)
    changed = [p.record for p in plans if p.action != "kept"]
    if changed:
        try:
            keystore.put_many(data_dir, changed, replace=True)
        except (keystore.KeyStoreError, OSError) as e:
            raise ProvisionError("the nodes hold their keys, but the hub's halves could not "
                                 "be written to %s: %s; run this again (it makes new keys)"
                                 % (side.where(), e)) from None
    return plans
