"""Shared plumbing for the case modules that run on both interpreters.

A case module (`case_*.py`) holds plain `test_*` functions that run under
CPython and, through tests/mprunner.py, under the `micropython` binary or on a
board's REPL. This module collects them as pytest params, runs a module under
the unix port, and reads the runner's PASS/FAIL/DONE lines back.
"""

import importlib
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "mprunner.py")


def collect_cases(case_dir, *extra_paths):
    """pytest params (module, function) for every test_* of every case_*.py in case_dir."""
    for p in (*extra_paths, case_dir):
        if p not in sys.path:
            sys.path.insert(0, p)
    params = []
    for fn in sorted(os.listdir(case_dir)):
        if fn.startswith("case_") and fn.endswith(".py"):
            mod = importlib.import_module(fn[:-3])
            for name in sorted(n for n in dir(mod) if n.startswith("test_")):
                params.append(pytest.param(fn[:-3], name, id="%s.%s" % (fn[:-3], name)))
    return params


def parse_results(out):
    """{case name: None (passed) or the failure text}; "__crash__" when the run did not finish."""
    results = {}
    for line in out.splitlines():
        if line.startswith("PASS "):
            results[line[5:].strip()] = None
        elif line.startswith("FAIL "):
            name, _, why = line[5:].partition(": ")
            results[name.strip()] = why
    lines = out.rstrip().splitlines()
    if not lines or not lines[-1].startswith("DONE"):
        results["__crash__"] = out[-2000:]
    return results


def run_micropython(micropython_bin, modname, path, vectors="", cwd=None, timeout=300):
    """Run one case module under the unix port with MICROPYPATH = path (a list)."""
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join([".frozen"] + list(path))
    proc = subprocess.run(
        [micropython_bin, "-X", "heapsize=8M", RUNNER, modname, vectors],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
    )
    results = parse_results(proc.stdout)
    if "__crash__" in results:
        results["__crash__"] += proc.stderr[-2000:]
    return results


def check_case(results, modname, name, where):
    """Fail the pytest case unless `name` passed in `results` (from `where`)."""
    if name not in results:
        pytest.fail("%s did not run %s.%s: %s" % (where, modname, name, results.get("__crash__", "")))
    if results[name] is not None:
        pytest.fail("%s: %s" % (where, results[name]))
