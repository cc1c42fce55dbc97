"""JWT verification and minting (protocol.md section 5), without a server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from oddsfeed.auth import Authenticator, AuthError
from oddsfeed.config import read_key_files
from oddsfeed.settings import load_settings

SECRET = "auth-test-secret-0123456789-0123456789"
def now() -> int:
    """The time now: read per test (a module-level constant went stale when these tests
    ran a minute after import, and 30 s tokens minted from it had expired)."""
    return int(time.time())


def _pem(key: Any) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP256R1())


def auth(**overrides: Any) -> Authenticator:
    return Authenticator(read_key_files(
        load_settings(None, {}, {"auth.hs256_secret": SECRET, **overrides}).auth))


def token(key: Any = SECRET, alg: str = "HS256", **claims: Any) -> str:
    base = {"sub": "alice", "scope": "odds:read bets:validate", "exp": now() + 60}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, key, algorithm=alg)


def test_hs256_token_gives_the_principal() -> None:
    """A good HS256 token yields its sub, scopes and exp."""
    t = now()
    p = auth().verify(token(exp=t + 60))
    assert (p.sub, p.scopes, p.exp) == ("alice", frozenset({"odds:read", "bets:validate"}),
                                        t + 60)
    assert p.can("odds:read")
    assert not p.can("odds:write")


def test_rs256_and_es256_public_keys(tmp_path: Path) -> None:
    """RS256 and ES256 tokens verify against configured public keys (PEM text or file)."""
    key_file = tmp_path / "ec.pem"
    key_file.write_text(_pem(EC))
    a = auth(**{"auth.public_keys": [_pem(RSA), str(key_file)]})
    assert a.verify(token(RSA, "RS256")).sub == "alice"
    assert a.verify(token(EC, "ES256")).sub == "alice"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthError, match="signature"):
        a.verify(token(other, "RS256"))


@pytest.mark.parametrize(("make", "message"), [
    (lambda: token(exp=now() - 5), "expired"),
    (lambda: token(key="another-secret-0123456789-0123456789"), "signature"),
    (lambda: token(sub=None), "sub"),
    (lambda: token(exp=None), "exp"),
    (lambda: token(sub=""), "sub"),
    (lambda: token(scope=7), "scope"),
    (lambda: jwt.encode({"sub": "a", "exp": now() + 60}, None, algorithm="none"), "unsigned"),
    (lambda: token(RSA, "RS256"), "no key"),
    (lambda: "not.a.token", "malformed"),
    (lambda: "", "missing"),
])
def test_bad_tokens_raise_auth_error(make: Any, message: str) -> None:
    """Expired, foreign-signed, claim-less, unsigned or malformed tokens raise AuthError."""
    with pytest.raises(AuthError, match=message):
        auth().verify(make())


def _b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def test_alg_none_with_a_forged_signature_and_alg_confusion_are_refused() -> None:
    """alg "None" in any case is refused, and an RSA public key is never an HMAC secret."""
    forged = _b64({"alg": "None", "typ": "JWT"}) + "." + _b64({"sub": "a", "exp": now() + 60}) + "."
    with pytest.raises(AuthError, match="unsigned"):
        auth().verify(forged)
    pem = _pem(RSA)
    a = Authenticator(load_settings(None, {}, {"auth.public_keys": [pem]}).auth)
    # the classic attack: HS256 "signed" with the server's public key as the secret
    head = _b64({"alg": "HS256", "typ": "JWT"}) + "." + _b64({"sub": "a", "exp": now() + 60})
    mac = hmac.new(pem.encode(), head.encode(), hashlib.sha256).digest()
    confused = head + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")
    with pytest.raises(AuthError, match="no key"):
        a.verify(confused)


def test_audience_and_issuer_when_configured() -> None:
    """With audience/issuer configured, tokens must carry them; minted tokens do."""
    a = auth(**{"auth.audience": "books", "auth.issuer": "desk"})
    assert a.verify(a.mint("bob", ["odds:write"], 60, now())).scopes == {"odds:write"}
    with pytest.raises(AuthError):
        a.verify(token())
    with pytest.raises(AuthError):
        a.verify(token(aud="books", iss="elsewhere"))


def test_mint() -> None:
    """mint signs HS256 with the configured secret; unknown scopes, a ttl below 1 s or no
    secret are AuthErrors."""
    a = auth()
    t = now()
    p = a.verify(a.mint("carol", ("odds:read", "odds:write"), ttl_s=30, now_s=t))
    assert (p.sub, p.exp, p.scopes) == ("carol", t + 30, {"odds:read", "odds:write"})
    assert jwt.get_unverified_header(a.mint("c", [], 1, now()))["alg"] == "HS256"
    with pytest.raises(AuthError, match="unknown scope"):
        a.mint("c", ["root"], 60, now())
    with pytest.raises(AuthError, match="ttl"):
        a.mint("c", ["odds:read"], 0, now())
    with pytest.raises(AuthError, match="secret"):
        Authenticator(load_settings(None, {}, {}).auth).mint("c", [], 60, now())


def test_unusable_public_keys_are_refused_at_start() -> None:
    """A public key that is not PEM, or of an unsupported type, fails loudly at start-up."""
    with pytest.raises(AuthError, match="pem"):
        auth(**{"auth.public_keys": ["-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"]})
    with pytest.raises(AuthError, match="only RSA"):
        auth(**{"auth.public_keys": [_pem(ed25519.Ed25519PrivateKey.generate())]})


def test_a_cached_token_still_expires() -> None:
    """A token verified once is answered from the cache, but never after its exp."""
    a = auth()
    tok = token(exp=int(time.time()) + 2)
    assert a.verify(tok) is a.verify(tok)
    exp = a.verify(tok).exp
    deadline = time.monotonic() + 5
    while time.time() < exp:  # poll until the clock passes exp
        assert time.monotonic() < deadline, "token never expired"
        time.sleep(0.01)
    with pytest.raises(AuthError, match="expired"):
        a.verify(tok)  # from the cache
    with pytest.raises(AuthError, match="expired"):
        a.verify(tok)  # and again, now from the signature check
