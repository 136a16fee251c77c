"""PlanResources against a real `pdp serve`: the plan over gRPC equals the engine's for the same
inputs, through writes; its filter, run as SQL over a real SQLite table of resources, selects
exactly the rows Check over gRPC allows; a plan from older tuples than asked, or from a failed
planner, is ALWAYS_DENIED, never a filter; bad tokens and malformed requests are refused, naming
the field; the wire carries every filter both ways unchanged."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.bundle import load_bundle
from pdp.client import Client, check_request, entity, struct
from pdp.engine import Engine
from pdp.engine.plan import (
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
    Present,
    plan_resources,
    to_sql,
)
from pdp.errors import InvalidRequest
from pdp.model import Entity, RelationTuple
from pdp.sidecar import audit
from pdp.sidecar.grpc import wire
from pdp.sidecar.metrics import Metrics
from pdp.sidecar.service import Service

from .saas import user
from .serve import Served, ServeFactory, code_of, operator_token

# A type whose rule no filter can express: a set-valued resource attribute tested with `in`.
LABELS = """
type label {
  attributes { tags: set<string> }
  actions read
}
permit tagged: read on label when "red" in resource.tags
"""

SUBJECTS = [
    user("erin"),  # group eng: views the acme-root tree
    user("frank"),  # edits acme-specs
    user("grace"),  # tenant admin, bound by a tuple
    user("heidi"),  # blocked on spec-1
    user("alice", clearance=2),  # owns spec-1
    user("ivan", roles=frozenset({"approver"})),
    user("olga", tenant="globex", roles=frozenset({"viewer"})),
]
ACTIONS = ("read", "update", "delete", "share", "approve")
CONTEXT = {"hour": 10}
COLUMNS = {
    "resource.id": "id",
    "resource.tenant": "tenant",
    "resource.owner": "owner",
    "resource.classification": "classification",
}
# id, tenant, owner, classification: NULL is a missing attribute
ROWS = [
    ("spec-1", "acme", "alice", 0),
    ("spec-1x", "acme", "alice", 0),  # unknown to the tuples
    ("roadmap", "acme", "erin", 1),
    ("secret", "acme", "alice", 3),
    ("mine", "acme", "ivan", 0),
    ("orphan", "acme", None, 0),
    ("untyped", None, "alice", 0),
    ("unclassified", "acme", "alice", None),
    ("g-1", "globex", "olga", 0),
    ("g-2", "globex", "alice", 2),
]


@pytest.fixture
def served(pdp_serve: ServeFactory, saas_bundle: Path) -> Served:
    (saas_bundle / "policies" / "labels.pdp").write_text(LABELS)
    return pdp_serve.start(saas_bundle)


@pytest.fixture
def documents() -> Iterator[sqlite3.Connection]:
    """The service's own table: the attributes the sidecar never holds."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE documents (id TEXT, tenant TEXT, owner TEXT, classification INT)")
    db.executemany("INSERT INTO documents VALUES (?, ?, ?, ?)", ROWS)
    yield db
    db.close()


def _request(subject: Entity | str, action: str, rtype: str = "document", **kw: Any) -> Any:
    req = pdp_pb2.PlanResourcesRequest(
        action=action, resource_type=rtype, context=struct(CONTEXT), **kw
    )
    if isinstance(subject, str):
        req.subject_token = subject
    else:
        req.subject.CopyFrom(entity(subject))
    return req


def _plan(served: Served, subject: Entity | str, action: str, **kw: Any) -> Plan:
    resp = served.authz.PlanResources(_request(subject, action, **kw), timeout=10)
    assert not resp.notes  # the policy's own answer
    return Plan(wire.PLAN_KIND_BACK[resp.kind], wire.filter_of(resp.filter))


def _local(bundle: Path, written: list[str]) -> Engine:
    engine = Engine(cache_ttl=0)
    engine.load(load_bundle(bundle))
    engine.write_tuples([RelationTuple.parse(t) for t in written])
    return engine


def _resource(row: tuple[Any, ...]) -> Entity:
    doc_id, *values = row
    names = ("tenant", "owner", "classification")
    return Entity(
        "document", doc_id, {n: v for n, v in zip(names, values, strict=True) if v is not None}
    )


def _selected(db: sqlite3.Connection, f: Filter) -> set[str]:
    where, params = to_sql(f, COLUMNS)
    return {r[0] for r in db.execute(f"SELECT id FROM documents WHERE {where}", params)}


def _allowed(served: Served, subject: Entity | str, action: str) -> set[str]:
    out = set()
    for row in ROWS:
        resource = _resource(row)
        if isinstance(subject, str):
            req = pdp_pb2.CheckRequest(
                subject_token=subject,
                action=action,
                resource=entity(resource),
                context=struct(CONTEXT),
            )
        else:
            req = check_request(subject, action, resource, CONTEXT)
        if served.authz.Check(req, timeout=10).decision == pdp_pb2.EFFECT_ALLOW:
            out.add(resource.id)
    return out


