"""Pure-Python twin of fast/oscore.pyx: the hub's table of OSCORE contexts, one per node.

The hub holds one security context per node (protocol/oscore.py derives it)
and ONE replay state per context, shared by the fast path (POST /r in C) and
the aiocoap path (everything else), so a request accepted by one path is a
replay to the other. The table's life cycle of a request:

1. `unprotect(option, payload, code)` finds the context by the kid, decrypts
   and verifies, and returns an `Opened` (node, kid, Partial IV, sequence
   number, inner code, options, payload, the inner Echo value). It changes no
   state, so a caller may open a request and still leave it to another path.
2. `accept(opened)` is the replay check and the window update. A context
   whose window was lost (an unclean hub restart: `lose_windows()`) needs the
   Echo exchange of RFC 8613 Appendix B.1.2 / RFC 9175 first: the request is
   refused with OscoreError 4.01 whose `echo` the 4.01 response carries; a
   later request carrying that value (compared in constant time) establishes
   the window at its sequence number, and its response must carry the hub's
   own Partial IV (`opened.own_piv`).
3. `protect_response(opened, code, options, payload, own_seq)` encrypts the
   response bound to the request: with the request's nonce, or with the hub's
   own Partial IV `own_seq` (the caller's protocol.oscore.SeqStore).

Node IDs: `add(node, sender_id, recipient_id, secret, salt)` takes the node's
point of view (its Sender ID is the kid of its requests); the hub's context
is the mirror image.
"""

import hmac
import os

from smartpark.protocol import coap, oscore
from smartpark.protocol.errors import OscoreError

UNAUTHORIZED = coap.UNAUTHORIZED
ECHO_LEN = 8


class Opened:
    """A verified request: who sent it and what it says."""

    __slots__ = ("node", "kid", "piv", "seq", "code", "options", "payload", "echo", "own_piv")

    def __init__(self, node, kid, piv, seq, code, options, payload, echo):
        self.node = node
        self.kid = kid
        self.piv = piv
        self.seq = seq
        self.code = code
        self.options = options
        self.payload = payload
        self.echo = echo
        self.own_piv = False

    def __repr__(self):
        return "<Opened node=%r seq=%d code=%d.%02d>" % (self.node, self.seq, self.code >> 5,
                                                        self.code & 31)


class _Entry:
    __slots__ = ("node", "ctx", "window", "echo")

    def __init__(self, node, ctx, window):
        self.node = node
        self.ctx = ctx
        self.window = window
        self.echo = None   # the Echo value a 4.01 handed out, while the window is lost


