"""The `smartpark` command: one entry point, a subcommand per job.

Each subcommand lives in its own module, which provides
`register(subparsers)`: it adds its parser and sets `func` to the function
that runs it (returning the exit code). A subcommand whose module is not
built yet still appears in --help and fails with a clear message, so nothing
pretends to work.
"""

import argparse
import importlib
import sys

from smartpark.protocol.version import VERSION

# name -> (module, one-line help, issue that builds it)
COMMANDS = (
    ("hub", "smartpark.hub.cli", "run the hub service (CoAP ingest, storage, HTTP API)", 4),
    ("firmware", "smartpark.tools.bundle", "build the node firmware bundle, publish it to the hub", 6),
    ("rollout", "smartpark.tools.rollout", "staged firmware rollouts on a running hub: start, status, list, halt", 6),
    ("node", "smartpark.tools.node", "a node's metadata on a running hub: name, zone, location, tags", 17),
    ("flash", "smartpark.tools.flash", "flash a board with the firmware and its config (mpremote)", 6),
    ("keys", "smartpark.tools.keys", "the hub's OSCORE keys: add, list, rotate, revoke, export, import", 6),
    ("simulate", "smartpark.tools.simulate", "run simulated nodes on the MicroPython unix port", 6),
    ("bench", "smartpark.tools.bench", "run the ingest and decode benchmarks", 6),
    ("demo", "smartpark.tools.demo", "hub on SQLite plus 20 simulated nodes (make demo)", 6),
)


def _missing(name, issue):
    def run(args):
        sys.stderr.write(
            "smartpark %s: not available in this build yet (tracked as issue %d)\n" % (name, issue)
        )
        return 3

    return run


def build_parser():
    parser = argparse.ArgumentParser(
        prog="smartpark",
        description="smartpark: sensing backbone of a smart park (hub, nodes, tools).",
    )
    parser.add_argument("--version", action="version", version="smartpark " + VERSION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname, help_text, issue in COMMANDS:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name != modname:
                raise
            p = sub.add_parser(name, help=help_text + " [not built yet]")
            p.set_defaults(func=_missing(name, issue))
            continue
        mod.register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
