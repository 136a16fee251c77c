"""The fleet's store: PostgreSQL, through psycopg 3 and its connection pool.

Commit order is revision order. A sequence would not do: values from a sequence are taken at
insert time, and a transaction that took 7 may commit after one that took 8, so a follower that
has read 8 would skip 7 forever. Instead every write transaction first increments the one row of
`pdp_head` (`UPDATE ... RETURNING`); the row lock it takes is held until COMMIT, so the next
writer's UPDATE waits for this commit and then reads its result. Revision N+1 therefore commits
after N is visible, and a follower reading `revision > R` in order never skips or reorders a
committed change. The price is that writes commit one at a time (one round of row locking per
write call); each write call carries up to `max_tuples_per_write` tuples, so this bounds write
calls per second, not tuples. (SpiceDB instead records transaction ids and reads by snapshot,
which allows concurrent commits at the cost of a more complex reader.)

LISTEN/NOTIFY on the channel `pdp_changes` is only the wake-up; the changelog is the data, and a
follower that was disconnected catches up from its last revision.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pdp.model import RelationTuple
from pdp.sidecar.store.base import (
    Change,
    Overlay,
    Quarantined,
    StoreUnavailable,
    group_changes,
    overlay_of,
    rows_of,
)

log = logging.getLogger(__name__)

CHANNEL = "pdp_changes"
CONNECT_TIMEOUT = 3  # seconds: a store that does not answer is down, not slow
POOL_TIMEOUT = 5.0  # seconds to wait for a pooled connection before refusing the call
# Serialises the schema's creation between sidecars starting at once (any constant will do).
_SCHEMA_LOCK = 0x706470

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS pdp_head ("
    " id boolean PRIMARY KEY DEFAULT true CHECK (id), revision bigint NOT NULL)",
    "INSERT INTO pdp_head (id, revision) VALUES (true, 0) ON CONFLICT DO NOTHING",
    "CREATE TABLE IF NOT EXISTS pdp_changes ("
    " revision bigint NOT NULL, seq integer NOT NULL, tuple text NOT NULL,"
    " present boolean NOT NULL, PRIMARY KEY (revision, seq))",
    "CREATE TABLE IF NOT EXISTS pdp_overlay ("
    " tuple text PRIMARY KEY, present boolean NOT NULL, revision bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS pdp_quarantine ("
    " tuple text NOT NULL, present boolean NOT NULL, revision bigint NOT NULL,"
    " reason text NOT NULL, at double precision NOT NULL, id bigserial PRIMARY KEY)",
]


def redacted(url: str) -> str:
    """The URL without its password, for logs and status."""
    params = conninfo_to_dict(url)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)  # type: ignore[arg-type]


class PostgresStore:
    """The tables `pdp_head`, `pdp_changes`, `pdp_overlay`, `pdp_quarantine` in one database."""

    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        self._url = url
        self.location = redacted(url)
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=POOL_TIMEOUT,
            kwargs={"connect_timeout": CONNECT_TIMEOUT, "application_name": "pdp"},
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=POOL_TIMEOUT)
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            raise StoreUnavailable(f"cannot reach the tuple store {self.location}") from exc
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                conn.execute(statement)
        self._listener: psycopg.Connection[Any] | None = None
        self._listen_lock = threading.Lock()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on a pooled connection; any failure to reach or commit is
        StoreUnavailable (the pool replaces a broken connection)."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise StoreUnavailable(f"tuple store {self.location}: {_first_line(exc)}") from exc

    def append(self, writes: Sequence[RelationTuple], deletes: Sequence[RelationTuple]) -> int:
        rows = rows_of(writes, deletes)
        with self._tx() as conn:
            head = conn.execute("UPDATE pdp_head SET revision = revision + 1 RETURNING revision")
            (revision,) = head.fetchone() or (0,)
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO pdp_changes (revision, seq, tuple, present)"
                    " VALUES (%s, %s, %s, %s)",
                    [(revision, i, text, present) for i, (text, present) in enumerate(rows)],
                )
                cur.executemany(
                    "INSERT INTO pdp_overlay (tuple, present, revision) VALUES (%s, %s, %s)"
                    " ON CONFLICT (tuple) DO UPDATE"
                    " SET present = excluded.present, revision = excluded.revision",
                    [(text, present, revision) for text, present in rows],
                )
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(revision)))
        return int(revision)

    def snapshot(self) -> Overlay:
        with self._tx() as conn:
            # REPEATABLE READ: the head and every overlay row from one snapshot of the database.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            (revision,) = conn.execute("SELECT revision FROM pdp_head").fetchone() or (0,)
            # A server-side cursor read in large batches: only each row's text is kept, never
            # a million row tuples at once (their freed memory would stay in the process).
            with conn.cursor(name="pdp_snapshot") as rows:
                rows.itersize = 50_000
                rows.execute("SELECT tuple, present FROM pdp_overlay")
                return overlay_of(rows, int(revision))

    def changes_since(self, revision: int, limit: int) -> list[Change]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT revision, tuple, present FROM pdp_changes"
                " WHERE revision > %s AND revision <= %s ORDER BY revision, seq",
                (revision, revision + limit),
            ).fetchall()
        return group_changes(rows)

    def head(self) -> int:
        with self._tx() as conn:
            (revision,) = conn.execute("SELECT revision FROM pdp_head").fetchone() or (0,)
        return int(revision)

    def wait_for_change(self, timeout: float) -> None:
        with self._listen_lock:
            try:
                listener = self._listener
                if listener is None or listener.closed:
                    listener = psycopg.connect(
                        self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                    )
                    listener.execute(f"LISTEN {CHANNEL}")
                    self._listener = listener
                for _ in listener.notifies(timeout=timeout, stop_after=1):
                    pass
            except psycopg.OperationalError as exc:
                self._drop_listener()
                raise StoreUnavailable(f"tuple store {self.location}: {_first_line(exc)}") from exc

    def _drop_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                self._listener.close()
            self._listener = None

    def quarantine(self, rows: Sequence[Quarantined], at: float) -> None:
        if not rows:
            return
        with self._tx() as conn:
            for row in rows:
                conn.execute(
                    "INSERT INTO pdp_quarantine (tuple, present, revision, reason, at)"
                    " SELECT tuple, present, revision, %s, %s FROM pdp_overlay WHERE tuple = %s",
                    (row.reason, at, row.tuple),
                )
                conn.execute("DELETE FROM pdp_overlay WHERE tuple = %s", (row.tuple,))

    def quarantined(self, limit: int = 10) -> tuple[int, list[Quarantined]]:
        with self._tx() as conn:
            (count,) = conn.execute("SELECT count(*) FROM pdp_quarantine").fetchone() or (0,)
            rows = conn.execute(
                "SELECT tuple, present, reason FROM pdp_quarantine ORDER BY id LIMIT %s", (limit,)
            ).fetchall()
        return int(count), [Quarantined(t, bool(p), r) for t, p, r in rows]

    def close(self) -> None:
        with self._listen_lock:
            self._drop_listener()
        self._pool.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
