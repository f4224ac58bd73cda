"""The OpenAPI 3 document of the HTTP API (served at /api/openapi.json).

Kept beside api/http.py and checked against the running server by
tests/hub/test_openapi.py, which calls every documented path and validates
each response against the schema here.

Security: two bearer schemes, `readToken` (http.read_token) and `adminToken`
(http.admin_token). Writes need adminToken. Reads take either; the document
a hub serves marks them optional (`{}` among the alternatives) when its
reads are open (loopback bind or http.open_reads), required otherwise.
/healthz and /api/openapi.json need none.
"""

from . import firmware, rollouts, rules
from .api import park as park_api

_ERROR = {"type": "object", "required": ["error"],
          "properties": {"error": {"type": "string"}, "parameter": {"type": "string"},
                         "node": {"type": "string"}, "sensor": {"type": "string"}}}

_HEALTH = {"type": "object", "required": ["status"], "properties": {
    "status": {"type": "string", "enum": ["ok", "degraded"]},
    "reasons": {"type": "array", "items": {"type": "string"}},
    "disk": {"type": "object", "properties": {
        "free_bytes": {"type": ["integer", "null"]}, "reserve_bytes": {"type": ["integer", "null"]},
        "refusing": {"type": "boolean"}, "changes": {"type": "integer"}}},
    "clock": {"type": "object", "properties": {
        "steps": {"type": "integer"}, "last_step": {"type": "number"},
        "last_step_at": {"type": ["number", "null"]}, "catching_up": {"type": "boolean"}}}}}

_VALUE = {"oneOf": [{"type": "number"}, {"type": "boolean"}, {"type": "string"},
                    {"type": "null"}]}

_NODE = {
    "type": "object",
    "required": ["id", "online", "last_seen", "firmware", "health", "sensors"],
    "properties": {
        "id": {"type": "string"},
        "online": {"type": "boolean"},
        "last_seen": {"type": ["number", "null"]},
        "address": {"type": ["string", "null"]},
        "firmware": {"type": ["string", "null"]},
        "health": {"type": "object", "additionalProperties": _VALUE},
        "meta": {"type": ["object", "null"]},  # hub/park.py
        "sensors": {"type": "array", "items": {"type": "string"}},
        "registered": {"type": "boolean"},
        "lifetime": {"type": ["number", "null"]},
        "expected_interval": {"type": "number"},
        "config_version": {"type": "integer"},
        "update": {"$ref": "#/components/schemas/Update"},
        "diagnostics": {"type": "object", "description": "field diagnostics from the node's "
                        "health readings (docs/diagnostics.md): safe_mode, sensors, "
                        "sensor_fault, config, clock, estimated, refused, crash, reset"},
    },
}

# GET /api/nodes/{node} "update": the node's health.fw / health.ota_* readings (latest
# values; null when never reported) and the version the hub wants it to run
_UPDATE = {
    "type": "object", "required": ["running", "wanted", "state", "result", "reason", "since"],
    "properties": {
        "running": {"type": ["string", "null"], "description": "health.fw"},
        "wanted": {"type": ["string", "null"],
                   "description": "the node config's firmware, else the version a rollout "
                                  "offers the node, else the hub's nodes.firmware"},
        "state": {"type": ["string", "null"], "description": "health.ota_state: idle, "
                  "downloading, downloaded or updating"},
        "result": {"type": ["string", "null"], "description": "health.ota_result"},
        "reason": {"type": ["string", "null"], "description": "health.ota_reason"},
        "since": {"type": ["number", "null"],
                  "description": "when the state took its current value (epoch seconds)"},
    },
}

_FIRMWARE = {"type": "object",
             "required": ["version", "board", "kind", "files", "total_size", "published"],
             "properties": {"version": {"type": "string"},
                            "board": {"type": ["string", "null"]},
                            "kind": {"type": ["string", "null"]},
                            "files": {"type": "integer"},
                            "total_size": {"type": "integer"},
                            "published": {"type": "number"}}}

_PUBLISHED = {"type": "object", "required": ["version", "created"],
              "properties": {"version": {"type": "string"}, "created": {"type": "boolean"}}}

