"""Composition: builds the key ring, store, verifiers, service and HTTP app from one config."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from starlette.applications import Starlette

from pdp.tokens.endpoint import DEFAULT_MAX_BODY_BYTES, build_token_app
from pdp.tokens.idp import IdPVerifier, load_trusted_idps
from pdp.tokens.issuer import AccessTokenIssuer
from pdp.tokens.jws_checks import DEFAULT_MAX_TOKEN_BYTES
from pdp.tokens.keys import EventHook, KeyRing
from pdp.tokens.ratelimit import FailureLimiter
from pdp.tokens.service import TokenService
from pdp.tokens.store import TokenStore
from pdp.tokens.verifier import Verifier

log = logging.getLogger(__name__)

# Also how long a key retired by `pdp tokens rotate-key` keeps verifying, unless told otherwise.
DEFAULT_ACCESS_TOKEN_LIFETIME = 600  # 10 minutes
# How long one wait for a revocation notification blocks: also how soon the listener sees `stop`.
LISTEN_TIMEOUT = 0.5


class StopSignal(Protocol):
    """What the maintenance loop waits on: `wait(timeout)` is True once it should stop."""

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True, slots=True)
class TokenConfig:
    """Where keys and state live and what tokens say. Paths only: never key material inline."""

    key_dir: Path
    db_path: Path  # the SQLite file of token state, unless `store_url` names a PostgreSQL
    issuer: str  # also the public base URL of the endpoint (RFC 8414 metadata)
    audience: str  # this deployment: tokens for any other audience fail
    trusted_idps_file: Path | None = None
    access_token_lifetime: int = DEFAULT_ACCESS_TOKEN_LIFETIME
    refresh_token_lifetime: int = 30 * 24 * 3600
    leeway: float = 30.0
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    maintenance_interval: float = 5.0
    client_failure_limit: int = 20
    source_failure_limit: int = 10
    failure_window: float = 60.0
    verified_cache_size: int = 100_000
    # `postgresql://...`: token state shared by a fleet (then `db_path` is not used), and
    # revocations pushed to every sidecar (LISTEN/NOTIFY) instead of read every pass
    store_url: str = ""
    # the listener's reconnect backoff after losing the store: from this, doubling, to the max
    listen_backoff: float = 0.2
    listen_backoff_max: float = 5.0


@dataclass(frozen=True, slots=True)
class TokenRuntime:
    config: TokenConfig
    keys: KeyRing
    store: TokenStore
    verifier: Verifier
    idps: IdPVerifier | None
    service: TokenService

    def app(self) -> Starlette:
        return build_token_app(
            self.service,
            self.keys,
            issuer_url=self.config.issuer,
            max_body_bytes=self.config.max_body_bytes,
            maintenance=self.maintain_forever,
        )

    def maintain(self) -> None:
        """One maintenance pass: pick up key-directory changes and other processes' revocations."""
        if self.keys.reload():
            # A removed kid must fail at once, cached or not.
            self.verifier.clear_cache()
        self.service.sync_revocations()
        self.verifier.forget_expired_revocations()
        # Rows no token can use any more (expired revocations, refresh families): the store
        # would otherwise only grow. Deleting them changes no answer: an expired token is refused
        # by its `exp` before any revocation is looked up.
        self.store.purge_expired(time.time())

    def maintain_until(self, stop: StopSignal) -> None:
        """The one maintenance loop: a pass every `maintenance_interval` seconds until `stop` is
        set (a `threading.Event`; tests pass their own). The sidecar runs it on a thread. With a
        store that pushes revocations, `listen_until` runs beside it on a thread of its own; the
        periodic pass stays the fallback.
        """
        listener = None
        if self.store.revocation_feed:
            listener = threading.Thread(
                target=self.listen_until, args=(stop,), name="token-revocations", daemon=True
            )
            listener.start()
        while not stop.wait(self.config.maintenance_interval):
            try:
                self.maintain()
            except Exception:  # keep the last good keys; the next pass tries again
                log.exception("token maintenance failed")
        if listener is not None:
            listener.join()

    def listen_until(self, stop: StopSignal) -> None:
        """Pull revocations the moment another sidecar's commit announces them, until `stop`.

        Never dies: a lost connection is retried with backoff (doubling up to
        `listen_backoff_max`), logged once per outage; meanwhile verification goes on with the
        revocations already in memory, and the first wake-up after reconnecting pulls whatever
        was revoked in between.
        """
        backoff, down = self.config.listen_backoff, False
        pending = False  # a wake-up whose sync failed: sync before waiting again
        while not stop.wait(0):
            try:
                if pending or self.store.wait_for_revocation(LISTEN_TIMEOUT):
                    pending = True
                    self.service.sync_revocations()
                    pending = False
                if down:
                    log.info("token revocation feed from %s is back", self.store.location)
                backoff, down = self.config.listen_backoff, False
            except Exception as exc:
                if not down:
                    log.warning(
                        "token revocation feed lost (%s); retrying, verifying with the "
                        "revocations already known",
                        type(exc).__name__,
                    )
                down = True
                if stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.config.listen_backoff_max)

    async def maintain_forever(self) -> None:
        """`maintain_until` on a worker thread for as long as this coroutine runs (the token
        app's lifespan); cancelling it stops the loop. Passes never block the event loop.
        """
        stop = threading.Event()
        try:
            await asyncio.to_thread(self.maintain_until, stop)
        finally:
            stop.set()

    def close(self) -> None:
        self.store.close()


def build_tokens(
    config: TokenConfig,
    *,
    on_event: EventHook | None = None,
    clock: Callable[[], float] = time.time,
) -> TokenRuntime:
    keys = KeyRing(
        config.key_dir,
        token_lifetime=config.access_token_lifetime,
        leeway=config.leeway,
        on_event=on_event,
        clock=clock,
    )
    store = TokenStore(config.store_url or config.db_path)
    verifier = Verifier(
        keys,
        issuer=config.issuer,
        audience=config.audience,
        leeway=config.leeway,
        max_lifetime=config.access_token_lifetime,
        max_token_bytes=config.max_token_bytes,
        cache_size=config.verified_cache_size,
        clock=clock,
    )
    idps = None
    if config.trusted_idps_file is not None:
        idps = IdPVerifier(
            load_trusted_idps(config.trusted_idps_file),
            own_issuer=config.issuer,
            leeway=config.leeway,
            max_token_bytes=config.max_token_bytes,
            clock=clock,
        )
    issuer = AccessTokenIssuer(
        keys,
        issuer=config.issuer,
        audience=config.audience,
        lifetime=config.access_token_lifetime,
        clock=clock,
    )
    service = TokenService(
        store=store,
        issuer=issuer,
        verifier=verifier,
        idps=idps,
        refresh_lifetime=config.refresh_token_lifetime,
        client_limiter=FailureLimiter(config.client_failure_limit, config.failure_window),
        source_limiter=FailureLimiter(config.source_failure_limit, config.failure_window),
        on_event=on_event,
        clock=clock,
    )
    return TokenRuntime(config, keys, store, verifier, idps, service)
