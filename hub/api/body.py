"""Request bodies of bounded size for the HTTP API's uploads (firmware tars, the site plan)."""

CHUNK = 65536


async def read_body(request, limit):
    """The body as bytes, or None when it is larger than `limit` bytes (announced in
    Content-Length or found while reading): the caller answers 413."""
    if (request.content_length or 0) > limit:
        return None
    data = bytearray()
    while True:
        chunk = await request.content.read(CHUNK)
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            return None
