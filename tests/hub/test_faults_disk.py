"""The hub on a small real filesystem: a full disk, and the start-up failures.

Each test mounts tmpfs filesystems of a few MB in a private mount namespace
(`unshare -m`, a holder process that sleeps) and runs the real hub inside it
(`nsenter -t <holder> -m`); the test reaches the files through
/proc/<holder>/root. Nothing is mocked: the hub's statvfs sees the real
filesystem fill up and the writes meet real ENOSPC.
"""

import asyncio
import os
import shutil
import signal
import subprocess
import time

import aiocoap
import pytest
from hubutil import T0, require, senml_cbor
from smartpark.hub.faults import EXIT_DATA_DIR, EXIT_DISK_FULL, EXIT_LOCKED, EXIT_PORT
from smartpark.hub.process import HubStartError, hub_command, start_hub
from smartpark.hub.store import stored_readings


class Mounts:
    """tmpfs mounts in a private mount namespace held by a sleeping process."""

    def __init__(self, base):
        self.base = base
        self.holder = None

    def start(self, specs):
        """specs: {name: mount options}, e.g. {"data": "size=6m", "ro": "size=1m,ro"}."""
        require(shutil.which("unshare") and shutil.which("nsenter"),
                "unshare/nsenter (util-linux) to mount a small tmpfs")
        script = ["set -e"]
        for name, opts in specs.items():
            os.makedirs(os.path.join(self.base, name), exist_ok=True)
            script.append("mount -t tmpfs -o %s tmpfs %s" % (opts, os.path.join(self.base, name)))
        script.append("echo mounted; exec sleep 3600")
        self.holder = subprocess.Popen(["unshare", "-m", "sh", "-c", "\n".join(script)],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.holder.stdout.readline()
        if line.strip() != b"mounted":
            err = self.holder.stderr.read().decode(errors="replace")
            self.holder.kill()
            require(False, "cannot mount tmpfs in a mount namespace (root needed): " + err)
        return self

    def inside(self, path):
        """The path as this process reaches it in the holder's namespace."""
        return "/proc/%d/root%s" % (self.holder.pid, path)

    def wrap(self):
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--"]

    def stop(self):
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()


@pytest.fixture
def mounts(tmp_path):
    m = Mounts(str(tmp_path / "mnt"))
    yield m
    m.stop()


def _args(data, *extra):
    return ["--data", data, "--coap-bind", "127.0.0.1", "--coap-port", "0",
            "--http-bind", "127.0.0.1", "--http-port", "0", "--no-zeroconf", "--no-multicast",
            "--security", "off", "-v"] + list(extra)


def _start(mounts, data, log, config):
    return start_hub(_args(data, "--config", config), wrap=mounts.wrap(), log_path=log,
                     timeout=60)


def _get(port, path):
    import json
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
            body, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        body, status = e.read(), e.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def _metric(port, name):
    _s, text = _get(port, "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _fill(path, leave):
    """Write a ballast file at `path` until `leave` bytes stay free on its filesystem."""
    st = os.statvfs(os.path.dirname(path))
    n = max(0, st.f_bavail * st.f_frsize - leave)
    with open(path, "wb") as f:
        while n > 0:
            k = min(n, 1 << 20)
            try:
                f.write(b"\0" * k)
                f.flush()
            except OSError:
                break
            n -= k


async def _load(port, acked, refused, stop_when, senders=40):
    """Reports of 20 readings from `senders` nodes until stop_when() holds; acked readings
    (node, sensor, t) into `acked`, 5.03 answers (with their Max-Age) into `refused`."""
    ctx = await aiocoap.Context.create_client_context()
    uri = "coap://127.0.0.1:%d/r" % port
    stop = asyncio.Event()

    async def sender(k):
        node = "disk-%02d" % k
        i = 0
        while not stop.is_set():
            bt = T0 + i * 20
            recs = [("v%d" % j, float(i * 20 + j), j) for j in range(20)]
            m = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=senml_cbor(node, recs, bt=bt))
            m.opt.content_format = 112
            i += 1
            try:
                r = await asyncio.wait_for(ctx.request(m).response, 10)
            except Exception:  # noqa: BLE001 - no answer: neither acked nor refused
                continue
            if r.code == aiocoap.CHANGED:
                acked.update((node, "v%d" % j, bt + j) for j in range(20))
            elif r.code == aiocoap.SERVICE_UNAVAILABLE:
                refused.append(r.opt.max_age)
                await asyncio.sleep(0.05)
            if stop_when():
                stop.set()

    try:
        await asyncio.wait_for(asyncio.gather(*(sender(k) for k in range(senders))), 120)
    finally:
        await ctx.shutdown()


def _wait_alarm(port, state, timeout=10):
    """The disk-full alarm once it is in `state` (GET /api/alarms)."""
    deadline = time.monotonic() + timeout
    while True:
        got = [a for a in _get(port, "/api/alarms?state=" + state)[1] if a["rule"] == "disk-full"]
        if got:
            return got[0]
        assert time.monotonic() < deadline, "no %s disk-full alarm within %d s" % (state, timeout)
        time.sleep(0.1)


def test_full_disk_refuses_reports_degrades_and_recovers_by_itself(mounts, tmp_path):
    mounts.start({"data": "size=8m"})
    data = os.path.join(mounts.base, "data")
    seen_data = mounts.inside(data)
    config = str(tmp_path / "hub.toml")
    rules = str(tmp_path / "alarms.toml")   # the alarm a full disk raises (hub/alarms.py)
    with open(rules, "w") as f:
        f.write('[[rule]]\nid = "disk-full"\ntype = "hub"\ncondition = "disk"\n'
                'severity = "critical"\n')
    with open(config, "w") as f:
        f.write("[store]\nreserve_mb = 1.0\nreserve_percent = 0.1\n"
                "[alarms]\nfile = \"%s\"\ncheck_interval = 0.2\n" % rules)
    log = str(tmp_path / "hub.log")
    h = _start(mounts, data, log, config)
    try:
        assert _get(h.http_port, "/healthz")[0] == 200
        ballast = os.path.join(seen_data, "ballast")
        _fill(ballast, 1_600_000)  # 0.6 MB above the 1 MB reserve
        acked, refused = set(), []
        asyncio.run(_load(h.coap_port, acked, refused, lambda: len(refused) >= 200))
        assert acked, "some reports were acknowledged before the reserve was reached"
        assert set(refused) == {30}, "every refusal is a 5.03 with Max-Age 30"
        status, body = _get(h.http_port, "/healthz")
        assert status == 503 and body["status"] == "degraded"
        assert body["disk"]["refusing"] and body["disk"]["free_bytes"] < 1_250_000
        assert any("disk" in r and "refused" in r for r in body["reasons"])
        assert _metric(h.http_port, "smartpark_ingest_refusing_disk") == 1
        assert 0 < _metric(h.http_port, "smartpark_disk_free_bytes") < 1_250_000
        alarm = _wait_alarm(h.http_port, "active")
        assert alarm["severity"] == "critical" and alarm["node"] is None, alarm
        assert "disk" in alarm["message"], alarm

        os.unlink(ballast)  # space comes back: ingest resumes by itself
        deadline = time.monotonic() + 20
        while _get(h.http_port, "/healthz")[0] != 200:
            assert time.monotonic() < deadline, "ingest did not resume within 20 s"
            time.sleep(0.2)
        more, refused2 = set(), []
        asyncio.run(_load(h.coap_port, more, refused2, lambda: len(more) >= 2000, senders=5))
        assert not refused2
        acked |= more
        assert _metric(h.http_port, "smartpark_ingest_refusing_disk") == 0
        assert _wait_alarm(h.http_port, "cleared")["id"] == alarm["id"]   # cleared by itself
        changes = _get(h.http_port, "/healthz")[1]["disk"]["changes"]
    finally:
        rc = h.stop()
    assert rc == 0
    text = h.log_text()
    assert "Traceback" not in text
    # one line per state change, not one per refused report: usually refused once and
    # resumed once (the journal's clean-up while refusing may free enough for a resume
    # before the ballast goes: then each further change has its line too)
    refusing, accepting = text.count("refusing new readings"), text.count("accepting readings")
    assert refusing == accepting >= 1 and refusing + accepting == changes, text[-3000:]
    assert text.count("moving journal readings failed") <= 2

    h2 = _start(mounts, data, log, config)  # a restart: every acknowledged reading once
    assert h2.stop() == 0
    copy = tmp_path / "copy"  # read outside the namespace (a read-only open makes no -shm)
    copy.mkdir()
    for name in os.listdir(seen_data):
        if name.startswith("hub.") and "sqlite3" in name:
            shutil.copy(os.path.join(seen_data, name), copy / name)
    rows = stored_readings(str(copy / "hub.sqlite3"))
    keys = [(nd, sensor, t) for nd, sensor, t, _k, _v in rows]
    assert len(keys) == len(set(keys)), "a reading stored twice"
    missing = acked - set(keys)
    assert not missing, "%d acknowledged readings not stored, e.g. %s" % (
        len(missing), sorted(missing)[:3])


def _fails(mounts, args, tmp_path, name):
    log = str(tmp_path / ("%s.log" % name))
    with pytest.raises(HubStartError) as ei:
        start_hub(args, wrap=mounts.wrap(), log_path=log, timeout=60)
    msg = str(ei.value)
    with open(log) as f:
        lines = [ln for ln in f.read().splitlines() if "cannot start" in ln]
    assert "Traceback" not in msg
    assert len(lines) == 1
    return msg, lines[0]


def test_start_up_failures_say_one_line_with_their_exit_code(mounts, tmp_path):
    mounts.start({"full": "size=1m", "ro": "size=1m,ro", "data": "size=4m"})
    full = os.path.join(mounts.base, "full")
    _fill(os.path.join(mounts.inside(full), "ballast"), 0)
    msg, line = _fails(mounts, _args(full + "/hub"), tmp_path, "full")
    assert "exited with code %d" % EXIT_DISK_FULL in msg
    assert "no space left" in line and full + "/hub" in line

    ro = os.path.join(mounts.base, "ro", "hub")
    msg, line = _fails(mounts, _args(ro), tmp_path, "ro")
    assert "exited with code %d" % EXIT_DATA_DIR in msg and ro in line

    data = os.path.join(mounts.base, "data")
    first = start_hub(_args(data), wrap=mounts.wrap(), log_path=str(tmp_path / "first.log"))
    try:
        msg, line = _fails(mounts, _args(data), tmp_path, "second")
        assert "exited with code %d" % EXIT_LOCKED in msg
        assert "in use by another hub (pid" in line and data + "/hub.lock" in line
        assert first.alive()
        # the first hub's ports: one line naming the port, its own exit code
        taken = ["--http-port", str(first.http_port)]
        proc = subprocess.run(hub_command(_args(str(tmp_path / "other")) + taken),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == EXIT_PORT, proc.stderr
        assert ("HTTP port %d/tcp on 127.0.0.1 is not available: in use" % first.http_port
                in proc.stderr)
        assert "Traceback" not in proc.stderr
    finally:
        assert first.stop(signal.SIGTERM) == 0