def _agree(served: Served, engine: Engine, db: sqlite3.Connection, token: str) -> set[str]:
    kinds = set()
    for subject in SUBJECTS:
        for action in ACTIONS:
            plan = _plan(served, subject, action)
            local = plan_resources(engine.pin(), subject, action, "document", CONTEXT)
            assert plan == local, (subject.id, action)
            assert _selected(db, plan.filter) == _allowed(served, subject, action), (
                subject.id,
                action,
                plan.to_dict(),
            )
            kinds.add(plan.kind)
    for action in ACTIONS:  # a verified token is a subject like any other
        plan = _plan(served, token, action)
        assert _selected(db, plan.filter) == _allowed(served, token, action), action
    return kinds


def test_the_plan_is_the_engines_and_its_sql_selects_exactly_what_check_allows(
    served: Served, pdp_serve: ServeFactory, documents: sqlite3.Connection
) -> None:
    viewer = served.token(*pdp_serve.client(tenant="acme", scopes=(), roles=("viewer",)))
    written: list[str] = []
    engine = _local(served.bundle, written)
    kinds = _agree(served, engine, documents, viewer)
    assert kinds == {ALWAYS_DENIED, CONDITIONAL}  # the saas rules always read an attribute
    erin = _plan(served, SUBJECTS[0], "read")
    assert _selected(documents, erin.filter) == {"spec-1"}
    # through writes: a new share and a block are in the next plan, and agree with Check again
    written = ["document:roadmap#viewer@user:alice", "document:spec-1#blocked@user:erin"]
    revision = served.write(operator_token(pdp_serve, served), writes=written)
    fresh = served.authz.PlanResources(
        _request(SUBJECTS[0], "read", min_tuple_revision=revision), timeout=10
    )
    checked = served.check(SUBJECTS[0], "read", _resource(ROWS[0]), context=CONTEXT)
    assert fresh.tuple_revision >= revision
    assert fresh.bundle_revision == checked.bundle_revision != ""
    engine = _local(served.bundle, written)
    _agree(served, engine, documents, viewer)
    # spec-1 is now blocked for erin; alice (cleared to 2) may view roadmap (classified 1)
    assert _selected(documents, _plan(served, SUBJECTS[0], "read").filter) == set()
    assert _selected(documents, _plan(served, SUBJECTS[4], "read").filter) == {"spec-1", "roadmap"}


def test_a_plan_from_older_tuples_than_asked_is_denied_never_a_filter(served: Served) -> None:
    resp = served.authz.PlanResources(
        _request(SUBJECTS[0], "read", min_tuple_revision=10**9), timeout=10
    )
    assert resp.kind == pdp_pb2.PLAN_KIND_ALWAYS_DENIED
    assert wire.filter_of(resp.filter) == FALSE
    assert len(resp.notes) == 1 and resp.notes[0].startswith("stale_tuples: ")


def test_bad_tokens_and_malformed_requests_are_refused_naming_the_field(served: Served) -> None:
    def refused(req: Any) -> tuple[grpc.StatusCode, str]:
        try:
            served.authz.PlanResources(req, timeout=10)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
        raise AssertionError("answered")

    assert code_of(
        lambda: served.authz.PlanResources(_request("eyJhbGciOiJub25lIn0.e30.", "read"))
    ) == (grpc.StatusCode.UNAUTHENTICATED)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    erin = SUBJECTS[0]
    assert refused(_request(erin, "")) == (invalid, "action: is required")
    assert refused(_request(erin, "read", rtype="")) == (invalid, "resource_type: is required")
    assert refused(_request(erin, "read", rtype="nowhere")) == (
        invalid,
        "resource_type: unknown type `nowhere`",
    )
    nobody = pdp_pb2.PlanResourcesRequest(action="read", resource_type="document")
    assert refused(nobody) == (invalid, "subject: is required (or subject_token)")
    floaty = _request(erin, "read")
    floaty.context.update({"hour": 9.5})
    code, message = refused(floaty)
    assert (code, message.split(":")[0]) == (invalid, "context.hour")
    # what no filter can say is refused, naming the construct: ask Check per resource instead
    code, message = refused(_request(erin, "read", rtype="label"))
    assert code == invalid and '`"red" in resource.tags`' in message
    # an unknown action on a known type is the policy's answer, as Check's: nothing
    resp = served.authz.PlanResources(_request(erin, "fly"), timeout=10)
    assert (resp.kind, list(resp.notes)) == (pdp_pb2.PLAN_KIND_ALWAYS_DENIED, [])


