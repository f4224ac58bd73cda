"""The hub's internal boundaries, as small Protocol classes.

Only hub/app.py wires concrete parts together; every other module receives its
collaborators and relies on these shapes alone (after aiocoap's
interfaces.py). The ingest boundary is deliberately free of aiocoap types so
that a different front end (issue 7: a fast UDP path in front of aiocoap for
POST /r) can feed the same pipeline.
"""

from typing import Any, Awaitable, Callable, Protocol, Sequence

# CoAP response codes as plain ints (class << 5 | detail), shared by every front end.
CHANGED = 0x44
BAD_REQUEST = 0x80
REQUEST_ENTITY_TOO_LARGE = 0x8D
UNSUPPORTED_CONTENT_FORMAT = 0x8F
INTERNAL_SERVER_ERROR = 0xA0
SERVICE_UNAVAILABLE = 0xA3

CT_SENML_JSON = 110
CT_SENML_CBOR = 112
CT_CBOR = 60


class ReportResult:
    """The answer to one report: a CoAP code and payload, plus what happened.

    code          -- CHANGED on success, else a 4.xx/5.xx code (ints above)
    payload       -- the 2.04 ack (protocol/report.py) or a short UTF-8 diagnostic
    content_format-- CT_CBOR for the ack, None for diagnostics
    max_age       -- seconds, set with SERVICE_UNAVAILABLE
    stored, duplicates -- readings newly stored / already present
    node          -- the node the report named (None when undecodable)
    error         -- metric label of the failure kind, None on success
    """

    __slots__ = ("code", "payload", "content_format", "max_age", "stored", "duplicates",
                 "node", "error")

    def __init__(self, code, payload=b"", content_format=None, max_age=None, stored=0,
                 duplicates=0, node=None, error=None):
        self.code = code
        self.payload = payload
        self.content_format = content_format
        self.max_age = max_age
        self.stored = stored
        self.duplicates = duplicates
        self.node = node
        self.error = error

    def __repr__(self):
        return "ReportResult(code=%#x, stored=%d, duplicates=%d, error=%r)" % (
            self.code, self.stored, self.duplicates, self.error)


class Ingest(Protocol):
    """The report pipeline: dedup, decode, store, rollups, ack."""

    async def ingest(self, items: Sequence[tuple[str, bytes, int | None]]) -> list[ReportResult]:
        """items: (node address "host:port", payload, content format); one result per item,
        in order, each resolved only after that report's readings are committed."""
        ...


class Store(Protocol):
    """A storage backend (store/sqlite.py)."""

    async def start(self, loop: Any) -> None: ...

    async def close(self) -> None: ...

    def write(self, rows: list, seen: list) -> Awaitable[Any]: ...

    def call(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]: ...

    @property
    def queue_depth(self) -> int: ...


class EventSink(Protocol):
    """Where events go (hub/events.py): readings, node online/offline, registrations."""

    def publish(self, kind: str, data: dict) -> None: ...
