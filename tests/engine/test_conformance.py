"""The conformance corpus through the engine in process, with the cache off and on."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdp.bundle import BundleError, bundle_from_text
from pdp.engine import Engine
from pdp.explain import explain
from pdp.model import Decision
from tests.conformance.cases import (
    CACHE_KEY_BUGS,
    Case,
    Check,
    CorpusError,
    apply_stage,
    apply_stages,
    load_cases,
    load_diagnostic_cases,
)

CASES = load_cases()
CHECKS = [(case, check) for case in CASES for check in case.checks]


def engine_at(case: Case, check: Check, cache_ttl: float | None = None) -> Engine:
    """A fresh engine brought through the case's stages up to the one `check` belongs to."""
    engine = Engine(cache_ttl=cache_ttl)
    apply_stages(case, check.stage, engine.load, engine.write_tuples)
    return engine


def got(decision: Decision) -> tuple[str, str, tuple[str, ...], bool]:
    return (decision.effect.value, decision.reason.value, decision.rule_ids, decision.not_found)


@pytest.mark.parametrize("cache_ttl", [0, 60])
@pytest.mark.parametrize(("case", "check"), CHECKS, ids=[c.id for _, c in CHECKS])
def test_decision(case: Case, check: Check, cache_ttl: float) -> None:
    engine = engine_at(case, check, cache_ttl)
    # Twice: the second answer may come from the cache and must be the same.
    at = check.min_tuple_revision(engine.tuple_revision)
    first = engine.check(check.request, min_tuple_revision=at)
    second = engine.check(check.request, min_tuple_revision=at)
    assert got(first) == check.expected, first
    assert got(second) == check.expected, second


@pytest.mark.parametrize(("case", "check"), CHECKS, ids=[c.id for _, c in CHECKS])
def test_explain_agrees_and_traces(case: Case, check: Check) -> None:
    engine = engine_at(case, check)
    at = check.min_tuple_revision(engine.tuple_revision)
    explained = explain(engine, check.request, min_tuple_revision=at)
    assert got(explained) == check.expected, explained
    assert not explained.cached
    if check.reason != "stale_tuples":  # refused before any rule is looked at: nothing to trace
        assert explained.trace is not None
        assert all(step.id != "mismatch" for step in explained.trace)


def _in_order(case: Case) -> object:
    bug = CACHE_KEY_BUGS.get(case.name)
    return pytest.param(case, id=case.name, marks=[pytest.mark.xfail(reason=bug)] if bug else [])


@pytest.mark.parametrize("case", [_in_order(c) for c in CASES])
def test_case_on_one_engine_in_order(case: Case) -> None:
    """As the sidecar runs it: one engine, the cache on, every stage and check in order, so a
    cache entry one check leaves must not answer a later check it does not fit."""
    engine = Engine(cache_ttl=60)
    for i, stage in enumerate(case.stages):
        apply_stage(case, i, engine.load, engine.write_tuples)
        for check in stage.checks:
            at = check.min_tuple_revision(engine.tuple_revision)
            assert got(engine.check(check.request, min_tuple_revision=at)) == check.expected, (
                check.id
            )


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


# ---- the corpus schema: a malformed case is an error, never a silently skipped assertion

POLICY = '"""\ntype user {}\ntype doc { actions read }\npermit p: read on doc\n"""'
CHECK = 'subject = "user:u", action = "read", resource = "doc:1", expect = "allow"'


def corpus(tmp_path: Path, text: str) -> list[Path]:
    path = tmp_path / "case.toml"
    path.write_text(text)
    return [path]


def test_a_well_formed_case_loads(tmp_path: Path) -> None:
    [case] = load_cases(
        corpus(
            tmp_path,
            f'[[case]]\nname = "ok"\npolicy = {POLICY}\n'
            f'check = [{{ {CHECK}, reason = "permitted", rules = ["p"] }}]\n',
        )
    )
    assert [c.expected for c in case.checks] == [("allow", "permitted", ("p",), False)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f'[[case]]\nname = "x"\npolicy = {POLICY}\n'
            f'check = [{{ {CHECK}, reason = "permitted", rule = ["p"] }}]\n',
            "unknown key `rule`",
        ),
        (
            f'[[case]]\nname = "x"\npolicy = {POLICY}\ncheck = [{{ {CHECK}, rules = ["p"] }}]\n',
            "missing `reason`",
        ),
        (
            f'[[case]]\nname = "x"\npolicy = {POLICY}\n'
            f'check = [{{ {CHECK}, reason = "permitted" }}]\n',
            "missing `rules`",
        ),
        (
            f'[[case]]\nname = "x"\npolicy = {POLICY}\n'
            f'check = [{{ {CHECK}, reason = "allowed", rules = ["p"] }}]\n',
            "`reason` must be one of",
        ),
        (
            f'[[case]]\nname = "x"\npolicy = {POLICY}\nmax_depth = "3"\n'
            f'check = [{{ {CHECK}, reason = "permitted", rules = ["p"] }}]\n',
            "`max_depth` must be an integer",
        ),
        (
            f'[[case]]\nname = "x"\npolicy = {POLICY}\n'
            f'check = [{{ {CHECK}, reason = "permitted", rules = ["p"] }}]\n'
            '[[case.stage]]\nwrites = ["doc:1#viewer@user:u"]\ncheck = []\n',
            "stage 1: unknown key `writes`",
        ),
        (
            f'[[case]]\nname = "x"\npolicy = {POLICY}\n[case.defaults]\nreason = "permitted"\n',
            "defaults: unknown key `reason`",
        ),
        (f'[[case]]\nname = "x"\npolicy = {POLICY}\n', "no check asserts nothing"),
        (f'[[cases]]\nname = "x"\npolicy = {POLICY}\n', "unknown key `cases`"),
        ('[[error]]\nname = "x"\npolicy = "x"\nerror = []\n', "unknown key `error`"),
    ],
)
def test_a_malformed_case_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    def load_both(paths: list[Path]) -> None:
        load_cases(paths)
        load_diagnostic_cases(paths)

    with pytest.raises(CorpusError, match=message):
        load_both(corpus(tmp_path, text))
