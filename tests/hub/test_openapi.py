"""The OpenAPI document against the running hub (schemathesis), and against the router."""

import aiocoap
import pytest
from hubutil import coap_post, require, run, senml_cbor
from hypothesis import HealthCheck, assume, given, settings

try:
    import schemathesis
except ImportError:  # checked in api_schema: skip locally, fail under CI=true
    schemathesis = None


@pytest.fixture(scope="module")
def api_schema(shared_hub):
    require(schemathesis is not None, "schemathesis is not installed (pip install schemathesis)")
    async def seed():
        ctx = await aiocoap.Context.create_client_context()
        try:
            r = await coap_post(ctx, shared_hub.coap + "/r", senml_cbor(
                "oa-1", [("temp", 21.0, 0, "Cel"), ("door", True, 0), ("mode", "eco", 0),
                         ("health.vbat", 3.3, 0)]), 112)
            assert r.code.is_successful()
        finally:
            await ctx.shutdown()

    run(seed())
    # the document is fetched from the running server, not imported
    return schemathesis.openapi.from_url(shared_hub.url("/api/openapi.json"))


def test_server_matches_openapi(api_schema, shared_hub):
    """Every documented operation, with generated inputs, answers as the document says.

    (Driven operation by operation with hypothesis: schemathesis' lazy pytest
    parametrization does not work with the pytest in use here.)
    """
    base = shared_hub.url("")
    # /api/events never ends (a stream); tests/hub/test_http_api.py covers it.
    done = []
    for result in api_schema.exclude(path="/api/events").get_all_operations():
        op = result.ok()

        @given(case=op.as_strategy())
        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            # the one config rule JSON Schema cannot say: sensor names unique, not "health"
            body = case.body if isinstance(getattr(case, "body", None), dict) else {}
            sensors = body.get("sensors")
            if isinstance(sensors, list):
                names = [x.get("name") for x in sensors if isinstance(x, dict)]
                assume(len(set(names)) == len(names) and "health" not in names)
            # with the hub's write token, so PUT reaches its 200/400 answers too
            case.call_and_validate(base_url=base, headers={"Authorization": "Bearer s3cret"})

        check()
        done.append("%s %s" % (op.method.upper(), op.path))
    # schemathesis leaves out the operation that serves the document itself
    # (fetched and validated by from_url above)
    assert sorted(done) == [
        "GET /api/latest", "GET /api/nodes", "GET /api/nodes/{node}",
        "GET /api/nodes/{node}/config", "GET /api/series/{node}/{sensor}", "GET /healthz",
        "GET /metrics", "PUT /api/nodes/{node}/config"]


def test_known_series_responses_validate(shared_hub, api_schema):
    """Explicit cases that random generation would rarely hit: existing node and series."""
    base = shared_hub.url("")
    op = api_schema["/api/series/{node}/{sensor}"]["GET"]
    for sensor in ("temp", "door", "mode"):
        for window in ("raw", "1m", "1d"):
            case = op.Case(path_parameters={"node": "oa-1", "sensor": sensor},
                           query={"from": 0, "window": window})
            resp = case.call_and_validate(base_url=base)
            assert resp.status_code == 200
            if window == "raw":
                assert len(resp.json()["points"]) == 1
    op = api_schema["/api/nodes/{node}"]["GET"]
    resp = op.Case(path_parameters={"node": "oa-1"}).call_and_validate(base_url=base)
    assert resp.json()["health"] == {"vbat": 3.3}


def test_every_route_is_documented_and_every_path_is_routed():
    from smartpark.hub.api.http import HttpApi
    from smartpark.hub.metrics import Metrics
    from smartpark.hub.openapi import document

    api = HttpApi(registry=None, store=None, events=None, metrics=Metrics())
    routed = set()
    for route in api.app.router.routes():
        if route.method == "HEAD":
            continue
        routed.add((route.method, route.resource.canonical))
    documented = set()
    for path, ops in document("x")["paths"].items():
        for method in ops:
            documented.add((method.upper(), path))
    assert routed == documented
