"""Loads the conformance corpus (the *.toml files beside this module): the language's spec as data.

A `[[case]]` is a policy, its bundle tuples and its checks. Every check states the decision, the
reason and the deciding rule ids (and `not_found = true` where a hiding forbid decided); nothing is
left unasserted. A case may go on in `[[case.stage]]`s, as OpenFGA's matrices do: each stage may
reload the bundle (`policy` and/or `tuples`: the bundle's new policy and tuples; written tuples
survive a reload), then write and delete tuples (`write`, `delete`: one atomic write), then check.
A `[[error]]` or `[[warning]]` is a policy with the diagnostics it must produce.

A case or a stage may also state what the lookups answer there, after its checks:
`[[case.lookup_resources]]` (`subject`, `subject_attrs`, `action`, `resource_type`, `context`) and
`[[case.lookup_subjects]]` (`resource`, `resource_attrs`, `action`, `subject_type`, `context`),
the request keys taken from `defaults` where left out, each with
- `expect`: the ids listed, all of them (`*` in LookupSubjects: every subject of the type);
- `complete`: whether the answer says it is whole (no `incomplete` reason);
- `incomplete`: words each of which some reason must contain (`depth_limit`, `rule open`);
- `excluded` (LookupSubjects, with `*` only): the known ids `*` does not cover;
- `unlisted` (only when not `complete`): ids Check allows that the lookup does not list because
  a rule on attributes or a role allows them without a tuple: no tuple names the resource, or none
  leads from the resource to the subject.
Lookups run as the server does: a resource id stands alone (no attributes) in LookupResources, a
subject id in LookupSubjects. Every runner also puts every expectation to brute force: every id
of the listed type the case names anywhere (tuples, checks, lookups; and an id named nowhere when
the answer is `complete`) is asked with Check, and Check must allow exactly the ids listed (`*`
standing for every id but `excluded`) and `unlisted`, so a wrong expectation cannot pass silently.

Every file is validated against the schema below before anything runs: an unknown key, a missing
key or a value of the wrong type is a `CorpusError` naming the file, the case and the key, never a
silently skipped assertion. The same corpus runs through the engine in process
(tests/engine/test_conformance.py) and through a real gRPC server
(tests/sidecar/test_conformance_grpc.py); `apply_stage` is the one reading of what a stage does.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pdp.authoring.policy_tests import to_attrs
from pdp.bundle import Bundle, Settings, bundle_from_text
from pdp.identifiers import WILDCARD
from pdp.model import Entity, Reason, RelationTuple, Request, Value

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
LISTING_KEYS: Mapping[str, Kind] = {
    "action": STR,
    "context": TABLE,
    "expect": STRS,
    "complete": BOOL,
    "incomplete": STRS,
    "unlisted": STRS,
}
LOOKUP_KEYS: Mapping[str, Mapping[str, Kind]] = {
    "lookup_resources": {
        **LISTING_KEYS,
        "subject": REF,
        "subject_attrs": TABLE,
        "resource_type": STR,
    },
    "lookup_subjects": {
        **LISTING_KEYS,
        "resource": REF,
        "resource_attrs": TABLE,
        "subject_type": STR,
        "excluded": STRS,  # asserted in every lookup_subjects: absent means none
    },
}
# INVARIANT: every lookup asserts its ids and whether it says it is whole.
LOOKUP_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "lookup_resources": ("subject", "action", "resource_type", "expect", "complete"),
    "lookup_subjects": ("resource", "action", "subject_type", "expect", "complete"),
}
STAGE_KEYS: Mapping[str, Kind] = {
    "name": STR,
    "policy": STR,  # reload: the bundle's new policy
    "tuples": STRS,  # reload: the bundle's new tuples
    "write": STRS,
    "delete": STRS,
    "check": TABLES,
    "lookup_resources": TABLES,
    "lookup_subjects": TABLES,
}
CASE_KEYS: Mapping[str, Kind] = {
    "name": STR,
    "policy": STR,
    "tuples": STRS,
    "max_depth": INT,
    "fail_open": STRS,
    "defaults": TABLE,  # request keys shared by every check of the case, in every stage
    "check": TABLES,
    "lookup_resources": TABLES,
    "lookup_subjects": TABLES,
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


# An id no case names: asked of Check for every lookup said to be whole, since no tuple names it.
UNNAMED = "named-nowhere"


@dataclass(frozen=True)
class Listing:
    """One lookup and its expected answer. LookupResources (`resources`) starts from `start`, the
    subject, and lists ids of `listed_type`; LookupSubjects starts from the resource."""

    case: str
    stage: int
    resources: bool
    start: Entity
    action: str
    listed_type: str
    context: Mapping[str, Value]
    expect: tuple[str, ...]  # sorted, as the lookup lists them
    complete: bool
    incomplete: tuple[str, ...]
    excluded: tuple[str, ...]
    unlisted: tuple[str, ...]
    universe: tuple[str, ...] = ()  # the ids brute force asks Check about

    @property
    def id(self) -> str:
        at = f" [stage {self.stage}]" if self.stage else ""
        if self.resources:
            return f"{self.case}{at}: {self.start} {self.action} {self.listed_type}:?"
        return f"{self.case}{at}: {self.listed_type}:? {self.action} {self.start}"

    def request(self, listed_id: str) -> Request:
        """The Check a lookup puts to `listed_id`: the listed entity stands alone, no attributes."""
        other = Entity(self.listed_type, listed_id)
        if self.resources:
            return Request(self.start, self.action, other, self.context)
        return Request(other, self.action, self.start, self.context)

    def allows(self, listed_id: str) -> bool:
        """Whether the expected answer says Check allows `listed_id`: listed, covered by a listed
        `*` and not excluded, or allowed but unlisted."""
        if listed_id in self.expect or listed_id in self.unlisted:
            return True
        return WILDCARD in self.expect and listed_id != WILDCARD and listed_id not in self.excluded

    def disagreements(self, allows: Callable[[Request], bool], ids: Sequence[str]) -> list[str]:
        """The ids among `ids` where Check (`allows`) and the expectation part: empty if none."""
        return [
            f"{i}: Check {'allows' if allows(self.request(i)) else 'denies'}"
            for i in ids
            if allows(self.request(i)) != self.allows(i)
        ]

    def missing_reasons(self, reasons: Sequence[str]) -> list[str]:
        """The `incomplete` words no reason contains."""
        return [w for w in self.incomplete if not any(w in r for r in reasons)]

    @property
    def expected(self) -> tuple[tuple[str, ...], bool, tuple[str, ...]]:
        """What every runner compares with (ids in order, complete, excluded)."""
        return (self.expect, self.complete, self.excluded)


@dataclass(frozen=True)
class Stage:
    policy: str  # the bundle's policy from this stage on
    tuples: tuple[str, ...]  # the bundle's tuples from this stage on
    reload: bool  # whether this stage (re)loads the bundle; stage 0 always does
    write: tuple[str, ...]
    delete: tuple[str, ...]
    checks: tuple[Check, ...]
    lookups: tuple[Listing, ...] = ()


@dataclass(frozen=True)
class Case:
    name: str
    settings: Settings
    stages: tuple[Stage, ...]

    @property
    def checks(self) -> list[Check]:
        return [c for s in self.stages for c in s.checks]

    @property
    def lookups(self) -> list[Listing]:
        return [x for s in self.stages for x in s.lookups]

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


def _lookup(
    case: str, stage: int, kind: str, raw: dict[str, Any], defaults: dict[str, Any], where: str
) -> Listing:
    keys, resources = LOOKUP_KEYS[kind], kind == "lookup_resources"
    validate(raw, keys, (), where)
    c = {**{k: v for k, v in defaults.items() if k in keys}, **raw}
    validate(c, keys, LOOKUP_REQUIRED[kind], where)
    start_key = "subject" if resources else "resource"
    expect, excluded = sorted(c["expect"]), sorted(c.get("excluded", []))
    if len(set(expect)) != len(expect):
        raise CorpusError(f"{where}: `expect` names an id twice")
    if excluded and WILDCARD not in expect:
        raise CorpusError(f"{where}: `excluded` says what a listed `*` does not cover: list `*`")
    if c.get("unlisted") and c["complete"]:
        raise CorpusError(f"{where}: `unlisted` ids make the answer incomplete: `complete = false`")
    if c.get("incomplete") and c["complete"]:
        raise CorpusError(f"{where}: `incomplete` reasons with `complete = true`")
    return Listing(
        case,
        stage,
        resources,
        _entity(c[start_key], c.get(f"{start_key}_attrs", {}), f"{where}.{start_key}_attrs"),
        c["action"],
        c["resource_type" if resources else "subject_type"],
        to_attrs(c.get("context", {}), f"{where}.context"),
        tuple(expect),
        c["complete"],
        tuple(c.get("incomplete", [])),
        tuple(excluded),
        tuple(sorted(c.get("unlisted", []))),
    )


def _named(case: Case, raw_tuples: Sequence[str], type_name: str) -> set[str]:
    """Every id of `type_name` the case names: in tuples, checks and lookups."""
    ids: set[str] = set()
    for text in raw_tuples:
        t = RelationTuple.parse(text)
        ids |= {
            i
            for ty, i in ((t.object_type, t.object_id), (t.subject_type, t.subject_id))
            if ty == type_name
        }
    for check in case.checks:
        r = check.request
        ids |= {e.id for e in (r.subject, r.resource) if e.type == type_name}
    for x in case.lookups:
        if x.start.type == type_name:
            ids.add(x.start.id)
        if x.listed_type == type_name:
            ids |= {*x.expect, *x.excluded, *x.unlisted}
    ids.discard(WILDCARD)
    return ids


def _with_universe(case: Case, raw_tuples: Sequence[str]) -> Case:
    """The case with each lookup's brute-force universe: every id of its type the case names,
    `*` for LookupSubjects (Check of `user:*` is what a listed `*` stands for), and an id named
    nowhere when the answer is said to be whole (no tuple names it, so Check must deny it)."""

    def universe(x: Listing) -> tuple[str, ...]:
        ids = _named(case, raw_tuples, x.listed_type)
        if UNNAMED in ids:
            raise CorpusError(f"{case.name}: `{UNNAMED}` is kept for ids named nowhere")
        extra = ([] if x.resources else [WILDCARD]) + ([UNNAMED] if x.complete else [])
        return tuple(sorted(ids | set(extra)))

    stages = tuple(
        replace(s, lookups=tuple(replace(x, universe=universe(x)) for x in s.lookups))
        for s in case.stages
    )
    return replace(case, stages=stages)


def _case(raw: dict[str, Any], where: str) -> Case:
    validate(raw, CASE_KEYS, ("name", "policy"), where)
    name = raw["name"]
    where = f"{where} `{name}`"
    defaults = raw.get("defaults", {})
    validate(defaults, REQUEST_KEYS, (), f"{where}.defaults")
    policy, tuples = raw["policy"], tuple(raw.get("tuples", []))
    first = {k: raw[k] for k in ("check", *LOOKUP_KEYS) if k in raw}
    raw_stages = [{"check": [], **first}, *raw.get("stage", [])]
    stages = []
    named_tuples: list[str] = []
    for i, s in enumerate(raw_stages):
        at = f"{where} stage {i}"
        if i:
            validate(s, STAGE_KEYS, (), at)
        policy, tuples = s.get("policy", policy), tuple(s.get("tuples", tuples))
        checks = tuple(
            _check(name, i, c, defaults, f"{at} check {n}")
            for n, c in enumerate(s.get("check", []), 1)
        )
        lookups = tuple(
            _lookup(name, i, kind, x, defaults, f"{at} {kind} {n}")
            for kind in LOOKUP_KEYS
            for n, x in enumerate(s.get(kind, []), 1)
        )
        reload = i == 0 or "policy" in s or "tuples" in s
        write, delete = tuple(s.get("write", [])), tuple(s.get("delete", []))
        stages.append(Stage(policy, tuples, reload, write, delete, checks, lookups))
        named_tuples.extend((*tuples, *write, *delete))
    if not any(s.checks or s.lookups for s in stages):
        raise CorpusError(f"{where}: a case with no check asserts nothing")
    settings = Settings(
        max_depth=raw.get("max_depth"),
        fail_open=frozenset(tuple(x.split(":", 1)) for x in raw.get("fail_open", [])),  # type: ignore[misc]
    )
    return _with_universe(Case(name, settings, tuple(stages)), named_tuples)


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
