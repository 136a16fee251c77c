"""The checked syntax tree: frozen values built by the parser. Locations ride along, outside equality."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from policy_lang.diagnostics import NO_LOC, Loc

LiteralValue = str | int | bool | frozenset[str] | frozenset[int]


def _loc() -> Loc:
    return field(default=NO_LOC, compare=False, repr=False)


# ---- schema ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    type: str  # "string", "int", "bool", "set<string>", "set<int>"
    optional: bool = False
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class SubjectRef:
    """Who a relation accepts: `user`, `group#member` (a userset) or `user:*` (everyone of a type)."""

    type: str
    relation: str = ""
    wildcard: bool = False
    loc: Loc = _loc()

    def __str__(self) -> str:
        if self.wildcard:
            return f"{self.type}:*"
        return f"{self.type}#{self.relation}" if self.relation else self.type


@dataclass(frozen=True, slots=True)
class RelationDecl:
    name: str
    subjects: tuple[SubjectRef, ...]
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class Computed:
    relation: str
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class TupleToUserset:
    """`parent->view`: follow the `parent` relation, then ask `view` of each object found."""

    tupleset: str
    computed: str
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class Union:
    left: UsersetExpr
    right: UsersetExpr
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class Intersection:
    left: UsersetExpr
    right: UsersetExpr
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class Exclusion:
    left: UsersetExpr
    right: UsersetExpr
    loc: Loc = _loc()


UsersetExpr = Computed | TupleToUserset | Union | Intersection | Exclusion


@dataclass(frozen=True, slots=True)
class PermissionDecl:
    name: str
    expr: UsersetExpr
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class TypeDecl:
    name: str
    attributes: tuple[Attribute, ...] = ()
    actions: tuple[str, ...] = ()
    relations: tuple[RelationDecl, ...] = ()
    permissions: tuple[PermissionDecl, ...] = ()
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class ContextDecl:
    attributes: tuple[Attribute, ...]
    loc: Loc = _loc()


# ---- roles and rules -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Grant:
    actions: tuple[str, ...] | None  # None means every action (`*`)
    types: tuple[str, ...] | None  # None means every type (`*`)
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class RoleDecl:
    name: str
    scope: str = ""  # an attribute that subject and resource must share, e.g. `tenant`
    parents: tuple[str, ...] = ()
    grants: tuple[Grant, ...] = ()
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class BindWhen:
    """`bind admin when <condition>`: the subject holds these roles while the condition holds."""

    roles: tuple[str, ...]
    condition: Expr
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class BindFrom:
    """`bind roles from subject.roles`: the subject holds every role named in a set attribute."""

    source: Path
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class RuleDecl:
    effect: str  # "permit" or "forbid"
    name: str
    actions: tuple[str, ...] | None
    types: tuple[str, ...] | None
    condition: Expr | None = None
    not_found: bool = False  # a forbid that asks its deny to look like "not found"
    loc: Loc = _loc()


# ---- condition expressions -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Literal:
    value: LiteralValue
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class Path:
    root: str  # "subject", "resource" or "context"
    name: str
    loc: Loc = _loc()

    def __str__(self) -> str:
        return f"{self.root}.{self.name}"


@dataclass(frozen=True, slots=True)
class Present:
    path: Path
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Expr
    right: Expr
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class In:
    element: Expr
    collection: Expr
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class And:
    left: Expr
    right: Expr
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class Or:
    left: Expr
    right: Expr
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class MethodCall:
    target: Expr
    method: str
    args: tuple[Expr, ...]
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class EntityRef:
    """The object of a relation check: `resource`, `subject`, or `tenant(resource.tenant)`."""

    kind: str  # "resource", "subject" or "ctor"
    type: str = ""
    id: Expr | None = None
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class RelationCheck:
    """`subject has view on resource`."""

    relation: str
    entity: EntityRef
    loc: Loc = _loc()


@dataclass(frozen=True, slots=True)
class HasRole:
    role: str
    loc: Loc = _loc()


Expr = (
    Literal | Path | Present | Compare | In | And | Or | Not | MethodCall | RelationCheck | HasRole
)


def children(expr: Expr) -> tuple[Expr, ...]:
    """The expressions directly inside `expr`, left to right."""
    inside = _CHILDREN.get(type(expr))
    return inside(expr) if inside is not None else ()


def _relation_check_children(expr: RelationCheck) -> tuple[Expr, ...]:
    return (expr.entity.id,) if expr.entity.id is not None else ()


# By exact type, one lookup (the nodes are final dataclasses): a chain of isinstance tests was a
# fifth of compiling a 10,000-rule bundle.
_CHILDREN: dict[type, Callable[[Any], tuple[Expr, ...]]] = {
    And: lambda e: (e.left, e.right),
    Or: lambda e: (e.left, e.right),
    Compare: lambda e: (e.left, e.right),
    Not: lambda e: (e.operand,),
    Present: lambda e: (e.path,),
    In: lambda e: (e.element, e.collection),
    MethodCall: lambda e: (e.target, *e.args),
    RelationCheck: _relation_check_children,
}


def walk(expr: Expr) -> Iterator[Expr]:
    """The expression and every expression inside it, parents first, left to right.

    An explicit stack, not recursion: a checked condition is bounded (policy_lang.limits), but
    the checker walks conditions before it knows they are."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        inside = _CHILDREN.get(type(node))
        if inside is not None:  # most nodes are leaves: no call, no empty extend
            stack.extend(reversed(inside(node)))


def operands(expr: And | Or) -> list[Expr]:
    """`a or b or c` parses as ((a or b) or c): the operands of that left-leaning run of one
    operator, in order. Code generation, the reference interpreter and the formatter treat a run
    as one level, so a 1,000-term `or` is a loop, not a 1,000-deep recursion."""
    kind = type(expr)
    out: list[Expr] = []
    node: Expr = expr
    while isinstance(node, And | Or) and type(node) is kind:
        out.append(node.right)
        node = node.left
    out.append(node)
    out.reverse()
    return out


def userset_operands(expr: Union | Intersection | Exclusion) -> list[UsersetExpr]:
    """The operands of a left-leaning run of one userset operator (`a + b + c`, `a & b & c`,
    `a - b - c`), in order, as `operands` does for conditions."""
    kind = type(expr)
    out: list[UsersetExpr] = []
    node: UsersetExpr = expr
    while isinstance(node, Union | Intersection | Exclusion) and type(node) is kind:
        out.append(node.right)
        node = node.left
    out.append(node)
    out.reverse()
    return out


def userset_children(expr: UsersetExpr) -> tuple[UsersetExpr, ...]:
    if isinstance(expr, Union | Intersection | Exclusion):
        return (expr.left, expr.right)
    return ()


Item = TypeDecl | ContextDecl | RoleDecl | BindWhen | BindFrom | RuleDecl


@dataclass(frozen=True, slots=True)
class PolicyFile:
    path: str
    items: tuple[Item, ...]
