"""Client secrets and refresh tokens: generated with 256 bits of entropy, stored only as hashes.

A fast hash is right here: the secrets are random, so there is nothing to brute-force, and a slow
password hash would cap issuance at a few dozen tokens per second.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

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
