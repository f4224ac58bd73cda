"""The hub's OSCORE key store: one JSON file per node in `<data_dir>/keys/`.

Scope: reading, writing and checking the per-node security contexts (RFC 8613)
the hub shares with its nodes; nothing here speaks CoAP. Files rather than the
hub database, because the database is what gets copied, exported and backed up
with the readings, and the keys should not travel with it.

    <data_dir>/keys/            mode 0700
    <data_dir>/keys/<node>.json mode 0600, written whole (temp file + fsync + rename)

    {"node": "<id>", "sender_id": "<hex, the node's>", "recipient_id": "<hex, the hub's>",
     "secret": "<hex>", "salt": "<hex>", "created": <unix time>}

A record is seen from the NODE's side: `sender_id` is the node's Sender ID
(the `kid` of its requests, the hub's Recipient ID for that node) and
`recipient_id` the hub's Sender ID, empty for every node. The master secret is
16 random bytes, the master salt 8, the node's Sender ID 3 random bytes unique
in the store; no ID context; AES-CCM-16-64-128 with HKDF SHA-256.

The hub loads every key at start with `load_all(data_dir)`; `stamp(data_dir)`
changes whenever a key is added, rotated, revoked or imported (the directory's
mtime and listing), so a running hub can reload cheaply when it meets a `kid`
it does not know. The `smartpark keys` command (tools/keys.py), `smartpark
flash`, `simulate` and `demo` (tools/provision.py) write keys through this module.

A record is a dict (`Record`) with bytes values for sender_id, recipient_id,
secret and salt, str node and float created; its repr shows the key id only,
so a record that reaches a log line or a traceback does not carry the secret.
Every error is a `KeyStoreError` (a ValueError) whose message names the node or
the file, and never holds a secret.
"""

import binascii
import fcntl
import json
import logging
import os
import secrets
import stat
import time

from smartpark.protocol.names import valid_ident

log = logging.getLogger(__name__)

KEYS_DIR = "keys"
SECRET_LEN = 16
SALT_LEN = 8
KID_LEN = 3
HUB_ID = b""
MAX_ID_LEN = 7          # AES-CCM-16-64-128: nonce 13 bytes - 6 (RFC 8613 section 5.2)
FIELDS = ("node", "sender_id", "recipient_id", "secret", "salt", "created")
_LOCK = ".lock"
_KID_TRIES = 1000


class KeyStoreError(ValueError):
    """A key store operation that cannot be done; the message says why (never a secret)."""


class BadNodeId(KeyStoreError):
    pass


class UnknownNode(KeyStoreError):
    pass


class KeyExists(KeyStoreError):
    """The node already has a key (add without rotate; import of another key)."""


class KeyIdTaken(KeyStoreError):
    """Another node's key already uses that Sender ID (kid)."""


class DamagedKeyFile(KeyStoreError):
    """A key file (or a file to import) that cannot be read or is not a valid record."""

    def __init__(self, path, what):
        self.path = path
        super().__init__("key file %s: %s (the key in it cannot be used; the secret is "
                         "not shown)" % (path, what))


class Record(dict):
    """One node's security context, from the node's side (see the module docstring).

    A dict, so callers read record["secret"]; repr and str show the node and the
    key id only."""

    @property
    def kid_hex(self):
        return self["sender_id"].hex()

    def __repr__(self):
        return "Record(node=%r, key_id=%r, created=%r, secret=<hidden>)" % (
            self.get("node"), self["sender_id"].hex() if "sender_id" in self else None,
            self.get("created"))

    __str__ = __repr__

    def to_json(self):
        """The key file's content (hex strings), as text."""
        return json.dumps(_doc(self), sort_keys=True) + "\n"


def _doc(rec):
    return {"node": rec["node"], "sender_id": rec["sender_id"].hex(),
            "recipient_id": rec["recipient_id"].hex(), "secret": rec["secret"].hex(),
            "salt": rec["salt"].hex(), "created": rec["created"]}


