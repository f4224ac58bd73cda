"""Upstream HTTP API (aiohttp): nodes, latest values, series, events (SSE), metrics, health.

Scope: read the hub's live state (registry) and the store, render JSON; the
one write (PUT /api/nodes/{node}/config) needs `Authorization: Bearer <token>`
with the token from the config (`http.token`; writes are refused while it is
empty). Times are epoch seconds (floats) throughout. Bad parameters answer
400 with {"error": ..., "parameter": <name>}; unknown nodes or series 404.
The OpenAPI document (hub/openapi.py) describes exactly these routes.
"""

import asyncio
import hmac
import json
import math
import time

from aiohttp import web
from smartpark.protocol import cbor
from smartpark.protocol.version import VERSION

from .. import openapi
from ..registry import value_out
from ..rollups import WINDOWS
from ..rules import config_error, config_normalize, node_id_error

DEFAULT_SPAN = 86400.0
MAX_LIMIT = 100000
DEFAULT_LIMIT = 10000
SSE_HEARTBEAT = 15.0
EVENT_TYPES = ("reading", "node", "registration")


def _err(status, text, **extra):
    body = {"error": text}
    body.update(extra)
    return web.json_response(body, status=status)


class BadParam(Exception):
    def __init__(self, name, text):
        super().__init__(text)
        self.name = name
        self.text = text


