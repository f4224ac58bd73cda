"""The hub's internal boundaries, as small Protocol classes.

Only hub/app.py wires concrete parts together; every other module receives its
collaborators and relies on these shapes alone (after aiocoap's
interfaces.py). The ingest boundary is free of aiocoap types, so both front
ends -- aiocoap and the fast UDP path for POST /r (hub/fastpath.py) -- feed
the same pipeline; the store boundary is free of SQLite types, so a second
backend can stand behind it.
"""

from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence

# CoAP response codes as plain ints (class << 5 | detail), shared by every front end.
CHANGED = 0x44
BAD_REQUEST = 0x80
UNAUTHORIZED = 0x81
FORBIDDEN = 0x83
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

    async def ingest(self, items: Sequence[tuple]) -> list[ReportResult]:
        """items: (node address "host:port", payload, content format[, node]); one result
        per item, in order, each resolved only after that report's readings are committed.
        `node` is the node whose OSCORE key verified the report (None or left out: an
        unprotected report, refused with 4.01 unless the hub runs with security off)."""
        ...


class StoreClosed(RuntimeError):
    """The store no longer accepts work (shutting down or closed)."""


class StoreFull(RuntimeError):
    """The store refuses new readings for want of disk space (below its reserve); it
    accepts them again by itself once space is back."""


# (stored, duplicates, new_rows) of one report; new_rows: (series id, node, sensor, unit, t,
# kind, val) of each reading it stored
ReportStored = tuple[int, int, list[tuple]]


class Store(Protocol):
    """A storage backend (store/sqlite.py): every operation the rest of the hub uses.

    Methods that return an Awaitable hand the work to the store's own thread and
    resolve on the event loop; they raise StoreClosed once `close()` began. Values
    crossing this boundary are plain Python: no connection, cursor or row type of
    the backend. Value kinds are those of smartpark.fast.kinds.
    """

    async def start(self, loop: Any) -> None: ...

    async def close(self) -> None:
        """Finish everything queued, make every acknowledged reading durable in the
        database, close."""
        ...

    def write_many(self, reports: Sequence[Sequence[tuple]], seen: Sequence[tuple],
                   block: Any = None) -> Awaitable[list[ReportStored]]:
        """One ingest batch: reports as rows (node, sensor, unit, t, kind, val, sum[, est]), node
        last-seen updates (node, address, t), the column lane's block (or None). Resolves
        after the commit that makes all of it durable, one result per report in order;
        with the commit's exception when nothing was stored."""
        ...

    @property
    def queue_depth(self) -> int:
        """Jobs waiting for the store thread."""
        ...

    @property
    def refusing(self) -> bool:
        """True while new readings are refused for want of disk space (StoreFull)."""
        ...

    @property
    def pending_readings(self) -> int:
        """Acknowledged readings not yet in the queryable table (the ingest backlog)."""
        ...

    @property
    def series_index(self) -> Mapping[tuple[str, str], tuple[int, str | None]]:
        """(node, sensor) -> (series id, unit); read-only outside the store."""
        ...

    @property
    def newest(self) -> Any:
        """Per series id, a time at or above its newest reading stored or being stored
        (smartpark.fast.NewestTime), shared with the column lane."""
        ...

    def stats(self) -> dict[str, float]:
        """Counters for /metrics."""
        ...

    def sqlite_memory(self) -> int | None:
        """Bytes of heap the database library holds, None when not known."""
        ...

    def load_state(self) -> Awaitable[dict[str, Any]]:
        """{"series": [(id, node, sensor, unit)], "latest": {id: (t, kind, val)},
        "nodes": [dict], "configs": {node: (version, body)}} at start-up."""
        ...

    def raw(self, sid: int, t0: float, t1: float, limit: int) -> Awaitable[list[tuple]]:
        """[(t, kind, val, est)] of one series in [t0, t1), oldest first (est: 1 for a
        time the node estimated, else None)."""
        ...

    def rollup_buckets(self, sid: int, win: int, t0: float, t1: float,
                       limit: int) -> Awaitable[list[tuple]]:
        """[(t, count, min, max, mean, p50, p95, p99)] of one series and window (s)."""
        ...

    def count_readings(self, sid: int | None = None) -> Awaitable[int]: ...

    def sum_at(self, sid: int, t: float) -> Awaitable[float | None]:
        """The sum stored with reading (sid, t)."""
        ...

    def upsert_nodes(self, nodes: Sequence[dict]) -> Awaitable[None]:
        """Node rows (dicts with "id" and any node fields), one transaction."""
        ...

    def put_config(self, node: str, make_body: Callable[[int], bytes],
                   now: float) -> Awaitable[int]:
        """Store a node's next config version with body make_body(version)."""
        ...

    def prune(self, cutoff: float, after_sid: int = 0,
              batch: int = 100) -> Awaitable[tuple[int, int | None]]:
        """Delete readings older than cutoff for a batch of series after after_sid:
        (removed, last series handled or None when done)."""
        ...

    def replay_rollups(self) -> Awaitable[int]:
        """Rebuild the open rollup buckets from stored readings (at start-up)."""
        ...

    def advance_rollups(self, watermark: float) -> Awaitable[int]:
        """Close rollup buckets of idle series up to watermark; buckets written."""
        ...


class EventSink(Protocol):
    """Where events go (hub/events.py): readings, node online/offline, registrations."""

    def publish(self, kind: str, data: dict) -> None: ...
