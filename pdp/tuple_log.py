"""Durable relation-tuple writes: an SQLite overlay (WAL) of adds and deletes over the bundle's tuples.

Each write call is one transaction, committed before the engine sees it, so an acknowledged write
survives a restart or a kill -9. The overlay keeps the latest state per tuple: present or deleted.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pdp.model import RelationTuple

_SCHEMA = """
CREATE TABLE IF NOT EXISTS overlay (
    tuple    TEXT PRIMARY KEY,
    present  INTEGER NOT NULL,  -- 1: written, 0: deleted (hides a bundle tuple too)
    revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Overlay:
    """What the log holds: tuples written, tuples deleted, and the revision they reached."""

    writes: tuple[RelationTuple, ...]
    deletes: tuple[RelationTuple, ...]
    revision: int


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
        writes = tuple(RelationTuple.parse(t) for t, present in rows if present)
        deletes = tuple(RelationTuple.parse(t) for t, present in rows if not present)
        return Overlay(writes, deletes, rev[0] if rev else 0)

    def append(
        self,
        writes: Sequence[RelationTuple],
        deletes: Sequence[RelationTuple],
        revision: int,
    ) -> None:
        """Record one write call atomically. A tuple both written and deleted ends up deleted,
        matching the engine, which applies writes before deletes."""
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
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (revision,),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()
