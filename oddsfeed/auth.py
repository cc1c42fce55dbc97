"""JWT authentication (protocol.md section 5) with PyJWT: verify tokens, mint HS256 ones.

Used by the HTTP API, the WebSocket handshake and the push ingest endpoint alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .core.errors import OddsfeedError
from .settings import AuthSettings

SCOPES = ("odds:read", "odds:write", "bets:validate", "risk:read")
# The secret config/oddsfeed.toml publishes for the laptop demo: anyone can sign with it, so
# only `oddsfeed run` on a loopback host accepts it.
DEMO_SECRET = "demo-only-not-a-secret-change-me"  # noqa: S105 - published on purpose
MIN_HS256_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
VERIFIED_CACHE_SIZE = 4096  # tokens kept after a successful verification
READ, WRITE, VALIDATE, RISK_READ = SCOPES


class AuthError(OddsfeedError):
    """The token is missing, expired, badly signed or malformed (HTTP 401, close 4001)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: ``sub`` and granted ``scopes``; ``exp`` in seconds (0: never)."""

    sub: str
    scopes: frozenset[str]
    exp: int = 0

    def can(self, scope: str) -> bool:
        return scope in self.scopes


ANONYMOUS = Principal(sub="anonymous", scopes=frozenset({READ}), exp=0)


def _load_key(pem: str) -> tuple[Any, list[str]]:
    """A configured public key (PEM text: the composition root reads key files) and the one
    alg family it signs.

    Each key verifies only its own algorithm, so an RSA key can never be used as an HMAC
    secret (the classic alg confusion) and an ES256 token is never tried on an RSA key.
    """
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise AuthError(f"auth.public_keys: not a PEM public key: {exc}".lower()) from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, ["RS256"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, ["ES256"]
    raise AuthError("auth.public_keys: only RSA (RS256) and EC P-256 (ES256) keys are accepted")


class Authenticator:
    """Verifies bearer tokens against the configured HS256 secret and public keys."""

    def __init__(self, settings: AuthSettings, *, demo: bool = False) -> None:
        """Load the keys of ``settings``; raises AuthError for an unreadable public key, an
        HS256 secret under 32 bytes, or the published demo secret unless ``demo`` (only the
        all-in-one ``oddsfeed run`` on a loopback host passes it)."""
        self.settings = settings
        self._keys: list[tuple[Any, list[str]]] = []
        self._verified: dict[str, Principal] = {}
        check_secret(settings.hs256_secret, demo=demo)
        if settings.hs256_secret:
            self._keys.append((settings.hs256_secret, ["HS256"]))
        for key in settings.public_keys:
            self._keys.append(_load_key(key))

    @property
    def anonymous_read(self) -> bool:
        return self.settings.anonymous_read

    def verify(self, token: str) -> Principal:
        """Return the token's principal; raises AuthError for any bad token (alg none too).

        Call it on every request: a token that verified before is answered from a bounded
        cache until its ``exp`` (signature checks cost ~0.3 ms in PyJWT, more than the rest
        of a bet-slip validation); expiry is checked on every call.
        """
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known.exp:
                return known
            del self._verified[token]
            raise AuthError("token expired")
        principal = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = principal
        return principal

    def _verify(self, token: str) -> Principal:
        if not token or len(token) > 8192:
            raise AuthError("missing or oversized token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise AuthError("unsigned tokens are not accepted")
        options: dict[str, Any] = {"require": ["sub", "exp"]}
        kwargs: dict[str, Any] = {}
        if self.settings.audience:
            kwargs["audience"] = self.settings.audience
        else:
            options["verify_aud"] = False
        if self.settings.issuer:
            kwargs["issuer"] = self.settings.issuer
        last: Exception | None = None
        for key, algs in self._keys:
            if alg not in algs:
                continue
            try:
                claims = jwt.decode(token, key, algorithms=algs,
                                    options=options,  # type: ignore[arg-type]
                                    **kwargs)
            except jwt.ExpiredSignatureError:
                raise AuthError("token expired") from None
            except (jwt.InvalidSignatureError, jwt.InvalidKeyError) as exc:
                last = exc  # maybe another configured key signed it
                continue
            except jwt.PyJWTError as exc:
                raise AuthError(f"invalid token: {exc}".lower()) from None
            return _principal(claims, time.time(), self.settings.max_token_lifetime_s)
        if last is not None:
            raise AuthError("bad token signature")
        raise AuthError(f"no key configured for alg {alg}")

    def mint(self, sub: str, scopes: list[str] | tuple[str, ...] | frozenset[str],
             ttl_s: int, now_s: int) -> str:
        """An HS256 token for ``sub`` with ``scopes``, valid ``ttl_s`` seconds from ``now_s``
        (seconds since the Unix epoch); raises AuthError without a secret or for an
        unknown scope or a ttl below 1 s."""
        if ttl_s < 1:
            raise AuthError(f"ttl must be at least 1 s, got {ttl_s}")
        if ttl_s > self.settings.max_token_lifetime_s:
            raise AuthError(f"ttl {ttl_s} s is over auth.max_token_lifetime_s "
                            f"({self.settings.max_token_lifetime_s} s)")
        if not self.settings.hs256_secret:
            raise AuthError("no hs256_secret configured")
        bad = [s for s in scopes if s not in SCOPES]
        if bad:
            raise AuthError(f"unknown scope {bad[0]!r}; use {' '.join(SCOPES)}")
        claims: dict[str, Any] = {"sub": sub, "scope": " ".join(sorted(scopes)), "iat": now_s,
                                  "exp": now_s + ttl_s}
        if self.settings.audience:
            claims["aud"] = self.settings.audience
        if self.settings.issuer:
            claims["iss"] = self.settings.issuer
        return jwt.encode(claims, self.settings.hs256_secret, algorithm="HS256")


def check_secret(secret: str, *, demo: bool = False) -> None:
    """Raise AuthError if ``secret`` (empty: no HS256) is under 32 bytes, or is the
    published demo secret and ``demo`` is false. Call it at start-up, before serving."""
    if not secret:
        return
    if secret == DEMO_SECRET and not demo:
        raise AuthError("auth.hs256_secret is the published demo secret; it is accepted only "
                        "by `oddsfeed run` on a loopback host: set a secret of your own")
    size = len(secret.encode())
    if size < MIN_HS256_SECRET_BYTES:
        raise AuthError(f"auth.hs256_secret is {size} bytes; an hs256 secret needs at least "
                        f"{MIN_HS256_SECRET_BYTES}")


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    # RFC 7519 NumericDate is a JSON number. PyJWT also takes numeric strings ("1700000000")
    # while this cache compared them as 0: refuse anything but a number, every time.
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AuthError(f"token {name} must be a number, got {type(value).__name__}")
    return float(value)


def _principal(claims: dict[str, Any], now_s: float, max_lifetime_s: int) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError("token sub must be a non-empty string")
    for name in ("iat", "nbf"):
        _numeric_date(claims, name)
    exp = _numeric_date(claims, "exp")
    if exp is None:
        raise AuthError("token exp is required")
    if exp - now_s > max_lifetime_s:
        raise AuthError(f"token exp is more than auth.max_token_lifetime_s ({max_lifetime_s} s) "
                        "ahead")
    scope = claims.get("scope", "")
    if isinstance(scope, list):
        scopes = frozenset(str(s) for s in scope)
    elif isinstance(scope, str):
        scopes = frozenset(scope.split())
    else:
        raise AuthError("token scope must be a space-separated string")
    return Principal(sub=sub, scopes=scopes, exp=int(exp))
