"""Loads the conformance corpus (the *.toml files beside this module): the language's spec as data.

A `[[case]]` is a policy, its bundle tuples and its checks. Every check states the decision, the
reason and the deciding rule ids (and `not_found = true` where a hiding forbid decided); nothing is
left unasserted. A case may go on in `[[case.stage]]`s, as OpenFGA's matrices do: each stage may
reload the bundle (`policy` and/or `tuples`: the bundle's new policy and tuples; written tuples
survive a reload), then write and delete tuples (`write`, `delete`: one atomic write), then check.
A `[[error]]` or `[[warning]]` is a policy with the diagnostics it must produce.

Every file is validated against the schema below before anything runs: an unknown key, a missing
key or a value of the wrong type is a `CorpusError` naming the file, the case and the key, never a
silently skipped assertion. The same corpus runs through the engine in process
(tests/engine/test_conformance.py) and through a real gRPC server
(tests/sidecar/test_conformance_grpc.py); `apply_stage` is the one reading of what a stage does.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdp.authoring.policy_tests import to_attrs
from pdp.bundle import Bundle, Settings, bundle_from_text
from pdp.model import Entity, Reason, RelationTuple, Request

HERE = Path(__file__).parent


class CorpusError(ValueError):
    """A case file breaks the corpus schema; the message names the file, the case and the key."""


# ---- the schema: each key's kind; a kind is a name (for messages) and a predicate


@dataclass(frozen=True)
class Kind:
    name: str
    ok: Callable[[Any], bool]


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


STR = Kind("a string", _is_str)
INT = Kind("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
STRS = Kind("a list of strings", lambda v: isinstance(v, list) and all(map(_is_str, v)))
TABLE = Kind("a table", lambda v: isinstance(v, dict))
TABLES = Kind(
    "a list of tables", lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v)
)
EXPECT = Kind('"allow" or "deny"', lambda v: v in ("allow", "deny"))
REASONS = frozenset(r.value for r in Reason)
REASON = Kind(f"one of {', '.join(sorted(REASONS))}", lambda v: isinstance(v, str) and v in REASONS)
REF = Kind('a "type:id" string', lambda v: isinstance(v, str) and ":" in v)

REQUEST_KEYS: Mapping[str, Kind] = {
    "subject": REF,
    "subject_attrs": TABLE,
    "action": STR,
    "resource": REF,
    "resource_attrs": TABLE,
    "context": TABLE,
}
CHECK_KEYS: Mapping[str, Kind] = {
    **REQUEST_KEYS,
    "expect": EXPECT,
    "reason": REASON,
    "rules": STRS,
    "not_found": BOOL,  # asserted in every check: absent means false
    # Ask with min_tuple_revision this many revisions past the store's current one (0: exactly
    # the current one). Relative, because how far a start or a reload moves the revision is the
    # runner's business, not the language's.
    "revision_ahead": INT,
}
# INVARIANT: every check asserts its decision, reason and deciding rules.
CHECK_REQUIRED = ("subject", "action", "resource", "expect", "reason", "rules")
STAGE_KEYS: Mapping[str, Kind] = {
    "name": STR,
    "policy": STR,  # reload: the bundle's new policy
    "tuples": STRS,  # reload: the bundle's new tuples
    "write": STRS,
    "delete": STRS,
    "check": TABLES,
}
CASE_KEYS: Mapping[str, Kind] = {
    "name": STR,
    "policy": STR,
    "tuples": STRS,
    "max_depth": INT,
    "fail_open": STRS,
    "defaults": TABLE,  # request keys shared by every check of the case, in every stage
    "check": TABLES,
    "stage": TABLES,
}
DIAGNOSTIC_KEYS: Mapping[str, Mapping[str, Kind]] = {
    "error": {"name": STR, "policy": STR, "errors": STRS},
    "warning": {"name": STR, "policy": STR, "warnings": STRS},
}
FILE_KEYS: Mapping[str, Kind] = {"case": TABLES, "error": TABLES, "warning": TABLES}


def validate(
    raw: Mapping[str, Any], keys: Mapping[str, Kind], required: Sequence[str], where: str
) -> None:
    """Refuse an unknown key, a missing required key, or a value of the wrong kind."""
    for key, value in raw.items():
        kind = keys.get(key)
        if kind is None:
            raise CorpusError(f"{where}: unknown key `{key}` (known: {', '.join(sorted(keys))})")
        if not kind.ok(value):
            raise CorpusError(f"{where}: `{key}` must be {kind.name}, not {value!r}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise CorpusError(f"{where}: missing {', '.join(f'`{k}`' for k in missing)}")


# Cases a runner that keeps one cache across a case's checks answers wrongly today: an earlier
# check's cache entry answers a later check that differs only in an input the key leaves out.
# Those runners mark them xfail(strict=True), so the fix shows as an XPASS to remove from here.
CACHE_KEY_BUGS: Mapping[str, str] = {}


# ---- the cases


@dataclass(frozen=True)
class Check:
    case: str
    stage: int
    request: Request
    expect: str
    reason: str
    rules: tuple[str, ...]
    not_found: bool
    revision_ahead: int | None = None

    def min_tuple_revision(self, current: int) -> int:
        """The min_tuple_revision to ask with, given the store's current revision."""
        return 0 if self.revision_ahead is None else current + self.revision_ahead

    @property
    def id(self) -> str:
        r = self.request
        at = f" [stage {self.stage}]" if self.stage else ""
        return f"{self.case}{at}: {r.subject} {r.action} {r.resource}"

    @property
    def expected(self) -> tuple[str, str, tuple[str, ...], bool]:
        """What every runner compares with (effect, reason, rule ids, not-found)."""
        return (self.expect, self.reason, self.rules, self.not_found)


