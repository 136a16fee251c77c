"""A slice: the part of the fleet's tuples one sidecar holds, when the whole graph would not fit in
one process.

A slice names object types, tenants, or both (`--slice-types`, `--slice-tenants`). A sidecar holds
a tuple when its object is in the slice, and answers a Check only for a resource in the slice. The
rule is fixed for the life of the process (it reads no bundle), so a reload can never widen what
the sidecar believes it holds without the tuples to back it.

Tenants are read off the id the way tenant-prefixed ids are written (`document:acme/d1` is in
tenant acme): an id with no `/` belongs to no tenant and is held by every slice (shared objects
such as global groups), an id `T/...` only by a slice naming tenant T.

INVARIANT: never an answer from missing data. A walk that reaches an object outside the slice
(a group of another tenant, a folder of a type not listed) raises OutsideSlice, an evaluation error:
a permit that meets it grants nothing and a forbid that meets it denies, as for any error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from pdp.errors import EvaluationError, InvalidRequest
from policy_lang import ast
from policy_lang.checker import CheckedPolicy

V = TypeVar("V")


class OutsideSlice(EvaluationError):
    """A decision needed tuples of an object this sidecar's slice does not hold."""


class ReadOutsideSlice(InvalidRequest):
    """A tuple read a sliced sidecar cannot answer whole: it would silently miss what it does not
    hold, so it is refused instead."""


@dataclass(frozen=True, slots=True)
class Slice:
    """Which objects' tuples a sidecar holds. Empty `types` / `tenants`: no limit on that axis."""

    types: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()

    @classmethod
    def of(cls, types: Iterable[str] = (), tenants: Iterable[str] = ()) -> Slice:
        return cls(frozenset(types), frozenset(tenants))

    @property
    def whole(self) -> bool:
        """Holds everything: the default, and then no check pays for slicing."""
        return not self.types and not self.tenants

    def holds(self, object_type: str, object_id: str) -> bool:
        if self.types and object_type not in self.types:
            return False
        if self.tenants:
            tenant, slash, _ = object_id.partition("/")
            return not slash or tenant in self.tenants
        return True

    def holds_key(self, key: str) -> bool:
        """`holds` for an index key, `type:id#relation` (ids hold neither `:` nor `#`)."""
        object_type, _, rest = key.partition(":")
        return self.holds(object_type, rest.partition("#")[0])

    def check_read(self, object_type: str | None, object_id: str | None) -> None:
        """Refuse a read filter that could match tuples this slice does not hold."""
        if self.whole:
            return
        if not object_type or (self.tenants and not object_id):
            need = "an object type and id" if self.tenants else "an object type"
            raise ReadOutsideSlice(
                f"object_type: this sidecar holds a slice ({self.describe()}); a read must name "
                f"{need} inside it"
            )
        if not self.holds(object_type, object_id or ""):
            raise ReadOutsideSlice(
                f"object_type: `{object_type}:{object_id or '*'}` is outside this sidecar's slice "
                f"({self.describe()})"
            )

    def walks_outside(self, policy: CheckedPolicy) -> list[str]:
        """The types a relation walk from a held type can reach (through usersets and arrows)
        that this slice does not hold: checks needing them deny, so an operator is told at load."""
        if not self.types:
            return []
        reached, todo = set(self.types), [t for t in self.types if t in policy.types]
        while todo:
            info = policy.types[todo.pop()]
            walked = {name for perm in info.permissions.values() for name in _tuplesets(perm.expr)}
            for rel in info.relations.values():
                for ref in rel.subjects:
                    if (ref.relation or rel.name in walked) and ref.type not in reached:
                        reached.add(ref.type)
                        if ref.type in policy.types:
                            todo.append(ref.type)
        return sorted(reached - self.types)

    def describe(self) -> str:
        """What it holds, in words, for status and deny messages."""
        if self.whole:
            return "every tuple"
        parts = []
        if self.types:
            parts.append("types " + ", ".join(sorted(self.types)))
        if self.tenants:
            parts.append("tenants " + ", ".join(sorted(self.tenants)) + " (and ids of no tenant)")
        return "; ".join(parts)


def _tuplesets(expr: ast.UsersetExpr) -> Iterator[str]:
    """The relations an expression hops through (`parent` of `parent->view`)."""
    if isinstance(expr, ast.TupleToUserset):
        yield expr.tupleset
    elif not isinstance(expr, ast.Computed):
        for operand in ast.userset_operands(expr):
            yield from _tuplesets(operand)


WHOLE = Slice()  # every tuple: the default


class SlicedIndex(Generic[V]):
    """A read-only view of a tuple index that refuses keys outside the slice: what the relation
    functions of a sliced sidecar read through, so a walk never mistakes missing for empty."""

    __slots__ = ("_holds", "_index", "_slice")

    def __init__(self, index: dict[str, V], slice_: Slice) -> None:
        self._index = index
        self._slice = slice_
        self._holds: Callable[[str], bool] = slice_.holds_key

    def get(self, key: str) -> V | None:
        if not self._holds(key):
            raise OutsideSlice(
                f"`{key}` is outside this sidecar's slice ({self._slice.describe()}): "
                "ask a sidecar that holds it"
            )
        return self._index.get(key)
