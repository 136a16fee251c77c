"""The verifier: good tokens give a subject; every hostile token is refused with InvalidToken."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.tokens import InvalidToken, Verifier
from pdp.tokens.keys import VerificationKey, public_jwk

from .support import AUDIENCE, DROP, ISSUER, FakeClock, Forge, assemble, b64url


def test_good_token_gives_the_subject(forge: Forge, verifier: Verifier) -> None:
    token = forge.sign(forge.claims(jti="abc", roles=["member", "admin"], scope="a b"))
    subject = verifier.verify(token)
    assert subject.subject == "user-1"
    assert subject.tenant == "acme"
    assert subject.roles == ("member", "admin")
    assert subject.scopes == frozenset({"a", "b"})
    assert subject.client_id == "web"
    assert subject.jti == "abc"
    assert subject.issuer == ISSUER


def test_typ_with_media_type_prefix_is_accepted(forge: Forge, verifier: Verifier) -> None:
    token = forge.sign(headers={"typ": "application/at+jwt"})
    assert verifier.verify(token).subject == "user-1"


# -- the hostile catalogue -------------------------------------------------------------------


def _public_pem(forge: Forge) -> bytes:
    signing = forge.ring.snapshot.signing
    assert signing is not None
    return signing.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _kid(forge: Forge) -> str:
    signing = forge.ring.snapshot.signing
    assert signing is not None
    return signing.kid


def alg_none(f: Forge) -> str:
    return assemble({"alg": "none", "typ": "at+jwt", "kid": _kid(f)}, f.claims())


def alg_none_no_kid(f: Forge) -> str:
    return assemble({"alg": "none", "typ": "at+jwt"}, f.claims())


def hs256_with_public_key(f: Forge) -> str:
    # RS/HS confusion: the attacker HMACs with our *public* key, hoping we use it as a secret.
    header = {"alg": "HS256", "typ": "at+jwt", "kid": _kid(f)}
    unsigned = assemble(header, f.claims()).rsplit(".", 1)[0]
    mac = hmac.new(_public_pem(f), unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{b64url(mac)}"


def wrong_aud(f: Forge) -> str:
    return f.sign(f.claims(aud="billing-service"))


def aud_list_without_us(f: Forge) -> str:
    return f.sign(f.claims(aud=["billing-service", "reports"]))


def wrong_iss(f: Forge) -> str:
    return f.sign(f.claims(iss="https://evil.example"))


def partial_iss_prefix(f: Forge) -> str:
    return f.sign(f.claims(iss=ISSUER[:-3]))


def partial_iss_suffix(f: Forge) -> str:
    return f.sign(f.claims(iss=ISSUER + ".evil.example"))


def iss_as_list(f: Forge) -> str:
    return f.sign_raw(f.claims(iss=[ISSUER]))


def expired(f: Forge) -> str:
    now = int(f.clock())
    return f.sign(f.claims(iat=now - 900, nbf=now - 900, exp=now - 300))


def nbf_in_future(f: Forge) -> str:
    return f.sign(f.claims(nbf=int(f.clock()) + 300))


def iat_in_future(f: Forge) -> str:
    now = int(f.clock())
    return f.sign(f.claims(iat=now + 300, exp=now + 600))


def missing_exp(f: Forge) -> str:
    return f.sign(f.claims(exp=DROP))


def missing_aud(f: Forge) -> str:
    return f.sign(f.claims(aud=DROP))


def missing_tenant(f: Forge) -> str:
    return f.sign(f.claims(tenant=DROP))


def lifetime_too_long(f: Forge) -> str:
    return f.sign(f.claims(exp=int(f.clock()) + 10 * 365 * 86400))


def unknown_kid(f: Forge) -> str:
    return f.sign(headers={"kid": "no-such-key"})


def kid_path_traversal(f: Forge) -> str:
    return f.sign(headers={"kid": f"../../../../{f.ring.directory.name}/{_kid(f)}"})


def kid_missing(f: Forge) -> str:
    signing = f.ring.snapshot.signing
    assert signing is not None
    return jwt.encode(f.claims(), signing.private_key, algorithm="ES256", headers={"typ": "at+jwt"})


def _attacker_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def jku_header(f: Forge) -> str:
    evil = _attacker_key()
    return f.sign(headers={"jku": "https://evil.example/jwks.json"}, key=evil)


def x5u_header(f: Forge) -> str:
    return f.sign(headers={"x5u": "https://evil.example/cert.pem"}, key=_attacker_key())


def embedded_jwk(f: Forge) -> str:
    evil = _attacker_key()
    jwk = public_jwk(VerificationKey("evil", "ES256", evil.public_key()))
    return f.sign(headers={"jwk": jwk}, key=evil)


def x5c_header(f: Forge) -> str:
    return f.sign(headers={"x5c": ["MIIB..."]})


def unknown_crit(f: Forge) -> str:
    return f.sign(
        headers={"crit": ["urn:example:must-understand"], "urn:example:must-understand": True}
    )


def nested_cty(f: Forge) -> str:
    inner = f.sign()
    return f.sign({"token": inner, **f.claims()}, headers={"cty": "JWT"})


def wrong_typ(f: Forge) -> str:
    return f.sign(headers={"typ": "JWT"})  # e.g. an id_token replayed as an access token


def missing_typ(f: Forge) -> str:
    signing = f.ring.snapshot.signing
    assert signing is not None
    return jwt.encode(
        f.claims(),
        signing.private_key,
        algorithm="ES256",
        headers={"kid": signing.kid, "typ": None},
    )


def tampered_payload(f: Forge) -> str:
    header, _, sig = f.sign().split(".")
    evil = b64url(json.dumps(f.claims(sub="admin", roles=["admin"])).encode())
    return f"{header}.{evil}.{sig}"


def tampered_header(f: Forge) -> str:
    _, payload, sig = f.sign().split(".")
    header = b64url(json.dumps({"alg": "ES256", "typ": "at+jwt", "kid": _kid(f), "x": 1}).encode())
    return f"{header}.{payload}.{sig}"


def zero_ecdsa_signature(f: Forge) -> str:
    # CVE-2022-21449 ("psychic signatures"): r = s = 0 must never verify.
    unsigned = f.sign().rsplit(".", 1)[0]
    return f"{unsigned}.{b64url(bytes(64))}"


def truncated_signature(f: Forge) -> str:
    return f.sign()[:-10]


def one_megabyte(f: Forge) -> str:
    return f.sign(f.claims(pad="A" * 1_000_000))


def foreign_key_same_kid(f: Forge) -> str:
    return f.sign(key=_attacker_key())


def not_a_jwt(f: Forge) -> str:
    return "not-a-token"


def garbage_segments(f: Forge) -> str:
    return "%%%.^^^.***"


def roles_not_a_list(f: Forge) -> str:
    return f.sign(f.claims(roles="admin"))


@dataclass(frozen=True)
class Case:
    build: Callable[[Forge], str]
    reason: str  # a fragment of the InvalidToken message


CATALOGUE = [
    Case(alg_none, "algorithm not allowed"),
    Case(alg_none_no_kid, "missing kid"),
    Case(hs256_with_public_key, "algorithm not allowed"),
    Case(wrong_aud, "wrong audience"),
    Case(aud_list_without_us, "wrong audience"),
    Case(wrong_iss, "wrong issuer"),
    Case(partial_iss_prefix, "wrong issuer"),
    Case(partial_iss_suffix, "wrong issuer"),
    Case(iss_as_list, "issuer"),
    Case(expired, "expired"),
    Case(nbf_in_future, "not yet valid"),
    Case(iat_in_future, "not yet valid"),
    Case(missing_exp, "missing claim `exp`"),
    Case(missing_aud, "missing claim `aud`"),
    Case(missing_tenant, "missing claim `tenant`"),
    Case(lifetime_too_long, "lifetime too long"),
    Case(unknown_kid, "unknown kid"),
    Case(kid_path_traversal, "unknown kid"),
    Case(kid_missing, "missing kid"),
    Case(jku_header, "`jku`"),
    Case(x5u_header, "`x5u`"),
    Case(embedded_jwk, "`jwk`"),
    Case(x5c_header, "`x5c`"),
    Case(unknown_crit, "`crit`"),
    Case(nested_cty, "`cty`"),
    Case(wrong_typ, "wrong token type"),
    Case(missing_typ, "wrong token type"),
    Case(tampered_payload, "bad signature"),
    Case(tampered_header, "unexpected header"),
    Case(zero_ecdsa_signature, "bad signature"),
    Case(truncated_signature, "bad signature|invalid token|malformed"),
    Case(one_megabyte, "token too large"),
    Case(foreign_key_same_kid, "bad signature"),
    Case(not_a_jwt, "malformed"),
    Case(garbage_segments, "malformed"),
    Case(roles_not_a_list, "bad `roles`"),
]


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.build.__name__ for c in CATALOGUE])
def test_hostile_token_is_refused(case: Case, forge: Forge, verifier: Verifier) -> None:
    token = case.build(forge)
    with pytest.raises(InvalidToken, match=case.reason) as info:
        verifier.verify(token)
    # The message is a short fixed reason: never the token, never a piece of it.
    message = str(info.value)
    assert len(message) < 80
    for part in token.split("."):
        assert len(part) < 8 or part not in message
    assert info.value.__cause__ is None


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.build.__name__ for c in CATALOGUE])
def test_hostile_token_is_refused_again_after_a_good_one_was_cached(
    case: Case, forge: Forge, verifier: Verifier
) -> None:
    """The cache keys on the whole token: a near-copy of a cached good token never hits it."""
    verifier.verify(forge.sign())
    with pytest.raises(InvalidToken):
        verifier.verify(case.build(forge))
    with pytest.raises(InvalidToken):
        verifier.verify(case.build(forge))


@pytest.mark.parametrize("bad", [None, b"bytes", 42, ""])
def test_non_string_or_empty_input_is_refused(verifier: Verifier, bad: object) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(bad)  # type: ignore[arg-type]


# -- cache and revocation --------------------------------------------------------------------


def test_cached_verification_returns_the_same_subject(forge: Forge, verifier: Verifier) -> None:
    token = forge.sign()
    first = verifier.verify(token)
    assert verifier.verify(token) is first


def test_revocation_is_seen_by_the_next_verify_even_when_cached(
    forge: Forge, verifier: Verifier
) -> None:
    token = forge.sign(forge.claims(jti="to-revoke"))
    subject = verifier.verify(token)
    verifier.verify(token)  # now certainly cached
    verifier.revoke(subject.jti, subject.exp)
    with pytest.raises(InvalidToken, match="revoked"):
        verifier.verify(token)


def test_cached_token_expires(forge: Forge, verifier: Verifier, clock: FakeClock) -> None:
    token = forge.sign()
    verifier.verify(token)
    clock.advance(600 + 31)
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(token)


def test_cache_is_bounded(forge: Forge, ring: object, clock: FakeClock) -> None:
    from pdp.tokens import KeyRing

    assert isinstance(ring, KeyRing)
    small = Verifier(ring, issuer=ISSUER, audience=AUDIENCE, cache_size=4, clock=clock)
    tokens = [forge.sign() for _ in range(10)]
    for t in tokens:
        small.verify(t)
    assert len(small._cache) <= 4
    assert all(small.verify(t).subject == "user-1" for t in tokens)


def test_forget_expired_revocations(forge: Forge, verifier: Verifier, clock: FakeClock) -> None:
    verifier.revoke("old", clock() - 100)
    verifier.revoke("live", clock() + 100)
    assert verifier.forget_expired_revocations() == 1
    assert verifier.is_revoked("live")
    assert not verifier.is_revoked("old")


def test_subject_as_an_engine_entity(forge: Forge, verifier: Verifier) -> None:
    subject = verifier.verify(forge.sign(forge.claims(roles=["member"], scope="a")))
    entity = subject.to_entity()
    assert str(entity) == "user:user-1"
    assert entity.attrs["tenant"] == "acme"
    assert entity.attrs["roles"] == frozenset({"member"})
    assert entity.attrs["scopes"] == frozenset({"a"})


@pytest.mark.parametrize(
    ("scopes", "wanted", "allowed"),
    [
        ("tuples:write", "tuples:write", True),
        ("admin", "audit:read", True),
        ("orders:read", "tuples:write", False),
        ("", "audit:read", False),
    ],
)
def test_admin_scopes(
    forge: Forge, verifier: Verifier, scopes: str, wanted: str, allowed: bool
) -> None:
    subject = verifier.verify(forge.sign(forge.claims(scope=scopes)))
    assert subject.allows(wanted) is allowed


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.text(max_size=300)
    | st.binary(max_size=300).map(lambda b: b64url(b) + "." + b64url(b) + "." + b64url(b))
)
def test_arbitrary_input_only_ever_raises_invalid_token(verifier: Verifier, text: str) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(text)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_is_refused(
    forge: Forge, verifier: Verifier, pos: int, value: int
) -> None:
    token = forge.sign(forge.claims(jti="fixed"))
    verifier.verify(token)  # cached
    i = pos % len(token)
    changed = token[:i] + chr(value) + token[i + 1 :]
    if changed == token:
        return
    try:
        subject = verifier.verify(changed)
    except InvalidToken:
        return
    # base64url has slack bits in a segment's last character: a change there may decode to the
    # very same bytes, so the token still says (and is signed over) exactly the same thing.
    segment_ends = {j - 1 for j, c in enumerate(token) if c == "."} | {len(token) - 1}
    assert i in segment_ends
    assert subject == verifier.verify(token)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("Bearer {t}", True),
        ("bearer  {t} ", True),
        ("Basic {t}", False),
        ("Bearer", False),
        ("", False),
        (None, False),
        ("{t}", False),
    ],
)
def test_verify_bearer(forge: Forge, verifier: Verifier, value: str | None, ok: bool) -> None:
    header = value.format(t=forge.sign()) if value is not None else None
    if ok:
        assert verifier.verify_bearer(header).subject == "user-1"
    else:
        with pytest.raises(InvalidToken):
            verifier.verify_bearer(header)
