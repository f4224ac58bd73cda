# No reference twin: a test tool's C loop; tools/coapload.py builds its messages with protocol/ and checks them with protocol.coap.parse.
# cython: language_level=3
"""CoAP load generator core: many peers sending CON POST /r with retransmission (C loop, epoll).

The part of tools/coapload.py that has to keep up with a hub at full load. It
mirrors no reference module: it is a client for tests and benchmarks, not a
part of the hub, and the driver in tools/coapload.py builds the messages with
protocol/ helpers and checks them against protocol.coap.parse.

Every peer is its own connected UDP socket (its own source port, i.e. its
own CoAP endpoint). A peer sends at most `peer_rate` messages per second
and keeps at most `window` exchanges outstanding (RFC 7252 NSTART; 1 by
default). Each message is the peer's template with the message ID, the
token and the pack's base time (8 bytes at `bt_off`) patched in, so every
report carries new readings. Retransmission follows RFC 7252 §4.2:
`ack_timeout` (x a fixed factor per peer in [1, 1.5)), doubled each time,
`max_retransmit` times, then the exchange counts as timed out. An empty ACK
stops retransmission (separate response follows; its CON is acknowledged).

OSCORE (RFC 8613), when `keys` are given (one security context per peer,
from the node's side): each message is protected in C as a node protects it
(fast/oscore_wire.pxi: the template's code, options and payload encrypted
under the peer's sender key with its sequence number `seq_base + n` as
Partial IV; outer CON POST with the OSCORE option), a retransmission is the
same bytes, and a response counts by its inner code only when it verifies
(AES-CCM under the peer's recipient key, bound to the request); an
unprotected or failing response is counted apart (`unprotected`,
`unverified`). A verified 4.01 with an Echo option (the hub lost its replay
windows) makes the peer's next requests carry that Echo until one is acked.

Responses are counted by code; latency (first transmission to response) goes
into a log histogram (5% buckets) for p50/p99. Bounded: stops after
`duration` seconds or `max_messages` new messages, then waits at most
`drain` seconds for outstanding answers.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, errno
from libc.math cimport floor, log, pow
from libc.stdint cimport uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

cdef extern from "<time.h>":
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts) nogil
    int CLOCK_MONOTONIC

cdef extern from "<sys/socket.h>":
    ssize_t send(int fd, const void *buf, size_t n, int flags) nogil
    ssize_t recv(int fd, void *buf, size_t n, int flags) nogil
    int MSG_DONTWAIT

cdef extern from *:
    """
    #if defined(__linux__)
    #include <sys/epoll.h>
    #define SP_HAVE_EPOLL 1
    #else
    /* not Linux: builds, and run() refuses (tools/coapload.py needs Linux) */
    typedef union epoll_data { void *ptr; int fd; unsigned int u32; unsigned long long u64; }
        epoll_data_t;
    struct epoll_event { unsigned int events; epoll_data_t data; };
    #define EPOLL_CTL_ADD 1
    #define EPOLLIN 1
    static int epoll_create1(int f) { (void)f; return -1; }
    static int epoll_ctl(int a, int b, int c, struct epoll_event *e)
    { (void)a; (void)b; (void)c; (void)e; return -1; }
    static int epoll_wait(int a, struct epoll_event *e, int m, int t)
    { (void)a; (void)e; (void)m; (void)t; return -1; }
    #define SP_HAVE_EPOLL 0
    #endif
    """
    int SP_HAVE_EPOLL

cdef extern from *:
    union epoll_data_t:
        void *ptr
        int fd
        unsigned int u32
        unsigned long long u64
    struct epoll_event:
        unsigned int events
        epoll_data_t data
    int epoll_create1(int flags) nogil
    int epoll_ctl(int epfd, int op, int fd, epoll_event *ev) nogil
    int epoll_wait(int epfd, epoll_event *evs, int maxevents, int timeout) nogil
    int EPOLL_CTL_ADD
    int EPOLLIN

cdef extern from "<unistd.h>":
    int close(int fd) nogil

include "oscore_wire.pxi"  # AES-CCM through EVP, the option, the AAD, the nonce

DEF MAXW = 64
DEF MAX_ECHO = 40
DEF O_OSCORE = 9
DEF O_ECHO = 252
DEF HBUCKETS = 512
DEF MAXMSG = 1400

cdef struct slot_t:
    int used        # 0 free, 1 waiting, 2 empty-ACKed (separate response pending)
    unsigned int seq
    int mid
    unsigned int token
    double first
    double bt       # the pack's base time (kept: a retransmission is the same message)
    double deadline
    double timeout
    int retries
    int with_echo   # OSCORE: this request carries the peer's Echo value

cdef struct peer_t:
    int fd
    double next_send
    unsigned int seq
    double factor
    int tlen
    int bt_off
    unsigned char tmpl[MAXMSG]
    slot_t slots[MAXW]
    int osc             # OSCORE: the fields below are set
    int marker          # offset of the template's payload marker
    unsigned char skey[KEY_LEN]
    unsigned char rkey[KEY_LEN]
    unsigned char iv[NONCE_LEN]
    unsigned char kid[MAX_ID]
    int kid_len
    unsigned char rid[MAX_ID]   # the hub's Sender ID (own-PIV responses)
    int rid_len
    unsigned char echo[MAX_ECHO]
    int echo_len
    unsigned char out[MAXMSG + 128]


cdef struct osc_t:      # the run's OSCORE state
    sp_ccm_ctx *x
    long long seq_base
    long unverified
    long unprotected
    long echoes


cdef inline double now_s() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline void put_be64(unsigned char *p, double v) noexcept nogil:
    cdef uint64_t u
    memcpy(&u, &v, 8)
    cdef int i
    for i in range(8):
        p[i] = (u >> (56 - 8 * i)) & 0xFF


cdef int piv_of(long long seq, unsigned char *piv) noexcept nogil:
    """protocol.oscore.piv_bytes: big-endian, shortest form, 0 -> one zero byte."""
    cdef int n = 1, i
    while n < MAX_PIV and (seq >> (8 * n)):
        n += 1
    for i in range(n):
        piv[i] = (seq >> (8 * (n - 1 - i))) & 0xFF
    return n


cdef int send_msg(peer_t *p, slot_t *s, osc_t *o) noexcept nogil:
    """(Re)build the message of slot s from the template and send it."""
    cdef unsigned char *m = p.tmpl
    m[2] = (s.mid >> 8) & 0xFF
    m[3] = s.mid & 0xFF
    m[4] = (s.token >> 24) & 0xFF
    m[5] = (s.token >> 16) & 0xFF
    m[6] = (s.token >> 8) & 0xFF
    m[7] = s.token & 0xFF
    if p.bt_off > 0:
        put_be64(m + p.bt_off, s.bt)
    if not p.osc:
        return <int>send(p.fd, m, p.tlen, MSG_DONTWAIT)
    return send_protected(p, s, o)


cdef int send_protected(peer_t *p, slot_t *s, osc_t *o) noexcept nogil:
    """The template as a node protects it: inner = code, options (+ Echo), payload; outer =
    the header and token, the OSCORE option (Partial IV, kid), the ciphertext."""
    cdef unsigned char pt[MAXMSG + 64]
    cdef unsigned char piv[MAX_PIV]
    cdef unsigned char nonce[NONCE_LEN]
    cdef unsigned char a[AAD_MAX]
    cdef unsigned char *m = p.tmpl
    cdef unsigned char *w = p.out
    cdef int pl, n, ol, al, pos
    pl = piv_of(o.seq_base + s.seq, piv)
    pt[0] = m[1]
    n = p.marker - 8
    memcpy(pt + 1, m + 8, n)          # the options (Uri-Path, Content-Format)
    n += 1
    if s.with_echo:                   # Echo (252) after Content-Format (12): delta 240
        if p.echo_len < 13:
            pt[n] = (13 << 4) | p.echo_len
            pt[n + 1] = 240 - 13
            n += 2
        else:
            pt[n] = (13 << 4) | 13
            pt[n + 1] = 240 - 13
            pt[n + 2] = p.echo_len - 13
            n += 3
        memcpy(pt + n, p.echo, p.echo_len)
        n += p.echo_len
    memcpy(pt + n, m + p.marker, p.tlen - p.marker)   # 0xFF and the payload
    n += p.tlen - p.marker
    memcpy(w, m, 8)                   # CON POST, MID, 4-byte token
    ol = 1 + pl + p.kid_len
    pos = 8
    if ol < 13:
        w[pos] = (O_OSCORE << 4) | ol
        pos += 1
    else:
        w[pos] = (O_OSCORE << 4) | 13
        w[pos + 1] = ol - 13
        pos += 2
    w[pos] = pl | 0x08
    memcpy(w + pos + 1, piv, pl)
    memcpy(w + pos + 1 + pl, p.kid, p.kid_len)
    pos += ol
    w[pos] = 0xFF
    pos += 1
    al = make_aad(a, p.kid, p.kid_len, piv, pl)
    make_nonce(nonce, p.iv, p.kid, p.kid_len, piv, pl)
    if sp_ccm_seal(o.x, p.skey, nonce, a, al, pt, n, w + pos) != 0:
        return -1
    return <int>send(p.fd, w, pos + n + TAG_LEN, MSG_DONTWAIT)


cdef int open_response(peer_t *p, slot_t *s, osc_t *o, unsigned char *r, int ln,
                       int tkl) noexcept nogil:
    """The inner code of the protected response r[0:ln] to slot s, or -1 when it is not
    protected, -2 when it does not verify. A 4.01 with Echo stores the value in the peer."""
    cdef unsigned char pt[2048]
    cdef unsigned char piv[MAX_PIV]
    cdef unsigned char nonce[NONCE_LEN]
    cdef unsigned char a[AAD_MAX]
    cdef int pos = 4 + tkl, delta, length, num = 0, opt_off = -1, opt_len = 0, pl, al, k
    cdef opt_t op
    while pos < ln and r[pos] != 0xFF:
        delta = r[pos] >> 4
        length = r[pos] & 0x0F
        pos += 1
        if delta == 13:
            if pos >= ln:
                return -1
            delta = r[pos] + 13
            pos += 1
        elif delta == 14:
            if pos + 1 >= ln:
                return -1
            delta = ((r[pos] << 8) | r[pos + 1]) + 269
            pos += 2
        elif delta == 15:
            return -1
        if length == 13:
            if pos >= ln:
                return -1
            length = r[pos] + 13
            pos += 1
        elif length == 14:
            if pos + 1 >= ln:
                return -1
            length = ((r[pos] << 8) | r[pos + 1]) + 269
            pos += 2
        elif length == 15:
            return -1
        if pos + length > ln:
            return -1
        num += delta
        if num == O_OSCORE and opt_off < 0:
            opt_off = pos
            opt_len = length
        pos += length
    if opt_off < 0 or pos >= ln:
        return -1
    pos += 1  # the payload marker
    if ln - pos - TAG_LEN > <int>sizeof(pt) or not parse_option(r + opt_off, opt_len, &op):
        return -2
    pl = piv_of(o.seq_base + s.seq, piv)
    if op.piv_len:
        make_nonce(nonce, p.iv, p.rid, p.rid_len, r + opt_off + op.piv_off, op.piv_len)
    else:
        make_nonce(nonce, p.iv, p.kid, p.kid_len, piv, pl)
    al = make_aad(a, p.kid, p.kid_len, piv, pl)
    k = sp_ccm_open(o.x, p.rkey, nonce, a, al, r + pos, ln - pos, pt)
    if k < 1:
        return -2
    if pt[0] == 0x81:
        inner_echo(p, pt, k)
    return pt[0]


cdef void inner_echo(peer_t *p, unsigned char *pt, int n) noexcept nogil:
    """Keep the Echo value of a verified inner 4.01 for the peer's next requests."""
    cdef int pos = 1, delta, length, num = 0
    while pos < n and pt[pos] != 0xFF:
        delta = pt[pos] >> 4
        length = pt[pos] & 0x0F
        pos += 1
        if delta == 13:
            if pos >= n:
                return
            delta = pt[pos] + 13
            pos += 1
        elif delta == 14:
            if pos + 1 >= n:
                return
            delta = ((pt[pos] << 8) | pt[pos + 1]) + 269
            pos += 2
        elif delta == 15:
            return
        if length == 13:
            if pos >= n:
                return
            length = pt[pos] + 13
            pos += 1
        elif length >= 14:
            return
        if pos + length > n:
            return
        num += delta
        if num == O_ECHO and 0 < length <= MAX_ECHO:
            memcpy(p.echo, pt + pos, length)
            p.echo_len = length
            return
        pos += length


