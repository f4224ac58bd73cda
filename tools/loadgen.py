"""`smartpark simulate --light`: a CPython/asyncio load generator for 10,000+ virtual nodes.

Each virtual node behaves like the firmware on the wire, without running
it: every `interval` seconds (random phase) it records `sensors` readings
(ms time stamps, strictly increasing per sensor) into its in-memory outbox
and sends the oldest ones (up to BATCH) as one CON POST /r, Content-Format
112, SenML-CBOR with bn "<node>/" (protocol/senml.py). A 2.xx response acks
exactly the readings of that pack (the report ack's `stored`/`duplicates`
are tallied); 4.xx drops them (counted); 5.xx or no answer keeps them for
the next report. Retransmission follows RFC 7252 4.2: ACK_TIMEOUT 2 s x
random factor up to 1.5, doubled each time, MAX_RETRANSMIT 4; an empty ACK
(separate response) stops retransmission and the CON response is acked.

The virtual nodes share `sockets` UDP sockets (one per node would exhaust
file descriptors); each socket matches responses by token. After
`duration` the nodes stop recording and keep sending until their outboxes
are empty or `drain` seconds have passed.

With `keys_data` (the hub's data directory) every virtual node gets a new
OSCORE key in the hub's key store for this run (hub/keys.py; the hub picks
keys up while it runs) and protects its requests with it (protocol/oscore.py,
sequence numbers from 0, held in memory: the key lives for one run). As on a
node, only a response that verifies under the node's key for that request
counts (`unverified` counts the others); an unprotected 4.01 keeps the
readings.
"""

import asyncio
import os
import random
import socket
import struct
import time

from smartpark.protocol import coap, oscore, report, senml
from smartpark.protocol.errors import DecodeError, OscoreError
from smartpark.tools.progress import say

ACK_TIMEOUT = 2.0
ACK_RANDOM_FACTOR = 1.5
MAX_RETRANSMIT = 4
BATCH = 40
SENSOR_NAMES = ("temp", "hum", "co2", "lux", "bay", "pm25", "noise", "flow")
UNITS = {"temp": "Cel", "hum": "%RH", "co2": "ppm", "lux": "lx", "bay": "", "pm25": "ug/m3",
         "noise": "dB", "flow": "m3/s"}


class VNode:
    __slots__ = ("id", "sensors", "outbox", "recorded", "acknowledged", "dropped",
                 "duplicates", "last_t", "busy", "rng", "ctx", "seq", "refused")

    def __init__(self, node_id, sensors, seed):
        self.id = node_id
        self.sensors = sensors
        self.outbox = []          # [(name, t, value)] oldest first
        self.recorded = self.acknowledged = self.dropped = self.duplicates = 0
        self.last_t = {}
        self.busy = False
        self.rng = random.Random(seed)
        self.ctx = None   # its OSCORE context (protocol/oscore.Context), with a key
        self.seq = 0
        self.refused = 0  # packs the hub answered with an unprotected 4.01

    def record(self):
        now = round(time.time(), 3)
        for i, name in enumerate(self.sensors):
            t = now
            last = self.last_t.get(name)
            if last is not None and t <= last:
                t = round(last + 0.001, 3)
            self.last_t[name] = t
            v = round(20.0 + 5.0 * self.rng.random() + i, 2)
            self.outbox.append((name, t, v))
            self.recorded += 1

    def pack(self):
        batch = self.outbox[:BATCH]
        recs = []
        for name, t, v in batch:
            r = {"n": self.id + "/" + name, "t": t, "v": v}
            if UNITS.get(name):
                r["u"] = UNITS[name]
            recs.append(r)
        return len(batch), senml.encode(recs, "cbor", base_name=self.id + "/")


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, gen):
        self.gen = gen
        self.transport = None
        self.pending = {}   # token -> future
        self.mid = random.randrange(0x10000)

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        try:
            msg = coap.parse(data)
        except (DecodeError, ValueError):
            self.gen.bad += 1
            return
        if msg.mtype == coap.CON:   # separate response: ack it
            self.transport.sendto(coap.empty_ack(msg).encode())
            self.gen.separate += 1
        fut = self.pending.get(msg.token) if msg.token else None
        if msg.mtype == coap.ACK and msg.code == 0:   # empty ACK: answer comes later
            for f in self.pending.values():
                if getattr(f, "mid", None) == msg.mid:
                    f.acked = True
            return
        if msg.mtype == coap.RST:
            for f in list(self.pending.values()):
                if getattr(f, "mid", None) == msg.mid and not f.done():
                    f.set_result(None)
            return
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def error_received(self, exc):
        self.gen.errors += 1

    def next_mid(self):
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid


