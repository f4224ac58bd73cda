"""`smartpark keys` (tools/keys.py) as a user runs it: output, exit codes, files.

The store itself is tested in tests/hub/test_keys.py; here the command: what it
prints (never a secret), which exit code each failure gets, and that its exports
are what the other side reads (aiocoap's FilesystemSecurityContext, `keys import`).
"""

import json
import os
import stat

import pytest
from smartpark.hub import keys
from smartpark.tools import keys as keyscli
from toolhelp import smartpark


def _secrets_of(data):
    out = []
    for rec in keys.load_all(str(data)):
        out += [rec["secret"].hex(), rec["salt"].hex()]
    return out


def test_add_list_rotate_revoke(tmp_path):
    data = tmp_path / "hub"
    proc = smartpark("keys", "add", "bay-1", "--data", data)
    assert proc.returncode == 0, proc.stderr
    rec = keys.get(str(data), "bay-1")
    assert proc.stdout.strip() == "bay-1 key id %s (new)" % rec.kid_hex
    assert smartpark("keys", "add", "bay-2", "--data", data).returncode == 0
    proc = smartpark("keys", "add", "bay-1", "--data", data)
    assert proc.returncode == keyscli.EXIT_EXISTS == 4
    assert "bay-1 already has a key" in proc.stderr
    proc = smartpark("keys", "list", "--data", data)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["node", "key", "id"] and len(lines) == 3
    assert lines[1].split()[:2] == ["bay-1", rec.kid_hex] and lines[1].split()[2].endswith("Z")
    for s in _secrets_of(data):
        assert s not in proc.stdout + proc.stderr
    listed = json.loads(smartpark("keys", "list", "--data", data, "--json").stdout)
    assert [set(x) for x in listed] == [{"node", "key_id", "created"}] * 2
    proc = smartpark("keys", "rotate", "bay-1", "--data", data)
    assert proc.returncode == 0, proc.stderr
    new = keys.get(str(data), "bay-1")
    assert new.kid_hex in proc.stdout and rec.kid_hex in proc.stdout and new != rec
    proc = smartpark("keys", "add", "bay-1", "--data", data, "--rotate")
    assert proc.returncode == 0 and "(rotated)" in proc.stdout
    proc = smartpark("keys", "add", "bay-3", "--data", data, "--rotate")
    assert proc.returncode == 0 and "(new)" in proc.stdout
    assert smartpark("keys", "revoke", "bay-3", "--data", data).returncode == 0
    proc = smartpark("keys", "revoke", "bay-2", "--data", data)
    assert proc.returncode == 0 and "revoked" in proc.stdout
    assert [r["node"] for r in keys.load_all(str(data))] == ["bay-1"]
    for cmd in (("revoke", "bay-2"), ("rotate", "bay-2"), ("export", "bay-2", "--node-file",
                                                           tmp_path / "x.json")):
        proc = smartpark("keys", *cmd, "--data", data)
        assert proc.returncode == keyscli.EXIT_UNKNOWN == 3, proc.stderr
        assert "node bay-2 has no key" in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_errors_and_their_exit_codes(tmp_path):
    data = tmp_path / "hub"
    proc = smartpark("keys", "add", "../escape", "--data", data)
    assert proc.returncode == 2 and "bad node id '../escape'" in proc.stderr
    assert not data.exists()
    assert smartpark("keys").returncode == 2
    assert smartpark("keys", "export", "n1", "--data", data).returncode == 2   # which half?
    smartpark("keys", "add", "n1", "--data", data)
    secret = keys.get(str(data), "n1")["secret"].hex()
    path = keys.key_path(str(data), "n1")
    doc = json.load(open(path))
    doc["salt"] = "00"
    with open(path, "w") as f:
        json.dump(doc, f)
    for cmd in (("list",), ("export", "n1", "--node-file", tmp_path / "n.json")):
        proc = smartpark("keys", *cmd, "--data", data)
        assert proc.returncode == keyscli.EXIT_DAMAGED == 5, proc.stderr
        assert path in proc.stderr and "field 'salt'" in proc.stderr
        assert secret not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    # a keys directory that cannot be written (a file stands where it should be)
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "keys").write_text("not a directory")
    proc = smartpark("keys", "add", "n1", "--data", blocked)
    assert proc.returncode == keyscli.EXIT_WRITE == 6, proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_data_directory_from_the_hubs_config(tmp_path):
    data = tmp_path / "srv"
    cfg = tmp_path / "hub.toml"
    cfg.write_text('data_dir = "%s"\n[coap]\nport = 5683\n' % data)
    assert smartpark("keys", "add", "n1", "--config", cfg).returncode == 0
    assert [r["node"] for r in keys.load_all(str(data))] == ["n1"]
    proc = smartpark("keys", "list", "--config", tmp_path / "missing.toml")
    assert proc.returncode == 2 and "missing.toml" in proc.stderr
    proc = smartpark("keys", "list", "--config", cfg, "--data", data)
    assert proc.returncode == 2          # one or the other


