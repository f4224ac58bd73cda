"""Progress output for the long-running `smartpark` commands.

On a terminal: one line redrawn in place (`[#####.....] 12/40 name`). When
stderr is not a terminal (CI logs, pipes): one plain line per step, so logs
stay readable. `quiet=True` prints nothing. Everything goes to stderr, so a
command's stdout stays machine-readable.
"""

import sys


class Progress:
    def __init__(self, total, label, quiet=False, stream=None):
        self.total = max(1, int(total))
        self.label = label
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.done = 0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._drawn = False

    def step(self, what, advance=1):
        self.done = min(self.total, self.done + advance)
        self._show(what)

    def note(self, what):
        """Show the current sub-step without advancing."""
        self._show(what)

    def _show(self, what):
        if self.quiet:
            return
        if self._tty:
            width = 24
            filled = int(width * self.done / self.total)
            line = "\r%s [%s%s] %d/%d %s" % (
                self.label, "#" * filled, "." * (width - filled), self.done, self.total, what)
            self.stream.write(line[:120].ljust(120)[:120])
            self._drawn = True
        else:
            self.stream.write("%s %d/%d %s\n" % (self.label, self.done, self.total, what))
        self.stream.flush()

    def finish(self, message=None):
        if self.quiet:
            return
        if self._tty and self._drawn:
            self.stream.write("\r" + " " * 120 + "\r")
        if message:
            self.stream.write(message + "\n")
        self.stream.flush()


def say(message, quiet=False):
    """One status line on stderr."""
    if not quiet:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
