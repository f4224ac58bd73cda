"""`smartpark rollout`: staged firmware rollouts on a running hub, over its HTTP API.

    smartpark rollout start VERSION [--nodes SELECTOR] [--canary PERCENT] [--soak SECONDS]
                                    [--max-failures PERCENT] [--timeout SECONDS]
    smartpark rollout status [ID]      (no ID: the newest rollout)
    smartpark rollout list
    smartpark rollout halt ID
    smartpark rollout cancel ID

Every subcommand takes --hub URL (default http://127.0.0.1:8080, the hub's default
HTTP address), --json (the hub's JSON instead of a table) and the admin token: from
--token-file FILE (its first line), else the environment's SMARTPARK_ADMIN_TOKEN, the
variable the hub itself reads. start, halt and cancel need it; status and list send it
when there is one (reads need a token when the hub's API is not on loopback).

VERSION must be in the hub's firmware store (`smartpark firmware publish`). SELECTOR:
node ids and shell-style globs, comma-separated (`bay-*,gate-01`); default: every node
the hub knows. Defaults: --canary 10 (percent of the nodes first), --soak 600 (seconds
the canaries run it before the rest get it), --max-failures 10 (percent of the assigned
nodes that may fail before the rollout halts by itself), --timeout 604800 (seconds after
its assignment a node that has not updated is set aside as timed_out; 0: never).
docs/ota.md is the guide.

Exit codes:
    0  done (the rollout started, was shown, halted or cancelled)
    2  usage (bad option, unreadable --token-file)
    3  the hub cannot be reached, or what answered is not a smartpark hub
    4  the hub refused the token (401: missing or wrong; 403: writes disabled, or the
       read token for a write)
    5  the hub refused the request (400 a bad parameter, named; 404 an unknown version or
       rollout; 409 an active rollout has the nodes, or its state does not allow it)
"""

import argparse
import datetime
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from smartpark.hub.config import _SPEC
from smartpark.tools.progress import say

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_REFUSED = 5

DEFAULT_HUB = "http://127.0.0.1:%d" % _SPEC["http.port"][0]
TOKEN_ENV = "SMARTPARK_ADMIN_TOKEN"
TIMEOUT = 15.0


class Failed(Exception):
    def __init__(self, code, text):
        Exception.__init__(self, text)
        self.code = code
        self.text = text


def _token(args):
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.readline().strip()
        except OSError as e:
            raise Failed(EXIT_USAGE, "--token-file %s: %s" % (args.token_file,
                                                              e.strerror or e)) from None
        if not token:
            raise Failed(EXIT_USAGE, "--token-file %s is empty" % args.token_file)
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None


def call(args, method, path, body=None):
    """The hub's JSON answer to one request; raises Failed with the exit code."""
    base = args.hub.rstrip("/")
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        raise Failed(EXIT_USAGE, "--hub must be an http:// or https:// URL, got %r" % args.hub)
    headers = {"Accept": "application/json"}
    token = _token(args)
    if token:
        headers["Authorization"] = "Bearer " + token
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        why = getattr(e, "reason", None) or e
        raise Failed(EXIT_UNREACHABLE, "cannot reach the hub at %s (%s); is `smartpark hub` "
                     "running there? (--hub URL)" % (base, why)) from None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise Failed(EXIT_UNREACHABLE, "%s answered %s %d with no JSON: not a smartpark hub "
                     "(--hub URL)" % (base, method, status)) from None
    if status < 400:
        return doc
    text = doc.get("error", "") if isinstance(doc, dict) else ""
    if status == 401:
        raise Failed(EXIT_AUTH, "the hub refused the token (401: %s); give the admin token "
                     "with --token-file FILE or %s" % (text, TOKEN_ENV))
    if status == 403:
        raise Failed(EXIT_AUTH, "the hub refused the request (403: %s)" % text)
    raise Failed(EXIT_REFUSED, "the hub refused the request (%d): %s" % (status, text))


# ---- output ------------------------------------------------------------------------------------


def _when(t):
    if t is None:
        return "-"
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def _counts(r):
    return ", ".join("%d %s" % (n, k) for k, n in r["counts"].items() if n)


def show(r, out):
    """A rollout as text: its header, then a table of its nodes."""
    w = out.write
    w("rollout %d: firmware %s, %s (since %s)\n" % (r["id"], r["version"], r["state"],
                                                    _when(r["changed"])))
    w("  nodes %s, canary %g %%, soak %g s, max failures %g %%, timeout %s; created %s\n" % (
        r["selector"], r["canary"], r["soak"], r["max_failures"],
        "%g s" % r["timeout"] if r.get("timeout") else "none", _when(r["created"])))
    w("  %s\n" % _counts(r))
    if r.get("promote_at"):
        w("  the rest are assigned at %s\n" % _when(r["promote_at"]))
    if r.get("reason") and r["state"] in ("halted", "cancelled"):
        w("  reason: %s\n" % r["reason"])
    rows = r.get("nodes") or []
    if not rows:
        return
    width = max(4, max(len(x["node"]) for x in rows))
    w("\n%-*s  %-6s  %-9s  %-20s  %s\n" % (width, "NODE", "PHASE", "STATUS", "RESULT",
                                           "REASON"))
    for x in rows:
        w("%-*s  %-6s  %-9s  %-20s  %s\n" % (width, x["node"], x["phase"] or "-", x["status"],
                                             x["result"] or "-", x["reason"] or ""))