def check_node(node):
    """Raise BadNodeId unless `node` is a valid node id (also a safe file name)."""
    if not valid_ident(node):
        raise BadNodeId("bad node id %r: 1-32 ASCII letters, digits, '_' or '-', starting "
                        "with a letter or digit" % (node,))
    return node


def keys_dir(data_dir):
    return os.path.join(data_dir, KEYS_DIR)


def key_path(data_dir, node):
    return os.path.join(keys_dir(data_dir), check_node(node) + ".json")


def _hexfield(doc, name, lengths, where):
    value = doc.get(name)
    if not isinstance(value, str):
        raise DamagedKeyFile(where, "field %r missing or not a hex string" % name)
    try:
        raw = binascii.unhexlify(value)
    except (binascii.Error, ValueError):
        raise DamagedKeyFile(where, "field %r is not hex" % name) from None
    if len(raw) not in lengths:
        raise DamagedKeyFile(where, "field %r has %d bytes, expected %s"
                             % (name, len(raw), _lengths_text(lengths)))
    return raw


def _lengths_text(lengths):
    lengths = sorted(lengths)
    if len(lengths) == 1:
        return str(lengths[0])
    return "%d to %d" % (lengths[0], lengths[-1])


def record_from_doc(doc, where, node=None):
    """A Record from the key file format (hex strings); DamagedKeyFile names `where`.

    `node`: the node the file must be for (its file name)."""
    if not isinstance(doc, dict):
        raise DamagedKeyFile(where, "not a JSON object")
    name = doc.get("node")
    if not isinstance(name, str) or not valid_ident(name):
        raise DamagedKeyFile(where, "field 'node' missing or not a valid node id")
    if node is not None and name != node:
        raise DamagedKeyFile(where, "it is for node %r, its file name says %r" % (name, node))
    sender = _hexfield(doc, "sender_id", range(1, MAX_ID_LEN + 1), where)
    recipient = _hexfield(doc, "recipient_id", range(0, MAX_ID_LEN + 1), where)
    if sender == recipient:
        raise DamagedKeyFile(where, "sender_id and recipient_id are the same")
    secret = _hexfield(doc, "secret", (SECRET_LEN,), where)
    salt = _hexfield(doc, "salt", (SALT_LEN,), where)
    created = doc.get("created", 0.0)
    if isinstance(created, bool) or not isinstance(created, (int, float)) or created < 0:
        raise DamagedKeyFile(where, "field 'created' is not a time")
    extra = set(doc) - set(FIELDS)
    if extra:
        raise DamagedKeyFile(where, "unknown fields %s" % ", ".join(sorted(extra)))
    return Record(node=name, sender_id=sender, recipient_id=recipient, secret=secret,
                  salt=salt, created=float(created))


