"""The park model: node metadata (display name, zone, location, tags), zones, the site plan.

Scope: what an operator says about the park, not what the nodes report. Metadata per node:
name (display name), zone (a path of one to eight segments, "site/building/floor/room" or
whatever hierarchy the park uses), location ({"lat", "lon"} in degrees, or {"x", "y"}: a
point on the site-plan image, as fractions 0..1 of its width and height from its top left
corner) and tags (free words). Set over the API (PUT /api/nodes/{node}/meta, admin token),
with `smartpark node set`, or from the TOML file `park.file` the hub reads at start:

    [nodes.bay-01]
    name = "Bay 1"
    zone = "north/level-1/bays"
    location = { x = 0.25, y = 0.4 }
    tags = ["ev", "covered"]

The file is the source for the nodes and fields it names: at each start its values replace
those set over the API for the same fields; fields and nodes it does not name keep theirs.
Metadata may name a node the hub has not heard from yet (a park is planned before it is
built).

Zones: every zone named by a node, and each of its ancestors ("north", "north/level-1", ...);
a zone's nodes are those in it or below it; its latest values are, per sensor kind (health
readings left out), the newest reading among its nodes.

Persistence: `<data_dir>/park.json` (the metadata) and `<data_dir>/siteplan` (the image, its
content type in park.json), each written whole: temporary file, fsync, rename, fsync of the
directory, by one writer thread in the order of the changes, so a crash leaves the old or the
new file. Files rather than store tables, as for rollouts (hub/rollouts.py): operator state
changed by hand a few times, never per report.
"""

import asyncio
import concurrent.futures
import json
import logging
import math
import os
import re
import tomllib

from .registry import HEALTH_PREFIX, value_out
from .rules import node_id_error

log = logging.getLogger("smartpark.hub.park")

PARK_FILE = "park.json"
SITEPLAN_FILE = "siteplan"
FILE_FORMAT = 1
FIELDS = ("name", "zone", "location", "tags")
MAX_NAME = 100
MAX_SEGMENT = 64
MAX_DEPTH = 8
MAX_TAGS = 32
MAX_TAG = 40
MAX_SITEPLAN = 2 * 1024 * 1024
SITEPLAN_TYPES = ("image/png", "image/jpeg", "image/svg+xml")
# the same patterns serve the checks here (re.fullmatch) and the OpenAPI document
_NOT_CONTROL = "[^\\u0000-\\u001f\\u007f]"
NAME_PATTERN = "^%s{1,%d}$" % (_NOT_CONTROL, MAX_NAME)
_LEVEL = "[^/\\u0000-\\u001f\\u007f]{1,%d}" % MAX_SEGMENT
ZONE_PATTERN = "^%s(/%s){0,%d}$" % (_LEVEL, _LEVEL, MAX_DEPTH - 1)
TAG_PATTERN = "^[A-Za-z0-9_.:-]{1,%d}$" % MAX_TAG


class ParkError(Exception):
    """Bad metadata or a bad site plan: `parameter` names the field, `status` the answer."""

    def __init__(self, text, parameter=None, status=400):
        Exception.__init__(self, text)
        self.text = text
        self.parameter = parameter
        self.status = status


def atomic_write(path, data):
    """Write `data` (bytes) to `path` whole: temporary file, fsync, rename, directory fsync."""
    d = os.path.dirname(path) or "."
    os.makedirs(d, mode=0o755, exist_ok=True)
    tmp = os.path.join(d, ".tmp-" + os.path.basename(path))
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finite(v):
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def zone_error(zone):
    """None when `zone` is a usable zone path, else why not."""
    if not isinstance(zone, str) or not re.fullmatch(ZONE_PATTERN, zone):
        return ("zone must be a path like site/building/floor/room: 1 to %d levels of 1 to "
                "%d characters (no control characters) separated by single '/'"
                % (MAX_DEPTH, MAX_SEGMENT))
    return None


