"""Outbox: persistence, bounds, ack, and recovery after a power cut at every byte of a write.

Runs in a fresh working directory (the node's flash) under CPython and MicroPython.
"""

import os

import outbox as ob


def _clean():
    for n in os.listdir("."):
        if n.startswith("outbox") or n.startswith("t_"):
            os.remove(n)


def _rec(i):
    return (ob.FLAG_ABS, 0, 1700000000000 + i, "v", i * 0.5, "air%d.temp" % (i % 3), "Cel")


def _read(p):
    with open(p, "rb") as f:
        return f.read()


def _write(p, b):
    with open(p, "wb") as f:
        f.write(b)


def test_roundtrip_and_reopen():
    _clean()
    o = ob.Outbox(100)
    seqs = o.append([_rec(i) for i in range(5)])
    assert seqs == 0
    o.append([(0, 7, 123456, "vb", True, "bay1.occupied", ""), (ob.FLAG_ABS, 0, 5, "s", 3600.0, "m.total", "J")])
    got = o.peek(10)
    assert [g[0] for g in got] == list(range(7))
    assert got[5] == (5, 0, 7, 123456, "vb", True, "bay1.occupied", "")
    assert got[6][4:] == ("s", 3600.0, "m.total", "J")
    o.ack(2)
    o.close()
    o2 = ob.Outbox(100)
    assert o2.head == 3 and o2.next == 7 and o2.depth() == 4
    assert [g[0] for g in o2.peek(100)] == [3, 4, 5, 6]
    assert o2.append([_rec(9)]) == 7
    o2.close()


def test_bounded_drop_oldest_counts():
    _clean()
    o = ob.Outbox(16)
    for i in range(40):
        o.append([_rec(i)])
    assert o.depth() == 16 and o.dropped == 24
    assert [g[0] for g in o.peek(100)] == list(range(24, 40))
    o.close()
    o = ob.Outbox(16)
    assert o.dropped == 24 and o.depth() == 16
    o.drop(25)
    assert o.dropped == 26 and o.head == 26
    o.close()


