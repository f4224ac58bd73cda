"""CoAP ingest load generator and the ingest comparison: hub with/without fast path,
bare aiocoap, libcoap's coap-server, a bare Python recvfrom/sendto loop, and the fast path's
own front end answering without decoding or storing (`fast-echo`: the ceiling of the
batched design on the machine, with this load generator).

Load: `load(host, port, peers=500, peer_rate=200, ...)` opens one UDP socket
per peer (its own source port = its own CoAP endpoint) and drives them from
the C loop in smartpark.fast.loadgen: CON POST /r, Content-Format 112, a
4-record SenML-CBOR pack per message with bn "<node>/" and a base time that
advances per message (every report carries new readings), at most
`peer_rate` (<= 250) messages/s per peer, `window` exchanges outstanding per
peer, RFC 7252 retransmission. Result: counts by response code, p50/p99
latency, acknowledged (2.xx) per second.

Comparison: `compare(seconds=3, ...)` starts every target as its own process
on a free loopback port, runs the same load against each in turn (full load,
then half of what the fast hub managed for the latency figure, on the hub
restarted after the burst: one run to settle, whose nodes the measured run
continues with later readings) and returns
rows for a table (`table(rows)`). Each row also says where the CPU went at full
load: the target's CPU time (all its threads, user + system, from /proc) and
the load generator's, in microseconds per answered report, each with its
kernel share -- on a machine whose cores the two share, their sum bounds what
any target can answer, and the kernel's part (UDP over loopback, wake-ups) is
paid whatever the server does. The tools engineer's `smartpark bench`
calls `compare()`; benchmarks/test_ingest_bench.py runs it under
pytest-benchmark.

OSCORE (RFC 8613): `hub-oscore` is the hub with `security.mode = "oscore"` and
a key per peer made in its data directory with hub/keys.py; `aiocoap-oscore`
is aiocoap's OscoreSiteWrapper around the same do-nothing handler, with the
same kind of context per peer. Against them every peer protects its
requests with its own key and verifies the protected acks (in the load
generator's C loop), and its sequence numbers go on from run to run. The
plaintext hubs (`hub-fast`, `hub`) run with `security.mode = "off"`.

    python -m smartpark.tools.coapload bench [--seconds 3] [--peers 500] [--hold 600]
    python -m smartpark.tools.coapload bench --targets hub-fast,hub-oscore,aiocoap-oscore
    python -m smartpark.tools.coapload load --port 5683 [--peers 500 --rate 200 --seconds 5]
    python -m smartpark.tools.coapload load --port 5683 --keys DATA_DIR   # OSCORE, hub's keys
    python -m smartpark.tools.coapload serve-bare|serve-aiocoap|serve-fast-echo --port N
"""

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

from smartpark import fast as _fast
from smartpark.protocol import senml

_loadgen = _fast.loadgen  # None: not built or SMARTPARK_PUREPYTHON=1 (why: UNAVAILABLE)

CT_SENML_CBOR = 112


def _text(s):
    b = s.encode()
    assert len(b) < 24
    return bytes([0x60 + len(b)]) + b


def _f64(v):
    return b"\xfb" + struct.pack(">d", v)


def template(node, bt=0.0):
    """CON POST /r message with a 4-byte token and a 4-record pack; returns (bytes, bt offset)."""
    head = bytes([0x44, 0x02, 0, 0, 0, 0, 0, 0]) + b"\xb1r" + b"\x11\x70" + b"\xff"
    r0 = b"\xa5" + b"\x21" + _text(node + "/") + b"\x22"
    bt_off = len(head) + 1 + len(r0) + 1  # array head, then r0 up to bt, then 0xfb
    r0 += _f64(bt) + b"\x00" + _text("temp") + b"\x01" + _text("Cel") + b"\x02" + _f64(21.5)
    rest = b""
    for name, v in (("hum", 40.25), ("pm25", 7.5), ("co2", 612.0)):
        rest += b"\xa2\x00" + _text(name) + b"\x02" + _f64(v)
    payload = b"\x84" + r0 + rest
    msg = head + payload
    assert msg[bt_off - 1] == 0xFB
    return msg, bt_off


