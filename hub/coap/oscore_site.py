"""OSCORE (RFC 8613) in front of the hub's aiocoap site: verify requests, protect responses.

Scope: `OscoreSite` wraps the site hub/coap/server.py builds. A request with
an OSCORE option is opened with the hub's context table (hub/security.py; the
same table, and so the same replay windows, as the fast path), checked for
replay, rebuilt as an aiocoap request (same remote, token and MID; the inner
code, options and payload) that carries the node its key belongs to, rendered
by the inner site, and each response is protected bound to the request. The
design follows aiocoap's own `OscoreSiteWrapper`, but with the hub's table
in place of aiocoap's security contexts.

What a resource sees: `request.smartpark_node`, the node whose key verified
the request (None for an unprotected one), and `request.smartpark_open`, True
for an unprotected request on a hub in `security.mode = "off"`.
`speaks_for(request, node)` is the one test resources use.

Failures, answered unprotected (there is no context to protect them with;
RFC 8613 section 8.2), each with a short text payload and counted in
`smartpark_errors_total{kind=...}`:

    4.02 Bad Option    malformed OSCORE option                  oscore_option
    4.01 Unauthorized  unknown key id                           oscore_key
    4.00 Bad Request   does not decrypt / verify                oscore_verify
    4.01 Unauthorized  replay ("Replay detected")               oscore_replay
    4.01 Unauthorized  unprotected request to a protected path  oscore_required

After an unclean restart a context's first request is answered with a
protected inner 4.01 carrying an Echo option (`oscore_echo`), under the
hub's own Partial IV; the node repeats the request with that Echo value.

Protected paths (mode "oscore"): /r, /rd and the RD's registration resources
/reg/..., /cfg, /fw (firmware bundles). Open to anyone who can reach the port,
protected or not: /.well-known/core (discovery must work before a node has
anything to show), /latest (the values are readable over HTTP as well),
/rd-lookup (read-only).

Block2 inside OSCORE: the inner resources do block-wise transfer themselves
(aiocoap's Block2 handling sees the inner Block2 option); a response still
larger than MAX_BLOCK bytes without a Block2 option is cut here into the
block the request asked for, so no protected response outgrows a datagram.
"""

import logging

import aiocoap
import aiocoap.pipe
from aiocoap import error, interfaces
from aiocoap.numbers import codes, uri_path_abbrev
from aiocoap.numbers.optionnumbers import OptionNumber
from smartpark.protocol import coap, oscore
from smartpark.protocol.errors import OscoreError

log = logging.getLogger("smartpark.hub.coap.oscore")

# first Uri-Path segments that need OSCORE in mode "oscore" ("reg": aiocoap's RD keeps
# its registration resources there, CommonRD.entity_prefix)
PROTECTED = frozenset(("r", "rd", "reg", "cfg", "fw"))
MAX_BLOCK_SZX = 6  # 1,024 bytes: the largest inner block in a protected response
MAX_BLOCK = 1 << (MAX_BLOCK_SZX + 4)

_ERROR_KIND = {coap.BAD_OPTION: "oscore_option", coap.UNAUTHORIZED: "oscore_key",
               coap.BAD_REQUEST: "oscore_verify"}


class Request(aiocoap.Message):
    """An aiocoap request that remembers who sent it, through the Site's copies."""

    smartpark_node = None
    smartpark_open = False

    def copy(self, **kwargs):
        new = super().copy(**kwargs)
        new.smartpark_node = self.smartpark_node
        new.smartpark_open = self.smartpark_open
        return new


def speaks_for(request, node):
    """True when `request` may act as `node`: it was verified with `node`'s key, or it is
    unprotected and the hub runs with security off."""
    who = getattr(request, "smartpark_node", None)
    if who is not None:
        return who == node
    return bool(getattr(request, "smartpark_open", False))


def forbidden_text(what, named, request):
    """The 4.03 text when `request` names another node than its key's."""
    return "%s names node %s, key is node %s" % (
        what, named, getattr(request, "smartpark_node", None) or "(none)")


def _request(outer, code, options, payload, node, open_):
    m = Request(code=code, payload=payload)
    m.mtype = outer.mtype
    m.mid = outer.mid
    m.token = outer.token
    m.remote = outer.remote
    m.direction = outer.direction
    if options is None:
        m.opt = outer.opt
    else:
        for number, value in options:
            if number != coap.ECHO:
                m.opt.add_option(OptionNumber(number).create_option(decode=bytes(value)))
        for o in outer.opt.option_list():
            if int(o.number) != coap.OSCORE and not oscore.is_inner(int(o.number)):
                m.opt.add_option(o)  # Uri-Host, Uri-Port, Proxy-*: class U
    m.smartpark_node = node
    m.smartpark_open = open_
    return m


def _path(request):
    abbrev = request.opt.uri_path_abbrev
    if abbrev is not None:
        return uri_path_abbrev._map.get(abbrev, ("?",))
    return request.opt.uri_path


def _plain(code, text):
    m = aiocoap.Message(code=codes.Code(code), payload=text.encode("utf-8", "replace")[:120])
    m.opt.content_format = 0
    m.opt.max_age = 0
    return m


