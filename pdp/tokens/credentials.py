"""Client secrets and refresh tokens: generated with 256 bits of entropy, stored only as hashes.

A fast hash is right here: the secrets are random, so there is nothing to brute-force, and a slow
password hash would cap issuance at a few dozen tokens per second.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from pdp.identifiers import id_problem, is_id
from pdp.tenancy import ANY_TENANT
from pdp.tokens.store import Client

SECRET_BYTES = 32  # 256 bits
# Compared against when a client id is unknown, so both paths do the same work.
_DUMMY_HASH = hashlib.sha256(b"no such client").digest()


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def secret_matches(presented: str, stored_hash: bytes | None) -> bool:
    """Constant-time comparison of a presented secret against a stored hash."""
    expected = stored_hash if stored_hash is not None else _DUMMY_HASH
    ok = hmac.compare_digest(hash_secret(presented), expected)
    return ok and stored_hash is not None


def make_client(
    client_id: str,
    *,
    tenant: str,
    scopes: tuple[str, ...] = (),
    roles: tuple[str, ...] = (),
    grant_types: tuple[str, ...] = ("client_credentials",),
    subject: str | None = None,
) -> tuple[Client, str]:
    """A new client record and its secret; the secret is never stored, only its hash."""
    # The client id is the default token subject: both follow the identifier grammar, so no
    # token subject can spell a userset, a wildcard or a tuple separator.
    if not is_id(client_id):
        raise ValueError(f"client id: {id_problem(client_id)}")
    if subject is not None and not is_id(subject):
        raise ValueError(f"subject: {id_problem(subject)}")
    if not (is_id(tenant) or tenant == ANY_TENANT):
        raise ValueError(f"tenant: {id_problem(tenant)} (or `*` for a client bound to no tenant)")
    secret = new_secret()
    client = Client(
        client_id=client_id,
        secret_hash=hash_secret(secret),
        tenant=tenant,
        subject=subject or client_id,
        roles=tuple(roles),
        scopes=tuple(scopes),
        grant_types=tuple(grant_types),
    )
    return client, secret
