"""PlanResources against Check: on the saas bundle, each kind of plan and the SQL a service runs;
on random policies and random tables of resources (missing attributes included), the rows the
filter selects, in Python and in a real SQLite table, are exactly the rows Check allows; on random
filters, simplifying and rendering to SQL never change the rows selected. The worked example of
docs/lookup.md is executed here, so the document cannot drift from the code."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.bundle import Settings, bundle_from_text, load_bundle
from pdp.engine import Engine
from pdp.engine.plan import (
    ALWAYS_ALLOWED,
    ALWAYS_DENIED,
    CONDITIONAL,
    FALSE,
    TRUE,
    And,
    Compare,
    Filter,
    Not,
    Or,
    Plan,
    PlanUnsupported,
    Present,
    evaluate,
    from_dict,
    plan_resources,
    simplify,
    to_sql,
)
from pdp.engine.slicing import Slice
from pdp.errors import InvalidRequest
from pdp.model import Effect, Entity, RelationTuple, Request, Value

ROOT = Path(__file__).resolve().parents[2]
SAAS = ROOT / "bundles" / "saas"
ACME: dict[str, Value] = {"tenant": "acme", "roles": frozenset[str]()}
APPROVER: dict[str, Value] = {**ACME, "roles": frozenset({"approver"})}


def _engine() -> Engine:
    engine = Engine(cache_ttl=0)
    engine.load(load_bundle(SAAS))
    return engine


def _allowed(
    engine: Engine,
    subject: Entity,
    action: str,
    rows: Iterable[Entity],
    context: Mapping[str, Value],
) -> set[str]:
    return {
        row.id
        for row in rows
        if engine.check(Request(subject, action, row, context)).effect is Effect.ALLOW
    }


def _table(rows: Iterable[Entity], attributes: Mapping[str, str]) -> sqlite3.Connection:
    """A real SQLite table `resources`: `id` and a column per attribute, NULL where missing."""
    sql_types = {"string": "TEXT", "int": "INTEGER", "bool": "INTEGER"}
    db = sqlite3.connect(":memory:")
    columns = ", ".join(f"{name} {sql_types[kind]}" for name, kind in attributes.items())
    db.execute(f"CREATE TABLE resources (id TEXT PRIMARY KEY{', ' if columns else ''}{columns})")
    names = ["id", *attributes]
    for row in rows:
        values = [row.id, *(row.attrs.get(name) for name in attributes)]
        db.execute(
            f"INSERT INTO resources ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            values,
        )
    return db


def _selected(db: sqlite3.Connection, f: Filter, fields: Iterable[str]) -> set[str]:
    where, params = to_sql(f, {f"resource.{name}": name for name in ["id", *fields]})
    return {rid for (rid,) in db.execute(f"SELECT id FROM resources WHERE {where}", params)}


# ---- the saas bundle ---------------------------------------------------------------------------
DOCUMENT_ATTRS = {"tenant": "string", "owner": "string", "classification": "int"}
DOCUMENTS = [
    Entity("document", "spec-1", {"tenant": "acme", "owner": "alice", "classification": 0}),
    Entity("document", "roadmap", {"tenant": "acme", "owner": "bob", "classification": 0}),
    Entity("document", "secret", {"tenant": "acme", "owner": "alice", "classification": 2}),
    Entity("document", "rival", {"tenant": "globex", "owner": "mallory", "classification": 0}),
    Entity("document", "orphan", {"owner": "alice", "classification": 0}),  # no tenant
    Entity("document", "unrated", {"tenant": "acme", "owner": "alice"}),  # no classification
    Entity("document", "ownerless", {"tenant": "acme", "classification": 0}),
    Entity("document", "plain", {"tenant": "acme", "owner": "carol", "classification": 0}),
]


def _agrees(
    engine: Engine, plan: Plan, subject: Entity, action: str, context: Mapping[str, Value]
) -> set[str]:
    """Assert the plan selects exactly what Check allows, in Python and in SQLite; return it."""
    expected = _allowed(engine, subject, action, DOCUMENTS, context)
    assert {d.id for d in DOCUMENTS if evaluate(plan.filter, d)} == expected
    with closing(_table(DOCUMENTS, DOCUMENT_ATTRS)) as db:
        assert _selected(db, plan.filter, DOCUMENT_ATTRS) == expected
    return expected


def test_a_relation_becomes_the_ids_it_holds_on_and_forbids_keep_missing_attributes_out() -> None:
    engine = _engine()
    engine.write_tuples([RelationTuple.parse("document:roadmap#viewer@user:erin")])
    erin = Entity("user", "erin", ACME)
    plan = plan_resources(engine.pin(), erin, "read", "document", {"hour": 10})
    assert plan == Plan(
        CONDITIONAL,
        And(
            (
                Compare("le", "resource.classification", 0),
                Compare("eq", "resource.tenant", "acme"),
                Compare("in", "resource.id", ("roadmap", "spec-1")),
            )
        ),
    )
    # `orphan` (no tenant) is not selected: tenant_isolation would err on it, and deny.
    assert _agrees(engine, plan, erin, "read", {"hour": 10}) == {"roadmap", "spec-1"}


def test_a_role_in_scope_is_a_tenant_filter() -> None:
    engine = _engine()
    bob = Entity("user", "bob", {**ACME, "roles": frozenset({"viewer"})})
    plan = plan_resources(engine.pin(), bob, "read", "document", {})
    assert plan.filter == And(
        (Compare("le", "resource.classification", 0), Compare("eq", "resource.tenant", "acme"))
    )
    assert _agrees(engine, plan, bob, "read", {}) == {"spec-1", "roadmap", "plain", "ownerless"}


def test_ne_selects_no_missing_attribute_as_check_errs_on_it() -> None:
    engine = _engine()
    carol = Entity("user", "carol", APPROVER)
    plan = plan_resources(engine.pin(), carol, "approve", "document", {"hour": 10})
    assert plan.filter == And(
        (Compare("ne", "resource.owner", "carol"), Compare("eq", "resource.tenant", "acme"))
    )
    where, params = to_sql(plan.filter, {"resource.owner": "owner", "resource.tenant": "tenant"})
    assert (where, params) == ("owner <> ? AND tenant = ?", ["carol", "acme"])
    # `ownerless`: no_self_approval errs on the missing owner, and an erring forbid denies
    assert "ownerless" not in _agrees(engine, plan, carol, "approve", {"hour": 10})


@pytest.mark.parametrize(
    ("subject", "action", "resource_type", "context"),
    [
        (Entity("user", "erin", ACME), "approve", "document", {"hour": 10}),  # no approver role
        (
            Entity("user", "carol", APPROVER),
            "approve",
            "document",
            {"hour": 20},  # outside business hours
        ),
        (
            Entity("user", "carol", APPROVER),
            "approve",
            "document",
            {},  # context.hour missing: the permit errs, and grants nothing
        ),
        (Entity("user", "erin", ACME), "fly", "document", {}),  # unknown action
        (Entity("user", "erin", ACME), "read", "spaceship", {}),  # unknown type
        (Entity("user", "erin", {"tenant": 7, "roles": frozenset()}), "read", "document", {}),
    ],
)
def test_always_denied(
    subject: Entity, action: str, resource_type: str, context: Mapping[str, Value]
) -> None:
    engine = _engine()
    plan = plan_resources(engine.pin(), subject, action, resource_type, context)
    assert plan == Plan(ALWAYS_DENIED, FALSE)
    if resource_type == "document":
        assert _agrees(engine, plan, subject, action, context) == set()


def test_always_allowed_and_a_forbid_that_leaves_a_filter() -> None:
    policy = """
    type user { attributes { tenant?: string } }
    type doc { actions read, edit attributes { tenant?: string, draft?: bool } }
    permit anyone_reads: read on doc
    permit edits: edit on doc
    forbid drafts: edit on doc when resource.draft
    """
    engine = Engine(cache_ttl=0)
    engine.load(bundle_from_text(policy))
    user = Entity("user", "u")
    assert plan_resources(engine.pin(), user, "read", "doc") == Plan(ALWAYS_ALLOWED, TRUE)
    # an erring forbid denies: a missing `draft` is not selected either
    edit = plan_resources(engine.pin(), user, "edit", "doc")
    assert edit == Plan(CONDITIONAL, Compare("ne", "resource.draft", True))


def test_no_bundle_is_always_denied() -> None:
    assert plan_resources(Engine().pin(), Entity("user", "u"), "read", "doc") == Plan(
        ALWAYS_DENIED, FALSE
    )


@pytest.mark.parametrize(
    ("condition", "why"),
    [
        ('resource.labels.contains("x")', "is a set"),
        ('"x" in resource.labels', "set-valued"),
        ("resource.owner == resource.editor", "two resource attributes"),
        ('resource.owner.starts_with("a")', "only `contains`"),
        ("resource.owner.size() > 2", "a method of a resource attribute"),
        ("subject.name.contains(resource.owner)", "only `contains`"),
    ],
)
def test_what_no_filter_can_say_is_refused(condition: str, why: str) -> None:
    policy = f"""
    type user {{ attributes {{ name?: string }} }}
    type doc {{ actions read attributes {{ owner?: string, editor?: string, labels?: set<string> }} }}
    permit p: read on doc when {condition}
    """
    engine = Engine(cache_ttl=0)
    engine.load(bundle_from_text(policy))
    with pytest.raises(PlanUnsupported, match=re.escape(why)):
        plan_resources(engine.pin(), Entity("user", "u", {"name": "ann"}), "read", "doc")


def test_fail_open_with_a_depth_limit_and_a_slice_are_refused() -> None:
    policy = """
    type user {}
    type group { relation member: user | group#member }
    type doc { actions read relation viewer: group#member }
    permit p: read on doc when subject has viewer on resource
    """
    deep: list[str | RelationTuple] = [
        "doc:d#viewer@group:g0#member",
        "group:g0#member@group:g1#member",
        "group:g1#member@group:g2#member",
        "group:g2#member@user:u",  # three hops down, the limit is one
    ]
    settings_ = Settings(max_depth=1, fail_open=frozenset({("doc", "read")}))
    engine = Engine(cache_ttl=0)
    engine.load(bundle_from_text(policy, deep, settings=settings_))
    with pytest.raises(PlanUnsupported, match="fail-open"):
        plan_resources(engine.pin(), Entity("user", "u"), "read", "doc")
    sliced = Engine(cache_ttl=0, slice_=Slice.of(types=["doc", "group"]))
    sliced.load(bundle_from_text(policy, deep))
    with pytest.raises(PlanUnsupported, match="slice"):
        plan_resources(sliced.pin(), Entity("user", "u"), "read", "doc")


def test_to_sql_takes_columns_only_from_the_mapping_and_values_only_as_parameters() -> None:
    hostile = "x' OR 1=1 --"
    f = And(
        (Compare("eq", "resource.owner", hostile), Not(Compare("in", "resource.id", ("a", "b"))))
    )
    where, params = to_sql(f, {"resource.owner": "docs.owner", "resource.id": "docs.id"})
    assert hostile not in where and params == [hostile, "a", "b"]
    assert where == "docs.owner = ? AND NOT (docs.id IN (?, ?))"
    with pytest.raises(InvalidRequest, match="no column"):
        to_sql(f, {"resource.owner": "owner"})
    with pytest.raises(InvalidRequest, match="not a column name"):
        to_sql(f, {"resource.owner": "owner; DROP TABLE docs", "resource.id": "id"})


def test_the_wire_form_round_trips_and_refuses_nonsense() -> None:
    f = Or((Not(Present("resource.tenant")), Compare("in", "resource.level", (1, 2)), TRUE))
    assert json.loads(json.dumps(f.to_dict()))["operands"][1] == {
        "op": "in",
        "field": "resource.level",
        "value": [1, 2],
    }
    assert from_dict(json.loads(json.dumps(f.to_dict()))) == f
    bad_forms: list[dict[str, Any]] = [
        {"op": "eq", "field": "tenant", "value": "a"},
        {"op": "like", "field": "resource.tenant", "value": "a"},
        {"op": "in", "field": "resource.tenant", "value": "a"},
        {"op": "not", "operands": []},
        {"op": "eq", "field": "resource.tenant", "value": None},
    ]
    for bad in bad_forms:
        with pytest.raises(InvalidRequest):
            from_dict(bad)


# ---- the worked example of docs/lookup.md ------------------------------------------------------
def _doc_blocks() -> dict[str, str]:
    """The fenced blocks of the worked example, by language."""
    text = (ROOT / "docs" / "lookup.md").read_text()
    section = text.split("### A worked example", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"```(\w+)\n(.*?)```", section, re.S))


def test_the_worked_example_in_the_docs_is_what_the_code_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocks = _doc_blocks()
    monkeypatch.chdir(ROOT)
    namespace: dict[str, Any] = {}
    exec(blocks["python"], namespace)  # the code as the document shows it
    plan, where, params = namespace["plan"], namespace["where"], namespace["params"]
    assert json.loads(blocks["json"]) == plan.to_dict()
    query, shown = blocks["sql"].strip().splitlines()
    assert query == f"SELECT id FROM documents WHERE {where};"
    assert shown == f"-- parameters: {json.dumps(params)}"
    engine, erin = namespace["engine"], namespace["erin"]
    assert _agrees(engine, plan, erin, "read", {"hour": 10}) == {"roadmap", "spec-1"}


# ---- random policies against Check -------------------------------------------------------------
SCHEMA = """
type user { attributes { tenant?: string, level?: int, roles?: set<string>, friends?: set<string> } }
type group { relation member: user | group#member }
type folder {
  actions read
  attributes { tenant?: string }
  relation viewer: user | group#member
  relation parent: folder
  permission view = viewer + parent->view
}
type doc {
  actions read, write
  attributes { tenant?: string, owner?: string, level?: int, title?: string, public?: bool, home?: string }
  relation owner: user
  relation viewer: user | group#member | user:*
  relation parent: folder
  relation banned: user
  permission edit = owner
  permission view = (owner + viewer + parent->view) - banned
}
context { hour?: int }
"""
ATTRIBUTES = {
    "doc": {
        "tenant": "string",
        "owner": "string",
        "level": "int",
        "title": "string",
        "public": "bool",
        "home": "string",
    },
    "folder": {"tenant": "string"},
}
ATOMS = [
    "resource.tenant == subject.tenant",
    'resource.tenant != "t0"',
    '"t1" == resource.tenant',
    "resource.owner == subject.id",
    "resource.owner != subject.id",
    "resource.level > 1",
    "resource.level <= subject.level",
    "2 > resource.level",
    "resource.level == subject.level",
    "resource.level in [0, 2]",
    'resource.tenant in ["t0", "t9"]',
    "resource.owner in subject.friends",
    "subject.friends.contains(resource.owner)",
    'resource.title.contains("ab")',
    "resource.public",
    "has(resource.owner)",
    "has(resource.level)",
    'resource.id == "d1"',
    'resource.id != "d0"',
    'resource.type == "doc"',
    "subject has view on resource",
    "subject has edit on resource",
    "subject has viewer on resource",
    "subject has view on folder(resource.home)",
    'subject has view on folder("f0")',
    "subject has role r0",
    "subject has role r1",
    "context.hour > 5",
    "subject.level >= 2",
    "has(subject.level)",
    "true",
    "false",
]
conditions = st.recursive(
    st.sampled_from(ATOMS),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda c: f"not ({c})"),
    ),
    max_leaves=4,
)
TARGETS = st.tuples(
    st.sampled_from(["*", "read", "write", "read, write"]),
    st.sampled_from(["*", "doc", "doc, folder"]),
)


@st.composite
def policies(draw: st.DrawFn) -> str:
    lines = []
    for i in range(3):
        parents = [f"r{j}" for j in range(i) if draw(st.booleans())]
        extends = f" extends {', '.join(parents)}" if parents else ""
        scope = " scoped by tenant" if draw(st.booleans()) else ""
        grants = " ".join(f"allow {a} on {t}" for a, t in draw(st.lists(TARGETS, max_size=2)))
        lines.append(f"role r{i}{scope}{extends} {{ {grants} }}")
    lines.append("bind roles from subject.roles")
    if draw(st.booleans()):
        condition = draw(conditions.filter(lambda c: "has role" not in c))
        lines.append(f"bind r{draw(st.integers(0, 2))} when {condition}")
    for i in range(draw(st.integers(1, 5))):
        effect = draw(st.sampled_from(["permit", "permit", "forbid"]))
        actions, types = draw(TARGETS)
        hidden = " as not_found" if effect == "forbid" and draw(st.booleans()) else ""
        # mostly conditions: an unconditional forbid decides everything, and says little
        unconditional = effect == "permit" and draw(st.integers(0, 3)) == 0
        when = "" if unconditional else f" when {draw(conditions)}"
        lines.append(f"{effect} rule{i}{hidden}: {actions} on {types}{when}")
    return "\n".join(lines)


def _pick(options: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(options)


tuples = st.one_of(
    st.builds("doc:{}#owner@user:{}".format, _pick(["d0", "d1", "d2"]), _pick(["u0", "u1"])),
    st.builds("doc:{}#viewer@user:{}".format, _pick(["d0", "d1", "d2"]), _pick(["u0", "u1", "*"])),
    st.builds("doc:{}#viewer@group:{}#member".format, _pick(["d0", "d1"]), _pick(["g0", "g1"])),
    st.builds("doc:{}#parent@folder:{}".format, _pick(["d0", "d1", "d2"]), _pick(["f0", "f1"])),
    st.builds("doc:{}#banned@user:{}".format, _pick(["d0", "d1", "d2"]), _pick(["u0", "u1"])),
    st.builds("folder:{}#viewer@user:{}".format, _pick(["f0", "f1"]), _pick(["u0", "u1"])),
    st.builds("folder:{}#viewer@group:{}#member".format, _pick(["f0", "f1"]), _pick(["g0", "g1"])),
    st.builds("folder:{}#parent@folder:{}".format, _pick(["f0", "f1"]), _pick(["f0", "f1"])),
    st.builds("group:{}#member@user:{}".format, _pick(["g0", "g1"]), _pick(["u0", "u1"])),
    st.builds("group:{}#member@group:{}#member".format, _pick(["g0", "g1"]), _pick(["g0", "g1"])),
)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "tenant": _pick(["t0", "t1"]),
    "owner": _pick(["u0", "u1", "u2"]),
    "level": st.integers(0, 3),
    "title": _pick(["ab", "xaby", "b", ""]),
    "public": st.booleans(),
    "home": _pick(["f0", "f1", "f9"]),
}


def _attrs(draw: st.DrawFn, values: Mapping[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    drawn = {name: draw(st.none() | strategy) for name, strategy in values.items()}
    return {name: value for name, value in drawn.items() if value is not None}


@st.composite
def tables(draw: st.DrawFn, resource_type: str) -> list[Entity]:
    pool = ["d0", "d1", "d2", "d3", "e9"] if resource_type == "doc" else ["f0", "f1", "f2"]
    ids = draw(st.lists(st.sampled_from(pool), unique=True, min_size=2, max_size=len(pool)))
    declared = {name: VALUES[name] for name in ATTRIBUTES[resource_type]}
    return [Entity(resource_type, rid, _attrs(draw, declared)) for rid in ids]


@st.composite
def subjects(draw: st.DrawFn) -> Entity:
    values: dict[str, st.SearchStrategy[Any]] = {
        "tenant": _pick(["t0", "t1"]),
        "level": st.sampled_from([0, 1, 2, 3, "2"]),  # "2": a wrong type, which Check refuses
        "roles": st.frozensets(_pick(["r0", "r1", "r2", "zz"])),
        "friends": st.frozensets(_pick(["u0", "u1", "u2"])),
    }
    return Entity("user", draw(_pick(["u0", "u1", "u2"])), _attrs(draw, values))


@st.composite
def questions(draw: st.DrawFn) -> tuple[str, str, list[Entity]]:
    resource_type = draw(_pick(["doc", "doc", "doc", "folder"]))
    action = draw(_pick(["read", "write"] if resource_type == "doc" else ["read"]))
    return resource_type, action, draw(tables(resource_type))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policies(),
    st.lists(tuples, max_size=10),
    st.integers(1, 5),
    subjects(),
    st.dictionaries(st.just("hour"), st.integers(0, 23)),
    questions(),
)
def test_the_plan_selects_exactly_what_check_allows(
    policy: str,
    tuple_texts: list[str],
    depth: int,
    subject: Entity,
    context: dict[str, Value],
    question: tuple[str, str, list[Entity]],
) -> None:
    resource_type, action, rows = question
    engine = Engine(cache_ttl=0)
    bundle = bundle_from_text(SCHEMA + policy, [*tuple_texts], settings=Settings(max_depth=depth))
    engine.load(bundle)
    plan = plan_resources(engine.pin(), subject, action, resource_type, context)
    expected = _allowed(engine, subject, action, rows, context)
    why = f"\n{policy}\n{tuple_texts}\n{plan}"
    assert {r.id for r in rows if evaluate(plan.filter, r)} == expected, why
    fields = ATTRIBUTES[resource_type]
    with closing(_table(rows, fields)) as db:
        assert _selected(db, plan.filter, fields) == expected, why
    if plan.kind == ALWAYS_ALLOWED:
        assert expected == {r.id for r in rows}
    elif plan.kind == ALWAYS_DENIED:
        assert expected == set()


# ---- random filters: simplification and SQL ----------------------------------------------------
FILTER_FIELDS = {"s": "string", "n": "int", "b": "bool"}
_SCALARS: dict[str, st.SearchStrategy[Any]] = {
    "id": _pick(["x", "y", "z"]),
    "s": _pick(["a", "ab", "b", ""]),
    "n": st.integers(0, 2),
    "b": st.booleans(),
}
_OPS = {
    "id": ["eq", "ne", "in"],
    "s": ["eq", "ne", "lt", "in", "contains"],
    "n": ["eq", "ne", "lt", "le", "gt", "ge", "in"],
    "b": ["eq", "ne"],
}


@st.composite
def atoms(draw: st.DrawFn) -> Filter:
    name = draw(_pick(["id", "s", "n", "b"]))
    field = f"resource.{name}"
    kind = draw(_pick(["compare", "compare", "present", "const"]))
    if kind == "present":
        return Present(field)
    if kind == "const":
        return draw(st.sampled_from([TRUE, FALSE]))
    op = draw(st.sampled_from(_OPS[name]))
    if op == "in":
        return Compare(op, field, tuple(draw(st.lists(_SCALARS[name], max_size=3))))
    return Compare(op, field, draw(_SCALARS[name]))


filters = st.recursive(
    atoms(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda ops: And(tuple(ops))),
        st.lists(inner, min_size=1, max_size=3).map(lambda ops: Or(tuple(ops))),
        inner.map(Not),
    ),
    max_leaves=8,
)


@st.composite
def rows(draw: st.DrawFn) -> list[Entity]:
    ids = draw(st.lists(_pick(["x", "y", "z"]), unique=True, min_size=1))
    values = {name: _SCALARS[name] for name in FILTER_FIELDS}
    return [Entity("t", rid, _attrs(draw, values)) for rid in ids]


@settings(max_examples=300, deadline=None)
@given(filters, rows())
def test_simplifying_and_sql_keep_the_rows_a_filter_selects(f: Filter, table: list[Entity]) -> None:
    expected = {r.id for r in table if evaluate(f, r)}
    simple = simplify(f)
    assert {r.id for r in table if evaluate(simple, r)} == expected, simple
    with closing(_table(table, FILTER_FIELDS)) as db:
        assert _selected(db, f, FILTER_FIELDS) == expected, to_sql(
            f, {f"resource.{n}": n for n in ["id", *FILTER_FIELDS]}
        )
        assert _selected(db, simple, FILTER_FIELDS) == expected
    assert from_dict(json.loads(json.dumps(f.to_dict()))) == f