def check_template(node):
    """The template is a valid report (checked with the reference decoder)."""
    msg, _ = template(node, 1.7e9)
    records = senml.resolve(senml.decode(msg[msg.index(b"\xff") + 1:], "cbor"))
    assert [r["n"] for r in records] == [node + "/" + s for s in ("temp", "hum", "pm25", "co2")]
    return msg


def _raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 256), hard))


def peer_sockets(host, port, peers):
    """`peers` connected non-blocking UDP sockets (each its own source port: a CoAP peer)."""
    _raise_nofile(peers)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    try:
        for _ in range(peers):
            s = socket.socket(fam, socket.SOCK_DGRAM)
            socks.append(s)
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
            s.connect((host, port))
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


class OscorePeers:
    """The OSCORE side of a set of load peers: per peer a node name and its security
    context (the node's side), and the next sequence number, which goes on from run to run
    (the hub's replay windows remember the last ones)."""

    def __init__(self, nodes, contexts):
        self.nodes = list(nodes)
        self.keys = [(c.sender_key, c.recipient_key, c.common_iv, c.sender_id, c.recipient_id)
                     for c in contexts]
        self.seq = 0

    @classmethod
    def from_records(cls, records):
        """From hub/keys.py records (the node's side of each key)."""
        from smartpark.protocol import oscore
        return cls([r["node"] for r in records],
                   [oscore.Context(r["secret"], r["salt"], r["sender_id"], r["recipient_id"])
                    for r in records])


def load(host, port, peers=500, peer_rate=200.0, seconds=3.0, window=1, drain=3.0,
         max_messages=10 ** 9, ack_timeout=2.0, node_prefix=None, bt0=None, realtime=True,
         socks=None, mid_base=None, oscore=None):
    """Drive `peers` CoAP endpoints against host:port; returns the loadgen result dict plus
    `acked` (2.xx responses) and `acked_per_s`. Readings are stamped with the wall clock
    (`realtime`, as live nodes do; a message's time is unique per peer: + 1 us a message),
    or from `bt0` (default two days ago) 1 ms apart per message. `socks` (from
    peer_sockets, kept open) makes the same peers go on from an earlier run, as nodes keep
    their source port; `mid_base` must then move past the message IDs they used.
    `oscore` (OscorePeers, at least `peers` of them): peer i is node oscore.nodes[i] and
    protects its requests with its key; the sequence numbers move on past this run."""
    if _loadgen is None:
        raise RuntimeError("smartpark.fast.loadgen is not available (%s); it is built by "
                           "`python setup.py build_ext --inplace`" % _fast.UNAVAILABLE["loadgen"])
    prefix = node_prefix or "lg%x" % (os.getpid() & 0xFFFF)
    own = socks is None
    if own:
        socks = peer_sockets(host, port, peers)
    elif len(socks) != peers:
        raise ValueError("%d sockets for %d peers" % (len(socks), peers))
    try:
        tmpls = []
        offs = []
        if oscore is not None and len(oscore.nodes) < peers:
            raise ValueError("%d OSCORE peers for %d peers" % (len(oscore.nodes), peers))
        for i in range(peers):
            m, off = template(oscore.nodes[i] if oscore is not None else "%s-%d" % (prefix, i))
            tmpls.append(m)
            offs.append(off)
        if bt0 is None:
            bt0 = time.time() if realtime else float(int(time.time()) - 2 * 86400)
        res = _loadgen.run([s.fileno() for s in socks], tmpls, offs, bt0,
                           1e-6 if realtime else 0.001,
                           peer_rate=peer_rate, window=window, duration=seconds,
                           max_messages=max_messages, drain=drain, ack_timeout=ack_timeout,
                           mid_base=(os.getpid() & 0xFFFF) if mid_base is None else mid_base,
                           realtime=realtime,
                           keys=None if oscore is None else oscore.keys[:peers],
                           seq_base=0 if oscore is None else oscore.seq)
        if oscore is not None:
            oscore.seq = res["seq_next"] + 1
    finally:
        if own:
            for s in socks:
                s.close()
    acked = sum(v for k, v in res["codes"].items() if k.startswith("2."))
    res["acked"] = acked
    res["acked_per_s"] = acked / res["seconds"] if res["seconds"] > 0 else 0.0
    res["answered_per_s"] = res["responses"] / res["seconds"] if res["seconds"] > 0 else 0.0
    return res


