"""Run the shared protocol cases (tests/mpcases/case_*.py) under both interpreters.

Every `test_*` function in a case module becomes two pytest cases: one that
calls it in this CPython process, one that reads its result from a run of the
real `micropython` binary over the same module.
"""

import importlib
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(os.path.dirname(HERE), "mpcases")
RUNNER = os.path.join(os.path.dirname(HERE), "mprunner.py")

sys.path.insert(0, CASES)


def _case_modules():
    return sorted(n[:-3] for n in os.listdir(CASES) if n.startswith("case_") and n.endswith(".py"))


def _collect():
    params = []
    for modname in _case_modules():
        mod = importlib.import_module(modname)
        for name in sorted(n for n in dir(mod) if n.startswith("test_")):
            params.append(pytest.param(modname, name, id="%s.%s" % (modname, name)))
    return params


PARAMS = _collect()
_MP_RESULTS = {}


def _micropython_results(modname, micropython_bin, micropython_path, vectors_dir):
    if modname not in _MP_RESULTS:
        env = dict(os.environ)
        env["MICROPYPATH"] = ":".join([".frozen", micropython_path, CASES])
        proc = subprocess.run(
            [micropython_bin, "-X", "heapsize=8M", RUNNER, modname, vectors_dir],
            capture_output=True, text=True, timeout=300, env=env,
        )
        results = {}
        for line in proc.stdout.splitlines():
            if line.startswith("PASS "):
                results[line[5:].strip()] = None
            elif line.startswith("FAIL "):
                name, _, why = line[5:].partition(": ")
                results[name] = why
        if not proc.stdout.rstrip().splitlines()[-1:] or not proc.stdout.rstrip().splitlines()[-1].startswith("DONE"):
            results["__crash__"] = proc.stdout[-2000:] + proc.stderr[-2000:]
        _MP_RESULTS[modname] = results
    return _MP_RESULTS[modname]


@pytest.mark.parametrize("modname,name", PARAMS)
def test_cpython(modname, name, vectors_dir):
    mod = importlib.import_module(modname)
    if hasattr(mod, "setup"):
        mod.setup(vectors_dir)
    getattr(mod, name)()


@pytest.mark.micropython
@pytest.mark.parametrize("modname,name", PARAMS)
def test_micropython(modname, name, micropython_bin, micropython_path, vectors_dir):
    results = _micropython_results(modname, micropython_bin, micropython_path, vectors_dir)
    if name not in results:
        pytest.fail("micropython did not run %s.%s: %s" % (modname, name, results.get("__crash__", "")))
    if results[name] is not None:
        pytest.fail("under micropython: " + results[name])