def _location(v, field):
    if v is None:
        return None
    if not isinstance(v, dict) or set(v) not in ({"lat", "lon"}, {"x", "y"}):
        raise ParkError("location must be {\"lat\", \"lon\"} or {\"x\", \"y\"} (or null)", field)
    if "lat" in v:
        if not (_finite(v["lat"]) and -90 <= v["lat"] <= 90):
            raise ParkError("location.lat must be a number of degrees -90..90", field + ".lat")
        if not (_finite(v["lon"]) and -180 <= v["lon"] <= 180):
            raise ParkError("location.lon must be a number of degrees -180..180",
                            field + ".lon")
        return {"lat": float(v["lat"]), "lon": float(v["lon"])}
    for k in ("x", "y"):
        if not (_finite(v[k]) and 0 <= v[k] <= 1):
            raise ParkError("location.%s must be a fraction 0..1 of the site plan's %s"
                            % (k, "width" if k == "x" else "height"), field + "." + k)
    return {"x": float(v["x"]), "y": float(v["y"])}


def check_meta(body, prefix=""):
    """The fields of `body` (any of FIELDS) checked and normalized; raises ParkError naming
    the field. null clears a field."""
    if not isinstance(body, dict):
        raise ParkError("body must be a JSON object with any of " + ", ".join(FIELDS),
                        prefix.rstrip(".") or "body")
    out = {}
    for k, v in body.items():
        field = prefix + str(k)
        if k not in FIELDS:
            raise ParkError("unknown field %r (known: %s)" % (k, ", ".join(FIELDS)), field)
        if k == "name":
            if v is not None and (not isinstance(v, str) or not re.fullmatch(NAME_PATTERN, v)):
                raise ParkError("name must be 1 to %d characters without control characters "
                                "(or null)" % MAX_NAME, field)
            out[k] = v
        elif k == "zone":
            if v is not None and zone_error(v):
                raise ParkError(zone_error(v), field)
            out[k] = v
        elif k == "location":
            out[k] = _location(v, field)
        else:
            if v is None:
                v = []
            if not isinstance(v, list) or len(v) > MAX_TAGS:
                raise ParkError("tags must be a list of at most %d words" % MAX_TAGS, field)
            for t in v:
                if not isinstance(t, str) or not re.fullmatch(TAG_PATTERN, t):
                    raise ParkError("tags must be words of 1 to %d letters, digits, _ - . :"
                                    % MAX_TAG, field)
            out[k] = sorted(set(v))
    return out


def empty_meta():
    return {"name": None, "zone": None, "location": None, "tags": []}


