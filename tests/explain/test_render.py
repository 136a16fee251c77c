"""Explain's condition values and its tree (pdp/explain/reference.py, pdp/explain/render.py):
what `pdp check --explain` prints, masking, and the tree's shape on random policies."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.bundle import Settings, bundle_from_text, load_bundle
from pdp.cli import main
from pdp.engine import Engine
from pdp.explain import explain
from pdp.explain.reference import MASKED, MISSING, evaluate, naive_lookup, show
from pdp.explain.render import render, tree
from pdp.model import Entity, Request
from tests.strategies import SCHEMA, requests, roles, rules, tuple_strings

ROOT = Path(__file__).parent.parent.parent
MALLORY = Request(
    Entity("user", "mallory", {"tenant": "globex", "roles": frozenset()}),
    "read",
    Entity("document", "spec-1", {"tenant": "acme", "owner": "alice", "classification": 0}),
)


def saas_engine(monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.chdir(ROOT)  # the trace names rules by the path the bundle was loaded from
    engine = Engine(cache_ttl=0)
    engine.load(load_bundle(Path("bundles/saas")))
    return engine


def test_the_tree_in_the_language_doc(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    shown = re.search(r"--explain\n```\n\n```text\n(.*?)```", doc, re.S)
    assert shown is not None
    decision = explain(saas_engine(monkeypatch), MALLORY)
    assert render(decision, MALLORY) == shown.group(1)


def test_values_are_masked_by_name_or_by_path(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = saas_engine(monkeypatch)
    for mask, tenant_values in [
        (frozenset({"subject.tenant"}), {"resource.tenant": '"acme"', "subject.tenant": MASKED}),
        (frozenset({"tenant"}), {"resource.tenant": MASKED, "subject.tenant": MASKED}),
        (
            frozenset({"resource.owner"}),
            {"resource.tenant": '"acme"', "subject.tenant": '"globex"'},
        ),
    ]:
        trace = explain(engine, MALLORY, mask=mask).trace or ()
        (step,) = [s for s in trace if s.kind == "condition"]
        assert step.id == "resource.tenant != subject.tenant"
        assert step.outcome == "true"
        assert dict(step.values) == tenant_values
        assert step.depth == 1


def test_methods_missing_values_and_errors() -> None:
    bundle = bundle_from_text(
        """
