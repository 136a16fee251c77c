"""In-process engine benchmarks (pytest-benchmark), grouped parse, compile, decide, cached, memory.

Each decision benchmark is paired with its plain-Python baseline in the same group, so one run
gives both. Every engine is checked against the scenario oracle before it is timed.

    .venv/bin/python -m pytest benchmarks/bench_engine.py --benchmark-only
    PDP_BENCH_1M=1 ... to add the 1M-tuple ReBAC cases (slow to build)

A round times one pass over the scenario's requests; per-decision figures are the round time
divided by the request count (pytest-benchmark reports per round). `benchmarks.run` times each
call separately instead, for p90/p99.
"""

from __future__ import annotations

import os
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks import baselines, cases, scenarios
from benchmarks.scenarios import Scenario
from pdp.bundle import load_bundle
from pdp.engine import Engine
from pdp.model import Request
from policy_lang.checker import check
from policy_lang.parser import parse

SIZES = [100_000, 1_000_000] if os.environ.get("PDP_BENCH_1M") else [100_000]
_built: dict[str, Scenario] = {}


def _scenario(name: str) -> Scenario:
    if name not in _built:
        if name == "rbac":
            _built[name] = scenarios.rbac()
        elif name == "abac":
            _built[name] = scenarios.abac()
        else:
            _built[name] = scenarios.rebac(n_tuples=int(name.split("_")[1]))
    return _built[name]


DECISIONS = ["rbac", "abac", *(f"rebac_{n}" for n in SIZES)]


def _pass(decide: Callable[[Request], object], requests: list[Request]) -> Callable[[], None]:
    def run() -> None:
        for r in requests:
            decide(r)

    return run


def _bench(benchmark: Any, decide: Callable[[Request], object], sc: Scenario) -> None:
    benchmark.extra_info["decisions_per_round"] = len(sc.requests)
    benchmark.pedantic(_pass(decide, sc.requests), rounds=20, warmup_rounds=1)


# ---- decide: engine (cache off) and baseline -----------------------------------------------------


@pytest.mark.parametrize("name", DECISIONS)
def test_decide_engine(benchmark: Any, name: str) -> None:
    sc = _scenario(name)
    benchmark.group = f"decide {name}"
    engine, _ = cases.build_engine(sc, cache_ttl=0)
    sc.check_answers(lambda r: engine.check(r).allowed, "pdp")
    _bench(benchmark, engine.check, sc)


@pytest.mark.parametrize("name", DECISIONS)
def test_decide_baseline(benchmark: Any, name: str) -> None:
    sc = _scenario(name)
    benchmark.group = f"decide {name}"
    base = baselines.BASELINES[name.split("_")[0]](sc)
    sc.check_answers(base, "baseline")
    _bench(benchmark, base, sc)


# ---- cached: every call a hit ---------------------------------------------------------------------


@pytest.mark.parametrize("name", DECISIONS)
def test_cached_engine(benchmark: Any, name: str) -> None:
    sc = _scenario(name)
    benchmark.group = "cached"
    engine, _ = cases.build_engine(sc, cache_ttl=3600)
    sc.check_answers(lambda r: engine.check(r).allowed, "pdp cached")  # fills the cache
    _bench(benchmark, engine.check, sc)


def test_cached_rbac_baseline(benchmark: Any) -> None:
    sc = _scenario("rbac")
    benchmark.group = "cached"
    _bench(benchmark, baselines.rbac_baseline(sc), sc)


# ---- parse and compile -----------------------------------------------------------------------------


def test_parse_saas(benchmark: Any) -> None:
    benchmark.group = "parse"
    root = Path(__file__).resolve().parent.parent / "bundles/saas/policies"
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(root.glob("*.pdp")))
    benchmark(parse, text)


@pytest.fixture(scope="module")
def many_rules() -> str:
    return cases.many_rules_policy(10_000)


def test_parse_10k_rules(benchmark: Any, many_rules: str) -> None:
    benchmark.group = "compile 10k rules"
    benchmark.pedantic(parse, (many_rules,), rounds=1, iterations=1)


def test_check_10k_rules(benchmark: Any, many_rules: str) -> None:
    benchmark.group = "compile 10k rules"
    tree = parse(many_rules)
    benchmark.pedantic(check, ([tree],), rounds=1, iterations=1)


def test_compile_10k_rules(benchmark: Any, many_rules: str) -> None:
    """load_bundle (files, parse, check) + Engine.load (compile): the whole path, target ≤ 2 s."""
    benchmark.group = "compile 10k rules"
    with tempfile.TemporaryDirectory() as tmp:
        scenarios.write_bundle(Path(tmp), "many", many_rules)

        def compile_all() -> None:
            Engine(cache_ttl=0).load(load_bundle(tmp))

        benchmark.pedantic(compile_all, rounds=1, iterations=1)


# ---- tuples: load time and bytes per tuple ---------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_load_tuples(benchmark: Any, n: int) -> None:
    """Tuples through `Engine.write_tuples` after a schema-only bundle; bytes/tuple by tracemalloc."""
    sc = _scenario(f"rebac_{n}")
    benchmark.group = "tuples"
    schema = cases.load_scenario_bundle(sc, with_tuples=False)

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        engine = Engine(cache_ttl=0)
        engine.load(schema)
        return (), {"engine": engine}

    def load(engine: Engine) -> None:
        engine.write_tuples(sc.tuples)

    benchmark.pedantic(load, setup=setup, rounds=1)
    engine = Engine(cache_ttl=0)
    engine.load(schema)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine.write_tuples(sc.tuples)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    benchmark.extra_info["tuples"] = len(sc.tuples)
    benchmark.extra_info["bytes_per_tuple"] = round(held / len(sc.tuples))
    sc.check_answers(lambda r: engine.check(r).allowed, "pdp")
