"""Upstream HTTP API (aiohttp): nodes, latest values, series, events (SSE), metrics, health.

Scope: read the hub's live state (registry) and the store, render JSON, and
decide who may do so (Access). Times are epoch seconds (floats) throughout.
Bad parameters answer 400 with {"error": ..., "parameter": <name>}; unknown
nodes or series 404. The OpenAPI document (hub/openapi.py) describes exactly
these routes.

Access (`Authorization: Bearer <token>`, compared in constant time):
* writes (PUT /api/nodes/{node}/config, POST /api/firmware, POST /api/rollouts[/...]) need
  `http.admin_token`: none
  configured = 403 for every write; missing or wrong = 401; the read token =
  403 (insufficient_scope).
* reads need `http.read_token` or the admin token when the API is bound to
  anything but loopback (127.0.0.0/8, ::1, "localhost") and `http.open_reads`
  is false; else they are open. /healthz, /api/openapi.json and the dashboard's static
  files (/ and /ui/{name}, hub/web/: they hold no data) are always open.
  SSE (/api/events) takes the header like every route (no token in the URL).
* 401 carries `WWW-Authenticate: Bearer realm="smartpark"`.
Node configs leave with their secrets masked (hub/nodesecrets.py); a "***" in
a PUT keeps the stored secret. Tokens are never logged.

Firmware (hub/firmware.py): GET /api/firmware lists the store's versions;
POST /api/firmware takes a bundle directory as a tar archive (Content-Type
application/x-tar, at most firmware.MAX_UPLOAD bytes) and publishes it: 201
{"version", "created": true}, 200 with "created": false when the same bundle
is there already, 400 naming what is wrong with the archive or the bundle,
409 when the version exists with other content, 413 too large, 415 another
content type.

Rollouts (hub/rollouts.py): POST /api/rollouts {version, nodes, canary, soak, max_failures}
starts one (201 with the rollout; 400 naming a bad parameter, 404 for a version the store
does not hold, 409 when an active rollout already has one of the nodes); GET /api/rollouts
lists them (without their node rows), GET /api/rollouts/{id} shows one; POST
/api/rollouts/{id}/halt and /cancel stop one (409 when its state does not allow it). Each
of them evaluates the rollouts first, so the answer is current.
"""

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import ssl
import time

from aiohttp import web
from smartpark.protocol import cbor
from smartpark.protocol.version import VERSION

from .. import firmware, nodesecrets, openapi
from .. import web as web_ui
from ..registry import value_out
from ..rollouts import RolloutError
from ..rollups import WINDOWS
from ..rules import config_error, config_normalize, node_id_error
from ..web import series as chart
from . import park as park_api
from .body import read_body

DEFAULT_SPAN = 86400.0
MAX_LIMIT = 100000
DEFAULT_LIMIT = 10000
SSE_HEARTBEAT = 15.0
MAX_READINGS_OF = 1000
EVENT_TYPES = ("reading", "node", "registration", "rollout", "alarm")
OPEN_ROUTES = ("/healthz", "/api/openapi.json") + web_ui.OPEN_ROUTES  # no token, any bind
REALM = 'Bearer realm="smartpark"'

log = logging.getLogger(__name__)


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


def _int_param(q, name, default, top):
    raw = q.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BadParam(name, "%s must be an integer" % name) from None
    if not 1 <= v <= top:
        raise BadParam(name, "%s must be between 1 and %d" % (name, top))
    return v


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _raw_point(t, kind, val, est):
    """One stored reading as a point of /api/series: "est": true only on a reading whose
    time the node estimated (docs/diagnostics.md), so measured points stay as they were."""
    p = {"time": t, "value": _json_value(value_out(kind, val))}
    if est:
        p["est"] = True
    return p


def is_loopback(host):
    """True for a bind address that only this machine reaches: 127.0.0.0/8, ::1 (also as
    ::ffff:127.x.y.z) and "localhost". Any other name or address (0.0.0.0, ::) is not."""
    h = host.strip().lower().rstrip(".")
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h == "localhost":
        return True
    try:
        a = ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        return False
    if a.version == 6 and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return a.is_loopback


def reads_need_token(bind, open_reads=False):
    """The read rule: a token is needed unless the API is bound to loopback or open_reads."""
    return not open_reads and not is_loopback(bind)


