"""A deliberately simple interpreter that walks the AST for every request.

It is the specification the compiled engine is tested against (tests/engine/test_differential.py),
and it powers explain mode, where recording each step matters more than speed. Checks never use it.

What it shares with the compiled path, and why that is safe: only the checked policy's static
facts (`CheckedPolicy.role_includes`, `role_scopes`, `granting_roles`, `attributes` and
`PYTHON_TYPES`) and `read_paths`, the list of attributes an expression mentions. They are pure
functions of the policy text, computed once by the checker, independent of any request or tuple,
and tested on their own (tests/language/test_facts.py) and end to end by the conformance corpus.
Everything that depends on a request it duplicates on purpose, so that a bug there cannot hide
by being the same in both: which rules apply, their order, condition evaluation, who holds a role
(bindings), scopes, the relation walk with its depth limit and cycle cut, and error handling.
It imports nothing of the compiled engine: no generated code, no relation graph, no role evaluator.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pdp.engine.conditions import read_paths
from pdp.model import Effect, Entity, Reason, RelationTuple, Request, TraceStep, Value
from policy_lang import ast
from policy_lang.checker import PYTHON_TYPES, CheckedPolicy
from policy_lang.formatter import expr

# (object type, object id, relation) -> the subjects stored there, as (type, id, relation)
Lookup = Callable[[str, str, str], Iterable[tuple[str, str, str]]]


class _Depth(Exception):
    pass


class _Error(Exception):
    pass


@dataclass(slots=True)
class Outcome:
    effect: Effect
    reason: Reason
    rule_ids: tuple[str, ...]
    not_found: bool = False
    trace: list[TraceStep] = field(default_factory=list)
    # The permission nodes (`ast.UsersetExpr`, by id) whose evaluation was entered: what policy
    # test coverage counts as a permission branch reached (pdp.explain.coverage).
    entered: set[int] = field(default_factory=set)


def naive_lookup(tuples: Iterable[RelationTuple]) -> Lookup:
    """A lookup that scans a plain list: slow, obviously right."""
    items = list(tuples)

    def lookup(ot: str, oid: str, rel: str) -> list[tuple[str, str, str]]:
        return [
            (t.subject_type, t.subject_id, t.subject_relation)
            for t in items
            if (t.object_type, t.object_id, t.relation) == (ot, oid, rel)
        ]

    return lookup


def evaluate(
    policy: CheckedPolicy,
    lookup: Lookup,
    request: Request,
    max_depth: int = 25,
    *,
    mask: frozenset[str] = frozenset(),
) -> Outcome:
    """Decide `request` by walking the policy. `mask`: attribute names (`ssn`, `subject.email`)
    whose values the trace shows as `***`, as the audit log does."""
    return _Interpreter(policy, lookup, request, max_depth, mask).run()


MASKED = "***"
MISSING = "(missing)"


class _Interpreter:
    def __init__(
        self,
        policy: CheckedPolicy,
        lookup: Lookup,
        request: Request,
        max_depth: int,
        mask: frozenset[str] = frozenset(),
    ) -> None:
        self.p = policy
        self.lookup = lookup
        self.req = request
        self.max_depth = max_depth
        self.mask = mask
        self.trace: list[TraceStep] = []
        self.depth = 0  # the trace tree's level of the steps being recorded
        self.quiet = False  # reading values to show them: record nothing
        self.entered: set[int] = set()

    def step(
        self,
        kind: str,
        id: str,
        outcome: str,
        detail: str = "",
        values: tuple[tuple[str, str], ...] = (),
    ) -> None:
        if not self.quiet:
            self.trace.append(TraceStep(kind, id, outcome, detail, self.depth, values))

    def nested_cond(self, e: ast.Expr) -> bool:
        return self.nested(lambda: self.cond(e))

    def nested(self, fn: Callable[[], bool]) -> bool:
        """Run `fn` one level deeper in the trace tree (its steps are the children of the step
        recorded after it)."""
        self.depth += 1
        try:
            return fn()
        finally:
            self.depth -= 1

    def run(self) -> Outcome:
        req, p = self.req, self.p
        rtype, action = req.resource.type, req.action
        if rtype not in p.types or action not in p.types[rtype].actions:
            self.step(
                "note", "target", "no_rules", f"no rule or role covers `{action}` on `{rtype}`"
            )
            return self.outcome(Effect.DENY, Reason.NOT_PERMITTED)
        rules = [r for r in p.rules if _targets(r.actions, r.types, action, rtype)]
        granting = p.granting_roles.get((rtype, action), ())
        bad = self._type_errors(rules, granting)
        if bad:
            self.step("error", "request", "error", bad)
            return self.outcome(Effect.DENY, Reason.EVALUATION_ERROR)
        forbidden = self._forbids(rules)
        if forbidden is not None:
            return forbidden
        errors: list[tuple[str, bool]] = []
        permitted = self._permits(rules, errors) or self._roles(granting, errors)
        if permitted is not None:
            return permitted
        if errors:
            depth = any(d for _, d in errors)
            reason = Reason.DEPTH_LIMIT if depth else Reason.EVALUATION_ERROR
            return self.outcome(Effect.DENY, reason, tuple(n for n, _ in errors))
        self.step("note", "default", "deny", "nothing permits: deny by default")
        return self.outcome(Effect.DENY, Reason.NOT_PERMITTED)

    def outcome(
        self, effect: Effect, reason: Reason, rule_ids: tuple[str, ...] = (), nf: bool = False
    ) -> Outcome:
        return Outcome(effect, reason, rule_ids, nf, self.trace, self.entered)

    def _forbids(self, rules: list[ast.RuleDecl]) -> Outcome | None:
        """Forbids, not-found ones first, then by name: the first matching or erroring denies."""
        forbids = sorted(
            (r for r in rules if r.effect == "forbid"), key=lambda r: (not r.not_found, r.name)
        )
        for rule in forbids:
            try:
                matched = self._rule_matches(rule)
            except (_Depth, _Error) as exc:
                self.step("forbid", rule.name, "error", f"{exc}; an erroring forbid denies")
                reason = Reason.DEPTH_LIMIT if isinstance(exc, _Depth) else Reason.EVALUATION_ERROR
                return self.outcome(Effect.DENY, reason, (rule.name,), rule.not_found)
            self.step("forbid", rule.name, "matched" if matched else "not_matched", _where(rule))
            if matched:
                return self.outcome(Effect.DENY, Reason.FORBIDDEN, (rule.name,), rule.not_found)
        return None

    def _permits(self, rules: list[ast.RuleDecl], errors: list[tuple[str, bool]]) -> Outcome | None:
        """Permits by name: the first matching allows; an erroring one is noted and skipped."""
        for rule in (r for r in rules if r.effect == "permit"):
            try:
                matched = self._rule_matches(rule)
            except (_Depth, _Error) as exc:
                self.step("permit", rule.name, "error", f"{exc}; an erroring permit grants nothing")
                errors.append((rule.name, isinstance(exc, _Depth)))
                continue
            self.step("permit", rule.name, "matched" if matched else "not_matched", _where(rule))
            if matched:
                return self.outcome(Effect.ALLOW, Reason.PERMITTED, (rule.name,))
        return None

    def _rule_matches(self, rule: ast.RuleDecl) -> bool:
        return rule.condition is None or self.nested_cond(rule.condition)

    def _roles(self, granting: tuple[str, ...], errors: list[tuple[str, bool]]) -> Outcome | None:
        """The first granting role in name order that the subject holds within its scope."""
        if not granting:
            return None
        held = self.held_roles(set(granting), errors)
        for role in granting:
            scopes = self.p.role_scopes[role]
            if role in held and self.in_scope(role):
                self.step(
                    "role",
                    role,
                    "granted",
                    f"grants `{self.req.action}` on `{self.req.resource.type}`",
                )
                return self.outcome(Effect.ALLOW, Reason.PERMITTED, (f"role:{role}",))
            self.step(
                "role",
                role,
                "not_held" if role not in held else "out_of_scope",
                ", ".join(scopes),
            )
        return None

    # ---- roles
    def in_scope(self, role: str) -> bool:
        subject, resource = self.req.subject.attrs, self.req.resource.attrs
        return all(
            subject.get(s) is not None and subject.get(s) == resource.get(s)
            for s in self.p.role_scopes[role]
        )

    def held_roles(self, wanted: set[str], errors: list[tuple[str, bool]]) -> set[str]:
        held: set[str] = set()
        for b in self.p.bindings:
            if isinstance(b, ast.BindFrom):
                values = self._attrs(b.source.root).get(b.source.name)
                if values:
                    held |= set(values) & wanted  # type: ignore[arg-type]
            elif set(b.roles) & wanted:
                label = "bind:" + ",".join(sorted(b.roles))
                try:
                    bound = self.nested_cond(b.condition)
                except (_Depth, _Error) as exc:
                    self.step("binding", label, "error", f"{exc}; this binding grants no role")
                    errors.append((label, isinstance(exc, _Depth)))
                    continue
                self.step("binding", label, "held" if bound else "not_held", expr(b.condition))
                if bound:
                    held |= set(b.roles) & wanted
        return held

    # ---- conditions
    def _attrs(self, root: str) -> Mapping[str, Value]:
        if root == "subject":
            return self.req.subject.attrs
        if root == "resource":
            return self.req.resource.attrs
        return self.req.context

    def _type_errors(self, rules: list[ast.RuleDecl], granting: tuple[str, ...]) -> str:
        paths: list[ast.Path] = []
        for r in rules:
            if r.condition is not None:
                paths.extend(read_paths(r.condition))
        for b in self.p.bindings:
            paths.extend([b.source] if isinstance(b, ast.BindFrom) else read_paths(b.condition))
        for role in granting:
            for s in self.p.role_scopes[role]:
                paths += [ast.Path("subject", s), ast.Path("resource", s)]
        for path in paths:
            if path.root != "context" and path.name in ("id", "type"):
                continue
            value = self._attrs(path.root).get(path.name)
            declared = self.p.attributes.declared(path.root, path.name, self.req.resource.type)
            if (
                value is not None
                and declared is not None
                and type(value) is not PYTHON_TYPES[declared]
            ):
                return f"`{path}` must be {declared}"
        return ""

    def value(self, e: ast.Expr) -> object:
        if isinstance(e, ast.Literal):
            return e.value
        if isinstance(e, ast.Path):
            entity = self.req.subject if e.root == "subject" else self.req.resource
            if e.root != "context" and e.name == "id":
                return entity.id
            if e.root != "context" and e.name == "type":
                return entity.type
            attrs = self._attrs(e.root)
            if e.name not in attrs:
                raise _Error(f"missing attribute `{e}`")
            return attrs[e.name]
        if isinstance(e, ast.MethodCall):
            target = self.value(e.target)
            return _METHODS[e.method](target, *(self.value(a) for a in e.args))
        return self.cond(e)

    def cond(self, e: ast.Expr) -> bool:
        if isinstance(e, ast.And):  # a run `a and b and c` in a loop: one frame, however long
            return all(self.cond(x) for x in ast.operands(e))
        if isinstance(e, ast.Or):
            return any(self.cond(x) for x in ast.operands(e))
        if isinstance(e, ast.Not):
            return not self.cond(e.operand)
        return self.leaf(e)

    def leaf(self, e: ast.Expr) -> bool:
        """A condition with no `and`, `or`, `not` above it: traced with the values it read."""
        if self.quiet:
            return self._leaf(e)
        try:
            result = self.nested(lambda: self._leaf(e))
        except (_Depth, _Error) as exc:
            self.step("condition", expr(e), "error", str(exc), self.values(e))
            raise
        self.step("condition", expr(e), "true" if result else "false", "", self.values(e))
        return result

    def values(self, e: ast.Expr) -> tuple[tuple[str, str], ...]:
        """Each attribute `e` reads and each method result it computes, in source order, once."""
        out: dict[str, str] = {}
        nodes = list(ast.walk(e))
        if any(isinstance(node, ast.HasRole) for node in nodes):
            # Who holds a role: the attributes roles are bound from (`bind roles from ...`).
            nodes += [b.source for b in self.p.bindings if isinstance(b, ast.BindFrom)]
        for node in nodes:
            if isinstance(node, ast.Path | ast.MethodCall):
                text = expr(node)
                if text in out:
                    continue
                if any(self.masked(p) for p in read_paths(node)):
                    out[text] = MASKED
                    continue
                was, self.quiet = self.quiet, True
                try:
                    out[text] = show(self.value(node))
                except Exception:  # shown, not raised: the leaf itself reported the error
                    out[text] = MISSING
                finally:
                    self.quiet = was
        return tuple(out.items())

    def masked(self, path: ast.Path) -> bool:
        return path.name in self.mask or f"{path.root}.{path.name}" in self.mask

    def _leaf(self, e: ast.Expr) -> bool:
        if isinstance(e, ast.Present):
            p = e.path
            return (p.root != "context" and p.name in ("id", "type")) or p.name in self._attrs(
                p.root
            )
        if isinstance(e, ast.Compare):
            return _COMPARE[e.op](self.value(e.left), self.value(e.right))
        if isinstance(e, ast.In):
            elem, coll = self.value(e.element), self.value(e.collection)
            return elem in coll  # type: ignore[operator]
        if isinstance(e, ast.RelationCheck):
            return self.relation_check(e)
        if isinstance(e, ast.HasRole):
            return self.has_role(e.role)
        return bool(self.value(e))

    def relation_check(self, e: ast.RelationCheck) -> bool:
        ent = e.entity
        if ent.kind == "resource":
            ot, oid = self.req.resource.type, self.req.resource.id
        elif ent.kind == "subject":
            ot, oid = self.req.subject.type, self.req.subject.id
        else:
            assert ent.id is not None
            ot, oid = ent.type, self.value(ent.id)  # type: ignore[assignment]
            if not isinstance(oid, str):
                raise _Error("a relation check needs a string id")
        subject = self.req.subject
        try:
            granted = self.relation(ot, oid, e.relation, subject, 0, frozenset())
        except RecursionError:  # as the compiled walk: out of stack is a depth limit
            raise _Depth(f"relation walk out of stack at {ot}:{oid}#{e.relation}") from None
        self.step(
            "relation",
            f"{ot}:{oid}#{e.relation}",
            "granted" if granted else "not_granted",
            f"for {subject}",
        )
        return granted

    def has_role(self, role: str) -> bool:
        """`subject has role R`: R or a role extending it, held within its scope. A binding error
        with nothing held at all leaves the question unanswered: the condition errs."""
        errors: list[tuple[str, bool]] = []
        held = self.held_roles(set(self.p.role_includes.get(role, ())), errors)
        if errors and not held:
            raise _Error("role binding error")
        return any(self.in_scope(r) for r in held)

    # ---- relations, walked naively
    def relation(
        self, ot: str, oid: str, rel: str, subject: Entity, depth: int, path: frozenset[str]
    ) -> bool:
        info = self.p.types.get(ot)
        if info is None:
            return False
        if rel in info.permissions:
            return self.userset(ot, oid, info.permissions[rel].expr, subject, depth, path)
        decl = info.relations.get(rel)
        if decl is None:
            return False
        if (ot, rel) in self.p.membership_relations:
            return self.membership(ot, oid, rel, subject, depth)
        stored = list(self.lookup(ot, oid, rel))
        for st, sid, srel in stored:
            if (
                not srel
                and st == subject.type
                and (
                    sid == subject.id
                    or (sid == "*" and any(r.wildcard and r.type == st for r in decl.subjects))
                )
            ):
                self.step("relation", f"{ot}:{oid}#{rel}", "granted", f"holds {st}:{sid}")
                return True
        usersets = sorted(
            (st, sid, srel)
            for st, sid, srel in stored
            if srel and any(r.type == st and r.relation == srel for r in decl.subjects)
        )
        if not usersets:
            return False
        if depth >= self.max_depth:
            raise _Depth(f"relation depth limit at {ot}:{oid}#{rel}")
        return self._through_usersets(f"{ot}:{oid}#{rel}", usersets, subject, depth, path)

    def membership(self, ot: str, oid: str, rel: str, subject: Entity, depth: int) -> bool:
        """A relation whose usersets are all groups (`viewer: user | group#member`) holds the
        subject if it, or a group nested in it to any depth, holds the subject: the fewest
        userset hops down to one that does, counted level by level (a cycle adds nothing).
        Within what is left of the depth budget it grants; beyond it, it is a depth limit; no
        such group at all, no grant (however deep the groups go)."""
        level = [(ot, oid, rel)]
        seen = set(level)
        hops = 0
        while level:
            below = []
            for t, i, r in level:
                decl = self.p.types[t].relations[r]
                for st, sid, srel in self.lookup(t, i, r):
                    if srel:
                        if (st, sid, srel) not in seen and any(
                            s.type == st and s.relation == srel for s in decl.subjects
                        ):
                            seen.add((st, sid, srel))
                            below.append((st, sid, srel))
                    elif st == subject.type and (
                        sid == subject.id
                        or (sid == "*" and any(s.wildcard and s.type == st for s in decl.subjects))
                    ):
                        if hops > self.max_depth - depth:
                            raise _Depth(f"relation depth limit at {ot}:{oid}#{rel}")
                        self.step(
                            "relation",
                            f"{ot}:{oid}#{rel}",
                            "granted",
                            f"holds {st}:{sid} via {t}:{i}#{r}, {hops} userset hop(s) down",
                        )
                        return True
            level = below
            hops += 1
        return False

    def _through_usersets(
        self,
        key: str,
        usersets: list[tuple[str, str, str]],
        subject: Entity,
        depth: int,
        path: frozenset[str],
    ) -> bool:
        """Any userset that grants grants; else one that hit the depth limit raises."""
        limited = False
        for st, sid, srel in usersets:
            if f"{st}:{sid}#{srel}" in path | {key}:
                continue
            try:
                if self.relation(st, sid, srel, subject, depth + 1, path | {key}):
                    self.step("relation", key, "granted", f"via {st}:{sid}#{srel}")
                    return True
            except _Depth:
                limited = True
        if limited:
            raise _Depth(f"relation depth limit at {key}")
        return False

    def userset(
        self,
        ot: str,
        oid: str,
        e: ast.UsersetExpr,
        subject: Entity,
        depth: int,
        path: frozenset[str],
    ) -> bool:
        self.entered.add(id(e))
        if isinstance(e, ast.Computed):
            return self.relation(ot, oid, e.relation, subject, depth, path)
        if isinstance(e, ast.TupleToUserset):
            return self.arrow(ot, oid, e, subject, depth, path)
        # A run of one operator (`a + b + c`) in a loop, left to right, as nested pairs would go.
        parts = ast.userset_operands(e)
        if isinstance(e, ast.Union):
            # Any operand that grants grants; else an operand that hit the depth limit raises.
            hit_limit: _Depth | None = None
            for part in parts:
                try:
                    if self.userset(ot, oid, part, subject, depth, path):
                        return True
                except _Depth as exc:
                    hit_limit = exc
            if hit_limit is not None:
                raise hit_limit
            return False
        if isinstance(e, ast.Intersection):
            return all(self.userset(ot, oid, part, subject, depth, path) for part in parts)
        return self.userset(ot, oid, parts[0], subject, depth, path) and not any(
            self.userset(ot, oid, part, subject, depth, path) for part in parts[1:]
        )

    def arrow(
        self,
        ot: str,
        oid: str,
        e: ast.TupleToUserset,
        subject: Entity,
        depth: int,
        path: frozenset[str],
    ) -> bool:
        """`tupleset->computed`: hop to the object of each subject stored in the tupleset and ask
        `computed` there. As Zanzibar's tuple-to-userset and SpiceDB's arrow, a userset subject
        (`folder:f2#parent`) names its object (`folder:f2`), its relation ignored. (A wildcard
        `user:*` never gets here: the checker refuses an arrow over a relation admitting one.)"""
        targets = {(st, sid) for st, sid, _ in self.lookup(ot, oid, e.tupleset)}
        if not targets:
            return False
        if depth >= self.max_depth:
            raise _Depth(f"relation depth limit at {ot}:{oid}#{e.tupleset}")
        marker = f"{ot}:{oid}#{e.tupleset}->{e.computed}"
        if marker in path:
            return False
        limited = False
        for st, sid in sorted(targets):
            try:
                if self.relation(st, sid, e.computed, subject, depth + 1, path | {marker}):
                    self.step(
                        "relation",
                        f"{ot}:{oid}#{e.tupleset}",
                        "granted",
                        f"via {st}:{sid}#{e.computed}",
                    )
                    return True
            except _Depth:
                limited = True
        if limited:
            raise _Depth(f"relation depth limit at {ot}:{oid}#{e.tupleset}")
        return False


_METHODS: dict[str, Callable[..., object]] = {
    "contains": lambda target, item: item in target,
    "contains_any": lambda target, other: bool(set(target) & set(other)),
    "contains_all": lambda target, other: set(other) <= set(target),
    "size": len,
    "starts_with": lambda target, prefix: target.startswith(prefix),
    "ends_with": lambda target, suffix: target.endswith(suffix),
    "lower": lambda target: target.lower(),
}

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda x, y: x == y,
    "!=": lambda x, y: x != y,
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
}


def show(value: object) -> str:
    """A request value as policy text: `"acme"`, `3`, `true`, `["a", "b"]`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, frozenset | set):
        return "[" + ", ".join(show(v) for v in sorted(value, key=repr)) + "]"
    return str(value)


def _targets(
    actions: tuple[str, ...] | None, types: tuple[str, ...] | None, action: str, rtype: str
) -> bool:
    return (actions is None or action in actions) and (types is None or rtype in types)


def _where(rule: ast.RuleDecl) -> str:
    at = f"{rule.loc}: " if rule.loc.line else ""
    return at + ("when " + expr(rule.condition) if rule.condition is not None else "unconditional")