# ---- the baselines --------------------------------------------------------------------------

def serve_bare(port, host="127.0.0.1", seconds=3600):
    """A bare recvfrom/sendto loop: answers every CON with an empty-payload 2.04 ACK (same MID
    and token), parses nothing else. The floor any Python server pays in syscalls."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))
    print("ready %d" % s.getsockname()[1], flush=True)
    s.settimeout(1.0)
    end = time.monotonic() + seconds
    recvfrom, sendto = s.recvfrom, s.sendto
    while time.monotonic() < end:
        try:
            d, a = recvfrom(2048)
        except socket.timeout:
            continue
        if len(d) >= 4:
            sendto(bytes([0x60 | (d[0] & 0x0F), 0x44]) + d[2:4 + (d[0] & 0x0F)], a)


def serve_aiocoap(port, host="127.0.0.1"):
    """A bare aiocoap server whose POST /r handler does nothing but answer 2.04."""
    import aiocoap
    import aiocoap.resource as resource_

    class Nothing(resource_.Resource):
        async def render_post(self, request):
            return aiocoap.Message(code=aiocoap.CHANGED)

    async def main():
        site = resource_.Site()
        site.add_resource(("r",), Nothing())
        await aiocoap.Context.create_server_context(site, bind=(host, port))
        print("ready %d" % port, flush=True)
        await asyncio.get_running_loop().create_future()

    asyncio.run(main())


def serve_aiocoap_oscore(port, ctxdir, host="127.0.0.1"):
    """aiocoap with OSCORE: its OscoreSiteWrapper around a site whose POST /r handler does
    nothing but answer 2.04, one server-side security context per directory in `ctxdir`
    (aiocoap's FilesystemSecurityContext, written by the bench)."""
    import aiocoap
    import aiocoap.resource as resource_
    from aiocoap.credentials import CredentialsMap
    from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

    class Nothing(resource_.Resource):
        async def render_post(self, request):
            return aiocoap.Message(code=aiocoap.CHANGED)

    async def main():
        site = resource_.Site()
        site.add_resource(("r",), Nothing())
        creds = CredentialsMap()
        creds.load_from_dict({":%s" % name: {"oscore": {"basedir": os.path.join(ctxdir, name)}}
                              for name in sorted(os.listdir(ctxdir))})
        ctx = await aiocoap.Context.create_server_context(OscoreSiteWrapper(site, creds),
                                                          bind=(host, port))
        ctx.server_credentials = creds
        print("ready %d" % port, flush=True)
        await asyncio.get_running_loop().create_future()

    asyncio.run(main())


def oscore_peers_for_aiocoap(ctxdir, peers):
    """OscorePeers with a fresh random key per peer, and the server's side of each key as
    an aiocoap context directory under `ctxdir` (what serve_aiocoap_oscore loads)."""
    from smartpark.protocol import oscore
    nodes, contexts = [], []
    for i in range(peers):
        secret, salt, kid = os.urandom(16), os.urandom(8), i.to_bytes(3, "big")
        nodes.append("bench-%d" % i)
        contexts.append(oscore.Context(secret, salt, kid, b""))
        d = os.path.join(ctxdir, "peer-%d" % i)
        os.makedirs(d, mode=0o700)
        with open(os.path.join(d, "settings.json"), "w") as f:
            json.dump({"sender-id_hex": "", "recipient-id_hex": kid.hex(),
                       "algorithm": "AES-CCM-16-64-128", "kdf-hashfun": "sha256"}, f)
        with open(os.path.join(d, "secret.json"), "w") as f:
            json.dump({"secret_hex": secret.hex(), "salt_hex": salt.hex()}, f)
    return OscorePeers(nodes, contexts)


def oscore_peers_for_hub(data_dir, peers):
    """OscorePeers with a key per peer made in the hub's key store (hub/keys.py)."""
    from smartpark.hub import keys
    return OscorePeers.from_records([keys.ensure(data_dir, "bench-%d" % i)[0]
                                     for i in range(peers)])


def serve_fast_echo(port, host="127.0.0.1", seconds=3600, room=1 << 30):
    """The hub's batched front end alone (smartpark.fast.udp: recvmmsg, CoAP parsing, the
    per-peer response cache, the hub's 2.04 ack, sendmmsg) answering every report at once:
    no decoding, no storage, no event loop. What the fast path could answer on this machine
    if everything behind it were free."""
    import select

    udp = _fast.udp
    if udp is None:
        raise RuntimeError("smartpark.fast.udp is not available (%s)" % _fast.UNAVAILABLE["udp"])
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))
    s.setblocking(False)
    ep = udp.Endpoint(s.fileno(), nmsg=256)
    ack = (_fast.ack_head(time.time()), 4)  # what the hub answers a stored 4-record report
    print("ready %d" % s.getsockname()[1], flush=True)
    poll = select.poll()
    poll.register(s.fileno(), select.POLLIN)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not poll.poll(1000):
            continue
        for _ in range(8):
            if not ep.recv():
                break
            reports, _others = ep.classify(time.monotonic(), room)
            if reports:
                ep.respond_many(reports, [ack] * len(reports))
            ep.flush()


