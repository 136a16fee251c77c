"""Conditions compiled to Python functions: each rule's `when` becomes one generated function.

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
    """Compile many conditions. Each is generated as a shape, its literals and role tests lifted
    out as parameters (`subject.n >= K0`), and conditions of one shape share one compile()
    (10,000 rules of a bundle are often a few dozen shapes); each then gets its own function
    over its own constants. `names` (one per condition, e.g. the rule's) name the functions in
    tracebacks."""
    makers: dict[str, Callable[..., ConditionFn]] = {}  # shape -> its factory, for this env
    role_tests: dict[str, ConditionFn] = {}
    out = []
    for i, expr in enumerate(exprs):
        shape, constants = _shape(expr)
        make = makers.get(shape)
        if make is None:
            # The callbacks are bound once here, so a condition calls them without a lookup.
            make = makers[shape] = codegen.define(shape, "condition", {"REL": env.relation})["make"]
        values = [
            _role_test(c.role, env, role_tests) if type(c) is _RoleRef else c for c in constants
        ]
        fn = make(*values)
        own = names[i] if names else ""
        # a rule's name is a Python identifier already (the grammar's NAME is one)
        name = (
            f"condition_{own}_{i}"
            if own.isascii() and own.isidentifier()
            else codegen.identifier("condition", own, str(i))
        )
        fn.__name__ = fn.__qualname__ = name
        out.append(fn)
    return out


class _RoleRef:
    """`subject has role R` in a shape's constants: bound to the bundle's role test per compile."""

    __slots__ = ("role",)

    def __init__(self, role: str) -> None:
        self.role = role


def _role_test(role: str, env: ConditionEnv, tests: dict[str, ConditionFn]) -> ConditionFn:
    fn = tests.get(role)
    if fn is None:
        fn = tests[role] = env.role_test(role)
    return fn


# A condition's shape by the node itself: a reload reparses only the files that changed (the
# bundle loader caches the rest), so the conditions of the others are the very same nodes and
# are not generated again. The node is held, so its id is not reused while it is a key.
_MAX_SHAPES = 50_000
_shapes: dict[int, tuple[ast.Expr, str, tuple[Any, ...]]] = {}


def _shape(expr: ast.Expr) -> tuple[str, tuple[Any, ...]]:
    """The source of `make(K0, K1, ...)` returning the condition's function, and its constants."""
    hit = _shapes.get(id(expr))
    if hit is not None and hit[0] is expr:
        return hit[1], hit[2]
    gen = _Generator()
    body = gen.expr(expr)
    params = ", ".join(f"K{i}" for i in range(len(gen.constants)))
    source = (
        f"def make({params}):\n"
        "    def condition(S, R, C):\n"
        f"        return bool({body})\n"
        "    return condition\n"
    )
    if len(_shapes) >= _MAX_SHAPES:
        _shapes.clear()
    _shapes[id(expr)] = (expr, source, tuple(gen.constants))
    return source, tuple(gen.constants)


class _Generator:
    """Python source for one condition; literals and role tests go to the constants `K0`, ..."""

    def __init__(self) -> None:
        self.constants: list[Any] = []
        self._role_tests: dict[str, int] = {}

    def constant(self, value: Any) -> str:
        self.constants.append(value)
        return f"K{len(self.constants) - 1}"

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
            self.constants.append(_RoleRef(role))
            ref = self._role_tests[role] = len(self.constants) - 1
        return f"K{ref}(S, R, C)"


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
