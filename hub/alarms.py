"""Alarms: rules over the registry's latest values, and alarms with a lifecycle.

Scope: the rules (from the TOML file `alarms.file` and the API), their evaluation, the
alarms they raise (one per rule and source), their files, their events (the "alarm" event
on the bus: SSE /api/events, the observable CoAP resource /alarms) and the optional webhook
(raised, acked and cleared; not the value updates of an active alarm).
Nothing here reads SQLite or speaks HTTP; docs/alarms.md is the operator's guide.

Rule types (fields besides the common ones: id, type, severity, node, zone, tag, message,
enabled):
  threshold  sensor; above or below; clear (hysteresis: an alarm above clears below it,
             default the limit itself); for (s the limit must hold before it raises)
  rate       sensor; above (change per `per` s, default 60, between successive readings,
             either way); clear (default above)
  nodata     sensor; for (s without a reading of the series)
  offline    the node is offline (the registry's liveness)
  battery    health.vbat below `below` (default 3.3 V; clears at `clear`, default below +
             0.1 V) or health.low_battery true
  fault      health.<key> (key default "sensor_fault": the node's text of its sensors that
             are not ok, "" when all are) true, a non-empty text or a non-zero number
  dropped    health.dropped grew by more than `above` (default 0) since the node's previous
             health report; clears with a report that shows no more drops
  ota        health.ota_result is a failure (hub/rollouts.py FAILURES); clears on another result
Scope: `node` (an id or a shell glob), `zone` (that zone or any below it), `tag` (the node
has it); all that are given must hold. The source of an alarm is "<node>/<sensor>" for the
series rules and "<node>" for the node rules.

Lifecycle (ThingsBoard's): an alarm is active or cleared, acknowledged or not. There is one
alarm per (rule, source): a rule that triggers while its alarm is active updates it (value,
updated); one that triggers again after the alarm cleared makes the same alarm active again,
unacknowledged. A rule clears its alarm when the clear condition holds; the operator may
clear it by hand: it then stays cleared until the condition has gone away once (or, for the
text-valued fault and ota rules, until the value changes).

Evaluation: every alarms.check_interval seconds (and after every rule change), on the
registry's latest values, never in the ingest path; a pass that took d seconds waits at
least 4 d for the next, so a large park's rules take at most about a fifth of the event
loop. A series is looked at again only when it has a newer reading (or a time-based
condition is pending). A spike shorter than the interval between two evaluations may be
missed when the node reports faster than that.

Events: every raise, ack and clear at once; the value updates of an active alarm at most
every UPDATE_EVERY seconds per alarm (the API shows the current value at any time).

Persistence: `<data_dir>/alarm-rules.json` (the API's rules) and `<data_dir>/alarms.json`
(alarms, their histories, the conditions waiting out their `for`), each written whole
(temporary file, fsync, rename) by one writer thread. A change is written before its event
is published: after a crash between the two, the next start evaluates the same stored
readings, reaches the same change and publishes it once. Value updates of an active alarm
are written at most every SAVE_EVERY seconds (they come back with the next evaluation).
"""

import asyncio
import concurrent.futures
import fnmatch
import json
import logging
import math
import os
import re
import time
import tomllib

from smartpark.fast import kinds

from .park import atomic_write
from .registry import value_out
from .rollouts import FAILURES

log = logging.getLogger("smartpark.hub.alarms")

RULES_FILE = "alarm-rules.json"
STATE_FILE = "alarms.json"
FILE_FORMAT = 1
SEVERITIES = ("critical", "major", "minor", "warning")
TYPES = ("threshold", "rate", "nodata", "offline", "battery", "fault", "dropped", "ota", "hub")
COMMON = ("id", "type", "severity", "node", "zone", "tag", "message", "enabled")
FIELDS = {"threshold": ("sensor", "above", "below", "clear", "for"),
          "rate": ("sensor", "above", "per", "clear"),
          "nodata": ("sensor", "for"),
          "offline": (), "battery": ("below", "clear"), "fault": ("key",),
          "dropped": ("above",), "ota": (), "hub": ("condition",)}
# what a "hub" rule watches in the hub itself (Alarms.hub_state; docs/operations.md):
#   disk    free space below the reserve: new readings refused (5.03)
#   damage  a damaged database or journal file was set aside at this start
HUB_CONDITIONS = ("disk", "damage")
NODE_RULES = ("offline", "battery", "fault", "dropped", "ota")
STATES = ("active", "cleared")
MAX_HISTORY = 50
MAX_RULES = 1000
SAVE_EVERY = 10.0  # s between writes for value updates alone
SLICE = 0.005  # s of evaluation between yields to the event loop
UPDATE_EVERY = 5.0  # s: an active alarm's value updates are published at most this often
MAX_SHARE_WAIT = 4.0  # a pass that took d seconds waits at least this x d for the next
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SENSOR = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class AlarmError(Exception):
    """A request the alarms refuse: `status` 400 (a bad field, named in `parameter`), 404
    (unknown alarm or rule), 409 (a rule of the file, or an id in use), 503 (not saved)."""

    def __init__(self, text, parameter=None, status=400):
        Exception.__init__(self, text)
        self.text = text
        self.parameter = parameter
        self.status = status


