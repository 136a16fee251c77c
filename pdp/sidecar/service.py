"""The sidecar's use cases, free of any transport: check and check a batch (engine, audit, metrics),
look up and plan resources, write and read tuples (through pdp.sidecar.writer, their one owner), apply or reject a bundle, status.

The gRPC servicers and the HTTP routes only convert messages and map errors; everything a decision
or a change does happens here, so every transport gets the same audit, metrics and fail-closed rules.
This module never imports a transport.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from prometheus_client import CollectorRegistry

from pdp.bundle import Bundle, BundleError
from pdp.engine import Engine, SnapshotView
from pdp.engine.lookup import Lookup, lookup_resources, lookup_subjects
from pdp.engine.plan import ALWAYS_DENIED, FALSE, Plan, PlanUnsupported, plan_resources
from pdp.errors import InvalidRequest
from pdp.explain import explain as explain_decision
from pdp.model import Decision, Entity, Request, Value
from pdp.sidecar import audit
from pdp.sidecar.follower import Follower, FollowerState
from pdp.sidecar.metrics import Metrics, ScrapeCollector
from pdp.sidecar.store import Change, Store, StoreUnavailable
from pdp.sidecar.watch import watch
from pdp.sidecar.writer import QuarantineReport, Writer
from pdp.tenancy import Caller, Tenancy

log = logging.getLogger(__name__)

_DENIED = Plan(ALWAYS_DENIED, FALSE)  # every failure of a plan: never a filter that might allow

# Request metadata, fetched only when an audit subscriber will read it (gRPC's is a call).
Metadata = Callable[[], Iterable[tuple[str, str | bytes]]] | None


class CheckItem(NamedTuple):
    """One check of a batch: a tuple, so the batch loop unpacks it at C speed."""

    request: Request
    explain: bool = False
    min_tuple_revision: int = 0


_REQUEST = operator.itemgetter(0)
_EXPLAIN = operator.itemgetter(1)
_MIN_REVISION = operator.itemgetter(2)


@dataclass(frozen=True, slots=True)
class Rejected:
    path: str
    at: float
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Status:
    serving: bool
    name: str
    revision: str
    path: str
    loaded_at: float
    tuple_revision: int
    rejected: Rejected | None
    quarantine: QuarantineReport
    store: str  # where durable tuple state lives ("" when in memory only)
    follower: FollowerState | None  # None when in memory only
    slice: str  # what this sidecar holds, in words (pdp.engine.slicing)


@dataclass(frozen=True, slots=True)
class PlanAnswer:
    """PlanResources' answer: the plan, what it was computed from, and `notes` (each `code:
    message`) saying why it is ALWAYS_DENIED when that is not the policy's own answer."""

    plan: Plan
    tuple_revision: int
    bundle_revision: str
    notes: tuple[str, ...] = ()


class Service:
    """The engine plus what happens around every decision and every change."""

    def __init__(
        self,
        engine: Engine,
        hub: audit.AuditHub,
        metrics: Metrics,
        store: Store | None,
        follower: Follower | None,
        set_serving: Callable[[bool], None] = lambda _: None,
        *,
        quarantine_orphans: bool = False,
        consistency_wait: float = 0.0,
    ) -> None:
        self.engine = engine
        self.audit = hub
        self.metrics = metrics
        # What /metrics renders: these families, read at each scrape, and whatever the transport
        # registers beside them (per-call RED metrics).
        self.metrics_registry = CollectorRegistry(auto_describe=False)
        self.metrics_registry.register(ScrapeCollector(metrics, self._scrape_state))
        self.store = store
        self.follower = follower
        # How long a check that demands a newer tuple revision waits for it (then STALE_TUPLES).
        self.consistency_wait = consistency_wait
        self.writer = Writer(engine, store, follower, hub, quarantine_orphans=quarantine_orphans)
        self._set_serving = set_serving
        self._loaded_at = 0.0
        self._rejected: Rejected | None = None

    # ---- decisions
    def check(
        self,
        request: Request,
        *,
        explain: bool = False,
        min_tuple_revision: int = 0,
        metadata: Metadata = None,
    ) -> tuple[Decision, str]:
        """Decide, audit, count: the decision and its decision id. Never raises."""
        t0 = time.perf_counter()
        if min_tuple_revision > self.engine.tuple_revision:
            self.await_revision(min_tuple_revision)
        if explain:
            decision = explain_decision(
                self.engine,
                request,
                min_tuple_revision=min_tuple_revision,
                mask=self.audit.settings.mask,
            )
        else:
            decision = self.engine.check(request, min_tuple_revision=min_tuple_revision)
        decision_id = self.audit.decision(request, decision, metadata)
        self.metrics.observe(decision, time.perf_counter() - t0)
        return decision, decision_id

    def await_revision(self, revision: int) -> None:
        """Give the follower up to `consistency_wait` to bring in `revision` (written at another
        sidecar of the fleet a moment ago); a check still behind it then denies STALE_TUPLES."""
        if self.follower is not None and revision > self.engine.tuple_revision:
            self.follower.wait_for(revision, self.consistency_wait)

    def check_batch(
        self, checks: Sequence[CheckItem], metadata: Metadata = None
    ) -> tuple[list[Decision], list[str]]:
        """Decide every check on one pinned snapshot (so a reload mid-batch never mixes
        revisions), once the newest tuple revision any demands has arrived or `consistency_wait`
        passed; audit each (one event per decision) and count them all under one lock. Returns
        the decisions and their decision ids, in order. Never raises.

        What the batch shares is done once: the pin, the revision wait, the audit's sequence
        block, clock read and metadata fetch, the metrics lock."""
        t0 = time.perf_counter()
        newest = max(map(_MIN_REVISION, checks), default=0)
        if newest > self.engine.tuple_revision:
            self.await_revision(newest)
        pinned = self.engine.pin()
        check = pinned.check
        requests = list(map(_REQUEST, checks))
        if newest or any(map(_EXPLAIN, checks)):
            decisions = [
                explain_decision(
                    pinned,
                    request,
                    min_tuple_revision=min_tuple_revision,
                    mask=self.audit.settings.mask,
                )
                if explain
                else check(request, min_tuple_revision=min_tuple_revision)
                for request, explain, min_tuple_revision in checks
            ]
        else:  # the usual batch: a loop in C
            decisions = list(map(check, requests))
        ids = self.audit.decisions(requests, decisions, metadata)
        self.metrics.observe_batch(decisions, time.perf_counter() - t0)
        return decisions, ids

    # ---- lookups
    def lookup_resources(
        self,
        subject: Entity,
        action: str,
        resource_type: str,
        context: Mapping[str, Value],
        *,
        after: str = "",
        min_tuple_revision: int = 0,
    ) -> Lookup:
        """The resources `subject` may `action` (pdp.engine.lookup), on one snapshot, once the
        revision asked for has arrived; behind it, no ids and the reason."""
        view = self._view_at(min_tuple_revision)
        if min_tuple_revision > view.tuple_revision:
            return _stale(view.tuple_revision, min_tuple_revision)
        return lookup_resources(view, subject, action, resource_type, context, after=after)

    def lookup_subjects(
        self,
        resource: Entity,
        action: str,
        subject_type: str,
        context: Mapping[str, Value],
        *,
        after: str = "",
        min_tuple_revision: int = 0,
    ) -> Lookup:
        view = self._view_at(min_tuple_revision)
        if min_tuple_revision > view.tuple_revision:
            return _stale(view.tuple_revision, min_tuple_revision)
        return lookup_subjects(view, resource, action, subject_type, context, after=after)

    def lookup_done(self, kind: str, question: Mapping[str, str], found: Lookup, sent: int) -> None:
        """Audit a finished lookup: one event with the question, how many ids went out, and
        whether the answer was whole (no attributes: they may hold what the audit masks)."""
        self.audit.event(
            kind,
            {
                **question,
                "ids_sent": sent,
                "tuple_revision": found.tuple_revision,
                "incomplete": list(found.incomplete),
            },
        )

    # ---- plans
    def plan_resources(
        self,
        subject: Entity,
        action: str,
        resource_type: str,
        context: Mapping[str, Value],
        *,
        min_tuple_revision: int = 0,
    ) -> PlanAnswer:
        """The resources `subject` may `action`, as a filter (pdp.engine.plan), on one snapshot,
        once the revision asked for has arrived; audited as one event (no attributes, no filter:
        both may hold what the audit masks). Raises InvalidRequest for a type the bundle does not
        declare and PlanUnsupported for what no filter can say; otherwise never raises."""
        view = self._view_at(min_tuple_revision)
        question = {
            "subject": f"{subject.type}:{subject.id}",
            "action": action,
            "resource_type": resource_type,
        }
        try:
            answer = self._plan(view, subject, action, resource_type, context, min_tuple_revision)
        except PlanUnsupported as exc:
            self.audit.event(
                audit.PLAN_RESOURCES,
                {**question, "plan": "unsupported", "notes": [f"unsupported: {exc}"]},
            )
            raise
        self.audit.event(
            audit.PLAN_RESOURCES,
            {
                **question,
                "plan": answer.plan.kind,
                "tuple_revision": answer.tuple_revision,
                "bundle_revision": answer.bundle_revision,
                "notes": list(answer.notes),
            },
        )
        return answer

    def _plan(
        self,
        view: SnapshotView,
        subject: Entity,
        action: str,
        resource_type: str,
        context: Mapping[str, Value],
        min_tuple_revision: int,
    ) -> PlanAnswer:
        # INVARIANT: every way this fails short of PlanUnsupported is ALWAYS_DENIED with a note
        have, snapshot, bundle = view.tuple_revision, view.snapshot, view.bundle
        if snapshot is None or bundle is None:
            return PlanAnswer(_DENIED, have, "", ("no_bundle: no bundle is loaded",))

        def denied(note: str) -> PlanAnswer:
            return PlanAnswer(_DENIED, have, bundle.revision, (note,))

        if resource_type not in snapshot.policy.types:
            raise InvalidRequest(f"resource_type: unknown type `{resource_type}`")
        if min_tuple_revision > have:
            return denied(
                f"stale_tuples: asked for tuple revision {min_tuple_revision}, this sidecar "
                f"is at {have}: no resources planned"
            )
        try:
            plan = plan_resources(view, subject, action, resource_type, context)
        except PlanUnsupported:
            raise
        except Exception as exc:  # a planner bug must deny, never allow or crash the call
            log.exception("planning %s on %s failed", action, resource_type)
            return denied(f"evaluation_error: planning failed ({type(exc).__name__}): deny all")
        return PlanAnswer(plan, have, bundle.revision)

    def _view_at(self, min_tuple_revision: int) -> SnapshotView:
        if min_tuple_revision > self.engine.tuple_revision:
            self.await_revision(min_tuple_revision)
        return self.engine.pin()

    # ---- bundles
    def apply_bundle(self, bundle: Bundle) -> None:
        """Swap `bundle` in; raises (BundleError, or anything compiling raised) to refuse it."""
        self.writer.apply_bundle(bundle)  # atomic swap: checks in flight finish on the old one
        self._loaded_at = time.time()
        self._rejected = None
        self.metrics.bundle_loaded()
        self._set_serving(True)
        log.info(
            "bundle %s revision %s loaded from %s",
            bundle.name,
            bundle.revision,
            bundle.path,
            extra={"bundle": bundle.name, "bundle_revision": bundle.revision},
        )
        outside = self.engine.tuples.slice.walks_outside(bundle.policy)
        if outside:
            log.warning(
                "the slice does not hold types %s, which relation walks from its types reach: "
                "checks that need them deny with an evaluation error",
                ", ".join(outside),
            )
        self.audit.event(
            audit.BUNDLE_LOADED,
            {"name": bundle.name, "revision": bundle.revision, "path": str(bundle.path)},
        )

    def reject_bundle(self, path: Path, exc: Exception) -> None:
        if isinstance(exc, BundleError):
            errors = tuple(d.format() for d in exc.diagnostics) or (str(exc),)
        else:
            errors = (f"{type(exc).__name__}: {exc}",)
        self._rejected = Rejected(str(path), time.time(), errors)
        self.metrics.bundle_rejected()
        active = self.engine.bundle
        self.audit.event(
            audit.BUNDLE_REJECTED,
            {
                "path": str(path),
                "errors": list(errors),
                "serving_revision": active.revision if active else "",
            },
        )

    # ---- the changelog
    def watch(
        self,
        caller: Caller,
        after: int | None,
        object_types: frozenset[str],
        stopped: Callable[[], bool],
    ) -> Iterator[Change]:
        """Committed tuple changes after `after`, as `caller` may see them (pdp.sidecar.watch)."""
        if self.store is None or self.follower is None:
            raise StoreUnavailable("this sidecar keeps tuples in memory only: nothing to watch")

        def tenancy() -> Tenancy:
            bundle = self.engine.bundle
            return bundle.settings.tenancy if bundle is not None else Tenancy()

        return watch(
            self.store,
            self.follower,
            caller=caller,
            tenancy=tenancy,
            after=after,
            object_types=object_types,
            stopped=stopped,
        )

    # ---- status
    def status(self) -> Status:
        bundle = self.engine.bundle
        return Status(
            serving=bundle is not None,
            name=bundle.name if bundle else "",
            revision=bundle.revision if bundle else "",
            path=str(bundle.path) if bundle else "",
            loaded_at=self._loaded_at,
            tuple_revision=self.engine.tuple_revision,
            rejected=self._rejected,
            quarantine=self.writer.quarantine,
            store=self.store.location if self.store is not None else "",
            follower=self.follower.state if self.follower is not None else None,
            slice=self.engine.tuples.slice.describe(),
        )

    def _scrape_state(self) -> dict[str, object]:
        st = self.status()
        return {
            "cache": self.engine.cache_stats(),
            "bundle_name": st.name,
            "bundle_revision": st.revision,
            "bundle_loaded_at": st.loaded_at,
            "tuple_revision": st.tuple_revision,
            "audit_dropped": self.audit.dropped,
            "audit_subscribers": self.audit.subscriber_count,
            "tuples_quarantined": st.quarantine.count,
            "store": st.follower,
        }


def _stale(have: int, wanted: int) -> Lookup:
    found = Lookup(have)
    found.note(
        f"stale_tuples: asked for tuple revision {wanted}, this sidecar is at {have}: no ids sent"
    )
    return found
