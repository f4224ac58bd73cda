"""Staged firmware rollouts: a version goes to a few canary nodes first, then to the rest,
and stops by itself when too many nodes fail to take it.

Scope: which version each node is offered while a rollout runs (the node -> version map
Registry.wanted_firmware reads on every ack), the rollout's state machine, its files, and
its JSON view for the HTTP API. Nothing here speaks CoAP or HTTP; the node's own side of an
update is firmware/ota.py, and what it reports (health.fw, health.ota_state,
health.ota_result, health.ota_reason) is read from the registry's latest values.

A rollout: id (1, 2, ...), version (published in the firmware store), selector, canary
(percent), soak (s), max_failures (percent), state, created, changed (the last state
change), reason (why it halted or was cancelled), promoted (when the rest were assigned),
and one entry per selected node: phase (canary | rest; none for a skipped node), status,
assigned (when it was first offered the version), since (when the status took its value),
result and reason (the node's health.ota_result and health.ota_reason behind a failure),
wanted (whether the rollout offers it the version now).

Selection: the selector is a comma-separated list of node ids and shell-style globs
(fnmatch, case-sensitive) over the nodes the hub knows when the rollout starts; none (or
"*") means every known node. An id the hub does not know, or a glob that matches nothing,
is refused. Nodes that join later are not part of it. A node whose config pins a firmware
version (its "firmware" key) is listed as skipped: the pin wins (below), so the rollout
cannot move it; so is a node pinned while the rollout runs.

Canaries: ceil(canary / 100 x n) of the n nodes not skipped, at least one when canary > 0.
They are the first in the order of SHA-256("<id>:<version>:<node>"): the same rollout always
picks the same nodes (a restart changes nothing), and successive rollouts spread the canary
role over the fleet instead of always the same alphabetically first bays.

States:
  canary    only the canaries are offered the version. Once every canary has settled
            (updated or failed) and the last of them settled `soak` seconds ago, the rest
            are assigned: rolling. With no rest (canary 100 %), done at once.
  rolling   every node is offered the version; done once every node has settled.
  done      every node settled, failures within max_failures.
  halted    by itself, when failed / assigned > max_failures %, or by the operator (halt):
            nothing more is assigned, and the version is withdrawn from every assigned node
            that does not run it yet (their status becomes withdrawn), so the pending nodes
            never receive it and the assigned ones stop fetching it. Nodes that run it
            already keep it (taking it back would be an update of its own: start a rollout
            of the old version for that).
  cancelled by the operator (cancel), from any other state: as halted, and the version is
            withdrawn from the nodes that run it too, so they want what they would without
            this rollout (an earlier rollout's version, nodes.firmware, or none: a node
            never downgrades when nothing names another version).
A canary or rolling rollout is active. A node is in at most one active rollout: a new
rollout that selects a node of an active one is refused (409, naming the rollout), rather
than silently taking it over; halt or cancel that one first.

Node status: pending (not assigned yet), updating (assigned, not settled), updated (its
health.fw is the version and its health.ota_state idle, i.e. the trial boot is confirmed),
failed, timed_out, skipped, withdrawn. Timed out: still updating `timeout` seconds (default 7
days, 0: never) after its assignment -- a node that stopped reporting, or one that failed
this version before and will not fetch it again. It counts as settled, not as failed: the
rollout goes on without it, the version stays offered to it, and it becomes updated (or
failed) when it reports so later. A canary phase whose canaries all settled without one
updated halts instead of promoting: nothing says the version works. Failed: after its
assignment the node reported a health.ota_result of rolled_back, integrity_failure,
unsupported_bundle, not_enough_flash or out_of_memory (deferred_low_battery and
connection_lost are not failures: the node retries). A node repeats
its last result on every 16th health report and after each boot, so an old result must not
count as a new failure: a result counts when its reading is not older than the assignment and
either differs from the result the node had when it was assigned, or came with (or after) a
change of the node's health.ota_state that happened after the assignment (the node reports
state and result together when an attempt ends; a result repeated while the node is
downloading again is older than that state). A failed node
is withdrawn at once (its wanted version falls back; it would not fetch the version again in
any case). Updated and failed are final for the rollout.

Wanted version, highest first: the node config's "firmware" (an explicit pin), then the
rollout that most recently assigned the node and still offers it the version (a done rollout
keeps offering it, or its nodes would fall back to nodes.firmware and be downgraded), then
the hub-wide nodes.firmware. The registry reads the rollout part from one dict kept here
(`Registry.rollout_firmware`), rebuilt whenever an assignment or withdrawal changes it, so the
ack path stays a dict lookup.

Evaluation: `tick()` settles node statuses from the registry's latest health readings, then
moves each rollout on; the hub runs it every rollouts.check_interval seconds and before each
rollout API answer. Each state change and each node status change is logged once (a halt as a
warning) and published as a "rollout" event (SSE /api/events).

Persistence: one JSON file per rollout, `<data_dir>/rollouts/<id>.json`, written whole
(temporary file, fsync, rename, fsync of the directory) by one writer thread, in the order of
the changes, so a crash leaves the previous or the new state of each rollout. Files rather
than tables in the store, as for the keys (hub/keys.py): a rollout is operator state written
a few times in its life, never per report, and a table would add a schema version and
migration to hub/store/ for a handful of rows; the files are loaded at start, before CoAP
serves, so the first ack after a restart offers the same versions as the last before it.
A change is applied in memory first and the file follows: after a crash in between, the next
evaluation reaches the same state again from the node readings the store kept.
"""