def _num(rule, name, lo=-math.inf, hi=math.inf, default=None, where=""):
    v = rule.get(name, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or not lo <= v <= hi:
        raise AlarmError("%s must be a number%s" % (name, "" if lo == -math.inf else
                                                    " %g..%g" % (lo, hi)), where + name)
    return float(v)


def check_rule(body, where="", rid=None):  # noqa: C901 - one branch per field
    """A rule checked, with its defaults; raises AlarmError naming the field (`where` is
    prepended: "rule[2]." for the file). `rid`: the id of a rule being replaced."""
    if not isinstance(body, dict):
        raise AlarmError("a rule must be an object", where.rstrip(".") or "body")
    kind = body.get("type")
    if kind not in TYPES:
        raise AlarmError("type must be one of " + ", ".join(TYPES), where + "type")
    for k in body:
        if k not in COMMON and k not in FIELDS[kind]:
            raise AlarmError("unknown field %r for a %s rule (known: %s)" % (
                k, kind, ", ".join(COMMON + FIELDS[kind])), where + str(k))
    r = {"type": kind}
    i = body.get("id", rid)
    if rid is not None and "id" in body and body["id"] != rid:
        raise AlarmError("id cannot change (it is %r)" % rid, where + "id")
    if i is not None:
        if not isinstance(i, str) or not _ID.match(i):
            raise AlarmError("id must be 1 to 64 letters, digits, _ . -, starting with a "
                             "letter or digit", where + "id")
        r["id"] = i
    sev = body.get("severity", "major")
    if sev not in SEVERITIES:
        raise AlarmError("severity must be one of " + ", ".join(SEVERITIES), where + "severity")
    r["severity"] = sev
    for k in ("node", "zone", "tag", "message"):
        v = body.get(k)
        if v is not None and (not isinstance(v, str) or not v or len(v) > 200):
            raise AlarmError("%s must be a string of 1 to 200 characters" % k, where + k)
        r[k] = v
    en = body.get("enabled", True)
    if not isinstance(en, bool):
        raise AlarmError("enabled must be true or false", where + "enabled")
    r["enabled"] = en
    if "sensor" in FIELDS[kind]:
        s = body.get("sensor")
        if not isinstance(s, str) or not _SENSOR.match(s):
            raise AlarmError("sensor is required: a sensor name (1 to 64 letters, digits, "
                             "_ . : -)", where + "sensor")
        r["sensor"] = s
    if kind == "threshold":
        above, below = _num(body, "above", where=where), _num(body, "below", where=where)
        if (above is None) == (below is None):
            raise AlarmError("a threshold rule needs exactly one of above and below",
                             where + "above")
        r["above"], r["below"] = above, below
        clear = _num(body, "clear", where=where)
        if clear is None:
            clear = above if above is not None else below
        if (above is not None and clear > above) or (below is not None and clear < below):
            raise AlarmError("clear must be on the safe side of the limit (%s %g)" % (
                "at most" if above is not None else "at least",
                above if above is not None else below), where + "clear")
        r["clear"] = clear
        r["for"] = _num(body, "for", 0, 30 * 86400, 0.0, where)
    elif kind == "rate":
        r["above"] = _num(body, "above", 0, math.inf, None, where)
        if r["above"] is None:
            raise AlarmError("above is required: the change per `per` seconds", where + "above")
        r["per"] = _num(body, "per", 1e-3, 30 * 86400, 60.0, where)
        r["clear"] = _num(body, "clear", 0, r["above"], r["above"], where)
    elif kind == "nodata":
        r["for"] = _num(body, "for", 1e-3, 365 * 86400, None, where)
        if r["for"] is None:
            raise AlarmError("for is required: seconds without a reading", where + "for")
    elif kind == "battery":
        r["below"] = _num(body, "below", 0, 100, 3.3, where)
        r["clear"] = _num(body, "clear", r["below"], 100, r["below"] + 0.1, where)
    elif kind == "fault":
        key = body.get("key", "sensor_fault")
        if not isinstance(key, str) or not _SENSOR.match(key):
            raise AlarmError("key must be a health key such as fault or crash", where + "key")
        r["key"] = key
    elif kind == "dropped":
        r["above"] = _num(body, "above", 0, math.inf, 0.0, where)
    elif kind == "hub":
        if body.get("condition") not in HUB_CONDITIONS:
            raise AlarmError("condition is required: one of " + ", ".join(HUB_CONDITIONS),
                             where + "condition")
        r["condition"] = body["condition"]
        for k in ("node", "zone", "tag"):
            if r[k] is not None:
                raise AlarmError("a hub rule watches the hub itself: it takes no %s" % k,
                                 where + k)
    return r


def rule_json_schema(with_id=True):
    """check_rule() as JSON Schema (for the OpenAPI document), but for one rule it cannot
    say: `clear` on the safe side of the limit (threshold, rate, battery). `with_id`: for
    POST (PUT names the rule in its path)."""
    num = {"type": "number"}
    common = {"id": {"type": "string", "pattern": _ID.pattern},
              "severity": {"type": "string", "enum": list(SEVERITIES)},
              "enabled": {"type": "boolean"}}
    if not with_id:
        del common["id"]
    for k in ("node", "zone", "tag", "message"):
        common[k] = {"type": ["string", "null"], "minLength": 1, "maxLength": 200}
    sensor = {"type": "string", "pattern": _SENSOR.pattern}
    variants = []

    def variant(kind, required=(), **props):
        p = dict(common, type={"const": kind}, **props)
        variants.append({"type": "object", "additionalProperties": False,
                         "required": ["type"] + list(required), "properties": p})

    hold = dict(num, minimum=0, maximum=30 * 86400)
    variant("threshold", ("sensor", "above"), sensor=sensor, above=num, clear=num, **{"for": hold})
    variant("threshold", ("sensor", "below"), sensor=sensor, below=num, clear=num, **{"for": hold})
    variant("rate", ("sensor", "above"), sensor=sensor, above=dict(num, minimum=0),
            per=dict(num, minimum=1e-3, maximum=30 * 86400), clear=dict(num, minimum=0))
    variant("nodata", ("sensor", "for"), sensor=sensor,
            **{"for": dict(num, minimum=1e-3, maximum=365 * 86400)})
    variant("offline")
    variant("battery", below=dict(num, minimum=0, maximum=100),
            clear=dict(num, minimum=0, maximum=100))
    variant("fault", key=sensor)
    variant("dropped", above=dict(num, minimum=0))
    variant("ota")
    hub = dict(common, type={"const": "hub"},
               condition={"type": "string", "enum": list(HUB_CONDITIONS)})
    for k in ("node", "zone", "tag"):
        hub[k] = {"type": "null"}
    variants.append({"type": "object", "additionalProperties": False,
                     "required": ["type", "condition"], "properties": hub})
    return {"anyOf": variants}


def read_file(path):
    """The rules of an alarms TOML file ([[rule]] tables); raises AlarmError naming the
    field ("rule[N].<field>", N from 0)."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise AlarmError("a readable TOML file (%s)" % (e.strerror or e), "alarms.file") \
            from None
    except tomllib.TOMLDecodeError as e:
        raise AlarmError("valid TOML (%s)" % e, "alarms.file") from None
    extra = set(doc) - {"rule"}
    if extra:
        raise AlarmError("only [[rule]] tables are known", sorted(extra)[0])
    rules = doc.get("rule", [])
    if not isinstance(rules, list):
        raise AlarmError("[[rule]] tables", "rule")
    out = []
    for n, body in enumerate(rules):
        where = "rule[%d]." % n
        if not isinstance(body, dict) or "id" not in body:
            raise AlarmError("a rule of the file needs an id", where + "id")
        r = check_rule(body, where)
        if any(x["id"] == r["id"] for x in out):
            raise AlarmError("id %r is used twice" % r["id"], where + "id")
        out.append(r)
    return out


def _truthy(v):
    return v is True or (isinstance(v, str) and v != "") or (
        not isinstance(v, bool) and isinstance(v, (int, float)) and v != 0)


class Alarms:
    """The hub's alarm rules and alarms (files in `data_dir`)."""

    def __init__(self, data_dir, registry, events, park=None, file=None, webhook=None):
        self.registry = registry
        self.events = events
        self.park = park
        self.file = file or None
        self.webhook = webhook  # an alarms.Webhook or None
        # the hub's own state for "hub" rules: {"disk": {"refusing", "free_bytes"},
        # "damaged_files": n} (set by the app; None: hub rules raise nothing)
        self.hub_state = None
        self.rules_path = os.path.join(data_dir, RULES_FILE)
        self.state_path = os.path.join(data_dir, STATE_FILE)
        self.rules = {}  # id -> rule (with "origin": "file" or "api")
        self.alarms = {}  # id -> alarm (with its private fields: "history", "armed", ...)
        self.by_key = {}  # (rule id, source) -> alarm id
        self.pending = {}  # (rule id, source) -> time the condition started holding
        self._prev = {}  # (rule id, sid) -> (t, value): the reading a rate/dropped rule saw
        self._seen = {}  # (rule id, sid) -> reading time last evaluated
        self._targets = {}  # rule id -> (key of what it was computed from, [node ids])
        self._top_id = 0
        self._next_rule = 1
        self._dirty = False
        self._soft = False
        self._saved = 0.0
        self._due = set()  # ids of alarms with a value update not published yet
        self._lock = asyncio.Lock()
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="alarms")
        self.listeners = []  # fn(alarm view) after each published change (CoAP Observe)
        self.evaluations = 0
        self.eval_seconds = 0.0  # time spent in evaluate() since start

    # ---- files ------------------------------------------------------------------------------

    def load(self):
        """Rules (the API's file, then the alarms.file ones) and the alarms' state."""
        doc = self._read(self.rules_path)
        for r in doc.get("rules", []):
            try:
                rule = check_rule(r)
            except AlarmError as e:
                log.warning("alarm rule %r in %s skipped: %s", r.get("id"), self.rules_path, e)
                continue
            self.rules[rule["id"]] = dict(rule, origin="api")
        self._next_rule = max(int(doc.get("next_rule", 1)), 1)
        if self.file:
            for rule in read_file(self.file):
                if rule["id"] in self.rules:
                    log.warning("alarm rule %r of the API is shadowed by the one of %s",
                                rule["id"], self.file)
                self.rules[rule["id"]] = dict(rule, origin="file")
        st = self._read(self.state_path)
        for a in st.get("alarms", []):
            try:
                self.alarms[int(a["id"])] = a
                self.by_key[(a["rule"], a["source"])] = int(a["id"])
            except (KeyError, TypeError, ValueError):
                log.warning("alarm entry skipped in %s: %r", self.state_path, a)
        for key, t in st.get("pending", []):
            self.pending[tuple(key)] = t
        self._top_id = max([int(st.get("top_id", 0))] + list(self.alarms))
        return self

    def _read(self, path):
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
                raise ValueError("not an alarms file of format %d" % FILE_FORMAT)
            return doc
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("alarms file %s skipped: %s", path, e)
            return {}

    def _rules_text(self):
        rules = [{k: v for k, v in r.items() if k != "origin"}
                 for _i, r in sorted(self.rules.items()) if r["origin"] == "api"]
        return json.dumps({"format": FILE_FORMAT, "rules": rules,
                           "next_rule": self._next_rule}, indent=1, sort_keys=True).encode()

    def _state_text(self):
        return json.dumps({"format": FILE_FORMAT, "top_id": self._top_id,
                           "alarms": [self.alarms[i] for i in sorted(self.alarms)],
                           "pending": [[list(k), t] for k, t in sorted(self.pending.items())]},
                          separators=(",", ":")).encode()

    async def _write(self, path, data):
        await asyncio.get_running_loop().run_in_executor(self._writer, atomic_write, path, data)

    async def _save_state(self, now, force=False):
        if not (self._dirty or (self._soft and (force or now - self._saved >= SAVE_EVERY))):
            return
        self._dirty = self._soft = False
        self._saved = now
        try:
            await self._write(self.state_path, self._state_text())
        except OSError as e:
            self._dirty = True
            log.error("alarms: cannot write %s: %s (kept in memory; written with the next "
                      "change)", self.state_path, e)

    async def close(self):
        """Write what is not written yet; stop the writer and the webhook."""
        try:
            await self._save_state(time.time(), force=True)
        finally:
            self._writer.shutdown(wait=True)
            if self.webhook is not None:
                await self.webhook.close()

    # ---- rules over the API -------------------------------------------------------------------

    def rule_view(self, r):
        return dict(r)

    def rule_list(self):
        return [self.rule_view(self.rules[i]) for i in sorted(self.rules)]

    def rule(self, rid):
        r = self.rules.get(rid)
        if r is None:
            raise AlarmError("unknown alarm rule %r" % (rid,), "id", 404)
        return r

    async def add_rule(self, body):
        async with self._lock:
            r = check_rule(body)
            if len(self.rules) >= MAX_RULES:
                raise AlarmError("at most %d rules" % MAX_RULES, "body", 409)
            if "id" not in r:
                while "r%d" % self._next_rule in self.rules:
                    self._next_rule += 1
                r["id"] = "r%d" % self._next_rule
                self._next_rule += 1
            elif r["id"] in self.rules:
                raise AlarmError("a rule %r exists already (PUT changes it)" % r["id"], "id",
                                 409)
            r["origin"] = "api"
            self.rules[r["id"]] = r
            await self._save_rules(lambda: self.rules.pop(r["id"], None))
        await self.tick()
        return self.rule_view(r)

    async def put_rule(self, rid, body):
        async with self._lock:
            old = self.rule(rid)
            if old["origin"] == "file":
                raise AlarmError("rule %r comes from %s: change it there" % (rid, self.file),
                                 "id", 409)
            r = check_rule(body, rid=rid)
            r["id"], r["origin"] = rid, "api"
            self.rules[rid] = r
            self._forget(rid)

            def undo():
                self.rules[rid] = old

            await self._save_rules(undo)
        await self.tick()
        return self.rule_view(r)

    async def delete_rule(self, rid):
        """Delete an API rule; its active alarms clear (by "rule deleted")."""
        async with self._lock:
            old = self.rule(rid)
            if old["origin"] == "file":
                raise AlarmError("rule %r comes from %s: remove it there" % (rid, self.file),
                                 "id", 409)
            del self.rules[rid]

            def undo():
                self.rules[rid] = old

            await self._save_rules(undo)
            now = time.time()
            changes = []
            for (r, _source), aid in list(self.by_key.items()):
                a = self.alarms[aid]
                if r == rid and a["state"] == "active":
                    self._clear(a, now, "rule deleted")
                    changes.append(a)
            self._forget(rid)
            await self._save_state(now)
        self._publish(changes)
        return self.rule_view(old)

    def _forget(self, rid):
        self._targets.pop(rid, None)
        for d in (self._seen, self._prev, self.pending):
            for k in [k for k in d if k[0] == rid]:
                del d[k]
                if d is self.pending:
                    self._dirty = True

    async def _save_rules(self, undo):
        try:
            await self._write(self.rules_path, self._rules_text())
        except OSError as e:
            undo()
            raise AlarmError("the rules could not be saved: %s" % e, None, 503) from None

    # ---- alarms over the API -------------------------------------------------------------------

    async def read(self, fn, *args):
        """fn(*args) once no change is being evaluated or written: the API shows an alarm
        only after it is on disk, so nothing it showed is lost by a crash."""
        async with self._lock:
            return fn(*args)

    def get(self, aid):
        a = self.alarms.get(aid)
        if a is None:
            raise AlarmError("unknown alarm %r" % (aid,), "id", 404)
        return a

    def view(self, a):
        zone = self.park.zone(a["node"]) if self.park is not None else None
        return {"id": a["id"], "rule": a["rule"], "source": a["source"], "node": a["node"],
                "zone": zone, "sensor": a["sensor"], "severity": a["severity"],
                "state": a["state"], "acked": a["acked"], "raised": a["raised"],
                "cleared": a["cleared"], "acked_at": a["acked_at"], "updated": a["updated"],
                "value": a["value"], "message": a["message"]}

    def query(self, state=None, severity=None, node=None, zone=None, acked=None):
        out = []
        for aid in sorted(self.alarms, reverse=True):
            a = self.alarms[aid]
            if state and a["state"] != state or severity and a["severity"] != severity:
                continue
            if node and a["node"] != node or acked is not None and a["acked"] != acked:
                continue
            v = self.view(a)
            if zone and not (v["zone"] == zone or (v["zone"] or "").startswith(zone + "/")):
                continue
            out.append(v)
        return out

    def summary(self):
        active = dict.fromkeys(SEVERITIES, 0)
        unacked = 0
        for a in self.alarms.values():
            if a["state"] == "active":
                active[a["severity"]] += 1
            if not a["acked"]:
                unacked += 1
        return {"active": active, "unacked": unacked}

    def history(self, aid):
        return list(self.get(aid)["history"])

    async def ack(self, aid, by="operator"):
        async with self._lock:
            a = self.get(aid)
            if a["acked"]:
                return self.view(a)
            now = time.time()
            a["acked"], a["acked_at"], a["updated"] = True, now, now
            self._note(a, now, "acked", by)
            self._dirty = True
            await self._save_state(now)
        self._publish([a])
        return self.view(a)

    async def clear(self, aid, by="operator"):
        async with self._lock:
            a = self.get(aid)
            if a["state"] == "cleared":
                return self.view(a)
            now = time.time()
            self._clear(a, now, by)
            a["armed"] = False  # raised again once the condition went away (or changed)
            a["latched"] = a["value"]
            self.pending.pop((a["rule"], a["source"]), None)
            await self._save_state(now)
        self._publish([a])
        return self.view(a)

    # ---- lifecycle ------------------------------------------------------------------------

    def _note(self, a, now, event, by=None):
        h = a["history"]
        entry = {"t": now, "event": event, "value": a["value"], "by": by}
        if event == "updated" and h and h[-1]["event"] == "updated":
            h[-1] = entry  # consecutive updates: the newest stands for them
        else:
            h.append(entry)
            del h[:-MAX_HISTORY]

    def _clear(self, a, now, by):
        a["state"], a["cleared"], a["updated"] = "cleared", now, now
        self._note(a, now, "cleared", by)
        self._dirty = True

    def _message(self, rule, node, sensor, value):
        if rule.get("message"):
            return rule["message"]
        k = rule["type"]
        if k == "threshold":
            what = "%s %s %g" % (sensor, "above" if rule["above"] is not None else "below",
                                 rule["above"] if rule["above"] is not None else rule["below"])
        elif k == "rate":
            what = "%s changing faster than %g per %g s" % (sensor, rule["above"], rule["per"])
        elif k == "nodata":
            what = "no %s reading for %g s" % (sensor, rule["for"])
        elif k == "offline":
            what = "node offline"
        elif k == "battery":
            what = "battery low"
        elif k == "fault":
            what = "fault reported (health.%s)" % rule["key"]
        elif k == "dropped":
            what = "readings dropped"
        elif k == "hub":
            what = ("free disk space below the reserve: new readings refused"
                    if rule["condition"] == "disk" else "a damaged store file was set aside")
        else:
            what = "firmware update failed"
        if value is not None and k not in ("offline", "nodata"):
            what += " (%s)" % (value if not isinstance(value, float) else "%g" % value)
        return "%s: %s" % (node or "hub", what)

    def _update(self, a, rule, node, sensor, value, t, now, changes):
        """A new value of an active alarm (published now or by a later pass)."""
        a["value"], a["t"], a["updated"] = value, t, now
        a["message"] = self._message(rule, node, sensor, value)
        self._note(a, now, "updated", "rule")
        self._soft = True
        if now - a.get("published", 0.0) >= UPDATE_EVERY:
            changes.append(a)
        else:
            self._due.add(a["id"])

    def _apply(self, rule, node, sensor, source, cond, value, t, now, changes):
        """One condition: True (raise or update), False (clear), None (neither: in the
        hysteresis band; an active alarm's value follows the reading)."""
        key = (rule["id"], source)
        aid = self.by_key.get(key)
        a = self.alarms.get(aid) if aid is not None else None
        active = a is not None and a["state"] == "active"
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        if cond is None and not active:
            return
        if cond is False:
            if self.pending.pop(key, None) is not None:
                self._dirty = True
            if a is not None and not a.get("armed", True):
                a["armed"] = True
                self._dirty = True
            if active:
                a["value"] = value
                self._clear(a, now, "rule")
                changes.append(a)
            return
        if active:
            if t is not None and t != a.get("t") and value != a["value"]:
                self._update(a, rule, node, sensor, value, t, now, changes)
            return
        if a is not None and not a.get("armed", True):
            if not (rule["type"] in ("fault", "ota") and value != a.get("latched")):
                return
        hold = rule.get("for") if rule["type"] == "threshold" else 0
        if hold:
            since = self.pending.get(key)
            if since is None:
                since = self.pending[key] = t if t is not None else now
                self._dirty = True
            if now - since < hold:
                return
            self.pending.pop(key, None)
        if a is None:
            self._top_id += 1
            a = {"id": self._top_id, "rule": rule["id"], "source": source, "node": node,
                 "sensor": sensor, "history": [], "acked": False, "acked_at": None}
            self.alarms[a["id"]] = a
            self.by_key[key] = a["id"]
        a.update(state="active", acked=False, acked_at=None, raised=now, cleared=None,
                 updated=now, value=value, t=t, severity=rule["severity"], armed=True,
                 latched=None, message=self._message(rule, node, sensor, value))
        self._note(a, now, "raised", "rule")
        self._dirty = True
        changes.append(a)

    # ---- evaluation ---------------------------------------------------------------------------

    def _nodes(self, rule):
        """The node ids a rule's scope takes (cached until nodes, series or metadata change)."""
        reg = self.registry
        park = self.park
        key = (len(reg.nodes), len(reg.series), park.version if park is not None else 0)
        got = self._targets.get(rule["id"])
        if got is not None and got[0] == key:
            return got[1]
        return self._scope(rule, key)[1]

    def _scope(self, rule, key):
        """(key, [node ids], {node ids}) of a rule, computed and cached."""
        reg = self.registry
        park = self.park
        out = []
        for n in sorted(reg.nodes):
            if rule["node"] and not (n == rule["node"] or fnmatch.fnmatchcase(n, rule["node"])):
                continue
            if rule["zone"]:
                z = park.zone(n) if park is not None else None
                if not z or not (z == rule["zone"] or z.startswith(rule["zone"] + "/")):
                    continue
            if rule["tag"] and (park is None or rule["tag"] not in park.tags(n)):
                continue
            out.append(n)
        got = self._targets[rule["id"]] = (key, out, frozenset(out))
        return got

    def _in_scope(self, rule):
        self._nodes(rule)
        return self._targets[rule["id"]][2]

    def _latest(self, node, sensor):
        sid = self.registry.node_series.get(node, {}).get(sensor)
        if sid is None:
            return None, None
        return sid, self.registry.latest.get(sid)

    async def evaluate(self, now):
        """Every enabled rule against the latest values; the alarms that changed. Yields
        to the event loop every SLICE seconds of work, so a large park's pass does not hold
        up the reports waiting for their acks (the caller holds the lock: no rule changes
        meanwhile)."""
        changes = []
        self.evaluations += 1
        t0 = time.perf_counter()
        n = 0
        for rid in sorted(self.rules):
            rule = self.rules[rid]
            if not rule["enabled"]:
                continue
            if rule["type"] == "hub":
                self._hub(rule, now, changes)
                continue
            for node in self._nodes(rule):
                try:
                    self._check(rule, node, now, changes)
                except (TypeError, ValueError) as e:  # a reading of an unexpected kind
                    log.debug("alarm rule %s on %s: %s", rid, node, e)
                n += 1
                if n & 127 == 0 and time.perf_counter() - t0 > SLICE:
                    self.eval_seconds += time.perf_counter() - t0
                    await asyncio.sleep(0)
                    t0 = time.perf_counter()
        self._orphans(now, changes)
        for aid in list(self._due):
            a = self.alarms[aid]
            if now - a.get("published", 0.0) >= UPDATE_EVERY:
                self._due.discard(aid)
                changes.append(a)
        self.eval_seconds += time.perf_counter() - t0
        return changes

    def _orphans(self, now, changes):
        """Clear the active alarms no rule stands behind any more: its rule was removed from
        the file, disabled, or changed so that its scope no longer takes the node."""
        for a in self.alarms.values():
            if a["state"] != "active":
                continue
            rule = self.rules.get(a["rule"])
            why = ("rule removed" if rule is None else "rule disabled" if not rule["enabled"]
                   else None if rule["type"] == "hub" or a["node"] in self._in_scope(rule)
                   else "out of the rule's scope")
            if why:
                self._clear(a, now, why)
                changes.append(a)

    def _fresh(self, rule, sid, t):
        """True when the series has a reading newer than the rule last looked at."""
        k = (rule["id"], sid)
        if self._seen.get(k) == t:
            return False
        self._seen[k] = t
        return True

    def _check(self, rule, node, now, changes):  # noqa: C901 - one branch per rule type
        kind = rule["type"]
        reg = self.registry
        if kind == "offline":
            n = reg.nodes[node]
            self._apply(rule, node, None, node, not n.online, n.last_seen, n.last_seen, now,
                        changes)
            return
        if kind in ("threshold", "rate", "nodata"):
            sensor = rule["sensor"]
            sid, cur = self._latest(node, sensor)
            if cur is None:
                return
            source = "%s/%s" % (node, sensor)
            t, v = cur[0], value_out(cur[1], cur[2])
            if kind == "nodata":
                self._apply(rule, node, sensor, source, now - t > rule["for"], t, t, now,
                            changes)
                return
            if cur[1] not in (kinds.NUM, kinds.BOOL) or v is None:
                return
            fresh = self._fresh(rule, sid, t)
            if kind == "threshold":
                key = (rule["id"], source)
                if not fresh and key not in self.pending:
                    return
                self._apply(rule, node, sensor, source, self._threshold(rule, key, v), v, t,
                            now, changes)
                return
            if not fresh:
                return
            prev = self._prev.get((rule["id"], sid))
            self._prev[(rule["id"], sid)] = (t, v)
            if prev is None or t <= prev[0]:
                return
            rate = abs(v - prev[1]) / (t - prev[0]) * rule["per"]
            cond = True if rate > rule["above"] else (False if rate <= rule["clear"] else None)
            self._apply(rule, node, sensor, source, cond, round(rate, 6), t, now, changes)
            return
        self._health(rule, node, now, changes)

    def _hub(self, rule, now, changes):
        """A "hub" rule: the hub's own state (hub_state(), set by the app), no node."""
        state = self.hub_state() if self.hub_state is not None else {}
        cond = rule["condition"]
        if cond == "disk":
            disk = state.get("disk") or {}
            if disk.get("refusing") is None:
                return
            self._apply(rule, None, None, "hub/disk", bool(disk["refusing"]),
                        disk.get("free_bytes"), None, now, changes)
        elif cond == "damage" and state.get("damaged_files") is not None:
            n = state["damaged_files"]
            self._apply(rule, None, None, "hub/damage", n > 0, n, None, now, changes)

    def _threshold(self, rule, key, v):
        aid = self.by_key.get(key)
        active = aid is not None and self.alarms[aid]["state"] == "active"
        if rule["above"] is not None:
            if v > rule["above"]:
                return True
            return None if active and v >= rule["clear"] else False
        if v < rule["below"]:
            return True
        return None if active and v <= rule["clear"] else False

    def _health(self, rule, node, now, changes):  # noqa: C901 - one branch per rule type
        kind = rule["type"]
        if kind == "battery":
            sid, vb = self._latest(node, "health.vbat")
            sid2, low = self._latest(node, "health.low_battery")
            if vb is None and low is None:
                return
            t = max(x[0] for x in (vb, low) if x is not None)
            if not self._fresh(rule, (sid, sid2), t):
                return
            v = vb[2] if vb is not None and vb[1] == kinds.NUM else None
            is_low = low is not None and bool(low[2])
            if is_low or (v is not None and v < rule["below"]):
                cond = True
            elif v is not None and v < rule["clear"]:
                cond = None
            else:
                cond = False
            self._apply(rule, node, "health.vbat", node, cond, v, t, now, changes)
            return
        sensor = {"fault": "health." + rule.get("key", "sensor_fault"),
                  "dropped": "health.dropped",
                  "ota": "health.ota_result"}[kind]
        sid, cur = self._latest(node, sensor)
        if cur is None or not self._fresh(rule, sid, cur[0]):
            return
        t, v = cur[0], value_out(cur[1], cur[2])
        if kind == "fault":
            cond = _truthy(v)
        elif kind == "ota":
            cond = v in FAILURES
        else:
            prev = self._prev.get((rule["id"], sid))
            self._prev[(rule["id"], sid)] = (t, v)
            if prev is None or t <= prev[0] or not isinstance(v, (int, float)):
                return
            grew = v - prev[1]
            cond = grew > rule["above"]
            v = grew if cond else 0
        self._apply(rule, node, sensor, node, cond, v, t, now, changes)

    def gauges(self, metrics):
        """The alarms' gauges in /metrics."""
        metrics.gauge("smartpark_alarms_active", "Active alarms",
                      lambda: sum(1 for a in self.alarms.values() if a["state"] == "active"))
        metrics.gauge("smartpark_alarm_evaluations", "Evaluations of the alarm rules since start",
                      lambda: self.evaluations)
        metrics.gauge("smartpark_alarm_evaluation_seconds",
                      "Time spent evaluating the alarm rules since start (on the event loop)",
                      lambda: self.eval_seconds)
        if self.webhook is not None:
            for name, what in (("sent", "delivered"), ("failed", "given up after the retries"),
                               ("dropped", "dropped from a full queue")):
                metrics.gauge("smartpark_alarm_webhook_" + name, "Alarm changes %s" % what,
                              lambda name=name: getattr(self.webhook, name))

    # ---- the clock -----------------------------------------------------------------------------

    async def tick(self, now=None):
        """Evaluate now, write what changed, then publish it."""
        async with self._lock:
            now = time.time() if now is None else now
            changes = await self.evaluate(now)
            await self._save_state(now)
        self._publish(changes)
        return changes

    async def run(self, interval):
        """Evaluate every `interval` seconds; when a pass takes long (a large park), wait
        MAX_SHARE_WAIT times its duration instead, so evaluation never takes more than about
        a fifth of the event loop."""
        took = 0.0
        while True:
            await asyncio.sleep(max(interval, MAX_SHARE_WAIT * took))
            before = self.eval_seconds
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - logged; the next evaluation runs anyway
                log.exception("alarm evaluation failed")
            took = self.eval_seconds - before

    def _publish(self, changes):
        seen = set()
        for a in changes:
            if a["id"] in seen:
                continue
            seen.add(a["id"])
            a["published"] = time.time()
            self._due.discard(a["id"])
            v = self.view(a)
            event = a["history"][-1]["event"] if a["history"] else "updated"
            if event in ("raised", "cleared"):
                log.log(logging.WARNING if event == "raised" else logging.INFO,
                        "alarm %d %s: %s (%s)", a["id"], event, a["message"], a["severity"])
            self.events.publish("alarm", v)
            for fn in list(self.listeners):
                try:
                    fn(v)
                except Exception:  # noqa: BLE001 - a bad listener must not stop the others
                    log.exception("alarm listener failed")
            if self.webhook is not None and event != "updated":
                self.webhook.send({"event": event, "alarm": v})


