"""Trusted external identity providers: each one's keys, audience, and the one tenant it speaks for.

Their id_tokens are only accepted by token exchange, and always land in the IdP's own tenant.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jwt

from pdp.identifiers import is_id
from pdp.tokens import jws_checks as checks
from pdp.tokens.errors import KeyConfigError
from pdp.tokens.jws_checks import fail
from pdp.tokens.keys import VerificationKey, algorithm_for

ID_TOKEN_TYP: frozenset[str | None] = frozenset({None, "jwt"})
REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat"]


@dataclass(frozen=True, slots=True)
class TrustedIdP:
    issuer: str
    tenant: str  # INVARIANT: identities from this IdP only ever act in this tenant
    audience: str  # what the IdP puts in `aud` for us (our client id at the IdP)
    keys: Mapping[str, VerificationKey]
    # If the IdP also names a tenant in a claim, it must agree with `tenant`.
    tenant_claim: str | None = None
    roles_claim: str | None = None
    default_roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()  # the scopes an exchanged token may carry at most
    # Two customers' IdPs can both have an `alice`: the subject id is namespaced by tenant
    # ("acme/alice") so that relation tuples naming one can never match the other.
    subject_prefix: str | None = None  # None = f"{tenant}/"; "" = the IdP's `sub` as is

    def subject_id(self, sub: str) -> str:
        prefix = f"{self.tenant}/" if self.subject_prefix is None else self.subject_prefix
        return prefix + sub


@dataclass(frozen=True, slots=True)
class ExternalIdentity:
    issuer: str
    subject: str
    tenant: str
    roles: tuple[str, ...]
    idp: TrustedIdP = field(repr=False)


def keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, VerificationKey]:
    """Public keys from a JWKS document; symmetric keys and keys without a kid are refused."""
    out: dict[str, VerificationKey] = {}
    for raw in jwks.get("keys", []):
        if not isinstance(raw, dict) or raw.get("kty") == "oct":
            raise KeyConfigError("trusted-IdP keys must be public asymmetric keys")
        if "d" in raw or "p" in raw:
            raise KeyConfigError("a trusted-IdP JWKS must hold public keys only")
        kid = raw.get("kid")
        if not isinstance(kid, str) or not kid:
            raise KeyConfigError("every trusted-IdP key needs a `kid`")
        try:
            pub = jwt.PyJWK(raw).key
        except (jwt.PyJWTError, ValueError, TypeError):
            raise KeyConfigError(f"trusted-IdP key `{kid}` is unusable") from None
        alg = algorithm_for(pub)
        if raw.get("alg", alg) != alg:
            raise KeyConfigError(f"trusted-IdP key `{kid}` declares an algorithm we do not pin")
        out[kid] = VerificationKey(kid, alg, pub)
    return out


def load_trusted_idps(path: str | Path) -> list[TrustedIdP]:
    """Read a JSON file: `{"trusted_idps": [{issuer, tenant, audience, jwks_file, ...}]}`.

    `jwks_file` is resolved relative to the file; the keys are read once here, never fetched.
    """
    path = Path(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    idps = []
    for entry in doc.get("trusted_idps", []):
        try:
            # INVARIANT: a customer's IdP speaks for one tenant, never for none (`*` would make
            # its exchanged tokens an operator's, bound to no tenant: pdp.tenancy)
            if not is_id(entry["tenant"]):
                raise KeyConfigError(
                    f"trusted IdP `{entry.get('issuer', '?')}`: `tenant` must be one tenant's id"
                )
            jwks_path = path.parent / entry["jwks_file"]
            jwks = json.loads(jwks_path.read_text(encoding="utf-8"))
            idps.append(
                TrustedIdP(
                    issuer=str(entry["issuer"]),
                    tenant=str(entry["tenant"]),
                    audience=str(entry["audience"]),
                    keys=MappingProxyType(keys_from_jwks(jwks)),
                    tenant_claim=entry.get("tenant_claim"),
                    roles_claim=entry.get("roles_claim"),
                    default_roles=tuple(entry.get("default_roles", ())),
                    scopes=tuple(entry.get("scopes", ())),
                    subject_prefix=entry.get("subject_prefix"),
                )
            )
        except KeyError as exc:
            raise KeyConfigError(f"a trusted IdP entry lacks `{exc.args[0]}`") from None
    return idps


class IdPVerifier:
    """Verifies id_tokens from trusted IdPs for token exchange."""

    def __init__(
        self,
        idps: Iterable[TrustedIdP],
        *,
        own_issuer: str,
        leeway: float = 30.0,
        max_token_bytes: int = checks.DEFAULT_MAX_TOKEN_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        by_issuer: dict[str, TrustedIdP] = {}
        for idp in idps:
            if idp.issuer in by_issuer or idp.issuer == own_issuer:
                raise KeyConfigError(f"issuer `{idp.issuer}` is configured twice")
            by_issuer[idp.issuer] = idp
        self._by_issuer = by_issuer
        self.leeway = leeway
        self.max_token_bytes = max_token_bytes
        self._clock = clock

    def verify(self, token: str, *, tenant: str | None = None) -> ExternalIdentity:
        """Verify `token`; if `tenant` is given, the IdP must be the one bound to it."""
        checks.check_size(token, self.max_token_bytes)
        header = checks.read_header(token, ID_TOKEN_TYP)
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError, TypeError):
            fail("malformed token")
        iss = unverified.get("iss")
        # The unverified `iss` only selects which key map to look in; the signature and an
        # exact `iss` comparison below decide. Each IdP's kids live in its own map.
        idp = self._by_issuer.get(iss) if isinstance(iss, str) else None
        if idp is None:
            fail("untrusted issuer")
        now = self._clock()
        key = checks.pick_key(header, idp.keys, now)
        claims = checks.decode(
            token,
            key,
            audience=idp.audience,
            issuer=idp.issuer,
            leeway=self.leeway,
            require=REQUIRED_CLAIMS,
            now=now,
        )
        if tenant is not None and tenant != idp.tenant:
            fail("issuer may not speak for this tenant")
        if idp.tenant_claim is not None and claims.get(idp.tenant_claim) != idp.tenant:
            fail("issuer may not speak for this tenant")
        roles = idp.default_roles
        if idp.roles_claim is not None and idp.roles_claim in claims:
            roles = checks.str_list_claim(claims, idp.roles_claim)
        subject = idp.subject_id(checks.str_claim(claims, "sub"))
        if not is_id(subject):  # an IdP's `sub` with `@`, `#`, spaces...: never our subject
            fail("`sub` is not an identifier pdp accepts")
        return ExternalIdentity(
            issuer=idp.issuer,
            subject=subject,
            tenant=idp.tenant,
            roles=roles,
            idp=idp,
        )