def _cpu_s(pid):
    """(CPU seconds, of them in the kernel) the threads of process `pid` have used so far, or
    (None, None) if it is gone. The total from the scheduler's nanosecond counters
    (/proc/PID/task/*/schedstat) when there are any, the kernel's share from the process's
    clock ticks (/proc/PID/stat, 10 ms steps: for runs of seconds)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None, None
    tick = os.sysconf("SC_CLK_TCK")
    user, system = int(fields[11]) / tick, int(fields[12]) / tick
    try:
        total = 0
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        return total / 1e9, system
    except (OSError, ValueError, IndexError):
        return user + system, system


def _own_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_stime


def _per_report_us(before, after, answered):
    """Microseconds per answered report between two (total, kernel) CPU readings: (total,
    kernel), None where unknown (a process or thread gone meanwhile)."""
    out = []
    for b, a in zip(before, after, strict=True):
        ok = b is not None and a is not None and a >= b and answered
        out.append(round((a - b) / answered * 1e6, 2) if ok else None)
    return tuple(out)


def free_port(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Target:
    """One server process under test."""

    def __init__(self, name, cmd, port, cwd=None, ready=None, env=None):
        self.name = name
        self.cmd = cmd
        self.port = port
        self.cwd = cwd
        self.ready = ready
        self.env = env
        self.proc = None
        self.port0 = port  # 0: the process picks its port and names it in the ready line
        self.http = None   # a hub's HTTP port (from its ready line): its /metrics
        self.oscore = None  # OscorePeers: the peers must speak OSCORE to this target

    def start(self, timeout=30):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     cwd=self.cwd, text=True, env=self.env)
        if self.ready is None:
            time.sleep(0.5)
            return self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(self.ready):
                fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
                if self.port == 0:
                    self.port = int(fields["coap"])
                if fields.get("http", "").isdigit():
                    self.http = int(fields["http"])
                return self
        self.stop()
        raise RuntimeError("%s did not start" % self.name)

    def rss_kb(self):
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def gauge(self, name):
        """One gauge from a hub's /metrics (None for other targets or when it is absent)."""
        if self.http is None:
            return None
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.http, timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None

    def restart(self):
        """Stop (a hub moves everything it holds and exits) and start again."""
        self.stop()
        self.port = self.port0
        return self.start()

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
            self.proc = None


