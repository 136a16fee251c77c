"""The tuple store: base and overlay semantics against a model of plain sets, and its indexes."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.engine.tuples import TupleStore
from pdp.model import RelationTuple, TupleSyntaxError

T = RelationTuple.parse


class Model:
    """The store's semantics written as sets: visible = (base - deleted) | added."""

    def __init__(self) -> None:
        self.base: set[RelationTuple] = set()
        self.added: set[RelationTuple] = set()
        self.deleted: set[RelationTuple] = set()

    def replace_base(self, tuples: list[RelationTuple]) -> None:
        self.base = set(tuples)

    def write(self, writes: list[RelationTuple], deletes: list[RelationTuple]) -> None:
        for t in deletes:
            self.added.discard(t)
            self.deleted.add(t)
        for t in writes:
            self.deleted.discard(t)
            if t not in self.base:
                self.added.add(t)

    @property
    def visible(self) -> set[RelationTuple]:
        return (self.base - self.deleted) | self.added


def assert_agrees(store: TupleStore, model: Model) -> None:
    visible = model.visible
    assert set(store.read()) == visible
    assert len(store) == len(visible)
    for key, subjects in store.subjects.items():
        assert subjects, key
        assert not isinstance(subjects, str)
        assert len(set(subjects)) == len(subjects)
        usersets = {s for s in subjects if "#" in s}
        assert {f"{t}:{i}#{r}" for t, i, r in store.usersets.get(key, ())} == usersets
    assert set(store.usersets) <= set(store.subjects)
    for t in visible:
        assert store.contains(t)
        assert f"{t.object_type}:{t.object_id}#{t.relation}" in store.objects_of(
            t.subject_type, t.subject_id, t.subject_relation
        )
    subjects_of = {(t.subject_type, t.subject_id, t.subject_relation) for t in visible}
    assert sum(len(store.objects_of(*s)) for s in subjects_of) == len(visible)


# A small universe, so that writes, deletes and bases collide often; key "doc:1#viewer" can
# grow past the threshold where its members become a set.
subjects = [f"user:u{i}" for i in range(40)] + [f"group:g{i}#member" for i in range(20)]
universe = [T(f"doc:{d}#{r}@{s}") for d in range(3) for r in ("viewer", "owner") for s in subjects]
some = st.lists(st.sampled_from(universe), max_size=80)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("base"), some, st.just([])),
        st.tuples(st.just("write"), some, st.lists(st.sampled_from(universe), max_size=30)),
    ),
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_store_agrees_with_the_set_model(
    steps: list[tuple[str, list[RelationTuple], list[RelationTuple]]],
) -> None:
    store, model = TupleStore(), Model()
    revision = 0  # moved by writes only: a new base keeps it
    for kind, tuples, deletes in steps:
        model_before = copy.deepcopy(model)
        if kind == "base":
            old = store
            store = store.rebased(tuples)
            model.replace_base(tuples)
            assert_agrees(old, model_before)  # the old store is untouched: readers keep it whole
        else:
            store.write(tuples, deletes)
            model.write(tuples, deletes)
            revision += 1
        assert store.revision == revision
        assert_agrees(store, model)


def test_a_reload_keeps_writes_and_deletes_and_drops_what_the_bundle_dropped() -> None:
    a, b, c = T("doc:1#viewer@user:a"), T("doc:1#viewer@user:b"), T("doc:1#viewer@user:c")
    store = TupleStore()
    store = store.rebased([a, b])
    store.write([c], [b])
    store.write([a], [])  # already in the bundle: not an overlay add
    store = store.rebased([b])
    assert store.read() == [c]  # a left with the bundle, b stays deleted, c was written


def test_a_tombstone_for_a_tuple_no_bundle_has_yet_hides_it_later() -> None:
    t = T("doc:1#viewer@user:a")
    store = TupleStore()
    store.write([], [t])
    store = store.rebased([t])
    assert store.read() == []
    assert not store.contains(t)


def test_an_added_tuple_a_later_bundle_also_holds_is_a_bundle_tuple_once_rewritten() -> None:
    t = T("doc:1#viewer@user:a")
    store = TupleStore()
    store.write([t], [])
    store = store.rebased([t])
    store.write([], [t])
    store.write([t], [])  # the bundle holds it: it comes back as a bundle tuple
    store = store.rebased([])
    assert store.read() == []


def test_members_are_tuples_while_small_and_sets_past_the_threshold() -> None:
    store = TupleStore()
    many = [T(f"doc:1#viewer@user:u{i}") for i in range(100)]
    store.write(many[:2], [])
    assert isinstance(store.subjects["doc:1#viewer"], tuple)
    store.write(many, [])
    held = store.subjects["doc:1#viewer"]
    assert isinstance(held, set)
    assert "user:u99" in held
    assert "user:u1" in held
    assert "user:u" not in held  # set semantics, never a substring test
    store.write([], many[2:])
    assert sorted(store.subjects["doc:1#viewer"]) == ["user:u0", "user:u1"]


def test_usersets_are_pre_split_and_follow_deletes() -> None:
    store = TupleStore()
    t = T("doc:1#viewer@group:eng#member")
    store.write([t, T("doc:1#viewer@user:a")], [])
    assert list(store.usersets["doc:1#viewer"]) == [("group", "eng", "member")]
    store.write([], [t])
    assert "doc:1#viewer" not in store.usersets
    assert store.read(object_type="doc", object_id="1", relation="viewer") == [
        T("doc:1#viewer@user:a")
    ]


def test_keys_are_shared_strings() -> None:
    store = TupleStore()
    store.write([T("doc:1#viewer@user:a"), T("doc:2#viewer@user:a")], [])
    (a1,) = store.subjects["doc:1#viewer"]
    (a2,) = store.subjects["doc:2#viewer"]
    assert a1 is a2


def test_from_parts_accepts_what_parse_accepts_and_fails_the_same_way() -> None:
    good = [
        ("doc:1", "viewer", "user:a"),
        ("doc:acme/a", "viewer", "group:eng#member"),
        ("doc_x:1", "v_1", "user:*"),
        ("doc:a|b=c+d-e_f", "viewer", "user:A/Z"),
    ]
    for obj, rel, subj in good:
        assert RelationTuple.from_parts(obj, rel, subj, {}) == T(f"{obj}#{rel}@{subj}")
    bad = [
        ("1doc:x", "viewer", "user:u"),
        ("doc:x", "vie wer", "user:u"),
        ("doc:x", "viewer", "user:u#"),
        ("doc:x", "viewer", "user:"),
        ("doc", "viewer", "user:u"),
        ("doc:x@y", "viewer", "user:u"),
        ("doc:x", "viewer", "user:u#1r"),
        (1, "viewer", "user:u"),
        ("doc:x", "viewer", "user:u v"),
        ("doc:x", "", "user:u"),
        # the identifier grammar: no id can hold a separator, a space or the wildcard
        ("doc:a:b", "viewer", "user:u"),
        ("doc-x:1", "viewer", "user:u"),
        ("doc:é", "viewer", "user:u"),
        ("doc:*", "viewer", "user:u"),
        ("doc:x", "viewer", "user:*#member"),
        ("doc:x", "viewer", "user:a\u00a0b"),
        ("doc:x", "viewer", "user:a\tb"),
    ]
    for obj, rel, subj in bad:
        with pytest.raises(TupleSyntaxError) as fast:
            RelationTuple.from_parts(obj, rel, subj)
        with pytest.raises(TupleSyntaxError) as slow:
            T(f"{obj}#{rel}@{subj}")
        assert str(fast.value) == str(slow.value)
