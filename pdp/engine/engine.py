"""The decision engine: holds the current compiled snapshot and the tuple store, and answers checks.

`Engine.check` never raises: no bundle, a bad attribute, a depth limit or any exception in
evaluation is a DENY whose reason says so. Deny overrides: a satisfied (or erroring) forbid denies;
else a satisfied permit or role grant allows; else deny. `Engine.pin()` gives a SnapshotView: the
same checks, read-only, all on the snapshot current when it was pinned.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from pdp.bundle import Bundle
from pdp.bundle.tuple_schema import InvalidTuple, validate_tuple
from pdp.engine.cache import DecisionCache
from pdp.engine.compiler import AttributeTypeError, Snapshot, compile_policy
from pdp.engine.decider import Outcome
from pdp.engine.membership import GroupSchema
from pdp.engine.slicing import WHOLE, Slice
from pdp.engine.tuples import TupleStore
from pdp.model import Decision, Effect, Reason, RelationTuple, Request

# Enum members bound once: `Reason.X` costs ~200 ns a lookup on Python 3.11, the hot path many.
_DENY = Effect.DENY
_EVALUATION_ERROR = Reason.EVALUATION_ERROR
_FAIL_OPEN = Reason.FAIL_OPEN
_NOT_PERMITTED = Reason.NOT_PERMITTED
_NO_BUNDLE = Reason.NO_BUNDLE
_STALE_TUPLES = Reason.STALE_TUPLES
_OUTSIDE_SLICE = Reason.OUTSIDE_SLICE

# A stored subject as (type, id, relation), "" for no relation.
Subject = tuple[str, str, str]

DEFAULT_MAX_DEPTH = 25
DEFAULT_CACHE_TTL = 2.0


@dataclass(frozen=True, slots=True)
class _Loaded:
    """What one atomic swap installs: the bundle, its compiled snapshot, and its settings."""

    bundle: Bundle
    snapshot: Snapshot
    store: TupleStore  # the tuples this snapshot was compiled against and reads
    revision: str
    fail_open: frozenset[tuple[str, str]]
    # The answers that need no entry, made once per snapshot (see pdp.engine.decider.Outcome).
    # INVARIANT: per snapshot, never per engine: a pinned batch may outlive a reload.
    stale: Outcome = field(init=False)
    not_permitted: Outcome = field(init=False)
    # Whether a resource is in the tuples this sidecar holds; None when it holds them all.
    holds: Callable[[str, str], bool] | None = field(init=False)
    # Every type the policy declares: a subject of another type is named in a deny's errors.
    types: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stale", Outcome(_DENY, _STALE_TUPLES, (), self.revision))
        held = self.store.slice
        object.__setattr__(self, "holds", None if held.whole else held.holds)
        object.__setattr__(self, "types", frozenset(self.snapshot.policy.types))
        object.__setattr__(self, "not_permitted", Outcome(_DENY, _NOT_PERMITTED, (), self.revision))


class _Checks:
    """The decision path, one copy shared by the engine and its pinned views: a method both
    inherit, so neither pays a call to reach it."""

    __slots__ = ()
    _loaded: _Loaded | None
    cache: DecisionCache

    @property
    def tuple_revision(self) -> int:
        raise NotImplementedError

    def pin(self) -> SnapshotView:
        raise NotImplementedError

    def check(
        self, request: Request, *, min_tuple_revision: int = 0, cached: bool = True
    ) -> Decision:
        """Decide `request`. `cached=False` neither reads nor fills the decision cache (explain
        mode, pdp.explain, decides afresh before it attaches its trace)."""
        loaded = self._loaded
        if loaded is None:
            return Decision(_DENY, _NO_BUNDLE, (), "", self.tuple_revision)
        rev = loaded.store.revision
        try:
            if min_tuple_revision > rev:
                return loaded.stale.at(rev)
            resource = request.resource
            if loaded.holds is not None and not loaded.holds(resource.type, resource.id):
                return _outside_slice(loaded, resource.type, resource.id, rev)
            actions = loaded.snapshot.by_type.get(resource.type)
            entry = actions.get(request.action) if actions is not None else None
            if entry is None:
                return _no_rule_for(loaded, request, rev)
            subject, context = request.subject, request.context
            # The key validates every attribute the decision reads, so it runs cache or no cache.
            key = entry.key(subject, resource, context, rev)
            cache = self.cache
            if cached and entry.cached and cache.ttl > 0:
                hit = cache.get(key)
                if hit is not None:
                    return hit
                decision = entry.decide(subject, resource, context, rev)
                if decision.effect is _DENY and subject.type not in loaded.types:
                    return _unknown_subject_type(loaded, decision, subject.type)
                # Never cache what came from an error: the next request must re-evaluate.
                if not decision.errors and decision.reason is not _FAIL_OPEN:
                    cache.put(key, decision)
                return decision
            decision = entry.decide(subject, resource, context, rev)
            if decision.effect is _DENY and subject.type not in loaded.types:
                return _unknown_subject_type(loaded, decision, subject.type)
            return decision
        except AttributeTypeError as exc:
            return Decision(_DENY, _EVALUATION_ERROR, (), loaded.revision, rev, errors=(str(exc),))
        except Exception as exc:  # INVARIANT: the outermost guard turns any failure into a deny
            return Decision(
                _DENY,
                _EVALUATION_ERROR,
                (),
                loaded.revision,
                rev,
                errors=(f"internal error: {type(exc).__name__}",),
            )

    def check_many(
        self, requests: Iterable[Request], *, min_tuple_revision: int = 0
    ) -> list[Decision]:
        """Answer each request independently, all on one bundle snapshot even if a reload lands
        meanwhile, so that a batch never mixes bundle revisions."""
        pinned = self.pin()
        return [pinned.check(r, min_tuple_revision=min_tuple_revision) for r in requests]


def _no_rule_for(loaded: _Loaded, request: Request, rev: int) -> Decision:
    """No rule decides this (type, action): a plain deny, unless a name in the request is one the
    policy does not know, which the errors then say, with the nearest known name."""
    policy = loaded.snapshot.policy
    resource_type, action = request.resource.type, request.action
    errors = []
    info = policy.types.get(resource_type)
    if info is None:
        errors.append(_unknown("type", resource_type, policy.types))
    elif action not in info.actions:
        errors.append(_unknown("action", action, info.actions, f" for type {resource_type}"))
    if request.subject.type not in loaded.types:
        errors.append(_unknown("subject type", request.subject.type, loaded.types))
    if not errors:
        return loaded.not_permitted.at(rev)
    return Decision(_DENY, _NOT_PERMITTED, (), loaded.revision, rev, errors=tuple(errors))


def _unknown_subject_type(loaded: _Loaded, decision: Decision, subject_type: str) -> Decision:
    message = _unknown("subject type", subject_type, loaded.types)
    return dataclasses.replace(decision, errors=(*decision.errors, message))


def _unknown(what: str, name: str, known: Iterable[str], where: str = "") -> str:
    """`unknown action "reed" for type document; did you mean "read"?`"""
    message = f'unknown {what} "{name}"{where}'
    near = _nearest(name, tuple(sorted(known)))
    return f'{message}; did you mean "{near}"?' if near else message


@functools.lru_cache(maxsize=4096)
def _nearest(name: str, known: tuple[str, ...]) -> str:
    """The known name nearest to `name`, or "". Remembered (bounded: the names are the caller's):
    the search costs tens of microseconds, and a stale caller repeats the same typo call after
    call, which would otherwise spend a third of the server on it."""
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return near[0] if near else ""


def _outside_slice(loaded: _Loaded, object_type: str, object_id: str, rev: int) -> Decision:
    held = loaded.store.slice.describe()
    message = f"`{object_type}:{object_id}` is outside this sidecar's slice ({held})"
    return Decision(_DENY, _OUTSIDE_SLICE, (), loaded.revision, rev, errors=(message,))


class Engine(_Checks):
    """The current snapshot and tuple store: loads bundles, takes tuple writes, answers checks."""

    def __init__(
        self,
        *,
        cache_ttl: float | None = None,
        cache_size: int = 100_000,
        max_depth: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        slice_: Slice = WHOLE,
    ) -> None:
        # The live store: the current snapshot's. Before the first load, restores land here.
        # `slice_`: the tuples this engine holds (pdp.engine.slicing); every store after keeps it.
        self.tuples = TupleStore(slice_)
        self._cache_ttl_override = cache_ttl
        self._max_depth_override = max_depth
        # `clock`: what the cache's TTL is measured on (tests pass a fake one, never sleep)
        self.cache = DecisionCache(
            cache_ttl if cache_ttl is not None else DEFAULT_CACHE_TTL, cache_size, clock=clock
        )
        self._loaded: _Loaded | None = None
        # Serialises tuple writes with loads: a write must land in the store that is live after
        # the load, never in the one being replaced. Checks never take it.
        self._write_lock = threading.Lock()

    # ---- bundle lifecycle
    @property
    def bundle(self) -> Bundle | None:
        loaded = self._loaded
        return loaded.bundle if loaded else None

    @property
    def snapshot(self) -> Snapshot | None:
        loaded = self._loaded
        return loaded.snapshot if loaded else None

    def load(self, bundle: Bundle) -> None:
        """Swap in `bundle` atomically: its tuples under the written overlay in a new store, and
        the policy compiled against that store. Checks in flight finish on the old snapshot and
        the old store together, so no answer ever mixes two bundles.

        The bundle's tuples were validated when the Bundle was built (load_bundle and
        bundle_from_text refuse a bundle with any bad tuple)."""
        settings = bundle.settings
        max_depth = self._max_depth_override or settings.max_depth or DEFAULT_MAX_DEPTH
        with self._write_lock:
            store = self.tuples.rebased(bundle.tuples, GroupSchema(bundle.policy))
            snapshot = compile_policy(
                bundle.policy, store, max_depth, bundle.revision, settings.fail_open
            )
            if self._cache_ttl_override is None and settings.cache_ttl_seconds is not None:
                self.cache.ttl = settings.cache_ttl_seconds
            self._loaded = _Loaded(
                bundle, snapshot, store, bundle.revision, frozenset(settings.fail_open)
            )
            self.tuples = store
            # Keys name their snapshot's entries, so old entries could never hit; drop them anyway.
            self.cache.clear()

    # ---- tuples
    @property
    def tuple_revision(self) -> int:
        return self.tuples.revision

    def validate_tuples(
        self, tuples: Iterable[RelationTuple], *, policy_of: Snapshot | None = None
    ) -> None:
        snapshot = policy_of or self.snapshot
        if snapshot is None:
            raise InvalidTuple("no bundle is loaded, so no schema to check tuples against")
        for t in tuples:
            validate_tuple(snapshot.policy, t)

    def write_tuples(
        self, writes: Sequence[RelationTuple], deletes: Sequence[RelationTuple] = ()
    ) -> int:
        """Validate every tuple first, then apply all at once; returns the new tuple revision."""
        with self._write_lock:
            self.validate_tuples(writes)
            return self.tuples.write(writes, deletes)

    def restore_tuples(
        self, writes: Iterable[RelationTuple], deletes: Iterable[RelationTuple], revision: int
    ) -> None:
        """Apply tuple state read from a store (its changes, in order) at its `revision`."""
        with self._write_lock:
            self.tuples.restore(writes, deletes, revision)

    def restore_texts(self, writes: Iterable[str], deletes: Iterable[str], revision: int) -> None:
        """`restore_tuples` for tuples as their text, already in the identifier grammar: the
        store's state at a boot, a million rows without a RelationTuple each."""
        with self._write_lock:
            self.tuples.restore_texts(writes, deletes, revision)

    def read_tuples(self, **filters: str | None) -> list[RelationTuple]:
        return self.tuples.read(**filters)

    def cache_stats(self) -> dict[str, int]:
        return self.cache.stats()

    def pin(self) -> SnapshotView:
        """A read-only view that answers every check on the snapshot current now (for batches),
        even if a reload lands meanwhile. It shares the decision cache (keys name their
        snapshot's entries, so nothing crosses) and can neither load nor write."""
        return SnapshotView(self._loaded, self.cache, self.tuples)