def read_file(path):
    """{node: checked metadata} from a park TOML file; raises ParkError naming the key."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ParkError("a readable TOML file (%s)" % (e.strerror or e), "park.file") from None
    except tomllib.TOMLDecodeError as e:
        raise ParkError("valid TOML (%s)" % e, "park.file") from None
    extra = set(doc) - {"nodes"}
    if extra:
        raise ParkError("only [nodes.<id>] tables are known", sorted(extra)[0])
    nodes = doc.get("nodes", {})
    if not isinstance(nodes, dict):
        raise ParkError("[nodes.<id>] tables", "nodes")
    out = {}
    for node, meta in nodes.items():
        if node_id_error(node):
            raise ParkError(node_id_error(node), "nodes." + node)
        out[node] = check_meta(meta, "nodes.%s." % node)
    return out


def _sniff(content_type, data):
    """True when `data` looks like the image type it claims."""
    if content_type == "image/png":
        return data.startswith(b"\x89PNG\r\n\x1a\n")
    if content_type == "image/jpeg":
        return data.startswith(b"\xff\xd8\xff")
    head = data[:4096].lstrip().lower()
    return (head.startswith(b"<?xml") or head.startswith(b"<svg")
            or head.startswith(b"<!doctype svg")) and b"<svg" in data[:65536].lower()


class Park:
    """Node metadata, zones and the site plan of one hub (`<data_dir>/park.json`)."""

    def __init__(self, data_dir, registry, file=None):
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, PARK_FILE)
        self.plan_path = os.path.join(data_dir, SITEPLAN_FILE)
        self.registry = registry
        self.file = file or None
        self.nodes = {}  # node -> metadata (FIELDS)
        self.siteplan = None  # {"content_type", "size", "updated"}
        self.version = 0  # bumped on every change (alarm scopes are cached against it)
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="park")

    def load(self):
        """park.json, then the park file over it (its fields win). Raises ParkError for a
        bad park file (config.load checked it already, so only a file changed since)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
            if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
                raise ValueError("not a park file of format %d" % FILE_FORMAT)
            for node, meta in doc.get("nodes", {}).items():
                self.nodes[node] = dict(empty_meta(), **check_meta(meta))
            plan = doc.get("siteplan")
            if plan and os.path.exists(self.plan_path):
                self.siteplan = plan
        except FileNotFoundError:
            pass
        except (OSError, ValueError, ParkError) as e:
            log.warning("park file %s skipped: %s", self.path, e)
        if self.file:
            for node, meta in read_file(self.file).items():
                self.nodes[node] = dict(self.nodes.get(node) or empty_meta(), **meta)
        self.version += 1
        return self

    def _text(self):
        return json.dumps({"format": FILE_FORMAT, "nodes": self.nodes, "siteplan": self.siteplan},
                          indent=1, sort_keys=True).encode()

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    def close(self):
        self._writer.shutdown(wait=True)

    # ---- metadata ---------------------------------------------------------------------------

    def meta(self, node):
        m = self.nodes.get(node)
        return dict(m, tags=list(m["tags"])) if m else empty_meta()

    async def set_meta(self, node, body):
        """Merge checked fields into the node's metadata, save; the new metadata."""
        if node_id_error(node):
            raise ParkError(node_id_error(node), "node")
        fields = check_meta(body)
        new = dict(self.nodes.get(node) or empty_meta(), **fields)
        old = self.nodes.get(node)
        self.nodes[node] = new
        self.version += 1
        try:
            await self._run(atomic_write, self.path, self._text())
        except OSError as e:
            if old is None:
                self.nodes.pop(node, None)
            else:
                self.nodes[node] = old
            raise ParkError("the metadata could not be saved: %s" % e, None, 503) from None
        return self.meta(node)

    def tags(self, node):
        m = self.nodes.get(node)
        return m["tags"] if m else ()

    def zone(self, node):
        m = self.nodes.get(node)
        return m["zone"] if m else None

    # ---- zones ------------------------------------------------------------------------------

    def zones(self, under=None):
        """[{"zone", "parent", "nodes", "latest"}] sorted by zone; `under`: that zone and
        the zones below it only."""
        members = {}
        for node, m in self.nodes.items():
            z = m["zone"]
            if not z:
                continue
            parts = z.split("/")
            for i in range(1, len(parts) + 1):
                members.setdefault("/".join(parts[:i]), []).append(node)
        reg = self.registry
        out = []
        for z in sorted(members):
            if under and z != under and not z.startswith(under + "/"):
                continue
            latest = {}
            for node in members[z]:
                for sensor, sid in reg.node_series.get(node, {}).items():
                    if sensor.startswith(HEALTH_PREFIX):
                        continue
                    cur = reg.latest.get(sid)
                    if cur is None:
                        continue
                    have = latest.get(sensor)
                    if have is None or cur[0] > have["t"]:
                        v = value_out(cur[1], cur[2])
                        if isinstance(v, float) and not math.isfinite(v):
                            v = None
                        latest[sensor] = {"t": cur[0], "v": v, "node": node}
            out.append({"zone": z, "parent": z.rsplit("/", 1)[0] if "/" in z else None,
                        "nodes": sorted(members[z]), "latest": latest})
        return out

    # ---- site plan --------------------------------------------------------------------------

    async def put_siteplan(self, content_type, data):
        if content_type not in SITEPLAN_TYPES:
            raise ParkError("the site plan must be one of " + ", ".join(SITEPLAN_TYPES),
                            "Content-Type", 415)
        if len(data) > MAX_SITEPLAN:
            raise ParkError("the site plan is larger than %d bytes" % MAX_SITEPLAN, "body", 413)
        if not data or not _sniff(content_type, data):
            raise ParkError("the body is not a %s image" % content_type, "body")
        import time

        old = self.siteplan
        self.siteplan = {"content_type": content_type, "size": len(data),
                         "updated": time.time()}
        self.version += 1
        try:
            await self._run(atomic_write, self.plan_path, data)
            await self._run(atomic_write, self.path, self._text())
        except OSError as e:
            self.siteplan = old
            raise ParkError("the site plan could not be saved: %s" % e, None, 503) from None
        return dict(self.siteplan)

    async def get_siteplan(self):
        """(content type, bytes) or None."""
        plan = self.siteplan
        if plan is None:
            return None

        def read():
            with open(self.plan_path, "rb") as f:
                return f.read()

        try:
            return plan["content_type"], await self._run(read)
        except OSError:
            return None
