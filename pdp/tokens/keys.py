"""Signing keys: a key directory read at run time, rotation without restart, the JWKS document.

Layout of the directory: `<kid>.pem` (a PKCS#8 private key, or a public key to verify only),
`current` (the kid that signs), `revoked_kids` (kids removed in an emergency, one per line).
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from pdp.tokens.errors import KeyConfigError

ALGORITHMS = ("ES256", "EdDSA", "RS256")
DEFAULT_ALGORITHM = "ES256"
# A kid is a file name stem, so it is kept to a charset that cannot walk out of the directory.
KID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CURRENT = "current"
_REVOKED = "revoked_kids"
_MIN_RSA_BITS = 2048

EventHook = Callable[[str, dict[str, Any]], None]

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key and the one algorithm it may be used with."""

    kid: str
    algorithm: str
    public_key: PublicKey
    # Retired keys verify until every token they signed has expired; None = no end.
    not_after: float | None = None

    def __repr__(self) -> str:
        return f"VerificationKey(kid={self.kid!r}, algorithm={self.algorithm!r})"


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    algorithm: str
    private_key: PrivateKey

    def __repr__(self) -> str:  # INVARIANT: key material is never rendered
        return f"SigningKey(kid={self.kid!r}, algorithm={self.algorithm!r})"


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """One consistent view of the key directory; replaced as a whole on every change."""

    generation: int
    signing: SigningKey | None
    keys: Mapping[str, VerificationKey]
    jwks: bytes  # the serialized JWKS document, public keys only


