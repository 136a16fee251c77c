"""Checks every incoming JWT passes before any signature work: size, header shape, pinned alg.

Shared by our own access-token verifier and the trusted-IdP verifier.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, NoReturn

import jwt
import orjson

from pdp.tokens.errors import InvalidToken
from pdp.tokens.keys import VerificationKey

# pyjwt 2.9-2.12 carry advisories (alg allow-list bypass, JWKS refetch and decode DoS).
_PYJWT_MIN = (2, 13)
if tuple(int(p) for p in jwt.__version__.split(".")[:2]) < _PYJWT_MIN:
    raise ImportError(f"pdp.tokens needs pyjwt >= 2.13, found {jwt.__version__}")

DEFAULT_MAX_TOKEN_BYTES = 8 * 1024
# Only these header parameters are accepted. Everything else is refused by name: `jku`, `x5u`,
# `jwk`, `x5c` would point at or embed a key, `cty` would nest a token, `crit` would demand
# extensions we do not implement, `b64` would change what is signed.
ALLOWED_HEADER = frozenset({"alg", "typ", "kid"})
_NAMED_REFUSALS = ("cty", "crit", "jku", "x5u", "jwk", "x5c", "b64")


def fail(reason: str) -> NoReturn:
    # `from None`: a library's exception (and whatever it quoted) never rides along.
    raise InvalidToken(reason) from None


def check_size(token: object, max_bytes: int) -> str:
    if not isinstance(token, str):
        fail("token must be a string")
    # len() of a str counts characters; a JWT is ASCII, so characters are bytes.
    if len(token) > max_bytes:
        fail("token too large")
    if token.count(".") != 2:
        fail("malformed token")
    return token


def read_header(token: str, allowed_typ: frozenset[str | None]) -> dict[str, Any]:
    # Decoded here rather than by pyjwt so that each refusal below names its reason.
    segment = token.split(".", 1)[0]
    try:
        header = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError, binascii.Error):
        fail("malformed token")
    if not isinstance(header, dict):
        fail("malformed token")
    for name in _NAMED_REFUSALS:
        if name in header:
            fail(f"header parameter `{name}` is not accepted")
    if not ALLOWED_HEADER.issuperset(header):
        fail("unexpected header parameter")
    typ = header.get("typ")
    if typ is not None and not isinstance(typ, str):
        fail("bad `typ`")
    norm = typ.lower().removeprefix("application/") if isinstance(typ, str) else None
    if norm not in allowed_typ:
        fail("wrong token type")
    return header


def pick_key(
    header: Mapping[str, Any], keys: Mapping[str, VerificationKey], now: float
) -> VerificationKey:
    kid = header.get("kid")
    if not isinstance(kid, str):
        fail("missing kid")
    # INVARIANT: the kid is only ever a dictionary key here: no path, no URL, no fetch.
    key = keys.get(kid)
    if key is None or (key.not_after is not None and now >= key.not_after):
        fail("unknown kid")
    if header.get("alg") != key.algorithm:
        fail("algorithm not allowed")
    return key


def decode(
    token: str,
    key: VerificationKey,
    *,
    audience: str,
    issuer: str,
    leeway: float,
    require: list[str],
    now: float,
) -> dict[str, Any]:
    """The claims of `token`, signed by `key` and checked against the caller's clock."""
    claims = _verified_claims(
        token, key, audience=audience, issuer=issuer, leeway=leeway, require=require
    )
    _check_claims(claims, audience=audience, issuer=issuer, leeway=leeway, now=now)
    return claims


def _verified_claims(
    token: str,
    key: VerificationKey,
    *,
    audience: str,
    issuer: str,
    leeway: float,
    require: list[str],
) -> dict[str, Any]:
    """The library's signature and registered-claim checks, each failure named by a fixed reason."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.public_key,
            algorithms=[key.algorithm],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": require, "enforce_minimum_key_length": True},
        )
    except jwt.ExpiredSignatureError:
        fail("expired")
    except jwt.ImmatureSignatureError:
        fail("not yet valid")
    except jwt.InvalidAudienceError:
        fail("wrong audience")
    except jwt.InvalidIssuerError:
        fail("wrong issuer")
    except jwt.InvalidSignatureError:
        fail("bad signature")
    except jwt.MissingRequiredClaimError as exc:
        claim = exc.claim if exc.claim in require else "?"
        fail(f"missing claim `{claim}`")
    except (jwt.PyJWTError, ValueError, TypeError):
        fail("invalid token")
    return claims


def _check_claims(
    claims: Mapping[str, Any], *, audience: str, issuer: str, leeway: float, now: float
) -> None:
    # Belt and braces over the library: exact string issuer, audience present and ours.
    if claims.get("iss") != issuer or not isinstance(claims.get("iss"), str):
        fail("wrong issuer")
    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        fail("wrong audience")
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            fail(f"bad `{name}`")
    # The library checks times against the wall clock; these use the caller's clock too.
    if now >= claims["exp"] + leeway:
        fail("expired")
    if claims.get("nbf", 0) > now + leeway or claims.get("iat", 0) > now + leeway:
        fail("not yet valid")


def str_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        fail(f"bad `{name}`")
    return value


def str_list_claim(claims: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        fail(f"bad `{name}`")
    return tuple(value)
