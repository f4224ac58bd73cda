"""The `smartpark` command: one entry point, a subcommand per job."""

import argparse
import sys

from smartpark.protocol.version import VERSION


def build_parser():
    parser = argparse.ArgumentParser(
        prog="smartpark",
        description="smartpark: sensing backbone of a smart park (hub, nodes, tools).",
    )
    parser.add_argument("--version", action="version", version="smartpark " + VERSION)
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