class LoadGen:
    def __init__(self, target, sockets):
        self.target = target
        self.nsockets = sockets
        self.endpoints = []
        self.bad = self.errors = self.requests = self.retransmits = self.separate = 0
        self.unverified = 0
        self.stopping = False
        self._token = random.randrange(1 << 32)

    async def open(self):
        loop = asyncio.get_running_loop()
        host, port = self.target
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(self.nsockets):
            _t, ep = await loop.create_datagram_endpoint(
                lambda: _Endpoint(self), remote_addr=(host, port), family=fam)
            self.endpoints.append(ep)

    def close(self):
        for ep in self.endpoints:
            if ep.transport:
                ep.transport.close()

    async def request(self, ep, payload, node=None):
        """CON POST /r with retransmission; the response Message (the verified inner one when
        `node` has a key) or None."""
        loop = asyncio.get_running_loop()
        self._token = (self._token + 1) & 0xFFFFFFFF
        token = struct.pack(">I", self._token)
        mid = ep.next_mid()
        msg = coap.make_request(coap.POST, "/r", mid, token, payload=payload,
                                content_format=senml.CT_SENML_CBOR)
        binding = None
        if node is not None and node.ctx is not None:
            msg, binding = oscore.protect_request(node.ctx, node.seq, msg)
            node.seq += 1
        data = msg.encode()
        fut = loop.create_future()
        fut.mid = mid
        fut.acked = False
        ep.pending[token] = fut
        timeout = ACK_TIMEOUT * (1 + random.random() * (ACK_RANDOM_FACTOR - 1))
        try:
            self.requests += 1
            ep.transport.sendto(data)
            for attempt in range(MAX_RETRANSMIT + 1):
                try:
                    return self._verified(
                        await asyncio.wait_for(asyncio.shield(fut), timeout), node, binding)
                except asyncio.TimeoutError:
                    if fut.acked:   # separate response pending: wait up to the exchange lifetime
                        try:
                            return self._verified(await asyncio.wait_for(fut, 30), node,
                                                  binding)
                        except asyncio.TimeoutError:
                            return None
                    if attempt == MAX_RETRANSMIT:
                        return None
                    self.retransmits += 1
                    ep.transport.sendto(data)
                    timeout *= 2
            return None
        finally:
            ep.pending.pop(token, None)

    def _verified(self, resp, node, binding):
        """The response a protected request may use: its verified inner message; an
        unprotected 4.xx from the hub (it could not verify us) as it is; else None."""
        if resp is None or binding is None:
            return resp
        if resp.get_option(coap.OSCORE) is None and resp.code >> 5 == 4:
            return resp
        try:
            return oscore.unprotect_response(node.ctx, binding, resp)
        except (OscoreError, DecodeError):
            self.unverified += 1
            return None

    async def report(self, node, ep):
        if node.busy or not node.outbox:
            return
        node.busy = True
        try:
            while node.outbox:
                n, payload = node.pack()
                resp = await self.request(ep, payload, node)
                if resp is None:
                    return
                cls = resp.code >> 5
                if cls == 2:
                    del node.outbox[:n]
                    node.acknowledged += n
                    try:
                        node.duplicates += report.decode_ack(resp.payload)["duplicates"]
                    except (DecodeError, ValueError, TypeError, KeyError):
                        pass
                elif resp.code == coap.UNAUTHORIZED:
                    node.refused += 1   # the hub did not take our key: keep the readings
                    return
                elif cls == 4:
                    del node.outbox[:n]
                    node.dropped += n
                else:
                    return
                if not self.stopping:
                    return   # one pack per report while running, like a report cycle
        finally:
            node.busy = False

    async def node_loop(self, node, ep, interval, t_stop):
        await asyncio.sleep(random.random() * interval)
        while time.monotonic() < t_stop:
            node.record()
            asyncio.ensure_future(self.report(node, ep))
            await asyncio.sleep(interval)


