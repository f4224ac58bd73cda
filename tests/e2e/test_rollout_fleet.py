"""Staged rollouts to real nodes (the unix-port firmware) through the real hub: a good version
to two nodes reaches the canary, then, once the canary confirmed it, the other; a version
that raises at import, rolled out to all 20, reaches the two canaries only, they fall back
to the version they ran, and the hub halts the rollout by itself, so the other 18 never
download it.

Each `micropython main.py` run is one boot of SMARTPARK_CYCLES report cycles (exit 0, or 75
when the node resets into a new version or back to the old one); the test runs every node
once per round, all at once, as their supervisor. The hub serves /fw from its firmware
store (a source bundle for the unix port) and checks its rollouts every 0.5 s.
"""

import json
import os
import shutil
import urllib.request

import harness
import pytest
from smartpark.hub import firmware
from smartpark.hub.process import start_hub
from smartpark.protocol.version import VERSION
from smartpark.tools import bundle
from smartpark.tools import cli as smartpark_cli

pytestmark = [pytest.mark.micropython, pytest.mark.slow]

GOOD = "9.0.0-good"
BAD = "9.0.0-bad"
NODES = ["fl-%02d" % i for i in range(20)]
EXIT_RESET = 75
MAX_ROUNDS = 8


def fleet_bundle(tmp_path, version, broken=False):
    """A source bundle for the unix port stamped `version` whose node.py differs from the
    running one (the node fetches that file and copies the rest from its own); `broken`:
    that node.py raises at import."""
    fw = str(tmp_path / ("fw-" + version))
    shutil.copytree(bundle.FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("__pycache__"))
    with open(os.path.join(fw, "node.py"), "a") as f:
        f.write("\n# firmware %s\n" % version)
        if broken:
            f.write("raise RuntimeError('broken build')\n")
    out = str(tmp_path / ("bundle-" + version))
    m = bundle.build_bundle(out=out, source=True, board="unix", quiet=True, firmware_dir=fw)
    bundle.write_manifest(out, dict(m, firmware_version=version))
    return out


@pytest.fixture
def fleet_hub(tmp_path, monkeypatch):
    """The harness's hub, with rollouts checked every 0.5 s."""
    conf = tmp_path / "hub.toml"
    conf.write_text("[rollouts]\ncheck_interval = 0.5\n")
    monkeypatch.setattr(harness, "start_hub",
                        lambda args, **kw: start_hub(args + ["--config", str(conf)], **kw))
    h = harness.Hub(tmp_path / "hub").start()
    yield h
    h.stop()


