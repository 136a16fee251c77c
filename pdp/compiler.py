"""Checked policy to Snapshot: rules indexed by (resource type, action), role closures precomputed,
conditions compiled to functions, and one generated cache-key function per index entry.

A request never walks the AST; it looks up one Entry and runs its functions.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pdp.conditions import ConditionFn, compile_condition, read_paths, reads_relations
from pdp.model import Entity, Value
from pdp.rebac import RelationGraph
from pdp.tuples import TupleStore
from policy_lang import ast
from policy_lang.checker import CheckedPolicy

KeyFn = Callable[[Entity, Entity, Mapping[str, Value]], Hashable]


class AttributeTypeError(TypeError):
    """A request attribute does not have the type the schema declares (a caller error: deny)."""


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    effect: str
    condition: ConditionFn | None
    not_found: bool = False


@dataclass(frozen=True, slots=True)
class RoleBinding:
    """Where roles come from: a set attribute (claims) or a condition."""

    roles: frozenset[str]  # for a BindWhen; empty for a BindFrom
    source: tuple[str, str] | None  # (root, name) for a BindFrom
    condition: ConditionFn | None


@dataclass(frozen=True, slots=True, eq=False)
class Entry:
    """Everything needed to decide one (resource type, action).

    Compared and hashed by identity (eq=False): an Entry leads every cache key, and each
    compile makes new Entries, so a reload can never hit a key made under the old bundle.
    """

    resource_type: str
    action: str
    forbids: tuple[CompiledRule, ...]
    permits: tuple[CompiledRule, ...]
    granting_roles: tuple[str, ...]  # sorted; roles whose grants (own or inherited) cover this
    uses_tuples: bool
    key: KeyFn  # validates attribute types and returns every input the decision reads
    read_paths: tuple[tuple[str, str], ...] = field(default=())


@dataclass(slots=True)
class Snapshot:
    """One compiled bundle. Immutable once built; the engine swaps whole snapshots."""

    policy: CheckedPolicy
    entries: dict[tuple[str, str], Entry]
    role_scopes: dict[str, tuple[str, ...]]  # role -> attributes subject and resource must share
    role_includes: dict[str, frozenset[str]]  # role -> itself and every role that inherits it
    bindings: tuple[RoleBinding, ...]
    graph: RelationGraph
    max_depth: int
    rule_ids: tuple[str, ...]


def compile_policy(policy: CheckedPolicy, store: TupleStore, env: Any, max_depth: int) -> Snapshot:
    """Compile a checked policy. `env` answers relation and role questions for conditions."""
    graph = RelationGraph(policy, store, max_depth)
    ancestors = {name: _ancestors(policy, name) for name in policy.roles}
    role_includes = {
        name: frozenset(r for r in policy.roles if name in ancestors[r]) for name in policy.roles
    }
    role_scopes = {
        name: tuple(
            sorted({policy.roles[a].scope for a in ancestors[name] if policy.roles[a].scope})
        )
        for name in policy.roles
    }
    bindings = tuple(_compile_binding(b, env) for b in policy.bindings)
    binding_paths = _binding_paths(policy)
    binding_tuples = any(
        isinstance(b, ast.BindWhen) and reads_relations(b.condition) for b in policy.bindings
    )
    rules = [
        CompiledRule(
            r.name,
            r.effect,
            compile_condition(r.condition, env) if r.condition is not None else None,
            r.not_found,
        )
        for r in policy.rules
    ]
    decls = {r.name: r for r in policy.rules}
    entries: dict[tuple[str, str], Entry] = {}
    for type_name, info in sorted(policy.types.items()):
        for action in sorted(info.actions):
            forbids: list[CompiledRule] = []
            permits: list[CompiledRule] = []
            paths: set[tuple[str, str]] = set(binding_paths)
            uses_tuples = binding_tuples
            for rule in rules:
                decl = decls[rule.id]
                if not _targets(decl.actions, decl.types, action, type_name):
                    continue
                (forbids if rule.effect == "forbid" else permits).append(rule)
                if decl.condition is not None:
                    paths.update((p.root, p.name) for p in read_paths(decl.condition))
                    uses_tuples = uses_tuples or reads_relations(decl.condition)
            granting = sorted(
                name
                for name in policy.roles
                if any(
                    _targets(g.actions, g.types, action, type_name)
                    for a in ancestors[name]
                    for g in policy.roles[a].grants
                )
            )
            if granting:
                for name in granting:
                    paths.update(("subject", s) for s in role_scopes[name])
                    paths.update(("resource", s) for s in role_scopes[name])
            # A "not found" forbid goes first, so that a resource hidden from someone never shows
            # up as merely forbidden because another forbid happened to sort earlier.
            forbids.sort(key=lambda r: (not r.not_found, r.id))
            ordered = tuple(sorted(paths))
            entries[(type_name, action)] = Entry(
                type_name,
                action,
                tuple(forbids),
                tuple(permits),
                tuple(granting),
                uses_tuples,
                _key_function(policy, type_name, ordered),
                ordered,
            )
    return Snapshot(
        policy,
        entries,
        role_scopes,
        role_includes,
        bindings,
        graph,
        max_depth,
        tuple(r.id for r in rules),
    )


def _targets(
    actions: tuple[str, ...] | None, types: tuple[str, ...] | None, action: str, type_name: str
) -> bool:
    return (actions is None or action in actions) and (types is None or type_name in types)


def _ancestors(policy: CheckedPolicy, name: str) -> frozenset[str]:
    """The role itself and every role it extends, transitively (inheritance is acyclic by now)."""
    seen: set[str] = set()
    stack = [name]
    while stack:
        role = stack.pop()
        if role in seen or role not in policy.roles:
            continue
        seen.add(role)
        stack.extend(policy.roles[role].parents)
    return frozenset(seen)


def _compile_binding(b: ast.BindWhen | ast.BindFrom, env: Any) -> RoleBinding:
    if isinstance(b, ast.BindFrom):
        return RoleBinding(frozenset(), (b.source.root, b.source.name), None)
    return RoleBinding(frozenset(b.roles), None, compile_condition(b.condition, env))


def _binding_paths(policy: CheckedPolicy) -> set[tuple[str, str]]:
    paths: set[tuple[str, str]] = set()
    for b in policy.bindings:
        if isinstance(b, ast.BindFrom):
            paths.add((b.source.root, b.source.name))
        else:
            paths.update((p.root, p.name) for p in read_paths(b.condition))
    return paths


_PY_TYPES = {
    "string": "str",
    "int": "int",
    "bool": "bool",
    "set<string>": "frozenset",
    "set<int>": "frozenset",
}


def _key_function(
    policy: CheckedPolicy, type_name: str, paths: tuple[tuple[str, str], ...]
) -> KeyFn:
    """Generate `key(S, R, C)`: check each read attribute's type, return them with the ids.

    INVARIANT: the key holds every input the entry's decision can read, so two requests with equal
    keys (under one snapshot and tuple revision) must get the same decision.
    """
    lines = ["def key(S, R, C):", "    sg = S.attrs.get; rg = R.attrs.get; cg = C.get"]
    getters = {"subject": "sg", "resource": "rg", "context": "cg"}
    values = ["S.type", "S.id", "R.id"]
    for i, (root, name) in enumerate(paths):
        if root != "context" and name in ("id", "type"):
            continue
        declared = policy.attribute_type(root, name, [type_name] if root == "resource" else None)
        if declared is None and root == "subject":
            # Subject attributes may be declared on several types; validate against the first.
            declared = next(
                (t.attributes[name].type for t in policy.types.values() if name in t.attributes),
                None,
            )
        lines.append(f"    v{i} = {getters[root]}({name!r}, MISSING)")
        if declared is not None:
            # Exact type, not isinstance: True == 1 and hash(True) == hash(1), so a bool where an
            # int belongs would otherwise share a cache key with a decision made for the int.
            lines.append(
                f"    if type(v{i}) is not {_PY_TYPES[declared]} and v{i} is not MISSING: "
                f"raise AttributeTypeError({f'`{root}.{name}` must be {declared}'!r})"
            )
        values.append(f"v{i}")
    lines.append(f"    return ({', '.join(values)},)")
    namespace: dict[str, Any] = {"MISSING": _MISSING, "AttributeTypeError": AttributeTypeError}
    exec("\n".join(lines), namespace)
    fn: KeyFn = namespace["key"]
    return fn


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


_MISSING = _Missing()
