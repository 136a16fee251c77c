"""`pdp tokens ...`: the secret is printed once and stored only as a hash; keys rotate."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdp.tokens import TokenStore
from pdp.tokens.admin_cli import main
from pdp.tokens.credentials import secret_matches


def test_create_client_prints_the_secret_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "t.db"
    assert (
        main(
            [
                "tokens",
                "create-client",
                "--db",
                str(db),
                "--client-id",
                "svc",
                "--tenant",
                "acme",
                "--scope",
                "orders:read",
                "--scope",
                "tuples:write",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    secret = out.split("client_secret: ", 1)[1].strip()
    assert len(secret) >= 43  # 32 random bytes, base64url
    store = TokenStore(db)
    try:
        client = store.get_client("svc")
    finally:
        store.close()
    assert client is not None
    assert client.scopes == ("orders:read", "tuples:write")
    assert secret_matches(secret, client.secret_hash)
    assert secret not in repr(client)
    for f in tmp_path.glob("t.db*"):
        assert secret.encode() not in f.read_bytes()


def test_key_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    assert main(["tokens", "init-keys", "--key-dir", str(keys), "--alg", "EdDSA"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["tokens", "rotate-key", "--key-dir", str(keys)]) == 0
    second = capsys.readouterr().out.strip()
    assert first != second
    assert (keys / "current").read_text().strip() == second
    assert main(["tokens", "remove-key", "--key-dir", str(keys), "--kid", first]) == 0
    assert not (keys / f"{first}.pem").exists()
    assert first in (keys / "revoked_kids").read_text()
