"""`smartpark simulate`: many nodes reporting to a hub, with an honest summary.

Full mode (default): N nodes, each the real firmware (firmware/main.py, or a
bundle built with `smartpark firmware build --board unix`, --bundle) under
the MicroPython unix port, a process with its own flash directory and
config.json (simulated sensors seeded per node, firmware/sim/). The run has
three phases:

  1. run      --duration S (or until Ctrl-C); a node that exits (deep sleep:
              status 75, or a crash) is started again, as a board reboots;
  2. drain    nodes are stopped (SIGINT = Ctrl-C on the console), then
              restarted with SMARTPARK_DRAIN=1: the firmware only sends,
              without sampling, until its outbox is empty (--drain S, 15);
  3. summary  read from each node's own outbox with the firmware's outbox.py
              under micropython: recorded = readings ever appended (next
              seq), pending = still in the outbox, dropped = given up (full
              outbox or refused by the hub), acknowledged = the rest.

Every node gets its OSCORE key (tools/provision.py): --data DIR names the
hub's data directory on this machine; a key is made in its key store for each
node that has none, and the node's half is written as oscore.json beside the
node's config.json. A node directory that already holds its key (--workdir,
the demo's) keeps it; any other gets a new one. --no-key runs the nodes without
(for a hub with security.mode = "off"). The hub takes new keys when it
reloads its key store.

Nodes trust the host clock as their NTP ("ntp": true), so every reading the
hub stores went through the outbox and `acknowledged` equals what the hub
stored for the node; --hub-time makes them take the time from the hub
instead (their time-sync requests then add a few time-less readings).

--light: a CPython asyncio load generator for 10,000+ virtual nodes, speaking
the same wire protocol (CON POST /r, SenML-CBOR with bn "<node>/", the report
ack, OSCORE with a new key per virtual node in the --data key store), with
CoAP retransmission (RFC 7252 4.2) and the same summary. It too needs --data
or --no-key.

A second Ctrl-C skips the drain. Exit codes: 0 all outboxes empty at the
end; 6 readings still pending after the drain; 2 usage (including a --json
file that cannot be written, checked before anything runs, and neither --data
nor --no-key for firmware nodes); 5 firmware missing; 7 the --hub address does
not resolve or cannot be used; 8 the nodes' keys cannot be made (the key store
of --data cannot be read or written).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from smartpark.tools import nodeconfig, provision
from smartpark.tools.progress import say

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE_DIR = os.path.join(ROOT, "firmware")
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_MISSING = 5
EXIT_PENDING = 6
EXIT_HUB = 7
EXIT_KEYS = 8
EXIT_DEEPSLEEP = 75

# Sensor sets cycled over the nodes: a weather/air node, an office, a parking row,
# a meter cabinet. Names and drivers are the firmware's (firmware/drivers).
SENSOR_SETS = (
    [{"name": "air", "driver": "bme280", "pins": {"sda": 21, "scl": 22}},
     {"name": "light", "driver": "bh1750", "pins": {"sda": 21, "scl": 22}}],
    [{"name": "climate", "driver": "sht4x", "pins": {"sda": 21, "scl": 22}},
     {"name": "co2", "driver": "scd4x", "pins": {"sda": 21, "scl": 22}},
     {"name": "motion", "driver": "pir", "bus": "pin", "pins": {"in": 27}}],
    [{"name": "bay", "driver": "hcsr04", "bus": "pin", "pins": {"trig": 5, "echo": 18}},
     {"name": "air", "driver": "bme280", "pins": {"sda": 21, "scl": 22}}],
    [{"name": "meter", "driver": "pulse", "bus": "pin", "pins": {"in": 4}},
     {"name": "water", "driver": "ds18b20", "bus": "onewire", "pins": {"data": 15}}],
)

_SUMMARY_CODE = """
import json, sys, outbox
out = []
for d in json.load(open(sys.argv[1])):
    try:
        o = outbox.Outbox(200000, d + '/outbox')
        n, p, dr = o.next, o.depth(), o.dropped
        o.close()
        out.append([n, p, dr])
    except Exception as e:
        out.append(repr(e))
