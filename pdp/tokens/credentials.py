"""Client secrets and refresh tokens: generated with 256 bits of entropy, stored only as hashes.

A fast hash is right here: the secrets are random, so there is nothing to brute-force, and a slow
password hash would cap issuance at a few dozen tokens per second.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

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
    if not client_id or any(c.isspace() or c == ":" for c in client_id):
        raise ValueError("a client id must be non-empty, without spaces or `:`")
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
