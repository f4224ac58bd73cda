"""Helpers for the hub tests: a real hub process on loopback, SenML packs, HTTP/metrics access.


`HubProc` runs `python -m smartpark.tools.cli hub` with CoAP and HTTP on port
0 (the hub reports the ports it bound on its "ready" line), a SQLite file in
a temporary directory, no zeroconf and no multicast unless asked.
"""

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
import urllib.error
import urllib.request

import cbor2
from smartpark.hub.process import HubStartError, start_hub

# Readings are stamped near the present (hour-aligned): the hub's retention
# (30 days by default) would rightly delete anything older.
T0 = float(int(time.time()) // 3600 * 3600 - 7200)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # for peers
from peers import require  # noqa: E402,F401  (re-exported for the hub tests)


class HubProc:
    """A hub process (smartpark.hub.process.start_hub: logs to <data>/hub.log, one start-up
    deadline). The ready line must say fastpath=on or off as asked: a "fastpath" run must
    never quietly test aiocoap twice."""

    def __init__(self, data_dir, extra=(), config=None, bind="127.0.0.1", discovery=False,
                 wrap=()):
        self.data_dir = data_dir
        self.discovery = discovery
        self.extra = list(extra)
        self.config = config
        self.bind = bind
        self.wrap = list(wrap)
        self.handle = None
        self.coap_port = None
        self.http_port = None
        self.ready_line = None
        self.fields = None

    @property
    def proc(self):
        return self.handle.proc if self.handle is not None else None

    def start(self, timeout=30):
        args = ["--data", self.data_dir, "--coap-bind", self.bind, "--coap-port", "0",
                "--http-bind", "127.0.0.1", "--http-port", "0"] + self.extra
        if not self.discovery:
            args += ["--no-zeroconf", "--no-multicast"]
        if self.config:
            args += ["--config", self.config]
        try:
            self.handle = start_hub(args, cwd=self.data_dir, timeout=timeout, wrap=self.wrap,
                                    log_path=os.path.join(self.data_dir, "hub.log"))
        except HubStartError as e:
            raise RuntimeError(str(e)) from None
        self.fields = self.handle.fields
        self.ready_line = "smartpark hub ready " + " ".join(
            "%s=%s" % kv for kv in self.fields.items())
        self.coap_port = self.handle.coap_port
        self.http_port = self.handle.http_port
        pure = os.environ.get("SMARTPARK_PUREPYTHON", "") not in ("", "0")  # no fast path
        want = "off" if "--no-fast-path" in self.extra or pure else "on"
        if self.fields.get("fastpath") != want:
            got = self.fields.get("fastpath")
            self.kill()
            require(False, "hub started with fastpath=%s, the test asked for %s (is "
                    "smartpark.fast.udp built? .venv/bin/python setup.py build_ext --inplace)"
                    % (got, want))
        return self

    @property
    def coap(self):
        host = self.bind if ":" not in self.bind else "[%s]" % self.bind
        return "coap://%s:%d" % (host, self.coap_port)

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.http_port, path)

    def get(self, path):
        """(status, parsed JSON or text) of an HTTP GET."""
        try:
            with urllib.request.urlopen(self.url(path), timeout=10) as r:
                body = r.read()
                status = r.status
                ctype = r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            body = e.read()
            status = e.code
            ctype = e.headers.get("Content-Type", "")
        if "json" in ctype:
            return status, json.loads(body)
        return status, body.decode()

    def request(self, method, path, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url(path), data=data, method=method,
                                     headers=dict({"Content-Type": "application/json"},
                                                  **(headers or {})))
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def metric(self, name, **labels):
        """Value of one Prometheus sample (0 when absent)."""
        _status, text = self.get("/metrics")
        want = name
        if labels:
            want += "{" + ",".join('%s="%s"' % kv for kv in sorted(labels.items())) + "}"
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            if key == want:
                return float(value)
        return 0.0

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """(exit code, hub log text) after sig (SIGKILL after timeout); None if not running."""
        if self.handle is None:
            return None
        rc = self.handle.stop(sig, timeout)
        out = self.handle.log_text()
        self.handle = None
        return rc, out

    def kill(self):
        if self.handle is not None:
            self.handle.kill()
            self.handle = None

    def alive(self):
        return self.handle is not None and self.handle.alive()


def senml_cbor(node, records, bt=None):
    """A SenML-CBOR pack (cbor2): records are (sensor, value, t offset[, unit])."""
    bt = T0 if bt is None else bt
    pack = []
    for i, rec in enumerate(records):
        sensor, value, t = rec[:3]
        r = {0: sensor, 6: t}
        if i == 0:
            r[-2] = node + "/"
            r[-3] = bt
        if len(rec) > 3:
            r[1] = rec[3]
        if isinstance(value, bool):
            r[4] = value
        elif isinstance(value, str):
            r[3] = value
        else:
            r[2] = value
        pack.append(r)
    return cbor2.dumps(pack)


def senml_json(node, records, bt=None):
    bt = T0 if bt is None else bt
    pack = []
    for i, rec in enumerate(records):
        sensor, value, t = rec[:3]
        r = {"n": sensor, "t": t}
        if i == 0:
            r["bn"] = node + "/"
            r["bt"] = bt
        if len(rec) > 3:
            r["u"] = rec[3]
        if isinstance(value, bool):
            r["vb"] = value
        elif isinstance(value, str):
            r["vs"] = value
        else:
            r["v"] = value
        pack.append(r)
    return json.dumps(pack).encode()


async def coap_post(ctx, uri, payload, cf):
    import aiocoap

    m = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=payload)
    if cf is not None:
        m.opt.content_format = cf
    return await ctx.request(m).response


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def db_state(data_dir):
    """(readings, rollups) of a stopped hub's database, as sorted tuples with names."""
    conn = sqlite3.connect(os.path.join(data_dir, "hub.sqlite3"))
    try:
        readings = sorted(conn.execute(
            "SELECT s.node, s.sensor, s.unit, r.t, r.kind, r.val, r.sum, r.est FROM readings r"
            " JOIN series s ON s.id = r.series").fetchall())
        rollups = sorted(conn.execute(
            "SELECT s.node, s.sensor, r.win, r.t, r.count, r.min, r.max, r.mean, r.p50, r.p95,"
            " r.p99 FROM rollups r JOIN series s ON s.id = r.series").fetchall())
    finally:
        conn.close()
    return readings, rollups