import asyncio
import concurrent.futures
import fnmatch
import hashlib
import json
import logging
import math
import os
import re
import time

from . import firmware

log = logging.getLogger("smartpark.hub.rollouts")

ROLLOUTS_DIR = "rollouts"
FILE_FORMAT = 1
ACTIVE = ("canary", "rolling")
STATES = ("canary", "rolling", "done", "halted", "cancelled")
STATUSES = ("pending", "updating", "updated", "failed", "timed_out", "skipped", "withdrawn")
FAILURES = frozenset(("rolled_back", "integrity_failure", "unsupported_bundle",
                      "not_enough_flash", "out_of_memory"))
PARAMS = ("version", "nodes", "canary", "soak", "max_failures", "timeout")
DEFAULTS = {"canary": 10.0, "soak": 600.0, "max_failures": 10.0, "timeout": 7 * 86400.0}
MAX_SOAK = 30 * 86400.0  # s
MAX_TIMEOUT = 90 * 86400.0  # s
MAX_SELECTOR = 4096  # characters
_GLOB = re.compile(r"[*?\[]")
_FILE = re.compile(r"^([1-9][0-9]{0,9})\.json$")
_SETTLED = ("updated", "failed", "timed_out")

FW, STATE, RESULT, REASON = "health.fw", "health.ota_state", "health.ota_result", \
    "health.ota_reason"


class RolloutError(Exception):
    """A request the rollouts refuse: `status` 400 (bad parameter, named in `parameter`),
    404 (unknown rollout or unpublished version), 409 (overlap, or a state that does not
    allow it), 503 (the rollout could not be saved)."""

    def __init__(self, text, parameter=None, status=400):
        Exception.__init__(self, text)
        self.text = text
        self.parameter = parameter
        self.status = status


def _num(x):
    """A bound as an operator reads it: 7776000, not 7.776e+06."""
    return "%d" % x if x == int(x) else "%g" % x


def _number(body, name, lo, hi, unit):
    v = body.get(name, DEFAULTS[name])
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise RolloutError("%s must be a number of %s (%s..%s)" % (name, unit, _num(lo),
                                                                   _num(hi)), name)
    if not lo <= v <= hi:
        raise RolloutError("%s must be between %s and %s %s, got %g" % (
            name, _num(lo), _num(hi), unit, v), name)
    return float(v)


