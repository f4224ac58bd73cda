"""`smartpark bench`: run the benchmarks/ suite and print its figures with baseline ratios.

Runs `pytest benchmarks --benchmark-only` (pytest-benchmark; the same runs
as `make bench`), reads its JSON report and prints one table per group:
mean time per call, calls per second, and the speed ratio against the
group's baseline measured in the same run: the row whose name names an
outside implementation (cbor2, aiocoap, libcoap, "bare"), else the fastest
row. A ratio of 2.00 means twice as fast as the baseline. Benchmarks that
report their own figures (pytest-benchmark extra_info, e.g. the hub's
ingest rate vs bare aiocoap) are printed beneath their group.

Exit codes: 0 figures printed; 1 a benchmark failed (its output is shown);
2 usage: pytest refused the arguments (e.g. a malformed -k expression; its
message is shown) or --json cannot be written; 4 pytest-benchmark missing or
nothing matched -k.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

from smartpark.tools.progress import say

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(ROOT, "benchmarks")
BASELINE_WORDS = ("cbor2", "aiocoap", "libcoap", "bare", "baseline")
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOTHING = 4


def _is_baseline(bench):
    text = (bench.get("name", "") + " " + json.dumps(bench.get("params") or {})).lower()
    return any(w in text for w in BASELINE_WORDS)


def _fmt_time(seconds):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if seconds >= scale or unit == "ns":
            return "%.3g %s" % (seconds / scale, unit)
    return "%g s" % seconds


def tables(report):
    """[(group, [(name, mean s, ops/s, ratio, is_baseline)], extras)] from a pytest-benchmark JSON."""
    groups = {}
    for b in report.get("benchmarks", []):
        groups.setdefault(b.get("group") or b.get("fullname", "?"), []).append(b)
    out = []
    for group in sorted(groups):
        rows = groups[group]
        base = [b for b in rows if _is_baseline(b)]
        ref = min(base or rows, key=lambda b: b["stats"]["mean"])
        ref_mean = ref["stats"]["mean"]
        lines = []
        for b in sorted(rows, key=lambda b: b["stats"]["mean"]):
            mean = b["stats"]["mean"]
            lines.append((b["name"], mean, 1.0 / mean if mean else float("inf"),
                          ref_mean / mean if mean else float("inf"), b is ref))
        extras = []
        for b in rows:
            for k, v in sorted((b.get("extra_info") or {}).items()):
                extras.append("%s: %s = %s" % (b["name"], k, v))
        out.append((group, lines, extras))
    return out


def print_tables(report, stream=None, command=None):
    stream = stream or sys.stdout
    mi = report.get("machine_info", {})
    cpu = mi.get("cpu", {}) or {}
    stream.write("machine: %s, %s cpus, Python %s (%s)\n" % (
        cpu.get("brand_raw") or mi.get("processor") or platform.processor() or "?",
        cpu.get("count", os.cpu_count()), mi.get("python_version", platform.python_version()),
        mi.get("python_implementation", "")))
    if command:
        stream.write("command: %s\n" % command)
    for group, lines, extras in tables(report):
        stream.write("\n%s\n" % group)
        stream.write("  %-52s %12s %14s %10s\n" % ("benchmark", "mean", "per second", "vs base"))
        for name, mean, ops, ratio, is_ref in lines:
            stream.write("  %-52s %12s %14s %9.2fx%s\n" % (
                name[:52], _fmt_time(mean), "{:,.0f}".format(ops), ratio,
                "  (baseline)" if is_ref else ""))
        for e in extras:
            stream.write("    %s\n" % e)
    stream.flush()


def register(subparsers):
    p = subparsers.add_parser(
        "bench",
        help="run the ingest and decode benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-k", metavar="EXPR", help="only benchmarks matching this pytest -k expression")
    p.add_argument("--json", metavar="FILE", help="also keep pytest-benchmark's JSON report here")
    p.add_argument("--quick", action="store_true",
                   help="shorter hub load windows (SP_BENCH_SECONDS=1, SP_BENCH_ROUNDS=1)")
    p.set_defaults(func=run)


def run(args):
    try:
        import pytest_benchmark  # noqa: F401
    except ImportError:
        say("smartpark bench: pytest-benchmark is not installed (pip install -e '.[test]')")
        return EXIT_NOTHING
    if args.json:
        try:
            existed = os.path.exists(args.json)
            with open(args.json, "a"):
                pass
            if not existed:
                os.unlink(args.json)
        except OSError as e:
            say("smartpark bench: error: cannot write --json %s: %s" % (args.json,
                                                                       e.strerror or e))
            return EXIT_USAGE
    fd, report_path = tempfile.mkstemp(prefix="sp-bench-", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, "-m", "pytest", BENCH_DIR, "--benchmark-only", "-q",
           "-p", "no:cacheprovider", "--benchmark-json=" + report_path]
    if args.k:
        cmd += ["-k", args.k]
    env = dict(os.environ)
    if args.quick:
        env.setdefault("SP_BENCH_SECONDS", "1")
        env.setdefault("SP_BENCH_ROUNDS", "1")
    shown = "pytest benchmarks --benchmark-only" + (" -k %r" % args.k if args.k else "")
    say("smartpark bench: running %s (this takes a while) ..." % shown)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        if proc.returncode == 4:  # pytest: usage error (bad -k expression, option)
            errs = [ln for ln in proc.stdout.splitlines() if ln.startswith("ERROR")]
            say("smartpark bench: error: pytest refused the arguments: %s"
                % ("; ".join(errs) or proc.stdout.strip()[-1000:]))
            return EXIT_USAGE
        if proc.returncode == 5:
            say("smartpark bench: no benchmark matched%s" % (" -k %r" % args.k if args.k else ""))
            return EXIT_NOTHING
        try:
            with open(report_path) as f:
                report = json.load(f)
        except (OSError, ValueError):
            report = {}
        if proc.returncode != 0 or not report.get("benchmarks"):
            sys.stderr.write(proc.stdout[-4000:])
            say("smartpark bench: the benchmarks failed (pytest exit %d)" % proc.returncode)
            return EXIT_FAILED
        print_tables(report, command=shown)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
        return EXIT_OK
    finally:
        os.unlink(report_path)
