"""The benchmark suite runner: `python -m benchmarks.run --quick|--full`.

Checks every engine and baseline against the scenario oracles, times decisions per call (median,
p90, p99) next to their plain-Python baselines, compiles a 10,000-rule bundle, measures tuple load
time and memory, runs the SaaS day, and calls the gRPC and token suites when they are present.
Writes benchmarks/results/results.json and RESULTS.md (and, with --full, benchmarks/LATEST.md).
Exits non-zero only on wrong answers or crashes, never on timings.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import baselines, cases, external_suites, scenarios
from benchmarks.report import fmt, markdown, row_line
from benchmarks.scenarios import OracleMismatch, Scenario

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# (what, target ratio or bound, unit); a missed target is reported, never an exit code.
TARGETS = {
    "cached_rbac": 3.0,  # a cache hit vs the RBAC baseline
    "rbac": 5.0,
    "abac": 8.0,
    "rebac_100k": 1.0,
    "rebac_1m": 2.0,
    "compile_10k_rules_s": 2.0,
    "load_1m_s": 10.0,
    "bytes_per_tuple": 300.0,
}


class Suite:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.budget = 0.6 if quick else 3.0  # seconds of timing per case
        self.overhead = cases.timer_overhead_ns()
        self.rows: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}
        self.failures: list[str] = []
        self.scenarios: dict[str, Scenario] = {}

    # ---- helpers
    def verify(self, scenario: Scenario, decide: Callable[[Any], bool], who: str) -> bool:
        try:
            scenario.check_answers(decide, who)
            return True
        except OracleMismatch as exc:
            self.failures.append(str(exc))
            print(f"WRONG ANSWERS: {exc}", file=sys.stderr)
            return False

    def time(self, fn: Callable[[Any], object], requests: list[Any]) -> dict[str, float]:
        return cases.time_calls(fn, requests, budget_s=self.budget, overhead_ns=self.overhead)

    def pair(
        self,
        group: str,
        name: str,
        scenario: Scenario,
        engine_fn: Callable[[Any], object],
        base: dict[str, float],
        base_name: str,
        target: float | None,
        note: str = "",
    ) -> None:
        ours = self.time(engine_fn, scenario.requests)
        ratio = ours["median_us"] / base["median_us"] if base["median_us"] else None
        row = {
            "group": group,
            "case": name,
            **ours,
            "baseline": base_name,
            "baseline_median_us": base["median_us"],
            "baseline_p99_us": base["p99_us"],
            "ratio": ratio,
            "target_ratio": target,
            "met": None if target is None or ratio is None else ratio <= target,
            "verified": True,
            "note": note,
        }
        self.rows.append(row)
        print(row_line(row), flush=True)

    # ---- parts
    def decisions(self) -> None:
        sizes = [100_000] if self.quick else [100_000, 1_000_000]
        made: list[Scenario] = [scenarios.rbac(), scenarios.abac()]
        made += [scenarios.rebac(n_tuples=n, n_requests=2_000) for n in sizes]
        base_stats: dict[str, dict[str, float]] = {}
        for sc in made:
            kind = sc.name.split("_")[0]
            base = baselines.BASELINES[kind](sc)
            self.verify(sc, base, f"{kind} baseline")
            base_stats[sc.name] = self.time(base, sc.requests)
            self.rows.append(
                {
                    "group": "baseline",
                    "case": f"{sc.name} baseline",
                    **base_stats[sc.name],
                    "verified": True,
                    "note": _BASE_NOTES[kind],
                }
            )
            print(row_line(self.rows[-1]), flush=True)
            engine, _ = cases.build_engine(sc, cache_ttl=0)
            ok = self.verify(sc, lambda r, e=engine: e.check(r).allowed, f"pdp ({sc.name})")
            if ok:
                self.pair(
                    "decide",
                    sc.name,
                    sc,
                    engine.check,
                    base_stats[sc.name],
                    f"{sc.name} baseline",
                    TARGETS.get(sc.name),
                    f"{len(sc.tuples)} tuples" if sc.tuples else "",
                )
            # Cache hits: the same requests, answered once before timing.
            cached, _ = cases.build_engine(sc, cache_ttl=3600)
            for r in sc.requests:
                cached.check(r)
            ok = self.verify(sc, lambda r, e=cached: e.check(r).allowed, f"pdp cached ({sc.name})")
            if ok:
                rb = base_stats["rbac"]
                self.pair(
                    "cached",
                    f"cached_{sc.name}",
                    sc,
                    cached.check,
                    rb,
                    "rbac baseline",
                    TARGETS["cached_rbac"],
                    "every call a hit; ratio to the RBAC baseline",
                )
            del engine, cached
            gc.collect()
            self.scenarios[sc.name] = sc

    def parse_and_compile(self) -> None:
        from policy_lang.checker import check
        from policy_lang.parser import parse

        saas = "\n".join(
            p.read_text(encoding="utf-8")
            for p in sorted((HERE.parent / "bundles/saas/policies").glob("*.pdp"))
        )
        reqs = [saas] * 20
        stats = cases.time_calls(parse, reqs, budget_s=self.budget / 2, overhead_ns=self.overhead)
        self.rows.append(
            {
                "group": "parse",
                "case": "parse saas policy (3 files)",
                **stats,
                "verified": True,
                "note": f"{len(saas)} chars",
            }
        )
        print(row_line(self.rows[-1]), flush=True)
        text = cases.many_rules_policy(10_000)
        from pdp.engine import Engine

        t0 = t1 = t2 = 0.0
        if not self.quick:  # the stage breakdown parses twice; --quick times load_bundle only
            t0 = time.perf_counter()
            tree = parse(text, "many.pdp")
            t1 = time.perf_counter()
            check([tree])
            t2 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            scenarios.write_bundle(Path(tmp), "many", text)
            from pdp.bundle import load_bundle

            t3 = time.perf_counter()
            bundle = load_bundle(tmp)
            t4 = time.perf_counter()
        engine = Engine(cache_ttl=0)
        t5 = time.perf_counter()
        engine.load(bundle)
        t6 = time.perf_counter()
        info = {
            "rules": 10_000,
            "chars": len(text),
            "parse_s": (t1 - t0) or None,
            "check_s": (t2 - t1) or None,
            "load_bundle_s": t4 - t3,
            "engine_load_s": t6 - t5,
            "total_s": (t4 - t3) + (t6 - t5),
            "entries": len(engine.snapshot.entries) if engine.snapshot else 0,
        }
        info["met"] = info["total_s"] <= TARGETS["compile_10k_rules_s"]
        self.extra["compile_10k"] = info
        print(
            f"compile 10k rules: parse {fmt(info['parse_s'])}s check {fmt(info['check_s'])}s "
            f"load_bundle {info['load_bundle_s']:.2f}s engine.load {info['engine_load_s']:.2f}s "
            f"total {info['total_s']:.2f}s",
            flush=True,
        )

    def memory(self) -> None:
        sizes = [100_000] if self.quick else [100_000, 1_000_000]
        out = {}
        for n in sizes:
            # A fresh process per size, so RSS is not flattered by memory freed earlier.
            out[scenarios._size_label(n)] = _child(
                ["--memory-child", str(n)] + (["--bundle-path"] if not self.quick else [])
            )
            print(f"tuples {n}: {out[scenarios._size_label(n)]}", flush=True)
        self.extra["tuple_load"] = out

    def saas_day(self) -> None:
        n_ops = 10_000 if self.quick else 50_000
        sc, ops = scenarios.saas_day(n_ops=n_ops)
        with tempfile.TemporaryDirectory() as tmp:
            from pdp.bundle import load_bundle

            bundle = load_bundle(
                scenarios.write_bundle(Path(tmp), "saas_day", sc.policy, sc.tuples)
            )
        from pdp.engine import Engine

        engine = Engine(cache_ttl=2.0)
        engine.load(bundle)
        base = baselines.SaasBaseline(sc.tuples)
        results: dict[str, Any] = {}
        for who in ("pdp", "baseline"):
            checks: list[int] = []
            writes: list[int] = []
            reloads: list[int] = []
            wrong = 0
            clock = time.perf_counter_ns
            gc.collect()
            start = clock()
            for op in ops:
                t0 = clock()
                if op.kind == "check":
                    allowed = (
                        engine.check(op.request).allowed
                        if who == "pdp"  # type: ignore[arg-type]
                        else base(op.request)
                    )  # type: ignore[arg-type]
                    checks.append(clock() - t0)
                    wrong += allowed != op.expected
                elif op.kind == "reload":
                    if who == "pdp":
                        engine.load(bundle)
                    reloads.append(clock() - t0)
                else:
                    if who == "pdp":
                        if op.kind == "write":
                            engine.write_tuples([op.tuple])  # type: ignore[list-item]
                        else:
                            engine.write_tuples([], [op.tuple])  # type: ignore[list-item]
                    else:
                        (base.walk.add if op.kind == "write" else base.walk.remove)(op.tuple)  # type: ignore[arg-type]
                    writes.append(clock() - t0)
            total = clock() - start
            if wrong:
                self.failures.append(f"saas_day: {who} gave {wrong}/{len(checks)} wrong answers")
            results[who] = {
                "checks": cases.summarize(checks, self.overhead),
                "ops": len(ops),
                "ops_per_s": len(ops) / (total / 1e9),
                "writes_median_us": cases.summarize(writes, self.overhead)["median_us"]
                if writes
                else None,
                "reload_ms": reloads[0] / 1e6 if reloads else None,
                "wrong": wrong,
            }
        stats = engine.cache_stats()
        results["pdp"]["cache_hit_rate"] = stats["hits"] / max(1, stats["hits"] + stats["misses"])
        ours, theirs = results["pdp"]["checks"], results["baseline"]["checks"]
        row = {
            "group": "saas_day",
            "case": f"saas_day ({n_ops} ops)",
            **ours,
            "baseline": "saas baseline (no cache)",
            "baseline_median_us": theirs["median_us"],
            "baseline_p99_us": theirs["p99_us"],
            "ratio": ours["median_us"] / theirs["median_us"] if theirs["median_us"] else None,
            "target_ratio": None,
            "met": None,
            "verified": not any(r["wrong"] for r in results.values()),
            "note": f"cache hit rate {results['pdp']['cache_hit_rate']:.0%}; "
            f"reload {results['pdp']['reload_ms']:.1f} ms; "
            f"{results['pdp']['ops_per_s']:.0f} ops/s vs {results['baseline']['ops_per_s']:.0f}",
        }
        self.rows.append(row)
        self.extra["saas_day"] = results
        print(row_line(row), flush=True)

    def external(self) -> None:
        """The sibling suites (grpc, tokens, audit), each reported under its own name."""
        RESULTS.mkdir(exist_ok=True)  # a fresh checkout has none; suites write their JSON here
        for name, argv in external_suites.commands(self.quick).items():
            self.extra[name] = external_suites.run_suite(name, argv, self.quick, self.failures)
        self.extra["lookup"] = external_suites.run_suite("lookup", [], self.quick, self.failures)


_BASE_NOTES = {
    "rbac": "frozenset of granting roles per (type, action), inheritance flattened",
    "abac": "dict of per-action rules, tenant check first",
    "rebac": "naive recursive top-down tuple walk",
}


def _child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=HERE.parent,
        check=False,
    )
    if proc.returncode != 0:
        return {"crashed": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def memory_child(n: int, bundle_path: bool) -> dict[str, Any]:
    """In a fresh process: tuples of the ReBAC scenario loaded by write_tuples (and the bundle)."""
    t0 = time.perf_counter()
    sc = scenarios.rebac(n_tuples=n, n_requests=200)
    gen_s = time.perf_counter() - t0
    out: dict[str, Any] = {"generate_s": gen_s}
    measured = cases.tuple_memory(sc, traced=False)
    engine = measured.pop("_engine")
    out["write_path"] = measured
    ok = all(
        engine.check(r).allowed == want for r, want in zip(sc.requests, sc.expected, strict=True)
    )
    out["verified"] = ok
    del engine
    gc.collect()
    out["traced"] = cases.tuple_memory(sc, traced=True)
    if bundle_path:
        gc.collect()
        with tempfile.TemporaryDirectory() as tmp:
            scenarios.write_bundle(Path(tmp), sc.name, sc.policy, sc.tuples)
            from pdp.bundle import load_bundle
            from pdp.engine import Engine

            t1 = time.perf_counter()
            bundle = load_bundle(tmp)
            t2 = time.perf_counter()
            e = Engine(cache_ttl=0)
            e.load(bundle)
            t3 = time.perf_counter()
        out["bundle_path"] = {
            "load_bundle_s": t2 - t1,
            "engine_load_s": t3 - t2,
            "total_s": t3 - t1,
            "rss_total_bytes": cases.rss_bytes(),
        }
    return out


def _commit() -> str:
    """HEAD, marked when the code measured differs from it (others may be mid-change)."""
    return source_revision(HERE.parent)


def source_revision(root: Path) -> str:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], capture_output=True, text=True, cwd=root, check=False
            ).stdout.strip()
        except OSError:
            return ""

    head = git("rev-parse", "--short", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "pdp", "policy_lang")
    return f"{head} + uncommitted changes to pdp/policy_lang" if dirty else head


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the ≤2-minute CI smoke (default)")
    mode.add_argument("--full", action="store_true", help="everything, including 1M tuples")
    ap.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--bundle-path", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--skip-external", action="store_true", help="do not run grpc/token suites")
    args = ap.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.bundle_path)))
        return 0
    quick = not args.full
    started = time.perf_counter()
    suite = Suite(quick)
    for part in (
        suite.decisions,
        suite.saas_day,
        suite.parse_and_compile,
        suite.memory,
        *(() if args.skip_external else (suite.external,)),
    ):
        try:
            part()
        except Exception:
            suite.failures.append(f"{part.__name__} crashed:\n{traceback.format_exc()}")
            traceback.print_exc()
    result = {
        "meta": {
            "mode": "quick" if quick else "full",
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": _commit(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "timer_overhead_ns": suite.overhead,
            "seconds": time.perf_counter() - started,
        },
        "rows": suite.rows,
        "extra": suite.extra,
        "failures": suite.failures,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "results.json").write_text(
        json.dumps(result, indent=2, default=str), encoding="utf-8"
    )
    md = markdown(result)
    (RESULTS / "RESULTS.md").write_text(md, encoding="utf-8")
    if not quick:
        (HERE / "LATEST.md").write_text(md, encoding="utf-8")
    print()
    print(md)
    print(f"({result['meta']['seconds']:.0f} s)")
    return 1 if suite.failures else 0


if __name__ == "__main__":
    sys.exit(main())
