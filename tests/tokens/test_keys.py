"""The key ring: algorithms, rotation with overlap, expiry of retired keys, emergency removal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pdp.tokens import AccessTokenIssuer, InvalidToken, KeyConfigError, KeyRing, Verifier
from pdp.tokens.keys import init_key_directory

from .support import AUDIENCE, ISSUER, FakeClock, Forge


def _issuer(ring: KeyRing, clock: FakeClock) -> AccessTokenIssuer:
    return AccessTokenIssuer(ring, issuer=ISSUER, audience=AUDIENCE, lifetime=600, clock=clock)


def _mint(ring: KeyRing, clock: FakeClock) -> str:
    return _issuer(ring, clock).issue(subject="s", tenant="t", client_id="c").token


def _jwks_kids(ring: KeyRing) -> set[str]:
    return {k["kid"] for k in json.loads(ring.snapshot.jwks)["keys"]}


@pytest.mark.parametrize(("alg", "kty"), [("ES256", "EC"), ("EdDSA", "OKP"), ("RS256", "RSA")])
def test_each_algorithm_signs_and_verifies(tmp_path: Path, alg: str, kty: str) -> None:
    clock = FakeClock()
    init_key_directory(tmp_path, alg)
    ring = KeyRing(tmp_path, clock=clock)
    verifier = Verifier(ring, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    token = _mint(ring, clock)
    assert verifier.verify(token).subject == "s"
    (jwk,) = json.loads(ring.snapshot.jwks)["keys"]
    assert (jwk["kty"], jwk["alg"], jwk["use"]) == (kty, alg, "sig")
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk)  # public halves only


def test_key_files_are_private_and_never_rendered(key_dir: Path, ring: KeyRing) -> None:
    (pem,) = key_dir.glob("*.pem")
    assert pem.stat().st_mode & 0o077 == 0
    assert "PRIVATE" not in repr(ring.snapshot.signing)
    assert "PRIVATE" not in repr(ring.snapshot)


def test_rotation_keeps_the_old_key_until_its_tokens_expire(
    ring: KeyRing, verifier: Verifier, clock: FakeClock
) -> None:
    assert ring.snapshot.signing is not None
    old_kid = ring.snapshot.signing.kid
    old_token = _mint(ring, clock)
    events: list[tuple[str, dict[str, object]]] = []
    ring._on_event = lambda kind, fields: events.append((kind, fields))

    new_kid = ring.rotate()

    assert ring.snapshot.signing is not None
    assert ring.snapshot.signing.kid == new_kid
    assert _jwks_kids(ring) == {old_kid, new_kid}
    assert verifier.verify(old_token).subject == "s"  # overlap: old tokens still verify
    new_token = _mint(ring, clock)
    assert new_token.split(".")[0] != old_token.split(".")[0]
    assert verifier.verify(new_token).subject == "s"
    assert events == [
        ("key_rotated", {"kid": new_kid, "previous_kid": old_kid, "algorithm": "ES256"})
    ]

    # After every token the old key signed has expired (lifetime + leeway), it leaves.
    clock.advance(600 + 30 + 1)
    assert ring.reload()
    assert _jwks_kids(ring) == {new_kid}
    assert ring.prune() == [old_kid]
    assert {p.stem for p in ring.directory.glob("*.pem")} == {new_kid}


def test_a_retired_key_is_refused_after_its_window_even_before_a_reload(
    ring: KeyRing, verifier: Verifier, clock: FakeClock, forge: Forge
) -> None:
    claims = forge.claims(
        exp=int(clock()) + 10_000, iat=int(clock()) + 9_500, nbf=int(clock()) + 9_500
    )
    token = forge.sign(claims)
    ring.rotate()
    clock.advance(9_600)  # the token is now in its own validity window; its key is not
    with pytest.raises(InvalidToken, match="unknown kid"):
        verifier.verify(token)


def test_emergency_removal_rejects_every_token_at_once(
    ring: KeyRing, verifier: Verifier, clock: FakeClock
) -> None:
    assert ring.snapshot.signing is not None
    leaked = ring.snapshot.signing.kid
    token = _mint(ring, clock)
    verifier.verify(token)
    verifier.verify(token)  # cached

    ring.remove(leaked)

    with pytest.raises(InvalidToken, match="unknown kid"):
        verifier.verify(token)
    assert leaked not in _jwks_kids(ring)
    assert ring.snapshot.signing is not None
    assert ring.snapshot.signing.kid != leaked
    assert verifier.verify(_mint(ring, clock)).subject == "s"  # service continues, new key
    assert not (ring.directory / f"{leaked}.pem").exists()


def test_a_removed_kid_cannot_come_back_from_a_backup(ring: KeyRing, key_dir: Path) -> None:
    assert ring.snapshot.signing is not None
    leaked = ring.snapshot.signing.kid
    backup = (key_dir / f"{leaked}.pem").read_bytes()
    ring.remove(leaked)
    (key_dir / f"{leaked}.pem").write_bytes(backup)
    ring.reload(force=True)
    assert leaked not in ring.snapshot.keys


def test_another_process_sees_rotation_and_removal_on_reload(
    key_dir: Path, ring: KeyRing, clock: FakeClock
) -> None:
    """Rotation without restart: a second ring on the same directory (another process)."""
    other = KeyRing(key_dir, clock=clock)
    verifier = Verifier(other, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    kid = ring.rotate()
    assert other.reload()
    assert other.snapshot.signing is not None
    assert other.snapshot.signing.kid == kid
    token = _mint(ring, clock)
    verifier.verify(token)
    ring.remove(kid)
    assert other.reload()
    with pytest.raises(InvalidToken):
        verifier.verify(token)
    assert not other.reload()  # nothing changed since: no new snapshot


def test_public_key_files_verify_only(tmp_path: Path, key_dir: Path, clock: FakeClock) -> None:
    from cryptography.hazmat.primitives import serialization

    signer = KeyRing(key_dir, clock=clock)
    assert signer.snapshot.signing is not None
    pub_dir = tmp_path / "public"
    pub_dir.mkdir()
    pem = signer.snapshot.signing.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (pub_dir / f"{signer.snapshot.signing.kid}.pem").write_bytes(pem)
    verify_only = KeyRing(pub_dir, clock=clock)
    assert verify_only.snapshot.signing is None
    verifier = Verifier(verify_only, issuer=ISSUER, audience=AUDIENCE, clock=clock)
    assert verifier.verify(_mint(signer, clock)).subject == "s"
    with pytest.raises(KeyConfigError):
        _mint(verify_only, clock)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("garbage.pem", b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"),
        ("hmac.pem", b"just some bytes"),
    ],
)
def test_unreadable_key_files_are_refused_without_echoing_them(
    tmp_path: Path, name: str, content: bytes
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(KeyConfigError) as info:
        KeyRing(tmp_path)
    assert "bytes" not in str(info.value)
    assert "base64" not in str(info.value)


def test_weak_rsa_and_other_curves_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    for i, key in enumerate(
        [rsa.generate_private_key(65537, 1024), ec.generate_private_key(ec.SECP384R1())]
    ):
        d = tmp_path / str(i)
        d.mkdir()
        (d / "k.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        with pytest.raises(KeyConfigError):
            KeyRing(d)


def test_files_with_unsafe_names_are_ignored(key_dir: Path, ring: KeyRing) -> None:
    (key_dir / "bad name.pem").write_bytes((next(key_dir.glob("*.pem"))).read_bytes())
    ring.reload()
    assert "bad name" not in ring.snapshot.keys