class SnapshotView(_Checks):
    """A read-only view of one snapshot: checks only, every one on the snapshot (and its tuple
    store) current when the engine was pinned. BatchCheck answers a whole batch on one."""

    __slots__ = ("_loaded", "_store", "cache")
    _store: TupleStore

    def __init__(self, loaded: _Loaded | None, cache: DecisionCache, store: TupleStore) -> None:
        object.__setattr__(self, "_loaded", loaded)
        object.__setattr__(self, "cache", cache)
        # Read only for the revision of a view pinned before any bundle; never written through.
        object.__setattr__(self, "_store", loaded.store if loaded is not None else store)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"a SnapshotView is read-only (`{name}`)")

    @property
    def snapshot(self) -> Snapshot | None:
        loaded = self._loaded
        return loaded.snapshot if loaded else None

    @property
    def bundle(self) -> Bundle | None:
        loaded = self._loaded
        return loaded.bundle if loaded else None

    @property
    def tuple_revision(self) -> int:
        return self._store.revision

    @property
    def tuples(self) -> TupleStore:
        """The tuple store this snapshot reads (lookups walk its indexes)."""
        return self._store

    def subjects_of(self, object_type: str, object_id: str, relation: str) -> list[Subject]:
        """The subjects stored at `object_type:object_id#relation` in this snapshot, sorted, as
        (type, id, relation) with "" for none: the relation lookup the reference interpreter
        walks (pdp.explain)."""
        out = []
        for s in sorted(self._store.subjects.get(f"{object_type}:{object_id}#{relation}", ())):
            head, _, subject_relation = s.partition("#")
            subject_type, _, subject_id = head.partition(":")
            out.append((subject_type, subject_id, subject_relation))
        return out

    def pin(self) -> SnapshotView:
        return self
