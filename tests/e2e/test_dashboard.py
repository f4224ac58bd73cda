"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a real hub
whose readings arrive over CoAP, OSCORE-protected, from aiocoap clients with the nodes' keys.

One hub and one browser serve the module. The hub's HTTP API is bound off loopback, so
reads need a token: the login flow is tested first-hand, the other pages run in a browser
context that holds the read token for its session the way the login page keeps it.
Screenshots of each page go to the module's temporary directory (printed at the end).
"""

import asyncio
import csv
import gzip
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request
from http.client import HTTPConnection

import aiocoap
import cbor2
import pytest
from harness import require
from smartpark.hub import keys
from smartpark.hub.process import start_hub

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # checked in the browser fixture: skip locally, fail under CI=true
    sync_playwright = None

CHROMIUM = "/usr/bin/chromium"
READ, ADMIN = "dash-read-token", "dash-admin-token"
NODES = ("dash-1", "dash-2")
NOW = time.time()
DAY0 = float(int(NOW) // 60 * 60 - 86400)  # a day of minute readings up to now
FIRST_LOAD_LIMIT = 300 * 1024
if sync_playwright is not None:
    expect.set_options(timeout=20000)  # two test passes side by side on two cores


class Feeder:
    """OSCORE-protected SenML-CBOR reports to the hub from aiocoap clients, one per node key
    (kept: it holds the sequence number), on an event loop of their own."""

    def __init__(self, coap, ctxdirs):
        self.coap = coap
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ctx = {n: self._run(self._context(d)) for n, d in ctxdirs.items()}

    def _run(self, coro, timeout=60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _context(self, ctxdir):
        c = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
        c.client_credentials.load_from_dict({self.coap + "/*": {"oscore": {"basedir": ctxdir}}})
        return c

    def report(self, node, records, est=False):
        """records: (sensor, value, epoch seconds[, unit]); asserts the hub's 2.04. est: each
        record says its time was estimated (the SenML label "est")."""
        pack = []
        bt = records[0][2]
        for i, rec in enumerate(records):
            r = {0: rec[0], 6: rec[2] - bt}
            if i == 0:
                r[-2], r[-3] = node + "/", bt
            if len(rec) > 3:
                r[1] = rec[3]
            r[{bool: 4, str: 3}.get(type(rec[1]), 2)] = rec[1]
            if est:
                r["est"] = True
            pack.append(r)

        async def go():
            m = aiocoap.Message(code=aiocoap.POST, uri=self.coap + "/r",
                                payload=cbor2.dumps(pack))
            m.opt.content_format = 112
            return await asyncio.wait_for(self.ctx[node].request(m).response, 30)

        resp = self._run(go())
        assert resp.code == aiocoap.CHANGED, resp

    def close(self):
        for c in self.ctx.values():
            self._run(c.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("dashhub"))
    ctx = str(tmp_path_factory.mktemp("dashkeys"))  # the clients' halves, apart from the hub
    ctxdirs = {}
    for n in NODES:
        keys.add(d, n)
        ctxdirs[n] = os.path.join(ctx, n)
        keys.write_aiocoap(ctxdirs[n], keys.get(d, n))
    # HTTP off loopback (still reached on 127.0.0.1): reads need the read or admin token
    h = start_hub(["--data", d, "--coap-bind", "127.0.0.1", "--coap-port", "0",
                   "--http-bind", "0.0.0.0", "--http-port", "0", "--read-token", READ,
                   "--admin-token", ADMIN, "--no-zeroconf", "--no-multicast"],
                  cwd=d, timeout=30, log_path=os.path.join(d, "hub.log"))
    h.base = "http://127.0.0.1:%d" % h.http_port
    h.feed = Feeder("coap://127.0.0.1:%d" % h.coap_port, ctxdirs)
    # screenshots: kept in $SMARTPARK_ARTIFACTS/dashboard when set (CI), else a temporary dir
    art = os.environ.get("SMARTPARK_ARTIFACTS")
    h.shots = (os.path.join(art, "dashboard") if art
               else str(tmp_path_factory.mktemp("dashboard-screenshots")))
    os.makedirs(h.shots, exist_ok=True)
    # a day of minute readings (rollup buckets close as later readings pass them), health
    minutes = [DAY0 + 60 * i for i in range(1441)]
    for i in range(0, len(minutes), 30):  # packs that fit one OSCORE message
        h.feed.report("dash-1", [("air.temp", 20.0 + (j % 60) / 10.0, t)
                                 for j, t in enumerate(minutes[i:i + 30], i)],
                      est=i == 0)  # the first half hour: before the node's clock was set
    h.feed.report("dash-1", [("air.hum", 41.5, NOW, "%RH"), ("health.vbat", 3.71, NOW, "V"),
                             ("health.rssi", -61, NOW, "dBm"), ("health.outbox", 3, NOW),
                             ("health.reset", 1, NOW), ("health.fw", "1.4.2", NOW)])
    h.feed.report("dash-2", [("bay.occupied", True, NOW), ("air.temp", 18.25, NOW, "Cel")])
    yield h
    print("dashboard screenshots in", h.shots)
    h.feed.close()
    h.kill()


def http(h, path, token=READ):
    req = urllib.request.Request(h.base + path,
                                 headers={"Authorization": "Bearer " + token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


@pytest.fixture(scope="module")
def browser():
    require(sync_playwright is not None,
            "Playwright for Python is not installed (.venv/bin/pip install playwright)")
    require(os.access(CHROMIUM, os.X_OK), "chromium is not installed (Debian: apt-get install "
                                          "chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser, hub):
    """A tab signed in with the read token (kept in sessionStorage, as the login page does)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    ctx.add_init_script("sessionStorage.setItem('smartpark.token', %s)" % json.dumps(READ))
    pg = ctx.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    ctx.close()
    assert pg.errors == []


