"""Relation checks compiled from a schema: one function per (type, relation or permission).

A check walks tuples through usersets (`group#member`), rewrites (`+`, `&`, `-`) and hops
(`parent->view`). It is depth-bounded (DepthLimitExceeded, never a RecursionError) and cycle-safe:
an object-relation already on the current path is not entered again.
"""

from __future__ import annotations

from collections.abc import Callable, Container

from pdp.engine.membership import Admits, MembershipIndex, hops_to
from pdp.engine.slicing import SlicedIndex
from pdp.engine.tuples import Members, TupleStore, Usersets
from pdp.errors import EvaluationError
from pdp.model import Entity
from policy_lang import ast
from policy_lang.checker import CheckedPolicy

# (object_id, subject "type:id", depth, path) -> granted? `path` holds the object-relations being
# expanded above this call (added before a hop, removed after): a cycle is cut, not followed.
RelationFn = Callable[[str, str, int, set[str]], bool]


class DepthLimitExceeded(EvaluationError):
    """The relation walk went deeper than the configured limit; the decision is a deny."""


class RelationGraph:
    """The compiled relation functions of one bundle over one live tuple store."""

    def __init__(self, policy: CheckedPolicy, store: TupleStore, max_depth: int) -> None:
        self.max_depth = max_depth
        # What the functions read. A sliced sidecar reads through a guard that raises on an
        # object it does not hold (pdp.engine.slicing): missing data is never taken for none.
        self._subjects: dict[str, Members] | SlicedIndex[Members] = store.subjects
        self._usersets: dict[str, Usersets] | SlicedIndex[Usersets] = store.usersets
        if not store.slice.whole:
            self._subjects = SlicedIndex(store.subjects, store.slice)
            self._usersets = SlicedIndex(store.usersets, store.slice)
        self.functions: dict[tuple[str, str], RelationFn] = {}
        self._links: list[Callable[[], None]] = []
        # A relation whose usersets are all groups is a membership test on the flattened index
        # (None in a sliced store: it walks, and a group it does not hold is an error there).
        membership = store.membership
        for type_name, info in sorted(policy.types.items()):
            for rel in info.relations.values():
                if membership is not None and (type_name, rel.name) in policy.membership_relations:
                    self.functions[(type_name, rel.name)] = self._member(type_name, rel, membership)
                else:
                    self.functions[(type_name, rel.name)] = self._direct(type_name, rel)
        # Permissions refer to each other on the same object without a data hop only in a DAG
        # (the checker rejects cycles), so building them in dependency order lets every
        # computed reference be bound to its function directly, with no lookup per call.
        for type_name, info in sorted(policy.types.items()):
            pending = dict(info.permissions)
            while pending:
                for name, perm in sorted(pending.items()):
                    if all((type_name, ref) in self.functions for ref in _computed(perm.expr)):
                        self.functions[(type_name, name)] = self._rewrite(type_name, perm.expr)
                        del pending[name]
                        break
                else:  # unreachable after the checker; never loop forever on a bad policy
                    raise ValueError(f"permissions of `{type_name}` refer to each other in a cycle")
        for link in self._links:
            link()

    def check(self, object_type: str, object_id: str, relation: str, subject: str) -> bool:
        """Does `subject` ("type:id") hold `relation` on the object? Unknown relations hold for no one."""
        fn = self.functions.get((object_type, relation))
        return fn is not None and _walk(fn, object_id, subject)

    def relation(self, object_type: str, object_id: str, relation: str, subject: Entity) -> bool:
        """What a condition's `subject has REL on X` calls."""
        fn = self.functions.get((object_type, relation))
        if fn is None:
            return False
        if type(object_id) is not str:
            raise TypeError("a relation check needs a string id")
        return _walk(fn, object_id, subject.type + ":" + subject.id)

    # ---- compilation
    def _direct(self, type_name: str, rel: ast.RelationDecl) -> RelationFn:
        subjects_index = self._subjects
        wildcards = tuple((f"{r.type}:*", f"{r.type}:") for r in rel.subjects if r.wildcard)
        allowed = {(r.type, r.relation) for r in rel.subjects if r.relation}
        prefix = f"{type_name}:"
        suffix = f"#{rel.name}"

        if not allowed and not wildcards:
            # The common case (`relation owner: user`): one lookup, one membership test.
            def plain(oid: str, subject: str, depth: int, path: set[str]) -> bool:
                found = subjects_index.get(f"{prefix}{oid}{suffix}")
                return found is not None and subject in found

            return plain
        return self._direct_walk(prefix, suffix, wildcards, allowed)

    def _member(self, type_name: str, rel: ast.RelationDecl, index: MembershipIndex) -> RelationFn:
        """`relation viewer: user | group#member`: does the relation hold the subject, or any
        group key the subject reaches (index.of)? Exact, depth limit included: the subject
        reaches a group in at most `index.deepest + 1` userset hops, so only when that might
        exceed what is left of the depth budget does it count the hops (hops_to)."""
        subjects_index = self._subjects
        max_depth = self.max_depth
        wildcards = tuple((f"{r.type}:*", f"{r.type}:") for r in rel.subjects if r.wildcard)
        admits = Admits(index.schema, rel)
        # Every group relation admitted here: any group key the subject reaches counts.
        every = frozenset(index.schema.admits) <= admits.usersets
        prefix = f"{type_name}:"
        suffix = f"#{rel.name}"

        def member(oid: str, subject: str, depth: int, path: set[str]) -> bool:
            key = f"{prefix}{oid}{suffix}"
            found = subjects_index.get(key)
            if found is None:
                return False
            if subject in found:
                return True
            if wildcards and _wildcard_holds(found, subject, wildcards):
                return True
            reached = index.of.get(subject)
            if reached is None or reached.isdisjoint(found):
                if not index.wildcards:
                    return False
                reached = index.of.get(subject[: subject.find(":")] + ":*")
                if reached is None or reached.isdisjoint(found):
                    return False
            if every and depth + index.deepest < max_depth:
                return True
            # Near the depth limit, or a group key this relation may not admit: count exactly.
            hops = hops_to(key, subject, lambda k: subjects_index.get(k) or (), admits.at(key))
            if hops is None:
                return False
            if hops <= max_depth - depth:
                return True
            raise DepthLimitExceeded(key)

        return member

    def _direct_walk(
        self,
        prefix: str,
        suffix: str,
        wildcards: tuple[tuple[str, str], ...],
        allowed: set[tuple[str, str]],
    ) -> RelationFn:
        """A relation that admits wildcards or usersets: the stored subjects, then each userset."""
        subjects_index = self._subjects
        usersets_index = self._usersets
        max_depth = self.max_depth
        functions = self.functions
        # Filled by link() once every function exists: (subject type, relation) -> function.
        targets_of: dict[tuple[str, str], RelationFn] = {}
        self._links.append(
            lambda: targets_of.update({p: functions[p] for p in allowed if p in functions})
        )

        def direct(oid: str, subject: str, depth: int, path: set[str]) -> bool:
            key = f"{prefix}{oid}{suffix}"
            found = subjects_index.get(key)
            if found is None:
                return False
            if subject in found:
                return True
            if wildcards and _wildcard_holds(found, subject, wildcards):
                return True
            usersets = usersets_index.get(key) if targets_of else None
            if not usersets or key in path:  # on the current path already: a cycle adds nothing
                return False
            if depth >= max_depth:
                raise DepthLimitExceeded(key)
            depth += 1
            limited = False
            path.add(key)
            try:
                # INVARIANT: the answer does not depend on iteration order: a branch that hits
                # the depth limit is remembered, not fatal, so that any granting branch grants.
                for st, sid, srel in tuple(usersets):
                    fn = targets_of.get((st, srel))
                    if fn is None:
                        continue
                    try:
                        if fn(sid, subject, depth, path):
                            return True
                    except DepthLimitExceeded:
                        limited = True
            finally:
                path.discard(key)
            if limited:
                raise DepthLimitExceeded(key)
            return False

        return direct

    def _rewrite(self, type_name: str, expr: ast.UsersetExpr) -> RelationFn:
        if isinstance(expr, ast.Computed):
            return self.functions[(type_name, expr.relation)]
        if isinstance(expr, ast.TupleToUserset):
            return self._tuple_to_userset(type_name, expr)
        # A run of one operator (`a + b + c`) is one function looping over its operands, not a
        # nest of binary ones: one Python frame per level however long the run.
        branches = tuple(self._rewrite(type_name, e) for e in ast.userset_operands(expr))
        if isinstance(expr, ast.Union):
            return _union(branches)
        return _all_of(branches) if isinstance(expr, ast.Intersection) else _but_not(branches)

    def _tuple_to_userset(self, type_name: str, expr: ast.TupleToUserset) -> RelationFn:
        subjects_index = self._subjects
        functions = self.functions
        max_depth = self.max_depth
        prefix = f"{type_name}:"
        suffix = f"#{expr.tupleset}"
        computed = expr.computed

        arrow = f"->{computed}"
        # Filled by link(): target type -> its `computed` function (no tuple key per hop).
        computed_on: dict[str, RelationFn] = {}
        self._links.append(
            lambda: computed_on.update({t: fn for (t, r), fn in functions.items() if r == computed})
        )

        def tuple_to_userset(oid: str, subject: str, depth: int, path: set[str]) -> bool:
            key = f"{prefix}{oid}{suffix}"
            found = subjects_index.get(key)
            if not found:
                return False
            if depth >= max_depth:
                raise DepthLimitExceeded(key)
            marker = key + arrow
            if marker in path:
                return False
            depth += 1
            limited = False
            path.add(marker)
            try:
                for target in tuple(found):
                    target_type, _, target_id = target.partition(":")
                    if "#" in target_id:
                        # Zanzibar's tuple-to-userset: a userset subject (`folder:f2#parent`)
                        # hops to its object (`folder:f2`); its relation is ignored. (No
                        # `type:*` is ever here: the checker refuses an arrow over a wildcard.)
                        target_id = target_id.partition("#")[0]
                    fn = computed_on.get(target_type)
                    if fn is None:
                        continue
                    try:
                        if fn(target_id, subject, depth, path):
                            return True
                    except DepthLimitExceeded:
                        limited = True
            finally:
                path.discard(marker)
            if limited:
                raise DepthLimitExceeded(key)
            return False

        return tuple_to_userset


