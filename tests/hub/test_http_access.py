"""Who may use the HTTP API: tokens, the loopback rule, open reads, TLS; and node-config
secrets that never leave the hub (HTTP, CoAP /cfg, logs)."""

import asyncio
import http.client
import json
import os
import socket
import sqlite3
import ssl
import urllib.error
import urllib.request

import aiocoap
import cbor2
import pytest
from hubutil import require, run
from smartpark.hub import config as hubconfig
from smartpark.hub import nodesecrets
from smartpark.hub.api import http as httpapi
from smartpark.hub.openapi import document
from smartpark.hub.process import start_hub
from smartpark.protocol import coap, oscore

READ = "read-9c1f27d4e0b8a6"
ADMIN = "admin-5e83b1a0c7f24d"
WIFI_PASSWORD = "hunter2-wifi-7d1e"


class Hub:
    """A hub process (aiocoap front end only: these tests are about HTTP) with its HTTP API
    on `http_bind`, reached over 127.0.0.1 (a 0.0.0.0 bind accepts it)."""

    def __init__(self, tmp_path, http_bind="127.0.0.1", extra=(), env=None, toml=None,
                 scheme="http", ssl_context=None, keys_for=()):
        from smartpark.hub import keys

        d = tmp_path / "data"
        d.mkdir()
        self.keys = {node: keys.add(str(d), node) for node in keys_for}  # OSCORE contexts
        args = ["--data", str(d), "--coap-bind", "127.0.0.1", "--coap-port", "0",
                "--http-bind", http_bind, "--http-port", "0", "--no-zeroconf",
                "--no-multicast", "--no-fast-path"] + list(extra)
        if toml is not None:
            f = tmp_path / "hub.toml"
            f.write_text(toml)
            args += ["--config", str(f)]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTPARK_")
                    or k == "SMARTPARK_PUREPYTHON"}
        full_env.update(env or {})
        self.data_dir = str(d)
        self.handle = start_hub(args, cwd=str(d), env=full_env,
                                log_path=os.path.join(str(d), "hub.log"))
        self.base = "%s://127.0.0.1:%d" % (scheme, self.handle.http_port)
        self.coap = "coap://127.0.0.1:%d" % self.handle.coap_port
        self.ssl_context = ssl_context

    def call(self, method, path, token=None, body=None, auth=None):
        """(status, headers, parsed JSON or text); `auth`: a whole Authorization value."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = "Bearer " + token
        if auth is not None:
            headers["Authorization"] = auth
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl_context) as r:
                status, hdrs, raw = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, hdrs, raw = e.code, e.headers, e.read()
        if "json" in hdrs.get("Content-Type", ""):
            return status, hdrs, json.loads(raw)
        return status, hdrs, raw.decode()

    def log(self):
        return self.handle.log_text()

    def stop(self):
        self.handle.stop()
        self.handle.cleanup()


@pytest.fixture
def hubs(tmp_path):
    started = []

    def make(name="h", **kw):
        p = tmp_path / name
        p.mkdir()
        h = Hub(p, **kw)
        started.append(h)
        return h

    yield make
    for h in started:
        h.handle.kill()


# ---- the decision, without a hub -----------------------------------------------------------

@pytest.mark.parametrize("bind,loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("127.255.0.9", True), ("::1", True),
    ("[::1]", True), ("localhost", True), ("LocalHost.", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("10.0.0.1", False),
    ("fe80::1%eth0", False), ("hub.example", False), ("localhost.example", False),
])
def test_which_binds_are_loopback(bind, loopback):
    assert httpapi.is_loopback(bind) is loopback
    assert httpapi.reads_need_token(bind) is not loopback
    assert httpapi.reads_need_token(bind, open_reads=True) is False


def test_bearer_header_parsing():
    assert httpapi.bearer("Bearer abc") == "abc"
    assert httpapi.bearer("bearer  abc ") == "abc"
    assert httpapi.bearer("Basic abc") is None
    assert httpapi.bearer("Bearer") is None
    assert httpapi.bearer("Bearer ") is None
    assert httpapi.bearer(None) is None and httpapi.bearer("") is None


def test_tokens_are_compared_in_constant_time(monkeypatch):
    """Every check compares the presented token with both configured tokens through
    hmac.compare_digest (never ==), whichever matches."""
    calls = []
    real = httpapi.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(httpapi.hmac, "compare_digest", spy)
    acc = httpapi.Access(read_token=READ, admin_token=ADMIN, bind="0.0.0.0")
    assert acc.role(ADMIN) == "admin"
    assert acc.role(READ) == "read"
    assert acc.role("guess") is None
    assert acc.role("r\u00e9ad") is None  # non-ASCII never matches
    assert len(calls) == 8
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)
    assert {b for _a, b in calls} == {READ.encode(), ADMIN.encode()}
    # an empty configured token matches nothing, not even an empty presented one
    assert httpapi.Access(bind="0.0.0.0").role("") is None


def test_openapi_document_states_the_security():
    closed = document("x", reads_need_token=True)
    open_ = document("x", reads_need_token=False)
    schemes = closed["components"]["securitySchemes"]
    assert set(schemes) == {"readToken", "adminToken"}
    assert all(s == {"type": "http", "scheme": "bearer", "description": s["description"]}
               for s in schemes.values())
    assert {} not in closed["security"] and {} in open_["security"]
    paths = closed["paths"]
    assert paths["/api/nodes/{node}/config"]["put"]["security"] == [{"adminToken": []}]
    assert paths["/healthz"]["get"]["security"] == []
    assert paths["/api/openapi.json"]["get"]["security"] == []
    for path in ("/api/nodes", "/api/latest", "/api/events", "/metrics"):
        assert "401" in paths[path]["get"]["responses"]


# ---- config: keys, aliases, environment ---------------------------------------------------

def test_http_config_defaults_aliases_and_environment(tmp_path):
    c = hubconfig.load(environ={})
    assert c.http_bind == "127.0.0.1" and c.http_open_reads is False
    assert c.http_read_token == "" and c.http_admin_token == "" and c.http_token == ""
    f = tmp_path / "hub.toml"
    f.write_text('[http]\ntoken = "from-toml"\nread_token = "r-toml"\n')
    c = hubconfig.load(str(f), environ={})
    assert (c.http_admin_token, c.http_token, c.http_read_token) == ("from-toml",
                                                                     "from-toml", "r-toml")
    # the environment beats the file, a flag beats both
    env = {"SMARTPARK_READ_TOKEN": "r-env", "SMARTPARK_ADMIN_TOKEN": "a-env"}
    c = hubconfig.load(str(f), environ=env)
    assert (c.http_read_token, c.http_admin_token) == ("r-env", "a-env")
    c = hubconfig.load(str(f), {"http.token": "a-flag", "http.read_token": None}, environ=env)
    assert (c.http_read_token, c.http_admin_token) == ("r-env", "a-flag")
    c = hubconfig.load(None, {"http.admin_token": "a2"}, environ={})
    assert c.http_token == "a2"


@pytest.mark.parametrize("text,overrides,key", [
    ('[http]\ntoken = "one-secret"\nadmin_token = "two-secret"\n', {}, "http.token"),
    ("", {"http.token": "one-secret", "http.admin_token": "two-secret"}, "http.token"),
    ('[http]\nread_token = "has space-secret"\n', {}, "http.read_token"),
    ('[http]\nadmin_token = 12345\n', {}, "http.admin_token"),
    ('[http]\nopen_reads = "yes"\n', {}, "http.open_reads"),
    ('[http]\ntls_cert = "/etc/hostname"\n', {}, "http.tls_key"),
    ('[http]\ntls_cert = "/nonexistent/c.pem"\ntls_key = "/nonexistent/k.pem"\n', {},
     "http.tls_cert"),
])
def test_http_config_errors_name_the_key_not_the_secret(tmp_path, text, overrides, key):
    f = tmp_path / "hub.toml"
    f.write_text(text)
    with pytest.raises(hubconfig.ConfigError) as ei:
        hubconfig.load(str(f), overrides, environ={})
    assert ei.value.key == key
    assert "secret" not in str(ei.value) and "12345" not in str(ei.value)


# ---- real hubs -------------------------------------------------------------------------------

def test_reads_open_on_loopback_writes_need_the_admin_token(hubs):
    h = hubs(extra=["--read-token", READ, "--admin-token", ADMIN])
    for path in ("/api/nodes", "/api/latest", "/metrics", "/healthz", "/api/openapi.json"):
        assert h.call("GET", path)[0] == 200, path
    assert {} in h.call("GET", "/api/openapi.json")[2]["security"]
    cfg = {"report_interval": 15}
    st, hdrs, body = h.call("PUT", "/api/nodes/acc-1/config", body=cfg)
    assert st == 401 and hdrs["WWW-Authenticate"] == 'Bearer realm="smartpark"'
    assert body["parameter"] == "Authorization"
    st, hdrs, body = h.call("PUT", "/api/nodes/acc-1/config", token="wrong", body=cfg)
    assert st == 401 and 'error="invalid_token"' in hdrs["WWW-Authenticate"]
    st, hdrs, body = h.call("PUT", "/api/nodes/acc-1/config", token=READ, body=cfg)
    assert st == 403 and 'error="insufficient_scope"' in hdrs["WWW-Authenticate"]
    assert "admin token" in body["error"]
    st, _, body = h.call("PUT", "/api/nodes/acc-1/config", token=ADMIN, body=cfg)
    assert st == 200 and body["version"] == 1
    st, _, body = h.call("PUT", "/api/nodes/acc-1/config", auth="bearer " + ADMIN, body=cfg)
    assert st == 200 and body["version"] == 2
    log = h.log()
    assert READ not in log and ADMIN not in log


def test_http_token_flag_is_the_admin_token(hubs):
    h = hubs(extra=["--http-token", ADMIN])
    assert h.call("PUT", "/api/nodes/acc-2/config", token=ADMIN,
                  body={"report_interval": 9})[0] == 200


def test_bound_to_any_address_reads_need_the_token(hubs):
    """A hub bound to 0.0.0.0, reached over 127.0.0.1: the bind decides, not the peer.
    Tokens from the environment."""
    h = hubs(http_bind="0.0.0.0", env={"SMARTPARK_READ_TOKEN": READ,
                                        "SMARTPARK_ADMIN_TOKEN": ADMIN})
    for path in ("/api/nodes", "/api/latest", "/api/nodes/x/config", "/api/series/x/y",
                 "/metrics", "/api/events", "/api/nowhere"):
        st, hdrs, body = h.call("GET", path)
        assert st == 401, path
        assert hdrs["WWW-Authenticate"] == 'Bearer realm="smartpark"'
        assert body["parameter"] == "Authorization" and "token" in body["error"]
        st, hdrs, _ = h.call("GET", path, token="wrong")
        assert st == 401 and 'error="invalid_token"' in hdrs["WWW-Authenticate"]
    assert h.call("GET", "/api/nodes", auth="Basic " + READ)[0] == 401
    for token in (READ, ADMIN):
        assert h.call("GET", "/api/nodes", token=token)[0] == 200
        assert h.call("GET", "/metrics", token=token)[0] == 200
    assert h.call("GET", "/healthz")[0] == 200
    st, _, doc = h.call("GET", "/api/openapi.json")
    assert st == 200 and {} not in doc["security"]
    assert h.call("PUT", "/api/nodes/acc-3/config", token=READ,
                  body={"report_interval": 9})[0] == 403
    assert h.call("PUT", "/api/nodes/acc-3/config", token=ADMIN,
                  body={"report_interval": 9})[0] == 200
    # Server-Sent Events: the header too
    port = h.handle.http_port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/api/events", headers={"Authorization": "Bearer " + READ})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/event-stream")
    assert r.readline().startswith(b": smartpark hub")
    conn.close()
    log = h.log()
    assert READ not in log and ADMIN not in log
    assert "clear text" in log  # tokens without TLS on a non-loopback bind: said once


def test_bound_to_any_address_without_token_says_how_to_set_one(hubs):
    h = hubs(http_bind="0.0.0.0")
    st, hdrs, body = h.call("GET", "/api/latest")
    assert st == 401 and hdrs["WWW-Authenticate"].startswith("Bearer")
    assert "http.read_token" in body["error"] and "open_reads" in body["error"]
    assert h.call("GET", "/api/nodes", token="anything")[0] == 401
    assert h.call("GET", "/healthz")[0] == 200
    st, _, body = h.call("PUT", "/api/nodes/x/config", token="anything",
                         body={"report_interval": 9})
    assert st == 403 and "admin_token" in body["error"]
    h.call("GET", "/api/nodes")
    log = h.log()
    assert log.count("SMARTPARK_READ_TOKEN") == 1 and "http.read_token" in log


def test_open_reads_on_any_address(hubs):
    h = hubs(http_bind="0.0.0.0", toml="[http]\nopen_reads = true\n",
             extra=["--admin-token", ADMIN])
    assert h.call("GET", "/api/nodes")[0] == 200
    assert h.call("GET", "/metrics")[0] == 200
    assert {} in h.call("GET", "/api/openapi.json")[2]["security"]
    assert h.call("PUT", "/api/nodes/x/config", body={"report_interval": 9})[0] == 401
    assert "open_reads = true" in h.log()


# ---- secrets in node configs -----------------------------------------------------------------

def _stored_configs(data_dir, node):
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(data_dir, "hub.sqlite3"), uri=True)
    try:
        return [cbor2.loads(b) for (b,) in db.execute(
            "SELECT body FROM node_configs WHERE node = ? ORDER BY version", (node,))]
    finally:
        db.close()


def test_config_secrets_never_leave_the_hub(hubs):
    h = hubs(extra=["--admin-token", ADMIN, "-vv"])
    cfg = {"report_interval": 20, "wifi": {"ssid": "park", "password": WIFI_PASSWORD},
           "sim": {"api_key": "sim-key-4411", "seed": 3}}
    st, _, body = h.call("PUT", "/api/nodes/sec-1/config", token=ADMIN, body=cfg)
    assert st == 200
    want = {"report_interval": 20, "wifi": {"ssid": "park", "password": "***"},
            "sim": {"api_key": "***", "seed": 3}}
    assert body["config"] == want
    st, _, body = h.call("GET", "/api/nodes/sec-1/config")
    assert st == 200 and body == {"node": "sec-1", "version": 1, "config": want}
    # what GET shows can be edited and written back: "***" keeps the stored secret
    edited = dict(body["config"], report_interval=25)
    st, _, body = h.call("PUT", "/api/nodes/sec-1/config", token=ADMIN, body=edited)
    assert st == 200 and body["config"]["wifi"]["password"] == "***"
    stored = _stored_configs(h.data_dir, "sec-1")
    assert [c["wifi"]["password"] for c in stored] == [WIFI_PASSWORD, WIFI_PASSWORD]
    assert stored[-1]["sim"]["api_key"] == "sim-key-4411"
    assert stored[-1]["report_interval"] == 25
    # "***" with nothing stored to keep names the key
    st, _, body = h.call("PUT", "/api/nodes/sec-2/config", token=ADMIN,
                         body={"wifi": {"ssid": "x", "password": "***"}})
    assert st == 400 and body["parameter"] == "wifi.password"

    async def cfg_over_coap():
        ctx = await aiocoap.Context.create_client_context()
        try:
            m = aiocoap.Message(code=aiocoap.GET, uri=h.coap + "/cfg/sec-1")
            return await asyncio.wait_for(ctx.request(m).response, 10)
        finally:
            await ctx.shutdown()

    # an unprotected GET /cfg: refused by the OSCORE layer, nothing of the config in it
    # (what /cfg serves to whom is test_cfg_serves_secrets_to_the_authenticated_node_only)
    r = run(cfg_over_coap())
    assert not r.code.is_successful()
    assert WIFI_PASSWORD.encode() not in r.payload and b"park" not in r.payload
    # nowhere else either: the node list, SSE-free reads, metrics, the log at -vv
    for path in ("/api/nodes", "/api/nodes/sec-1", "/api/latest", "/metrics"):
        assert WIFI_PASSWORD not in json.dumps(h.call("GET", path)[2])
    h.stop()
    log = open(os.path.join(h.data_dir, "hub.log")).read()
    assert WIFI_PASSWORD not in log and "sim-key-4411" not in log and ADMIN not in log


def _oscore_get(rec, path, port):
    """GET coap://127.0.0.1:port/<path> protected with the node's key `rec` (a raw UDP
    client on protocol/oscore.py; repeats once with the Echo a fresh hub asks for).
    Returns the verified inner response."""
    ctx = oscore.Context(rec["secret"], rec["salt"], rec["sender_id"], rec["recipient_id"])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    echo = None
    try:
        for seq in range(2):
            opts = [(coap.URI_PATH, p.encode()) for p in path.split("/")]
            if echo is not None:
                opts.append((coap.ECHO, echo))
            m = coap.Message(coap.CON, coap.GET, 0x2000 + seq, b"\x5a" + bytes([seq]), opts)
            outer, binding = oscore.protect_request(ctx, seq, m)
            s.sendto(outer.encode(), ("127.0.0.1", port))
            inner = oscore.unprotect_response(ctx, binding, coap.parse(s.recv(4096)))
            echo = inner.get_option(coap.ECHO)
            if inner.code != coap.UNAUTHORIZED or echo is None:
                return inner
        raise AssertionError("the hub kept asking for an Echo")
    finally:
        s.close()


def test_cfg_over_oscore_has_secrets_for_its_own_node_only(hubs):
    """Real CoAP with OSCORE: the node itself gets its Wi-Fi password, another node with a
    valid key of its own gets the config without it."""
    h = hubs(extra=["--admin-token", ADMIN, "-vv"], keys_for=("sec-own", "sec-other"))
    cfg = {"report_interval": 20, "wifi": {"ssid": "park", "password": WIFI_PASSWORD}}
    assert h.call("PUT", "/api/nodes/sec-own/config", token=ADMIN, body=cfg)[0] == 200
    mine = _oscore_get(h.keys["sec-own"], "cfg/sec-own", h.handle.coap_port)
    assert mine.code == coap.CONTENT
    assert cbor2.loads(mine.payload) == dict(cfg, version=1)
    theirs = _oscore_get(h.keys["sec-other"], "cfg/sec-own", h.handle.coap_port)
    if theirs.code == coap.CONTENT:  # (a refusal would do as well: nothing to leak)
        assert cbor2.loads(theirs.payload) == {"report_interval": 20, "version": 1}
    assert WIFI_PASSWORD.encode() not in theirs.payload
    h.stop()
    assert WIFI_PASSWORD not in h.log()


class _Registry:
    def __init__(self, configs):
        self.configs = configs


def test_cfg_serves_secrets_to_the_authenticated_node_only():
    """The hook for the OSCORE layer: request.smartpark_node == the path's node gets the
    whole config; another node, or an unprotected request (None/absent), does not."""
    from smartpark.hub.coap.resources import ConfigResource

    body = cbor2.dumps({"report_interval": 30, "firmware": "1.2.3", "version": 4,
                        "wifi": {"ssid": "park", "password": WIFI_PASSWORD}})
    res = ConfigResource(_Registry({"n1": (4, body)}), {"report_interval": 60})
    full = {"report_interval": 30, "version": 4,
            "wifi": {"ssid": "park", "password": WIFI_PASSWORD}}
    assert cbor2.loads(res.config_for("n1", "n1")[1]) == full
    for who in (None, "n2", ""):
        version, got = res.config_for("n1", who)
        assert version == 4 and cbor2.loads(got) == {"report_interval": 30, "version": 4}
    assert cbor2.loads(res.config_for("n9", None)[1]) == {"report_interval": 60, "version": 0}

    async def get(identity, etag=None):
        m = aiocoap.Message(code=aiocoap.GET, uri_path=("n1",))
        if identity is not ...:
            m.smartpark_node = identity
        if etag:
            m.opt.etags = [etag]
        return await res.render_get(m)

    mine = run(get("n1"))
    assert cbor2.loads(mine.payload) == full
    other = run(get("n2"))
    anon = run(get(...))
    assert cbor2.loads(other.payload) == cbor2.loads(anon.payload)
    assert WIFI_PASSWORD.encode() not in other.payload + anon.payload
    # security off: an unprotected request still gets no secret
    m = aiocoap.Message(code=aiocoap.GET, uri_path=("n1",))
    m.smartpark_open = True
    assert WIFI_PASSWORD.encode() not in run(res.render_get(m)).payload
    # the two views have their own ETags: a masked copy never validates the full one
    assert mine.opt.etag != anon.opt.etag
    assert run(get("n1", mine.opt.etag)).code == aiocoap.VALID
    assert run(get(None, mine.opt.etag)).code == aiocoap.CONTENT


def test_secret_rule():
    assert all(nodesecrets.is_secret(k) for k in (
        "password", "PSK", "secret", "token", "oscore", "api_key", "master_secret",
        "wifi_password"))
    assert not any(nodesecrets.is_secret(k) for k in (
        "ssid", "node", "hub", "address", "kind", "keys", "keyboard", "rom", 3))
    doc = {"sensors": [{"name": "a", "params": {"api_token": "t1"}}], "ntp": True,
           "wifi": {"ssid": "s", "password": ""}}
    assert nodesecrets.masked(doc) == {
        "sensors": [{"name": "a", "params": {"api_token": "***"}}], "ntp": True,
        "wifi": {"ssid": "s", "password": "***"}}
    assert nodesecrets.without(doc) == {"ntp": True}
    # sensors are matched by name when "***" is restored, not by position
    old = {"sensors": [{"name": "b", "params": {"api_token": "tb"}},
                       {"name": "a", "params": {"api_token": "t1"}}]}
    new = {"sensors": [{"name": "a", "params": {"api_token": "***"}}]}
    assert nodesecrets.restore(new, old) == {"sensors": [{"name": "a",
                                                          "params": {"api_token": "t1"}}]}
    with pytest.raises(nodesecrets.MissingSecret) as ei:
        nodesecrets.restore({"sensors": [{"name": "c", "params": {"api_token": "***"}}]}, old)
    assert ei.value.path == "sensors[0].params.api_token"


# ---- TLS -------------------------------------------------------------------------------------

def _self_signed(tmp_path):
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        require(False, "cryptography is not installed (pip install cryptography)")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smartpark test hub")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path = tmp_path / "hub.crt"
    key_path = tmp_path / "hub.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return str(cert_path), str(key_path)


def test_tls_directly(hubs, tmp_path):
    cert, key = _self_signed(tmp_path)
    client = ssl.create_default_context(cafile=cert)
    h = hubs(http_bind="0.0.0.0", scheme="https", ssl_context=client,
             toml='[http]\ntls_cert = "%s"\ntls_key = "%s"\n' % (cert, key),
             env={"SMARTPARK_READ_TOKEN": READ})
    assert h.call("GET", "/healthz")[0] == 200
    assert h.call("GET", "/api/nodes")[0] == 401
    assert h.call("GET", "/api/nodes", token=READ)[0] == 200
    assert "clear text" not in h.log()
    # plain HTTP on the TLS port gets no API answer
    s = socket.create_connection(("127.0.0.1", h.handle.http_port), timeout=5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            reply = s.recv(100)
        except (ConnectionResetError, socket.timeout):
            reply = b""
    finally:
        s.close()
    assert not reply.startswith(b"HTTP/1.1 200")
