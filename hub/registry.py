"""The hub's live state: nodes, series, latest values, node configs, and liveness.

Scope: in-memory mirror of what the store holds, kept on the event loop (no
locks; only the loop touches it). Loaded from the store at start-up; every
change that must survive a restart is written through the store.

Liveness: a node is expected to report every `interval` seconds, taken from
its configuration (`report_interval`), else learned from the gaps between its
reports (exponentially weighted), else the hub default. It is offline once
`factor * interval` passes without a report (or its RD registration expired
and it has not reported since); the change is an event and shows in the API.
"""

import asyncio
import json
import logging
import time

from smartpark import fast
from smartpark.fast import kinds
from smartpark.protocol import cbor

from .interfaces import StoreClosed

HEALTH_PREFIX = "health."
# health readings of an over-the-air update (the node reports them; /api/nodes/{node} "update")
UPDATE_HEALTH = (("running", "health.fw"), ("state", "health.ota_state"),
                 ("result", "health.ota_result"), ("reason", "health.ota_reason"))
OTA_STATE = "health.ota_state"

# latest numbers/booleans in C arrays, updated per lane block in one C loop (fast/lane.pyx);
# without the extension a dict does the same
_Latest = fast.Latest or dict


def _consume(fut):
    if not fut.cancelled() and fut.exception() is not None:
        logging.getLogger("smartpark.hub").warning("node registry write failed: %s",
                                                   fut.exception())


def _done():
    fut = asyncio.get_event_loop().create_future()
    fut.set_result(None)
    return fut


def _pairs(text, conv=str):
    """"a:x b:y" (a diagnostics text reading) -> {"a": conv("x"), ...}; bad pairs skipped."""
    out = {}
    if isinstance(text, str):
        for part in text.split():
            name, _, v = part.rpartition(":")
            if name:
                try:
                    out[name] = conv(v)
                except ValueError:
                    pass
    return out


MIN_GAP = 1.0  # s; shorter gaps between reports are not learned as the report interval


def value_out(kind, val):
    """A stored value as JSON-able Python: number, bool, string (vd as base64url text)."""
    if kind == kinds.BOOL:
        return bool(val)
    if kind == kinds.DATA and isinstance(val, (bytes, bytearray, memoryview)):
        import base64

        return base64.urlsafe_b64encode(bytes(val)).rstrip(b"=").decode()
    return val


class Node:
    __slots__ = ("id", "address", "firmware", "lt", "registered", "rd", "last_seen", "online",
                 "interval", "first_seen", "learned", "reports")

    def __init__(self, node_id):
        self.id = node_id
        self.address = None
        self.firmware = None
        self.lt = None
        self.registered = None
        self.rd = None  # {"base":..., "links": [[href, {attrs}], ...], "params": {...}}
        self.last_seen = None
        self.online = False
        self.interval = None  # from config
        self.first_seen = None
        self.learned = None  # EWMA of gaps between reports
        self.reports = 0


