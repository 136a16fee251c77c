"""Engine behaviour beyond the corpus: fail closed, determinism, tuple validation, revisions."""

from __future__ import annotations

import dataclasses
import random

import pytest

from pdp.bundle import bundle_from_text
from pdp.bundle.tuple_schema import InvalidTuple
from pdp.engine import Engine
from pdp.model import Effect, Entity, Reason, RelationTuple, Request

POLICY = """
type user { attributes { tenant: string } }
type group { relation member: user | group#member }
type doc {
  attributes { tenant: string }
  actions read
  relation viewer: user | group#member | user:*
  permission view = viewer
}
forbid isolation: * on doc when resource.tenant != subject.tenant
permit shared: read on doc when subject has view on resource
"""
ALICE = Entity("user", "alice", {"tenant": "t"})
DOC = Entity("doc", "1", {"tenant": "t"})


def loaded(policy: str = POLICY, tuples: list[str] | None = None) -> Engine:
    e = Engine()
    e.load(bundle_from_text(policy, tuples or []))
    return e


def test_no_bundle_is_a_deny_with_its_reason() -> None:
    d = Engine().check(Request(ALICE, "read", DOC))
    assert d.effect is Effect.DENY and d.reason is Reason.NO_BUNDLE


@pytest.mark.parametrize(
    "request_",
    [
        Request(Entity("user", "alice", {"tenant": 7}), "read", DOC),  # wrong type
        Request(Entity("user", "alice", {"tenant": ["t"]}), "read", DOC),  # a list, not a set
        Request(Entity("user", "alice", {"tenant": None}), "read", DOC),  # type: ignore[dict-item]
        Request(Entity("user", "alice", {}), "read", DOC),  # missing: the forbid errors
        Request(ALICE, "read", Entity("doc", "1", {"tenant": 1.5})),  # type: ignore[dict-item]
        Request(ALICE, "read", Entity("doc", "1", None)),  # type: ignore[arg-type]
        Request(None, "read", DOC),  # type: ignore[arg-type]
    ],
)
def test_no_bad_input_turns_into_an_allow(request_: Request) -> None:
    e = loaded(tuples=["doc:1#viewer@user:*"])
    d = e.check(request_)
    assert d.effect is Effect.DENY
    assert d.reason in (Reason.EVALUATION_ERROR, Reason.FORBIDDEN)


def test_an_erroring_forbid_denies_even_when_a_permit_matches() -> None:
    e = loaded(tuples=["doc:1#viewer@user:alice"])
    d = e.check(Request(Entity("user", "alice", {}), "read", DOC))
    assert d.effect is Effect.DENY
    assert d.rule_ids == ("isolation",)
    assert "missing attribute" in d.errors[0]


def test_exception_inside_evaluation_is_a_deny(monkeypatch: pytest.MonkeyPatch) -> None:
    e = loaded(tuples=["doc:1#viewer@user:alice"])

    def boom(*args: object) -> bool:
        raise MemoryError("simulated")

    snapshot = e.snapshot
    assert snapshot is not None
    entry = snapshot.by_type["doc"]["read"]
    monkeypatch.setitem(snapshot.by_type["doc"], "read", dataclasses.replace(entry, decide=boom))
    d = e.check(Request(ALICE, "read", DOC))
    assert d.effect is Effect.DENY
    assert d.reason is Reason.EVALUATION_ERROR
    assert d.errors == ("internal error: MemoryError",)


def test_decisions_carry_revisions() -> None:
    e = loaded()
    before = e.check(Request(ALICE, "read", DOC))
    rev = e.write_tuples([RelationTuple.parse("doc:1#viewer@user:alice")])
    after = e.check(Request(ALICE, "read", DOC))
    assert rev == before.tuple_revision + 1
    assert after.tuple_revision == rev and after.allowed
    assert after.bundle_revision == "0"


