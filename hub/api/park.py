"""HTTP routes of the park model and the alarms (registered by HttpApi._build).

Scope: parse and check request parameters, call hub/park.py and hub/alarms.py, render
JSON. Access is HttpApi's: reads as every read, writes (PUT, POST, DELETE) need the admin
token. The handlers find the hub's Park and Alarms as `api.park` and `api.alarms` (set by
the composition root); without them reads answer empty and writes 503.

    GET  /api/zones[?zone=]                zones, their nodes and latest values
    PUT  /api/nodes/{node}/meta            set metadata (any of name, zone, location, tags)
    GET  /api/siteplan, PUT /api/siteplan  the site-plan image (png, jpeg, svg; <= 2 MB)
    GET  /api/alarms[?state=&severity=&node=&zone=&acked=]
    GET  /api/alarms/summary
    GET  /api/alarms/{id}, /api/alarms/{id}/history
    POST /api/alarms/{id}/ack, /api/alarms/{id}/clear
    GET  /api/alarm-rules, POST /api/alarm-rules
    GET, PUT, DELETE /api/alarm-rules/{id}
"""

from aiohttp import web

from .. import alarms as alarms_mod
from .. import park as park_mod
from ..park import MAX_SITEPLAN, ParkError
from ..rules import NODE_ID_PATTERN
from .body import read_body


def _err(status, text, parameter=None):
    body = {"error": text}
    if parameter:
        body["parameter"] = parameter
    return web.json_response(body, status=status)


def _refused(e):
    return _err(e.status, e.text, e.parameter)


async def _json_body(request):
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError):
        return _err(400, "body must be a JSON object", "body")