def _block(request, response):
    """`response` cut to the block `request` asks for (block 0 unless it asks), when it is
    larger than MAX_BLOCK and no resource did block-wise already."""
    if response.opt.block2 is not None or len(response.payload) <= MAX_BLOCK:
        return response
    want = request.opt.block2
    num, szx = (0, MAX_BLOCK_SZX) if want is None else (want.block_number,
                                                         want.size_exponent)
    if szx > MAX_BLOCK_SZX:  # BERT or larger than we send: the same bytes in 1,024-byte blocks
        num <<= szx - MAX_BLOCK_SZX
        szx = MAX_BLOCK_SZX
    try:
        return response._extract_block(num, szx, MAX_BLOCK)
    except error.BadRequest:
        return _plain(coap.BAD_REQUEST, "Block2 number %d is past the end" % num)


def _inner_parts(message):
    code = int(message.code)
    options = sorted(((int(o.number), o.encode()) for o in message.opt.option_list()
                      if oscore.is_inner(int(o.number))), key=lambda nv: nv[0])
    return code, options, bytes(message.payload)


class OscoreSite(interfaces.Resource):
    """The hub's site behind OSCORE; `security` is hub/security.Security."""

    def __init__(self, inner, security, metrics=None):
        self.inner = inner
        self.security = security
        self.metrics = metrics

    def get_resources_as_linkheader(self):
        return self.inner.get_resources_as_linkheader()

    async def render(self, request):
        raise RuntimeError("OscoreSite renders through render_to_pipe only")

    async def needs_blockwise_assembly(self, request):
        raise RuntimeError("OscoreSite renders through render_to_pipe only")

    def _count(self, kind):
        if self.metrics is not None:
            self.metrics.errors.inc(kind)

    async def render_to_pipe(self, pipe):
        request = pipe.request
        value = request.opt.oscore
        if value is None:
            sec = self.security
            path = _path(request)
            if sec.required and path and path[0] in PROTECTED:
                self._count("oscore_required")
                pipe.add_response(_plain(coap.UNAUTHORIZED, "OSCORE required"), is_last=True)
                return
            pipe.request = _request(request, request.code, None, request.payload, None,
                                    not sec.required)
            await self.inner.render_to_pipe(pipe)
            return
        opened = self._open(pipe, bytes(value), request)
        if opened is not None:
            await self._render(pipe, request, opened)

    def _open(self, pipe, value, request):
        """The verified and accepted request, or None after answering the failure."""
        table = self.security.table
        try:
            _piv, kid, _ctx = oscore.decode_option(value)
            if kid is not None and table.node_of(kid) is None:
                self.security.unknown_kid(kid)  # a key added since the last load?
            opened = table.unprotect(value, bytes(request.payload), int(request.code))
        except OscoreError as e:
            self._count(_ERROR_KIND.get(e.code, "oscore_verify"))
            pipe.add_response(_plain(e.code, e.msg), is_last=True)
            return None
        try:
            table.accept(opened)
        except OscoreError as e:
            if getattr(e, "echo", None) is None:
                self._count("oscore_replay")
                pipe.add_response(_plain(coap.UNAUTHORIZED, "Replay detected"), is_last=True)
                return None
            self._count("oscore_echo")
            option, ct = table.protect_response(opened, coap.UNAUTHORIZED,
                                                [(coap.ECHO, e.echo)], b"",
                                                own_seq=self.security.own_seq())
            pipe.add_response(self._outer(option, ct, None), is_last=True)
            return None
        return opened

    @staticmethod
    def _outer(option, ciphertext, observe):
        m = aiocoap.Message(code=codes.CHANGED if observe is None else codes.CONTENT,
                            payload=ciphertext)
        m.opt.oscore = option
        if observe is not None:
            m.opt.observe = observe
        return m

    async def _render(self, pipe, request, opened):
        inner = _request(request, codes.Code(opened.code), opened.options, opened.payload,
                         opened.node, False)
        inner_pipe = aiocoap.pipe.IterablePipe(inner)
        catching = aiocoap.pipe.error_to_message(inner_pipe, log)
        aiocoap.pipe.run_driving_pipe(catching, self.inner.render_to_pipe(inner_pipe),
                                      name="OSCORE rendering for %r" % opened)
        table = self.security.table
        first = True
        async for event in inner_pipe:
            if event.exception is not None:
                log.warning("protected request %r: renderer raised %r", opened, event.exception)
                message, is_last = aiocoap.Message(code=codes.INTERNAL_SERVER_ERROR), True
            else:
                message, is_last = _block(inner, event.message), event.is_last
            if not is_last and message.opt.observe is None:
                message.opt.observe = 0
            observe = message.opt.observe
            # notifications, and every response of a context whose window the Echo exchange
            # just set up, carry the hub's own Partial IV (RFC 8613 section 8.3, Appendix B.1.2)
            own = None
            if opened.own_piv or observe is not None or not first:
                own = self.security.own_seq()
            code, options, payload = _inner_parts(message)
            try:
                option, ct = table.protect_response(opened, code, options, payload,
                                                    own_seq=own)
            except OscoreError as e:  # the key was revoked meanwhile
                pipe.add_response(_plain(e.code, e.msg), is_last=True)
                return
            pipe.add_response(self._outer(option, ct, None if observe is None
                                          else own & 0xFFFFFF),
                              is_last=is_last)
            first = False
            if is_last:
                return
