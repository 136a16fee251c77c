"""The benchmark scenarios: seeded, their oracles right, the engine and the baselines agreeing.

Small sizes only: this file runs in `make test`. Hand-computed answers pin each oracle, so an oracle
bug cannot hide behind an engine that shares it.
"""

from __future__ import annotations

import random

import pytest

from benchmarks import baselines, cases, scenarios
from benchmarks.scenarios import OracleMismatch, RebacOracle
from pdp.engine import Engine
from pdp.model import Entity, RelationTuple, Request

T = RelationTuple.parse


def _req(user: str, resource: str, action: str = "read") -> Request:
    rtype, rid = resource.split(":")
    return Request(Entity("user", user), action, Entity(rtype, rid))


# ---- determinism -------------------------------------------------------------------------------


def test_generators_are_seeded() -> None:
    a, b = (
        scenarios.rebac(n_tuples=2_000, n_requests=50),
        scenarios.rebac(n_tuples=2_000, n_requests=50),
    )
    assert a.tuples == b.tuples
    assert a.requests == b.requests
    assert (
        scenarios.rbac(users=50, n_requests=50).policy
        == scenarios.rbac(users=50, n_requests=50).policy
    )
    assert scenarios.rbac(seed=1, users=50).policy != scenarios.rbac(seed=2, users=50).policy


def test_rbac_shape() -> None:
    sc = scenarios.rbac(users=50, n_requests=100)
    data = sc.data
    assert len(data["roles"]) == 50
    assert sum(len(g) for g in data["grants"].values()) == 200
    # Four levels: every level-3 role has a chain of three ancestors.
    role = next(r for r in data["roles"] if r.startswith("r3_"))
    depth = 0
    while data["parents"][role]:
        role = data["parents"][role][0]
        depth += 1
    assert depth == 3


def test_requests_exercise_both_answers() -> None:
    for sc in (
        scenarios.rbac(users=100, n_requests=200),
        scenarios.abac(users=200, docs=500, n_requests=200),
        scenarios.rebac(n_tuples=3_000, n_requests=200),
    ):
        share = sum(sc.expected) / len(sc.expected)
        assert 0.2 < share < 0.8, (sc.name, share)


# ---- oracles against hand-computed answers -----------------------------------------------------


def test_rbac_oracle_follows_inheritance() -> None:
    sc = scenarios.rbac(users=10, n_requests=10)
    data = sc.data
    child = next(r for r in data["roles"] if r.startswith("r3_"))
    parent = data["parents"][child][0]
    t, a = data["grants"][parent][0]
    holder = Entity("user", "x", {"roles": frozenset({child})})
    assert sc.oracle(Request(holder, a, Entity(t, "1")))
    # Inheritance flows down only: the parent does not get the child's own grants.
    own = next(g for g in data["grants"][child] if not _granted(data, parent, g))
    upper = Entity("user", "y", {"roles": frozenset({parent})})
    assert not sc.oracle(Request(upper, own[1], Entity(own[0], "1")))
    assert not sc.oracle(Request(Entity("user", "z", {"roles": frozenset()}), a, Entity(t, "1")))


def _granted(data: dict, role: str, grant: tuple[str, str]) -> bool:
    return grant in data["grants"][role] or any(
        _granted(data, p, grant) for p in data["parents"][role]
    )


def test_abac_oracle() -> None:
    sc = scenarios.abac(users=10, docs=10, n_requests=10)
    alice = Entity("user", "alice", {"tenant": "t1", "clearance": 2})
    doc = Entity(
        "document", "d", {"tenant": "t1", "classification": 2, "owner": "alice", "archived": False}
    )
    assert sc.oracle(Request(alice, "read", doc))
    assert sc.oracle(Request(alice, "update", doc))
    secret = Entity("document", "s", {**doc.attrs, "classification": 3})
    assert not sc.oracle(Request(alice, "read", secret))
    archived = Entity("document", "a", {**doc.attrs, "archived": True})
    assert not sc.oracle(Request(alice, "delete", archived))
    other = Entity("document", "o", {**doc.attrs, "tenant": "t2"})
    assert not sc.oracle(Request(alice, "read", other))
    bob = Entity("user", "bob", {"tenant": "t1", "clearance": 3})
    assert not sc.oracle(Request(bob, "update", doc))


REBAC_TUPLES = [
    T("group:inner#member@user:carol"),
    T("group:middle#member@group:inner#member"),
    T("group:outer#member@group:middle#member"),
    T("folder:root#viewer@group:outer#member"),
    T("folder:sub#parent@folder:root"),
    T("folder:leaf#parent@folder:sub"),
    T("document:doc#parent@folder:leaf"),
    T("document:doc#owner@user:olga"),
    T("document:other#editor@user:ed"),
]


@pytest.mark.parametrize(
    ("user", "resource", "expected"),
    [
        ("carol", "document:doc", True),  # three folders up, three groups down
        ("carol", "folder:sub", True),
        ("olga", "document:doc", True),
        ("olga", "folder:leaf", False),  # owning a document grants nothing on its folder
        ("ed", "document:other", True),
        ("ed", "document:doc", False),
        ("nobody", "document:doc", False),
    ],
)
def test_rebac_oracle_and_baseline_by_hand(user: str, resource: str, expected: bool) -> None:
    req = _req(user, resource)
    assert RebacOracle(REBAC_TUPLES)(req) is expected
    assert baselines.NaiveWalk(REBAC_TUPLES)(req) is expected


