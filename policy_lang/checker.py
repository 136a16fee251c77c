"""Static checks over a whole bundle's policy files: names, types, cycles, and rules that cannot matter.

`check(files)` returns a CheckedPolicy and every diagnostic (errors and warnings) at once. The
checked policy also carries the static facts every consumer needs (role ancestors, role scopes,
the roles granting each (type, action), the attribute type table), computed here once, read-only,
so that the compiler, the reference interpreter and the tuple schema never derive them again.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from policy_lang import ast, limits
from policy_lang.diagnostics import Diagnostic, Loc

BUILTIN_ATTRS = {"id": "string", "type": "string"}
SCALARS = {"string", "int", "bool"}
ATTR_TYPES = SCALARS | {"set<string>", "set<int>"}

# method name -> {receiver type -> (argument types, result type)}; "T" is the set's element type.
METHODS: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {
    "contains": {"set": (("T",), "bool"), "string": (("string",), "bool")},
    "contains_any": {"set": (("set<T>",), "bool")},
    "contains_all": {"set": (("set<T>",), "bool")},
    "size": {"set": ((), "int"), "string": ((), "int")},
    "starts_with": {"string": (("string",), "bool")},
    "ends_with": {"string": (("string",), "bool")},
    "lower": {"string": ((), "string")},
}

# The Python class a request carries each attribute type as. Checked exactly (`type(v) is cls`), not
# with isinstance: True == 1 and hash(True) == hash(1), so a bool must never pass for an int.
PYTHON_TYPES: Mapping[str, type] = MappingProxyType(
    {"string": str, "int": int, "bool": bool, "set<string>": frozenset, "set<int>": frozenset}
)


def _empty() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AttributeTable:
    """The declared type of every attribute a request may carry: what a request is validated
    against before any condition runs."""

    # name -> type of its first declaration over all types: a subject may be of any type.
    subject: Mapping[str, str] = field(default_factory=_empty)
    resource: Mapping[str, Mapping[str, str]] = field(default_factory=_empty)
    context: Mapping[str, str] = field(default_factory=_empty)

    def declared(self, root: str, name: str, resource_type: str) -> str | None:
        """The type `root.name` must have in a request on `resource_type`; None: unchecked."""
        if root == "context":
            return self.context.get(name)
        if name in BUILTIN_ATTRS:
            return BUILTIN_ATTRS[name]
        if root == "resource":
            return self.resource.get(resource_type, {}).get(name)
        return self.subject.get(name)


@dataclass(slots=True)
class TypeInfo:
    decl: ast.TypeDecl
    attributes: dict[str, ast.Attribute] = field(default_factory=dict)
    relations: dict[str, ast.RelationDecl] = field(default_factory=dict)
    permissions: dict[str, ast.PermissionDecl] = field(default_factory=dict)
    actions: frozenset[str] = frozenset()

    def has_relation(self, name: str) -> bool:
        return name in self.relations or name in self.permissions


@dataclass(slots=True)
class CheckedPolicy:
    """The merged, checked policy of a bundle: what the compiler reads."""

    types: dict[str, TypeInfo] = field(default_factory=dict)
    context: dict[str, ast.Attribute] = field(default_factory=dict)
    roles: dict[str, ast.RoleDecl] = field(default_factory=dict)
    bindings: list[ast.BindWhen | ast.BindFrom] = field(default_factory=list)
    rules: list[ast.RuleDecl] = field(default_factory=list)
    # ---- static facts, derived once by `check` (read-only mappings of immutable values)
    # role -> itself and every role it extends, transitively
    role_ancestors: Mapping[str, frozenset[str]] = field(default_factory=_empty)
    # role -> itself and every role that extends it: who satisfies `subject has role R`
    role_includes: Mapping[str, frozenset[str]] = field(default_factory=_empty)
    # role -> the attributes subject and resource must share (its own scope and its ancestors'), sorted
    role_scopes: Mapping[str, tuple[str, ...]] = field(default_factory=_empty)
    # (type, action) -> the roles whose grants (own or inherited) cover it, in name order
    granting_roles: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=_empty)
    attributes: AttributeTable = field(default_factory=AttributeTable)
    # (type, relation) of the relations that nest like groups: direct relations named as a
    # userset somewhere (`group#member`) whose own usersets are all such relations. Who holds one
    # is the transitive closure of its tuples, a question of data alone (no rewrite, no arrow),
    # so it is answered from a flattened index (pdp.engine.membership, Zanzibar's Leopard).
    group_relations: frozenset[tuple[str, str]] = frozenset()
    # (type, relation) of every direct relation with usersets, all of them group relations:
    # `relation viewer: user | group#member`. Holding one is membership in the closure.
    membership_relations: frozenset[tuple[str, str]] = frozenset()


def check(
    files: Iterable[ast.PolicyFile], lost: frozenset[str] = frozenset()
) -> tuple[CheckedPolicy, list[Diagnostic]]:
    """`lost`: names (types, roles; `context`) declared in text that did not parse
    (PolicyError.lost). Whatever might refer to them is not called unknown: the syntax error
    is the one problem, and a cascade of "unknown" errors would only hide it."""
    checker = _Checker(lost)
    checker.run(list(files))
    _derive_facts(checker.policy)
    return checker.policy, checker.diagnostics


def _derive_facts(p: CheckedPolicy) -> None:
    """Fill the checked policy's static facts. Safe on a policy with errors: unknown parents are
    skipped and an inheritance cycle ends the walk."""
    ancestors = {name: _role_ancestors(p.roles, name) for name in p.roles}
    p.role_ancestors = MappingProxyType(ancestors)
    p.role_includes = MappingProxyType(
        {name: frozenset(r for r in p.roles if name in ancestors[r]) for name in p.roles}
    )
    p.role_scopes = MappingProxyType(
        {
            name: tuple(sorted({p.roles[a].scope for a in ancestors[name] if p.roles[a].scope}))
            for name in p.roles
        }
    )
    grants = {
        name: [g for a in ancestors[name] for g in p.roles[a].grants] for name in sorted(p.roles)
    }
    p.granting_roles = MappingProxyType(
        {
            (type_name, action): tuple(
                name
                for name, gs in grants.items()
                if any(_covers_target(g.actions, g.types, action, type_name) for g in gs)
            )
            for type_name, info in p.types.items()
            for action in sorted(info.actions)
        }
    )
    subject: dict[str, str] = {}
    for info in p.types.values():
        for name, attr in info.attributes.items():
            subject.setdefault(name, attr.type)
    p.attributes = AttributeTable(
        MappingProxyType(subject),
        MappingProxyType(
            {
                t: MappingProxyType({n: a.type for n, a in info.attributes.items()})
                for t, info in p.types.items()
            }
        ),
        MappingProxyType({n: a.type for n, a in p.context.items()}),
    )
    usersets = _usersets_admitted(p)
    p.group_relations = _group_relations(p, usersets)
    p.membership_relations = frozenset(
        rel for rel, admitted in usersets.items() if admitted and admitted <= p.group_relations
    )


def _usersets_admitted(p: CheckedPolicy) -> dict[tuple[str, str], frozenset[tuple[str, str]]]:
    """(type, relation) of every direct relation -> the (type, relation) of the usersets it admits."""
    return {
        (type_name, name): frozenset((r.type, r.relation) for r in decl.subjects if r.relation)
        for type_name, info in p.types.items()
        for name, decl in info.relations.items()
    }


def _group_relations(
    p: CheckedPolicy, usersets: Mapping[tuple[str, str], frozenset[tuple[str, str]]]
) -> frozenset[tuple[str, str]]:
    """The direct relations named as usersets, less (until none is left to drop) every one that
    admits a userset outside the set: a permission, or a relation that leads to one."""
    groups = {ref for admitted in usersets.values() for ref in admitted if ref in usersets}
    while dropped := {g for g in groups if not usersets[g] <= groups}:
        groups -= dropped
    return frozenset(groups)


def _role_ancestors(roles: Mapping[str, ast.RoleDecl], name: str) -> frozenset[str]:
    seen: set[str] = set()
    stack = [name]
    while stack:
        role = stack.pop()
        if role in seen or role not in roles:
            continue
        seen.add(role)
        stack.extend(roles[role].parents)
    return frozenset(seen)


def _covers_target(
    actions: tuple[str, ...] | None, types: tuple[str, ...] | None, action: str, type_name: str
) -> bool:
    return (actions is None or action in actions) and (types is None or type_name in types)


# What checking one condition found, by the condition node itself: a reload reparses only the
# files that changed (the bundle loader caches the others), so most of its conditions are the very
# same nodes as last time. Each node is held, so its id is not reused while it is a key.
_MAX_REMEMBERED = 50_000
# condition -> (it, the limit it exceeds, its out-of-range integers): the condition alone decides
_limits: dict[int, tuple[ast.Expr, limits.Excess | None, list[ast.Literal]]] = {}


class _RuleChecks:
    """The checks of rules under one schema: the types, context and roles declared, by the
    declarations themselves (held, in order), which are all that a rule's check reads besides
    the rule. A new schema starts afresh."""

    def __init__(self, schema: tuple[ast.Item, ...]) -> None:
        self.schema = schema
        self.found: dict[int, tuple[ast.RuleDecl, list[Diagnostic]]] = {}  # rule -> its findings

    def fits(self, schema: tuple[ast.Item, ...]) -> bool:
        return len(schema) == len(self.schema) and all(
            a is b for a, b in zip(schema, self.schema, strict=True)
        )


_rule_checks = [_RuleChecks(())]  # the latest schema's


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _MAX_REMEMBERED:
        cache.clear()
    cache[key] = value


def did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    """`did you mean `viewer`?` for the known name nearest `name` (difflib), or ""."""
    near = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"did you mean `{prefix}{near[0]}`?" if near else ""


class _Checker:
    def __init__(self, lost: frozenset[str] = frozenset()) -> None:
        self.policy = CheckedPolicy()
        self.diagnostics: list[Diagnostic] = []
        self._rule_checks = _rule_checks[0]
        self.lost = lost
        # A type or role declaration was lost: any type's attributes, relations and actions may
        # be the ones it declared.
        self.opaque = bool(lost - {"context"})
        # Conditions and permissions past a limit (by id): reported once, then never walked by
        # the recursive checks below, which the limits are what keep bounded.
        self._oversized: set[int] = set()

    def error(self, code: str, message: str, loc: Loc, hint: str = "") -> None:
        self.diagnostics.append(Diagnostic(code, message, loc, "error", hint))

    def warn(self, code: str, message: str, loc: Loc, hint: str = "") -> None:
        self.diagnostics.append(Diagnostic(code, message, loc, "warning", hint))

    def run(self, files: list[ast.PolicyFile]) -> None:
        items = [item for f in sorted(files, key=lambda f: f.path) for item in f.items]
        schema = tuple(
            i for i in items if isinstance(i, ast.TypeDecl | ast.ContextDecl | ast.RoleDecl)
        )
        if self.lost:  # what a rule's check finds depends on `lost` too: not remembered
            self._rule_checks = _RuleChecks(schema)
        elif not self._rule_checks.fits(schema):
            self._rule_checks = _rule_checks[0] = _RuleChecks(schema)
        self._collect(items)
        self._check_limits()
        for info in self.policy.types.values():
            self._check_type(info)
        self._check_permission_cycles()
        self._check_permission_depth()
        self._check_roles()
        for binding in self.policy.bindings:
            self._check_binding(binding)
        for rule in self.policy.rules:
            self._check_rule(rule)
        self._check_shadowing()

    # ---- limits
    def _check_limits(self) -> None:
        conditions = [r.condition for r in self.policy.rules if r.condition is not None]
        conditions += [b.condition for b in self.policy.bindings if isinstance(b, ast.BindWhen)]
        for condition in conditions:
            known = _limits.get(id(condition))
            if known is None or known[0] is not condition:
                known = (
                    condition,
                    limits.expression_excess(condition),
                    list(limits.int_literals(condition)),
                )
                _remember(_limits, id(condition), known)
            _, excess, out_of_range = known
            if excess is not None:
                self.error(
                    excess.code,
                    excess.message,
                    excess.loc,
                    hint="split it into several rules, or use `in [...]` for a list of values",
                )
                self._oversized.add(id(condition))
            for literal in out_of_range:
                self.error(
                    "int_out_of_range",
                    f"an integer must lie within ±2**53 ({limits.MAX_INT:,})",
                    literal.loc,
                )
        for info in self.policy.types.values():
            for perm in info.permissions.values():
                nodes, _, _ = limits.userset_shape(perm.expr)
                if nodes > limits.MAX_USERSET_NODES:
                    self.error(
                        "permission_too_large",
                        f"permission `{info.decl.name}.{perm.name}` may have at most {limits.MAX_USERSET_NODES:,} parts",
                        perm.loc,
                    )
                    self._oversized.add(id(perm.expr))

    def _collect(self, items: list[ast.Item]) -> None:
        p = self.policy
        rule_names: dict[str, ast.RuleDecl] = {}
        for item in items:
            if isinstance(item, ast.TypeDecl):
                if item.name in p.types:
                    self._duplicate("type", item.name, item.loc, p.types[item.name].decl.loc)
                    continue
                p.types[item.name] = self._type_info(item)
            elif isinstance(item, ast.ContextDecl):
                for attr in item.attributes:
                    if attr.name in p.context:
                        self._duplicate(
                            "context attribute", attr.name, attr.loc, p.context[attr.name].loc
                        )
                    self._check_attr_type(attr)
                    p.context[attr.name] = attr
            elif isinstance(item, ast.RoleDecl):
                if item.name in p.roles:
                    self._duplicate("role", item.name, item.loc, p.roles[item.name].loc)
                    continue
                p.roles[item.name] = item
            elif isinstance(item, ast.BindWhen | ast.BindFrom):
                p.bindings.append(item)
            elif isinstance(item, ast.RuleDecl):
                if item.name in rule_names:
                    self._duplicate("rule", item.name, item.loc, rule_names[item.name].loc)
                    continue
                rule_names[item.name] = item
                p.rules.append(item)
        # Determinism: rules are evaluated in name order, whatever the order of files.
        p.rules.sort(key=lambda r: r.name)

    def _duplicate(self, kind: str, name: str, loc: Loc, first: Loc) -> None:
        self.error("duplicate_name", f"{kind} `{name}` is already defined at {first}", loc)

    def _type_info(self, decl: ast.TypeDecl) -> TypeInfo:
        info = TypeInfo(decl)
        for attr in decl.attributes:
            if attr.name in info.attributes or attr.name in BUILTIN_ATTRS:
                self.error(
                    "duplicate_name",
                    f"attribute `{attr.name}` is already defined on `{decl.name}`",
                    attr.loc,
                )
                continue
            self._check_attr_type(attr)
            info.attributes[attr.name] = attr
        seen: dict[str, Loc] = {}
        members: list[ast.RelationDecl | ast.PermissionDecl] = [*decl.relations, *decl.permissions]
        for member in members:
            if member.name in seen:
                self._duplicate(
                    f"relation or permission on `{decl.name}`",
                    member.name,
                    member.loc,
                    seen[member.name],
                )
                continue
            seen[member.name] = member.loc
            if isinstance(member, ast.RelationDecl):
                info.relations[member.name] = member
            else:
                info.permissions[member.name] = member
        if len(set(decl.actions)) != len(decl.actions):
            self.error("duplicate_name", f"an action is listed twice on `{decl.name}`", decl.loc)
        info.actions = frozenset(decl.actions)
        return info

    def _check_attr_type(self, attr: ast.Attribute) -> None:
        if attr.type not in ATTR_TYPES:
            near = did_you_mean(attr.type, ATTR_TYPES)
            self.error(
                "unknown_type",
                f"`{attr.type}` is not an attribute type",
                attr.loc,
                hint=near or "use string, int, bool, set<string> or set<int>",
            )

    def _check_type(self, info: TypeInfo) -> None:
        types = self.policy.types
        for rel in info.relations.values():
            for ref in rel.subjects:
                target = types.get(ref.type)
                if target is None:
                    self._unknown_type(ref.type, ref.loc)
                elif ref.relation and not target.has_relation(ref.relation):
                    self.error(
                        "unknown_relation",
                        f"type `{ref.type}` has no relation `{ref.relation}`",
                        ref.loc,
                        hint=did_you_mean(ref.relation, _relations(target)),
                    )
        for perm in info.permissions.values():
            if id(perm.expr) not in self._oversized:
                stack = [perm.expr]
                while stack:
                    node = stack.pop()
                    self._check_userset(info, node, perm.loc)
                    stack.extend(reversed(ast.userset_children(node)))

    def _check_userset(self, info: TypeInfo, expr: ast.UsersetExpr, loc: Loc) -> None:
        """One leaf of a permission's rewrite (the caller walks the tree)."""
        if isinstance(expr, ast.Computed):
            if not info.has_relation(expr.relation):
                self.error(
                    "unknown_relation",
                    f"type `{info.decl.name}` has no relation `{expr.relation}`",
                    expr.loc or loc,
                    hint=did_you_mean(expr.relation, _relations(info)),
                )
        elif isinstance(expr, ast.TupleToUserset):
            self._check_arrow(info, expr)

    def _check_arrow(self, info: TypeInfo, expr: ast.TupleToUserset) -> None:
        """`tupleset->computed` hops, as Zanzibar's tuple-to-userset and SpiceDB's arrow do, to the
        object of every subject stored in `tupleset`, direct (`folder:f1`) or userset
        (`folder:f2#parent`: the object `folder:f2`, its relation ignored). So the types it
        reaches are those of every subject the relation admits. A wildcard (`user:*`) names no
        object: SpiceDB refuses an arrow over a relation that admits one, and so do we."""
        tupleset = info.relations.get(expr.tupleset)
        if tupleset is None:
            self.error(
                "unknown_relation",
                f"`{expr.tupleset}` in `{expr.tupleset}->{expr.computed}` must be a relation of `{info.decl.name}`",
                expr.loc,
                hint=did_you_mean(expr.tupleset, info.relations),
            )
            return
        for ref in tupleset.subjects:
            if ref.wildcard:
                self.error(
                    "wildcard_arrow",
                    f"`{expr.tupleset}->{expr.computed}` walks `{expr.tupleset}`, which admits the wildcard `{ref}`: a wildcard is not an object to hop to",
                    expr.loc,
                    hint=f"walk a relation without `{ref}` (SpiceDB refuses such an arrow too)",
                )
        targets = [self.policy.types.get(r.type) for r in tupleset.subjects if not r.wildcard]
        reached = [t for t in targets if t is not None]
        # A type that is not known is reported where the relation names it; what it would
        # have held cannot be told.
        if (
            reached
            and len(reached) == len(targets)
            and not any(t.has_relation(expr.computed) for t in reached)
        ):
            self.error(
                "unknown_relation",
                f"no type reachable through `{expr.tupleset}` has a relation `{expr.computed}`",
                expr.loc,
                hint=did_you_mean(expr.computed, [n for t in reached for n in _relations(t)]),
            )

    def _check_permission_cycles(self) -> None:
        # Computed usersets stay on the same object; a cycle among them never reaches data and
        # can never terminate. Hops through tuples (`parent->view`, `group#member`) walk data and
        # are bounded at run time by the depth limit instead.
        for info in self.policy.types.values():
            edges = {
                name: set(_computed_refs(p.expr))
                for name, p in info.permissions.items()
                if id(p.expr) not in self._oversized
            }
            for start, perm in info.permissions.items():
                if _reaches(edges, start, start):
                    self.error(
                        "cycle",
                        f"permission `{info.decl.name}.{start}` is defined in terms of itself",
                        perm.loc,
                        hint="a permission may refer to itself only through a relation to another object, e.g. `parent->view`",
                    )

    def _check_permission_depth(self) -> None:
        """A permission calls the permissions it names directly, so its depth at run time
        counts theirs: `a = b & c` is one level deeper than the deeper of `b` and `c`."""
        for info in self.policy.types.values():
            shapes = {
                name: limits.userset_shape(p.expr)
                for name, p in info.permissions.items()
                if id(p.expr) not in self._oversized
            }
            depth: dict[str, int] = {}
            # Dependency order by repeated passes; permissions on a cycle (already reported)
            # or naming an oversized one never resolve and are left alone.
            pending = dict(shapes)
            while pending:
                progressed = False
                for name, (_, own, leaves) in list(pending.items()):
                    refs = [(c, lv) for c, lv in leaves if c.relation in info.permissions]
                    if any(c.relation not in depth for c, _ in refs):
                        continue
                    total = max([own, *(lv - 1 + depth[c.relation] for c, lv in refs)])
                    depth[name] = total
                    del pending[name]
                    progressed = True
                    over = total > limits.MAX_USERSET_DEPTH
                    if over and all(depth[c.relation] <= limits.MAX_USERSET_DEPTH for c, _ in refs):
                        perm = info.permissions[name]
                        self.error(
                            "permission_too_deep",
                            f"permission `{info.decl.name}.{name}` nests {total} levels deep, counting the permissions it names; the limit is {limits.MAX_USERSET_DEPTH}",
                            perm.loc,
                            hint="name fewer permissions inside each other, or flatten `a + (b + c)` to `a + b + c`",
                        )
                if not progressed:
                    break

    # ---- roles
    def _check_roles(self) -> None:
        roles = self.policy.roles
        for role in roles.values():
            for parent in role.parents:
                if parent not in roles:
                    self._unknown_role(parent, role.loc)
            if (
                role.scope
                and not self.opaque
                and not any(role.scope in t.attributes for t in self.policy.types.values())
            ):
                self.error(
                    "unknown_attribute",
                    f"no type has the scope attribute `{role.scope}`",
                    role.loc,
                    hint=did_you_mean(
                        role.scope, {a for t in self.policy.types.values() for a in t.attributes}
                    ),
                )
            for grant in role.grants:
                self._check_target(grant.actions, grant.types, grant.loc)
        edges = {name: set(r.parents) for name, r in roles.items()}
        for name, role in roles.items():
            if _reaches(edges, name, name):
                self.error("cycle", f"role `{name}` inherits from itself", role.loc)
        depths = limits.role_depths(roles)
        for name, role in roles.items():
            own = depths.get(name, 0)
            if own > limits.MAX_ROLE_DEPTH and all(
                depths.get(p, 0) <= limits.MAX_ROLE_DEPTH for p in role.parents
            ):
                self.error(
                    "role_chain_too_long",
                    f"role `{name}` extends {own} levels of roles; the limit is {limits.MAX_ROLE_DEPTH}",
                    role.loc,
                )

    def _check_target(
        self, actions: tuple[str, ...] | None, types: tuple[str, ...] | None, loc: Loc
    ) -> None:
        known = self.policy.types
        for t in types or ():
            if t not in known:
                self._unknown_type(t, loc)
        scope = [known[t] for t in (types or known) if t in known]
        if not scope or self._may_be_lost(types):
            return  # every named type is unknown, already reported; action errors would be noise
        for action in actions or ():
            if not any(action in info.actions for info in scope):
                names = ", ".join(f"`{i.decl.name}`" for i in scope) or "any type"
                self.error(
                    "unknown_action",
                    f"action `{action}` is not declared on {names}",
                    loc,
                    hint=did_you_mean(action, {a for info in scope for a in info.actions}),
                )

    def _may_be_lost(self, types: tuple[str, ...] | None) -> bool:
        """Whether `types` (None: any type) may take in a type whose declaration was lost."""
        return self.opaque and (types is None or any(t in self.lost for t in types))

    def _unknown_type(self, name: str, loc: Loc) -> None:
        if name not in self.lost:
            hint = did_you_mean(name, self.policy.types)
            self.error("unknown_type", f"unknown type `{name}`", loc, hint=hint)

    def _unknown_role(self, name: str, loc: Loc) -> None:
        if name not in self.lost:
            hint = did_you_mean(name, self.policy.roles)
            self.error("unknown_role", f"unknown role `{name}`", loc, hint=hint)

    def _check_binding(self, binding: ast.BindWhen | ast.BindFrom) -> None:
        if isinstance(binding, ast.BindFrom):
            source = binding.source
            kind = self._path_type(source, None)
            if kind is not None and kind != "set<string>":
                self.error(
                    "type_error",
                    f"`{source}` must be a set<string> of role names, not {kind}",
                    source.loc,
                )
            return
        for role in binding.roles:
            if role not in self.policy.roles:
                self._unknown_role(role, binding.loc)
        for node in ast.walk(binding.condition):
            if isinstance(node, ast.HasRole):
                # Bindings decide who holds roles; letting them ask about roles makes
                # `bind a when subject has role b` + `bind b when subject has role a` loop.
                self.error(
                    "cycle",
                    "a role binding cannot depend on `has role`",
                    node.loc,
                    hint="bind both roles from the same attribute or relation instead",
                )
        if id(binding.condition) not in self._oversized:
            self._expect_bool(binding.condition, None)

    # ---- rules
    def _check_rule(self, rule: ast.RuleDecl) -> None:
        """What checking `rule` finds depends on it and the schema alone: found once per both."""
        known = self._rule_checks.found.get(id(rule))
        if known is not None and known[0] is rule:
            self.diagnostics.extend(known[1])
            return
        before = len(self.diagnostics)
        self._check_one_rule(rule)
        _remember(self._rule_checks.found, id(rule), (rule, self.diagnostics[before:]))

    def _check_one_rule(self, rule: ast.RuleDecl) -> None:
        self._check_target(rule.actions, rule.types, rule.loc)
        if rule.not_found and rule.effect != "forbid":
            self.error(
                "not_found_on_permit",
                "only a forbid can ask its deny to look like not found",
                rule.loc,
            )
        if rule.condition is None or id(rule.condition) in self._oversized:
            return
        types = tuple(t for t in rule.types if t in self.policy.types) if rule.types else None
        if self._may_be_lost(rule.types):
            types = None  # `resource` may be of the lost type: any type's attributes may do
        self._expect_bool(rule.condition, types)
        if _constant(rule.condition) is False:
            self.warn(
                "never_matches",
                f"rule `{rule.name}` can never match: its condition is always false",
                rule.loc,
            )

    def _check_shadowing(self) -> None:
        forbids = [r for r in self.policy.rules if r.effect == "forbid" and r.condition is None]
        for permit in (r for r in self.policy.rules if r.effect == "permit"):
            for forbid in forbids:
                if _covers(forbid.actions, permit.actions) and _covers(forbid.types, permit.types):
                    self.warn(
                        "shadowed",
                        f"permit `{permit.name}` can never allow: forbid `{forbid.name}` always denies what it covers",
                        permit.loc,
                    )
                    break

    # ---- expressions
    def _expect_bool(self, expr: ast.Expr, types: tuple[str, ...] | None) -> None:
        kind = self._type_of(expr, types)
        if kind is not None and kind != "bool":
            self.error("type_error", f"a condition must be bool, this is {kind}", _loc_of(expr))

    def _path_type(self, path: ast.Path, types: tuple[str, ...] | None) -> str | None:
        p = self.policy
        if path.root == "context":
            if path.name not in p.context:
                if "context" not in self.lost:
                    self.error(
                        "unknown_attribute",
                        f"`context.{path.name}` is not declared",
                        path.loc,
                        hint=did_you_mean(path.name, p.context, "context.")
                        or "declare it in a `context { ... }` block",
                    )
                return None
            return p.context[path.name].type
        scope = types if path.root == "resource" else None
        names = list(p.types) if scope is None else list(scope)
        if path.name in BUILTIN_ATTRS:
            return BUILTIN_ATTRS[path.name]
        found = {
            p.types[t].attributes[path.name].type
            for t in names
            if path.name in p.types[t].attributes
        }
        if not found:
            if scope is None and self.opaque:
                return None  # it may be an attribute of a type whose declaration was lost
            where = ", ".join(f"`{t}`" for t in names) if scope else "any type"
            near = did_you_mean(
                path.name,
                {*BUILTIN_ATTRS, *(a for t in names for a in p.types[t].attributes)},
                f"{path.root}.",
            )
            self.error(
                "unknown_attribute", f"`{path}` is not an attribute of {where}", path.loc, near
            )
            return None
        if len(found) > 1:
            self.error(
                "type_error", f"`{path}` has different types on different entity types", path.loc
            )
            return None
        return found.pop()

    def _type_of(self, expr: ast.Expr, types: tuple[str, ...] | None) -> str | None:
        """The static type of an expression; None after an error already reported."""
        if isinstance(expr, ast.Literal):
            return _literal_type(expr.value)
        if isinstance(expr, ast.Path):
            return self._path_type(expr, types)
        if isinstance(expr, ast.MethodCall):
            return self._method_type(expr, types)
        self._check_bool_expr(expr, types)
        return "bool"

    def _check_bool_expr(self, expr: ast.Expr, types: tuple[str, ...] | None) -> None:
        """Check an expression whose type is bool whatever its operands (errors reported)."""
        if isinstance(expr, ast.Present):
            self._path_type(expr.path, types)
        elif isinstance(expr, ast.And | ast.Or):
            for operand in ast.operands(expr):  # a run of `or`s is a loop, not a recursion
                self._expect_bool(operand, types)
        elif isinstance(expr, ast.Not):
            self._expect_bool(expr.operand, types)
        elif isinstance(expr, ast.Compare):
            self._check_compare(expr, types)
        elif isinstance(expr, ast.In):
            elem, coll = self._type_of(expr.element, types), self._type_of(expr.collection, types)
            if elem is not None and coll is not None and coll != f"set<{elem}>":
                self.error(
                    "type_error", f"`in` needs a set of {elem} on its right, not {coll}", expr.loc
                )
        elif isinstance(expr, ast.RelationCheck):
            self._check_relation(expr, types)
        elif isinstance(expr, ast.HasRole):
            if expr.role not in self.policy.roles:
                self._unknown_role(expr.role, expr.loc)
        else:
            raise AssertionError(f"unhandled expression {expr!r}")

    def _check_compare(self, expr: ast.Compare, types: tuple[str, ...] | None) -> None:
        left, right = self._type_of(expr.left, types), self._type_of(expr.right, types)
        if left is None or right is None:
            return
        if expr.op in ("==", "!="):
            if left != right:
                self.error("type_error", f"cannot compare {left} with {right}", expr.loc)
        elif left != "int" or right != "int":
            self.error(
                "type_error", f"`{expr.op}` compares numbers, not {left} and {right}", expr.loc
            )

    def _method_type(self, expr: ast.MethodCall, types: tuple[str, ...] | None) -> str | None:
        target = self._type_of(expr.target, types)
        args = [self._type_of(a, types) for a in expr.args]
        if target is None:
            return None
        signatures = METHODS.get(expr.method)
        if signatures is None:
            self.error(
                "unknown_method",
                f"unknown method `{expr.method}`",
                expr.loc,
                hint="methods: " + ", ".join(sorted(METHODS)),
            )
            return None
        elem = target[4:-1] if target.startswith("set<") else ""
        sig = signatures.get("set" if elem else target)
        if sig is None:
            self.error("type_error", f"`{expr.method}` does not apply to {target}", expr.loc)
            return None
        params, result = sig
        want = [p.replace("T", elem) for p in params]
        if len(args) != len(want):
            self.error(
                "type_error",
                f"`{expr.method}` takes {len(want)} argument(s), got {len(args)}",
                expr.loc,
            )
        else:
            for got, expected in zip(args, want, strict=True):
                if got is not None and got != expected:
                    self.error(
                        "type_error", f"`{expr.method}` expects {expected}, got {got}", expr.loc
                    )
        return result

    def _check_relation(self, expr: ast.RelationCheck, types: tuple[str, ...] | None) -> None:
        entity = expr.entity
        if entity.kind == "ctor":
            target = self.policy.types.get(entity.type)
            if target is None:
                self._unknown_type(entity.type, entity.loc)
                return
            if entity.id is not None and self._type_of(entity.id, types) not in ("string", None):
                self.error(
                    "type_error", f"the id of `{entity.type}(...)` must be a string", entity.loc
                )
            candidates = [target]
        elif entity.kind == "resource" and types is not None:
            candidates = [self.policy.types[t] for t in types]
        else:
            if self.opaque:
                return  # it may be a relation of a type whose declaration was lost
            candidates = list(self.policy.types.values())
        if not any(c.has_relation(expr.relation) for c in candidates):
            self.error(
                "unknown_relation",
                f"no relation or permission `{expr.relation}` on {entity.kind if entity.kind != 'ctor' else f'`{entity.type}`'}",
                expr.loc,
                hint=did_you_mean(expr.relation, [n for c in candidates for n in _relations(c)]),
            )