def read_file(path, node=None):
    """The Record in a key file (a store file, or one from `keys export --hub-file`)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read(64 * 1024)
    except FileNotFoundError:
        raise DamagedKeyFile(path, "no such file") from None
    except OSError as e:
        raise DamagedKeyFile(path, "cannot be read (%s)" % (e.strerror or e)) from None
    if st.st_mode & 0o077:
        log.warning("key file %s can be read by others (mode %o): chmod 600 it",
                    path, stat.S_IMODE(st.st_mode))
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DamagedKeyFile(path, "not UTF-8 text") from None
    except json.JSONDecodeError as e:
        # e.msg and the position only: the message must not quote the file's text
        raise DamagedKeyFile(path, "not valid JSON (%s at line %d column %d)"
                             % (e.msg, e.lineno, e.colno)) from None
    return record_from_doc(doc, path, node)


# ---- crash-safe private files -------------------------------------------------------------------

def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dir(path):
    """Create `path` (and parents) with mode 0700; tighten an existing one to 0700."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def write_private(path, data):
    """Write `data` (bytes or str) to `path` with mode 0600, crash-safe: a temp file
    created 0600 beside it, fsync, rename over `path`, fsync of the directory. A
    reader sees the old file or the new one, never a part."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, ".%s.%s.tmp" % (os.path.basename(path), secrets.token_hex(4)))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)      # whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(folder)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


class _Locked:
    """An exclusive flock on <keys>/.lock for the changes (readers need none: files
    are replaced whole)."""

    def __init__(self, data_dir):
        self.dir = keys_dir(data_dir)

    def __enter__(self):
        try:
            make_private_dir(self.dir)
            self.fd = os.open(os.path.join(self.dir, _LOCK), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise KeyStoreError("cannot use the key store %s: %s" % (self.dir, e.strerror or e)) \
                from None
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _save(data_dir, rec):
    path = key_path(data_dir, rec["node"])
    try:
        write_private(path, rec.to_json())
    except OSError as e:
        raise KeyStoreError("cannot write the key file %s: %s" % (path, e.strerror or e)) \
            from None


# ---- the store ----------------------------------------------------------------------------------

def _paths(data_dir):
    folder = keys_dir(data_dir)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise KeyStoreError("cannot read the key store %s: %s" % (folder, e.strerror or e)) \
            from None
    out = []
    for name in sorted(names):
        if name.endswith(".json") and not name.startswith(".") and valid_ident(name[:-5]):
            out.append((name[:-5], os.path.join(folder, name)))
    return out


def load_all(data_dir, on_error=None):
    """Every node's Record, sorted by node: what the hub loads at start.

    Each record is a dict: node (str), sender_id, recipient_id, secret, salt (bytes;
    sender_id is the kid in the node's requests, recipient_id the hub's Sender ID),
    created (float). No keys directory: []. A damaged file raises DamagedKeyFile,
    or, with `on_error`, is passed to on_error(exc) and skipped. Two files with the
    same Sender ID raise KeyIdTaken (the hub could not tell those nodes apart)."""
    out = []
    seen = {}
    for node, path in _paths(data_dir):
        try:
            rec = read_file(path, node)
            if rec["sender_id"] in seen:
                raise KeyIdTaken("key id %s is used by nodes %s and %s: revoke or rotate one "
                                 "of them" % (rec.kid_hex, seen[rec["sender_id"]], node))
        except KeyStoreError as e:
            if on_error is None:
                raise
            on_error(e)
            continue
        seen[rec["sender_id"]] = node
        out.append(rec)
    return out


def list_keys(data_dir):
    """Every Record, sorted by node (a damaged file raises DamagedKeyFile)."""
    return load_all(data_dir)


def stamp(data_dir):
    """A value that changes whenever a key file is added, replaced or removed."""
    folder = keys_dir(data_dir)
    try:
        st = os.stat(folder)
    except OSError:
        return None
    entries = []
    for _node, path in _paths(data_dir):
        try:
            s = os.stat(path)
        except OSError:
            continue
        entries.append((path, s.st_mtime_ns, s.st_ino, s.st_size))
    return (st.st_mtime_ns, tuple(entries))


def find(data_dir, node):
    """The node's Record, or None when it has no key."""
    path = key_path(data_dir, node)
    if not os.path.exists(path):
        return None
    return read_file(path, node)


def get(data_dir, node):
    """The node's Record; UnknownNode when it has none."""
    rec = find(data_dir, node)
    if rec is None:
        raise UnknownNode("node %s has no key in %s" % (node, keys_dir(data_dir)))
    return rec


def new_record(node, taken=(), now=None):
    """A fresh Record for `node` whose Sender ID is none of `taken` (bytes)."""
    check_node(node)
    taken = set(taken)
    for _ in range(_KID_TRIES):
        kid = secrets.token_bytes(KID_LEN)
        if kid not in taken and kid != HUB_ID:
            break
    else:
        raise KeyIdTaken("no free key id after %d tries: the store is full" % _KID_TRIES)
    return Record(node=node, sender_id=kid, recipient_id=HUB_ID,
                  secret=os.urandom(SECRET_LEN), salt=os.urandom(SALT_LEN),
                  created=time.time() if now is None else float(now))


