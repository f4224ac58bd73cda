"""RFC 9176 Resource Directory on the hub, driven by an aiocoap client."""

import time

import aiocoap
from aiocoap.util.linkformat import parse
from hubutil import run


def _links(payload):
    return {link.href: dict(link.attr_pairs) for link in parse(payload.decode()).links}


def test_rd_register_update_lookup_remove(shared_hub):
    h = shared_hub

    async def req(ctx, code, path, payload=b"", cf=None):
        m = aiocoap.Message(code=code, uri=h.coap + path, payload=payload)
        if cf is not None:
            m.opt.content_format = cf
        return await ctx.request(m).response

    async def go():
        ctx = await aiocoap.Context.create_client_context()
        try:
            out = {}
            # discovery of the directory itself (RFC 9176 section 4)
            out["wkc"] = await req(ctx, aiocoap.GET, "/.well-known/core?rt=core.rd*")
            out["reg"] = await req(ctx, aiocoap.POST, "/rd?ep=rd-node-1&lt=300&fw=1.4.2",
                                   b'</s/temp>;rt="temperature";u="Cel",</s/pm25>;rt="pm"', 40)
            loc = "/" + "/".join(out["reg"].opt.location_path)
            out["loc"] = loc
            out["lookup_ep"] = await req(ctx, aiocoap.GET, "/rd-lookup/ep?ep=rd-node-1")
            out["lookup_res"] = await req(ctx, aiocoap.GET, "/rd-lookup/res?rt=pm")
            out["update"] = await req(ctx, aiocoap.POST, loc + "?lt=600")
            out["lookup_after_update"] = await req(ctx, aiocoap.GET, "/rd-lookup/ep?ep=rd-node-1")
            out["bad"] = await req(ctx, aiocoap.POST, "/rd?lt=60", b"</x>", 40)
            return out
        finally:
            await ctx.shutdown()

    out = run(go())
    assert "core.rd" in out["wkc"].payload.decode()
    assert out["reg"].code == aiocoap.CREATED
    assert out["loc"].startswith("/reg/")
    eps = _links(out["lookup_ep"].payload)
    assert list(eps) == [out["loc"]]
    ep = eps[out["loc"]]
    assert ep["ep"] == "rd-node-1" and ep["rt"] == "core.rd-ep"
    res = _links(out["lookup_res"].payload)
    assert len(res) == 1 and list(res)[0].endswith("/s/pm25")
    assert out["update"].code == aiocoap.CHANGED
    assert out["bad"].code == aiocoap.BAD_REQUEST

    status, node = h.get("/api/nodes/rd-node-1")
    assert status == 200
    assert node["firmware"] == "1.4.2"
    assert node["registered"] is True and node["lifetime"] == 600
    assert node["sensors"] == ["pm25", "temp"]
    assert node["online"] is True

    async def remove():
        ctx = await aiocoap.Context.create_client_context()
        try:
            d = await ctx.request(aiocoap.Message(code=aiocoap.DELETE,
                                                  uri=h.coap + out["loc"])).response
            lk = await ctx.request(aiocoap.Message(
                code=aiocoap.GET, uri=h.coap + "/rd-lookup/ep?ep=rd-node-1")).response
            return d, lk
        finally:
            await ctx.shutdown()

    d, lk = run(remove())
    assert d.code == aiocoap.DELETED
    assert _links(lk.payload) == {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        node = h.get("/api/nodes/rd-node-1")[1]
        if node["registered"] is False:
            break
        time.sleep(0.05)
    assert node["registered"] is False and node["lifetime"] is None


def test_rd_registration_survives_restart(hub_factory, tmp_path):
    h = hub_factory()

    async def register():
        ctx = await aiocoap.Context.create_client_context()
        try:
            return await ctx.request(aiocoap.Message(
                code=aiocoap.POST, uri=h.coap + "/rd?ep=rd-keep&lt=3600",
                payload=b"</s/lux>", content_format=40)).response
        finally:
            await ctx.shutdown()

    assert run(register()).code == aiocoap.CREATED
    rc, _out = h.stop()
    assert rc == 0
    h2 = hub_factory(data_dir=h.data_dir)

    async def lookup():
        ctx = await aiocoap.Context.create_client_context()
        try:
            return await ctx.request(aiocoap.Message(
                code=aiocoap.GET, uri=h2.coap + "/rd-lookup/ep?ep=rd-keep")).response
        finally:
            await ctx.shutdown()

    links = _links(run(lookup()).payload)
    assert len(links) == 1 and list(links.values())[0]["ep"] == "rd-keep"
    node = h2.get("/api/nodes/rd-keep")[1]
    assert node["registered"] is True and node["sensors"] == ["lux"]
