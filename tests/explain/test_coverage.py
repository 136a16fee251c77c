"""Policy test coverage (pdp/explain/coverage.py, `pdp test --coverage`): what counts as reached,
against an oracle that asks the compiled engine, and the example bundle at 100%."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.authoring.policy_tests import run_tests
from pdp.bundle import Bundle, Settings, bundle_from_text
from pdp.cli import main
from pdp.engine import Engine
from pdp.explain.coverage import Coverage
from pdp.explain.reference import evaluate, naive_lookup
from pdp.model import Effect, Reason, Request
from tests.strategies import SCHEMA, requests, roles, rules, tuple_strings

SAAS = Path(__file__).parent.parent.parent / "bundles" / "saas"


def test_the_example_bundle_reaches_everything(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", str(SAAS), "--coverage-min", "100"]) == 0
    out = capsys.readouterr().out
    assert "coverage: 100.0%" in out
    assert "NOT REACHED" not in out
    assert main(["test", str(SAAS), "--json", "--coverage"]) == 0
    coverage = json.loads(capsys.readouterr().out)["coverage"]
    assert coverage["percent"] == 100.0
    assert coverage["reached"] == coverage["total"] > 20
    kinds = {item["kind"] for item in coverage["items"]}
    assert kinds == {"rule", "role", "branch"}
    blocked = next(i for i in coverage["items"] if i["id"] == "document.view[4]")
    assert blocked["text"] == "blocked"
    assert "blocked user is excluded despite group membership" in blocked["tests"]


def test_unreached_items_come_first_and_coverage_min_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(SAAS, bundle)
    (bundle / "policies" / "extra.pdp").write_text(
        'permit untested: approve on document when subject.id == "nobody" and context.hour == 3\n'
    )
    assert main(["test", str(bundle), "--coverage"]) == 0  # no minimum: the tests pass
    out = capsys.readouterr().out
    # Looked at (its condition evaluated) whenever no earlier rule decided an approval.
    assert re.search(r"  reached +rule +untested +by: approver may not approve at night", out)
    assert main(["test", str(bundle), "--coverage-min", "100", "--filter", "owner deletes"]) == 1
    out = capsys.readouterr().out
    listed = out.split("reached)\n", 1)[1].splitlines()
    not_reached = [i for i, line in enumerate(listed) if line.startswith("  NOT REACHED")]
    reached = [i for i, line in enumerate(listed) if line.startswith("  reached")]
    assert not_reached and reached and max(not_reached) < min(reached)
    assert re.search(r"coverage \d+\.\d% is below --coverage-min 100%", out)
    assert main(["test", str(bundle), "--json", "--coverage-min", "100", "--filter", "owner"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["failed"] == 0 and report["coverage"]["percent"] < 100


BRANCHES = """
type user {}
type doc {
  actions u, i, x, up
  relation a: user
  relation b: user
  relation c: user
  relation parent: doc
  permission un = a + b + c
  permission inter = a & b
  permission ex = (a + b) - c
  permission lifted = parent->un
}
permit pu: u on doc when subject has un on resource
permit pi: i on doc when subject has inter on resource
permit px: x on doc when subject has ex on resource
permit pup: up on doc when subject has lifted on resource
"""


def with_tests(bundle: Bundle, doc: dict[str, Any]) -> Bundle:
    return dataclasses.replace(bundle, tests=(("t.test.toml", doc),))


def reached_by(action: str, subject: str, tuples: list[str]) -> set[str]:
    bundle = with_tests(
        bundle_from_text(BRANCHES),
        {
            "tuples": tuples,
            "test": [
                {
                    "name": "t",
                    "subject": subject,
                    "action": action,
                    "resource": "doc:d",
                    "expect": "deny",
                }
            ],
        },
    )
    coverage = run_tests(bundle, coverage=True).coverage
    assert coverage is not None
    return {item.id for item in coverage.items if coverage.tests[item.id]}


@pytest.mark.parametrize(
    ("action", "tuples", "branches"),
    [
        # a union stops at the first operand that grants
        ("u", ["doc:d#a@user:s"], {"doc.un[0]"}),
        ("u", ["doc:d#b@user:s"], {"doc.un[0]", "doc.un[1]"}),
        ("u", [], {"doc.un[0]", "doc.un[1]", "doc.un[2]"}),
        # an intersection at the first that does not
        ("i", [], {"doc.inter[0]"}),
        ("i", ["doc:d#a@user:s"], {"doc.inter[0]", "doc.inter[1]"}),
        # an exclusion asks its right side only if its left side granted
        ("x", [], {"doc.ex[0]", "doc.ex[1]", "doc.ex[2]"}),
        ("x", ["doc:d#b@user:s"], {"doc.ex[0]", "doc.ex[1]", "doc.ex[2]", "doc.ex[3]"}),
        # an arrow is a branch; through it, the permission on the parent is walked
        ("up", [], {"doc.lifted[0]"}),
        ("up", ["doc:d#parent@doc:p", "doc:p#a@user:s"], {"doc.lifted[0]", "doc.un[0]"}),
    ],
)
def test_a_branch_is_reached_when_the_walk_enters_it(
    action: str, tuples: list[str], branches: set[str]
) -> None:
    got = reached_by(action, "user:s", tuples)
    assert {b for b in got if b.startswith("doc.")} == branches


def test_branches_are_numbered_in_source_order() -> None:
    coverage = Coverage(bundle_from_text(BRANCHES).policy)
    texts = {item.id: item.text for item in coverage.items if item.kind == "branch"}
    assert texts == {
        "doc.un[0]": "a",
        "doc.un[1]": "b",
        "doc.un[2]": "c",
        "doc.inter[0]": "a",
        "doc.inter[1]": "b",
        "doc.ex[0]": "a + b",
        "doc.ex[1]": "a",
        "doc.ex[2]": "b",
        "doc.ex[3]": "c",
        "doc.lifted[0]": "parent->un",
    }


# ---- the oracle: which rules and roles the decision procedure must have looked at, from each
# rule's condition alone as the compiled engine decides it (a one-rule policy whose roles grant
# nothing), and the order of language.md's "How a decision is made".

_RULE = re.compile(r"^(permit|forbid) (\w+)( as not_found)?:(.*)$")


def _condition_outcomes(
    role_text: str, rule_text: str, tuples: list[str], depth: int, request: Request
) -> dict[str, str]:
    no_grants = re.sub(r"\{[^}]*\}", "{ }", role_text)
    out = {}
    for line in rule_text.splitlines():
        m = _RULE.match(line)
        assert m is not None, line
        probe = bundle_from_text(
            SCHEMA + no_grants + "\n" + f"permit probe:{m.group(4)}",
            tuples,
            settings=Settings(max_depth=depth),
        )
        engine = Engine(cache_ttl=0)
        engine.load(probe)
        d = engine.check(request)
        if d.effect is Effect.ALLOW:
            out[m.group(2)] = "matched"
        elif d.reason in (Reason.EVALUATION_ERROR, Reason.DEPTH_LIMIT):
            out[m.group(2)] = "error"
        else:
            out[m.group(2)] = "not_matched"
    return out


def _oracle(bundle: Bundle, outcomes: dict[str, str], request: Request) -> set[str]:
    policy = bundle.policy
    rtype, action = request.resource.type, request.action
    if rtype not in policy.types or action not in policy.types[rtype].actions:
        return set()
    applicable = [
        r
        for r in policy.rules
        if (r.actions is None or action in r.actions) and (r.types is None or rtype in r.types)
    ]
    reached: list[str] = []
    for f in sorted(
        (r for r in applicable if r.effect == "forbid"), key=lambda r: (not r.not_found, r.name)
    ):
        reached.append(f.name)
        if outcomes[f.name] != "not_matched":
            return set(reached)
    for p in (r for r in applicable if r.effect == "permit"):
        reached.append(p.name)
        if outcomes[p.name] == "matched":
            return set(reached)
    granting = [f"role:{r}" for r in policy.granting_roles.get((rtype, action), ())]
    engine = Engine(cache_ttl=0)
    engine.load(bundle)
    decision = engine.check(request)
    if decision.allowed and decision.rule_ids[0] in granting:
        granting = granting[: granting.index(decision.rule_ids[0]) + 1]
    return set(reached) | set(granting)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules(min_rules=1),
    roles(),
    st.lists(tuple_strings, max_size=10),
    st.lists(requests(), min_size=1, max_size=4),
    st.integers(2, 5),
)
def test_coverage_is_what_the_decision_procedure_evaluated(
    rule_text: str, role_text: str, tuples: list[str], reqs: list[Request], depth: int
) -> None:
    bundle = bundle_from_text(
        SCHEMA + role_text + "\n" + rule_text, tuples, settings=Settings(max_depth=depth)
    )
    coverage = Coverage(bundle.policy)
    expected: dict[str, set[str]] = {item.id: set() for item in coverage.items}
    lookup = naive_lookup(bundle.tuples)
    for i, request in enumerate(reqs):
        name = f"test {i}"
        coverage.record(name, evaluate(bundle.policy, lookup, request, depth))
        outcomes = _condition_outcomes(role_text, rule_text, tuples, depth, request)
        for key in _oracle(bundle, outcomes, request):
            expected[key].add(name)
    got = {
        item.id: set(coverage.tests[item.id]) for item in coverage.items if item.kind != "branch"
    }
    assert got == {k: v for k, v in expected.items() if k in got}, (rule_text, role_text)