def show_list(rows, out):
    if not rows:
        out.write("no rollouts on this hub\n")
        return
    out.write("%4s  %-16s  %-9s  %-20s  %s\n" % ("ID", "VERSION", "STATE", "CREATED", "NODES"))
    for r in rows:
        out.write("%4d  %-16s  %-9s  %-20s  %s\n" % (r["id"], r["version"], r["state"],
                                                    _when(r["created"]), _counts(r)))


# ---- subcommands --------------------------------------------------------------------------------


def cmd_start(args):
    body = {"version": args.version}
    for key in ("nodes", "canary", "soak", "max_failures", "timeout"):
        v = getattr(args, key)
        if v is not None:
            body[key] = v
    return call(args, "POST", "/api/rollouts", body)


def cmd_status(args):
    if args.id is None:
        rows = call(args, "GET", "/api/rollouts")
        if not rows:
            return []
        args.id = rows[-1]["id"]
    return call(args, "GET", "/api/rollouts/%d" % args.id)


def cmd_list(args):
    return call(args, "GET", "/api/rollouts")


def cmd_halt(args):
    return call(args, "POST", "/api/rollouts/%d/halt" % args.id)


def cmd_cancel(args):
    return call(args, "POST", "/api/rollouts/%d/cancel" % args.id)


def _positive_id(text):
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError("a rollout id is a number 1, 2, ...; got %r" % text)
    return v


def client_options():
    """The options of every subcommand that talks to a running hub (--hub, --token-file,
    --json), as a parent parser; shared by tools/node.py."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--hub", metavar="URL", default=DEFAULT_HUB,
                        help="the hub's HTTP API (default %s)" % DEFAULT_HUB)
    common.add_argument("--token-file", metavar="FILE",
                        help="a file holding the hub's admin token (default: $%s)" % TOKEN_ENV)
    common.add_argument("--json", action="store_true", help="the hub's JSON answer")
    return common


def register(subparsers):
    p = subparsers.add_parser(
        "rollout", help="staged firmware rollouts on a running hub: start, status, list, halt",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = client_options()
    sub = p.add_subparsers(dest="rollout_command", metavar="SUBCOMMAND")
    s = sub.add_parser("start", parents=[common], help="start a rollout of a published version")
    s.add_argument("version", metavar="VERSION")
    s.add_argument("--nodes", metavar="SELECTOR",
                   help="node ids and globs, comma-separated (default: every known node)")
    s.add_argument("--canary", metavar="PERCENT", type=float,
                   help="percent of the nodes that get it first (default 10)")
    s.add_argument("--soak", metavar="SECONDS", type=float,
                   help="how long the canaries run it before the rest get it (default 600)")
    s.add_argument("--max-failures", dest="max_failures", metavar="PERCENT", type=float,
                   help="percent of failed nodes that halts the rollout (default 10)")
    s.add_argument("--timeout", metavar="SECONDS", type=float,
                   help="a node not updated this long after its assignment is set aside as "
                        "timed_out (default 604800, 7 days; 0: never)")
    s.set_defaults(rollout_func=cmd_start)
    s = sub.add_parser("status", parents=[common], help="one rollout, node by node")
    s.add_argument("id", metavar="ID", nargs="?", type=_positive_id,
                   help="the rollout (default: the newest)")
    s.set_defaults(rollout_func=cmd_status)
    s = sub.add_parser("list", parents=[common], help="every rollout, one line each")
    s.set_defaults(rollout_func=cmd_list)
    for name, fn, text in (("halt", cmd_halt, "halt an active rollout: nothing more is "
                            "assigned, nodes not running it yet stop being offered it"),
                           ("cancel", cmd_cancel, "as halt, and the nodes that run it are "
                            "no longer offered it either")):
        s = sub.add_parser(name, parents=[common], help=text)
        s.add_argument("id", metavar="ID", type=_positive_id)
        s.set_defaults(rollout_func=fn)
    p.set_defaults(func=run, rollout_parser=p)


def dispatch(args, name, fn, parser, command, show_doc):
    """Run subcommand `fn(args)` of `smartpark <name>` against the hub: its JSON with --json,
    else show_doc(doc); a Failed is one line and its exit code. Shared by tools/node.py."""
    if fn is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        doc = fn(args)
    except Failed as e:
        say("smartpark %s %s: error: %s" % (name, command, e.text))
        return e.code
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        show_doc(doc)
    return EXIT_OK


def run(args):
    fn = getattr(args, "rollout_func", None)

    def show_doc(doc):
        if fn is cmd_list:
            show_list(doc, sys.stdout)
        elif not doc:
            print("no rollouts on this hub")
        else:
            show(doc, sys.stdout)
    return dispatch(args, "rollout", fn, args.rollout_parser, getattr(args, "rollout_command", None),
                    show_doc)
