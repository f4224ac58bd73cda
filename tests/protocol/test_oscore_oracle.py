"""protocol/oscore.py against the judges: `cryptography`'s AESCCM and aiocoap's OSCORE.

- AES-CCM built on the AES block (the construction the node runs on
  MicroPython's cryptolib) equals `cryptography`'s AESCCM on generated
  messages, lengths 0..300, with and without AAD; a flipped bit fails.
- Messages protected here are opened by aiocoap's FilesystemSecurityContext
  and the other way round, for requests and responses, generated options
  and payloads included.
"""

import json
import os
import random

import aiocoap
import pytest
from aiocoap import oscore as aio_oscore
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from smartpark.protocol import coap, oscore
from smartpark.protocol.errors import OscoreError

RNG = random.Random(8613)


def test_ecb_ccm_equals_cryptography():
    for n in range(300):
        key = RNG.randbytes(16)
        nonce = RNG.randbytes(13)
        pt = RNG.randbytes(n)
        adata = RNG.randbytes(RNG.choice((0, 1, 14, 15, 16, 17, 40, 300)))
        want = AESCCM(key, 8).encrypt(nonce, pt, adata)
        assert oscore.ccm_encrypt_ecb(key, nonce, pt, adata) == want
        assert oscore.ccm_decrypt_ecb(key, nonce, want, adata) == pt
        assert oscore.aes_ccm_decrypt(key, nonce, want, adata) == pt
        bad = bytearray(want)
        bad[RNG.randrange(len(bad))] ^= 1 << RNG.randrange(8)
        with pytest.raises(OscoreError) as e:
            oscore.ccm_decrypt_ecb(key, nonce, bytes(bad), adata)
        assert e.value.code == coap.BAD_REQUEST


def test_hkdf_equals_cryptography():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    for _ in range(50):
        salt, ikm, info = RNG.randbytes(RNG.randrange(0, 80)), RNG.randbytes(16), RNG.randbytes(9)
        n = RNG.choice((13, 16, 32, 50))
        want = HKDF(hashes.SHA256(), n, salt or None, info).derive(ikm)
        assert oscore.hkdf(salt, ikm, info, n) == want


def _aiocoap_ctx(tmp_path, name, sender_id, recipient_id, secret, salt):
    d = tmp_path / name
    d.mkdir()
    (d / "settings.json").write_text(json.dumps({
        "sender-id_hex": sender_id.hex(), "recipient-id_hex": recipient_id.hex(),
        "secret_hex": secret.hex(), "salt_hex": salt.hex()}))
    return aio_oscore.FilesystemSecurityContext(str(d))


def _request(rng, mid):
    m = coap.make_request(rng.choice((coap.GET, coap.POST, coap.PUT)), "/r/" + "x" * rng.randrange(5),
                          mid, rng.randbytes(rng.randrange(9)), payload=rng.randbytes(rng.randrange(200)),
                          content_format=rng.choice((None, 60, 112)))
    if rng.random() < 0.5:
        m.add_option(coap.URI_HOST, b"hub.example")
    if rng.random() < 0.3:
        m.set_uri_query(["ep=node-%d" % rng.randrange(99)])
    return m


def test_node_to_aiocoap_server_and_back(tmp_path):
    secret, salt = os.urandom(16), os.urandom(8)
    kid = os.urandom(3)
    node = oscore.Context(secret, salt, kid, b"")
    server = _aiocoap_ctx(tmp_path, "srv", b"", kid, secret, salt)
    for seq in range(40):
        req = _request(RNG, seq)
        outer, binding = oscore.protect_request(node, seq, req)
        inner, rid = server.unprotect(aiocoap.Message.decode(outer.encode()))
        assert inner.code == req.code
        assert inner.payload == req.payload
        assert list(inner.opt.uri_path) == [p.decode() for p in req.get_options(coap.URI_PATH)]
        resp = aiocoap.Message(code=aiocoap.CONTENT, payload=RNG.randbytes(RNG.randrange(300)),
                               content_format=60)
        prot, _ = server.protect(resp, rid)
        prot.mid, prot.mtype, prot.token = req.mid, aiocoap.ACK, req.token
        got = oscore.unprotect_response(node, binding, coap.parse(prot.encode()))
        assert got.code == coap.CONTENT and got.payload == resp.payload
        assert got.content_format == 60


def test_aiocoap_client_to_hub_side_and_back(tmp_path):
    secret, salt = os.urandom(16), os.urandom(8)
    kid = os.urandom(3)
    hub = oscore.Context(secret, salt, b"", kid)
    client = _aiocoap_ctx(tmp_path, "cli", kid, b"", secret, salt)
    for i in range(40):
        req = aiocoap.Message(code=aiocoap.POST, uri_path=("r",), content_format=112,
                              payload=RNG.randbytes(1 + RNG.randrange(200)))
        prot, rid = client.protect(req)
        prot.mid, prot.mtype, prot.token = i, aiocoap.CON, b"\x07"
        inner, binding, seq = oscore.unprotect_request(hub, coap.parse(prot.encode()))
        assert inner.code == coap.POST and inner.payload == req.payload
        assert inner.get_options(coap.URI_PATH) == [b"r"]
        assert inner.content_format == 112
        resp = coap.make_response(inner, coap.CHANGED, b"ok", content_format=60)
        own = seq if i % 2 else None   # half with the hub's own Partial IV
        out = oscore.protect_response(hub, binding, resp, seq=own)
        opened, _ = client.unprotect(aiocoap.Message.decode(out.encode()), rid)
        assert opened.code == aiocoap.CHANGED and opened.payload == b"ok"
