"""Field diagnostics as health readings, sent on change and on a slow heartbeat.

node.health() imports this module, calls readings() and unloads it again
(compat.unload): the code is in the heap only while a health record is made.
The readings (docs/diagnostics.md), each false, "" or 0 while all is well, so
an alarm rule of type fault can use any of them:

  health.safe_mode        text  the config key at fault; "" when not in safe mode
  health.sensor_fault     text  "<sensor>:<status> ..." of the sensors that are not ok
                                (not_found, read_error, out_of_range); "" when all are
  health.sensor_errors    text  "<sensor>:<n> ..." failed measurements since boot, per
                                sensor that had any
  health.config           count the config version applied
  health.config_rejected  text  "<version> <key>: <why>" of the last config from the hub
                                the node refused; "" once a newer one applied
  health.clock_unsynced   s     0 while the clock has the hub's time, else how long it
                                has been without it (readings then carry "est")
  health.estimated        count readings sent with an estimated time since boot
  health.refused          text  "<code>:<n> ..." readings the hub refused, by CoAP code,
                                since boot

health.crash (crashlog.py) and health.reset (node.health) are the others.

When they go: RTC memory keeps [health reports since power-on, a hash of the
values that matter for a change] (rtc "dg"), so deep sleep does not count as a
change. A change sends them all; so does the heartbeat (every 16th health
report) and the second report after a power-on. The first report after a
power-on sends only what is wrong (safe mode, a sensor that failed or did not
start; node.health does not even load this module for a node without either):
that cycle also registers and syncs, the node's heap peak (tests/firmware/
test_heap_budget.py), and the next report corrects whatever the hub still
shows from before. An unsynced clock is not news then: every node boots so.
"""

# driver status codes (drivers/__init__.py) -> what an operator reads; -1: the driver raised
_STATUS = {1: "not_found", 4: "not_found", 2: "read_error", 3: "read_error",
           5: "out_of_range"}
HEARTBEAT = 16


def values(node):
    """[(name, kind, value, unit)] of every diagnostic, and the text whose change sends them."""
    started = {}
    for s, _drv in node.sensors:
        started[s["name"]] = 1
    smp = node.sampler
    bad = []
    errs = []
    for s in node.cfg["sensors"]:
        name = s["name"]
        if name not in started:
            bad.append(name + ":not_found")   # the driver did not start (a part missing at boot)
        else:
            st = smp.status.get(name, 0)
            if st:
                bad.append(name + ":" + _STATUS.get(st, "read_error"))
        n = smp.failures.get(name, 0)
        if n:
            errs.append("%s:%d" % (name, n))
    d = node.diag or {}
    rej = d.get("rej")
    ref = d.get("ref") or {}
    clk = node.clock
    safe = node.error.key if node.safe and node.error else ""
    fault = " ".join(bad)[:100]
    rej = "" if rej is None else ("%d %s: %s" % rej)[:120]
    refused = " ".join("%s:%d" % (k, ref[k]) for k in ref)
    unsynced = 0 if clk.synced() else max(clk.uptime_s(), 1)
    vals = (("safe_mode", "vs", safe, ""), ("sensor_fault", "vs", fault, ""),
            ("sensor_errors", "vs", " ".join(errs)[:100], ""),
            ("config", "v", node.cfg["config_version"], ""),
            ("config_rejected", "vs", rej, ""), ("clock_unsynced", "v", unsynced, "s"),
            ("estimated", "v", d.get("est", 0), ""), ("refused", "vs", refused, ""))
    key = "%s|%s|%d|%s|%d|%s" % (safe, fault, node.cfg["config_version"], rej, unsynced > 0,
                                 refused)
    return vals, key


def _hash(text):
    h = 5381
    for b in text.encode():
        h = ((h * 33) ^ b) & 0xFFFFFF
    return h


def readings(node, flags, run, t):
    """Outbox records of the diagnostics to send with this health report (see above)."""
    vals, key = values(node)
    h = _hash(key)
    st = node.rtc.get("dg") or (0, None)
    n = st[0] + 1
    first = st[1] is None
    node.rtc["dg"] = (n, h)
    if not (first or h != st[1] or n == 2 or n % HEARTBEAT == 0):
        return []
    recs = []
    for name, kind, v, unit in vals:
        if not first or v and name not in ("config", "clock_unsynced"):
            recs.append((flags, run, t, kind, v, "health." + name, unit))
    return recs
