"""CoAP client over UDP (RFC 7252) for the node: one confirmable exchange at a time.

- Reliability (section 4.2): a CON is retransmitted after ACK_TIMEOUT * a
  random factor in [1, ACK_RANDOM_FACTOR], the timeout doubling each time, at
  most MAX_RETRANSMIT times (defaults 2 s, 1.5, 4; configurable for tests).
- NSTART = 1 (section 4.7): an asyncio.Lock serialises exchanges.
- Message IDs start at a random value and count up; every request gets a
  fresh random 4-byte token (section 5.3.1).
- Responses: piggybacked in the ACK, or separate (an Empty ACK, then a CON
  or NON response with our token; a CON one is acknowledged). Duplicates --
  a second ACK for an answered MID, a retransmitted separate response, a
  response with a stale token -- are ignored (a duplicate CON is re-ACKed so
  the server stops retransmitting). An RST for our MID ends the exchange.
- Block2 (RFC 7959) for GETs whose answer does not fit one datagram.
- OSCORE (RFC 8613), when the Client has a security context (security.py):
  each request is protected with a fresh sequence number, its retransmissions
  resend the same protected bytes, and only a response that verifies for that
  very request (its kid and PIV) ends the exchange. Anything else with our MID
  or token -- unprotected, a wrong tag, another request's response -- is
  ignored as a stray datagram, so a rogue answer can neither ack a pack nor set
  the clock nor hand out a config; the exchange goes on and times out if nothing
  better comes. The hub's own OSCORE errors come unprotected (4.00, 4.01, 4.02,
  RFC 8613 section 8.2) and end the exchange with SecurityError. A verified
  4.01 with an Echo option (the hub lost its replay window) is retried once
  with that Echo value (RFC 9175).

The socket is a connected, non-blocking UDP socket: the client waits for it
on asyncio's I/O queue (no polling) and takes one datagram with recv(); ICMP
"port unreachable" (the hub is down) shows as OSError and counts as silence.
"""

import asyncio
import socket

from compat import const, sleep_ms, ticks_add, ticks_diff, ticks_ms, urandom_int
from smartpark.protocol import coap
from smartpark.protocol.errors import DecodeError

_MAX_DGRAM = const(1280)
_EAGAIN = (11, 35)   # EAGAIN on Linux / lwIP, macOS


def _readable(sock):
    """Awaitable (MicroPython) that resumes when `sock` has a datagram waiting.

    The same I/O-queue call MicroPython's asyncio streams use; a plain
    generator is a coroutine there.
    """
    yield asyncio.core._io_queue.queue_read(sock)  # type: ignore[attr-defined]


class CoapTimeout(OSError):
    pass


class CoapReset(OSError):
    pass


class SecurityError(OSError):
    """OSCORE: the exchange cannot be protected (security.py), or the hub refused it."""


