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
from libc.string cimport memcpy

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

DEF MAXW = 64
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

cdef struct peer_t:
    int fd
    double next_send
    unsigned int seq
    double factor
    int tlen
    int bt_off
    unsigned char tmpl[MAXMSG]
    slot_t slots[MAXW]


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


cdef int send_msg(peer_t *p, slot_t *s) noexcept nogil:
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
    return <int>send(p.fd, m, p.tlen, MSG_DONTWAIT)


def run(list fds, list templates, list bt_offs, double bt0, double step=0.001,
        double peer_rate=200.0, int window=1, double duration=3.0, long max_messages=10**9,
        double drain=3.0, double ack_timeout=2.0, int max_retransmit=4, double max_peer_rate=250.0,
        int mid_base=0, bint realtime=False):
    """Drive the peers (connected non-blocking UDP sockets `fds`, one message template each:
    CON header with a 4-byte token, bt float64 at `bt_offs[i]`, -1 for none). A message's bt
    is bt0 + seq * step, plus with `realtime` the seconds since the run started (readings
    stamped as a live node stamps them: bt0 = the wall clock at the start). Returns a dict
    of counts and latency percentiles."""
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
    cdef long codes[256]
    cdef long hist[HBUCKETS]
    cdef unsigned int tok
    cdef bint sending, outstanding
    cdef double lg = log(1.05)
    if n < 1 or len(templates) != n or len(bt_offs) != n:
        raise ValueError("need one template and one bt offset per socket")
    if window < 1 or window > MAXW:
        raise ValueError("window must be 1..%d" % MAXW)
    if peer_rate <= 0 or peer_rate > max_peer_rate:
        raise ValueError("peer_rate %.1f/s exceeds the per-peer cap of %.1f/s; add peers"
                         % (peer_rate, max_peer_rate))
    if duration <= 0 or drain < 0:
        raise ValueError("duration must be > 0 and drain >= 0")
    for i in range(256):
        codes[i] = 0
    for i in range(HBUCKETS):
        hist[i] = 0
    peers = <peer_t *>calloc(n, sizeof(peer_t))
    if peers == NULL:
        raise MemoryError()
    ep = epoll_create1(0)
    if ep < 0:
        free(peers)
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
                            if send_msg(p, s) < 0:
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
                            new_msgs += 1
                            outstanding = True
                            if send_msg(p, s) < 0:
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
        free(peers)
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
        "codes": {"%d.%02d" % (c >> 5, c & 31): codes[c] for c in range(256) if codes[c]},
        "p50": q50, "p99": q99,
    }
