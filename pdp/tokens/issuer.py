"""Minting access tokens: RFC 9068 JWTs (`typ` at+jwt) signed with the key ring's current key."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import jwt

from pdp.tokens.errors import KeyConfigError
from pdp.tokens.keys import KeyRing


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
        claims = {
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
        token = jwt.encode(
            claims,
            signing.private_key,
            algorithm=signing.algorithm,
            headers={"typ": "at+jwt", "kid": signing.kid},
        )
        return IssuedToken(
            token=token, jti=jti, iat=now, exp=now + self.lifetime, kid=signing.kid, scope=scope
        )