def run(list fds, list templates, list bt_offs, double bt0, double step=0.001,
        double peer_rate=200.0, int window=1, double duration=3.0, long max_messages=10**9,
        double drain=3.0, double ack_timeout=2.0, int max_retransmit=4, double max_peer_rate=250.0,
        int mid_base=0, bint realtime=False, list keys=None, long long seq_base=0):
    """Drive the peers (connected non-blocking UDP sockets `fds`, one message template each:
    CON header with a 4-byte token, bt float64 at `bt_offs[i]`, -1 for none). A message's bt
    is bt0 + seq * step, plus with `realtime` the seconds since the run started (readings
    stamped as a live node stamps them: bt0 = the wall clock at the start). `keys`: None
    (plain CoAP) or per peer (sender_key, recipient_key, common_iv, sender_id,
    recipient_id) of its OSCORE context from the node's side; message n of a peer then has
    sequence number seq_base + n, and the result's `seq_next` is where a later run of the
    same peers must start. Returns a dict of counts and latency percentiles."""
    cdef int n = len(fds), i, j, k, k2, ep, nev, tl, tkl, code, mid, ln
    cdef peer_t *peers
    cdef peer_t *p
    cdef slot_t *s
    cdef epoll_event ev
    cdef epoll_event evs[256]
    cdef unsigned char rbuf[2048]
    cdef unsigned char ack[4]
    cdef double t, start, end, stop_at = 0, interval, lat, drain_until
    cdef long new_msgs = 0, retrans = 0, timeouts = 0, sent_err = 0, responses = 0, resets = 0
    cdef long unmatched = 0, empty_acks = 0, window_full = 0
    cdef long codes[512]
    cdef long hist[HBUCKETS]
    cdef unsigned int tok
    cdef bint sending, outstanding
    cdef double lg = log(1.05)
    cdef osc_t osc
    cdef unsigned int max_seq = 0
    if n < 1 or len(templates) != n or len(bt_offs) != n:
        raise ValueError("need one template and one bt offset per socket")
    if keys is not None and len(keys) != n:
        raise ValueError("need one OSCORE context per socket")
    if keys is not None and not SP_HAVE_CCM:
        raise RuntimeError("this build of smartpark.fast.loadgen has no OpenSSL: no OSCORE")
    if seq_base < 0 or seq_base > 0xFFFFFFFFFF - 0x7FFFFFFF:
        raise ValueError("seq_base out of range")
    memset(&osc, 0, sizeof(osc))
    osc.seq_base = seq_base
    if keys is not None:
        if sp_ccm_cipher() == NULL:
            raise RuntimeError("OpenSSL has no AES-128-CCM")
        osc.x = sp_ccm_new()
        if osc.x == NULL:
            raise MemoryError()
    if window < 1 or window > MAXW:
        raise ValueError("window must be 1..%d" % MAXW)
    if peer_rate <= 0 or peer_rate > max_peer_rate:
        raise ValueError("peer_rate %.1f/s exceeds the per-peer cap of %.1f/s; add peers"
                         % (peer_rate, max_peer_rate))
    if duration <= 0 or drain < 0:
        raise ValueError("duration must be > 0 and drain >= 0")
    for i in range(512):
        codes[i] = 0
    for i in range(HBUCKETS):
        hist[i] = 0
    peers = <peer_t *>calloc(n, sizeof(peer_t))
    if peers == NULL:
        sp_ccm_free(osc.x)
        raise MemoryError()
    ep = epoll_create1(0)
    if ep < 0:
        free(peers)
        sp_ccm_free(osc.x)
        raise OSError(errno, "epoll_create1")
    interval = 1.0 / peer_rate
    start = now_s()
    try:
        for i in range(n):
            tb = templates[i]
            if type(tb) is not bytes:
                raise TypeError("template %d: bytes expected, not %s" % (i, type(tb).__name__))
            tl = PyBytes_GET_SIZE(tb)
            if tl > MAXMSG or tl < 8:
                raise ValueError("template %d: %d bytes (8..%d)" % (i, tl, MAXMSG))
            p = &peers[i]
            p.fd = fds[i]
            p.tlen = tl
            p.bt_off = bt_offs[i]
            if p.bt_off > 0 and (p.bt_off < 8 or p.bt_off > tl - 8):
                # the float64 is written in place: it must lie after the 8-byte header+token
                raise ValueError("template %d: bt offset %d outside 8..%d"
                                 % (i, p.bt_off, tl - 8))
            memcpy(p.tmpl, PyBytes_AS_STRING(tb), tl)
            if keys is not None:
                _oscore_peer(p, keys[i], i)
            p.seq = 0
            p.factor = 1.0 + 0.5 * ((i * 7919) % 1000) / 1000.0
            p.next_send = start + interval * i / n  # spread the phases
            ev.events = EPOLLIN
            ev.data.u64 = i
            if epoll_ctl(ep, EPOLL_CTL_ADD, p.fd, &ev) < 0:
                raise OSError(errno, "epoll_ctl")
        with nogil:
            end = start + duration
            drain_until = end + drain
            sending = True
            while True:
                t = now_s()
                if sending and (t >= end or new_msgs >= max_messages):
                    sending = False
                    stop_at = t
                    drain_until = t + drain
                outstanding = False
                for i in range(n):
                    p = &peers[i]
                    for j in range(window):
                        s = &p.slots[j]
                        if s.used == 1 and t >= s.deadline:
                            if s.retries >= max_retransmit:
                                s.used = 0
                                timeouts += 1
                                continue
                            s.retries += 1
                            s.timeout *= 2
                            s.deadline = t + s.timeout
                            retrans += 1
                            if send_msg(p, s, &osc) < 0:
                                sent_err += 1
                        if s.used:
                            outstanding = True
                    if sending and t >= p.next_send:
                        k = -1
                        for j in range(window):
                            if p.slots[j].used == 0:
                                k = j
                                break
                        if k < 0:
                            window_full += 1
                        else:
                            s = &p.slots[k]
                            s.used = 1
                            s.seq = p.seq
                            p.seq += 1
                            s.mid = (mid_base + i * 997 + s.seq) & 0xFFFF
                            s.token = (<unsigned int>i << 20) ^ s.seq
                            s.first = t
                            s.bt = bt0 + s.seq * step + ((t - start) if realtime else 0.0)
                            s.timeout = ack_timeout * p.factor
                            s.deadline = t + s.timeout
                            s.retries = 0
                            s.with_echo = p.echo_len > 0
                            new_msgs += 1
                            outstanding = True
                            if send_msg(p, s, &osc) < 0:
                                sent_err += 1
                        p.next_send += interval
                        if p.next_send < t - 0.05:
                            p.next_send = t  # do not burst to catch up after a stall
                if not sending and (not outstanding or t >= drain_until):
                    break
                nev = epoll_wait(ep, evs, 256, 1 if sending else 5)
                t = now_s()
                for k in range(nev):
                    i = <int>evs[k].data.u64
                    p = &peers[i]
                    while True:
                        ln = <int>recv(p.fd, rbuf, sizeof(rbuf), MSG_DONTWAIT)
                        if ln < 0:
                            break
                        if ln < 4 or (rbuf[0] >> 6) != 1:
                            unmatched += 1
                            continue
                        tl = (rbuf[0] >> 4) & 3
                        tkl = rbuf[0] & 0x0F
                        code = rbuf[1]
                        mid = (rbuf[2] << 8) | rbuf[3]
                        if tl == 3:
                            resets += 1
                            for j in range(window):
                                s = &p.slots[j]
                                if s.used and s.mid == mid:
                                    s.used = 0
                            continue
                        if tl == 0 and code != 0:
                            # separate response (CON): acknowledge it
                            ack[0] = 0x60
                            ack[1] = 0
                            ack[2] = rbuf[2]
                            ack[3] = rbuf[3]
                            send(p.fd, ack, 4, MSG_DONTWAIT)
                        tok = 0
                        if tkl == 4 and ln >= 8:
                            tok = ((<unsigned int>rbuf[4] << 24) | (rbuf[5] << 16)
                                   | (rbuf[6] << 8) | rbuf[7])
                        j = -1
                        for k2 in range(window):
                            s = &p.slots[k2]
                            if not s.used:
                                continue
                            if tl == 2 and s.mid == mid:
                                j = k2
                                break
                            if tl != 2 and code != 0 and tkl == 4 and s.token == tok:
                                j = k2
                                break
                        if j < 0:
                            unmatched += 1
                            continue
                        s = &p.slots[j]
                        if code == 0:
                            if tl == 2:
                                s.used = 2  # empty ACK: stop retransmitting, wait for it
                                empty_acks += 1
                            continue
                        if tkl != 4 or tok != s.token:
                            unmatched += 1
                            continue
                        if p.osc:
                            code = open_response(p, s, &osc, rbuf, ln, tkl)
                            if code == -1:
                                osc.unprotected += 1
                                code = rbuf[1] | 0x100  # counted apart: "unprotected x.xx"
                            elif code == -2:
                                osc.unverified += 1
                                s.used = 0
                                continue
                            elif code == 0x81 and p.echo_len and not s.with_echo:
                                osc.echoes += 1
                            elif (code >> 5) == 2 and s.with_echo:
                                p.echo_len = 0  # the window is back: no more Echo
                        responses += 1
                        codes[code] += 1
                        lat = t - s.first
                        if lat < 1e-6:
                            lat = 1e-6
                        j = <int>floor(log(lat / 1e-6) / lg)
                        if j >= HBUCKETS:
                            j = HBUCKETS - 1
                        hist[j] += 1
                        s.used = 0
    finally:
        close(ep)
        for i in range(n):
            if peers[i].seq > max_seq:
                max_seq = peers[i].seq
        free(peers)
        sp_ccm_free(osc.x)
    sent_seconds = stop_at - start
    cdef long total = 0, acc = 0
    for i in range(HBUCKETS):
        total += hist[i]
    q50 = q99 = None
    for i in range(HBUCKETS):
        acc += hist[i]
        if q50 is None and total and acc >= 0.50 * total:
            q50 = 1e-6 * pow(1.05, i + 1)
        if q99 is None and total and acc >= 0.99 * total:
            q99 = 1e-6 * pow(1.05, i + 1)

    return {
        "peers": n, "window": window, "peer_rate": peer_rate, "seconds": sent_seconds,
        "sent": new_msgs, "retransmissions": retrans, "timeouts": timeouts,
        "send_errors": sent_err, "responses": responses, "resets": resets,
        "unmatched": unmatched, "empty_acks": empty_acks, "window_full": window_full,
        "codes": {("unprotected " if c & 0x100 else "") + "%d.%02d" % ((c & 0xFF) >> 5, c & 31):
                  codes[c] for c in range(512) if codes[c]},
        "p50": q50, "p99": q99,
        "oscore": keys is not None, "seq_next": seq_base + max_seq,
        "unverified": osc.unverified, "unprotected": osc.unprotected, "echoes": osc.echoes,
    }