print('SUMMARY ' + json.dumps(out))
"""


def child_setup():
    """In a child process: own session (our Ctrl-C is handled by us, in order),
    and die with us if we are killed outright (Linux PR_SET_PDEATHSIG)."""
    os.setsid()
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)   # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


class SimError(Exception):
    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code


def node_ids(n, prefix="sim"):
    width = max(3, len(str(n)))
    return ["%s-%0*d" % (prefix, width, i + 1) for i in range(n)]


def node_config(node, index, hub, interval, hub_time=False, ledger=False):
    return {
        "node": node,
        "hub": hub,
        "report_interval": interval,
        "ntp": not hub_time,
        "ledger": bool(ledger),
        "watchdog_ms": 0,
        "coap": {"ack_timeout": 1.0, "max_retransmit": 4},
        "sim": {"seed": index + 1, "indoor": index % 2 == 1},
        "sensors": SENSOR_SETS[index % len(SENSOR_SETS)],
    }


class FirmwareImage:
    """Where a node's code comes from: firmware/ (source) or a built bundle."""

    def __init__(self, bundle=None, firmware_dir=FIRMWARE_DIR):
        self.bundle = bundle
        self._tmp = None
        if bundle:
            from smartpark.tools import bundle as bundlemod
            try:
                manifest = bundlemod.load_manifest(bundle)
            except bundlemod.BundleError as e:
                raise SimError(EXIT_MISSING, str(e)) from None
            if manifest.get("board", "unix") != "unix":
                raise SimError(EXIT_MISSING, "bundle %s is for %s and has no simulation (sim/): "
                                             "build it with `smartpark firmware build --board "
                                             "unix`" % (bundle, manifest["board"]))
            self.main = os.path.join(bundle, "main.py")
            self.path = [".frozen", bundle, os.path.join(bundle, "lib")]
        else:
            self.main = os.path.join(firmware_dir, "main.py")
            if not os.path.isfile(self.main):
                raise SimError(EXIT_MISSING, "the firmware is not there yet: %s is missing "
                                             "(simulate runs the real firmware)" % self.main)
            self._tmp = tempfile.mkdtemp(prefix="sp-simproto-")
            os.makedirs(os.path.join(self._tmp, "smartpark"))
            os.symlink(os.path.join(ROOT, "protocol"), os.path.join(self._tmp, "smartpark", "protocol"))
            self.path = [".frozen", firmware_dir, self._tmp]

    def env(self, extra=None):
        e = dict(os.environ)
        e["MICROPYPATH"] = ":".join(self.path)
        e.pop("SMARTPARK_DRAIN", None)
        e.pop("SMARTPARK_CYCLES", None)
        e.update(extra or {})
        return e

    def close(self):
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)


class SimNode:
    """One firmware process and its flash directory."""

    def __init__(self, node_id, flash, config, image, micropython, heap="2M"):
        self.id = node_id
        self.flash = flash
        self.image = image
        self.micropython = micropython
        self.heap = heap
        self.proc = None
        self.restarts = 0
        self.wake_at = None
        self._log = None
        os.makedirs(flash, exist_ok=True)
        with open(os.path.join(flash, "config.json"), "w") as f:
            json.dump(config, f)

    def start(self, **env):
        self._close_log()
        self._log = open(os.path.join(self.flash, "node.out"), "ab")
        self.proc = subprocess.Popen(
            [self.micropython, "-X", "heapsize=" + self.heap, self.image.main],
            cwd=self.flash, env=self.image.env({k: str(v) for k, v in env.items()}),
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=child_setup)  # our Ctrl-C is ours: nodes get theirs when we say so

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def supervise(self, now):
        """Restart a node that exited (deep sleep or crash), as a board reboots."""
        if self.proc is None or self.running():
            return
        if self.wake_at is None:
            delay = 0.5
            if self.proc.returncode == EXIT_DEEPSLEEP:
                try:
                    delay = int(open(os.path.join(self.flash, "deepsleep.flag")).read()) / 1000.0
                except (OSError, ValueError):
                    delay = 1.0
            self.wake_at = now + delay
        if now >= self.wake_at:
            self.wake_at = None
            self.restarts += 1
            self.start()

    def interrupt(self):
        if self.running():
            self.proc.send_signal(signal.SIGINT)

    def kill(self):
        if self.running():
            self.proc.kill()
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._close_log()

    def _close_log(self):
        if self._log is not None:
            self._log.close()
            self._log = None