def test_series_max_points_picks_the_window_and_exports_csv(hub):
    base = "/api/series/dash-1/air.temp?from=%d&to=%d" % (DAY0, DAY0 + 86400)
    st, _h, body = http(hub, base + "&max_points=2000")
    doc = json.loads(body)
    assert st == 200 and doc["window"] == "raw" and len(doc["points"]) == 1440
    assert doc["max_points"] == 2000 and doc["from"] == DAY0 and doc["to"] == DAY0 + 86400
    # 1,440 readings over a day: 1m gives 1,440 buckets, 15m gives 96 -- the smallest <= 500
    banded = json.loads(http(hub, base + "&max_points=500")[2])
    assert banded["window"] == "15m" and 90 <= len(banded["points"]) <= 96
    p = banded["points"][0]
    assert p["min"] <= p["mean"] <= p["max"] and p["count"] == 15
    assert json.loads(http(hub, base + "&max_points=30")[2])["window"] == "1h"
    assert json.loads(http(hub, base + "&max_points=1")[2])["window"] == "1d"
    # the old parameters answer as before
    doc = json.loads(http(hub, base + "&window=1h&limit=3")[2])
    assert doc["window"] == "1h" and len(doc["points"]) == 3 and "max_points" not in doc
    # with window, max_points is one more limit; with limit, the smaller counts
    doc = json.loads(http(hub, base + "&window=1m&max_points=5")[2])
    assert doc["window"] == "1m" and len(doc["points"]) == 5 and doc["max_points"] == 5
    doc = json.loads(http(hub, base + "&max_points=2000&limit=100")[2])
    assert doc["window"] == "15m" and doc["max_points"] == 100
    for q, name in (("&max_points=0", "max_points"), ("&max_points=x", "max_points"),
                    ("&max_points=100001", "max_points"), ("&format=xml", "format")):
        st, _h, body = http(hub, base + q)
        assert st == 400 and json.loads(body)["parameter"] == name, q
    st, headers, body = http(hub, base + "&max_points=500&format=csv")
    assert st == 200 and headers["Content-Type"].startswith("text/csv")
    assert 'filename="dash-1_air.temp_15m.csv"' in headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == ["time", "iso_time", "count", "min", "max", "mean", "p50", "p95", "p99"]
    assert len(rows) == len(banded["points"]) + 1
    rows = list(csv.reader(io.StringIO(http(hub, base + "&format=csv&limit=2")[2].decode())))
    assert rows[0] == ["time", "iso_time", "value", "estimated"] and len(rows) == 3
    assert float(rows[1][0]) == DAY0 and rows[1][1].endswith("Z") and float(rows[1][2]) == 20.0
    assert rows[1][3] == "true"   # the first half hour's times were estimated
    doc = json.loads(http(hub, base + "&limit=40")[2])
    assert [p.get("est") for p in doc["points"]] == [True] * 30 + [None] * 10


