"""PlanResources: which resources of a type may a subject act on, answered as a filter over the
resource attributes the sidecar does not hold (they live in the service's database), in the manner
of Cerbos's PlanResources.

`plan_resources(view, subject, action, resource_type, context)` partially evaluates every rule of
(resource_type, action) exactly as Check decides (forbids, permits, role grants and bindings; the
reference interpreter, pdp.explain.reference, is the specification): the subject and the context
are known and folded, the resource is unknown and what depends on it is kept as a residual filter.
The `Plan` is `always_allowed` (the filter is TRUE), `always_denied` (FALSE: also an unknown type
or action, no bundle, or a subject or context attribute of the wrong type, which Check refuses) or
`conditional`: Check allows a resource if and only if `evaluate(plan.filter, resource)` holds.

The filter tree (frozen values; `to_dict()` is the JSON form on the wire, `from_dict` reads it):
    Const          {"op": "true"} / {"op": "false"}                     TRUE and FALSE
    And, Or        {"op": "and" | "or", "operands": [filter, ...]}
    Not            {"op": "not", "operands": [filter]}
    Present        {"op": "present", "field": F}                       the attribute is not missing
    Compare        {"op": OP, "field": F, "value": V}
F is `resource.id` or `resource.<attribute>`; V is a string, int or bool, or for `in` a list of
them. OP: `eq ne lt le gt ge` (==, !=, <, <=, >, >=), `in` (equals one of V) and `contains` (a
string attribute has V as a substring). A relation test on the resource (`subject has view on
resource`) becomes `resource.id in [ids]`: the ids of the type in the tuple store for which the
relation holds for the subject (an object with no tuples holds no relation); one on an object named
by an attribute (`subject has admin on tenant(resource.tenant)`) becomes `resource.tenant in [...]`.

Missing attributes (SQL NULL). A resource attribute is missing when the row has no value (NULL),
and an attribute the type does not declare is missing in every row; `resource.id` is never
missing. A comparison on a missing attribute is false, whatever its op (`ne` too), and `not` is
plain negation, so the filter is two-valued: `not (resource.level gt 1)` holds for a row whose
level is missing. `to_sql` renders exactly that (a comparison under NOT as `(col IS NOT NULL AND
...)`), so SQL's third truth value never changes an answer. Check errs on a missing attribute it
reads, and the planner writes what that error does into the filter: an erring forbid denies (a
forbid on `resource.tenant != "acme"` yields `resource.tenant eq "acme"`, which no NULL tenant
meets), an erring permit grants nothing. Rows are taken to hold values of the declared types (a
service's column types; Check refuses a wrong type at its door), strings as text, ints and bools
as integers.

Unsupported (raises PlanUnsupported rather than guess: ask Check per resource instead):
- a set-valued resource attribute in a residual (comparison, `in`, a method, `bind roles from`);
- a residual comparing two resource attributes (`resource.a == resource.b`);
- a method other than `contains` on a resource attribute (`starts_with`, `lower`, `size`, ...),
  or a resource attribute as the argument of a string method;
- a relation test on an object whose id is computed from the resource other than by naming an
  attribute (`tenant(resource.tenant)` is fine), or a resource-dependent condition used as a value;
- a sliced sidecar (it does not hold every tuple), and a fail-open action whose relation walk hit
  the depth limit (fail-open would allow what the filter cannot say).

`to_sql(filter, columns)` renders a filter as a parameterised WHERE clause (`?` placeholders,
values never interpolated, column names only from `columns`), for SQLite (`contains` is
`instr(col, ?) > 0`; the rest is standard SQL).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from pdp.engine.conditions import read_paths
from pdp.engine.engine import SnapshotView
from pdp.engine.rebac import DepthLimitExceeded, RelationGraph
from pdp.engine.tuples import TupleStore
from pdp.errors import EvaluationError, InvalidRequest
from pdp.model import EMPTY, Entity, Value
from policy_lang import ast
from policy_lang.checker import PYTHON_TYPES, CheckedPolicy
from policy_lang.formatter import expr as show

__all__ = [
    "ALWAYS_ALLOWED",
    "ALWAYS_DENIED",
    "CONDITIONAL",
    "FALSE",
    "TRUE",
    "And",
    "Compare",
    "Const",
    "Filter",
    "Not",
    "Or",
    "Plan",
    "PlanUnsupported",
    "Present",
    "evaluate",
    "from_dict",
    "plan_resources",
    "simplify",
    "to_sql",
]

ID = "resource.id"
COMPARE_OPS = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "in", "contains"})
Scalar: TypeAlias = str | int | bool
FilterValue: TypeAlias = Scalar | tuple[Scalar, ...]
_FIELD = re.compile(r"resource\.[A-Za-z_][A-Za-z0-9_]*")


class PlanUnsupported(InvalidRequest):
    """The policy for (type, action) holds a construct no residual filter can express exactly
    (the module docstring lists them); the message names it. Ask Check per resource instead."""


# ---- the filter tree ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Const:
    """TRUE or FALSE: every row, or none."""

    value: bool

    def to_dict(self) -> dict[str, object]:
        return {"op": "true" if self.value else "false"}


TRUE = Const(True)
FALSE = Const(False)


@dataclass(frozen=True, slots=True)
class And:
    """Every operand holds."""

    operands: tuple[Filter, ...]

    def to_dict(self) -> dict[str, object]:
        return {"op": "and", "operands": [o.to_dict() for o in self.operands]}


@dataclass(frozen=True, slots=True)
class Or:
    """Some operand holds."""

    operands: tuple[Filter, ...]

    def to_dict(self) -> dict[str, object]:
        return {"op": "or", "operands": [o.to_dict() for o in self.operands]}


@dataclass(frozen=True, slots=True)
class Not:
    """The operand does not hold (plain negation: the filter is two-valued)."""

    operand: Filter

    def to_dict(self) -> dict[str, object]:
        return {"op": "not", "operands": [self.operand.to_dict()]}


@dataclass(frozen=True, slots=True)
class Present:
    """The attribute has a value (SQL: IS NOT NULL)."""

    field: str

    def __post_init__(self) -> None:
        _check_field(self.field)

    def to_dict(self) -> dict[str, object]:
        return {"op": "present", "field": self.field}


@dataclass(frozen=True, slots=True)
class Compare:
    """`field op value`; false when the attribute is missing, whatever the op."""

    op: str
    field: str
    value: FilterValue

    def __post_init__(self) -> None:
        _check_field(self.field)
        if self.op not in COMPARE_OPS:
            raise InvalidRequest(f"`{self.op}` is not a filter op")
        if (self.op == "in") != isinstance(self.value, tuple):
            raise InvalidRequest(
                f"`{self.op}` takes {'a list' if self.op == 'in' else 'one value'}"
            )

    def to_dict(self) -> dict[str, object]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"op": self.op, "field": self.field, "value": value}


Filter: TypeAlias = Const | And | Or | Not | Present | Compare


def _check_field(field: str) -> None:
    if not _FIELD.fullmatch(field):
        raise InvalidRequest(f"`{field}` is not a filter field (`resource.id`, `resource.<attr>`)")


def from_dict(data: Mapping[str, Any]) -> Filter:
    """The filter `to_dict()` wrote; InvalidRequest names what is malformed."""
    op = data.get("op")
    if op in ("true", "false"):
        return TRUE if op == "true" else FALSE
    if op in ("and", "or", "not"):
        operands = data.get("operands")
        if not isinstance(operands, list) or (op == "not" and len(operands) != 1):
            raise InvalidRequest(f"`{op}` needs a list of operands")
        parts = tuple(from_dict(o) for o in operands)
        if op == "not":
            return Not(parts[0])
        return And(parts) if op == "and" else Or(parts)
    field = data.get("field")
    if not isinstance(field, str):
        raise InvalidRequest(f"`{op}` needs a field")
    if op == "present":
        return Present(field)
    value = data.get("value")
    if isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, str | int | tuple):  # bool is an int
        raise InvalidRequest(f"`{op}` needs a string, int or bool value")
    return Compare(str(op), field, value)


# ---- the plan ----------------------------------------------------------------------------------
PlanKind: TypeAlias = Literal["always_allowed", "always_denied", "conditional"]
ALWAYS_ALLOWED: PlanKind = "always_allowed"
ALWAYS_DENIED: PlanKind = "always_denied"
CONDITIONAL: PlanKind = "conditional"


@dataclass(frozen=True, slots=True)
class Plan:
    """The answer: `kind`, and the filter Check's allowed resources satisfy (TRUE or FALSE for the
    two constant kinds)."""

    kind: PlanKind
    filter: Filter

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "filter": self.filter.to_dict()}


def plan_resources(
    view: SnapshotView,
    subject: Entity,
    action: str,
    resource_type: str,
    context: Mapping[str, Value] = EMPTY,
) -> Plan:
    """The resources of `resource_type` that `subject` may `action` in `context`, as a filter.
    Raises PlanUnsupported for what no filter can say exactly (the module docstring)."""
    snapshot, bundle = view.snapshot, view.bundle
    if snapshot is None or bundle is None:
        return Plan(ALWAYS_DENIED, FALSE)  # as Check: no bundle denies
    if not view.tuples.slice.whole:
        raise PlanUnsupported(
            "this sidecar holds a slice of the tuples: relation tests cannot be listed whole"
        )
    info = snapshot.policy.types.get(resource_type)
    if info is None or action not in info.actions:
        return Plan(ALWAYS_DENIED, FALSE)
    planner = _Planner(snapshot.policy, snapshot.graph, view.tuples, subject, context)
    found = planner.allowed(resource_type, action)
    if planner.depth_hit and (resource_type, action) in bundle.settings.fail_open:
        raise PlanUnsupported(
            f"`{action}` on `{resource_type}` is fail-open and a relation walk hit the depth "
            "limit: Check may allow where no filter can say"
        )
    if found == TRUE:
        return Plan(ALWAYS_ALLOWED, TRUE)
    if found == FALSE:
        return Plan(ALWAYS_DENIED, FALSE)
    return Plan(CONDITIONAL, found)


# ---- evaluation and SQL ------------------------------------------------------------------------
_TESTS: Mapping[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "in": lambda value, values: value in values,
    "contains": lambda value, part: part in value,
}


def evaluate(f: Filter, resource: Entity) -> bool:
    """Does `resource` (its id and attributes; a missing attribute is absent) satisfy `f`?"""
    if isinstance(f, Const):
        return f.value
    if isinstance(f, And):
        return all(evaluate(o, resource) for o in f.operands)
    if isinstance(f, Or):
        return any(evaluate(o, resource) for o in f.operands)
    if isinstance(f, Not):
        return not evaluate(f.operand, resource)
    value = _field_value(f.field, resource)
    if isinstance(f, Present):
        return value is not None
    return value is not None and bool(_TESTS[f.op](value, f.value))


def _field_value(field: str, resource: Entity) -> object:
    if field == ID:
        return resource.id
    return resource.attrs.get(field.removeprefix("resource."))


_SQL_OPS = {"eq": "=", "ne": "<>", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


def to_sql(f: Filter, columns: Mapping[str, str]) -> tuple[str, list[object]]:
    """A WHERE clause for `f` and its parameters. `columns` maps each field (`resource.id`,
    `resource.tenant`) to its column, a plain or `table.column` identifier; InvalidRequest for a
    field without one. NULL-correct: it selects exactly the rows `evaluate` accepts."""
    params: list[object] = []
    return _sql(f, columns, params, exact=False, top=True), params


def _sql(
    f: Filter, columns: Mapping[str, str], params: list[object], exact: bool, top: bool
) -> str:
    """`exact`: under a NOT, where a comparison must be false on NULL, not NULL. Elsewhere a NULL
    comparison may stay NULL: outside any NOT the clause is monotone, and WHERE drops NULL."""
    if isinstance(f, Const):
        return "1 = 1" if f.value else "1 = 0"
    if isinstance(f, And | Or):
        parts = [_sql(o, columns, params, exact, top=False) for o in f.operands]
        joined = (" AND " if isinstance(f, And) else " OR ").join(parts)
        return joined if top else f"({joined})"
    if isinstance(f, Not):
        if isinstance(f.operand, Present):
            return f"{_column(columns, f.operand.field)} IS NULL"
        return f"NOT {_sql(f.operand, columns, params, exact=True, top=False)}"
    column = _column(columns, f.field)
    if isinstance(f, Present):
        return f"{column} IS NOT NULL"
    if f.op == "in":
        assert isinstance(f.value, tuple)
        if not f.value:
            return "1 = 0"
        params.extend(f.value)
        test = f"{column} IN ({', '.join('?' * len(f.value))})"
    else:
        params.append(f.value)
        test = f"instr({column}, ?) > 0" if f.op == "contains" else f"{column} {_SQL_OPS[f.op]} ?"
    if exact and f.field != ID:
        return f"({column} IS NOT NULL AND {test})"
    return f"({test})" if exact else test


def _column(columns: Mapping[str, str], field: str) -> str:
    column = columns.get(field)
    if column is None:
        raise InvalidRequest(f"no column for `{field}`")
    if not _COLUMN.fullmatch(column):
        raise InvalidRequest(f"`{column}` is not a column name")
    return column


# ---- simplification ----------------------------------------------------------------------------
# Each rule below is an equivalence under the two-valued semantics (a comparison on a missing
# attribute is false), so simplifying never changes which rows a filter selects; the tests check
# it on random filters and rows.
_NEGATE = {"eq": "ne", "ne": "eq", "lt": "ge", "ge": "lt", "le": "gt", "gt": "le"}


def simplify(f: Filter) -> Filter:
    """An equivalent filter, folded: constants, nesting, duplicates, sets and bounds merged."""
    if isinstance(f, And):
        return _and(*(simplify(o) for o in f.operands))
    if isinstance(f, Or):
        return _or(*(simplify(o) for o in f.operands))
    if isinstance(f, Not):
        return _not(simplify(f.operand))
    if isinstance(f, Compare):
        return _cmp(f.op, f.field, f.value)
    return f


def _cmp(op: str, field: str, value: FilterValue) -> Filter:
    if op != "in":
        return Compare(op, field, value)
    assert isinstance(value, tuple)
    values = _sorted(value)
    if not values:
        return FALSE
    return Compare("eq", field, values[0]) if len(values) == 1 else Compare("in", field, values)


def _sorted(values: Iterable[Scalar]) -> tuple[Scalar, ...]:
    unique = list(dict.fromkeys(values))
    try:
        return tuple(sorted(unique, key=lambda v: (type(v).__name__, v)))
    except TypeError:  # pragma: no cover - values of one field share a type
        return tuple(unique)


def _not(f: Filter) -> Filter:
    if isinstance(f, Const):
        return FALSE if f.value else TRUE
    if isinstance(f, Not):
        return f.operand
    if isinstance(f, And):
        return _or(*(_not(o) for o in f.operands))
    if isinstance(f, Or):
        return _and(*(_not(o) for o in f.operands))
    if isinstance(f, Compare) and f.field == ID and f.op in _NEGATE:  # an id is never missing
        return Compare(_NEGATE[f.op], f.field, f.value)
    return Not(f)


def _and(*operands: Filter) -> Filter:
    ops = _flat(And, operands)
    if FALSE in ops:
        return FALSE
    ops = _given_present(ops)
    ops = _narrow_sets(ops)
    ops = _bounds(ops, conjunction=True)
    ops = _absorb(ops, Or)
    if FALSE in ops or _complementary(ops):
        return FALSE
    return _build(And, ops, TRUE)


def _or(*operands: Filter) -> Filter:
    ops = _flat(Or, operands)
    if TRUE in ops:
        return TRUE
    ops = _merge_sets(ops)
    ops = _bounds(ops, conjunction=False)
    ops = _absorb(ops, And)
    if _complementary(ops):
        return TRUE
    return _build(Or, ops, FALSE)


def _flat(kind: type[And] | type[Or], operands: Iterable[Filter]) -> list[Filter]:
    unit = TRUE if kind is And else FALSE
    out: list[Filter] = []
    for o in operands:
        out.extend(o.operands if isinstance(o, kind) else (o,))
    return [o for o in dict.fromkeys(out) if o != unit]


def _build(kind: type[And] | type[Or], ops: list[Filter], unit: Filter) -> Filter:
    ops = _flat(kind, ops)
    if not ops:
        return unit
    return ops[0] if len(ops) == 1 else kind(tuple(ops))


def _complementary(ops: list[Filter]) -> bool:
    present = set(ops)
    return any(isinstance(o, Not) and o.operand in present for o in ops)


def _absorb(ops: list[Filter], inner: type[And] | type[Or]) -> list[Filter]:
    """`a and (a or b)` is `a`; `a or (a and b)` is `a`."""
    present = set(ops)
    return [o for o in ops if not (isinstance(o, inner) and present.intersection(o.operands))]


def _given_present(ops: list[Filter]) -> list[Filter]:
    """In a conjunction with `present x` (or a comparison on x, which implies it), the other
    operands may assume x present: `not (x eq v)` is `x ne v`, `not present x` is false; and a
    comparison makes `present x` redundant."""
    known = {o.field for o in ops if isinstance(o, Present | Compare)}
    if not known:
        return ops
    out = [o if isinstance(o, Present | Compare) else _assume(o, known) for o in ops]
    compared = {o.field for o in out if isinstance(o, Compare)}
    return _flat(And, (o for o in out if not (isinstance(o, Present) and o.field in compared)))


def _assume(f: Filter, known: set[str]) -> Filter:
    if isinstance(f, Present):
        return TRUE if f.field in known else f
    if isinstance(f, Not):
        inner = f.operand
        if isinstance(inner, Present | Compare) and inner.field in known:
            if isinstance(inner, Present):
                return FALSE
            if inner.op in _NEGATE:
                return Compare(_NEGATE[inner.op], inner.field, inner.value)
        return f
    if isinstance(f, And):
        return _and(*(_assume(o, known) for o in f.operands))
    if isinstance(f, Or):
        return _or(*(_assume(o, known) for o in f.operands))
    return f


def _field_of(f: Filter) -> str | None:
    target = f.operand if isinstance(f, Not) else f
    return target.field if isinstance(target, Present | Compare) else None


def _narrow_sets(ops: list[Filter]) -> list[Filter]:
    """In a conjunction, `x in S` (or `x eq v`) and every other test on x become one `x in S'`:
    S' is S less the values the other tests refuse."""
    sets: dict[str, tuple[Scalar, ...]] = {}
    for o in ops:
        if isinstance(o, Compare) and o.op in ("eq", "in"):
            values = o.value if isinstance(o.value, tuple) else (o.value,)
            held = sets.get(o.field)
            sets[o.field] = values if held is None else tuple(v for v in held if v in values)
    if not sets:
        return ops
    out: list[Filter | str] = []  # a str: the place of the set of that field, filled below
    for o in ops:
        field = _field_of(o)
        narrowed = _narrow(sets[field], o) if field in sets else None
        if field is None or narrowed is None:
            out.append(o)
            continue
        sets[field] = narrowed
        if field not in out:
            out.append(field)
    return _flat(And, (_cmp("in", o, sets[o]) if isinstance(o, str) else o for o in out))


