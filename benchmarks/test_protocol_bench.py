"""Figures for protocol/ (benchmarks, not tests; see protocol/README.md).

- CPython: protocol.cbor.loads versus cbor2.loads (the C baseline) on a
  typical 8-record and 4-record node pack, and SenML decode + resolve versus
  cbor2.loads + the same resolve. pytest-benchmark prints each row's ratio to
  the fastest of its group in parentheses.
- MicroPython: benchmarks/mp_pack_bench.py run by the real `micropython`
  binary: time and heap (gc.mem_alloc delta) to encode the 8-record pack, and
  its size as SenML-CBOR versus SenML-JSON.

    .venv/bin/pytest benchmarks/test_protocol_bench.py --benchmark-only -s
"""

import json
import os
import subprocess
import sys

import cbor2
import pytest
from smartpark.protocol import cbor, senml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from mp_pack_bench import typical_records  # noqa: E402  (one definition of the pack)
from peers import find_program, require  # noqa: E402  (the suite's peer lookup)

PACKS = {n: senml.encode(typical_records(n), "cbor") for n in (4, 8)}
NOW = 1763979100.0


def _cbor2_resolve(payload):
    """The baseline: cbor2's C decoder, labels mapped, then the same resolve."""
    pack = [{senml.LABELS.get(k, k): v for k, v in rec.items()} for rec in cbor2.loads(payload)]
    return senml.resolve(pack, now=NOW)


@pytest.mark.parametrize("n", [8, 4])
@pytest.mark.parametrize("impl", ["protocol.cbor", "cbor2"])
def test_cbor_loads(benchmark, impl, n):
    benchmark.group = "cbor.loads, %d-record SenML pack (%d bytes)" % (n, len(PACKS[n]))
    fn = cbor.loads if impl == "protocol.cbor" else cbor2.loads
    got = benchmark(fn, PACKS[n])
    assert got == cbor2.loads(PACKS[n])


@pytest.mark.parametrize("n", [8, 4])
@pytest.mark.parametrize("impl", ["protocol.senml", "cbor2+resolve"])
def test_senml_decode_resolve(benchmark, impl, n):
    benchmark.group = "SenML-CBOR decode + resolve, %d records" % n
    if impl == "protocol.senml":
        got = benchmark(lambda p: senml.resolve(senml.decode(p, "cbor"), now=NOW), PACKS[n])
    else:
        got = benchmark(_cbor2_resolve, PACKS[n])
    assert got == senml.resolve(senml.decode(PACKS[n], "cbor"), now=NOW) and len(got) == n


@pytest.mark.parametrize("fmt", ["cbor", "json"])
def test_senml_encode_cpython(benchmark, fmt):
    benchmark.group = "SenML encode, 8 records (CPython)"
    payload = benchmark(senml.encode, typical_records(8), fmt)
    assert senml.resolve(senml.decode(payload, fmt), now=NOW) == typical_records(8)


@pytest.mark.micropython
def test_micropython_encode_pack(benchmark, tmp_path):
    mp = find_program("micropython")
    require(mp is not None, "the micropython unix port is not installed")
    top = tmp_path / "mpy"
    (top / "smartpark").mkdir(parents=True)
    os.symlink(os.path.join(ROOT, "protocol"), top / "smartpark" / "protocol")
    env = dict(os.environ, MICROPYPATH=str(top))

    def run():
        proc = subprocess.run([mp, os.path.join(HERE, "mp_pack_bench.py"), "500"], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    benchmark.group = "micropython: encode a node pack (whole script run)"
    figures = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(figures)
    print("\nmicropython figures:", json.dumps(figures, sort_keys=True))
    assert figures["interpreter"] == "micropython"
    assert figures["size_cbor8"] == len(PACKS[8])  # same bytes as CPython's encoder
    assert figures["size_cbor8"] < figures["size_json8"]
