"""Fixtures for the hub tests (helpers live in hubutil.py)."""

import os

import pytest
from hubutil import HubProc

# the fast path needs smartpark.fast.udp: deselected with it in the SMARTPARK_PUREPYTHON=1 run
FRONTS = ["aiocoap", pytest.param("fastpath", marks=pytest.mark.compiled)]


@pytest.fixture(params=FRONTS)
def hub_factory(request, tmp_path):
    """Hubs for one test; the test runs twice, without and with the fast path."""
    started = []

    def make(extra=(), config=None, bind="127.0.0.1", data_dir=None, security="off"):
        d = data_dir or str(tmp_path / "data")
        os.makedirs(d, exist_ok=True)
        extra = list(extra) + (["--no-fast-path"] if request.param == "aiocoap" else [])
        extra += ["--security", security]  # "off": these tests' peers speak plaintext CoAP
        h = HubProc(d, extra=extra, config=config, bind=bind).start()
        h.path = request.param
        started.append(h)
        return h

    yield make
    for h in started:
        h.kill()


@pytest.fixture(scope="module", params=FRONTS)
def shared_hub(request, tmp_path_factory):
    """One hub for the tests that only add their own nodes (names unique per test).

    Every test using it runs twice: POST /r served by aiocoap (--no-fast-path) and by
    the fast path in front of it (the default).
    """
    d = str(tmp_path_factory.mktemp("hub"))
    extra = ["--http-token", "s3cret", "--security", "off"]  # plaintext peers
    if request.param == "aiocoap":
        extra.append("--no-fast-path")
    h = HubProc(d, extra=extra).start()
    h.path = request.param
    yield h
    h.kill()


