"""The token settings of `pdp serve`: defined once in `pdp.tokens.settings`, read as flags,
environment variables or TOML keys, turned into one `TokenConfig`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import pytest

from pdp.sidecar import command as serve_cli
from pdp.tokens import TokenConfig
from pdp.tokens.settings import OPTIONS, token_config

NAMES = [
    "token_key_dir",
    "token_db",
    "token_issuer",
    "token_audience",
    "trusted_idps",
    "access_token_lifetime",
]


def _settings(*argv: str, environ: dict[str, str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    serve_cli.add_command(parser.add_subparsers())
    return serve_cli.settings(parser.parse_args(["serve", *argv]), environ or {})


def test_serve_takes_its_token_options_from_here() -> None:
    assert [key for key, *_ in OPTIONS] == NAMES
    assert [o for o in serve_cli.OPTIONS if o[0] in NAMES] == OPTIONS


def test_tokens_are_off_without_a_key_directory() -> None:
    assert token_config(_settings()) is None


@pytest.mark.parametrize("source", ["flags", "environment", "toml"])
def test_flags_environment_and_toml_keys_make_the_same_config(tmp_path: Path, source: str) -> None:
    values = {
        "token_key_dir": str(tmp_path / "keys"),
        "token_db": str(tmp_path / "t.db"),
        "token_issuer": "https://auth.example",
        "token_audience": "svc",
        "trusted_idps": str(tmp_path / "idps.json"),
        "access_token_lifetime": "300",
    }
    if source == "flags":
        argv = [a for k, v in values.items() for a in ("--" + k.replace("_", "-"), v)]
        s = _settings(*argv)
    elif source == "environment":
        s = _settings(environ={"PDP_" + k.upper(): v for k, v in values.items()})
    else:
        toml = tmp_path / "pdp.toml"
        toml.write_text("".join(f'{k} = "{v}"\n' for k, v in values.items()))
        s = _settings("--config", str(toml))
    assert token_config(s) == TokenConfig(
        key_dir=tmp_path / "keys",
        db_path=tmp_path / "t.db",
        issuer="https://auth.example",
        audience="svc",
        trusted_idps_file=tmp_path / "idps.json",
        access_token_lifetime=300,
    )


def test_defaults_put_the_store_in_the_data_dir(tmp_path: Path) -> None:
    s = _settings(
        "--data-dir",
        str(tmp_path / "d"),
        "--token-key-dir",
        str(tmp_path / "k"),
        "--token-issuer",
        "https://auth.example",
    )
    config = token_config(s)
    assert config is not None
    assert (config.db_path, config.audience, config.trusted_idps_file) == (
        tmp_path / "d" / "tokens.db",
        "pdp",
        None,
    )
    assert config.access_token_lifetime == 600


def test_a_key_directory_without_an_issuer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="needs --token-issuer"):
        token_config(_settings("--token-key-dir", str(tmp_path / "k")))


def test_dev_keys_make_a_key_and_an_issuer_and_say_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = _settings("--data-dir", str(tmp_path), "--http-listen", "127.0.0.1:8181", "--dev-keys")
    with caplog.at_level(logging.WARNING):
        config = token_config(s)
    assert config is not None
    assert (config.key_dir, config.db_path, config.issuer) == (
        tmp_path / "dev-keys",
        tmp_path / "tokens.db",
        "http://127.0.0.1:8181",
    )
    kid = (tmp_path / "dev-keys" / "current").read_text()
    assert "not for production" in caplog.text
    assert token_config(s) == config
    assert (tmp_path / "dev-keys" / "current").read_text() == kid  # the next start keeps it


def test_a_postgresql_store_holds_the_token_state_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = ("--data-dir", str(tmp_path), "--token-key-dir", str(tmp_path / "k"))
    base = (*base, "--token-issuer", "https://auth.example")
    url = "postgresql://pdp@db.internal/pdp"
    config = token_config(_settings(*base, "--store", url))
    assert config is not None and config.store_url == url
    with caplog.at_level(logging.WARNING):
        both = token_config(_settings(*base, "--store", url, "--token-db", str(tmp_path / "t.db")))
    assert both is not None and both.store_url == url
    assert "--token-db is ignored" in caplog.text
    local = token_config(_settings(*base, "--store", f"sqlite:///{tmp_path}/tuples.db"))
    assert local is not None and (local.store_url, local.db_path) == ("", tmp_path / "tokens.db")
