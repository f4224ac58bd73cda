"""Run the firmware cases (tests/firmware/cases/case_*.py) under CPython and the real micropython.

The firmware directory is on the path (as it is the device's root), and
`smartpark.protocol` comes from the repository's protocol/.
"""

import importlib
import os

import pytest
from mpharness import check_case, collect_cases, run_micropython

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CASES = os.path.join(HERE, "cases")
FIRMWARE = os.path.join(ROOT, "firmware")

PARAMS = collect_cases(CASES, FIRMWARE)
_MP = {}


@pytest.mark.parametrize("modname,name", PARAMS)
def test_cpython(modname, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(modname)
    getattr(mod, name)()


@pytest.mark.micropython
@pytest.mark.parametrize("modname,name", PARAMS)
def test_micropython(modname, name, micropython_bin, micropython_path, tmp_path_factory):
    if modname not in _MP:
        _MP[modname] = run_micropython(
            micropython_bin, modname, [FIRMWARE, micropython_path, CASES],
            cwd=str(tmp_path_factory.mktemp("mp")))
    check_case(_MP[modname], modname, name, "under micropython")
