"""A sliced engine holds only some objects' tuples, and never answers from the ones it lacks.

The property: on any tuples and request, a sliced engine's decision either says it could not
decide (OUTSIDE_SLICE, or an evaluation error naming the slice) or equals the whole engine's.
Above all it never allows where the whole engine denies: the exclusion below is the trap, since a
naive slice would see no `blocked` folder and allow.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.bundle import bundle_from_text
from pdp.engine import Engine
from pdp.engine.slicing import ReadOutsideSlice, Slice
from pdp.model import Effect, Entity, Reason, Request

POLICY = """
type user {}
type group { relation member: user | group#member }
type folder {
  relation viewer: user | group#member
  relation blocked: user | group#member
  relation parent: folder
  permission view = viewer + parent->view
  permission banned = blocked + parent->banned
}
type document {
  actions read
  relation viewer: user | group#member
  relation parent: folder
  permission view = (viewer + parent->view) - parent->banned
}
permit reading: read on document when subject has view on resource
"""

TENANTS = ("acme", "globex")
IDS = (*(f"{t}/{n}" for t in TENANTS for n in ("1", "2")), "shared")
USERS = ("acme/alice", "globex/bob", "carol")


def _bundle(tuples: list[str]):  # type: ignore[no-untyped-def]
    return bundle_from_text(POLICY, tuples)


def _engine(slice_: Slice, tuples: list[str]) -> Engine:
    engine = Engine(cache_ttl=0, slice_=slice_)
    engine.load(_bundle(tuples))
    return engine


def _read(engine: Engine, who: str, doc: str):  # type: ignore[no-untyped-def]
    return engine.check(Request(Entity("user", who), "read", Entity("document", doc)))


TRAP = [
    "document:acme/1#viewer@user:acme/alice",
    "document:acme/1#parent@folder:globex/1",
    "folder:globex/1#blocked@user:acme/alice",
]


def test_a_walk_into_a_type_the_slice_lacks_denies_where_a_naive_slice_would_allow() -> None:
    assert _read(_engine(Slice(), TRAP), "acme/alice", "acme/1").effect is Effect.DENY
    sliced = _engine(Slice.of(types=["document", "user", "group"]), TRAP)
    decision = _read(sliced, "acme/alice", "acme/1")
    assert decision.effect is Effect.DENY
    assert any("outside this sidecar's slice" in e for e in decision.errors)
    assert len(sliced.tuples) == 2  # the folder's tuple is not held


def test_a_walk_into_another_tenant_denies() -> None:
    sliced = _engine(Slice.of(tenants=["acme"]), TRAP)
    decision = _read(sliced, "acme/alice", "acme/1")
    assert decision.effect is Effect.DENY
    assert any("folder:globex/1#blocked" in e for e in decision.errors)


def test_a_resource_outside_the_slice_is_denied_with_its_reason() -> None:
    tuples = ["document:globex/1#viewer@user:globex/bob", "document:acme/1#viewer@user:acme/alice"]
    sliced = _engine(Slice.of(tenants=["acme"]), tuples)
    outside = _read(sliced, "globex/bob", "globex/1")
    assert (outside.effect, outside.reason) == (Effect.DENY, Reason.OUTSIDE_SLICE)
    assert "tenants acme" in outside.errors[0]
    assert _read(sliced, "acme/alice", "acme/1").effect is Effect.ALLOW
    assert _read(sliced, "acme/alice", "shared").reason is Reason.NOT_PERMITTED  # no tenant: held


def test_written_and_restored_tuples_outside_the_slice_are_not_held() -> None:
    sliced = _engine(Slice.of(tenants=["acme"]), [])
    sliced.restore_texts(
        ["document:acme/2#viewer@user:carol", "document:globex/2#viewer@user:carol"], [], 7
    )
    assert [str(t) for t in sliced.read_tuples()] == ["document:acme/2#viewer@user:carol"]
    assert sliced.tuple_revision == 7  # the revision moves even when nothing was held


def test_a_read_that_could_miss_what_the_slice_lacks_is_refused() -> None:
    held = Slice.of(types=["document"], tenants=["acme"])
    held.check_read("document", "acme/1")
    for object_type, object_id in [(None, None), ("document", None), ("folder", "acme/1")]:
        with pytest.raises(ReadOutsideSlice):
            held.check_read(object_type, object_id)
    Slice().check_read(None, None)  # the whole: anything goes


def test_the_slice_names_the_types_its_walks_reach_but_it_lacks() -> None:
    policy = _bundle([]).policy
    assert Slice.of(types=["document", "user"]).walks_outside(policy) == ["folder", "group"]
    assert Slice.of(types=["document", "user", "group", "folder"]).walks_outside(policy) == []
    assert Slice.of(tenants=["acme"]).walks_outside(policy) == []


_tuple = st.one_of(
    st.builds(
        "document:{}#{}@{}".format,
        st.sampled_from(IDS),
        st.sampled_from(["viewer"]),
        st.sampled_from([f"user:{u}" for u in USERS] + [f"group:{g}#member" for g in IDS]),
    ),
    st.builds("document:{}#parent@folder:{}".format, st.sampled_from(IDS), st.sampled_from(IDS)),
    st.builds("folder:{}#parent@folder:{}".format, st.sampled_from(IDS), st.sampled_from(IDS)),
    st.builds(
        "folder:{}#{}@{}".format,
        st.sampled_from(IDS),
        st.sampled_from(["viewer", "blocked"]),
        st.sampled_from([f"user:{u}" for u in USERS] + [f"group:{g}#member" for g in IDS]),
    ),
    st.builds(
        "group:{}#member@{}".format,
        st.sampled_from(IDS),
        st.sampled_from([f"user:{u}" for u in USERS] + [f"group:{g}#member" for g in IDS]),
    ),
)
_slice = st.builds(
    Slice.of,
    st.sets(st.sampled_from(["document", "folder", "group", "user"])),
    st.sets(st.sampled_from(TENANTS)),
)


@settings(max_examples=150, deadline=None)
@given(
    base=st.lists(_tuple, max_size=12, unique=True),
    written=st.lists(_tuple, max_size=6, unique=True),
    deleted=st.lists(_tuple, max_size=4),
    slice_=_slice,
)
def test_a_sliced_engine_decides_as_the_whole_or_says_it_cannot(
    base: list[str], written: list[str], deleted: list[str], slice_: Slice
) -> None:
    whole, sliced = _engine(Slice(), base), _engine(slice_, base)
    for engine in (whole, sliced):
        engine.restore_texts(written, deleted, 1)
    for who in USERS:
        for doc in IDS:
            full, part = _read(whole, who, doc), _read(sliced, who, doc)
            if part.reason is Reason.OUTSIDE_SLICE or part.errors:
                assert part.effect is Effect.DENY
            else:
                assert (part.effect, part.reason) == (full.effect, full.reason), (who, doc)