def bearer(header):
    """The token of an `Authorization: Bearer <token>` header value (scheme in any case),
    else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Access:
    """Who may read and write over HTTP (the rules are in the module docstring)."""

    def __init__(self, read_token="", admin_token="", bind="127.0.0.1", open_reads=False,
                 tls=False):
        self.read_token = read_token or ""
        self.admin_token = admin_token or ""
        self.bind = bind
        self.open_reads = bool(open_reads)
        self.tls = bool(tls)
        self.reads_need_token = reads_need_token(bind, open_reads)

    @classmethod
    def from_config(cls, c):
        return cls(c.http_read_token, c.http_admin_token, c.http_bind, c.http_open_reads,
                   bool(c.http_tls_cert))

    def role(self, token):
        """"admin", "read" or None for a presented token (None: no token). Both tokens are
        compared, each with hmac.compare_digest, whatever the first comparison found."""
        if token is None:
            return None
        given = token.encode("utf-8", "replace")
        ok = token.isascii()
        admin = hmac.compare_digest(given, self.admin_token.encode()) and ok
        read = hmac.compare_digest(given, self.read_token.encode()) and ok
        if admin and self.admin_token:
            return "admin"
        if read and self.read_token:
            return "read"
        return None

    def startup_notes(self):
        """(level, text) lines to log once at start: how reads and writes are guarded.
        They name the settings, never a token."""
        notes = []
        where = "HTTP API bound to %s" % self.bind
        if self.reads_need_token and not (self.read_token or self.admin_token):
            notes.append((logging.WARNING, where + " (not loopback) with no token: every read "
                          "answers 401. Set http.read_token in the hub config or "
                          "SMARTPARK_READ_TOKEN in its environment (or http.open_reads = true "
                          "to serve reads to anyone)"))
        elif self.open_reads and not is_loopback(self.bind):
            notes.append((logging.WARNING, where + " with http.open_reads = true: anyone who "
                          "reaches it reads every reading and node"))
        if not self.tls and not is_loopback(self.bind) and (self.read_token or self.admin_token):
            notes.append((logging.WARNING, where + " without TLS: bearer tokens cross the "
                          "network in clear text; set http.tls_cert and http.tls_key, or put "
                          "a TLS proxy in front and bind to loopback"))
        if not self.admin_token:
            notes.append((logging.INFO, "HTTP writes disabled: no http.admin_token"))
        return notes


def tls_context(cert, key):
    """A server SSLContext for the PEM files `cert` (chain) and `key`; None without cert.
    A key with a passphrase is refused (no prompt on a service's terminal)."""
    if not cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key, password=lambda: b"")
    return ctx


def _unauthorized(text, token_given):
    resp = _err(401, text, parameter="Authorization")
    resp.headers["WWW-Authenticate"] = REALM + (', error="invalid_token"' if token_given else "")
    return resp