def check_params(body):
    """The parameters of a new rollout (POST /api/rollouts), checked, defaults filled in;
    raises RolloutError naming the parameter."""
    if not isinstance(body, dict):
        raise RolloutError("body must be a JSON object", "body")
    for k in body:
        if k not in PARAMS:
            raise RolloutError("unknown parameter %r (known: %s)" % (k, ", ".join(PARAMS)),
                               str(k))
    version = body.get("version")
    if version is None:
        raise RolloutError("version is required: a firmware version in the hub's store",
                           "version")
    if not firmware.valid_version(version) or version.endswith("\n"):
        raise RolloutError("version must be 1 to 32 letters, digits, '.', '-' or '+', "
                           "starting with a letter or digit", "version")
    nodes = body.get("nodes")
    if nodes is not None and (not isinstance(nodes, str) or len(nodes) > MAX_SELECTOR):
        raise RolloutError("nodes must be a string of at most %d characters: node ids and "
                           "globs, comma-separated" % MAX_SELECTOR, "nodes")
    return {"version": version, "nodes": nodes or None,
            "canary": _number(body, "canary", 0, 100, "percent"),
            "soak": _number(body, "soak", 0, MAX_SOAK, "seconds"),
            "max_failures": _number(body, "max_failures", 0, 100, "percent"),
            "timeout": _number(body, "timeout", 0, MAX_TIMEOUT, "seconds")}


def select(selector, known):
    """The sorted node ids `selector` names among `known` (see the module docstring);
    raises RolloutError (parameter "nodes")."""
    known = sorted(known)
    if selector is None or selector.strip() in ("", "*"):
        if not known:
            raise RolloutError("the hub knows no nodes yet", "nodes")
        return known
    out = set()
    for item in selector.split(","):
        item = item.strip()
        if not item:
            continue
        if _GLOB.search(item):
            hits = [n for n in known if fnmatch.fnmatchcase(n, item)]
            if not hits:
                raise RolloutError("nodes: %r matches no node the hub knows" % item, "nodes")
            out.update(hits)
        elif item in known:
            out.add(item)
        else:
            raise RolloutError("nodes: unknown node %r" % item, "nodes")
    if not out:
        raise RolloutError("nodes names no node", "nodes")
    return sorted(out)


def canaries(rollout_id, version, nodes, percent):
    """The canary nodes among `nodes`: ceil(percent/100 x n), at least one when percent > 0,
    the first in the order of SHA-256("<id>:<version>:<node>")."""
    if percent <= 0 or not nodes:
        return set()
    k = max(1, min(len(nodes), math.ceil(percent * len(nodes) / 100.0 - 1e-9)))
    rank = sorted(nodes, key=lambda n: hashlib.sha256(
        ("%d:%s:%s" % (rollout_id, version, n)).encode()).digest())
    return set(rank[:k])


def _silence(registry, node, assigned, timeout, running, state):
    """Why a node timed out: how long since its assignment, and what it last said."""
    seen = getattr(registry.nodes.get(node), "last_seen", None)
    if seen is None:
        last = "never seen"
    elif seen >= assigned:
        last = "last seen %.0f s after its assignment" % (seen - assigned)
    else:
        last = "not seen since its assignment (last %.0f s before it)" % (assigned - seen)
    return "not updated within %.0f s: %s, running %s, update state %s" % (
        timeout, last, running or "unknown", state or "unknown")


def _entry(phase, status, now, reason=None):
    return {"phase": phase, "status": status, "assigned": None, "since": now, "result": None,
            "reason": reason, "wanted": False, "base": None}