@dataclass(frozen=True)
class Stage:
    policy: str  # the bundle's policy from this stage on
    tuples: tuple[str, ...]  # the bundle's tuples from this stage on
    reload: bool  # whether this stage (re)loads the bundle; stage 0 always does
    write: tuple[str, ...]
    delete: tuple[str, ...]
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class Case:
    name: str
    settings: Settings
    stages: tuple[Stage, ...]

    @property
    def checks(self) -> list[Check]:
        return [c for s in self.stages for c in s.checks]

    def bundle(self, stage: int = 0) -> Bundle:
        s = self.stages[stage]
        return bundle_from_text(
            s.policy, list(s.tuples), name=self.name, revision=str(stage), settings=self.settings
        )


Load = Callable[[Bundle], object]
Write = Callable[[list[RelationTuple], list[RelationTuple]], object]


def apply_stage(case: Case, index: int, load: Load, write: Write) -> None:
    """What stage `index` does before its checks: (re)load the bundle if the stage does, then
    write and delete its tuples in one write."""
    stage = case.stages[index]
    if stage.reload:
        load(case.bundle(index))
    if stage.write or stage.delete:
        write(
            [RelationTuple.parse(t) for t in stage.write],
            [RelationTuple.parse(t) for t in stage.delete],
        )


def apply_stages(case: Case, through: int, load: Load, write: Write) -> None:
    """Bring a fresh runner to the state the checks of stage `through` see."""
    for index in range(through + 1):
        apply_stage(case, index, load, write)


def _entity(ref: str, attrs: dict[str, Any], where: str) -> Entity:
    t, _, i = ref.partition(":")
    return Entity(t, i, to_attrs(attrs, where))


def _check(
    case: str, stage: int, raw: dict[str, Any], defaults: dict[str, Any], where: str
) -> Check:
    validate(raw, CHECK_KEYS, (), where)
    c = {**defaults, **raw}
    validate(c, CHECK_KEYS, CHECK_REQUIRED, where)
    request = Request(
        _entity(c["subject"], c.get("subject_attrs", {}), f"{where}.subject_attrs"),
        c["action"],
        _entity(c["resource"], c.get("resource_attrs", {}), f"{where}.resource_attrs"),
        to_attrs(c.get("context", {}), f"{where}.context"),
    )
    return Check(
        case,
        stage,
        request,
        c["expect"],
        c["reason"],
        tuple(c["rules"]),
        c.get("not_found", False),
        c.get("revision_ahead"),
    )


def _case(raw: dict[str, Any], where: str) -> Case:
    validate(raw, CASE_KEYS, ("name", "policy"), where)
    name = raw["name"]
    where = f"{where} `{name}`"
    defaults = raw.get("defaults", {})
    validate(defaults, REQUEST_KEYS, (), f"{where}.defaults")
    policy, tuples = raw["policy"], tuple(raw.get("tuples", []))
    raw_stages = [{"check": raw.get("check", [])}, *raw.get("stage", [])]
    stages = []
    for i, s in enumerate(raw_stages):
        at = f"{where} stage {i}"
        if i:
            validate(s, STAGE_KEYS, (), at)
        policy, tuples = s.get("policy", policy), tuple(s.get("tuples", tuples))
        checks = tuple(
            _check(name, i, c, defaults, f"{at} check {n}") for n, c in enumerate(s["check"], 1)
        )
        reload = i == 0 or "policy" in s or "tuples" in s
        write, delete = tuple(s.get("write", [])), tuple(s.get("delete", []))
        stages.append(Stage(policy, tuples, reload, write, delete, checks))
    if not any(s.checks for s in stages):
        raise CorpusError(f"{where}: a case with no check asserts nothing")
    settings = Settings(
        max_depth=raw.get("max_depth"),
        fail_open=frozenset(tuple(x.split(":", 1)) for x in raw.get("fail_open", [])),  # type: ignore[misc]
    )
    return Case(name, settings, tuple(stages))


def _documents(paths: Sequence[Path] | None) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in paths if paths is not None else sorted(HERE.glob("*.toml")):
        doc = tomllib.loads(path.read_text())
        validate(doc, FILE_KEYS, (), path.name)
        out.append((path.name, doc))
    return out


def load_cases(paths: Sequence[Path] | None = None) -> list[Case]:
    out: list[Case] = []
    for file, doc in _documents(paths):
        out.extend(_case(raw, f"{file}: case {n}") for n, raw in enumerate(doc.get("case", []), 1))
    names = [c.name for c in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CorpusError(f"case names must be unique: {', '.join(dupes)}")
    return out


def load_diagnostic_cases(
    paths: Sequence[Path] | None = None,
) -> list[tuple[str, str, str, list[str]]]:
    """(name, policy, severity, ["code@line:col", ...])"""
    out = []
    for file, doc in _documents(paths):
        for severity, keys in DIAGNOSTIC_KEYS.items():
            listed = f"{severity}s"
            for n, raw in enumerate(doc.get(severity, []), 1):
                validate(raw, keys, ("name", "policy", listed), f"{file}: {severity} {n}")
                out.append((raw["name"], raw["policy"], severity, raw[listed]))
    return out
