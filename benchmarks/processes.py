"""Check throughput of `pdp serve --processes 1` and `--processes 2` against the Cerbos PDP, same
client, same run: `python -m benchmarks.processes [--seconds S] [--rounds R] [--client-procs P]`.

Run it with the peers' interpreter (`benchmarks/.peers-venv/bin/python`, made by
`make bench-peers`): it has the Cerbos SDK; the Cerbos binary is the npm package's
(benchmarks.peers.cerbos). Without them Cerbos is reported as not measured, with the reason.

Each of the three servers answers the peers' seeded RBAC and ABAC scenarios (benchmarks.scenarios),
every answer checked against the scenario's oracle before any timing. A client is a thread with a
connection of its own (a channel with its own subchannel pool): the kernel spreads connections,
not calls, over the processes of `--processes 2`, so one shared channel would reach only one of
them. The clients are spread over `--client-procs` processes so that the client's own GIL does
not cap the rate. Rounds interleave the targets (each round: every target at 8, then 32 clients),
so drift on the shared machine hits them alike; a figure is the median over rounds. Latency
percentiles are of every call of every round at that concurrency.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import scenarios
from benchmarks.grpc_load import percentile
from benchmarks.scenarios import Scenario
from pdp.model import Request

ROOT = Path(__file__).resolve().parents[1]
# The servers run on the project's own interpreter when there is one: the peers' may lag behind
# the project's dependencies; the client needs the peers' (the Cerbos SDK).
SERVER_PYTHON = ROOT / ".venv" / "bin" / "python"
OUT = ROOT / "benchmarks" / "PROCESSES.md"
CLIENTS = (8, 32)
N_REQUESTS = 500


def make_scenario(name: str) -> Scenario:
    return (scenarios.rbac if name == "rbac" else scenarios.abac)(n_requests=N_REQUESTS)


# ---- deciders: one per client thread, each on a connection of its own
def pdp_decider(target: str) -> tuple[Callable[[Request], bool], Any]:
    import grpc

    from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
    from pdp.client import check_request

    channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
    stub = pdp_pb2_grpc.AuthorizerStub(channel)
    allow = pdp_pb2.EFFECT_ALLOW

    def decide(req: Request) -> bool:
        r = stub.Check(check_request(req.subject, req.action, req.resource), timeout=30)
        return bool(r.decision == allow)

    return decide, channel


def decider(kind: str, target: str, scenario: str) -> tuple[Callable[[Request], bool], Any]:
    if kind == "cerbos":
        from benchmarks.peers.cerbos import cerbos_decider

        return cerbos_decider(target, scenario)  # a channel of its own per call
    return pdp_decider(target)


# ---- the client
def _client_proc(
    kind: str, target: str, scenario: str, threads: int, slot0: int, seconds: float, start: float
) -> tuple[int, list[float]]:
    """`threads` clients from slot `slot0`, each with its own connection, calling from the
    wall-clock `start` for `seconds`: their call count and every call's latency."""
    requests = make_scenario(scenario).requests
    made = [decider(kind, target, scenario) for _ in range(threads)]
    for decide, _ in made:  # connect and warm up before the clock starts
        for k in range(20):
            decide(requests[k])
    counts = [0] * threads
    lat: list[list[float]] = [[] for _ in range(threads)]
    end = start + seconds

    def worker(t: int) -> None:
        decide = made[t][0]
        i = slot0 + t
        step = 997  # a stride through the requests, different per client
        samples, n = lat[t], 0
        while time.time() < start:
            time.sleep(0.0005)
        while time.time() < end:
            t0 = time.perf_counter()
            decide(requests[i % len(requests)])
            samples.append(time.perf_counter() - t0)
            i += step
            n += 1
        counts[t] = n

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    for _, channel in made:
        channel.close()
    return sum(counts), [x for s in lat for x in s]


