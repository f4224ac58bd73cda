"""Test harness: real unix-port nodes, a real hub, a lossy UDP proxy, and the ledger check.

Used by tests/firmware, tests/e2e and tests/reliability. Every process this
starts is tracked and stopped by its own handle (never by name).

Security is on, as in a park: the hub requires OSCORE (`security.mode =
"oscore"`), and a node made by the `make_node` fixture gets its key from the
key store of the hub the test started last (`Hub.latest`), the way `smartpark
flash` and `simulate` provision a real one (tools/provision.py). A test whose
node talks to another server (aiocoap, libcoap) starts no hub, so its node has
no key and speaks plaintext.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from smartpark.hub.process import start_hub
from smartpark.hub.store import stored_readings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from ledger import parse_ledger  # noqa: E402
from peers import require  # noqa: E402,F401  (used by the e2e tests)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRMWARE = os.path.join(ROOT, "firmware")
MAIN = os.path.join(FIRMWARE, "main.py")




def free_udp_port(family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout, step=0.2):
    """pred()'s value once it is true, polling up to `timeout` s (then its last value)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def node_config(node, hub, **kw):
    cfg = {
        "node": node, "hub": hub, "report_interval": 1, "ledger": True,
        "coap": {"ack_timeout": 0.3, "max_retransmit": 4},
        "sim": {"seed": abs(hash(node)) % 1000},
        "sensors": [
            {"name": "air", "driver": "bme280", "pins": {"sda": 21, "scl": 22}},
            {"name": "bay", "driver": "hcsr04", "bus": "pin", "pins": {"trig": 5, "echo": 18}},
            {"name": "meter", "driver": "pulse", "bus": "pin"},
        ],
    }
    cfg.update(kw)
    return cfg