class Table:
    def __init__(self, window=32):
        if not 1 <= window <= 64:
            raise ValueError("replay window must be 1..64, got %r" % (window,))
        self.window = window
        self._by_kid = {}
        self._kid_of = {}

    def __len__(self):
        return len(self._by_kid)

    def add(self, node, sender_id, recipient_id, secret, salt):
        """The context for `node` (IDs from the node's side). Replaces the node's previous
        context (a new one starts with an empty, established window); the same key again
        changes nothing; a kid that belongs to another node is an error."""
        sender_id = bytes(sender_id)
        other = self._by_kid.get(sender_id)
        if other is not None and other.node != node:
            raise ValueError("key id %s already belongs to node %r" % (sender_id.hex(),
                                                                       other.node))
        ctx = oscore.Context(bytes(secret), bytes(salt), bytes(recipient_id), sender_id)
        if (other is not None and other.ctx.recipient_key == ctx.recipient_key
                and other.ctx.sender_key == ctx.sender_key and other.ctx.common_iv == ctx.common_iv):
            return  # the same key again (a re-scan of the key store): keep its replay state
        self.remove(node)
        self._by_kid[sender_id] = _Entry(node, ctx, oscore.ReplayWindow(self.window))
        self._kid_of[node] = sender_id

    def remove(self, node):
        kid = self._kid_of.pop(node, None)
        if kid is not None:
            del self._by_kid[kid]

    def node_of(self, kid):
        e = self._by_kid.get(bytes(kid))
        return None if e is None else e.node

    def nodes(self):
        return sorted(self._kid_of)

    def unprotect(self, option, payload, code=coap.POST):
        """The verified request in `payload` under the OSCORE option value `option`; changes
        no state. OscoreError: 4.02 malformed option, 4.01 unknown kid, 4.00 no verify."""
        piv, kid, kid_context = oscore.decode_option(option)
        if piv is None or kid is None:
            raise OscoreError("OSCORE option of a request needs a Partial IV and a kid",
                              coap.BAD_OPTION)
        if kid_context is not None:
            raise OscoreError("kid context is not used by this hub", UNAUTHORIZED)
        e = self._by_kid.get(kid)
        if e is None:
            raise OscoreError("unknown key id %s" % kid.hex(), UNAUTHORIZED)
        if code not in (coap.POST, coap.FETCH):
            raise OscoreError("outer code of a protected request must be POST or FETCH",
                              coap.BAD_REQUEST)
        ctx = e.ctx
        pt = oscore.aes_ccm_decrypt(ctx.recipient_key, ctx.nonce(kid, piv), payload,
                                    oscore.aad(kid, piv))
        icode, options, inner_payload = oscore.parse_inner(pt)
        if not 1 <= icode < 32:
            raise OscoreError("inner code %d.%02d is not a request" % (icode >> 5, icode & 31),
                              coap.BAD_REQUEST)
        echo = None
        for n, v in options:
            if n == coap.ECHO:
                echo = v
                break
        return Opened(e.node, kid, piv, oscore.piv_int(piv), icode, options, inner_payload,
                      echo)

    def accept(self, opened):
        """Replay check and window update for a request `unprotect` returned."""
        e = self._by_kid.get(opened.kid)
        if e is None or e.node != opened.node:
            raise OscoreError("key id %s was removed" % opened.kid.hex(), UNAUTHORIZED)
        w = e.window
        if w.established:
            w.accept(opened.seq)
            return
        if (opened.echo is not None and e.echo is not None
                and hmac.compare_digest(opened.echo, e.echo)):
            w.establish(opened.seq)
            e.echo = None
            opened.own_piv = True
            return
        if e.echo is None:
            e.echo = os.urandom(ECHO_LEN)
        raise OscoreError("replay window of node %r not established: Echo required" % e.node,
                          UNAUTHORIZED, echo=e.echo)

    def protect_response(self, opened, code, options, payload, own_seq=None):
        """(OSCORE option value, ciphertext) of the response to `opened`."""
        e = self._by_kid.get(opened.kid)
        if e is None:
            raise OscoreError("key id %s was removed" % opened.kid.hex(), UNAUTHORIZED)
        ctx = e.ctx
        if own_seq is None:
            if opened.own_piv:
                raise OscoreError("this response needs the hub's own Partial IV",
                                  coap.INTERNAL_SERVER_ERROR)
            nonce = ctx.nonce(opened.kid, opened.piv)
            value = b""
        else:
            piv = oscore.piv_bytes(own_seq)
            nonce = ctx.nonce(ctx.sender_id, piv)
            value = oscore.encode_option(piv)
        pt = oscore.inner_plaintext(code, options, payload)
        return value, oscore.aes_ccm_encrypt(ctx.sender_key, nonce, pt,
                                             oscore.aad(opened.kid, opened.piv))

    # ---- replay state across restarts (RFC 8613 Appendix B.1.2)

    def windows_state(self):
        """{node: [top, bits]} of every established window (saved on a clean stop)."""
        return {e.node: e.window.state() for e in self._by_kid.values() if e.window.established}

    def restore_windows(self, state):
        """Windows saved by `windows_state`; a node missing from `state` needs Echo."""
        for e in self._by_kid.values():
            s = state.get(e.node)
            if s is None:
                e.window.established = False
            else:
                e.window = oscore.ReplayWindow.restore(s, self.window)

    def lose_windows(self):
        """After an unclean stop: every context needs the Echo exchange."""
        for e in self._by_kid.values():
            e.window = oscore.ReplayWindow(self.window, established=False)
            e.echo = None

    def established(self, node):
        kid = self._kid_of.get(node)
        return kid is not None and self._by_kid[kid].window.established
