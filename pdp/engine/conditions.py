"""Conditions compiled to Python functions: each rule's `when` becomes one generated lambda.

Generated code reads attributes with `[]`, so a missing attribute raises and its rule errors (which
the engine turns into a deny); attribute types were validated before any condition runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from pdp.engine import codegen
from pdp.model import Entity, Value
from policy_lang import ast

ConditionFn = Callable[[Entity, Entity, Mapping[str, Value]], bool]


class ConditionEnv(Protocol):
    """What a condition may ask beyond the request itself, bound once at compile time: the
    compiler hands in the bundle's relation graph and its role evaluator, so a condition calls
    down into them and never back up into the engine."""

    def relation(
        self, object_type: str, object_id: str, relation: str, subject: Entity
    ) -> bool: ...

    def role_test(self, role: str) -> ConditionFn:
        """The function that answers `subject has role {role}` (asked once per role)."""
        ...


_ROOTS = {"subject": "S.attrs", "resource": "R.attrs", "context": "C"}
_OPS = {"==", "!=", "<", "<=", ">", ">="}


def compile_conditions(
    exprs: list[ast.Expr], env: ConditionEnv, names: list[str] | None = None
) -> list[ConditionFn]:
    """Compile many conditions as one generated module: one compile() call for a whole bundle.
    `names` (one per condition, e.g. the rule's) name the functions in tracebacks."""
    gen = _Generator(env)
    fn_names = [
        codegen.identifier("condition", names[i] if names else "", str(i))
        for i in range(len(exprs))
    ]
    lines = [
        f"def {fn_names[i]}(S, R, C):\n    return bool({gen.expr(e)})" for i, e in enumerate(exprs)
    ]
    # The callbacks are bound once here, so a condition calls them without an attribute lookup.
    namespace: dict[str, Any] = {"REL": env.relation, "K": tuple(gen.constants)}
    codegen.define("\n".join(lines) + "\n", "conditions", namespace)
    return [namespace[n] for n in fn_names]


class _Generator:
    """Python source for conditions; literals and role tests go to the constants `K`."""

    def __init__(self, env: ConditionEnv) -> None:
        self.env = env
        self.constants: list[Any] = []
        self._role_tests: dict[str, int] = {}

    def constant(self, value: Any) -> str:
        self.constants.append(value)
        return f"K[{len(self.constants) - 1}]"

    def expr(self, expr: ast.Expr) -> str:
        if isinstance(expr, ast.Literal):
            return self.constant(expr.value)
        if isinstance(expr, ast.Path):
            if expr.root != "context" and expr.name in ("id", "type"):
                return f"{expr.root[0].upper()}.{expr.name}"
            return f"{_ROOTS[expr.root]}[{expr.name!r}]"
        if isinstance(expr, ast.Present):
            p = expr.path
            if p.root != "context" and p.name in ("id", "type"):
                return "True"
            return f"({p.name!r} in {_ROOTS[p.root]})"
        if isinstance(expr, ast.MethodCall):
            return _gen_method(expr, self)
        if isinstance(expr, ast.RelationCheck):
            return self.relation(expr)
        if isinstance(expr, ast.HasRole):
            return self.has_role(expr.role)
        return self.operator(expr)

    def operator(self, expr: ast.Expr) -> str:
        if isinstance(expr, ast.And | ast.Or):
            # A run `a or b or c` is one flat Python `or`: one level of parentheses and of
            # recursion however long it is (policy_lang.limits counts it as one level too).
            op = " and " if isinstance(expr, ast.And) else " or "
            return "(" + op.join(self.expr(e) for e in ast.operands(expr)) + ")"
        if isinstance(expr, ast.Not):
            return f"(not {self.expr(expr.operand)})"
        if isinstance(expr, ast.Compare):
            assert expr.op in _OPS
            return f"({self.expr(expr.left)} {expr.op} {self.expr(expr.right)})"
        if isinstance(expr, ast.In):
            return f"({self.expr(expr.element)} in {self.expr(expr.collection)})"
        raise AssertionError(f"unhandled expression {expr!r}")

    def relation(self, expr: ast.RelationCheck) -> str:
        e = expr.entity
        if e.kind == "resource":
            return f"REL(R.type, R.id, {expr.relation!r}, S)"
        if e.kind == "subject":
            return f"REL(S.type, S.id, {expr.relation!r}, S)"
        assert e.id is not None
        return f"REL({e.type!r}, {self.expr(e.id)}, {expr.relation!r}, S)"

    def has_role(self, role: str) -> str:
        ref = self._role_tests.get(role)
        if ref is None:
            self.constants.append(self.env.role_test(role))
            ref = self._role_tests[role] = len(self.constants) - 1
        return f"K[{ref}](S, R, C)"


def _gen_method(expr: ast.MethodCall, gen: _Generator) -> str:
    target = gen.expr(expr.target)
    args = [gen.expr(a) for a in expr.args]
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
