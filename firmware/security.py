"""The node's half of OSCORE (RFC 8613): its key file, its sequence numbers, one exchange's protection.

Files in the node's flash directory (beside config.json):

- oscore.json: the node's security context, written when the node is
  provisioned (`smartpark flash`, `smartpark keys`):
  {"sender_id": "<node's id, hex>", "recipient_id": "<hub's id, hex>",
   "secret": "<master secret, hex>", "salt": "<master salt, hex>"}
  AES-CCM-16-64-128 with HKDF SHA-256 and no ID context, so these four
  values are the whole context. The file is read once at boot; neither the
  file's values nor anything derived from them is ever printed or logged.
- oscore.seq: the next sender sequence number, persisted ahead in chunks by
  protocol/oscore.py's SeqStore (temp file + rename): after a reboot or a power
  cut the node starts past every number it may have used, so no (kid, PIV) is
  ever sent twice with different content. Provisioning writes it ("0") with
  every new key; a key without it is refused, because a lost or missing file
  would start the numbers again at 0 under a key already used.

A node without oscore.json talks plain CoAP (a hub with `security.mode =
"off"`); node.py says so once at boot. A node whose oscore.json is there but
unusable does not fall back to plain CoAP: every exchange fails with
SecurityError, its readings wait in the outbox, and the log says which field
is wrong (never its value).

node.py imports this module, and this module protocol/oscore.py, only when the file
exists, so a plain node spends no heap on either. coapc.Client calls protect()
once per exchange and verify() for every datagram that matches the exchange's
MID or token.
"""

import json

from coapc import SecurityError

KEY_FILE = "oscore.json"
SEQ_FILE = "oscore.seq"
_FIELDS = (("sender_id", 0, 7), ("recipient_id", 0, 7), ("secret", 16, 64), ("salt", 0, 32))


def _unhex(doc, name, lo, hi):
    v = doc.get(name) if isinstance(doc, dict) else None
    if not isinstance(v, str):
        raise SecurityError("%s: %s missing or not a string" % (KEY_FILE, name))
    try:
        b = bytes.fromhex(v)
    except ValueError:
        raise SecurityError("%s: %s is not hex" % (KEY_FILE, name))
    if not lo <= len(b) <= hi:
        raise SecurityError("%s: %s must be %d to %d bytes, has %d" % (KEY_FILE, name, lo, hi, len(b)))
    return b


class Security:
    """A security context and its sequence-number store; or, with `why`, the stand-in for a
    broken key file, which refuses every exchange (never plain CoAP). Shows the kid only."""

    def __init__(self, ctx, seqs, why=None):
        self._ctx = ctx
        self._seqs = seqs
        self.why = why
        self.kid = ctx.sender_id if ctx is not None else b""

    def __repr__(self):
        return "<OSCORE kid=%s>" % self.kid.hex()

    def protect(self, msg):
        """(outer Message, binding) for a request Message; a fresh sequence number each call."""
        if self.why is not None:
            raise SecurityError(self.why)
        from smartpark.protocol import oscore
        return oscore.protect_request(self._ctx, self._seqs.next(), msg)

    def verify(self, binding, outer):
        """The inner Message of a response to the request `binding` names, or None when it
        does not verify (another request's response, a wrong key, a forged or damaged one)."""
        from smartpark.protocol import oscore
        try:
            return oscore.unprotect_response(self._ctx, binding, outer)
        except ValueError:   # OscoreError, CoAPDecodeError: DecodeErrors, so ValueErrors
            return None


def load(path=KEY_FILE, seq_path=SEQ_FILE):
    """Security from the key file at `path` (which exists); with `why` set when it is broken."""
    try:
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            raise SecurityError("%s: not readable JSON" % path)
        sid, rid, secret, salt = [_unhex(doc, n, lo, hi) for n, lo, hi in _FIELDS]
        if doc.get("id_context"):
            raise SecurityError("%s: an ID context is not supported" % path)
        from smartpark.protocol import oscore
        try:
            ctx = oscore.Context(secret, salt, sid, rid)
        except ValueError as e:   # OscoreError: IDs too long or equal (no key material in it)
            raise SecurityError("%s: %s" % (path, e))
        del secret, salt, doc
        try:
            open(seq_path).close()
        except OSError:
            # provisioning writes it with the key: without it, where the numbers stood is
            # unknown, and starting again at 0 would reuse nonces
            raise SecurityError("%s: missing; the node needs a new key (smartpark flash)"
                                % seq_path)
        try:
            seqs = oscore.SeqStore(seq_path)
        except (OSError, ValueError):
            # where the numbers stood is unknown: going on could reuse one
            raise SecurityError("%s: unreadable; the node needs a new key" % seq_path)
        return Security(ctx, seqs)
    except SecurityError as e:
        return Security(None, None, str(e))
