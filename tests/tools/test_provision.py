"""The key rule flash, simulate and demo share (tools/provision.py), on node directories.

A node keeps its key only while it holds it; any other case gets a new key and
loses its sequence number file, so that no nonce repeats under one key.
"""

import json
import os

from smartpark.hub import keys
from smartpark.tools import provision


def _held(node_dir):
    with open(os.path.join(node_dir, "oscore.json")) as f:
        return json.load(f)


def test_node_directories_get_and_keep_their_keys(tmp_path):
    data = str(tmp_path / "hub")
    nodes = [("n%d" % i, str(tmp_path / "nodes" / ("n%d" % i))) for i in range(3)]
    plans = provision.provision_dirs(data, nodes)
    assert [p.action for p in plans] == ["new"] * 3
    recs = {r["node"]: r for r in keys.load_all(data)}
    assert len({r["sender_id"] for r in recs.values()}) == 3
    for node, d in nodes:
        assert _held(d) == keys.node_half(recs[node])
        assert oct(os.stat(os.path.join(d, "oscore.json")).st_mode & 0o777) == "0o600"
        with open(os.path.join(d, "oscore.seq"), "w") as f:
            f.write("77")
    # again: every node holds its key, nothing changes
    assert [p.action for p in provision.provision_dirs(data, nodes)] == ["kept"] * 3
    assert {r["node"]: r for r in keys.load_all(data)} == recs
    assert all(os.path.exists(os.path.join(d, "oscore.seq")) for _n, d in nodes)
    # one node lost its key (a fresh directory): it alone gets a new one and a new count
    os.remove(os.path.join(nodes[1][1], "oscore.json"))
    plans = provision.provision_dirs(data, nodes)
    assert [p.action for p in plans] == ["kept", "rotated", "kept"]
    assert "does not hold its key" in plans[1].why
    new = keys.get(data, "n1")
    assert new["sender_id"] != recs["n1"]["sender_id"] and _held(nodes[1][1]) == keys.node_half(new)
    assert open(os.path.join(nodes[1][1], "oscore.seq")).read() == "0"   # a new count
    assert open(os.path.join(nodes[0][1], "oscore.seq")).read() == "77"
    # one node lost its sequence file: its key cannot stay (the count would restart at 0)
    os.remove(os.path.join(nodes[0][1], "oscore.seq"))
    plans = provision.provision_dirs(data, nodes)
    assert [p.action for p in plans] == ["rotated", "kept", "kept"]
    assert "not its sequence number" in plans[0].why
    assert open(os.path.join(nodes[0][1], "oscore.seq")).read() == "0"
    recs["n0"] = keys.get(data, "n0")
    # a node holding another key than the store's (a copy from elsewhere) is not trusted
    other = keys.new_record("n2")
    keys.write_private(os.path.join(nodes[2][1], "oscore.json"), keys.node_half_bytes(other))
    p = provision.provision_dir(data, "n2", nodes[2][1])
    assert p.action == "rotated" and not keys.same_key(keys.get(data, "n2"), other)
    # rotate: every node, whatever it holds
    before = {r["node"]: r["sender_id"] for r in keys.load_all(data)}
    assert {p.action for p in provision.provision_dirs(data, nodes, rotate=True)} == {"rotated"}
    after = {r["node"]: r["sender_id"] for r in keys.load_all(data)}
    assert all(after[n] != before[n] for n in before)


def test_the_plan_names_no_secret(tmp_path):
    data = str(tmp_path / "hub")
    p = provision.provision_dir(data, "n1", str(tmp_path / "n1"))
    rec = keys.get(data, "n1")
    for text in (p.text(), json.dumps(p.summary())):
        assert rec.kid_hex in text and rec["secret"].hex() not in text
