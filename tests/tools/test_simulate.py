"""`smartpark simulate` (firmware nodes and --light) and `smartpark demo` against a real hub.

The hub is the real `smartpark hub` (SQLite in a temp dir, loopback, free
ports); its database is read directly with sqlite3 to compare with what the
simulator reports from the nodes' own outboxes.
"""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest
from smartpark.tools import demo, simulate
from toolhelp import ROOT, hub_rows, smartpark

pytestmark = pytest.mark.micropython


@pytest.fixture
def hub(tmp_path):
    data = str(tmp_path / "hub")
    proc, coap_port, http_port = demo.start_hub(data, 0, 0)
    assert proc is not None, open(os.path.join(data, "hub.log")).read()[-2000:]
    yield {"data": data, "coap": coap_port, "http": http_port}
    assert demo.stop_hub(proc) == 0


def _hub_counts(data):
    """Readings stored per node, committed ones still in the hub's journal included."""
    counts = {}
    for node, _sensor, _t in hub_rows(data):
        counts[node] = counts.get(node, 0) + 1
    return counts


def _check_against_hub(summary, data):
    stored = _hub_counts(data)
    for s in summary["nodes"]:
        assert s["recorded"] > 0, s
        assert s["recorded"] == s["acknowledged"] + s["pending"] + s["dropped"], s
        assert stored.get(s["node"], 0) == s["acknowledged"], (s, stored.get(s["node"]))
    assert set(stored) == {s["node"] for s in summary["nodes"]}
    return stored