def _float_param(q, name, default):
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = float(raw)
    except ValueError:
        raise BadParam(name, "%s must be a number of epoch seconds" % name) from None
    if not math.isfinite(v):
        raise BadParam(name, "%s must be finite" % name)
    return v


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class HttpApi:
    def __init__(self, registry, store, events, metrics, token="", health=None):
        self.registry = registry
        self.store = store
        self.events = events
        self.metrics = metrics
        self.token = token or ""
        self.health = health or (lambda: {"status": "ok"})
        self._sse = set()
        self.closing = False
        self.app = self._build()

    def _build(self):
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/api/nodes", self.nodes)
        r.add_get("/api/nodes/{node}", self.node)
        r.add_get("/api/nodes/{node}/config", self.get_config)
        r.add_put("/api/nodes/{node}/config", self.put_config)
        r.add_get("/api/latest", self.latest)
        r.add_get("/api/series/{node}/{sensor}", self.series)
        r.add_get("/api/events", self.sse)
        r.add_get("/metrics", self.metrics_text)
        r.add_get("/healthz", self.healthz)
        r.add_get("/api/openapi.json", self.openapi)
        return app

    @web.middleware
    async def _middleware(self, request, handler):
        try:
            resp = await handler(request)
        except BadParam as e:
            resp = _err(400, e.text, parameter=e.name)
        except web.HTTPException as e:
            if e.status >= 400:
                resp = _err(e.status, e.reason)
            else:
                raise
        self.metrics.requests.inc(resp.status)
        return resp

    # ---- nodes ----------------------------------------------------------------------------------

    async def nodes(self, request):
        reg = self.registry
        return web.json_response([reg.node_view(n) for n in sorted(reg.nodes)])

    async def node(self, request):
        node = request.match_info["node"]
        if node not in self.registry.nodes:
            return _err(404, "unknown node", node=node)
        return web.json_response(self.registry.node_view(node))

    async def get_config(self, request):
        node = request.match_info["node"]
        cfg = self.registry.configs.get(node)
        if cfg is None:
            if node not in self.registry.nodes:
                return _err(404, "unknown node", node=node)
            return web.json_response({"node": node, "version": 0, "config": {}})
        version, body = cfg
        try:
            doc = cbor.loads(body)
        except ValueError:
            doc = {}
        doc.pop("version", None)
        return web.json_response({"node": node, "version": version, "config": doc})

    async def put_config(self, request):
        if not self.token:
            return _err(403, "HTTP writes are disabled: set http.token in the hub config")
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not hmac.compare_digest(
                auth[7:].strip().encode(), self.token.encode()):
            resp = _err(401, "a valid bearer token is required", parameter="Authorization")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="smartpark"'
            return resp
        node = request.match_info["node"]
        try:
            doc = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise BadParam("body", "body must be a JSON object") from None
        if not isinstance(doc, dict):
            raise BadParam("body", "body must be a JSON object")
        if node_id_error(node):
            raise BadParam("node", node_id_error(node))
        doc = config_normalize(doc)
        bad = config_error(doc)  # the firmware's own config rules (hub/rules.py)
        if bad is not None:
            raise BadParam(bad[0], bad[1])
        interval = doc.get("report_interval")
        doc.pop("version", None)

        def body_of(version):  # the version is decided in the store thread; the body has it
            return cbor.dumps(dict(doc, version=version))

        version = await self.store.put_config(node, body_of, time.time())
        await self.registry.set_config(node, version, body_of(version),
                                       float(interval) if interval else None)
        return web.json_response({"node": node, "version": version, "config": doc})

    # ---- readings -------------------------------------------------------------------------------

    async def latest(self, request):
        reg = self.registry
        want = request.query.get("node")
        out = []
        for (node, sensor), sid in sorted(reg.series_by_name.items()):
            if want is not None and node != want:
                continue
            cur = reg.latest.get(sid)
            if cur is None:
                continue
            unit = reg.series[sid][2]
            out.append({"node": node, "sensor": sensor, "unit": unit, "time": cur[0],
                        "value": _json_value(value_out(cur[1], cur[2]))})
        return web.json_response(out)

    async def series(self, request):
        node = request.match_info["node"]
        sensor = request.match_info["sensor"]
        q = request.query
        window = q.get("window", "raw")
        if window != "raw" and window not in WINDOWS:
            raise BadParam("window", "window must be one of raw, 1m, 15m, 1h, 1d")
        now = time.time()
        t1 = _float_param(q, "to", math.inf)
        t0 = _float_param(q, "from", (now if t1 == math.inf else t1) - DEFAULT_SPAN)
        # from > to is an empty range: 200 with no points (not an error)
        limit_raw = q.get("limit")
        limit = DEFAULT_LIMIT
        if limit_raw is not None:
            try:
                limit = int(limit_raw)
            except ValueError:
                raise BadParam("limit", "limit must be an integer") from None
            if not 1 <= limit <= MAX_LIMIT:
                raise BadParam("limit", "limit must be between 1 and %d" % MAX_LIMIT)
        if node not in self.registry.nodes:
            return _err(404, "unknown node", node=node)
        sid = self.registry.series_by_name.get((node, sensor))
        if sid is None:
            return _err(404, "unknown series", node=node, sensor=sensor)
        unit = self.registry.series[sid][2]
        hi = t1 if t1 != math.inf else 1e300
        if window == "raw":
            rows = await self.store.raw(sid, t0, hi, limit)
            points = [{"time": t, "value": _json_value(value_out(kind, val))}
                      for t, kind, val in rows]
        else:
            rows = await self.store.rollup_buckets(sid, WINDOWS[window], t0, hi, limit)
            points = [{"time": t, "count": c, "min": mn, "max": mx, "mean": me, "p50": p50,
                       "p95": p95, "p99": p99}
                      for t, c, mn, mx, me, p50, p95, p99 in rows]
        return web.json_response({"node": node, "sensor": sensor, "unit": unit,
                                  "window": window, "points": points})

    # ---- events ---------------------------------------------------------------------------------

    async def sse(self, request):
        types = request.query.get("types")
        wanted = set(EVENT_TYPES)
        if types:
            wanted = set(t for t in types.split(",") if t)
            bad = wanted - set(EVENT_TYPES)
            if bad:
                raise BadParam("types", "types must be a comma list of " + ", ".join(EVENT_TYPES))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        q = self.events.subscribe()
        self._sse.add(q)
        try:
            await resp.write(b": smartpark hub " + VERSION.encode() + b"\n\n")
            while not self.closing:
                try:
                    ev = await asyncio.wait_for(q.get(), SSE_HEARTBEAT)
                except asyncio.TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if ev is None:
                    break
                if ev["type"] not in wanted:
                    continue
                data = ev["data"]
                if ev["type"] == "reading":
                    data = {"node": data["node"], "sensor": data["sensor"], "unit": data["unit"],
                            "time": data["time"],
                            "value": _json_value(value_out(data["kind"], data["value"]))}
                await resp.write(("event: %s\ndata: %s\n\n" % (
                    ev["type"], json.dumps(data, separators=(",", ":")))).encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._sse.discard(q)
            self.events.unsubscribe(q)
        return resp

    def close_streams(self):
        self.closing = True
        for q in list(self._sse):
            try:
                q.put_nowait(None)
            except asyncio.QueueFull:
                q.get_nowait()
                q.put_nowait(None)

    # ---- service --------------------------------------------------------------------------------

    async def metrics_text(self, request):
        return web.Response(text=self.metrics.render(), content_type="text/plain",
                            charset="utf-8", headers={"X-Prometheus-Format": "0.0.4"})

    async def healthz(self, request):
        h = self.health()
        return web.json_response(h, status=200 if h.get("status") == "ok" else 503)

    async def openapi(self, request):
        return web.json_response(openapi.document(VERSION))