def read_outboxes(flash_dirs, image, micropython):
    """[(recorded, pending, dropped)] per flash dir, by the firmware's own outbox.py."""
    if not flash_dirs:
        return []
    out = []
    for i in range(0, len(flash_dirs), 200):
        chunk = flash_dirs[i:i + 200]
        # the list goes in a file: this unix-port build dies on long argv strings
        fd, listing = tempfile.mkstemp(prefix="sp-outboxes-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump([os.path.abspath(d) for d in chunk], f)
            proc = subprocess.run(
                [micropython, "-X", "heapsize=8M", "-c", _SUMMARY_CODE, listing],
                cwd=chunk[0], env=image.env(), capture_output=True, text=True, timeout=300)
        finally:
            os.unlink(listing)
        line = [x for x in proc.stdout.splitlines() if x.startswith("SUMMARY ")]
        if not line:
            raise SimError(EXIT_MISSING, "could not read the nodes' outboxes: %s"
                           % (proc.stdout + proc.stderr)[-600:])
        out.extend(json.loads(line[-1][8:]))
    return out


class _Signals:
    """First Ctrl-C/SIGTERM: end the run phase; second: skip the drain."""

    def __init__(self):
        self.count = 0
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        self.count += 1
        if self.count == 1:
            say("\nstopping: the nodes stop sampling and drain (Ctrl-C again to skip the drain)")

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _sleep_until(deadline, signals, stop_count=1, step=0.2, tick=None):
    while time.monotonic() < deadline and signals.count < stop_count:
        if tick:
            tick()
        time.sleep(min(step, max(0.0, deadline - time.monotonic())))


def provision_keys(data_dir, nodes, quiet=False, who="simulate"):
    """Each (node id, flash dir) gets its OSCORE key from the key store of `data_dir`
    (provision.provision_dir); SimError(EXIT_KEYS) when the store cannot be used."""
    actions = {}
    try:
        for p in provision.provision_dirs(data_dir, nodes):
            actions[p.action] = actions.get(p.action, 0) + 1
    except (provision.ProvisionError, ValueError, OSError) as e:
        raise SimError(EXIT_KEYS, "cannot give the nodes their OSCORE keys: %s" % e) from None
    say("%s: OSCORE keys in %s: %s" % (
        who, os.path.join(data_dir, "keys"),
        ", ".join("%d %s" % (actions[a], a) for a in sorted(actions))), quiet)
    return actions


def run_full(n, hub, duration=None, drain=15.0, interval=5.0, workdir=None, keep=False,  # noqa: C901 - the three phases (run, drain, summary) with their signals in one place
             bundle=None, hub_time=False, ledger=False, quiet=False, signals=None,
             on_ready=None, prefix="sim", status_every=10.0, keys_data=None):
    """Run the full simulation; returns the summary list (dicts).

    keys_data: the hub's data directory, whose key store gives every node its OSCORE
    key (oscore.json beside config.json); None runs them without."""
    from smartpark.tools.ptyboard import find_micropython
    micropython = find_micropython()
    image = FirmwareImage(bundle)
    own = workdir is None
    work = workdir or tempfile.mkdtemp(prefix="sp-sim-")
    nodes = []
    own_signals = signals is None
    if own_signals:
        signals = _Signals().__enter__()
    try:
        ids = node_ids(n, prefix)
        for i, nid in enumerate(ids):
            cfg = node_config(nid, i, hub, interval, hub_time=hub_time, ledger=ledger)
            if i < len(SENSOR_SETS):  # each distinct shape once, by the firmware's own check
                try:
                    nodeconfig.check_config(cfg, bundle)
                except nodeconfig.ConfigError as e:
                    raise SimError(EXIT_USAGE, str(e)) from None
            nodes.append(SimNode(nid, os.path.join(work, nid), cfg, image, micropython))
        if keys_data is not None:
            provision_keys(keys_data, [(nd.id, nd.flash) for nd in nodes], quiet)
        say("simulate: starting %d nodes (firmware from %s), flash dirs in %s"
            % (n, bundle or "firmware/", work), quiet)
        for node in nodes:
            node.start()
            time.sleep(min(0.05, interval / max(1, n)))
        if on_ready:
            on_ready(nodes)
        t_end = time.monotonic() + duration if duration else float("inf")

        t_start = time.monotonic()
        last_status = [t_start]

        def tick():
            now = time.monotonic()
            for node in nodes:
                node.supervise(now)
            if status_every and not quiet and now - last_status[0] >= status_every:
                last_status[0] = now
                running = sum(1 for nd in nodes if nd.running())
                left = "" if t_end == float("inf") else ", %.0f s to go" % (t_end - now)
                say("simulate: %.0f s, %d/%d nodes running, %d restarts%s" % (
                    now - t_start, running, n, sum(nd.restarts for nd in nodes), left))

        _sleep_until(t_end, signals, 1, tick=tick)
        # phase 2: stop sampling, then drain
        for node in nodes:
            node.interrupt()
        t_stop = time.monotonic() + 5
        while time.monotonic() < t_stop and any(nd.running() for nd in nodes):
            time.sleep(0.05)
        for node in nodes:
            node.kill()
        if drain and drain > 0 and signals.count < 2:
            say("simulate: draining outboxes (up to %.0f s)" % drain, quiet)
            for node in nodes:
                node.start(SMARTPARK_DRAIN=1)
            t_drain = time.monotonic() + drain
            while (time.monotonic() < t_drain and signals.count < 2
                   and any(nd.running() for nd in nodes)):
                time.sleep(0.1)
            emptied = sum(1 for nd in nodes if nd.proc is not None and nd.proc.poll() == 0)
            say("simulate: %d/%d nodes emptied their outbox" % (emptied, n), quiet)
        for node in nodes:
            node.kill()
        counts = read_outboxes([nd.flash for nd in nodes], image, micropython)
        summary = []
        for node, c in zip(nodes, counts, strict=True):
            if isinstance(c, str):
                summary.append({"node": node.id, "error": c})
                continue
            recorded, pending, dropped = c
            summary.append({"node": node.id, "recorded": recorded,
                            "acknowledged": recorded - pending - dropped,
                            "pending": pending, "dropped": dropped,
                            "restarts": node.restarts})
        return summary
    finally:
        for node in nodes:
            node.kill()
        image.close()
        if own_signals:
            signals.__exit__(None, None, None)
        if own and not keep:
            shutil.rmtree(work, ignore_errors=True)


def print_summary(summary, stream=None, limit=50):
    stream = stream or sys.stdout
    cols = ("recorded", "acknowledged", "pending", "dropped")
    stream.write("%-16s %10s %13s %9s %9s\n" % (("node",) + cols))
    shown = summary if len(summary) <= limit else sorted(
        summary, key=lambda s: -(s.get("pending", 0) + s.get("dropped", 0)))[:limit]
    for s in shown:
        if "error" in s:
            stream.write("%-16s %s\n" % (s["node"], s["error"]))
        else:
            stream.write("%-16s %10d %13d %9d %9d\n" % tuple([s["node"]] + [s[c] for c in cols]))
    if len(summary) > limit:
        stream.write("... %d more nodes (all in --json)\n" % (len(summary) - limit))
    tot = [sum(s.get(c, 0) for s in summary) for c in cols]
    stream.write("%-16s %10d %13d %9d %9d\n" % tuple(["total (%d)" % len(summary)] + tot))
    stream.flush()


def check_writable(path):
    """None when `path` can be written (tried with its .tmp twin, then removed), else why."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w"):
            pass
        os.unlink(tmp)
    except OSError as e:
        return "cannot write --json %s: %s" % (path, e.strerror or e)
    if os.path.isdir(path):
        return "cannot write --json %s: it is a directory" % path
    return None


def check_hub(target):
    """None when the hub's (host, port) resolves to a UDP address, else why not."""
    host, port = target
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError, OSError) as e:
        return "hub address %s does not resolve (%s)" % (host, getattr(e, "strerror", None) or e)
    return None


