"""Staged rollouts on a running hub (hub/rollouts.py): the version each node's real ack
offers (protected reports through aiocoap's OSCORE client, the ack decoded), canaries
first, the rest after the soak, a halt by itself on failures that withdraws the version,
silent nodes set aside by the timeout, config pins, cancel, a restart, and the API's and
the CLI's refusals.

One hub (security.mode = "oscore", admin and read tokens, nodes.firmware = "1.0.0",
rollouts checked every 0.2 s) serves every test but the restart; each test uses its own
nodes and versions. Node states are what a node's health readings say (health.fw,
health.ota_state, health.ota_result, health.ota_reason), stamped with the present time.
"""

import asyncio
import json
import os
import shutil
import threading
import time
import urllib.request

import aiocoap
import pytest
from hubutil import HubProc, run, senml_cbor
from smartpark.hub import firmware, keys, rollouts
from smartpark.protocol import report
from smartpark.tools import bundle
from smartpark.tools import cli as smartpark_cli

TOKEN = "ro-admin"
READ = "ro-read"
BASE = "1.0.0"  # nodes.firmware: what every node runs and wants without a rollout
EXTRA = ["--admin-token", TOKEN, "--read-token", READ, "--security", "oscore"]


def _config(tmp):
    path = os.path.join(tmp, "hub.toml")
    with open(path, "w") as f:
        f.write('[nodes]\nfirmware = "%s"\n[rollouts]\ncheck_interval = 0.2\n' % BASE)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("bundle") / "b")
    bundle.build_bundle(out=d, source=True, quiet=True, version="0.0.1")
    return d


def publish(h, built, version):
    """`built` under another version, into the hub's store (the running hub sees it)."""
    d = os.path.join(os.path.dirname(built), "v-" + version)
    if not os.path.isdir(d):
        shutil.copytree(built, d)
        m = json.load(open(os.path.join(d, "manifest.json")))
        bundle.write_manifest(d, dict(m, firmware_version=version))
    firmware.publish(h.data_dir, d)


# every node of the shared hub's tests, keyed before it starts (a key added to a running
# hub is found by its next scan of the key store, a second later)
GROUPS = {"ca": 6, "fa": 10, "pi": 4, "er": 1, "cl": 2, "to": 4}


def group(prefix):
    return ["%s-%d" % (prefix, i) for i in range(GROUPS[prefix])]


def add_keys(h, names):
    """Keys for `names` in the hub's store, and their aiocoap context directories."""
    for n in names:
        keys.add(h.data_dir, n)
        out = os.path.join(h.data_dir, "..", "ctx-" + n)
        keys.write_aiocoap(out, keys.get(h.data_dir, n))
        h.ctxdirs[n] = out
    return list(names)


def keyed_hub(d, config, names):
    h = HubProc(d, extra=EXTRA, config=config)
    h.secctx, h.ctxdirs = {}, {}
    add_keys(h, names)
    return h.start()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("rohub"))
    h = keyed_hub(d, _config(d), [n for p in GROUPS for n in group(p)])
    yield h
    h.kill()


def health(fw=BASE, state="idle", result=None, reason=None):
    recs = [("health.fw", fw, 0), ("health.ota_state", state, 0)]
    if result:
        recs += [("health.ota_result", result, 0), ("health.ota_reason", reason or "", 0)]
    return recs


def report_all(h, packs):
    """{node: records}: one protected report per node, at once; {node: the wanted firmware
    in its ack (None when the ack names none)}."""

    async def one(node, recs):
        c = await aiocoap.Context.create_client_context(transports=["oscore", "udp6"])
        key = h.coap + "/*"
        sc = h.secctx.get(node)  # one security context per key, kept: it holds the sequence
        if sc is None:
            c.client_credentials.load_from_dict({key: {"oscore": {"basedir": h.ctxdirs[node]}}})
            h.secctx[node] = c.client_credentials[key]
        else:
            c.client_credentials[key] = sc
        try:
            m = aiocoap.Message(code=aiocoap.POST, uri=h.coap + "/r",
                                payload=senml_cbor(node, recs, bt=time.time()))
            m.opt.content_format = 112
            r = await asyncio.wait_for(c.request(m).response, 20)
        finally:
            await c.shutdown()
        assert r.code == aiocoap.CHANGED, (node, r, r.payload)
        return report.decode_ack(r.payload)["firmware"]

    async def go():
        names = sorted(packs)
        return dict(zip(names, await asyncio.gather(*(one(n, packs[n]) for n in names)),
                        strict=True))

    return run(go())