class HttpApi:
    def __init__(self, registry, store, events, metrics, token="", health=None, access=None,
                 data_dir=None, rollouts=None):
        """`access`: an Access; without it, `token` is the admin token and reads follow
        the loopback default. `data_dir`: the hub's data directory, for the firmware
        store (without it the list is empty and publishing answers 503). `rollouts`:
        the hub's Rollouts (without it the list is empty and the rest answers 503)."""
        self.data_dir = data_dir
        self.rollouts = rollouts
        self.registry = registry
        self.store = store
        self.events = events
        self.metrics = metrics
        self.access = access if access is not None else Access(admin_token=token)
        self.health = health or (lambda: {"status": "ok"})
        self._sse = set()
        self.closing = False
        self.app = self._build()
        for level, text in self.access.startup_notes():
            log.log(level, "%s", text)

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
        r.add_get("/api/firmware", self.firmware_list)
        r.add_post("/api/firmware", self.firmware_publish)
        r.add_get("/api/rollouts", self.rollout_list)
        r.add_post("/api/rollouts", self.rollout_start)
        r.add_get("/api/rollouts/{id}", self.rollout_get)
        r.add_post("/api/rollouts/{id}/halt", self.rollout_halt)
        r.add_post("/api/rollouts/{id}/cancel", self.rollout_cancel)
        r.add_get("/metrics", self.metrics_text)
        r.add_get("/healthz", self.healthz)
        r.add_get("/api/openapi.json", self.openapi)
        park_api.add_routes(app, self)  # zones, metadata, site plan, alarms (hub/api/park.py)
        web_ui.add_routes(app, self)  # the dashboard at / (hub/web/), its two reads
        return app

    def _refusal(self, request):
        """The 401/403 for a request the access rules refuse, else None."""
        resource = request.match_info.route.resource
        if resource is not None and resource.canonical in OPEN_ROUTES:
            return None
        acc = self.access
        token = bearer(request.headers.get("Authorization"))
        if request.method not in ("GET", "HEAD"):
            if not acc.admin_token:
                return _err(403, "HTTP writes are disabled: set http.admin_token in the hub "
                                 "config (or SMARTPARK_ADMIN_TOKEN in its environment)")
            role = acc.role(token)
            if role == "admin":
                return None
            if role == "read":
                resp = _err(403, "the read token cannot write: use the admin token",
                            parameter="Authorization")
                resp.headers["WWW-Authenticate"] = REALM + ', error="insufficient_scope"'
                return resp
            return _unauthorized("a valid bearer token (the admin token) is required",
                                 token is not None)
        if not acc.reads_need_token:
            return None
        if not (acc.read_token or acc.admin_token):
            return _unauthorized("reads need a bearer token on this hub (HTTP bound to %s) and "
                                 "none is configured: set http.read_token (or "
                                 "SMARTPARK_READ_TOKEN), or http.open_reads = true" % acc.bind,
                                 False)
        if acc.role(token) is not None:
            return None
        return _unauthorized("a valid bearer token (the read or admin token) is required",
                             token is not None)

    @web.middleware
    async def _middleware(self, request, handler):
        try:
            resp = self._refusal(request)
            if resp is None:
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
        return web.json_response([self._meta(reg.node_view(n)) for n in sorted(reg.nodes)])

    def _meta(self, view):
        park = getattr(self, "park", None)  # hub/park.py, set by the composition root
        view["meta"] = park.meta(view["id"]) if park is not None else None
        return view

    async def node(self, request):
        node = request.match_info["node"]
        if node not in self.registry.nodes:
            return _err(404, "unknown node", node=node)
        view = self._meta(self.registry.node_view(node))
        view["update"] = self.registry.update_view(node)
        return web.json_response(view)

    async def get_config(self, request):
        node = request.match_info["node"]
        if node not in self.registry.configs and node not in self.registry.nodes:
            return _err(404, "unknown node", node=node)
        version, doc = self._stored_config(node)
        return web.json_response({"node": node, "version": version,
                                  "config": nodesecrets.masked(doc)})

    def _stored_config(self, node):
        """(version, config dict without "version") as stored; (0, {}) when none is."""
        cfg = self.registry.configs.get(node)
        if cfg is None:
            return 0, {}
        version, body = cfg
        try:
            doc = cbor.loads(body)
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        doc.pop("version", None)
        return version, doc

    async def put_config(self, request):  # the admin token was checked in _refusal
        node = request.match_info["node"]
        try:
            doc = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise BadParam("body", "body must be a JSON object") from None
        if not isinstance(doc, dict):
            raise BadParam("body", "body must be a JSON object")
        if node_id_error(node):
            raise BadParam("node", node_id_error(node))
        try:  # "***" (as GET shows a secret) keeps the stored value
            doc = nodesecrets.restore(doc, self._stored_config(node)[1])
        except nodesecrets.MissingSecret as e:
            raise BadParam(e.path, str(e)) from None
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
        return web.json_response({"node": node, "version": version,
                                  "config": nodesecrets.masked(doc)})

    # ---- firmware -------------------------------------------------------------------------------

    async def firmware_list(self, request):
        if self.data_dir is None:
            return web.json_response([])
        return web.json_response(await asyncio.to_thread(firmware.versions, self.data_dir))

    async def firmware_publish(self, request):  # the admin token was checked in _refusal
        if self.data_dir is None:
            return _err(503, "this hub has no firmware store")
        if request.content_type != "application/x-tar":
            return _err(415, "the body must be a tar archive of the bundle directory "
                             "(Content-Type application/x-tar)", parameter="Content-Type")
        data = await read_body(request, firmware.MAX_UPLOAD)
        if data is None:
            return _err(413, "the archive is larger than %d bytes" % firmware.MAX_UPLOAD,
                        parameter="body")
        try:
            version, created = await asyncio.to_thread(firmware.publish_tar, self.data_dir,
                                                       data)
        except firmware.FirmwareError as e:
            return _err(e.status, str(e), parameter="body")
        if created:
            log.info("firmware %s published over HTTP", version)
        return web.json_response({"version": version, "created": created},
                                 status=201 if created else 200)

    # ---- rollouts -------------------------------------------------------------------------------

    def _rollout_id(self, request):
        raw = request.match_info["id"]
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
            raise BadParam("id", "id must be a rollout number (1, 2, ...)")
        return int(raw)

    async def _rollout_call(self, fn, *args, status=200):
        if self.rollouts is None:
            return _err(503, "this hub has no rollouts")
        try:
            view = await fn(*args)
        except RolloutError as e:
            extra = {"parameter": e.parameter} if e.parameter else {}
            return _err(e.status, e.text, **extra)
        return web.json_response(view, status=status)

    async def rollout_list(self, request):
        if self.rollouts is None:
            return web.json_response([])
        await self.rollouts.tick()
        return web.json_response(self.rollouts.list_view())

    async def rollout_get(self, request):
        rid = self._rollout_id(request)

        async def one():
            await self.rollouts.tick()
            return self.rollouts.view(self.rollouts.get(rid))

        return await self._rollout_call(one)

    async def rollout_start(self, request):  # the admin token was checked in _refusal
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise BadParam("body", "body must be a JSON object") from None
        return await self._rollout_call(self.rollouts.start if self.rollouts else None, body,
                                        status=201)

    async def rollout_halt(self, request):
        rid = self._rollout_id(request)
        return await self._rollout_call(self.rollouts.halt if self.rollouts else None, rid)

    async def rollout_cancel(self, request):
        rid = self._rollout_id(request)
        return await self._rollout_call(self.rollouts.cancel if self.rollouts else None, rid)

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

    async def series(self, request):  # noqa: C901  (parameters, then one read)
        node = request.match_info["node"]
        sensor = request.match_info["sensor"]
        q = request.query
        window = q.get("window", "raw")
        if window != "raw" and window not in WINDOWS:
            raise BadParam("window", "window must be one of raw, 1m, 15m, 1h, 1d")
        fmt = q.get("format", "json")
        if fmt not in ("json", "csv"):
            raise BadParam("format", "format must be json or csv")
        now = time.time()
        t1 = _float_param(q, "to", math.inf)
        t0 = _float_param(q, "from", (now if t1 == math.inf else t1) - DEFAULT_SPAN)
        # from > to is an empty range: 200 with no points (not an error)
        limit = _int_param(q, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        max_points = _int_param(q, "max_points", None, MAX_LIMIT)
        auto = max_points is not None and "window" not in q  # the hub picks the window
        if max_points is not None:
            max_points = limit = min(max_points, limit)
        if node not in self.registry.nodes:
            return _err(404, "unknown node", node=node)
        sid = self.registry.series_by_name.get((node, sensor))
        if sid is None:
            return _err(404, "unknown series", node=node, sensor=sensor)
        unit = self.registry.series[sid][2]
        hi = t1 if t1 != math.inf else 1e300
        rows = None
        if auto:  # hub/web/series.py: raw when few enough, else the smallest rollup window
            rows = await self.store.raw(sid, t0, hi, max_points + 1)
            if len(rows) <= max_points:
                window = "raw"
            else:
                rows, window = None, chart.rollup_window(t0, t1, max_points)
        if window == "raw":
            if rows is None:
                rows = await self.store.raw(sid, t0, hi, limit)
            points = [_raw_point(t, kind, val, est) for t, kind, val, est in rows]
        else:
            rows = await self.store.rollup_buckets(sid, WINDOWS[window], t0, hi, limit)
            points = [{"time": t, "count": c, "min": mn, "max": mx, "mean": me, "p50": p50,
                       "p95": p95, "p99": p99}
                      for t, c, mn, mx, me, p50, p95, p99 in rows]
        if fmt == "csv":
            name = "%s_%s_%s.csv" % (node, sensor, window)
            return web.Response(text=chart.to_csv(window, points), content_type="text/csv",
                                charset="utf-8", headers={
                                    "Content-Disposition": 'attachment; filename="%s"' % name})
        body = {"node": node, "sensor": sensor, "unit": unit, "window": window,
                "points": points}
        if max_points is not None:
            body.update({"max_points": max_points, "from": t0,
                         "to": t1 if t1 != math.inf else None})
        return web.json_response(body)

    # ---- events ---------------------------------------------------------------------------------

    async def sse(self, request):
        types = request.query.get("types")
        wanted = set(EVENT_TYPES)
        if types:
            wanted = set(t for t in types.split(",") if t)
            bad = wanted - set(EVENT_TYPES)
            if bad:
                raise BadParam("types", "types must be a comma list of " + ", ".join(EVENT_TYPES))
        of = request.query.get("readings_of")  # the dashboard's page: its nodes' readings
        only = None if of is None else set(n for n in of.split(",") if n)
        if only is not None and len(only) > MAX_READINGS_OF:
            raise BadParam("readings_of", "readings_of takes at most %d node ids"
                           % MAX_READINGS_OF)
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
                    if only is not None and data["node"] not in only:
                        continue
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
        return web.json_response(openapi.document(VERSION, self.access.reads_need_token))
