# Mirrors protocol/coap.py (parsing a CON POST /r, building its piggybacked ACK); compiled only: without it aiocoap serves POST /r.
# cython: language_level=3
"""Batched UDP/CoAP front for POST /r: the few options a report carries, parsed and answered in C.

The syscall and byte layer of the hub's fast ingest path; hub/fastpath.py is
the asyncio glue. Linux only (recvmmsg/sendmmsg). There is no pure twin: when
this module is not built (or SMARTPARK_PUREPYTHON=1), the hub serves POST /r
through aiocoap, which is the reference behaviour (hub/coap/resources.py).

- `Endpoint(fd)` reads up to `nmsg` datagrams per `recv()` call with
  recvmmsg(2) (MSG_DONTWAIT), keeping each sender address and IPV6_PKTINFO.
- `classify()` sorts them: a confirmable `POST /r` whose only options are
  Uri-Path "r" and Content-Format (Uri-Host and Uri-Port ignored), with a payload, is a *report*; every other
  datagram (ACK/RST/NON, other paths or options, malformed bytes, multicast
  destinations, truncated reads) is handed back unchanged for aiocoap.
- Duplicate detection (RFC 7252 §4.5, relaxed for the idempotent POST /r):
  each peer (sender address) keeps a ring of its last `ring` exchanges:
  message ID, a 64-bit FNV-1a hash of the whole request datagram, the time it
  arrived and the response once sent. A datagram with the same MID *and* the
  same hash within `lifetime` seconds is a retransmission: while its report is
  in flight it is dropped (the response will follow), afterwards the cached
  response bytes are sent again, identical. Anything else is a new report --
  re-ingesting a report whose cache entry was evicted is harmless because
  readings are unique by (node, sensor, time). The peer table holds at most
  `max_peers` peers (oldest evicted first), so memory is bounded.
- Responses (piggybacked ACK, same MID and token) are built here and sent in
  batches with sendmmsg(2), echoing the request's IPV6_PKTINFO so the reply
  leaves from the address the request was sent to.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy, memset

cdef extern from *:
    """
    /* recvmmsg/sendmmsg are Linux (glibc/musl) only: elsewhere this module still builds,
       every call fails with ENOSYS and AVAILABLE is False (hub/fastpath.py logs and stays
       off). */
    #include <sys/socket.h>
    #include <errno.h>
    #if !defined(__linux__)
    struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; };
    static int recvmmsg(int fd, struct mmsghdr *v, unsigned int n, int f, void *t)
    { (void)fd; (void)v; (void)n; (void)f; (void)t; errno = ENOSYS; return -1; }
    static int sendmmsg(int fd, struct mmsghdr *v, unsigned int n, int f)
    { (void)fd; (void)v; (void)n; (void)f; errno = ENOSYS; return -1; }
    #define SP_HAVE_MMSG 0
    #else
    #define SP_HAVE_MMSG 1
    #endif
    """
    int SP_HAVE_MMSG

cdef extern from "<sys/types.h>":
    ctypedef unsigned int socklen_t

cdef extern from "<sys/uio.h>":
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>":
    struct sockaddr:
        unsigned short sa_family
    struct sockaddr_storage:
        unsigned short ss_family
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr *CMSG_FIRSTHDR(msghdr *m)
    cmsghdr *CMSG_NXTHDR(msghdr *m, cmsghdr *c)
    unsigned char *CMSG_DATA(cmsghdr *c)
    size_t CMSG_SPACE(size_t n)
    size_t CMSG_LEN(size_t n)
    int recvmmsg(int fd, mmsghdr *v, unsigned int n, int flags, void *timeout) nogil
    int sendmmsg(int fd, mmsghdr *v, unsigned int n, int flags) nogil
    int MSG_DONTWAIT
    int MSG_TRUNC
    int MSG_CTRUNC
    int AF_INET
    int AF_INET6

cdef extern from "<netinet/in.h>":
    int IPPROTO_IPV6
    int IPV6_PKTINFO
    struct in6_addr:
        unsigned char s6_addr[16]
    struct in6_pktinfo:
        in6_addr ipi6_addr
        unsigned int ipi6_ifindex
    struct sockaddr_in6:
        unsigned short sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    struct in_addr:
        uint32_t s_addr
    struct sockaddr_in:
        unsigned short sin_family
        uint16_t sin_port
        in_addr sin_addr
    uint16_t ntohs(uint16_t)
    uint32_t ntohl(uint32_t)

cdef extern from "<netdb.h>":
    int getnameinfo(const sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
                    char *serv, socklen_t servlen, int flags)
    int NI_NUMERICHOST
    int NI_NUMERICSERV

DEF MAX_RING = 8
DEF CTRL_SIZE = 64
DEF NAME_SIZE = 128

# CoAP numbers (protocol/coap.py is the reference)
cdef enum:
    T_CON = 0
    T_ACK = 2
    C_POST = 2
    O_URI_HOST = 3
    O_URI_PORT = 7
    O_OSCORE = 9
    O_URI_PATH = 11
    O_CONTENT_FORMAT = 12
    O_MAX_AGE = 14

SERVICE_UNAVAILABLE = 0xA3

AVAILABLE = bool(SP_HAVE_MMSG)

include "cbor_head.pxi"  # put_head: the stored count of a report ack (respond_many)
include "coap_option.pxi"  # next_option: one option header, in bounds or refused


cdef struct report_t:
    int mid
    int tkl
    int tok_off
    int cf          # -1 when absent
    int pay_off


cdef inline int con_post(const unsigned char *d, int n, int *mid, int *tkl) noexcept nogil:
    """The offset of the first option when d[0:n] is a CoAP 1 CON POST with its whole token
    (mid and tkl set), else -1."""
    if n < 4:
        return -1
    if (d[0] >> 6) != 1 or ((d[0] >> 4) & 3) != T_CON or d[1] != C_POST:
        return -1
    tkl[0] = d[0] & 0x0F
    if tkl[0] > 8 or 4 + tkl[0] > n:
        return -1
    mid[0] = (d[2] << 8) | d[3]
    return 4 + tkl[0]


cdef int parse_report_c(const unsigned char *d, int n, report_t *r) noexcept nogil:
    """1 when d[0:n] is CON POST /r with only Uri-Path "r", Content-Format (and Uri-Host or
    Uri-Port, which a single-host server ignores) options and a
    non-empty payload; 0 for anything else (including malformed messages)."""
    cdef int pos, length = 0, num = 0, paths = 0, cf = -1, k, last_ignored = -1, step
    pos = con_post(d, n, &r.mid, &r.tkl)
    if pos < 0:
        return 0
    r.tok_off = 4
    while True:
        step = next_option(d, n, &pos, &num, &length)
        if step == 0:
            return 0  # no payload, an empty one after the marker, or malformed (aiocoap's call)
        if step == 2:
            break
        if num == O_URI_PATH:
            paths += 1
            if paths > 1 or length != 1 or d[pos] != 0x72:  # 'r'
                return 0
        elif num == O_CONTENT_FORMAT:
            if cf != -1 or length > 2:
                return 0
            cf = 0
            for k in range(length):
                cf = (cf << 8) | d[pos + k]
        elif num == O_URI_HOST or num == O_URI_PORT:
            if num == last_ignored:
                return 0  # repeated: aiocoap decides
            last_ignored = num  # elective for a server with one virtual host (libcoap sends it)
        else:
            return 0
        pos += length
    if paths != 1:
        return 0
    r.cf = cf
    r.pay_off = pos
    return 1


cdef struct protected_t:
    int mid
    int tkl
    int tok_off
    int opt_off
    int opt_len
    int pay_off


cdef int parse_protected_c(const unsigned char *d, int n, protected_t *r) noexcept nogil:
    """1 when d[0:n] is a CON POST whose only options are one OSCORE option (and Uri-Host or
    Uri-Port, as for a report), with a payload: an OSCORE-protected request that may be a
    report (RFC 8613: outer POST, every other option inside the ciphertext). 0 otherwise."""
    cdef int pos, length = 0, num = 0, seen = 0, last_ignored = -1, step
    pos = con_post(d, n, &r.mid, &r.tkl)
    if pos < 0:
        return 0
    r.tok_off = 4
    while True:
        step = next_option(d, n, &pos, &num, &length)
        if step == 0:
            return 0  # no payload, an empty one after the marker, or malformed (aiocoap's call)
        if step == 2:
            break
        if num == O_OSCORE:
            if seen:
                return 0
            seen = 1
            r.opt_off = pos
            r.opt_len = length
        elif num == O_URI_HOST or num == O_URI_PORT:
            if num == last_ignored:
                return 0
            last_ignored = num
        else:
            return 0
        pos += length
    if not seen:
        return 0
    r.pay_off = pos
    return 1


def parse_protected(data):
    """Python view of the protected-request classifier (for tests): None when `data` is not
    a candidate, else (mid, token, oscore option value, payload)."""
    cdef bytes b = bytes(data)
    cdef protected_t r
    if not parse_protected_c(<const unsigned char *>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b),
                             &r):
        return None
    return (r.mid, b[r.tok_off:r.tok_off + r.tkl], b[r.opt_off:r.opt_off + r.opt_len],
            b[r.pay_off:])


def parse_report(data):
    """Python view of the classifier (for tests): None when `data` is not a fast-path
    report, else (mid, token, content_format or None, payload)."""
    cdef bytes b = bytes(data)
    cdef report_t r
    if not parse_report_c(<const unsigned char *>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), &r):
        return None
    return (r.mid, b[r.tok_off:r.tok_off + r.tkl], None if r.cf < 0 else r.cf, b[r.pay_off:])


cdef inline uint64_t fnv1a(const unsigned char *d, int n) noexcept nogil:
    cdef uint64_t h = 1469598103934665603ULL
    cdef int i
    for i in range(n):
        h = (h ^ d[i]) * 1099511628211ULL
    return h


cdef int put_uint(unsigned char *out, unsigned int v) noexcept nogil:
    """Minimal big-endian encoding of an option uint (0 -> zero bytes)."""
    if v == 0:
        return 0
    if v < 0x100:
        out[0] = v
        return 1
    if v < 0x10000:
        out[0] = v >> 8
        out[1] = v & 0xFF
        return 2
    if v < 0x1000000:
        out[0] = v >> 16
        out[1] = (v >> 8) & 0xFF
        out[2] = v & 0xFF
        return 3
    out[0] = v >> 24
    out[1] = (v >> 16) & 0xFF
    out[2] = (v >> 8) & 0xFF
    out[3] = v & 0xFF
    return 4


def build_ack(int mid, bytes token, int code, cf=None, max_age=None, bytes payload=b""):
    """The piggybacked ACK response: same MID and token, Content-Format then Max-Age
    (options in number order), payload after 0xFF when non-empty."""
    cdef unsigned char head[32]
    cdef unsigned char val[4]
    cdef int pos, tkl = len(token), last = 0, ln
    if tkl > 8:
        raise ValueError("token longer than 8 bytes")
    head[0] = 0x40 | (T_ACK << 4) | tkl
    head[1] = code & 0xFF
    head[2] = (mid >> 8) & 0xFF
    head[3] = mid & 0xFF
    memcpy(&head[4], PyBytes_AS_STRING(token), tkl)
    pos = 4 + tkl
    if cf is not None:
        ln = put_uint(val, <unsigned int>cf)
        pos = put_option(head, pos, O_CONTENT_FORMAT - last, val, ln)
        last = O_CONTENT_FORMAT
    if max_age is not None:
        ln = put_uint(val, <unsigned int>max_age)
        pos = put_option(head, pos, O_MAX_AGE - last, val, ln)
    if payload:
        head[pos] = 0xFF
        pos += 1
        return PyBytes_FromStringAndSize(<char *>head, pos) + payload
    return PyBytes_FromStringAndSize(<char *>head, pos)


cdef class Peer:
    """One sender address: its printable address and its recent exchanges."""
    cdef readonly bytes key
    cdef readonly str address
    cdef readonly object sockaddr
    cdef int n
    cdef int mids[MAX_RING]
    cdef uint64_t hashes[MAX_RING]
    cdef double times[MAX_RING]
    cdef int state[MAX_RING]  # 0 empty, 1 in flight, 2 answered
    cdef list responses

    def __cinit__(self, bytes key not None, str address, sockaddr, int ring):
        if ring < 1 or ring > MAX_RING:
            raise ValueError("ring must be 1..%d" % MAX_RING)
        if len(key) > NAME_SIZE:
            raise ValueError("peer address longer than %d bytes" % NAME_SIZE)
        self.key = key
        self.address = address
        self.sockaddr = sockaddr
        self.n = ring
        self.responses = [None] * ring
        memset(self.state, 0, sizeof(self.state))

    cdef int find(self, int mid, uint64_t h, double now, double lifetime) noexcept:
        cdef int i
        for i in range(self.n):
            if (self.state[i] != 0 and self.mids[i] == mid and self.hashes[i] == h
                    and now - self.times[i] < lifetime):
                return i
        return -1

    cdef int claim(self, int mid, uint64_t h, double now) noexcept:
        """A slot for a new exchange: a free one, else the oldest answered one; -1 when every
        slot is in flight."""
        cdef int i, best = -1
        cdef double oldest = 1e300
        for i in range(self.n):
            if self.state[i] == 0:
                best = i
                break
            if self.state[i] == 2 and self.times[i] < oldest:
                oldest = self.times[i]
                best = i
        if best >= 0:
            self.mids[best] = mid
            self.hashes[best] = h
            self.times[best] = now
            self.state[best] = 1
            self.responses[best] = None
        return best

    def cached(self):
        """(mid, state, response) of every used slot (for tests and memory accounting)."""
        return [(self.mids[i], self.state[i], self.responses[i])
                for i in range(self.n) if self.state[i]]


cdef class Endpoint:
    """recvmmsg/sendmmsg on one UDP socket plus the per-peer recent-response cache."""
    cdef int fd
    cdef readonly int nmsg, bufsize, ring, max_peers
    cdef readonly double lifetime
    cdef mmsghdr *rx
    cdef iovec *rx_iov
    cdef unsigned char *rx_buf
    cdef unsigned char *rx_name
    cdef unsigned char *rx_ctrl
    cdef int received
    cdef mmsghdr *tx
    cdef iovec *tx_iov
    cdef unsigned char *tx_name
    cdef unsigned char *tx_ctrl
    cdef list tx_keep
    cdef int queued
    cdef dict peers
    cdef readonly unsigned long long n_received, n_reports, n_other, n_resent, n_inflight_dropped
    cdef readonly unsigned long long n_sent, n_send_dropped, n_evicted, n_rejected, n_peer_busy

    def __cinit__(self, int fd, int nmsg=256, int bufsize=4096, int ring=4, int max_peers=20000,
                  double lifetime=247.0):
        if ring < 1 or ring > MAX_RING:
            raise ValueError("ring must be 1..%d" % MAX_RING)
        if nmsg < 1 or bufsize < 64 or max_peers < 1:
            raise ValueError("nmsg, bufsize and max_peers must be positive (bufsize >= 64)")
        self.fd = fd
        self.nmsg = nmsg
        self.bufsize = bufsize
        self.ring = ring
        self.max_peers = max_peers
        self.lifetime = lifetime
        self.rx = <mmsghdr *>calloc(nmsg, sizeof(mmsghdr))
        self.rx_iov = <iovec *>calloc(nmsg, sizeof(iovec))
        self.rx_buf = <unsigned char *>calloc(nmsg, bufsize)
        self.rx_name = <unsigned char *>calloc(nmsg, NAME_SIZE)
        self.rx_ctrl = <unsigned char *>calloc(nmsg, CTRL_SIZE)
        self.tx = <mmsghdr *>calloc(nmsg, sizeof(mmsghdr))
        self.tx_iov = <iovec *>calloc(nmsg, sizeof(iovec))
        self.tx_name = <unsigned char *>calloc(nmsg, NAME_SIZE)
        self.tx_ctrl = <unsigned char *>calloc(nmsg, CTRL_SIZE)
        if not (self.rx and self.rx_iov and self.rx_buf and self.rx_name and self.rx_ctrl
                and self.tx and self.tx_iov and self.tx_name and self.tx_ctrl):
            raise MemoryError()
        self.tx_keep = []
        self.peers = {}

    def __dealloc__(self):
        free(self.rx)
        free(self.rx_iov)
        free(self.rx_buf)
        free(self.rx_name)
        free(self.rx_ctrl)
        free(self.tx)
        free(self.tx_iov)
        free(self.tx_name)
        free(self.tx_ctrl)

    @property
    def peer_count(self):
        return len(self.peers)

    def memory_bytes(self):
        """C buffers plus an estimate of the peer table (objects, keys, cached responses)."""
        import sys
        cdef Peer p
        cdef long total = self.nmsg * (2 * sizeof(mmsghdr) + 2 * sizeof(iovec) + self.bufsize
                                       + 2 * NAME_SIZE + 2 * CTRL_SIZE)
        total += sys.getsizeof(self.peers)
        for p in self.peers.values():
            total += (sys.getsizeof(p) + sys.getsizeof(p.key) + sys.getsizeof(p.address)
                      + sys.getsizeof(p.sockaddr) + sys.getsizeof(p.responses))
            for r in p.responses:
                if r is not None:
                    total += sys.getsizeof(r)
        return total

    def peer(self, key):
        return self.peers.get(key)

    def recv(self):
        """One recvmmsg(MSG_DONTWAIT); returns how many datagrams arrived (0 when none)."""
        cdef int i, n
        cdef msghdr *h
        for i in range(self.nmsg):
            self.rx_iov[i].iov_base = self.rx_buf + <size_t>i * self.bufsize
            self.rx_iov[i].iov_len = self.bufsize
            h = &self.rx[i].msg_hdr
            h.msg_name = self.rx_name + i * NAME_SIZE
            h.msg_namelen = NAME_SIZE
            h.msg_iov = &self.rx_iov[i]
            h.msg_iovlen = 1
            h.msg_control = self.rx_ctrl + i * CTRL_SIZE
            h.msg_controllen = CTRL_SIZE
            h.msg_flags = 0
        with nogil:
            n = recvmmsg(self.fd, self.rx, self.nmsg, MSG_DONTWAIT, NULL)
        if n < 0:
            if errno == EAGAIN or errno == EINTR:
                n = 0
            else:
                raise OSError(errno, "recvmmsg failed")
        self.received = n
        self.n_received += n
        return n

    cdef object _sockaddr_tuple(self, unsigned char *name, socklen_t namelen):
        cdef char host[128]
        cdef sockaddr_in6 *s6
        cdef sockaddr_in *s4
        if getnameinfo(<sockaddr *>name, namelen, host, sizeof(host), NULL, 0,
                       NI_NUMERICHOST | NI_NUMERICSERV) != 0:
            return None
        if (<sockaddr *>name).sa_family == AF_INET6:
            s6 = <sockaddr_in6 *>name
            return (host.decode("ascii"), ntohs(s6.sin6_port), ntohl(s6.sin6_flowinfo),
                    s6.sin6_scope_id)
        s4 = <sockaddr_in *>name
        return (host.decode("ascii"), ntohs(s4.sin_port))

    cdef object _ancdata(self, msghdr *h):
        cdef list out = []
        cdef cmsghdr *c = CMSG_FIRSTHDR(h)
        while c != NULL:
            out.append((c.cmsg_level, c.cmsg_type,
                        PyBytes_FromStringAndSize(<char *>CMSG_DATA(c),
                                                  c.cmsg_len - CMSG_LEN(0))))
            c = CMSG_NXTHDR(h, c)
        return out

    cdef Peer _peer(self, unsigned char *name, socklen_t namelen):
        if namelen > NAME_SIZE:
            namelen = NAME_SIZE  # the kernel reports the full length of a truncated address
        cdef bytes key = PyBytes_FromStringAndSize(<char *>name, namelen)
        cdef Peer p = self.peers.get(key)
        if p is not None:
            return p
        sa = self._sockaddr_tuple(name, namelen)
        if sa is None:
            return None
        host = sa[0]
        if host.startswith("::ffff:"):
            host = host[7:]
        if ":" in host:
            host = "[%s]" % host
        if len(self.peers) >= self.max_peers:
            del self.peers[next(iter(self.peers))]  # oldest first (dict keeps insertion order)
            self.n_evicted += 1
        p = Peer(key, "%s:%d" % (host, sa[1]), sa, self.ring)
        self.peers[key] = p
        return p

    def classify(self, double now, int room, int retry_after=2, list protected=None,
                 bint plain=True):
        """Sort the datagrams of the last recv().

        Returns (reports, others). reports: list of (peer, mid, token, cf, payload,
        pktinfo) to ingest; at most `room` of them -- further new reports get 5.03 with
        Max-Age `retry_after` right away (queued for flush()). others: list of
        (data, ancdata, flags, address) for aiocoap's datagram_msg_received.
        Retransmissions are answered from the cache (queued for flush()) or dropped
        while in flight.

        With a list `protected` (the hub runs OSCORE), a CON POST whose options are one
        OSCORE option (and Uri-Host/Uri-Port) with a payload is a protected candidate: it
        takes the same retransmission cache and `room`, and goes to `protected` as (peer,
        mid, token, option offset, option length, pktinfo, datagram) for the OSCORE table
        to open (fast/oscore.pyx's open_batch; the ciphertext follows the option and the
        payload marker); a candidate it leaves to aiocoap must be given back with
        `forget`. `plain=False` hands plaintext reports to aiocoap (which refuses them
        when OSCORE is required)."""
        cdef list reports = []
        cdef list others = []
        cdef int i, slot, n = self.received
        cdef msghdr *h
        cdef unsigned char *d
        cdef int ln
        cdef report_t r
        cdef protected_t pr
        cdef bint prot
        cdef Peer p
        cdef uint64_t hv
        cdef cmsghdr *c
        cdef in6_pktinfo *pi
        cdef bint report
        cdef object pktinfo
        self.received = 0
        for i in range(n):
            h = &self.rx[i].msg_hdr
            d = self.rx_buf + <size_t>i * self.bufsize
            ln = self.rx[i].msg_len
            if ln > self.bufsize:
                ln = self.bufsize  # never read past this datagram's slot
            prot = False
            report = (h.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) == 0 and (
                plain and parse_report_c(d, ln, &r))
            if (not report and protected is not None
                    and (h.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) == 0
                    and parse_protected_c(d, ln, &pr)):
                report = prot = True
                r.mid = pr.mid
                r.tkl = pr.tkl
                r.tok_off = pr.tok_off
            pktinfo = None
            if report:
                c = CMSG_FIRSTHDR(h)
                while c != NULL:
                    if (c.cmsg_level == IPPROTO_IPV6 and c.cmsg_type == IPV6_PKTINFO
                            and c.cmsg_len >= CMSG_LEN(sizeof(in6_pktinfo))):
                        pi = <in6_pktinfo *>CMSG_DATA(c)
                        if pi.ipi6_addr.s6_addr[0] == 0xFF or (
                                pi.ipi6_addr.s6_addr[10] == 0xFF and pi.ipi6_addr.s6_addr[11] == 0xFF
                                and pi.ipi6_addr.s6_addr[0] == 0
                                and (pi.ipi6_addr.s6_addr[12] & 0xF0) == 0xE0):
                            report = False  # sent to a multicast group: aiocoap's business
                        else:
                            pktinfo = PyBytes_FromStringAndSize(<char *>pi, sizeof(in6_pktinfo))
                    c = CMSG_NXTHDR(h, c)
            p = None
            if report:
                p = self._peer(<unsigned char *>h.msg_name, h.msg_namelen)
                if p is None:
                    report = False
            if not report:
                sa = self._sockaddr_tuple(<unsigned char *>h.msg_name, h.msg_namelen)
                others.append((PyBytes_FromStringAndSize(<char *>d, ln), self._ancdata(h),
                               h.msg_flags, sa))
                self.n_other += 1
                continue
            self.n_reports += 1
            hv = fnv1a(d, ln)
            slot = p.find(r.mid, hv, now, self.lifetime)
            if slot >= 0:
                if p.state[slot] == 2 and p.responses[slot] is not None:
                    self._queue(p, p.responses[slot], pktinfo)
                    self.n_resent += 1
                else:
                    self.n_inflight_dropped += 1
                continue
            token = PyBytes_FromStringAndSize(<char *>d + r.tok_off, r.tkl)
            if room <= 0:
                self._queue(p, build_ack(r.mid, token, SERVICE_UNAVAILABLE, None, retry_after),
                            pktinfo)
                self.n_rejected += 1
                continue
            slot = p.claim(r.mid, hv, now)
            if slot < 0:
                # every slot of this peer is in flight (it runs more than `ring` exchanges at
                # once, far beyond NSTART=1): the same 5.03 as a full queue, so one peer cannot
                # take the queue from the others.
                self._queue(p, build_ack(r.mid, token, SERVICE_UNAVAILABLE, None, retry_after),
                            pktinfo)
                self.n_peer_busy += 1
                continue
            room -= 1
            if prot:
                protected.append((p, r.mid, token, pr.opt_off, pr.opt_len, pktinfo,
                                  PyBytes_FromStringAndSize(<char *>d, ln)))
                continue
            reports.append((p, r.mid, token, None if r.cf < 0 else r.cf,
                            PyBytes_FromStringAndSize(<char *>d + r.pay_off, ln - r.pay_off),
                            pktinfo))
        return reports, others

    cdef int _queue(self, Peer p, bytes msg, object pktinfo) except -1:
        cdef int i
        cdef msghdr *h
        cdef cmsghdr *c
        cdef Py_ssize_t kl = PyBytes_GET_SIZE(p.key)
        if kl > NAME_SIZE:
            raise ValueError("peer address longer than %d bytes" % NAME_SIZE)
        if self.queued >= self.nmsg:
            self.flush()
        i = self.queued
        self.queued += 1
        self.tx_keep.append(msg)
        self.tx_iov[i].iov_base = PyBytes_AS_STRING(msg)
        self.tx_iov[i].iov_len = PyBytes_GET_SIZE(msg)
        h = &self.tx[i].msg_hdr
        memcpy(self.tx_name + i * NAME_SIZE, PyBytes_AS_STRING(p.key), kl)
        h.msg_name = self.tx_name + i * NAME_SIZE
        h.msg_namelen = kl
        h.msg_iov = &self.tx_iov[i]
        h.msg_iovlen = 1
        h.msg_flags = 0
        if type(pktinfo) is bytes and PyBytes_GET_SIZE(pktinfo) == sizeof(in6_pktinfo):
            memset(self.tx_ctrl + i * CTRL_SIZE, 0, CTRL_SIZE)
            h.msg_control = self.tx_ctrl + i * CTRL_SIZE
            h.msg_controllen = CMSG_SPACE(sizeof(in6_pktinfo))
            c = CMSG_FIRSTHDR(h)
            c.cmsg_level = IPPROTO_IPV6
            c.cmsg_type = IPV6_PKTINFO
            c.cmsg_len = CMSG_LEN(sizeof(in6_pktinfo))
            memcpy(CMSG_DATA(c), PyBytes_AS_STRING(pktinfo), sizeof(in6_pktinfo))
            (<in6_pktinfo *>CMSG_DATA(c)).ipi6_ifindex = 0  # let routing pick the interface
        else:
            h.msg_control = NULL
            h.msg_controllen = 0
        return 0

    def respond(self, Peer p not None, int mid, bytes token, int code, cf, max_age, bytes payload,
                pktinfo, bint cache=True):
        """Queue the piggybacked response to a report; cache it for retransmissions.
        pktinfo: None or the bytes classify() gave (anything else is a TypeError)."""
        if pktinfo is not None and type(pktinfo) is not bytes:
            raise TypeError("pktinfo must be None or the bytes from classify(), not %s"
                            % type(pktinfo).__name__)
        cdef bytes msg = build_ack(mid, token, code, cf, max_age, payload)
        self._answered(p, mid, msg, cache)
        self._queue(p, msg, pktinfo)
        return msg

    cdef void _answered(self, Peer p, int mid, bytes msg, bint cache) noexcept:
        """The report `mid` of peer p got `msg`: cache it for retransmissions (or free the
        slot when not cached)."""
        cdef int i
        for i in range(p.n):
            if p.state[i] == 1 and p.mids[i] == mid:
                if cache:
                    p.state[i] = 2
                    p.responses[i] = msg
                else:
                    p.state[i] = 0
                    p.responses[i] = None
                break

    def forget(self, Peer p not None, int mid):
        """Free the in-flight slot of a request classify() took but the fast path leaves to
        aiocoap (a protected candidate the OSCORE table did not open): its retransmissions
        then go the same way."""
        self._answered(p, mid, None, False)

    def respond_many(self, list reports not None, list results not None, int text_format=0):
        """Queue and cache the responses to a batch of reports (classify()'s tuples), in
        one C loop. results[i] is either a ReportResult-like object (code, content_format,
        max_age, payload: what `respond` takes; a payload without a content format gets
        `text_format`) or, for a stored report, a tuple (ack_head, stored): the 2.04 ack
        is ack_head (fast/ack.pyx's `ack_head()`) followed by stored and duplicates = 0 --
        byte for byte what encode_ack gives -- or the whole response as bytes (an
        OSCORE-protected ack, fast/oscore.pyx's `seal_acks`), or None: no response (the slot
        is freed; the node retransmits). Returns how many were queued."""
        cdef Py_ssize_t i, n = len(reports)
        cdef tuple e
        cdef Peer p
        cdef bytes msg, head, token
        cdef object r, pktinfo, cf
        cdef unsigned long long stored
        cdef unsigned char tail[16]
        cdef int tl, hl, tkl, pos, mid
        cdef Py_ssize_t queued = 0
        cdef char *out
        if len(results) != n:
            raise ValueError("%d results for %d reports" % (len(results), n))
        for i in range(n):
            e = <tuple>reports[i]
            p = <Peer?>e[0]
            mid = e[1]
            token = <bytes?>e[2]
            pktinfo = e[5]
            if pktinfo is not None and type(pktinfo) is not bytes:
                raise TypeError("pktinfo must be None or bytes")
            r = results[i]
            if r is None:
                self._answered(p, mid, None, False)
                continue
            if type(r) is bytes:
                msg = <bytes>r
            elif type(r) is tuple:
                head = <bytes?>(<tuple>r)[0]
                stored = (<tuple>r)[1]
                tail[0] = 0x04
                tl = 1 + put_head(tail + 1, 0, stored)
                tail[tl] = 0x05
                tail[tl + 1] = 0x00
                tl += 2
                tkl = PyBytes_GET_SIZE(token)
                if tkl > 8:
                    raise ValueError("token longer than 8 bytes")
                hl = PyBytes_GET_SIZE(head)
                # ACK 2.04, MID, token, Content-Format 60 (delta 12, 1 byte), 0xFF, payload
                msg = PyBytes_FromStringAndSize(NULL, 4 + tkl + 3 + hl + tl)
                out = PyBytes_AS_STRING(msg)
                out[0] = 0x40 | (T_ACK << 4) | tkl
                out[1] = <char>0x44
                out[2] = (mid >> 8) & 0xFF
                out[3] = mid & 0xFF
                memcpy(out + 4, PyBytes_AS_STRING(token), tkl)
                pos = 4 + tkl
                out[pos] = <char>((O_CONTENT_FORMAT << 4) | 1)
                out[pos + 1] = 60
                out[pos + 2] = <char>0xFF
                pos += 3
                memcpy(out + pos, PyBytes_AS_STRING(head), hl)
                memcpy(out + pos + hl, tail, tl)
            else:
                cf = r.content_format
                payload = bytes(r.payload)
                if cf is None and payload:
                    cf = text_format
                msg = build_ack(mid, token, r.code, cf, r.max_age, payload)
            self._answered(p, mid, msg, True)
            self._queue(p, msg, pktinfo)
            queued += 1
        return queued

    def flush(self):
        """sendmmsg everything queued; returns how many left. A full socket buffer drops
        the rest (UDP: the node retransmits and gets the cached response)."""
        cdef int n = self.queued, done = 0, k
        while done < n:
            with nogil:
                k = sendmmsg(self.fd, self.tx + done, n - done, MSG_DONTWAIT)
            if k < 0:
                if errno == EINTR:
                    continue
                # EAGAIN or a per-destination error on the first message: skip that one
                self.n_send_dropped += 1
                done += 1
                continue
            done += k
            self.n_sent += k
        self.queued = 0
        self.tx_keep = []
        return n
