"""The outbox: every reading goes to a log in flash before any send, and leaves it only on 2.xx.

Files in the node's flash directory:

- outbox.log: records, each  A5 | len (u16 BE) | payload | CRC-32 (u32 BE over len+payload).
  payload = seq u32 | flags u8 | run u16 | t ms i64 | kind u8 | value | name | unit
  (value: f64 for "v"/"s", u8 for "vb"; name and unit are u8-length-prefixed).
  flags bit 0: t is absolute Unix ms; otherwise t is the node's RTC ms of RTC
  run `run`, resolved once the clock has been synced in that run (clock.py).
- outbox.head: head seq (oldest live record), dropped count, next seq, CRC-32
  of the three; replaced atomically (write .tmp, rename).

Records are appended with consecutive seq numbers; everything below the
head seq is dead (acknowledged or dropped). A report acks a prefix, so
ack(seq) only moves the head. Compaction copies the live records to a new
file and renames it over the log, so a power cut at any byte of any write
leaves either the old or the new state: on start, recover() keeps the log up
to its last whole record (CRC) and drops a torn tail. When more than
`max_records` are live, the oldest are dropped and counted in `dropped`.
"""

import os
import struct

from compat import const, crc32

_MAGIC = const(0xA5)
_HDR = const(3)
_FIX = ">IBHqB"          # seq, flags, run, t, kind
_FIX_LEN = const(16)
_COMPACT_MIN = const(4096)

FLAG_ABS = const(1)
KINDS = ("v", "vb", "s")


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def encode(seq, flags, run, t, kind, value, name, unit):
    k = KINDS.index(kind)
    nb = name.encode()
    ub = unit.encode()
    val = struct.pack(">B", 1 if value else 0) if kind == "vb" else struct.pack(">d", value)
    payload = struct.pack(_FIX, seq, flags, run, t, k) + val + bytes((len(nb),)) + nb + \
        bytes((len(ub),)) + ub
    body = struct.pack(">BH", _MAGIC, len(payload)) + payload
    return body + struct.pack(">I", crc32(body[1:]) & 0xFFFFFFFF)


def decode(payload):
    """(seq, flags, run, t, kind, value, name, unit) from a record's payload."""
    seq, flags, run, t, k = struct.unpack_from(_FIX, payload, 0)
    i = _FIX_LEN
    if k == 1:
        value = payload[i] != 0
        i += 1
    else:
        value = struct.unpack_from(">d", payload, i)[0]
        i += 8
    n = payload[i]
    name = bytes(payload[i + 1:i + 1 + n]).decode()
    i += 1 + n
    u = payload[i]
    unit = bytes(payload[i + 1:i + 1 + u]).decode()
    return seq, flags, run, t, KINDS[k], value, name, unit