class Routes:
    """The handlers, on `api` (an HttpApi) for its park and alarms."""

    def __init__(self, api):
        self.api = api

    def park(self):
        return getattr(self.api, "park", None)

    def alarms(self):
        return getattr(self.api, "alarms", None)

    async def zones(self, request):
        p = self.park()
        under = request.query.get("zone") or None
        return web.json_response(p.zones(under) if p is not None else [])

    async def put_meta(self, request):
        p = self.park()
        if p is None:
            return _err(503, "this hub has no park model")
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        try:
            return web.json_response(await p.set_meta(request.match_info["node"], body))
        except ParkError as e:
            return _refused(e)

    async def get_siteplan(self, request):
        p = self.park()
        got = await p.get_siteplan() if p is not None else None
        if got is None:
            return _err(404, "no site plan uploaded")
        ctype, data = got
        return web.Response(body=data, content_type=ctype, headers={
            "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})

    async def put_siteplan(self, request):
        p = self.park()
        if p is None:
            return _err(503, "this hub has no park model")
        data = await read_body(request, MAX_SITEPLAN)
        if data is None:
            return _err(413, "the site plan is larger than %d bytes" % MAX_SITEPLAN, "body")
        try:
            return web.json_response(await p.put_siteplan(request.content_type, data))
        except ParkError as e:
            return _refused(e)

    # ---- alarms ----------------------------------------------------------------------------

    def alarm_id(self, request):
        raw = request.match_info["id"]
        if not (raw.isascii() and raw.isdigit()) or raw.strip("0") == "":
            raise alarms_mod.AlarmError("id must be an alarm number (1, 2, ...)", "id")
        return int(raw) if len(raw) < 19 else 0  # 0: no such alarm (404)

    async def call(self, fn, *args, status=200):
        a = self.alarms()
        if a is None:
            return _err(503, "this hub has no alarms")
        try:
            return web.json_response(await fn(a, *args), status=status)
        except alarms_mod.AlarmError as e:
            return _refused(e)

    async def alarm_list(self, request):
        a = self.alarms()
        q = request.query
        state, severity = q.get("state") or None, q.get("severity") or None
        if state is not None and state not in alarms_mod.STATES:
            return _err(400, "state must be active or cleared", "state")
        if severity is not None and severity not in alarms_mod.SEVERITIES:
            return _err(400, "severity must be one of " + ", ".join(alarms_mod.SEVERITIES),
                        "severity")
        acked = q.get("acked") or None
        if acked is not None and acked not in ("true", "false"):
            return _err(400, "acked must be true or false", "acked")
        if a is None:
            return web.json_response([])
        return web.json_response(await a.read(a.query, state, severity, q.get("node") or None,
                                              q.get("zone") or None,
                                              None if acked is None else acked == "true"))

    async def summary(self, request):
        a = self.alarms()
        if a is None:
            return web.json_response({"active": dict.fromkeys(alarms_mod.SEVERITIES, 0),
                                      "unacked": 0})
        return web.json_response(await a.read(a.summary))

    async def one(self, request):
        async def go(a, aid):
            return await a.read(lambda: a.view(a.get(aid)))

        try:
            return await self.call(go, self.alarm_id(request))
        except alarms_mod.AlarmError as e:
            return _refused(e)

    async def history(self, request):
        async def go(a, aid):
            return await a.read(a.history, aid)

        try:
            return await self.call(go, self.alarm_id(request))
        except alarms_mod.AlarmError as e:
            return _refused(e)

    async def ack(self, request):
        try:
            return await self.call(lambda a, i: a.ack(i), self.alarm_id(request))
        except alarms_mod.AlarmError as e:
            return _refused(e)

    async def clear(self, request):
        try:
            return await self.call(lambda a, i: a.clear(i), self.alarm_id(request))
        except alarms_mod.AlarmError as e:
            return _refused(e)

    async def rule_list(self, request):
        a = self.alarms()
        return web.json_response(a.rule_list() if a is not None else [])

    async def rule_add(self, request):
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        return await self.call(lambda a, b: a.add_rule(b), body, status=201)

    async def rule_get(self, request):
        async def go(a, rid):
            return a.rule_view(a.rule(rid))

        return await self.call(go, request.match_info["id"])

    async def rule_put(self, request):
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        return await self.call(lambda a, rid, b: a.put_rule(rid, b), request.match_info["id"], body)

    async def rule_delete(self, request):
        return await self.call(lambda a, rid: a.delete_rule(rid), request.match_info["id"])

    def add(self, app):
        r = app.router
        r.add_get("/api/zones", self.zones)
        r.add_put("/api/nodes/{node}/meta", self.put_meta)
        r.add_get("/api/siteplan", self.get_siteplan)
        r.add_put("/api/siteplan", self.put_siteplan)
        r.add_get("/api/alarms", self.alarm_list)
        r.add_get("/api/alarms/summary", self.summary)
        r.add_get("/api/alarms/{id}", self.one)
        r.add_get("/api/alarms/{id}/history", self.history)
        r.add_post("/api/alarms/{id}/ack", self.ack)
        r.add_post("/api/alarms/{id}/clear", self.clear)
        r.add_get("/api/alarm-rules", self.rule_list)
        r.add_post("/api/alarm-rules", self.rule_add)
        r.add_get("/api/alarm-rules/{id}", self.rule_get)
        r.add_put("/api/alarm-rules/{id}", self.rule_put)
        r.add_delete("/api/alarm-rules/{id}", self.rule_delete)


def add_routes(app, api):
    """The routes, on `api` (an HttpApi) for its park and alarms."""
    Routes(api).add(app)


# ---- OpenAPI (hub/openapi.py merges these paths into its document) ----------------------------

def _j(schema, description="OK"):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _e(description):
    return _j({"$ref": "#/components/schemas/Error"}, description)


_W = {"401": _e("missing or wrong token"),
      "403": _e("writes disabled (no admin token configured), or the read token sent for a "
                "write")}
_NUM = {"type": "number"}
_STR_NULL = {"type": ["string", "null"]}
META = {"type": "object", "additionalProperties": False,
        "properties": {"name": {"type": ["string", "null"], "pattern": park_mod.NAME_PATTERN},
                       "zone": {"type": ["string", "null"], "pattern": park_mod.ZONE_PATTERN},
                       "location": {"oneOf": [
                           {"type": "null"},
                           {"type": "object", "required": ["lat", "lon"],
                            "additionalProperties": False,
                            "properties": {"lat": {"type": "number", "minimum": -90,
                                                   "maximum": 90},
                                           "lon": {"type": "number", "minimum": -180,
                                                   "maximum": 180}}},
                           {"type": "object", "required": ["x", "y"],
                            "additionalProperties": False,
                            "properties": {"x": {"type": "number", "minimum": 0, "maximum": 1},
                                           "y": {"type": "number", "minimum": 0,
                                                 "maximum": 1}}}]},
                       "tags": {"type": ["array", "null"], "maxItems": park_mod.MAX_TAGS,
                                "items": {"type": "string",
                                          "pattern": park_mod.TAG_PATTERN}}}}
ALARM = {"type": "object", "required": ["id", "rule", "source", "node", "severity", "state",
                                        "acked", "raised", "updated", "message"],
         "properties": {"id": {"type": "integer"}, "rule": {"type": "string"},
                        "source": {"type": "string"}, "node": {"type": "string"},
                        "zone": _STR_NULL, "sensor": _STR_NULL,
                        "severity": {"type": "string", "enum": list(alarms_mod.SEVERITIES)},
                        "state": {"type": "string", "enum": list(alarms_mod.STATES)},
                        "acked": {"type": "boolean"}, "raised": _NUM,
                        "cleared": {"type": ["number", "null"]},
                        "acked_at": {"type": ["number", "null"]}, "updated": _NUM,
                        "value": {}, "message": {"type": "string"}}}
RULE = {"type": "object", "required": ["id", "type", "severity", "enabled", "origin"],
        "properties": {"id": {"type": "string"},
                       "type": {"type": "string", "enum": list(alarms_mod.TYPES)},
                       "severity": {"type": "string", "enum": list(alarms_mod.SEVERITIES)},
                       "origin": {"type": "string", "enum": ["file", "api"]}}}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
_RULE_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _q(name, schema):
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _alarm_op(summary, op_id, write=False):
    op = {"summary": summary, "operationId": op_id, "parameters": [_ID],
          "responses": {"200": _j(ALARM), "400": _e("id is not an alarm number"),
                        "404": _e("unknown alarm"), "503": _e("this hub has no alarms")}}
    if write:
        op["security"] = [{"adminToken": []}]
        op["responses"].update(_W)
    return op


def openapi_paths():
    """The paths of these routes for the OpenAPI document."""
    rule_body = {"required": True, "content": {"application/json": {
        "schema": alarms_mod.rule_json_schema()}}}
    rule_put = {"required": True, "content": {"application/json": {
        "schema": alarms_mod.rule_json_schema(with_id=False)}}}
    return {
        "/api/zones": {"get": {
            "summary": "Zones (every zone a node names and its ancestors), their nodes and "
                       "the latest reading per sensor kind",
            "operationId": "listZones", "parameters": [_q("zone", {"type": "string"})],
            "responses": {"200": _j({"type": "array", "items": {
                "type": "object", "required": ["zone", "nodes", "latest"],
                "properties": {"zone": {"type": "string"}, "parent": _STR_NULL,
                               "nodes": {"type": "array", "items": {"type": "string"}},
                               "latest": {"type": "object"}}}})}}},
        "/api/nodes/{node}/meta": {"put": {
            "summary": "Set a node's metadata (admin token): any of name, zone, location, "
                       "tags; null clears a field",
            "operationId": "putMeta", "security": [{"adminToken": []}],
            "parameters": [{"name": "node", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": NODE_ID_PATTERN}}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": META}}},
            "responses": dict({"200": _j(META), "400": _e("a bad field (named)"),
                               "503": _e("not saved")}, **_W)}},
        "/api/siteplan": {
            "get": {"summary": "The site-plan image", "operationId": "getSiteplan",
                    "responses": {"200": {"description": "the image", "content": {
                        t: {"schema": {"type": "string", "format": "binary"}}
                        for t in ("image/png", "image/jpeg", "image/svg+xml")}},
                        "404": _e("no site plan uploaded")}},
            "put": {"summary": "Upload the site-plan image (admin token; png, jpeg or svg, at "
                               "most 2 MB)", "operationId": "putSiteplan",
                    "security": [{"adminToken": []}],
                    "requestBody": {"required": True, "content": {
                        t: {"schema": {"type": "string", "format": "binary"}}
                        for t in ("image/png", "image/jpeg", "image/svg+xml")}},
                    "responses": dict({"200": _j({"type": "object"}),
                                       "400": _e("the body is not such an image"),
                                       "413": _e("larger than 2 MB"),
                                       "415": _e("not png, jpeg or svg"),
                                       "503": _e("not saved")}, **_W)}},
        "/api/alarms": {"get": {
            "summary": "Alarms, newest first", "operationId": "listAlarms",
            "parameters": [_q("state", {"type": "string", "enum": list(alarms_mod.STATES)}),
                           _q("severity", {"type": "string",
                                           "enum": list(alarms_mod.SEVERITIES)}),
                           _q("node", {"type": "string"}), _q("zone", {"type": "string"}),
                           _q("acked", {"type": "string", "enum": ["true", "false"]})],
            "responses": {"200": _j({"type": "array", "items": ALARM}),
                          "400": _e("a bad parameter (named)")}}},
        "/api/alarms/summary": {"get": {
            "summary": "Active alarms per severity, and how many are unacknowledged",
            "operationId": "alarmSummary",
            "responses": {"200": _j({"type": "object", "required": ["active", "unacked"],
                                     "properties": {"active": {"type": "object"},
                                                    "unacked": {"type": "integer"}}})}}},
        "/api/alarms/{id}": {"get": _alarm_op("One alarm", "getAlarm")},
        "/api/alarms/{id}/history": {"get": {
            "summary": "An alarm's history", "operationId": "alarmHistory", "parameters": [_ID],
            "responses": {"200": _j({"type": "array", "items": {
                "type": "object", "required": ["t", "event"],
                "properties": {"t": _NUM, "event": {"type": "string", "enum": [
                    "raised", "updated", "acked", "cleared"]}, "value": {},
                    "by": _STR_NULL}}}),
                "400": _e("id is not an alarm number"), "404": _e("unknown alarm"),
                "503": _e("this hub has no alarms")}}},
        "/api/alarms/{id}/ack": {"post": _alarm_op("Acknowledge an alarm (admin token)",
                                                   "ackAlarm", True)},
        "/api/alarms/{id}/clear": {"post": _alarm_op(
            "Clear an alarm (admin token); it is raised again once its condition went away "
            "and came back", "clearAlarm", True)},
        "/api/alarm-rules": {
            "get": {"summary": "Alarm rules (from alarms.file and the API)",
                    "operationId": "listAlarmRules",
                    "responses": {"200": _j({"type": "array", "items": RULE})}},
            "post": {"summary": "Add an alarm rule (admin token)", "operationId": "addAlarmRule",
                     "security": [{"adminToken": []}], "requestBody": rule_body,
                     "responses": dict({"201": _j(RULE, "added"),
                                        "400": _e("a bad field (named)"),
                                        "409": _e("the id is in use"),
                                        "503": _e("not saved, or this hub has no alarms")},
                                       **_W)}},
        "/api/alarm-rules/{id}": {
            "get": {"summary": "One alarm rule", "operationId": "getAlarmRule",
                    "parameters": [_RULE_ID],
                    "responses": {"200": _j(RULE), "404": _e("unknown rule"),
                                  "503": _e("this hub has no alarms")}},
            "put": {"summary": "Replace an alarm rule of the API (admin token)",
                    "operationId": "putAlarmRule", "security": [{"adminToken": []}],
                    "parameters": [_RULE_ID], "requestBody": rule_put,
                    "responses": dict({"200": _j(RULE), "400": _e("a bad field (named)"),
                                       "404": _e("unknown rule"),
                                       "409": _e("the rule comes from alarms.file"),
                                       "503": _e("not saved, or this hub has no alarms")},
                                      **_W)},
            "delete": {"summary": "Delete an alarm rule of the API (admin token); its active "
                                  "alarms clear", "operationId": "deleteAlarmRule",
                       "security": [{"adminToken": []}], "parameters": [_RULE_ID],
                       "responses": dict({"200": _j(RULE, "deleted"),
                                          "404": _e("unknown rule"),
                                          "409": _e("the rule comes from alarms.file"),
                                          "503": _e("not saved, or this hub has no alarms")},
                                         **_W)}},
    }
