"""BatchCheck of 100 against single Check, over real gRPC, each figure a ratio to the single-call rate
measured on the same server in the same run.

`python -m benchmarks.batch [--before DIR] [--rounds N] [--seconds S] [--out benchmarks/BATCH.md]`.
Starts `pdp serve` in a subprocess; `--before DIR` starts a second one from another checkout (a git
worktree of the commit to compare with, with its `pdp/_proto` built) with this same interpreter, and
the two are measured in alternating rounds so that noise on the machine hits both alike. Reports
the median and the spread over rounds of: Check calls/s at 8 clients, and decisions/s for a batch of
100 at 1 and 8 clients, for two batch shapes (one request a hundred times; one subject and a hundred
resources); writes them as a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc

BATCH = 100


def entity(type_: str, id_: str, attrs: dict[str, Any]) -> pdp_pb2.Entity:
    msg = pdp_pb2.Entity(type=type_, id=id_)
    msg.attributes.update(attrs)
    return msg


SUBJECT = entity("user", "alice", {"tenant": "acme", "roles": ["editor"], "clearance": 1})


def resource(i: int) -> pdp_pb2.Entity:
    return entity("document", f"d{i}", {"tenant": "acme", "owner": "bob", "classification": 0})


CHECK = pdp_pb2.CheckRequest(subject=SUBJECT, action="read", resource=resource(1))
SHAPES = {
    "same request x100": pdp_pb2.BatchCheckRequest(
        items=[pdp_pb2.BatchCheckItem(correlation_id=str(i), request=CHECK) for i in range(BATCH)]
    ),
    "1 subject, 100 resources": pdp_pb2.BatchCheckRequest(
        items=[
            pdp_pb2.BatchCheckItem(
                correlation_id=str(i),
                request=pdp_pb2.CheckRequest(subject=SUBJECT, action="read", resource=resource(i)),
            )
            for i in range(BATCH)
        ]
    ),
}


def start_server(
    bundle: str, data_dir: str, pythonpath: str = ""
) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pdp.sidecar.command",
            "--bundle",
            bundle,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir,
            "--no-watch",
            "--log-level",
            "ERROR",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=pythonpath or None,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("pdp: serving grpc="):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split("grpc=")[1].split()[0]


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    if proc.stdout is not None:
        proc.stdout.close()


WARMUP = 20


async def rate(
    target: str, call: Callable[[Any], Awaitable[Any]], clients: int, seconds: float
) -> tuple[int, float]:
    """Calls completed with `clients` in flight on one channel, and the seconds they took (after
    WARMUP calls first)."""
    async with grpc.aio.insecure_channel(target) as ch:
        stub = pdp_pb2_grpc.AuthorizerStub(ch)
        for _ in range(WARMUP):
            await call(stub)
        count = 0
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < end:
                await call(stub)
                count += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return count, time.perf_counter() - t0


def same_answers(target: str) -> str:
    """Each batch's results equal single Checks of its items (decision ids aside)."""
    with grpc.insecure_channel(target) as ch:
        stub = pdp_pb2_grpc.AuthorizerStub(ch)
        for batch in SHAPES.values():
            got = stub.BatchCheck(batch).results
            for item, result in zip(batch.items, got, strict=True):
                one = stub.Check(item.request)
                a, b = result.response, one
                if (a.decision, a.reason, list(a.rule_ids), list(a.errors)) != (
                    b.decision,
                    b.reason,
                    list(b.rule_ids),
                    list(b.errors),
                ):
                    raise SystemExit(f"batch and single Check disagree:\n{a}\n{b}")
        return f"{pdp_pb2.Effect.Name(one.decision)} rules={list(one.rule_ids)}"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(pid: int, target: str, seconds: float) -> dict[str, tuple[float, float]]:
    """One round on one server: for Check at 8 clients and each batch shape at 1 and 8 clients,
    (decisions/s, server CPU seconds per decision). CPU per decision is what a busy machine
    disturbs least: the wall-clock rate also counts what other processes take from this one."""

    def one(
        call: Callable[[Any], Awaitable[Any]], clients: int, per_call: int
    ) -> tuple[float, float]:
        cpu0 = cpu_seconds(pid)
        count, elapsed = asyncio.run(rate(target, call, clients, seconds))
        cpu = cpu_seconds(pid) - cpu0  # the warm-up calls' too
        return count * per_call / elapsed, cpu / ((count + WARMUP) * per_call)

    out = {"check 8c": one(lambda s: s.Check(CHECK), 8, 1)}
    for shape, batch in SHAPES.items():
        for clients in (1, 8):
            out[f"{shape} {clients}c"] = one(lambda s, b=batch: s.BatchCheck(b), clients, BATCH)
    return out


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """Median, min and max over rounds (few rounds: the extremes are the honest spread)."""
    return statistics.median(values), min(values), max(values)


def table(runs: dict[str, list[dict[str, tuple[float, float]]]]) -> list[str]:
    lines = [
        "| server | measure | decisions/s median | min | max | / Check 8c | server CPU µs per "
        "decision (median) | / Check |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for server, rounds in runs.items():
        check = statistics.median(r["check 8c"][0] for r in rounds)
        check_cpu = statistics.median(r["check 8c"][1] for r in rounds)
        for key in rounds[0]:
            med, lo, hi = quantiles([r[key][0] for r in rounds])
            cpu = statistics.median(r[key][1] for r in rounds)
            lines.append(
                f"| {server} | {key} | {med:,.0f} | {lo:,.0f} | {hi:,.0f} | {med / check:.1f}x "
                f"| {cpu * 1e6:.1f} | {check_cpu / cpu:.1f}x |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", default="bundles/saas")
    ap.add_argument("--before", default="", help="a checkout to measure as the baseline")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    ap.add_argument("--out", default="", help="write the table to this markdown file")
    args = ap.parse_args(argv)
    bundle = str(Path(args.bundle).resolve())
    servers: dict[str, tuple[subprocess.Popen[str], str]] = {}
    with tempfile.TemporaryDirectory() as data:
        try:
            if args.before:
                Path(data, "before").mkdir()
                servers["before"] = start_server(
                    bundle, str(Path(data, "before")), str(Path(args.before).resolve())
                )
            Path(data, "after").mkdir()
            servers["after"] = start_server(bundle, str(Path(data, "after")))
            for name, (_, target) in servers.items():
                print(f"{name}: {target} answers {same_answers(target)}")
            runs: dict[str, list[dict[str, tuple[float, float]]]] = {name: [] for name in servers}
            for i in range(args.rounds):
                for name, (proc, target) in servers.items():
                    runs[name].append(measure(proc.pid, target, args.seconds))
                    print(
                        f"round {i + 1} {name}: "
                        + ", ".join(
                            f"{k} {v:,.0f}/s {c * 1e6:.1f}us"
                            for k, (v, c) in runs[name][-1].items()
                        )
                    )
        finally:
            for proc, _ in servers.values():
                stop(proc)
    lines = table(runs)
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
