"""Limits on what one policy may express, so that whatever the checker accepts compiles and runs.

Each limit sits well inside what the compiler, the generated Python and the reference interpreter
handle (docs/language-limits.md says why each number): a bundle past one is refused at file:line:col
by `pdp validate`, never by `pdp serve` when it starts or reloads. The measures are explicit-stack
walks, so measuring a tree far past a limit cannot itself overflow the stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from policy_lang import ast
from policy_lang.diagnostics import Loc

# An integer literal, like an int attribute, is exactly representable as a float and as a JSON
# number in every client: |n| <= 2**53.
MAX_INT = 2**53
# Nesting of one condition. A left-leaning run of one operator (`a or b or c`) is one level: the
# compiler emits it as one flat `or`. Generated Python opens at most two parentheses per level and
# Python refuses 200 nested parentheses; the recursive walks spend at most ~3 frames a level.
MAX_EXPR_DEPTH = 50
# Parts (operators, operands, literals) of one condition: bounds compile time and memory.
MAX_EXPR_NODES = 10_000
# Nesting of one permission, counting through the permissions it names on the same object
# (`permission a = b & c` is as deep as `b` or `c` plus one): each level is a Python frame per hop
# of a relation walk.
MAX_USERSET_DEPTH = 50
# Parts of one permission's rewrite (`a + b - c & d ...`).
MAX_USERSET_NODES = 1_000
# Levels of `extends`: the compiler precomputes every role's ancestors.
MAX_ROLE_DEPTH = 32
# Syntax errors reported per file before the parser gives up on the rest of it.
MAX_SYNTAX_ERRORS = 50


@dataclass(frozen=True, slots=True)
class Excess:
    """A limit exceeded: a stable diagnostic code, a message and where."""

    code: str
    message: str
    loc: Loc


def int_literals(expr: ast.Expr) -> Iterator[ast.Literal]:
    """Every integer literal in a condition, set members included, that is out of range."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Literal) and _out_of_range(node.value):
            yield node


def _out_of_range(value: ast.LiteralValue) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) > MAX_INT
    if isinstance(value, frozenset):
        return any(_out_of_range(v) for v in value)
    return False


def expression_excess(expr: ast.Expr) -> Excess | None:
    """The first limit a condition exceeds, or None: depth where it first goes too deep, size at
    the condition itself."""
    nodes = 0
    stack: list[tuple[ast.Expr, int]] = [(expr, 1)]
    while stack:
        node, level = stack.pop()
        if level > MAX_EXPR_DEPTH:
            return Excess(
                "expression_too_deep",
                f"a condition may nest at most {MAX_EXPR_DEPTH} levels deep; this is level {level}",
                node.loc,
            )
        if isinstance(node, ast.And | ast.Or):
            parts: tuple[ast.Expr, ...] | list[ast.Expr] = ast.operands(node)
            nodes += len(parts) - 1
        else:
            parts = ast.children(node)
            nodes += 1
        if nodes > MAX_EXPR_NODES:
            return Excess(
                "expression_too_large",
                f"a condition may have at most {MAX_EXPR_NODES:,} parts",
                expr.loc,
            )
        stack.extend((p, level + 1) for p in parts)
    return None


def userset_shape(expr: ast.UsersetExpr) -> tuple[int, int, list[tuple[ast.Computed, int]]]:
    """(nodes, own depth, every `Computed` leaf with the level it sits at) of a permission's
    rewrite; a run of one operator (`a + b + c`) is one level, as in conditions."""
    nodes, depth = 0, 0
    leaves: list[tuple[ast.Computed, int]] = []
    stack: list[tuple[ast.UsersetExpr, int]] = [(expr, 1)]
    while stack and nodes <= MAX_USERSET_NODES:
        node, level = stack.pop()
        depth = max(depth, level)
        if isinstance(node, ast.Union | ast.Intersection | ast.Exclusion):
            parts = ast.userset_operands(node)
            nodes += len(parts) - 1
            stack.extend((p, level + 1) for p in parts)
        else:
            nodes += 1
            if isinstance(node, ast.Computed):
                leaves.append((node, level))
    return nodes, depth, leaves


def role_depths(roles: dict[str, ast.RoleDecl]) -> dict[str, int]:
    """Each role's levels of `extends` (0 for a role that extends nothing), for acyclic roles;
    a role on a cycle or reaching one is left out (the checker reports cycles)."""
    depth: dict[str, int] = {}
    for start in roles:
        stack: list[tuple[str, bool]] = [(start, False)]
        on_path: set[str] = set()
        while stack:
            name, done = stack.pop()
            if done:
                on_path.discard(name)
                parents = [p for p in roles[name].parents if p in roles]
                if all(p in depth for p in parents):
                    depth[name] = 1 + max((depth[p] for p in parents), default=-1)
                continue
            if name in depth or name in on_path:
                continue
            on_path.add(name)
            stack.append((name, True))
            stack.extend((p, False) for p in roles[name].parents if p in roles)
    return depth
