"""Run the shared protocol cases (tests/protocol/cases/case_*.py) under both interpreters.

Every `test_*` function in a case module becomes two pytest cases: one that
calls it in this CPython process, one that reads its result from a run of the
real `micropython` binary over the same module.
"""

import importlib
import os

import pytest
from mpharness import check_case, collect_cases, run_micropython

CASES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases")
PARAMS = collect_cases(CASES)
_MP_RESULTS = {}


@pytest.mark.parametrize("modname,name", PARAMS)
def test_cpython(modname, name, vectors_dir):
    mod = importlib.import_module(modname)
    if hasattr(mod, "setup"):
        mod.setup(vectors_dir)
    getattr(mod, name)()


@pytest.mark.micropython
@pytest.mark.parametrize("modname,name", PARAMS)
def test_micropython(modname, name, micropython_bin, micropython_path, vectors_dir):
    if modname not in _MP_RESULTS:
        _MP_RESULTS[modname] = run_micropython(
            micropython_bin, modname, [micropython_path, CASES], vectors_dir)
    check_case(_MP_RESULTS[modname], modname, name, "under micropython")