def _taken(data_dir, but=None):
    # a damaged file cannot be checked, and the hub cannot load it either: skipped here
    return {rec["sender_id"] for rec in load_all(data_dir, on_error=lambda e: None)
            if rec["node"] != but}


def add(data_dir, node, rotate=False):
    """Make a key for `node` and store it; returns the Record.

    KeyExists when the node already has one, unless rotate=True (then it is
    replaced by a new one: new secret, salt and Sender ID)."""
    check_node(node)
    with _Locked(data_dir):
        old = find(data_dir, node)
        if old is not None and not rotate:
            raise KeyExists("node %s already has a key (key id %s); rotate it to replace it"
                            % (node, old.kid_hex))
        taken = _taken(data_dir)      # the old kid included: a rotated key gets a new one
        rec = new_record(node, taken)
        _save(data_dir, rec)
        log.info("key store: %s key for node %s (key id %s)",
                 "rotated the" if old is not None else "added a", node, rec.kid_hex)
        return rec


def rotate(data_dir, node):
    """Replace the node's key by a new one (UnknownNode when it has none)."""
    get(data_dir, node)
    return add(data_dir, node, rotate=True)


def ensure(data_dir, node):
    """(Record, created): the node's key, made when it has none."""
    check_node(node)
    with _Locked(data_dir):
        rec = find(data_dir, node)
        if rec is not None:
            return rec, False
        rec = new_record(node, _taken(data_dir))
        _save(data_dir, rec)
        log.info("key store: added a key for node %s (key id %s)", node, rec.kid_hex)
        return rec, True


def put(data_dir, rec, replace=False):
    """Store a Record made elsewhere (import, provisioning); returns it.

    KeyIdTaken when another node's key has its Sender ID; KeyExists when the node
    has a different key and not replace. The same key again changes nothing."""
    return put_many(data_dir, [rec], replace)[0]


def put_many(data_dir, recs, replace=False):
    """put() for many Records under one lock and one read of the store (provisioning
    a fleet); returns them. Each stored file is whole; an error stops at that record."""
    recs = [Record(r) for r in recs]
    for rec in recs:
        check_node(rec["node"])
    out = []
    with _Locked(data_dir):
        owners = {r["sender_id"]: r["node"]
                  for r in load_all(data_dir, on_error=lambda e: None)}
        for rec in recs:
            old = find(data_dir, rec["node"])
            if old is not None and _doc(old) == _doc(rec):
                out.append(old)
                continue
            if old is not None and not replace:
                raise KeyExists("node %s already has another key (key id %s); replace it "
                                "explicitly" % (rec["node"], old.kid_hex))
            if owners.get(rec["sender_id"], rec["node"]) != rec["node"]:
                raise KeyIdTaken("key id %s is already used by another node's key: rotate the "
                                 "key of node %s where it was made, then import it again"
                                 % (rec.kid_hex, rec["node"]))
            _save(data_dir, rec)
            if old is not None:
                owners.pop(old["sender_id"], None)
            owners[rec["sender_id"]] = rec["node"]
            log.info("key store: stored the key of node %s (key id %s)", rec["node"], rec.kid_hex)
            out.append(rec)
    return out


def import_record(data_dir, source, replace=False):
    """Store a key exported with `keys export --hub-file` (a path, or the file's
    dict); returns the Record. See put() for the errors."""
    if isinstance(source, (str, os.PathLike)):
        rec = read_file(os.fspath(source))
    elif isinstance(source, Record):
        rec = source
    else:
        rec = record_from_doc(source, "<import>")
    return put(data_dir, rec, replace=replace)


