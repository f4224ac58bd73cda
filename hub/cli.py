"""`smartpark hub`: run the hub service (CoAP ingest, storage, HTTP API).

Works with no configuration (./data, CoAP 5683 on IPv4+IPv6, HTTP 8080 on loopback).
`--config hub.toml` and the flags override the defaults (see hub/config.py).
A wrong value stops start-up with a message naming the key; exit code 2.
SIGINT/SIGTERM stop the hub cleanly (exit code 0). A failed start prints one
line naming the path or port and exits with a code of hub/faults.py.
`smartpark hub doctor --data DIR` reports the data directory's state (hub/doctor.py).
"""

import asyncio
import logging
import signal
import sys

from . import config as hubconfig
from .faults import EXIT_CONFIG, EXIT_OTHER, StartError


def register(subparsers):
    p = subparsers.add_parser(
        "hub", help="run the hub service (CoAP ingest, storage, HTTP API)",
        description="Run the smartpark hub: CoAP ingest on UDP, SQLite storage, HTTP API.")
    p.add_argument("action", nargs="?", choices=("doctor",),
                   help="doctor: report the state of the data directory (damaged files set"
                        " aside, what was saved, the journal, free space) and exit")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--data", metavar="DIR", help="data directory (default ./data)")
    p.add_argument("--coap-bind", metavar="ADDR", help='CoAP bind address (default "::" = v4+v6)')
    p.add_argument("--coap-port", metavar="PORT", help="CoAP UDP port (default 5683; 0 = any)")
    p.add_argument("--http-bind", metavar="ADDR",
                   help="HTTP bind address (default 127.0.0.1; any other address makes "
                        "reads need a token unless http.open_reads)")
    p.add_argument("--http-port", metavar="PORT", help="HTTP port (default 8080; 0 = any)")
    p.add_argument("--read-token", metavar="TOKEN",
                   help="bearer token for HTTP reads (or env SMARTPARK_READ_TOKEN, which "
                        "keeps it out of the process list)")
    p.add_argument("--admin-token", metavar="TOKEN",
                   help="bearer token for HTTP writes and reads (or env SMARTPARK_ADMIN_TOKEN)")
    p.add_argument("--http-token", metavar="TOKEN", help="old name of --admin-token")
    p.add_argument("--retention-days", metavar="DAYS", help="keep raw readings this long")
    p.add_argument("--offline-factor", metavar="F",
                   help="offline after F x the expected report interval")
    p.add_argument("--no-zeroconf", action="store_true", default=None,
                   help="do not advertise with mDNS")
    p.add_argument("--no-multicast", action="store_true", default=None,
                   help="do not join the CoAP multicast groups")
    p.add_argument("--no-fast-path", action="store_true", default=None,
                   help="serve POST /r through aiocoap only (no recvmmsg fast path)")
    p.add_argument("--no-column-lane", action="store_true", default=None,
                   help="store every report through the row path (no column lane)")
    p.add_argument("--security", choices=("oscore", "off"),
                   help='"off": accept nodes without OSCORE (development only; default oscore)')
    p.add_argument("--profile", metavar="FILE",
                   help="profile the event loop thread with cProfile; pstats written to FILE")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=run)
    return p


def run(args):
    try:
        cfg = hubconfig.load(args.config, hubconfig.overrides_from_args(args))
    except hubconfig.ConfigError as e:
        sys.stderr.write("smartpark hub: %s\n" % e)
        return EXIT_CONFIG
    if args.action == "doctor":
        from .doctor import report

        return report(cfg.data_dir, seconds=cfg.store_check_seconds)
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else
                        logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        try:
            return prof.runcall(asyncio.run, _main(cfg))
        finally:
            prof.dump_stats(args.profile)
    return asyncio.run(_main(cfg))


async def _main(cfg):
    from .app import Hub

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    hub = Hub(cfg)
    try:
        await hub.start()
    except (Exception, asyncio.CancelledError) as e:  # noqa: BLE001 - one line, never a traceback
        code = e.code if isinstance(e, StartError) else EXIT_OTHER
        text = str(e) if isinstance(e, StartError) else "%s: %s" % (type(e).__name__, e)
        if not isinstance(e, StartError):
            logging.getLogger("smartpark.hub").debug("start failed", exc_info=True)
        sys.stderr.write("smartpark hub: cannot start: %s\n" % text)
        sys.stderr.flush()
        try:
            await hub.stop()
        except Exception:  # noqa: BLE001 - half started: the exit code says it all
            pass
        return code
    try:
        await stop.wait()
    finally:
        await hub.stop()
        sys.stdout.write("smartpark hub stopped\n")
        sys.stdout.flush()
    return 0
