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
    sc: Scenario, processes: int, root: Path
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
                    proc, target, pids = start_pdp(sc, n, root)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--scenarios", nargs="+", default=["rbac", "abac"])
    ap.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    args = ap.parse_args(argv)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