def targets(workdir, names=("hub-fast", "hub", "aiocoap", "libcoap", "bare", "fast-echo"),
            peers=500):
    py = sys.executable
    out = []
    for name in names:
        if name in ("hub-fast", "hub", "hub-oscore"):
            d = os.path.join(workdir, name)
            os.makedirs(d, exist_ok=True)
            cmd = [py, "-m", "smartpark.tools.cli", "hub", "--data", d, "--coap-bind",
                   "127.0.0.1", "--coap-port", "0", "--http-bind", "127.0.0.1", "--http-port",
                   "0", "--no-zeroconf", "--no-multicast",
                   "--security", "oscore" if name == "hub-oscore" else "off"]
            if name == "hub":
                cmd.append("--no-fast-path")
            tg = Target(name, cmd, 0, cwd=d, ready="smartpark hub ready")
            if name == "hub-oscore":
                tg.oscore = oscore_peers_for_hub(d, peers)
            out.append(tg)
        elif name == "aiocoap-oscore":
            p = free_port()
            d = os.path.join(workdir, name)
            os.makedirs(d, exist_ok=True)
            tg = Target(name, [py, "-m", "smartpark.tools.coapload", "serve-aiocoap-oscore",
                               "--port", str(p), "--ctxdir", d], p, ready="ready")
            tg.oscore = oscore_peers_for_aiocoap(d, peers)
            out.append(tg)
        elif name == "aiocoap":
            p = free_port()
            out.append(Target(name, [py, "-m", "smartpark.tools.coapload", "serve-aiocoap",
                                     "--port", str(p)], p, ready="ready"))
        elif name in ("bare", "fast-echo"):
            p = free_port()
            out.append(Target(name, [py, "-m", "smartpark.tools.coapload", "serve-" + name,
                                     "--port", str(p)], p, ready="ready"))
        elif name == "libcoap":
            exe = shutil.which("coap-server-notls") or shutil.which("coap-server")
            if exe is None:
                continue
            p = free_port()
            out.append(Target(name, [exe, "-A", "127.0.0.1", "-p", str(p)], p))
        else:
            raise ValueError("unknown target %r" % name)
    return out


def compare(seconds=3.0, peers=500, peer_rate=250.0, window=4, half_load=True, hold=0.0,
            names=("hub-fast", "hub", "aiocoap", "libcoap", "bare", "fast-echo"), workdir=None,
            say=None):
    """Run the same load against every target (one at a time); returns a list of row dicts:
    target, acked/s, answered/s, codes, p50/p99 (ms) at full load, and for the hubs p99 at
    half of the fast hub's throughput; RSS before/after. `hold` > 0 adds a long run of the
    fast hub at half load with RSS sampled every 10 s (the memory-flat check)."""
    say = say or (lambda s: None)
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="smartpark-bench-")
    rows = []
    fast_rate = None
    try:
        for tg in targets(workdir, names, peers):
            tg.start(timeout=60)
            try:
                load("127.0.0.1", tg.port, peers=min(peers, 50), peer_rate=50, seconds=0.5,
                     window=1, drain=1.0, node_prefix="warm", oscore=tg.oscore)
                rss0 = tg.rss_kb()
                cpu0, own0 = _cpu_s(tg.proc.pid), _own_cpu_s()
                r = load("127.0.0.1", tg.port, peers=peers, peer_rate=peer_rate, seconds=seconds,
                         window=window, drain=3.0, node_prefix="full", oscore=tg.oscore)
                cpu1, own1 = _cpu_s(tg.proc.pid), _own_cpu_s()
                answered = sum(r["codes"].values())
                # where the CPU went (the drain included: work done for these answers)
                cpu_us, sys_us = _per_report_us(cpu0, cpu1, answered)
                lg_us, lg_sys_us = _per_report_us(own0, own1, answered)
                row = {"target": tg.name, "acked_per_s": r["acked_per_s"],
                       "answered_per_s": r["answered_per_s"], "codes": r["codes"],
                       "p50_ms": _ms(r["p50"]), "p99_ms": _ms(r["p99"]),
                       "timeouts": r["timeouts"], "retransmissions": r["retransmissions"],
                       "rss_kb_before": rss0, "rss_kb_after": tg.rss_kb(),
                       "cpu_us": cpu_us, "sys_us": sys_us,
                       "loadgen_cpu_us": lg_us, "loadgen_sys_us": lg_sys_us}
                if tg.oscore is not None:  # responses that did not verify, or came unprotected
                    row["unverified"] = r["unverified"]
                    row["unprotected"] = r["unprotected"]
                if tg.name == "hub-fast":
                    fast_rate = r["acked_per_s"]
                if half_load and tg.name.startswith("hub") and fast_rate:
                    half = max(1.0, min(peer_rate, fast_rate / 2 / peers))
                    # steady state: a hub restarted after the full-load burst (whose
                    # backlog it moved at its stop), the same nodes, known to the hub (a
                    # node's first report creates its series), then later readings
                    tg.restart()
                    load("127.0.0.1", tg.port, peers=peers, peer_rate=half, seconds=seconds,
                         window=window, drain=3.0, node_prefix="half", oscore=tg.oscore)
                    h = load("127.0.0.1", tg.port, peers=peers, peer_rate=half,
                             seconds=seconds, window=window, drain=3.0, node_prefix="half",
                             oscore=tg.oscore)
                    row["half_load_per_s"] = half * peers
                    row["half_p50_ms"] = _ms(h["p50"])
                    row["half_p99_ms"] = _ms(h["p99"])
                if hold > 0 and tg.name == "hub-fast" and fast_rate:
                    row["hold"] = _hold(tg, peers, max(1.0, min(peer_rate, fast_rate / 2 / peers)),
                                        window, hold, say)
                rows.append(row)
                say("%s: %s" % (tg.name, json.dumps(row)))
            finally:
                tg.stop()
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    base = {r["target"]: r for r in rows}
    for r in rows:
        for b in ("aiocoap", "libcoap", "bare"):
            if b in base and base[b]["answered_per_s"]:
                r["x_" + b] = r["acked_per_s"] / base[b]["answered_per_s"]
    osc = base.get("hub-oscore")
    if osc is not None:  # what OSCORE costs the hub, and the hub against aiocoap with OSCORE
        if base.get("hub-fast", {}).get("acked_per_s"):
            osc["x_plaintext"] = osc["acked_per_s"] / base["hub-fast"]["acked_per_s"]
        if base.get("aiocoap-oscore", {}).get("answered_per_s"):
            osc["x_aiocoap_oscore"] = (osc["acked_per_s"]
                                       / base["aiocoap-oscore"]["answered_per_s"])
    return rows


