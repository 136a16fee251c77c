"""The peer comparison: `python -m benchmarks.peers.run [--quick] [--only PEER ...]`.

Installs the peers into their own venv (benchmarks/.peers-venv), runs each peer on each scenario
in its own process (benchmarks.peers.worker; Cerbos as a server, benchmarks.peers.cerbos), checks
every answer against the scenario oracle, and writes benchmarks/PEERS.md. Every step is bounded in
time; every server started is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import venv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV = ROOT / "benchmarks" / ".peers-venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".installed"
REQUIREMENTS = ["cedarpy", "pycasbin", "regopy", "cerbos"]
OUT = ROOT / "benchmarks" / "PEERS.md"
RAW = ROOT / "benchmarks" / "results" / "peers.json"

IN_PROCESS = ["pdp", "cedarpy", "pycasbin", "regopy"]
SCENARIOS = {
    "rbac": "RBAC: 50 roles in a 4-level hierarchy, 200 grants, roles from the token",
    "abac": "ABAC: multi-tenant documents (tenant match, clearance >= classification, owner, forbids)",
    "rebac_100000": "ReBAC: `view = viewer + editor + owner + parent->view`, nested groups, folder chains, ~100k tuples",
}
NOTES = {
    (
        "cedarpy",
        "rbac",
    ): "roles as Cedar entity parents; one `permit(principal in Role::...)` per grant",
    ("cedarpy", "abac"): "4 Cedar policies; all 25k entities parsed once into an `Entities` handle",
    (
        "cedarpy",
        "rebac",
    ): "tuples as the entity hierarchy (grant = child-of); `principal in resource`",
    ("pycasbin", "rbac"): "`g` role graph, 200 `p` lines; linear scan over policy lines",
    ("pycasbin", "abac"): "one matcher over object attributes (forbids folded into it)",
    (
        "pycasbin",
        "rebac",
    ): "groups as `g`, folder tree as `g2`, each grant a `p` line (~60k lines, scanned per call)",
    ("regopy", "rbac"): "`graph.reachable` over role parents; query of the package document",
    ("regopy", "abac"): "permit/forbid rules, `allow if { permit; not forbid }`",
    ("regopy", "rebac"): "`graph.reachable` over memberships and the folder chain",
    ("pdp", "rbac"): "our engine in process, cache off",
    ("pdp", "abac"): "our engine in process, cache off",
    ("pdp", "rebac"): "our engine in process, cache off; tuples via `Engine.write_tuples`",
}


def ensure_venv() -> None:
    want = " ".join(REQUIREMENTS) + " -e ."
    if STAMP.exists() and STAMP.read_text(encoding="utf-8") == want:
        return
    if not PY.exists():
        venv.create(VENV, with_pip=True)
    subprocess.run(
        [str(PY), "-m", "pip", "install", "--quiet", *REQUIREMENTS, "-e", str(ROOT)],
        check=True,
        timeout=900,
    )
    STAMP.write_text(want, encoding="utf-8")


def run_worker(
    peer: str, scenario: str, requests: int, budget: float, timeout: float
) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [
                str(PY),
                "-m",
                "benchmarks.peers.worker",
                peer,
                scenario,
                "--requests",
                str(requests),
                "--budget",
                str(budget),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {
            "peer": peer,
            "scenario": scenario,
            "error": f"did not finish setup + measurement within {timeout:.0f} s",
        }
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {
            "peer": peer,
            "scenario": scenario,
            "error": f"worker crashed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}",
        }
    result: dict[str, Any] = json.loads(lines[-1])
    result["wall_s"] = time.perf_counter() - start
    return result


def run_cerbos(requests: int, budget: float, timeout: float) -> list[dict[str, Any]]:
    try:
        proc = subprocess.run(
            [
                str(PY),
                "-m",
                "benchmarks.peers.cerbos",
                "--requests",
                str(requests),
                "--budget",
                str(budget),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return [{"peer": "cerbos", "scenario": s, "error": "timed out"} for s in SCENARIOS]
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"
        return [{"peer": "cerbos", "scenario": s, "error": err} for s in SCENARIOS]
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def _f(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# pdp vs its peers",
        "",
        f"Generated by `make bench-peers` (`python -m benchmarks.peers.run`) on {meta['date']}, "
        f"commit `{meta['commit']}`, Python {meta['python']}, {meta['cpus']} CPUs (shared). "
        "Each peer runs in its own process on the same seeded scenario as ours "
        "(`benchmarks/scenarios.py`), with the scenario expressed in the peer's own language "
        "(`benchmarks/peers/adapters.py`, `benchmarks/peers/cerbos.py`). Every answer is checked "
        "against the scenario's plain-Python oracle before any timing; a peer whose answers "
        "disagree is reported, not ranked. Latency is per decision, each call timed separately, "
        "GC off, timer overhead subtracted. **ratio** = peer median / pdp median from the same run "
        "(above 1: pdp is that many times faster); gRPC rows are compared with our sidecar over "
        "gRPC (`pdp (gRPC)`), in-process rows with our engine in process. Memory: RSS growth of the process during setup "
        "(for Cerbos: the server's RSS). Slow peers answer only a prefix of the requests within "
        "the time budget: *checked* says how many.",
        "",
    ]
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_scenario.setdefault(r["scenario"], []).append(r)
    headline: list[str] = []
    grpc_lines: list[str] = []
    for scenario, title in SCENARIOS.items():
        rows = by_scenario.get(scenario, [])
        ours_in = next((r for r in rows if r["peer"] == "pdp" and "error" not in r), None)
        ours_rpc = next((r for r in rows if r["peer"] == "pdp (gRPC)" and "error" not in r), None)
        lines += [
            f"## {title}",
            "",
            "| peer | version | median µs | p99 µs | ratio | setup s | memory MB | oracle agreement | how |",
            "|---|---|---:|---:|---:|---:|---:|---|---|",
        ]
        best = None
        for r in rows:
            kind = scenario.split("_")[0]
            note = r.get("note") or NOTES.get((r["peer"], kind), "")
            if "error" in r:
                lines.append(
                    f"| {r['peer']} | {r.get('version', '—')} | — | — | — | — | — | "
                    f"**not measured**: {r['error']} | {note} |"
                )
                continue
            ok = r["agree"] == r["checked"]
            rpc = "gRPC" in r["peer"]
            ours = ours_rpc if rpc else ours_in  # in-process vs in-process, gRPC vs gRPC
            ratio = r["median_us"] / ours["median_us"] if ours and ok else None
            if not r["peer"].startswith("pdp") and ratio is not None:
                if rpc:
                    grpc_lines.append(
                        f"- {title.split(':')[0]} over gRPC, same client: Cerbos median "
                        f"{r['median_us']:.0f} µs vs pdp {ours['median_us']:.0f} µs: pdp at "  # type: ignore[index]
                        f"**{1 / ratio:.2f}x** Cerbos's latency (target ≤ 1.1x: "
                        f"{'met' if 1 / ratio <= 1.1 else '**missed**'})"
                    )
                elif best is None or ratio < best[1]:
                    best = (r["peer"], ratio)
            agreement = f"{r['agree']}/{r['checked']} agree" + (
                "" if r["checked"] == r["of"] else f" (of {r['of']}; time budget)"
            )
            if not ok:
                agreement = f"**WRONG** {agreement}: {'; '.join(r['wrong'])}"
            lines.append(
                f"| {r['peer']} | {r.get('version', '?')} | {_f(r['median_us'])} | {_f(r['p99_us'])} | "
                f"{_f(ratio, 1) + 'x' if ratio else '—'} | {_f(r['setup_s'], 2)} | "
                f"{_f(r.get('rss_delta_mb'), 0)} | {agreement} | {note} |"
            )
        lines.append("")
        if best:
            headline.append(
                f"- {title.split(':')[0]} in process: the fastest peer ({best[0]}) is "
                f"**{best[1]:.0f}x** slower than pdp"
                f"{' (target ≥ 10x: met)' if best[1] >= 10 else ' (target ≥ 10x: **missed**)'}"
            )
    tput = _throughput_section(by_scenario)
    if tput:
        lines += tput[1]
        grpc_lines += tput[0]
    headline += grpc_lines
    lines[2:2] = ["## Headline", "", *headline, ""] if headline else []
    return "\n".join(lines) + "\n"


def _throughput_section(
    by_scenario: dict[str, list[dict[str, Any]]],
) -> tuple[list[str], list[str]] | None:
    """Calls/s at 8 and 32 clients, Cerbos vs our sidecar, and our BatchCheck against Cerbos's
    single-check rate: the issue's throughput targets, from the same run."""
    table = [
        "## gRPC throughput, same client threads (calls/s; ratio = pdp / Cerbos, above 1: pdp faster)",
        "",
        "| scenario | clients | Cerbos calls/s | pdp calls/s | ratio | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    headline: list[str] = []
    for scenario, rows in by_scenario.items():
        cerbos = next(
            (r for r in rows if r["peer"] == "cerbos (gRPC)" and "calls_per_s_8" in r), None
        )
        ours = next((r for r in rows if r["peer"] == "pdp (gRPC)" and "calls_per_s_8" in r), None)
        if cerbos is None or ours is None:
            continue
        for n in (8, 32):
            c, p = cerbos[f"calls_per_s_{n}"], ours[f"calls_per_s_{n}"]
            table.append(
                f"| {scenario} | {n} | {c:,.0f} | {p:,.0f} | {p / c:.2f}x | ≥ 1.0x: "
                f"{'met' if p >= c else '**missed**'} |"
            )
        batch = ours.get("batch_decisions_per_s")
        if batch:
            single = cerbos["calls_per_s_8"]
            table.append(
                f"| {scenario} | 8, BatchCheck of 100 | {single:,.0f} (single checks) | "
                f"{batch:,.0f} decisions/s | {batch / single:.1f}x | ≥ 20x: "
                f"{'met' if batch / single >= 20 else '**missed**'} |"
            )
            headline.append(
                f"- {scenario} over gRPC: pdp {ours['calls_per_s_8']:,.0f} / "
                f"{ours['calls_per_s_32']:,.0f} calls/s at 8 / 32 clients vs Cerbos "
                f"{cerbos['calls_per_s_8']:,.0f} / {cerbos['calls_per_s_32']:,.0f}; BatchCheck "
                f"{batch:,.0f} decisions/s = **{batch / single:.1f}x** Cerbos's single-check rate"
            )
    if len(table) == 4:
        return None
    return headline, [*table, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.peers.run", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="shorter budgets")
    ap.add_argument("--only", nargs="*", help="peers to run (default: all)")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument(
        "--render", action="store_true", help="rewrite PEERS.md from the last raw results"
    )
    args = ap.parse_args(argv)
    if args.render:
        raw = json.loads(RAW.read_text(encoding="utf-8"))
        OUT.write_text(markdown(raw["results"], raw["meta"]), encoding="utf-8")
        return 0
    budget = 1.0 if args.quick else 3.0
    ensure_venv()
    peers = args.only or [*IN_PROCESS, "cerbos"]
    results: list[dict[str, Any]] = []
    for scenario in SCENARIOS:
        for peer in (p for p in IN_PROCESS if p in peers):
            # Setup of the slow peers on 100k tuples can take a minute; bound it anyway.
            timeout = 240.0 if scenario.startswith("rebac") else 120.0
            r = run_worker(peer, scenario, args.requests, budget, timeout)
            print(json.dumps({k: v for k, v in r.items() if k != "trace"})[:300], flush=True)
            results.append(r)
    if "cerbos" in peers:
        for r in run_cerbos(args.requests, budget, 600):
            print(json.dumps(r)[:300], flush=True)
            results.append(r)
    from benchmarks.run import source_revision

    commit = source_revision(ROOT)
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    RAW.parent.mkdir(parents=True, exist_ok=True)
    RAW.write_text(json.dumps({"meta": meta, "results": results}, indent=2), encoding="utf-8")
    OUT.write_text(markdown(results, meta), encoding="utf-8")
    print(OUT.read_text(encoding="utf-8"))
    wrong = [r for r in results if "error" not in r and r["agree"] != r["checked"]]
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
