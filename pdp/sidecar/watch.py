"""Watching the store's changelog: every committed write call of every sidecar sharing the store,
in revision order, filtered for one caller (Admin.Watch; SpiceDB's Watch is the anchor).

The changelog is read straight from the store, so a watcher that resumes after a disconnect from
the last revision it received misses nothing and sees nothing twice. The follower is only the
wake-up: when it applies a new revision, the watcher reads on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pdp.model import RelationTuple
from pdp.sidecar.follower import Follower
from pdp.sidecar.store import Change, Store
from pdp.tenancy import Caller, Tenancy

BATCH = 500  # revisions read per query
WAKE_EVERY = 0.5  # seconds: how often a quiet watch checks whether its caller is gone


def watch(
    store: Store,
    follower: Follower,
    *,
    caller: Caller,
    tenancy: Callable[[], Tenancy],
    after: int | None,
    object_types: frozenset[str],
    stopped: Callable[[], bool],
) -> Iterator[Change]:
    """The changes after `after` (None: after the newest now), as `caller` may see them, until
    `stopped()`. Raises StoreUnavailable when the store cannot be read (the caller resumes)."""
    cursor = store.head() if after is None else after
    while not stopped():
        changes = store.changes_since(cursor, BATCH)
        for change in changes:
            cursor = change.revision
            shown = _shown(change, caller, tenancy(), object_types)
            if shown.writes or shown.deletes:
                yield shown
        if len(changes) < BATCH:
            follower.wait_for(cursor + 1, WAKE_EVERY)


def _shown(
    change: Change, caller: Caller, tenancy: Tenancy, object_types: frozenset[str]
) -> Change:
    def keep(t: RelationTuple) -> bool:
        return (not object_types or t.object_type in object_types) and tenancy.visible(caller, t)

    return Change(
        change.revision,
        tuple(t for t in change.writes if keep(t)),
        tuple(t for t in change.deletes if keep(t)),
    )
