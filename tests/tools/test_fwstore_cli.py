"""`smartpark firmware build --version`, `smartpark firmware publish|list` (tools/fwstore.py on
hub/firmware.py), through the real command. Bundles are --source builds (no compiler)."""

import json
import os

from toolhelp import smartpark


def _build(tmp_path, version, name):
    out = tmp_path / name
    proc = smartpark("firmware", "build", "--source", "--no-size", "-q", "--version", version,
                     "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_build_stamps_the_version_and_refuses_bad_ones(tmp_path):
    out = _build(tmp_path, "2.0.0-rc1+b7", "b")
    assert json.loads((out / "manifest.json").read_text())["firmware_version"] == "2.0.0-rc1+b7"
    for bad in ("", "1.0/x", "../1", "-1", "v 1", "é1", "1" * 33):
        proc = smartpark("firmware", "build", "--source", "--no-size", "-q", "--version", bad,
                         "--out", tmp_path / "x")
        assert proc.returncode == 2 and "not a firmware version" in proc.stderr, (bad, proc)
        assert not (tmp_path / "x").exists()


def test_publish_and_list(tmp_path):
    data = tmp_path / "data"
    out = _build(tmp_path, "3.1.0", "b")
    proc = smartpark("firmware", "publish", out, "--data", data)
    assert proc.returncode == 0 and "firmware 3.1.0 published" in proc.stdout, proc
    proc = smartpark("firmware", "publish", out, "--data", data)
    assert proc.returncode == 0 and "already in" in proc.stdout, proc
    assert os.path.isfile(data / "firmware" / "3.1.0" / "manifest.json")

    (out / "main.py").write_text("# another main\n")  # damaged now: exit 5, named
    proc = smartpark("firmware", "publish", out, "--data", data)
    assert proc.returncode == 5 and "main.py" in proc.stderr, proc
    other = _build(tmp_path, "3.1.0", "c")  # the same version with other content: exit 6
    m = json.loads((other / "manifest.json").read_text())
    m["board"] = "unix"
    (other / "manifest.json").write_text(json.dumps(m))
    proc = smartpark("firmware", "publish", other, "--data", data)
    assert proc.returncode == 6 and "already published with other content" in proc.stderr

    proc = smartpark("firmware", "list", "--data", data, "--json")
    assert proc.returncode == 0, proc.stderr
    [row] = json.loads(proc.stdout)
    assert row["version"] == "3.1.0" and row["board"] == "esp32" and row["files"] > 10
    proc = smartpark("firmware", "list", "--data", data)
    assert proc.returncode == 0 and proc.stdout.startswith("3.1.0 ") and "files" in proc.stdout
    assert smartpark("firmware", "list", "--data", tmp_path / "none").stdout == ""
