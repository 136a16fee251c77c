"""The token store in one SQLite file (WAL), shared by the processes of one host.

Every change is one transaction; WAL with synchronous=NORMAL survives a crash or kill -9 of the
process (a power cut may lose the last commits, which we accept for throughput). One writer at a
time (`BEGIN IMMEDIATE`) is what makes a rotation atomic here, and AUTOINCREMENT numbers
revocations in commit order. Other processes' revocations arrive by the periodic pass only.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pdp.tokens.store.base import Dialect, Row

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

DIALECT = Dialect(
    clients="clients",
    families="refresh_families",
    tokens="refresh_tokens",
    revoked="revoked_jtis",
    for_update="",  # BEGIN IMMEDIATE: the whole database is this transaction's
    insert_revoked="INSERT INTO revoked_jtis (jti, expires_at, revoked_at) VALUES (?,?,?)"
    " ON CONFLICT(jti) DO NOTHING",
)


class _Connection:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._db.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._db.execute(sql, params)


class SqliteBackend:
    """One SQLite connection guarded by a lock."""

    dialect = DIALECT
    revocation_feed = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.location = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.location, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._lock:
            self._db.executescript(_SCHEMA)
        if self.location != ":memory:":
            os.chmod(self.location, 0o600)

    @contextmanager
    def transaction(self) -> Iterator[_Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield _Connection(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[_Connection]:
        with self._lock:
            yield _Connection(self._db)

    def wait_for_revocation(self, timeout: float) -> bool:
        raise NotImplementedError("SQLite has no revocation feed: the periodic pass reads it")

    def close(self) -> None:
        with self._lock:
            self._db.close()
