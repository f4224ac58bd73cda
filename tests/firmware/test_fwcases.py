"""Run the firmware cases (tests/firmware/cases/case_*.py) under CPython and the real micropython.

The firmware directory is on the path (as it is the device's root), and
`smartpark.protocol` comes from the repository's protocol/.
"""

import importlib
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CASES = os.path.join(HERE, "cases")
FIRMWARE = os.path.join(ROOT, "firmware")
RUNNER = os.path.join(ROOT, "tests", "mprunner.py")

for p in (FIRMWARE, CASES):
    if p not in sys.path:
        sys.path.insert(0, p)


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
_MP = {}


def _mp_results(modname, micropython_bin, micropython_path, tmp_root):
    if modname not in _MP:
        env = dict(os.environ)
        env["MICROPYPATH"] = ":".join([".frozen", FIRMWARE, micropython_path, CASES])
        proc = subprocess.run([micropython_bin, "-X", "heapsize=8M", RUNNER, modname, ""],
                              capture_output=True, text=True, timeout=300, env=env, cwd=tmp_root)
        res = {}
        for line in proc.stdout.splitlines():
            if line.startswith("PASS "):
                res[line[5:].strip()] = None
            elif line.startswith("FAIL "):
                name, _, why = line[5:].partition(": ")
                res[name] = why
        lines = proc.stdout.rstrip().splitlines()
        if not lines or not lines[-1].startswith("DONE"):
            res["__crash__"] = proc.stdout[-2000:] + proc.stderr[-2000:]
        _MP[modname] = res
    return _MP[modname]


@pytest.mark.parametrize("modname,name", PARAMS)
def test_cpython(modname, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(modname)
    getattr(mod, name)()


@pytest.mark.micropython
@pytest.mark.parametrize("modname,name", PARAMS)
def test_micropython(modname, name, micropython_bin, micropython_path, tmp_path_factory):
    res = _mp_results(modname, micropython_bin, micropython_path, str(tmp_path_factory.mktemp("mp")))
    if name not in res:
        pytest.fail("micropython did not run %s.%s: %s" % (modname, name, res.get("__crash__", "")))
    if res[name] is not None:
        pytest.fail("under micropython: " + res[name])