def test_the_python_client_plans_and_fails_closed(served: Served) -> None:
    erin = SUBJECTS[0]
    engine = _local(served.bundle, [])
    with Client(served.grpc_target, timeout=5) as client:
        planned = client.plan_resources(erin, "read", "document", CONTEXT)
        local = plan_resources(engine.pin(), erin, "read", "document", CONTEXT)
        assert (planned.kind, planned.filter, planned.notes) == (local.kind, local.filter, ())
        checked = client.check(erin, "read", _resource(ROWS[0]), CONTEXT)
        assert planned.bundle_revision == checked.bundle_revision != ""
        stale = client.plan_resources(erin, "read", "document", min_tuple_revision=10**9)
        assert (stale.kind, stale.filter) == (ALWAYS_DENIED, FALSE)
        assert stale.notes[0].startswith("stale_tuples: ")
        unsupported = client.plan_resources(erin, "read", "label")
        assert (unsupported.kind, unsupported.filter) == (ALWAYS_DENIED, FALSE)
        assert unsupported.notes[0].startswith("INVALID_ARGUMENT: ")
        forged = client.plan_resources("eyJhbGciOiJub25lIn0.e30.", "read", "document")
        assert forged.kind == ALWAYS_DENIED and forged.notes[0].startswith("UNAUTHENTICATED: ")
    with Client("127.0.0.1:9", timeout=0.5) as nowhere:  # nothing listens: nothing planned
        down = nowhere.plan_resources(erin, "read", "document")
        assert (down.kind, down.filter) == (ALWAYS_DENIED, FALSE) and down.notes


def test_a_planner_that_fails_denies_with_a_note(
    saas_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(cache_ttl=0)
    engine.load(load_bundle(saas_bundle))
    service = Service(engine, audit.AuditHub(), Metrics(), None, None)

    def broken(*_: object) -> Plan:
        raise RuntimeError("a planner bug")

    monkeypatch.setattr("pdp.sidecar.service.plan_resources", broken)
    answer = service.plan_resources(SUBJECTS[0], "read", "document", CONTEXT)
    assert answer.plan == Plan(ALWAYS_DENIED, FALSE)
    assert answer.notes == ("evaluation_error: planning failed (RuntimeError): deny all",)
    with pytest.raises(InvalidRequest, match="resource_type: unknown type"):
        service.plan_resources(SUBJECTS[0], "read", "nowhere", CONTEXT)


# ---- the wire, both ways ---------------------------------------------------------------------

_FIELDS = st.sampled_from(["resource.id", "resource.tenant", "resource.level", "resource.flag"])
_SCALARS = st.one_of(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1), st.booleans())
_LEAVES = st.one_of(
    st.sampled_from([TRUE, FALSE]),
    st.builds(Present, _FIELDS),
    st.builds(
        Compare,
        st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge", "contains"]),
        _FIELDS,
        _SCALARS,
    ),
    st.builds(Compare, st.just("in"), _FIELDS, st.lists(_SCALARS, max_size=4).map(tuple)),
)
FILTERS = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda fs: And(tuple(fs))),
        st.lists(inner, max_size=3).map(lambda fs: Or(tuple(fs))),
        st.builds(Not, inner),
    ),
    max_leaves=12,
)


@given(FILTERS)
def test_every_filter_crosses_the_wire_and_back_unchanged(f: Filter) -> None:
    sent = wire.filter_message(f).SerializeToString()
    back = wire.filter_of(pdp_pb2.PlanFilter.FromString(sent))
    assert back == f
    assert json.dumps(back.to_dict()) == json.dumps(f.to_dict())  # `True == 1`: types too


def test_a_malformed_filter_message_is_refused_naming_the_node() -> None:
    cases = {
        "filter: is empty": pdp_pb2.PlanFilter(),
        "filter.all.operands[1].present: `tenant` is not a filter field": pdp_pb2.PlanFilter(
            all=pdp_pb2.PlanOperands(
                operands=[pdp_pb2.PlanFilter(constant=True), pdp_pb2.PlanFilter(present="tenant")]
            )
        ),
        "filter.negation.compare.op: is required": pdp_pb2.PlanFilter(
            negation=pdp_pb2.PlanFilter(compare=pdp_pb2.PlanCompare(field="resource.id"))
        ),
        "filter.compare.value: is required": pdp_pb2.PlanFilter(
            compare=pdp_pb2.PlanCompare(op=pdp_pb2.COMPARE_OP_EQ, field="resource.id")
        ),
    }
    for message, msg in cases.items():
        with pytest.raises(InvalidRequest) as info:
            wire.filter_of(msg)
        assert str(info.value).startswith(message), str(info.value)
