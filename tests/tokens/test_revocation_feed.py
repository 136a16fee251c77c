"""Revocations pushed between sidecars on one PostgreSQL: a token revoked at one runtime is refused
by another's verifier as soon as the NOTIFY arrives (the periodic pass is set far away here, so
only the listener can deliver it), and a listener that loses the database reconnects and never
dies, while verification goes on from memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdp.tokens import InvalidToken, TokenConfig, TokenRuntime, build_tokens
from pdp.tokens.clients import create_client
from pdp.tokens.errors import TokenStoreUnavailable
from pdp.tokens.issuer import IssuedToken
from tests.postgres import running_postgres

from .conftest import fresh_database
from .support import AUDIENCE, ISSUER

DEADLINE = 5.0


def _runtime(key_dir: Path, url: str) -> TokenRuntime:
    return build_tokens(
        TokenConfig(
            key_dir=key_dir,
            db_path=key_dir.parent / "unused.db",
            issuer=ISSUER,
            audience=AUDIENCE,
            store_url=url,
            maintenance_interval=3600,  # the fallback pass never runs during a test
            listen_backoff=0.05,
            listen_backoff_max=0.2,
        )
    )


class Sidecars:
    """Two token runtimes on one store; `b` runs its maintenance loop (and so its listener)."""

    def __init__(self, key_dir: Path, url: str) -> None:
        self.a, self.b = _runtime(key_dir, url), _runtime(key_dir, url)
        self.stop = threading.Event()
        self.loop = threading.Thread(target=self.b.maintain_until, args=(self.stop,), daemon=True)
        self.loop.start()
        self.secret = create_client(self.a.store, "m2m", tenant="acme", now=time.time())

    def issue(self) -> IssuedToken:
        client = self.a.service.authenticate_client("m2m", self.secret, "127.0.0.1")
        return self.a.service.client_credentials(client, None).access

    def refused_at_b(self, token: str) -> bool:
        try:
            self.b.verifier.verify(token)
        except InvalidToken:
            return True
        return False

    def close(self) -> None:
        self.stop.set()
        self.loop.join(10)
        self.a.close()
        self.b.close()


def _wait(predicate: object, timeout: float = DEADLINE) -> float:
    """Seconds until `predicate()` holds; fails at the deadline."""
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, "not within the deadline"
        time.sleep(0.001)
    return time.monotonic() - start


@pytest.fixture
def sidecars(key_dir: Path, pg_url: str) -> Iterator[Sidecars]:
    s = Sidecars(key_dir, pg_url)
    yield s
    s.close()


def test_a_revocation_at_a_is_refused_at_b_within_the_propagation_bound(
    sidecars: Sidecars,
) -> None:
    assert sidecars.b.store.revocation_feed
    times = []
    for _ in range(20):
        access = sidecars.issue()
        sidecars.b.verifier.verify(access.token)  # now cached at b
        sidecars.a.service.revoke_jti(access.jti, access.exp)
        times.append(_wait(lambda t=access.token: sidecars.refused_at_b(t)))
    times.sort()
    assert times[len(times) // 2] < 0.5, times  # well under a second on loopback


def test_a_listener_that_loses_the_store_reconnects_and_verifies_from_memory_meanwhile(
    key_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with running_postgres() as pg:
        s = Sidecars(key_dir, fresh_database(pg))
        try:
            revoked, live = s.issue(), s.issue()
            s.a.service.revoke_jti(revoked.jti, revoked.exp)
            _wait(lambda: s.refused_at_b(revoked.token))
            pg.stop()
            with pytest.raises(TokenStoreUnavailable):
                s.b.store.revoked_since(0, time.time())
            # the store is down: b still verifies with what it knows
            assert s.b.verifier.verify(live.token).jti == live.jti
            assert s.refused_at_b(revoked.token)
            pg.start()
            # a's pool may hand out a connection that died with the server: a retry gets another
            _wait(lambda: _revoke(s.a, live), timeout=15)
            _wait(lambda: s.refused_at_b(live.token), timeout=15)
            assert s.loop.is_alive()
        finally:
            s.close()
    assert "token revocation feed lost" in caplog.text


def _revoke(runtime: TokenRuntime, access: IssuedToken) -> bool:
    try:
        runtime.service.revoke_jti(access.jti, access.exp)
    except TokenStoreUnavailable:
        return False
    return True
