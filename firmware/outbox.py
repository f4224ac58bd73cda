"""The outbox: every reading goes to a log in flash before any send, and leaves it only on 2.xx.

Files in the node's flash directory:

- outbox.log: records, each  A5 | len (u16 BE) | payload | CRC-32 (u32 BE over len+payload).
  payload = seq u32 | flags u8 | run u16 | t ms i64 | kind u8 | value | name | unit
  (value: f64 for "v"/"s", u8 for "vb", u8-length-prefixed UTF-8 for "vs", whose unit is
  empty; name and unit are u8-length-prefixed).
  flags bit 0: t is absolute Unix ms; otherwise t is the node's RTC ms of RTC
  run `run`, resolved once the clock has been synced in that run (clock.py).
- outbox.head: head seq (oldest live record), dropped count, next seq, CRC-32
  of the three; replaced atomically (write .tmp, rename).

Records are appended with consecutive seq numbers; everything below the
head seq is dead (acknowledged or dropped). A report acks a prefix, so
ack(seq) only moves the head. Compaction copies the live records to a new
file and renames it over the log, so a power cut at any byte of any write
leaves either the old or the new state: on start, recover() keeps the log up
to its last whole record (CRC) and drops a torn tail; a damaged record in the
middle (bit rot) is stepped over to the next whole one, so only the records in
the damaged bytes are lost (counted), not the ones after them. When more than
`max_records` are live, the oldest are dropped and counted in `dropped`.
"""

import os
import struct

from compat import const, crc32, exists

_MAGIC = const(0xA5)
_HDR = const(3)
_FIX = ">IBHqB"          # seq, flags, run, t, kind
_FIX_LEN = const(16)
_COMPACT_MIN = const(4096)
_MIN_REC = const(_HDR + _FIX_LEN + 3 + 4)           # header, fixed part, vb value, two lengths, CRC
_MAX_REC = const(_HDR + _FIX_LEN + 8 + 2 + 2 * 255 + 4)   # 543
_WIN = const(1024)                                  # recovery's read window (>= _MAX_REC)

FLAG_ABS = const(1)
KINDS = ("v", "vb", "s", "vs")


def encode_into(buf, pos, seq, flags, run, t, kind, value, nb, ub):
    """Write one record at buf[pos:]; nb/ub are the name/unit as bytes. Returns its length."""
    k = KINDS.index(kind)
    i = pos + _HDR
    struct.pack_into(_FIX, buf, i, seq, flags, run, t, k)
    i += _FIX_LEN
    if k == 1:
        buf[i] = 1 if value else 0
        i += 1
    elif k == 3:   # a text value: at most 255 bytes, in the room of a unit (the record's bound)
        vb = value.encode()[:255]
        ub = b""
        buf[i] = len(vb)
        buf[i + 1:i + 1 + len(vb)] = vb
        i += 1 + len(vb)
    else:
        struct.pack_into(">d", buf, i, value)
        i += 8
    buf[i] = len(nb)
    buf[i + 1:i + 1 + len(nb)] = nb
    i += 1 + len(nb)
    buf[i] = len(ub)
    buf[i + 1:i + 1 + len(ub)] = ub
    i += 1 + len(ub)
    n = i - pos - _HDR
    buf[pos] = _MAGIC
    buf[pos + 1] = n >> 8
    buf[pos + 2] = n & 0xFF
    struct.pack_into(">I", buf, i, crc32(memoryview(buf)[pos + 1:i]))
    return i + 4 - pos


def _whole(buf, mv, i, avail):
    """Seq of the whole record (magic, length, CRC) at buf[i:i + avail], or -1."""
    if buf[i] != _MAGIC:
        return -1
    n = (buf[i + 1] << 8) | buf[i + 2]
    end = i + _HDR + n + 4
    if n < _FIX_LEN + 3 or end > i + avail:
        return -1
    if crc32(mv[i + 1:end - 4]) & 0xFFFFFFFF != struct.unpack_from(">I", buf, end - 4)[0]:
        return -1
    return struct.unpack_from(">I", buf, i + _HDR)[0]


def encode(seq, flags, run, t, kind, value, name, unit):
    """One record as bytes (tests and tools; the outbox itself encodes in place)."""
    b = bytearray(_HDR + _FIX_LEN + 8 + 2 + 2 * 255 + 4)
    n = encode_into(b, 0, seq, flags, run, t, kind, value, name.encode(), unit.encode())
    return bytes(b[0:n])


