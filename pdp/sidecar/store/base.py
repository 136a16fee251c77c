"""What every store of durable tuple state provides: a changelog.

Every write call is one transaction that appends its changes under the next revision and updates
the current state (the overlay of written and deleted tuples over the bundle's). Revisions are
global to the store, dense (1, 2, 3, ... with no gap: a rolled-back transaction takes none) and
strictly increasing in commit order, so a follower that has applied revision R and reads
`revision > R` in order can never skip or reorder a committed change. Each backend says in its
docstring how it makes commit order and revision order the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pdp.errors import Unavailable
from pdp.model import RelationTuple, TupleSyntaxError


class StoreUnavailable(Unavailable):
    """The store cannot be reached or did not commit: a write is refused with UNAVAILABLE (it may
    or may not have committed if the connection broke during COMMIT; a retry is harmless, since
    writing a present tuple or deleting an absent one changes nothing)."""


@dataclass(frozen=True, slots=True)
class Overlay:
    """The current state at one revision: tuples written, tuples deleted (tombstones that also
    hide a bundle's tuple), as their text in the identifier grammar (`str(RelationTuple)`: a boot
    reads a million and builds no RelationTuple), and rows that are no tuple in that grammar."""

    writes: tuple[str, ...]
    deletes: tuple[str, ...]
    revision: int
    unreadable: tuple[tuple[str, bool], ...] = ()  # (row text, present)


@dataclass(frozen=True, slots=True)
class Change:
    """One committed write call: its revision and what it wrote and deleted."""

    revision: int
    writes: tuple[RelationTuple, ...]
    deletes: tuple[RelationTuple, ...]


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A row moved out of the overlay: its text, whether it was a write, and why."""

    tuple: str
    present: bool
    reason: str


class Store(Protocol):
    """Durable tuple state shared by every sidecar that opens the same location."""

    location: str  # for logs and status: the URL without any password

    def append(self, writes: Sequence[RelationTuple], deletes: Sequence[RelationTuple]) -> int:
        """Commit one write call; returns its revision. Raises StoreUnavailable."""
        ...

    def snapshot(self) -> Overlay:
        """The whole current state and the revision it is at, read consistently."""
        ...

    def changes_since(self, revision: int, limit: int) -> list[Change]:
        """The committed changes after `revision`, in order, at most `limit` of them."""
        ...

    def head(self) -> int:
        """The newest committed revision."""
        ...

    def wait_for_change(self, timeout: float) -> None:
        """Return when another change may have committed, or after `timeout` seconds. Only a
        wake-up: the follower reads the changelog either way."""
        ...

    def quarantine(self, rows: Sequence[Quarantined], at: float) -> None:
        """Move `rows` from the overlay to the quarantine table, in one transaction."""
        ...

    def quarantined(self, limit: int = 10) -> tuple[int, list[Quarantined]]:
        """How many rows are in quarantine, and the first `limit` of them."""
        ...

    def close(self) -> None: ...


def rows_of(
    writes: Sequence[RelationTuple], deletes: Sequence[RelationTuple]
) -> list[tuple[str, bool]]:
    """A write call as changelog rows: (tuple text, present)."""
    return [(str(t), True) for t in writes] + [(str(t), False) for t in deletes]


def change_of(revision: int, rows: Sequence[tuple[str, bool]]) -> Change:
    """Changelog rows back as a Change. A row that is no tuple in today's grammar is left out: no
    request can carry its ids, so it can match nothing (the overlay's copy is quarantined)."""
    writes: list[RelationTuple] = []
    deletes: list[RelationTuple] = []
    for text, present in rows:
        try:
            t = RelationTuple.parse(text)
        except TupleSyntaxError:
            continue
        (writes if present else deletes).append(t)
    return Change(revision, tuple(writes), tuple(deletes))


def overlay_of(rows: Iterable[tuple[str, bool]], revision: int) -> Overlay:
    writes: list[str] = []
    deletes: list[str] = []
    unreadable: list[tuple[str, bool]] = []
    in_grammar = RelationTuple.in_grammar
    for text, present in rows:
        if not in_grammar(text):  # e.g. written before the identifier grammar was enforced
            unreadable.append((text, bool(present)))
        elif present:
            writes.append(text)
        else:
            deletes.append(text)
    return Overlay(tuple(writes), tuple(deletes), revision, tuple(unreadable))


def group_changes(rows: Sequence[tuple[int, str, bool]]) -> list[Change]:
    """Changelog rows (revision, tuple text, present), ordered by revision: one Change each."""
    out: list[Change] = []
    current: list[tuple[str, bool]] = []
    revision = None
    for rev, text, present in rows:
        if rev != revision and revision is not None:
            out.append(change_of(revision, current))
            current = []
        revision = rev
        current.append((text, present))
    if revision is not None:
        out.append(change_of(revision, current))
    return out
