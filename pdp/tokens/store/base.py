"""The token store's semantics, written once: clients, refresh-token families (rotation and reuse
detection) and revoked jtis, over a `Backend` that supplies transactions and its SQL dialect.

Each backend (`sqlite`: one file shared by the processes of a host; `postgres`: a database shared
by a fleet) isolates what differs: schema and table names, placeholders, row locks, how a
revocation gets its sequence number and how other processes hear of it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    secret_hash: bytes = field(repr=False)
    tenant: str  # "*" = a multi-tenant client: it may exchange tokens, never act itself
    subject: str  # the `sub` of its client_credentials tokens
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    grant_types: tuple[str, ...]
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Family:
    family_id: str
    client_id: str
    subject: str
    tenant: str
    roles: tuple[str, ...]
    scope: str
    expires_at: float
    revoked: bool


class RotateOutcome(Enum):
    ROTATED = "rotated"
    UNKNOWN = "unknown"  # no such refresh token (or another client's)
    EXPIRED = "expired"
    REVOKED = "revoked"  # its family was revoked earlier
    REUSED = "reused"  # a spent token came back: the family is now revoked


@dataclass(frozen=True, slots=True)
class RotateResult:
    outcome: RotateOutcome
    family: Family | None = None
    revoked_jtis: tuple[tuple[str, float], ...] = ()


Row = tuple[Any, ...]


class Db(Protocol):
    """One connection inside one transaction. SQL uses `?` placeholders and the table names of
    `Dialect`; the backend translates."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> None: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between backends in the SQL the semantics run."""

    clients: str
    families: str
    tokens: str
    revoked: str
    # appended to the reads of `rotate`: PostgreSQL locks the token and family rows so that
    # concurrent rotations in several processes serialise (SQLite's one writer already does)
    for_update: str
    # records (jti, expires_at, revoked_at) under the next sequence number, in commit order,
    # ignoring a jti already revoked
    insert_revoked: str
    # run once in a transaction that revoked something: tells other processes at commit
    notify_revoked: str | None = None


class Backend(Protocol):
    """Transactions on the durable state, in the backend's dialect."""

    dialect: Dialect
    location: str  # a path or a URL without its password: safe to log
    revocation_feed: bool  # whether `wait_for_revocation` can wake on another's revocation

    def transaction(self) -> AbstractContextManager[Db]:
        """A read-write transaction, committed when the block exits, rolled back on error."""
        ...

    def read(self) -> AbstractContextManager[Db]:
        """A short read."""
        ...

    def wait_for_revocation(self, timeout: float) -> bool:
        """Block up to `timeout` for another process's revocation; True when one may have
        happened (also after (re)connecting: anything could have happened meanwhile). Raises
        `TokenStoreUnavailable` when the store cannot be reached."""
        ...

    def close(self) -> None: ...


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()


