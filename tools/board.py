"""A MicroPython board on a serial port, driven through mpremote's Python API.

Why the API and not the `mpremote` CLI as a subprocess: flashing is one
session of many small steps (version, statvfs, mkdir, write, hash, retry,
reset). The CLI would reconnect and re-enter the raw REPL for every step
(each time interrupting the board), report failures only as text on stderr,
and give no per-chunk progress. The API (mpremote.transport_serial.
SerialTransport: exec/eval, fs_writefile with a progress callback,
fs_hashfile) keeps one raw-REPL session and raises typed errors. The price:
mpremote calls that API "in the process of being refactored", so every use of
it is in this one module, tested on every run against the pty board.

Connecting never soft-resets (mpremote's `resume`): the unix port has no
soft-reboot banner, and on an ESP32 a soft reset would start main.py again.

Errors are BoardError with a distinct exit code (see EXIT_* below) and a
message a technician can act on.
"""

import errno
import fcntl
import os
import sys
import time

EXIT_NO_DEVICE = 10      # nothing at that port path / device vanished
EXIT_PORT_BUSY = 11      # another program holds the port
EXIT_NO_REPL = 12        # something answers, but no MicroPython REPL
EXIT_TOO_OLD = 13        # MicroPython older than the firmware needs
EXIT_NO_SPACE = 14       # not enough free flash for bundle + config
EXIT_VERIFY = 15         # a file's SHA-256 read back differs, even after retries
EXIT_BOARD_ERROR = 16    # the board raised an error during a step (message has it)
EXIT_PERMISSION = 17     # no permission to open the port (e.g. not in `dialout`)
EXIT_WRONG_BOARD = 18    # the bundle was built for another board (ESP32 vs unix port)
EXIT_NO_HEAP = 19        # the board's heap is below what the firmware needs (with the margin)


class BoardError(Exception):
    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code


# UUCP lock files, as minicom, picocom and cu announce that they hold a port
LOCK_DIRS = ("/var/lock", "/run/lock")


def _uucp_holder(port):
    """PID of a live process holding a UUCP lock on `port`, else None."""
    name = "LCK.." + os.path.basename(port)
    for d in LOCK_DIRS:
        try:
            with open(os.path.join(d, name)) as f:
                pid = int(f.read().strip() or "0")
        except (OSError, ValueError):
            continue
        if pid > 0 and pid != os.getpid():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue  # stale lock
            except PermissionError:
                pass
            return pid
    return None


def probe_port(port):
    """Check that `port` is a device we can open and nobody else holds.

    A held port is detected the ways serial programs announce it on Linux:
    a UUCP lock file (minicom, picocom, cu), an flock (pyserial/mpremote
    exclusive=True) or TIOCEXCL (EBUSY on open). A program that opens the
    port without any of these (cat, some IDEs) cannot be told apart from the
    board's own driver and is not detected. The probe releases the port
    again before mpremote opens it.
    """
    if not os.path.exists(port):
        raise BoardError(EXIT_NO_DEVICE, "no device at %s (is the board plugged in? "
                         "try `mpremote connect list`)" % port)
    holder = _uucp_holder(port)
    if holder:
        raise BoardError(EXIT_PORT_BUSY, "port %s is busy: process %d holds its lock file "
                         "(a serial terminal such as minicom or picocom?)" % (port, holder))
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise BoardError(EXIT_PORT_BUSY, "port %s is busy: another program opened it "
                             "exclusively (close the serial monitor)" % port) from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise BoardError(EXIT_PERMISSION, "no permission to open %s (add your user to the "
                             "`dialout` group)" % port) from None
        raise BoardError(EXIT_NO_DEVICE, "cannot open %s: %s" % (port, e.strerror)) from None
    try:
        try:
            os.isatty(fd) or _not_serial(port)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise BoardError(EXIT_PORT_BUSY, "port %s is busy: another program holds it "
                                 "(mpremote, a serial monitor, another flash?)" % port) from None
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _not_serial(port):
    raise BoardError(EXIT_NO_DEVICE, "%s is not a serial port (not a terminal device)" % port)


