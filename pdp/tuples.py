"""The in-memory relation tuple store: indexes in both directions and a revision that grows with every write.

Bundle tuples are the base layer; tuples written through the API are an overlay of adds and deletes
over it, so a bundle reload replaces the base without losing a single written tuple or delete.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from pdp.model import RelationTuple


def object_key(object_type: str, object_id: str, relation: str) -> str:
    return f"{object_type}:{object_id}#{relation}"


def subject_key(subject_type: str, subject_id: str, subject_relation: str = "") -> str:
    base = f"{subject_type}:{subject_id}"
    return f"{base}#{subject_relation}" if subject_relation else base


class TupleStore:
    """Readers never lock: each index is a plain dict of sets replaced or mutated under the GIL.

    INVARIANT: `subjects[k]` holds every subject of object-relation `k`; `usersets[k]` holds the
    subset that are usersets (`group:eng#member`), pre-split, so a check never parses strings.
    """

    def __init__(self) -> None:
        self.revision = 0
        self.subjects: dict[str, set[str]] = {}
        self.usersets: dict[str, dict[tuple[str, str, str], None]] = {}
        self._reverse: dict[str, set[str]] = {}
        self._base: set[RelationTuple] = set()
        self._added: set[RelationTuple] = set()
        self._deleted: set[RelationTuple] = set()
        self._write_lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(s) for s in self.subjects.values())

    # ---- writes (serialised; readers see each tuple appear or vanish atomically)
    def replace_base(self, tuples: Iterable[RelationTuple]) -> int:
        """Swap in a new bundle's tuples; the written overlay stays on top."""
        with self._write_lock:
            new_base = set(tuples)
            old_visible = (self._base - self._deleted) | self._added
            new_visible = (new_base - self._deleted) | self._added
            for t in old_visible - new_visible:
                self._unindex(t)
            for t in new_visible - old_visible:
                self._index(t)
            self._base = new_base
            self.revision += 1
            return self.revision

    def write(self, writes: Iterable[RelationTuple], deletes: Iterable[RelationTuple]) -> int:
        with self._write_lock:
            for t in deletes:
                # A tombstone even for tuples the current base lacks: the next bundle (or the
                # first one, when the durable log is replayed before any bundle) may hold them.
                self._added.discard(t)
                self._deleted.add(t)
                self._unindex(t)
            for t in writes:
                self._deleted.discard(t)
                if t not in self._base:
                    self._added.add(t)
                self._index(t)
            self.revision += 1
            return self.revision

    def restore(
        self, writes: Iterable[RelationTuple], deletes: Iterable[RelationTuple], revision: int
    ) -> None:
        """Replay the durable overlay at startup, continuing its revision numbering."""
        self.write(writes, deletes)
        with self._write_lock:
            self.revision = max(self.revision, revision)

    def _index(self, t: RelationTuple) -> None:
        okey = object_key(t.object_type, t.object_id, t.relation)
        skey = subject_key(t.subject_type, t.subject_id, t.subject_relation)
        self.subjects.setdefault(okey, set()).add(skey)
        if t.subject_relation:
            self.usersets.setdefault(okey, {})[
                (t.subject_type, t.subject_id, t.subject_relation)
            ] = None
        self._reverse.setdefault(skey, set()).add(okey)

    def _unindex(self, t: RelationTuple) -> None:
        okey = object_key(t.object_type, t.object_id, t.relation)
        skey = subject_key(t.subject_type, t.subject_id, t.subject_relation)
        subjects = self.subjects.get(okey)
        if subjects is not None:
            subjects.discard(skey)
            if not subjects:
                del self.subjects[okey]
        if t.subject_relation:
            usersets = self.usersets.get(okey)
            if usersets is not None:
                usersets.pop((t.subject_type, t.subject_id, t.subject_relation), None)
                if not usersets:
                    del self.usersets[okey]
        objects = self._reverse.get(skey)
        if objects is not None:
            objects.discard(okey)
            if not objects:
                del self._reverse[skey]

    # ---- reads
    def contains(self, t: RelationTuple) -> bool:
        subjects = self.subjects.get(object_key(t.object_type, t.object_id, t.relation))
        return (
            subjects is not None
            and subject_key(t.subject_type, t.subject_id, t.subject_relation) in subjects
        )

    def objects_of(
        self, subject_type: str, subject_id: str, subject_relation: str = ""
    ) -> set[str]:
        """The object-relation keys a subject appears in: the reverse index."""
        return set(self._reverse.get(subject_key(subject_type, subject_id, subject_relation), ()))

    def read(
        self,
        *,
        object_type: str | None = None,
        object_id: str | None = None,
        relation: str | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
        subject_relation: str | None = None,
    ) -> list[RelationTuple]:
        """Every stored tuple matching the filter, sorted. Uses whichever index the filter allows."""
        if object_type and object_id and relation:
            okey = object_key(object_type, object_id, relation)
            candidates: Iterator[RelationTuple] = (
                _from_keys(okey, s) for s in list(self.subjects.get(okey, ()))
            )
        elif subject_type and subject_id and subject_relation is not None:
            skey = subject_key(subject_type, subject_id, subject_relation)
            candidates = (_from_keys(o, skey) for o in list(self._reverse.get(skey, ())))
        else:
            candidates = (
                _from_keys(o, s) for o, subs in list(self.subjects.items()) for s in list(subs)
            )
        want = (object_type, object_id, relation, subject_type, subject_id, subject_relation)
        out = [t for t in candidates if _matches(t, want)]
        out.sort()
        return out


def _from_keys(okey: str, skey: str) -> RelationTuple:
    return RelationTuple.parse(f"{okey}@{skey}")


def _matches(t: RelationTuple, want: tuple[str | None, ...]) -> bool:
    have = (
        t.object_type,
        t.object_id,
        t.relation,
        t.subject_type,
        t.subject_id,
        t.subject_relation,
    )
    return all(w is None or w == h for w, h in zip(want, have, strict=True))