def revoke(data_dir, node):
    """Remove the node's key (UnknownNode when it has none); returns the old Record.

    The hub stops accepting the node's messages once it reloads its keys."""
    check_node(node)
    with _Locked(data_dir):
        rec = get(data_dir, node)
        path = key_path(data_dir, node)
        try:
            os.unlink(path)
        except OSError as e:
            raise KeyStoreError("cannot remove the key file %s: %s" % (path, e.strerror or e)) \
                from None
        _fsync_dir(keys_dir(data_dir))
        log.info("key store: revoked the key of node %s (key id %s)", node, rec.kid_hex)
        return rec


# ---- the node's half and exports ----------------------------------------------------------------

def node_half(rec):
    """The node's oscore.json content (dict, hex strings): the same context from the
    node's side, named as the node uses it."""
    return {"sender_id": rec["sender_id"].hex(), "recipient_id": rec["recipient_id"].hex(),
            "secret": rec["secret"].hex(), "salt": rec["salt"].hex()}


def node_half_bytes(rec):
    return (json.dumps(node_half(rec), sort_keys=True) + "\n").encode()


def from_node_half(node, doc, where="oscore.json", created=None):
    """The Record behind a node's oscore.json (DamagedKeyFile naming `where`)."""
    if not isinstance(doc, dict):
        raise DamagedKeyFile(where, "not a JSON object")
    extra = set(doc) - {"sender_id", "recipient_id", "secret", "salt"}
    if extra:
        raise DamagedKeyFile(where, "unknown fields %s" % ", ".join(sorted(extra)))
    full = dict(doc, node=node, created=time.time() if created is None else created)
    return record_from_doc(full, where, node)


def same_key(a, b):
    """True when two Records are the same security context."""
    return all(a[k] == b[k] for k in ("sender_id", "recipient_id", "secret", "salt"))


AIOCOAP_ALGORITHM = "AES-CCM-16-64-128"
AIOCOAP_HASH = "sha256"


def aiocoap_files(rec):
    """{file name: dict} of the node's side as aiocoap's FilesystemSecurityContext
    reads it: settings.json (ids, algorithm, KDF hash) and secret.json (secret, salt)."""
    return {
        "settings.json": {"sender-id_hex": rec["sender_id"].hex(),
                          "recipient-id_hex": rec["recipient_id"].hex(),
                          "algorithm": AIOCOAP_ALGORITHM, "kdf-hashfun": AIOCOAP_HASH},
        "secret.json": {"secret_hex": rec["secret"].hex(), "salt_hex": rec["salt"].hex()},
    }


def write_aiocoap(outdir, rec):
    """Write the node's side into `outdir` as an aiocoap OSCORE context directory
    (mode 0700, files 0600); returns what happened: "written", "unchanged" or "replaced".

    aiocoap keeps the sender sequence number in sequence.json there. Re-exporting
    the same key leaves it alone; another key replaces the context and removes it
    (a new key starts at 0). A directory that holds something else is refused."""
    files = aiocoap_files(rec)
    state = "written"
    if os.path.isdir(outdir):
        names = set(os.listdir(outdir))
        if names and "settings.json" not in names and "secret.json" not in names:
            raise KeyStoreError("%s is not empty and holds no aiocoap OSCORE context: give a "
                                "new or empty directory" % outdir)
        if names:
            state = "unchanged" if _aiocoap_same(outdir, files) else "replaced"
    try:
        make_private_dir(outdir)
        if state == "unchanged":
            return state
        for name, doc in files.items():
            write_private(os.path.join(outdir, name), json.dumps(doc, indent=1) + "\n")
        if state == "replaced":
            _unlink_quietly(os.path.join(outdir, "sequence.json"))
    except OSError as e:
        raise KeyStoreError("cannot write %s: %s" % (outdir, e.strerror or e)) from None
    return state


def _aiocoap_same(outdir, files):
    for name, doc in files.items():
        try:
            with open(os.path.join(outdir, name)) as f:
                if json.load(f) != doc:
                    return False
        except (OSError, ValueError):
            return False
    return True


# `keys.list(data_dir)`, as the command is named; nothing in this module calls the
# builtin list() below this line.
list = list_keys