def _hold(tg, peers, rate, window, hold, say):
    """Half load for `hold` seconds in 10-s windows, by the same peers throughout (their
    sockets stay open, as nodes keep their source port; message IDs go on from window to
    window, so none repeats within EXCHANGE_LIFETIME)."""
    samples = []
    t_end = time.monotonic() + hold
    seconds = min(10.0, hold)
    socks = peer_sockets("127.0.0.1", tg.port, peers)
    mid = os.getpid() & 0xFFFF
    try:
        while time.monotonic() < t_end:
            r = load("127.0.0.1", tg.port, peers=peers, peer_rate=rate, seconds=seconds,
                     window=window, drain=2.0, node_prefix="hold", socks=socks, mid_base=mid)
            mid = (mid + int(rate * seconds) + 2 * window + 1) & 0xFFFF
            sq = tg.gauge("smartpark_sqlite_memory_bytes")
            # (acked/s, RSS kB, p99 ms, of the RSS: kB SQLite holds -- its page caches)
            samples.append((round(r["acked_per_s"]), tg.rss_kb(), _ms(r["p99"]),
                            None if sq is None else round(sq / 1024)))
            say("hold: %r" % (samples[-1],))
    finally:
        for s in socks:
            s.close()
    return samples


def _ms(x):
    return None if x is None else round(x * 1000.0, 2)


