"""`smartpark node`: a node's metadata on a running hub (name, zone, location, tags).

    smartpark node set NODE key=value...
    smartpark node show NODE

Keys of `set`:
    name=TEXT           display name ("name=" clears it)
    zone=A/B/C          zone path, site/building/floor/room or any hierarchy ("zone=" clears)
    tags=T1,T2          the node's tags, replacing the old ones ("tags=" clears them)
    lat=DEG lon=DEG     location in degrees
    x=FRACTION y=FRACTION   location on the site plan (0..1 of its width and height)
    location=           clears the location

Talks to the hub's HTTP API like `smartpark rollout`: --hub URL (default
http://127.0.0.1:8080), the admin token from --token-file FILE or SMARTPARK_ADMIN_TOKEN,
--json for the hub's JSON. Exit codes as `smartpark rollout`'s: 0 done, 2 usage, 3 hub
unreachable, 4 token refused, 5 request refused (400 names the field).
"""

import argparse
import sys
import urllib.parse

from smartpark.tools.rollout import EXIT_USAGE, Failed, call, client_options, dispatch

KEYS = ("name", "zone", "tags", "lat", "lon", "x", "y", "location")


def parse_pairs(pairs):
    """The PUT /api/nodes/{node}/meta body for `key=value` arguments; raises Failed."""
    body, loc = {}, {}
    for p in pairs:
        key, eq, value = p.partition("=")
        if not eq or key not in KEYS:
            raise Failed(EXIT_USAGE, "expected key=value with key one of %s, got %r"
                         % (", ".join(KEYS), p))
        if key in ("name", "zone"):
            body[key] = value or None
        elif key == "tags":
            body["tags"] = [t.strip() for t in value.split(",") if t.strip()]
        elif key == "location":
            if value:
                raise Failed(EXIT_USAGE, "location= (empty) clears the location; set it with "
                             "lat= lon= or x= y=")
            body["location"] = None
        else:
            try:
                loc[key] = float(value)
            except ValueError:
                raise Failed(EXIT_USAGE, "%s must be a number, got %r" % (key, value)) from None
    if loc:
        if set(loc) not in ({"lat", "lon"}, {"x", "y"}):
            raise Failed(EXIT_USAGE, "a location is lat= and lon=, or x= and y=")
        body["location"] = loc
    if not body:
        raise Failed(EXIT_USAGE, "nothing to set: give key=value pairs (%s)" % ", ".join(KEYS))
    return body


def show(node, meta, out):
    loc = meta.get("location")
    where = "-" if not loc else ", ".join("%s %g" % kv for kv in sorted(loc.items()))
    out.write("%s\n  name      %s\n  zone      %s\n  location  %s\n  tags      %s\n" % (
        node, meta.get("name") or "-", meta.get("zone") or "-", where,
        ", ".join(meta.get("tags") or []) or "-"))


def cmd_set(args):
    body = parse_pairs(args.pairs)
    return call(args, "PUT", "/api/nodes/%s/meta" % urllib.parse.quote(args.node, safe=""),
                body)


def cmd_show(args):
    doc = call(args, "GET", "/api/nodes/%s" % urllib.parse.quote(args.node, safe=""))
    return doc.get("meta") or {}


def register(subparsers):
    p = subparsers.add_parser(
        "node", help="a node's metadata on a running hub: name, zone, location, tags",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = client_options()
    sub = p.add_subparsers(dest="node_command", metavar="SUBCOMMAND")
    s = sub.add_parser("set", parents=[common], help="set metadata: key=value...")
    s.add_argument("node", metavar="NODE")
    s.add_argument("pairs", metavar="KEY=VALUE", nargs="+")
    s.set_defaults(node_func=cmd_set)
    s = sub.add_parser("show", parents=[common], help="a node's metadata")
    s.add_argument("node", metavar="NODE")
    s.set_defaults(node_func=cmd_show)
    p.set_defaults(func=run, node_parser=p)


def run(args):
    return dispatch(args, "node", getattr(args, "node_func", None), args.node_parser,
                    getattr(args, "node_command", None), lambda doc: show(args.node, doc, sys.stdout))
