"""The fast ingest front end: POST /r straight off the hub's UDP socket, the rest to aiocoap.

Scope: glue between `smartpark.fast.udp` (recvmmsg/sendmmsg, CoAP
header parsing, piggybacked responses, per-peer recent-response cache) and
the ingest pipeline (hub/ingest.py). It takes over the read side of aiocoap's
own udp6 socket: the event loop's reader for that socket calls `_readable`,
which drains up to `rounds` x `nmsg` datagrams, and

  * hands every datagram that is not a confirmable `POST /r` report
    (registration, /.well-known/core, /cfg, Observe, Block-wise, ACK/RST,
    anything malformed or unexpected) to aiocoap's transport protocol
    unchanged (`datagram_msg_received` with the same data, ancillary data and
    address aiocoap would have read itself), and drains the socket's error
    queue for it as aiocoap's transport does;
  * answers retransmissions from the cache (identical bytes) or drops them
    while their report is in flight;
  * queues new reports; when more than `queue_bound` reports are queued or
    being ingested, answers 5.03 Service Unavailable with Max-Age
    `retry_after` instead (overload: memory stays bounded, the nodes back
    off, and the queue drains);
  * runs the queue through `Pipeline.ingest` in batches of up to `batch`
    reports, at most `concurrency` batches at a time (one is decoded while the
    store thread commits the previous: group commit; a second one only once
    `second_batch` reports wait). At moderate load a wake-up that found only a
    few datagrams pauses the reader for `coalesce` s (half a millisecond), so
    batches, commits and wake-ups are not one per report. A batch's responses are
    sent with one sendmmsg only after the pipeline returned, i.e. after its
    readings were committed ("acknowledged means stored").

Responses are byte-for-byte what hub/coap/resources.py makes aiocoap send:
ACK, same MID and token, Content-Format (60 for the ack, 0 for a diagnostic),
Max-Age with 5.03.

OSCORE (`security` given and `security.required`, i.e. `security.mode =
"oscore"`): the fast path takes protected reports instead of plaintext ones.
A CON POST whose outer options are the OSCORE option (and Uri-Host/Uri-Port)
is opened by the hub's one context table (`security.table`, fast/oscore.pyx)
in one C batch: a report (inner POST with only Uri-Path "r" and
Content-Format) that verifies and passes its replay window is ingested as the
node its key names, and its ack is protected in C (`seal_acks`: the same ack
bytes inside, 2.04 with an empty OSCORE option outside, the request's nonce).
Everything else -- plaintext requests (refused by the aiocoap side), other
inner requests, unknown kids, failed verification, replays, a context that
needs the Echo exchange -- goes to aiocoap unchanged with no replay state
touched, where hub/security.py's site wrapper answers it with the same table.
Retransmissions are still answered from the response cache before any of
this. Without the compiled table (no OpenSSL at build time, or
SMARTPARK_PUREPYTHON=1) every request goes to aiocoap.

Linux only (recvmmsg/sendmmsg). Elsewhere, or when the extension was not
built, `FastPath.attach` logs one warning and the hub serves POST /r through
aiocoap alone.
"""

import asyncio
import logging
import socket
import time

from smartpark import fast as _fast

from .interfaces import SERVICE_UNAVAILABLE, ReportResult

log = logging.getLogger("smartpark.hub.fastpath")

# the extension, or None when it is not built, forced pure (SMARTPARK_PUREPYTHON=1) or not
# on Linux (recvmmsg/sendmmsg); then UNAVAILABLE says which
_udp = _fast.udp
UNAVAILABLE = None if _udp is not None else "smartpark.fast.udp: %s" % _fast.UNAVAILABLE["udp"]

CT_TEXT = 0
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0)
IPPROTO_IPV6 = getattr(socket, "IPPROTO_IPV6", 41)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)


def udp6_interface(context):
    """aiocoap's udp6 message interface (the socket owner) of a server context, or None."""
    for ri in getattr(context, "request_interfaces", ()):
        mi = getattr(getattr(ri, "token_interface", None), "message_interface", None)
        mi = getattr(mi, "message_interface", mi)
        if mi is not None and hasattr(mi, "datagram_msg_received") and hasattr(mi, "transport"):
            return mi
    return None