def table(rows):
    """Markdown table of compare() rows."""
    oscore = any("x_plaintext" in r or "x_aiocoap_oscore" in r for r in rows)
    out = ["| target | acked/s | answered/s | p50 ms | p99 ms | p99 ms @ half load | codes "
           "| x aiocoap | x libcoap | RSS kB before/after | CPU us/report: target (kernel),"
           " loadgen (kernel) |" + (" x plaintext hub | x aiocoap-oscore |" if oscore else ""),
           "|---|---:|---:|---:|---:|---:|---|---:|---:|---|---|" + ("---:|---:|" if oscore
                                                                     else "")]
    for r in rows:
        extra = ""
        if oscore:
            extra = " %s | %s |" % (
                "%.2f" % r["x_plaintext"] if "x_plaintext" in r else "",
                "%.1f" % r["x_aiocoap_oscore"] if "x_aiocoap_oscore" in r else "")
        out.append(("| %s | %.0f | %.0f | %s | %s | %s | %s | %s | %s | %s/%s | %s (%s), %s (%s) |"
                    + extra) % (
            r["target"], r["acked_per_s"], r["answered_per_s"], r["p50_ms"], r["p99_ms"],
            r.get("half_p99_ms", ""), " ".join("%s:%d" % kv for kv in sorted(r["codes"].items())),
            "%.1f" % r["x_aiocoap"] if "x_aiocoap" in r else "",
            "%.2f" % r["x_libcoap"] if "x_libcoap" in r else "",
            r["rss_kb_before"], r["rss_kb_after"], r.get("cpu_us"), r.get("sys_us"),
            r.get("loadgen_cpu_us"), r.get("loadgen_sys_us")))
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="smartpark.tools.coapload", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="compare hub (fast/off), aiocoap, libcoap, bare loop")
    b.add_argument("--seconds", type=float, default=3.0)
    b.add_argument("--peers", type=int, default=500)
    b.add_argument("--peer-rate", type=float, default=250.0)
    b.add_argument("--window", type=int, default=4)
    b.add_argument("--hold", type=float, default=0.0, help="seconds of half load on the fast hub")
    b.add_argument("--targets", default="hub-fast,hub,aiocoap,libcoap,bare,fast-echo",
                   help="also: hub-oscore, aiocoap-oscore")
    b.add_argument("--json", action="store_true")
    lo = sub.add_parser("load", help="drive one server")
    lo.add_argument("--host", default="127.0.0.1")
    lo.add_argument("--port", type=int, required=True)
    lo.add_argument("--peers", type=int, default=500)
    lo.add_argument("--rate", type=float, default=200.0, help="messages/s per peer (<= 250)")
    lo.add_argument("--window", type=int, default=1)
    lo.add_argument("--seconds", type=float, default=3.0)
    lo.add_argument("--keys", metavar="DATA_DIR",
                    help="speak OSCORE as nodes bench-0..N-1, with keys from (or made in) the "
                         "hub's key store in DATA_DIR; a running hub picks new keys up itself")
    for name in ("serve-bare", "serve-aiocoap", "serve-fast-echo", "serve-aiocoap-oscore"):
        s = sub.add_parser(name)
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--host", default="127.0.0.1")
        if name == "serve-aiocoap-oscore":
            s.add_argument("--ctxdir", required=True,
                           help="one aiocoap OSCORE context directory per peer")
    a = ap.parse_args(argv)
    if a.cmd == "bench":
        rows = compare(a.seconds, a.peers, a.peer_rate, a.window, hold=a.hold,
                       names=tuple(a.targets.split(",")),
                       say=lambda s: print(s, file=sys.stderr, flush=True))
        print(json.dumps(rows, indent=1) if a.json else table(rows))
    elif a.cmd == "load":
        peers = None
        if a.keys:
            peers = oscore_peers_for_hub(a.keys, a.peers)
            # sequence numbers from the clock in ms: ahead of any earlier run of these peers
            # (a peer sends at most 250 a second)
            peers.seq = int((time.time() - 1.7e9) * 1000)
        print(json.dumps(load(a.host, a.port, a.peers, a.rate, a.seconds, a.window,
                              oscore=peers), indent=1))
    elif a.cmd == "serve-bare":
        serve_bare(a.port, a.host)
    elif a.cmd == "serve-aiocoap":
        serve_aiocoap(a.port, a.host)
    elif a.cmd == "serve-fast-echo":
        serve_fast_echo(a.port, a.host)
    elif a.cmd == "serve-aiocoap-oscore":
        serve_aiocoap_oscore(a.port, a.ctxdir, a.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
