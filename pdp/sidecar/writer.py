"""The one owner of every change to the state decisions are made from: tuple writes, tuple reads
for admins, and bundle swaps. Each change is validated, committed to the store and applied as one
step under one lock, so a reload can never slip between a write's validation and its commit.
Changes other sidecars commit to a shared store arrive through the follower (pdp.sidecar.follower).

Exceptions it raises to callers: `InvalidTuple(ValueError)` for a refused write (never stored),
`TenantDenied(PermissionError)` for a tenant-bound caller outside its tenant, `BundleError` for a
bundle whose schema would orphan stored tuples (the running bundle stays).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pdp.bundle import Bundle, BundleError
from pdp.bundle.tuple_schema import InvalidTuple, text_validator, validate_tuple
from pdp.engine import Engine
from pdp.identifiers import id_problem, name_problem
from pdp.model import RelationTuple
from pdp.sidecar import audit
from pdp.sidecar.follower import Follower
from pdp.sidecar.store import Change, Quarantined, Store
from pdp.tenancy import OPERATOR, Caller, Tenancy
from policy_lang.checker import CheckedPolicy
from policy_lang.diagnostics import Diagnostic, Loc

log = logging.getLogger(__name__)

QUARANTINE_EXAMPLES = 10


@dataclass(frozen=True, slots=True)
class QuarantineReport:
    """Stored rows that could not be applied at start: how many, and the first few."""

    count: int = 0
    examples: tuple[Quarantined, ...] = ()


class Writer:
    """Serialises tuple writes with bundle swaps. Checks never take its lock."""

    def __init__(
        self,
        engine: Engine,
        store: Store | None,
        follower: Follower | None,
        hub: audit.AuditHub,
        *,
        quarantine_orphans: bool = False,
    ) -> None:
        self.engine = engine
        # At a start, stored tuples the bundle's schema no longer accepts refuse the bundle (as a
        # reload does), unless the operator chose to set them aside (`--quarantine-orphans`).
        self._quarantine_orphans = quarantine_orphans
        self.store = store  # None: written tuples live in memory only (tests, `--data-dir ''`)
        self._follower = follower
        self._audit = hub
        self._lock = threading.Lock()
        # The store's state is booted into the first bundle that loads, validated against its
        # schema: before any bundle there is no schema to check a row against.
        self._restored = store is None
        self.quarantine = QuarantineReport()
        if store is not None:
            count, examples = store.quarantined(QUARANTINE_EXAMPLES)
            self.quarantine = QuarantineReport(count, tuple(examples))

    # ---- bundles
    def apply_bundle(self, bundle: Bundle) -> None:
        """Swap `bundle` in, or raise BundleError and keep the running one.

        INVARIANT: a schema change never silently drops an acknowledged write: a bundle whose
        schema no longer accepts a written tuple is refused, naming the relation and the count.
        """
        with self._lock:
            if not self._restored:
                self._restore_into(bundle)
                self._restored = True
            else:
                _refuse_orphans(bundle, self.engine.tuples.written())
                self.engine.load(bundle)

    def _restore_into(self, bundle: Bundle) -> None:
        """Boot the store's state into `bundle`, the first to load since the start, and follow
        the changelog from the revision it was read at.

        A row that is no tuple in today's identifier grammar can match no request (every id a
        request carries is in the grammar), so setting it aside changes no answer: it is always
        quarantined. A tuple that no longer fits the schema could still decide (a `blocked`
        exclusion, say), so it refuses the bundle, fail closed, unless quarantine_orphans.
        """
        assert self.store is not None
        overlay = self.store.snapshot()
        bad = [
            Quarantined(text, present, "not a relation tuple in the identifier grammar")
            for text, present in overlay.unreadable
        ]
        writes = []
        orphans = []
        validate = text_validator(bundle.policy)
        for text in overlay.writes:
            try:
                validate(text)
            except InvalidTuple as exc:
                orphans.append(Quarantined(text, True, str(exc)))
                continue
            writes.append(text)
        if orphans and not self._quarantine_orphans:
            _refuse_orphans(
                bundle,
                (RelationTuple.parse(q.tuple) for q in orphans),
                hint="serve a schema that accepts them, or start with --quarantine-orphans to "
                "set them aside (reported, never applied again)",
            )
        bad.extend(orphans)
        if bad:
            self.store.quarantine(bad, time.time())
        self.engine.load(bundle)
        self.engine.restore_texts(writes, overlay.deletes, overlay.revision)
        if self._follower is not None:
            self._follower.start_at(overlay.revision)
        log.info(
            "restored %d written and %d deleted tuples at revision %d",
            len(writes),
            len(overlay.deletes),
            overlay.revision,
        )
        if bad:
            count, examples = self.store.quarantined(QUARANTINE_EXAMPLES)
            self.quarantine = QuarantineReport(count, tuple(examples))
            log.error(
                "%d stored tuple row(s) could not be applied and were quarantined "
                "(the quarantine table of %s); first: %s (%s)",
                len(bad),
                self.store.location,
                bad[0].tuple,
                bad[0].reason,
            )
            self._audit.event(
                audit.TUPLES_QUARANTINED,
                {
                    "count": len(bad),
                    "examples": [
                        {"tuple": q.tuple, "write": q.present, "reason": q.reason}
                        for q in bad[:QUARANTINE_EXAMPLES]
                    ],
                },
            )

    # ---- tuples
    def write(
        self,
        writes: Sequence[RelationTuple],
        deletes: Sequence[RelationTuple] = (),
        caller: Caller = OPERATOR,
    ) -> int:
        """Validate, commit to the store, apply, audit; returns the store revision it committed
        at (StoreUnavailable, and nothing acknowledged, when the store cannot commit).

        INVARIANT: nothing is stored unless everything is accepted, and nothing is visible to a
        check before it is durable.
        """
        both = set(writes) & set(deletes)
        if both:
            raise InvalidTuple(f"`{min(both)}` is both written and deleted in one call")
        for t in (*writes, *deletes):
            _check_identifiers(t)
        with self._lock:
            bundle = self.engine.bundle
            if bundle is None:
                raise InvalidTuple("no bundle is loaded, so no schema to check tuples against")
            tenancy = bundle.settings.tenancy
            tenancy.confine(caller, writes, "write")
            tenancy.confine(caller, deletes, "delete")
            self.engine.validate_tuples(writes)
            if self.store is None or self._follower is None:
                revision = self.engine.write_tuples(writes, deletes)
            else:
                revision = self.store.append(writes, deletes)
                # Applied before the answer, so this sidecar's next check sees the write.
                self._follower.applied_own(
                    revision, Change(revision, tuple(writes), tuple(deletes))
                )
        self._audit.event(
            audit.TUPLES_WRITTEN,
            {
                "writes": [str(t) for t in writes],
                "deletes": [str(t) for t in deletes],
                "tuple_revision": revision,
                "by": caller.subject,
            },
        )
        return revision

    def read(
        self, caller: Caller = OPERATOR, **filters: str | None
    ) -> tuple[list[RelationTuple], int]:
        """The tuples matching `filters` that `caller` may see, and the revision read at."""
        bundle = self.engine.bundle
        tenancy = bundle.settings.tenancy if bundle is not None else Tenancy()
        tenancy.confine_filter(caller, filters)
        self.engine.tuples.slice.check_read(filters.get("object_type"), filters.get("object_id"))
        revision = self.engine.tuple_revision
        found = self.engine.read_tuples(**filters)
        if caller.tenant is not None:
            found = [t for t in found if tenancy.visible(caller, t)]
        return found, revision


def _check_identifiers(t: RelationTuple) -> None:
    """The identifier grammar, again at the owner: callers other than gRPC build tuples too."""
    problems = (
        ("object_type", name_problem(t.object_type)),
        ("object_id", id_problem(t.object_id)),
        ("relation", name_problem(t.relation)),
        ("subject_type", name_problem(t.subject_type)),
        ("subject_id", id_problem(t.subject_id, wildcard=not t.subject_relation)),
        ("subject_relation", name_problem(t.subject_relation) if t.subject_relation else None),
    )
    for field, problem in problems:
        if problem is not None:
            raise InvalidTuple(f"{field}: {problem}")


def _refuse_orphans(
    bundle: Bundle,
    written: Iterable[RelationTuple],
    hint: str = "delete those tuples first (DeleteTuples), or keep the relation and the subject "
    "types they use",
) -> None:
    """BundleError if `bundle`'s schema no longer accepts a stored, API-written tuple."""
    orphans: Counter[tuple[str, str]] = Counter()
    example: dict[tuple[str, str], RelationTuple] = {}
    policy: CheckedPolicy = bundle.policy
    for t in written:
        try:
            validate_tuple(policy, t)
        except InvalidTuple:
            key = (t.object_type, t.relation)
            orphans[key] += 1
            example.setdefault(key, t)
    if not orphans:
        return
    where = Loc(str(bundle.path), 0, 0)
    raise BundleError(
        [
            Diagnostic(
                "orphaned_tuples",
                f"this schema would orphan {n} stored tuple(s) of `{ot}#{rel}` "
                f"(e.g. `{example[(ot, rel)]}`)",
                where,
                hint=hint,
            )
            for (ot, rel), n in sorted(orphans.items())
        ]
    )
