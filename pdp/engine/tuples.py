"""The in-memory relation tuple store: indexes in both directions and a revision that grows with every write.

Bundle tuples are the base layer; tuples written through the API are an overlay of adds and deletes
over it, so a bundle reload replaces the base without losing a single written tuple or delete.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator

from pdp.engine.membership import GroupSchema, MembershipIndex
from pdp.engine.slicing import WHOLE, Slice
from pdp.model import RelationTuple

# A collection of index members with set semantics (`in`, iteration, no duplicates). Small ones are
# tuples, promoted to a set past a threshold: a 1-tuple costs 48 bytes, the emptiest set 216, and
# most keys hold one or two members. A tuple is never changed in place, only replaced, so a reader
# that fetched one keeps a consistent value. INVARIANT: never a bare `str` (`in` would be a
# substring test), never empty (an emptied key is deleted).
Members = tuple[str, ...] | set[str]
Userset = tuple[str, str, str]  # (subject type, subject id, subject relation), pre-split
Usersets = tuple[Userset, ...] | dict[Userset, None]

# A write of more tuples than this rebuilds the membership index once instead of keeping it
# current tuple by tuple (a boot's restore, a follower catching up).
_REBUILD_AT = 2_000

# Up to this many members a key holds a tuple. `subjects` is on the check hot path (`subject in
# found` scans a tuple), so it stays small there; the other maps are only read by writes and reads.
_HOT_SMALL = 16
_COLD_SMALL = 64


def object_key(object_type: str, object_id: str, relation: str) -> str:
    return f"{object_type}:{object_id}#{relation}"


def subject_key(subject_type: str, subject_id: str, subject_relation: str = "") -> str:
    base = f"{subject_type}:{subject_id}"
    return f"{base}#{subject_relation}" if subject_relation else base


class TupleStore:
    """Readers never lock: each index is a plain dict whose values are replaced or mutated under the GIL.

    INVARIANT: `subjects[k]` holds every visible subject of object-relation `k`; `usersets[k]` holds
    the subset that are usersets (`group:eng#member`), pre-split, so a check never parses strings.

    Visible = (base - deleted) | added, as keys only: no RelationTuple is kept. The base is not
    stored apart from the index; a visible tuple is in the base unless it is an overlay add
    (`_added`) that no bundle holds (`_both`), and a tombstone remembers whether it hid a base tuple.
    Keys are interned, so an object key or subject key is one string however many tuples share it.
    """

    def __init__(self, slice_: Slice = WHOLE) -> None:
        # The tuples this sidecar holds (pdp.engine.slicing); the rest are never indexed.
        self.slice = slice_
        self._holds: Callable[[str], bool] | None = None if slice_.whole else slice_.holds_key
        self.revision = 0
        self.subjects: dict[str, Members] = {}
        self.usersets: dict[str, Usersets] = {}
        self._reverse: dict[str, Members] = {}  # subject key -> object keys
        self._split: dict[str, Userset] = {}  # userset subject key -> its shared pre-split form
        self._added: dict[str, Members] = {}  # overlay adds: object key -> subject keys
        self._both: set[tuple[str, str]] = set()  # overlay adds that the current base also holds
        self._deleted: dict[tuple[str, str], bool] = {}  # tombstones -> "hides a base tuple"
        # Flattened group membership for the loaded policy (pdp.engine.membership); None before
        # a policy, and in a sliced store, whose groups may reach tuples it does not hold.
        self.membership: MembershipIndex | None = None
        self._write_lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(s) for s in self.subjects.values())

    # ---- writes (serialised; readers see each tuple appear or vanish atomically)
    def rebased(
        self, tuples: Iterable[RelationTuple], groups: GroupSchema | None = None
    ) -> TupleStore:
        """A new store holding `tuples` as its base under this store's written overlay, with the
        membership index of `groups` (the new policy's group relations) built over it.

        A reload builds it off to the side and swaps it in whole with the snapshot compiled
        against it, so a reader never sees half of one bundle's tuples and half of another's.
        The caller serialises this with writes (a write to this store meanwhile would be lost).
        """
        with self._write_lock:
            new = TupleStore(self.slice)
            deleted = self._deleted
            hidden: set[tuple[str, str]] = set()
            holds = self._holds
            for t in tuples:
                okey, skey = _keys(t)
                if holds is not None and not holds(okey):
                    continue
                if deleted and (okey, skey) in deleted:
                    hidden.add((okey, skey))
                    continue
                new._index(okey, skey)
            both: set[tuple[str, str]] = set()
            for okey, subs in self._added.items():
                for skey in tuple(subs):
                    current = new.subjects.get(okey)
                    if current is not None and skey in current:
                        both.add((okey, skey))  # the new bundle holds it too
                    else:
                        new._index(okey, skey)
                    _add(new._added, okey, skey, _COLD_SMALL)
            new._both = both
            new._deleted = {key: key in hidden for key in deleted}
            # Tuple revisions are the changelog's, fleet-wide: a reload does not move them (the
            # bundle's tuples are versioned by the bundle revision every decision carries).
            new.revision = self.revision
            if groups and self.slice.whole:
                new.membership = MembershipIndex(groups, new.subjects, new._reverse)
                new.membership.rebuild()
            return new

    def write(self, writes: Iterable[RelationTuple], deletes: Iterable[RelationTuple]) -> int:
        with self._write_lock:
            self._write(writes, deletes)
            self.revision += 1
            return self.revision

    def _write(self, writes: Iterable[RelationTuple], deletes: Iterable[RelationTuple]) -> None:
        self._write_keys(map(_keys, writes), map(_keys, deletes))

    def _write_keys(
        self, writes: Iterable[tuple[str, str]], deletes: Iterable[tuple[str, str]]
    ) -> None:
        holds = self._holds
        if holds is not None:
            writes = [(o, s) for o, s in writes if holds(o)]
            deletes = [(o, s) for o, s in deletes if holds(o)]
        membership = self.membership
        if membership is not None:
            writes, deletes = list(writes), list(deletes)
            if len(writes) + len(deletes) > _REBUILD_AT:
                self.membership = None  # kept current once, at the end, not per tuple
                try:
                    self._apply_keys(writes, deletes)
                finally:
                    membership.rebuild()
                    self.membership = membership
                return
        self._apply_keys(writes, deletes)

    def _apply_keys(
        self, writes: Iterable[tuple[str, str]], deletes: Iterable[tuple[str, str]]
    ) -> None:
        for okey, skey in deletes:
            # A tombstone even for tuples the current base lacks: the next bundle (or the
            # first one, when the durable log is replayed before any bundle) may hold them.
            self._deleted[(okey, skey)] = self._in_base(okey, skey)
            _discard(self._added, okey, skey, _COLD_SMALL)
            self._both.discard((okey, skey))
            self._unindex(okey, skey)
        for okey, skey in writes:
            if self._deleted:
                in_base = self._deleted.pop((okey, skey), None)
                if in_base is None:
                    in_base = self._in_base(okey, skey)
            else:
                in_base = self._in_base(okey, skey)
            if not in_base:
                _add(self._added, okey, skey, _COLD_SMALL)
            self._index(okey, skey)

    def restore(
        self, writes: Iterable[RelationTuple], deletes: Iterable[RelationTuple], revision: int
    ) -> None:
        """Apply state read from the store (the overlay at a start, then each change of its
        changelog) at the store's `revision`, which the store numbers, not this one."""
        with self._write_lock:
            self._write(writes, deletes)
            self.revision = revision

    def restore_texts(self, writes: Iterable[str], deletes: Iterable[str], revision: int) -> None:
        """`restore` for tuples as their text (`str(RelationTuple)`, already checked against
        the identifier grammar), split at `@` into their keys: a boot restores a million, and
        building a RelationTuple for each costs more than indexing it."""
        with self._write_lock:
            self._write_keys(map(_text_keys, writes), map(_text_keys, deletes))
            self.revision = revision

    def _in_base(self, okey: str, skey: str) -> bool:
        """Whether the current bundle holds this tuple (visible or hidden by a tombstone)."""
        if self._deleted:
            hidden = self._deleted.get((okey, skey))
            if hidden is not None:
                return hidden
        subs = self.subjects.get(okey)
        if subs is None or skey not in subs:
            return False
        mine = self._added.get(okey)
        return mine is None or skey not in mine or (okey, skey) in self._both

    def _index(self, okey: str, skey: str) -> None:
        if not _add(self.subjects, okey, skey, _HOT_SMALL):
            return
        if "#" in skey:  # a userset: `group:eng#member` (ids cannot hold `#`)
            split = self._split.get(skey)
            if split is None:
                subject_type, _, rest = skey.partition(":")
                subject_id, _, subject_relation = rest.partition("#")
                split = self._split[skey] = (subject_type, subject_id, subject_relation)
            _add_userset(self.usersets, okey, split)
        _add(self._reverse, skey, okey, _COLD_SMALL)
        if self.membership is not None:
            self.membership.changed(okey, skey)

    def _unindex(self, okey: str, skey: str) -> None:
        if not _discard(self.subjects, okey, skey, _HOT_SMALL):
            return
        split = self._split.get(skey)
        if split is not None:
            _discard_userset(self.usersets, okey, split)
        _discard(self._reverse, skey, okey, _COLD_SMALL)
        if split is not None and skey not in self._reverse:
            del self._split[skey]
        if self.membership is not None:
            self.membership.changed(okey, skey)

    # ---- reads
    def written(self) -> Iterator[RelationTuple]:
        """Every tuple the overlay added (written through the API), whether or not a bundle holds
        it too: the tuples a schema change must not orphan."""
        for okey, subs in list(self._added.items()):
            for skey in tuple(subs):
                yield _from_keys(okey, skey)

    def contains(self, t: RelationTuple) -> bool:
        subjects = self.subjects.get(object_key(t.object_type, t.object_id, t.relation))
        return (
            subjects is not None
            and subject_key(t.subject_type, t.subject_id, t.subject_relation) in subjects
        )

    def objects_with(self, skey: str) -> Members:
        """The object-relation keys holding subject key `skey`: the reverse index, read-only."""
        return self._reverse.get(skey, ())

    def subjects_at(self, okey: str) -> Members:
        """The subject keys stored at object-relation key `okey`, read-only."""
        return self.subjects.get(okey, ())

    def object_ids(self, object_type: str) -> set[str]:
        """Every id of `object_type` the tuples name, as object or as subject (a scan)."""
        prefix = f"{object_type}:"
        cut = len(prefix)
        ids = {k[cut:].partition("#")[0] for k in list(self.subjects) if k.startswith(prefix)}
        ids.update(k[cut:].partition("#")[0] for k in list(self._reverse) if k.startswith(prefix))
        ids.discard("*")  # `user:*` is every user, not one
        return ids

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


def _keys(t: RelationTuple) -> tuple[str, str]:
    """The interned (object key, subject key) of a tuple: equal keys become one shared string."""
    okey = sys.intern(f"{t.object_type}:{t.object_id}#{t.relation}")
    if t.subject_relation:
        return okey, sys.intern(f"{t.subject_type}:{t.subject_id}#{t.subject_relation}")
    return okey, sys.intern(f"{t.subject_type}:{t.subject_id}")


def _text_keys(text: str) -> tuple[str, str]:
    okey, _, skey = text.partition("@")
    return sys.intern(okey), sys.intern(skey)


def _add(index: dict[str, Members], key: str, member: str, small: int) -> bool:
    """Add `member` under `key`; False if it was there already."""
    held = index.get(key)
    if held is None:
        index[key] = (member,)
        return True
    if member in held:
        return False
    if isinstance(held, set):
        held.add(member)
    elif len(held) < small:
        index[key] = (*held, member)  # a new tuple: a reader holding the old one is unaffected
    else:
        index[key] = {*held, member}
    return True


def _discard(index: dict[str, Members], key: str, member: str, small: int) -> bool:
    """Remove `member` from `key`, dropping the key once empty; False if it was not there."""
    held = index.get(key)
    if held is None or member not in held:
        return False
    if isinstance(held, set):
        if len(held) > small // 2:
            held.discard(member)
            return True
        held = tuple(held)  # shrunk well below the threshold: back to a tuple
    rest = tuple(m for m in held if m != member)
    if rest:
        index[key] = rest
    else:
        del index[key]
    return True


def _add_userset(index: dict[str, Usersets], key: str, member: Userset) -> None:
    held = index.get(key)
    if held is None:
        index[key] = (member,)
    elif member in held:
        return
    elif isinstance(held, dict):
        held[member] = None
    elif len(held) < _HOT_SMALL:
        index[key] = (*held, member)
    else:
        index[key] = dict.fromkeys((*held, member))


def _discard_userset(index: dict[str, Usersets], key: str, member: Userset) -> None:
    held = index.get(key)
    if held is None or member not in held:
        return
    if isinstance(held, dict) and len(held) > _HOT_SMALL // 2:
        del held[member]
        return
    rest = tuple(m for m in held if m != member)
    if rest:
        index[key] = rest
    else:
        del index[key]


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