def admin(h, method, path, body=None, token=TOKEN):
    return h.request(method, path, body, {"Authorization": "Bearer " + token} if token else {})


def wait_for(pred, timeout=15.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    return pred()


def wanted(h, node):
    """What the hub wants `node` to run now, read without evaluating the rollouts
    (GET /api/nodes/{node}; the rollout routes would evaluate them first)."""
    return h.get("/api/nodes/" + node)[1]["update"]["wanted"]


def rows(view):
    return {x["node"]: x for x in view["nodes"]}


class Events:
    """The hub's SSE stream of rollout events, read in a thread until `until(event)`."""

    def __init__(self, h, until):
        self.got = []
        self.resp = urllib.request.urlopen(h.url("/api/events?types=rollout"), timeout=30)
        assert self.resp.readline().startswith(b": smartpark hub")
        self.thread = threading.Thread(target=self._read, args=(until,), daemon=True)
        self.thread.start()

    def _read(self, until):
        kind = None
        for line in self.resp:
            line = line.decode().strip()
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "rollout":
                self.got.append(json.loads(line[6:]))
                if until(self.got[-1]):
                    break

    def wait(self):
        self.thread.join(20)
        self.resp.close()
        return self.got


def test_canaries_first_then_the_rest_after_the_soak(hub, built):
    nodes = group("ca")
    publish(hub, built, "8.1.0")
    assert report_all(hub, {n: health() for n in nodes}) == dict.fromkeys(nodes, BASE)
    events = Events(hub, lambda e: e.get("state") == "done" and "node" not in e)

    status, r = admin(hub, "POST", "/api/rollouts", {"version": "8.1.0", "nodes": "ca-*",
                                                     "canary": 30, "soak": 1.0,
                                                     "max_failures": 0})
    assert status == 201, r
    assert r["state"] == "canary" and r["selector"] == "ca-*"
    first = sorted(n for n, x in rows(r).items() if x["phase"] == "canary")
    assert first == sorted(rollouts.canaries(r["id"], "8.1.0", nodes, 30))  # ceil(0.3 x 6)
    assert len(first) == 2 and r["counts"]["updating"] == 2 and r["counts"]["pending"] == 4
    rest = [n for n in nodes if n not in first]

    # the real acks: only the canaries are offered the version
    acks = report_all(hub, {n: health() for n in nodes})
    assert acks == {n: "8.1.0" if n in first else BASE for n in nodes}
    # the canaries update; the rest are assigned by the hub's own check after the soak
    report_all(hub, {n: health("8.1.0", "idle", "success") for n in first})
    assert wait_for(lambda: wanted(hub, rest[0]) == "8.1.0"), hub.get("/api/rollouts/%d" % r["id"])
    r = hub.get("/api/rollouts/%d" % r["id"])[1]
    assert r["state"] == "rolling"
    assert r["promoted"] >= max(rows(r)[n]["since"] for n in first) + 1.0
    assert all(rows(r)[n]["status"] == "updated" and rows(r)[n]["result"] == "success"
               for n in first)
    assert report_all(hub, {n: health() for n in rest}) == dict.fromkeys(rest, "8.1.0")

    report_all(hub, {n: health("8.1.0") for n in rest})
    assert wait_for(lambda: hub.get("/api/rollouts/%d" % r["id"])[1]["state"] == "done")
    # a done rollout keeps offering its version (nodes.firmware would downgrade them)
    assert report_all(hub, {n: health("8.1.0") for n in nodes}) == dict.fromkeys(nodes, "8.1.0")
    got = events.wait()
    states = [e["state"] for e in got if "node" not in e]
    assert states == ["canary", "rolling", "done"], got
    assert sorted(e["node"] for e in got if e.get("status") == "updated") == nodes


def test_failures_halt_the_rollout_and_withdraw_the_version(hub, built):
    nodes = group("fa")
    publish(hub, built, "8.2.0")
    # every node once failed an older update: it repeats that result in its heartbeats
    old = health(BASE, "idle", "rolled_back", "an older version")
    report_all(hub, {n: old for n in nodes})
    status, r = admin(hub, "POST", "/api/rollouts", {"version": "8.2.0", "nodes": "fa-*",
                                                     "canary": 30, "soak": 0,
                                                     "max_failures": 10})
    assert status == 201, r
    rid = r["id"]
    c1, c2, c3 = sorted(n for n, x in rows(r).items() if x["phase"] == "canary")
    rest = [n for n in nodes if n not in (c1, c2, c3)]
    acks = report_all(hub, {n: old for n in nodes})  # the same old result, stamped after
    assert acks == {n: "8.2.0" if n in (c1, c2, c3) else BASE for n in nodes}
    time.sleep(0.5)  # a few of the hub's checks: the old result is no new failure
    assert hub.get("/api/rollouts/%d" % rid)[1]["counts"]["failed"] == 0

    # c3 switched and runs 8.2.0 on trial; c2 is downloading; c1 falls back
    report_all(hub, {c1: health(BASE, "downloading"), c2: health(BASE, "downloading"),
                     c3: health("8.2.0", "updating")})
    report_all(hub, {c1: health(BASE, "idle", "rolled_back", "import failed: broken build")})
    # 1 of 3 assigned nodes failed > 10 %: the hub halts by itself, c2 is withdrawn
    assert wait_for(lambda: wanted(hub, c2) == BASE)
    r = hub.get("/api/rollouts/%d" % rid)[1]
    assert r["state"] == "halted" and r["reason"].startswith("1 of 3 assigned nodes failed")
    x = rows(r)
    assert (x[c1]["status"], x[c1]["result"], x[c1]["reason"]) == (
        "failed", "rolled_back", "import failed: broken build")
    assert x[c2]["status"] == "withdrawn" and not x[c2]["wanted"]
    assert x[c3]["status"] == "updating" and x[c3]["wanted"]  # it runs it: no downgrade
    assert all(x[n]["status"] == "pending" and x[n]["assigned"] is None for n in rest)
    acks = report_all(hub, {n: old for n in nodes if n != c3})
    assert acks == dict.fromkeys(acks, BASE)  # the rest never got it
    report_all(hub, {c3: health("8.2.0", "idle", "success")})  # confirmed after the halt
    assert wait_for(lambda: rows(hub.get("/api/rollouts/%d" % rid)[1])[c3]["status"]
                    == "updated")
    assert admin(hub, "POST", "/api/rollouts/%d/halt" % rid)[0] == 409
    log = open(os.path.join(hub.data_dir, "hub.log")).read()
    assert log.count("rollout %d (8.2.0): halted: 1 of 3" % rid) == 1, log[-2000:]


def test_silent_nodes_time_out_without_failing_the_rollout(hub, built):
    t0, t1, t2, t3 = group("to")
    publish(hub, built, "8.6.0")
    report_all(hub, {n: health() for n in (t0, t1, t2, t3)})
    events = Events(hub, lambda e: e.get("state") == "done" and "node" not in e)
    # a canary that never comes back: nothing says the version works, so no promotion
    status, r = admin(hub, "POST", "/api/rollouts", {"version": "8.6.0", "nodes": "to-0,to-1",
                                                     "canary": 50, "soak": 0, "timeout": 1})
    assert status == 201 and r["timeout"] == 1, r
    first = [n for n, x in rows(r).items() if x["phase"] == "canary"]
    rest = [n for n in (t0, t1) if n not in first]
    assert len(first) == 1
    assert wait_for(lambda: hub.get("/api/rollouts/%d" % r["id"])[1]["state"] == "halted")
    r = hub.get("/api/rollouts/%d" % r["id"])[1]
    assert r["reason"].startswith("no canary updated within the timeout of 1 s"), r["reason"]
    assert rows(r)[first[0]]["status"] == "withdrawn" and rows(r)[rest[0]]["status"] == "pending"
    assert report_all(hub, {t0: health(), t1: health()}) == {t0: BASE, t1: BASE}

    # every node assigned at once: t2 updates, t3 stays silent and is set aside
    status, r = admin(hub, "POST", "/api/rollouts", {"version": "8.6.0", "nodes": "to-2,to-3",
                                                     "canary": 0, "timeout": 1})
    assert status == 201, r
    rid = r["id"]
    report_all(hub, {t2: health("8.6.0", "idle", "success")})
    assert wait_for(lambda: hub.get("/api/rollouts/%d" % rid)[1]["state"] == "done")
    r = hub.get("/api/rollouts/%d" % rid)[1]
    x = rows(r)
    assert x[t2]["status"] == "updated" and x[t3]["status"] == "timed_out", x
    assert x[t3]["reason"].startswith("not updated within 1 s: not seen since its assignment") and \
        "running %s, update state idle" % BASE in x[t3]["reason"], x[t3]["reason"]
    assert r["counts"]["timed_out"] == 1 and r["counts"]["failed"] == 0
    # still offered the version: when it comes back it updates, and the rollout says so
    assert report_all(hub, {t3: health()}) == {t3: "8.6.0"}
    report_all(hub, {t3: health("8.6.0", "idle", "success")})
    assert wait_for(lambda: rows(hub.get("/api/rollouts/%d" % rid)[1])[t3]["status"]
                    == "updated")
    got = events.wait()
    assert [e["node"] for e in got if e.get("status") == "timed_out"] == first + [t3], got
    assert any("1 timed out (still offered the version)" in (e.get("reason") or "")
               for e in got if e.get("state") == "done"), got


def test_pins_skipped_overlap_refused_and_cancel(hub, built):
    nodes = group("pi")
    publish(hub, built, "8.3.0")
    report_all(hub, {n: health() for n in nodes})
    assert admin(hub, "PUT", "/api/nodes/pi-0/config", {"firmware": "7.7.7"})[0] == 200
    status, r = admin(hub, "POST", "/api/rollouts", {"version": "8.3.0", "nodes": "pi-0,pi-[1-3]",
                                                     "canary": 0})
    assert status == 201, r
    assert r["state"] == "rolling" and r["counts"]["updating"] == 3
    assert rows(r)["pi-0"]["status"] == "skipped"
    assert rows(r)["pi-0"]["reason"] == "pinned to 7.7.7 by its node config"
    # precedence: the config pin, then the rollout, then nodes.firmware
    assert report_all(hub, {n: health() for n in nodes}) == {
        "pi-0": "7.7.7", "pi-1": "8.3.0", "pi-2": "8.3.0", "pi-3": "8.3.0"}
    status, e = admin(hub, "POST", "/api/rollouts", {"version": "8.3.0", "nodes": "pi-2"})
    assert status == 409 and e["parameter"] == "nodes", e
    assert e["error"].startswith("rollout %d (rolling) is active on 1 of these nodes (pi-2)"
                                 % r["id"]), e
    status, e = admin(hub, "POST", "/api/rollouts", {"version": "8.3.0", "nodes": "pi-0"})
    assert status == 400 and "pinned" in e["error"], e

    report_all(hub, {"pi-1": health("8.3.0")})
    status, c = admin(hub, "POST", "/api/rollouts/%d/cancel" % r["id"])
    assert status == 200 and c["state"] == "cancelled", c
    assert (rows(c)["pi-1"]["status"], rows(c)["pi-2"]["status"]) == ("updated", "withdrawn")
    # every node wants what it would without the rollout
    assert report_all(hub, {n: health() for n in nodes}) == {
        "pi-0": "7.7.7", "pi-1": BASE, "pi-2": BASE, "pi-3": BASE}
    assert admin(hub, "POST", "/api/rollouts/%d/cancel" % r["id"])[0] == 409


def test_api_refusals(hub, built):
    report_all(hub, {"er-0": health()})
    publish(hub, built, "8.4.0")
    ok = {"version": "8.4.0", "nodes": "er-0"}
    assert admin(hub, "POST", "/api/rollouts", ok, token=None)[0] == 401
    assert admin(hub, "POST", "/api/rollouts", ok, token=READ)[0] == 403
    for body, status, param, text in (
            ({}, 400, "version", "version is required"),
            ({"version": "a/b"}, 400, "version", "version must be"),
            ({"version": "9.9.9"}, 404, "version", "firmware 9.9.9 is not in the hub's store"),
            (dict(ok, canary=150), 400, "canary", "canary must be between 0 and 100"),
            (dict(ok, soak=-1), 400, "soak", "soak must be between 0"),
            (dict(ok, max_failures="x"), 400, "max_failures", "max_failures must be a number"),
            (dict(ok, canary=True), 400, "canary", "canary must be a number"),
            (dict(ok, bogus=1), 400, "bogus", "unknown parameter 'bogus'"),
            (dict(ok, nodes="zz-*"), 400, "nodes", "'zz-*' matches no node"),
            (dict(ok, nodes="er-0,ghost"), 400, "nodes", "unknown node 'ghost'"),
            (dict(ok, nodes=5), 400, "nodes", "nodes must be a string"),
            ([1], 400, "body", "body must be a JSON object")):
        got, e = admin(hub, "POST", "/api/rollouts", body)
        assert (got, e.get("parameter")) == (status, param) and text in e["error"], (body, e)
    assert hub.get("/api/rollouts/99999")[0] == 404
    got, e = hub.get("/api/rollouts/x1")
    assert (got, e["parameter"]) == (400, "id")
    assert admin(hub, "POST", "/api/rollouts/99999/halt")[0] == 404
    assert "er-0" not in str(hub.get("/api/rollouts")[1])  # nothing was started


def cli(*argv):
    return smartpark_cli.main(["rollout"] + list(argv))


def test_cli(hub, built, capsys, monkeypatch, tmp_path):
    report_all(hub, {n: health() for n in ("cl-0", "cl-1")})
    publish(hub, built, "8.5.0")
    url = hub.url("")
    monkeypatch.setenv("SMARTPARK_ADMIN_TOKEN", TOKEN)
    assert cli("start", "8.5.0", "--nodes", "cl-*", "--canary", "50", "--soak", "60",
               "--timeout", "86400", "--hub", url, "--json") == 0
    r = json.loads(capsys.readouterr().out)
    assert r["state"] == "canary" and r["timeout"] == 86400 and r["counts"] == dict(
        pending=1, updating=1, updated=0, failed=0, timed_out=0, skipped=0, withdrawn=0)
    assert cli("status", "--hub", url) == 0  # the newest
    out = capsys.readouterr().out
    assert out.startswith("rollout %d: firmware 8.5.0, canary" % r["id"]), out
    assert "max failures 10 %, timeout 86400 s;" in out, out
    lines = out.splitlines()
    assert lines[lines.index("") + 1].split() == ["NODE", "PHASE", "STATUS", "RESULT", "REASON"]
    assert {tuple(x.split()[:3]) for x in lines[lines.index("") + 2:]} == {
        (x["node"], x["phase"], x["status"]) for x in r["nodes"]}
    assert cli("list", "--hub", url) == 0
    assert "%d  8.5.0" % r["id"] in capsys.readouterr().out
    assert cli("halt", str(r["id"]), "--hub", url) == 0
    assert "halted (since" in capsys.readouterr().out

    # refusals, each with its exit code and a message that says what to do
    assert cli("start", "8.5.0", "--nodes", "cl-*", "--canary", "150", "--hub", url) == 5
    assert "canary must be between 0 and 100" in capsys.readouterr().err
    assert cli("start", "8.5.0", "--nodes", "cl-*", "--timeout", "-1", "--hub", url) == 5
    assert "timeout must be between 0 and 7776000 seconds, got -1" in capsys.readouterr().err
    assert cli("halt", str(r["id"]), "--hub", url) == 5
    assert "(409)" in capsys.readouterr().err
    bad = tmp_path / "token"
    bad.write_text("wrong\n")
    assert cli("halt", str(r["id"]), "--hub", url, "--token-file", str(bad)) == 4
    assert "401" in capsys.readouterr().err
    monkeypatch.delenv("SMARTPARK_ADMIN_TOKEN")
    assert cli("start", "8.5.0", "--hub", url) == 4
    assert "--token-file" in capsys.readouterr().err
    assert cli("list", "--hub", "http://127.0.0.1:9") == 3
    assert "cannot reach the hub at http://127.0.0.1:9" in capsys.readouterr().err
    assert cli("status", "--hub", url, "--token-file", str(tmp_path / "none")) == 2


def test_rollouts_survive_a_restart(tmp_path, built):
    d = str(tmp_path / "data")
    os.makedirs(d)
    nodes = ["rs-0", "rs-1", "rs-2"]
    h = keyed_hub(d, _config(str(tmp_path)), nodes)
    try:
        report_all(h, {n: health() for n in nodes})
        publish(h, built, "8.6.0")
        status, r = admin(h, "POST", "/api/rollouts", {"version": "8.6.0", "canary": 1,
                                                       "soak": 3600})
        assert status == 201, r
        [first] = [n for n, x in rows(r).items() if x["phase"] == "canary"]
        report_all(h, {first: health("8.6.0")})
        before = wait_for(lambda: (lambda v: v["promote_at"] and v)(
            h.get("/api/rollouts/%d" % r["id"])[1]))
        assert os.path.isfile(os.path.join(d, "rollouts", "%d.json" % r["id"]))
        assert h.stop()[0] == 0
        h.start()
        assert h.get("/api/rollouts/%d" % r["id"])[1] == before  # still soaking
        acks = report_all(h, {n: health("8.6.0" if n == first else BASE) for n in nodes})
        assert acks == {n: "8.6.0" if n == first else BASE for n in nodes}
    finally:
        h.kill()
