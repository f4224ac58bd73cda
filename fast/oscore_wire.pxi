# Included by fast/oscore.pyx (the hub's side) and fast/loadgen.pyx (the node's side, for load):
# the OSCORE pieces both ends build in C, each the twin of a function of protocol/oscore.py.
#
# - sp_ccm_seal / sp_ccm_open: AES-CCM-16-64-128 (key 16, nonce 13, tag 8) through OpenSSL's
#   EVP: per user (a table, a load run) one EVP_CIPHER_CTX per direction, set up for CCM once
#   and re-initialised with each message's key and nonce (the cipher is fetched once per
#   process). Only where setup.py links libcrypto (it defines SP_USE_OPENSSL); elsewhere
#   this part still compiles, SP_HAVE_CCM is 0 and every call fails (setup.py then skips
#   fast/oscore.pyx and builds loadgen without OSCORE).
# - parse_option (decode_option's accept/reject), make_aad (aad), make_nonce
#   (Context.nonce), piv_value (piv_int).

from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy, memset

cdef extern from *:
    """
    #include <stdlib.h>
    #if defined(SP_USE_OPENSSL) && defined(__has_include)
    #  if __has_include(<openssl/evp.h>)
    #    include <openssl/evp.h>
    #    define SP_HAVE_CCM 1
    #  endif
    #endif
    #ifndef SP_HAVE_CCM
    #  define SP_HAVE_CCM 0
    #endif

    #if SP_HAVE_CCM
    /* one EVP context per direction, set up for AES-128-CCM (nonce 13, tag 8) once: a
       message then re-initialises only the key and nonce. After a failure the context is
       set up afresh on its next use. */
    typedef struct { EVP_CIPHER_CTX *enc, *dec; int enc_ready, dec_ready; } sp_ccm_ctx;
    static EVP_CIPHER *sp_ccm_cipher_ = NULL;
    static const void *sp_ccm_cipher(void) {
        if (sp_ccm_cipher_ == NULL)
            sp_ccm_cipher_ = EVP_CIPHER_fetch(NULL, "AES-128-CCM", NULL);
        return sp_ccm_cipher_;
    }
    static void sp_ccm_free(sp_ccm_ctx *x) {
        if (x == NULL) return;
        if (x->enc) EVP_CIPHER_CTX_free(x->enc);
        if (x->dec) EVP_CIPHER_CTX_free(x->dec);
        free(x);
    }
    static sp_ccm_ctx *sp_ccm_new(void) {
        sp_ccm_ctx *x = (sp_ccm_ctx *)calloc(1, sizeof(sp_ccm_ctx));
        if (x == NULL) return NULL;
        x->enc = EVP_CIPHER_CTX_new();
        x->dec = EVP_CIPHER_CTX_new();
        if (x->enc == NULL || x->dec == NULL) { sp_ccm_free(x); return NULL; }
        return x;
    }
    static int sp_ccm_seal_(sp_ccm_ctx *x, const unsigned char *key, const unsigned char *nonce,
                            const unsigned char *aad, int aadlen, const unsigned char *pt,
                            int ptlen, unsigned char *out) {
        EVP_CIPHER_CTX *c = x->enc;
        int ol = 0;
        if (!x->enc_ready) {
            if (EVP_EncryptInit_ex(c, sp_ccm_cipher_, NULL, NULL, NULL) != 1) return -1;
            if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_IVLEN, 13, NULL) != 1) return -1;
            if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, 8, NULL) != 1) return -1;
            x->enc_ready = 1;
        }
        if (EVP_EncryptInit_ex(c, NULL, NULL, key, nonce) != 1) return -1;
        if (EVP_EncryptUpdate(c, NULL, &ol, NULL, ptlen) != 1) return -1;
        if (aadlen && EVP_EncryptUpdate(c, NULL, &ol, aad, aadlen) != 1) return -1;
        if (EVP_EncryptUpdate(c, out, &ol, pt, ptlen) != 1) return -1;
        if (EVP_EncryptFinal_ex(c, out + ol, &ol) != 1) return -1;
        if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 8, out + ptlen) != 1) return -1;
        return 0;
    }
    /* out[0:ptlen + 8] = ciphertext || tag; 0 on success, -1 on failure */
    static int sp_ccm_seal(sp_ccm_ctx *x, const unsigned char *key, const unsigned char *nonce,
                           const unsigned char *aad, int aadlen, const unsigned char *pt,
                           int ptlen, unsigned char *out) {
        int r = sp_ccm_seal_(x, key, nonce, aad, aadlen, pt, ptlen, out);
        if (r != 0) x->enc_ready = 0;
        return r;
    }
    static int sp_ccm_open_(sp_ccm_ctx *x, const unsigned char *key, const unsigned char *nonce,
                            const unsigned char *aad, int aadlen, const unsigned char *data,
                            int n, unsigned char *out) {
        EVP_CIPHER_CTX *c = x->dec;
        int ol = 0, ptlen = n - 8;
        if (!x->dec_ready) {
            if (EVP_DecryptInit_ex(c, sp_ccm_cipher_, NULL, NULL, NULL) != 1) return -1;
            if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_IVLEN, 13, NULL) != 1) return -1;
            x->dec_ready = 1;
        }
        if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, 8, (void *)(data + ptlen)) != 1)
            return -1;
        if (EVP_DecryptInit_ex(c, NULL, NULL, key, nonce) != 1) return -1;
        if (EVP_DecryptUpdate(c, NULL, &ol, NULL, ptlen) != 1) return -1;
        if (aadlen && EVP_DecryptUpdate(c, NULL, &ol, aad, aadlen) != 1) return -1;
        if (EVP_DecryptUpdate(c, out, &ol, data, ptlen) <= 0) return -1;
        return ptlen;
    }
    /* data = ciphertext || tag (n >= 8): n - 8 plaintext bytes into out, or -1 when the tag
       does not verify (out is then garbage) */
    static int sp_ccm_open(sp_ccm_ctx *x, const unsigned char *key, const unsigned char *nonce,
                           const unsigned char *aad, int aadlen, const unsigned char *data,
                           int n, unsigned char *out) {
        int r;
        if (n < 8) return -1;
        r = sp_ccm_open_(x, key, nonce, aad, aadlen, data, n, out);
        if (r < 0) x->dec_ready = 0;
        return r;
    }
    #else
    typedef void sp_ccm_ctx;
    static const void *sp_ccm_cipher(void) { return NULL; }
    static sp_ccm_ctx *sp_ccm_new(void) { return NULL; }
    static void sp_ccm_free(sp_ccm_ctx *x) { (void)x; }
    static int sp_ccm_seal(sp_ccm_ctx *x, const unsigned char *k, const unsigned char *nc,
                           const unsigned char *a, int al, const unsigned char *p, int pl,
                           unsigned char *o)
    { (void)x; (void)k; (void)nc; (void)a; (void)al; (void)p; (void)pl; (void)o; return -1; }
    static int sp_ccm_open(sp_ccm_ctx *x, const unsigned char *k, const unsigned char *nc,
                           const unsigned char *a, int al, const unsigned char *d, int n,
                           unsigned char *o)
    { (void)x; (void)k; (void)nc; (void)a; (void)al; (void)d; (void)n; (void)o; return -1; }
    #endif
    """
    int SP_HAVE_CCM
    ctypedef struct sp_ccm_ctx:
        pass
    const void *sp_ccm_cipher()
    sp_ccm_ctx *sp_ccm_new()
    void sp_ccm_free(sp_ccm_ctx *x)
    int sp_ccm_seal(sp_ccm_ctx *x, const unsigned char *key, const unsigned char *nonce,
                    const unsigned char *aad, int aadlen, const unsigned char *pt, int ptlen,
                    unsigned char *out) nogil
    int sp_ccm_open(sp_ccm_ctx *x, const unsigned char *key, const unsigned char *nonce,
                    const unsigned char *aad, int aadlen, const unsigned char *data, int n,
                    unsigned char *out) nogil

