"""The embedded store: one SQLite file (`<data_dir>/tuples.db` by default; WAL, fsync per commit).

Commit order is revision order because SQLite has one writer at a time: `BEGIN IMMEDIATE` takes
the write lock before the head revision is read, and holds it until COMMIT. Several processes on
one host may open the same file: each is a follower of the others (`PRAGMA data_version` tells a
connection that another one committed, so waiting for a change is a cheap poll).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS overlay (
    tuple    TEXT PRIMARY KEY,
    present  INTEGER NOT NULL,  -- 1: written, 0: deleted (hides a bundle tuple too)
    revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    tuple    TEXT NOT NULL,
    present  INTEGER NOT NULL,
    PRIMARY KEY (revision, seq)
) WITHOUT ROWID;
-- Rows that could not be applied at a start (no longer a tuple, or no longer fit the schema):
-- moved here, never applied again and never silently dropped. An operator inspects them.
CREATE TABLE IF NOT EXISTS quarantine (
    tuple    TEXT NOT NULL,
    present  INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    reason   TEXT NOT NULL,
    at       REAL NOT NULL
);
"""

POLL_INTERVAL = 0.005  # seconds between `data_version` checks while waiting for a change
BUSY_TIMEOUT_MS = 10_000  # another process holding the write lock: wait this long, then refuse


def _enter_wal(db: sqlite3.Connection) -> None:
    """Switch a new database to WAL (a no-op once it is). The switch takes an exclusive lock and
    SQLite does not wait on it through the busy timeout: two processes opening a fresh data
    directory at once (`pdp serve --processes N`, or two sidecars) would see one fail with
    "database is locked". So retry for as long as the busy timeout, then refuse."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise StoreUnavailable(f"tuple store busy: {exc}") from exc
            time.sleep(POLL_INTERVAL)


class SqliteStore:
    """One SQLite file (by default `<data_dir>/tuples.db`), shared by every process that opens it."""

    FILENAME = "tuples.db"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.location = f"sqlite:///{self.path}"
        # Writes and reads on their own connections: a follower waiting for a change never
        # blocks a write. check_same_thread=False: our locks serialise each connection's users.
        self._db = self._connect()
        self._db.executescript(_SCHEMA)
        self._reader = self._connect()
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._data_version = self._version()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _enter_wal(db)
        # FULL: every commit is fsynced, so a write acknowledged to a caller survives power loss,
        # not only a kill -9 (which NORMAL in WAL mode already survives).
        db.execute("PRAGMA synchronous=FULL")
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # locked past the busy timeout
                raise StoreUnavailable(f"tuple store busy: {exc}") from exc
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def append(self, writes: Sequence[RelationTuple], deletes: Sequence[RelationTuple]) -> int:
        rows = rows_of(writes, deletes)
        with self._write() as db:
            revision = _head(db) + 1
            db.executemany(
                "INSERT INTO changes (revision, seq, tuple, present) VALUES (?, ?, ?, ?)",
                [(revision, i, text, present) for i, (text, present) in enumerate(rows)],
            )
            db.executemany(
                "INSERT INTO overlay (tuple, present, revision) VALUES (?, ?, ?) "
                "ON CONFLICT(tuple) DO UPDATE SET present = excluded.present, "
                "revision = excluded.revision",
                [(text, present, revision) for text, present in rows],
            )
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('revision', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (revision,),
            )
        return revision

    def snapshot(self) -> Overlay:
        with self._read_lock:
            db = self._reader
            db.execute("BEGIN")  # one read transaction: the rows and the head agree
            try:
                revision = _head(db)
                rows = db.execute("SELECT tuple, present FROM overlay ORDER BY tuple").fetchall()
            finally:
                db.execute("COMMIT")
        return overlay_of([(t, bool(p)) for t, p in rows], revision)

    def changes_since(self, revision: int, limit: int) -> list[Change]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT revision, tuple, present FROM changes "
                "WHERE revision > ? AND revision <= ? ORDER BY revision, seq",
                (revision, revision + limit),
            ).fetchall()
        return group_changes([(r, t, bool(p)) for r, t, p in rows])

    def head(self) -> int:
        with self._read_lock:
            return _head(self._reader)

    def wait_for_change(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            version = self._version()
            if version != self._data_version:
                self._data_version = version
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(POLL_INTERVAL, remaining))

    def _version(self) -> int:
        with self._read_lock:
            (version,) = self._reader.execute("PRAGMA data_version").fetchone()
        return int(version)

    def quarantine(self, rows: Sequence[Quarantined], at: float) -> None:
        if not rows:
            return
        with self._write() as db:
            for row in rows:
                db.execute(
                    "INSERT INTO quarantine (tuple, present, revision, reason, at) "
                    "SELECT tuple, present, revision, ?, ? FROM overlay WHERE tuple = ?",
                    (row.reason, at, row.tuple),
                )
                db.execute("DELETE FROM overlay WHERE tuple = ?", (row.tuple,))

    def quarantined(self, limit: int = 10) -> tuple[int, list[Quarantined]]:
        with self._read_lock:
            (count,) = self._reader.execute("SELECT count(*) FROM quarantine").fetchone()
            rows = self._reader.execute(
                "SELECT tuple, present, reason FROM quarantine ORDER BY rowid LIMIT ?", (limit,)
            ).fetchall()
        return count, [Quarantined(t, bool(p), r) for t, p, r in rows]

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            self._reader.close()


def _head(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
    return int(row[0]) if row else 0
