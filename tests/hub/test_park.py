"""The park model on a running hub (hub/park.py): node metadata from the TOML file, the API
and `smartpark node set`, zones with their nodes and latest values, the site plan, a
restart, and the refusals of bad metadata naming the field.

One hub (its park file names bay-1) serves the module; readings arrive over CoAP as a node
sends them (SenML-CBOR, stamped now).
"""

import os
import time
import urllib.error
import urllib.request

import aiocoap
import pytest
from hubutil import HubProc, coap_post, run, senml_cbor
from smartpark.tools import cli as smartpark_cli

TOKEN = "pk-admin"
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00"
       b"\x00:~\x9bU\x00\x00\x00\nIDATx\x9cc`\x00\x00\x00\x02\x00\x01H\xaf\xa4q\x00\x00\x00"
       b"\x00IEND\xaeB`\x82")
PARK = """
[nodes.bay-1]
name = "Bay 1"
zone = "north/level-1/bays"
location = { x = 0.25, y = 0.5 }
tags = ["ev", "covered"]
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pkhub"))
    park = os.path.join(d, "park.toml")
    with open(park, "w") as f:
        f.write(PARK)
    cfg = os.path.join(d, "hub.toml")
    with open(cfg, "w") as f:
        f.write('[park]\nfile = "%s"\n' % park)
    h = HubProc(d, extra=["--admin-token", TOKEN, "--security", "off"], config=cfg).start()
    yield h
    h.kill()


def post(h, node, records):
    async def go():
        ctx = await aiocoap.Context.create_client_context()
        try:
            r = await coap_post(ctx, h.coap + "/r", senml_cbor(
                node, [(rec[0], rec[1], 0) + tuple(rec[2:]) for rec in records],
                bt=time.time()), 112)
            assert r.code == aiocoap.CHANGED
        finally:
            await ctx.shutdown()

    run(go())


def admin(h, method, path, body=None):
    return h.request(method, path, body, {"Authorization": "Bearer " + TOKEN})


def put_image(h, data, ctype, token=TOKEN):
    req = urllib.request.Request(h.url("/api/siteplan"), data=data, method="PUT", headers={
        "Content-Type": ctype, "Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_meta_from_the_file_and_the_api_and_zones(hub):
    post(hub, "bay-1", [("temp", 19.5, "Cel"), ("co2", 800.0, "ppm"), ("health.vbat", 3.7)])
    status, node = hub.get("/api/nodes/bay-1")
    assert status == 200
    assert node["meta"] == {"name": "Bay 1", "zone": "north/level-1/bays",
                            "location": {"x": 0.25, "y": 0.5}, "tags": ["covered", "ev"]}
    post(hub, "bay-2", [("temp", 21.0, "Cel")])
    status, meta = admin(hub, "PUT", "/api/nodes/bay-2/meta", {
        "name": "Bay 2", "zone": "north/level-1/bays", "location": {"lat": 52.1, "lon": 4.3},
        "tags": ["ev"]})
    assert status == 200 and meta["location"] == {"lat": 52.1, "lon": 4.3}
    status, meta = admin(hub, "PUT", "/api/nodes/bay-2/meta", {"name": None})
    assert status == 200 and meta["name"] is None and meta["tags"] == ["ev"]  # a merge
    status, zones = hub.get("/api/zones")
    by = {z["zone"]: z for z in zones}
    assert set(by) >= {"north", "north/level-1", "north/level-1/bays"}
    bays = by["north/level-1/bays"]
    assert bays["nodes"] == ["bay-1", "bay-2"] and bays["parent"] == "north/level-1"
    assert bays["latest"]["temp"]["node"] == "bay-2" and bays["latest"]["temp"]["v"] == 21.0
    assert bays["latest"]["co2"]["v"] == 800.0 and "health.vbat" not in bays["latest"]
    assert by["north"]["nodes"] == ["bay-1", "bay-2"]
    assert [z["zone"] for z in hub.get("/api/zones?zone=north/level-1")[1]] == [
        "north/level-1", "north/level-1/bays"]
    # every node carries its meta in the list too
    listed = {n["id"]: n["meta"] for n in hub.get("/api/nodes")[1]}
    assert listed["bay-2"]["zone"] == "north/level-1/bays"


@pytest.mark.parametrize("body,field", [
    ({"zone": "a//b"}, "zone"),
    ({"zone": "/".join("abcdefghi")}, "zone"),
    ({"location": {"lat": 91, "lon": 0}}, "location.lat"),
    ({"location": {"x": 1.5, "y": 0}}, "location.x"),
    ({"location": {"x": 0.5}}, "location"),
    ({"tags": ["a b"]}, "tags"),
    ({"tags": "ev"}, "tags"),
    ({"name": ""}, "name"),
    ({"colour": "red"}, "colour"),
    ([], "body"),
])
def test_bad_metadata_is_refused_naming_the_field(hub, body, field):
    status, err = admin(hub, "PUT", "/api/nodes/bay-9/meta", body)
    assert status == 400, err
    assert err["parameter"] == field
    assert hub.request("PUT", "/api/nodes/bay-9/meta", {"name": "x"})[0] == 401


def test_siteplan_upload_and_download(hub):
    assert hub.get("/api/siteplan")[0] == 404
    assert put_image(hub, b"not a png", "image/png") == 400
    assert put_image(hub, PNG, "image/gif") == 415
    assert put_image(hub, b"\x89PNG\r\n\x1a\n" + bytes(2 * 1024 * 1024), "image/png") == 413
    assert put_image(hub, PNG, "image/png", token="wrong") == 401
    assert put_image(hub, PNG, "image/png") == 200
    with urllib.request.urlopen(hub.url("/api/siteplan"), timeout=10) as r:
        assert r.headers["Content-Type"] == "image/png" and r.read() == PNG
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    assert put_image(hub, svg, "image/svg+xml") == 200
    with urllib.request.urlopen(hub.url("/api/siteplan"), timeout=10) as r:
        assert r.headers["Content-Type"] == "image/svg+xml" and r.read() == svg
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]


def test_cli_node_set(hub, capsys, monkeypatch):
    monkeypatch.setenv("SMARTPARK_ADMIN_TOKEN", TOKEN)
    base = ["--hub", hub.url("")]
    rc = smartpark_cli.main(["node", "set", "bay-3", "name=Bay 3", "zone=south/bays",
                             "tags=ev,roof", "x=0.1", "y=0.9"] + base)
    out = capsys.readouterr().out
    assert rc == 0 and "Bay 3" in out and "south/bays" in out
    assert admin(hub, "GET", "/api/zones?zone=south")[1][0]["nodes"] == ["bay-3"]
    rc = smartpark_cli.main(["node", "set", "bay-3", "zone=a//b"] + base)
    err = capsys.readouterr().err
    assert rc == 5 and "zone" in err
    assert smartpark_cli.main(["node", "set", "bay-3", "lat=1"] + base) == 2
    monkeypatch.setenv("SMARTPARK_ADMIN_TOKEN", "wrong")
    assert smartpark_cli.main(["node", "set", "bay-3", "name=x"] + base) == 4


def test_metadata_and_siteplan_survive_a_restart(hub):
    assert admin(hub, "PUT", "/api/nodes/bay-4/meta", {"zone": "east", "tags": ["x"]})[0] == 200
    assert put_image(hub, PNG, "image/png") == 200
    assert admin(hub, "PUT", "/api/nodes/bay-1/meta", {"name": "Renamed"})[1]["name"] == \
        "Renamed"
    assert hub.stop()[0] == 0
    hub.start()
    status, zones = hub.get("/api/zones?zone=east")
    assert zones[0]["nodes"] == ["bay-4"]
    with urllib.request.urlopen(hub.url("/api/siteplan"), timeout=10) as r:
        assert r.read() == PNG
    # the park file's fields win at start
    assert hub.get("/api/nodes/bay-1")[1]["meta"]["name"] == "Bay 1"
