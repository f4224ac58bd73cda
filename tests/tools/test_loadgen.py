"""`simulate --light` against an aiocoap server that answers late (separate responses) and
refuses one node (4.00): acks, drops and the server's own count must agree."""

import json
import socket
import subprocess
import sys
import time

from toolhelp import smartpark

SERVER = r"""
import asyncio, json, sys, time
import aiocoap, aiocoap.resource as resource
from smartpark.protocol import report, senml

port, out, delay = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
seen = {}

class Report(resource.Resource):
    async def render_post(self, request):
        pack = senml.decode(request.payload, "cbor")
        node = pack[0]["bn"].rstrip("/")
        if node.endswith("-00002"):
            return aiocoap.Message(code=aiocoap.BAD_REQUEST, payload=b"refused for the test")
        await asyncio.sleep(delay)   # longer than aiocoap's empty-ACK delay: separate response
        names = {(r["n"], r["t"]) for r in senml.resolve(pack)}
        new = names - seen.setdefault(node, set())
        seen[node] |= new
        with open(out + ".tmp", "w") as f:
            json.dump({k: len(v) for k, v in seen.items()}, f)
        import os; os.replace(out + ".tmp", out)
        return aiocoap.Message(code=aiocoap.CHANGED, payload=report.encode_ack(
            time.time(), stored=len(new), duplicates=len(names) - len(new)))

async def main():
    site = resource.Site()
    site.add_resource(["r"], Report())
    await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
    print("ready", flush=True)
    await asyncio.get_running_loop().create_future()

asyncio.run(main())
"""


def test_light_mode_separate_responses_and_refusals(tmp_path):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    counts = tmp_path / "server.json"
    srv = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(counts), "0.8"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready", srv.stderr.read()
        out = tmp_path / "light.json"
        proc = smartpark("simulate", "--light", "--nodes", 6, "--hub", "127.0.0.1:%d" % port,
                         "--duration", 4, "--interval", 1, "--drain", 20, "--sockets", 2,
                         "--json", out, "--no-key", timeout=120)   # a plain server
        assert proc.returncode == 0, proc.stdout + proc.stderr
        doc = json.load(open(out))
        assert doc["separate_responses"] > 0   # the late answers came as separate responses
        summary = {n["node"]: n for n in doc["nodes"]}
        deadline = time.monotonic() + 10
        while not counts.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        stored = json.load(open(counts))
    finally:
        srv.kill()
        srv.wait()
    refused = summary.pop("vnode-00002")
    assert refused["dropped"] == refused["recorded"] > 0 and refused["acknowledged"] == 0
    assert "vnode-00002" not in stored
    for node, n in summary.items():
        assert n["recorded"] > 0 and n["pending"] == 0 and n["dropped"] == 0, n
        assert stored[node] == n["acknowledged"] == n["recorded"], (node, n, stored.get(node))
