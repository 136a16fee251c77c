"""Instructions per decision, counted by valgrind's callgrind: the same figure on a busy machine as
on an idle one, so ratios to the baselines can be compared across runs (wall-clock on a shared
2-core box swings by 2x). Each figure is (run with N passes - run with 0 passes) / decisions.

`python -m benchmarks.instructions` prints a Markdown table; it needs `valgrind` on PATH.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Callable

# (label, scenario, engine mode, baseline) -> measured in one driver process each
CASES = [
    ("rbac", "rbac", "uncached"),
    ("rbac baseline", "rbac", "baseline"),
    ("cache hit (rbac requests)", "rbac", "cached"),
    ("abac", "abac", "uncached"),
    ("abac baseline", "abac", "baseline"),
    ("rebac 20k tuples", "rebac", "uncached"),
    ("rebac baseline (naive walk)", "rebac", "baseline"),
]
PASSES = 5


def _decider(scenario: str, mode: str) -> tuple[Callable[[object], object], list[object]]:
    from benchmarks import baselines, scenarios
    from pdp import Engine, bundle_from_text

    if scenario == "rbac":
        sc = scenarios.rbac(users=200, n_requests=200)
    elif scenario == "abac":
        sc = scenarios.abac(n_requests=200)
    else:
        sc = scenarios.rebac(n_tuples=20_000, n_requests=200)
    if mode == "baseline":
        return baselines.BASELINES[scenario](sc), list(sc.requests)
    engine = Engine(cache_ttl=60 if mode == "cached" else 0)
    engine.load(bundle_from_text(sc.policy, []))
    engine.write_tuples(sc.tuples)
    return engine.check, list(sc.requests)  # type: ignore[return-value]


def _drive(scenario: str, mode: str, passes: int) -> None:
    decide, requests = _decider(scenario, mode)
    for r in requests:  # warm: caches filled, code paths compiled
        decide(r)
    for _ in range(passes):
        for r in requests:
            decide(r)


def _count(scenario: str, mode: str, passes: int) -> int:
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--drive",
            scenario,
            mode,
            str(passes),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    m = re.search(r"Collected : ([\d,]+)", out.stderr)
    if m is None:
        raise RuntimeError(f"callgrind printed no total:\n{out.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def measure() -> dict[str, int]:
    results = {}
    for label, scenario, mode in CASES:
        base = _count(scenario, mode, 0)
        full = _count(scenario, mode, PASSES)
        results[label] = (full - base) // (PASSES * 200)
        print(f"  {label}: {results[label]} instructions per decision", flush=True)
    return results


def table(r: dict[str, int]) -> str:
    rows = [
        ("rbac", "rbac baseline", 5.0),
        ("cache hit (rbac requests)", "rbac baseline", 3.0),
        ("abac", "abac baseline", 8.0),
        ("rebac 20k tuples", "rebac baseline (naive walk)", 1.0),
    ]
    lines = [
        "| case | instructions | baseline | ratio | target | met |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for case, base, target in rows:
        ratio = r[case] / r[base]
        lines.append(
            f"| {case} | {r[case]:,} | {r[base]:,} | {ratio:.2f}x | ≤ {target:g}x | {'yes' if ratio <= target else '**no**'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--drive", nargs=3, metavar=("SCENARIO", "MODE", "PASSES"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.drive:
        _drive(args.drive[0], args.drive[1], int(args.drive[2]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: no instruction counts")
        return 0
    print(table(measure()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
