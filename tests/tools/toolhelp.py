"""Helpers shared by the tools and HIL tests (imported by name: tests/tools is on sys.path).

`require` is the one from tests/conftest.py (skip locally, fail under CI=true),
loaded by path because tests/ is not a package.
"""

import importlib.util
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLI = [sys.executable, "-m", "smartpark.tools.cli"]

_spec = importlib.util.spec_from_file_location(
    "_smartpark_tests_conftest", os.path.join(ROOT, "tests", "conftest.py"))
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
require = _conftest.require
IN_CI = _conftest.IN_CI


def smartpark(*args, timeout=180, **kw):
    """Run the real `smartpark` command; returns CompletedProcess (text)."""
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kw)