@pytest.mark.slow
def test_simulate_20_nodes_summary_matches_the_hub(hub, tmp_path):
    out = tmp_path / "sim.json"
    proc = smartpark("simulate", "--nodes", 20, "--hub", "127.0.0.1:%d" % hub["coap"],
                     "--duration", 12, "--interval", 2, "--drain", 20, "--json", out,
                     "--data", hub["data"], timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.load(open(out))
    assert summary["mode"] == "firmware" and len(summary["nodes"]) == 20
    _check_against_hub(summary, hub["data"])
    assert all(s["pending"] == 0 for s in summary["nodes"])
    # the printed table carries the same totals
    total = [line for line in proc.stdout.splitlines() if line.startswith("total (20)")]
    acked = sum(s["acknowledged"] for s in summary["nodes"])
    assert total and str(acked) in total[0].split()


def test_nodes_built_from_mpy_report_to_a_hub(unix_bundle, hub, tmp_path):
    """`smartpark firmware build --board unix` output boots on the unix port: its nodes report."""
    manifest = json.load(open(os.path.join(unix_bundle, "manifest.json")))
    assert manifest["board"] == "unix"
    assert "sim/board.mpy" in {e["path"] for e in manifest["files"]}
    out = tmp_path / "sim.json"
    work = tmp_path / "flash"
    proc = smartpark("simulate", "--nodes", 2, "--hub", "127.0.0.1:%d" % hub["coap"],
                     "--duration", 6, "--interval", 2, "--drain", 15, "--json", out,
                     "--bundle", unix_bundle, "--workdir", work, "--data", hub["data"],
                     timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.load(open(out))
    stored = _check_against_hub(summary, hub["data"])
    assert all(stored[s["node"]] > 0 for s in summary["nodes"])
    # every node's OSCORE key: the hub's half in its store, the node's beside config.json
    from smartpark.hub import keys
    for s in summary["nodes"]:
        node_dir = os.path.join(work, s["node"])
        assert os.path.isfile(os.path.join(node_dir, "config.json"))
        with open(os.path.join(node_dir, "oscore.json")) as f:
            assert json.load(f) == keys.node_half(keys.get(hub["data"], s["node"]))
    # nothing but .mpy modules (and main.py) was there to import
    assert not [p for p in os.listdir(unix_bundle) if p.endswith(".py") and p not in
                ("boot.py", "main.py")]


def test_an_esp32_bundle_is_refused(esp32_bundle, tmp_path):
    """The ESP32 bundle has no simulation: simulate says so instead of starting nodes."""
    proc = smartpark("simulate", "--nodes", 1, "--hub", "127.0.0.1:5683", "--duration", 1,
                     "--bundle", esp32_bundle, "--workdir", tmp_path / "flash", "--no-key",
                     timeout=60)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "--board unix" in proc.stderr
    assert not os.path.exists(tmp_path / "flash")


def test_unreachable_hub_leaves_readings_pending(tmp_path):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now: ICMP port unreachable / silence
    out = tmp_path / "sim.json"
    proc = smartpark("simulate", "--nodes", 2, "--hub", "127.0.0.1:%d" % port, "--duration", 5,
                     "--interval", 1, "--drain", 2, "--json", out, "--no-key", timeout=120)
    assert proc.returncode == 6, proc.stdout + proc.stderr
    for n in json.load(open(out))["nodes"]:
        assert n["acknowledged"] == 0 and n["pending"] == n["recorded"] > 0, n


def test_light_mode_summary_matches_the_hub(hub, tmp_path):
    out = tmp_path / "light.json"
    proc = smartpark("simulate", "--light", "--nodes", 300, "--hub", "127.0.0.1:%d" % hub["coap"],
                     "--duration", 5, "--interval", 2, "--drain", 30, "--json", out,
                     "--data", hub["data"], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.load(open(out))
    assert summary["mode"] == "light" and len(summary["nodes"]) == 300
    assert summary["oscore"] and summary["unverified"] == 0 and summary["refused_4_01"] == 0
    _check_against_hub(summary, hub["data"])


def test_bad_simulate_options():
    assert smartpark("simulate", "--nodes", 0, "--hub", "127.0.0.1").returncode == 2
    proc = smartpark("simulate", "--nodes", 1, "--hub", "127.0.0.1:0")
    assert proc.returncode == 2 and "port must be 1-65535" in proc.stderr
    proc = smartpark("simulate", "--light", "--nodes", 1, "--hub", "auto")
    assert proc.returncode == 2 and "needs the hub's address" in proc.stderr


def test_unresolvable_hub_and_unwritable_json_fail_up_front(tmp_path):
    for light in (["--light"], []):
        proc = smartpark("simulate", *light, "--nodes", 1, "--duration", 1,
                         "--hub", "nonexistent.invalid", timeout=60)
        assert proc.returncode == simulate.EXIT_HUB == 7, proc.stderr
        assert "nonexistent.invalid does not resolve" in proc.stderr
        assert "Traceback" not in proc.stderr
    # --json to a directory that does not exist: refused before any node runs
    proc = smartpark("simulate", "--light", "--nodes", 1, "--duration", 30,
                     "--hub", "127.0.0.1:9", "--json", tmp_path / "nope" / "out.json",
                     timeout=60)
    assert proc.returncode == 2 and "cannot write --json" in proc.stderr
    assert not (tmp_path / "nope").exists()


def _processes_in(path):
    """PIDs whose working directory is inside `path` (the demo's nodes and hub)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cwd = os.readlink("/proc/%s/cwd" % pid)
        except OSError:
            continue
        if cwd == path or cwd.startswith(path + os.sep):
            found.append(int(pid))
    return found


@pytest.mark.slow
def test_demo_serves_data_and_stops_cleanly_on_sigint(tmp_path):
    """What `make demo` runs, from a fresh directory: data over HTTP, then Ctrl-C."""
    proc = subprocess.Popen([sys.executable, "-m", "smartpark.tools.cli", "demo"],
                            cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    lines = []
    url = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and url is None:
            line = proc.stdout.readline().decode()
            if not line:
                break
            lines.append(line)
            if line.startswith("try:  curl -s "):
                url = line.split()[3]
        assert url and url.endswith("/api/latest"), "".join(lines)
        latest = []
        while time.monotonic() < deadline and not latest:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    latest = json.loads(r.read().decode())
            except OSError:
                pass
            time.sleep(0.5)
        nodes = {x["node"] for x in latest}
        assert nodes and nodes <= {"demo-%03d" % i for i in range(1, 21)}, latest[:3]
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(lines) + rest.decode()
    assert proc.returncode == 0, text
    assert "smartpark demo stopped: 20 nodes" in text and "hub exit 0" in text
    assert os.path.exists(tmp_path / "data" / "hub.sqlite3")
    # the keys were made before the hub started: one per node, each node holding its half
    from smartpark.hub import keys
    data = str(tmp_path / "data")
    recs = keys.load_all(data)
    assert [r["node"] for r in recs] == ["demo-%03d" % i for i in range(1, 21)]
    for r in recs:
        with open(os.path.join(data, "demo-nodes", r["node"], "oscore.json")) as f:
            assert json.load(f) == keys.node_half(r)
    assert "20 new" in text
    assert _processes_in(str(tmp_path)) == []
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=3)


def test_simulate_until_ctrl_c(hub, tmp_path):
    """Without --duration the run ends on SIGINT: drain, summary, exit 0."""
    out = tmp_path / "sim.json"
    proc = subprocess.Popen([sys.executable, "-m", "smartpark.tools.cli", "simulate", "--nodes", "2",
                             "--hub", "127.0.0.1:%d" % hub["coap"], "--interval", "1",
                             "--json", str(out), "--data", hub["data"]], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(_hub_counts_safe(hub["data"]).values()) < 20:
            time.sleep(0.5)
        assert sum(_hub_counts_safe(hub["data"]).values()) >= 20
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout + stderr
    assert "nodes stop sampling and drain" in stderr
    _check_against_hub(json.load(open(out)), hub["data"])


def _hub_counts_safe(data):
    try:
        return _hub_counts(data)
    except sqlite3.Error:
        return {}
