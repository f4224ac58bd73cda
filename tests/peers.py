"""Where the real peers are, and what happens when one is missing (one place for the suite).

A test that needs an outside program (the `micropython` unix port, libcoap's
`coap-client`, the compiled extensions) asks for it through `require()`. On a
developer machine a missing peer skips the test with the reason; under
CI=true it fails, so nothing that should run can hide behind a skip.

A plain module (not conftest.py) so that helpers in sub-folders and the
benchmarks import it by name: tests/ is on sys.path for every test module.
"""

import os
import shutil
import sys

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok, reason):
    """Skip (developer machine) or fail (CI) when a needed peer is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail("CI=true and a required peer is missing: " + reason, pytrace=False)
    pytest.skip(reason)


def find_program(*names):
    """First of `names` on PATH or beside the running interpreter (the venv)."""
    here = os.path.dirname(sys.executable)
    for name in names:
        cand = os.path.join(here, name)
        if os.access(cand, os.X_OK):
            return cand
        found = shutil.which(name)
        if found:
            return found
    return None
