"""The checked syntax tree: frozen values built by the parser. Locations ride along, outside equality."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

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


def walk(expr: Expr) -> Iterator[Expr]:
    """The expression and every expression inside it, parents first."""
    yield expr
    if isinstance(expr, And | Or | Compare):
        yield from walk(expr.left)
        yield from walk(expr.right)
    elif isinstance(expr, Not):
        yield from walk(expr.operand)
    elif isinstance(expr, Present):
        yield expr.path
    elif isinstance(expr, In):
        yield from walk(expr.element)
        yield from walk(expr.collection)
    elif isinstance(expr, MethodCall):
        yield from walk(expr.target)
        for arg in expr.args:
            yield from walk(arg)
    elif isinstance(expr, RelationCheck) and expr.entity.id is not None:
        yield from walk(expr.entity.id)


Item = TypeDecl | ContextDecl | RoleDecl | BindWhen | BindFrom | RuleDecl


@dataclass(frozen=True, slots=True)
class PolicyFile:
    path: str
    items: tuple[Item, ...]