DEF KEY_LEN = 16
DEF NONCE_LEN = 13
DEF TAG_LEN = 8
DEF MAX_ID = 7          # NONCE_LEN - 6 (RFC 8613 §5.2)
DEF MAX_PIV = 5
DEF AAD_MAX = 64


cdef struct opt_t:
    int piv_off
    int piv_len     # 0: none
    int kid_off
    int kid_len     # -1: none
    int has_ctx     # a kid context


cdef int parse_option(const unsigned char *v, int n, opt_t *o) noexcept nogil:
    """1 when v[0:n] is a well-formed OSCORE option value (protocol.oscore.decode_option
    accepts it), 0 otherwise."""
    cdef int flags, pos, s
    o.piv_len = 0
    o.kid_len = -1
    o.has_ctx = 0
    o.piv_off = 1
    if n == 0:
        return 1
    flags = v[0]
    if flags & 0xE0 or (flags & 7) > 5:
        return 0
    o.piv_len = flags & 7
    pos = 1 + o.piv_len
    if pos > n:
        return 0
    if flags & 0x10:
        if pos >= n:
            return 0
        s = v[pos]
        pos += 1
        if pos + s > n:
            return 0
        o.has_ctx = 1
        pos += s
    if flags & 0x08:
        o.kid_off = pos
        o.kid_len = n - pos
    elif pos != n:
        return 0
    if o.piv_len == 0 and not (flags & 0x18):
        return 0
    return 1


cdef int make_aad(unsigned char *out, const unsigned char *kid, int kl,
                  const unsigned char *piv, int pl) noexcept nogil:
    """protocol.oscore.aad(kid, piv) for kid <= 7 and piv <= 5 bytes; its length (<= 31)."""
    cdef int elen = 4 + 1 + kl + 1 + pl + 1
    memcpy(out, b"\x83\x68Encrypt0\x40", 11)
    out[11] = 0x40 | elen
    out[12] = 0x85
    out[13] = 0x01
    out[14] = 0x81
    out[15] = 10
    out[16] = 0x40 | kl
    memcpy(out + 17, kid, kl)
    out[17 + kl] = 0x40 | pl
    memcpy(out + 18 + kl, piv, pl)
    out[18 + kl + pl] = 0x40
    return 19 + kl + pl


cdef void make_nonce(unsigned char *out, const unsigned char *iv, const unsigned char *id_,
                     int il, const unsigned char *piv, int pl) noexcept nogil:
    """protocol.oscore.Context.nonce(id_, piv), from the context's common IV."""
    cdef int i
    memset(out, 0, NONCE_LEN)
    out[0] = il
    memcpy(out + 1 + MAX_ID - il, id_, il)
    memcpy(out + NONCE_LEN - pl, piv, pl)
    for i in range(NONCE_LEN):
        out[i] ^= iv[i]


cdef inline int64_t piv_value(const unsigned char *piv, int pl) noexcept nogil:
    cdef int64_t v = 0
    cdef int i
    for i in range(pl):
        v = (v << 8) | piv[i]
    return v
