"""`smartpark firmware publish|list`: the hub's firmware store (hub/firmware.py) from the shell.

    smartpark firmware publish BUNDLE_DIR (--data DIR | --config FILE)
    smartpark firmware list (--data DIR | --config FILE) [--json]

publish checks the bundle (manifest, every file's size and SHA-256) and
copies it into DIR/firmware/<version>/, crash-safe; publishing the same
bundle again is a no-op, another bundle under a version the store holds is
refused. The data directory is --data, else the data_dir of the hub's
--config file, else ./data (as `smartpark keys`). The hub serves what is in
the store at once (CoAP /fw/<version>); nothing needs a restart.

Exit codes:
    0  published (or already there, the same bundle) / listed
    2  usage (bad option, unreadable --config)
    5  the bundle is malformed, incomplete or damaged (the message names the file)
    6  the version is already in the store with other content
    7  the store cannot be written
"""

import argparse
import datetime
import json

from smartpark.hub import firmware as store
from smartpark.tools.keys import UsageError, data_dir
from smartpark.tools.progress import say

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_BUNDLE = 5
EXIT_CONFLICT = 6
EXIT_WRITE = 7


def _where(p):
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data", metavar="DIR",
                       help="the hub's data directory (store in DIR/firmware; default ./data)")
    where.add_argument("--config", metavar="FILE", help="the hub's TOML config: its data_dir")


def add_parsers(sub):
    """`publish` and `list` under `smartpark firmware` (tools/bundle.py's parser)."""
    doc = __doc__.split("\n\n", 1)[1]
    p = sub.add_parser("publish", help="put a built bundle into the hub's firmware store",
                       description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", metavar="BUNDLE_DIR", help="a bundle directory (firmware build)")
    _where(p)
    p.set_defaults(func=run_publish)
    p = sub.add_parser("list", help="the firmware versions in the hub's store",
                       description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    _where(p)
    p.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    p.set_defaults(func=run_list)


def run_publish(args):
    try:
        data = data_dir(args)
        version, created = store.publish(data, args.bundle)
    except UsageError as e:
        say("smartpark firmware publish: error: %s" % e)
        return EXIT_USAGE
    except store.FirmwareError as e:
        say("smartpark firmware publish: error: %s" % e)
        return EXIT_CONFLICT if e.status == 409 else EXIT_BUNDLE
    except OSError as e:
        say("smartpark firmware publish: error: cannot write the store: %s (%s)"
            % (e.strerror or e, e.filename or ""))
        return EXIT_WRITE
    print("firmware %s %s %s" % (version, "published in" if created else "already in",
                                 store.store_dir(data)))
    return EXIT_OK


def _when(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def run_list(args):
    try:
        rows = store.versions(data_dir(args))
    except UsageError as e:
        say("smartpark firmware list: error: %s" % e)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(rows, indent=1))
        return EXIT_OK
    for r in rows:
        print("%-20s %-6s %-6s %4d files %8d bytes  %s" % (
            r["version"], r["board"], r["kind"], r["files"], r["total_size"],
            _when(r["published"])))
    return EXIT_OK
