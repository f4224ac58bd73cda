"""Over-the-air updates on a running hub: POST/GET /api/firmware with a real tar archive,
CoAP /fw/<version>[/<path>] through aiocoap's OSCORE client (Block2 at the client's block
size, resumed at any block, 4.04, 4.01 without OSCORE), and the "update" section of
/api/nodes/{node} from a node's protected reports.

One hub (security.mode = "oscore", an admin token) serves every test here; each test uses
its own versions and nodes."""

import asyncio
import hashlib
import io
import json
import os
import tarfile
import urllib.error
import urllib.request

import aiocoap
import pytest
from hubutil import T0, HubProc, run, senml_cbor
from smartpark.hub import firmware, keys
from smartpark.tools import bundle

TOKEN = "fw-admin"
NODES = ("ota-a", "ota-b")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("fwhub"))
    for n in NODES:
        keys.add(d, n)
    h = HubProc(d, extra=["--admin-token", TOKEN, "--security", "oscore"]).start()
    h.ctxdirs, h.secctx = {}, {}
    for n in NODES:
        out = os.path.join(d, "..", "ctx-" + n)
        keys.write_aiocoap(out, keys.get(d, n))
        h.ctxdirs[n] = out
    yield h
    h.kill()


def build(tmp_path, version):
    out = str(tmp_path / ("b-" + version))
    bundle.build_bundle(out=out, source=True, quiet=True, version=version)
    return out


def tar_of(bundle_dir):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add(bundle_dir, arcname="firmware")
    return buf.getvalue()