def test_min_tuple_revision_from_the_future_is_a_deny() -> None:
    e = loaded(tuples=["doc:1#viewer@user:alice"])
    d = e.check(Request(ALICE, "read", DOC), min_tuple_revision=e.tuple_revision + 5)
    assert d.effect is Effect.DENY and d.reason is Reason.STALE_TUPLES
    assert e.check(Request(ALICE, "read", DOC), min_tuple_revision=e.tuple_revision).allowed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope:1#viewer@user:a", "unknown object type"),
        ("doc:1#nope@user:a", "not a relation"),
        ("doc:1#view@user:a", "permission"),
        ("doc:1#viewer@doc:2", "accepts user | group#member | user:*"),
        ("doc:1#viewer@group:g", "accepts"),
        ("group:g#member@user:*", "accepts"),
    ],
)
def test_tuples_are_validated_against_the_schema(text: str, message: str) -> None:
    e = loaded()
    with pytest.raises(InvalidTuple, match=message):
        e.write_tuples([RelationTuple.parse(text)])
    assert e.tuple_revision == 0  # nothing was written (a load does not move it)


def test_a_batch_with_one_bad_tuple_writes_nothing() -> None:
    e = loaded()
    good = RelationTuple.parse("doc:1#viewer@user:alice")
    with pytest.raises(InvalidTuple):
        e.write_tuples([good, RelationTuple.parse("doc:1#nope@user:a")])
    assert e.read_tuples() == []


def test_writes_and_deletes_are_idempotent() -> None:
    e = loaded()
    t = RelationTuple.parse("doc:1#viewer@user:alice")
    e.write_tuples([t])
    e.write_tuples([t])
    assert e.read_tuples() == [t]
    e.write_tuples([], [t])
    e.write_tuples([], [t])
    assert e.read_tuples() == []


def test_written_overlay_survives_a_reload_and_can_hide_bundle_tuples() -> None:
    e = loaded(tuples=["doc:1#viewer@user:bob"])
    bob = Request(Entity("user", "bob", {"tenant": "t"}), "read", DOC)
    assert e.check(bob).allowed
    e.write_tuples(
        [RelationTuple.parse("doc:1#viewer@user:alice")],
        [RelationTuple.parse("doc:1#viewer@user:bob")],
    )
    e.load(bundle_from_text(POLICY, ["doc:1#viewer@user:bob"]))
    assert not e.check(bob).allowed  # the API delete still hides the bundle tuple
    assert e.check(Request(ALICE, "read", DOC)).allowed  # the API write survived the reload


def test_read_filters_use_both_directions() -> None:
    e = loaded(
        tuples=["doc:1#viewer@user:alice", "doc:2#viewer@user:alice", "doc:2#viewer@group:g#member"]
    )
    assert [
        str(t) for t in e.read_tuples(subject_type="user", subject_id="alice", subject_relation="")
    ] == [
        "doc:1#viewer@user:alice",
        "doc:2#viewer@user:alice",
    ]
    assert len(e.read_tuples(object_type="doc", object_id="2", relation="viewer")) == 2
    assert len(e.read_tuples(relation="viewer")) == 3


def test_answers_do_not_depend_on_file_or_tuple_order() -> None:
    files = {
        "a.pdp": "type user { attributes { tenant: string } }\ntype group { relation member: user | group#member }",
        "b.pdp": "type doc { attributes { tenant: string } actions read relation viewer: user | group#member }",
        "c.pdp": 'permit z: read on doc when subject has viewer on resource\npermit a: read on doc when resource.tenant == subject.tenant\nforbid q: read on doc when subject.tenant == "evil"',
    }
    tuples = [f"group:g{i}#member@group:g{i + 1}#member" for i in range(6)] + [
        "group:g6#member@user:alice",
        "doc:1#viewer@group:g0#member",
    ]
    answers = set()
    for seed in range(5):
        rnd = random.Random(seed)
        order = list(files.items())
        rnd.shuffle(order)
        shuffled = list(tuples)
        rnd.shuffle(shuffled)
        e = Engine()
        e.load(bundle_from_text(dict(order), shuffled))
        d = e.check(Request(ALICE, "read", DOC))
        answers.add((d.effect, d.reason, d.rule_ids))
    assert answers == {(Effect.ALLOW, Reason.PERMITTED, ("a",))}


