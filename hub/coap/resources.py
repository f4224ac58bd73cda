"""aiocoap resources of the hub: POST /r, GET /cfg/<node>, observable GET /latest/<node>/<sensor>.

Scope: translate between aiocoap messages and the hub's parts. POST /r hands
the payload to the ingest pipeline (hub/ingest.py) and turns its ReportResult
into the response; nothing about decoding or storage lives here.
"""

import hashlib

import aiocoap
from aiocoap import error
from aiocoap.numbers import codes
from aiocoap.resource import ObservableResource, PathCapable, Resource
from aiocoap.util.linkformat import Link, LinkFormat
from smartpark.fast import kinds
from smartpark.protocol import cbor, senml

from .. import nodesecrets
from ..interfaces import CT_CBOR, CT_SENML_CBOR

CT_TEXT = 0
CT_LINK_FORMAT = 40


def remote_address(request):
    """'host:port' of the sender (IPv4-mapped addresses shown as IPv4)."""
    try:
        sa = request.remote.sockaddr
        host = sa[0]
        if host.startswith("::ffff:"):
            host = host[7:]
        if ":" in host:
            host = "[%s]" % host
        return "%s:%d" % (host, sa[1])
    except (AttributeError, IndexError, TypeError):
        try:
            return request.remote.hostinfo
        except Exception:  # noqa: BLE001 - any remote without an address
            return "unknown"


class ReportResource(Resource):
    """POST /r: a SenML pack from a node, with the node whose OSCORE key verified it
    (hub/coap/oscore_site.py); the pipeline checks the pack names that node."""

    rt = "smartpark.report"
    ct = "%d %d" % (CT_SENML_CBOR, 110)

    def __init__(self, pipeline):
        super().__init__()
        self.pipeline = pipeline

    async def render_post(self, request):
        cf = request.opt.content_format
        result = (await self.pipeline.ingest(
            [(remote_address(request), request.payload, None if cf is None else int(cf),
              getattr(request, "smartpark_node", None))]))[0]
        m = aiocoap.Message(code=codes.Code(result.code), payload=result.payload)
        if result.content_format is not None:
            m.opt.content_format = result.content_format
        elif result.payload:
            m.opt.content_format = CT_TEXT
        if result.max_age is not None:
            m.opt.max_age = result.max_age
        return m


# Keys of a node's config that the hub acts on and the node never sees in /cfg:
# the wanted firmware reaches the node in the report ack (protocol/report.py key 3),
# and the firmware refuses config keys it does not know.
HUB_ONLY_CONFIG_KEYS = ("firmware",)


def node_view(body, secrets=True):
    """The stored CBOR config as the node gets it: without the hub-only keys, and with
    `secrets` false also without the top-level keys that hold a secret
    (hub/nodesecrets.py without())."""
    doc = cbor.loads(body)
    if not isinstance(doc, dict):
        return body
    if not secrets and nodesecrets.has_secret(doc):
        doc = nodesecrets.without(doc)
    elif not any(k in doc for k in HUB_ONLY_CONFIG_KEYS):
        return body
    return cbor.dumps({k: v for k, v in doc.items() if k not in HUB_ONLY_CONFIG_KEYS})


class ConfigResource(Resource, PathCapable):
    """GET /cfg/<node>: the node's configuration, CBOR, with an ETag (2.03 when unchanged).

    Secrets (the Wi-Fi password, keys: hub/nodesecrets.py) go to the node itself
    only, and only through OSCORE: a request whose `smartpark_node` (the node
    whose key verified it, coap/oscore_site.py) is the path's node gets the
    whole config; any other request -- another node's, or an unprotected one,
    even on a hub with security off -- the config without the top-level keys
    that hold a secret (config_for). A node merges a config per top-level key,
    so the keys left out keep their local values."""

    rt = "smartpark.config"
    ct = str(CT_CBOR)

    def __init__(self, registry, default_config):
        super().__init__()
        self.registry = registry
        self.default_config = default_config

    def get_link_description(self):
        return None  # listed through the parent entry in hub/coap/server.py

    async def render_get(self, request):
        path = request.opt.uri_path
        if len(path) != 1 or not path[0]:
            raise error.NotFound("use /cfg/<node>")
        node = path[0]
        version, body = self.config_for(node, getattr(request, "smartpark_node", None))
        etag = hashlib.sha1(b"%d:" % version + body).digest()[:8]
        if request.opt.etags and etag in request.opt.etags:
            m = aiocoap.Message(code=codes.VALID)
        else:
            m = aiocoap.Message(code=codes.CONTENT, payload=body)
            m.opt.content_format = CT_CBOR
        m.opt.etag = etag
        return m

    async def render_post(self, request):
        raise error.UnallowedMethod()

    def config_for(self, node, identity=None):
        """(version, CBOR body) of /cfg/<node> for a requester authenticated as node
        `identity` (None: unauthenticated). Secrets only when identity == node."""
        cfg = self.registry.configs.get(node)
        if cfg is None:
            version, body = 0, cbor.dumps(dict(self.default_config, version=0))
        else:
            version, body = cfg
        return version, node_view(body, secrets=identity is not None and identity == node)