cdef int _oscore_peer(peer_t *p, object key, int i) except -1:
    """Load one peer's OSCORE context (the node's side) and find its template's marker."""
    cdef bytes skey, rkey, iv, sid, rid
    cdef int pos = 8, delta, length
    skey, rkey, iv, sid, rid = [bytes(k) for k in key]
    if (len(skey) != KEY_LEN or len(rkey) != KEY_LEN or len(iv) != NONCE_LEN
            or len(sid) > MAX_ID or len(rid) > MAX_ID):
        raise ValueError("peer %d: OSCORE context needs 16-byte keys, a 13-byte IV and IDs of "
                         "at most 7 bytes" % i)
    if (p.tmpl[0] & 0x0F) != 4:
        raise ValueError("template %d: a 4-byte token is expected" % i)
    while pos < p.tlen and p.tmpl[pos] != 0xFF:  # options of a report: short headers only
        delta = p.tmpl[pos] >> 4
        length = p.tmpl[pos] & 0x0F
        if delta >= 13 or length >= 13:
            raise ValueError("template %d: only short option headers are expected" % i)
        pos += 1 + length
    if pos >= p.tlen - 1:
        raise ValueError("template %d: no payload" % i)
    if p.bt_off > 0 and p.bt_off <= pos:
        raise ValueError("template %d: bt must lie in the payload" % i)
    p.osc = 1
    p.marker = pos
    memcpy(p.skey, PyBytes_AS_STRING(skey), KEY_LEN)
    memcpy(p.rkey, PyBytes_AS_STRING(rkey), KEY_LEN)
    memcpy(p.iv, PyBytes_AS_STRING(iv), NONCE_LEN)
    p.kid_len = len(sid)
    memcpy(p.kid, PyBytes_AS_STRING(sid), p.kid_len)
    p.rid_len = len(rid)
    memcpy(p.rid, PyBytes_AS_STRING(rid), p.rid_len)
    return 0
