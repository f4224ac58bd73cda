"""CoRE Resource Directory (RFC 9176), embedded from aiocoap's RD (aiocoap.cli.rd).

Scope: mount aiocoap's CommonRD function sets on the hub's site and mirror
every registration into the hub's node registry (and so into SQLite):

    POST /rd?ep=<node>&lt=<s>[&fw=<version>]   registration (link-format body) -> 2.01, Location /reg/N/
    POST /reg/N/?lt=..                         update (refreshes the lifetime)
    DELETE /reg/N/                             removal
    GET  /rd-lookup/ep, /rd-lookup/res         lookup (rt=core.rd-lookup-ep / -res)

A node registers, updates and removes only its own entry: `ep` (and, for
/reg/N/, the endpoint registered there) must be the node whose OSCORE key
verified the request (hub/coap/oscore_site.py `speaks_for`), else 4.03.

aiocoap keeps registrations in memory; the hub persists each one (base,
links, parameters, lifetime, time of registration) and re-creates the still
valid ones after a restart with their stored base and remaining lifetime, so
lookups keep answering. Sensors named in a registration's links (last path
segment of each href) become the node's `sensors` in the API.
"""

import asyncio
import time

from aiocoap import error
from aiocoap.cli.rd import (
    CommonRD,
    DirectoryResource,
    EndpointLookupInterface,
    RegistrationDispatchSite,
    ResourceLookupInterface,
)
from aiocoap.util.linkformat import parse as parse_links

from ..rules import lifetime_error, node_id_error
from .oscore_site import forbidden_text, speaks_for

RD_PATH = ("rd",)
EP_LOOKUP_PATH = ("rd-lookup", "ep")
RES_LOOKUP_PATH = ("rd-lookup", "res")


def _single(params, key):
    v = params.get(key)
    if isinstance(v, list):
        v = v[0] if v else None
    return v


def query_error(request, need_ep):
    """Why the registration query of `request` is unacceptable, or None.

    Checked before aiocoap's RD sees it: `ep` must be a node id (hub/rules.py;
    the same rule as POST /r, so a registered node is the node that reports),
    `lt` 1..2**32-1 s (RFC 9176 section 5); each at most once."""
    seen = {}
    for q in request.opt.uri_query:
        k, _, v = q.partition("=")
        if k in ("ep", "lt"):
            if k in seen:
                return "%s given more than once" % k
            seen[k] = v
    if need_ep:
        if "ep" not in seen:
            return "ep (endpoint name) is required"
        err = node_id_error(seen["ep"])
        if err:
            return "ep: " + err
    elif "ep" in seen:
        return "ep cannot be changed by an update"
    if "lt" in seen:
        return lifetime_error(seen["lt"])
    return None


def _ep(request):
    for q in request.opt.uri_query:
        k, _, v = q.partition("=")
        if k == "ep":
            return v
    return None


class _Directory(DirectoryResource):
    """aiocoap's registration interface behind the hub's checks of ep and lt."""

    async def render_post(self, request):
        err = query_error(request, need_ep=True)
        if err:
            raise error.BadRequest(err)
        ep = _ep(request)
        if not speaks_for(request, ep):
            raise error.Forbidden(forbidden_text("registration", ep, request))
        return await super().render_post(request)


class HubRD:
    """Owns the CommonRD and keeps the registry in step with it."""

    def __init__(self, registry, log=None):
        self.registry = registry
        self.common = CommonRD(log=log)
        self.common.register_change_callback(self._changed)
        self._known = {}  # ep -> signature of the last mirrored state
        self._pending = False
        self._refreshed = set()
        self.changes = 0

    def mount(self, site):
        site.add_resource(RD_PATH, _Directory(common_rd=self.common))
        site.add_resource(EP_LOOKUP_PATH, EndpointLookupInterface(common_rd=self.common))
        site.add_resource(RES_LOOKUP_PATH, ResourceLookupInterface(common_rd=self.common))
        site.add_resource(self.common.entity_prefix, _Dispatch(self, common_rd=self.common))

    def _changed(self):
        # aiocoap calls this before a deletion is complete; mirror once the loop is free
        if not self._pending:
            self._pending = True
            asyncio.get_event_loop().call_soon(self._sync)

    def _sync(self):
        self._pending = False
        now = time.time()
        current = {}
        for (ep, _d), reg in list(self.common._by_key.items()):
            links = [[link.href, {k: v for k, v in link.attr_pairs}] for link in reg.links.links]
            params = {k: list(v) for k, v in reg.registration_parameters.items()}
            sig = (reg.href, reg.lt, reg.base, str(reg.links), repr(sorted(params.items())))
            current[ep] = sig
            if self._known.get(ep) == sig and ep not in self._refreshed:
                continue
            rd = {"href": reg.href, "base": reg.base, "links": links,
                  "linkformat": str(reg.links), "params": params}
            fw = _single(params, "fw")
            self.changes += 1
            self.registry.registered(ep, reg.base, reg.lt, rd, fw, now)
        for ep in set(self._known) - set(current):
            self.changes += 1
            self.registry.unregistered(ep)
        self._known = current
        self._refreshed.clear()

    def endpoint_at(self, path):
        """The ep registered at the registration resource `path`, or None."""
        reg = self.common._by_path.get(tuple(path))
        if reg is not None:
            for (ep, _d), r in self.common._by_key.items():
                if r is reg:
                    return ep
        return None

    def refreshed(self, path):
        """A registration resource got a POST/PUT (lifetime refresh even without changes)."""
        reg = self.common._by_path.get(tuple(path))
        if reg is not None:
            for (ep, _d), r in self.common._by_key.items():
                if r is reg:
                    self._refreshed.add(ep)
            self._changed()

    def restore(self, now=None):
        """Re-create unexpired registrations from the registry (after a restart)."""
        now = time.time() if now is None else now
        restored = 0
        for n in list(self.registry.nodes.values()):
            if not n.rd or n.registered is None or n.lt is None:
                continue
            remaining = int(n.registered + n.lt - now)
            if remaining <= 0:
                continue
            params = {k: list(v) for k, v in n.rd.get("params", {}).items()}
            params["ep"] = [n.id]
            params["lt"] = [str(remaining)]
            params["base"] = [n.rd["base"]]
            try:
                reg = self.common.initialize_endpoint(None, params)
                reg.links = parse_links(n.rd.get("linkformat", ""))
            except Exception:  # noqa: BLE001 - a stored registration that no longer parses
                continue
            restored += 1
        return restored


class _Dispatch(RegistrationDispatchSite):
    """aiocoap's /reg/ dispatcher, telling the hub about lifetime refreshes."""

    def __init__(self, hubrd, common_rd):
        super().__init__(common_rd=common_rd)
        self._hubrd = hubrd

    async def render(self, request):
        if str(request.code) in ("POST", "PUT"):
            err = query_error(request, need_ep=False)
            if err:
                raise error.BadRequest(err)
        if str(request.code) in ("POST", "PUT", "DELETE"):
            ep = self._hubrd.endpoint_at(request.opt.uri_path)
            if ep is not None and not speaks_for(request, ep):
                raise error.Forbidden(forbidden_text("registration", ep, request))
        response = await super().render(request)
        if str(request.code) in ("POST", "PUT"):
            self._hubrd.refreshed(request.opt.uri_path)
        return response
