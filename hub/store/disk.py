"""Free space on the data directory's filesystem, as a managed resource.

`DiskGuard.check()` reads statvfs(2) of the data directory (a system call, no
I/O) and compares the bytes free for the hub's user with the reserve:

    reserve = max(reserve_mb, reserve_percent % of the filesystem), at most a quarter
              of the filesystem

Below the reserve the guard is "refusing": the store fails every new group
commit with `DiskFull` (ingest answers 5.03 with Max-Age, nothing new is
acknowledged) while the mover, the journal's clean-up and the checkpoints go
on in the room the reserve keeps, so every reading already acknowledged
reaches `readings`. Once free space is back above the reserve plus a margin
(`RESUME_MARGIN` of the reserve: no flapping at the edge) ingest resumes by
itself. The store thread checks before each group commit, the mover after each
move and the hub once a second, so a state change is seen within a second even
without traffic; each change is logged once.

The guard deletes nothing: the hub never drops readings early to make room.
"""

import logging
import os
import threading
import time

from ..interfaces import StoreFull

log = logging.getLogger("smartpark.hub.store")

RESUME_MARGIN = 0.25  # resume above reserve x (1 + margin)
MIN_INTERVAL = 0.05  # s: checks closer together reuse the last answer


class DiskFull(StoreFull):
    """New readings are refused: free space on the data directory is below the reserve."""


class DiskGuard:
    def __init__(self, path, reserve_mb=200.0, reserve_percent=2.0):
        self.path = path
        self.reserve_mb = reserve_mb
        self.reserve_percent = reserve_percent
        self.free = None  # bytes free for the hub (f_bavail), at the last check
        self.size = None
        self.reserve = None  # bytes
        self.refusing = False
        self.changed_at = None  # time.time() of the last state change
        self.changes = 0
        self._checked = 0.0
        self._lock = threading.Lock()

    def reserve_bytes(self, size):
        want = max(self.reserve_mb * 1e6, size * self.reserve_percent / 100.0)
        return int(min(want, size / 4))

    def check(self, force=False):
        """Refresh the state (at most every MIN_INTERVAL s unless `force`); True while
        refusing."""
        now = time.monotonic()
        if not force and now - self._checked < MIN_INTERVAL and self.free is not None:
            return self.refusing
        try:
            st = os.statvfs(self.path)
        except OSError as e:  # the directory went away: refuse, say why once
            self._set(True, "cannot read free space of %s: %s" % (self.path, e))
            return self.refusing
        with self._lock:
            self._checked = now
            self.size = st.f_blocks * st.f_frsize
            self.free = st.f_bavail * st.f_frsize
            self.reserve = self.reserve_bytes(self.size)
            if self.refusing:
                refusing = self.free < self.reserve * (1 + RESUME_MARGIN)
            else:
                refusing = self.free < self.reserve
        self._set(refusing, None)
        return self.refusing

    def _set(self, refusing, why):
        with self._lock:
            if refusing == self.refusing:
                return
            self.refusing = refusing
            self.changed_at = time.time()
            self.changes += 1
        if refusing:
            log.error("disk: %s; refusing new readings (5.03) until it is back above %d bytes",
                      why or "%d bytes free on %s, below the reserve of %d" % (
                          self.free, self.path, self.reserve),
                      (self.reserve or 0) * (1 + RESUME_MARGIN))
        else:
            log.warning("disk: %d bytes free on %s again; accepting readings", self.free,
                        self.path)

    def raise_if_refusing(self):
        if self.check():
            raise DiskFull("%s bytes free on %s, below the reserve of %s bytes"
                           % (self.free, self.path, self.reserve))

    def health(self):
        """What /healthz shows."""
        return {"free_bytes": self.free, "reserve_bytes": self.reserve,
                "refusing": self.refusing, "changes": self.changes}