def test_rebac_oracle_tracks_writes_and_deletes() -> None:
    oracle = RebacOracle(REBAC_TUPLES)
    grant = T("document:other#viewer@user:carol")
    assert not oracle(_req("carol", "document:other"))
    oracle.add(grant)
    assert oracle(_req("carol", "document:other"))
    oracle.remove(grant)
    assert not oracle(_req("carol", "document:other"))


def test_mismatch_is_reported() -> None:
    sc = scenarios.abac(users=20, docs=20, n_requests=20)
    with pytest.raises(OracleMismatch, match="abac oracle"):
        sc.check_answers(lambda r: True, "always-allow")


# ---- the engine and the baselines agree with the oracles -----------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: scenarios.rbac(users=100, n_requests=300),
        lambda: scenarios.abac(users=200, docs=400, n_requests=300),
        lambda: scenarios.rebac(n_tuples=3_000, n_requests=300),
    ],
    ids=["rbac", "abac", "rebac"],
)
@pytest.mark.parametrize("via", ["bundle", "write"])
def test_engine_and_baseline_agree_with_oracle(make, via: str) -> None:
    sc = make()
    engine, _ = cases.build_engine(sc, via=via)
    sc.check_answers(lambda r: engine.check(r).allowed, "pdp")
    sc.check_answers(baselines.BASELINES[sc.name.split("_")[0]](sc), "baseline")


def test_saas_day_ops_agree_through_writes_and_reload() -> None:
    sc, ops = scenarios.saas_day(n_tuples=3_000, n_ops=3_000, hot=50, write_rate=0.05)
    assert {op.kind for op in ops} == {"check", "write", "delete", "reload"}
    bundle = cases.load_scenario_bundle(sc)
    engine = Engine(cache_ttl=60)
    engine.load(bundle)
    base = baselines.SaasBaseline(sc.tuples)
    for op in ops:
        if op.kind == "check":
            assert engine.check(op.request).allowed is op.expected, op.request
            assert base(op.request) is op.expected, op.request
        elif op.kind == "reload":
            engine.load(bundle)
        elif op.kind == "write":
            engine.write_tuples([op.tuple])
            base.walk.add(op.tuple)
        else:
            engine.write_tuples([], [op.tuple])
            base.walk.remove(op.tuple)
    assert engine.cache_stats()["hits"] > 0


def test_rebac_random_requests_match() -> None:
    """Unsteered requests too: random users on random documents and folders."""
    sc = scenarios.rebac(n_tuples=3_000, n_requests=10)
    engine, _ = cases.build_engine(sc)
    walk = baselines.NaiveWalk(sc.tuples)
    rng = random.Random(5)
    sizes = sc.data["sizes"]
    for _ in range(300):
        kind = rng.choice(("document", "folder"))
        n = sizes["docs"] if kind == "document" else sizes["folders"]
        req = _req(f"u{rng.randrange(sizes['users'])}", f"{kind}:{kind[0]}{rng.randrange(n)}")
        want = sc.oracle(req)
        assert engine.check(req).allowed is want
        assert walk(req) is want


def test_lookup_suite_runs_and_its_answers_agree_with_the_oracle() -> None:
    """benchmarks.lookup on a small scenario: every lookup, brute-force pass, LookupSubjects and
    write is checked against the oracles inside the suite, which records any disagreement."""
    from benchmarks import lookup

    suite = lookup.LookupSuite(quick=True, peers=False)
    suite.sizes, suite.reps, suite.budget, suite.n_writes = [5_000], 1, 0.0, 10
    out = suite.run()
    assert suite.failures == []
    size = out["sizes"]["5k"]
    assert size["lookup"]["ids"] == size["data"]["visible"] > 0
    assert (
        size["lookup_blocked"]["ids"] == size["data"]["visible_blocked"] < size["data"]["visible"]
    )
    assert size["brute_force"]["checks"] == size["data"]["documents"]
    assert all(w["wrong"] == 0 and w["checked"] == 20 for w in size["writes"].values())
    meta = {"mode": "test", "date": "-", "commit": "-", "python": "-", "cpus": 1}
    text = lookup.markdown(
        {"meta": {**meta, "timer_overhead_ns": 0, "seconds": 0}, "results": out, "failures": []}
    )
    assert "LookupResources, whole stream" in text


def test_blocked_oracle_by_hand() -> None:
    oracle = scenarios.RebacBlockedOracle(
        [
            T("group:g#member@user:a"),
            T("folder:f#viewer@group:g#member"),
            T("document:d1#parent@folder:f"),
            T("document:d2#parent@folder:f"),
            T("document:d2#blocked@group:g#member"),
            T("folder:f2#blocked@user:a"),
            T("folder:f2#viewer@user:a"),
        ]
    )
    assert oracle(_req("a", "document:d1"))
    assert not oracle(_req("a", "document:d2"))
    assert not oracle(_req("a", "folder:f2"))
    assert oracle(_req("a", "folder:f"))
