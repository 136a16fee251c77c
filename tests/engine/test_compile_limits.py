"""Whatever the checker accepts compiles and decides: at the language's limits, one past them (a
located diagnostic, never a crash), and on random policies built to reach them (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.bundle import BundleError, Settings, bundle_from_text
from pdp.engine import Engine
from pdp.engine.conditions import ConditionFn, compile_conditions
from pdp.explain import explain
from pdp.explain.reference import evaluate, naive_lookup
from pdp.model import Decision, Effect, Entity, Reason, Request
from policy_lang import ast, limits
from policy_lang.checker import check
from policy_lang.formatter import format_source
from policy_lang.parser import parse

SCHEMA = """type user { attributes { n: int, s: string, tags: set<string> } }
type doc {
  attributes { n: int }
  actions read
  relation owner: user
  relation viewer: user | user:*
  relation parent: doc
  permission view = VIEW
}
"""
ALICE = Entity("user", "alice", {"n": 1, "s": "Ab", "tags": frozenset({"a"})})
DOC = Entity("doc", "d1", {"n": 1})
TUPLES = ["doc:d1#owner@user:alice", "doc:d1#parent@doc:d0", "doc:d0#viewer@user:bob"]
LIMIT_CODES = {
    "expression_too_deep",
    "expression_too_large",
    "int_out_of_range",
    "permission_too_deep",
    "permission_too_large",
    "role_chain_too_long",
}


def policy(condition: str = "true", view: str = "owner + parent->view", extra: str = "") -> str:
    return SCHEMA.replace("VIEW", view) + extra + f"permit p: read on doc when {condition}\n"


def decide(text: str, subject: Entity = ALICE, max_depth: int | None = None) -> Decision:
    """Load into an engine, decide, and hold the reference interpreter to the same answer."""
    bundle = bundle_from_text(text, TUPLES, settings=Settings(max_depth=max_depth))
    engine = Engine()
    engine.load(bundle)
    request = Request(subject, "read", DOC)
    decision = engine.check(request)
    outcome = evaluate(bundle.policy, naive_lookup(bundle.tuples), request, max_depth or 25)
    assert (outcome.effect, outcome.rule_ids) == (decision.effect, decision.rule_ids)
    assert explain(engine, request).effect is decision.effect
    format_source(text)  # the printer walks it too
    return decision


def refused(text: str) -> list[tuple[str, int, int]]:
    with pytest.raises(BundleError) as info:
        bundle_from_text(text)
    return [(d.code, d.loc.line, d.loc.col) for d in info.value.diagnostics if d.is_error]


RULE_LINE = SCHEMA.count("\n") + 1
WHEN_COL = len("permit p: read on doc when ") + 1


# ---- the cases -------------------------------------------------------------------------
def test_a_250_term_or_compiles_and_decides() -> None:
    terms = [f"subject.n == {i}" for i in range(2, 251)] + ["subject.n == 1"]
    assert decide(policy(" or ".join(terms))).effect is Effect.ALLOW


def test_199_nested_nots_are_a_located_error() -> None:
    assert refused(policy("not " * 199 + "true")) == [
        ("expression_too_deep", RULE_LINE, WHEN_COL + 4 * limits.MAX_EXPR_DEPTH)
    ]


def test_an_integer_of_4301_digits_is_a_located_error() -> None:
    text = policy("subject.n == " + "9" * 4301)
    assert refused(text) == [("int_out_of_range", RULE_LINE, WHEN_COL + len("subject.n == "))]


# ---- each limit: at it compiles, one past it is refused -----------------------------------------
def test_condition_depth_at_the_limit() -> None:
    # The worst nesting for generated parentheses: a method argument inside `not` at every level.
    at = "not " * (limits.MAX_EXPR_DEPTH - 1) + "true"
    assert decide(policy(at)).effect is Effect.DENY  # 49 nots of true
    inner = "subject.n == 1"
    for _ in range((limits.MAX_EXPR_DEPTH - 3) // 3):
        inner = f'subject.tags.contains_any(["a"]) == ({inner} or not {inner[:0]}false)'
    decide(policy(inner))
    assert [c for c, _, _ in refused(policy("not " * limits.MAX_EXPR_DEPTH + "true"))] == [
        "expression_too_deep"
    ]


def test_right_nested_runs_count_each_level() -> None:
    depth = limits.MAX_EXPR_DEPTH - 1
    at = "(true or " * depth + "true" + ")" * depth  # 49 runs, the innermost `true` level 50
    assert decide(policy(at)).effect is Effect.ALLOW
    past = "(true or " * (depth + 1) + "true" + ")" * (depth + 1)
    assert [c for c, _, _ in refused(policy(past))] == ["expression_too_deep"]


def test_condition_size_at_the_limit() -> None:
    per_term = 4  # `subject.n == 2` is 3 parts, and each `or` joins one more
    at = (limits.MAX_EXPR_NODES + 1) // per_term
    assert decide(policy(" or ".join(["subject.n == 2"] * at))).effect is Effect.DENY
    past = " or ".join(["subject.n == 2"] * (at + 1))
    assert refused(policy(past)) == [("expression_too_large", RULE_LINE, WHEN_COL)]


@pytest.mark.parametrize("n", [limits.MAX_INT, -limits.MAX_INT, 0, -0])
def test_integers_at_the_limit(n: int) -> None:
    assert decide(policy(f"subject.n != {n}")).effect is Effect.ALLOW


@pytest.mark.parametrize(
    "literal", [str(limits.MAX_INT + 1), str(-limits.MAX_INT - 1), "[1, 9007199254740993]"]
)
def test_integers_past_the_limit(literal: str) -> None:
    op = "in" if literal.startswith("[") else "=="
    assert [c for c, _, _ in refused(policy(f"subject.n {op} {literal}"))] == ["int_out_of_range"]


def test_leading_zeros_are_not_digits_of_range() -> None:
    assert decide(policy("subject.n == " + "0" * 5000 + "1")).effect is Effect.ALLOW


def _nested_userset(levels: int) -> str:
    ops = [" & ", " + ", " - "]
    text = "owner"
    for i in range(levels - 1):
        text = f"viewer{ops[i % 3]}({text})" if i % 3 != 2 else f"owner - ({text})"
    return text


def test_permission_depth_at_the_limit() -> None:
    view = _nested_userset(limits.MAX_USERSET_DEPTH)
    decide(policy("subject has view on resource", view))
    past = _nested_userset(limits.MAX_USERSET_DEPTH + 1)
    assert [c for c, _, _ in refused(policy(view=past))] == ["permission_too_deep"]


def test_permission_depth_counts_the_permissions_it_names() -> None:
    # p1 = owner & viewer, p2 = p1 & viewer ... each one level deeper than the one it names.
    lines = ["  permission p1 = owner & viewer"]
    for i in range(2, limits.MAX_USERSET_DEPTH + 2):
        lines.append(f"  permission p{i} = (p{i - 1}) & viewer")
    text = policy(view="owner").replace(
        "  permission view", "\n".join(lines) + "\n  permission view"
    )
    errors = refused(text)
    assert [c for c, _, _ in errors] == ["permission_too_deep"]
    # Reported once, at the first permission past the limit, not at everything naming it.
    first_too_deep = (
        f"  permission p{limits.MAX_USERSET_DEPTH} = (p{limits.MAX_USERSET_DEPTH - 1}) & viewer"
    )
    assert errors[0][1:] == (text.splitlines().index(first_too_deep) + 1, 3)
    at = "\n".join(lines[: limits.MAX_USERSET_DEPTH - 1])
    ok = policy("subject has view on resource", "owner + p1").replace(
        "  permission view", at + "\n  permission view"
    )
    decide(ok)


def test_permission_size_at_the_limit() -> None:
    at = (limits.MAX_USERSET_NODES + 1) // 2
    assert (
        decide(
            policy("subject has view on resource", " + ".join(["viewer"] * (at - 1) + ["owner"]))
        ).effect
        is Effect.ALLOW
    )
    past = " + ".join(["viewer"] * (at + 1))
    assert [c for c, _, _ in refused(policy(view=past))] == ["permission_too_large"]


@pytest.mark.parametrize("op", ["+", "&", "-"])
def test_long_runs_of_one_rewrite_operator_walk_in_a_loop(op: str) -> None:
    view = f" {op} ".join(["owner"] + ["parent->view"] * 400)
    d = decide(policy("subject has view on resource", view))
    assert d.reason in (Reason.PERMITTED, Reason.NOT_PERMITTED, Reason.DEPTH_LIMIT)


def _roles(levels: int) -> str:
    out = "role r0 { allow read on doc }\n"
    out += "".join(f"role r{i} extends r{i - 1} {{ }}\n" for i in range(1, levels + 1))
    return out + "bind roles from subject.tags\n"


def test_extends_depth_at_the_limit() -> None:
    who = Entity("user", "x", {"n": 0, "s": "", "tags": frozenset({f"r{limits.MAX_ROLE_DEPTH}"})})
    d = decide(policy("false", extra=_roles(limits.MAX_ROLE_DEPTH)), subject=who)
    assert d.rule_ids == (f"role:r{limits.MAX_ROLE_DEPTH}",)
    errors = refused(policy(extra=_roles(limits.MAX_ROLE_DEPTH + 5)))
    assert [c for c, _, _ in errors] == ["role_chain_too_long"]  # once, at the first too deep


def test_a_relation_walk_deeper_than_the_stack_is_a_depth_limit() -> None:
    # 1,000 hops allowed by the bundle, more Python frames than the interpreter allows: the walk
    # stops with a depth limit, never a RecursionError turned evaluation error or a crash.
    chain = [f"doc:c{i}#parent@doc:c{i + 1}" for i in range(1200)]
    bundle = bundle_from_text(
        policy("subject has view on resource", "owner + viewer + parent->view"),
        [*chain, "doc:c1200#owner@user:alice"],
        settings=Settings(max_depth=1000),
    )
    engine = Engine()
    engine.load(bundle)
    d = engine.check(Request(ALICE, "read", Entity("doc", "c0", {"n": 1})))
    assert (d.effect, d.reason) == (Effect.DENY, Reason.DEPTH_LIMIT)


class _NoEnv:
    def relation(self, object_type: str, object_id: str, relation: str, subject: Entity) -> bool:
        return False

    def role_test(self, role: str) -> ConditionFn:
        return lambda subject, resource, context: False


# ---- past the limits, the code generators still have margin -------------------------------------
def test_code_generation_has_margin_past_the_depth_limit() -> None:
    depth = 2 * limits.MAX_EXPR_DEPTH
    condition = parse(policy("not " * depth + "true"), "p.pdp").items[-1].condition  # type: ignore[union-attr]
    assert condition is not None
    (fn,) = compile_conditions([condition], _NoEnv())
    assert fn(ALICE, DOC, {}) is True


# ---- random policies that reach the limits -----------------------------------------------------
LEAVES = [
    "subject.n == 1",
    "resource.n > 0",
    'subject.tags.contains("a")',
    "has(subject.n)",
    "subject has view on resource",
    "subject has owner on doc(subject.s.lower())",
    'subject.s.lower().starts_with("a")',
    "true",
    "1 in [1, 2]",
]


@st.composite
def conditions(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(LEAVES))
    for _ in range(draw(st.integers(0, limits.MAX_EXPR_DEPTH + 5))):
        kind = draw(st.sampled_from(["not", "and", "or", "run", "method", "eq"]))
        other = draw(st.sampled_from(LEAVES))
        if kind == "not":
            text = f"not ({text})"
        elif kind == "run":
            joiner = draw(st.sampled_from([" or ", " and "]))
            text = joiner.join([f"({text})"] + [other] * draw(st.integers(1, 120)))
        elif kind == "method":
            text = f'subject.tags.contains_any(["a"]) == ({text})'
        elif kind == "eq":
            text = f"({text}) == ({other})"
        else:
            text = f"{other} {kind} ({text})" if draw(st.booleans()) else f"({text}) {kind} {other}"
    return text


@st.composite
def usersets(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(["owner", "viewer", "parent->view"]))
    for _ in range(draw(st.integers(0, limits.MAX_USERSET_DEPTH + 5))):
        op = draw(st.sampled_from(["+", "&", "-"]))
        other = draw(st.sampled_from(["owner", "viewer", "parent->view"]))
        run = f" {op} ".join([other] * draw(st.integers(1, 20)))
        text = f"({text}) {op} {run}" if draw(st.booleans()) else f"{run} {op} ({text})"
    return text


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(conditions(), usersets())
def test_whatever_the_checker_accepts_compiles_and_decides(condition: str, view: str) -> None:
    text = policy(condition, view)
    tree = parse(text, "p.pdp")
    _, diags = check([tree])
    errors = [d for d in diags if d.is_error]
    if errors:
        # Refused only for a limit, at a real place in the file.
        assert {d.code for d in errors} <= LIMIT_CODES, [d.format() for d in errors]
        assert all(d.loc.line > 0 and d.loc.col > 0 for d in errors)
        return
    decide(text)


def test_checker_accepts_only_what_it_measured() -> None:
    # A tree built in code, not parsed, is held to the same limits.
    deep: ast.Expr = ast.Literal(True)
    for _ in range(limits.MAX_EXPR_DEPTH * 20):
        deep = ast.Not(deep)
    rule = ast.RuleDecl("permit", "p", ("read",), ("doc",), deep)
    schema = parse(SCHEMA.replace("VIEW", "owner"), "s.pdp")
    _, diags = check([schema, ast.PolicyFile("r.pdp", (rule,))])
    assert [d.code for d in diags if d.is_error] == ["expression_too_deep"]