# /api/rollouts (hub/rollouts.py)
_ROLLOUT_REQUEST = {
    "type": "object", "required": ["version"], "additionalProperties": False,
    "properties": {
        "version": {"type": "string", "pattern": firmware.VERSION_RE.pattern,
                    "description": "a version in the hub's firmware store"},
        "nodes": {"type": "string", "maxLength": rollouts.MAX_SELECTOR,
                  "description": "comma-separated node ids and shell-style globs over the "
                                 "nodes the hub knows; default: every known node"},
        "canary": {"type": "number", "minimum": 0, "maximum": 100,
                   "default": rollouts.DEFAULTS["canary"],
                   "description": "percent of the nodes updated first"},
        "soak": {"type": "number", "minimum": 0, "maximum": rollouts.MAX_SOAK,
                 "default": rollouts.DEFAULTS["soak"],
                 "description": "seconds the canaries run it before the rest get it"},
        "max_failures": {"type": "number", "minimum": 0, "maximum": 100,
                         "default": rollouts.DEFAULTS["max_failures"],
                         "description": "percent of the assigned nodes that may fail before "
                                        "the rollout halts by itself"},
        "timeout": {"type": "number", "minimum": 0, "maximum": rollouts.MAX_TIMEOUT,
                    "default": rollouts.DEFAULTS["timeout"],
                    "description": "seconds after its assignment a node that has not "
                                   "updated is set aside as timed_out (settled, not failed, "
                                   "still offered the version); 0: never"}}}

_ROLLOUT_NODE = {
    "type": "object", "additionalProperties": False,
    "required": ["node", "phase", "status", "assigned", "since", "result", "reason", "wanted"],
    "properties": {
        "node": {"type": "string"},
        "phase": {"type": ["string", "null"], "enum": ["canary", "rest", None]},
        "status": {"type": "string", "enum": list(rollouts.STATUSES)},
        "assigned": {"type": ["number", "null"],
                     "description": "when it was first offered the version"},
        "since": {"type": "number", "description": "when the status took its value"},
        "result": {"type": ["string", "null"], "description": "health.ota_result behind the "
                   "status (success, or the failure)"},
        "reason": {"type": ["string", "null"]},
        "wanted": {"type": "boolean", "description": "the rollout offers it the version now"}}}

_ROLLOUT_FIELDS = {
    "id": {"type": "integer"},
    "version": {"type": "string"},
    "selector": {"type": "string"},
    "canary": {"type": "number"},
    "soak": {"type": "number"},
    "max_failures": {"type": "number"},
    "timeout": {"type": "number", "description": "0: none"},
    "state": {"type": "string", "enum": list(rollouts.STATES)},
    "created": {"type": "number"},
    "changed": {"type": "number", "description": "the last state change"},
    "promoted": {"type": ["number", "null"], "description": "when the rest were assigned"},
    "reason": {"type": ["string", "null"], "description": "why it halted or was cancelled"},
    "promote_at": {"type": ["number", "null"],
                   "description": "canary phase: when the rest will be assigned (every "
                                  "canary settled and the soak ends), else null"},
    "counts": {"type": "object", "additionalProperties": False,
               "required": list(rollouts.STATUSES),
               "properties": {k: {"type": "integer"} for k in rollouts.STATUSES}},
}

_ROLLOUT_SUMMARY = {"type": "object", "additionalProperties": False,
                    "required": list(_ROLLOUT_FIELDS), "properties": _ROLLOUT_FIELDS}

_ROLLOUT = {"type": "object", "additionalProperties": False,
            "required": list(_ROLLOUT_FIELDS) + ["nodes"],
            "properties": dict(_ROLLOUT_FIELDS, nodes={
                "type": "array", "items": {"$ref": "#/components/schemas/RolloutNode"}})}

_LATEST = {"type": "object", "required": ["node", "sensor", "unit", "time", "value"],
           "properties": {"node": {"type": "string"}, "sensor": {"type": "string"},
                          "unit": {"type": ["string", "null"]}, "time": {"type": "number"},
                          "value": _VALUE}}

