"""The conformance corpus through the engine in process, with the cache off and on."""

from __future__ import annotations

import pytest

from pdp.bundle import BundleError, bundle_from_text
from pdp.engine import Engine
from tests.conformance.cases import Check, load_cases, load_diagnostic_cases

CASES = load_cases()
CHECKS = [(case, check) for case in CASES for check in case.checks]


def assert_decision(check: Check, decision) -> None:  # type: ignore[no-untyped-def]
    assert decision.effect.value == check.expect, decision
    if check.reason is not None:
        assert decision.reason.value == check.reason, decision
    if check.rules is not None:
        assert decision.rule_ids == check.rules, decision
    if check.not_found is not None:
        assert decision.not_found == check.not_found, decision


@pytest.mark.parametrize("cache_ttl", [0, 60])
@pytest.mark.parametrize(("case", "check"), CHECKS, ids=[c.id for _, c in CHECKS])
def test_decision(case, check: Check, cache_ttl: float) -> None:  # type: ignore[no-untyped-def]
    engine = Engine(cache_ttl=cache_ttl)
    engine.load(case.bundle())
    # Twice: the second answer may come from the cache and must be the same.
    first = engine.check(check.request)
    second = engine.check(check.request)
    assert_decision(check, first)
    assert_decision(check, second)


@pytest.mark.parametrize(("case", "check"), CHECKS, ids=[c.id for _, c in CHECKS])
def test_explain_agrees_and_traces(case, check: Check) -> None:  # type: ignore[no-untyped-def]
    engine = Engine()
    engine.load(case.bundle())
    explained = engine.check(check.request, explain=True)
    assert_decision(check, explained)
    assert explained.trace is not None
    assert not explained.cached
    assert all(step.id != "mismatch" for step in explained.trace)


DIAGNOSTICS = load_diagnostic_cases()


@pytest.mark.parametrize(
    ("name", "policy", "severity", "expected"), DIAGNOSTICS, ids=[d[0] for d in DIAGNOSTICS]
)
def test_diagnostics(name: str, policy: str, severity: str, expected: list[str]) -> None:
    if severity == "error":
        with pytest.raises(BundleError) as info:
            bundle_from_text(policy)
        diags = [d for d in info.value.diagnostics if d.is_error]
    else:
        diags = list(bundle_from_text(policy).warnings)
    got = sorted(f"{d.code}@{d.loc.line}:{d.loc.col}" for d in diags)
    assert got == sorted(expected)
    for d in diags:
        text = d.format()
        assert text.startswith(f"policy.pdp:{d.loc.line}:{d.loc.col}: {severity}[{d.code}]")
        assert "^" in text  # the offending line is shown with a caret
