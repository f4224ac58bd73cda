"""The hub's OSCORE key store (hub/keys.py): files, modes, ids, errors, exports.

The aiocoap export is checked by aiocoap itself: its FilesystemSecurityContext
loads the directory, and the keys it derives equal the ones RFC 8613's HKDF
gives for our record, computed with `cryptography`'s HKDF as the oracle (which
is first checked against the RFC's own test vector, Appendix C.1).
"""

import json
import logging
import os
import stat

import cbor2
import pytest
from smartpark.hub import keys

# RFC 8613 Appendix C.1.2 (the server's side: Sender ID 0x01, Recipient ID empty)
C1_SECRET = bytes(range(1, 17))
C1_SALT = bytes.fromhex("9e7ca92223786340")
C1_SERVER_SENDER_KEY = bytes.fromhex("ffb14e093c94c9cac9471648b4f98710")
C1_SERVER_RECIPIENT_KEY = bytes.fromhex("f0910ed7295e6ad4b54fc793154302ff")
C1_COMMON_IV = bytes.fromhex("4622d4dd6d944168eefb54987c")


def rfc8613_derive(secret, salt, id_, kind, length):
    """RFC 8613 section 3.2.1 with cryptography's HKDF-SHA256 (the oracle)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    info = cbor2.dumps([id_, None, 10, kind, length])
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_add_writes_one_private_file_per_node(tmp_path):
    data = str(tmp_path)
    rec = keys.add(data, "bay-north-07")
    path = os.path.join(data, "keys", "bay-north-07.json")
    assert _mode(os.path.join(data, "keys")) == 0o700 and _mode(path) == 0o600
    doc = json.load(open(path))
    assert set(doc) == {"node", "sender_id", "recipient_id", "secret", "salt", "created"}
    assert doc["node"] == "bay-north-07" and doc["recipient_id"] == ""
    assert len(bytes.fromhex(doc["sender_id"])) == 3
    assert len(bytes.fromhex(doc["secret"])) == 16 and len(bytes.fromhex(doc["salt"])) == 8
    assert isinstance(doc["created"], float)
    assert keys.get(data, "bay-north-07") == rec
    # load_all: what the hub calls; dicts with bytes values
    [loaded] = keys.load_all(data)
    assert loaded == rec and isinstance(loaded, dict)
    assert loaded["sender_id"] == bytes.fromhex(doc["sender_id"]) and loaded["recipient_id"] == b""
    assert loaded["secret"] == bytes.fromhex(doc["secret"]) and loaded["node"] == "bay-north-07"
    assert sorted(os.listdir(os.path.join(data, "keys"))) == [".lock", "bay-north-07.json"]


def test_modes_hold_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        keys.add(str(tmp_path), "n1")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "keys") == 0o700 and _mode(tmp_path / "keys" / "n1.json") == 0o600
    # a keys directory someone opened up is closed again on the next write
    os.chmod(tmp_path / "keys", 0o755)
    keys.add(str(tmp_path), "n2")
    assert _mode(tmp_path / "keys") == 0o700


def test_key_ids_are_unique_in_the_store(tmp_path, monkeypatch):
    data = str(tmp_path)
    ids = {keys.add(data, "n%d" % i)["sender_id"] for i in range(40)}
    assert len(ids) == 40
    # a random id that is taken is drawn again
    first = keys.get(data, "n0")["sender_id"]
    draws = iter([first, first, b"\x00\x00\x01"])
    monkeypatch.setattr(keys.secrets, "token_bytes",
                        lambda n: next(draws) if n == keys.KID_LEN else os.urandom(n))
    assert keys.add(data, "late")["sender_id"] == b"\x00\x00\x01"


def test_add_refuses_a_second_key_rotate_replaces_everything(tmp_path):
    data = str(tmp_path)
    rec = keys.add(data, "n1")
    with pytest.raises(keys.KeyExists, match="n1 already has a key"):
        keys.add(data, "n1")
    new = keys.rotate(data, "n1")
    assert new["node"] == "n1" and new["secret"] != rec["secret"]
    assert new["salt"] != rec["salt"] and new["sender_id"] != rec["sender_id"]
    assert keys.get(data, "n1") == new and _mode(keys.key_path(data, "n1")) == 0o600
    again = keys.add(data, "n1", rotate=True)
    assert again["sender_id"] not in (rec["sender_id"], new["sender_id"])
    with pytest.raises(keys.UnknownNode, match="node n2 has no key"):
        keys.rotate(data, "n2")


def test_revoke(tmp_path):
    data = str(tmp_path)
    keys.add(data, "n1")
    keep = keys.add(data, "n2")
    old = keys.revoke(data, "n1")
    assert old["node"] == "n1" and keys.find(data, "n1") is None
    assert keys.load_all(data) == [keep]
    with pytest.raises(keys.UnknownNode):
        keys.revoke(data, "n1")
    with pytest.raises(keys.UnknownNode):
        keys.get(data, "n1")
    assert keys.load_all(str(tmp_path / "no-hub-here")) == []


@pytest.mark.parametrize("node", ["../etc", "", "a/b", "x" * 33, ".hidden", "n1.json", None])
def test_bad_node_ids_are_refused(tmp_path, node):
    for call in (lambda: keys.add(str(tmp_path), node), lambda: keys.get(str(tmp_path), node),
                 lambda: keys.revoke(str(tmp_path), node)):
        with pytest.raises(keys.BadNodeId, match="bad node id"):
            call()
    assert not (tmp_path / "keys").exists()


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


@pytest.mark.parametrize("mangle,needle", [
    (lambda d: "{not json", "not valid JSON"),
    (lambda d: json.dumps(dict(d, secret=d["secret"][:-2])), "field 'secret' has 15 bytes"),
    (lambda d: json.dumps(dict(d, salt="zz" * 8)), "field 'salt' is not hex"),
    (lambda d: json.dumps(dict(d, node="other")), "it is for node 'other'"),
    (lambda d: json.dumps({k: v for k, v in d.items() if k != "sender_id"}), "'sender_id' missing"),
    (lambda d: json.dumps(dict(d, recipient_id=d["sender_id"])), "are the same"),
    (lambda d: json.dumps([d]), "not a JSON object"),
    (lambda d: json.dumps(dict(d, extra=1)), "unknown fields extra"),
])
def test_a_damaged_key_file_is_named_never_quoted(tmp_path, mangle, needle):
    data = str(tmp_path)
    rec = keys.add(data, "n1")
    path = keys.key_path(data, "n1")
    _write(path, mangle(json.load(open(path))))
    with pytest.raises(keys.DamagedKeyFile) as e:
        keys.get(data, "n1")
    text = str(e.value)
    assert path in text and needle in text and e.value.path == path
    assert rec["secret"].hex() not in text and rec["secret"].hex()[:-2] not in text
    with pytest.raises(keys.DamagedKeyFile):
        keys.load_all(data)
    # the hub may skip it and load the rest
    keys.add(data, "n2")
    seen = []
    assert [r["node"] for r in keys.load_all(data, on_error=seen.append)] == ["n2"]
    assert len(seen) == 1 and isinstance(seen[0], keys.KeyStoreError)


def test_an_unreadable_key_file(tmp_path):
    data = str(tmp_path)
    keys.add(data, "n1")
    path = keys.key_path(data, "n1")
    os.remove(path)
    os.mkdir(path)      # unreadable as a file, for root too
    with pytest.raises(keys.DamagedKeyFile, match="cannot be read"):
        keys.get(data, "n1")


def test_two_files_with_one_key_id(tmp_path):
    data = str(tmp_path)
    rec = keys.add(data, "n1")
    twin = keys.Record(rec, node="n2")
    _write(keys.key_path(data, "n2"), twin.to_json())
    with pytest.raises(keys.KeyIdTaken, match="used by nodes n1 and n2"):
        keys.load_all(data)


def test_secrets_stay_out_of_repr_and_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="smartpark.hub.keys")
    data = str(tmp_path)
    rec = keys.add(data, "n1")
    rec = keys.rotate(data, "n1")
    keys.revoke(data, "n1")
    secret, salt = rec["secret"], rec["salt"]
    for text in (repr(rec), str(rec), "%s" % rec, "%r" % [rec], caplog.text):
        assert secret.hex() not in text and repr(secret) not in text, text
        assert salt.hex() not in text and repr(salt) not in text
    assert rec.kid_hex in repr(rec) and "n1" in caplog.text


def test_a_failed_write_leaves_the_old_key(tmp_path, monkeypatch):
    data = str(tmp_path)
    rec = keys.add(data, "n1")

    def boom(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(keys.os, "replace", boom)
    with pytest.raises(keys.KeyStoreError, match="No space left"):
        keys.rotate(data, "n1")
    monkeypatch.undo()
    assert keys.get(data, "n1") == rec
    assert sorted(os.listdir(os.path.join(data, "keys"))) == [".lock", "n1.json"]


def test_import_and_export(tmp_path):
    here, there = str(tmp_path / "a"), str(tmp_path / "b")
    rec = keys.add(here, "n1")
    hub_file = str(tmp_path / "n1.hub.json")
    keys.write_private(hub_file, rec.to_json())
    assert _mode(hub_file) == 0o600
    assert keys.import_record(there, hub_file) == rec
    assert keys.import_record(there, hub_file) == rec          # the same key again: no change
    new = keys.rotate(here, "n1")
    with pytest.raises(keys.KeyExists):
        keys.import_record(there, new)
    assert keys.import_record(there, new, replace=True) == new
    # another node with a key id already taken
    clash = keys.Record(keys.new_record("n9"), sender_id=new["sender_id"])
    with pytest.raises(keys.KeyIdTaken):
        keys.import_record(there, clash)
    with pytest.raises(keys.DamagedKeyFile):
        keys.import_record(there, str(tmp_path / "missing.json"))
    # the node's half names the same context from the node's side
    half = keys.node_half(new)
    assert half == {"sender_id": new["sender_id"].hex(), "recipient_id": "",
                    "secret": new["secret"].hex(), "salt": new["salt"].hex()}
    assert keys.same_key(keys.from_node_half("n1", half), new)


def test_stamp_follows_every_change(tmp_path):
    data = str(tmp_path)
    seen = {keys.stamp(data)}
    for change in (lambda: keys.add(data, "n1"), lambda: keys.add(data, "n2"),
                   lambda: keys.rotate(data, "n1"), lambda: keys.revoke(data, "n2")):
        change()
        s = keys.stamp(data)
        assert s not in seen
        seen.add(s)
    assert keys.stamp(data) == keys.stamp(data)


def test_the_oracle_gives_rfc8613s_vector():
    assert rfc8613_derive(C1_SECRET, C1_SALT, b"\x01", "Key", 16) == C1_SERVER_SENDER_KEY
    assert rfc8613_derive(C1_SECRET, C1_SALT, b"", "Key", 16) == C1_SERVER_RECIPIENT_KEY
    assert rfc8613_derive(C1_SECRET, C1_SALT, b"", "IV", 13) == C1_COMMON_IV


def _aiocoap_context(path):
    oscore = pytest.importorskip("aiocoap.oscore")
    return oscore.FilesystemSecurityContext(str(path))


@pytest.mark.parametrize("vector", [True, False])
def test_aiocoap_loads_the_export_and_derives_our_keys(tmp_path, vector):
    if vector:
        rec = keys.Record(node="c1", sender_id=b"\x01", recipient_id=b"", secret=C1_SECRET,
                          salt=C1_SALT, created=0.0)
    else:
        rec = keys.add(str(tmp_path / "hub"), "n1")
    out = tmp_path / "ctx"
    assert keys.write_aiocoap(str(out), rec) == "written"
    assert _mode(out) == 0o700
    assert _mode(out / "settings.json") == 0o600 and _mode(out / "secret.json") == 0o600
    ctx = _aiocoap_context(out)
    try:
        assert ctx.sender_id == rec["sender_id"] and ctx.recipient_id == b""
        assert ctx.sender_key == rfc8613_derive(rec["secret"], rec["salt"], rec["sender_id"],
                                                "Key", 16)
        assert ctx.recipient_key == rfc8613_derive(rec["secret"], rec["salt"], b"", "Key", 16)
        assert ctx.common_iv == rfc8613_derive(rec["secret"], rec["salt"], b"", "IV", 13)
        if vector:
            assert ctx.sender_key == C1_SERVER_SENDER_KEY and ctx.common_iv == C1_COMMON_IV
    finally:
        ctx.lockfile.release()


def test_aiocoap_node_and_hub_sides_of_one_record_talk(tmp_path):
    """The node's export protects a request that a hub-side aiocoap context made from the
    same record (ids swapped) opens; and the reference implementation, where it is there,
    derives the same keys."""
    oscore = pytest.importorskip("aiocoap.oscore")
    from aiocoap import CON, POST, Message
    rec = keys.add(str(tmp_path / "hub"), "n1")
    keys.write_aiocoap(str(tmp_path / "node"), rec)
    hub_side = keys.Record(rec, sender_id=rec["recipient_id"], recipient_id=rec["sender_id"])
    files = keys.aiocoap_files(hub_side)
    os.makedirs(tmp_path / "hubctx")
    for name, doc in files.items():
        with open(tmp_path / "hubctx" / name, "w") as f:
            json.dump(doc, f)
    node = oscore.FilesystemSecurityContext(str(tmp_path / "node"))
    hub = oscore.FilesystemSecurityContext(str(tmp_path / "hubctx"))
    try:
        assert node.sender_key == hub.recipient_key and node.recipient_key == hub.sender_key
        req = Message(code=POST, uri_path=["r"], payload=b"hello")
        protected, _ = node.protect(req)
        assert protected.opt.oscore.endswith(rec["sender_id"])   # the kid
        protected.mid, protected.token, protected.mtype = 1, b"t", CON
        unprotected, _ = hub.unprotect(Message.decode(protected.encode()))
        assert unprotected.payload == b"hello" and unprotected.opt.uri_path == ("r",)
    finally:
        node.lockfile.release()
        hub.lockfile.release()
    try:
        from smartpark.protocol import oscore as ref
    except ImportError:
        return
    ctx = ref.Context(rec["secret"], rec["salt"], rec["sender_id"], rec["recipient_id"])
    assert ctx.sender_key == node.sender_key and ctx.common_iv == node.common_iv


def test_a_reexport_keeps_aiocoaps_sequence_number_and_a_new_key_drops_it(tmp_path):
    data = str(tmp_path / "hub")
    rec = keys.add(data, "n1")
    out = tmp_path / "ctx"
    keys.write_aiocoap(str(out), rec)
    (out / "sequence.json").write_text('{"next-to-send": 500, "received": "unknown"}')
    assert keys.write_aiocoap(str(out), rec) == "unchanged"
    assert (out / "sequence.json").exists()
    assert keys.write_aiocoap(str(out), keys.rotate(data, "n1")) == "replaced"
    assert not (out / "sequence.json").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(keys.KeyStoreError, match="holds no aiocoap OSCORE context"):
        keys.write_aiocoap(str(other), rec)
