"""Differential testing: the compiled engine must agree with the reference interpreter on random
policies, tuples and requests (effect, reason, deciding rules and the not-found flag)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.bundle import Settings, bundle_from_text
from pdp.engine import Engine
from pdp.explain.reference import evaluate, naive_lookup
from pdp.model import Request
from tests.strategies import SCHEMA, requests, roles, rules, tuple_strings


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
