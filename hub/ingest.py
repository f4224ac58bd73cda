"""The report pipeline behind POST /r: check, decode, store (dedup), then ack.

Scope: `Pipeline.ingest(items)` takes a batch of (node address, payload bytes,
content format[, node]) and returns one ReportResult per item, in order. It is the
only way reports enter the hub, whatever the front end: the aiocoap resource
(hub/coap/resources.py) calls it with batches of one, the fast path
(hub/fastpath.py) with up to a thousand. No aiocoap types cross this line.

Order of work for a batch, all on the event loop except the store:
  1. key (4.01 "OSCORE required" for a report no OSCORE key verified, unless
     the hub runs with `security.mode = "off"`), size (4.13) and content
     format (4.15) checks;
  2. decode every payload of the batch at once (hub/codec.py: fast/ selector);
     a bad pack gets 4.00 with the decoder's short diagnostic; so does a pack
     with a node id that is not one path segment (hub/rules.py) or a reading
     time before 2000 or more than `max_future` s ahead of the hub's clock
     (errors{kind="node_id"} / errors{kind="time"}); a pack that names another
     node than the one whose key verified it gets 4.03 (errors{kind="identity"});
     nothing of such a pack is stored, so a retransmission gets the same answer
     (exactly-once holds);
  3. hand the rows to the store, which commits every pending report in one
     transaction (group commit); duplicates -- the same (node, sensor, time)
     again -- are dropped there by the primary key, never stored twice;
  4. only after the commit: update the live state, publish events, build the
     2.04 ack (protocol/report.py: hub time, config version, wanted firmware,
     stored, duplicates). A failed commit answers 5.03 with Max-Age, so the
     node keeps the readings and retries.
"""

import asyncio
import logging
import time

# the ack encoder: fast/ack.pyx, byte-identical to protocol/report.py (its pure twin)
from smartpark.fast import ack_head, encode_ack

from .interfaces import (
    BAD_REQUEST,
    CHANGED,
    CT_CBOR,
    CT_SENML_CBOR,
    CT_SENML_JSON,
    FORBIDDEN,
    INTERNAL_SERVER_ERROR,
    REQUEST_ENTITY_TOO_LARGE,
    SERVICE_UNAVAILABLE,
    UNAUTHORIZED,
    UNSUPPORTED_CONTENT_FORMAT,
    ReportResult,
    StoreClosed,
    StoreFull,
)
from .rules import DEFAULT_MAX_FUTURE, MIN_TIME, node_id_error, time_error

log = logging.getLogger("smartpark.hub.ingest")

RETRY_AFTER = 5  # s, Max-Age of a 5.03 when the store cannot take the report
RETRY_AFTER_DISK = 30  # s, Max-Age of a 5.03 while the disk is below its reserve

# A node's last-seen time reaches the store at most every SEEN_EVERY seconds (and at once
# when its address changes); the registry keeps the exact value in memory and `flush_seen`
# writes what is left at shutdown. One row per report would be a large share of every
# group commit under load; after a crash the stored last-seen may be up to SEEN_EVERY s
# old -- the readings are exact either way.
SEEN_EVERY = 2.0

ACCEPTED_FORMATS = (CT_SENML_CBOR, CT_SENML_JSON)


class _Internal:
    """Marks a report the decoder could not judge because of a fault on our side."""

    def __init__(self, exc):
        self.exc = exc


def _diag(text):
    return text.encode("utf-8", "replace")[:120]


def _key_node(item):
    """The node whose OSCORE key verified the report `item` (None: unprotected)."""
    return item[3] if len(item) > 3 else None


