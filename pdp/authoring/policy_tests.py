"""The policy authors' test runner: a bundle's `*.test.toml` files, cases and matrices, run through
the real engine, with the rules the tests never exercised.

A test file holds `[entities]` ("type:id" = {attributes}), optional extra `tuples`, `[[test]]`
cases (subject, action, resource, context, expect = "allow" | "deny", optional rule / reason /
not_found) and `[[matrix]]` blocks (subjects x actions x resources; `allow` lists the
"subject action resource" triples expected to be allowed, every other combination must deny).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pdp.bundle import Bundle
from pdp.engine import Engine
from pdp.errors import Refused
from pdp.explain.coverage import Coverage
from pdp.explain.reference import evaluate
from pdp.identifiers import parse_ref
from pdp.model import Decision, Entity, RelationTuple, Request, Value


class TestFileError(Refused):
    """A test file is malformed; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class CaseResult:
    file: str
    name: str
    passed: bool
    expected: str
    got: str
    decision: Decision | None = None
    message: str = ""
    request: Request | None = None


@dataclass(slots=True)
class Report:
    results: list[CaseResult] = field(default_factory=list)
    unexercised: list[str] = field(default_factory=list)
    coverage: Coverage | None = None  # with run_tests(coverage=True)

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": len(self.results) - len(self.failed),
            "failed": len(self.failed),
            "results": [
                {
                    "file": r.file,
                    "name": r.name,
                    "passed": r.passed,
                    "expected": r.expected,
                    "got": r.got,
                    "message": r.message,
                }
                for r in self.results
            ],
            "unexercised_rules": self.unexercised,
            **({"coverage": self.coverage.to_json()} if self.coverage is not None else {}),
        }


def to_value(raw: Any, where: str) -> Value:
    """Turn a TOML/JSON value into an attribute value: lists become frozensets of one type."""
    if isinstance(raw, bool | int | str):
        return raw
    if isinstance(raw, list):
        kinds = {type(v) for v in raw}
        if len(kinds) > 1 or kinds - {str, int}:
            raise TestFileError(f"{where}: a set holds only strings or only integers")
        return frozenset(raw)
    raise TestFileError(f"{where}: unsupported value {type(raw).__name__}")


def to_attrs(raw: Mapping[str, Any], where: str) -> dict[str, Value]:
    return {k: to_value(v, f"{where}.{k}") for k, v in raw.items()}


def parse_entity(ref: str, entities: Mapping[str, Mapping[str, Value]], where: str) -> Entity:
    try:
        type_name, id_ = parse_ref(ref)
    except ValueError as exc:
        raise TestFileError(f"{where}: {exc}") from None
    return Entity(type_name, id_, entities.get(ref, {}))


def run_tests(bundle: Bundle, name_filter: str = "", *, coverage: bool = False) -> Report:
    """Run every test of the bundle through the engine. With `coverage`, also decide each request
    with the reference interpreter (pdp.explain) and record what it reached."""
    report = Report(coverage=Coverage(bundle.policy) if coverage else None)
    exercised: set[str] = set()
    for file, doc in bundle.tests:
        engine = Engine(cache_ttl=0)
        engine.load(bundle)
        try:
            cases = list(_cases(file, doc))
            extra = [RelationTuple.parse(t) for t in doc.get("tuples", [])]
            if extra:
                engine.write_tuples(extra)
        except (TestFileError, ValueError) as exc:
            report.results.append(
                CaseResult(file, "<file>", False, "a valid test file", "error", message=str(exc))
            )
            continue
        for name, request, expect, want in cases:
            if name_filter and not fnmatch.fnmatch(name, f"*{name_filter}*"):
                continue
            decision = engine.check(request)
            exercised.update(decision.rule_ids)
            if report.coverage is not None:
                view = engine.pin()
                snapshot = view.snapshot
                assert snapshot is not None  # loaded above
                outcome = evaluate(snapshot.policy, view.subjects_of, request, snapshot.max_depth)
                report.coverage.record(name, outcome)
            problems = []
            if decision.effect.value != expect:
                problems.append(
                    f"expected {expect}, got {decision.effect.value} ({decision.reason.value}{', ' + ', '.join(decision.rule_ids) if decision.rule_ids else ''})"
                )
            if "rule" in want and want["rule"] not in decision.rule_ids:
                problems.append(f"expected rule `{want['rule']}`, got {list(decision.rule_ids)}")
            if "reason" in want and want["reason"] != decision.reason.value:
                problems.append(
                    f"expected reason `{want['reason']}`, got `{decision.reason.value}`"
                )
            if "not_found" in want and bool(want["not_found"]) != decision.not_found:
                problems.append(f"expected not_found={want['not_found']}")
            report.results.append(
                CaseResult(
                    file,
                    name,
                    not problems,
                    expect,
                    decision.effect.value,
                    decision,
                    "; ".join(problems),
                    request,
                )
            )
    all_rules = {r.name for r in bundle.policy.rules} | {
        f"role:{r}" for r, decl in bundle.policy.roles.items() if decl.grants or decl.parents
    }
    report.unexercised = sorted(all_rules - exercised)
    return report


def _cases(file: str, doc: Mapping[str, Any]) -> Any:
    raw_entities = doc.get("entities", {})
    if not isinstance(raw_entities, dict):
        raise TestFileError(f"{file}: `entities` must be a table")
    entities = {
        ref: to_attrs(attrs, f"{file}: entities.{ref}") for ref, attrs in raw_entities.items()
    }
    for i, case in enumerate(doc.get("test", [])):
        yield _test_case(case, entities, f"{file}: test[{i}]")
    for i, matrix in enumerate(doc.get("matrix", [])):
        yield from _matrix_cases(matrix, entities, f"{file}: matrix[{i}]")


def _test_case(case: Mapping[str, Any], entities: Mapping[str, Any], where: str) -> Any:
    for key in ("name", "subject", "action", "resource", "expect"):
        if key not in case:
            raise TestFileError(f"{where}: missing `{key}`")
    expect = str(case["expect"]).lower()
    if expect not in ("allow", "deny"):
        raise TestFileError(f'{where}: `expect` must be "allow" or "deny"')
    request = Request(
        parse_entity(case["subject"], entities, where),
        str(case["action"]),
        parse_entity(case["resource"], entities, where),
        to_attrs(case.get("context", {}), f"{where}.context"),
    )
    return str(case["name"]), request, expect, case


def _matrix_cases(matrix: Mapping[str, Any], entities: Mapping[str, Any], where: str) -> Any:
    for key in ("name", "subjects", "actions", "resources"):
        if key not in matrix:
            raise TestFileError(f"{where}: missing `{key}`")
    allowed = {tuple(str(x).split()) for x in matrix.get("allow", [])}
    for triple in allowed:
        if len(triple) != 3:
            raise TestFileError(f'{where}: `allow` entries are "subject action resource"')
    context = to_attrs(matrix.get("context", {}), f"{where}.context")
    for s in matrix["subjects"]:
        for a in matrix["actions"]:
            for r in matrix["resources"]:
                request = Request(
                    parse_entity(s, entities, where),
                    a,
                    parse_entity(r, entities, where),
                    context,
                )
                expect = "allow" if (s, a, r) in allowed else "deny"
                yield f"{matrix['name']}: {s} {a} {r}", request, expect, {}