def test_power_cut_at_every_byte_of_an_append():
    _clean()
    o = ob.Outbox(100)
    o.append([_rec(i) for i in range(3)])
    o.ack(0)
    o.close()
    base = _read("outbox.log")
    new = ob.encode(3, ob.FLAG_ABS, 0, 42, "v", 1.25, "x.y", "Cel") + \
        ob.encode(4, ob.FLAG_ABS, 0, 43, "v", 2.5, "x.y", "Cel")
    head = _read("outbox.head")
    for k in range(len(new)):
        _write("outbox.log", base + new[:k])
        _write("outbox.head", head)
        o = ob.Outbox(100)
        whole = 0 if k < len(new) // 2 else 1
        assert o.next == 3 + whole, (k, o.next)
        assert [g[0] for g in o.peek(100)] == list(range(1, 3 + whole))
        assert _read("outbox.log") == base + new[:len(new) // 2 * whole]
        # and the node goes on appending after the torn tail
        assert o.append([_rec(7)]) == 3 + whole
        o.close()
        o = ob.Outbox(100)
        assert o.peek(100)[-1][3] == 1700000000007
        o.close()


def test_corruption_of_the_last_record_at_every_byte():
    _clean()
    o = ob.Outbox(100)
    o.append([_rec(i) for i in range(4)])
    o.close()
    good = _read("outbox.log")
    last = len(ob.encode(3, *_rec(3)))
    for k in range(len(good) - last, len(good)):
        bad = bytearray(good)
        bad[k] ^= 0x10
        _write("outbox.log", bytes(bad))
        o = ob.Outbox(100)
        assert [g[0] for g in o.peek(100)] == [0, 1, 2], k
        assert o.recovered_bytes == last
        o.close()


def test_torn_head_update_keeps_old_head():
    _clean()
    o = ob.Outbox(100)
    o.append([_rec(i) for i in range(6)])
    o.ack(1)
    o.close()
    _write("outbox.head.tmp", b"\x00\x00")    # power cut while writing the new head
    o = ob.Outbox(100)
    assert o.head == 2
    o.close()
    h = bytearray(_read("outbox.head"))
    h[3] ^= 1                                   # a damaged head file is ignored, never trusted
    _write("outbox.head", bytes(h))
    o = ob.Outbox(100)
    assert o.head == 0 and o.next == 6
    o.close()


def test_compaction_keeps_live_records():
    _clean()
    o = ob.Outbox(5000)
    for i in range(300):
        o.append([_rec(i)])
    before = os.stat("outbox.log")[6]
    o.ack(249)
    after = os.stat("outbox.log")[6]
    assert after < before / 2, (before, after)
    assert [g[0] for g in o.peek(1000)] == list(range(250, 300))
    o.append([_rec(300)])
    o.close()
    o = ob.Outbox(5000)
    assert o.head == 250 and o.next == 301
    assert [g[3] for g in o.peek(1000)] == [1700000000000 + i for i in range(250, 301)]
    o.ack(300)
    o.close()
    o = ob.Outbox(5000)
    assert o.depth() == 0 and o.next == 301
    assert o.append([_rec(1)]) == 301
    o.close()


def test_names_read_back_exactly_even_when_alike():
    _clean()
    o = ob.Outbox(100)
    names = ["air0.temp", "air1.temp", "air2.temp", "a", "ab", "air0.temp", "", "air10.temp"]
    o.append([(ob.FLAG_ABS, 0, i, "v", 1.0, names[i], "Cel" if i % 2 else "%RH") for i in range(len(names))])
    for _ in range(2):       # the second read comes from the interned names
        got = o.peek(100)
        assert [g[6] for g in got] == names
        assert [g[7] for g in got] == ["%RH", "Cel"] * 4
    o.close()


def test_names_written_in_this_run_read_back_as_the_same_objects():
    # peek() reuses the str the outbox encoded (its `_bytes`), so a name is held once
    _clean()
    o = ob.Outbox(100)
    names = ["air%d.%s" % (i % 3, "temp") for i in range(6)]
    o.append([(ob.FLAG_ABS, 0, i, "v", 1.0, names[i], "Cel") for i in range(6)])
    kept = list(o._bytes)
    got = o.peek(100)
    assert [g[6] for g in got] == names
    for g in got:
        assert any(g[6] is k for k in kept) and any(g[7] is k for k in kept)
    o.close()
    o = ob.Outbox(100)       # another run: decoded from the log, then interned
    got = o.peek(100)
    assert [g[6] for g in got] == names and got[0][6] is got[3][6]
    o.close()


def _eight_records_head_at_2():
    _clean()
    o = ob.Outbox(100)
    o.append([_rec(i) for i in range(8)])
    o.ack(1)
    o.close()
    data = _read("outbox.log")
    offs = [0]
    for i in range(8):
        offs.append(offs[-1] + len(ob.encode(i, *_rec(i))))
    assert offs[-1] == len(data)
    return data, _read("outbox.head"), offs


def _times(o):
    return [g[3] - 1700000000000 for g in o.peek(10000)]


def test_corruption_in_the_middle_at_every_byte_loses_only_that_record():
    data, head, offs = _eight_records_head_at_2()
    for k in range(offs[4], offs[5]):
        bad = bytearray(data)
        bad[k] ^= 0x10
        _write("outbox.log", bytes(bad))
        _write("outbox.head", head)
        o = ob.Outbox(100)
        assert _times(o) == [2, 3, 5, 6, 7], k        # the records after the damage survive
        assert o.lost == 1 and o.dropped == 1, (k, o.lost, o.dropped)
        assert o.resync_bytes == offs[5] - offs[4] == o.recovered_bytes, k
        assert o.append([_rec(20)]) == o.next - 1
        o.close()
        o = ob.Outbox(100)                              # repaired for good: nothing lost twice
        assert _times(o) == [2, 3, 5, 6, 7, 20] and o.dropped == 1 and o.lost == 0, k
        o.close()


def test_power_cut_between_the_repaired_log_and_its_head_counts_once():
    data, head, offs = _eight_records_head_at_2()
    bad = bytearray(data)
    bad[offs[3] + 9] ^= 1
    _write("outbox.log", bytes(bad))
    o = ob.Outbox(100)
    o.close()
    _write("outbox.head", head)        # the new head file never made it
    o = ob.Outbox(100)
    assert _times(o) == [2, 4, 5, 6, 7] and o.dropped == 1 and o.depth() == 5
    assert [g[0] for g in o.peek(100)] == [2, 3, 4, 5, 6]
    o.close()


def test_damage_among_acknowledged_records_loses_nothing_live():
    data, head, offs = _eight_records_head_at_2()
    for k in (offs[0], offs[1] + 5, offs[2] - 1):
        bad = bytearray(data)
        bad[k] ^= 0x80
        _write("outbox.log", bytes(bad))
        _write("outbox.head", head)
        o = ob.Outbox(100)
        assert _times(o) == [2, 3, 4, 5, 6, 7] and o.lost == 0 and o.dropped == 0, k
        assert o.resync_bytes > 0
        o.close()


def test_damage_at_the_head_record_and_garbage_between_records():
    data, head, offs = _eight_records_head_at_2()
    bad = bytearray(data)
    bad[offs[2] + 3] ^= 4                        # the oldest live record
    bad = bytes(bad[:offs[6]]) + b"\xa5\x00\x20junk" + bytes(bad[offs[6]:])
    _write("outbox.log", bad)
    _write("outbox.head", head)
    o = ob.Outbox(100)
    assert _times(o) == [3, 4, 5, 6, 7] and o.lost == 1 and o.dropped == 1
    assert o.resync_bytes == offs[3] - offs[2] + 7
    o.close()


def _big_log(n):
    _clean()
    o = ob.Outbox(5000)
    for i in range(0, n, 50):
        o.append([_rec(k) for k in range(i, min(n, i + 50))])
    o.close()
    data = _read("outbox.log")
    offs = [0]
    for i in range(n):
        offs.append(offs[-1] + len(ob.encode(i, *_rec(i))))
    assert offs[-1] == len(data)
    return data, offs


def test_damage_across_the_recovery_window_at_every_byte():
    # recovery reads the log through a 1024-byte window: damage a record that
    # straddles the first window's end and one far beyond it
    data, offs = _big_log(120)
    hit = [i for i in range(120) if offs[i] < 1024 < offs[i + 1]][0]
    for r in (hit, 100):
        for k in range(offs[r], offs[r + 1]):
            bad = bytearray(data)
            bad[k] ^= 0x08
            _write("outbox.log", bytes(bad))
            if "outbox.head" in os.listdir("."):
                os.remove("outbox.head")
            o = ob.Outbox(5000)
            got = _times(o)
            assert got == [i for i in range(120) if i != r], (r, k, len(got))
            assert o.resync_bytes == offs[r + 1] - offs[r], (r, k)
            o.close()


def test_recovery_of_a_long_log_with_a_torn_tail():
    # (its heap on a small board: tests/firmware/test_outbox_heap.py)
    data, offs = _big_log(2000)
    _write("outbox.log", data + ob.encode(2000, *_rec(2000))[:20])
    o = ob.Outbox(5000)
    assert o.depth() == 2000 and o.recovered_bytes == 20 and o.lost == 0
    assert _times(o)[-3:] == [1997, 1998, 1999]
    o.close()
    assert _read("outbox.log") == data


def _lcg(state):
    state[0] = (state[0] * 1103515245 + 12345) & 0x7FFFFFFF
    return state[0]


def test_random_appends_peeks_acks_and_reopens_match_a_model():
    """The outbox finds its records by walking their headers from the head or from where the
    last peek ended (no index): any mix of appends (with overflow), peeks, acks, drops,
    compactions and reopens reads back exactly what a list model holds."""
    _clean()
    rnd = [7]
    o = ob.Outbox(60)
    model = []     # live seqs, oldest first
    nxt = 0
    dropped = 0
    for step in range(400):
        op = _lcg(rnd) % 10
        if op < 4:
            k = 1 + _lcg(rnd) % 9
            first = o.append([_rec(nxt + i) for i in range(k)])
            assert first == nxt
            model += list(range(nxt, nxt + k))
            nxt += k
            over = len(model) - 60
            if over > 0:
                model = model[over:]
                dropped += over
        elif op < 7:
            n = 1 + _lcg(rnd) % 50
            got = o.peek(n)
            assert [g[0] for g in got] == model[:n], step
            assert [g[3] for g in got] == [1700000000000 + s for s in model[:n]], step
            if got and _lcg(rnd) % 3:
                upto = got[_lcg(rnd) % len(got)][0]
                o.ack(upto)
                model = [s for s in model if s > upto]
        elif op == 7 and model:
            upto = model[_lcg(rnd) % len(model)]
            o.drop(upto)
            dropped += len([s for s in model if s <= upto])
            model = [s for s in model if s > upto]
        elif op == 8:
            o.close()
            o = ob.Outbox(60)
        else:
            o._maybe_compact(force=True)
        assert o.depth() == len(model) and o.dropped == dropped, step
        assert o.head == (model[0] if model else nxt) and o.next == nxt, step
    o.close()


def test_reading_from_the_log_holds_no_index():
    """Opening, peeking and acknowledging use the same heap whatever the outbox holds."""
    import gc
    _clean()
    o = ob.Outbox(5000)
    for i in range(0, 1500, 50):
        o.append([_rec(k) for k in range(i, i + 50)])
    o.close()
    gc.collect()
    before = gc.mem_alloc() if hasattr(gc, "mem_alloc") else None
    o = ob.Outbox(5000)
    got = o.peek(40)
    o.ack(got[-1][0])
    o.peek(40)
    gc.collect()
    if before is not None:   # MicroPython: the outbox's own state, not 1,500 offsets
        assert gc.mem_alloc() - before < 6000, gc.mem_alloc() - before
    assert o.depth() == 1460 and o.peek(1)[0][0] == 40
    o.close()
