"""One peer on one scenario, in its own process: setup time, memory, agreement, latency.

    python -m benchmarks.peers.worker PEER SCENARIO [--requests N] [--budget S]

Prints one JSON line. Runs inside benchmarks/.peers-venv.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import traceback
from importlib import metadata
from typing import Any

from benchmarks import cases, scenarios
from benchmarks.peers.adapters import ADAPTERS

PACKAGES = {"pdp": "pdp", "cedarpy": "cedarpy", "pycasbin": "pycasbin", "regopy": "regopy"}


def make_scenario(name: str, n_requests: int) -> scenarios.Scenario:
    if name == "rbac":
        return scenarios.rbac(n_requests=n_requests)
    if name == "abac":
        return scenarios.abac(n_requests=n_requests)
    return scenarios.rebac(n_tuples=int(name.split("_")[1]), n_requests=n_requests)


def run(peer: str, scenario: str, n_requests: int, budget: float) -> dict[str, Any]:
    out: dict[str, Any] = {"peer": peer, "scenario": scenario}
    try:
        out["version"] = metadata.version(PACKAGES[peer])
    except metadata.PackageNotFoundError:
        out["version"] = "?"
    sc = make_scenario(scenario, n_requests)
    gc.collect()
    rss0 = cases.rss_bytes()
    t0 = time.perf_counter()
    decide = ADAPTERS[peer][scenario.split("_")[0]](sc)
    out["setup_s"] = time.perf_counter() - t0
    gc.collect()
    out["rss_delta_mb"] = (cases.rss_bytes() - rss0) / 2**20
    # Agreement: every request once, within the budget (slow peers answer a prefix).
    agree = total = 0
    deadline = time.perf_counter() + budget
    wrong: list[str] = []
    for req, want in zip(sc.requests, sc.expected, strict=True):
        got = decide(req)
        total += 1
        if got == want:
            agree += 1
        elif len(wrong) < 3:
            wrong.append(f"{req.subject}:{req.action}:{req.resource} expected {want}")
        if time.perf_counter() > deadline:
            break
    out.update(agree=agree, checked=total, of=len(sc.requests), wrong=wrong)
    timed = sc.requests[:total]
    stats = cases.time_calls(
        decide, timed, budget_s=budget, overhead_ns=cases.timer_overhead_ns(), min_passes=1
    )
    out.update(stats)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("peer", choices=sorted(ADAPTERS))
    ap.add_argument("scenario")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--budget", type=float, default=3.0)
    args = ap.parse_args(argv)
    try:
        result = run(args.peer, args.scenario, args.requests, args.budget)
    except Exception as exc:
        result = {
            "peer": args.peer,
            "scenario": args.scenario,
            "error": f"{type(exc).__name__}: {exc}"[:500],
            "trace": traceback.format_exc(limit=4)[-1500:],
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
