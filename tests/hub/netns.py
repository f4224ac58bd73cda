"""A private network namespace for multicast/mDNS tests (Linux, root).

`netns()` yields the name of a fresh namespace whose loopback is up, can
multicast, and carries the IPv4 multicast route (224.0.0.0/4 dev lo), so
CoAP multicast (224.0.1.187) and mDNS (224.0.0.251) work between processes
in it whatever the host's own network looks like. Run a hub in it with
HubProc(wrap=exec_prefix(name)) and the client with `run_in(name, script)`.
Not root, or no `ip`: require() skips (fails under CI=true) with the reason.
"""

import contextlib
import itertools
import os
import shutil
import subprocess
import sys

from hubutil import require

_count = itertools.count()


def exec_prefix(name):
    return ["ip", "netns", "exec", name]


@contextlib.contextmanager
def netns():
    ip = shutil.which("ip")
    require(ip is not None and os.geteuid() == 0,
            "multicast tests need their own network namespace: run as root with iproute2 "
            "(`ip netns`)")
    name = "sp-hub-%d-%d" % (os.getpid(), next(_count))
    made = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True)
    require(made.returncode == 0, "ip netns add failed: %s" % made.stderr.strip())
    try:
        for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "link", "set", "lo", "multicast", "on"],
                    ["ip", "route", "add", "224.0.0.0/4", "dev", "lo"]):
            r = subprocess.run(exec_prefix(name) + cmd, capture_output=True, text=True)
            require(r.returncode == 0, "%s in a namespace failed: %s" % (" ".join(cmd),
                                                                        r.stderr.strip()))
        yield name
    finally:
        # the processes in it are the test's own (hub, client); they are stopped by then
        subprocess.run([ip, "netns", "del", name], capture_output=True)


def run_in(name, script, timeout=60):
    """Run a Python script in the namespace; returns its stdout (raises on failure)."""
    r = subprocess.run(exec_prefix(name) + [sys.executable, "-c", script], capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, "client in %s failed:\n%s" % (name, r.stderr[-3000:])
    return r.stdout
