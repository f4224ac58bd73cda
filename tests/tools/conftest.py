"""Fixtures for the tools tests: firmware bundles, pty boards, the CLI.

`unix_bundle` is `smartpark firmware build --board unix` of the repository's
firmware/ (what runs on the unix port: the pty board, `smartpark simulate`),
`esp32_bundle` the default build, what goes onto an ESP32 (both without the
size report, which takes a while); `sized_unix_bundle` is the unix bundle with
it (heap figures in its manifest, a ROMFS image beside). `tiny_firmware` is a
small firmware tree written by the test, for the tool's own behaviour
(import following, compile errors) and for the flash error paths, where the
bundle's content does not matter; `tiny_bundle` is built for the unix port,
as the pty board it is flashed onto is one.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smartpark.tools import bundle  # noqa: E402
from toolhelp import smartpark  # noqa: E402


def _real_bundle(tmp_path_factory, *args, size=False):
    out = tmp_path_factory.mktemp("bundle") / "firmware"
    proc = smartpark("firmware", "build", *(() if size else ("--no-size",)), "--out", out, *args)
    assert proc.returncode == 0, proc.stderr
    return str(out)


@pytest.fixture(scope="session")
def unix_bundle(tmp_path_factory):
    return _real_bundle(tmp_path_factory, "--board", "unix")


@pytest.fixture(scope="session")
def esp32_bundle(tmp_path_factory):
    return _real_bundle(tmp_path_factory)


@pytest.fixture(scope="session")
def sized_unix_bundle(tmp_path_factory):
    """The unix bundle with its size report (measured heap) and ROMFS image."""
    return _real_bundle(tmp_path_factory, "--board", "unix", size=True)


TINY_MAIN = '''"""tiny firmware main"""
import app
app.run()
'''
TINY_APP = '''"""tiny firmware app: encodes one SenML-free ack and prints it"""
from smartpark.protocol import report
from sensors import reading


def run():
    ack = report.decode_ack(report.encode_ack(1700000000.0, stored=reading()))
    print("tiny app ok", ack["stored"])
'''
TINY_CONFIG = '''"""tiny config check (the firmware's contract: validate(raw) raises ValueError)"""


def validate(raw):
    if not isinstance(raw, dict) or "node" not in raw:
        raise ValueError("config key node: missing")
    for i, s in enumerate(raw.get("sensors", [])):
        if "name" not in s:
            raise ValueError("config key sensors[%d].name: missing" % i)
    return raw
'''
TINY_SENSORS = '''"""tiny sensors package"""


def reading():
    return 3
'''


@pytest.fixture
def tiny_firmware(tmp_path):
    fw = tmp_path / "fw"
    (fw / "sensors").mkdir(parents=True)
    (fw / "boot.py").write_text('"""boot"""\n')
    (fw / "main.py").write_text(TINY_MAIN)
    (fw / "app.py").write_text(TINY_APP)
    (fw / "config.py").write_text(TINY_CONFIG)
    (fw / "sensors" / "__init__.py").write_text(TINY_SENSORS)
    (fw / "README.md").write_text("not for the board\n")
    return str(fw)


@pytest.fixture
def tiny_bundle(tiny_firmware, tmp_path):
    out = str(tmp_path / "tiny-bundle")
    bundle.build_bundle(out=out, firmware_dir=tiny_firmware, quiet=True, board="unix")
    return out


@pytest.fixture
def pty_board(micropython_bin):
    from smartpark.tools.ptyboard import PtyBoard
    board = PtyBoard(micropython=micropython_bin)
    board.start()
    assert board.wait_output(b">>> ", 20), board.console()
    yield board
    board.stop()