class Outbox:
    def __init__(self, max_records=2000, path="outbox"):
        self.max = max_records
        self._log = path + ".log"
        self._headf = path + ".head"
        self.head = 0        # oldest live seq
        self.next = 0        # seq of the next append
        self.dropped = 0
        self._first = 0      # seq of the first record in the file
        self._offs = []      # file offset of each record in the file, from _first
        self._size = 0
        self.recovered_bytes = 0   # torn tail dropped by the last recover()
        self._f = None
        self.recover()

    # --- head file ---
    def _read_head(self):
        try:
            with open(self._headf, "rb") as f:
                b = f.read()
        except OSError:
            return
        if len(b) == 16 and struct.unpack(">I", b[12:16])[0] == crc32(b[0:12]) & 0xFFFFFFFF:
            self.head, self.dropped, self.next = struct.unpack(">III", b[0:12])

    def _write_head(self):
        b = struct.pack(">III", self.head, self.dropped, self.next)
        tmp = self._headf + ".tmp"
        with open(tmp, "wb") as f:
            f.write(b + struct.pack(">I", crc32(b) & 0xFFFFFFFF))
        os.rename(tmp, self._headf)

    # --- recovery ---
    def recover(self):
        if self._f:
            self._f.close()
            self._f = None
        self._read_head()
        offs = []
        first = None
        good = 0
        size = 0
        data = b""
        if _exists(self._log):
            with open(self._log, "rb") as f:
                data = f.read()
            size = len(data)
        mv = memoryview(data)
        pos = 0
        last = None
        while pos + _HDR + _FIX_LEN + 4 <= size:
            if data[pos] != _MAGIC:
                break
            n = (data[pos + 1] << 8) | data[pos + 2]
            end = pos + _HDR + n + 4
            if n < _FIX_LEN + 3 or end > size:
                break
            want = struct.unpack_from(">I", data, end - 4)[0]
            if crc32(mv[pos + 1:end - 4]) & 0xFFFFFFFF != want:
                break
            seq = struct.unpack_from(">I", data, pos + _HDR)[0]
            if last is not None and seq != last + 1:
                break    # cannot happen with our writer; treat as damage
            if first is None:
                first = seq
            last = seq
            offs.append(pos)
            pos = end
        good = pos
        self.recovered_bytes = size - good
        if good < size:
            # keep the whole records only: rewrite, then swap (atomic rename)
            tmp = self._log + ".tmp"
            with open(tmp, "wb") as f:
                f.write(mv[0:good])
            os.rename(tmp, self._log)
        self._size = good
        self._offs = offs
        self._first = first if first is not None else self.next
        if last is not None and last + 1 > self.next:
            self.next = last + 1
        if self.head < self._first:
            # records before the file's first one were compacted away
            self.head = self._first
        if self.head > self.next:
            self.head = self.next
        del data, mv

    # --- appending ---
    def depth(self):
        return self.next - self.head

    def append(self, records):
        """Append [(flags, run, t, kind, value, name, unit), ...]; return their seqs."""
        out = bytearray()
        seqs = []
        pos = self._size
        for r in records:
            enc = encode(self.next, r[0], r[1], r[2], r[3], r[4], r[5], r[6])
            self._offs.append(pos + len(out))
            out += enc
            seqs.append(self.next)
            self.next += 1
        if self._f is None:
            self._f = open(self._log, "ab")
        self._f.write(out)
        self._f.flush()
        self._size += len(out)
        over = self.depth() - self.max
        if over > 0:
            self.head += over
            self.dropped += over
            self._write_head()
            self._maybe_compact()
        return seqs

    # --- reading and acknowledging ---
    def peek(self, n, start=None):
        """Up to n live records (decoded) from seq `start` (default: the head), oldest first."""
        s = self.head if start is None else start
        out = []  # type: list
        if self._f is not None:
            self._f.flush()
        with open(self._log, "rb") as f:
            while s < self.next and len(out) < n:
                off = self._offs[s - self._first]
                f.seek(off)
                hdr = f.read(_HDR)
                ln = (hdr[1] << 8) | hdr[2]
                out.append(decode(f.read(ln)))
                s += 1
        return out

    def ack(self, upto_seq):
        """Records up to and including upto_seq are stored by the hub: drop them."""
        if upto_seq + 1 <= self.head:
            return
        self.head = min(upto_seq + 1, self.next)
        self._write_head()
        self._maybe_compact()

    def drop(self, upto_seq):
        """Give up records up to upto_seq (unresolvable time): counted as dropped."""
        n = min(upto_seq + 1, self.next) - self.head
        if n > 0:
            self.dropped += n
            self.ack(upto_seq)

    def _maybe_compact(self, force=False):
        dead = self.head - self._first
        if dead <= 0:
            return
        cut = self._offs[dead] if dead < len(self._offs) else self._size
        if not force and (cut < _COMPACT_MIN or cut * 2 < self._size):
            return
        if self._f is not None:
            self._f.close()
            self._f = None
        tmp = self._log + ".tmp"
        with open(self._log, "rb") as src, open(tmp, "wb") as dst:
            src.seek(cut)
            while True:
                chunk = src.read(512)
                if not chunk:
                    break
                dst.write(chunk)
        os.rename(tmp, self._log)
        self._offs = [o - cut for o in self._offs[dead:]]
        self._first = self.head
        self._size -= cut

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None
