"""Configuration (defaults, TOML, flags, errors), liveness, retention."""

import subprocess
import sys
import time

import aiocoap
import pytest
from hubutil import T0, coap_post, run, senml_cbor
from smartpark.hub import config as hubconfig
from smartpark.hub.faults import EXIT_PORT


def test_defaults():
    c = hubconfig.load()
    assert c.data_dir == "./data"
    assert c.coap_bind == "::" and c.coap_port == 5683
    assert c.http_port == 8080
    assert c.db_path.endswith("hub.sqlite3")


def test_toml_then_flags_override(tmp_path):
    f = tmp_path / "hub.toml"
    f.write_text('data_dir = "/srv/park"\n[coap]\nport = 5700\n[http]\nport = 9000\n'
                 '[liveness]\nfactor = 2.5\n')
    c = hubconfig.load(str(f))
    assert (c.data_dir, c.coap_port, c.http_port, c.liveness_factor) == ("/srv/park", 5700,
                                                                         9000, 2.5)
    c = hubconfig.load(str(f), {"coap.port": "5800", "data_dir": "/x"})
    assert c.coap_port == 5800 and c.data_dir == "/x" and c.http_port == 9000


@pytest.mark.parametrize("text,key,expected", [
    ("[coap]\nport = 70000\n", "coap.port", "port number"),
    ("[coap]\nport = \"abc\"\n", "coap.port", "port number"),
    ("[http]\nport = -1\n", "http.port", "port number"),
    ("[store]\nretention_days = 0\n", "store.retention_days", "positive number"),
    ("[liveness]\nfactor = \"fast\"\n", "liveness.factor", "positive number"),
    ("[discovery]\nzeroconf = \"yes\"\n", "discovery.zeroconf", "true or false"),
    ("[coap]\nprot = 5683\n", "coap.prot", "known keys"),
    ("data_dir = 5\n", "data_dir", "string"),
    ("[coap\n", "--config", "valid TOML"),
    # numbers written as strings are refused in TOML (flags are text and may be converted)
    ("[store]\nretention_days = \"30\"\n", "store.retention_days", "not a string"),
    ("[coap]\nport = \"5683\"\n", "coap.port", "not a string"),
    ("[coap]\nmax_future = -5\n", "coap.max_future", "positive number"),
    ("[store]\nmemory_mb = 0\n", "store.memory_mb", "positive integer"),
])
def test_wrong_values_name_the_key(tmp_path, text, key, expected):
    f = tmp_path / "hub.toml"
    f.write_text(text)
    with pytest.raises(hubconfig.ConfigError) as ei:
        hubconfig.load(str(f))
    assert ei.value.key == key
    assert key in str(ei.value) and expected in str(ei.value)


def test_cli_stops_on_bad_value_with_message(tmp_path):
    r = subprocess.run([sys.executable, "-m", "smartpark.tools.cli", "hub", "--data",
                        str(tmp_path), "--http-port", "99999"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert "http.port" in r.stderr and "port number" in r.stderr
    r = subprocess.run([sys.executable, "-m", "smartpark.tools.cli", "hub", "--config",
                        str(tmp_path / "missing.toml")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "--config" in r.stderr


def test_node_goes_offline_after_missed_reports_and_back(hub_factory, tmp_path):
    cfg = tmp_path / "hub.toml"
    cfg.write_text("[liveness]\nfactor = 2.0\ndefault_interval = 0.5\ncheck_interval = 0.1\n")
    h = hub_factory(config=str(cfg))

    async def post(i):
        ctx = await aiocoap.Context.create_client_context()
        try:
            return await coap_post(ctx, h.coap + "/r", senml_cbor("live-1", [("x", 1.0, i)]), 112)
        finally:
            await ctx.shutdown()

    assert run(post(0)).code.is_successful()
    assert h.get("/api/nodes/live-1")[1]["online"] is True
    # no reports: offline once 2 x 0.5 s have passed (polling, no timing assertion)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and h.get("/api/nodes/live-1")[1]["online"]:
        time.sleep(0.1)
    node = h.get("/api/nodes/live-1")[1]
    assert node["online"] is False
    assert time.time() - node["last_seen"] >= 2.0 * 0.5
    assert h.metric("smartpark_events_total", type="node") >= 2  # online, then offline
    assert run(post(1)).code.is_successful()
    assert h.get("/api/nodes/live-1")[1]["online"] is True


def test_retention_drops_old_raw_readings(hub_factory, tmp_path):
    h = hub_factory(extra=["--retention-days", "1"])
    old = T0 - 3 * 86400

    async def feed():
        ctx = await aiocoap.Context.create_client_context()
        try:
            for bt in (old, T0):
                r = await coap_post(ctx, h.coap + "/r", senml_cbor("ret-1", [("x", 1.0, 0)], bt=bt),
                                    112)
                assert r.code.is_successful()
        finally:
            await ctx.shutdown()

    run(feed())
    assert len(h.get("/api/series/ret-1/x?from=0")[1]["points"]) == 2
    assert h.stop()[0] == 0
    # the retention pass runs at start-up (then every store.retention_interval)
    h2 = hub_factory(extra=["--retention-days", "1"], data_dir=h.data_dir)
    deadline = time.monotonic() + 20
    pts = None
    while time.monotonic() < deadline:
        pts = h2.get("/api/series/ret-1/x?from=0")[1]["points"]
        if len(pts) == 1:
            break
        time.sleep(0.1)
    assert pts == [{"time": T0, "value": 1.0}]


def test_second_hub_on_a_taken_coap_port_refuses_to_start(hub_factory, tmp_path):
    h = hub_factory()
    other = tmp_path / "other"
    other.mkdir()
    r = subprocess.run([sys.executable, "-m", "smartpark.tools.cli", "hub", "--data", str(other),
                        "--coap-bind", "127.0.0.1", "--coap-port", str(h.coap_port),
                        "--http-bind", "127.0.0.1", "--http-port", "0", "--no-zeroconf",
                        "--no-multicast"], capture_output=True, text=True, timeout=60)
    assert r.returncode == EXIT_PORT  # one line naming the port, no traceback
    assert "CoAP port %d/udp" % h.coap_port in r.stderr and "not available" in r.stderr
    assert "Traceback" not in r.stderr
    assert h.alive() and h.get("/healthz")[0] == 200
