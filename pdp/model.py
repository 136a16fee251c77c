"""The values every layer shares: requests, entities, relation tuples and decisions.

All are frozen and slotted: a decision handed out (or cached) can never be changed by its reader.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from types import MappingProxyType

from pdp.errors import InvalidRequest
from pdp.identifiers import ID_PATTERN, ID_RULE, NAME_PATTERN

# An attribute value as the engine sees it. Lists arriving from the wire become frozensets.
Value = str | int | bool | frozenset[str] | frozenset[int]

EMPTY: Mapping[str, Value] = MappingProxyType({})


class Effect(Enum):
    """ALLOW or DENY: the answer to a check. Anything but an explicit ALLOW is a deny."""

    # Enum's own __hash__ is Python code, slow where decisions are counted and converted;
    # members are singletons, so identity hashing is exact.
    __hash__ = object.__hash__

    ALLOW = "allow"
    DENY = "deny"


class Reason(StrEnum):
    """Why a decision came out as it did. Callers branch on this, so the values are stable."""

    __hash__ = str.__hash__  # as for Effect: the C hash, consistent with str equality

    PERMITTED = "permitted"  # a permit rule or a role grant matched and no forbid did
    FORBIDDEN = "forbidden"  # a forbid rule matched (forbid overrides permit)
    NOT_PERMITTED = "not_permitted"  # nothing permits: deny by default
    EVALUATION_ERROR = (
        "evaluation_error"  # an error decided (missing attribute, type mismatch, ...)
    )
    DEPTH_LIMIT = "depth_limit"  # relation walk hit the configured depth limit
    NO_BUNDLE = "no_bundle"  # no valid bundle is loaded
    STALE_TUPLES = "stale_tuples"  # the caller asked for a tuple revision we do not have yet
    FAIL_OPEN = "fail_open"  # an audited fail-open tier allowed despite an error
    OUTSIDE_SLICE = "outside_slice"  # the resource is not in the tuples this sidecar holds


_ALLOW = Effect.ALLOW  # bound once: enum member lookups are slow on Python 3.11


@dataclass(frozen=True, slots=True)
class Entity:
    """A subject or a resource: `type:id` and the attributes conditions may read."""

    type: str
    id: str
    attrs: Mapping[str, Value] = field(default_factory=lambda: EMPTY)

    def __str__(self) -> str:
        return f"{self.type}:{self.id}"


@dataclass(frozen=True, slots=True)
class Request:
    """May `subject` do `action` on `resource`, in `context` (request-time attributes)?"""

    subject: Entity
    action: str
    resource: Entity
    context: Mapping[str, Value] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One line of an explain trace: what was considered and what came of it."""

    kind: str  # "forbid", "permit", "role", "binding", "condition", "relation", "error", "note"
    id: str
    outcome: str  # "matched", "not_matched", "error", "skipped", "granted", "true", "false", ...
    detail: str = ""
    # The trace is a tree written children first: a step's children are the steps just before it
    # that are one level deeper (a rule's conditions, a condition's relation hops).
    depth: int = 0
    # What a condition read, as (expression, value in policy syntax), masked as the audit masks:
    # (`resource.tenant`, `"globex"`), (`subject.ssn`, `***`), (`context.hour`, `(missing)`).
    values: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to a Request: the effect, why (`reason`), the rules that decided, the bundle
    and tuple revisions it was taken at, and any evaluation errors (which always deny)."""

    effect: Effect
    reason: Reason
    rule_ids: tuple[str, ...]
    bundle_revision: str
    tuple_revision: int
    not_found: bool = False  # the deciding forbid asked that this deny look like "not found"
    errors: tuple[str, ...] = ()
    cached: bool = False
    trace: tuple[TraceStep, ...] | None = None

    @property
    def allowed(self) -> bool:
        return self.effect is _ALLOW


# One tuple's text form, in the identifier grammar of pdp.identifiers: no id can hold a separator.
_TUPLE_RE = re.compile(
    rf"^(?P<ot>{NAME_PATTERN}):(?P<oid>{ID_PATTERN})#(?P<rel>{NAME_PATTERN})"
    rf"@(?P<st>{NAME_PATTERN}):(?P<sid>{ID_PATTERN}|\*)(?:#(?P<srel>{NAME_PATTERN}))?$"
)


# The same shapes as _TUPLE_RE, one field at a time, for tuples that arrive already split.
_TYPE_NAME = re.compile(NAME_PATTERN).fullmatch
_OBJECT_ID = re.compile(ID_PATTERN).fullmatch
_SUBJECT_ID = re.compile(rf"{ID_PATTERN}|\*").fullmatch
_RELATION = re.compile(NAME_PATTERN).fullmatch


class TupleSyntaxError(InvalidRequest):
    """A relation tuple string is not of the form `type:id#relation@type:id[#relation]`."""


@dataclass(frozen=True, slots=True, order=True)
class RelationTuple:
    """`document:1#viewer@group:eng#member`: the object, its relation, and who holds it.

    `subject_relation` is "" for a direct subject; `subject_id` "*" is a typed wildcard (`user:*`).
    """

    object_type: str
    object_id: str
    relation: str
    subject_type: str
    subject_id: str
    subject_relation: str = field(default="")

    @classmethod
    def parse(cls, text: str) -> RelationTuple:
        m = _TUPLE_RE.match(text.strip())
        if m is None or (m["sid"] == "*" and m["srel"]):
            raise TupleSyntaxError(
                f"`{text}` is not a relation tuple; expected `type:id#relation@type:id[#relation]` "
                f"with each id {ID_RULE} (or `*` as a subject id alone)"
            )
        return cls(m["ot"], m["oid"], m["rel"], m["st"], m["sid"], m["srel"] or "")

    @staticmethod
    def in_grammar(text: str) -> bool:
        """Whether `parse` would accept `text` as it is written by `str` (no surrounding blanks),
        without building the tuple."""
        m = _TUPLE_RE.fullmatch(text)  # `$` alone would let a trailing newline through
        return m is not None and not (m["sid"] == "*" and m["srel"])

    @classmethod
    def from_parts(
        cls, obj: object, relation: object, subject: object, names: dict[str, str] | None = None
    ) -> RelationTuple:
        """`("doc:1", "viewer", "group:eng#member")` as a tuple: what `parse` accepts, without
        joining and re-splitting the text. `names`, if given, shares equal ids between tuples.
        """
        if isinstance(obj, str) and isinstance(relation, str) and isinstance(subject, str):
            ot, colon, oid = obj.partition(":")
            st, colon2, rest = subject.partition(":")
            sid, hash_, srel = rest.partition("#")
            ot, st, rel = _known(ot, _TYPE_NAME), _known(st, _TYPE_NAME), _known(relation)
            if (
                colon
                and colon2
                and ot
                and st
                and rel
                and (_known(srel) if hash_ else not srel)
                and _OBJECT_ID(oid)
                and _SUBJECT_ID(sid)
                and not (sid == "*" and hash_)
            ):
                if names is not None:
                    oid, sid = names.setdefault(oid, oid), names.setdefault(sid, sid)
                return _build(cls, ot, oid, rel, st, sid, _known(srel) if hash_ else "")
        # Anything else takes the one general path, for its exact acceptance and error message.
        return cls.parse(f"{obj}#{relation}@{subject}")

    def __str__(self) -> str:
        tail = f"#{self.subject_relation}" if self.subject_relation else ""
        return (
            f"{self.object_type}:{self.object_id}#{self.relation}"
            f"@{self.subject_type}:{self.subject_id}{tail}"
        )


# Type and relation names come from a schema: few, and each seen a million times in a big bundle.
# Each valid one is kept (bounded) and handed back, so equal names are also one shared string.
_KNOWN: dict[tuple[str, bool], str] = {}
_KNOWN_MAX = 4096


def _known(name: str, pattern: Callable[[str], object] = _RELATION) -> str:
    """`name` if it matches `pattern` (the shared copy once seen), else ""."""
    key = (name, pattern is _TYPE_NAME)
    held = _KNOWN.get(key)
    if held is not None:
        return held
    if not pattern(name):
        return ""
    if len(_KNOWN) < _KNOWN_MAX:
        _KNOWN[key] = name
    return name


# Filling the slots directly skips the frozen dataclass's per-field `object.__setattr__` calls: the
# bundle path builds a million tuples whose fields were all just checked.
_SLOTS = tuple(
    getattr(RelationTuple, f).__set__
    for f in (
        "object_type",
        "object_id",
        "relation",
        "subject_type",
        "subject_id",
        "subject_relation",
    )
)


def _build(
    cls: type[RelationTuple], ot: str, oid: str, rel: str, st: str, sid: str, srel: str
) -> RelationTuple:
    if cls is not RelationTuple:
        return cls(ot, oid, rel, st, sid, srel)
    t: RelationTuple = object.__new__(cls)
    s0, s1, s2, s3, s4, s5 = _SLOTS
    s0(t, ot)
    s1(t, oid)
    s2(t, rel)
    s3(t, st)
    s4(t, sid)
    s5(t, srel)
    return t
