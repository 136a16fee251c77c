"""Helpers for the token tests: a fake clock, a token forge, customer IdPs, a runtime factory."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from pdp.tokens import KeyRing, TokenConfig, TokenRuntime, build_tokens
from pdp.tokens.keys import init_key_directory, public_jwk

ISSUER = "https://auth.pdp.test"
AUDIENCE = "pdp-sidecar"
IDP_A = "https://login.acme.example"
IDP_B = "https://sso.globex.example"


class FakeClock:
    def __init__(self, now: float | None = None) -> None:
        self.now = now if now is not None else time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assemble(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    h = b64url(json.dumps(header).encode())
    p = b64url(json.dumps(claims).encode())
    return f"{h}.{p}.{b64url(signature)}"


@dataclass
class Forge:
    """Mints tokens with our real signing key, then bends whatever a case needs."""

    ring: KeyRing
    clock: FakeClock
    issuer: str = ISSUER
    audience: str = AUDIENCE
    counter: list[int] = field(default_factory=lambda: [0])

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock())
        self.counter[0] += 1
        base: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "user-1",
            "aud": self.audience,
            "exp": now + 600,
            "iat": now,
            "nbf": now,
            "jti": f"jti-{self.counter[0]}",
            "client_id": "web",
            "tenant": "acme",
            "roles": ["member"],
            "scope": "orders:read",
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v != DROP}

    def sign(
        self,
        claims: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        *,
        key: Any = None,
        algorithm: str | None = None,
    ) -> str:
        signing = self.ring.snapshot.signing
        assert signing is not None
        hdr = {"typ": "at+jwt", "kid": signing.kid}
        hdr.update(headers or {})
        return jwt.encode(
            claims if claims is not None else self.claims(),
            key if key is not None else signing.private_key,
            algorithm=algorithm or signing.algorithm,
            headers=hdr,
        )

    def sign_raw(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        """Sign exactly these bytes, bypassing pyjwt's claim checks on encode."""
        signing = self.ring.snapshot.signing
        assert signing is not None
        hdr = {"alg": "ES256", "typ": "at+jwt", "kid": signing.kid, **(headers or {})}
        unsigned = assemble(hdr, claims).rsplit(".", 1)[0]
        alg = ECAlgorithm(ECAlgorithm.SHA256)
        return f"{unsigned}.{b64url(alg.sign(unsigned.encode(), signing.private_key))}"


DROP = "<drop>"  # a claim value meaning "leave this claim out"


@dataclass
class IdP:
    """A customer's identity provider: its own key, its JWKS file, id_tokens on demand."""

    issuer: str
    tenant: str
    audience: str
    key: ec.EllipticCurvePrivateKey
    kid: str

    def id_token(self, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "alice",  # the same in every IdP on purpose
            "aud": self.audience,
            "exp": now + 300,
            "iat": now,
        }
        claims.update(overrides)
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})

    def jwks(self) -> dict[str, Any]:
        from pdp.tokens.keys import VerificationKey

        return {"keys": [public_jwk(VerificationKey(self.kid, "ES256", self.key.public_key()))]}


@dataclass
class Server:
    base: str
    runtime: TokenRuntime
    events: list[tuple[str, dict[str, Any]]]
    secrets: dict[str, str]


def make_runtime(
    tmp_path: Path, issuer: str, idps_file: Path | None, events: list[tuple[str, dict[str, Any]]]
) -> TokenRuntime:
    key_dir = tmp_path / "keys"
    if not key_dir.exists():
        init_key_directory(key_dir)
    config = TokenConfig(
        key_dir=key_dir,
        db_path=tmp_path / "tokens.db",
        issuer=issuer,
        audience=AUDIENCE,
        trusted_idps_file=idps_file,
        maintenance_interval=0.2,
        source_failure_limit=1000,
        client_failure_limit=5,
    )
    return build_tokens(config, on_event=lambda kind, fields: events.append((kind, fields)))
