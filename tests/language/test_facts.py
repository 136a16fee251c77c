"""The checked policy's static facts: computed once by the checker, read-only, and what the compiler
and the reference interpreter both read (so they are pinned here, on their own)."""

from __future__ import annotations

import pytest

from policy_lang import parse
from policy_lang.checker import PYTHON_TYPES, CheckedPolicy, check

POLICY = """
type user { attributes { tenant: string, level: int, roles: set<string> } }
type team { attributes { tenant: string, level: string } }
type doc {
  attributes { tenant: string, pages: int }
  actions read, write, delete
}
type folder { actions read }
context { hour: int }
role viewer { allow read on doc }
role editor scoped by tenant extends viewer { allow write on doc }
role owner extends editor { allow delete on * }
role auditor { allow read on * }
role lone { }
bind roles from subject.roles
"""


def checked(text: str = POLICY) -> CheckedPolicy:
    policy, diagnostics = check([parse(text, "p.pdp")])
    assert [d for d in diagnostics if d.severity == "error"] == []
    return policy


def test_role_ancestors_and_includes_are_transitive() -> None:
    p = checked()
    assert p.role_ancestors["owner"] == {"owner", "editor", "viewer"}
    assert p.role_ancestors["viewer"] == {"viewer"}
    # who satisfies `subject has role viewer`: viewer and every role extending it
    assert p.role_includes["viewer"] == {"viewer", "editor", "owner"}
    assert p.role_includes["owner"] == {"owner"}


def test_role_scopes_are_inherited_and_sorted() -> None:
    p = checked()
    assert p.role_scopes == {
        "viewer": (),
        "editor": ("tenant",),
        "owner": ("tenant",),
        "auditor": (),
        "lone": (),
    }


def test_granting_roles_cover_every_declared_type_and_action_in_name_order() -> None:
    p = checked()
    assert p.granting_roles[("doc", "read")] == ("auditor", "editor", "owner", "viewer")
    assert p.granting_roles[("doc", "write")] == ("editor", "owner")
    assert p.granting_roles[("doc", "delete")] == ("owner",)
    assert p.granting_roles[("folder", "read")] == ("auditor",)
    assert set(p.granting_roles) == {
        ("doc", "read"),
        ("doc", "write"),
        ("doc", "delete"),
        ("folder", "read"),
    }


def test_attribute_table_declares_what_a_request_is_validated_against() -> None:
    table = checked().attributes
    assert table.declared("resource", "pages", "doc") == "int"
    assert table.declared("resource", "pages", "folder") is None  # not declared there: unchecked
    assert table.declared("context", "hour", "doc") == "int"
    assert table.declared("context", "id", "doc") is None  # `context.id` is no builtin
    assert table.declared("subject", "id", "doc") == "string"
    # a subject can be of any type: its attribute's first declaration is the one checked
    assert table.declared("subject", "level", "doc") == "int"
    assert table.declared("subject", "missing", "doc") is None
    assert {PYTHON_TYPES[t] for t in ("string", "int", "bool", "set<int>")} == {
        str,
        int,
        bool,
        frozenset,
    }


def test_the_facts_are_read_only() -> None:
    p = checked()
    with pytest.raises(TypeError):
        p.role_scopes["viewer"] = ("tenant",)  # type: ignore[index]
    with pytest.raises(TypeError):
        p.granting_roles[("doc", "read")] = ()  # type: ignore[index]
    with pytest.raises(TypeError):
        p.attributes.resource["doc"]["pages"] = "string"  # type: ignore[index]
    with pytest.raises(AttributeError):
        p.attributes.context = {}  # type: ignore[misc]


def test_facts_survive_a_policy_with_errors() -> None:
    # an unknown parent and an inheritance cycle are reported; deriving the facts must not loop
    policy, diagnostics = check(
        [
            parse(
                "type doc { actions read }\nrole a extends b, ghost { allow read on doc }\nrole b extends a { }",
                "p.pdp",
            )
        ]
    )
    assert {d.code for d in diagnostics} >= {"unknown_role", "cycle"}
    assert policy.role_ancestors["a"] == {"a", "b"}
    assert policy.granting_roles[("doc", "read")] == ("a", "b")