def _keys(keys_data, nodes, quiet):
    """A new OSCORE key per virtual node, stored in the hub's key store for this run."""
    from smartpark.hub import keys as keystore
    taken = {r["sender_id"] for r in keystore.load_all(keys_data)
             if r["node"] not in {nd.id for nd in nodes}}
    recs = []
    for nd in nodes:
        rec = keystore.new_record(nd.id, taken)
        taken.add(rec["sender_id"])
        recs.append(rec)
        nd.ctx = oscore.Context(rec["secret"], rec["salt"], rec["sender_id"],
                                rec["recipient_id"])
    keystore.put_many(keys_data, recs, replace=True)
    say("simulate --light: %d new OSCORE keys in %s" % (len(recs), keystore.keys_dir(keys_data)),
        quiet)


async def _run(n, target, duration, drain, interval, sensors, sockets, prefix, quiet,
               keys_data=None):
    gen = LoadGen(target, max(1, min(sockets, n)))
    await gen.open()
    width = max(5, len(str(n)))
    sensor_names = [SENSOR_NAMES[i % len(SENSOR_NAMES)] + ("" if i < len(SENSOR_NAMES) else str(i))
                    for i in range(sensors)]
    nodes = [VNode("%s-%0*d" % (prefix, width, i + 1), sensor_names, i) for i in range(n)]
    if keys_data is not None:
        _keys(keys_data, nodes, quiet)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    t0 = time.monotonic()
    t_stop = t0 + duration if duration else float("inf")
    say("simulate --light: %d virtual nodes, %d readings each every %.1f s, %d sockets -> %s:%d"
        % (n, sensors, interval, len(gen.endpoints), target[0], target[1]), quiet)
    tasks = [asyncio.ensure_future(gen.node_loop(node, gen.endpoints[i % len(gen.endpoints)],
                                                 interval, t_stop))
             for i, node in enumerate(nodes)]
    waiter = asyncio.ensure_future(stop.wait())
    try:
        last = time.monotonic()
        while time.monotonic() < t_stop and not stop.is_set():
            await asyncio.wait([waiter], timeout=min(1.0, max(0.01, t_stop - time.monotonic())))
            if not quiet and time.monotonic() - last >= 5:
                last = time.monotonic()
                acked = sum(nd.acknowledged for nd in nodes)
                say("  %5.0f s: %d requests, %d readings acknowledged, %d retransmissions"
                    % (last - t0, gen.requests, acked, gen.retransmits))
        for t in tasks:
            t.cancel()
        run_s = time.monotonic() - t0
        gen.stopping = True
        say("simulate --light: draining (up to %.0f s)" % drain, quiet)
        t_drain = time.monotonic() + drain
        while time.monotonic() < t_drain and any(nd.outbox for nd in nodes):
            for i, node in enumerate(nodes):
                if node.outbox and not node.busy:
                    asyncio.ensure_future(gen.report(node, gen.endpoints[i % len(gen.endpoints)]))
            await asyncio.sleep(0.5)
    finally:
        waiter.cancel()
        for t in tasks:
            t.cancel()
        gen.close()
    summary = [{"node": nd.id, "recorded": nd.recorded, "acknowledged": nd.acknowledged,
                "pending": len(nd.outbox), "dropped": nd.dropped, "duplicates": nd.duplicates}
               for nd in nodes]
    extra = {"mode": "light", "requests": gen.requests, "retransmissions": gen.retransmits,
             "separate_responses": gen.separate, "unparsable": gen.bad,
             "oscore": keys_data is not None, "unverified": gen.unverified,
             "refused_4_01": sum(nd.refused for nd in nodes),
             "run_seconds": round(run_s, 3),
             "machine": "%s, %d cpus" % (os.uname().machine, os.cpu_count() or 0)}
    return summary, extra


def run(n, target, duration=None, drain=15.0, interval=10.0, sensors=2, sockets=64,
        prefix="vnode", quiet=False, keys_data=None):
    return asyncio.run(_run(n, target, duration, drain, interval, sensors, sockets, prefix, quiet,
                            keys_data))
