"""Validation of relation tuples against a bundle's schema: the relation exists and accepts the subject."""

from __future__ import annotations

from collections.abc import Callable

from pdp.errors import InvalidRequest
from pdp.model import RelationTuple
from policy_lang.checker import CheckedPolicy


class InvalidTuple(InvalidRequest):
    """A tuple does not fit the bundle's schema; the message names the tuple and the problem."""


def validate_tuple(policy: CheckedPolicy, t: RelationTuple) -> None:
    """Raise InvalidTuple unless the schema lets `t.relation` on its object hold its subject."""
    info = policy.types.get(t.object_type)
    if info is None:
        raise InvalidTuple(f"`{t}`: unknown object type `{t.object_type}`")
    rel = info.relations.get(t.relation)
    if rel is None:
        what = (
            "a permission (computed, not stored)"
            if t.relation in info.permissions
            else "not a relation"
        )
        raise InvalidTuple(f"`{t}`: `{t.relation}` on `{t.object_type}` is {what}")
    if t.subject_id == "*":
        ok = not t.subject_relation and any(
            r.wildcard and r.type == t.subject_type for r in rel.subjects
        )
    else:
        ok = any(
            r.type == t.subject_type and r.relation == t.subject_relation and not r.wildcard
            for r in rel.subjects
        )
    if not ok:
        allowed = " | ".join(str(r) for r in rel.subjects)
        raise InvalidTuple(f"`{t}`: `{t.object_type}#{t.relation}` accepts {allowed}")


def text_validator(policy: CheckedPolicy) -> Callable[[str], None]:
    """`validate_tuple` for many stored tuples, as their text (`str(RelationTuple)`, in the
    identifier grammar). Whether a tuple fits depends only on its shape (object type, relation,
    subject type and relation, wildcard or not), so each shape is parsed and checked once: a boot
    checks a million tuples of a handful of shapes."""
    accepted: set[tuple[str, str, str, str, bool]] = set()

    def validate(text: str) -> None:
        okey, _, skey = text.partition("@")
        object_type, _, rest = okey.partition(":")
        relation = rest.partition("#")[2]
        subject_type, _, rest = skey.partition(":")
        subject_id, _, subject_relation = rest.partition("#")
        shape = (object_type, relation, subject_type, subject_relation, subject_id == "*")
        if shape not in accepted:
            validate_tuple(policy, RelationTuple.parse(text))
            accepted.add(shape)

    return validate
