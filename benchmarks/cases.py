"""The benchmark cases shared by bench_engine.py (pytest-benchmark) and run.py (the suite runner).

Builds engines from scenarios through either load path, the 10,000-rule bundle, and the
measurement helpers (per-call timing with percentiles; memory per tuple).
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.scenarios import Scenario, write_bundle
from pdp.bundle import Bundle, load_bundle
from pdp.engine import Engine
from pdp.model import RelationTuple, Request


def load_scenario_bundle(scenario: Scenario, *, with_tuples: bool = True) -> Bundle:
    with tempfile.TemporaryDirectory(prefix=f"pdp-bench-{scenario.name}-") as tmp:
        tuples = scenario.tuples if with_tuples else ()
        return load_bundle(write_bundle(Path(tmp), scenario.name, scenario.policy, tuples))


def build_engine(
    scenario: Scenario, *, cache_ttl: float = 0, via: str = "write"
) -> tuple[Engine, float]:
    """An engine holding the scenario; returns it with the tuple load time in seconds.

    via="bundle": tuples go through the bundle's JSONL files (parse, validate, index).
    via="write": a schema-only bundle, then `Engine.write_tuples` (validate, index).
    """
    engine = Engine(cache_ttl=cache_ttl)
    start = time.perf_counter()
    if via == "bundle":
        engine.load(load_scenario_bundle(scenario))
        return engine, time.perf_counter() - start
    engine.load(load_scenario_bundle(scenario, with_tuples=False))
    start = time.perf_counter()
    if scenario.tuples:
        engine.write_tuples(scenario.tuples)
    return engine, time.perf_counter() - start


def many_rules_policy(n_rules: int = 10_000, *, seed: int = 7) -> str:
    """A bundle of `n_rules` permit/forbid rules over 20 types by 25 actions, with conditions."""
    rng = random.Random(seed)
    types = [f"t{i}" for i in range(20)]
    actions = [f"a{i}" for i in range(25)]
    lines = [
        "type user { attributes { tenant: string, level: int, tags: set<string> } }",
        *(
            f"type {t} {{\n  attributes {{ tenant: string, level: int, owner: string }}\n"
            f"  actions {', '.join(actions)}\n}}"
            for t in types
        ),
    ]
    for i in range(n_rules):
        t, a = rng.choice(types), rng.choice(actions)
        cond = rng.choice(
            (
                f"subject.level >= {rng.randint(0, 9)} and resource.tenant == subject.tenant",
                f'resource.owner == subject.id or "t{i % 50}" in subject.tags',
                f"resource.level < {rng.randint(1, 9)} and not (subject.level == {i % 10})",
            )
        )
        effect = "forbid" if i % 10 == 0 else "permit"
        lines.append(f"{effect} r{i}: {a} on {t} when {cond}")
    return "\n".join(lines) + "\n"


# ---- timing ------------------------------------------------------------------------------------

_clock = time.perf_counter_ns


def timer_overhead_ns() -> float:
    samples = []
    for _ in range(20_000):
        t0 = _clock()
        samples.append(_clock() - t0)
    return statistics.median(samples)


def time_calls(
    fn: Callable[[Request], object],
    requests: Sequence[Request],
    *,
    budget_s: float,
    overhead_ns: float,
    min_passes: int = 1,
) -> dict[str, float]:
    """Time every call separately (GC off, as timeit does); median/p90/p99 in µs per decision."""
    for r in requests[: min(len(requests), 500)]:  # warm up
        fn(r)
    samples: list[int] = []
    gc.collect()
    gc.disable()
    try:
        deadline = time.perf_counter() + budget_s
        passes = 0
        while passes < min_passes or time.perf_counter() < deadline:
            for r in requests:
                t0 = _clock()
                fn(r)
                samples.append(_clock() - t0)
            passes += 1
    finally:
        gc.enable()
    return summarize(samples, overhead_ns)


def summarize(samples_ns: list[int], overhead_ns: float = 0.0) -> dict[str, float]:
    samples_ns.sort()
    n = len(samples_ns)

    def pct(p: float) -> float:
        return max(samples_ns[min(n - 1, int(p * n))] - overhead_ns, 0.0) / 1_000

    return {
        "median_us": pct(0.5),
        "p90_us": pct(0.9),
        "p99_us": pct(0.99),
        "mean_us": max(sum(samples_ns) / n - overhead_ns, 0.0) / 1_000,
        "calls": n,
    }


# ---- memory -------------------------------------------------------------------------------------


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def tuple_memory(scenario: Scenario, *, traced: bool) -> dict[str, Any]:
    """Load the scenario's tuples into a fresh engine via write_tuples; time and memory.

    With `traced`, tracemalloc counts the bytes the store holds (slower: time is then not
    reported from that run). Without, the RSS delta is the measure and the load is timed.
    The tuple list itself is built before measuring and is not counted.
    """
    engine = Engine(cache_ttl=0)
    engine.load(load_scenario_bundle(scenario, with_tuples=False))
    tuples: list[RelationTuple] = scenario.tuples
    gc.collect()
    if traced:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        engine.write_tuples(tuples)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        held = after - before
        return {"tuples": len(tuples), "bytes": held, "bytes_per_tuple": held / len(tuples)}
    rss0 = rss_bytes()
    start = time.perf_counter()
    engine.write_tuples(tuples)
    seconds = time.perf_counter() - start
    gc.collect()
    rss1 = rss_bytes()
    return {
        "tuples": len(tuples),
        "load_s": seconds,
        "rss_delta_bytes": rss1 - rss0,
        "rss_bytes_per_tuple": (rss1 - rss0) / len(tuples),
        "rss_total_bytes": rss1,
        "_engine": engine,
    }
