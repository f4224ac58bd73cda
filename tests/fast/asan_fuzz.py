"""Bounded mutation fuzz of decode_batch (payloads ending at a guard page) and the udp classifier.

Not a pytest module: run it by hand, normally or under AddressSanitizer (fast/README.md,
"Memory safety"). SECS / USECS bound the decode and udp phases in seconds, SEED picks the
mutations. Exits non-zero (or dies with a signal / an ASan report) on a memory error.
"""

import ctypes
import mmap
import os
import random
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fastgen
import smartpark.fast.decode as d
import smartpark.fast.udp as u
from smartpark.protocol import coap, senml

print("decode from", d.__file__, "udp from", u.__file__, flush=True)
PAGE = mmap.PAGESIZE
libc = ctypes.CDLL(None)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
NP = 16
area = mmap.mmap(-1, (NP + 1) * PAGE)
base = ctypes.addressof(ctypes.c_char.from_buffer(area))
assert libc.mprotect(base + NP * PAGE, PAGE, 0) == 0
mv = memoryview(area)


def guarded(data):
    n = len(data)
    assert n <= NP * PAGE
    area[NP * PAGE - n : NP * PAGE] = data
    return mv[NP * PAGE - n : NP * PAGE]


rng = random.Random(int(os.environ.get("SEED", "1")))
now = 1.7e9
recs = [
    [
        {"n": "node1/temp", "t": now, "v": 21.5, "u": "Cel"},
        {"n": "node1/hum", "t": now, "v": 40, "u": "%RH"},
    ],
    [
        {"n": "n2/door", "t": now, "vb": True},
        {"n": "n2/msg", "t": now + 1, "vs": "hello world, a long string"},
    ],
    [
        {"n": "n3/blob", "t": now, "vd": b"\x00\x01" * 20},
        {"n": "n3/energy", "t": now, "s": 12.25, "u": "J"},
    ],
]
seeds = []
for r in recs:
    seeds.append(senml.encode(r, "cbor"))
    seeds.append(senml.encode(r, "cbor", base_name=r[0]["n"].split("/")[0] + "/"))
for p in [
    [
        {"bn": "abcdefghijklmnop/", "bt": now, "n": "x", "v": 1.5, "bu": "W"},
        {"v": 2.0},
        {"n": "longer-sensor-name-over16", "v": 3},
    ],
    [{"bn": "node-chunked/", "v": 1.0}, {"n": "s", "vs": "chunky", "u": "ms"}],
]:
    for indef in (False, True):
        for width in (2, 4, 8):
            seeds.append(fastgen.hand_pack(p, indef=indef, width=width))
INTERESTING = [
    0x00,
    0x17,
    0x18,
    0x19,
    0x1A,
    0x1B,
    0x1F,
    0x3F,
    0x5F,
    0x7F,
    0x9F,
    0xBF,
    0xFF,
    0xF9,
    0xFA,
    0xFB,
    0xC2,
    0xC3,
    0x78,
    0x58,
    0x7B,
    0x5B,
    0x9B,
    0xBB,
    0x20,
    0x21,
]


def mutate(b):
    b = bytearray(b)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if not b:
            b.append(rng.randrange(256))
            continue
        i = rng.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.choice(INTERESTING)
        elif op == 2:
            del b[i]
        elif op == 3:
            b.insert(i, rng.choice(INTERESTING))
        elif op == 4:
            del b[i:]
        else:
            j = rng.randrange(len(b))
            b[i:i] = b[j : j + rng.randint(1, 8)]
    return bytes(b)


deadline = time.time() + float(os.environ.get("SECS", "60"))
n = 0
# every truncation of every seed, alone, at the guard page
for s in seeds:
    for k in range(len(s) + 1):
        table = d.SeriesTable()
        d.decode_batch([guarded(s[:k])], now, table)
        d.decode_batch([s[:k], bytes(s[:k]), guarded(s[:k])], now, table)
        n += 1
print("truncations", n, flush=True)
table = d.SeriesTable()
while time.time() < deadline:
    s = rng.choice(seeds)
    m = mutate(s)
    b = d.decode_batch([guarded(m)], now, table)
    if b.ok[0]:
        b.records()
        for i in range(b.n_records):
            b.string_value(i)
    # batches mixing chunked, valid and mutated payloads (spill shared across payloads)
    if n % 5 == 0:  # a chunked filler ending near a spill capacity boundary, then the mutant
        fl = rng.choice((4096, 8192, 16384)) - rng.randrange(1, 24)
        filler = fastgen.hand_pack([{"n": "a/x", "t": now, "vs": "f" * fl}], indef=True)
        d.decode_batch([filler, guarded(m)], now, table)
    if n % 7 == 0:
        d.decode_batch([rng.choice(seeds), m, mutate(rng.choice(seeds)), guarded(m)], now, table)
    n += 1
print("decode cases", n, "table", len(table), flush=True)

# udp classifier: parse_report on random/mutated CoAP, and classify() with datagrams filling the rx buffer exactly
cseeds = []
for tok in (b"", b"\x01", b"12345678"):
    m = coap.Message(coap.CON, coap.POST, 0x1234, token=tok, payload=seeds[0])
    m.add_option(coap.URI_PATH, b"r")
    m.add_option(coap.CONTENT_FORMAT, coap.encode_uint(112))
    cseeds.append(m.encode())
    m2 = coap.Message(coap.CON, coap.POST, 7, token=tok, payload=b"\xa0")
    m2.add_option(coap.URI_HOST, b"h" * 20)
    m2.add_option(coap.URI_PORT, b"\x16\x33")
    m2.add_option(coap.URI_PATH, b"r")
    m2.add_option(coap.CONTENT_FORMAT, b"p")
    m2.add_option(2000, b"x" * 14)
    cseeds.append(m2.encode())
k = 0
deadline = time.time() + float(os.environ.get("USECS", "30"))
while time.time() < deadline:
    s = (
        mutate(rng.choice(cseeds))
        if k % 4
        else bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    )
    u.parse_report(s)
    for j in range(len(s) + 1):
        u.parse_report(s[:j])
    k += 1
print("parse_report cases", k, flush=True)
srv = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
srv.bind(("::1", 0))
srv.setblocking(False)
cli = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
ep = u.Endpoint(srv.fileno(), nmsg=2, bufsize=64)
k = 0
deadline = time.time() + float(os.environ.get("USECS", "30"))
while time.time() < deadline:
    s = mutate(rng.choice(cseeds))
    # pad/cut to exactly 64 bytes so any over-read leaves the calloc'd buffer (ASan)
    s = (s + bytes(64))[:64] if k % 2 else s[:64]
    cli.sendto(s, srv.getsockname())
    cli.sendto(s, srv.getsockname())
    time.sleep(0)
    if ep.recv():
        reps, others = ep.classify(time.time(), 1 if k % 3 else 0)
        for p, mid, token, _cf, _payload, pki in reps:
            ep.respond(p, mid, token, 0x44, 60, None, b"\xa0", pki)
        ep.flush()
    k += 1
print("classify cases", k, ep.n_reports, ep.n_other, flush=True)
