"""Trusted IdPs: an id_token verifies only against its own issuer's keys, for its own tenant."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pdp.tokens import IdPVerifier, InvalidToken, KeyConfigError, load_trusted_idps

from .support import ISSUER, IdP, assemble


@pytest.fixture
def idp_verifier(idps: tuple[IdP, IdP, Path]) -> IdPVerifier:
    return IdPVerifier(load_trusted_idps(idps[2]), own_issuer=ISSUER)


def test_good_id_token(idp_verifier: IdPVerifier, idps: tuple[IdP, IdP, Path]) -> None:
    identity = idp_verifier.verify(idps[0].id_token(), tenant="acme")
    assert (identity.issuer, identity.subject, identity.tenant) == (
        idps[0].issuer,
        "acme/alice",
        "acme",
    )
    assert identity.roles == ("member",)


HOSTILE: list[tuple[str, Callable[[IdP, IdP], tuple[str, str | None]], str]] = [
    (
        "tenant A token used for tenant B",
        lambda a, b: (a.id_token(), "globex"),
        "may not speak for this tenant",
    ),
    (
        "A's key under B's issuer name (same kid)",
        lambda a, b: (a.id_token(iss=b.issuer, aud=b.audience), None),
        "bad signature",
    ),
    (
        "unknown issuer",
        lambda a, b: (a.id_token(iss="https://evil.example"), None),
        "untrusted issuer",
    ),
    (
        "issuer prefix match",
        lambda a, b: (a.id_token(iss=a.issuer + ".evil"), None),
        "untrusted issuer",
    ),
    ("wrong audience", lambda a, b: (a.id_token(aud="someone-else"), None), "wrong audience"),
    ("expired", lambda a, b: (a.id_token(exp=1_000, iat=900), None), "expired"),
    (
        "missing sub",
        lambda a, b: (
            jwt.encode(
                {"iss": a.issuer, "aud": a.audience, "exp": 4_000_000_000, "iat": 1},
                a.key,
                "ES256",
                headers={"kid": a.kid},
            ),
            None,
        ),
        "missing claim `sub`",
    ),
    (
        "alg none",
        lambda a, b: (assemble({"alg": "none", "kid": a.kid}, {"iss": a.issuer, "sub": "x"}), None),
        "algorithm not allowed",
    ),
    (
        "jku header",
        lambda a, b: (
            jwt.encode(
                {"iss": a.issuer},
                ec.generate_private_key(ec.SECP256R1()),
                "ES256",
                headers={"kid": a.kid, "jku": "https://evil/jwks"},
            ),
            None,
        ),
        "`jku`",
    ),
    (
        "an access token is not an id_token",
        lambda a, b: (
            jwt.encode({"iss": a.issuer}, a.key, "ES256", headers={"kid": a.kid, "typ": "at+jwt"}),
            None,
        ),
        "wrong token type",
    ),
]


@pytest.mark.parametrize(("name", "build", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_id_tokens_are_refused(
    idp_verifier: IdPVerifier,
    idps: tuple[IdP, IdP, Path],
    name: str,
    build: Callable[[IdP, IdP], tuple[str, str | None]],
    reason: str,
) -> None:
    token, tenant = build(idps[0], idps[1])
    with pytest.raises(InvalidToken, match=reason):
        idp_verifier.verify(token, tenant=tenant)


def test_tenant_claim_must_agree(tmp_path: Path, idps: tuple[IdP, IdP, Path]) -> None:
    doc = json.loads(idps[2].read_text())
    doc["trusted_idps"][0]["tenant_claim"] = "org"
    path = idps[2].parent / "with_claim.json"
    path.write_text(json.dumps(doc))
    verifier = IdPVerifier(load_trusted_idps(path), own_issuer=ISSUER)
    assert verifier.verify(idps[0].id_token(org="acme")).tenant == "acme"
    with pytest.raises(InvalidToken, match="tenant"):
        verifier.verify(idps[0].id_token(org="globex"))


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "h"},
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "bad"},
    ],
)
def test_unusable_idp_keys_are_refused(tmp_path: Path, jwk: dict[str, str]) -> None:
    (tmp_path / "k.json").write_text(json.dumps({"keys": [jwk]}))
    (tmp_path / "idps.json").write_text(
        json.dumps(
            {
                "trusted_idps": [
                    {"issuer": "https://x", "tenant": "t", "audience": "a", "jwks_file": "k.json"}
                ]
            }
        )
    )
    with pytest.raises(KeyConfigError):
        load_trusted_idps(tmp_path / "idps.json")


def test_our_own_issuer_cannot_be_an_external_idp(idps: tuple[IdP, IdP, Path]) -> None:
    with pytest.raises(KeyConfigError):
        IdPVerifier(load_trusted_idps(idps[2]), own_issuer=idps[0].issuer)


def test_subject_prefix_can_be_configured(idps: tuple[IdP, IdP, Path]) -> None:
    doc = json.loads(idps[2].read_text())
    doc["trusted_idps"][0]["subject_prefix"] = ""
    path = idps[2].parent / "no_prefix.json"
    path.write_text(json.dumps(doc))
    verifier = IdPVerifier(load_trusted_idps(path), own_issuer=ISSUER)
    assert verifier.verify(idps[0].id_token()).subject == "alice"


@pytest.mark.parametrize("tenant", ["*", "", "acme corp", "a#b"])
def test_an_idp_speaks_for_one_tenant_never_none(tmp_path: Path, tenant: str) -> None:
    """`*` would make the IdP's exchanged tokens an operator's, bound to no tenant."""
    (tmp_path / "idps.json").write_text(
        json.dumps(
            {
                "trusted_idps": [
                    {"issuer": "https://x", "tenant": tenant, "audience": "a", "jwks_file": "k"}
                ]
            }
        )
    )
    with pytest.raises(KeyConfigError, match="one tenant"):
        load_trusted_idps(tmp_path / "idps.json")
