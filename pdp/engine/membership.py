"""Flattened group membership (Zanzibar's Leopard): for every subject, every group it is in, however
deeply nested, kept current on each tuple write and delete.

A *group relation* (CheckedPolicy.group_relations: `group#member`) is a direct relation named as a
userset whose own usersets are group relations too, so who holds it is the transitive closure of
its tuples alone. A *group key* is one object's group relation (`group:eng#member`), a *leaf* a
subject that is not a userset (`user:ann`, or `user:*` where the relation admits it).

The index holds, for each leaf, the frozen set of group keys it reaches (`of`), so a check of
`relation viewer: user | group#member` is one set test: does `document:d#viewer` hold the subject
or any group key in `of[subject]`? It also bounds how many userset hops a reach can take
(`deepest`), so a check can tell whether the depth limit could matter (then it walks, exactly).

Memory: each group key with members has its closure (itself and every group above it); a leaf in
one group shares that group's set, so only a leaf in several groups costs a set of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from policy_lang import ast
from policy_lang.checker import CheckedPolicy

# The tuple store's two indexes, read (never written) here: object key -> subject keys and
# subject key -> object keys. Values are tuples or sets of keys (pdp.engine.tuples.Members).
Index = Mapping[str, Iterable[str]]


class GroupSchema:
    """What in a tuple store is a group key or a group edge, for one policy."""

    def __init__(self, policy: CheckedPolicy) -> None:
        # "#member" -> the types whose `member` is a group relation
        self._types_by_suffix: dict[str, frozenset[str]] = {}
        # ("group", "member") -> usersets it admits, as "group#member" / "team#member" prefixes
        self.admits: dict[tuple[str, str], frozenset[tuple[str, str]]] = {}
        # ("group", "member") -> the types whose `type:*` it admits
        self.wildcards: dict[tuple[str, str], frozenset[str]] = {}
        by_suffix: dict[str, set[str]] = {}
        for type_name, relation in policy.group_relations:
            decl = policy.types[type_name].relations[relation]
            by_suffix.setdefault(f"#{relation}", set()).add(type_name)
            self.admits[(type_name, relation)] = frozenset(
                (r.type, r.relation) for r in decl.subjects if r.relation
            )
            self.wildcards[(type_name, relation)] = frozenset(
                r.type for r in decl.subjects if r.wildcard
            )
        self._types_by_suffix = {k: frozenset(v) for k, v in by_suffix.items()}

    def __bool__(self) -> bool:
        return bool(self.admits)

    def group_of(self, key: str) -> tuple[str, str] | None:
        """(type, relation) if `key` ("type:id#relation") is a group key, else None."""
        cut = key.rfind("#")
        if cut < 0:
            return None
        types = self._types_by_suffix.get(key[cut:])
        if types is None:
            return None
        type_name = key[: key.find(":")]
        return (type_name, key[cut + 1 :]) if type_name in types else None

    def is_edge(self, group: tuple[str, str], member: str) -> bool:
        """Does a tuple `group key @ member` count for membership? A userset member only if the
        group relation admits its (type, relation); a wildcard only if it admits `type:*`."""
        cut = member.find("#")
        if cut >= 0:
            return (member[: member.find(":")], member[cut + 1 :]) in self.admits[group]
        if member.endswith(":*"):
            return member[:-2] in self.wildcards[group]
        return True


class MembershipIndex:
    """`of[leaf]`: the group keys a leaf is in, transitively; `deepest`: a bound on the userset
    hops from a group key down to a leaf it holds (0: the leaf is a direct member).

    Exact at every moment a write is not in progress: the tuple store calls `changed` for each
    tuple it adds or removes, after its own indexes are updated, under its write lock. Readers
    never lock: every value is a frozenset, replaced, never changed in place.
    """

    def __init__(self, schema: GroupSchema, subjects: Index, reverse: Index) -> None:
        self.schema = schema
        self._subjects = subjects
        self._reverse = reverse
        self.of: dict[str, frozenset[str]] = {}
        # the `type:*` leaves in `of`: a check looks its subject's type up only if there are any
        self.wildcards: set[str] = set()
        # group key (with members) -> itself and every group key above it
        self._closed: dict[str, frozenset[str]] = {}
        # group key -> the group keys it is a member of: the nested edges only, so a walk up
        # never scans the (possibly many) objects a group is granted on
        self._parents: dict[str, frozenset[str]] = {}
        self.deepest = 0

    # ---- building
    def rebuild(self) -> None:
        """Build from the store's indexes in one pass (a load, a reload, a large restore)."""
        group_of, is_edge = self.schema.group_of, self.schema.is_edge
        parents: dict[str, set[str]] = {}
        leaves: dict[str, list[str]] = {}
        for key, members in list(self._subjects.items()):
            group = group_of(key)
            if group is None:
                continue
            for member in tuple(members):
                if not is_edge(group, member):
                    continue
                if "#" in member:
                    parents.setdefault(member, set()).add(key)
                else:
                    leaves.setdefault(member, []).append(key)
        self._parents = {k: frozenset(v) for k, v in parents.items()}
        self._closed = {}
        deepest = 0
        for groups in leaves.values():
            for key in groups:
                if key not in self._closed:
                    deepest = max(deepest, self._close(key))
        # INVARIANT: `deepest` never bounds less than the `of` a reader may see: raised (by
        # _close) before the new sets go in, lowered only after the old ones are gone.
        self.of = {leaf: self._union(groups) for leaf, groups in leaves.items()}
        self.wildcards = {leaf for leaf in leaves if leaf.endswith(":*")}
        self.deepest = deepest

    def _close(self, key: str) -> int:
        """Walk up from `key` breadth first: itself and every group above it (a cycle ends the
        walk); returns how many levels it took."""
        seen = {key}
        level = [key]
        height = 0
        parents = self._parents
        while True:
            up = [p for k in level for p in parents.get(k, ()) if p not in seen]
            if not up:
                break
            seen.update(up)
            level = up
            height += 1
        # A leaf under `key` is one hop below it: `height` more to the top.
        self.deepest = max(self.deepest, height)
        self._closed[key] = frozenset(seen)
        return height

    def _union(self, groups: list[str]) -> frozenset[str]:
        if len(groups) == 1:  # shared with the group: no set of its own
            return self._closed[groups[0]]
        return frozenset().union(*(self._closed[g] for g in groups))

    # ---- keeping it current
    def changed(self, okey: str, skey: str) -> None:
        """The tuple `okey@skey` was just added or removed."""
        group = self.schema.group_of(okey)
        if group is None or not self.schema.is_edge(group, skey):
            return
        if okey not in self._subjects:  # no members left: no leaf can need its closure
            self._closed.pop(okey, None)
        if "#" not in skey:
            self._refresh_leaf(skey)
            return
        # A nested edge: every group at or below `skey` is above more or fewer groups now.
        held = self._subjects.get(okey)
        above = self._parents.get(skey, frozenset())
        above = above | {okey} if held is not None and skey in held else above - {okey}
        if above:
            self._parents[skey] = above
        else:
            self._parents.pop(skey, None)
        below = self._groups_below(skey)
        for key in below:
            if key in self._subjects:
                self._close(key)
        for key in below:
            group = self._group(key)
            for member in tuple(self._subjects.get(key, ())):
                if "#" not in member and self.schema.is_edge(group, member):
                    self._refresh_leaf(member)

    def _group(self, key: str) -> tuple[str, str]:
        group = self.schema.group_of(key)
        assert group is not None  # only group keys are ever passed here
        return group

    def _groups_below(self, key: str) -> list[str]:
        """`key` and every group key nested under it, each once."""
        seen = {key}
        out = [key]
        for current in out:
            group = self.schema.group_of(current)
            if group is None:
                continue
            for member in tuple(self._subjects.get(current, ())):
                if "#" in member and member not in seen and self.schema.is_edge(group, member):
                    seen.add(member)
                    out.append(member)
        return out

    def _refresh_leaf(self, leaf: str) -> None:
        group_of, is_edge = self.schema.group_of, self.schema.is_edge
        groups = []
        for key in tuple(self._reverse.get(leaf, ())):
            group = group_of(key)
            if group is not None and is_edge(group, leaf):
                groups.append(key)
        if not groups:
            self.of.pop(leaf, None)
            self.wildcards.discard(leaf)
            return
        if leaf.endswith(":*"):
            self.wildcards.add(leaf)
        for key in groups:
            if key not in self._closed:
                self._close(key)
        self.of[leaf] = self._union(groups)


