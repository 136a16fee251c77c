"""Conditions compiled to Python functions: each rule's `when` becomes one generated lambda.

Generated code reads attributes with `[]`, so a missing attribute raises and its rule errors (which
the engine turns into a deny); attribute types were validated before any condition runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from pdp.model import Entity, Value
from policy_lang import ast

ConditionFn = Callable[[Entity, Entity, Mapping[str, Value]], bool]


class ConditionEnv(Protocol):
    """What a condition may ask of the engine beyond the request itself."""

    def relation(
        self, object_type: str, object_id: str, relation: str, subject: Entity
    ) -> bool: ...

    def has_role(
        self, role: str, subject: Entity, resource: Entity, context: Mapping[str, Value]
    ) -> bool: ...


_ROOTS = {"subject": "S.attrs", "resource": "R.attrs", "context": "C"}
_OPS = {"==", "!=", "<", "<=", ">", ">="}


def compile_condition(expr: ast.Expr, env: ConditionEnv) -> ConditionFn:
    return compile_conditions([expr], env)[0]


def compile_conditions(exprs: list[ast.Expr], env: ConditionEnv) -> list[ConditionFn]:
    """Compile many conditions as one generated module: one compile() call for a whole bundle."""
    constants: list[Any] = []
    lines = [
        f"def c{i}(S, R, C):\n    return bool({_gen(e, constants)})" for i, e in enumerate(exprs)
    ]
    # The callbacks are bound once here, so a condition calls them without an attribute lookup.
    namespace: dict[str, Any] = {
        "REL": env.relation,
        "HAS_ROLE": env.has_role,
        "K": tuple(constants),
    }
    exec(compile("\n".join(lines), "<conditions>", "exec"), namespace)
    return [namespace[f"c{i}"] for i in range(len(exprs))]


def _gen(expr: ast.Expr, k: list[Any]) -> str:
    if isinstance(expr, ast.Literal):
        k.append(expr.value)
        return f"K[{len(k) - 1}]"
    if isinstance(expr, ast.Path):
        if expr.root != "context" and expr.name in ("id", "type"):
            return f"{expr.root[0].upper()}.{expr.name}"
        return f"{_ROOTS[expr.root]}[{expr.name!r}]"
    if isinstance(expr, ast.Present):
        p = expr.path
        if p.root != "context" and p.name in ("id", "type"):
            return "True"
        return f"({p.name!r} in {_ROOTS[p.root]})"
    if isinstance(expr, ast.And | ast.Or):
        # A run `a or b or c` is one flat Python `or`: one level of parentheses and of recursion
        # however long it is (policy_lang.limits counts it as one level for the same reason).
        op = " and " if isinstance(expr, ast.And) else " or "
        return "(" + op.join(_gen(e, k) for e in ast.operands(expr)) + ")"
    if isinstance(expr, ast.Not):
        return f"(not {_gen(expr.operand, k)})"
    if isinstance(expr, ast.Compare):
        assert expr.op in _OPS
        return f"({_gen(expr.left, k)} {expr.op} {_gen(expr.right, k)})"
    if isinstance(expr, ast.In):
        return f"({_gen(expr.element, k)} in {_gen(expr.collection, k)})"
    if isinstance(expr, ast.MethodCall):
        return _gen_method(expr, k)
    if isinstance(expr, ast.RelationCheck):
        e = expr.entity
        if e.kind == "resource":
            return f"REL(R.type, R.id, {expr.relation!r}, S)"
        if e.kind == "subject":
            return f"REL(S.type, S.id, {expr.relation!r}, S)"
        assert e.id is not None
        return f"REL({e.type!r}, {_gen(e.id, k)}, {expr.relation!r}, S)"
    if isinstance(expr, ast.HasRole):
        return f"HAS_ROLE({expr.role!r}, S, R, C)"
    raise AssertionError(f"unhandled expression {expr!r}")


def _gen_method(expr: ast.MethodCall, k: list[Any]) -> str:
    target = _gen(expr.target, k)
    args = [_gen(a, k) for a in expr.args]
    m = expr.method
    if m == "contains":
        return f"({args[0]} in {target})"
    if m == "contains_any":
        return f"(not {target}.isdisjoint({args[0]}))"
    if m == "contains_all":
        return f"{target}.issuperset({args[0]})"
    if m == "size":
        return f"len({target})"
    if m == "starts_with":
        return f"{target}.startswith({args[0]})"
    if m == "ends_with":
        return f"{target}.endswith({args[0]})"
    if m == "lower":
        return f"{target}.lower()"
    raise AssertionError(f"unhandled method {m}")


def read_paths(expr: ast.Expr) -> Iterator[ast.Path]:
    """Every attribute an expression can read: the decision cache keys on exactly these."""
    return (node for node in ast.walk(expr) if isinstance(node, ast.Path))


def reads_relations(expr: ast.Expr) -> bool:
    """Does the expression consult tuples (directly or through a role binding)?"""
    return any(isinstance(node, ast.RelationCheck | ast.HasRole) for node in ast.walk(expr))
