"""Fixtures for the token tests: a key directory, a fake clock, a token forge, a live server."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec

from pdp.tokens import KeyRing, Verifier
from pdp.tokens.clients import TOKEN_EXCHANGE
from pdp.tokens.keys import init_key_directory
from tests.postgres import Postgres, running_postgres

from .support import (
    AUDIENCE,
    IDP_A,
    IDP_B,
    ISSUER,
    FakeClock,
    Forge,
    IdP,
    Server,
    make_runtime,
)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One real PostgreSQL for the token tests (skipped without binaries, except under CI)."""
    with running_postgres() as pg:
        yield pg


def fresh_database(pg: Postgres) -> str:
    """The URL of a new, empty database on `pg`."""
    database = f"tok_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    return pg.dsn.rsplit("/", 1)[0] + f"/{database}"


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    """A fresh database per test."""
    return fresh_database(postgres)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    init_key_directory(d)
    return d


@pytest.fixture
def ring(key_dir: Path, clock: FakeClock) -> KeyRing:
    return KeyRing(key_dir, token_lifetime=600, leeway=30, clock=clock)


@pytest.fixture
def verifier(ring: KeyRing, clock: FakeClock) -> Verifier:
    return Verifier(
        ring, issuer=ISSUER, audience=AUDIENCE, leeway=30, max_lifetime=600, clock=clock
    )


@pytest.fixture
def forge(ring: KeyRing, clock: FakeClock) -> Forge:
    return Forge(ring, clock)


@pytest.fixture
def idps(tmp_path: Path) -> tuple[IdP, IdP, Path]:
    """Two customers' IdPs (tenant acme, tenant globex) and the trusted-IdPs file naming both.

    Both use the same kid on purpose: kids are looked up per issuer, never globally.
    """
    a = IdP(IDP_A, "acme", "pdp-acme", ec.generate_private_key(ec.SECP256R1()), "k1")
    b = IdP(IDP_B, "globex", "pdp-globex", ec.generate_private_key(ec.SECP256R1()), "k1")
    d = tmp_path / "idps"
    d.mkdir()
    entries = []
    for idp in (a, b):
        (d / f"{idp.tenant}.jwks.json").write_text(json.dumps(idp.jwks()))
        entries.append(
            {
                "issuer": idp.issuer,
                "tenant": idp.tenant,
                "audience": idp.audience,
                "jwks_file": f"{idp.tenant}.jwks.json",
                "default_roles": ["member"],
            }
        )
    path = d / "trusted_idps.json"
    path.write_text(json.dumps({"trusted_idps": entries}))
    return a, b, path


@pytest.fixture
def server(tmp_path: Path, idps: tuple[IdP, IdP, Path]) -> Iterator[Server]:
    """The token app on a real uvicorn server, 127.0.0.1 and an ephemeral port, in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    events: list[tuple[str, dict[str, Any]]] = []
    runtime = make_runtime(tmp_path, base, idps[2], events)
    service = runtime.service
    secrets = {
        "m2m": service.create_client(
            "m2m", tenant="acme", scopes=("orders:read", "orders:write"), roles=("service",)
        ),
        "web": service.create_client(
            "web",
            tenant="*",
            scopes=("orders:read", "profile"),
            grant_types=(TOKEN_EXCHANGE, "refresh_token"),
        ),
        "acme-app": service.create_client(
            "acme-app",
            tenant="acme",
            scopes=("orders:read",),
            grant_types=(TOKEN_EXCHANGE, "refresh_token"),
        ),
    }
    config = uvicorn.Config(
        runtime.app(), log_level="warning", lifespan="on", ws="none", http="h11"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Server(base, runtime, events, secrets)
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()
        runtime.close()
