"""Fixtures for the tools tests: firmware bundles, pty boards, the CLI.

`real_bundle` is `smartpark firmware build` of the repository's firmware/
(fails under CI, skips locally, while firmware/ has no main.py yet).
`tiny_firmware` is a small firmware tree written by the test, for the tool's
own behaviour (import following, compile errors) and for the flash error
paths, where the bundle's content does not matter.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smartpark.tools import bundle  # noqa: E402
from toolhelp import ROOT, require, smartpark  # noqa: E402


@pytest.fixture(scope="session")
def real_bundle(tmp_path_factory):
    require(os.path.isfile(os.path.join(ROOT, "firmware", "main.py")),
            "firmware/main.py is not there yet (firmware issue): nothing to build")
    out = tmp_path_factory.mktemp("bundle") / "firmware"
    proc = smartpark("firmware", "build", "--out", out)
    assert proc.returncode == 0, proc.stderr
    return str(out)


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
    bundle.build_bundle(out=out, firmware_dir=tiny_firmware, quiet=True)
    return out


@pytest.fixture
def pty_board(micropython_bin):
    from smartpark.tools.ptyboard import PtyBoard
    board = PtyBoard(micropython=micropython_bin)
    board.start()
    assert board.wait_output(b">>> ", 20), board.console()
    yield board
    board.stop()