def test_export_node_half_and_hub_half_for_another_machine(tmp_path):
    data, far = tmp_path / "hub", tmp_path / "far"
    smartpark("keys", "add", "n1", "--data", data)
    rec = keys.get(str(data), "n1")
    node_file = tmp_path / "oscore.json"
    proc = smartpark("keys", "export", "n1", "--data", data, "--node-file", node_file)
    assert proc.returncode == 0, proc.stderr
    assert json.load(open(node_file)) == keys.node_half(rec)
    assert stat.S_IMODE(os.stat(node_file).st_mode) == 0o600
    assert "one place only" in proc.stderr and rec["secret"].hex() not in proc.stdout + proc.stderr
    hub_file = tmp_path / "n1.hub.json"
    proc = smartpark("keys", "export", "n1", "--data", data, "--hub-file", hub_file)
    assert proc.returncode == 0 and stat.S_IMODE(os.stat(hub_file).st_mode) == 0o600
    proc = smartpark("keys", "import", hub_file, "--data", far)
    assert proc.returncode == 0, proc.stderr
    assert keys.load_all(str(far)) == [rec]
    # another key for n1 on the far hub only with --replace
    smartpark("keys", "rotate", "n1", "--data", data)
    smartpark("keys", "export", "n1", "--data", data, "--hub-file", hub_file)
    proc = smartpark("keys", "import", hub_file, "--data", far)
    assert proc.returncode == 4 and "already has another key" in proc.stderr
    assert smartpark("keys", "import", hub_file, "--data", far, "--replace").returncode == 0
    assert keys.load_all(str(far)) == keys.load_all(str(data))
    (tmp_path / "junk.json").write_text("{")
    proc = smartpark("keys", "import", tmp_path / "junk.json", "--data", far)
    assert proc.returncode == 5 and "junk.json" in proc.stderr


def test_export_aiocoap_is_loaded_by_aiocoap(tmp_path):
    oscore = pytest.importorskip("aiocoap.oscore")
    data = tmp_path / "hub"
    smartpark("keys", "add", "n1", "--data", data)
    rec = keys.get(str(data), "n1")
    out = tmp_path / "ctx"
    proc = smartpark("keys", "export", "n1", "--data", data, "--aiocoap", out)
    assert proc.returncode == 0, proc.stderr
    assert "(written)" in proc.stdout
    ctx = oscore.FilesystemSecurityContext(str(out))
    try:
        assert ctx.sender_id == rec["sender_id"] and ctx.recipient_id == b""
    finally:
        ctx.lockfile.release()
    proc = smartpark("keys", "export", "n1", "--data", data, "--aiocoap", out)
    assert proc.returncode == 0 and "(unchanged)" in proc.stdout
    notempty = tmp_path / "mine"
    notempty.mkdir()
    (notempty / "a.txt").write_text("x")
    proc = smartpark("keys", "export", "n1", "--data", data, "--aiocoap", notempty)
    assert proc.returncode == 6 and "holds no aiocoap OSCORE context" in proc.stderr


def test_keys_is_a_smartpark_command():
    proc = smartpark("--help")
    assert "keys" in proc.stdout