def _text(mv, a, n, names, known=None):
    """The str of mv[a:a+n], reused from `names` when seen before (no allocation then).

    `names` maps a small-int key (length, first and last byte) to a flat list
    [bytes, str, bytes, str, ...]. A node has a few dozen names and units;
    interning them keeps reading the log back from costing a new bytes and str
    per record. `known` (str -> its UTF-8 bytes: what the Outbox encoded) is
    searched before a new bytes and str are made, so that a name written in
    this run is held once, not twice.
    """
    if n == 0:
        return ""
    key = (n << 16) | (mv[a] << 8) | mv[a + n - 1]
    cands = names.get(key)
    if cands is not None:
        for j in range(0, len(cands), 2):
            if _same(mv, a, n, cands[j]):
                return cands[j + 1]
    text = None
    if known:
        for s in known:
            b = known[s]
            if len(b) == n and b[0] == mv[a] and b[n - 1] == mv[a + n - 1] and _same(mv, a, n, b):
                text = s
                break
    if text is None:
        b = bytes(mv[a:a + n])
        text = b.decode()
    if cands is None:
        names[key] = [b, text]
    else:
        cands.append(b)
        cands.append(text)
    return text


def _same(mv, a, n, b):
    """mv[a:a+n] == b, given equal lengths and last bytes (no allocation)."""
    i = 1
    while i < n - 1 and mv[a + i] == b[i]:
        i += 1
    return i >= n - 1


def decode(payload, names=None, known=None):
    """(seq, flags, run, t, kind, value, name, unit) from a record's payload (names, known:
    see _text)."""
    if names is None:
        names = {}
    seq, flags, run, t, k = struct.unpack_from(_FIX, payload, 0)
    i = _FIX_LEN
    if k == 1:
        value = payload[i] != 0
        i += 1
    elif k == 3:
        value = bytes(payload[i + 1:i + 1 + payload[i]]).decode()
        i += 1 + payload[i]
    else:
        value = struct.unpack_from(">d", payload, i)[0]
        i += 8
    n = payload[i]
    name = _text(payload, i + 1, n, names, known)
    i += 1 + n
    unit = _text(payload, i + 1, payload[i], names, known)
    return seq, flags, run, t, KINDS[k], value, name, unit


