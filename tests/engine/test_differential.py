"""Differential testing: the compiled engine must agree with the reference interpreter on random
policies, tuples and requests (effect, reason, deciding rules and the not-found flag)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.bundle import Settings, bundle_from_text
from pdp.engine import Engine
from pdp.explain.reference import evaluate, naive_lookup
from pdp.model import Entity, Request
from tests.strategies import SCHEMA, conditions, requests, roles, rules, tuple_strings


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules(),
    roles(),
    st.lists(tuple_strings, max_size=12),
    st.lists(requests(), min_size=1, max_size=6),
    st.integers(2, 6),
)
def test_compiled_engine_agrees_with_reference(
    rule_text: str, role_text: str, tuples: list[str], reqs: list[Request], depth: int
) -> None:
    bundle = bundle_from_text(
        SCHEMA + role_text + "\n" + rule_text, tuples, settings=Settings(max_depth=depth)
    )
    engine = Engine(cache_ttl=60)
    engine.load(bundle)
    lookup = naive_lookup(bundle.tuples)
    for request in reqs:
        expected = evaluate(bundle.policy, lookup, request, depth)
        for _ in range(2):  # the second answer may be a cache hit; it must not differ
            got = engine.check(request)
            assert (got.effect, got.reason, got.rule_ids, got.not_found) == (
                expected.effect,
                expected.reason,
                expected.rule_ids,
                expected.not_found,
            ), f"{request}\n{rule_text}\n{role_text}\n{tuples}"


# Many conditional rules on one (type, action), mostly of one effect, then perhaps an
# unconditional one. Conditions are either any, or relation checks alone (which, shallow, often
# reach no one or hit the depth limit, so that the loops run to their end and report errors).
RELATION_CONDITIONS = st.sampled_from(
    ["subject has view on resource", "subject has edit on resource", "subject has both on resource"]
)
MANY_RULES = (
    st.tuples(
        st.sampled_from(["permit", "forbid"]), st.sampled_from([conditions, RELATION_CONDITIONS])
    )
    .flatmap(
        lambda major: st.tuples(
            st.lists(
                st.tuples(st.sampled_from([major[0]] * 4 + ["permit", "forbid"]), major[1]),
                min_size=18,
                max_size=30,
            ),
            st.sampled_from(["", "permit", "forbid"]),
        )
    )
    .map(
        lambda drawn: "\n".join(
            [f"{effect} m{i}: a on doc when {cond}" for i, (effect, cond) in enumerate(drawn[0])]
            + ([f"{drawn[1]} z_last: a on doc"] if drawn[1] else [])  # rules run in id order
        )
    )
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    MANY_RULES,
    roles(),
    st.lists(tuple_strings, min_size=4, max_size=16),
    st.lists(
        requests().map(
            lambda r: Request(r.subject, "a", Entity("doc", "d0", r.resource.attrs), r.context)
        ),
        min_size=2,
        max_size=8,
    ),
    st.integers(1, 3),  # shallow, so that relation conditions hit the depth limit often
)
def test_entries_with_many_rules_agree_with_reference(
    rule_text: str, role_text: str, tuples: list[str], reqs: list[Request], depth: int
) -> None:
    """Past a handful of rules an entry's decide function loops over them instead of unrolling
    one block each (pdp.engine.decider._UNROLL): the loop must decide exactly the same."""
    # d0's folder has a parent: at depth 1, `parent->view` on d0 hits the depth limit
    deep = ("doc:d0#parent@folder:f0", "folder:f0#parent@folder:f1")
    bundle = bundle_from_text(
        SCHEMA + role_text + "\n" + rule_text, (*deep, *tuples), settings=Settings(max_depth=depth)
    )
    engine = Engine(cache_ttl=0)
    engine.load(bundle)
    lookup = naive_lookup(bundle.tuples)
    for request in reqs:
        expected = evaluate(bundle.policy, lookup, request, depth)
        got = engine.check(request)
        assert (got.effect, got.reason, got.rule_ids, got.not_found) == (
            expected.effect,
            expected.reason,
            expected.rule_ids,
            expected.not_found,
        )