class Pipeline:
    """Implements interfaces.Ingest."""

    def __init__(self, store, decoder, registry, events, metrics, max_payload=8192, clock=None,
                 max_future=DEFAULT_MAX_FUTURE, max_backlog=8_000_000, require_key=False):
        self.max_future = max_future
        # security.mode = "oscore": a report must come with the node its key belongs to
        self.require_key = require_key
        # readings acknowledged but not yet moved into `readings` (the mover runs at low
        # priority and may fall behind under a sustained overload); above
        # this many, reports get 5.03 with Max-Age until it caught up -- the journal on disk
        # stays bounded (~21 B a reading) and the nodes keep their readings meanwhile
        self.max_backlog = max_backlog
        self.store = store
        self.decoder = decoder
        self.registry = registry
        self.events = events
        self.metrics = metrics
        self.max_payload = max_payload
        self.clock = clock or time.time
        self.closing = False
        self.inflight = 0
        self._good_nodes = set()  # node ids that passed node_id_error (a cache)
        self._seen_stored = {}  # node -> (address, time) of its last-seen update stored
        self._seen_due = {}  # node -> (address, time) not stored yet (SEEN_EVERY)
        self._idle = asyncio.Event()
        self._idle.set()

    async def drain(self):
        """Wait until every report being ingested has its result (used at shutdown)."""
        await self._idle.wait()

    def _error(self, code, text, kind, max_age=None):
        self.metrics.errors.inc(kind)
        return ReportResult(code, _diag(text), max_age=max_age, error=kind)

    def _forbidden(self, named, key_node):
        return self._error(FORBIDDEN, "pack names node %s, key is node %s" % (named, key_node),
                           "identity")

    async def ingest(self, items, path="aiocoap", lane_acks=False):
        """One result per item, in order. With `lane_acks` (the fast path), a report the
        column lane stored gets the tuple (ack_head, stored) instead of a ReportResult:
        its 2.04 ack is ack_head + stored + duplicates 0, built in C with the response
        (fast.udp.Endpoint.respond_many)."""
        self.inflight += 1
        self._idle.clear()
        try:
            return await self._ingest(items, path, lane_acks)
        finally:
            self.inflight -= 1
            if not self.inflight:
                self._idle.set()

    async def _ingest(self, items, path, lane_acks=False):  # noqa: C901 - the batch in its order of work (check, decode, store, ack); split when next changed
        t_start = time.perf_counter()
        now = self.clock()
        n = len(items)
        self.metrics.messages.inc(path, by=n)
        results = [None] * n
        todo = []
        backlog = self.store.pending_readings > self.max_backlog
        disk_full = getattr(self.store, "refusing", False)
        require_key = self.require_key
        for i, item in enumerate(items):
            payload, cf = item[1], item[2]
            if require_key and _key_node(item) is None:
                results[i] = self._error(UNAUTHORIZED, "OSCORE required", "oscore_required")
            elif self.closing:
                results[i] = self._error(SERVICE_UNAVAILABLE, "hub is shutting down", "shutdown",
                                         RETRY_AFTER)
            elif disk_full:
                results[i] = self._error(SERVICE_UNAVAILABLE, "hub storage full, retry later",
                                         "disk", RETRY_AFTER_DISK)
            elif backlog:
                results[i] = self._error(SERVICE_UNAVAILABLE, "storage backlog, retry later",
                                         "backlog", RETRY_AFTER)
            elif len(payload) > self.max_payload:
                results[i] = self._error(
                    REQUEST_ENTITY_TOO_LARGE,
                    "report of %d bytes exceeds %d" % (len(payload), self.max_payload),
                    "too_large")
            elif cf not in ACCEPTED_FORMATS:
                results[i] = self._error(
                    UNSUPPORTED_CONTENT_FORMAT,
                    "content-format %s not accepted; use 112 (senml+cbor) or 110 (senml+json)"
                    % ("none" if cf is None else cf), "content_format")
            else:
                todo.append(i)
        if todo:
            lane = getattr(self.decoder, "lane", None)  # a decoder may have no column lane
            lane_items = []  # (index, readings, node) of the reports the column lane took
            block = None  # their readings (fast.lane.Block)
            learn = None  # (decoded batch, {index: payload}) for the row path's reports
            try:
                if lane is not None:
                    todo, decoded, lane_items, block, learn = self._decode_lane_checked(
                        items, todo, now, results)
                else:
                    decoded = self.decoder.decode([(items[i][1], items[i][2]) for i in todo],
                                                  now)
            except Exception as e:  # noqa: BLE001 - a decoder bug must not take the hub down
                log.exception("decoder failed on a batch of %d", len(todo))
                decoded = [_Internal(e)] * len(todo)
                lane_items, block, learn = [], None, None
            batch = []  # (index, nodes, rows)
            last_seen = {}  # node -> (index, address) of its last report in this batch
            for i, _n, node in lane_items:
                last_seen[node] = (i, items[i][0])
            for i, rows in zip(todo, decoded, strict=False):
                if isinstance(rows, _Internal):
                    results[i] = self._error(INTERNAL_SERVER_ERROR, "internal error", "internal")
                    continue
                if isinstance(rows, Exception):
                    results[i] = self._error(BAD_REQUEST, "invalid pack: %s" % rows, "invalid")
                    continue
                nodes = []
                bad = self._check_rows(rows, now, nodes)
                if bad is not None:
                    results[i] = self._error(BAD_REQUEST, "invalid pack: %s" % bad[1], bad[0])
                    continue
                key_node = _key_node(items[i])
                if key_node is not None:
                    other = next((nd for nd in nodes if nd != key_node), None)
                    if other is not None:
                        results[i] = self._forbidden(other, key_node)
                        continue
                address = items[i][0]
                for nd in nodes:
                    seen = last_seen.get(nd)
                    if seen is None or seen[0] < i:
                        last_seen[nd] = (i, address)
                batch.append((i, nodes, rows))
            if batch or block is not None:
                # the whole batch is one store job with one future; the store commits it
                # in one transaction.
                waiting = [b[0] for b in batch] + [li[0] for li in lane_items]
                seen = self._seen_updates(last_seen, now)
                try:
                    done = await self.store.write_many([b[2] for b in batch], seen, block=block)
                except StoreClosed:
                    done = None
                    for i in waiting:
                        results[i] = self._error(SERVICE_UNAVAILABLE, "hub is shutting down",
                                                 "shutdown", RETRY_AFTER)
                except StoreFull:
                    done = None
                    for i in waiting:
                        results[i] = self._error(SERVICE_UNAVAILABLE,
                                                 "hub storage full, retry later", "disk",
                                                 RETRY_AFTER_DISK)
                except Exception as e:  # noqa: BLE001 - the commit failed: nothing stored
                    done = None
                    for i in waiting:
                        results[i] = self._error(SERVICE_UNAVAILABLE,
                                                 "storage unavailable: %s" % type(e).__name__,
                                                 "store", RETRY_AFTER)
                if done is not None:
                    self._seen_written(seen)
                    self._committed_batch(items, batch, done, now, results)
                    if block is not None:
                        self._committed_lane(items, lane_items, block, now, results,
                                             lane_acks)
                    if learn is not None:
                        self._learn(batch, learn)
        self.metrics.latency.observe(time.perf_counter() - t_start, n)
        return results

    def _seen_updates(self, last_seen, now):
        """The last-seen rows [(node, address, time)] this batch stores: a node whose
        stored update is SEEN_EVERY s old or names another address; the rest wait in
        _seen_due for a later batch or `flush_seen`."""
        stored = self._seen_stored
        due = self._seen_due
        out = []
        for nd, (_i, address) in last_seen.items():
            prev = stored.get(nd)
            if prev is None or prev[0] != address or now - prev[1] >= SEEN_EVERY:
                out.append((nd, address, now))
            else:
                due[nd] = (address, now)
        return out

    def _seen_written(self, seen):
        stored = self._seen_stored
        due = self._seen_due
        for nd, address, t in seen:
            stored[nd] = (address, t)
            cur = due.get(nd)
            if cur is not None and cur[1] <= t:
                del due[nd]

    async def flush_seen(self):
        """Store the last-seen updates SEEN_EVERY held back (at shutdown, after drain)."""
        if not self._seen_due:
            return
        seen = [(nd, address, t) for nd, (address, t) in self._seen_due.items()]
        await self.store.write_many([], seen)
        self._seen_written(seen)

    def _decode_lane_checked(self, items, todo, now, results):
        """`_decode_lane`, then 4.03 for each of the lane's reports that names another node
        than its key's. The lane's block must hold only reports that are stored, so with
        any refused the rest is decoded again (only a misbehaving node costs this)."""
        while True:
            out = self._decode_lane(items, todo, now)
            refused = set()
            for i, _count, node in out[2]:
                key_node = _key_node(items[i])
                if key_node is not None and node != key_node:
                    results[i] = self._forbidden(node, key_node)
                    refused.add(i)
            if not refused:
                return out
            todo = [i for i in todo if i not in refused]

    def _decode_lane(self, items, todo, now):
        """SenML-CBOR reports through the column lane (fast/lane.pyx). Returns the
        row path's (indices, decoded), the lane's [(index, readings, node)], its block,
        and what `_learn` needs."""
        lane = self.decoder.lane
        cbor = [i for i in todo if items[i][2] == CT_SENML_CBOR]
        rest = [i for i in todo if items[i][2] != CT_SENML_CBOR]
        slow, decoded, lane_items, block, learn = [], [], [], None, None
        if cbor:
            lbatch, take, pnode, block, out = self.decoder.decode_lane(
                [items[i][1] for i in cbor], now, MIN_TIME, now + self.max_future)
            counts = lbatch.count
            nodes = lane.nodes
            where = {}
            for p, i in enumerate(cbor):
                if take[p]:
                    lane_items.append((i, counts[p], nodes[pnode[p]]))
                else:
                    slow.append(i)
                    decoded.append(out[p])
                    where[i] = p
            if where:
                learn = (lbatch, where)
        if rest:
            slow.extend(rest)
            decoded.extend(self.decoder.decode([(items[i][1], items[i][2]) for i in rest], now))
        return slow, decoded, lane_items, block, learn

    def _learn(self, batch, learn):
        """After a commit: the series the row path stored may take the lane next time."""
        lbatch, where = learn
        series_of = self.store.series_index
        for i, _nodes, _rows in batch:
            p = where.get(i)
            if p is not None:
                self.decoder.lane_learn(lbatch, p, series_of)

    def _committed_lane(self, items, lane_items, block, now, results, lane_acks=False):
        """After the commit: live state, events and 2.04 acks of the column lane's reports
        (with `lane_acks`, (ack_head, stored) tuples: see `ingest`)."""
        reg = self.registry
        reported = reg.reported
        config_version = reg.config_version
        wanted_firmware = reg.wanted_firmware
        if lane_acks:
            heads = {}  # (config version, firmware) -> ack head (one hub time per batch)
            per_node = {}  # node -> [ack head, address of its last report, reports]
            for i, count, node in lane_items:
                e = per_node.get(node)
                if e is None:
                    cv = config_version(node)
                    fw = wanted_firmware(node)
                    head = heads.get((cv, fw))
                    if head is None:
                        head = heads[(cv, fw)] = ack_head(now, cv, fw)
                    per_node[node] = e = [head, items[i][0], 0]
                else:
                    e[1] = items[i][0]
                e[2] += 1
                results[i] = (e[0], count)
            for node, (_head, address, k) in per_node.items():
                reported(node, address, now, k)  # same `now`: k calls would do the same
        else:
            for i, count, node in lane_items:
                reported(node, items[i][0], now)
                results[i] = ReportResult(
                    CHANGED, encode_ack(now, config_version(node), wanted_firmware(node), count,
                                        0),
                    content_format=CT_CBOR, stored=count, duplicates=0, node=node)
        self.metrics.readings.inc(by=len(block))
        reg.block_latest(block)
        ev = self.events
        if ev.active():
            for sid, node, sensor, unit, t, kind, val in reg.block_rows(block):
                ev.publish("reading", {"series": sid, "node": node, "sensor": sensor,
                                       "unit": unit, "time": t, "kind": kind, "value": val})
        else:
            ev.counts["reading"] = ev.counts.get("reading", 0) + len(block)

    def _check_rows(self, rows, now, nodes):
        """(kind, diagnostic) for the first row the hub refuses, else None; appends the
        pack's node ids to `nodes` in order of first appearance. Node ids already found
        valid are remembered (bounded), so the per-character check runs once per node."""
        latest = now + self.max_future
        good = self._good_nodes
        last_node = None
        for idx, row in enumerate(rows):
            node = row[0]
            if node is not last_node and node != last_node:
                if node not in good:
                    err = node_id_error(node)
                    if err is not None:
                        return "node_id", "record %d: %s" % (idx, err)
                    if len(good) >= 50000:
                        good.clear()
                    good.add(node)
                if node not in nodes:
                    nodes.append(node)
                last_node = node
            t = row[3]
            if not MIN_TIME <= t <= latest:
                return "time", "record %d: %s" % (idx, time_error(t, now, self.max_future))
        return None

    def _committed_batch(self, items, batch, done, now, results):
        """After the commit: live state, events and the 2.04 ack of every stored report.

        The metrics and (when nobody listens for events) the registry's series /
        latest-value update run once per batch, not once per report; with event listeners
        every report is published, in order."""
        reg = self.registry
        ev = self.events
        listening = ev.active()
        reported = reg.reported
        config_version = reg.config_version
        wanted_firmware = reg.wanted_firmware
        new_all = []
        dup_readings = dup_reports = 0
        n_new = 0
        for (i, nodes, _job), (stored, duplicates, new_rows) in zip(batch, done, strict=True):
            address = items[i][0]
            for node in nodes:
                reported(node, address, now)
            if new_rows:
                n_new += len(new_rows)
                if listening:
                    reg.new_rows(new_rows)
                    for sid, node, sensor, unit, t, kind, val in new_rows:
                        ev.publish("reading", {
                            "series": sid, "node": node, "sensor": sensor, "unit": unit,
                            "time": t, "kind": kind, "value": val})
                else:
                    new_all.extend(new_rows)
            if duplicates:
                dup_readings += duplicates
                if not stored:
                    dup_reports += 1
            node = nodes[0]
            results[i] = ReportResult(
                CHANGED, encode_ack(now, config_version(node), wanted_firmware(node), stored,
                                    duplicates),
                content_format=CT_CBOR, stored=stored, duplicates=duplicates, node=node)
        if n_new:
            self.metrics.readings.inc(by=n_new)
        if new_all:
            reg.new_rows(new_all)
            ev.counts["reading"] = ev.counts.get("reading", 0) + len(new_all)
        if dup_readings:
            self.metrics.duplicate_readings.inc(by=dup_readings)
        if dup_reports:
            self.metrics.duplicate_reports.inc(by=dup_reports)
