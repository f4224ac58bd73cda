# Mirrors fast/oscore_py.py (the hub's OSCORE context table, built on protocol/oscore.py); AES-CCM-16-64-128 through OpenSSL's EVP.
# cython: language_level=3
"""The hub's OSCORE (RFC 8613) context table in C: keys, kid lookup, replay windows, AES-CCM.

`Table` has the API of fast/oscore_py.py's pure twin (same arguments, results,
errors and codes; the tests compare them message by message). What is C here:

- per context, the derived keys and common IV (derived in Python with
  protocol/oscore.py's `Context` when the context is added), the node's
  Sender ID (the `kid` of its requests), the replay window (a 64-bit bitmap
  under the highest sequence number accepted, `window` <= 64 wide) and the
  pending Echo value, in one C array;
- kid -> context: an open-addressing hash table on the kid packed into 64
  bits (an ID has at most 7 bytes: the nonce holds no more, RFC 8613 §5.2);
- AES-CCM-16-64-128 (key 16, nonce 13, tag 8) through OpenSSL's EVP: one
  EVP_CIPHER_CTX per table and direction, set up once and re-initialised with
  each message's key and nonce (the cipher is fetched once per process);
- two batch calls for the hub's fast path (hub/fastpath.py), each one C loop
  over the whole batch with the GIL released: `open_batch` (`open_reports`
  for plain lists: unprotect, check that the inner request is a report,
  replay check and window update) and `seal_acks` (the protected
  piggybacked ACKs, built and encrypted).

One thread at a time may use a table: the batch calls release the GIL, and a
second thread that touches the table meanwhile gets a RuntimeError instead of
a table changing under the loop.
"""

import hmac
import os

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset

from smartpark.fast.oscore_py import Opened
from smartpark.protocol import coap, oscore
from smartpark.protocol.errors import OscoreError

include "oscore_wire.pxi"  # AES-CCM through EVP, the option, the AAD, the nonce

DEF MAX_WINDOW = 64

# CoAP numbers (protocol/coap.py, protocol/coapopts.py are the reference)
cdef enum:
    C_POST = 2
    C_CHANGED = 0x44
    T_ACK = 2
    O_OSCORE = 9
    O_URI_PATH = 11
    O_CONTENT_FORMAT = 12
    O_MAX_AGE = 14

BAD_REQUEST = 0x80
UNAUTHORIZED = 0x81
BAD_OPTION = 0x82

# why a request was left to the aiocoap path (`fallbacks()` counts them by these names)
cdef enum:
    F_OK = 0
    F_OPTION = 1       # OSCORE option malformed, or no kid / a kid context
    F_KID = 2          # unknown kid
    F_ECHO = 3         # window not established: the Echo exchange (aiocoap side)
    F_DECRYPT = 4      # verification failed
    F_NOT_REPORT = 5   # inner request is not POST /r with a payload (aiocoap side)
    F_REPLAY = 6       # replay (aiocoap side answers 4.01)
    F_COUNT = 7

include "cbor_head.pxi"  # put_head: the stored count of a report ack (seal_acks)
include "coap_option.pxi"  # next_option: one option header, in bounds or refused

FALLBACK_NAMES = ("ok", "option", "kid", "echo", "decrypt", "not_report", "replay")


if not SP_HAVE_CCM or sp_ccm_cipher() == NULL:
    raise ImportError("OpenSSL's AES-128-CCM is not available")


cdef class _Cipher:
    """One EVP_CIPHER_CTX (module-level helpers and tests)."""
    cdef sp_ccm_ctx *x

    def __cinit__(self):
        self.x = sp_ccm_new()
        if self.x == NULL:
            raise MemoryError()

    def __dealloc__(self):
        sp_ccm_free(self.x)


cdef _Cipher _module_cipher = _Cipher()


cdef _check_key_nonce(bytes key, bytes nonce):
    if len(key) != KEY_LEN or len(nonce) != NONCE_LEN:
        raise ValueError("AES-CCM-16-64-128 takes a 16-byte key and a 13-byte nonce")


def aes_ccm_encrypt(bytes key not None, bytes nonce not None, plaintext, aad):
    """ciphertext || 8-byte tag (protocol/oscore.py's aes_ccm_encrypt)."""
    _check_key_nonce(key, nonce)
    cdef bytes p = bytes(plaintext), a = bytes(aad)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, len(p) + TAG_LEN)
    if sp_ccm_seal(_module_cipher.x, <unsigned char *>PyBytes_AS_STRING(key),
                <unsigned char *>PyBytes_AS_STRING(nonce),
                <unsigned char *>PyBytes_AS_STRING(a), len(a),
                <unsigned char *>PyBytes_AS_STRING(p), len(p),
                <unsigned char *>PyBytes_AS_STRING(out)) != 0:
        raise RuntimeError("OpenSSL AES-CCM encryption failed")
    return out