_RAW_POINT = {"type": "object", "required": ["time", "value"], "additionalProperties": False,
              "properties": {"time": {"type": "number"}, "value": _VALUE,
                             "est": {"type": "boolean", "const": True,
                                     "description": "present on a reading whose time the "
                                                    "node estimated (taken before its "
                                                    "clock had the hub's time)"}}}

_BUCKET = {"type": "object", "additionalProperties": False,
           "required": ["time", "count", "min", "max", "mean", "p50", "p95", "p99"],
           "properties": {"time": {"type": "number"}, "count": {"type": "integer"},
                          **{k: {"type": ["number", "null"]}
                             for k in ("min", "max", "mean", "p50", "p95", "p99")}}}

_SERIES = {"type": "object", "required": ["node", "sensor", "unit", "window", "points"],
           "properties": {"node": {"type": "string"}, "sensor": {"type": "string"},
                          "unit": {"type": ["string", "null"]},
                          "window": {"type": "string",
                                     "enum": ["raw", "1m", "15m", "1h", "1d"]},
                          # with max_points only: the asked limit and range
                          "max_points": {"type": "integer"}, "from": {"type": "number"},
                          "to": {"type": ["number", "null"],
                                 "description": "null: no upper bound was given"},
                          "points": {"type": "array",
                                     "items": {"oneOf": [_RAW_POINT, _BUCKET]}}}}

# GET /api/overview (hub/web/overview.py)
_OVERVIEW = {
    "type": "object", "additionalProperties": False,
    "required": ["total", "online", "offline", "matched", "nodes", "places"],
    "properties": {
        "total": {"type": "integer"}, "online": {"type": "integer"},
        "offline": {"type": "integer"},
        "matched": {"type": "integer", "description": "nodes the filter kept"},
        "nodes": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "online", "last_seen", "meta", "latest"],
            "properties": {
                "id": {"type": "string"}, "online": {"type": "boolean"},
                "last_seen": {"type": ["number", "null"]},
                "meta": {"type": ["object", "null"]},
                "latest": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["sensor", "unit", "time", "value"],
                    "properties": {"sensor": {"type": "string"},
                                   "unit": {"type": ["string", "null"]},
                                   "time": {"type": "number"}, "value": _VALUE}}}}}},
        "places": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "online", "name", "location"],
            "properties": {"id": {"type": "string"}, "online": {"type": "boolean"},
                           "name": {"type": ["string", "null"]},
                           "location": {"type": "object"}}}}}}

_CONFIG = {"type": "object", "required": ["node", "version", "config"],
           "properties": {"node": {"type": "string"}, "version": {"type": "integer"},
                          "config": {"type": "object"}}}


def _json(schema, description="OK"):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description):
    return _json({"$ref": "#/components/schemas/Error"}, description)


_READ_401 = {"description": "a token is needed (the hub's HTTP API is bound to a non-loopback "
                            "address and http.open_reads is false) and none, or a wrong one, "
                            "was sent",
             "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
             "content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/Error"}}}}


def _read_security(reads_need_token):
    either = [{"readToken": []}, {"adminToken": []}]
    return either if reads_need_token else either + [{}]


def _guarded(paths):
    """Every read operation also documents its 401."""
    for ops in paths.values():
        for method, op in ops.items():
            if method == "get" and op.get("security") != []:
                op["responses"].setdefault("401", _READ_401)
    return paths


_NODE_PARAM = {"name": "node", "in": "path", "required": True, "schema": {"type": "string"}}
_NODE_ID_PARAM = {"name": "node", "in": "path", "required": True,
                  "schema": {"type": "string", "pattern": rules.NODE_ID_PATTERN}}


_ROLLOUT_ID = {"name": "id", "in": "path", "required": True,
               "schema": {"type": "integer", "minimum": 1}}
_WRITE_401_403 = {"401": _error("missing or wrong token"),
                  "403": _error("writes disabled (no admin token configured), or the read "
                                "token sent for a write")}


