"""Signing and verifying a bundle's file list: `.signatures.json` holds one compact JWS (ES256 or
EdDSA) whose payload is the file list, as OPA's bundle signatures do. Keys are PEM files, read as
the token keys are (`pdp.tokens.keys`).

SignatureError(ValueError) — the bundle's signature is missing, malformed, forged or foreign.
KeyConfigError (pdp.tokens)  — a key file that cannot be used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from pathlib import Path

import jwt
import orjson
from cryptography.hazmat.primitives import serialization

from pdp.bundle import manifest as bundle_manifest
from pdp.errors import Refused
from pdp.tokens.errors import KeyConfigError
from pdp.tokens.keys import PrivateKey, PublicKey, _load_pem, algorithm_for

ALGORITHMS = ("ES256", "EdDSA")
MAX_SIGNATURES_BYTES = 64 << 20
# Header parameters accepted; anything else (`jku`, `x5u`, `jwk`, `x5c` would point at or carry a
# key, `crit` and `b64` would change what is signed) refuses the signature.
_HEADER = frozenset({"alg", "kid", "typ"})


class SignatureError(Refused):
    """The bundle's signature cannot be trusted; the message says why (never key material)."""


def key_id(key: PublicKey) -> str:
    """A short fingerprint of the public key: the first 16 hex digits of SHA-256 over its DER."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def _read_key(path: Path) -> PrivateKey | PublicKey:
    try:
        return _load_pem(path)
    except OSError as exc:
        raise KeyConfigError(f"`{path}` cannot be read ({exc.strerror})") from None


def _algorithm(key: PrivateKey | PublicKey, path: Path) -> str:
    alg = algorithm_for(key)
    if alg not in ALGORITHMS:
        raise KeyConfigError(
            f"`{path.name}`: bundle signing keys are P-256 (ES256) or Ed25519 (EdDSA)"
        )
    return alg


def sign(hashes: Mapping[str, str], key_file: Path) -> bytes:
    """The `.signatures.json` content: the file list signed with the private key in `key_file`."""
    key = _read_key(key_file)
    if not isinstance(key, PrivateKey):
        raise KeyConfigError(f"`{key_file.name}` is a public key; signing needs the private key")
    alg = _algorithm(key, key_file)
    payload = orjson.dumps(bundle_manifest.to_json(hashes), option=orjson.OPT_SORT_KEYS)
    token = jwt.api_jws.PyJWS().encode(
        payload, key, algorithm=alg, headers={"typ": None, "kid": key_id(key.public_key())}
    )
    return orjson.dumps({"signatures": [token]}, option=orjson.OPT_INDENT_2) + b"\n"


class Verifier:
    """Checks `.signatures.json` against one public key; the algorithm is the key's, never the
    header's. Callable as `bundle_manifest.VerifySignatures`."""

    def __init__(self, key: PublicKey, algorithm: str) -> None:
        self._key = key
        self._algorithm = algorithm
        self.kid = key_id(key)

    @classmethod
    def from_file(cls, path: Path) -> Verifier:
        key = _read_key(path)
        if isinstance(key, PrivateKey):
            # A sidecar needs only the public half; a private key here is one copy too many.
            raise KeyConfigError(f"`{path.name}` is a private key; give the public key to verify")
        return cls(key, _algorithm(key, path))

    def __repr__(self) -> str:
        return f"Verifier(kid={self.kid!r}, algorithm={self._algorithm!r})"

    def __call__(self, signatures: bytes) -> Mapping[str, str]:
        if len(signatures) > MAX_SIGNATURES_BYTES:
            raise SignatureError("`.signatures.json` is too large")
        try:
            doc = orjson.loads(signatures)
        except orjson.JSONDecodeError:
            raise SignatureError("`.signatures.json` is not JSON") from None
        tokens = doc.get("signatures") if isinstance(doc, dict) else None
        if not isinstance(tokens, list) or len(tokens) != 1 or not isinstance(tokens[0], str):
            raise SignatureError("`.signatures.json` must hold exactly one signature")
        token: str = tokens[0]
        header = _header(token)
        if header.get("alg") != self._algorithm:
            raise SignatureError(
                f"signed with `{header.get('alg')}`; this key verifies `{self._algorithm}` only"
            )
        kid = header.get("kid")
        if kid is not None and kid != self.kid:
            raise SignatureError(f"signed by key `{kid}`, not by the verify key `{self.kid}`")
        try:
            decoded = jwt.api_jws.PyJWS().decode_complete(
                token, self._key, algorithms=[self._algorithm]
            )
        except jwt.InvalidSignatureError:
            raise SignatureError(
                "bad signature: the signed file list was not signed by this key"
            ) from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise SignatureError("malformed signature") from None
        try:
            return bundle_manifest.parse_bytes(decoded["payload"])
        except bundle_manifest.ManifestError as exc:
            raise SignatureError(f"the signed payload is not a file list: {exc}") from None


def _header(token: str) -> dict[str, object]:
    if token.count(".") != 2:
        raise SignatureError("malformed signature: not a compact JWS")
    segment = token.split(".", 1)[0]
    try:
        header = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError, binascii.Error):
        raise SignatureError("malformed signature header") from None
    if not isinstance(header, dict):
        raise SignatureError("malformed signature header")
    extra = sorted(set(header) - _HEADER)
    if extra:
        raise SignatureError(f"signature header parameter `{extra[0]}` is not accepted")
    return header
