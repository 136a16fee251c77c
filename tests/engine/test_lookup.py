"""Lookups against brute force: on random policies, tuples, subjects and interleaved writes,
LookupResources returns exactly the known ids Check allows (every returned id allows, every other
known id denies), and LookupSubjects likewise, with `*` and its exclusions when a wildcard allows."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.bundle import Settings, bundle_from_text
from pdp.engine import Engine
from pdp.engine.lookup import lookup_resources, lookup_subjects
from pdp.engine.reach import allowed_ids
from pdp.model import Effect, Entity, RelationTuple, Request
from tests.strategies import SCHEMA, requests, roles, rules, tuple_strings

ACTIONS = {"doc": ("a", "b", "c"), "folder": ("a", "b")}


def _allows(engine: Engine, request: Request) -> bool:
    return engine.check(request, cached=False).effect is Effect.ALLOW


def _agree_with_brute_force(engine: Engine, request: Request) -> None:
    view = engine.pin()
    subject, context = request.subject, request.context
    for rtype, actions in ACTIONS.items():
        known = view.tuples.object_ids(rtype)
        for action in actions:
            found = lookup_resources(view, subject, action, rtype, context)
            got = list(found)
            assert got == sorted(got)
            expected = {
                rid
                for rid in known
                if _allows(engine, Request(subject, action, Entity(rtype, rid), context))
            }
            assert set(got) == expected, (rtype, action, found.incomplete)
            # resumed after any id, the rest of the same answer
            if got:
                rest = list(lookup_resources(view, subject, action, rtype, context, after=got[0]))
                assert rest == got[1:]
    resource = request.resource
    users = view.tuples.object_ids("user")
    for action in ACTIONS[resource.type]:
        found = lookup_subjects(view, resource, action, "user", context)
        got = list(found)
        allowed = {
            uid
            for uid in users
            if _allows(engine, Request(Entity("user", uid), action, resource, context))
        }
        assert set(got) - {"*"} <= allowed
        if not found.incomplete:
            assert set(got) - {"*"} == allowed, (action, got)
        if "*" in got:
            assert _allows(engine, Request(Entity("user", "*"), action, resource, context))
            assert set(found.excluded) == users - allowed


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules(),
    roles(),
    st.lists(tuple_strings, max_size=14),
    st.lists(requests(), min_size=1, max_size=3),
    st.lists(st.tuples(st.booleans(), tuple_strings), max_size=6),
    st.integers(2, 6),
)
def test_lookups_equal_brute_force_check_through_writes(
    rule_text: str,
    role_text: str,
    tuples: list[str],
    reqs: list[Request],
    changes: list[tuple[bool, str]],
    depth: int,
) -> None:
    bundle = bundle_from_text(
        SCHEMA + role_text + "\n" + rule_text, tuples, settings=Settings(max_depth=depth)
    )
    engine = Engine(cache_ttl=60)
    engine.load(bundle)
    for request in reqs:
        _agree_with_brute_force(engine, request)
    for present, text in changes:  # the answer follows every write and delete
        t = RelationTuple.parse(text)
        engine.write_tuples([t] if present else [], [] if present else [t])
        _agree_with_brute_force(engine, reqs[0])


RELATION_RULES = st.lists(
    st.sampled_from(
        [
            "permit p{i}: * on doc, folder when subject has view on resource",
            "permit p{i}: a on doc, folder when subject has edit on resource",
            "permit p{i}: b on doc when subject has both on resource and subject.flag",
            "forbid f{i}: * on doc when subject has both on resource",
            "forbid f{i}: a on folder when not (subject has view on resource)",
        ]
    ),
    min_size=1,
    max_size=3,
    unique=True,
).map(lambda picked: "\n".join(r.format(i=i) for i, r in enumerate(picked)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    RELATION_RULES,
    st.lists(tuple_strings, max_size=16),
    st.lists(requests(), min_size=1, max_size=3),
    st.lists(st.tuples(st.booleans(), tuple_strings), max_size=6),
)
def test_relation_only_lookups_walk_exactly_and_are_complete(
    rule_text: str, tuples: list[str], reqs: list[Request], changes: list[tuple[bool, str]]
) -> None:
    """Rules that allow only through relations: the candidates come from the reverse walk alone,
    so a walk that missed a hop (an arrow, a userset, a wildcard) would lose an id here."""
    engine = Engine(cache_ttl=60)
    engine.load(bundle_from_text(SCHEMA + rule_text, tuples))
    for request in reqs:
        _agree_with_brute_force(engine, request)
        for action in ACTIONS["doc"]:
            found = lookup_resources(engine.pin(), request.subject, action, "doc", request.context)
            list(found)
            assert not any("hold no tuple" in why for why in found.incomplete)
    for present, text in changes:
        t = RelationTuple.parse(text)
        engine.write_tuples([t] if present else [], [] if present else [t])
        _agree_with_brute_force(engine, reqs[0])


def test_a_rule_that_allows_without_tuples_makes_the_answer_incomplete() -> None:
    bundle = bundle_from_text(
        SCHEMA + "permit open: a on doc when resource.level == 1\n",
        ["doc:d0#viewer@user:u0"],
    )
    engine = Engine()
    engine.load(bundle)
    found = lookup_resources(engine.pin(), Entity("user", "u0"), "a", "doc")
    assert list(found) == []  # d0 has no level here: its check erred, so it is not listed
    assert any("rule open" in why for why in found.incomplete)
    assert any("resource.level" in why or "level" in why for why in found.incomplete)


UNION_POLICY = """
type user {}
type team { relation member: user | user:* | team#member }
type folder {
  actions read
  relation parent: folder | folder#parent
  relation viewer: user | team#member
  permission view = viewer + parent->view
}
type doc {
  actions read, peek
  relation owner: user
  relation viewer: user | user:* | team#member
  relation parent: folder | folder#parent
  permission view = owner + viewer + parent->view
}
permit r: read on doc, folder when subject has view on resource
permit p: peek on doc when subject has owner on resource
"""
UNION_TUPLES = st.sampled_from(
    [f"team:t{i}#member@user:u{j}" for i in range(2) for j in range(3)]
    + ["team:t0#member@user:*", "team:t1#member@team:t0#member", "team:t0#member@team:t1#member"]
    + [f"folder:f{i}#parent@folder:f{j}" for i in range(3) for j in range(3) if i != j]
    + ["folder:f2#parent@folder:f1#parent"]
    + [f"folder:f{i}#viewer@{s}" for i in range(3) for s in ("user:u0", "team:t1#member")]
    + ["folder:f7#viewer@user:u2", "folder:f7#viewer@team:t0#member", "folder:f2#parent@folder:f3"]
    + [f"doc:d{i}#parent@{s}" for i in range(3) for s in ("folder:f0", "folder:f2#parent")]
    + ["doc:d2#parent@folder:f3"]
    + [f"doc:d{i}#viewer@{s}" for i in range(3) for s in ("user:u1", "user:*", "team:t0#member")]
    + [f"doc:d{i}#owner@user:u{i}" for i in range(3)]
)


# f3 -> f4 -> ... -> f7: arrows deep enough for the depth limit to decide
FOLDER_CHAIN = tuple(f"folder:f{i}#parent@folder:f{i + 1}" for i in range(3, 7))


# The same, less blocked subjects at every level: `(...) - blocked` is answered backwards too.
BLOCKED_POLICY = UNION_POLICY.replace(
    "  permission view = viewer + parent->view",
    "  relation blocked: user | team#member\n  permission view = (viewer + parent->view) - blocked",
).replace(
    "  permission view = owner + viewer + parent->view",
    "  relation blocked: user | team#member\n"
    "  permission view = (owner + viewer + parent->view) - blocked",
)
BLOCKED_TUPLES = st.one_of(
    UNION_TUPLES,
    st.sampled_from(
        [
            f"{o}#blocked@{s}"
            for o in ("folder:f1", "folder:f4", "doc:d0", "doc:d2")
            for s in ("user:u0", "user:u2", "team:t1#member")
        ]
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.booleans().flatmap(
        lambda blocked: st.tuples(
            st.just(blocked),
            st.lists(BLOCKED_TUPLES if blocked else UNION_TUPLES, max_size=14),
            st.lists(
                st.tuples(st.booleans(), BLOCKED_TUPLES if blocked else UNION_TUPLES),
                max_size=5,
            ),
        )
    ),
    st.integers(1, 8),
)
def test_unions_are_answered_backwards_from_the_subject_exactly(
    drawn: tuple[bool, list[str], list[tuple[bool, str]]], depth: int
) -> None:
    """A union of relations and arrows, less blocked subjects, is answered without a Check per
    id (pdp.engine.reach): through nested and cyclic teams, wildcards, recursive and userset
    arrows and writes, the answer is still exactly brute force; near the depth limit it is left
    to Check."""
    blocked, tuples, changes = drawn
    engine = Engine(cache_ttl=0, max_depth=depth)
    policy = BLOCKED_POLICY if blocked else UNION_POLICY
    engine.load(bundle_from_text(policy, (*FOLDER_CHAIN, *tuples)))
    shortcuts = 0
    for step in range(len(changes) + 1):
        view = engine.pin()
        for uid in ("u0", "u1", "u2", "u9"):
            subject = Entity("user", uid)
            for rtype, action in (("doc", "read"), ("folder", "read"), ("doc", "peek")):
                exact = allowed_ids(view, subject, action, rtype)
                shortcuts += exact is not None
                got = set(lookup_resources(view, subject, action, rtype))
                known = view.tuples.object_ids(rtype) | {"d0", "d1", "d2", "f0", "f1", "f2"}
                expected = {
                    rid
                    for rid in known
                    if _allows(engine, Request(subject, action, Entity(rtype, rid)))
                }
                assert got == expected, (uid, rtype, action)
                if exact is not None:
                    assert exact == expected
        if step < len(changes):
            present, text = changes[step]
            t = RelationTuple.parse(text)
            engine.write_tuples([t] if present else [], [] if present else [t])
    if depth >= 6:
        assert shortcuts  # the shortcut is taken when the depth limit cannot decide


def test_only_what_a_relation_admits_counts_backwards_too() -> None:
    # Validation keeps such tuples out; written to the store directly they must count for
    # nothing, as in Check: a team userset on `owner` (users only), a wildcard on a folder's
    # `viewer` (which admits none).
    engine = Engine(cache_ttl=0)
    engine.load(bundle_from_text(UNION_POLICY, ("team:t0#member@user:u0",)))
    raw = ["doc:d0#owner@team:t0#member", "folder:f0#viewer@user:*"]
    engine.tuples.write([RelationTuple.parse(t) for t in raw], [])
    view = engine.pin()
    assert allowed_ids(view, Entity("user", "u0"), "peek", "doc") == set()
    assert allowed_ids(view, Entity("user", "u0"), "read", "folder") == set()
    assert list(lookup_resources(view, Entity("user", "u0"), "read", "folder")) == []


def test_a_blocked_folder_stops_the_walk_up_through_it() -> None:
    # f7 -> f6 -> f5 -> f4 (blocked) -> f3: u2 sees f7, f6, f5; not f4, so not f3 either.
    engine = Engine(cache_ttl=0)
    tuples = (*FOLDER_CHAIN, "folder:f7#viewer@user:u2", "folder:f4#blocked@user:u2")
    engine.load(bundle_from_text(BLOCKED_POLICY, tuples))
    view = engine.pin()
    u2 = Entity("user", "u2")
    assert allowed_ids(view, u2, "read", "folder") == {"f5", "f6", "f7"}
    assert list(lookup_resources(view, u2, "read", "folder")) == ["f5", "f6", "f7"]


def test_a_wildcard_narrowed_by_a_condition_on_the_subject_is_never_called_complete() -> None:
    # `user:*` views d0, but only its owner may read: u1, whom no tuple names, is allowed and
    # cannot be listed, so the answer must say it is not whole.
    policy = SCHEMA + (
        "permit p: a on doc when subject has viewer on resource and resource.owner == subject.id\n"
    )
    engine = Engine(cache_ttl=0)
    engine.load(bundle_from_text(policy, ("doc:d0#viewer@user:*",)))
    d0 = Entity("doc", "d0", {"owner": "u1"})
    assert _allows(engine, Request(Entity("user", "u1"), "a", d0))
    found = lookup_subjects(engine.pin(), d0, "a", "user")
    assert list(found) == []
    assert any("user:*" in why for why in found.incomplete)