class Admits:
    """Which members count, walking down from one relation's key through groups: at the top,
    what that relation admits; below, what each group relation admits."""

    def __init__(self, schema: GroupSchema, relation: ast.RelationDecl) -> None:
        self._schema = schema
        self.usersets = frozenset((r.type, r.relation) for r in relation.subjects if r.relation)
        self._wildcards = frozenset(r.type for r in relation.subjects if r.wildcard)

    def at(self, top: str) -> Callable[[str, str], bool]:
        """`admits(key, member)` for a walk that starts at `top`."""
        schema = self._schema

        def admits(key: str, member: str) -> bool:
            if key != top:
                group = schema.group_of(key)
                return group is not None and schema.is_edge(group, member)
            cut = member.find("#")
            if cut >= 0:
                return (member[: member.find(":")], member[cut + 1 :]) in self.usersets
            return not member.endswith(":*") or member[:-2] in self._wildcards

        return admits


def hops_to(
    start: str,
    leaf: str,
    members_of: Callable[[str], Iterable[str]],
    admits: Callable[[str, str], bool],
) -> int | None:
    """The fewest userset hops from group key or relation key `start` down to a key holding
    `leaf` (0: `start` holds it), or None if none does: breadth first, so a cycle costs nothing.
    `admits(key, member)` says whether `member` of `key` counts (a userset the relation admits,
    a wildcard it admits, or `leaf` itself)."""
    seen = {start}
    level = [start]
    hops = 0
    while level:
        below = []
        for key in level:
            for member in members_of(key):
                if not admits(key, member):
                    continue
                if "#" not in member:
                    if member == leaf or (member.endswith(":*") and leaf.startswith(member[:-1])):
                        return hops
                elif member not in seen:
                    seen.add(member)
                    below.append(member)
        level = below
        hops += 1
    return None