type user { attributes { email: string, tags: set<string>, level?: int } }
type doc { actions read, write }
permit mail: read on doc when subject.email.lower().ends_with("@corp.com") and subject.tags.size() > 1
permit leveled: write on doc when subject.level > 2
"""
    )
    subject = Entity("user", "u", {"email": "Ann@CORP.com", "tags": frozenset({"b", "a"})})
    request = Request(subject, "read", Entity("doc", "d"))
    out = evaluate(bundle.policy, naive_lookup(()), request)
    steps = {s.id: s for s in out.trace if s.kind == "condition"}
    assert dict(steps['subject.email.lower().ends_with("@corp.com")'].values) == {
        'subject.email.lower().ends_with("@corp.com")': "true",
        "subject.email.lower()": '"ann@corp.com"',
        "subject.email": '"Ann@CORP.com"',
    }
    assert dict(steps["subject.tags.size() > 1"].values) == {
        "subject.tags.size()": "2",
        "subject.tags": '["a", "b"]',
    }
    masked = evaluate(bundle.policy, naive_lookup(()), request, mask=frozenset({"email"}))
    first = next(s for s in masked.trace if s.kind == "condition")
    assert {v for _, v in first.values} == {MASKED}  # a method of a masked value is masked too
    out = evaluate(bundle.policy, naive_lookup(()), Request(subject, "write", Entity("doc", "d")))
    (step,) = [s for s in out.trace if s.kind == "condition"]
    assert (step.outcome, step.detail, step.values) == (
        "error",
        "missing attribute `subject.level`",
        (("subject.level", MISSING),),
    )


def test_check_explain_prints_a_tree_and_json_for_tools(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    args = [
        "check",
        "bundles/saas",
        "--subject",
        "user:mallory",
        "--subject-attrs",
        '{"tenant": "globex", "roles": []}',
        "--action",
        "read",
        "--resource",
        "document:spec-1",
        "--resource-attrs",
        '{"tenant": "acme", "owner": "alice", "classification": 0}',
        "--explain",
    ]
    assert main(args) == 3
    out = capsys.readouterr().out
    assert out.splitlines()[1] == "DENY: forbidden by tenant_isolation (shown as not found)"
    assert '        subject.tenant = "globex"' in out.splitlines()
    assert main([*args, "--json", "--mask", "subject.tenant"]) == 3
    trace = json.loads(capsys.readouterr().out)["trace"]
    assert trace[0] == {
        "kind": "condition",
        "id": "resource.tenant != subject.tenant",
        "outcome": "true",
        "depth": 1,
        "values": [
            {"expr": "resource.tenant", "value": '"acme"'},
            {"expr": "subject.tenant", "value": MASKED},
        ],
    }
    assert trace[1]["kind"] == "forbid" and trace[1]["depth"] == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules(), roles(), st.lists(tuple_strings, max_size=10), requests(), st.integers(2, 5))
def test_the_trace_is_a_tree_and_values_are_the_request(
    rule_text: str, role_text: str, tuples: list[str], request: Request, depth: int
) -> None:
    bundle = bundle_from_text(
        SCHEMA + role_text + "\n" + rule_text, tuples, settings=Settings(max_depth=depth)
    )
    out = evaluate(bundle.policy, naive_lookup(bundle.tuples), request, depth)
    roots = tree(out.trace)
    count = 0
    stack = [(node, 0) for node in roots]
    while stack:
        node, level = stack.pop()
        count += 1
        assert node.step.depth == level, out.trace
        stack.extend((child, level + 1) for child in node.children)
    assert count == len(out.trace)
    conditions = {r.name: r.condition for r in bundle.policy.rules}
    for node in roots:
        step = node.step
        if step.kind in ("forbid", "permit") and step.outcome != "error":
            # A rule's children are its condition's leaves; an unconditional rule has none.
            assert bool(node.children) == (conditions[step.id] is not None)
    for step in out.trace:
        for text, value in step.values:
            root, _, name = text.partition(".")
            if "(" in text or root == "context":
                continue
            entity = request.subject if root == "subject" else request.resource
            if name in ("id", "type"):
                assert value == show(getattr(entity, name))
            else:
                assert value == (show(entity.attrs[name]) if name in entity.attrs else MISSING)


def test_show_writes_policy_syntax() -> None:
    assert [show(v) for v in ('a"b', 3, True, frozenset({2, 1}))] == [
        '"a\\"b"',
        "3",
        "true",
        "[1, 2]",
    ]


def test_has_role_shows_the_attributes_roles_are_bound_from() -> None:
    bundle = bundle_from_text(
        """
type user { attributes { roles: set<string>, level?: int } }
type doc { actions read }
role boss {}
bind roles from subject.roles
bind boss when subject.level > 5
permit bosses: read on doc when subject has role boss
"""
    )
    subject = Entity("user", "u", {"roles": frozenset({"boss"}), "level": 1})
    out = evaluate(bundle.policy, naive_lookup(()), Request(subject, "read", Entity("doc", "d")))
    roots = tree(out.trace)
    (rule,) = roots
    (leaf,) = rule.children
    assert (leaf.step.id, leaf.step.outcome) == ("subject has role boss", "true")
    assert leaf.step.values == (("subject.roles", '["boss"]'),)
    (binding,) = leaf.children
    assert (binding.step.kind, binding.step.id, binding.step.outcome) == (
        "binding",
        "bind:boss",
        "not_held",
    )
    assert [c.step.values for c in binding.children] == [(("subject.level", "1"),)]