def rollout_file(hub, rid):
    """The rollout as the hub last wrote it (read without asking the hub, whose rollout
    routes would evaluate it first)."""
    try:
        with open(os.path.join(hub.data, "rollouts", "%d.json" % rid)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def urlget(hub, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (hub.http_port, path),
                                timeout=10) as r:
        return r.read()


def boot_all(nodes, cycles=2):
    for n in nodes:
        n.start(SMARTPARK_CYCLES=cycles)
    return [n.wait(120) for n in nodes]


def start(hub, capsys, *argv):
    """`smartpark rollout start ... --json` against the hub; the rollout it prints."""
    url = "http://127.0.0.1:%d" % hub.http_port
    assert smartpark_cli.main(["rollout", "start"] + list(argv) + ["--hub", url, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def run_until(hub, rid, fleet, settled):
    """Boot `fleet` round after round until the rollout's file says `settled(rollout)`;
    {node: exit codes}."""
    codes = {n: [] for n in fleet}
    for _ in range(MAX_ROUNDS):
        for n, code in zip(fleet, boot_all(list(fleet.values())), strict=True):
            codes[n].append(code)
        # the last round's reports are stored; the hub's check (every 0.5 s) follows
        if harness.wait_for(lambda: settled(rollout_file(hub, rid) or {"state": None}), 1):
            break
    return codes


def test_staged_rollouts_to_twenty_nodes(fleet_hub, make_node, tmp_path, capsys, monkeypatch):
    hub = fleet_hub
    nodes = {}
    for name in NODES:
        cfg = harness.node_config(name, "127.0.0.1:%d" % hub.port, watchdog_ms=0,
                                  coap={"ack_timeout": 0.5, "max_retransmit": 3},
                                  ota={"blocks_per_wake": 5000})
        cfg["sensors"] = cfg["sensors"][:1]
        nodes[name] = make_node(name, cfg)
    fleet = [nodes[n] for n in NODES]
    assert boot_all(fleet, cycles=1) == [0] * len(fleet), fleet[0].output()[-2000:]

    firmware.publish(hub.data, fleet_bundle(tmp_path, GOOD))
    firmware.publish(hub.data, fleet_bundle(tmp_path, BAD, broken=True))
    monkeypatch.setenv("SMARTPARK_ADMIN_TOKEN", hub.TOKEN)

    # a good version to two nodes: the canary takes and confirms it, then the other one
    pair = {n: nodes[n] for n in NODES[:2]}
    r = start(hub, capsys, GOOD, "--nodes", ",".join(pair), "--canary", "50", "--soak", "0")
    [first] = [x["node"] for x in r["nodes"] if x["phase"] == "canary"]
    [second] = [n for n in pair if n != first]
    codes = run_until(hub, r["id"], pair, lambda x: x["state"] == "done")
    good = rollout_file(hub, r["id"])
    assert good["state"] == "done", (good, codes, pair[first].output()[-3000:])
    a, b = good["nodes"][first], good["nodes"][second]
    assert a["status"] == b["status"] == "updated" and a["result"] == "success", good
    assert a["since"] <= good["promoted"] <= b["assigned"]  # canary confirmed, then the other
    for n in pair:
        assert EXIT_RESET in codes[n]
        assert json.loads(urlget(hub, "/api/nodes/" + n))["update"]["running"] == GOOD

    # a version that raises at import, to all 20
    r = start(hub, capsys, BAD, "--nodes", "fl-*", "--canary", "10", "--max-failures", "10",
              "--soak", "60")
    canaries = sorted(x["node"] for x in r["nodes"] if x["phase"] == "canary")
    assert r["state"] == "canary" and len(canaries) == 2, r
    rest = [n for n in NODES if n not in canaries]
    # download, switch, the failed import, the old version's report of it
    codes = run_until(hub, r["id"], nodes, lambda x: x["state"] != "canary")
    boot_all(fleet)  # one more report each, with the rollout halted
    for n in canaries:
        assert EXIT_RESET in codes[n], (n, codes[n], nodes[n].output()[-3000:])
    assert all(c == [0] * len(c) for n, c in codes.items() if n in rest), codes

    done = rollout_file(hub, r["id"])
    assert done["state"] == "halted", done
    assert done["reason"].startswith("%d of 2 assigned nodes failed" % sum(
        1 for n in canaries if done["nodes"][n]["status"] == "failed")), done["reason"]
    failed = [n for n in canaries if done["nodes"][n]["status"] == "failed"]
    assert failed, done["nodes"]
    for n in failed:
        e = done["nodes"][n]
        assert e["result"] == "rolled_back" and "broken build" in e["reason"], e
    assert all(done["nodes"][n]["status"] == "pending" for n in rest)

    db = os.path.join(hub.data, "hub.sqlite3")
    for name in NODES:
        node = nodes[name]
        view = json.loads(urlget(hub, "/api/nodes/" + name))["update"]
        # withdrawn or never offered: what the node would want without the rollout
        assert view["wanted"] == (GOOD if name in pair else None), (name, view)
        assert view["running"] == (GOOD if name in pair else VERSION), (name, view)
        if name in canaries or name in pair:
            continue
        # the rest: never offered it, so never fetched, never switched
        states = [v for _n, s, _t, _k, v in harness.stored_readings(db, name)
                  if s == "health.ota_state"]
        assert states and "downloading" not in states and "updating" not in states, states
        assert not os.path.exists(os.path.join(node.flash, "app_b"))
        assert not os.path.exists(os.path.join(node.flash, "ota.json"))

