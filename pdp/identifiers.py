"""The identifier grammar: what a type or relation name and an object id may be, enforced at every
entry (Check and BatchCheck entities, tuple writes and reads, bundle tuple files, token subjects,
the CLI).

SpiceDB's object-id grammar is the anchor. No id can hold `:`, `#`, `@`, `*`, whitespace or a
control character, so no id can spell a userset (`eng#member`), a relation, a tuple separator or
the wildcard, and every tuple round-trips through its text form `type:id#relation@type:id[#rel]`.
The wildcard `*` is a subject id only, and only without a subject relation (`user:*`).
"""

from __future__ import annotations

import re

NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,63}"  # the policy language's names, at most 64 long
ID_PATTERN = r"[A-Za-z0-9/_|\-=+]{1,1024}"  # `acme/alice` (tenant-namespaced ids) included
WILDCARD = "*"

_NAME = re.compile(NAME_PATTERN).fullmatch
_ID = re.compile(ID_PATTERN).fullmatch

NAME_RULE = "a letter or `_`, then letters, digits or `_`, at most 64 characters"
ID_RULE = "1 to 1024 of the characters `A-Z a-z 0-9 / _ | - = +`"


def is_name(value: object) -> bool:
    return isinstance(value, str) and _NAME(value) is not None


def is_id(value: object) -> bool:
    return isinstance(value, str) and _ID(value) is not None


def name_problem(value: str) -> str | None:
    """Why `value` is not a type or relation name, or None if it is one."""
    if is_name(value):
        return None
    if not value:
        return "is required"
    return f"`{_shown(value)}` is not a name: {NAME_RULE}"


def id_problem(value: str, *, wildcard: bool = False) -> str | None:
    """Why `value` is not an object id (or, with `wildcard`, the subject wildcard `*`)."""
    if is_id(value) or (wildcard and value == WILDCARD):
        return None
    if not value:
        return "is required"
    if value == WILDCARD:
        return "`*` is only a subject id, meaning every subject of its type"
    return f"`{_shown(value)}` is not an id: {ID_RULE}"


def parse_ref(ref: str) -> tuple[str, str]:
    """`type:id` (as the CLI and policy test files write an entity) as (type, id); ValueError
    with the problem in words if either part breaks the grammar."""
    type_name, sep, object_id = ref.partition(":")
    if not sep:
        raise ValueError(f"`{_shown(ref)}` is not `type:id`")
    problem = name_problem(type_name) or id_problem(object_id)
    if problem:
        raise ValueError(problem)
    return type_name, object_id


def _shown(value: str, limit: int = 64) -> str:
    """The value as safe one-line text for an error message: escapes shown, long values cut."""
    text = value.encode("unicode_escape").decode("ascii").replace("`", "\\x60")
    return text if len(text) <= limit else text[:limit] + "…"
