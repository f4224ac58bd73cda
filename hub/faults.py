"""Start-up failures the operator can act on: one line each, a distinct exit code.

`smartpark hub` ends a failed start with exactly one line on stderr,

    smartpark hub: cannot start: <what>, naming the path or port

and one of the exit codes below (never a traceback). `StartError` carries both;
hub/app.py raises it where it knows what failed (the data directory, the lock,
the database, a port), hub/cli.py prints it.

The data directory lock: `DataLock` holds an exclusive flock(2) on
`<data>/hub.lock` for the hub's whole life (the file records the holder's
pid). A second hub on the same directory gets EXIT_LOCKED; the kernel drops
the lock when the holder dies, even by SIGKILL, so a stale file never blocks.
"""

import errno
import fcntl
import os

EXIT_CONFIG = 2  # a configuration value (hub/config.py)
EXIT_DATA_DIR = 3  # the data directory cannot be made, read or written
EXIT_DISK_FULL = 4  # no space left on the data directory's filesystem
EXIT_PORT = 5  # a CoAP or HTTP port is in use or not allowed
EXIT_LOCKED = 6  # another hub runs on the same data directory
EXIT_DATABASE = 7  # the database cannot be opened and could not be set aside
EXIT_OTHER = 1  # anything else (the one line then names the error)

LOCK_NAME = "hub.lock"


class StartError(Exception):
    """A start-up failure: `text` names the path or port, `code` is the exit code."""

    def __init__(self, text, code):
        super().__init__(text)
        self.code = code


def from_os_error(e, what):
    """StartError for an OSError met while doing `what` (a phrase naming the path)."""
    name = getattr(e, "filename", None)
    where = " (%s)" % name if name else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StartError("%s: no space left on the device%s" % (what, where), EXIT_DISK_FULL)
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StartError("%s: %s%s" % (what, e.strerror, where), EXIT_DATA_DIR)
    return StartError("%s: %s%s" % (what, e.strerror or e, where), EXIT_OTHER)


def from_sqlite_error(e, path):
    """StartError for an sqlite3 error while opening the database at `path`."""
    text = str(e)
    if "full" in text:
        return StartError("database %s: no space left on the device" % path, EXIT_DISK_FULL)
    if "readonly" in text or "unable to open" in text:
        return StartError("database %s: %s (check the directory's permissions)" % (path, text),
                          EXIT_DATA_DIR)
    if "locked" in text:
        return StartError("database %s is locked by another process" % path, EXIT_LOCKED)
    return StartError("database %s: %s" % (path, text), EXIT_DATABASE)


def port_error(e, proto, bind, port):
    """StartError for binding `proto` ("CoAP"/"HTTP") to bind:port."""
    if e.errno == errno.EADDRINUSE:
        why = "in use by another program"
    elif e.errno in (errno.EACCES, errno.EPERM):
        why = "not allowed (ports below 1024 need privileges)"
    elif e.errno == errno.EADDRNOTAVAIL:
        why = "address %s is not on this machine" % bind
    else:
        why = e.strerror or str(e)
    return StartError("%s port %s/%s on %s is not available: %s" % (
        proto, port, "udp" if proto == "CoAP" else "tcp", bind, why), EXIT_PORT)


class DataLock:
    """An exclusive lock on a data directory for one hub (see the module)."""

    def __init__(self, data_dir):
        self.path = os.path.join(data_dir, LOCK_NAME)
        self._fd = None

    def acquire(self):
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise from_os_error(e, "data directory %s" % os.path.dirname(self.path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = holder_pid(self.path)
            os.close(fd)
            raise StartError("data directory %s is in use by another hub%s (lock %s)" % (
                os.path.dirname(self.path), " (pid %s)" % holder if holder else "", self.path),
                EXIT_LOCKED) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, b"%d\n" % os.getpid())
        except OSError:  # a full disk: the lock holds anyway, the pid is only a hint
            pass
        self._fd = fd
        return self

    def release(self):
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (harmless)
            self._fd = None


def holder_pid(path):
    """The pid written in a lock file, None when unreadable."""
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def locked(data_dir):
    """True while a hub holds the lock of `data_dir` (for `smartpark hub doctor`)."""
    path = os.path.join(data_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)