class TokenStore:
    """Clients, refresh families and revoked jtis; every method is one short transaction.

    `TokenStore(target)`: `target` is a SQLite file (path), or a `postgresql://` URL shared by
    a fleet of sidecars. The semantics below are the same on both.
    """

    def __init__(self, target: str | os.PathLike[str], *, client_cache_ttl: float = 1.0) -> None:
        self._backend = open_backend(target)
        self._q = self._backend.dialect
        # Client records are read on every token request and change rarely. A short TTL bounds
        # how long another process's re-key or disable takes to apply here; changes made
        # through this store apply at once.
        self.client_cache_ttl = client_cache_ttl
        self._clients: dict[str, tuple[Client, float]] = {}

    @property
    def location(self) -> str:
        return self._backend.location

    @property
    def revocation_feed(self) -> bool:
        return self._backend.revocation_feed

    def wait_for_revocation(self, timeout: float) -> bool:
        return self._backend.wait_for_revocation(timeout)

    def close(self) -> None:
        self._backend.close()

    # -- clients -------------------------------------------------------------------------------

    def put_client(self, client: Client, now: float) -> None:
        self._clients.pop(client.client_id, None)
        with self._backend.transaction() as db:
            db.run(
                f"INSERT INTO {self._q.clients} VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(client_id) DO UPDATE"
                " SET secret_hash=excluded.secret_hash, tenant=excluded.tenant,"
                " subject=excluded.subject, roles=excluded.roles, scopes=excluded.scopes,"
                " grant_types=excluded.grant_types, disabled=excluded.disabled",
                (
                    client.client_id,
                    client.secret_hash,
                    client.tenant,
                    client.subject,
                    " ".join(client.roles),
                    " ".join(client.scopes),
                    " ".join(client.grant_types),
                    now,
                    int(client.disabled),
                ),
            )

    def get_client(self, client_id: str) -> Client | None:
        cached = self._clients.get(client_id)
        now = time.monotonic()
        if cached is not None and now < cached[1]:
            return cached[0]
        client = self._load_client(client_id)
        if client is not None and self.client_cache_ttl > 0:
            if len(self._clients) >= 10_000:
                self._clients.clear()
            # Only known clients are cached: random unknown ids cannot grow this dict.
            self._clients[client_id] = (client, now + self.client_cache_ttl)
        return client

    def _load_client(self, client_id: str) -> Client | None:
        with self._backend.read() as db:
            rows = db.rows(
                "SELECT client_id, secret_hash, tenant, subject, roles, scopes, grant_types,"
                f" disabled FROM {self._q.clients} WHERE client_id=?",
                (client_id,),
            )
        if not rows:
            return None
        row = rows[0]
        return Client(
            row[0],
            bytes(row[1]),
            row[2],
            row[3],
            _split(row[4]),
            _split(row[5]),
            _split(row[6]),
            bool(row[7]),
        )

    def list_clients(self) -> list[str]:
        with self._backend.read() as db:
            return [r[0] for r in db.rows(f"SELECT client_id FROM {self._q.clients} ORDER BY 1")]

    # -- refresh families ----------------------------------------------------------------------

    def start_family(
        self,
        family: Family,
        token_hash: bytes,
        *,
        now: float,
        access_jti: str,
        access_exp: float,
    ) -> None:
        with self._backend.transaction() as db:
            db.run(
                f"INSERT INTO {self._q.families} VALUES (?,?,?,?,?,?,?,?,NULL)",
                (
                    family.family_id,
                    family.client_id,
                    family.subject,
                    family.tenant,
                    " ".join(family.roles),
                    family.scope,
                    now,
                    family.expires_at,
                ),
            )
            db.run(
                f"INSERT INTO {self._q.tokens} VALUES (?,?,?,?,NULL,?,?)",
                (token_hash, family.family_id, now, family.expires_at, access_jti, access_exp),
            )

    def _family(self, db: Db, family_id: str, lock: str = "") -> Family:
        r = db.rows(
            "SELECT family_id, client_id, subject, tenant, roles, scope, expires_at, revoked_at"
            f" FROM {self._q.families} WHERE family_id=?{lock}",
            (family_id,),
        )[0]
        return Family(r[0], r[1], r[2], r[3], _split(r[4]), r[5], r[6], r[7] is not None)

    def find_family(self, token_hash: bytes) -> tuple[Family, bool, float] | None:
        """The family of a refresh token, whether the token is spent, and its expiry."""
        with self._backend.read() as db:
            rows = db.rows(
                f"SELECT family_id, spent_at, expires_at FROM {self._q.tokens} WHERE token_hash=?",
                (token_hash,),
            )
            if not rows:
                return None
            family_id, spent_at, expires_at = rows[0]
            return self._family(db, family_id), spent_at is not None, expires_at

    def rotate(
        self,
        old_hash: bytes,
        new_hash: bytes,
        *,
        client_id: str,
        now: float,
        access_jti: str,
        access_exp: float,
    ) -> RotateResult:
        """Spend `old_hash` and record `new_hash` in its family, atomically.

        INVARIANT: a refresh token is spent at most once; a second presentation revokes the family.
        Both reads lock their rows (`Dialect.for_update`) until commit, the token's first, then
        its family's: of two processes rotating the same token at once, the second reads the
        token only after the first committed, finds it spent, and revokes the family.
        """
        lock = self._q.for_update
        with self._backend.transaction() as db:
            rows = db.rows(
                f"SELECT family_id, spent_at, expires_at FROM {self._q.tokens}"
                f" WHERE token_hash=?{lock}",
                (old_hash,),
            )
            if not rows:
                return RotateResult(RotateOutcome.UNKNOWN)
            family_id, spent_at, expires_at = rows[0]
            family = self._family(db, family_id, lock)
            if family.client_id != client_id:
                return RotateResult(RotateOutcome.UNKNOWN)
            if family.revoked:
                return RotateResult(RotateOutcome.REVOKED, family)
            if spent_at is not None:
                jtis = self._revoke_family(db, family.family_id, now)
                return RotateResult(RotateOutcome.REUSED, family, jtis)
            if now >= expires_at:
                return RotateResult(RotateOutcome.EXPIRED, family)
            db.run(f"UPDATE {self._q.tokens} SET spent_at=? WHERE token_hash=?", (now, old_hash))
            db.run(
                f"INSERT INTO {self._q.tokens} VALUES (?,?,?,?,NULL,?,?)",
                (new_hash, family.family_id, now, family.expires_at, access_jti, access_exp),
            )
            return RotateResult(RotateOutcome.ROTATED, family)

    def revoke_family(self, family_id: str, now: float) -> tuple[tuple[str, float], ...]:
        with self._backend.transaction() as db:
            return self._revoke_family(db, family_id, now)

    def _revoke_family(self, db: Db, family_id: str, now: float) -> tuple[tuple[str, float], ...]:
        """Revoke the family and every live access token issued beside its refresh tokens."""
        # The family row first (locked until commit): a rotation in another process waits, then
        # sees the family revoked; its token reads below see every rotation committed before.
        db.run(
            f"UPDATE {self._q.families} SET revoked_at=? WHERE family_id=? AND revoked_at IS NULL",
            (now, family_id),
        )
        rows = db.rows(
            f"SELECT access_jti, access_exp FROM {self._q.tokens}"
            " WHERE family_id=? AND access_exp>?",
            (family_id, now),
        )
        for jti, exp in rows:
            self._insert_revoked(db, jti, exp, now)
        return tuple((jti, exp) for jti, exp in rows)

    # -- revoked jtis --------------------------------------------------------------------------

    def _insert_revoked(self, db: Db, jti: str, exp: float, now: float) -> None:
        db.run(self._q.insert_revoked, (jti, exp, now))
        if self._q.notify_revoked is not None:
            db.run(self._q.notify_revoked)  # delivered at commit, never before

    def revoke_jti(self, jti: str, exp: float, now: float) -> None:
        with self._backend.transaction() as db:
            self._insert_revoked(db, jti, exp, now)

    def revoked_since(self, seq: int, now: float) -> tuple[int, list[tuple[str, float]]]:
        """Revocations after `seq` that still matter, and the new high-water mark.

        INVARIANT: sequence numbers commit in order (`Dialect.insert_revoked`), so a reader that
        has seen `seq` never misses a revocation numbered below it that commits later.
        """
        with self._backend.read() as db:
            rows = db.rows(
                f"SELECT seq, jti, expires_at FROM {self._q.revoked} WHERE seq>? ORDER BY seq",
                (seq,),
            )
        high = int(rows[-1][0]) if rows else seq
        return high, [(jti, exp) for _, jti, exp in rows if exp > now - 3600]

    def purge_expired(self, now: float, grace: float = 3600.0) -> None:
        """Forget state no token can use any more (`grace` covers leeway and clock skew)."""
        cutoff = now - grace
        with self._backend.transaction() as db:
            db.run(f"DELETE FROM {self._q.revoked} WHERE expires_at<?", (cutoff,))
            db.run(
                f"DELETE FROM {self._q.tokens} WHERE family_id IN"
                f" (SELECT family_id FROM {self._q.families} WHERE expires_at<?)",
                (cutoff,),
            )
            db.run(f"DELETE FROM {self._q.families} WHERE expires_at<?", (cutoff,))


def is_postgres_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_backend(target: str | os.PathLike[str]) -> Backend:
    """A `postgresql://` URL, or a SQLite file."""
    if is_postgres_url(target):
        from pdp.tokens.store.postgres import PostgresBackend  # psycopg only when asked for

        return PostgresBackend(str(target))
    from pdp.tokens.store.sqlite import SqliteBackend

    return SqliteBackend(target)
