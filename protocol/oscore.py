"""OSCORE (RFC 8613): object security for CoAP between a node and the hub.

One source for both ends. The node protects its requests and verifies the
hub's responses; the hub's reference path verifies requests and protects
responses (the hub's fast path does the same in C, fast/oscore.pyx, and is
tested against this module).

- Security context (section 3.2): HKDF-SHA256 (RFC 5869, HMAC built on
  `hashlib.sha256`) derives the sender key, the recipient key and the common
  IV from the master secret and salt. AEAD algorithm 10, AES-CCM-16-64-128:
  16-byte key, 13-byte nonce, 8-byte tag.
- AES-CCM (RFC 3610) is built on the AES block cipher in ECB mode, because
  that is what MicroPython's `cryptolib.aes` offers on every ESP32 build (CTR
  is off by default there). On CPython the `cryptography` package's AESCCM
  does the same work faster; the ECB construction stays available
  (`ccm_encrypt_ecb`/`ccm_decrypt_ecb`) and is tested against it.
- Messages (sections 4, 5, 6): options of class E travel encrypted inside
  the plaintext with the real code; the outer message has code POST (FETCH
  with Observe) for a request and 2.04 Changed (2.05 with Observe) for a
  response, the class U options and the OSCORE option. The AAD is the COSE
  Encrypt0 structure over the request's kid and Partial IV, so a response is
  bound to its request.
- Replay protection (section 7.4): `ReplayWindow` on the receiver, a sliding
  window over sequence numbers (32 by default).
- Sequence numbers (Appendix B.1.1): `SeqStore` persists a limit ahead of the
  numbers handed out, in chunks, written as a new file then renamed over the
  old one, so a reboot or power cut at any point never reuses a number.

Every failure is an `OscoreError` (a DecodeError) whose `code` is the CoAP
response code to answer with; nothing else escapes.

Runs on MicroPython and CPython.
"""

import hashlib
import os

from . import coap
from .errors import CoAPDecodeError, OscoreError

try:
    from micropython import const  # type: ignore[import-not-found]
except ImportError:  # CPython
    def const(x):  # type: ignore[no-redef]
        return x

ALG_AES_CCM_16_64_128 = const(10)
KEY_LEN = const(16)
NONCE_LEN = const(13)
TAG_LEN = const(8)
ECHO = coap.ECHO
MAX_SEQ = const(0xFFFFFFFFFF)   # Partial IV: at most 5 bytes
MAX_ID = NONCE_LEN - 6          # a Sender ID fits the nonce: at most 7 bytes

_BAD_OPTION = const(0x82)
_UNAUTHORIZED = const(0x81)
_BAD_REQUEST = const(0x80)

# class U options: outer only (section 4.1.3); Observe is both inner and outer
_OUTER_ONLY = (coap.URI_HOST, coap.URI_PORT, coap.OSCORE, coap.PROXY_URI, coap.PROXY_SCHEME)


# -- HKDF (RFC 5869) over HMAC-SHA256 (RFC 2104) ----------------------------------------------

