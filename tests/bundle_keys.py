"""Bundle signing key pairs for tests: a PEM private key and its public key, ES256 or EdDSA."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519


def key_pair(directory: Path, name: str, kind: str = "ec") -> tuple[Path, Path]:
    """Write `<name>.pem` (private, PKCS8) and `<name>.pub` (SubjectPublicKeyInfo); return both."""
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if kind == "ec"
        else ed25519.Ed25519PrivateKey.generate()
    )
    private, public = directory / f"{name}.pem", directory / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public
