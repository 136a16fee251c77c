"""Minting access tokens: RFC 9068 JWTs (`typ` at+jwt) signed with the key ring's current key."""

from __future__ import annotations

import base64
import functools
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson

from pdp.tokens.errors import KeyConfigError
from pdp.tokens.keys import KeyRing, SigningKey

_ALGORITHMS = jwt.algorithms.get_default_algorithms()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@functools.lru_cache(maxsize=64)
def _header(kid: str, algorithm: str) -> bytes:
    return _b64(orjson.dumps({"alg": algorithm, "kid": kid, "typ": "at+jwt"}))


def _sign(claims: dict[str, Any], signing: SigningKey) -> str:
    """Compact JWS. The JSON is encoded here (orjson, a cached header) because pyjwt's encoder
    costs more than the signature; pyjwt's algorithm object still signs (ES256 as raw R||S).
    """
    signing_input = _header(signing.kid, signing.algorithm) + b"." + _b64(orjson.dumps(claims))
    signature = _ALGORITHMS[signing.algorithm].sign(signing_input, signing.private_key)
    return (signing_input + b"." + _b64(signature)).decode("ascii")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str = field(repr=False)
    jti: str
    iat: int
    exp: int
    kid: str
    scope: str


class AccessTokenIssuer:
    """Signs access tokens. Claims carry identifiers, tenant, roles and scopes: never PII."""

    def __init__(
        self,
        keys: KeyRing,
        *,
        issuer: str,
        audience: str,
        lifetime: int = 600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime
        self._clock = clock

    def issue(
        self,
        *,
        subject: str,
        tenant: str,
        client_id: str,
        roles: Iterable[str] = (),
        scopes: Iterable[str] = (),
    ) -> IssuedToken:
        signing = self._keys.snapshot.signing
        if signing is None:
            raise KeyConfigError("no signing key: the key directory has no current private key")
        now = int(self._clock())
        jti = secrets.token_urlsafe(16)
        scope = " ".join(sorted(set(scopes)))
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "exp": now + self.lifetime,
            "iat": now,
            "nbf": now,
            "jti": jti,
            "client_id": client_id,
            "tenant": tenant,
            "roles": sorted(set(roles)),
        }
        if scope:
            claims["scope"] = scope
        token = _sign(claims, signing)
        return IssuedToken(
            token=token, jti=jti, iat=now, exp=now + self.lifetime, kid=signing.kid, scope=scope
        )