def _narrow(values: tuple[Scalar, ...], f: Filter) -> tuple[Scalar, ...] | None:
    """The values a present attribute may take that also pass `f`; None: not decidable here."""
    negate = isinstance(f, Not)
    test = f.operand if isinstance(f, Not) else f
    if isinstance(test, Present):
        return () if negate else values
    assert isinstance(test, Compare)
    try:
        return tuple(v for v in values if bool(_TESTS[test.op](v, test.value)) != negate)
    except TypeError:
        return None


def _merge_sets(ops: list[Filter]) -> list[Filter]:
    """In a disjunction, `x in A or x eq v` is `x in A + [v]`."""
    sets: dict[str, list[Scalar]] = {}
    for o in ops:
        if isinstance(o, Compare) and o.op in ("eq", "in"):
            sets.setdefault(o.field, []).extend(
                o.value if isinstance(o.value, tuple) else (o.value,)
            )
    out: list[Filter] = []
    for o in ops:
        if isinstance(o, Compare) and o.op in ("eq", "in"):
            if o.field in sets:
                out.append(_cmp("in", o.field, tuple(sets.pop(o.field))))
            continue
        out.append(o)
    return out


def _bounds(ops: list[Filter], *, conjunction: bool) -> list[Filter]:
    """Several bounds of one direction on one attribute keep one: `x gt 1 and x gt 2` is
    `x gt 2`, `x gt 1 or x gt 2` is `x gt 1`."""
    best: dict[tuple[str, str], FilterValue] = {}
    for o in ops:
        if isinstance(o, Compare) and o.op in ("lt", "le", "gt", "ge"):
            key = (o.field, o.op)
            held = best.get(key)
            if held is None or type(held) is not type(o.value):
                best.setdefault(key, o.value)
                continue
            upper = o.op in ("lt", "le")
            tighter = o.value < held if upper else o.value > held  # type: ignore[operator]
            if tighter == conjunction:
                best[key] = o.value
    out: list[Filter] = []
    for o in ops:
        if isinstance(o, Compare) and (o.field, o.op) in best:
            out.append(Compare(o.op, o.field, best[(o.field, o.op)]))
        else:
            out.append(o)
    return list(dict.fromkeys(out))


