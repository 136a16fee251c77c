"""Check latency with stuck audit subscribers: 0 vs 16 real `SubscribeAudit` streams that never read.

`python -m benchmarks.audit_fanout [--bundle DIR] [--calls N] [--seconds S]`. Starts `pdp serve` in
a subprocess (real token keys, an `audit:read` client), measures Check p50/p90/p99 with one client
and throughput with 8, first with no subscriber, then with 16 streams whose clients never read
(each on its own channel, as 16 stuck consumers would be), then again with none: all in one run, so
the ratio is what the stuck subscribers cost. Writes benchmarks/results/audit_fanout.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import httpx

from benchmarks.grpc_load import RESOURCE, SUBJECT, percentile, start_server_http, throughput
from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.client import check_request

HERE = Path(__file__).resolve().parent
STUCK = 16


def _metric(http: str, name: str) -> float:
    text = httpx.get(f"http://{http}/metrics", timeout=10).text
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _wait_metric(http: str, name: str, want: float, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while _metric(http, name) != want:
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} never reached {want}")
        time.sleep(0.05)


def _latency(stub: Any, request: pdp_pb2.CheckRequest, n: int) -> list[float]:
    for _ in range(200):
        stub.Check(request)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        stub.Check(request)
        samples.append(time.perf_counter() - t0)
    return sorted(samples)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: what a phase costs the server, which the
    machine's other load moves far less than it moves wall-clock latency."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stats(samples: list[float]) -> dict[str, float]:
    return {
        "p50_us": percentile(samples, 0.5) * 1e6,
        "p90_us": percentile(samples, 0.9) * 1e6,
        "p99_us": percentile(samples, 0.99) * 1e6,
    }


def measure(bundle: str, calls: int, seconds: float) -> dict[str, Any]:
    from pdp.tokens import admin_cli

    check = check_request(SUBJECT, "read", RESOURCE)
    phases: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as data:
        proc, target, http = start_server_http(
            bundle, data, ("--http-listen", "127.0.0.1:0", "--dev-keys")
        )
        stuck: list[tuple[grpc.Channel, Any]] = []
        try:
            secret = admin_cli.create_client(
                f"{data}/tokens.db", "bench-audit", tenant="*", scopes=("audit:read",)
            )
            resp = httpx.post(
                f"http://{http}/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=("bench-audit", secret),
                timeout=10,
            )
            resp.raise_for_status()
            metadata = (("authorization", f"Bearer {resp.json()['access_token']}"),)
            with grpc.insecure_channel(target) as ch:
                stub = pdp_pb2_grpc.AuthorizerStub(ch)

                def phase(name: str) -> None:
                    dropped = _metric(http, "pdp_audit_dropped_events_total")
                    cpu0 = _cpu_seconds(proc.pid)
                    lat = _latency(stub, check, calls)
                    cpu_us = (_cpu_seconds(proc.pid) - cpu0) / (calls + 200) * 1e6
                    rate = asyncio.run(throughput(target, lambda s: s.Check(check), 8, seconds))
                    phases[name] = {
                        **_stats(lat),
                        "server_cpu_us_per_call": cpu_us,
                        "calls_per_s_8_clients": rate,
                        "dropped_during": _metric(http, "pdp_audit_dropped_events_total") - dropped,
                    }
                    p = phases[name]
                    print(
                        f"  {name:<22} p50 {p['p50_us']:7.0f}  p90 {p['p90_us']:7.0f}  "
                        f"p99 {p['p99_us']:7.0f} us   server cpu {cpu_us:5.0f} us/call   "
                        f"8 clients {rate:6.0f}/s   "
                        f"dropped {p['dropped_during']:.0f}",
                        flush=True,
                    )

                phase("0 subscribers")
                for _ in range(STUCK):
                    sc = grpc.insecure_channel(target)
                    # the call starts at once; its client never asks for a message
                    call = pdp_pb2_grpc.AdminStub(sc).SubscribeAudit(
                        pdp_pb2.SubscribeAuditRequest(), metadata=metadata
                    )
                    stuck.append((sc, call))
                _wait_metric(http, "pdp_audit_subscribers", STUCK)
                phase(f"{STUCK} stuck, filling")
                # A stuck stream takes ~4 MB (the client's flow-control window), then its
                # server-side queue fills; only then is it skipped. Decide until every stuck
                # subscriber drops every event (the drop counter grows by STUCK per decision).
                batch = pdp_pb2.BatchCheckRequest(
                    items=[pdp_pb2.BatchCheckItem(request=check) for _ in range(1000)]
                )
                for _ in range(60):
                    before = _metric(http, "pdp_audit_dropped_events_total")
                    stub.BatchCheck(batch, timeout=120)
                    time.sleep(0.05)  # the dispatcher's next pass counts the batch's drops
                    grew = _metric(http, "pdp_audit_dropped_events_total") - before
                    if grew >= STUCK * len(batch.items):
                        break
                phase(f"{STUCK} stuck, blocked")
                for sc, call in stuck:
                    call.cancel()
                    sc.close()
                stuck.clear()
                _wait_metric(http, "pdp_audit_subscribers", 0)
                phase("0 subscribers again")
        finally:
            for sc, call in stuck:
                call.cancel()
                sc.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            if proc.stdout is not None:
                proc.stdout.close()
    base, loaded = phases["0 subscribers"], phases[f"{STUCK} stuck, blocked"]
    return {
        "calls": calls,
        "seconds": seconds,
        "phases": phases,
        "ratio_p50": loaded["p50_us"] / base["p50_us"],
        "ratio_p99": loaded["p99_us"] / base["p99_us"],
        "ratio_throughput": loaded["calls_per_s_8_clients"] / base["calls_per_s_8_clients"],
        "ratio_server_cpu": loaded["server_cpu_us_per_call"] / base["server_cpu_us_per_call"],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Check over gRPC, one client ({result['calls']} calls per phase) and 8 clients "
        f"({result['seconds']:g} s per phase); stuck = a `SubscribeAudit` stream whose client "
        "never reads. Target: p50 and p99 with 16 stuck within 1.1x of none.",
        "",
        "| phase | p50 µs | p90 µs | p99 µs | server CPU µs/call | calls/s (8 clients) "
        "| audit events dropped |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, p in result["phases"].items():
        lines.append(
            f"| {name} | {p['p50_us']:.0f} | {p['p90_us']:.0f} | {p['p99_us']:.0f} | "
            f"{p['server_cpu_us_per_call']:.0f} | {p['calls_per_s_8_clients']:.0f} | "
            f"{p['dropped_during']:.0f} |"
        )
    lines += [
        "",
        f"16 stuck (blocked) / 0: p50 {result['ratio_p50']:.2f}x, p99 {result['ratio_p99']:.2f}x, "
        f"server CPU per call {result['ratio_server_cpu']:.2f}x, "
        f"throughput {result['ratio_throughput']:.2f}x.",
    ]
    return "\n".join(lines)


def suite(quick: bool) -> dict[str, Any]:
    """Entry point for `python -m benchmarks.run`."""
    result = measure("bundles/saas", 1000 if quick else 5000, 1.0 if quick else 3.0)
    return {**result, "markdown": markdown(result)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", default="bundles/saas")
    ap.add_argument("--calls", type=int, default=5000, help="latency samples per phase")
    ap.add_argument("--seconds", type=float, default=3.0, help="throughput time per phase")
    args = ap.parse_args(argv)
    result = measure(args.bundle, args.calls, args.seconds)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "audit_fanout.json").write_text(json.dumps(result, indent=2))
    print()
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