def test_a_pinned_batch_never_mixes_bundle_revisions() -> None:
    e = loaded(tuples=["doc:1#viewer@user:alice"])
    pinned = e.pin()
    e.load(bundle_from_text(POLICY, ["doc:1#viewer@user:alice"], revision="2"))
    assert pinned.check(Request(ALICE, "read", DOC)).bundle_revision == "0"
    assert e.check(Request(ALICE, "read", DOC)).bundle_revision == "2"
    assert {d.bundle_revision for d in e.check_many([Request(ALICE, "read", DOC)] * 3)} == {"2"}


def test_a_reload_swaps_tuples_and_policy_together() -> None:
    # A check that started before a reload finishes on the old policy *and* the old tuples;
    # the store is rebuilt off to the side, never edited under a reader's feet.
    e = loaded(tuples=["doc:1#viewer@user:alice"])
    before = e.pin()
    e.write_tuples([RelationTuple.parse("doc:1#viewer@user:bob")])
    e.load(bundle_from_text(POLICY, [], revision="2"))
    bob = Request(Entity("user", "bob", {"tenant": "t"}), "read", DOC)
    assert before.check(Request(ALICE, "read", DOC)).allowed  # old bundle's tuple, old store
    assert not e.check(Request(ALICE, "read", DOC)).allowed  # the new bundle dropped it
    assert e.check(bob).allowed  # the written overlay moved to the new store
    # a reload moves the bundle revision; the tuple revision is the changelog's and stays
    assert (e.check(bob).bundle_revision, before.check(bob).bundle_revision) == ("2", "0")
    assert e.check(bob).tuple_revision == before.check(bob).tuple_revision == 1


def test_a_pinned_view_is_read_only() -> None:
    e = loaded(tuples=["doc:1#viewer@user:alice"])
    view = e.pin()
    assert not hasattr(view, "load") and not hasattr(view, "write_tuples")
    assert not hasattr(view, "restore_tuples")
    with pytest.raises(AttributeError):
        view._loaded = None  # type: ignore[misc]
    e.write_tuples([RelationTuple.parse("doc:1#viewer@user:bob")])
    e.load(bundle_from_text(POLICY, [], revision="2"))
    assert view.bundle is not None and view.bundle.revision == "0"
    assert view.pin() is view
    assert [d.bundle_revision for d in view.check_many([Request(ALICE, "read", DOC)] * 2)] == [
        "0",
        "0",
    ]


ROLES_POLICY = """
type user { attributes { tenant: string, roles: set<string> } }
type group { relation member: user }
type doc {
  attributes { tenant: string }
  actions read, edit
}
role reader scoped by tenant { allow read on doc }
role editor extends reader { allow edit on doc }
bind roles from subject.roles
bind editor when subject has member on group(resource.tenant)
permit by_role: edit on doc when subject has role reader and resource.tenant == "special"
"""


def test_has_role_and_the_role_step_read_one_role_evaluator() -> None:
    # The compiled snapshot answers `has role` itself (no engine behind it): the same bindings,
    # inheritance and scopes as the role grant.
    from pdp.engine.compiler import compile_policy
    from pdp.engine.tuples import TupleStore

    bundle = bundle_from_text(ROLES_POLICY, ["group:special#member@user:carol"])
    store = TupleStore().rebased(bundle.tuples)
    snap = compile_policy(bundle.policy, store, 5)
    decide = snap.by_type["doc"]["edit"].decide
    carol = Entity("user", "carol", {"tenant": "special", "roles": frozenset()})
    dave = Entity("user", "dave", {"tenant": "other", "roles": frozenset({"reader"})})
    special = Entity("doc", "s", {"tenant": "special"})
    other = Entity("doc", "o", {"tenant": "other"})
    # carol holds editor by binding, so reader by inheritance, in scope: the permit's `has role`
    # allows (the permit sorts first: its rule id, not the role's)
    assert decide(carol, special, {}, 0).rule_ids == ("by_role",)
    # dave holds reader by claim, in scope on `other`, but reader grants no edit
    assert decide(dave, other, {}, 0).reason is Reason.NOT_PERMITTED
    # out of scope: the claim holds, the scope does not
    assert decide(dave, special, {}, 0).reason is Reason.NOT_PERMITTED
