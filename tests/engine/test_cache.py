"""The decision cache, tested adversarially: it must never answer with a decision that a fresh
evaluation would not give (OpenFGA shipped CVEs from cache keys that missed an input)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.bundle import bundle_from_text
from pdp.engine import Engine
from pdp.engine.cache import DecisionCache
from pdp.explain import explain
from pdp.model import Decision, Effect, Entity, Reason, RelationTuple, Request
from tests.strategies import SCHEMA, requests, roles, rules, tuple_strings

POLICY = """
type user { attributes { level?: int, tenant?: string } }
type service { attributes { level?: int, tenant?: string } }
type group { relation member: user | group#member }
type doc {
  attributes { level: int, tenant?: string }
  actions read, write, peek
  relation viewer: user | group#member
  relation banned: user
}
context { hour?: int }
permit by_level: read on doc when subject.level >= resource.level and subject.type == "user"
  and not subject has banned on resource
permit by_tuple: write on doc when subject has viewer on resource
permit by_context: peek on doc when context.hour > 8 and not subject has banned on resource
"""
# Every rule reads tuples (`banned` is never written): only such decisions are cached, so the
# key tests below exercise a real cache. Decisions on attributes and roles alone never are:


def test_a_decision_that_reads_no_tuple_is_never_cached() -> None:
    e = engine(policy=POLICY.replace(" and not subject has banned on resource", ""))
    req = Request(user(level=3), "read", DOC)
    assert e.check(req).allowed
    again = e.check(req)
    assert again.allowed and not again.cached
    assert e.cache_stats() == {"hits": 0, "misses": 0, "size": 0}


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def engine(
    ttl: float = 60, size: int = 1000, policy: str = POLICY, clock: FakeClock | None = None
) -> Engine:
    e = Engine(cache_ttl=ttl, cache_size=size, clock=clock or FakeClock())
    e.load(bundle_from_text(policy))
    return e


def user(id: str = "u", **attrs: object) -> Entity:
    return Entity("user", id, attrs)  # type: ignore[arg-type]


DOC = Entity("doc", "d", {"level": 2})


def test_second_identical_check_is_a_hit_and_says_so() -> None:
    e = engine()
    first = e.check(Request(user(level=3), "read", DOC))
    second = e.check(Request(user(level=3), "read", DOC))
    assert first.allowed and not first.cached
    assert second.allowed and second.cached
    assert e.cache_stats()["hits"] == 1


def test_every_read_attribute_is_in_the_key() -> None:
    e = engine()
    assert e.check(Request(user(level=3), "read", DOC)).allowed
    assert not e.check(Request(user(level=1), "read", DOC)).allowed
    assert not e.check(Request(user(level=3), "read", Entity("doc", "d", {"level": 9}))).allowed
    assert e.check(Request(user(level=3), "read", DOC)).allowed


def test_subject_type_is_in_the_key() -> None:
    e = engine()
    assert e.check(Request(user("x", level=3), "read", DOC)).allowed
    assert not e.check(Request(Entity("service", "x", {"level": 3}), "read", DOC)).allowed


def test_context_is_in_the_key() -> None:
    e = engine()
    assert e.check(Request(user(), "peek", DOC, {"hour": 10})).allowed
    assert not e.check(Request(user(), "peek", DOC, {"hour": 3})).allowed


def test_tuple_write_and_delete_are_seen_by_the_very_next_check() -> None:
    e = engine()
    req = Request(user("bob"), "write", DOC)
    assert not e.check(req).allowed
    t = RelationTuple.parse("doc:d#viewer@user:bob")
    e.write_tuples([t])
    assert e.check(req).allowed
    e.write_tuples([], [t])
    assert not e.check(req).allowed


def test_nested_membership_change_is_seen_at_once() -> None:
    e = engine()
    e.write_tuples([RelationTuple.parse("doc:d#viewer@group:g#member")])
    req = Request(user("bob"), "write", DOC)
    assert not e.check(req).allowed
    e.write_tuples([RelationTuple.parse("group:g#member@user:bob")])
    assert e.check(req).allowed


def test_reload_is_seen_at_once() -> None:
    e = engine()
    req = Request(user(level=3), "read", DOC)
    assert e.check(req).allowed
    e.load(bundle_from_text(POLICY.replace("permit by_level", "forbid by_level")))
    decision = e.check(req)
    assert decision.effect is Effect.DENY and decision.reason is Reason.FORBIDDEN


def test_errors_are_never_cached() -> None:
    e = engine()
    req = Request(user(), "read", DOC)  # no level: the permit errors
    assert e.check(req).reason is Reason.EVALUATION_ERROR
    assert e.check(req).reason is Reason.EVALUATION_ERROR
    assert e.cache_stats()["size"] == 0
    assert not e.check(req).cached


def test_depth_limit_results_are_never_cached() -> None:
    e = Engine(cache_ttl=60, max_depth=1)
    e.load(bundle_from_text(POLICY))
    e.write_tuples(
        [
            RelationTuple.parse("doc:d#viewer@group:a#member"),
            RelationTuple.parse("group:a#member@group:b#member"),
            RelationTuple.parse("group:b#member@group:c#member"),
            RelationTuple.parse("group:c#member@user:bob"),  # three hops down, the limit is one
        ]
    )
    req = Request(user("bob"), "write", DOC)
    assert e.check(req).reason is Reason.DEPTH_LIMIT
    assert e.check(req).reason is Reason.DEPTH_LIMIT
    assert e.cache_stats()["size"] == 0


def test_explain_never_answers_from_the_cache() -> None:
    e = engine()
    req = Request(user(level=3), "read", DOC)
    e.check(req)
    explained = explain(e, req)
    assert not explained.cached
    assert explained.trace


def test_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    e = engine(ttl=5, clock=clock)
    req = Request(user(level=3), "read", DOC)
    e.check(req)
    clock.advance(4.999)
    assert e.check(req).cached
    clock.advance(0.001)  # an entry is good until its deadline, not at it
    assert not e.check(req).cached
    assert e.check(req).cached  # the fresh answer was cached again, for another ttl


def test_the_cache_reads_only_its_own_clock() -> None:
    clock = FakeClock()
    cache = DecisionCache(10, clock=clock)
    decision = Decision(Effect.ALLOW, Reason.PERMITTED, ("p",), "r1", 0)
    cache.put("k", decision)
    hit = cache.get("k")
    assert hit is not None and hit.cached and hit.rule_ids == ("p",)
    clock.advance(10)
    assert cache.get("k") is None
    assert cache.stats() == {"hits": 1, "misses": 1, "size": 0}


def test_size_is_bounded() -> None:
    e = engine(size=10)
    for i in range(50):
        e.check(Request(user(f"u{i}", level=3), "read", DOC))
    assert e.cache_stats()["size"] <= 10


def test_zero_ttl_disables_the_cache() -> None:
    e = engine(ttl=0)
    req = Request(user(level=3), "read", DOC)
    e.check(req)
    assert not e.check(req).cached
    assert e.cache_stats()["size"] == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules(),
    roles(),
    st.lists(
        st.one_of(
            requests().map(lambda r: ("check", r)),
            tuple_strings.map(lambda t: ("write", t)),
            tuple_strings.map(lambda t: ("delete", t)),
        ),
        min_size=1,
        max_size=25,
    ),
)
def test_cached_engine_always_agrees_with_an_uncached_one(
    rule_text: str, role_text: str, ops: list
) -> None:  # type: ignore[type-arg]
    bundle = bundle_from_text(SCHEMA + role_text + "\n" + rule_text)
    cached, fresh = Engine(cache_ttl=60), Engine(cache_ttl=0)
    cached.load(bundle)
    fresh.load(bundle)
    for op, arg in ops:
        if op == "check":
            a, b = cached.check(arg), fresh.check(arg)
            assert (a.effect, a.reason, a.rule_ids) == (b.effect, b.reason, b.rule_ids)
        else:
            t = RelationTuple.parse(arg)
            for e in (cached, fresh):
                e.write_tuples([t]) if op == "write" else e.write_tuples([], [t])


def test_bool_and_int_never_share_a_cache_entry() -> None:
    # True == 1 and hash(True) == hash(1): without exact type checks a decision made for
    # level=1 could be served for level=True (or the other way round).
    e = engine()
    assert not e.check(Request(user(level=1), "read", DOC)).allowed
    confused = e.check(Request(user(level=True), "read", DOC))
    assert confused.reason is Reason.EVALUATION_ERROR
    assert not confused.cached


def test_the_scope_a_has_role_condition_reads_is_in_the_key() -> None:
    """An ALLOW cached for a viewer of acme must not answer for globex's document."""
    e = engine(
        policy="""
type user { attributes { tenant?: string, roles: set<string> } }
type doc { attributes { tenant?: string } actions share }
role viewer scoped by tenant {}
bind roles from subject.roles
permit share_with_viewers: share on doc when subject has role viewer
"""
    )
    u = user("e", tenant="acme", roles=frozenset({"viewer"}))
    assert e.check(Request(u, "share", Entity("doc", "1", {"tenant": "acme"}))).allowed
    assert not e.check(Request(u, "share", Entity("doc", "1", {"tenant": "globex"}))).allowed
