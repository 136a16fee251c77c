"""The values every layer shares: requests, entities, relation tuples and decisions.

All are frozen and slotted: a decision handed out (or cached) can never be changed by its reader.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from types import MappingProxyType

# An attribute value as the engine sees it. Lists arriving from the wire become frozensets.
Value = str | int | bool | frozenset[str] | frozenset[int]

EMPTY: Mapping[str, Value] = MappingProxyType({})


class Effect(Enum):
    ALLOW = "allow"
    DENY = "deny"


class Reason(StrEnum):
    """Why a decision came out as it did. Callers branch on this, so the values are stable."""

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


@dataclass(frozen=True, slots=True)
class Entity:
    type: str
    id: str
    attrs: Mapping[str, Value] = field(default_factory=lambda: EMPTY)

    def __str__(self) -> str:
        return f"{self.type}:{self.id}"


@dataclass(frozen=True, slots=True)
class Request:
    subject: Entity
    action: str
    resource: Entity
    context: Mapping[str, Value] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One line of an explain trace: what was considered and what came of it."""

    kind: str  # "forbid", "permit", "role", "binding", "relation", "error", "note"
    id: str
    outcome: str  # "matched", "not_matched", "error", "skipped", "granted", ...
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
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
        return self.effect is Effect.ALLOW


_TUPLE_RE = re.compile(
    r"^(?P<ot>[A-Za-z_][\w-]*):(?P<oid>[^#@\s]+)#(?P<rel>[A-Za-z_]\w*)"
    r"@(?P<st>[A-Za-z_][\w-]*):(?P<sid>[^#@\s]+)(?:#(?P<srel>[A-Za-z_]\w*))?$"
)


class TupleSyntaxError(ValueError):
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
        if m is None:
            raise TupleSyntaxError(
                f"`{text}` is not a relation tuple; expected `type:id#relation@type:id[#relation]`"
            )
        return cls(m["ot"], m["oid"], m["rel"], m["st"], m["sid"], m["srel"] or "")

    def __str__(self) -> str:
        tail = f"#{self.subject_relation}" if self.subject_relation else ""
        return (
            f"{self.object_type}:{self.object_id}#{self.relation}"
            f"@{self.subject_type}:{self.subject_id}{tail}"
        )
