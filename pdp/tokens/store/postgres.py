"""The token store in a PostgreSQL database shared by a fleet of sidecars (psycopg 3 and its pool).

Tables `pdp_token_*`, created under an advisory lock so sidecars starting together don't race.
A rotation locks its refresh-token row and then its family's (`SELECT ... FOR UPDATE`) until
commit, so the same refresh token presented at two sidecars at once rotates once and the other
presentation is reuse detection. Revocations are numbered by incrementing the one row of
`pdp_token_head`, whose row lock is held to COMMIT (as the tuple store's head): numbers commit
in order, and a sidecar reading `seq > S` never skips one (a sequence would not do: a value taken
first may commit last). Each revocation NOTIFYs `pdp_token_revocations` at commit; that is only
the wake-up, the table is the data.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pdp.tokens.errors import TokenStoreUnavailable
from pdp.tokens.store.base import Dialect, Row

log = logging.getLogger(__name__)

CHANNEL = "pdp_token_revocations"
CONNECT_TIMEOUT = 3  # seconds: a store that does not answer is down, not slow
POOL_TIMEOUT = 5.0  # seconds to wait for a pooled connection before refusing the call
# Dead listener connections are noticed by TCP keepalive, not only by the next write.
_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
# Serialises the schema's creation between sidecars starting at once ("pdpt"; the tuple
# store's lock is another constant).
_SCHEMA_LOCK = 0x70647074

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS pdp_token_clients ("
    " client_id text PRIMARY KEY, secret_hash bytea NOT NULL, tenant text NOT NULL,"
    " subject text NOT NULL, roles text NOT NULL, scopes text NOT NULL,"
    " grant_types text NOT NULL, created_at double precision NOT NULL,"
    " disabled integer NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS pdp_token_refresh_families ("
    " family_id text PRIMARY KEY, client_id text NOT NULL, subject text NOT NULL,"
    " tenant text NOT NULL, roles text NOT NULL, scope text NOT NULL,"
    " created_at double precision NOT NULL, expires_at double precision NOT NULL,"
    " revoked_at double precision)",
    "CREATE TABLE IF NOT EXISTS pdp_token_refresh_tokens ("
    " token_hash bytea PRIMARY KEY,"
    " family_id text NOT NULL REFERENCES pdp_token_refresh_families (family_id),"
    " issued_at double precision NOT NULL, expires_at double precision NOT NULL,"
    " spent_at double precision, access_jti text NOT NULL,"
    " access_exp double precision NOT NULL)",
    "CREATE INDEX IF NOT EXISTS pdp_token_refresh_tokens_family"
    " ON pdp_token_refresh_tokens (family_id)",
    "CREATE TABLE IF NOT EXISTS pdp_token_head ("
    " id boolean PRIMARY KEY DEFAULT true CHECK (id), seq bigint NOT NULL)",
    "INSERT INTO pdp_token_head (id, seq) VALUES (true, 0) ON CONFLICT DO NOTHING",
    "CREATE TABLE IF NOT EXISTS pdp_token_revoked_jtis ("
    " seq bigint PRIMARY KEY, jti text NOT NULL UNIQUE,"
    " expires_at double precision NOT NULL, revoked_at double precision NOT NULL)",
]

DIALECT = Dialect(
    clients="pdp_token_clients",
    families="pdp_token_refresh_families",
    tokens="pdp_token_refresh_tokens",
    revoked="pdp_token_revoked_jtis",
    for_update=" FOR UPDATE",
    insert_revoked="WITH head AS (UPDATE pdp_token_head SET seq = seq + 1 RETURNING seq)"
    " INSERT INTO pdp_token_revoked_jtis (seq, jti, expires_at, revoked_at)"
    " SELECT seq, ?, ?, ? FROM head ON CONFLICT (jti) DO NOTHING",
    notify_revoked=f"SELECT pg_notify('{CHANNEL}', '')",
)


def redacted(url: str) -> str:
    """The URL without its password, for logs and errors."""
    params = conninfo_to_dict(url)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=256)
def _pg(sql: str) -> str:
    # The store's SQL is ours, built from constants: `?` is never a literal in it.
    return sql.replace("?", "%s")


class _Connection:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(_pg(sql), params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(_pg(sql), params)


class PostgresBackend:
    """A connection pool for transactions, and one dedicated connection that LISTENs."""

    dialect = DIALECT
    revocation_feed = True

    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        self._url = url
        self.location = redacted(url)
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=POOL_TIMEOUT,
            kwargs={"connect_timeout": CONNECT_TIMEOUT, "application_name": "pdp-tokens"},
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=POOL_TIMEOUT)
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            raise TokenStoreUnavailable(f"cannot reach the token store {self.location}") from exc
        with self.transaction() as db:
            db.run("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                db.run(statement)
        self._listener: psycopg.Connection[Any] | None = None
        self._listen_lock = threading.Lock()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Connection]:
        """One transaction on a pooled connection (READ COMMITTED: a row lock waited for
        returns the row as committed); failing to reach or commit is TokenStoreUnavailable."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield _Connection(conn)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise TokenStoreUnavailable(f"token store {self.location}: {_first_line(exc)}") from exc

    read = transaction

    def wait_for_revocation(self, timeout: float) -> bool:
        with self._listen_lock:
            try:
                if self._listener is None or self._listener.closed:
                    listener = psycopg.connect(
                        self._url,
                        autocommit=True,
                        connect_timeout=CONNECT_TIMEOUT,
                        application_name="pdp-tokens-listen",
                        # a listener that only reads notices a dead peer by TCP keepalive
                        keepalives=1,
                        keepalives_idle=5,
                        keepalives_interval=2,
                        keepalives_count=3,
                    )
                    listener.execute(f"LISTEN {CHANNEL}")
                    self._listener = listener
                    return True  # anything may have been revoked while we were not listening
                for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                    return True
                return False
            except psycopg.Error as exc:
                self._drop_listener()
                raise TokenStoreUnavailable(
                    f"token store {self.location}: {_first_line(exc)}"
                ) from exc

    def _drop_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                self._listener.close()
            self._listener = None

    def close(self) -> None:
        with self._listen_lock:
            self._drop_listener()
        self._pool.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