def _hmac(key, data):
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + bytes(64 - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(data)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def hkdf(salt, ikm, info, length):
    prk = _hmac(salt or bytes(32), ikm)
    out = b""
    t = b""
    i = 1
    while len(out) < length:
        t = _hmac(prk, t + info + bytes((i,)))
        out += t
        i += 1
    return out[:length]


# -- the little CBOR this needs: byte strings, small arrays -----------------------------------

def _bstr(b):
    n = len(b)
    if n < 24:
        return bytes((0x40 | n,)) + b
    if n < 256:
        return bytes((0x58, n)) + b
    return bytes((0x59, n >> 8, n & 0xFF)) + b


def _info(id_, id_context, kind, length):
    # [id, id_context / null, alg_aead, type, L] (section 3.2.1)
    return (b"\x85" + _bstr(id_) + (_bstr(id_context) if id_context is not None else b"\xf6")
            + bytes((ALG_AES_CCM_16_64_128,)) + (b"\x63Key" if kind == 0 else b"\x62IV")
            + bytes((length,)))


def aad(kid, piv):
    """The AAD: COSE Enc_structure ["Encrypt0", h'', external_aad] (section 5.4), with
    external_aad = bstr .cbor [1, [10], request_kid, request_piv, h''] (no class I options)."""
    ext = b"\x85\x01\x81" + bytes((ALG_AES_CCM_16_64_128,)) + _bstr(kid) + _bstr(piv) + b"\x40"
    return b"\x83\x68Encrypt0\x40" + _bstr(ext)


# -- the security context ---------------------------------------------------------------------

class Context:
    """A derived security context (section 3.2): keys and common IV, no mutable state.

    IDs are from this endpoint's point of view: `sender_id` is the kid in the
    requests (or own-PIV responses) it protects."""

    def __init__(self, secret, salt, sender_id, recipient_id, id_context=None):
        if len(sender_id) > MAX_ID or len(recipient_id) > MAX_ID:
            raise OscoreError("sender and recipient IDs are at most %d bytes" % MAX_ID)
        if sender_id == recipient_id:
            raise OscoreError("sender and recipient IDs must differ")
        salt = salt or b""
        self.sender_id = bytes(sender_id)
        self.recipient_id = bytes(recipient_id)
        self.id_context = id_context
        self.sender_key = hkdf(salt, secret, _info(sender_id, id_context, 0, KEY_LEN), KEY_LEN)
        self.recipient_key = hkdf(salt, secret, _info(recipient_id, id_context, 0, KEY_LEN),
                                  KEY_LEN)
        self.common_iv = hkdf(salt, secret, _info(b"", id_context, 1, NONCE_LEN), NONCE_LEN)

    def nonce(self, id_, piv):
        """The AEAD nonce (section 5.2) for the Partial IV `piv` made by the endpoint `id_`."""
        n = bytearray(NONCE_LEN)
        n[0] = len(id_)
        n[1 + MAX_ID - len(id_):1 + MAX_ID] = id_
        n[NONCE_LEN - len(piv):] = piv
        iv = self.common_iv
        for i in range(NONCE_LEN):
            n[i] ^= iv[i]
        return bytes(n)

    def __repr__(self):
        return "<oscore.Context sender_id=%r recipient_id=%r>" % (self.sender_id,
                                                                 self.recipient_id)


def piv_bytes(seq):
    """A sequence number as its Partial IV: big-endian, shortest form, 0 -> b"\\x00"."""
    if not 0 <= seq <= MAX_SEQ:
        raise OscoreError("sequence number out of range (0..2**40-1): %r" % (seq,))
    n = 1
    while seq >> (8 * n):
        n += 1
    return seq.to_bytes(n, "big")


def piv_int(piv):
    return int.from_bytes(piv, "big")


# -- AES-CCM-16-64-128 (RFC 3610: M = 8, L = 2) -----------------------------------------------

def _ecb(key):
    """The AES-128 block function for `key`: block(src, dst) writes the 16 bytes of
    E(key, src) into the bytearray `dst` (which may be `src`), allocating nothing."""
    try:
        import cryptolib  # type: ignore[import-not-found]  # MicroPython
        return cryptolib.aes(key, 1).encrypt
    except ImportError:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update

        def block(src, dst):
            dst[0:16] = enc(bytes(src))
        return block


def _mac_in(block, x, data, i):
    """CBC-MAC `data` into the state x, which holds i bytes of a partial block; returns
    the new i (a full block is enciphered in place)."""
    for b in data:
        x[i] ^= b
        i += 1
        if i == 16:
            block(x, x)
            i = 0
    return i


def _cbc_mac(block, nonce, msg, adata, x):
    """The CCM tag's CBC-MAC (RFC 3610 section 2.2) left in the 16-byte bytearray x."""
    x[0] = 0x40 * (len(adata) > 0) + 8 * ((TAG_LEN - 2) // 2) + 1
    x[1:14] = nonce
    x[14] = len(msg) >> 8
    x[15] = len(msg) & 0xFF
    block(x, x)
    if adata:   # adata < 0xFF00 bytes: a 2-byte length
        x[0] ^= len(adata) >> 8
        x[1] ^= len(adata) & 0xFF
        if _mac_in(block, x, adata, 2):
            block(x, x)
    if _mac_in(block, x, msg, 0):
        block(x, x)


def _ctr(block, nonce, src, out, first, a, s):
    """out[i] = src[i] XOR the key stream from counter block `first` on (a, s: 16-byte
    scratch bytearrays)."""
    a[0] = 1  # L - 1
    a[1:14] = nonce
    n = len(src)
    off = 0
    i = first
    while off < n:
        a[14] = i >> 8
        a[15] = i & 0xFF
        block(a, s)
        for j in range(min(16, n - off)):
            out[off + j] = src[off + j] ^ s[j]
        off += 16
        i += 1


def ccm_encrypt_ecb(key, nonce, plaintext, adata):
    block = _ecb(key)
    n = len(plaintext)
    out = bytearray(n + TAG_LEN)
    x = bytearray(16)
    a = bytearray(16)
    s = bytearray(16)
    _cbc_mac(block, nonce, plaintext, adata, x)
    _ctr(block, nonce, plaintext, out, 1, a, s)
    a[14] = a[15] = 0
    block(a, s)
    for j in range(TAG_LEN):
        out[n + j] = x[j] ^ s[j]
    return bytes(out)


def ccm_decrypt_ecb(key, nonce, data, adata):
    if len(data) < TAG_LEN:
        raise OscoreError("ciphertext shorter than the %d-byte tag" % TAG_LEN, _BAD_REQUEST)
    block = _ecb(key)
    n = len(data) - TAG_LEN
    plaintext = bytearray(n)
    x = bytearray(16)
    a = bytearray(16)
    s = bytearray(16)
    _ctr(block, nonce, memoryview(data)[:n], plaintext, 1, a, s)
    _cbc_mac(block, nonce, plaintext, adata, x)
    a[14] = a[15] = 0
    block(a, s)
    diff = 0
    for j in range(TAG_LEN):   # constant time
        diff |= data[n + j] ^ s[j] ^ x[j]
    if diff:
        raise OscoreError("decryption failed: the message does not verify", _BAD_REQUEST)
    return bytes(plaintext)


try:
    from cryptography.exceptions import InvalidTag as _InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM as _AESCCM
except ImportError:  # MicroPython, or CPython without `cryptography`
    _AESCCM = None


def aes_ccm_encrypt(key, nonce, plaintext, adata):
    if _AESCCM is not None:
        return _AESCCM(key, TAG_LEN).encrypt(nonce, plaintext, adata)
    return ccm_encrypt_ecb(key, nonce, plaintext, adata)


def aes_ccm_decrypt(key, nonce, data, adata):
    if _AESCCM is None:
        return ccm_decrypt_ecb(key, nonce, data, adata)
    if len(data) < TAG_LEN:
        raise OscoreError("ciphertext shorter than the %d-byte tag" % TAG_LEN, _BAD_REQUEST)
    try:
        return _AESCCM(key, TAG_LEN).decrypt(nonce, data, adata)
    except _InvalidTag:
        raise OscoreError("decryption failed: the message does not verify",
                          _BAD_REQUEST) from None


# -- the OSCORE option (section 6.1) ----------------------------------------------------------

def encode_option(piv=None, kid=None, kid_context=None):
    """The option value; empty for a response that reuses the request's nonce."""
    if piv is not None and not 1 <= len(piv) <= 5:
        raise OscoreError("a Partial IV is 1..5 bytes")
    flags = len(piv) if piv else 0
    out = b""
    if piv:
        out += piv
    if kid_context is not None:
        flags |= 0x10
        out += bytes((len(kid_context),)) + kid_context
    if kid is not None:
        flags |= 0x08
        out += kid
    if not flags:
        return b""
    return bytes((flags,)) + out


def decode_option(value):
    """(piv or None, kid or None, kid_context or None) of an option value; OscoreError
    (4.02) when it is malformed."""
    if not value:
        return None, None, None
    flags = value[0]
    if flags & 0xE0:
        raise OscoreError("OSCORE option: reserved flag bits set (0x%02x)" % flags, _BAD_OPTION)
    n = flags & 7
    if n > 5:
        raise OscoreError("OSCORE option: Partial IV length %d is reserved" % n, _BAD_OPTION)
    pos = 1 + n
    if pos > len(value):
        raise OscoreError("OSCORE option: Partial IV truncated", _BAD_OPTION)
    piv = value[1:pos] if n else None
    kid_context = None
    if flags & 0x10:
        if pos >= len(value):
            raise OscoreError("OSCORE option: kid context length missing", _BAD_OPTION)
        s = value[pos]
        pos += 1
        if pos + s > len(value):
            raise OscoreError("OSCORE option: kid context truncated", _BAD_OPTION)
        kid_context = value[pos:pos + s]
        pos += s
    kid = None
    if flags & 0x08:
        kid = value[pos:]
    elif pos != len(value):
        raise OscoreError("OSCORE option: %d trailing bytes" % (len(value) - pos), _BAD_OPTION)
    if not n and not flags & 0x18:
        raise OscoreError("OSCORE option: a flags byte of 0 must be left out", _BAD_OPTION)
    return piv, kid, kid_context


# -- messages ---------------------------------------------------------------------------------

def is_inner(number):
    """True for an option that travels encrypted (class E; Observe is both)."""
    return number not in _OUTER_ONLY


def inner_plaintext(code, options, payload):
    """The plaintext: the real code, the class E options, the payload (section 5.3)."""
    return bytes((code,)) + coap.Message(coap.CON, code, 0, b"", options, payload).encode()[4:]


def parse_inner(plaintext):
    """(code, options, payload) of a decrypted plaintext; OscoreError (4.00) if malformed."""
    if not plaintext:
        raise OscoreError("empty plaintext", _BAD_REQUEST)
    code = plaintext[0]
    if code == 0:
        raise OscoreError("plaintext code 0.00 (Empty) is not a request or response",
                          _BAD_REQUEST)
    try:
        m = coap.parse(b"\x40" + plaintext[:1] + b"\x00\x00" + plaintext[1:])
    except CoAPDecodeError as e:
        raise OscoreError("plaintext: %s" % e.msg, _BAD_REQUEST) from None
    for n, _ in m.options:
        if not is_inner(n):
            raise OscoreError("plaintext carries outer option %d" % n, _BAD_REQUEST)
    return code, m.options, m.payload


def _split(msg):
    inner = []
    outer = []
    for n, v in msg.options:
        if n == coap.OSCORE:
            continue
        if n == coap.OBSERVE:
            inner.append((n, v))
            outer.append((n, v))
        elif is_inner(n):
            inner.append((n, v))
        else:
            outer.append((n, v))
    return inner, outer


def _outer(msg, code, options, oscore_value, ciphertext):
    out = coap.Message(msg.mtype, code, msg.mid, msg.token, options)
    out.add_option(coap.OSCORE, oscore_value)
    out.payload = ciphertext
    return out


def protect_request(ctx, seq, msg):
    """(outer message, binding) for the request `msg` under sequence number `seq`. The
    binding (kid, piv, nonce) verifies the response."""
    piv = piv_bytes(seq)
    kid = ctx.sender_id
    inner, outer = _split(msg)
    observe = msg.get_option(coap.OBSERVE) is not None
    nonce = ctx.nonce(kid, piv)
    ct = aes_ccm_encrypt(ctx.sender_key, nonce, inner_plaintext(msg.code, inner, msg.payload),
                         aad(kid, piv))
    return (_outer(msg, coap.FETCH if observe else coap.POST, outer, encode_option(piv, kid),
                   ct), (kid, piv, nonce))


def _opened(outer, code, options, payload):
    m = coap.Message(outer.mtype, code, outer.mid, outer.token, options, payload)
    for n, v in outer.options:
        if n != coap.OSCORE and not is_inner(n):
            m.add_option(n, v)
    return m


def unprotect_request(ctx, outer):
    """(inner message, binding, seq) of a protected request, verified under `ctx` (whose
    recipient_id must be the request's kid). No replay check: the caller's window does it."""
    value = outer.get_option(coap.OSCORE)
    if value is None:
        raise OscoreError("request is not OSCORE-protected", _UNAUTHORIZED)
    piv, kid, _ = decode_option(value)
    if piv is None or kid is None:
        raise OscoreError("OSCORE option of a request needs a Partial IV and a kid",
                          _BAD_OPTION)
    if kid != ctx.recipient_id:
        raise OscoreError("kid does not belong to this security context", _UNAUTHORIZED)
    nonce = ctx.nonce(kid, piv)
    pt = aes_ccm_decrypt(ctx.recipient_key, nonce, outer.payload, aad(kid, piv))
    code, options, payload = parse_inner(pt)
    if not 1 <= code < 32:
        raise OscoreError("inner code %d.%02d is not a request" % (code >> 5, code & 31),
                          _BAD_REQUEST)
    return _opened(outer, code, options, payload), (kid, piv, nonce), piv_int(piv)


def protect_response(ctx, binding, msg, seq=None):
    """The outer response for `msg`, bound to the request `binding`. With `seq` the
    response carries its own Partial IV (a fresh nonce) instead of reusing the request's."""
    kid, rpiv, nonce = binding
    value = b""
    if seq is not None:
        piv = piv_bytes(seq)
        nonce = ctx.nonce(ctx.sender_id, piv)
        value = encode_option(piv)
    inner, outer = _split(msg)
    observe = msg.get_option(coap.OBSERVE) is not None
    ct = aes_ccm_encrypt(ctx.sender_key, nonce, inner_plaintext(msg.code, inner, msg.payload),
                         aad(kid, rpiv))
    return _outer(msg, coap.CONTENT if observe else coap.CHANGED, outer, value, ct)


def unprotect_response(ctx, binding, outer):
    """The inner response of `outer`, verified under `ctx` and bound to the request
    `binding`; OscoreError when it is not protected or does not verify."""
    value = outer.get_option(coap.OSCORE)
    if value is None:
        raise OscoreError("response is not OSCORE-protected (code %d.%02d)"
                          % (outer.code >> 5, outer.code & 31), _UNAUTHORIZED)
    kid, rpiv, nonce = binding
    piv, _, _ = decode_option(value)
    if piv is not None:
        nonce = ctx.nonce(ctx.recipient_id, piv)
    pt = aes_ccm_decrypt(ctx.recipient_key, nonce, outer.payload, aad(kid, rpiv))
    code, options, payload = parse_inner(pt)
    if code < 64:
        raise OscoreError("inner code %d.%02d is not a response" % (code >> 5, code & 31),
                          _BAD_REQUEST)
    return _opened(outer, code, options, payload)


# -- replay window (section 7.4) --------------------------------------------------------------

class ReplayWindow:
    """Sequence numbers a receiver has accepted: the highest, and a bitmap of the `size`
    below it. Not `established` after a restart that lost it (Appendix B.1.2)."""

    def __init__(self, size=32, established=True):
        self.size = size
        self.top = -1
        self.bits = 0   # bit i: top - i was accepted
        self.established = established

    def check(self, seq):
        """OscoreError (4.01) when `seq` was seen or is older than the window."""
        if seq > self.top:
            return
        d = self.top - seq
        if d >= self.size:
            raise OscoreError("replay: sequence number %d is older than the window" % seq,
                              _UNAUTHORIZED)
        if self.bits >> d & 1:
            raise OscoreError("replay: sequence number %d was seen" % seq, _UNAUTHORIZED)

    def accept(self, seq):
        self.check(seq)
        if seq > self.top:
            shift = seq - self.top
            self.bits = ((self.bits << shift) | 1) & ((1 << self.size) - 1) if shift < self.size \
                else 1
            self.top = seq
        else:
            self.bits |= 1 << (self.top - seq)

    def establish(self, seq):
        """Start afresh at `seq` (after an Echo exchange): only numbers above it pass."""
        self.top = seq
        self.bits = 1
        self.established = True

    def state(self):
        return [self.top, self.bits]

    @classmethod
    def restore(cls, state, size=32):
        w = cls(size)
        w.top, w.bits = int(state[0]), int(state[1]) & ((1 << size) - 1)
        return w


# -- sequence numbers that survive a power cut (Appendix B.1.1) -------------------------------

class SeqStore:
    """The sender sequence number, persisted ahead: the file holds a limit no number
    handed out has reached. At start the next number is the stored limit (numbers below
    it may have been used before a crash); before `next()` hands out the limit itself, a
    new limit `chunk` higher is written (temporary file, then renamed over the old one).
    A crash costs at most `chunk` unused numbers, never a repeated one."""

    def __init__(self, path, chunk=64):
        self.path = path
        self.chunk = chunk
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            text = "0"
        try:
            self.seq = int(text)
        except ValueError:
            raise OscoreError("sequence number file %s is damaged: %r; the context must be "
                              "rotated" % (path, text[:20]), _BAD_REQUEST) from None
        if not 0 <= self.seq <= MAX_SEQ:
            raise OscoreError("sequence number file %s: out of range" % path, _BAD_REQUEST)
        self.limit = self.seq

    def next(self):
        seq = self.seq
        if seq > MAX_SEQ:
            raise OscoreError("sequence numbers exhausted; the context must be rotated",
                              _BAD_REQUEST)
        if seq >= self.limit:
            self._persist(min(seq + self.chunk, MAX_SEQ + 1))
        self.seq = seq + 1
        return seq

    def _persist(self, limit):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(limit))
            try:
                f.flush()
                os.fsync(f.fileno())  # type: ignore[attr-defined]
            except (AttributeError, OSError):
                pass  # MicroPython: close() commits the file
        os.rename(tmp, self.path)
        self.limit = limit
