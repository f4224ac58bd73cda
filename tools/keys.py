"""`smartpark keys`: the hub's OSCORE keys, one per node (hub/keys.py is the store).

    smartpark keys add NODE [--rotate]       make the node's key (--rotate: replace it)
    smartpark keys list [--json]             node, key id, created; never a secret
    smartpark keys rotate NODE               new secret, salt and key id for the node
    smartpark keys revoke NODE               remove the node's key: the hub stops accepting it
    smartpark keys export NODE --node-file PATH   the node's half (oscore.json, as flashed)
    smartpark keys export NODE --aiocoap DIR      the node's half as an aiocoap OSCORE context
    smartpark keys export NODE --hub-file PATH    the hub's half, for a hub on another machine
    smartpark keys import PATH [--replace]        store a key exported with --hub-file

Every subcommand works on the key store of a hub data directory: --data DIR,
else the data_dir of the hub's --config FILE, else ./data (the hub's default).
The key id is the node's OSCORE Sender ID in hex (the `kid` its requests carry
in the clear); secrets are written to files with mode 0600 only, never printed.

A key must be used by one node only: the nonces of a context are unique only
as long as one sender counts its sequence numbers. `smartpark flash` writes the
node's half to the board by itself; an exported node half is for a node set up
by other means, and a second copy of it must never send. Rotate when in doubt.

Exit codes:
    0  done
    2  usage (bad node id, bad option, unreadable --config)
    3  the node has no key
    4  the node already has a key (add without --rotate, import of another key
       without --replace), or another node's key has that key id
    5  a key file is damaged or cannot be read (the store's, or the one to import)
    6  a file cannot be written (permissions, disk full, not an empty directory)
"""

import argparse
import datetime
import json
import sys

from smartpark.hub import keys as keystore
from smartpark.tools.progress import say

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNKNOWN = 3
EXIT_EXISTS = 4
EXIT_DAMAGED = 5
EXIT_WRITE = 6

_CODES = ((keystore.BadNodeId, EXIT_USAGE), (keystore.UnknownNode, EXIT_UNKNOWN),
          (keystore.KeyExists, EXIT_EXISTS), (keystore.KeyIdTaken, EXIT_EXISTS),
          (keystore.DamagedKeyFile, EXIT_DAMAGED), (keystore.KeyStoreError, EXIT_WRITE))

_ONE_SENDER = ("note: this key must send from one place only (a second copy that sends "
               "repeats nonces); rotate it if it may have been used elsewhere")


class UsageError(Exception):
    pass


def data_dir(args):
    """--data, else the data_dir of the hub's --config file, else ./data."""
    if args.data:
        return args.data
    if not args.config:
        return "./data"
    # only data_dir is read: the rest of the hub's file is the hub's to check
    import tomllib
    try:
        with open(args.config, "rb") as f:
            value = tomllib.load(f).get("data_dir", "./data")
    except OSError as e:
        raise UsageError("--config %s: %s" % (args.config, e.strerror or e)) from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError("--config %s: not valid TOML (%s)" % (args.config, e)) from None
    if not isinstance(value, str) or not value:
        raise UsageError("--config %s: data_dir must be a non-empty string" % args.config)
    return value