def test_overview_api(hub):
    doc = json.loads(http(hub, "/api/overview")[2])
    assert (doc["total"], doc["online"], doc["offline"], doc["matched"]) == (2, 2, 0, 2)
    one = {n["id"]: n for n in doc["nodes"]}["dash-1"]
    assert one["online"] and [v["sensor"] for v in one["latest"]] == ["air.hum", "air.temp"]
    assert one["latest"][0]["value"] == 41.5 and one["latest"][0]["unit"] == "%RH"
    doc = json.loads(http(hub, "/api/overview?q=SH-2&limit=5")[2])
    assert [n["id"] for n in doc["nodes"]] == ["dash-2"] and doc["matched"] == 1
    assert len(json.loads(http(hub, "/api/overview?limit=1")[2])["nodes"]) == 1
    for bad in ("0", "x", "10001"):
        st, _h, body = http(hub, "/api/overview?limit=" + bad)
        assert st == 400 and json.loads(body)["parameter"] == "limit"


def test_event_stream_readings_of_some_nodes(hub):
    conn = HTTPConnection("127.0.0.1", hub.http_port, timeout=20)
    conn.request("GET", "/api/events?readings_of=dash-1,nobody",
                 headers={"Authorization": "Bearer " + READ})
    resp = conn.getresponse()
    try:
        assert resp.status == 200
        assert resp.readline().startswith(b": smartpark hub")  # sent once it has subscribed
        t = time.time()
        hub.feed.report("dash-2", [("door.open", True, t)])  # filtered out
        hub.feed.report("dash-1", [("door.open", False, t)])
        while True:
            line = resp.readline()
            if line.startswith(b"event: reading"):
                data = json.loads(resp.readline().split(b":", 1)[1])
                break
        assert (data["node"], data["sensor"], data["value"]) == ("dash-1", "door.open", False)
    finally:
        conn.close()
    ids = ",".join("n%d" % i for i in range(1001))
    st, _h, body = http(hub, "/api/events?readings_of=" + ids)
    assert st == 400 and json.loads(body)["parameter"] == "readings_of"


