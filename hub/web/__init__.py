"""The dashboard: static HTML, CSS and JavaScript the hub serves at `/` (hub/web/static/).

No build step and nothing fetched from elsewhere: plain ES modules read the HTTP API
with the token the login page keeps for the browser session (sessionStorage), sent as
`Authorization: Bearer`; the event stream is read with fetch() for the same header.
The files themselves hold no data, so they are served without a token
(OPEN_ROUTES), with a Content-Security-Policy that lets them load only from the hub.
GET /api/access tells the login page what a token may do, GET /api/overview gives the
overview its counts and first rows whatever the park's size (overview.py); both are reads
like any other (on a hub whose reads need a token, 401 without a valid one). What the
pages show: docs/dashboard.md.
"""

import gzip
import hashlib
import os

from aiohttp import web

from . import overview

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
OPEN_ROUTES = ("/", "/ui/{name}")
TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript",
         ".svg": "image/svg+xml", ".ico": "image/x-icon"}
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")


def _load():
    """{name: (bytes, content type, etag, gzipped bytes)} of every file in static/, read
    once (gzip: what a browser that accepts it gets, about a third of the bytes)."""
    files = {}
    for name in sorted(os.listdir(STATIC)):
        ext = os.path.splitext(name)[1]
        if ext not in TYPES:
            continue
        with open(os.path.join(STATIC, name), "rb") as f:
            body = f.read()
        files[name] = (body, TYPES[ext], '"%s"' % hashlib.sha256(body).hexdigest()[:16],
                       gzip.compress(body, 9, mtime=0))
    return files


class Dashboard:
    def __init__(self, api=None):
        self.files = _load()
        self.api = api

    async def whoami(self, request):
        """{"role": "admin"|"read"|null, "reads_need_token", "writes"} for the request's
        bearer token (null: none, or not one of this hub's)."""
        from ..api.http import bearer  # api/http.py imports this package
        acc = self.api.access if self.api is not None else None
        role = acc.role(bearer(request.headers.get("Authorization"))) if acc else None
        return web.json_response({
            "role": role, "reads_need_token": bool(acc and acc.reads_need_token),
            "writes": bool(acc and acc.admin_token)})

    def _send(self, request, name):
        got = self.files.get(name)
        if got is None:
            return web.json_response({"error": "no such file", "parameter": "name"},
                                     status=404)
        body, ctype, etag, packed = got
        headers = {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding",
                   "X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP,
                   "Referrer-Policy": "no-referrer"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        if "gzip" in request.headers.get("Accept-Encoding", "").lower():
            headers["Content-Encoding"] = "gzip"
            body = packed
        return web.Response(body=body, content_type=ctype,
                            charset="utf-8" if ctype.startswith("text/") else None,
                            headers=headers)

    async def index(self, request):
        return self._send(request, "index.html")

    async def file(self, request):
        return self._send(request, request.match_info["name"])


    async def overview(self, request):
        from ..api.http import BadParam  # api/http.py imports this package
        q = request.query
        raw = q.get("limit", str(overview.DEFAULT_LIMIT))
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 10000:
            raise BadParam("limit", "limit must be an integer between 1 and 10000")
        park = getattr(self.api, "park", None)  # hub/park.py, when the hub has one
        body = overview.overview(self.api.registry, park.meta if park else (lambda n: None),
                                 q.get("q", ""), int(raw))
        return web.json_response(body)


def add_routes(app, api=None):
    """The dashboard's routes on the HTTP API's aiohttp application; `api`: the HttpApi
    (its access rules for /api/access, its registry and park for /api/overview)."""
    d = Dashboard(api)
    app.router.add_get("/", d.index)
    app.router.add_get("/ui/{name}", d.file)
    app.router.add_get("/api/access", d.whoami)
    app.router.add_get("/api/overview", d.overview)
    return d