# What flash needs to know: version, platform, free flash, the heap (free + allocated
# after a collection: the node may have been running when we interrupted it, so
# free alone would understate what a fresh boot has), and the ROMFS partition's
# size when the firmware has one (vfs.rom_ioctl, MicroPython 1.25+; an esp32
# Partition answers ioctl 4/5 with its block count and size, a buffer its length).
_INFO = (
    "import sys, os, gc\n"
    "try:\n _st = os.statvfs('.')\nexcept Exception:\n _st = None\n"
    "gc.collect()\n"
    "_heap = gc.mem_free() + gc.mem_alloc() if hasattr(gc, 'mem_free') else None\n"
    "_rom = None\n"
    "try:\n"
    " import vfs\n"
    " if vfs.rom_ioctl(1) > 0:\n"
    "  _d = vfs.rom_ioctl(2, 0)\n"
    "  if not isinstance(_d, int):\n"
    "   _rom = _d.ioctl(4, 0) * _d.ioctl(5, 0) if hasattr(_d, 'ioctl') else len(_d)\n"
    "except Exception:\n"
    " pass\n"
    "_impl = sys.implementation\n"
    "print(repr({'version': tuple(_impl.version[:3]), 'name': _impl.name,"
    " 'mpy': getattr(_impl, '_mpy', None), 'machine': getattr(_impl, '_machine', ''),"
    " 'platform': sys.platform, 'statvfs': tuple(_st) if _st else None,"
    " 'mem_free': gc.mem_free() if hasattr(gc, 'mem_free') else None,"
    " 'heap': _heap, 'romfs': _rom, 'cwd': os.getcwd()}))\n"
)

_RMTREE = (
    "import os\n"
    "def _sp_rm(p):\n"
    " try:\n  m = os.stat(p)[0]\n except OSError:\n  return 0\n"
    " n = 0\n"
    " if m & 0x4000:\n"
    "  for e in os.listdir(p):\n   n += _sp_rm(p + '/' + e)\n"
    "  os.rmdir(p)\n"
    " else:\n  os.remove(p)\n  n += 1\n"
    " return n\n"
    "def _sp_wipe():\n"
    " return sum(_sp_rm(e) for e in os.listdir())\n"
)