class Node:
    """One `micropython firmware/main.py` process with its own flash directory."""

    def __init__(self, flash, config, micropython_bin, mpypath, env=None):
        self.flash = str(flash)
        os.makedirs(self.flash, exist_ok=True)
        if config is not None:
            with open(os.path.join(self.flash, "config.json"), "w") as f:
                json.dump(config, f)
        self.bin = micropython_bin
        self.mpypath = mpypath
        self.env = env or {}
        self.proc = None
        self._log = None

    def start(self, **env):
        e = dict(os.environ)
        e["MICROPYPATH"] = ":".join([".frozen", FIRMWARE, self.mpypath])
        e.update(self.env)
        e.update({k: str(v) for k, v in env.items()})
        self._log = open(os.path.join(self.flash, "node.out"), "ab")
        self.proc = subprocess.Popen([self.bin, "-X", "heapsize=4M", MAIN], cwd=self.flash, env=e,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def run(self, timeout=60, **env):
        self.start(**env)
        return self.wait(timeout)

    def wait(self, timeout=60):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            self._close()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close()

    def stop(self):
        """Ctrl-C, like a developer at the console; SIGKILL if it does not go."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    def _close(self):
        if self._log:
            self._log.close()
            self._log = None

    def output(self):
        try:
            with open(os.path.join(self.flash, "node.out"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def status(self):
        try:
            with open(os.path.join(self.flash, "status.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def ledger(self):
        """Readings the node recorded: {(sensor, hub time)}; unresolvable ones counted apart."""
        try:
            with open(os.path.join(self.flash, "clock.json")) as f:
                clock = f.read()
        except OSError:
            clock = None
        with open(os.path.join(self.flash, "ledger.log")) as f:
            return parse_ledger(f.read(), clock)


class Hub:
    """`smartpark hub` on loopback with a fresh data directory, OSCORE required."""

    TOKEN = "test-token"
    latest = None   # the Hub started last (make_node provisions its nodes' keys from it)

    def __init__(self, data, port=0, bind="127.0.0.1", multicast=False, zeroconf=False,
                 config=None):
        self.data = str(data)
        os.makedirs(self.data, exist_ok=True)
        self.bind = bind
        self.multicast = multicast
        self.zeroconf = zeroconf
        self.config = config   # a hub.toml path, or None
        self.port = port
        self.http_port = None
        self.proc = None

    def start(self, timeout=30):
        args = ["--data", self.data, "--coap-bind", self.bind, "--coap-port", str(self.port),
                "--http-bind", "127.0.0.1", "--http-port", "0", "--http-token", self.TOKEN,
                ] + ([] if self.zeroconf else ["--no-zeroconf"]) + (
                    [] if self.multicast else ["--no-multicast"]) + (
                    ["--config", str(self.config)] if self.config else [])
        self.handle = start_hub(args, cwd=self.data, timeout=timeout,
                                log_path=os.path.join(self.data, "hub.out"))
        self.proc = self.handle.proc
        self.port = self.handle.coap_port
        self.http_port = self.handle.http_port
        Hub.latest = self
        return self

    def provision(self, node, flash):
        """Give `node` (flash directory `flash`) its key from this hub's key store."""
        from smartpark.tools.provision import provision_dir
        provision_dir(self.data, node, str(flash))

    def stop(self):
        if self.proc is not None:
            self.handle.stop(timeout=15)

    def put_config(self, node, doc):
        import urllib.request
        req = urllib.request.Request(
            "http://127.0.0.1:%d/api/nodes/%s/config" % (self.http_port, node),
            data=json.dumps(doc).encode(), method="PUT",
            headers={"Authorization": "Bearer " + self.TOKEN, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def readings(self, node):
        """[(sensor, t)] the hub stored for `node` (read-only, while it runs or after).

        The hub commits new readings to its journal and moves them into `readings`
        later (hub/store/journal.py); both are durable, so all count, and a reading
        stored twice shows as two rows.
        """
        db = os.path.join(self.data, "hub.sqlite3")
        return [(sensor, t) for _nd, sensor, t, _k, _v in stored_readings(db, node)]


def check_exactly_once(ledger, hub_rows, max_timeless=1000, extra_ok=0):
    """Every recorded reading is in the hub once; the hub holds nothing else but the
    time-less sync readings (health.uptime) and at most `extra_ok` readings written to
    the outbox just before a kill and not yet to the ledger."""
    rec = {}
    for k in ledger:
        rec[k] = rec.get(k, 0) + 1
    dup_local = [k for k, n in rec.items() if n > 1]
    assert not dup_local, "node recorded the same (sensor, time) twice: %r" % dup_local[:5]
    hub = set(hub_rows)
    assert len(hub) == len(hub_rows), "the hub stored %d readings twice" % (len(hub_rows) - len(hub))
    missing = [k for k in rec if k not in hub]
    assert not missing, "%d recorded readings missing at the hub, e.g. %r" % (len(missing), missing[:5])
    extra = [k for k in hub if k not in rec]
    extra_uptime = [k for k in extra if k[0] == "health.uptime"]
    others = [k for k in extra if k[0] != "health.uptime"]
    assert len(others) <= extra_ok, "hub has %d readings the node never recorded: %r" % (
        len(others), others[:5])
    assert len(extra_uptime) <= max_timeless
    return len(rec), len(extra)


class LossyProxy:
    """UDP proxy dropping a share of datagrams in both directions (seeded)."""

    def __init__(self, upstream, loss=0.3, seed=1):
        self.upstream = upstream
        self.loss = loss
        self.rng = random.Random(seed)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.peers = {}   # client addr -> upstream socket
        self.dropped = [0, 0]
        self.passed = [0, 0]
        self._stop = False
        self._threads = [threading.Thread(target=self._down, daemon=True)]
        self._threads[0].start()

    def _down(self):
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(2048)
            except (socket.timeout, OSError):
                continue
            up = self.peers.get(addr)
            if up is None:
                up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                up.bind(("127.0.0.1", 0))
                up.settimeout(0.2)
                self.peers[addr] = up
                t = threading.Thread(target=self._up, args=(addr, up), daemon=True)
                t.start()
                self._threads.append(t)
            if self.rng.random() < self.loss:
                self.dropped[0] += 1
                continue
            self.passed[0] += 1
            up.sendto(data, ("127.0.0.1", self.upstream))

    def _up(self, addr, up):
        while not self._stop:
            try:
                data, _ = up.recvfrom(2048)
            except (socket.timeout, OSError):
                continue
            if self.rng.random() < self.loss:
                self.dropped[1] += 1
                continue
            self.passed[1] += 1
            self.sock.sendto(data, addr)

    def close(self):
        self._stop = True
        for t in self._threads:
            t.join(2)
        for s in self.peers.values():
            s.close()
        self.sock.close()


@pytest.fixture(autouse=True)
def _no_latest_hub():
    Hub.latest = None
    yield
    Hub.latest = None


@pytest.fixture
def hub(tmp_path):
    h = Hub(tmp_path / "hub").start()
    yield h
    h.stop()


@pytest.fixture
def make_node(tmp_path, micropython_bin, micropython_path):
    nodes = []

    def make(name, config, key=True):
        if key and Hub.latest is not None:
            Hub.latest.provision(config.get("node", name) if config else name, tmp_path / name)
        n = Node(tmp_path / name, config, micropython_bin, micropython_path)
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.kill()