def _wildcard_holds(
    found: Container[str], subject: str, wildcards: tuple[tuple[str, str], ...]
) -> bool:
    """Does a stored `type:*` admit `subject` ("type:id")?"""
    for wildcard, type_prefix in wildcards:
        if wildcard in found and subject.startswith(type_prefix):
            return True
    return False


def _union(branches: tuple[RelationFn, ...]) -> RelationFn:
    def union(oid: str, subject: str, depth: int, path: set[str]) -> bool:
        limited = None
        for branch in branches:
            try:
                if branch(oid, subject, depth, path):
                    return True
            except DepthLimitExceeded as exc:
                limited = exc
        if limited is not None:
            raise limited
        return False

    return union


def _all_of(branches: tuple[RelationFn, ...]) -> RelationFn:
    if len(branches) == 2:  # the common case, without a loop
        left, right = branches

        def intersection(oid: str, subject: str, depth: int, path: set[str]) -> bool:
            return left(oid, subject, depth, path) and right(oid, subject, depth, path)

        return intersection

    def intersection_run(oid: str, subject: str, depth: int, path: set[str]) -> bool:
        return all(branch(oid, subject, depth, path) for branch in branches)

    return intersection_run


def _but_not(branches: tuple[RelationFn, ...]) -> RelationFn:
    first, rest = branches[0], branches[1:]
    if len(branches) == 2:  # the common case, without a loop
        left, right = branches

        def exclusion(oid: str, subject: str, depth: int, path: set[str]) -> bool:
            return left(oid, subject, depth, path) and not right(oid, subject, depth, path)

        return exclusion

    def exclusion_run(oid: str, subject: str, depth: int, path: set[str]) -> bool:
        # ((a - b) - c): a, then not b, then not c, stopping at the first that decides.
        return first(oid, subject, depth, path) and not any(
            branch(oid, subject, depth, path) for branch in rest
        )

    return exclusion_run


def _walk(fn: RelationFn, object_id: str, subject: str) -> bool:
    """Start a walk. Each hop costs a few Python frames per level of the permissions it passes
    (bounded by policy_lang.limits); a walk that runs out of stack before the configured depth
    limit is a depth limit too, never a RecursionError."""
    try:
        return fn(object_id, subject, 0, set())
    except RecursionError:
        raise DepthLimitExceeded(f"{object_id}: the relation walk ran out of stack") from None


def _computed(expr: ast.UsersetExpr) -> list[str]:
    out, stack = [], [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Computed):
            out.append(node.relation)
        stack.extend(ast.userset_children(node))
    return out
