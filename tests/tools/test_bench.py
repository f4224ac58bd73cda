"""`smartpark bench`: the table is the benchmarks/ run's own figures, with baseline ratios."""

import json
import re

from toolhelp import smartpark


def test_bench_prints_the_runs_figures_with_ratios(tmp_path):
    out = tmp_path / "bench.json"
    proc = smartpark("bench", "-k", "cbor_loads and 4", "--json", out, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.load(open(out))
    by_name = {b["name"]: b["stats"]["mean"] for b in report["benchmarks"]}
    assert set(by_name) == {"test_cbor_loads[cbor2-4]", "test_cbor_loads[protocol.cbor-4]"}
    rows = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"\s+(test_\S+)\s+.*\s([0-9.]+)x(\s+\(baseline\))?$", line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), bool(m.group(3)))
    assert rows["test_cbor_loads[cbor2-4]"] == (1.0, True)   # the outside implementation
    want = by_name["test_cbor_loads[cbor2-4]"] / by_name["test_cbor_loads[protocol.cbor-4]"]
    assert rows["test_cbor_loads[protocol.cbor-4]"][0] == round(want, 2)
    assert "machine:" in proc.stdout and "command: pytest benchmarks" in proc.stdout


def test_bench_nothing_matched():
    proc = smartpark("bench", "-k", "no_such_benchmark_anywhere", timeout=300)
    assert proc.returncode == 4 and "no benchmark matched" in proc.stderr


def test_bench_bad_k_expression_is_a_usage_error():
    proc = smartpark("bench", "-k", "(((", timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "pytest refused the arguments" in proc.stderr and "(((" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_unwritable_json_is_refused_before_running(tmp_path):
    proc = smartpark("bench", "-k", "cbor_loads", "--json", tmp_path / "no" / "such" / "x.json",
                     timeout=120)
    assert proc.returncode == 2 and "cannot write --json" in proc.stderr
    assert "running" not in proc.stderr  # checked before any benchmark ran