class Webhook:
    """POSTs alarm changes as JSON to one URL, in order, from a bounded queue: a failed
    delivery (no connection, timeout, 5xx, 429) is retried `retries` times with doubling
    waits from `backoff` s; then it is dropped (logged, counted) and the next one goes."""

    def __init__(self, url, timeout=5.0, retries=3, backoff=0.5, queue=1000):
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.queue = asyncio.Queue(queue)
        self.sent = self.failed = self.dropped = 0
        self._task = None
        self._session = None

    def send(self, doc):
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="webhook")
        try:
            self.queue.put_nowait(doc)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _run(self):
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        while True:
            doc = await self.queue.get()
            body = json.dumps(doc, separators=(",", ":"))
            for attempt in range(self.retries + 1):
                try:
                    async with self._session.post(self.url, data=body, headers={
                            "Content-Type": "application/json"}) as r:
                        ok = r.status < 500 and r.status != 429
                        why = "HTTP %d" % r.status
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                    ok, why = False, "%s %s" % (type(e).__name__, e)
                if ok:
                    self.sent += 1
                    break
                if attempt < self.retries:
                    await asyncio.sleep(self.backoff * 2 ** attempt)
            else:
                self.failed += 1
                log.warning("alarm webhook: gave up on alarm %s after %d attempts (%s)",
                            doc["alarm"]["id"], self.retries + 1, why)

    async def close(self):
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self._session is not None:
            await self._session.close()


def from_config(c, registry, events, park):
    """The hub's Alarms for config `c` (loaded)."""
    hook = Webhook(c.alarms_webhook, c.alarms_webhook_timeout, c.alarms_webhook_retries) \
        if c.alarms_webhook else None
    return Alarms(c.data_dir, registry, events, park, c.alarms_file, hook).load()
