"""Which objects a subject holds a permission on, computed backwards from the subject, for the
permissions where that is exactly Check's answer: unions (`+`) of direct relations and arrows,
less direct relations (`(viewer + parent->view) - blocked`).

`viewer + editor + owner + parent->view`: the objects whose `viewer`, `editor` or `owner` holds
the subject or a group it is in (pdp.engine.membership), then, round by round, the objects whose
`parent` is one found so far, until a round finds nothing new. Nothing but a chain of tuples can
grant through a union, so the set is exact, and a lookup needs no Check per id.

`allowed_ids` answers None (the caller then confirms every candidate with Check) whenever that
would not hold: an intersection (`&`), an exclusion of anything but direct relations or below a
union, a relation admitting a userset that is not a group, a forbid, a role, a permit on
anything but `subject has P on resource`, fail-open, a sliced store, a cycle of arrows across
types, or chains long enough that Check's depth limit could decide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pdp.engine.engine import SnapshotView
from pdp.engine.membership import MembershipIndex
from pdp.engine.tuples import TupleStore
from pdp.model import Entity
from policy_lang import ast
from policy_lang.checker import CheckedPolicy


def allowed_ids(
    view: SnapshotView, subject: Entity, action: str, resource_type: str
) -> set[str] | None:
    """The ids of `resource_type` Check allows `subject` to `action`, or None when only Check
    itself can say (see the module docstring)."""
    snapshot, bundle = view.snapshot, view.bundle
    store = view.tuples
    index = store.membership
    if snapshot is None or bundle is None or index is None:
        return None
    policy = snapshot.policy
    if (resource_type, action) in bundle.settings.fail_open:
        return None
    if action not in snapshot.by_type.get(resource_type, {}):
        return None
    permissions = _permitting_relations(policy, resource_type, action)
    if permissions is None:
        return None
    walk = _Reach(policy, store, index, f"{subject.type}:{subject.id}", subject.type)
    out: set[str] = set()
    for permission in permissions:
        found = walk.holders(resource_type, permission)
        if found is None:
            return None
        out |= found
    # Every id was reached in at most `rounds` arrow hops, each by a group at most
    # `deepest + 1` userset hops deep: within the depth limit, Check grants each one.
    if walk.rounds + index.deepest + 1 >= snapshot.max_depth:
        return None
    return out


def candidate_ids(
    view: SnapshotView, subject: Entity, action: str, resource_type: str
) -> set[str] | None:
    """A superset of the ids Check allows, for Check to confirm one by one: every permit on
    (type, action) needs the subject to hold some relation on the resource, and each relation's
    holders can be over-approximated (`a - b` and `a & b` by the holders of `a`, the depth limit
    ignored). Forbids only deny, so they do not matter here. None: no such superset."""
    snapshot = view.snapshot
    index = view.tuples.membership
    if snapshot is None or index is None:
        return None
    policy = snapshot.policy
    if policy.granting_roles.get((resource_type, action)):
        return None
    walk = _Reach(
        policy, view.tuples, index, f"{subject.type}:{subject.id}", subject.type, exact=False
    )
    out: set[str] = set()
    for rule in _rules_on(policy, resource_type, action):
        if rule.effect != "permit":
            continue
        needed = _needed_relations(rule.condition) if rule.condition is not None else None
        if needed is None:
            return None
        for permission in needed:
            found = walk.holders(resource_type, permission)
            if found is None:
                return None
            out |= found
    return out


def _needed_relations(expr: ast.Expr) -> list[str] | None:
    """Relations on the resource one of which the subject must hold for `expr` to be true."""
    if isinstance(expr, ast.RelationCheck):
        return [expr.relation] if expr.entity.kind == "resource" else None
    if isinstance(expr, ast.And):
        left = _needed_relations(expr.left)
        return left if left is not None else _needed_relations(expr.right)
    if isinstance(expr, ast.Or):
        left, right = _needed_relations(expr.left), _needed_relations(expr.right)
        return left + right if left is not None and right is not None else None
    return None


def _rules_on(policy: CheckedPolicy, type_name: str, action: str) -> list[ast.RuleDecl]:
    return [
        rule
        for rule in policy.rules
        if (rule.types is None or type_name in rule.types)
        and (rule.actions is None or action in rule.actions)
    ]


def _permitting_relations(policy: CheckedPolicy, type_name: str, action: str) -> list[str] | None:
    """The P of every `permit ...: action on type when subject has P on resource`, or None if
    anything else can decide (type, action): another permit, any forbid, a role."""
    if policy.granting_roles.get((type_name, action)):
        return None
    out = []
    for rule in _rules_on(policy, type_name, action):
        condition = rule.condition
        if (
            rule.effect != "permit"
            or not isinstance(condition, ast.RelationCheck)
            or condition.entity.kind != "resource"
        ):
            return None
        out.append(condition.relation)
    return out


class _Reach:
    """One subject's holders of (type, permission), memoised, each with the most arrow hops
    any of them is from the objects that hold the subject directly."""

    def __init__(
        self,
        policy: CheckedPolicy,
        store: TupleStore,
        index: MembershipIndex,
        subject: str,
        subject_type: str,
        *,
        exact: bool = True,
    ) -> None:
        self._policy = policy
        self._exact = exact
        self._store = store
        self._subject = subject
        # What a relation may hold the subject as: itself, its type's wildcard, or a group key
        # it is in (also through the wildcard).
        self._wildcard = f"{subject_type}:*"
        self._groups = index.of.get(subject, frozenset()) | index.of.get(
            self._wildcard, frozenset()
        )
        # (type, permission) -> (ids, arrow hops); None while being computed (a cycle of
        # arrows between types: left to Check) or when not a union.
        self._memo: dict[tuple[str, str], tuple[set[str], int] | None] = {}
        self.rounds = 0

    def holders(self, type_name: str, permission: str) -> set[str] | None:
        found = self._holders(type_name, permission)
        if found is None:
            return None
        self.rounds = max(self.rounds, found[1])
        return found[0]

    def _holders(self, type_name: str, permission: str) -> tuple[set[str], int] | None:
        key = (type_name, permission)
        if key not in self._memo:
            self._memo[key] = None
            self._memo[key] = self._compute(type_name, permission)
        return self._memo[key]

    def _compute(self, type_name: str, permission: str) -> tuple[set[str], int] | None:
        """The objects of the type whose direct relations hold the subject, and those whose
        arrow relation names an object of another type holding `computed` (one hop more); then,
        round by round, those whose arrow names one found so far (`parent->view` in `view`)."""
        parts = _union_parts(self._policy, type_name, permission, exact=self._exact)
        if parts is None:
            return None
        blocked = self._direct(type_name, parts.excluded)
        found = self._direct(type_name, parts.relations)
        hops = 0
        for sub in parts.subs:
            held = self._holders(type_name, sub)
            if held is None:
                return None
            found |= held[0]
            hops = max(hops, held[1])
        recursive = []
        for tupleset, computed in parts.arrows:
            for target_type in self._arrow_targets(type_name, tupleset):
                if target_type == type_name and computed == permission:
                    recursive.append(tupleset)
                    continue
                held = self._holders(target_type, computed)
                if held is None:
                    return None
                found |= self._pointing_at(type_name, tupleset, target_type, held[0])
                hops = max(hops, held[1] + 1)
        found -= blocked
        frontier = found
        while recursive and frontier:
            new: set[str] = set()
            for tupleset in recursive:
                new |= self._pointing_at(type_name, tupleset, type_name, frontier)
            frontier = new - found - blocked
            if frontier:
                found |= frontier
                hops += 1
        return found, hops

    def _direct(self, type_name: str, relations: Iterable[str]) -> set[str]:
        found: set[str] = set()
        types = self._policy.types[type_name]
        prefix = f"{type_name}:"
        cut = len(prefix)
        for relation in relations:
            decl = types.relations[relation]
            suffix = f"#{relation}"
            admitted = {f"{r.type}#{r.relation}" for r in decl.subjects if r.relation}
            wild = {f"{r.type}:*" for r in decl.subjects if r.wildcard}
            holding = [self._subject, *([self._wildcard] if self._wildcard in wild else [])]
            holding += [g for g in self._groups if _group_ref(g) in admitted]
            for key in holding:
                for okey in self._store.objects_with(key):
                    if okey.startswith(prefix) and okey.endswith(suffix):
                        found.add(okey[cut : -len(suffix)])
        return found

    def _arrow_targets(self, type_name: str, tupleset: str) -> set[str]:
        decl = self._policy.types[type_name].relations.get(tupleset)
        if decl is None:
            return set()
        return {r.type for r in decl.subjects if not r.wildcard}

    def _pointing_at(
        self, type_name: str, tupleset: str, target_type: str, targets: set[str]
    ) -> set[str]:
        """Ids of `type_name` whose `tupleset` holds `target_type:t` or a userset `...:t#rel`."""
        decl = self._policy.types[type_name].relations[tupleset]
        userset_relations = [
            r.relation for r in decl.subjects if r.type == target_type and r.relation
        ]
        direct = any(r.type == target_type and not r.relation for r in decl.subjects)
        prefix = f"{type_name}:"
        suffix = f"#{tupleset}"
        cut = len(prefix)
        out: set[str] = set()
        for t in targets:
            base = f"{target_type}:{t}"
            keys = [base] if direct else []
            keys += [f"{base}#{rel}" for rel in userset_relations]
            for key in keys:
                for okey in self._store.objects_with(key):
                    if okey.startswith(prefix) and okey.endswith(suffix):
                        out.add(okey[cut : -len(suffix)])
        return out


def _group_ref(group_key: str) -> str:
    """`group:eng#member` -> `group#member`."""
    return f"{group_key[: group_key.find(':')]}#{group_key[group_key.rfind('#') + 1 :]}"


@dataclass(frozen=True)
class _Parts:
    """What a permission is on one object: the union of its direct `relations`, its `arrows`
    (tupleset, computed) and the holders of other permissions of the type (`subs`), less the
    holders of the direct relations in `excluded` (`(...) - blocked`)."""

    relations: frozenset[str] = frozenset()
    arrows: frozenset[tuple[str, str]] = frozenset()
    subs: frozenset[str] = frozenset()
    excluded: frozenset[str] = frozenset()


def _union_parts(
    policy: CheckedPolicy, type_name: str, name: str, *, exact: bool = True
) -> _Parts | None:
    """`type_name#name` as _Parts; None if it is not a union of direct relations, arrows and
    such permissions, less direct relations only, or reads a relation admitting a userset other
    than a group. Not `exact`: parts that hold whenever `name` does (`a - b`, `a & b` as `a`)."""
    info = policy.types.get(type_name)
    if info is None:
        return _Parts()
    if name in info.relations:
        decl = info.relations[name]
        has_usersets = any(r.relation for r in decl.subjects)
        if has_usersets and (type_name, name) not in policy.membership_relations:
            return None
        return _Parts(relations=frozenset({name}))
    permission = info.permissions.get(name)
    if permission is None:
        return _Parts()
    expr = permission.expr
    excluded: set[str] = set()
    if isinstance(expr, ast.Exclusion):
        first, *rest = ast.userset_operands(expr)
        if exact:
            for operand in rest:
                # Only direct relations: their Check cannot hit the depth limit within the
                # bound allowed_ids keeps, so "not blocked" is exactly what Check finds.
                minus = _operand_parts(policy, type_name, operand, exact=True)
                if minus is None or minus.arrows or minus.subs or minus.excluded:
                    return None
                excluded |= minus.relations
        expr = first
    parts = _operand_parts(policy, type_name, expr, exact=exact)
    if parts is None:
        return None
    return _Parts(parts.relations, parts.arrows, parts.subs, frozenset(excluded))


def _operand_parts(
    policy: CheckedPolicy, type_name: str, expr: ast.UsersetExpr, *, exact: bool
) -> _Parts | None:
    """The union `expr` is of, a permission with its own exclusion kept whole (a sub)."""
    relations: set[str] = set()
    arrows: set[tuple[str, str]] = set()
    subs: set[str] = set()
    todo: list[ast.UsersetExpr] = [expr]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Union):
            todo.extend(ast.userset_operands(node))
        elif isinstance(node, ast.TupleToUserset):
            arrows.add((node.tupleset, node.computed))
        elif isinstance(node, ast.Computed):
            parts = _union_parts(policy, type_name, node.relation, exact=exact)
            if parts is None:
                return None
            if parts.excluded:
                subs.add(node.relation)
                continue
            relations |= parts.relations
            arrows |= parts.arrows
            subs |= parts.subs
        elif exact:  # `&`, or `-` below a union: holding a part does not mean holding the whole
            return None
        else:  # but whoever holds the whole holds its first part
            todo.append(ast.userset_operands(node)[0])
    return _Parts(frozenset(relations), frozenset(arrows), frozenset(subs))