# ---- the planner -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Tri:
    """A condition over the unknown resource: the rows where it is true, and where it errs (never
    both); it is false on the rest."""

    true: Filter
    error: Filter

    @property
    def false(self) -> Filter:
        return _and(_not(self.true), _not(self.error))


_KNOWN_TRUE = _Tri(TRUE, FALSE)
_KNOWN_FALSE = _Tri(FALSE, FALSE)
_KNOWN_ERROR = _Tri(FALSE, TRUE)


@dataclass(frozen=True, slots=True)
class _Known:
    value: object


@dataclass(frozen=True, slots=True)
class _Failed:
    """A value whose evaluation errs whatever the resource (a missing subject attribute)."""


@dataclass(frozen=True, slots=True)
class _Column:
    """A resource attribute (or the id): known per row only."""

    field: str
    type: str

    @property
    def missing(self) -> Filter:
        return FALSE if self.field == ID else Not(Present(self.field))

    @property
    def present(self) -> Filter:
        return TRUE if self.field == ID else Present(self.field)


_Partial: TypeAlias = _Known | _Failed | _Column
_FAILED = _Failed()
_OP_NAMES = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}
_SWAPPED = {"eq": "eq", "ne": "ne", "lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}
_METHODS: Mapping[str, Callable[..., object]] = {
    "contains": lambda target, item: item in target,
    "contains_any": lambda target, other: bool(set(target) & set(other)),
    "contains_all": lambda target, other: set(other) <= set(target),
    "size": len,
    "starts_with": lambda target, prefix: target.startswith(prefix),
    "ends_with": lambda target, suffix: target.endswith(suffix),
    "lower": lambda target: target.lower(),
}


def _fits(value: object, declared: str) -> bool:
    """Would Python's == between `value` and a value of the declared type ever hold, and SQL's
    agree? Exact types, except that bool and int compare as numbers in both."""
    cls = PYTHON_TYPES[declared]
    return type(value) is cls or (type(value) in (int, bool) and cls in (int, bool))


class _Planner:
    """Check's evaluation, with the resource unknown: each condition becomes a _Tri."""

    def __init__(
        self,
        policy: CheckedPolicy,
        graph: RelationGraph,
        store: TupleStore,
        subject: Entity,
        context: Mapping[str, Value],
    ) -> None:
        self.policy, self.graph, self.store = policy, graph, store
        self.subject, self.context = subject, context
        self.rtype = ""
        self.depth_hit = False
        self._holders: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._bound: dict[int, _Tri] = {}

    # ---- the decision
    def allowed(self, rtype: str, action: str) -> Filter:
        """Deny overrides: a true or erring forbid denies; else a true permit or a held role in
        scope allows (an erring permit or binding grants nothing); else deny."""
        self.rtype = rtype
        rules = [r for r in self.policy.rules if _targets(r, action, rtype)]
        granting = self.policy.granting_roles.get((rtype, action), ())
        if self._bad_request_types(rules, granting):
            return FALSE  # as Check: a subject or context attribute of the wrong type denies
        deny: Filter = FALSE
        for rule in (r for r in rules if r.effect == "forbid"):
            t = _KNOWN_TRUE if rule.condition is None else self.cond(rule.condition)
            deny = _or(deny, t.true, t.error)  # INVARIANT: a forbid that errors denies
            if deny == TRUE:
                return FALSE
        grant: Filter = FALSE
        for rule in (r for r in rules if r.effect == "permit"):
            t = _KNOWN_TRUE if rule.condition is None else self.cond(rule.condition)
            grant = _or(grant, t.true)  # INVARIANT: a permit that errors grants nothing
            if grant == TRUE:
                break
        if grant != TRUE and granting:
            held, _ = self.held(frozenset(granting))
            grant = _or(grant, *(_and(held[r], self.in_scope(r)) for r in granting))
        return _and(_not(deny), grant)

    def _bad_request_types(self, rules: list[ast.RuleDecl], granting: Sequence[str]) -> bool:
        """Whether a subject or context attribute the entry reads has the wrong type (what Check's
        key function refuses; resource attributes are the rows', taken to be of their types)."""
        paths: list[ast.Path] = []
        for rule in rules:
            if rule.condition is not None:
                paths.extend(read_paths(rule.condition))
                paths.extend(self._role_scope_paths(rule.condition))
        for b in self.policy.bindings:
            paths.extend([b.source] if isinstance(b, ast.BindFrom) else read_paths(b.condition))
        for role in granting:
            paths.extend(ast.Path("subject", s) for s in self.policy.role_scopes[role])
        for path in paths:
            if path.root == "resource" or (path.root == "subject" and path.name in ("id", "type")):
                continue
            value = self._attrs(path.root).get(path.name)
            declared = self.policy.attributes.declared(path.root, path.name, self.rtype)
            if (
                value is not None
                and declared is not None
                and type(value) is not PYTHON_TYPES[declared]
            ):
                return True
        return False

    def _role_scope_paths(self, condition: ast.Expr) -> Iterable[ast.Path]:
        for node in ast.walk(condition):
            if isinstance(node, ast.HasRole):
                for role in self.policy.role_includes.get(node.role, (node.role,)):
                    for scope in self.policy.role_scopes.get(role, ()):
                        yield ast.Path("subject", scope)

    def _attrs(self, root: str) -> Mapping[str, Value]:
        return self.subject.attrs if root == "subject" else self.context

    # ---- roles
    def held(self, wanted: frozenset[str]) -> tuple[dict[str, Filter], Filter]:
        """Per wanted role, the rows where the subject holds it; and where a binding erred."""
        held: dict[str, Filter] = dict.fromkeys(sorted(wanted), FALSE)
        erred: Filter = FALSE
        for i, b in enumerate(self.policy.bindings):
            if isinstance(b, ast.BindFrom):
                if b.source.root == "resource":
                    raise PlanUnsupported(f"`bind roles from {b.source}` reads a resource set")
                values = self._attrs(b.source.root).get(b.source.name)
                for role in wanted:
                    if isinstance(values, frozenset) and role in values:
                        held[role] = TRUE
            elif set(b.roles) & wanted:
                t = self._bound.get(i)
                if t is None:
                    t = self._bound[i] = self.cond(b.condition)
                for role in set(b.roles) & wanted:
                    held[role] = _or(held[role], t.true)
                erred = _or(erred, t.error)
        return held, erred

    def in_scope(self, role: str) -> Filter:
        """The rows sharing every scope attribute of `role` with the subject (a missing one on
        either side is out of scope, not an error)."""
        parts: list[Filter] = []
        for name in self.policy.role_scopes[role]:
            mine = self.subject.attrs.get(name)
            declared = self.policy.attributes.resource.get(self.rtype, {}).get(name)
            if mine is None or declared is None or not _fits(mine, declared):
                return FALSE
            self._scalar(_Column(f"resource.{name}", declared), f"the scope of role `{role}`")
            parts.append(Compare("eq", f"resource.{name}", mine))  # type: ignore[arg-type]
        return _and(*parts)

    def has_role(self, role: str) -> _Tri:
        """`subject has role R`: R or a role extending it, held within its scope; a binding error
        with no wanted role held at all leaves the question unanswered (the condition errs)."""
        held, erred = self.held(frozenset(self.policy.role_includes.get(role, ())))
        any_held = _or(*held.values())
        true = _or(*(_and(h, self.in_scope(r)) for r, h in held.items()))
        return _Tri(true, _and(erred, _not(any_held)))

    # ---- conditions
    def cond(self, e: ast.Expr) -> _Tri:
        if isinstance(e, ast.And):
            return self._all(ast.operands(e))
        if isinstance(e, ast.Or):
            return self._any(ast.operands(e))
        if isinstance(e, ast.Not):
            t = self.cond(e.operand)
            return _Tri(t.false, t.error)
        if isinstance(e, ast.Present):
            return self._present(e.path)
        if isinstance(e, ast.Compare):
            return self._compare(e)
        if isinstance(e, ast.In):
            return self._in(e)
        if isinstance(e, ast.RelationCheck):
            return self._relation(e)
        if isinstance(e, ast.HasRole):
            return self.has_role(e.role)
        if isinstance(e, ast.MethodCall):
            return self._method_cond(e)
        return self._truth(self.value(e), e)

    def _all(self, operands: list[ast.Expr]) -> _Tri:
        """`a and b`, short-circuit: true where both are, erring where a errs or a is true and b
        errs; b is not evaluated where no row reaches it."""
        true: Filter = TRUE
        error: Filter = FALSE
        for operand in operands:
            if true == FALSE:
                break
            t = self.cond(operand)
            error = _or(error, _and(true, t.error))
            true = _and(true, t.true)
        return _Tri(true, error)

    def _any(self, operands: list[ast.Expr]) -> _Tri:
        true: Filter = FALSE
        error: Filter = FALSE
        reach: Filter = TRUE  # the rows where every operand so far is false
        for operand in operands:
            if reach == FALSE:
                break
            t = self.cond(operand)
            true = _or(true, _and(reach, t.true))
            error = _or(error, _and(reach, t.error))
            reach = _and(reach, t.false)
        return _Tri(true, error)

    def _truth(self, p: _Partial, e: ast.Expr) -> _Tri:
        if isinstance(p, _Failed):
            return _KNOWN_ERROR
        if isinstance(p, _Known):
            return _KNOWN_TRUE if p.value else _KNOWN_FALSE
        if p.type != "bool":  # pragma: no cover - the checker wants a bool condition
            raise PlanUnsupported(f"`{show(e)}` is not a condition")
        return _Tri(Compare("eq", p.field, True), p.missing)

    def _present(self, path: ast.Path) -> _Tri:
        if path.root == "resource":
            if path.name in ("id", "type"):
                return _KNOWN_TRUE
            column = self._path(path)
            return _Tri(column.present, FALSE) if isinstance(column, _Column) else _KNOWN_FALSE
        if path.root == "subject" and path.name in ("id", "type"):
            return _KNOWN_TRUE
        return _KNOWN_TRUE if path.name in self._attrs(path.root) else _KNOWN_FALSE

    def _compare(self, e: ast.Compare) -> _Tri:
        left, right = self.value(e.left), self.value(e.right)
        op = _OP_NAMES[e.op]
        if isinstance(left, _Failed) or isinstance(right, _Failed):
            return _KNOWN_ERROR
        if isinstance(left, _Known) and isinstance(right, _Known):
            a, b = left.value, right.value
            return _known(lambda: _TESTS[op](a, b))
        if isinstance(left, _Column) and isinstance(right, _Column):
            raise PlanUnsupported(f"`{show(e)}` compares two resource attributes")
        if isinstance(right, _Column):
            assert isinstance(left, _Known)
            return self._compare_column(right, _SWAPPED[op], left.value, e)
        assert isinstance(left, _Column) and isinstance(right, _Known)
        return self._compare_column(left, op, right.value, e)

    def _compare_column(self, column: _Column, op: str, value: object, e: ast.Expr) -> _Tri:
        self._scalar(column, show(e))
        if not _fits(value, column.type):
            # Python's answer on a present row: == is false, != true, an order errs.
            if op in ("eq", "ne"):
                return _Tri(column.present if op == "ne" else FALSE, column.missing)
            return _KNOWN_ERROR
        return _Tri(Compare(op, column.field, value), column.missing)  # type: ignore[arg-type]

    def _in(self, e: ast.In) -> _Tri:
        element, collection = self.value(e.element), self.value(e.collection)
        if isinstance(element, _Failed) or isinstance(collection, _Failed):
            return _KNOWN_ERROR
        if isinstance(element, _Known) and isinstance(collection, _Known):
            item, items = element.value, collection.value
            return _known(lambda: item in items)  # type: ignore[operator]
        if (
            isinstance(element, _Column)
            and isinstance(collection, _Known)
            and isinstance(collection.value, frozenset)
        ):
            return self._member(element, collection.value, show(e))
        raise PlanUnsupported(f"`{show(e)}` needs a set-valued resource attribute")

    def _member(self, column: _Column, values: frozenset[Any], what: str) -> _Tri:
        self._scalar(column, what)
        fitting = tuple(v for v in values if _fits(v, column.type))
        return _Tri(_cmp("in", column.field, fitting), column.missing)

    def _method_cond(self, e: ast.MethodCall) -> _Tri:
        target, args = self.value(e.target), [self.value(a) for a in e.args]
        if any(isinstance(p, _Failed) for p in (target, *args)):
            return _KNOWN_ERROR
        if isinstance(target, _Known) and all(isinstance(a, _Known) for a in args):
            return self._truth(self._call(e.method, target, args), e)
        if e.method == "contains" and len(args) == 1:
            (arg,) = args
            if (
                isinstance(target, _Column)
                and target.type == "string"
                and isinstance(arg, _Known)
                and isinstance(arg.value, str)
            ):
                return _Tri(Compare("contains", target.field, arg.value), target.missing)
            if (
                isinstance(target, _Known)
                and isinstance(target.value, frozenset)
                and isinstance(arg, _Column)
            ):
                return self._member(arg, target.value, show(e))
        if isinstance(target, _Column):
            self._scalar(target, show(e))
        raise PlanUnsupported(f"`{show(e)}`: only `contains` of a string attribute is a filter")

    # ---- values
    def value(self, e: ast.Expr) -> _Partial:
        if isinstance(e, ast.Literal):
            return _Known(e.value)
        if isinstance(e, ast.Path):
            return self._path(e)
        if isinstance(e, ast.MethodCall):
            target, args = self.value(e.target), [self.value(a) for a in e.args]
            if any(isinstance(p, _Failed) for p in (target, *args)):
                return _FAILED
            if isinstance(target, _Known) and all(isinstance(a, _Known) for a in args):
                return self._call(e.method, target, args)
            raise PlanUnsupported(f"`{show(e)}`: a method of a resource attribute")
        t = self.cond(e)  # a condition used as a value (`(a and b) == true`)
        if t.error == TRUE:
            return _FAILED
        if t.error == FALSE and t.true in (TRUE, FALSE):
            return _Known(t.true == TRUE)
        raise PlanUnsupported(f"`{show(e)}`: a condition on the resource used as a value")

    def _call(self, method: str, target: _Known, args: list[_Partial]) -> _Partial:
        try:
            return _Known(_METHODS[method](target.value, *(a.value for a in args)))  # type: ignore[union-attr]
        except Exception:  # as Check: a method that fails errs
            return _FAILED

    def _path(self, p: ast.Path) -> _Partial:
        if p.root == "resource":
            if p.name == "id":
                return _Column(ID, "string")
            if p.name == "type":
                return _Known(self.rtype)
            declared = self.policy.attributes.resource.get(self.rtype, {}).get(p.name)
            # An attribute the type does not declare is missing in every row: reading it errs.
            return _FAILED if declared is None else _Column(f"resource.{p.name}", declared)
        if p.root == "subject" and p.name in ("id", "type"):
            return _Known(self.subject.id if p.name == "id" else self.subject.type)
        attrs = self._attrs(p.root)
        return _Known(attrs[p.name]) if p.name in attrs else _FAILED

    def _scalar(self, column: _Column, what: str) -> None:
        if column.type.startswith("set<"):
            raise PlanUnsupported(f"{what}: `{column.field}` is a set, which no filter compares")

    # ---- relations
    def _relation(self, e: ast.RelationCheck) -> _Tri:
        entity = e.entity
        if entity.kind == "resource":
            return self._relation_on(self.rtype, _Column(ID, "string"), e.relation)
        if entity.kind == "subject":
            return self._known_relation(self.subject.type, self.subject.id, e.relation)
        assert entity.id is not None
        oid = self.value(entity.id)
        if isinstance(oid, _Failed):
            return _KNOWN_ERROR
        if isinstance(oid, _Known):
            if not isinstance(oid.value, str):
                return _KNOWN_ERROR  # as Check: a relation check needs a string id
            return self._known_relation(entity.type, oid.value, e.relation)
        if oid.type != "string":  # pragma: no cover - the checker wants a string id
            return _KNOWN_ERROR
        return self._relation_on(entity.type, oid, e.relation)

    def _known_relation(self, object_type: str, object_id: str, relation: str) -> _Tri:
        try:
            granted = self.graph.relation(object_type, object_id, relation, self.subject)
        except DepthLimitExceeded:
            self.depth_hit = True
            return _KNOWN_ERROR
        except EvaluationError:
            return _KNOWN_ERROR
        return _KNOWN_TRUE if granted else _KNOWN_FALSE

    def _relation_on(self, object_type: str, column: _Column, relation: str) -> _Tri:
        """`subject has REL on TYPE(column)`: the rows whose column names an object the relation
        holds on, and those where the walk erred (or the column is missing)."""
        granted, failed = self._holders_of(object_type, relation)
        true = _cmp("in", column.field, granted)
        return _Tri(true, _or(column.missing, _cmp("in", column.field, failed)))

    def _holders_of(
        self, object_type: str, relation: str
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The ids of `object_type` in the tuple store on which the subject holds `relation`, and
        those whose walk erred. An object without tuples holds no relation and never errs, so the
        store's ids are every candidate."""
        key = (object_type, relation)
        cached = self._holders.get(key)
        if cached is not None:
            return cached
        subject = f"{self.subject.type}:{self.subject.id}"
        granted: list[str] = []
        failed: list[str] = []
        for oid in sorted(self.store.object_ids(object_type)):
            try:
                if self.graph.check(object_type, oid, relation, subject):
                    granted.append(oid)
            except DepthLimitExceeded:
                self.depth_hit = True
                failed.append(oid)
            except EvaluationError:
                failed.append(oid)
        found = self._holders[key] = (tuple(granted), tuple(failed))
        return found


def _known(compute: Callable[[], object]) -> _Tri:
    try:
        return _KNOWN_TRUE if compute() else _KNOWN_FALSE
    except Exception:  # as Check: a comparison that fails errs
        return _KNOWN_ERROR


def _targets(rule: ast.RuleDecl, action: str, rtype: str) -> bool:
    return (rule.actions is None or action in rule.actions) and (
        rule.types is None or rtype in rule.types
    )