class Rollouts:
    """The hub's rollouts (loaded from `<data_dir>/rollouts/`), their evaluation, and the
    node -> version map the registry reads (`registry.rollout_firmware`)."""

    def __init__(self, data_dir, registry, events):
        self.data_dir = data_dir
        self.dir = os.path.join(data_dir, ROLLOUTS_DIR)
        self.registry = registry
        self.events = events
        self.rollouts = {}  # id -> rollout dict (as in its file)
        self._top_id = 0  # the highest id seen, loaded or not (an unreadable file keeps its id)
        # done rollouts left with no timed-out node: nothing in them can change any more (a
        # node times out only while its rollout is active), so evaluate skips them for good
        self._quiet = set()
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rollouts")
        self._lock = asyncio.Lock()

    # ---- files ------------------------------------------------------------------------------

    def load(self):
        """Read every rollout file (at start, before CoAP serves). An unreadable or malformed
        file is logged and left alone; its id is not reused."""
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            names = []
        for name in names:
            m = _FILE.match(name)
            if not m:
                continue
            rid = int(m.group(1))
            self._top_id = max(self._top_id, rid)
            path = os.path.join(self.dir, name)
            try:
                with open(path, encoding="utf-8") as f:
                    r = json.load(f)
                bad = _file_error(r, rid)
            except (OSError, ValueError) as e:
                bad = str(e)
            if bad:
                log.warning("rollout file %s skipped: %s", path, bad)
                continue
            r.pop("format", None)
            self.rollouts[rid] = r
        self._remap()
        return self

    def _write(self, rid, text):
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        path = os.path.join(self.dir, "%d.json" % rid)
        tmp = os.path.join(self.dir, ".tmp-%d.json" % rid)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def _save(self, r):
        """Write a rollout's file (in the writer thread, after every write queued before)."""
        text = json.dumps(dict(r, format=FILE_FORMAT), indent=1, sort_keys=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._write, r["id"], text)

    async def _save_all(self, changed):
        for r in changed:
            try:
                await self._save(r)
            except OSError as e:
                log.error("rollout %d: cannot write its file in %s: %s (kept in memory; "
                          "written with its next change)", r["id"], self.dir, e)

    def close(self):
        """Wait for the queued writes (at stop, off the event loop)."""
        self._writer.shutdown(wait=True)

    # ---- the wanted map --------------------------------------------------------------------

    def _remap(self):
        """Rebuild registry.rollout_firmware: per node, the version of the newest rollout that
        offers it one (in place and without an await: an ack never sees half of it)."""
        new = {}
        for rid in sorted(self.rollouts):
            r = self.rollouts[rid]
            for node, e in r["nodes"].items():
                if e["wanted"]:
                    new[node] = r["version"]
        m = self.registry.rollout_firmware
        if m != new:
            m.clear()
            m.update(new)

    # ---- reading the node's update ---------------------------------------------------------

    def _latest(self, node, sensor):
        sid = self.registry.node_series.get(node, {}).get(sensor)
        return self.registry.latest.get(sid) if sid is not None else None

    def _ota(self, node):
        """(running, state, since, (result, t) or None, reason) from the latest readings."""
        reg = self.registry
        fw = self._latest(node, FW)
        st = self._latest(node, STATE)
        res = self._latest(node, RESULT)
        why = self._latest(node, REASON)
        since = None
        if st is not None:
            sid = reg.node_series[node][STATE]
            seen = reg.state_since.get(sid)
            since = seen[1] if seen is not None and seen[0] == st[2] else st[0]
        return (fw[2] if fw is not None else None, st[2] if st is not None else None, since,
                (res[2], res[0]) if res is not None else None,
                why[2] if why is not None else None)

    def _assign(self, r, node, e, now):
        e["assigned"] = now
        e["status"] = "updating"
        e["since"] = now
        e["wanted"] = True
        res = self._ota(node)[3]
        e["base"] = list(res) if res is not None else None

    # ---- starting, halting, cancelling -----------------------------------------------------

    async def start(self, body):
        """A new rollout from POST /api/rollouts' body; its view. Raises RolloutError."""
        p = check_params(body)
        manifest = await asyncio.to_thread(firmware.get, self.data_dir, p["version"])
        if manifest is None or manifest.get("firmware_version") != p["version"]:
            raise RolloutError("firmware %s is not in the hub's store (publish it first: "
                               "smartpark firmware publish, or POST /api/firmware)"
                               % p["version"], "version", 404)
        async with self._lock:
            now = time.time()
            changed = self.evaluate(now)  # a rollout that just finished no longer blocks
            r = self._new(p, now)
            try:
                await self._save(r)  # stored before any node is offered the version
            except OSError as e:
                self._top_id -= 1
                raise RolloutError("the rollout could not be saved in %s: %s"
                                   % (self.dir, e), None, 503) from None
            self.rollouts[r["id"]] = r
            self._remap()
            self._announce(r, "started: %d canaries, %d more nodes, %d skipped" % tuple(
                sum(1 for e in r["nodes"].values() if e[k] == v)
                for k, v in (("phase", "canary"), ("phase", "rest"), ("status", "skipped"))))
            if self._settle(r, now) | self._advance(r, now):  # nodes that run it already
                changed.add(r["id"])
            await self._save_all([self.rollouts[i] for i in sorted(changed)])
        return self.view(r)

    def _new(self, p, now):
        """The rollout for checked parameters `p` (not yet stored or applied)."""
        reg = self.registry
        nodes = select(p["nodes"], reg.nodes)
        pins = {n: reg.node_firmware[n] for n in nodes if reg.node_firmware.get(n)}
        free = [n for n in nodes if n not in pins]
        if not free:
            raise RolloutError("every selected node has a firmware version pinned in its "
                               "config: nothing to roll out", "nodes")
        busy = {}
        for other in self.rollouts.values():
            if other["state"] in ACTIVE:
                for n in free:
                    e = other["nodes"].get(n)
                    if e is not None and e["status"] != "skipped":
                        busy.setdefault(other["id"], []).append(n)
        if busy:
            rid, clash = min(busy.items())
            raise RolloutError("rollout %d (%s) is active on %d of these nodes (%s%s): halt or "
                               "cancel it first" % (
                                   rid, self.rollouts[rid]["state"], len(clash),
                                   ", ".join(clash[:5]), ", ..." if len(clash) > 5 else ""),
                               "nodes", 409)
        rid = self._top_id + 1
        self._top_id = rid
        first = canaries(rid, p["version"], free, p["canary"])
        r = {"id": rid, "version": p["version"], "selector": p["nodes"] or "*",
             "canary": p["canary"], "soak": p["soak"], "max_failures": p["max_failures"],
             "timeout": p["timeout"], "state": "canary" if first else "rolling",
             "created": now, "changed": now, "reason": None, "promoted": None if first else now, "nodes": {}}
        for n in nodes:
            if n in pins:
                r["nodes"][n] = _entry(None, "skipped", now,
                                       "pinned to %s by its node config" % pins[n])
                continue
            e = r["nodes"][n] = _entry("canary" if n in first else "rest", "pending", now)
            if n in first or not first:
                self._assign(r, n, e, now)
        return r

    async def halt(self, rid, reason="halted by the operator"):
        return await self._stop(rid, "halted", reason)

    async def cancel(self, rid, reason="cancelled by the operator"):
        return await self._stop(rid, "cancelled", reason)

    async def _stop(self, rid, state, reason):
        async with self._lock:
            r = self.get(rid)
            changed = self.evaluate(time.time())
            if state == "halted" and r["state"] not in ACTIVE:
                raise RolloutError("rollout %d is %s: only a rollout in its canary or rolling "
                                   "phase can be halted" % (rid, r["state"]), "id", 409)
            if state == "cancelled" and r["state"] == "cancelled":
                raise RolloutError("rollout %d is cancelled already" % rid, "id", 409)
            self._end(r, state, reason, time.time())
            changed.discard(rid)
            await self._save_all([r] + [self.rollouts[i] for i in sorted(changed)])
        return self.view(r)

    def _end(self, r, state, reason, now):
        """halted or cancelled: withdraw the version (see the module docstring)."""
        for node, e in r["nodes"].items():
            if not e["wanted"]:
                continue
            if state == "halted" and e["status"] == "updated":
                continue
            if state == "halted" and self._ota(node)[0] == r["version"]:
                continue  # switched (on trial): it runs the version; taking it back is a downgrade
            e["wanted"] = False
            if e["status"] in ("updating", "timed_out"):
                self._node_status(r, node, e, "withdrawn", now)
        r["state"] = state
        r["reason"] = reason
        r["changed"] = now
        self._remap()
        self._announce(r, reason, warn=state == "halted")

    def get(self, rid):
        r = self.rollouts.get(rid)
        if r is None:
            raise RolloutError("unknown rollout %r" % (rid,), "id", 404)
        return r

    # ---- evaluation --------------------------------------------------------------------------

    async def tick(self):
        """Evaluate every rollout now and write the files of those that changed."""
        async with self._lock:
            changed = self.evaluate(time.time())
            await self._save_all([self.rollouts[i] for i in sorted(changed)])

    def evaluate(self, now):
        """Settle node statuses and move each rollout on; the ids of the rollouts that
        changed (in memory; the caller writes them)."""
        changed = set()
        for rid in sorted(self.rollouts):
            r = self.rollouts[rid]
            if r["state"] == "cancelled" or rid in self._quiet:
                continue
            if r["state"] == "done" and not any(e["status"] == "timed_out"
                                                for e in r["nodes"].values()):
                self._quiet.add(rid)  # a done rollout watches only its timed-out nodes
                continue
            if self._settle(r, now) | self._advance(r, now):
                changed.add(rid)
        return changed

    def _node_status(self, r, node, e, status, now, result=None, reason=None):
        e["status"] = status
        e["since"] = now
        e["result"] = result
        e["reason"] = reason
        log.info("rollout %d (%s): %s %s%s", r["id"], r["version"], node, status,
                 " (%s: %s)" % (result, reason) if result else "")
        self.events.publish("rollout", {"id": r["id"], "version": r["version"],
                                        "state": r["state"], "node": node, "status": status,
                                        "result": result, "reason": reason})

    def _settle(self, r, now):
        """Node statuses from the latest readings; True when one changed."""
        changed = remap = False
        pins = self.registry.node_firmware
        watch = ("pending", "updating", "timed_out") if r["state"] in ACTIVE else (
            "updating", "timed_out")
        timeout = r.get("timeout") or 0   # a file of a hub before the timeout: none
        for node, e in r["nodes"].items():
            if e["status"] not in watch:
                continue
            pin = pins.get(node)
            if pin:
                remap |= e["wanted"]
                e["wanted"] = False
                self._node_status(r, node, e, "skipped", now,
                                  reason="pinned to %s by its node config" % pin)
                changed = True
                continue
            if e["status"] == "pending":
                continue
            running, state, since, res, why = self._ota(node)
            if res is not None and res[0] in FAILURES and res[1] >= e["assigned"] and (
                    e["base"] is None or res[0] != e["base"][0]
                    or (since is not None and res[1] >= since >= e["assigned"])):
                remap |= e["wanted"]
                e["wanted"] = False  # it would not fetch it again; its wanted falls back
                self._node_status(r, node, e, "failed", now, res[0], why)
                changed = True
            elif running == r["version"] and state in (None, "idle"):
                self._node_status(r, node, e, "updated", now,
                                  res[0] if res is not None and res[0] == "success" else None)
                changed = True
            elif (e["status"] == "updating" and r["state"] in ACTIVE and timeout
                    and now - e["assigned"] >= timeout):
                # still offered the version (it updates when it comes back), but the
                # rollout goes on without it
                self._node_status(r, node, e, "timed_out", now, reason=_silence(
                    self.registry, node, e["assigned"], timeout, running, state))
                changed = True
        if remap:
            self._remap()
        return changed

    def _advance(self, r, now):
        """The rollout's next state, when its nodes allow one; True when it moved."""
        if r["state"] not in ACTIVE:
            return False
        entries = [e for e in r["nodes"].values() if e["status"] != "skipped"]
        assigned = [e for e in entries if e["assigned"] is not None]
        failed = sum(1 for e in assigned if e["status"] == "failed")
        if failed and failed * 100.0 > r["max_failures"] * len(assigned):
            self._end(r, "halted", "%d of %d assigned nodes failed, more than max_failures "
                                   "%g %%" % (failed, len(assigned), r["max_failures"]), now)
            return True
        if r["state"] == "canary":
            first = [e for e in entries if e["phase"] == "canary"]
            if any(e["status"] not in _SETTLED for e in first):
                return False
            if first and not any(e["status"] == "updated" for e in first):
                # no canary ran the version: nothing says it works
                self._end(r, "halted", "no canary updated within the timeout of %.0f s "
                                       "(%d timed out)" % (r["timeout"], len(first)), now)
                return True
            rest = [(n, e) for n, e in r["nodes"].items()
                    if e["phase"] == "rest" and e["status"] == "pending"]
            if rest:
                settled = max([e["since"] for e in first], default=r["changed"])
                if now - settled < r["soak"]:
                    return False
                for n, e in rest:
                    self._assign(r, n, e, now)
                r["state"] = "rolling"
                r["promoted"] = r["changed"] = now
                self._remap()
                self._announce(r, "canaries settled %.0f s ago: %d more nodes assigned"
                               % (now - settled, len(rest)))
                return True
        if all(e["status"] in _SETTLED for e in entries):
            r["state"] = "done"
            r["changed"] = now
            late = sum(1 for e in entries if e["status"] == "timed_out")
            self._announce(r, "%d nodes updated, %d failed%s" % (
                sum(1 for e in entries if e["status"] == "updated"), failed,
                ", %d timed out (still offered the version)" % late if late else ""))
            return True
        return False

    def _announce(self, r, text, warn=False):
        log.log(logging.WARNING if warn else logging.INFO, "rollout %d (%s): %s: %s",
                r["id"], r["version"], r["state"], text)
        self.events.publish("rollout", {"id": r["id"], "version": r["version"],
                                        "state": r["state"], "reason": text})

    # ---- views ---------------------------------------------------------------------------------

    def active(self):
        return sum(1 for r in self.rollouts.values() if r["state"] in ACTIVE)

    def view(self, r, nodes=True):
        """A rollout as the API shows it (`nodes`: with one row per node)."""
        out = {k: r[k] for k in ("id", "version", "selector", "canary", "soak", "max_failures",
                                 "state", "created", "changed", "promoted", "reason")}
        out["timeout"] = r.get("timeout") or 0
        counts = dict.fromkeys(STATUSES, 0)
        for e in r["nodes"].values():
            counts[e["status"]] += 1
        out["counts"] = counts
        due = None
        if r["state"] == "canary":
            first = [e for e in r["nodes"].values() if e["phase"] == "canary"]
            if first and all(e["status"] in _SETTLED for e in first):
                due = max(e["since"] for e in first) + r["soak"]
        out["promote_at"] = due
        if nodes:
            out["nodes"] = [{"node": n, "phase": e["phase"], "status": e["status"],
                             "assigned": e["assigned"], "since": e["since"],
                             "result": e["result"], "reason": e["reason"],
                             "wanted": e["wanted"]}
                            for n, e in sorted(r["nodes"].items())]
        return out

    def list_view(self):
        return [self.view(self.rollouts[i], nodes=False) for i in sorted(self.rollouts)]


def _file_error(r, rid):
    """What is wrong with a loaded rollout file, or None."""
    if not isinstance(r, dict) or r.get("format") != FILE_FORMAT:
        return "not a rollout file of format %d" % FILE_FORMAT
    if r.get("id") != rid:
        return "its id %r is not the file's name" % (r.get("id"),)
    if not firmware.valid_version(r.get("version")) or r.get("state") not in STATES:
        return "bad version or state"
    nodes = r.get("nodes")
    if not isinstance(nodes, dict):
        return "no node entries"
    for n, e in nodes.items():
        if not isinstance(e, dict) or e.get("status") not in STATUSES:
            return "bad entry for node %r" % n
    return None
