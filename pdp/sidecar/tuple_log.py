"""Durable relation-tuple writes: an SQLite overlay (WAL) of adds and deletes over the bundle's tuples.

Each write call is one transaction, committed before the engine sees it, so an acknowledged write
survives a restart or a kill -9. The overlay keeps the latest state per tuple: present or deleted.
Only pdp.sidecar.writer calls this module: it validates before appending, so a refused write is never here.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pdp.model import RelationTuple, TupleSyntaxError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS overlay (
    tuple    TEXT PRIMARY KEY,
    present  INTEGER NOT NULL,  -- 1: written, 0: deleted (hides a bundle tuple too)
    revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
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


@dataclass(frozen=True, slots=True)
class Overlay:
    """What the log holds: tuples written, tuples deleted, and the revision they reached."""

    writes: tuple[RelationTuple, ...]
    deletes: tuple[RelationTuple, ...]
    revision: int
    unreadable: tuple[tuple[str, bool], ...] = ()  # (row text, present): not a tuple any more


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A row moved out of the overlay: its text, whether it was a write, and why."""

    tuple: str
    present: bool
    reason: str


class TupleLog:
    """The overlay file `<data_dir>/tuples.db`. One writer at a time (calls are serialised)."""

    FILENAME = "tuples.db"

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / self.FILENAME
        # check_same_thread=False: gRPC handlers run on pool threads; our lock serialises them
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit is fsynced, so a write acknowledged to a caller survives power loss,
        # not only a kill -9 (which NORMAL in WAL mode already survives).
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def load(self) -> Overlay:
        with self._lock:
            rows = self._db.execute("SELECT tuple, present FROM overlay ORDER BY tuple").fetchall()
            rev = self._db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        writes: list[RelationTuple] = []
        deletes: list[RelationTuple] = []
        unreadable: list[tuple[str, bool]] = []
        for text, present in rows:
            try:
                t = RelationTuple.parse(text)
            except TupleSyntaxError:  # e.g. written before the identifier grammar was enforced
                unreadable.append((text, bool(present)))
                continue
            (writes if present else deletes).append(t)
        return Overlay(tuple(writes), tuple(deletes), rev[0] if rev else 0, tuple(unreadable))

    def quarantine(self, rows: Sequence[Quarantined], at: float) -> None:
        """Move `rows` from the overlay to the quarantine table, in one transaction."""
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    self._db.execute(
                        "INSERT INTO quarantine (tuple, present, revision, reason, at) "
                        "SELECT tuple, present, revision, ?, ? FROM overlay WHERE tuple = ?",
                        (row.reason, at, row.tuple),
                    )
                    self._db.execute("DELETE FROM overlay WHERE tuple = ?", (row.tuple,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def quarantined(self, limit: int = 10) -> tuple[int, list[Quarantined]]:
        """How many rows are in quarantine, and the first `limit` of them."""
        with self._lock:
            (count,) = self._db.execute("SELECT count(*) FROM quarantine").fetchone()
            rows = self._db.execute(
                "SELECT tuple, present, reason FROM quarantine ORDER BY rowid LIMIT ?", (limit,)
            ).fetchall()
        return count, [Quarantined(t, bool(p), r) for t, p, r in rows]

    def append(
        self,
        writes: Sequence[RelationTuple],
        deletes: Sequence[RelationTuple],
        revision: int,
    ) -> None:
        """Record one write call atomically. The caller refuses a tuple both written and deleted."""
        rows = [(str(t), 1, revision) for t in writes] + [(str(t), 0, revision) for t in deletes]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO overlay (tuple, present, revision) VALUES (?, ?, ?) "
                    "ON CONFLICT(tuple) DO UPDATE SET present = excluded.present, "
                    "revision = excluded.revision",
                    rows,
                )
                self._set_revision(revision)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def set_revision(self, revision: int) -> None:
        with self._lock:
            self._set_revision(revision)

    def _set_revision(self, revision: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('revision', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",  # never back
            (revision,),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()
