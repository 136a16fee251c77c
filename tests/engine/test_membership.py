"""The flattened group index (pdp.engine.membership) against the reference interpreter and
against itself rebuilt from scratch, through random writes and deletes of nested groups, cycles,
wildcards, relations admitting only some group relations, and depth limits of every size."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.bundle import Settings, bundle_from_text
from pdp.engine import Engine
from pdp.engine.membership import MembershipIndex
from pdp.explain.reference import evaluate, naive_lookup
from pdp.model import Entity, Reason, RelationTuple, Request

POLICY = """
type user {}
type team { relation member: user | user:* | team#member }
type group { relation member: user | group#member | team#member }
type doc {
  actions read, edit
  relation viewer: user | group#member
  relation reader: team#member | group#member
  relation blocked: user | team#member
  relation parent: doc
  permission view = (viewer + reader + parent->view) - blocked
}
permit r: read on doc when subject has view on resource
permit e: edit on doc when subject has viewer on resource
"""
USERS = ["u0", "u1", "u2"]
DOCS = ["d0", "d1"]
# Every tuple the schema admits over a few ids: the space writes and deletes are drawn from.
SPACE = sorted(
    [f"team:{t}#member@user:{u}" for t in ("t0", "t1") for u in [*USERS, "*"]]
    + [f"team:{a}#member@team:{b}#member" for a in ("t0", "t1") for b in ("t0", "t1")]
    + [f"group:{g}#member@user:{u}" for g in ("g0", "g1", "g2") for u in USERS]
    + [
        f"group:{a}#member@{b}#member"
        for a in ("g0", "g1", "g2")
        for b in ("group:g0", "group:g1", "group:g2", "team:t0", "team:t1")
    ]
    + [f"doc:{d}#viewer@{s}" for d in DOCS for s in ("user:u0", "group:g0#member")]
    + [f"doc:{d}#reader@{s}" for d in DOCS for s in ("team:t0#member", "group:g1#member")]
    + [f"doc:{d}#blocked@{s}" for d in DOCS for s in ("user:u2", "team:t1#member")]
    + ["doc:d1#parent@doc:d0"]
)
tuple_texts = st.sampled_from(SPACE)


def _agrees_with_reference(engine: Engine, depth: int) -> None:
    bundle = engine.bundle
    assert bundle is not None
    lookup = naive_lookup(engine.read_tuples())
    for user, doc, action in itertools.product(USERS, DOCS, ("read", "edit")):
        request = Request(Entity("user", user), action, Entity("doc", doc))
        expected = evaluate(bundle.policy, lookup, request, depth)
        got = engine.check(request, cached=False)
        assert (got.effect, got.reason, got.rule_ids) == (
            expected.effect,
            expected.reason,
            expected.rule_ids,
        ), (request, engine.read_tuples())


def _equals_a_rebuild(index: MembershipIndex) -> None:
    fresh = MembershipIndex(index.schema, index._subjects, index._reverse)
    fresh.rebuild()
    assert index.of == fresh.of
    assert index.wildcards == fresh.wildcards
    assert index.deepest >= fresh.deepest  # a bound that only a rebuild lowers


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(tuple_texts, max_size=10),
    st.lists(st.tuples(st.booleans(), st.lists(tuple_texts, min_size=1, max_size=3)), max_size=8),
    st.integers(1, 5),
)
def test_checks_agree_with_the_reference_through_writes_and_deletes(
    initial: list[str], changes: list[tuple[bool, list[str]]], depth: int
) -> None:
    engine = Engine(cache_ttl=0)
    engine.load(bundle_from_text(POLICY, tuple(initial), settings=Settings(max_depth=depth)))
    index = engine.tuples.membership
    assert index is not None
    _agrees_with_reference(engine, depth)
    for write, texts in changes:
        tuples = [RelationTuple.parse(t) for t in texts]
        if write:
            engine.write_tuples(tuples)
        else:
            engine.write_tuples([], tuples)
        _equals_a_rebuild(index)
        _agrees_with_reference(engine, depth)


def test_a_large_write_rebuilds_once_and_equals_writing_tuple_by_tuple() -> None:
    chain = [f"group:g{i}#member@group:g{i + 1}#member" for i in range(1500)]
    leaves = [f"group:g{i}#member@user:u{i}" for i in range(0, 1500, 2)]
    one_by_one, at_once = Engine(cache_ttl=0), Engine(cache_ttl=0)
    for e in (one_by_one, at_once):
        e.load(bundle_from_text(POLICY, ["doc:d0#viewer@group:g0#member"]))
    for t in chain + leaves:
        one_by_one.write_tuples([RelationTuple.parse(t)])
    at_once.write_tuples([RelationTuple.parse(t) for t in chain + leaves])  # > the rebuild size
    a, b = one_by_one.tuples.membership, at_once.tuples.membership
    assert a is not None and b is not None
    assert a.of == b.of and a.deepest == b.deepest == 1498  # g1498 is 1498 below g0
    # u0 is one hop below doc:d0#viewer; u1498 is 1499 hops below: past the default limit
    edit = [Request(Entity("user", u), "edit", Entity("doc", "d0")) for u in ("u0", "u1498")]
    assert [d.reason for d in at_once.check_many(edit)] == [
        Reason.PERMITTED,
        Reason.DEPTH_LIMIT,
    ]


def test_a_cycle_of_groups_holds_every_member_of_the_cycle() -> None:
    engine = Engine(cache_ttl=0)
    cycle = [
        "group:g0#member@group:g1#member",
        "group:g1#member@group:g2#member",
        "group:g2#member@group:g0#member",
        "group:g2#member@user:u2",
        "doc:d0#viewer@group:g1#member",
    ]
    engine.load(bundle_from_text(POLICY, tuple(cycle)))
    index = engine.tuples.membership
    assert index is not None
    assert index.of["user:u2"] == {"group:g0#member", "group:g1#member", "group:g2#member"}
    edit = Request(Entity("user", "u2"), "edit", Entity("doc", "d0"))
    assert engine.check(edit).allowed
    engine.write_tuples([], [RelationTuple.parse("group:g1#member@group:g2#member")])
    assert index.of["user:u2"] == {"group:g2#member"}  # g0 is in g2 now, not above it
    assert not engine.check(edit, cached=False).allowed


@pytest.mark.parametrize("slice_types", [["doc", "group", "team", "user"]])
def test_a_sliced_store_walks_instead(slice_types: list[str]) -> None:
    from pdp.engine.slicing import Slice

    engine = Engine(cache_ttl=0, slice_=Slice.of(types=slice_types))
    engine.load(bundle_from_text(POLICY, ["doc:d0#viewer@group:g0#member"]))
    assert engine.tuples.membership is None


def test_a_stored_userset_the_relation_does_not_admit_grants_nothing() -> None:
    # Validation keeps such a tuple out (a write, a bundle, a reload that would orphan one);
    # written to the store directly, it must still count for nothing, as in the walk.
    engine = Engine(cache_ttl=0)
    engine.load(bundle_from_text(POLICY, ["team:t0#member@user:u0"]))
    engine.tuples.write([RelationTuple.parse("doc:d0#viewer@team:t0#member")], [])
    edit = Request(Entity("user", "u0"), "edit", Entity("doc", "d0"))
    assert not engine.check(edit, cached=False).allowed
