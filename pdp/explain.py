"""Explain mode: the compiled decision plus the trace of how the reference interpreter reached it.

Explain never reads or fills the decision cache; it is for people asking "why?", not the hot path.
"""

from __future__ import annotations

from dataclasses import replace

from pdp.engine.compiler import Snapshot
from pdp.engine.tuples import TupleStore
from pdp.model import Decision, Reason, Request, TraceStep
from pdp.reference import evaluate


def explain(
    snapshot: Snapshot, store: TupleStore, request: Request, decision: Decision
) -> Decision:
    def lookup(ot: str, oid: str, rel: str) -> list[tuple[str, str, str]]:
        out = []
        for s in sorted(store.subjects.get(f"{ot}:{oid}#{rel}", ())):
            head, _, srel = s.partition("#")
            st, _, sid = head.partition(":")
            out.append((st, sid, srel))
        return out

    outcome = evaluate(snapshot.policy, lookup, request, snapshot.max_depth)
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
    return replace(decision, trace=tuple(trace), cached=False)
