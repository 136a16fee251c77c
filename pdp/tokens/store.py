"""Durable token state in SQLite (WAL): clients, refresh-token families, revoked jtis.

Every change is one transaction; WAL with synchronous=NORMAL survives a crash or kill -9 of the
process (a power cut may lose the last commits, which we accept for throughput).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id   TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    tenant      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    roles       TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    grant_types TEXT NOT NULL,
    created_at  REAL NOT NULL,
    disabled    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS refresh_families (
    family_id  TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    roles      TEXT NOT NULL,
    scope      TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash BLOB PRIMARY KEY,
    family_id  TEXT NOT NULL REFERENCES refresh_families(family_id),
    issued_at  REAL NOT NULL,
    expires_at REAL NOT NULL,
    spent_at   REAL,
    access_jti TEXT NOT NULL,  -- the access token issued beside it, revoked with the family
    access_exp REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens(family_id);
CREATE TABLE IF NOT EXISTS revoked_jtis (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    jti        TEXT NOT NULL UNIQUE,
    expires_at REAL NOT NULL,
    revoked_at REAL NOT NULL
);
"""


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


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()


class TokenStore:
    """One SQLite connection guarded by a lock; all methods are short transactions."""

    def __init__(self, path: str | os.PathLike[str], *, client_cache_ttl: float = 1.0) -> None:
        self.path = str(path)
        # Client records are read on every token request and change rarely. A short TTL bounds
        # how long another process's re-key or disable takes to apply here; changes made
        # through this store apply at once.
        self.client_cache_ttl = client_cache_ttl
        self._clients: dict[str, tuple[Client, float]] = {}
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._lock:
            self._db.executescript(_SCHEMA)
        if self.path != ":memory:":
            os.chmod(self.path, 0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- clients -------------------------------------------------------------------------------

    def put_client(self, client: Client, now: float) -> None:
        self._clients.pop(client.client_id, None)
        with self._tx() as db:
            db.execute(
                "INSERT INTO clients VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(client_id) DO UPDATE"
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
        with self._lock:
            row = self._db.execute(
                "SELECT client_id, secret_hash, tenant, subject, roles, scopes, grant_types,"
                " disabled FROM clients WHERE client_id=?",
                (client_id,),
            ).fetchone()
        if row is None:
            return None
        return Client(
            row[0],
            row[1],
            row[2],
            row[3],
            _split(row[4]),
            _split(row[5]),
            _split(row[6]),
            bool(row[7]),
        )

    def list_clients(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT client_id FROM clients ORDER BY 1")]

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
        with self._tx() as db:
            db.execute(
                "INSERT INTO refresh_families VALUES (?,?,?,?,?,?,?,?,NULL)",
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
            db.execute(
                "INSERT INTO refresh_tokens VALUES (?,?,?,?,NULL,?,?)",
                (token_hash, family.family_id, now, family.expires_at, access_jti, access_exp),
            )

    def _family(self, db: sqlite3.Connection, family_id: str) -> Family:
        r = db.execute(
            "SELECT family_id, client_id, subject, tenant, roles, scope, expires_at, revoked_at"
            " FROM refresh_families WHERE family_id=?",
            (family_id,),
        ).fetchone()
        return Family(r[0], r[1], r[2], r[3], _split(r[4]), r[5], r[6], r[7] is not None)

    def find_family(self, token_hash: bytes) -> tuple[Family, bool, float] | None:
        """The family of a refresh token, whether the token is spent, and its expiry."""
        with self._lock:
            row = self._db.execute(
                "SELECT family_id, spent_at, expires_at FROM refresh_tokens WHERE token_hash=?",
                (token_hash,),
            ).fetchone()
            if row is None:
                return None
            return self._family(self._db, row[0]), row[1] is not None, row[2]

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
        """
        with self._tx() as db:
            row = db.execute(
                "SELECT family_id, spent_at, expires_at FROM refresh_tokens WHERE token_hash=?",
                (old_hash,),
            ).fetchone()
            if row is None:
                return RotateResult(RotateOutcome.UNKNOWN)
            family = self._family(db, row[0])
            if family.client_id != client_id:
                return RotateResult(RotateOutcome.UNKNOWN)
            if family.revoked:
                return RotateResult(RotateOutcome.REVOKED, family)
            if row[1] is not None:
                jtis = self._revoke_family(db, family.family_id, now)
                return RotateResult(RotateOutcome.REUSED, family, jtis)
            if now >= row[2]:
                return RotateResult(RotateOutcome.EXPIRED, family)
            db.execute("UPDATE refresh_tokens SET spent_at=? WHERE token_hash=?", (now, old_hash))
            db.execute(
                "INSERT INTO refresh_tokens VALUES (?,?,?,?,NULL,?,?)",
                (new_hash, family.family_id, now, family.expires_at, access_jti, access_exp),
            )
            return RotateResult(RotateOutcome.ROTATED, family)

    def revoke_family(self, family_id: str, now: float) -> tuple[tuple[str, float], ...]:
        with self._tx() as db:
            return self._revoke_family(db, family_id, now)

    def _revoke_family(
        self, db: sqlite3.Connection, family_id: str, now: float
    ) -> tuple[tuple[str, float], ...]:
        """Revoke the family and every live access token issued beside its refresh tokens."""
        db.execute(
            "UPDATE refresh_families SET revoked_at=? WHERE family_id=? AND revoked_at IS NULL",
            (now, family_id),
        )
        rows = db.execute(
            "SELECT access_jti, access_exp FROM refresh_tokens WHERE family_id=? AND access_exp>?",
            (family_id, now),
        ).fetchall()
        for jti, exp in rows:
            self._insert_revoked(db, jti, exp, now)
        return tuple((jti, exp) for jti, exp in rows)

    # -- revoked jtis --------------------------------------------------------------------------

    @staticmethod
    def _insert_revoked(db: sqlite3.Connection, jti: str, exp: float, now: float) -> None:
        db.execute(
            "INSERT INTO revoked_jtis (jti, expires_at, revoked_at) VALUES (?,?,?)"
            " ON CONFLICT(jti) DO NOTHING",
            (jti, exp, now),
        )

    def revoke_jti(self, jti: str, exp: float, now: float) -> None:
        with self._tx() as db:
            self._insert_revoked(db, jti, exp, now)

    def revoked_since(self, seq: int, now: float) -> tuple[int, list[tuple[str, float]]]:
        """Revocations after `seq` that still matter, and the new high-water mark."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, jti, expires_at FROM revoked_jtis WHERE seq>? ORDER BY seq", (seq,)
            ).fetchall()
        high = rows[-1][0] if rows else seq
        return high, [(jti, exp) for _, jti, exp in rows if exp > now - 3600]

    def purge_expired(self, now: float, grace: float = 3600.0) -> None:
        """Forget state no token can use any more (`grace` covers leeway and clock skew)."""
        cutoff = now - grace
        with self._tx() as db:
            db.execute("DELETE FROM revoked_jtis WHERE expires_at<?", (cutoff,))
            db.execute(
                "DELETE FROM refresh_tokens WHERE family_id IN"
                " (SELECT family_id FROM refresh_families WHERE expires_at<?)",
                (cutoff,),
            )
            db.execute("DELETE FROM refresh_families WHERE expires_at<?", (cutoff,))