def _rollout_stop(what, operation_id, summary):
    return {"post": {
        "summary": summary, "operationId": operation_id, "parameters": [_ROLLOUT_ID],
        "security": [{"adminToken": []}],
        "responses": dict({"200": _json({"$ref": "#/components/schemas/Rollout"}, what),
                           "400": _error("id is not a rollout number"),
                           "404": _error("unknown rollout"),
                           "409": _error("the rollout's state does not allow it"),
                           "503": _error("this hub has no rollouts, or the change could not "
                                         "be saved")}, **_WRITE_401_403)}}


def config_schema():
    """PUT /api/nodes/{node}/config body: hub/rules.py config_error() as JSON Schema
    (made from the node-config schema's tables, protocol/configschema.py)."""
    return rules.config_json_schema()


def document(version, reads_need_token=False):
    """The document; `reads_need_token`: as the serving hub's Access says."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "smartpark hub", "version": version,
                 "description": "Readings, nodes and events of a smartpark hub. "
                                "Times are epoch seconds (floats). "
                                "Authorization: Bearer <token>. Writes need the admin "
                                "token; reads need the read or the admin token unless the "
                                "hub serves HTTP on loopback only or has http.open_reads. "
                                "Node configs show every secret (Wi-Fi password, keys) as "
                                "\"***\"; a PUT with \"***\" keeps the stored value."},
        "security": _read_security(reads_need_token),
        "paths": _guarded(dict({
            "/api/nodes": {"get": {
                "summary": "All known nodes", "operationId": "listNodes",
                "responses": {"200": _json({"type": "array",
                                            "items": {"$ref": "#/components/schemas/Node"}})}}},
            "/api/nodes/{node}": {"get": {
                "summary": "One node", "operationId": "getNode", "parameters": [_NODE_PARAM],
                "responses": {"200": _json({"$ref": "#/components/schemas/Node"}),
                              "404": _error("unknown node")}}},
            "/api/nodes/{node}/config": {
                "get": {"summary": "The node's current configuration", "operationId": "getConfig",
                        "parameters": [_NODE_PARAM],
                        "responses": {"200": _json({"$ref": "#/components/schemas/Config"}),
                                      "404": _error("unknown node")}},
                "put": {"summary": "Set a new configuration version (admin token)",
                        "operationId": "putConfig", "parameters": [_NODE_ID_PARAM],
                        "security": [{"adminToken": []}],
                        "requestBody": {"required": True, "content": {"application/json": {
                            "schema": config_schema()}}},
                        "responses": {"200": _json({"$ref": "#/components/schemas/Config"}),
                                      "400": _error("bad node id, or a config key the node's "
                                                    "firmware would refuse (named)"),
                                      "401": _error("missing or wrong token"),
                                      "403": _error("writes disabled (no admin token "
                                                    "configured), or the read token "
                                                    "sent for a write")}}},
            "/api/firmware": {
                "get": {"summary": "Firmware versions in the hub's store",
                        "operationId": "listFirmware",
                        "responses": {"200": _json({
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Firmware"}})}},
                "post": {"summary": "Publish a firmware bundle (admin token): a tar archive of "
                                    "the bundle directory `smartpark firmware build` wrote",
                         "operationId": "publishFirmware",
                         "security": [{"adminToken": []}],
                         "requestBody": {"required": True, "content": {"application/x-tar": {
                             "schema": {"type": "string", "format": "binary"}}}},
                         "responses": {
                             "201": _json({"$ref": "#/components/schemas/Published"},
                                          "published"),
                             "200": _json({"$ref": "#/components/schemas/Published"},
                                          "the same bundle was published already"),
                             "400": _error("not a tar archive, an unsafe member (link, "
                                           "absolute path, '..'), or a malformed or damaged "
                                           "bundle (named)"),
                             "401": _error("missing or wrong token"),
                             "403": _error("writes disabled (no admin token configured), or "
                                           "the read token sent for a write"),
                             "409": _error("the version is published with other content"),
                             "413": _error("the archive is too large"),
                             "415": _error("not Content-Type application/x-tar"),
                             "503": _error("this hub has no firmware store")}}},
            "/api/rollouts": {
                "get": {"summary": "Staged firmware rollouts (without their node rows)",
                        "operationId": "listRollouts",
                        "responses": {"200": _json({
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/RolloutSummary"}})}},
                "post": {"summary": "Start a staged rollout of a published version (admin "
                                    "token): canaries first, then the rest after the soak; "
                                    "halts by itself above max_failures",
                         "operationId": "startRollout",
                         "security": [{"adminToken": []}],
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"$ref": "#/components/schemas/RolloutRequest"}}}},
                         "responses": dict({
                             "201": _json({"$ref": "#/components/schemas/Rollout"}, "started"),
                             "400": _error("a bad parameter (named in `parameter`), or a "
                                           "selector that names no known node"),
                             "404": _error("the version is not in the hub's firmware store"),
                             "409": _error("an active rollout already has one of the nodes"),
                             "503": _error("this hub has no rollouts, or the rollout could "
                                           "not be saved")}, **_WRITE_401_403)}},
            "/api/rollouts/{id}": {"get": {
                "summary": "One rollout with a row per node", "operationId": "getRollout",
                "parameters": [_ROLLOUT_ID],
                "responses": {"200": _json({"$ref": "#/components/schemas/Rollout"}),
                              "400": _error("id is not a rollout number"),
                              "404": _error("unknown rollout"),
                              "503": _error("this hub has no rollouts")}}},
            "/api/rollouts/{id}/halt": _rollout_stop(
                "halted", "haltRollout",
                "Halt an active rollout (admin token): nothing more is assigned, and nodes "
                "that do not run the version yet stop being offered it"),
            "/api/rollouts/{id}/cancel": _rollout_stop(
                "cancelled", "cancelRollout",
                "Cancel a rollout (admin token): as halt, and the nodes that run the version "
                "are no longer offered it either (they want what they would without it)"),
            "/api/latest": {"get": {
                "summary": "Latest value of every series", "operationId": "latest",
                "parameters": [{"name": "node", "in": "query", "required": False,
                                "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "array",
                                            "items": {"$ref": "#/components/schemas/Latest"}})}}},
            "/api/series/{node}/{sensor}": {"get": {
                "summary": "Readings (raw) or rollup buckets of one series",
                "operationId": "series",
                "parameters": [
                    _NODE_PARAM,
                    {"name": "sensor", "in": "path", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "from", "in": "query", "required": False,
                     "description": "epoch seconds, inclusive; default: 24 h before `to` or now",
                     "schema": {"type": "number"}},
                    {"name": "to", "in": "query", "required": False,
                     "description": "epoch seconds, exclusive; default: no upper bound",
                     "schema": {"type": "number"}},
                    {"name": "window", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": ["raw", "1m", "15m", "1h", "1d"],
                                "default": "raw"}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 100000,
                                "default": 10000}},
                    {"name": "max_points", "in": "query", "required": False,
                     "description": "at most this many points (and at most `limit`); "
                                    "without `window` the hub picks it: the raw readings "
                                    "when [from, to) holds at most that many, else the "
                                    "smallest of 1m, 15m, 1h, 1d with at most that many "
                                    "buckets (1d cut there when even that has more); the "
                                    "answer says which in `window` (docs/dashboard.md)",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 100000}},
                    {"name": "format", "in": "query", "required": False,
                     "description": "csv: the same points as text/csv, a header row and a "
                                    "row per point (time, iso_time, then value and "
                                    "estimated, or count, min, max, mean, p50, p95, p99)",
                     "schema": {"type": "string", "enum": ["json", "csv"],
                                "default": "json"}},
                ],
                "responses": {"200": {
                    "description": "OK",
                    "content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/Series"}},
                                "text/csv": {"schema": {"type": "string"}}}},
                              "400": _error("bad parameter (named in `parameter`)"),
                              "404": _error("unknown node or series"),
                              "503": _error("rollups not available in this build")}}},
            "/api/events": {"get": {
                "summary": "Server-Sent Events: reading, node (online/offline), registration, "
                           "rollout (state and node status changes), alarm (every change "
                           "of an alarm)",
                "operationId": "events",
                "parameters": [{"name": "types", "in": "query", "required": False,
                                "description": "comma list of reading, node, registration, "
                                               "rollout, alarm",
                                "schema": {"type": "string"}},
                               {"name": "readings_of", "in": "query", "required": False,
                                "description": "reading events of these nodes only (comma "
                                               "list, at most 1000; empty: no readings); "
                                               "the other types are not filtered",
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "event stream",
                                      "content": {"text/event-stream": {
                                          "schema": {"type": "string"}}}},
                              "400": _error("unknown event type, or more than 1000 "
                                            "readings_of nodes")}}},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (text format 0.0.4)", "operationId": "metrics",
                "responses": {"200": {"description": "metrics", "content": {
                    "text/plain": {"schema": {"type": "string"}}}}}}},
            "/healthz": {"get": {
                "summary": "Liveness of the hub itself", "operationId": "healthz",
                "security": [],
                "responses": {"200": _json(_HEALTH),
                              "503": _json(_HEALTH, "degraded: new readings refused for want"
                                           " of disk space, or a damaged file set aside at"
                                           " start (`reasons`; docs/operations.md)")}}},
            "/api/access": {"get": {
                "summary": "What the request's bearer token may do (the dashboard's login)",
                "operationId": "access",
                "responses": {"200": _json({
                    "type": "object", "required": ["role", "reads_need_token", "writes"],
                    "additionalProperties": False,
                    "properties": {
                        "role": {"type": ["string", "null"], "enum": ["admin", "read", None],
                                 "description": "null: no token, or not one of this hub's"},
                        "reads_need_token": {"type": "boolean"},
                        "writes": {"type": "boolean",
                                   "description": "an admin token is configured"}}})}}},
            "/api/overview": {"get": {
                "summary": "The dashboard's overview: node counts, the first `limit` nodes "
                           "(offline first, then by id) with their latest values, and the "
                           "nodes that have a location",
                "operationId": "overview",
                "parameters": [
                    {"name": "q", "in": "query", "required": False,
                     "description": "keep the nodes whose id, name or zone contains this "
                                    "(any case)", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 10000,
                                "default": 200}}],
                "responses": {"200": _json({"$ref": "#/components/schemas/Overview"}),
                              "400": _error("bad limit")}}},
            "/": {"get": {
                "summary": "The dashboard (HTML; its data comes from this API with the "
                           "browser's token)", "operationId": "dashboard", "security": [],
                "responses": {"200": {"description": "the dashboard's page",
                                      "content": {"text/html": {
                                          "schema": {"type": "string"}}}}}}},
            "/ui/{name}": {"get": {
                "summary": "The dashboard's scripts and style sheet",
                "operationId": "dashboardFile", "security": [],
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the file", "content": {
                    "text/javascript": {"schema": {"type": "string"}},
                    "text/css": {"schema": {"type": "string"}},
                    "image/svg+xml": {"schema": {"type": "string"}}}},
                              "404": _error("no such file")}}},
            "/api/openapi.json": {"get": {
                "summary": "This document", "operationId": "openapi", "security": [],
                "responses": {"200": _json({"type": "object"})}}},
        }, **park_api.openapi_paths())),  # zones, metadata, site plan, alarms
        "components": {
            "schemas": {"Node": _NODE, "Latest": _LATEST, "Series": _SERIES, "Config": _CONFIG,
                        "Update": _UPDATE, "Firmware": _FIRMWARE, "Published": _PUBLISHED,
                        "RolloutRequest": _ROLLOUT_REQUEST, "Rollout": _ROLLOUT,
                        "RolloutSummary": _ROLLOUT_SUMMARY, "RolloutNode": _ROLLOUT_NODE,
                        "Overview": _OVERVIEW, "Error": _ERROR},
            "securitySchemes": {
                "readToken": {"type": "http", "scheme": "bearer",
                              "description": "http.read_token (or SMARTPARK_READ_TOKEN): "
                                             "reads only"},
                "adminToken": {"type": "http", "scheme": "bearer",
                               "description": "http.admin_token (or SMARTPARK_ADMIN_TOKEN; "
                                              "old name http.token): reads and writes"}},
        },
    }