def created_text(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def _line(rec):
    return "%-32s %-14s %s" % (rec["node"], rec.kid_hex, created_text(rec["created"]))


def cmd_add(args, data):
    had = args.rotate and keystore.find(data, args.node) is not None
    rec = keystore.add(data, args.node, rotate=args.rotate)
    print("%s key id %s (%s)" % (rec["node"], rec.kid_hex, "rotated" if had else "new"))


def cmd_rotate(args, data):
    old = keystore.get(data, args.node)
    rec = keystore.rotate(data, args.node)
    print("%s key id %s (was %s)" % (rec["node"], rec.kid_hex, old.kid_hex))
    say("the node needs its new half: `smartpark flash` writes it, or `smartpark keys export "
        "%s --node-file ...`; the hub takes the new key when it reloads its keys" % args.node)


def cmd_revoke(args, data):
    rec = keystore.revoke(data, args.node)
    print("%s key id %s revoked" % (rec["node"], rec.kid_hex))


def cmd_list(args, data):
    damaged = []
    recs = keystore.load_all(data, on_error=damaged.append)
    try:
        _print_list(args, data, recs)
    finally:
        if damaged:   # listed after the good ones, and the exit code says so
            for e in damaged[:-1]:
                say("smartpark keys: error: %s" % e)
            raise damaged[-1]


def _print_list(args, data, recs):
    if args.json:
        json.dump([{"node": r["node"], "key_id": r.kid_hex, "created": r["created"]}
                   for r in recs], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    if not recs:
        say("no keys in %s" % keystore.keys_dir(data))
        return
    print("%-32s %-14s %s" % ("node", "key id", "created (UTC)"))
    for rec in recs:
        print(_line(rec))


def cmd_export(args, data):
    rec = keystore.get(data, args.node)
    if args.aiocoap:
        state = keystore.write_aiocoap(args.aiocoap, rec)
        print("%s key id %s: aiocoap OSCORE context in %s (%s)"
              % (rec["node"], rec.kid_hex, args.aiocoap, state))
        say(_ONE_SENDER)
    elif args.node_file:
        _write(args.node_file, keystore.node_half_bytes(rec))
        print("%s key id %s: the node's half in %s" % (rec["node"], rec.kid_hex, args.node_file))
        say(_ONE_SENDER)
    else:
        _write(args.hub_file, rec.to_json())
        print("%s key id %s: the hub's half in %s (import it there with `smartpark keys "
              "import %s`, then delete it)" % (rec["node"], rec.kid_hex, args.hub_file,
                                               args.hub_file))


def cmd_import(args, data):
    rec = keystore.import_record(data, args.path, replace=args.replace)
    print("%s key id %s imported into %s" % (rec["node"], rec.kid_hex, keystore.keys_dir(data)))


def _write(path, data):
    try:
        keystore.write_private(path, data)
    except OSError as e:
        raise keystore.KeyStoreError("cannot write %s: %s" % (path, e.strerror or e)) from None


def register(subparsers):
    p = subparsers.add_parser(
        "keys", help="the hub's OSCORE keys: add, list, rotate, revoke, export, import",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_mutually_exclusive_group()
    where.add_argument("--data", metavar="DIR",
                       help="the hub's data directory (keys in DIR/keys; default ./data)")
    where.add_argument("--config", metavar="FILE", help="the hub's TOML config: its data_dir")
    sub = p.add_subparsers(dest="keys_command", metavar="SUBCOMMAND")
    s = sub.add_parser("add", parents=[common], help="make a key for a node")
    s.add_argument("node")
    s.add_argument("--rotate", action="store_true", help="replace the node's key if it has one")
    s.set_defaults(keys_func=cmd_add)
    s = sub.add_parser("list", parents=[common], help="node, key id and creation time")
    s.add_argument("--json", action="store_true", help="as JSON (still no secrets)")
    s.set_defaults(keys_func=cmd_list)
    s = sub.add_parser("rotate", parents=[common], help="a new key for a node that has one")
    s.add_argument("node")
    s.set_defaults(keys_func=cmd_rotate)
    s = sub.add_parser("revoke", parents=[common], help="remove a node's key")
    s.add_argument("node")
    s.set_defaults(keys_func=cmd_revoke)
    s = sub.add_parser("export", parents=[common], help="write a half of a node's key to a file")
    s.add_argument("node")
    what = s.add_mutually_exclusive_group(required=True)
    what.add_argument("--node-file", metavar="PATH",
                      help="the node's half as oscore.json (what flash puts on the board)")
    what.add_argument("--aiocoap", metavar="DIR",
                      help="the node's half as an aiocoap OSCORE context directory "
                           "(settings.json, secret.json)")
    what.add_argument("--hub-file", metavar="PATH",
                      help="the hub's half, for `smartpark keys import` on another machine")
    s.set_defaults(keys_func=cmd_export)
    s = sub.add_parser("import", parents=[common],
                       help="store a key exported with `keys export --hub-file`")
    s.add_argument("path", metavar="FILE")
    s.add_argument("--replace", action="store_true",
                   help="replace the node's key when it has another one")
    s.set_defaults(keys_func=cmd_import)
    p.set_defaults(func=run, keys_parser=p)


def run(args):
    if getattr(args, "keys_func", None) is None:
        args.keys_parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        data = data_dir(args)
        args.keys_func(args, data)
    except UsageError as e:
        say("smartpark keys: error: %s" % e)
        return EXIT_USAGE
    except keystore.KeyStoreError as e:
        say("smartpark keys: error: %s" % e)
        for kind, code in _CODES:
            if isinstance(e, kind):
                return code
    return EXIT_OK