def algorithm_for(key: PrivateKey | PublicKey) -> str:
    """The single algorithm a key may be used with; anything else is refused."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyConfigError("only P-256 EC keys are supported (ES256)")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise KeyConfigError(f"RSA keys must have at least {_MIN_RSA_BITS} bits")
        return "RS256"
    raise KeyConfigError("unsupported key type; use ES256 (P-256), EdDSA (Ed25519) or RS256")


def public_jwk(key: VerificationKey) -> dict[str, Any]:
    pub = key.public_key
    jwk: dict[str, Any]
    if isinstance(pub, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(pub, as_dict=True)
    elif isinstance(pub, ed25519.Ed25519PublicKey):
        jwk = OKPAlgorithm.to_jwk(pub, as_dict=True)
    else:
        jwk = RSAAlgorithm.to_jwk(pub, as_dict=True)
    jwk.update(kid=key.kid, alg=key.algorithm, use="sig")
    return jwk


def generate_private_key(algorithm: str = DEFAULT_ALGORITHM) -> PrivateKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise KeyConfigError(f"unknown algorithm `{algorithm}`; choose one of {', '.join(ALGORITHMS)}")


def _load_pem(path: Path) -> PrivateKey | PublicKey:
    data = path.read_bytes()
    try:
        if b"PRIVATE KEY" in data:
            priv = serialization.load_pem_private_key(data, password=None)
            if not isinstance(priv, PrivateKey):
                raise KeyConfigError(f"`{path.name}`: unsupported key type")
            return priv
        pub = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        # The library's message could quote the file; ours names only the file.
        raise KeyConfigError(f"`{path.name}` is not a readable PEM key") from exc.__class__()
    if not isinstance(pub, PublicKey):
        raise KeyConfigError(f"`{path.name}`: unsupported key type")
    return pub


def _write_private(path: Path, key: PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: a rotation never overwrites a key that may still be verifying tokens.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class KeyRing:
    """Owns the key directory. `snapshot` is read lock-free; changes swap in a new snapshot.

    `token_lifetime` is the longest access-token lifetime: a retired key stays published and
    verifying for that long (plus leeway) after the rotation that retired it.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        token_lifetime: float = 900.0,
        leeway: float = 30.0,
        on_event: EventHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.token_lifetime = token_lifetime
        self.leeway = leeway
        self._on_event = on_event
        self._clock = clock
        self._lock = threading.Lock()
        self._generation = 0
        self._fingerprint: tuple[Any, ...] | None = None
        self.snapshot = KeySnapshot(0, None, MappingProxyType({}), b'{"keys":[]}')
        self.reload()

    # -- reading -------------------------------------------------------------------------------

    def _scan_fingerprint(self) -> tuple[Any, ...]:
        entries = []
        for entry in os.scandir(self.directory):
            if entry.name.startswith("."):
                continue
            st = entry.stat()
            entries.append((entry.name, st.st_mtime_ns, st.st_size))
        return tuple(sorted(entries))

    def reload(self, *, force: bool = False) -> bool:
        """Re-read the directory if it changed or a retired key ran out. True if swapped."""
        with self._lock:
            if not self.directory.is_dir():
                raise KeyConfigError("the key directory does not exist")
            fingerprint = self._scan_fingerprint()
            now = self._clock()
            expired = any(
                k.not_after is not None and now >= k.not_after for k in self.snapshot.keys.values()
            )
            if not force and fingerprint == self._fingerprint and not expired:
                return False
            self._fingerprint = fingerprint
            self._generation += 1
            self.snapshot = self._build(now)
            return True

    def _revoked_kids(self) -> frozenset[str]:
        path = self.directory / _REVOKED
        if not path.exists():
            return frozenset()
        return frozenset(line.strip() for line in path.read_text().splitlines() if line.strip())

    def _build(self, now: float) -> KeySnapshot:
        revoked = self._revoked_kids()
        loaded: dict[str, tuple[PrivateKey | PublicKey, float]] = {}
        for path in sorted(self.directory.glob("*.pem")):
            kid = path.stem
            if not KID_RE.match(kid) or kid in revoked:
                continue
            loaded[kid] = (_load_pem(path), path.stat().st_mtime)
        current_path = self.directory / _CURRENT
        signing_kid: str | None = None
        rotated_at = 0.0
        if current_path.exists():
            signing_kid = current_path.read_text().strip() or None
            rotated_at = current_path.stat().st_mtime
            if signing_kid is not None and signing_kid not in loaded:
                raise KeyConfigError(f"`current` names kid `{signing_kid}`, which is not loaded")
        else:
            private = [(mtime, kid) for kid, (k, mtime) in loaded.items() if _is_private(k)]
            if private:
                rotated_at, signing_kid = max(private)
        signing: SigningKey | None = None
        keys: dict[str, VerificationKey] = {}
        # Every key but the signing one was retired no later than the last rotation.
        retire_end = rotated_at + self.token_lifetime + self.leeway
        for kid, (key, _mtime) in loaded.items():
            alg = algorithm_for(key)
            if kid == signing_kid:
                if not _is_private(key):
                    raise KeyConfigError(f"the signing kid `{kid}` has no private key")
                signing = SigningKey(kid, alg, key)  # type: ignore[arg-type]
                keys[kid] = VerificationKey(kid, alg, _public(key))
            elif not _is_private(key):
                keys[kid] = VerificationKey(kid, alg, _public(key))  # verify-only: no end
            elif now < retire_end:
                keys[kid] = VerificationKey(kid, alg, _public(key), not_after=retire_end)
        jwks = orjson.dumps({"keys": [public_jwk(k) for k in keys.values()]})
        return KeySnapshot(self._generation, signing, MappingProxyType(keys), jwks)

    # -- changing ------------------------------------------------------------------------------

    def rotate(self, algorithm: str = DEFAULT_ALGORITHM) -> str:
        """Make a fresh key the signing key; the old one keeps verifying until its tokens expire."""
        key = generate_private_key(algorithm)
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(self._clock()))
        kid = f"{algorithm.lower()}-{stamp}-{secrets.token_hex(4)}"
        _write_private(self.directory / f"{kid}.pem", key)
        previous = self.snapshot.signing.kid if self.snapshot.signing else None
        _write_atomic(self.directory / _CURRENT, kid + "\n")
        self.reload(force=True)
        self._emit("key_rotated", {"kid": kid, "previous_kid": previous, "algorithm": algorithm})
        return kid

    def remove(self, kid: str) -> None:
        """Emergency removal: every token `kid` signed fails from the next verification on.

        The kid is written to `revoked_kids` first, so a restored backup cannot bring it back.
        """
        if not KID_RE.match(kid):
            raise KeyConfigError("not a valid kid")
        with open(self.directory / _REVOKED, "a", encoding="utf-8") as f:
            f.write(kid + "\n")
            f.flush()
            os.fsync(f.fileno())
        signing = self.snapshot.signing
        if signing is not None and signing.kid == kid:
            self.rotate(signing.algorithm)
        (self.directory / f"{kid}.pem").unlink(missing_ok=True)
        self.reload(force=True)
        self._emit("key_removed", {"kid": kid})

    def prune(self) -> list[str]:
        """Delete private key files whose tokens have all expired. Returns the kids deleted."""
        snap = self.snapshot
        gone = []
        for path in self.directory.glob("*.pem"):
            kid = path.stem
            signing = snap.signing.kid if snap.signing else None
            if kid not in snap.keys and kid != signing and b"PRIVATE" in path.read_bytes():
                path.unlink()
                gone.append(kid)
        if gone:
            self.reload(force=True)
        return gone

    def _emit(self, kind: str, fields: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(kind, fields)


def _is_private(key: PrivateKey | PublicKey) -> bool:
    return isinstance(key, PrivateKey)


def _public(key: PrivateKey | PublicKey) -> PublicKey:
    return key.public_key() if isinstance(key, PrivateKey) else key


def init_key_directory(
    directory: str | os.PathLike[str], algorithm: str = DEFAULT_ALGORITHM
) -> str:
    """Create the directory (mode 0700) with one signing key if it has none. Returns the kid."""
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    ring = KeyRing(path)
    if ring.snapshot.signing is not None:
        return ring.snapshot.signing.kid
    return ring.rotate(algorithm)