def test_static_files_need_no_token_and_data_does(hub):
    st, headers, body = http(hub, "/", token=None)
    assert st == 200 and b'src="/ui/app.js"' in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    st, headers, body = http(hub, "/ui/app.js", token=None)
    assert st == 200 and body.startswith(b"// ") and "Content-Encoding" not in headers
    req = urllib.request.Request(hub.base + "/ui/app.js", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(r.read()) == body
    assert http(hub, "/ui/nope.js", token=None)[0] == 404
    assert http(hub, "/api/nodes", token=None)[0] == 401
    # what a token may do, for the login page (a read: 401 without a token here)
    assert http(hub, "/api/access", token=None)[0] == 401
    assert http(hub, "/api/access", token="nope")[0] == 401
    for token, role in ((READ, "read"), (ADMIN, "admin")):
        st, _h, body = http(hub, "/api/access", token=token)
        assert st == 200 and json.loads(body) == {"role": role, "reads_need_token": True,
                                                  "writes": True}


def test_login_keeps_the_token_for_the_session(browser, hub):
    ctx = browser.new_context()
    pg = ctx.new_page()
    try:
        pg.goto(hub.base + "/#/node/dash-1")
        expect(pg.locator("h1")).to_have_text("Sign in")  # reads need a token: the login
        pg.fill("#token", "wrong")
        pg.click("button[type=submit]")
        expect(pg.locator("#login-msg")).to_have_text("The hub refused this token.")
        pg.fill("#token", READ)
        pg.keyboard.press("Enter")
        expect(pg.locator("h1")).to_contain_text("dash-1")  # back where it was going
        assert pg.evaluate("sessionStorage.getItem('smartpark.token')") == READ
        assert READ not in pg.url
        pg.reload()  # the same tab's session keeps it
        expect(pg.locator("#sensors")).to_be_visible()
        pg.goto(hub.base + "/#/login")
        expect(pg.locator("#signed-in")).to_contain_text("signed in with the read token")
        pg.click("#signout")
        assert pg.evaluate("sessionStorage.getItem('smartpark.token')") is None
        pg.screenshot(path=os.path.join(hub.shots, "login.png"))
    finally:
        ctx.close()


def test_overview_shows_nodes_and_a_live_value(page, hub):
    page.goto(hub.base + "/")
    expect(page.locator("#count-online")).to_have_text("2")
    expect(page.locator("#count-offline")).to_have_text("0")
    expect(page.locator('[data-status="dash-1"]')).to_have_text("online")
    expect(page.locator('[data-series="dash-2/air.temp"]')).to_contain_text("18.25 Cel")
    expect(page.locator('[data-series="dash-2/bay.occupied"]')).to_contain_text("true")
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("window.__same_page = 1")
    hub.feed.report("dash-2", [("air.temp", 23.5, time.time(), "Cel")])
    expect(page.locator('[data-series="dash-2/air.temp"]')).to_contain_text("23.5 Cel")
    assert page.evaluate("window.__same_page") == 1  # no reload
    expect(page.locator("#nodes-shown")).to_have_text("2 of 2 nodes.")
    page.fill("#node-filter", "SH-2")
    expect(page.locator("#nodes tbody tr")).to_have_count(1)
    expect(page.locator('[data-series="dash-2/air.temp"]')).to_contain_text("23.5 Cel")
    page.screenshot(path=os.path.join(hub.shots, "overview.png"), full_page=True)


def test_node_page_health_sensors_config(page, hub):
    page.goto(hub.base + "/#/node/dash-1")
    expect(page.locator('[data-health="vbat"]')).to_have_text("3.71 V")
    expect(page.locator("#live")).to_have_text("live")  # the stream is subscribed
    expect(page.locator('[data-health="rssi"]')).to_have_text("-61 dBm")
    expect(page.locator('[data-health="outbox"]')).to_have_text("3 records")
    expect(page.locator("#firmware")).to_contain_text("1.4.2")
    expect(page.locator('[data-series="dash-1/air.hum"]')).to_have_text("41.5 %RH")
    expect(page.locator("#sensors .spark polyline")).to_have_count(1)  # air.temp's 6 h
    expect(page.locator("#config")).to_be_visible()
    hub.feed.report("dash-1", [("health.vbat", 3.52, time.time(), "V")])
    expect(page.locator('[data-health="vbat"]')).to_have_text("3.52 V")
    # the node's own diagnostics (docs/diagnostics.md), as the hub sums them up
    now = time.time()
    hub.feed.report("dash-1", [("health.sensor_fault", "air:read_error", now),
                               ("health.sensor_errors", "air:4", now),
                               ("health.clock_unsynced", 0, now), ("health.safe_mode", "", now),
                               ("health.refused", "4.00:2", now)])
    page.reload()
    diag = page.locator("#diagnostics")
    expect(diag).to_contain_text("air: read_error (4 errors)")
    expect(diag).to_contain_text("synced")
    expect(diag).to_contain_text("4.00 × 2")
    expect(diag).to_contain_text("no")
    page.screenshot(path=os.path.join(hub.shots, "node.png"), full_page=True)
    page.goto(hub.base + "/#/node/nobody")
    expect(page.get_by_role("alert")).to_have_text("The hub answered: unknown node")


def test_chart_bands_zoom_to_raw_and_csv(page, hub, tmp_path):
    asked = []
    page.on("request", lambda r: asked.append(r.url) if "/api/series/dash-1/air.temp" in r.url
            else None)
    page.goto(hub.base + "/#/chart/dash-1/air.temp?from=%d&to=%d" % (DAY0, DAY0 + 86400))
    chart = page.locator("#chart")
    expect(chart).to_have_attribute("data-window", "15m")
    assert any("max_points=" in u for u in asked)
    assert chart.locator("polygon.band").count() >= 1
    page.screenshot(path=os.path.join(hub.shots, "chart-day.png"))
    with page.expect_download() as dl:
        page.click("#export")
    rows = list(csv.reader(open(dl.value.path())))
    assert dl.value.suggested_filename == "dash-1_air.temp_15m.csv"
    assert rows[0][:3] == ["time", "iso_time", "count"] and len(rows) > 10
    for _ in range(4):  # 24 h -> 1.5 h: 90 readings, fewer than the chart's max_points
        page.click("#zoom-in")
    expect(chart).to_have_attribute("data-window", "raw")
    assert chart.locator("circle.dot").count() > 10
    assert "from=" in page.url  # the view is in the address, for a link or a reload
    t0 = float(page.url.split("from=")[1].split("&")[0])
    page.click("#pan-left")
    page.wait_for_url(lambda u: float(u.split("from=")[1].split("&")[0]) < t0)
    page.screenshot(path=os.path.join(hub.shots, "chart-raw.png"))
    with page.expect_download() as dl:
        page.click("#export")
    rows = list(csv.reader(open(dl.value.path())))
    assert rows[0] == ["time", "iso_time", "value", "estimated"] and 80 <= len(rows) - 1 <= 95
    # the day's first hour: its first half hour's readings had estimated times, drawn hollow
    page.goto(hub.base + "/#/chart/dash-1/air.temp?from=%d&to=%d" % (DAY0, DAY0 + 3600))
    expect(chart.locator("circle.dot")).to_have_count(60)
    expect(chart.locator("circle.dot.est")).to_have_count(30)
    expect(page.locator("#chart-status")).to_contain_text("30 with an estimated time")


def test_chart_of_the_last_hour_takes_live_readings(page, hub):
    page.goto(hub.base + "/#/chart/dash-1/air.temp")
    page.get_by_role("button", name="Last 1 h").click()
    chart = page.locator("#chart")
    expect(chart).to_have_attribute("data-window", "raw")
    expect(page.locator("#live")).to_have_text("live")
    before = int(chart.get_attribute("data-points"))
    hub.feed.report("dash-1", [("air.temp", 30.5, time.time())])
    expect(chart).to_have_attribute("data-points", str(before + 1))


def test_keyboard_reaches_the_main_controls(page, hub):
    page.goto(hub.base + "/#/chart/dash-1/air.temp?from=%d&to=%d" % (DAY0, DAY0 + 86400))
    expect(page.locator("#chart")).to_have_attribute("data-window", "15m")
    page.focus("a.skip")  # the first stop of the page: "Skip to content"
    reached = []
    for _ in range(25):
        page.keyboard.press("Tab")
        reached.append(page.evaluate(
            "(() => { const e = document.activeElement;"
            " return e.id || e.getAttribute('href') || e.textContent.trim(); })()"))
    for want in ("#/", "nav-alarms", "nav-login", "zoom-in", "zoom-out", "export", "chart"):
        assert want in reached, (want, reached)
    assert reached.index("zoom-in") < reached.index("export") < reached.index("chart")
    # the focused control shows it, and Enter/keys act on it
    page.focus("#zoom-in")
    page.keyboard.press("Tab")
    page.keyboard.press("Shift+Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", "")
    page.focus("#chart")
    for _ in range(4):
        page.keyboard.press("+")
    expect(page.locator("#chart")).to_have_attribute("data-window", "raw")


def send(h, method, path, body, token=ADMIN):
    req = urllib.request.Request(h.base + path, data=json.dumps(body).encode(), method=method,
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def park_model(h):
    """Whether the hub serves the park model (zones, metadata, alarms): a hub without it
    answers 404 there, and the dashboard leaves those parts out."""
    return http(h, "/api/zones")[0] != 404


def test_zones_and_map(page, hub):
    if not park_model(hub):
        page.goto(hub.base + "/")
        expect(page.locator("#count-online")).to_have_text("2")
        assert page.locator("#zones").count() == page.locator("#map").count() == 0
        assert page.locator("#alarm-summary").count() == 0
        return
    for node, name, lat in (("dash-1", "Lobby", 52.0901), ("dash-2", "Bay 7", 52.0907)):
        st, _meta = send(hub, "PUT", "/api/nodes/%s/meta" % node, {
            "name": name, "zone": "hq/b1/ground", "location": {"lat": lat, "lon": 5.1214}})
        assert st == 200, _meta
    page.goto(hub.base + "/")
    zone = page.locator("#zones tr", has_text="hq/b1/ground")
    expect(zone).to_contain_text("air.temp")
    expect(page.locator("#map [data-map-node]")).to_have_count(2)
    expect(page.locator("#map a[aria-label='Lobby, online']")).to_have_count(1)
    expect(page.locator("#alarm-summary")).to_be_visible()
    page.screenshot(path=os.path.join(hub.shots, "overview-park.png"), full_page=True)
    # x/y places them on the uploaded site plan instead (fractions of the image here)
    plan = (b'<svg xmlns="http://www.w3.org/2000/svg" width="800" height="400">'
            b'<rect width="800" height="400" fill="#eef"/></svg>')
    req = urllib.request.Request(hub.base + "/api/siteplan", data=plan, method="PUT", headers={
        "Authorization": "Bearer " + ADMIN, "Content-Type": "image/svg+xml"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    for node, x in (("dash-1", 0.25), ("dash-2", 0.75)):
        assert send(hub, "PUT", "/api/nodes/%s/meta" % node,
                    {"location": {"x": x, "y": 0.5}})[0] == 200
    page.goto(hub.base + "/")
    expect(page.locator("#map [data-map-node]")).to_have_count(2)
    assert page.locator("#map svg").get_attribute("viewBox") == "0 0 800 400"
    assert page.locator("#map image").get_attribute("href").startswith("blob:")
    assert page.locator('#map [data-map-node="dash-2"]').get_attribute("cx") == "600"
    page.screenshot(path=os.path.join(hub.shots, "overview-siteplan.png"), full_page=True)


def test_alarm_raised_acknowledged_and_cleared(browser, hub):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    try:
        pg.goto(hub.base + "/#/login")
        pg.fill("#token", READ)
        pg.click("button[type=submit]")
        expect(pg.locator("h1")).to_have_text("Overview")
        pg.goto(hub.base + "/#/alarms")
        expect(pg.locator("#live")).to_have_text("live")
        if not park_model(hub):
            expect(pg.locator("#no-alarms")).to_be_visible()
            return
        st, rule = send(hub, "POST", "/api/alarm-rules", {
            "type": "threshold", "sensor": "air.temp", "node": "dash-2", "above": 30,
            "clear": 25, "severity": "major", "message": "too warm"})
        assert st == 201, rule
        hub.feed.report("dash-2", [("air.temp", 35.0, time.time(), "Cel")])
        row = pg.locator("tr[data-alarm]", has_text="too warm")
        expect(row).to_contain_text("active")  # over the event stream, no reload
        row.get_by_role("button", name="Acknowledge").click()
        expect(pg.locator("#alarm-msg")).to_contain_text("needs the admin token")
        pg.click("#alarm-msg a")  # sign in again, with the admin token this time
        pg.fill("#token", ADMIN)
        pg.keyboard.press("Enter")
        expect(pg.locator("h1")).to_have_text("Alarms")  # back to the list
        expect(pg.locator("#live")).to_have_text("live")  # a new stream, with the new token
        row.get_by_role("button", name="Acknowledge").focus()
        pg.keyboard.press("Enter")
        expect(pg.locator("#alarm-msg")).to_have_text("Acknowledged.")
        expect(row).to_contain_text("yes")
        pg.screenshot(path=os.path.join(hub.shots, "alarms.png"), full_page=True)
        hub.feed.report("dash-2", [("air.temp", 21.0, time.time(), "Cel")])
        expect(row).to_have_count(0)  # the list shows active alarms: it went when it cleared
        pg.select_option("#f-state", "cleared")
        expect(row).to_contain_text("cleared")
        # the node page keeps the alarm with its history
        pg.goto(hub.base + "/#/node/dash-2")
        hist = pg.locator("#node-alarms details", has_text="too warm")
        hist.locator("summary").click()
        for event in ("raised", "acked", "cleared"):
            expect(hist.locator("li", has_text=event)).not_to_have_count(0)
        pg.screenshot(path=os.path.join(hub.shots, "node-alarms.png"), full_page=True)
        assert send(hub, "DELETE", "/api/alarm-rules/%s" % rule["id"], None)[0] in (200, 204)
    finally:
        ctx.close()


CONTRAST_JS = """() => {
  // WCAG 2 contrast of every visible text run against the first opaque background behind it
  const lum = (c) => {
    const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map((v) => {
      v = v / 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const alpha = (c) => { const m = c.match(/[\\d.]+/g); return m.length > 3 ? +m[3] : 1; };
  const bad = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let t = walk.nextNode(); t; t = walk.nextNode()) {
    const el = t.parentElement;
    if (!t.textContent.trim() || el.closest("svg, noscript") || !el.getClientRects().length) continue;
    const cs = getComputedStyle(el);
    if (cs.visibility === "hidden" || el.closest(".skip")) continue;
    let bg = null;
    for (let e = el; e; e = e.parentElement) {
      const b = getComputedStyle(e).backgroundColor;
      if (alpha(b) > 0.99) { bg = b; break; }
    }
    bg = bg || "rgb(255, 255, 255)";
    const [l1, l2] = [lum(cs.color), lum(bg)].sort((a, b) => b - a);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const size = parseFloat(cs.fontSize), bold = parseInt(cs.fontWeight, 10) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need) bad.push([t.textContent.trim().slice(0, 30), cs.color, bg, ratio.toFixed(2)]);
  }
  return bad;
}"""


def test_text_contrast_meets_wcag_aa(page, hub):
    for path, ready in (("/", "#nodes tbody tr"), ("/#/node/dash-1", "#sensors"),
                        ("/#/chart/dash-1/air.temp", "#chart[data-window]"),
                        ("/#/alarms", "#f-state"), ("/#/login", "#token")):
        page.goto(hub.base + path)
        expect(page.locator(ready).first).to_be_attached()
        assert page.evaluate(CONTRAST_JS) == [], path


def test_first_load_is_light(browser, hub):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.add_init_script("sessionStorage.setItem('smartpark.token', %s)" % json.dumps(READ))
    pg = ctx.new_page()
    done = []
    pg.on("requestfinished", lambda r: done.append(r))
    try:
        pg.goto(hub.base + "/")
        expect(pg.locator("#nodes")).to_be_visible()
        expect(pg.locator("#live")).to_have_text("live")
        total = 0
        for r in done:
            s = r.sizes()
            total += s["responseBodySize"] + s["responseHeadersSize"]
        urls = sorted(r.url.replace(hub.base, "") for r in done)
        print("first load: %d bytes in %d requests: %s" % (total, len(done), urls))
        # sized by the page, not the park: no whole list of nodes or latest values
        assert "/ui/app.js" in urls and "/api/overview?limit=200" in urls
        assert "/api/nodes" not in urls and "/api/latest" not in urls
        assert 0 < total <= FIRST_LOAD_LIMIT
    finally:
        ctx.close()