def aes_ccm_decrypt(bytes key not None, bytes nonce not None, data, aad):
    """The plaintext, or OscoreError 4.00 when the tag does not verify."""
    _check_key_nonce(key, nonce)
    cdef bytes d = bytes(data), a = bytes(aad)
    if len(d) < TAG_LEN:
        raise OscoreError("ciphertext shorter than the %d-byte tag" % TAG_LEN, BAD_REQUEST)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, len(d) - TAG_LEN)
    if sp_ccm_open(_module_cipher.x, <unsigned char *>PyBytes_AS_STRING(key),
                <unsigned char *>PyBytes_AS_STRING(nonce),
                <unsigned char *>PyBytes_AS_STRING(a), len(a),
                <unsigned char *>PyBytes_AS_STRING(d), len(d),
                <unsigned char *>PyBytes_AS_STRING(out)) < 0:
        raise OscoreError("decryption failed: the message does not verify", BAD_REQUEST)
    return out


cdef inline uint64_t kid_key(const unsigned char *kid, int kl) noexcept nogil:
    """A kid of <= 7 bytes as one 64-bit key: its length in the top byte, then the bytes."""
    cdef uint64_t k = (<uint64_t>kl) << 56
    cdef int i
    for i in range(kl):
        k |= (<uint64_t>kid[i]) << (8 * (6 - i))
    return k


cdef inline uint32_t kid_hash(uint64_t k) noexcept nogil:
    k ^= k >> 33
    k *= 0xff51afd7ed558ccdULL
    k ^= k >> 33
    return <uint32_t>k


# ---- the inner request of a report --------------------------------------------------------

cdef int inner_report(const unsigned char *d, int n, int *cf, int *pay_off) noexcept nogil:
    """1 when the plaintext d[0:n] is POST with only Uri-Path "r" and at most one
    Content-Format (<= 2 bytes), and a payload: what the fast path ingests (the inner twin of
    fast/udp.pyx's parse_report_c). 0 for anything else, valid or not."""
    cdef int pos = 1, length = 0, num = 0, paths = 0, k, step
    cf[0] = -1
    if n < 1 or d[0] != C_POST:
        return 0
    while True:
        step = next_option(d, n, &pos, &num, &length)
        if step == 0:
            return 0
        if step == 2:
            break
        if num == O_URI_PATH:
            paths += 1
            if paths > 1 or length != 1 or d[pos] != 0x72:  # 'r'
                return 0
        elif num == O_CONTENT_FORMAT:
            if cf[0] != -1 or length > 2:
                return 0
            cf[0] = 0
            for k in range(length):
                cf[0] = (cf[0] << 8) | d[pos + k]
        else:
            return 0
        pos += length
    if paths != 1:
        return 0
    pay_off[0] = pos
    return 1


# ---- the table --------------------------------------------------------------------------------

cdef struct ctx_t:
    int used
    uint32_t gen
    int kid_len                  # the node's Sender ID: the kid of its requests
    unsigned char kid[MAX_ID]
    int sid_len                  # the hub's Sender ID (the node's Recipient ID)
    unsigned char sid[MAX_ID]
    unsigned char rkey[KEY_LEN]  # the hub's recipient key (requests)
    unsigned char skey[KEY_LEN]  # the hub's sender key (responses)
    unsigned char iv[NONCE_LEN]
    int established
    int64_t top
    uint64_t bits


cdef struct hent_t:
    uint64_t key
    int slot                     # -1: empty


cdef struct binding_t:           # what seal_acks needs of an opened report (a bytes object)
    uint32_t slot
    uint32_t gen
    int piv_len
    unsigned char piv[MAX_PIV]


cdef inline int window_check(ctx_t *c, int64_t seq, int size) noexcept nogil:
    """protocol.oscore.ReplayWindow.check: 1 when seq may pass."""
    cdef int64_t d
    if seq > c.top:
        return 1
    d = c.top - seq
    if d >= size:
        return 0
    return 0 if (c.bits >> d) & 1 else 1


cdef inline void window_accept(ctx_t *c, int64_t seq, int size) noexcept nogil:
    """protocol.oscore.ReplayWindow.accept after a passed check."""
    cdef int64_t shift
    cdef uint64_t mask = 0xFFFFFFFFFFFFFFFFULL if size >= 64 else ((1ULL << size) - 1)
    if seq > c.top:
        shift = seq - c.top
        if shift < size:
            c.bits = ((c.bits << shift) | 1) & mask
        else:
            c.bits = 1
        c.top = seq
    else:
        c.bits |= 1ULL << (c.top - seq)


