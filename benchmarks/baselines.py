"""Hand-written plain-Python baselines: what a developer would write without a policy engine.

Each takes the same `Request` the engine takes and returns a bool. RBAC and ABAC are precomputed
dict/frozenset lookups; ReBAC is a naive recursive walk over a dict of tuples (top-down, from the
object to the subject). The engine's decision latencies are reported as ratios to these.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from benchmarks.scenarios import Scenario
from pdp.model import RelationTuple, Request

Decide = Callable[[Request], bool]
_NONE: frozenset[str] = frozenset()


def rbac_baseline(scenario: Scenario) -> Decide:
    """(resource type, action) -> the frozenset of roles that grant it, inheritance flattened."""
    data = scenario.data
    closure: dict[str, set[tuple[str, str]]] = {}

    def grants(role: str) -> set[tuple[str, str]]:
        if role not in closure:
            out = set(data["grants"][role])
            for p in data["parents"][role]:
                out |= grants(p)
            closure[role] = out
        return closure[role]

    granting: dict[tuple[str, str], set[str]] = defaultdict(set)
    for role in data["roles"]:
        for pair in grants(role):
            granting[pair].add(role)
    table = {pair: frozenset(roles) for pair, roles in granting.items()}

    def decide(req: Request) -> bool:
        roles = table.get((req.resource.type, req.action), _NONE)
        return not roles.isdisjoint(req.subject.attrs["roles"])  # type: ignore[arg-type]

    return decide


def abac_baseline(scenario: Scenario) -> Decide:
    """A dict from action to its rule, tenant isolation first."""
    del scenario

    def read(s: object, r: object, sid: str) -> bool:
        return s["clearance"] >= r["classification"]  # type: ignore[index,no-any-return]

    def write(s: object, r: object, sid: str) -> bool:
        return not r["archived"] and r["owner"] == sid  # type: ignore[index]

    rules = {"read": read, "update": write, "delete": write}

    def decide(req: Request) -> bool:
        s, r = req.subject.attrs, req.resource.attrs
        if s["tenant"] != r["tenant"]:
            return False
        rule = rules.get(req.action)
        return rule is not None and rule(s, r, req.subject.id)

    return decide


class NaiveWalk:
    """`view = viewer + editor + owner + parent->view`, nested groups, walked top-down."""

    def __init__(self, tuples: Iterable[RelationTuple]) -> None:
        # "document:d1#viewer" -> ["user:u1", "group:g2#member", ...]
        self.index: dict[str, list[str]] = defaultdict(list)
        for t in tuples:
            self.add(t)

    def add(self, t: RelationTuple) -> None:
        sub = f"{t.subject_type}:{t.subject_id}"
        if t.subject_relation:
            sub += f"#{t.subject_relation}"
        items = self.index[f"{t.object_type}:{t.object_id}#{t.relation}"]
        if sub not in items:
            items.append(sub)

    def remove(self, t: RelationTuple) -> None:
        sub = f"{t.subject_type}:{t.subject_id}"
        if t.subject_relation:
            sub += f"#{t.subject_relation}"
        items = self.index.get(f"{t.object_type}:{t.object_id}#{t.relation}")
        if items and sub in items:
            items.remove(sub)

    def holds(self, obj: str, relation: str, user: str, depth: int = 0) -> bool:
        if depth > 25:
            return False
        for sub in self.index.get(f"{obj}#{relation}", ()):
            if sub == user:
                return True
            if "#" in sub:
                target, _, rel = sub.partition("#")
                if self.holds(target, rel, user, depth + 1):
                    return True
        return False

    def view(self, obj: str, user: str, depth: int = 0) -> bool:
        for relation in ("viewer", "editor", "owner"):
            if self.holds(obj, relation, user, depth):
                return True
        return any(self.view(p, user, depth + 1) for p in self.index.get(f"{obj}#parent", ()))

    def __call__(self, req: Request) -> bool:
        if req.action != "read":
            return False
        r, s = req.resource, req.subject
        return self.view(f"{r.type}:{r.id}", f"{s.type}:{s.id}")


def rebac_baseline(scenario: Scenario) -> Decide:
    return NaiveWalk(scenario.tuples)


class SaasBaseline:
    """The SaaS day without a policy engine and without a cache: tenant check, roles, the walk."""

    def __init__(self, tuples: Iterable[RelationTuple]) -> None:
        self.walk = NaiveWalk(tuples)
        self.readers = frozenset({"reader", "writer"})
        self.writes = {("document", "update"), ("folder", "write")}

    def __call__(self, req: Request) -> bool:
        s, r = req.subject.attrs, req.resource.attrs
        if s["tenant"] != r["tenant"]:
            return False
        roles = s["roles"]
        if req.action == "read":
            return not self.readers.isdisjoint(roles) or self.walk(req)  # type: ignore[arg-type]
        return (req.resource.type, req.action) in self.writes and "writer" in roles  # type: ignore[operator]


BASELINES: dict[str, Callable[[Scenario], Decide]] = {
    "rbac": rbac_baseline,
    "abac": abac_baseline,
    "rebac": rebac_baseline,
}