class Outbox:
    """The log and its head, in constant RAM: no per-record index is kept.

    Where a record starts in the file is found by walking the records' length
    headers from a known place: the head (its offset is kept), or the end of the
    last peek (which is where the next ack moves the head). A node that has
    been cut off from its hub for days holds the same few hundred bytes for its
    outbox as one that reports every minute; a per-record list of offsets would
    cost 4 bytes a reading on an ESP32 (8 KB for the default 2,000).
    """

    def __init__(self, max_records=2000, path="outbox"):
        self.max = max_records
        self._log = path + ".log"
        self._headf = path + ".head"
        self.head = 0        # oldest live seq
        self.next = 0        # seq of the next append
        self.dropped = 0
        self._first = 0      # seq of the first record in the file
        self._head_off = 0   # file offset of record `head` (== _size when none is live)
        self._mark = None    # (seq, offset) of a record >= head: where the last peek ended
        self._size = 0
        self.recovered_bytes = 0   # bytes dropped by the last recover() (torn tail, damage)
        self.resync_bytes = 0      # of those, bytes stepped over in the middle of the log
        self.lost = 0              # live records lost in them (also counted in dropped)
        self._f = None
        self._wbuf = bytearray(512)    # append scratch, grown when a batch needs more
        self._win = bytearray(_WIN)    # read window (peek, recovery): a record is <= _MAX_REC
        self._hdr = bytearray(_HDR)    # one record header, for walking
        self._bytes = {}               # name/unit str -> bytes (encode side)
        self._names = {}               # interned names (decode side), see _text()
        self.recover()

    # --- head file ---
    def _read_head(self):
        """Load head, dropped, next from the head file; True when it was whole."""
        try:
            with open(self._headf, "rb") as f:
                b = f.read()
        except OSError:
            return False
        if len(b) == 16 and struct.unpack(">I", b[12:16])[0] == crc32(b[0:12]) & 0xFFFFFFFF:
            self.head, self.dropped, self.next = struct.unpack(">III", b[0:12])
            return True
        return False

    def _write_head(self):
        b = struct.pack(">III", self.head, self.dropped, self.next)
        tmp = self._headf + ".tmp"
        with open(tmp, "wb") as f:
            f.write(b + struct.pack(">I", crc32(b) & 0xFFFFFFFF))
        os.rename(tmp, self._headf)

    # --- recovery ---
    def _scan(self, f, size, visit):
        """Every whole record of the log in order, through the read window: visit(pos, seq,
        window offset) for each. A record that is not whole (bad magic, length or CRC), or
        whose seq does not rise, is stepped over byte by byte. Returns (first seq, last seq,
        seqs not consecutive, end of the last whole record, bytes stepped over before it)."""
        win = self._win
        mv = memoryview(win)
        first = last = -1
        gap = False
        pos = good = skipped = run = 0
        base = have = 0       # the window holds the file's [base, base + have)
        while pos + _MIN_REC <= size:
            if base + have - pos < _MAX_REC and base + have < size:
                f.seek(pos)
                base = pos
                have = f.readinto(win) or 0
            seq = _whole(win, mv, pos - base, base + have - pos)
            if seq < 0 or seq <= last:
                pos += 1
                run += 1
                continue
            if last >= 0 and seq != last + 1:
                gap = True
            if first < 0:
                first = seq
            last = seq
            skipped += run
            run = 0
            visit(pos, seq, pos - base)
            pos += _HDR + ((win[pos - base + 1] << 8) | win[pos - base + 2]) + 4
            good = pos
        return first, last, gap, good, skipped

    def recover(self):
        """Find the head in the log; cut a torn tail, step over damage in the middle.

        A record that is not whole is skipped byte by byte until the next whole
        record with a higher seq: a power cut only ever tears the tail, but flash
        bit rot can hit any record, and the records after it must not be lost
        with it. Skipped bytes are counted in recovered_bytes (resync_bytes for
        those before the last whole record), live records lost in them in `lost`
        and in `dropped`. After damage in the middle the log is rewritten with
        its live records only, renumbered from the head, so the head file's head
        stays right whether or not the power holds until the new head file is
        written.

        The log is read through one window of _WIN bytes, never whole, and no
        list of its records is made: recovery runs in the same heap whatever the
        outbox holds.
        """
        if self._f:
            self._f.close()
            self._f = None
        self._mark = None
        trusted = self._read_head()
        size = os.stat(self._log)[6] if exists(self._log) else 0
        at = [-1, -1]     # offsets of the first record, and of the first with seq >= head
        head = self.head

        def visit(pos, seq, _o):
            if at[0] < 0:
                at[0] = pos
            if at[1] < 0 and seq >= head:
                at[1] = pos

        f = open(self._log, "rb") if size else None
        try:
            first, last, gap, good, skipped = self._scan(f, size, visit) if f else (-1, -1, False, 0, 0)
            self.recovered_bytes = skipped + size - good
            self.resync_bytes = skipped
            self.lost = 0
            if first >= 0 and not trusted:
                self.head = first     # no head file (or a damaged one): the log says
                at[1] = at[0]
            rebuilt = bool(skipped or gap)
            if rebuilt:
                self._rebuild(f, size, last)
            elif good < size:
                # keep the whole records only: copy them, then swap (atomic rename)
                self._copy(f, good)
        finally:
            if f is not None:
                f.close()
        if rebuilt:
            self._commit_rebuild()
        else:
            self._take_log(first, last, good, good < size, at[1])
        if self.head < self._first:
            # records before the file's first one were compacted away
            self.head = self._first
            self._head_off = at[0] if at[0] >= 0 else self._size
        if self.head >= self.next:
            self.head = self.next
            self._head_off = self._size
        if self.lost and not rebuilt:
            self._write_head()

    def _take_log(self, first, last, good, cut, head_off):
        """Adopt the scanned log as it is (cut to its last whole record when `cut`)."""
        if cut:
            os.rename(self._log + ".tmp", self._log)
        self._size = good
        self._first = first if first >= 0 else self.next
        if first >= 0 and self.next > last + 1:
            # the head file counts records the log no longer holds (a power cut
            # between _rebuild's two writes, or a lost tail): the log is the truth
            gone = self.next - max(self.head, last + 1)
            if gone > 0:
                self.lost = gone
                self.dropped += gone
            self.next = last + 1
        elif first >= 0:
            self.next = last + 1
        self._head_off = head_off if head_off >= 0 else good

    def _copy(self, f, n):
        """The log's first n bytes to outbox.log.tmp."""
        win = self._win
        f.seek(0)
        with open(self._log + ".tmp", "wb") as dst:
            while n > 0:
                k = f.readinto(win) or 0
                if k <= 0:
                    break
                k = min(k, n)
                dst.write(memoryview(win)[0:k])
                n -= k

    def _rebuild(self, f, size, last):
        """Damage in the middle: the live whole records, renumbered from the head, to .tmp."""
        head = self.head
        mv = memoryview(self._win)
        if len(self._wbuf) < _MAX_REC:
            self._wbuf = bytearray(_MAX_REC)
        out = self._wbuf
        state = [head, 0]     # next seq to write, bytes written
        with open(self._log + ".tmp", "wb") as dst:
            def visit(_pos, seq, o):
                if seq < head:
                    return
                ln = (mv[o + 1] << 8) | mv[o + 2]
                r = decode(mv[o + _HDR:o + _HDR + ln], self._names, self._bytes)
                n = encode_into(out, 0, state[0], r[1], r[2], r[3], r[4], r[5],
                                self._b(r[6]), self._b(r[7]))
                dst.write(memoryview(out)[0:n])
                state[0] += 1
                state[1] += n
            self._scan(f, size, visit)
        seq = state[0]
        top = max(self.next, last + 1)
        self.lost = (top - head) - (seq - head) if top > head else 0
        self._size = state[1]
        self._head_off = 0
        self._first = head
        self.next = seq

    def _commit_rebuild(self):
        os.rename(self._log + ".tmp", self._log)
        self.dropped += self.lost
        self._write_head()

    # --- where a record is ---
    def _offset_of(self, seq):
        """File offset of live record `seq` (the end of the log for seq >= next)."""
        if seq >= self.next:
            return self._size
        s, off = self.head, self._head_off
        m = self._mark
        if m is not None and self.head <= m[0] <= seq:
            s, off = m
        if s == seq:
            return off
        if self._f is not None:
            self._f.flush()
        hdr = self._hdr
        with open(self._log, "rb") as f:
            while s < seq:
                f.seek(off)
                f.readinto(hdr)
                off += _HDR + ((hdr[1] << 8) | hdr[2]) + 4
                s += 1
        return off

    def _move_head(self, seq):
        """The head to `seq` (<= next), with its offset."""
        self._head_off = self._offset_of(seq)
        self.head = seq

    # --- appending ---
    def depth(self):
        return self.next - self.head

    def _b(self, s):
        b = self._bytes.get(s)
        if b is None:
            b = self._bytes[s] = s.encode()
            if len(b) > 255:
                raise ValueError("name or unit longer than 255 bytes")
        return b

    def append(self, records):
        """Append [(flags, run, t, kind, value, name, unit), ...]; return the first seq.

        The batch is one write(): records of one measurement land together.
        """
        first = self.next
        pos = 0
        buf = self._wbuf
        for r in records:
            nb = self._b(r[5])
            ub = self._b(r[6])
            need = pos + _HDR + _FIX_LEN + 8 + 2 + len(nb) + len(ub) + 4
            if r[3] == "vs":
                need += 256   # its text, at most 255 bytes and a length
            if need > len(buf):
                nbuf = bytearray(max(need, 2 * len(buf)))
                nbuf[0:pos] = buf[0:pos]
                buf = self._wbuf = nbuf
            pos += encode_into(buf, pos, self.next, r[0], r[1], r[2], r[3], r[4], nb, ub)
            self.next += 1
        if self._f is None:
            self._f = open(self._log, "ab")
        self._f.write(memoryview(buf)[0:pos])
        self._f.flush()
        self._size += pos
        over = self.depth() - self.max
        if over > 0:
            self.dropped += over
            self._move_head(self.head + over)
            self._write_head()
            self._maybe_compact()
        return first

    # --- reading and acknowledging ---
    def peek(self, n):
        """Up to n live records (decoded) from the head, oldest first."""
        s = self.head
        out = []  # type: list
        end = min(self.next, s + n)
        if s >= end:
            return out
        pos = self._offset_of(s)
        if self._f is not None:
            self._f.flush()
        win = self._win
        mv = memoryview(win)
        base = have = 0
        with open(self._log, "rb") as f:
            for _ in range(s, end):
                if base + have - pos < _MAX_REC and base + have < self._size or pos < base:
                    f.seek(pos)
                    base = pos
                    have = f.readinto(win) or 0
                o = pos - base
                ln = (win[o + 1] << 8) | win[o + 2]
                out.append(decode(mv[o + _HDR:o + _HDR + ln], self._names, self._bytes))
                pos += _HDR + ln + 4
        self._mark = (end, pos)
        return out

    def ack(self, upto_seq):
        """Records up to and including upto_seq are stored by the hub: drop them."""
        if upto_seq + 1 <= self.head:
            return
        self._move_head(min(upto_seq + 1, self.next))
        self._write_head()
        self._maybe_compact()

    def drop(self, upto_seq):
        """Give up records up to upto_seq (unresolvable time): counted as dropped."""
        n = min(upto_seq + 1, self.next) - self.head
        if n > 0:
            self.dropped += n
            self.ack(upto_seq)

    def _maybe_compact(self, force=False):
        if self.head - self._first <= 0:
            return
        cut = self._head_off
        if not force and (cut < _COMPACT_MIN or cut * 2 < self._size):
            return
        if self._f is not None:
            self._f.close()
            self._f = None
        tmp = self._log + ".tmp"
        win = self._win
        with open(self._log, "rb") as src, open(tmp, "wb") as dst:
            src.seek(cut)
            while True:
                k = src.readinto(win) or 0
                if k <= 0:
                    break
                dst.write(memoryview(win)[0:k])
        os.rename(tmp, self._log)
        m = self._mark
        self._mark = (m[0], m[1] - cut) if m is not None and m[0] >= self.head else None
        self._first = self.head
        self._size -= cut
        self._head_off = 0

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None
