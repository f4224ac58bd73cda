"""Start `smartpark hub` (or any command printing the hub's ready line) as a child process.

Scope: the one place that launches a hub subprocess and parses its ready line
for tools (tools/demo.py), tests (tests/hub/hubutil.py) and benchmarks:

    h = start_hub(["--data", d, "--coap-port", "0", "--http-port", "0"], log_path=...)
    h.coap_port, h.http_port, h.fields["fastpath"], h.log_text()
    h.stop()          # SIGTERM, then SIGKILL after `timeout`; returns the exit code

stdout and stderr both go to a log file (never an unread pipe: a chatty hub
would block once the pipe buffer fills). The ready line

    smartpark hub ready coap=<port> http=<port> data=<dir> decoder=<path> fastpath=on|off lane=on|off

is found by reading that file, with one deadline for the whole start-up. A
hub that exits or misses the deadline raises HubStartError carrying the end
of its log.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time

READY = "smartpark hub ready"


class HubStartError(RuntimeError):
    """The hub exited or did not print its ready line in time; text ends with its log."""


def hub_command(args, python=None):
    return [python or sys.executable, "-m", "smartpark.tools.cli", "hub"] + list(args)


class HubHandle:
    def __init__(self, proc, log_path, fields, own_log):
        self.proc = proc
        self.log_path = log_path
        self.fields = fields
        self.coap_port = int(fields["coap"])
        self.http_port = int(fields["http"])
        self._own_log = own_log

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def log_text(self, tail=None):
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return ""
        text = data.decode("utf-8", "replace")
        return text if tail is None else text[-tail:]

    def send_signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Signal the hub and wait; SIGKILL after `timeout` s. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        return self.proc.returncode

    def cleanup(self):
        """Remove a log file start_hub created itself (call after stop/kill)."""
        if self._own_log:
            try:
                os.unlink(self.log_path)
            except OSError:
                pass


def _ready_fields(path, start):
    """(fields, end offset) when the ready line is in the file after `start`, else (None, start)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except OSError:
        return None, start
    i = data.find(READY.encode())
    if i < 0:
        return None, start
    j = data.find(b"\n", i)
    if j < 0:
        return None, start  # line not complete yet
    line = data[i:j].decode("utf-8", "replace")
    fields = dict(p.split("=", 1) for p in line.split()[3:] if "=" in p)
    if "coap" not in fields or "http" not in fields:
        raise HubStartError("malformed ready line: %r" % line)
    return fields, start + j + 1


def start_hub(args=(), cwd=None, env=None, timeout=30.0, log_path=None, command=None,
              wrap=(), preexec_fn=None):
    """Start a hub and wait for its ready line; returns a HubHandle.

    args: `smartpark hub` arguments; command: a whole command instead (e.g. a
    stand-in server printing the same ready line); wrap: a prefix such as
    ["unshare", "-n", ...]; log_path: where stdout+stderr go (appended; default
    a new temporary file, removed by cleanup())."""
    cmd = list(wrap) + (list(command) if command is not None else hub_command(args))
    own = log_path is None
    if own:
        fd, log_path = tempfile.mkstemp(prefix="smartpark-hub-", suffix=".log")
        os.close(fd)
    start = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                preexec_fn=preexec_fn)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        fields, _end = _ready_fields(log_path, start)
        if fields is not None:
            return HubHandle(proc, log_path, fields, own)
        rc = proc.poll()
        if rc is not None or time.monotonic() >= deadline:
            if rc is None:
                proc.kill()
                proc.wait()
                why = "no ready line within %gs" % timeout
            else:
                why = "exited with code %d" % rc
            with open(log_path, "rb") as f:
                f.seek(start)
                tail = f.read().decode("utf-8", "replace")[-4000:]
            if own:
                os.unlink(log_path)
            raise HubStartError("hub did not start (%s): %s\n%s" % (why, " ".join(cmd), tail))
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