class Client:
    def __init__(self, params=None, security=None):
        p = params or {}
        # security.Security: every exchange OSCORE-protected; None: plain CoAP
        self.security = security
        self.ack_timeout_ms = int(p.get("ack_timeout", 2.0) * 1000)
        self.factor = float(p.get("ack_random_factor", 1.5))
        self.max_retransmit = int(p.get("max_retransmit", 4))
        # how long to wait for a separate response after an Empty ACK
        self.separate_ms = int(p.get("separate_timeout", self.ack_timeout_ms * 15 / 1000) * 1000)
        self.mid = urandom_int(16)
        self.retx = 0          # retransmissions since boot (health "retx")
        self.requests = 0
        self.strays = 0        # datagrams of our exchange that did not verify (OSCORE), ignored
        self.echoes = 0        # requests retried with the hub's Echo
        self.last_rtt_ms = None
        self.last_io = ticks_ms()   # an exchange in progress counts as life for the watchdog
        self._lock = asyncio.Lock()
        self._sock = None
        self.peer = None

    def connect(self, host, port):
        self.close()
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
        s = socket.socket(ai[0], socket.SOCK_DGRAM)
        s.connect(ai[-1])
        s.setblocking(False)
        self._sock = s
        self.peer = (host, port)

    def close(self):
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    def _next_mid(self):
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    def _send(self, data):
        self.last_io = ticks_ms()
        try:
            self._sock.write(data)   # type: ignore[union-attr]
        except OSError:
            pass   # e.g. ECONNREFUSED left over from an ICMP error: as if lost

    async def _recv(self, wait_ms):
        """One datagram within wait_ms, or None."""
        if wait_ms <= 0:
            return None
        t0 = ticks_ms()
        try:
            return self._sock.recv(_MAX_DGRAM)   # type: ignore[union-attr]
        except OSError as e:
            if e.args[0] not in _EAGAIN:
                return await self._unreachable(wait_ms, t0)
        try:
            await asyncio.wait_for_ms(_readable(self._sock), wait_ms)  # type: ignore
        except asyncio.TimeoutError:
            return None
        try:
            # recv() takes exactly one datagram. (The stream read()/readinto() of the
            # unix port loop until their buffer is full, gluing queued datagrams together.)
            return self._sock.recv(_MAX_DGRAM)   # type: ignore[union-attr]
        except OSError as e:
            if e.args[0] in _EAGAIN:
                return None
            return await self._unreachable(wait_ms, t0)

    async def _unreachable(self, wait_ms, t0):
        """ICMP unreachable (nobody listens): wait out the rest of this slot, as silence."""
        rest = wait_ms - ticks_diff(ticks_ms(), t0)
        if rest > 0:
            await sleep_ms(rest)
        return None

    async def request(self, code, path, payload=b"", content_format=None, query=None,
                      accept=None, options=None):
        """Send a CON request and return the response Message (raises CoapTimeout/CoapReset)."""
        async with self._lock:
            return await self._exchange(code, path, payload, content_format, query, accept, options)

    async def get(self, path, accept=None, query=None):
        """GET with Block2 reassembly; returns (response of the last block, whole payload)."""
        async with self._lock:
            body = b""
            num = 0
            while True:
                opts = [(coap.BLOCK2, coap.block_encode(num, False, 6))] if num else None
                resp = await self._exchange(coap.GET, path, b"", None, query, accept, opts)
                body += resp.payload
                blk = resp.block2
                if blk is None or not blk[1] or resp.code != coap.CONTENT or num > 64:
                    return resp, body
                num = blk[0] + 1

    async def _exchange(self, code, path, payload, cf, query, accept, options):
        """One request and its response; with OSCORE, protected, and retried once on an Echo."""
        if self._sock is None:
            raise CoapTimeout("not connected")
        sec = self.security
        echo = None
        while True:
            mid = self._next_mid()
            token = urandom_int(32).to_bytes(4, "big")
            msg = coap.make_request(code, path, mid, token, coap.CON, payload, cf, query, accept)
            if options:
                for n, v in options:
                    msg.add_option(n, v)
            binding = None
            if sec is not None:
                if echo is not None:
                    msg.add_option(coap.ECHO, echo)
                msg, binding = sec.protect(msg)   # a fresh sequence number per request
            data = msg.encode()
            del msg
            r = await self._transmit(data, mid, token, binding)
            # RFC 9175 / RFC 8613 B.1.2: the hub lost its replay window and asks for
            # freshness; one retry carries its Echo value (with a new sequence number)
            if binding is None or echo is not None or r.code != coap.UNAUTHORIZED:
                return r
            echo = r.get_option(coap.ECHO)
            if echo is None:
                return r
            self.echoes += 1

    def _answer(self, r, binding):
        """What the exchange returns for a response `r` with its MID or token: `r` itself
        (plain CoAP), its verified inner message (OSCORE), or None: not ours, keep waiting.

        With OSCORE only a response that verifies for this very request counts. An
        unprotected one is a stray unless it is one of the hub's OSCORE errors (RFC 8613
        section 8.2: 4.00 verification failed, 4.01 unknown key or replay, 4.02 bad
        option), which carry no protection because the hub had no context to use."""
        if binding is None:
            return r
        if r.get_option(coap.OSCORE) is None:
            if r.code in (coap.BAD_REQUEST, coap.UNAUTHORIZED, coap.BAD_OPTION):
                raise SecurityError("the hub refused our OSCORE request: %s %s" % (
                    coap.code_str(r.code), _text(r.payload)))
            self.strays += 1
            return None
        inner = self.security.verify(binding, r)   # type: ignore[union-attr]
        if inner is None:
            self.strays += 1
        return inner

    async def _transmit(self, data, mid, token, binding):  # noqa: C901 - RFC 7252's exchange as one state machine (retransmission, separate responses, duplicates, RST)
        """Send `data` (CON) until its response comes; retransmissions resend the same bytes."""
        self.requests += 1
        timeout = self.ack_timeout_ms + urandom_int(16) * int(self.ack_timeout_ms * (self.factor - 1)) // 65536
        sent = ticks_ms()
        first = sent
        self._send(data)
        tries = 0
        acked = False
        deadline = ticks_add(sent, timeout)
        while True:
            dgram = await self._recv(ticks_diff(deadline, ticks_ms()))
            if dgram is None:
                if ticks_diff(deadline, ticks_ms()) > 0:
                    continue
                if acked:
                    raise CoapTimeout("no separate response")
                if tries >= self.max_retransmit:
                    raise CoapTimeout("no answer after %d retransmissions" % tries)
                tries += 1
                self.retx += 1
                timeout *= 2
                sent = ticks_ms()
                deadline = ticks_add(sent, timeout)
                self._send(data)
                continue
            try:
                r = coap.parse(dgram)
            except DecodeError:
                continue
            del dgram
            if r.mtype == coap.ACK and r.mid == mid:
                if r.code == coap.EMPTY:
                    if not acked:
                        acked = True
                        deadline = ticks_add(ticks_ms(), self.separate_ms)
                    continue
                if r.token != token:
                    continue
                r = self._answer(r, binding)
                if r is None:
                    continue
                self.last_rtt_ms = None if tries else ticks_diff(ticks_ms(), first)
                return r
            if r.mtype == coap.RST and r.mid == mid:
                raise CoapReset("reset by peer")
            if r.mtype in (coap.CON, coap.NON) and r.code >= 0x40:
                if r.mtype == coap.CON:
                    self._send(coap.empty_ack(r).encode())
                if r.token == token:
                    r = self._answer(r, binding)
                    if r is None:
                        continue
                    self.last_rtt_ms = None
                    return r
            # anything else: a duplicate or stray message, ignored


def _text(b):
    try:
        return b[:60].decode()
    except UnicodeError:
        return "(%d bytes)" % len(b)