cdef class _Batch:
    """The C arrays of one open_reports/open_batch call (freed with it)."""
    cdef Py_ssize_t n
    cdef const unsigned char **op
    cdef const unsigned char **dp
    cdef int *ol
    cdef int *dl
    cdef int *st
    cdef int *slot
    cdef int *cfs
    cdef int *poff
    cdef int *plen
    cdef size_t *ptoff
    cdef opt_t *opts
    cdef unsigned char *pt

    def __cinit__(self, Py_ssize_t n):
        self.n = n
        self.op = <const unsigned char **>calloc(n, sizeof(void *))
        self.dp = <const unsigned char **>calloc(n, sizeof(void *))
        self.ol = <int *>calloc(n, sizeof(int))
        self.dl = <int *>calloc(n, sizeof(int))
        self.st = <int *>calloc(n, sizeof(int))
        self.slot = <int *>calloc(n, sizeof(int))
        self.cfs = <int *>calloc(n, sizeof(int))
        self.poff = <int *>calloc(n, sizeof(int))
        self.plen = <int *>calloc(n, sizeof(int))
        self.ptoff = <size_t *>calloc(n, sizeof(size_t))
        self.opts = <opt_t *>calloc(n, sizeof(opt_t))
        self.pt = NULL
        if not (self.op and self.dp and self.ol and self.dl and self.st and self.slot
                and self.cfs and self.poff and self.plen and self.ptoff and self.opts):
            raise MemoryError()

    def __dealloc__(self):
        free(self.op)
        free(self.dp)
        free(self.ol)
        free(self.dl)
        free(self.st)
        free(self.slot)
        free(self.cfs)
        free(self.poff)
        free(self.plen)
        free(self.ptoff)
        free(self.opts)
        free(self.pt)

    cdef bytes payload(self, Py_ssize_t i):
        return PyBytes_FromStringAndSize(<char *>self.pt + self.ptoff[i] + self.poff[i],
                                         self.plen[i] - self.poff[i])

    cdef bytes binding(self, Py_ssize_t i, uint32_t gen):
        cdef binding_t b
        memset(&b, 0, sizeof(binding_t))
        b.slot = self.slot[i]
        b.gen = gen
        b.piv_len = self.opts[i].piv_len
        memcpy(b.piv, self.op[i] + self.opts[i].piv_off, self.opts[i].piv_len)
        return PyBytes_FromStringAndSize(<char *>&b, sizeof(binding_t))


