"""`smartpark demo` (what `make demo` runs): a hub on SQLite and 20 simulated nodes.

Starts `smartpark hub` with its data in ./data (SQLite, hub.sqlite3), then
20 nodes running the real firmware from the firmware/ sources (simulated
board and parts: firmware/sim/) on the MicroPython unix port (the same
as `smartpark simulate`, flash directories in ./data/demo-nodes, so a second
run continues where the first stopped). Prints the dashboard's URL first,
then the HTTP API URLs and a ready curl line, then tells you when the first
readings are served.

Every node has its OSCORE key before the hub starts: made in the hub's key
store (./data/keys) when the node has none, its half written as oscore.json
beside the node's config.json (tools/provision.py); a second run keeps them.

Ctrl-C (SIGINT) or SIGTERM stops everything in order: the nodes stop
sampling and get a few seconds to send what they hold, then the hub
flushes and stops. A second Ctrl-C skips the nodes' drain.

Ports: HTTP 8080 and CoAP 5683 unless taken, then any free port (the URLs
printed are the real ones); --http-port/--coap-port choose (0 = any).
Exit codes: 0 clean stop; 1 the hub did not start; 5 firmware missing; 8 the
nodes' keys cannot be made (./data/keys cannot be read or written).
"""

import argparse
import json
import os
import signal
import socket
import sys
import threading
import urllib.request

from smartpark.hub import process
from smartpark.tools import simulate
from smartpark.tools.progress import say

EXIT_OK = 0
EXIT_HUB = 1


def _free(port, kind):
    if port == 0:
        return True
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def start_hub(data, http_port, coap_port, timeout=60, bind="127.0.0.1"):
    """Start `smartpark hub` (smartpark.hub.process: output to <data>/hub.log);
    returns (handle, coap port, http port), (None,)*3 on failure. `bind` is CoAP's
    (boards on the network need it); HTTP stays on loopback, where reads need no token."""
    os.makedirs(data, exist_ok=True)
    args = ["--data", data, "--coap-bind", bind, "--coap-port", str(coap_port),
            "--http-bind", "127.0.0.1", "--http-port", str(http_port),
            "--no-zeroconf", "--no-multicast"]
    try:
        h = process.start_hub(args, timeout=timeout, log_path=os.path.join(data, "hub.log"),
                              preexec_fn=simulate.child_setup)
    except process.HubStartError:
        return None, None, None
    return h, h.coap_port, h.http_port


def stop_hub(hub, timeout=20):
    return hub.stop(signal.SIGINT, timeout)


def _get_json(url, timeout=3):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def _watch_first_data(base, stop, quiet):
    while not stop.is_set():
        try:
            latest = _get_json(base + "/api/latest")
        except (OSError, ValueError):
            latest = []
        if latest:
            nodes = len({x["node"] for x in latest})
            say("data is flowing: %d series from %d nodes; e.g. curl -s %s/api/series/%s/%s"
                % (len(latest), nodes, base, latest[0]["node"], latest[0]["sensor"]), quiet)
            return
        stop.wait(0.5)


def register(subparsers):
    p = subparsers.add_parser(
        "demo",
        help="hub on SQLite plus 20 simulated nodes (make demo)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--nodes", type=int, default=20, help="simulated nodes (default 20)")
    p.add_argument("--data", default="data", help="hub data directory (default ./data)")
    p.add_argument("--http-port", type=int, default=8080, help="HTTP API port (default 8080)")
    p.add_argument("--coap-port", type=int, default=5683, help="CoAP UDP port (default 5683)")
    p.add_argument("--interval", type=float, default=5.0, help="node report interval, s (default 5)")
    p.add_argument("--duration", type=float, default=None,
                   help="stop by itself after S seconds (default: run until Ctrl-C)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args):
    data = os.path.abspath(args.data)
    http_port, coap_port = args.http_port, args.coap_port
    if not _free(http_port, socket.SOCK_STREAM):
        say("demo: HTTP port %d is taken, using a free one" % http_port, args.quiet)
        http_port = 0
    if not _free(coap_port, socket.SOCK_DGRAM):
        say("demo: CoAP port %d is taken, using a free one" % coap_port, args.quiet)
        coap_port = 0
    nodes_dir = os.path.join(data, "demo-nodes")
    try:
        # before the hub starts, so that it loads them all
        simulate.provision_keys(data, [(nid, os.path.join(nodes_dir, nid))
                                       for nid in simulate.node_ids(args.nodes, "demo")],
                                args.quiet, who="demo")
    except simulate.SimError as e:
        say("smartpark demo: %s" % e)
        return e.code
    with simulate._Signals() as signals:
        hub, got_coap, got_http = start_hub(data, http_port, coap_port)
        if hub is None and (http_port or coap_port):
            # a port taken between our check and the hub's bind: any free port will do
            say("demo: the hub could not bind its ports, trying free ones", args.quiet)
            hub, got_coap, got_http = start_hub(data, 0, 0)
        coap_port, http_port = got_coap, got_http
        if hub is None:
            say("smartpark demo: the hub did not start; see %s" % os.path.join(data, "hub.log"))
            return EXIT_HUB
        base = "http://127.0.0.1:%d" % http_port
        watch_stop = threading.Event()

        def ready(nodes):
            sys.stdout.write(
                "\nsmartpark demo: hub + %d nodes running (data in %s)\n"
                "  dashboard:  %s/\n"
                "  nodes:      %s/api/nodes\n"
                "  latest:     %s/api/latest\n"
                "  a series:   %s/api/series/<node>/<sensor>?window=1m\n"
                "  live (SSE): %s/api/events\n"
                "  metrics:    %s/metrics\n"
                "  API docs:   %s/api/openapi.json\n"
                "  CoAP:       coap://127.0.0.1:%d/r\n"
                "try:  curl -s %s/api/latest | python3 -m json.tool\n"
                "Ctrl-C stops everything.\n\n"
                % (len(nodes), data, base, base, base, base, base, base, base,
                   coap_port, base))
            sys.stdout.flush()
            threading.Thread(target=_watch_first_data, args=(base, watch_stop, args.quiet),
                             daemon=True).start()

        try:
            summary = simulate.run_full(
                args.nodes, "127.0.0.1:%d" % coap_port, duration=args.duration, drain=5.0,
                interval=args.interval, workdir=nodes_dir, keep=True,
                quiet=args.quiet, signals=signals, on_ready=ready, prefix="demo",
                status_every=None, keys_data=data)
        except simulate.SimError as e:
            say("smartpark demo: %s" % e)
            stop_hub(hub)
            return e.code
        finally:
            watch_stop.set()
        code = stop_hub(hub)
    acked = sum(s.get("acknowledged", 0) for s in summary)
    pending = sum(s.get("pending", 0) for s in summary)
    say("smartpark demo stopped: %d nodes, %d readings stored over their lifetime, %d still in "
        "outboxes; hub exit %s; data kept in %s" % (len(summary), acked, pending, code, data),
        args.quiet)
    return EXIT_OK if code == 0 else EXIT_HUB
