"""An explain trace as an indented tree a person reads (`pdp check --explain`).

The trace is written children first (pdp.model.TraceStep): a step's children are the steps just
before it one level deeper. Here it is turned round, each step above its children.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pdp.model import Decision, Request, TraceStep


@dataclass(slots=True)
class Node:
    step: TraceStep
    children: list[Node] = field(default_factory=list)


def tree(trace: tuple[TraceStep, ...] | list[TraceStep]) -> list[Node]:
    """The roots of the trace's tree, in order; each node's children in the order recorded."""
    pending: list[Node] = []
    for step in trace:
        node = Node(step)
        # Unclaimed steps deeper than this one, at the end of the list, are its children.
        start = len(pending)
        while start > 0 and pending[start - 1].step.depth > step.depth:
            start -= 1
        node.children, pending[start:] = pending[start:], []
        pending.append(node)
    return pending


def render(decision: Decision, request: Request) -> str:
    """The decision, then each rule, role and binding considered, with their conditions, the
    values each compared and the relation hops that granted."""
    by = f" by {', '.join(decision.rule_ids)}" if decision.rule_ids else ""
    hidden = " (shown as not found)" if decision.not_found else ""
    lines = [
        f"{request.subject} {request.action} {request.resource}",
        f"{decision.effect.value.upper()}: {decision.reason.value}{by}{hidden}",
    ]
    for node in tree(decision.trace or ()):
        _lines(node, 1, lines)
    return "\n".join(lines) + "\n"


def _lines(node: Node, level: int, out: list[str]) -> None:
    step, pad = node.step, "  " * level
    outcome = step.outcome.replace("_", " ")
    # A condition is its own name (`resource.tenant != subject.tenant: true`).
    head = (
        f"{step.id}: {outcome}" if step.kind == "condition" else f"{step.kind} {step.id}: {outcome}"
    )
    out.append(pad + head)
    if step.detail:
        out.append(f"{pad}    {step.detail}")
    for name, value in step.values:
        out.append(f"{pad}    {name} = {value}")
    for child in node.children:
        _lines(child, level + 1, out)
