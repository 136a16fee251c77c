"""The compiled decision plus the trace of how the reference interpreter reached it.

Explain never reads or fills the decision cache; it is for people asking "why?", not the hot path.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from pdp.engine import SnapshotView
from pdp.explain.reference import evaluate
from pdp.model import Decision, Reason, Request, TraceStep

# Decisions taken before any policy is read: there is nothing to trace.
_UNTRACED = frozenset({Reason.NO_BUNDLE, Reason.STALE_TUPLES})


class Pinnable(Protocol):
    def pin(self) -> SnapshotView: ...


def explain(
    engine: Pinnable,
    request: Request,
    *,
    min_tuple_revision: int = 0,
    mask: frozenset[str] = frozenset(),
) -> Decision:
    """Decide `request` afresh on the engine's current snapshot (or a pinned view's) and attach
    the reference interpreter's trace, which must reach the same decision. The values each
    condition compared are in the trace; those of the attributes `mask` names (`ssn`,
    `subject.email`: the audit's mask setting) are shown as `***`."""
    view = engine.pin()
    decision = view.check(request, min_tuple_revision=min_tuple_revision, cached=False)
    snapshot = view.snapshot
    if snapshot is None or decision.reason in _UNTRACED:
        return decision
    outcome = evaluate(snapshot.policy, view.subjects_of, request, snapshot.max_depth, mask=mask)
    trace = list(outcome.trace)
    if decision.reason is Reason.FAIL_OPEN:
        trace.append(
            TraceStep(
                "note",
                "fail_open",
                "granted",
                "the bundle lets this action fail open on a relation depth failure",
            )
        )
    elif (outcome.effect, outcome.rule_ids) != (decision.effect, decision.rule_ids):
        # Should never happen (the differential tests guard it); if it does, say so plainly.
        trace.append(
            TraceStep("note", "mismatch", "error", "the trace disagrees with the compiled decision")
        )
    trace.extend(TraceStep("error", "error", "error", e) for e in decision.errors)
    return replace(decision, trace=tuple(trace))
