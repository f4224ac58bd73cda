"""GET /fw/<version> and /fw/<version>/<device path>: firmware bundles for over-the-air updates.

Scope: serve the hub's firmware store (hub/firmware.py) to nodes. OSCORE is
required for /fw (PROTECTED in coap/oscore_site.py): the node takes a
bundle only from the hub it shares a key with, which is what vouches for
the manifest and, through each file's SHA-256 in it, for every file.

    GET /fw/<version>          manifest.json as stored, Content-Format 50 (application/json)
    GET /fw/<version>/<path>   a file the manifest lists, Content-Format 42 (octet-stream)

Block2 (RFC 7959) is cut here, not by aiocoap's Block2 cache: that cache
keeps a whole response per client only between block 0 and the last block,
so a node resuming a download at block k after a reboot would get 4.08.
Every block of every file is answered from the file itself, at the block
size the request asks (capped at 1,024 bytes, szx 6: larger asks, BERT
included, get the same bytes in 1,024-byte blocks); without a Block2 option
a body over 1,024 bytes starts at block 0 of 1,024.

ETag: the first 8 bytes of the body's SHA-256 (the manifest's digest for a
file, the digest of manifest.json's bytes for the manifest), the same for
every block, so a node can tell the bytes did not change under a resumed
download. 4.04 for a version the store does not hold or a path its
manifest does not list (nothing else under the store is reachable). A file
whose bytes at rest no longer match the manifest is answered 5.00 and
logged, never served.

Cache: the same blocks are asked by many nodes, so files are kept in memory
(least recently used first out, CACHE_BYTES in all); manifests are re-read
when their file changes (stat per request).
"""

import collections
import hashlib
import logging
import os

import aiocoap
from aiocoap import error
from aiocoap.numbers import codes
from aiocoap.resource import PathCapable, Resource

from .. import firmware as store

log = logging.getLogger("smartpark.hub.coap.fw")

CT_OCTET_STREAM = 42
CT_JSON = 50
MAX_SZX = 6
MAX_BLOCK = 1 << (MAX_SZX + 4)
CACHE_BYTES = 8 << 20


class FirmwareCache:
    """Manifests and file bytes of the store, read through."""

    def __init__(self, data_dir, limit=CACHE_BYTES):
        self.data_dir = data_dir
        self.limit = limit
        self._manifests = {}  # version -> (stat key, raw, manifest, etag)
        self._files = collections.OrderedDict()  # (version, path, sha256) -> bytes
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def manifest(self, version):
        """(raw bytes, manifest dict, etag) of a stored version, or None."""
        if not store.valid_version(version):
            return None
        path = os.path.join(store.store_dir(self.data_dir), version, store.MANIFEST)
        try:
            st = os.stat(path)
        except OSError:
            self._manifests.pop(version, None)
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        have = self._manifests.get(version)
        if have is not None and have[0] == key:
            return have[1:]
        raw = store.manifest_bytes(self.data_dir, version)
        try:
            manifest = store.parse_manifest(raw) if raw is not None else None
        except store.FirmwareError:
            manifest = None
        if manifest is None:
            return None
        entry = (key, raw, manifest, hashlib.sha256(raw).digest()[:8])
        self._manifests[version] = entry
        return entry[1:]

    def file(self, version, manifest, path):
        """(bytes, etag) of a file the manifest lists, or None; raises OSError/ValueError
        when the stored file is unreadable or damaged."""
        found = store.file_path(self.data_dir, version, path, manifest)
        if found is None:
            return None
        full, entry = found
        key = (version, path, entry["sha256"])
        data = self._files.get(key)
        if data is not None:
            self._files.move_to_end(key)
            self.hits += 1
        else:
            self.misses += 1
            with open(full, "rb") as f:
                data = f.read(entry["size"] + 1)
            if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise ValueError("%s of firmware %s does not match its manifest" % (path, version))
            if len(data) <= self.limit:
                self._files[key] = data
                self._bytes += len(data)
                while self._bytes > self.limit:
                    _k, old = self._files.popitem(last=False)
                    self._bytes -= len(old)
        return data, bytes.fromhex(entry["sha256"])[:8]


def block_of(request, body):
    """The response for the block of `body` the request asks (module docstring), or None
    when the whole body goes in one response."""
    want = request.opt.block2
    if want is None:
        if len(body) <= MAX_BLOCK:
            return None
        num, szx = 0, MAX_SZX
    else:
        num, szx = want.block_number, want.size_exponent
        if szx > MAX_SZX:  # BERT or a block larger than we send
            num <<= szx - MAX_SZX
            szx = MAX_SZX
        if num == 0 and len(body) <= (1 << (szx + 4)):
            return None
    if num * (1 << (szx + 4)) >= len(body):
        raise error.BadRequest("Block2 number %d is past the end" % num)
    start = num << (szx + 4)
    end = min(start + (1 << (szx + 4)), len(body))
    return body[start:end], (num, end < len(body), szx)


class FirmwareResource(Resource, PathCapable):
    """GET /fw/<version>[/<path...>] (module docstring)."""

    def __init__(self, data_dir, cache=None):
        super().__init__()
        self.cache = cache or FirmwareCache(data_dir)

    def get_link_description(self):
        return None  # listed through FirmwareIndex

    async def needs_blockwise_assembly(self, request):
        return False  # Block2 cut per request, from any block (module docstring)

    async def render_get(self, request):
        path = request.opt.uri_path
        if not path or not path[0]:
            raise error.NotFound("use /fw/<version>")
        found = self.cache.manifest(path[0])
        if found is None:
            raise error.NotFound("no firmware %s" % path[0][:40])
        raw, manifest, etag = found
        if len(path) == 1:
            body, cf = raw, CT_JSON
        else:
            try:
                got = self.cache.file(path[0], manifest, "/".join(path[1:]))
            except (OSError, ValueError) as e:
                log.error("firmware store: %s", e)
                return aiocoap.Message(code=codes.INTERNAL_SERVER_ERROR,
                                       payload=b"stored file damaged")
            if got is None:
                raise error.NotFound("firmware %s has no such file" % path[0])
            body, etag = got
            cf = CT_OCTET_STREAM
        cut = block_of(request, body)
        if cut is None:
            m = aiocoap.Message(code=codes.CONTENT, payload=body)
        else:
            m = aiocoap.Message(code=codes.CONTENT, payload=cut[0])
            m.opt.block2 = cut[1]
        m.opt.content_format = cf
        m.opt.etag = etag
        return m


class FirmwareIndex(Resource):
    """GET /fw: only a pointer (the versions are the hub's to choose, in the report ack)."""

    rt = "smartpark.firmware"
    ct = "%d %d" % (CT_JSON, CT_OCTET_STREAM)

    async def render_get(self, request):
        raise error.NotFound("use /fw/<version>")


__all__ = ["FirmwareCache", "FirmwareIndex", "FirmwareResource", "block_of"]
