"""crash.log: the last few crashes, small and bounded, and the newest one for the hub.

main.py calls note(e) for an exception that reached it. One line per crash,
"<type> <file>:<line> <message>" (file: the innermost frame's file name
without its directory; message cut to 48 characters, one line), and the file
keeps only the newest KEEP lines: at most about 400 bytes of flash whatever
the node goes through. Written to a temporary file and renamed, so a power
cut leaves the old or the new log.

The node reports the newest crash as the health reading `health.crash`
("<type> <file>:<line>") once, when it differs from the one reported before
(report(), at boot). Loaded only at a crash and at a boot that finds crash.log.
"""

import os
import sys

KEEP = 4
FILE = "crash.log"
_MSG = 48


def where(e):
    """(file, line) of the innermost frame of e's traceback, or ("?", 0)."""
    text = ""
    try:
        import io
        buf = io.StringIO()
        if hasattr(sys, "print_exception"):
            sys.print_exception(e, buf)  # type: ignore[attr-defined]
        else:   # CPython (host tests)
            import traceback  # type: ignore[import-not-found]
            traceback.print_exception(type(e), e, e.__traceback__, file=buf)
        text = buf.getvalue()
    except Exception:  # noqa: BLE001 - a crash report must never crash
        pass
    found = ("?", 0)
    for ln in text.split("\n"):
        ln = ln.strip()
        if not ln.startswith('File "'):
            continue
        try:
            path, rest = ln[6:].split('"', 1)
            num = rest.split("line ", 1)[1].split(",")[0]
            found = (path.split("/")[-1], int(num))
        except (IndexError, ValueError):
            pass
    return found


def line_of(e):
    f, n = where(e)
    msg = str(e).replace("\n", " ").replace("\r", " ")[:_MSG]
    return "%s %s:%d %s" % (type(e).__name__, f, n, msg)


def lines():
    try:
        with open(FILE) as f:
            return [x for x in f.read().split("\n") if x]
    except (OSError, UnicodeError):
        return []


def note(e):
    """Append e's line, keeping the newest KEEP lines (temp + rename)."""
    try:
        keep = lines()[-(KEEP - 1):] + [line_of(e)]
        with open(FILE + ".tmp", "w") as f:
            f.write("\n".join(keep) + "\n")
        os.rename(FILE + ".tmp", FILE)
    except OSError:
        pass


def last():
    """The newest crash as "<type> <file>:<line>", or None."""
    ls = lines()
    if not ls:
        return None
    parts = ls[-1].split(" ")
    return " ".join(parts[:2])


def report(node):
    """Record the newest crash as health.crash (a text reading) in node's outbox when it is
    not the one reported before (kept in RTC memory); called by node.Node at boot."""
    c = last()
    if c is None or c == node.rtc.get("crash"):
        return
    import outbox
    if "vs" not in outbox.KINDS:   # an outbox without text readings
        return
    flags, run, t = node.clock.stamp()
    node.record([(flags, run, t, "vs", c, "health.crash", "")])
    node.rtc["crash"] = c
