"""Memory safety of the compiled hot path (setup.py builds with boundscheck=False).

Every read near the end of a payload is tested with the payload placed so its
last byte is the last byte of a readable page and the next page is PROT_NONE:
a read one byte too far is a SIGSEGV, which the child process reports as a
failed test instead of taking pytest down. The same payloads were run under
AddressSanitizer (fast/README.md, "Memory safety").
"""

import os
import select
import socket
import subprocess
import sys
import textwrap

import pytest
from fastgen import NOW, hand_pack
from peers import require
from smartpark import fast
from smartpark.protocol import senml
from smartpark.protocol.errors import DecodeError

HERE = os.path.dirname(os.path.abspath(__file__))

GUARD = textwrap.dedent("""
    import ctypes, mmap, sys
    sys.path.insert(0, %r)
    PAGE = mmap.PAGESIZE
    NP = 4
    area = mmap.mmap(-1, (NP + 1) * PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(base + NP * PAGE, PAGE, 0) == 0
    mv = memoryview(area)

    def guarded(data):
        end = NP * PAGE
        area[end - len(data):end] = data
        return mv[end - len(data):end]
""") % HERE


def run_child(body, timeout=120):
    """Run GUARD + body in a fresh interpreter; a crash (signal) is a test failure."""
    proc = subprocess.run([sys.executable, "-c", GUARD + textwrap.dedent(body)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, "child died (rc %d, a negative rc is a signal):\n%s\n%s" % (
        proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    return proc.stdout


def decode_one(payload):
    b = fast.decode_batch([payload], NOW, fast.SeriesTable())
    return b.errors[0], b.records()


# ------------------------------------------------------------------ decode

CHUNKED_BN = [{"bn": "node-chunked/", "bt": NOW, "v": 1.0}, {"n": "s", "vs": "chunky", "u": "ms"}]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect guard page")
def test_every_truncation_at_a_guard_page():
    """Each seed cut at every length, ending at an unreadable page: no read past the end
    (the 11:17 crash: a chunked bn on a record without n keyed 16 bytes from the spill)."""
    out = run_child("""
        from smartpark import fast
        from smartpark.protocol import senml
        from fastgen import NOW, hand_pack
        seeds = [senml.encode([{"n": "node1/temp", "t": NOW, "v": 21.5, "u": "Cel"},
                               {"n": "node1/msg", "t": NOW, "vs": "hello"},
                               {"n": "node1/blob", "t": NOW, "vd": b"xyz"},
                               {"n": "node1/e", "t": NOW, "s": 2.5}], "cbor", base_name="node1/")]
        for p in ([{"bn": "node-chunked/", "bt": NOW, "v": 1.0}, {"n": "s", "vs": "chunky", "u": "ms"}],
                  [{"bn": "abcdefghijklmnop/", "n": "x", "v": 1.5, "bu": "W"}, {"v": 2.0},
                   {"n": "longer-sensor-name-over16", "v": 3}]):
            for indef in (False, True):
                for width in (2, 4, 8):
                    seeds.append(hand_pack(p, indef=indef, width=width))
        n = 0
        table = fast.SeriesTable()
        for s in seeds:
            for k in range(len(s) + 1):
                fast.decode_batch([guarded(s[:k])], NOW, table)
                n += 1
        full = fast.decode_batch([guarded(seeds[-1])], NOW, table)
        assert full.ok[0] and full.n_records == 3, full.errors
        print("ok", n)
    """)
    assert out.startswith("ok ")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect guard page")
def test_chunked_base_name_filling_the_spill_without_a_name():
    """bn chunked and exactly as long as the first spill allocation (4096 bytes), records
    without n: the series key must come from the name bytes only."""
    bn = "n" * 4095 + "/"
    payload = hand_pack([{"bn": bn, "bt": NOW, "v": 1.0}, {"bt": NOW + 1, "v": 2.0}], indef=True)
    err, recs = decode_one(payload)
    ref = senml.resolve(senml.decode(payload, "cbor"), now=NOW)
    assert err is None and [r["n"] for r in recs] == [r["n"] for r in ref] == [bn, bn]
    out = run_child("""
        from smartpark import fast
        from fastgen import NOW, hand_pack
        bn = "n" * 4095 + "/"
        p = hand_pack([{"bn": bn, "bt": NOW, "v": 1.0}, {"bt": NOW + 1, "v": 2.0}], indef=True)
        for k in range(len(p) - 40, len(p) + 1):
            b = fast.decode_batch([guarded(p[:k])], NOW, fast.SeriesTable())
        assert b.ok[0] and b.n_records == 2
        print("ok")
    """)
    assert out.strip() == "ok"


@pytest.mark.parametrize("fill", [4096 - 3, 4096 - 8, 4096 - 15, 8192 - 3])
def test_chunked_short_base_name_at_the_end_of_the_spill(fill):
    """The 11:17 crash: a chunked bn shorter than 16 bytes that ends the spill buffer (earlier
    chunked strings of the batch filled it), then a record without n: the old code keyed the
    empty name with a 16-byte read at bn's address, past the end of the spill allocation
    (AddressSanitizer: heap-buffer-overflow in short_key)."""
    filler = hand_pack([{"n": "a/x", "t": NOW, "vs": "f" * fill}], indef=True)
    short = hand_pack([{"bn": "nd/", "bt": NOW, "v": 1.0}, {"bt": NOW + 1, "v": 2.0}], indef=True)
    out = run_child("""
        from smartpark import fast
        from fastgen import NOW
        filler, short = %r, %r
        for k in range(3):
            for ps in ([filler, short], [filler, guarded(short)], [bytes(filler), bytes(short)]):
                b = fast.decode_batch(ps, NOW, fast.SeriesTable())
                assert b.ok[0] and b.ok[1], b.errors
                assert [r["n"] for r in b.records(1)] == ["nd/", "nd/"]
        print("ok")
    """ % (filler, short))
    assert out.strip() == "ok"


HUGE = b"\xff" * 8  # 2**64 - 1: offset + length must not wrap


@pytest.mark.parametrize("payload, what", [
    (b"\x81\xa1\x03\x7b" + HUGE + b"ab", "text string length 2**64-1"),
    (b"\x81\xa1\x08\x5b" + HUGE, "byte string length 2**64-1"),
    (b"\x81\xa1\x08\x5b\x7f" + b"\xff" * 7 + b"a", "byte string length 2**63+"),
    (b"\x81\xa1\x00\x7f\x7b" + HUGE + b"x\xff", "chunk length 2**64-1"),
    (b"\x9b" + HUGE + b"\xa1\x02\x00", "array count 2**64-1"),
    (b"\x81\xbb" + HUGE + b"\x02\x00", "map count 2**64-1"),
    (b"\x81\xa2\x02\x00\x21\xc2\x5b" + HUGE, "bignum length 2**64-1"),
    (b"\x81\xa1\x02\xfb\x40\x09", "double cut after 2 of 8 bytes"),
    (b"\x81\xa1\x02\xfa\x40", "single cut after 1 of 4 bytes"),
    (b"\x81\xa1\x02\xf9\x40", "half cut after 1 of 2 bytes"),
    (b"\x81\xa1\x02\x19\x01", "uint16 cut"),
    (b"\x81\xa1\x00\x7f\x61", "chunk head at the end"),
    (b"\x81\xa1\x00\x7f\x62a", "chunk body cut"),
    (b"\x81\xa1\x20\x5f", "indefinite byte string never ended"),
    (b"\x81\xa1\x00\x78", "1-byte length field missing"),
    (b"\x81\xa1\x00\x79\x00", "2-byte length field cut"),
])
def test_length_fields_near_the_end_are_errors(payload, what):
    err, recs = decode_one(payload)
    assert isinstance(err, DecodeError), what
    assert recs == []
    with pytest.raises(DecodeError):
        senml.decode(payload, "cbor")


# ------------------------------------------------------------------ udp

udp = fast.udp  # None: not built, SMARTPARK_PUREPYTHON=1, or not Linux


@pytest.fixture
def udp_built():
    require(udp is not None, "smartpark.fast.udp: %s" % fast.UNAVAILABLE.get("udp"))


@pytest.mark.compiled
@pytest.mark.usefixtures("udp_built")
def test_respond_refuses_a_none_peer():
    """respond(None, ...) read p.n / p.key from the None object (SIGSEGV before the fix)."""
    out = run_child("""
        import socket
        from smartpark.fast import udp
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        ep = udp.Endpoint(s.fileno())
        try:
            ep.respond(None, 1, b"", 0x44, None, None, b"", None)
        except TypeError as e:
            print("TypeError", e)
    """)
    assert out.startswith("TypeError")


@pytest.mark.compiled
@pytest.mark.usefixtures("udp_built")
def test_peer_ring_and_key_are_bounded():
    """A Peer made from Python with ring > 8 walked off its fixed arrays in find/claim/respond;
    a key longer than the 128-byte address slot overflowed the send buffer."""
    with pytest.raises(ValueError, match="ring"):
        udp.Peer(b"k", "a", None, 100)
    with pytest.raises(ValueError, match="ring"):
        udp.Peer(b"k", "a", None, 0)
    with pytest.raises(ValueError, match="128"):
        udp.Peer(b"k" * 129, "a", None, 2)
    with pytest.raises(TypeError):
        udp.Peer(None, "a", None, 2)


@pytest.mark.compiled
@pytest.mark.usefixtures("udp_built")
def test_respond_refuses_pktinfo_that_is_not_bytes():
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        ep = udp.Endpoint(s.fileno())
        p = udp.Peer(b"k" * 28, "a", None, 2)
        for bad in ("x" * 20, bytearray(20), memoryview(bytes(20))):
            with pytest.raises(TypeError, match="pktinfo"):
                ep.respond(p, 1, b"", 0x44, None, None, b"", bad)


CUTS = [
    b"\x48\x02\x00\x01abcde",            # token length 8, 5 bytes there
    b"\x40\x02\x00\x01\xd1",             # option delta 13, extension byte missing
    b"\x40\x02\x00\x01\xe1\x00",         # option delta 14, second extension byte missing
    b"\x40\x02\x00\x01\xbd",             # option length 13, extension byte missing
    b"\x40\x02\x00\x01\xbe\x00",         # option length 14, second extension byte missing
    b"\x40\x02\x00\x01\xbe\xff\xffr",    # option length 65804 declared, 1 byte there
    b"\x40\x02\x00\x01\xb1r\xc2\x00",    # Content-Format of 2 bytes, 1 there
    b"\x40\x02\x00\x01\xb1r\xff",        # payload marker, no payload
    b"\x40\x02\x00",                     # short header
]


@pytest.mark.compiled
@pytest.mark.usefixtures("udp_built")
@pytest.mark.parametrize("dgram", CUTS)
def test_classifier_cut_datagrams_are_not_reports(dgram):
    assert udp.parse_report(dgram) is None


@pytest.mark.compiled
@pytest.mark.usefixtures("udp_built")
def test_classify_datagrams_filling_the_receive_slot():
    """Datagrams exactly bufsize long (the last slot of the calloc'd ring) and longer ones
    (truncated by the kernel): classify reads only the bytes received."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as srv, \
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as cli:
        srv.bind(("::1", 0))
        srv.setblocking(False)
        ep = udp.Endpoint(srv.fileno(), nmsg=2, bufsize=64)
        head = b"\x48\x02\x12\x34" + b"tok12345" + b"\xb1r\x11\x70\xff"
        sent = [head + b"\xa0" * (64 - len(head)), head + b"\xa0" * 100] + list(CUTS)
        for d in sent:
            cli.sendto(d, srv.getsockname())
        seen = reports = 0
        for _ in range(100):
            if seen >= len(sent):
                break
            select.select([srv], [], [], 1.0)
            seen += ep.recv()
            reps, others = ep.classify(NOW, 10)
            reports += len(reps)
            for (p, mid, token, cf, payload, pki) in reps:
                assert (mid, token, cf, payload) == udp.parse_report(sent[0])
                ep.respond(p, mid, token, 0x44, 60, None, b"", pki)
            for other in others:
                assert len(other[0]) <= 64
            ep.flush()
        assert seen == len(sent)
        assert reports == 1  # the 64-byte one; the 114-byte one arrived truncated


# ------------------------------------------------------------------ rows, loadgen

@pytest.mark.parametrize("twin", [pytest.param("compiled", marks=pytest.mark.compiled), "pure"])
def test_batch_rows_refuses_shapes_it_would_index_past(twin):
    """rows.batch_rows indexes the batch's columns without bounds checks: more payload slots
    than payloads, or a first/count pointing outside the records, is a ValueError (in both
    twins, so they agree)."""
    from smartpark.fast import rows_py
    from smartpark.protocol.errors import SenMLError

    if twin == "compiled":
        require(fast.EXTENSIONS["rows"], "smartpark.fast.rows: %s" % fast.UNAVAILABLE.get("rows"))
    batch_rows = fast.batch_rows if twin == "compiled" else rows_py.batch_rows
    payload = senml.encode([{"n": "a/t", "t": NOW, "v": 1.0}], "cbor")
    table = fast.SeriesTable()
    batch = fast.decode_batch([payload], NOW, table)
    args = (lambda n: tuple(n.split("/", 1)), SenMLError, DecodeError)
    out = [None]
    batch_rows(batch, table, {}, [0], out, *args)
    assert out[0][0][:2] == ("a", "t")
    with pytest.raises(ValueError, match="payload slots"):
        batch_rows(batch, table, {}, [0, 1, 2], [None] * 3, *args)
    batch.count[0] = 1000
    with pytest.raises(ValueError, match="outside"):
        batch_rows(batch, table, {}, [0], out, *args)


@pytest.mark.compiled
def test_loadgen_checks_template_type_and_bt_offset():
    """The bt float64 is written into a fixed 1400-byte template slot: an offset past the
    template's end wrote past the peer array (heap overflow), a non-bytes template was read
    as if it were bytes."""
    loadgen = fast.loadgen
    require(loadgen is not None, "smartpark.fast.loadgen: %s" % fast.UNAVAILABLE.get("loadgen"))

    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.connect(("::1", 9))
        tmpl = b"\x44\x02\x00\x00abcd" + bytes(20)
        for off in (len(tmpl) - 7, 5000, 3):
            with pytest.raises(ValueError, match="bt offset"):
                loadgen.run([s.fileno()], [tmpl], [off], NOW, duration=0.01, drain=0)
        with pytest.raises(TypeError, match="bytes expected"):
            loadgen.run([s.fileno()], [bytearray(tmpl)], [-1], NOW, duration=0.01, drain=0)