def measure(
    pool: Any, kind: str, target: str, scenario: str, clients: int, seconds: float, procs: int
) -> tuple[float, list[float]]:
    """Calls per second of `clients` clients spread over `procs` client processes."""
    share = [clients // procs + (1 if k < clients % procs else 0) for k in range(procs)]
    start = time.time() + 2.0 + 0.05 * clients  # time for every client to connect and warm up
    jobs = [
        pool.apply_async(_client_proc, (kind, target, scenario, n, sum(share[:k]), seconds, start))
        for k, n in enumerate(share)
        if n
    ]
    total, lat = 0, []
    for job in jobs:
        n, samples = job.get(timeout=seconds + 120)
        total += n
        lat += samples
    return total / seconds, lat


# ---- the servers
def agree(kind: str, target: str, sc: Scenario) -> int:
    decide, channel = decider(kind, target, sc.name)
    try:
        wrong = sum(decide(r) != want for r, want in zip(sc.requests, sc.expected, strict=True))
    finally:
        channel.close()
    return len(sc.requests) - wrong


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU the processes have used so far (Linux; 0 where it cannot be read)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (the 14th and 15th fields)
    return total / os.sysconf("SC_CLK_TCK")


def start_pdp(
    sc: Scenario, processes: int, root: Path, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[str], str, list[int]]:
    """`pdp serve --processes N` on a free loopback port, as benchmarks.grpc_load starts it."""
    home = root / f"pdp-{sc.name}-{processes}"
    scenarios.write_bundle(home / "bundle", sc.name, sc.policy, sc.tuples)
    python = str(SERVER_PYTHON) if SERVER_PYTHON.exists() else sys.executable
    proc = subprocess.Popen(
        [
            python,
            "-m",
            "pdp.sidecar.command",
            "--bundle",
            str(home / "bundle"),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(home / "data"),
            "--no-watch",
            "--log-level",
            "ERROR",
            "--processes",
            str(processes),
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("pdp: serving grpc="):
        proc.kill()
        raise SystemExit(f"pdp serve did not start: {line!r}")
    pids = [proc.pid]  # the parent, and its children when it has any
    if "pids=" in line:
        pids += [int(p) for p in line.split("pids=")[1].split()[0].split(",")]
    return proc, line.split("grpc=")[1].split()[0], pids


def stop_pdp(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"scenarios": {}, "cerbos": None}
    try:
        import cerbos  # noqa: F401  # the SDK: only in the peers' interpreter

        from benchmarks.peers.cerbos import CerbosServer, cerbos_binary

        binary, version = cerbos_binary()
        results["cerbos"] = version
    except Exception as exc:  # reported, not hidden
        binary = None
        results["cerbos_error"] = f"{type(exc).__name__}: {exc}"[:300]
    ctx = mp.get_context("spawn")  # never fork a process that has gRPC loaded
    root = Path(tempfile.mkdtemp(prefix="pdp-processes-"))
    with ctx.Pool(args.client_procs) as pool:
        for name in args.scenarios:
            sc = make_scenario(name)
            targets: dict[str, tuple[str, str, list[int]]] = {}
            stops: list[Callable[[], None]] = []
            try:
                for n in (1, 2):
                    proc, target, pids = start_pdp(sc, n, root, tuple(args.server_args.split()))
                    stops.append(lambda p=proc: stop_pdp(p))
                    targets[f"pdp --processes {n}"] = ("pdp", target, pids)
                if binary is not None:
                    from benchmarks.peers.cerbos import ABAC_POLICY, rbac_policies

                    policies = (
                        rbac_policies(sc) if name == "rbac" else {"document.yaml": ABAC_POLICY}
                    )
                    server = CerbosServer(binary, policies)
                    stops.append(server.stop)
                    targets[f"Cerbos {results['cerbos']}"] = (
                        "cerbos",
                        server.target,
                        [server.proc.pid],
                    )
                checked = {t: agree(k, tgt, sc) for t, (k, tgt, _) in targets.items()}
                rates: dict[str, dict[int, list[float]]] = {
                    t: {c: [] for c in CLIENTS} for t in targets
                }
                cpu: dict[str, dict[int, list[float]]] = {
                    t: {c: [] for c in CLIENTS} for t in targets
                }
                lats: dict[str, dict[int, list[float]]] = {
                    t: {c: [] for c in CLIENTS} for t in targets
                }
                for r in range(args.rounds):
                    order = list(targets) if r % 2 == 0 else list(reversed(targets))
                    for t in order:
                        kind, tgt, pids = targets[t]
                        for c in CLIENTS:
                            before = cpu_seconds(pids)
                            rate, lat = measure(
                                pool, kind, tgt, name, c, args.seconds, args.client_procs
                            )
                            # includes the clients' warm-up calls: a slight overestimate, alike
                            used = cpu_seconds(pids) - before
                            cpu[t][c].append(1e6 * used / max(1.0, rate * args.seconds))
                            rates[t][c].append(rate)
                            lats[t][c] += lat
                            print(
                                f"{name} round {r + 1} {t} {c} clients: {rate:,.0f}/s", flush=True
                            )
                results["scenarios"][name] = {
                    t: {
                        "agree": checked[t],
                        "of": len(sc.requests),
                        **{
                            str(c): {
                                "rates": rates[t][c],
                                "median": statistics.median(rates[t][c]),
                                "server_cpu_us_per_call": statistics.median(cpu[t][c]),
                                **_pcts(sorted(lats[t][c])),
                            }
                            for c in CLIENTS
                        },
                    }
                    for t in targets
                }
            finally:
                for stop in stops:
                    stop()
    shutil.rmtree(root, ignore_errors=True)
    return results


def _pcts(v: list[float]) -> dict[str, float]:
    if not v:
        return {}
    return {f"p{int(p * 100)}_ms": percentile(v, p) * 1e3 for p in (0.5, 0.9, 0.99)}


def markdown(results: dict[str, Any], commit: str) -> str:
    meta = results["meta"]
    cerbos = next((t for t in next(iter(results["scenarios"].values()), {}) if "Cerbos" in t), "")
    lines = [
        "# Check throughput: `pdp serve --processes 1` vs `--processes 2` vs the Cerbos PDP",
        "",
        f"Generated by `benchmarks/.peers-venv/bin/python -m benchmarks.processes --write` on "
        f"{meta['when']}, commit `{commit}`, Python {meta['python']}, {meta['cpus']} CPUs shared "
        "with other work (the load average was well above 2 at times: figures move between runs).",
        "",
        "What was measured: Check over gRPC, the peers' seeded RBAC and ABAC scenarios "
        "(benchmarks/scenarios.py, 500 requests in rotation; Cerbos with the same policies as "
        "benchmarks/PEERS.md), every answer of every server checked against the scenario's oracle "
        "first. The same client for all three, in the same run: each client a thread with a gRPC "
        f"connection of its own, the clients spread over {meta['client_procs']} client processes, "
        "calling as fast as answers come. A client per connection matters: SO_REUSEPORT spreads "
        "connections, not calls, so one shared channel would reach one process of "
        f"`--processes 2`. {meta['rounds']} rounds of {meta['seconds']:g} s per target and "
        "concurrency, the targets interleaved (forward, then backward); **calls/s** is the median "
        "over rounds (min-max beside it); latency percentiles are over every call of every round; "
        "**server CPU** is the user+system time of the server's processes (for pdp: the parent "
        "and every child) per call, warm-up included. The decision cache is on (the default), as "
        "in PEERS.md. The client runs on the same 2 cores as the server: its cost is in every "
        "figure alike.",
        "",
    ]
    if results.get("cerbos_error"):
        lines += [f"**Cerbos not measured**: {results['cerbos_error']}", ""]
    verdicts: list[str] = []
    for name, by_target in results["scenarios"].items():
        lines += [
            f"## {name}",
            "",
            "| target | clients | calls/s (median) | min-max | ratio to Cerbos | p50 ms | p90 ms "
            "| p99 ms | server CPU µs/call | answers |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for target, r in by_target.items():
            for c in CLIENTS:
                f = r[str(c)]
                base = by_target.get(cerbos, {}).get(str(c), {}).get("median")
                ratio = f"{f['median'] / base:.2f}x" if base else "—"
                lines.append(
                    f"| {target} | {c} | {f['median']:,.0f} | {min(f['rates']):,.0f}-"
                    f"{max(f['rates']):,.0f} | {ratio} | {f.get('p50_ms', 0):.2f} | "
                    f"{f.get('p90_ms', 0):.2f} | {f.get('p99_ms', 0):.2f} | "
                    f"{f['server_cpu_us_per_call']:.0f} | {r['agree']}/{r['of']} agree |"
                )
        lines.append("")
        two, one = by_target.get("pdp --processes 2"), by_target.get("pdp --processes 1")
        for c in CLIENTS:
            if two and one:
                gain = two[str(c)]["median"] / one[str(c)]["median"]
                verdicts.append(
                    f"- {name}, {c} clients: `--processes 2` = {gain:.2f}x `--processes 1`"
                )
            if two and cerbos in by_target:
                ratio = two[str(c)]["median"] / by_target[cerbos][str(c)]["median"]
                met = "met" if ratio >= 1.0 else "missed"
                verdicts.append(
                    f"- {name}, {c} clients: `--processes 2` at {ratio:.2f}x Cerbos's calls/s "
                    f"(target ≥ 1.0x: **{met}**)"
                )
            if two and cerbos in by_target:
                mine = two[str(c)]["server_cpu_us_per_call"]
                theirs = by_target[cerbos][str(c)]["server_cpu_us_per_call"]
                verdicts.append(
                    f"  - server CPU per call: pdp {mine:.0f} µs vs Cerbos {theirs:.0f} µs "
                    f"({mine / theirs:.2f}x)"
                )
    lines += [
        "## Targets",
        "",
        *verdicts,
        "",
        "## Reading the figures",
        "",
        "On 2 cores that the client shares, every server here is CPU-bound, the client included: "
        "a call costs the client's CPU plus the server's, and the two cores are all there is. "
        "`--processes 2` lets pdp use the second core (the gain over `--processes 1` above), "
        "which Cerbos, a Go server, does already; past that the rate is set by the CPU each "
        "call costs. As long as a Check costs pdp's server more CPU than it costs Cerbos's "
        "(the server CPU lines above), more processes cannot bring pdp level with Cerbos on "
        "this machine; on a machine with idle cores the processes would add capacity until the "
        "client saturates. The way past Cerbos here is a cheaper call (the Check path, "
        "`pdp/sidecar/grpc/`, `pdp/engine/`) or fewer calls (BatchCheck: PEERS.md measures "
        "22-29x Cerbos's single-check rate in decisions/s).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--scenarios", nargs="+", default=["rbac", "abac"])
    ap.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    ap.add_argument("--server-args", default="", help="more `pdp serve` flags, e.g. `--workers 4`")
    ap.add_argument("--write", action="store_true", help=f"write {OUT.name}")
    ap.add_argument("--from-json", type=Path, default=None, help="render a run's raw figures")
    args = ap.parse_args(argv)
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
        OUT.write_text(markdown(results, _commit()), encoding="utf-8")
        return 0
    results = run(args)
    results["meta"] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "client_procs": args.client_procs,
    }
    text = json.dumps(results, indent=1)
    if args.json is not None:
        args.json.write_text(text)
    print(text)
    if args.write:
        OUT.write_text(markdown(results, _commit()), encoding="utf-8")
    return 0


def _commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    return out.stdout.strip() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