cdef class Table:
    """The hub's OSCORE contexts, one per node (fast/oscore_py.py's Table, in C)."""
    cdef readonly int window
    cdef ctx_t *ctx
    cdef int cap, count
    cdef hent_t *hash
    cdef int hcap
    cdef uint32_t next_gen
    cdef list names              # slot -> node
    cdef list echoes             # slot -> pending Echo value or None
    cdef dict slot_of            # node -> slot
    cdef sp_ccm_ctx *x
    cdef int busy
    cdef unsigned long long fallback[F_COUNT]
    cdef readonly unsigned long long n_opened, n_sealed, n_seal_lost

    def __cinit__(self, int window=32):
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError("replay window must be 1..64, got %r" % (window,))
        self.window = window
        self.cap = 16
        self.ctx = <ctx_t *>calloc(self.cap, sizeof(ctx_t))
        self.hcap = 64
        self.hash = <hent_t *>malloc(self.hcap * sizeof(hent_t))
        self.x = sp_ccm_new()
        if self.ctx == NULL or self.hash == NULL or self.x == NULL:
            raise MemoryError()
        cdef int i
        for i in range(self.hcap):
            self.hash[i].slot = -1
        self.names = [None] * self.cap
        self.echoes = [None] * self.cap
        self.slot_of = {}
        self.next_gen = 1
        memset(self.fallback, 0, sizeof(self.fallback))

    def __dealloc__(self):
        free(self.ctx)
        free(self.hash)
        sp_ccm_free(self.x)

    cdef int _idle(self) except -1:
        if self.busy:
            raise RuntimeError("the OSCORE table is in use by another thread")
        return 0

    def __len__(self):
        return self.count

    # -- kid -> slot

    cdef int lookup(self, const unsigned char *kid, int kl) noexcept nogil:
        cdef uint64_t k
        cdef uint32_t i, m = self.hcap - 1
        if kl > MAX_ID:
            return -1
        k = kid_key(kid, kl)
        i = kid_hash(k) & m
        while self.hash[i].slot >= 0:
            if self.hash[i].key == k:
                return self.hash[i].slot
            i = (i + 1) & m
        return -1

    cdef void _hput(self, uint64_t k, int slot) noexcept:
        cdef uint32_t m = self.hcap - 1, i = kid_hash(k) & m
        while self.hash[i].slot >= 0:
            i = (i + 1) & m
        self.hash[i].key = k
        self.hash[i].slot = slot

    cdef int _hgrow(self) except -1:
        cdef int old = self.hcap, i
        cdef hent_t *prev = self.hash
        cdef hent_t *h = <hent_t *>malloc(2 * old * sizeof(hent_t))
        if h == NULL:
            raise MemoryError()
        for i in range(2 * old):
            h[i].slot = -1
        self.hash = h
        self.hcap = 2 * old
        for i in range(old):
            if prev[i].slot >= 0:
                self._hput(prev[i].key, prev[i].slot)
        free(prev)
        return 0

    cdef void _hdel(self, uint64_t k) noexcept:
        """Linear probing with backward-shift deletion (no tombstones)."""
        cdef uint32_t m = self.hcap - 1, i = kid_hash(k) & m, j, h
        while self.hash[i].slot >= 0 and self.hash[i].key != k:
            i = (i + 1) & m
        if self.hash[i].slot < 0:
            return
        j = i
        while True:
            j = (j + 1) & m
            if self.hash[j].slot < 0:
                break
            h = kid_hash(self.hash[j].key) & m
            # move j back to the hole i unless its home h lies cyclically in (i, j]
            if (i <= j and (h <= i or h > j)) or (i > j and h <= i and h > j):
                self.hash[i] = self.hash[j]
                i = j
        self.hash[i].slot = -1

    # -- contexts

    def add(self, node, sender_id, recipient_id, secret, salt):
        """The context for `node` (IDs from the node's side): fast/oscore_py.py's Table.add."""
        self._idle()
        sender_id = bytes(sender_id)
        cdef int s = self.lookup(<const unsigned char *>PyBytes_AS_STRING(sender_id),
                                 len(sender_id)) if len(sender_id) <= MAX_ID else -1
        if s >= 0 and self.names[s] != node:
            raise ValueError("key id %s already belongs to node %r" % (sender_id.hex(),
                                                                       self.names[s]))
        c = oscore.Context(bytes(secret), bytes(salt), bytes(recipient_id), sender_id)
        cdef ctx_t *e
        if s >= 0:
            e = &self.ctx[s]
            if (memcmp(e.rkey, PyBytes_AS_STRING(c.recipient_key), KEY_LEN) == 0
                    and memcmp(e.skey, PyBytes_AS_STRING(c.sender_key), KEY_LEN) == 0
                    and memcmp(e.iv, PyBytes_AS_STRING(c.common_iv), NONCE_LEN) == 0):
                return  # the same key again: keep its replay state
        self.remove(node)
        if self.count + 1 > self.hcap // 2:
            self._hgrow()
        s = self._free_slot()
        e = &self.ctx[s]
        memset(e, 0, sizeof(ctx_t))
        e.used = 1
        e.gen = self.next_gen
        self.next_gen += 1
        e.kid_len = len(sender_id)
        memcpy(e.kid, PyBytes_AS_STRING(sender_id), e.kid_len)
        e.sid_len = len(c.sender_id)
        memcpy(e.sid, PyBytes_AS_STRING(c.sender_id), e.sid_len)
        memcpy(e.rkey, PyBytes_AS_STRING(c.recipient_key), KEY_LEN)
        memcpy(e.skey, PyBytes_AS_STRING(c.sender_key), KEY_LEN)
        memcpy(e.iv, PyBytes_AS_STRING(c.common_iv), NONCE_LEN)
        e.established = 1
        e.top = -1
        e.bits = 0
        self._hput(kid_key(e.kid, e.kid_len), s)
        self.names[s] = node
        self.echoes[s] = None
        self.slot_of[node] = s
        self.count += 1

    cdef int _free_slot(self) except -1:
        cdef int i, old
        cdef ctx_t *grown
        for i in range(self.cap):
            if not self.ctx[i].used:
                return i
        old = self.cap
        grown = <ctx_t *>realloc(self.ctx, 2 * old * sizeof(ctx_t))
        if grown == NULL:
            raise MemoryError()
        self.ctx = grown
        memset(self.ctx + old, 0, old * sizeof(ctx_t))
        self.cap = 2 * old
        self.names.extend([None] * old)
        self.echoes.extend([None] * old)
        return old

    def remove(self, node):
        self._idle()
        s = self.slot_of.pop(node, None)
        if s is None:
            return
        cdef ctx_t *e = &self.ctx[<int>s]
        self._hdel(kid_key(e.kid, e.kid_len))
        e.used = 0
        self.names[s] = None
        self.echoes[s] = None
        self.count -= 1

    def node_of(self, kid):
        kid = bytes(kid)
        cdef int s = self.lookup(<const unsigned char *>PyBytes_AS_STRING(kid), len(kid))
        return None if s < 0 else self.names[s]

    def nodes(self):
        return sorted(self.slot_of)

    def established(self, node):
        s = self.slot_of.get(node)
        return s is not None and bool(self.ctx[<int>s].established)

    cdef int _slot_of_kid(self, bytes kid) except -2:
        return self.lookup(<const unsigned char *>PyBytes_AS_STRING(kid), len(kid))

    # -- one request at a time (the aiocoap path)

    def unprotect(self, option, payload, code=coap.POST):
        """fast/oscore_py.py's Table.unprotect: an Opened; changes no state."""
        self._idle()
        cdef bytes ov = bytes(option), data = bytes(payload)
        cdef opt_t o
        if not parse_option(<const unsigned char *>PyBytes_AS_STRING(ov), len(ov), &o):
            oscore.decode_option(ov)  # raises the reference's OscoreError (4.02)
            raise OscoreError("OSCORE option malformed", BAD_OPTION)
        if o.piv_len == 0 or o.kid_len < 0:
            raise OscoreError("OSCORE option of a request needs a Partial IV and a kid",
                              BAD_OPTION)
        if o.has_ctx:
            raise OscoreError("kid context is not used by this hub", UNAUTHORIZED)
        cdef bytes kid = ov[o.kid_off:o.kid_off + o.kid_len]
        cdef bytes piv = ov[o.piv_off:o.piv_off + o.piv_len]
        cdef int s = self._slot_of_kid(kid)
        if s < 0:
            raise OscoreError("unknown key id %s" % kid.hex(), UNAUTHORIZED)
        if code not in (coap.POST, coap.FETCH):
            raise OscoreError("outer code of a protected request must be POST or FETCH",
                              BAD_REQUEST)
        if len(data) < TAG_LEN:
            raise OscoreError("ciphertext shorter than the %d-byte tag" % TAG_LEN, BAD_REQUEST)
        cdef ctx_t *e = &self.ctx[s]
        cdef unsigned char nonce[NONCE_LEN]
        cdef unsigned char a[AAD_MAX]
        cdef int al = make_aad(a, e.kid, e.kid_len, <const unsigned char *>PyBytes_AS_STRING(piv),
                               o.piv_len)
        make_nonce(nonce, e.iv, e.kid, e.kid_len, <const unsigned char *>PyBytes_AS_STRING(piv),
                   o.piv_len)
        cdef bytes pt = PyBytes_FromStringAndSize(NULL, len(data) - TAG_LEN)
        if sp_ccm_open(self.x, e.rkey, nonce, a, al, <const unsigned char *>PyBytes_AS_STRING(data),
                    len(data), <unsigned char *>PyBytes_AS_STRING(pt)) < 0:
            raise OscoreError("decryption failed: the message does not verify", BAD_REQUEST)
        icode, options, inner_payload = oscore.parse_inner(pt)
        if not 1 <= icode < 32:
            raise OscoreError("inner code %d.%02d is not a request" % (icode >> 5, icode & 31),
                              BAD_REQUEST)
        echo = None
        for n, v in options:
            if n == coap.ECHO:
                echo = v
                break
        return Opened(self.names[s], kid, piv, piv_value(<const unsigned char *>
                                                         PyBytes_AS_STRING(piv), o.piv_len),
                      icode, options, inner_payload, echo)

    def accept(self, opened):
        """Replay check and window update (fast/oscore_py.py's Table.accept)."""
        self._idle()
        cdef bytes kid = bytes(opened.kid)
        cdef int s = self._slot_of_kid(kid)
        if s < 0 or self.names[s] != opened.node:
            raise OscoreError("key id %s was removed" % kid.hex(), UNAUTHORIZED)
        cdef ctx_t *e = &self.ctx[s]
        seq = opened.seq
        if e.established:
            if not window_check(e, seq, self.window):
                if e.top - <int64_t>seq >= self.window:
                    raise OscoreError("replay: sequence number %d is older than the window"
                                      % seq, UNAUTHORIZED)
                raise OscoreError("replay: sequence number %d was seen" % seq, UNAUTHORIZED)
            window_accept(e, seq, self.window)
            return
        pending = self.echoes[s]
        if (opened.echo is not None and pending is not None
                and hmac.compare_digest(opened.echo, pending)):
            e.top = seq
            e.bits = 1
            e.established = 1
            self.echoes[s] = None
            opened.own_piv = True
            return
        if pending is None:
            pending = self.echoes[s] = os.urandom(8)
        raise OscoreError("replay window of node %r not established: Echo required"
                          % self.names[s], UNAUTHORIZED, echo=pending)

    def protect_response(self, opened, code, options, payload, own_seq=None):
        """(OSCORE option value, ciphertext) of the response to `opened`."""
        self._idle()
        cdef bytes kid = bytes(opened.kid), rpiv = bytes(opened.piv), value, piv
        cdef int s = self._slot_of_kid(kid)
        if s < 0:
            raise OscoreError("key id %s was removed" % kid.hex(), UNAUTHORIZED)
        if len(rpiv) > MAX_PIV:
            raise OscoreError("a Partial IV is 1..5 bytes")
        cdef ctx_t *e = &self.ctx[s]
        cdef unsigned char nonce[NONCE_LEN]
        cdef unsigned char a[AAD_MAX]
        if own_seq is None:
            if opened.own_piv:
                raise OscoreError("this response needs the hub's own Partial IV",
                                  coap.INTERNAL_SERVER_ERROR)
            make_nonce(nonce, e.iv, e.kid, e.kid_len, <const unsigned char *>
                       PyBytes_AS_STRING(rpiv), len(rpiv))
            value = b""
        else:
            piv = oscore.piv_bytes(own_seq)
            make_nonce(nonce, e.iv, e.sid, e.sid_len, <const unsigned char *>
                       PyBytes_AS_STRING(piv), len(piv))
            value = oscore.encode_option(piv)
        cdef bytes pt = oscore.inner_plaintext(code, options, payload)
        cdef int al = make_aad(a, e.kid, e.kid_len, <const unsigned char *>PyBytes_AS_STRING(rpiv),
                               len(rpiv))
        cdef bytes out = PyBytes_FromStringAndSize(NULL, len(pt) + TAG_LEN)
        if sp_ccm_seal(self.x, e.skey, nonce, a, al, <const unsigned char *>PyBytes_AS_STRING(pt),
                    len(pt), <unsigned char *>PyBytes_AS_STRING(out)) != 0:
            raise RuntimeError("OpenSSL AES-CCM encryption failed")
        return value, out

    # -- replay state across restarts

    def windows_state(self):
        """{node: [top, bits]} of every established window."""
        cdef int i
        out = {}
        for i in range(self.cap):
            if self.ctx[i].used and self.ctx[i].established:
                out[self.names[i]] = [self.ctx[i].top, self.ctx[i].bits]
        return out

    def restore_windows(self, state):
        """Windows saved by `windows_state`; a node missing from `state` needs Echo."""
        self._idle()
        cdef int i
        cdef uint64_t mask = (0xFFFFFFFFFFFFFFFFULL if self.window >= 64
                              else ((1ULL << self.window) - 1))
        for i in range(self.cap):
            if not self.ctx[i].used:
                continue
            st = state.get(self.names[i])
            if st is None:
                self.ctx[i].established = 0
            else:
                top = int(st[0])
                bits = int(st[1]) & mask
                self.ctx[i].top = top
                self.ctx[i].bits = bits
                self.ctx[i].established = 1

    def lose_windows(self):
        """After an unclean stop: every context needs the Echo exchange."""
        self._idle()
        cdef int i
        for i in range(self.cap):
            if self.ctx[i].used:
                self.ctx[i].established = 0
                self.ctx[i].top = -1
                self.ctx[i].bits = 0
                self.echoes[i] = None

    # -- the fast path's batches (hub/fastpath.py)

    def fallbacks(self):
        """Counts of requests open_reports left to the aiocoap path, by why."""
        return {FALLBACK_NAMES[i]: self.fallback[i] for i in range(1, F_COUNT)}

    def open_batch(self, list protected not None, list reports not None,
                   list others not None):
        """`open_reports` over fast/udp.pyx's protected candidates (peer, mid, token,
        option offset, option length, pktinfo, datagram; the ciphertext follows the option
        and the payload marker): each report is appended to `reports` as (peer, mid, token,
        cf, payload, pktinfo, node, binding) -- what hub/fastpath.py ingests and `seal_acks`
        answers --, every other candidate to `others` as it came. Returns how many were
        reports."""
        self._idle()
        cdef Py_ssize_t n = len(protected), i, k = 0
        cdef tuple e
        cdef object d
        cdef Py_ssize_t off, ln, size
        cdef _Batch b
        if n == 0:
            return 0
        b = _Batch(n)
        for i in range(n):
            e = <tuple?>protected[i]
            d = e[6]
            if type(d) is not bytes:
                raise TypeError("candidate %d: the datagram must be bytes" % i)
            off = e[3]
            ln = e[4]
            size = PyBytes_GET_SIZE(d)
            if off < 0 or ln < 0 or off + ln + 1 > size:
                off = ln = 0   # not a candidate udp.pyx makes: left to aiocoap
                b.dl[i] = 0
            else:
                b.dp[i] = <const unsigned char *>PyBytes_AS_STRING(d) + off + ln + 1
                b.dl[i] = <int>(size - off - ln - 1)
            b.op[i] = <const unsigned char *>PyBytes_AS_STRING(d) + off
            b.ol[i] = <int>ln
        self._open(b)
        for i in range(n):
            e = <tuple>protected[i]
            if b.st[i] != F_OK:
                others.append(e)
                continue
            reports.append((e[0], e[1], e[2], None if b.cfs[i] < 0 else b.cfs[i],
                            b.payload(i), e[5], self.names[b.slot[i]], b.binding(i,
                            self.ctx[b.slot[i]].gen)))
            k += 1
        return k

    def open_reports(self, list options not None, list payloads not None):
        """Open a batch of protected POSTs (the OSCORE option value and the ciphertext of
        each) in one C loop with the GIL released. A request comes back as (node,
        content_format or None, payload, binding) when it is a report (inner POST with only
        Uri-Path "r" and Content-Format, and a payload) that verifies and passes the replay
        window -- the window then holds its sequence number, as after `accept` -- and as
        None otherwise, with no state changed: a malformed option, an unknown kid, a failed
        verification, any other inner request, a replay, or a context whose window needs the
        Echo exchange all go to the aiocoap path, which answers them through `unprotect`
        and `accept`. `binding` (bytes) is what `seal_acks` needs of the request."""
        self._idle()
        cdef Py_ssize_t n = len(options), i
        cdef object ob, db
        cdef _Batch b
        if len(payloads) != n:
            raise ValueError("%d payloads for %d options" % (len(payloads), n))
        if n == 0:
            return []
        b = _Batch(n)
        for i in range(n):
            ob = options[i]
            db = payloads[i]
            if type(ob) is not bytes or type(db) is not bytes:
                raise TypeError("options and payloads must be bytes")
            b.op[i] = <const unsigned char *>PyBytes_AS_STRING(ob)
            b.ol[i] = <int>PyBytes_GET_SIZE(ob)
            b.dp[i] = <const unsigned char *>PyBytes_AS_STRING(db)
            b.dl[i] = <int>PyBytes_GET_SIZE(db)
        self._open(b)
        out = [None] * n
        for i in range(n):
            if b.st[i] == F_OK:
                out[i] = (self.names[b.slot[i]], None if b.cfs[i] < 0 else b.cfs[i],
                          b.payload(i), b.binding(i, self.ctx[b.slot[i]].gen))
        return out

    cdef int _open(self, _Batch b) except -1:
        """The C loop of a batch (the GIL released), then the counters."""
        cdef Py_ssize_t i
        cdef size_t total = 0
        for i in range(b.n):
            b.ptoff[i] = total
            if b.dl[i] > TAG_LEN:
                total += b.dl[i] - TAG_LEN
        b.pt = <unsigned char *>malloc(total + 1)
        if b.pt == NULL:
            raise MemoryError()
        self.busy = 1
        try:
            with nogil:
                self._open_loop(b.n, b.op, b.ol, b.dp, b.dl, b.opts, b.pt, b.ptoff, b.st,
                                b.slot, b.cfs, b.poff, b.plen)
        finally:
            self.busy = 0
        for i in range(b.n):
            self.fallback[b.st[i]] += 1
            if b.st[i] == F_OK:
                self.n_opened += 1
        return 0

    cdef void _open_loop(self, Py_ssize_t n, const unsigned char **op, int *ol,
                         const unsigned char **dp, int *dl, opt_t *opts, unsigned char *pt,
                         size_t *ptoff, int *st, int *slot, int *cfs, int *poff,
                         int *plen) noexcept nogil:
        cdef Py_ssize_t i
        cdef int s, al, k
        cdef int64_t seq
        cdef ctx_t *e
        cdef opt_t *o
        cdef unsigned char nonce[NONCE_LEN]
        cdef unsigned char a[AAD_MAX]
        for i in range(n):
            o = &opts[i]
            if (not parse_option(op[i], ol[i], o) or o.piv_len == 0 or o.kid_len < 0
                    or o.has_ctx):
                st[i] = F_OPTION
                continue
            s = self.lookup(op[i] + o.kid_off, o.kid_len)
            if s < 0:
                st[i] = F_KID
                continue
            e = &self.ctx[s]
            slot[i] = s
            if not e.established:
                st[i] = F_ECHO
                continue
            seq = piv_value(op[i] + o.piv_off, o.piv_len)
            if not window_check(e, seq, self.window):
                st[i] = F_REPLAY
                continue
            if dl[i] <= TAG_LEN:
                st[i] = F_DECRYPT
                continue
            al = make_aad(a, e.kid, e.kid_len, op[i] + o.piv_off, o.piv_len)
            make_nonce(nonce, e.iv, e.kid, e.kid_len, op[i] + o.piv_off, o.piv_len)
            k = sp_ccm_open(self.x, e.rkey, nonce, a, al, dp[i], dl[i], pt + ptoff[i])
            if k < 0:
                st[i] = F_DECRYPT
                continue
            plen[i] = k
            if not inner_report(pt + ptoff[i], k, &cfs[i], &poff[i]):
                st[i] = F_NOT_REPORT
                continue
            if not window_check(e, seq, self.window):  # an earlier one of this batch
                st[i] = F_REPLAY
                continue
            window_accept(e, seq, self.window)
            st[i] = F_OK

    def seal_acks(self, list reports not None, list results not None, int text_format=0):
        """The protected piggybacked ACKs of a batch of opened reports, encrypted in one C
        loop with the GIL released. reports[i] is hub/fastpath.py's tuple (peer, mid,
        token, cf, payload, pktinfo, node, binding); results[i] what Pipeline.ingest gave:
        (ack_head, stored) for a stored report -- the inner response is then byte for byte
        the ack fast/udp.pyx's respond_many builds -- or a ReportResult-like object (code,
        content_format, max_age, payload; a payload without a content format gets
        `text_format`). Each ACK: 2.04 with an empty OSCORE option (the request's nonce,
        RFC 8613 §8.3) and the ciphertext. None for a report whose context was removed or
        replaced meanwhile (no key to answer with: the node retries)."""
        self._idle()
        cdef Py_ssize_t n = len(reports), i
        if len(results) != n:
            raise ValueError("%d results for %d reports" % (len(results), n))
        if n == 0:
            return []
        cdef list out = [None] * n
        cdef unsigned char **dst = <unsigned char **>calloc(n, sizeof(void *))
        cdef size_t *ptoff = <size_t *>malloc(n * sizeof(size_t))
        cdef int *ptlen = <int *>malloc(n * sizeof(int))
        cdef binding_t *bs = <binding_t *>malloc(n * sizeof(binding_t))
        cdef unsigned char *pt = NULL
        cdef unsigned char *grown
        cdef size_t cap = 0, used = 0, need
        cdef tuple e
        cdef object r, binding, cf, max_age
        cdef bytes token, head, payload, msg
        cdef int mid, tkl, hl, pl, code, pos
        cdef unsigned long long stored
        cdef unsigned char *w
        cdef unsigned char val[4]
        cdef int vl, last
        cdef binding_t *b
        try:
            if not (dst and ptoff and ptlen and bs):
                raise MemoryError()
            for i in range(n):
                e = <tuple>reports[i]
                mid = e[1]
                token = <bytes?>e[2]
                binding = e[7]
                if type(binding) is not bytes or PyBytes_GET_SIZE(binding) != sizeof(binding_t):
                    raise TypeError("report %d: not a binding from open_reports" % i)
                b = &bs[i]
                memcpy(b, PyBytes_AS_STRING(binding), sizeof(binding_t))
                if (b.slot >= <uint32_t>self.cap or not self.ctx[b.slot].used
                        or self.ctx[b.slot].gen != b.gen or b.piv_len < 1
                        or b.piv_len > MAX_PIV):
                    self.n_seal_lost += 1
                    continue
                tkl = PyBytes_GET_SIZE(token)
                if tkl > 8:
                    raise ValueError("token longer than 8 bytes")
                r = results[i]
                if type(r) is tuple:
                    head = <bytes?>(<tuple>r)[0]
                    stored = (<tuple>r)[1]
                    hl = PyBytes_GET_SIZE(head)
                    need = 4 + hl + 12
                    payload = None
                else:
                    code = r.code
                    cf = r.content_format
                    max_age = r.max_age
                    payload = bytes(r.payload)
                    if cf is None and payload:
                        cf = text_format
                    need = 1 + 2 * 6 + 1 + PyBytes_GET_SIZE(payload)
                if used + need > cap:
                    cap = 2 * (used + need) + 1024
                    grown = <unsigned char *>realloc(pt, cap)
                    if grown == NULL:
                        raise MemoryError()
                    pt = grown
                w = pt + used
                if payload is None:
                    # 2.04, Content-Format 60, the ack: what respond_many sends in the clear
                    w[0] = C_CHANGED
                    w[1] = (O_CONTENT_FORMAT << 4) | 1
                    w[2] = 60
                    w[3] = 0xFF
                    memcpy(w + 4, PyBytes_AS_STRING(head), hl)
                    pos = 4 + hl
                    w[pos] = 0x04
                    pos += 1 + put_head(w + pos + 1, 0, stored)
                    w[pos] = 0x05
                    w[pos + 1] = 0x00
                    pos += 2
                else:
                    w[0] = code & 0xFF
                    pos = 1
                    last = 0
                    if cf is not None:
                        vl = put_uint(val, <unsigned int>cf)
                        pos = put_option(w, pos, O_CONTENT_FORMAT - last, val, vl)
                        last = O_CONTENT_FORMAT
                    if max_age is not None:
                        vl = put_uint(val, <unsigned int>max_age)
                        pos = put_option(w, pos, O_MAX_AGE - last, val, vl)
                    pl = PyBytes_GET_SIZE(payload)
                    if pl:
                        w[pos] = 0xFF
                        memcpy(w + pos + 1, PyBytes_AS_STRING(payload), pl)
                        pos += 1 + pl
                ptoff[i] = used
                ptlen[i] = pos
                used += pos
                # ACK 2.04, MID, token, OSCORE option (delta 9, empty), 0xFF, ciphertext
                msg = PyBytes_FromStringAndSize(NULL, 4 + tkl + 2 + pos + TAG_LEN)
                w = <unsigned char *>PyBytes_AS_STRING(msg)
                w[0] = 0x40 | (T_ACK << 4) | tkl
                w[1] = C_CHANGED
                w[2] = (mid >> 8) & 0xFF
                w[3] = mid & 0xFF
                memcpy(w + 4, PyBytes_AS_STRING(token), tkl)
                w[4 + tkl] = O_OSCORE << 4
                w[5 + tkl] = 0xFF
                dst[i] = w + 6 + tkl
                out[i] = msg
            self.busy = 1
            with nogil:
                for i in range(n):
                    if dst[i] != NULL:
                        if self._seal_one(&bs[i], pt + ptoff[i], ptlen[i], dst[i]) != 0:
                            dst[i] = NULL
            self.busy = 0
            for i in range(n):
                if dst[i] == NULL and out[i] is not None:
                    raise RuntimeError("OpenSSL AES-CCM encryption failed")
                if out[i] is not None:
                    self.n_sealed += 1
            return out
        finally:
            self.busy = 0
            free(dst)
            free(ptoff)
            free(ptlen)
            free(bs)
            free(pt)

    cdef int _seal_one(self, binding_t *b, const unsigned char *pt, int ptlen,
                       unsigned char *out) noexcept nogil:
        cdef ctx_t *e = &self.ctx[b.slot]
        cdef unsigned char nonce[NONCE_LEN]
        cdef unsigned char a[AAD_MAX]
        cdef int al = make_aad(a, e.kid, e.kid_len, b.piv, b.piv_len)
        make_nonce(nonce, e.iv, e.kid, e.kid_len, b.piv, b.piv_len)
        return sp_ccm_seal(self.x, e.skey, nonce, a, al, pt, ptlen, out)


cdef int put_uint(unsigned char *out, unsigned int v) noexcept nogil:
    """Minimal big-endian encoding of an option uint (0 -> zero bytes)."""
    cdef int n = 0, i
    while n < 4 and (v >> (8 * n)):
        n += 1
    for i in range(n):
        out[i] = (v >> (8 * (n - 1 - i))) & 0xFF
    return n


OscoreTable = Table  # the name smartpark.fast's selector gives it
