"""The conformance corpus through the engine in process, with the cache off and on; its lookups
through pdp.engine.lookup, each expectation also put to brute-force Check."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pdp.bundle import BundleError, bundle_from_text
from pdp.engine import Engine
from pdp.engine.lookup import Lookup, lookup_resources, lookup_subjects
from pdp.explain import explain
from pdp.model import Decision, Effect, Entity, Request
from tests.conformance.cases import (
    CACHE_KEY_BUGS,
    Case,
    Check,
    CorpusError,
    Listing,
    apply_stage,
    apply_stages,
    load_cases,
    load_diagnostic_cases,
)

CASES = load_cases()
CHECKS = [(case, check) for case in CASES for check in case.checks]
LOOKUPS = [(case, lookup) for case in CASES for lookup in case.lookups]


def engine_at(case: Case, check: Check | Listing, cache_ttl: float | None = None) -> Engine:
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


def look(engine: Engine, lookup: Listing, after: str = "") -> Lookup:
    view, x = engine.pin(), lookup
    if x.resources:
        return lookup_resources(view, x.start, x.action, x.listed_type, x.context, after=after)
    return lookup_subjects(view, x.start, x.action, x.listed_type, x.context, after=after)


def assert_lookup(engine: Engine, lookup: Listing) -> None:
    """The lookup answers as expected, resumes exactly after any id, and brute force agrees."""
    found = look(engine, lookup)
    ids = tuple(found)
    assert (ids, not found.incomplete, tuple(found.excluded)) == lookup.expected, (
        lookup.id,
        found.incomplete,
    )
    assert not lookup.missing_reasons(found.incomplete), (lookup.id, found.incomplete)
    for n, after in enumerate(ids):
        assert tuple(look(engine, lookup, after)) == ids[n + 1 :], (lookup.id, after)

    def allows(request: Request) -> bool:
        return engine.check(request, cached=False).effect is Effect.ALLOW

    assert not lookup.disagreements(allows, lookup.universe), lookup.id
    if lookup.resources:  # every resource id the tuples name is put to Check, and listed if allowed
        known = engine.pin().tuples.object_ids(lookup.listed_type)
        assert not known & set(lookup.unlisted), lookup.id


@pytest.mark.parametrize(("case", "lookup"), LOOKUPS, ids=[x.id for _, x in LOOKUPS])
def test_lookup(case: Case, lookup: Listing) -> None:
    assert_lookup(engine_at(case, lookup, cache_ttl=60), lookup)


@pytest.mark.parametrize("case", [c for c in CASES if c.lookups], ids=lambda c: c.name)
def test_lookups_on_one_engine_in_order(case: Case) -> None:
    """Checks and lookups interleaved on one engine, as the sidecar serves them."""
    engine = Engine(cache_ttl=60)
    for i, stage in enumerate(case.stages):
        apply_stage(case, i, engine.load, engine.write_tuples)
        for check in stage.checks:
            at = check.min_tuple_revision(engine.tuple_revision)
            engine.check(check.request, min_tuple_revision=at)
        for lookup in stage.lookups:
            assert_lookup(engine, lookup)


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


LOOKUP = f'[[case]]\nname = "x"\npolicy = {POLICY}\nlookup_resources = [\n'
RESOURCES = 'subject = "user:u", action = "read", resource_type = "doc"'
SUBJECTS = 'resource = "doc:1", action = "read", subject_type = "user"'


def test_a_case_of_lookups_alone_loads_and_brute_force_knows_its_ids(tmp_path: Path) -> None:
    [case] = load_cases(
        corpus(
            tmp_path,
            f'{LOOKUP}  {{ {RESOURCES}, expect = [], complete = false, unlisted = ["1"] }},\n]\n'
            f'lookup_subjects = [\n  {{ {SUBJECTS}, expect = ["*"], complete = true }},\n]\n',
        )
    )
    resources, subjects = case.lookups
    assert resources.universe == ("1",)  # named by the other lookup; not complete: no stranger
    assert subjects.universe == ("*", "named-nowhere", "u")
    assert resources.request("1") == Request(Entity("user", "u"), "read", Entity("doc", "1"))
    assert subjects.allows("named-nowhere") and not resources.allows("2")


def test_brute_force_catches_a_wrong_expectation(tmp_path: Path) -> None:
    """Under `permit p: read on doc` Check allows everything: an expectation that leaves an id
    out, claims a whole answer or excludes an allowed id from `*` disagrees with Check."""
    [case] = load_cases(
        corpus(
            tmp_path,
            f'{LOOKUP}  {{ {RESOURCES}, expect = ["1"], complete = true }},\n]\n'
            f'lookup_subjects = [\n  {{ {SUBJECTS}, expect = ["*"], excluded = ["v"], '
            "complete = true },\n]\n",
        )
    )
    resources, subjects = case.lookups
    engine = Engine()
    engine.load(case.bundle())

    def allows(request: Request) -> bool:
        return engine.check(request, cached=False).effect is Effect.ALLOW

    assert resources.disagreements(allows, resources.universe) == ["named-nowhere: Check allows"]
    assert resources.disagreements(allows, ["2"]) == ["2: Check allows"]
    assert subjects.disagreements(allows, subjects.universe) == ["v: Check allows"]
    assert replace(subjects, excluded=()).disagreements(allows, subjects.universe) == []
    assert replace(subjects, expect=()).disagreements(allows, ["u"]) == ["u: Check allows"]


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
        (f"{LOOKUP}  {{ {RESOURCES}, expect = [] }},\n]\n", "missing `complete`"),
        (f"{LOOKUP}  {{ {RESOURCES}, expect = [], complete = true, type = 1 }},\n]\n", "`type`"),
        (
            f"{LOOKUP}  {{ {RESOURCES}, expect = [], complete = true, excluded = ['u'] }},\n]\n",
            "unknown key `excluded`",
        ),
        (
            f'{LOOKUP.replace("resources", "subjects")}  {{ {SUBJECTS}, expect = ["u"], '
            "complete = true, excluded = ['v'] },\n]\n",
            "listed `\\*`",
        ),
        (
            f"{LOOKUP}  {{ {RESOURCES}, expect = [], complete = true, unlisted = ['1'] }},\n]\n",
            "`complete = false`",
        ),
        (f"{LOOKUP}  {{ {RESOURCES}, expect = ['1', '1'], complete = true }},\n]\n", "twice"),
    ],
)
def test_a_malformed_case_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    def load_both(paths: list[Path]) -> None:
        load_cases(paths)
        load_diagnostic_cases(paths)

    with pytest.raises(CorpusError, match=message):
        load_both(corpus(tmp_path, text))