class Board:
    """One raw-REPL session with a board. Use as a context manager."""

    def __init__(self, port, baudrate=115200):
        self.port = port
        self.baudrate = baudrate
        self.transport = None

    def open(self):
        probe_port(self.port)
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport
        try:
            self.transport = SerialTransport(self.port, baudrate=self.baudrate, exclusive=True)
        except TransportError as e:
            raise BoardError(EXIT_PORT_BUSY, "cannot open %s: %s (held by another program?)"
                             % (self.port, e)) from None
        # mpremote reads a pty with blocking read(1) (no inWaiting): with no
        # timeout a silent port would hang forever. Bound every read instead (5 s:
        # a board on a loaded host can be slow to answer).
        self.transport.serial.timeout = 5
        try:
            try:
                self.transport.enter_raw_repl(soft_reset=False, timeout_overall=10)
            except TransportError:
                # a session cut in the middle of a raw paste leaves the board waiting for the
                # rest: Ctrl-D ends the paste, Ctrl-C stops what it ran; then once more
                self.transport.serial.write(b"\x04\r\x03\x03")
                time.sleep(0.5)
                self.transport.serial.reset_input_buffer()
                self.transport.enter_raw_repl(soft_reset=False, timeout_overall=10)
        except TransportError:
            self.close()
            raise BoardError(EXIT_NO_REPL, "%s answers but no MicroPython REPL came up "
                             "(is MicroPython installed on the board? is it in the "
                             "bootloader?)" % self.port) from None
        except OSError as e:
            self.close()
            raise BoardError(EXIT_NO_DEVICE, "%s went away: %s" % (self.port, e)) from None
        return self

    def close(self):
        t, self.transport = self.transport, None
        if t is not None:
            try:
                if t.in_raw_repl:
                    t.exit_raw_repl()
                t.close()
            except OSError:
                pass

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    # -- commands ---------------------------------------------------------
    def _wrap(self, what, fn, *args, **kw):
        from mpremote.transport import TransportError, TransportExecError
        try:
            return fn(*args, **kw)
        except TransportExecError as e:
            raise BoardError(EXIT_BOARD_ERROR, "board error while %s: %s"
                             % (what, e.error_output.strip().splitlines()[-1:] or e)) from None
        except TransportError as e:
            raise BoardError(EXIT_NO_REPL, "board stopped answering while %s: %s" % (what, e)) from None
        except OSError as e:
            if isinstance(e, FileNotFoundError) or e.errno == errno.ENOENT:
                raise
            raise BoardError(EXIT_NO_DEVICE, "lost the board while %s: %s" % (what, e)) from None

    def exec(self, code, what="running code", timeout=10):
        out, err = self._wrap(what, self.transport.exec_raw, code, timeout=timeout)
        if err:
            last = err.decode("utf-8", "replace").strip().splitlines()
            raise BoardError(EXIT_BOARD_ERROR, "board error while %s: %s"
                             % (what, last[-1] if last else "?"))
        return out.decode("utf-8", "replace")

    def eval(self, code, what="running code"):
        import ast
        text = self.exec(code, what)
        try:
            return ast.literal_eval(text.strip().splitlines()[-1])
        except (ValueError, SyntaxError, IndexError):
            raise BoardError(EXIT_BOARD_ERROR, "unexpected answer while %s: %r"
                             % (what, text[-200:])) from None

    def info(self):
        return self.eval(_INFO, "reading the board's version and flash")

    def romfs_sha256(self, size):
        """SHA-256 (hex) of the first `size` bytes of the board's ROMFS partition."""
        code = ("import vfs, hashlib, binascii\n"
                "_d = vfs.rom_ioctl(2, 0)\n"
                "print(repr(binascii.hexlify(hashlib.sha256(memoryview(_d)[:%d]).digest()).decode()))\n"
                % size)
        return self.eval(code, "hashing the ROMFS partition")

    def deploy_romfs(self, image_path, quiet=False):
        """Write a ROMFS image into the board's first ROMFS partition (mpremote's
        `romfs deploy`, over this raw-REPL connection). The board mounts it at /rom on its next boot."""
        import contextlib
        import io

        from mpremote import commands

        class _State:  # what mpremote's command functions use of its CLI state
            transport = self.transport

            def ensure_raw_repl(self):
                pass

            def did_action(self):
                pass

        class _Args:
            path = image_path
            partition = 0
            mpy = False

        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                self._wrap("writing the ROMFS image", commands._do_romfs_deploy, _State(), _Args())
        except (SystemExit, commands.CommandError) as e:
            raise BoardError(EXIT_BOARD_ERROR, "mpremote could not deploy the ROMFS image: %s %s"
                             % (out.getvalue().strip().splitlines()[-1:] or "", e)) from None
        if not quiet:
            for line in out.getvalue().replace("\r", "\n").splitlines():
                if line.strip() and not line.startswith(("Writing at", "Preparing at")):
                    print(line, file=sys.stderr)

    def makedirs(self, path):
        parts = [p for p in path.split("/") if p]
        code = "import os\nfor _p in %r:\n try:\n  os.mkdir(_p)\n except OSError:\n  pass\n" % (
            ["/".join(parts[:i + 1]) for i in range(len(parts))],)
        self.exec(code, "creating %s" % path)

    def write(self, path, data, progress=None):
        from mpremote.transport import TransportExecError
        try:
            self._wrap("writing %s" % path, self.transport.fs_writefile, path, data,
                       chunk_size=512, progress_callback=progress)
        except OSError as e:
            raise BoardError(EXIT_BOARD_ERROR, "board could not write %s: %s" % (path, e)) from None
        except TransportExecError as e:  # pragma: no cover - _wrap converts these
            raise BoardError(EXIT_BOARD_ERROR, str(e)) from None

    def read(self, path):
        try:
            return bytes(self._wrap("reading %s" % path, self.transport.fs_readfile, path,
                                    chunk_size=512))
        except OSError:
            return None

    def sha256(self, path):
        """SHA-256 of a board file computed by hashlib on the board (hex), None if missing."""
        code = (
            "import hashlib, binascii\n"
            "try:\n _f = open(%r, 'rb')\nexcept OSError:\n print('None')\nelse:\n"
            " _h = hashlib.sha256(); _b = bytearray(512)\n"
            " while True:\n  _n = _f.readinto(_b)\n  if not _n:\n   break\n"
            "  _h.update(_b if _n == 512 else _b[:_n])\n"
            " _f.close()\n print(repr(binascii.hexlify(_h.digest()).decode()))\n" % path)
        text = self.exec(code, "hashing %s on the board" % path).strip()
        if text == "None":
            return None
        import ast
        try:
            value = ast.literal_eval(text.splitlines()[-1])  # a quoted hex string
            if not isinstance(value, str):
                raise ValueError(value)
            return value
        except (ValueError, SyntaxError, IndexError):
            raise BoardError(EXIT_BOARD_ERROR, "unexpected hash answer for %s: %r"
                             % (path, text[-120:])) from None

    def usage(self, info=None):
        """Bytes the board's files occupy, rounded up to its filesystem blocks."""
        st = (info or {}).get("statvfs") or (4096, 4096)
        bsize = st[1] or st[0] or 4096
        code = ("import os\n"
                "def _sp_du(p, b):\n"
                " n = 0\n"
                " for e in (os.listdir(p) if p else os.listdir()):\n"
                "  q = p + '/' + e if p else e\n"
                "  m = os.stat(q)\n"
                "  n += _sp_du(q, b) if m[0] & 0x4000 else (m[6] + b - 1) // b * b\n"
                " return n\n"
                "print(_sp_du('', %d))\n" % bsize)
        return self.eval(code, "measuring what the board's files occupy")

    def remove_tree(self, path=""):
        """Remove a file or directory tree ('' = everything in the cwd); returns files removed."""
        call = "_sp_rm(%r)" % path if path else "_sp_wipe()"
        return self.eval(_RMTREE + "print(%s)\n" % call, "removing %s" % (path or "all files"))

    def remove(self, path):
        self.exec("import os\ntry:\n os.remove(%r)\nexcept OSError:\n pass\n" % path,
                  "removing %s" % path)

    def remove_empty_dirs(self, paths):
        """Remove the directories of `paths` (deepest first) that are left empty."""
        dirs = set()
        for p in paths:
            parts = p.split("/")[:-1]
            for i in range(len(parts), 0, -1):
                dirs.add("/".join(parts[:i]))
        if not dirs:
            return
        code = ("import os\nfor _p in %r:\n try:\n  os.rmdir(_p)\n except OSError:\n  pass\n"
                % sorted(dirs, key=lambda d: -d.count("/")))
        self.exec(code, "removing emptied directories")

    def reset(self, platform):
        """Hard-reset the board and drop the session.

        ESP32 & co: machine.reset(). The unix port has no machine.reset(): the
        interpreter exits instead (SystemExit leaves the raw REPL); the pty
        board (tools/ptyboard.py) boots a fresh one, as a board reboots. A
        bare unix-port REPL without that supervisor just ends.
        """
        if platform == "linux":
            code = "import sys\nsys.exit(0)\n"
        else:
            code = "import machine\nmachine.reset()\n"
        try:
            self.transport.exec_raw_no_follow(code)
        except Exception:  # noqa: BLE001 - the board is going away, as asked
            pass
        t, self.transport = self.transport, None
        try:
            t.close()
        except Exception:  # noqa: BLE001
            pass