def _relations(info: TypeInfo) -> list[str]:
    """The relations and permissions of a type: what a condition or a permission may name."""
    return [*info.relations, *info.permissions]


def _literal_type(value: ast.LiteralValue) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    elems = {_literal_type(v) for v in value}
    return f"set<{elems.pop() if elems else 'string'}>"


def _loc_of(expr: ast.Expr) -> Loc:
    return expr.loc


def _constant(expr: ast.Expr) -> bool | None:
    """Fold a condition made only of literals; None when it depends on the request."""
    if isinstance(expr, ast.Literal) and isinstance(expr.value, bool):
        return expr.value
    if isinstance(expr, ast.Not):
        inner = _constant(expr.operand)
        return None if inner is None else not inner
    if isinstance(expr, ast.And | ast.Or):
        # `and` is false if any operand is, true if all are; `or` the other way round.
        absorbing = isinstance(expr, ast.Or)
        values = [_constant(e) for e in ast.operands(expr)]
        if absorbing in values:
            return absorbing
        return (not absorbing) if all(v is not None for v in values) else None
    if (
        isinstance(expr, ast.Compare)
        and isinstance(expr.left, ast.Literal)
        and isinstance(expr.right, ast.Literal)
    ):
        a, b = expr.left.value, expr.right.value
        if expr.op == "==":
            return a == b
        if expr.op == "!=":
            return a != b
    return None


def _covers(outer: tuple[str, ...] | None, inner: tuple[str, ...] | None) -> bool:
    if outer is None:
        return True
    return inner is not None and set(inner) <= set(outer)


def _computed_refs(expr: ast.UsersetExpr) -> Iterator[str]:
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Computed):
            yield node.relation
        stack.extend(ast.userset_children(node))


def _reaches(edges: dict[str, set[str]], start: str, goal: str) -> bool:
    seen: set[str] = set()
    stack = list(edges.get(start, ()))
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(edges.get(node, ()))
    return False
