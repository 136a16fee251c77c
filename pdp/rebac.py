"""Relation checks compiled from a schema: one function per (type, relation or permission).

A check walks tuples through usersets (`group#member`), rewrites (`+`, `&`, `-`) and hops
(`parent->view`). It is depth-bounded (DepthLimitExceeded, never a RecursionError) and cycle-safe:
an object-relation already on the current path is not entered again.
"""

from __future__ import annotations

from collections.abc import Callable

from pdp.tuples import TupleStore
from policy_lang import ast
from policy_lang.checker import CheckedPolicy

# (object_id, subject "type:id", depth, path) -> granted?
RelationFn = Callable[[str, str, int, frozenset[str]], bool]


class DepthLimitExceeded(Exception):
    """The relation walk went deeper than the configured limit; the decision is a deny."""


class RelationGraph:
    """The compiled relation functions of one bundle over one live tuple store."""

    def __init__(self, policy: CheckedPolicy, store: TupleStore, max_depth: int) -> None:
        self.max_depth = max_depth
        self._store = store
        self.functions: dict[tuple[str, str], RelationFn] = {}
        for type_name, info in sorted(policy.types.items()):
            for rel in info.relations.values():
                self.functions[(type_name, rel.name)] = self._direct(type_name, rel)
            for perm in info.permissions.values():
                self.functions[(type_name, perm.name)] = self._rewrite(type_name, perm.expr)

    def check(self, object_type: str, object_id: str, relation: str, subject: str) -> bool:
        """Does `subject` ("type:id") hold `relation` on the object? Unknown relations hold for no one."""
        fn = self.functions.get((object_type, relation))
        return fn is not None and fn(object_id, subject, 0, frozenset())

    # ---- compilation
    def _lookup(self, type_name: str, relation: str) -> RelationFn:
        # Resolved at call time: functions refer to each other, so all must exist first.
        functions = self.functions

        def call(oid: str, subject: str, depth: int, path: frozenset[str]) -> bool:
            fn = functions.get((type_name, relation))
            return fn is not None and fn(oid, subject, depth, path)

        return call

    def _direct(self, type_name: str, rel: ast.RelationDecl) -> RelationFn:
        subjects_index = self._store.subjects
        usersets_index = self._store.usersets
        wildcards = tuple(f"{r.type}:*" for r in rel.subjects if r.wildcard)
        wildcard_types = {r.type + ":" for r in rel.subjects if r.wildcard}
        allowed = {(r.type, r.relation) for r in rel.subjects if r.relation}
        max_depth = self.max_depth
        functions = self.functions
        prefix = f"{type_name}:"
        suffix = f"#{rel.name}"

        def direct(oid: str, subject: str, depth: int, path: frozenset[str]) -> bool:
            key = prefix + oid + suffix
            found = subjects_index.get(key)
            if found is None:
                return False
            if subject in found:
                return True
            if wildcards:
                for w, t in zip(wildcards, wildcard_types, strict=True):
                    if w in found and subject.startswith(t):
                        return True
            usersets = usersets_index.get(key)
            if not usersets:
                return False
            if depth >= max_depth:
                raise DepthLimitExceeded(key)
            inner_path = path | {key}
            limited = False
            # INVARIANT: the answer does not depend on iteration order. A branch that hits the
            # depth limit is remembered, not fatal, so that any granting branch still grants.
            for st, sid, srel in list(usersets):
                if (st, srel) not in allowed or f"{st}:{sid}#{srel}" in inner_path:
                    continue
                fn = functions.get((st, srel))
                if fn is None:
                    continue
                try:
                    if fn(sid, subject, depth + 1, inner_path):
                        return True
                except DepthLimitExceeded:
                    limited = True
            if limited:
                raise DepthLimitExceeded(key)
            return False

        return direct

    def _rewrite(self, type_name: str, expr: ast.UsersetExpr) -> RelationFn:
        if isinstance(expr, ast.Computed):
            return self._lookup(type_name, expr.relation)
        if isinstance(expr, ast.TupleToUserset):
            return self._tuple_to_userset(type_name, expr)
        left = self._rewrite(type_name, expr.left)
        right = self._rewrite(type_name, expr.right)
        if isinstance(expr, ast.Union):

            def union(oid: str, subject: str, depth: int, path: frozenset[str]) -> bool:
                try:
                    if left(oid, subject, depth, path):
                        return True
                except DepthLimitExceeded:
                    if right(oid, subject, depth, path):
                        return True
                    raise
                return right(oid, subject, depth, path)

            return union
        if isinstance(expr, ast.Intersection):

            def intersection(oid: str, subject: str, depth: int, path: frozenset[str]) -> bool:
                return left(oid, subject, depth, path) and right(oid, subject, depth, path)

            return intersection

        def exclusion(oid: str, subject: str, depth: int, path: frozenset[str]) -> bool:
            return left(oid, subject, depth, path) and not right(oid, subject, depth, path)

        return exclusion

    def _tuple_to_userset(self, type_name: str, expr: ast.TupleToUserset) -> RelationFn:
        subjects_index = self._store.subjects
        functions = self.functions
        max_depth = self.max_depth
        prefix = f"{type_name}:"
        suffix = f"#{expr.tupleset}"
        computed = expr.computed

        def tuple_to_userset(oid: str, subject: str, depth: int, path: frozenset[str]) -> bool:
            key = prefix + oid + suffix
            targets = subjects_index.get(key)
            if not targets:
                return False
            if depth >= max_depth:
                raise DepthLimitExceeded(key)
            marker = f"{key}->{computed}"
            if marker in path:
                return False
            inner_path = path | {marker}
            limited = False
            for target in list(targets):
                if "#" in target:  # a userset in a tupleset relation is not an object to hop to
                    continue
                target_type, _, target_id = target.partition(":")
                fn = functions.get((target_type, computed))
                if fn is None:
                    continue
                try:
                    if fn(target_id, subject, depth + 1, inner_path):
                        return True
                except DepthLimitExceeded:
                    limited = True
            if limited:
                raise DepthLimitExceeded(key)
            return False

        return tuple_to_userset