class FastPath:
    def __init__(self, pipeline, metrics=None, queue_bound=4096, batch=1024, concurrency=2,
                 retry_after=2, nmsg=256, rounds=8, ring=4, max_peers=20000, lifetime=247.0,
                 socket_buffer=8 << 20, coalesce=0.0005, coalesce_below=32, second_batch=64,
                 security=None):
        self.pipeline = pipeline
        # OSCORE required: plaintext reports go to aiocoap (which refuses them) and, with the
        # compiled table, protected reports are opened and their acks sealed here
        self.oscore = security is not None and bool(security.required)
        self.table = security.table if self.oscore else None
        self.sealing = self.oscore and hasattr(self.table, "open_batch")
        self.metrics = metrics
        self.queue_bound = queue_bound
        self.batch = batch
        self.concurrency = concurrency
        self.retry_after = retry_after
        self.nmsg = nmsg
        self.rounds = rounds
        self.ring = ring
        self.max_peers = max_peers
        self.lifetime = lifetime
        self.socket_buffer = socket_buffer
        # Moderate load: a wake-up that found fewer than `coalesce_below` datagrams
        # pauses the reader for `coalesce` s so the next one finds more (0: never), and a
        # second batch starts beside one in flight only once `second_batch` reports wait.
        # Both trade under a millisecond of latency for batches that are not one report
        # each (figures: docs/performance.md, "Moderate load").
        self.coalesce = coalesce
        self.coalesce_below = coalesce_below
        self.second_batch = second_batch
        self.pauses = 0  # coalescing pauses taken
        self.endpoint = None
        self.proto = None
        self.sock = None
        self.fd = None
        self.pending = []
        self.queued = 0  # reports queued or being ingested
        self.queue_peak = 0
        self.active = 0
        self.tasks = set()
        self.errors = 0  # exceptions caught in the fast path's own code (should stay 0)
        self.aiocoap_errors = 0  # exceptions aiocoap raised on datagrams handed to it
        self._idle = None
        self._loop = None
        self._paused = None

    @property
    def active_on(self):
        return self.endpoint is not None

    def attach(self, coap_server):
        """Take over the read side of the CoAP server's socket. Returns self when the fast
        path is on, None (after one log line) when it cannot run here."""
        if UNAVAILABLE:
            log.warning("fast ingest path off: %s; POST /r is served by aiocoap", UNAVAILABLE)
            return None
        mi = udp6_interface(coap_server.context)
        sock = mi.transport.get_extra_info("socket") if mi is not None else None
        if sock is None:
            log.warning("fast ingest path off: no aiocoap udp6 socket found; POST /r is served "
                        "by aiocoap")
            return None
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
        self.proto = mi
        self.sock = sock
        self.fd = sock.fileno()
        self._buffers(sock)
        self.endpoint = _udp.Endpoint(self.fd, nmsg=self.nmsg, ring=self.ring,
                                      max_peers=self.max_peers, lifetime=self.lifetime)
        self._loop.remove_reader(self.fd)
        self._loop.add_reader(self.fd, self._readable)
        if self.metrics is not None:
            self._gauges(self.metrics)
        if self.oscore and not self.sealing:
            log.warning("fast ingest path: the OSCORE table is not compiled (%s); every "
                        "request goes to aiocoap", _fast.UNAVAILABLE.get("oscore"))
        log.info("fast ingest path on (recvmmsg x%d, queue bound %d, %s)", self.nmsg,
                 self.queue_bound, "OSCORE" if self.oscore else "plaintext")
        return self

    def _buffers(self, sock):
        """Room for a burst: a batch of reports arrives while the previous one commits.
        The kernel caps SO_RCVBUF at net.core.rmem_max unless we may force it."""
        for opt, force in ((socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", None)),
                           (socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", None))):
            try:
                if force is not None:
                    sock.setsockopt(socket.SOL_SOCKET, force, self.socket_buffer)
                    continue
            except OSError:
                pass
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, self.socket_buffer)
            except OSError:
                log.info("could not enlarge the CoAP socket buffer")

    def _gauges(self, m):
        ep = self.endpoint
        for name, help_text, fn in (
                ("reports", "Reports taken by the fast path", lambda: ep.n_reports),
                ("other", "Datagrams handed to aiocoap", lambda: ep.n_other),
                ("resent", "Retransmissions answered from the response cache",
                 lambda: ep.n_resent),
                ("inflight_dropped", "Retransmissions dropped while their report was in flight",
                 lambda: ep.n_inflight_dropped),
                ("overload", "Reports answered 5.03 because the ingest queue was full",
                 lambda: ep.n_rejected),
                ("peer_busy", "Reports answered 5.03 because their peer had `ring` in flight",
                 lambda: ep.n_peer_busy),
                ("send_dropped", "Responses the socket would not take", lambda: ep.n_send_dropped),
                ("peers", "Peers in the response cache", lambda: ep.peer_count),
                ("queue", "Reports queued or being ingested", lambda: self.queued),
                ("pauses", "Reader pauses at moderate load (coalescing wake-ups)",
                 lambda: self.pauses),
                ("queue_peak", "Most reports ever queued or being ingested at once",
                 lambda: self.queue_peak),
                ("oscore_opened", "Protected reports the fast path opened",
                 lambda: self.table.n_opened if self.sealing else 0),
                ("oscore_to_aiocoap", "Protected requests the fast path left to aiocoap",
                 lambda: sum(self.table.fallbacks().values()) if self.sealing else 0),
                ("errors", "Exceptions caught in the fast path's own code", lambda: self.errors),
                ("aiocoap_errors", "Exceptions aiocoap raised on datagrams handed to it",
                 lambda: self.aiocoap_errors)):
            m.gauge("smartpark_fastpath_" + name, help_text, fn)

    # ---- read side --------------------------------------------------------------------

    def _errqueue(self):
        if not MSG_ERRQUEUE:
            return
        while True:
            try:
                data, anc, flags, addr = self.sock.recvmsg(4096, 1024, MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.proto.error_received(e)
                return
            self.proto.datagram_errqueue_received(data, anc, flags, addr)

    def _rearm(self):
        """End of a coalescing pause: read again, and watch the socket again."""
        self._paused = None
        if self.endpoint is None:
            return
        self._loop.add_reader(self.fd, self._readable)
        self._readable()

    def _readable(self):
        ep = self.endpoint
        proto = self.proto
        got = 0
        try:
            self._errqueue()
            for _ in range(self.rounds):
                k = ep.recv()
                if not k:
                    break
                got += k
                protected = [] if self.sealing else None
                reports, others = ep.classify(time.monotonic(),
                                              self.queue_bound - self.queued, self.retry_after,
                                              protected, not self.oscore)
                if protected:
                    self._open(protected, reports, others)
                if reports:
                    self.pending.extend(reports)
                    self.queued += len(reports)
                    if self.queued > self.queue_peak:
                        self.queue_peak = self.queued
                ep.flush()
                for data, anc, flags, addr in others:
                    try:
                        proto.datagram_msg_received(data, anc, flags, addr)
                    except Exception as e:  # noqa: BLE001 - aiocoap's own input bugs
                        # (e.g. UnicodeDecodeError on a non-UTF-8 Uri-Path); without the fast
                        # path the same exception ends in the loop's handler. Count, go on.
                        self.aiocoap_errors += 1
                        log.debug("aiocoap raised on a datagram from %s: %r", addr, e)
        except Exception:  # noqa: BLE001 - the hub never dies of input
            self.errors += 1
            log.exception("fast path read error")
        self._pump()
        if self.coalesce and 0 < got < self.coalesce_below and self._paused is None:
            self._loop.remove_reader(self.fd)
            self._paused = self._loop.call_later(self.coalesce, self._rearm)
            self.pauses += 1

    def _open(self, protected, reports, others):
        """Open a batch of protected candidates: reports join `reports` as (peer, mid, token,
        cf, payload, pktinfo, node, binding); the rest go to aiocoap as received."""
        left = []
        self.table.open_batch(protected, reports, left)  # one C loop, the GIL released
        ep = self.endpoint
        for e in left:
            ep.forget(e[0], e[1])
            anc = [] if e[5] is None else [(IPPROTO_IPV6, IPV6_PKTINFO, e[5])]
            others.append((e[6], anc, 0, e[0].sockaddr))

    def _pump(self):
        while self.pending and self.active < self.concurrency:
            if self.active and len(self.pending) < self.second_batch:
                break  # the batch in flight returns soon; this one grows meanwhile
            chunk = self.pending[:self.batch]
            del self.pending[:self.batch]
            self.active += 1
            self._idle.clear()
            t = self._loop.create_task(self._ingest(chunk))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    async def _ingest(self, chunk):
        ep = self.endpoint
        try:
            try:
                if self.sealing:  # (address, payload, cf, the node whose key verified it)
                    items = [(e[0].address, e[4], e[3], e[6]) for e in chunk]
                else:
                    items = [(e[0].address, e[4], e[3]) for e in chunk]
                results = await self.pipeline.ingest(items, path="fast", lane_acks=True)
            except Exception as e:  # noqa: BLE001 - answer 5.03, never lose the socket
                log.exception("ingest failed")
                res = ReportResult(SERVICE_UNAVAILABLE,
                                   ("ingest failed: %s" % type(e).__name__).encode(),
                                   max_age=self.retry_after, error="internal")
                results = [res] * len(chunk)
            if self.sealing:  # the protected acks, built and encrypted in C
                results = self.table.seal_acks(chunk, results, CT_TEXT)
            ep.respond_many(chunk, results, CT_TEXT)  # in C; 2.04 acks from (head, stored)
            ep.flush()
        except Exception:  # noqa: BLE001
            self.errors += 1
            log.exception("fast path response error")
        finally:
            self.active -= 1
            self.queued -= len(chunk)
            if not self.active:
                self._idle.set()
            self._pump()

    async def stop(self):
        """Hand the socket back to aiocoap's reader after the last batch was answered."""
        if self.endpoint is None:
            return
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        self._loop.remove_reader(self.fd)
        while self.active or self.pending:
            self._pump()
            await self._idle.wait()
            await asyncio.sleep(0)
        try:
            transport = self.proto.transport
            self._loop.add_reader(self.fd, transport._read_ready)
        except Exception:  # noqa: BLE001 - transport already closed
            pass
        self.endpoint = None