class Registry:
    def __init__(self, store, events, factor=3.0, default_interval=60.0, firmware=None,
                 wall=None):
        self.store = store
        self.wall = wall or time.time  # the hub's wall clock (hub/clock.py)
        self.events = events
        self.factor = factor
        self.default_interval = default_interval
        self.firmware = firmware or None
        self.nodes = {}
        self.series = {}  # sid -> (node, sensor, unit)
        self.series_by_name = {}  # (node, sensor) -> sid
        self.node_series = {}  # node -> {sensor: sid}
        self.latest = _Latest()  # sid -> (t, kind, val)
        self.configs = {}  # node -> (version, cbor bytes)
        self.node_firmware = {}  # node -> firmware version its config asks for
        self.rollout_firmware = {}  # node -> version a rollout offers it (hub/rollouts.py)
        self.state_since = {}  # sid of a health.ota_state series -> (value, time it took it)
        # node -> time.monotonic() of its last report / registration: liveness measures
        # durations on it, so a wall clock step changes nothing (hub/clock.py)
        self.heard = {}
        self.heard_reg = {}

    # ---- loading -------------------------------------------------------------------------

    def load(self, state):
        for sid, node, sensor, unit in state["series"]:
            self.series[sid] = (node, sensor, unit)
            self.series_by_name[(node, sensor)] = sid
            self.node_series.setdefault(node, {})[sensor] = sid
        self.latest.update(state["latest"])
        self.configs.update(state["configs"])
        for node_id, (_version, body) in state["configs"].items():
            self._note_firmware(node_id, body)
        for row in state["nodes"]:
            n = self._node(row["id"])
            for k in ("address", "firmware", "lt", "registered", "last_seen", "interval",
                      "first_seen"):
                setattr(n, k, row[k])
            n.online = bool(row["online"])
            self._heard_from_wall(n)
            if row["rd"]:
                try:
                    n.rd = json.loads(row["rd"])
                except ValueError:
                    n.rd = None

    def _heard_from_wall(self, n):
        """Monotonic times of a node loaded at start, from its stored wall times."""
        mono, wall = time.monotonic(), self.wall()
        if n.last_seen is not None:
            self.heard[n.id] = mono - max(0.0, wall - n.last_seen)
        if n.registered is not None:
            self.heard_reg[n.id] = mono - max(0.0, wall - n.registered)

    def _node(self, node_id):
        n = self.nodes.get(node_id)
        if n is None:
            n = self.nodes[node_id] = Node(node_id)
        return n

    # ---- updates from ingest ---------------------------------------------------------------

    def reported(self, node_id, address, now, count=1):
        """`count` reports from node_id, all received at `now`, were committed (called after
        the store's commit; `address` is the last one's)."""
        n = self._node(node_id)
        if n.first_seen is None:
            n.first_seen = now
        if n.last_seen is not None and now - n.last_seen >= MIN_GAP:
            # bursts (outbox flush, retransmissions) say nothing about the schedule
            gap = now - n.last_seen
            n.learned = gap if n.learned is None else 0.8 * n.learned + 0.2 * gap
        n.last_seen = now if n.last_seen is None else max(n.last_seen, now)
        self.heard[node_id] = time.monotonic()
        n.address = address
        n.reports += count
        if not n.online:
            n.online = True
            self.events.publish("node", {"node": node_id, "online": True})

    def new_rows(self, rows):
        """Rows newly stored: (sid, node, sensor, unit, t, kind, val)."""
        for sid, node, sensor, unit, t, kind, val in rows:
            if sid not in self.series or self.series[sid][2] != unit:
                self.series[sid] = (node, sensor, unit)
                self.series_by_name[(node, sensor)] = sid
                self.node_series.setdefault(node, {})[sensor] = sid
            cur = self.latest.get(sid)
            if cur is None or t >= cur[0]:
                self.latest[sid] = (t, kind, val)
                if kind == kinds.STR and sensor == OTA_STATE:
                    if cur is None or cur[2] != val:
                        self.state_since[sid] = (val, t)
                    elif sid not in self.state_since:  # loaded at start: the best known
                        self.state_since[sid] = (val, cur[0])

    def block_latest(self, block):
        """The newest reading of each series in a column-lane block (a
        fast.lane.Block; the lane and Latest come from the same extension, so `latest`
        is a Latest whenever there are blocks). The lane takes only series the row path
        stored before, so `series` knows them."""
        self.latest.update_block(block)

    def block_rows(self, block):
        """A column-lane block's readings as `new_rows` tuples (for event listeners)."""
        series = self.series
        for sid, t, k, v in zip(block.series, block.time, block.kind, block.value, strict=True):
            node, sensor, unit = series.get(sid, (None, None, None))
            yield (sid, node, sensor, unit, t, k, (1 if v else 0) if k == kinds.BOOL else v)

    # ---- RD ----------------------------------------------------------------------------------

    def registered(self, node_id, address, lt, rd, firmware, now):
        n = self._node(node_id)
        n.registered = now
        self.heard_reg[node_id] = time.monotonic()
        n.lt = lt
        n.rd = rd
        if address:
            n.address = address
        if firmware:
            n.firmware = firmware
        if not n.online:
            n.online = True
            self.events.publish("node", {"node": node_id, "online": True})
        self.events.publish("registration", {"node": node_id, "action": "register", "lt": lt,
                                             "sensors": self.sensors(node_id)})
        return self._persist(n)

    def unregistered(self, node_id):
        n = self.nodes.get(node_id)
        if n is None:
            return None
        n.registered = None
        n.lt = None
        n.rd = None
        self.events.publish("registration", {"node": node_id, "action": "remove"})
        return self._persist(n)

    def _persist(self, n, *more):
        """Write the nodes' rows through the store (one transaction); returns an awaitable
        that never raises unobserved (callers from aiocoap callbacks do not await it)."""
        try:
            fut = self.store.upsert_nodes([self._row(x) for x in (n,) + more])
        except StoreClosed:
            return _done()
        fut.add_done_callback(_consume)
        return fut

    @staticmethod
    def _row(n):
        return {"id": n.id, "address": n.address, "firmware": n.firmware, "lt": n.lt,
                "registered": n.registered, "rd": json.dumps(n.rd) if n.rd is not None else None,
                "last_seen": n.last_seen, "online": int(n.online), "interval": n.interval,
                "first_seen": n.first_seen}

    # ---- configs ----------------------------------------------------------------------------

    def config_version(self, node_id):
        c = self.configs.get(node_id)
        return c[0] if c else 0

    def wanted_firmware(self, node_id):
        """The node config's "firmware" (a pin) when set, else the version a rollout offers
        the node (hub/rollouts.py keeps that map), else the hub-wide nodes.firmware. Called
        for every ack: dict lookups only."""
        return (self.node_firmware.get(node_id) or self.rollout_firmware.get(node_id)
                or self.firmware)

    def _note_firmware(self, node_id, body):
        try:
            doc = cbor.loads(body)
        except ValueError:
            doc = None
        fw = doc.get("firmware") if isinstance(doc, dict) else None
        if isinstance(fw, str) and fw:
            self.node_firmware[node_id] = fw
        else:
            self.node_firmware.pop(node_id, None)

    def set_config(self, node_id, version, body, interval):
        self.configs[node_id] = (version, body)
        self._note_firmware(node_id, body)
        n = self._node(node_id)
        n.interval = interval
        return self._persist(n)

    # ---- views --------------------------------------------------------------------------------

    def sensors(self, node_id):
        names = set(sensor for sensor in self.node_series.get(node_id, ())
                    if not sensor.startswith(HEALTH_PREFIX))
        n = self.nodes.get(node_id)
        if n is not None and n.rd:
            for href, _attrs in n.rd.get("links", ()):
                name = href.rstrip("/").rsplit("/", 1)[-1]
                if name and not name.startswith(HEALTH_PREFIX):
                    names.add(name)
        return sorted(names)

    def health(self, node_id):
        out = {}
        for sensor, sid in self.node_series.get(node_id, {}).items():
            if sensor.startswith(HEALTH_PREFIX):
                cur = self.latest.get(sid)
                if cur is not None:
                    out[sensor[len(HEALTH_PREFIX):]] = value_out(cur[1], cur[2])
        return out

    def update_view(self, node_id):
        """The node's over-the-air update as its latest health readings say (None for one
        it never reported) and the version the hub wants it to run. `since`: when the
        state took its current value (as seen by this hub process; after a restart, the
        time of the latest state reading)."""
        by_name = self.node_series.get(node_id, {})
        out = {}
        for key, sensor in UPDATE_HEALTH:
            sid = by_name.get(sensor)
            cur = self.latest.get(sid) if sid is not None else None
            out[key] = None if cur is None else value_out(cur[1], cur[2])
        out["wanted"] = self.wanted_firmware(node_id)
        sid = by_name.get(OTA_STATE)
        cur = self.latest.get(sid) if sid is not None else None
        since = None
        if cur is not None:
            seen = self.state_since.get(sid)
            since = seen[1] if seen is not None and seen[0] == cur[2] else cur[0]
        out["since"] = since
        return out

    def diagnostics(self, node_id):
        """The node's field diagnostics (firmware/diag.py, docs/diagnostics.md) from its latest
        health readings; None (or {}) for what the node never reported. A sensor the node
        knows (a series or an RD link) and sensor_fault does not name is "ok"."""
        h = self.health(node_id)
        faults = _pairs(h.get("sensor_fault"))
        errors = _pairs(h.get("sensor_errors"), int)
        sensors = {}
        if "sensor_fault" in h:
            for name in self.sensors(node_id):
                sensors[name.split(".", 1)[0]] = None
            for name in faults:
                sensors[name] = None
            for name in sensors:
                sensors[name] = {"status": faults.get(name, "ok"), "errors": errors.get(name, 0)}
        unsynced = h.get("clock_unsynced")
        return {
            "safe_mode": {"active": None if "safe_mode" not in h else bool(h["safe_mode"]),
                          "key": h.get("safe_mode") or None},
            "sensors": sensors,
            "sensor_fault": h.get("sensor_fault") or None,
            "config": {"applied": h.get("config"), "rejected": h.get("config_rejected") or None},
            "clock": {"synced": None if unsynced is None else not unsynced,
                      "unsynced_for": unsynced or None},
            "estimated": h.get("estimated"),
            "refused": _pairs(h.get("refused"), int),
            "crash": h.get("crash"),
            "reset": h.get("reset"),
        }

    def health_by_node(self, key):
        """{node: latest numeric health.<key>} of every node that reported one."""
        out = {}
        name = HEALTH_PREFIX + key
        for node_id, by_name in self.node_series.items():
            sid = by_name.get(name)
            cur = self.latest.get(sid) if sid is not None else None
            if cur is not None and cur[1] == kinds.NUM:
                out[node_id] = cur[2]
        return out

    def sensor_errors_by_node(self):
        """{node: failed measurements since the node's boot, all its sensors}."""
        out = {}
        name = HEALTH_PREFIX + "sensor_errors"
        for node_id, by_name in self.node_series.items():
            sid = by_name.get(name)
            cur = self.latest.get(sid) if sid is not None else None
            if cur is not None:
                out[node_id] = sum(_pairs(cur[2], int).values())
        return out

    def add_node_gauges(self, metrics):
        """Per-node gauges on /metrics (config metrics.per_node): one series per node each."""
        for key, name, text in (("vbat", "battery_volts", "Battery voltage (health.vbat)"),
                                ("rssi", "rssi_dbm", "Wi-Fi signal (health.rssi)"),
                                ("outbox", "outbox_depth",
                                 "Readings waiting in the node's outbox (health.outbox)")):
            metrics.node_gauge("smartpark_node_" + name, text,
                               lambda key=key: self.health_by_node(key))
        metrics.node_gauge("smartpark_node_sensor_errors",
                           "Failed sensor measurements since the node's boot "
                           "(health.sensor_errors)", self.sensor_errors_by_node)

    def expected_interval(self, n):
        return n.interval or n.learned or self.default_interval

    def node_view(self, node_id):
        n = self.nodes[node_id]
        return {
            "id": n.id,
            "online": bool(n.online),
            "last_seen": n.last_seen,
            "address": n.address,
            "firmware": n.firmware,
            "health": self.health(node_id),
            "sensors": self.sensors(node_id),
            "registered": n.registered is not None,
            "lifetime": n.lt,
            "expected_interval": self.expected_interval(n),
            "config_version": self.config_version(node_id),
            "diagnostics": self.diagnostics(node_id),
        }

    # ---- liveness ------------------------------------------------------------------------

    def check_liveness(self, now=None):
        """Mark nodes offline that missed their reports; returns the ids that changed.
        Durations are measured on the monotonic clock (`heard`), so a wall clock step
        changes no node's state; `now` (a wall time) measures them on the stored wall times
        instead."""
        changed = []
        mono = time.monotonic()
        for n in self.nodes.values():
            if not n.online:
                continue
            if now is None:
                seen, reg = self.heard.get(n.id), self.heard_reg.get(n.id)
                if n.registered is None:
                    reg = None
                t, seen = mono, seen if seen is not None else -1e18
            else:
                t, seen, reg = now, n.last_seen or 0, n.registered
            last = max(seen, reg if reg is not None else -1e18)
            late = t - last > self.factor * self.expected_interval(n)
            expired = (reg is not None and n.lt is not None
                       and t > reg + n.lt and seen < reg + n.lt)
            if late or expired:
                n.online = False
                changed.append(n.id)
                self.events.publish("node", {"node": n.id, "online": False,
                                             "last_seen": n.last_seen})
        return changed
