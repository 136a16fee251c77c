"""The token settings of `pdp serve`, defined once: its token options and the `TokenConfig` they
make. `pdp.sidecar.config` lists `OPTIONS` among its own and calls `token_config` with the merged settings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pdp.tokens.keys import init_key_directory
from pdp.tokens.runtime import DEFAULT_ACCESS_TOKEN_LIFETIME, TokenConfig
from pdp.tokens.store import is_postgres_url

log = logging.getLogger(__name__)

# (key, type, default, help), the shape of `pdp serve`'s options. The key is the flag
# (`--token-key-dir`), the environment variable (`PDP_TOKEN_KEY_DIR`) and the TOML key
# (`token_key_dir`).
OPTIONS: list[tuple[str, type, Any, str]] = [
    (
        "token_key_dir",
        Path,
        None,
        "directory of signing keys: enables subject_token checks, admin tokens and the token "
        "endpoint (`pdp tokens init-keys` creates one)",
    ),
    (
        "token_db",
        Path,
        None,
        "SQLite file of clients and revocations (default DATA_DIR/tokens.db); not used when "
        "--store is a postgresql:// URL, which then holds them",
    ),
    ("token_issuer", str, "", "`iss` of our tokens, also the token endpoint's public base URL"),
    ("token_audience", str, "pdp", "the `aud` this deployment accepts"),
    ("trusted_idps", Path, None, "JSON file of trusted customer identity providers"),
    (
        "access_token_lifetime",
        int,
        DEFAULT_ACCESS_TOKEN_LIFETIME,
        "access-token lifetime in seconds",
    ),
]


def token_config(settings: Mapping[str, Any]) -> TokenConfig | None:
    """The `TokenConfig` of merged `pdp serve` settings, or None when tokens are off (no key
    directory and no `dev_keys`). Besides `OPTIONS` it reads `data_dir`, `http_listen`, the
    `dev_keys` switch and `store`: a `postgresql://` store holds the token state too, shared by
    every sidecar on it (`token_db` is then ignored); any other store leaves it in `token_db`.
    """
    data_dir = Path(settings["data_dir"])
    key_dir, issuer = settings["token_key_dir"], settings["token_issuer"]
    if settings["dev_keys"]:
        if key_dir is None:
            key_dir = data_dir / "dev-keys"
            init_key_directory(key_dir)  # idempotent: keeps the key a previous run made
        if not issuer:
            issuer = f"http://{settings['http_listen'] or 'localhost'}"
        log.warning("development keys in %s and issuer %s: not for production", key_dir, issuer)
    if not key_dir:
        return None
    db_path = settings["token_db"] or data_dir / "tokens.db"
    store = settings.get("store") or ""
    store_url = store if is_postgres_url(store) else ""
    if store_url and settings["token_db"]:
        log.warning("--token-db is ignored: token state lives in the --store database")
    if not issuer:
        raise SystemExit("--token-key-dir needs --token-issuer")
    trusted_idps = settings["trusted_idps"]
    return TokenConfig(
        key_dir=Path(key_dir),
        db_path=Path(db_path),
        issuer=issuer,
        audience=settings["token_audience"],
        trusted_idps_file=Path(trusted_idps) if trusted_idps else None,
        access_token_lifetime=settings["access_token_lifetime"],
        store_url=store_url,
    )