class ConfigIndex(Resource):
    rt = "smartpark.config"
    ct = str(CT_CBOR)

    async def render_get(self, request):
        raise error.NotFound("use /cfg/<node>")


def latest_payload(node, sensor, unit, t, kind, val, sum_=None):
    """A one-record SenML-CBOR pack holding the series' latest value (protocol.senml.encode).

    A sum-only reading (SenML `s` without a value: kind number, val None) gives an
    s-only record; `sum_` is its sum."""
    rec = {"n": "%s/%s" % (node, sensor), "t": t}
    if unit:
        rec["u"] = unit
    if kind == kinds.NUM and val is None:
        if sum_ is None:
            raise ValueError("sum-only reading without its sum")
        rec["s"] = sum_
    elif kind == kinds.NUM:
        rec["v"] = val
    elif kind == kinds.STR:
        rec["vs"] = val
    elif kind == kinds.BOOL:
        rec["vb"] = bool(val)
    elif kind == kinds.DATA:
        rec["vd"] = bytes(val) if isinstance(val, (bytes, bytearray, memoryview)) else val
    return senml.encode([rec], "cbor")


class LatestIndex(Resource):
    """GET /latest: link-format list of the observable series."""

    rt = "smartpark.latest"
    ct = str(CT_LINK_FORMAT)

    def __init__(self, registry):
        super().__init__()
        self.registry = registry

    async def render_get(self, request):
        links = [Link("/latest/%s/%s" % (node, sensor), rt="smartpark.latest",
                      ct=str(CT_SENML_CBOR), obs=None)
                 for (node, sensor) in sorted(self.registry.series_by_name)]
        m = aiocoap.Message(code=codes.CONTENT, payload=str(LinkFormat(links)).encode())
        m.opt.content_format = CT_LINK_FORMAT
        return m


class LatestSite(ObservableResource, PathCapable):
    """GET /latest/<node>/<sensor>, observable (RFC 7641): a notification per new reading."""

    def __init__(self, registry, events, store=None):
        super().__init__()
        self.registry = registry
        self.events = events
        self.store = store  # for the sum of a sum-only latest reading
        self._by_path = {}  # (node, sensor) -> set of observations

    def get_link_description(self):
        return None

    async def add_observation(self, request, serverobservation):
        key = tuple(request.opt.uri_path)
        if len(key) != 2 or key not in self.registry.series_by_name:
            return
        obs = self._by_path.setdefault(key, set())
        obs.add(serverobservation)
        # listen to readings only while someone observes (ingest skips events otherwise)
        self.events.add_listener(self.on_event)

        def _cancel(key=key, o=serverobservation):
            s = self._by_path.get(key)
            if s is not None:
                s.discard(o)
                if not s:
                    del self._by_path[key]
            if not self._by_path:
                self.events.remove_listener(self.on_event)

        serverobservation.accept(_cancel)

    def on_event(self, event):
        if event["type"] != "reading" or not self._by_path:
            return
        d = event["data"]
        for o in list(self._by_path.get((d["node"], d["sensor"]), ())):
            o.trigger()

    @property
    def observers(self):
        return sum(len(s) for s in self._by_path.values())

    async def render_get(self, request):
        key = tuple(request.opt.uri_path)
        sid = self.registry.series_by_name.get(key) if len(key) == 2 else None
        if sid is None or sid not in self.registry.latest:
            raise error.NotFound("no such series; see /latest")
        node, sensor, unit = self.registry.series[sid]
        t, kind, val = self.registry.latest[sid]
        sum_ = None
        if kind == kinds.NUM and val is None:
            if self.store is not None:
                sum_ = await self.store.sum_at(sid, t)
            if sum_ is None:
                raise error.NotFound("the latest reading has neither value nor stored sum")
        m = aiocoap.Message(code=codes.CONTENT,
                            payload=latest_payload(node, sensor, unit, t, kind, val, sum_))
        m.opt.content_format = CT_SENML_CBOR
        return m


__all__ = ["ConfigIndex", "ConfigResource", "LatestIndex", "LatestSite", "ReportResource",
           "latest_payload", "remote_address"]