def write_json(path, summary, extra=None):
    doc = {"nodes": summary}
    doc.update(extra or {})
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


def register(subparsers):
    p = subparsers.add_parser(
        "simulate",
        help="run simulated nodes on the MicroPython unix port",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--nodes", type=int, required=True, metavar="N", help="how many nodes")
    p.add_argument("--hub", required=True, metavar="HOST[:PORT]",
                   help="the hub's CoAP address (port 5683 if not given), or 'auto'")
    p.add_argument("--duration", type=float, metavar="S",
                   help="seconds of sampling before the drain (default: until Ctrl-C)")
    p.add_argument("--drain", type=float, default=15.0, metavar="S",
                   help="grace period for the nodes to empty their outboxes (default 15)")
    p.add_argument("--json", metavar="FILE", help="write the per-node summary as JSON")
    p.add_argument("--interval", type=float, default=None, metavar="S",
                   help="report interval of each node (default 5; 30 with --light)")
    p.add_argument("--light", action="store_true",
                   help="CPython load generator (no firmware), for 10,000+ virtual nodes")
    p.add_argument("--sensors-per-node", type=int, default=2, metavar="K",
                   help="--light: readings per node per interval (default 2)")
    p.add_argument("--sockets", type=int, default=64,
                   help="--light: UDP sockets shared by the virtual nodes (default 64)")
    p.add_argument("--bundle", metavar="DIR",
                   help="run a built bundle (.mpy, from `smartpark firmware build --board "
                        "unix`) instead of firmware/ sources")
    p.add_argument("--workdir", metavar="DIR", help="keep the nodes' flash directories here")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--data", metavar="DIR",
                     help="the hub's data directory on this machine: every node's OSCORE key "
                          "is made in its key store (DIR/keys) and written beside the node's "
                          "config.json")
    key.add_argument("--no-key", action="store_true",
                     help="run the nodes without OSCORE keys (a hub with security.mode = "
                          "\"off\")")
    p.add_argument("--hub-time", action="store_true",
                   help="nodes take the time from the hub instead of the host clock (NTP)")
    p.add_argument("--ledger", action="store_true",
                   help="nodes keep ledger.log of every reading (for exactly-once checks)")
    p.add_argument("--prefix", default=None, help="node id prefix (default sim / vnode)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args):  # noqa: C901 - checks every option of both modes before anything starts, then runs one
    if args.interval is None:
        args.interval = 30.0 if args.light else 5.0
    if args.nodes < 1:
        say("smartpark simulate: error: --nodes must be at least 1")
        return EXIT_USAGE
    if args.interval <= 0 or (args.duration is not None and args.duration < 0) or args.drain < 0:
        say("smartpark simulate: error: --interval must be > 0, --duration and --drain >= 0")
        return EXIT_USAGE
    try:
        target = nodeconfig.parse_hub(args.hub)
    except nodeconfig.ConfigError as e:
        say("smartpark simulate: error: %s" % e)
        return EXIT_USAGE
    if args.json:
        why = check_writable(args.json)
        if why:
            say("smartpark simulate: error: %s" % why)
            return EXIT_USAGE
    if target is not None:
        why = check_hub(target)
        if why:
            say("smartpark simulate: error: %s" % why)
            return EXIT_HUB
    try:
        if args.light:
            if target is None:
                say("smartpark simulate: error: --light needs the hub's address (no discovery)")
                return EXIT_USAGE
            if not (args.data or args.no_key):
                say("smartpark simulate: error: the virtual nodes need OSCORE keys: give --data "
                    "DIR (the hub's data directory on this machine), or --no-key for a hub "
                    "without security")
                return EXIT_USAGE
            from smartpark.tools import loadgen
            try:
                summary, extra = loadgen.run(
                    args.nodes, target, duration=args.duration, drain=args.drain,
                    interval=args.interval, sensors=args.sensors_per_node, sockets=args.sockets,
                    prefix=args.prefix or "vnode", quiet=args.quiet,
                    keys_data=None if args.no_key else args.data)
            except ValueError as e:   # hub/keys.py KeyStoreError: the store cannot be used
                raise SimError(EXIT_KEYS, "the virtual nodes' keys: %s" % e) from None
        else:
            if args.nodes > 500:
                say("smartpark simulate: error: %d firmware processes is too many for one "
                    "machine; use --light for large fleets" % args.nodes)
                return EXIT_USAGE
            if not (args.data or args.no_key):
                say("smartpark simulate: error: the nodes need their OSCORE keys: give --data "
                    "DIR (the hub's data directory on this machine), or --no-key for a hub "
                    "without security")
                return EXIT_USAGE
            hub = "auto" if target is None else args.hub
            summary = run_full(args.nodes, hub, duration=args.duration, drain=args.drain,
                               interval=args.interval, workdir=args.workdir,
                               keep=bool(args.workdir), bundle=args.bundle,
                               hub_time=args.hub_time, ledger=args.ledger, quiet=args.quiet,
                               prefix=args.prefix or "sim", keys_data=args.data)
            extra = {"mode": "firmware"}
    except SimError as e:
        say("smartpark simulate: error: %s" % e)
        return e.code
    except OSError as e:  # e.g. no route to the hub's address family
        say("smartpark simulate: error: cannot use hub %s: %s" % (args.hub, e.strerror or e))
        return EXIT_HUB
    print_summary(summary)
    if args.json:
        write_json(args.json, summary, extra)
    pending = sum(s.get("pending", 0) for s in summary)
    errors = [s for s in summary if "error" in s]
    if errors:
        return EXIT_MISSING
    return EXIT_PENDING if pending else EXIT_OK