def post_tar(h, body, token=TOKEN, ctype="application/x-tar"):
    headers = {"Content-Type": ctype}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(h.url("/api/firmware"), data=body, method="POST",
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Client:
    """aiocoap OSCORE clients, one per node key; `fresh()` gives a new socket (no state the
    hub could have kept for the previous one)."""

    def __init__(self, h):
        self.h = h
        self.contexts = []

    async def ctx(self, node=None):
        c = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
        if node is not None:  # one security context per key (it holds the sequence number)
            key = self.h.coap + "/*"
            sc = self.h.secctx.get(node)
            if sc is None:
                c.client_credentials.load_from_dict(
                    {key: {"oscore": {"basedir": self.h.ctxdirs[node]}}})
                self.h.secctx[node] = c.client_credentials[key]
            else:
                c.client_credentials[key] = sc
        self.contexts.append(c)
        return c

    async def get(self, ctx, path, block=None, whole=True):
        m = aiocoap.Message(code=aiocoap.GET, uri=self.h.coap + "/fw")
        m.opt.uri_path = tuple(path)
        if block is not None:
            m.opt.block2 = block
        return await asyncio.wait_for(ctx.request(m, handle_blockwise=whole).response, 20)

    async def close(self):
        for c in self.contexts:
            await c.shutdown()


def test_http_publish_list_and_refusals(hub, tmp_path):
    src = build(tmp_path, "7.0.0")
    assert post_tar(hub, tar_of(src)) == (201, {"version": "7.0.0", "created": True})
    assert post_tar(hub, tar_of(src)) == (200, {"version": "7.0.0", "created": False})
    status, rows = hub.get("/api/firmware")
    assert status == 200 and [r["version"] for r in rows] == ["7.0.0"]
    assert rows[0]["files"] == len(json.load(open(os.path.join(src, "manifest.json")))["files"])
    assert os.path.isfile(os.path.join(hub.data_dir, "firmware", "7.0.0", "main.py"))

    assert post_tar(hub, tar_of(src), token=None)[0] == 401
    assert post_tar(hub, tar_of(src), ctype="application/json")[0] == 415
    status, body = post_tar(hub, b"\x00" * 10 + b"junk" * 100)
    assert status == 400 and "tar" in body["error"]
    # a damaged file inside a real archive: named
    other = build(tmp_path, "7.0.1")
    with open(os.path.join(other, "boot.py"), "a") as f:
        f.write("# tampered\n")
    status, body = post_tar(hub, tar_of(other))
    assert status == 400 and "boot.py has" in body["error"], body
    # the same version with other content
    changed = build(tmp_path, "7.0.0-x")
    bundle.write_manifest(changed, dict(json.load(open(os.path.join(changed, "manifest.json"))),
                                        firmware_version="7.0.0",
                                        kind="mpy"))
    status, body = post_tar(hub, tar_of(changed))
    assert status == 409 and "7.0.0 is already published" in body["error"], body
    assert [r["version"] for r in hub.get("/api/firmware")[1]] == ["7.0.0"]


def test_coap_serves_bundles_blockwise_and_resumable(hub, tmp_path):
    src = build(tmp_path, "7.1.0")
    firmware.publish(hub.data_dir, src)  # the running hub serves it at once
    manifest_raw = open(os.path.join(src, "manifest.json"), "rb").read()
    manifest = json.loads(manifest_raw)
    entry = max(manifest["files"], key=lambda e: e["size"])  # several blocks of 512
    data = open(os.path.join(src, entry["path"]), "rb").read()
    assert len(data) > 4 * 512
    path = ["fw", "7.1.0"] + entry["path"].split("/")
    cl = Client(hub)

    async def go():
        try:
            c = await cl.ctx("ota-a")
            m = await cl.get(c, ["fw", "7.1.0"])
            f = await cl.get(c, path)
            blocks = [await cl.get(c, path, (0, False, 5), whole=False)]
            while blocks[-1].opt.block2.more:
                blocks.append(await cl.get(c, path, (len(blocks), False, 5), whole=False))
            # a node resuming after a reboot: a new socket, straight to block k
            k = len(blocks) // 2
            resumed = await cl.get(await cl.ctx("ota-a"), path, (k, False, 5), whole=False)
            small = await cl.get(c, path, (3, False, 2), whole=False)  # 64-byte blocks
            past = await cl.get(c, path, (len(blocks) + 5, False, 5), whole=False)
            missing = [await cl.get(c, p) for p in (["fw", "9.9.9"], ["fw", "7.1.0", "nope.py"],
                                                    ["fw", "7.1.0", "..", "..", "keys"],
                                                    ["fw", "7.1.0", "manifest.json"])]
            plain = await cl.get(await cl.ctx(), path)
            wkc = await asyncio.wait_for((await cl.ctx()).request(aiocoap.Message(
                code=aiocoap.GET, uri=hub.coap + "/.well-known/core")).response, 20)
            return m, f, blocks, k, resumed, small, past, missing, plain, wkc
        finally:
            await cl.close()

    m, f, blocks, k, resumed, small, past, missing, plain, wkc = run(go())
    assert m.code == aiocoap.CONTENT and m.payload == manifest_raw
    assert m.opt.content_format == 50 and m.opt.etag == hashlib.sha256(manifest_raw).digest()[:8]
    assert f.code == aiocoap.CONTENT and f.payload == data and f.opt.content_format == 42
    etag = bytes.fromhex(entry["sha256"])[:8]
    assert f.opt.etag == etag
    assert b"".join(b.payload for b in blocks) == data
    assert len(blocks) == (len(data) + 511) // 512
    assert all(b.opt.etag == etag and b.opt.block2.size_exponent == 5 for b in blocks)
    assert [b.opt.block2.block_number for b in blocks] == list(range(len(blocks)))
    assert resumed.code == aiocoap.CONTENT and resumed.payload == data[k * 512:(k + 1) * 512]
    assert resumed.opt.block2.more and resumed.opt.etag == etag
    assert small.payload == data[192:256] and small.opt.block2.size_exponent == 2
    assert past.code == aiocoap.BAD_REQUEST
    assert [r.code for r in missing] == [aiocoap.NOT_FOUND] * 4, missing
    assert plain.code == aiocoap.UNAUTHORIZED and plain.payload == b"OSCORE required"
    assert b"</fw>" in wkc.payload and b"smartpark.firmware" in wkc.payload


def _report(hub, node, records, t_base=T0):
    cl = Client(hub)

    async def go():
        try:
            c = await cl.ctx(node)
            m = aiocoap.Message(code=aiocoap.POST, uri=hub.coap + "/r",
                                payload=senml_cbor(node, records, bt=t_base))
            m.opt.content_format = 112
            return await asyncio.wait_for(c.request(m).response, 20)
        finally:
            await cl.close()

    r = run(go())
    assert r.code == aiocoap.CHANGED, r


def test_node_update_section_from_health_readings(hub):
    _report(hub, "ota-b", [("temp", 20.0, 0, "Cel")])
    status, view = hub.get("/api/nodes/ota-b")
    assert status == 200 and view["update"] == {
        "running": None, "wanted": None, "state": None, "result": None, "reason": None,
        "since": None}

    _report(hub, "ota-a", [("health.fw", "1.0.0", 0), ("health.ota_state", "downloading", 0),
                           ("temp", 20.0, 0, "Cel")])
    assert hub.request("PUT", "/api/nodes/ota-a/config", {"firmware": "1.1.0"},
                       {"Authorization": "Bearer " + TOKEN})[0] == 200
    up = hub.get("/api/nodes/ota-a")[1]["update"]
    assert up == {"running": "1.0.0", "wanted": "1.1.0", "state": "downloading",
                  "result": None, "reason": None, "since": T0}
    _report(hub, "ota-a", [("health.ota_state", "idle", 60),
                           ("health.ota_result", "integrity_failure", 60),
                           ("health.ota_reason", "sha256 of node.mpy", 60)])
    _report(hub, "ota-a", [("health.ota_state", "idle", 120)])  # the heartbeat: same state
    up = hub.get("/api/nodes/ota-a")[1]["update"]
    assert up == {"running": "1.0.0", "wanted": "1.1.0", "state": "idle",
                  "result": "integrity_failure", "reason": "sha256 of node.mpy",
                  "since": T0 + 60}
    # the list keeps its shape; health still shows every health reading
    [a] = [n for n in hub.get("/api/nodes")[1] if n["id"] == "ota-a"]
    assert "update" not in a and a["health"]["ota_state"] == "idle"
