"""Load generator over real gRPC: Check and BatchCheck against an Echo floor measured in the same run.

`python -m benchmarks.grpc_load [--bundle DIR] [--seconds S]`. Starts `pdp serve` in a subprocess on
an ephemeral loopback port; reports p50/p90/p99 with one client, throughput at 8 and 32 concurrent
clients, and decisions/s for BatchCheck of 100, each as a ratio to Echo (same payload size, no work).

`--tokens`: Check with a `subject_token` (obtained from the server's own /oauth/token) against Check
with the same subject spelled out, same bundle and resource: latency and throughput ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.client import check_request
from pdp.model import Entity

SUBJECT = Entity(
    "user", "alice", {"tenant": "acme", "roles": frozenset({"editor"}), "clearance": 1}
)
RESOURCE = Entity("document", "d1", {"tenant": "acme", "owner": "bob", "classification": 0})


def start_server(
    bundle: str, data_dir: str, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[str], str]:
    proc, target, _ = start_server_http(bundle, data_dir, extra)
    return proc, target


def start_server_http(
    bundle: str, data_dir: str, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[str], str, str]:
    """The server, its gRPC target and its HTTP address ("" when the HTTP side is off)."""
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
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("pdp: serving grpc="):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    http = line.split("http=")[1].split()[0] if " http=" in line else ""
    return proc, line.split("grpc=")[1].split()[0], http


def percentile(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


def latency(target: str, calls: dict[str, Callable[[Any], Any]], n: int) -> dict[str, list[float]]:
    """One client, the RPCs interleaved in short blocks so that noise hits them alike."""
    out: dict[str, list[float]] = {name: [] for name in calls}
    with grpc.insecure_channel(target) as ch:
        stubs = pdp_pb2_grpc.AuthorizerStub(ch)
        for call in calls.values():
            for _ in range(200):
                call(stubs)
        for _ in range(n // 100):
            for name, call in calls.items():
                samples = out[name]
                for _ in range(100):
                    t0 = time.perf_counter()
                    call(stubs)
                    samples.append(time.perf_counter() - t0)
    return {name: sorted(v) for name, v in out.items()}


async def throughput(
    target: str, call: Callable[[Any], Awaitable[Any]], clients: int, seconds: float
) -> float:
    async with grpc.aio.insecure_channel(target) as ch:
        stub = pdp_pb2_grpc.AuthorizerStub(ch)
        for _ in range(50):
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
        return count / (time.perf_counter() - t0)


def _row(name: str, v: list[float]) -> str:
    return (
        f"  {name:<26} {percentile(v, 0.5) * 1e3:7.3f} {percentile(v, 0.9) * 1e3:7.3f} "
        f"{percentile(v, 0.99) * 1e3:7.3f}"
    )


def _ratio(name: str, a: list[float], b: list[float], note: str = "") -> str:
    return (
        f"  {name:<26} {percentile(a, 0.5) / percentile(b, 0.5):7.2f} "
        f"{percentile(a, 0.9) / percentile(b, 0.9):7.2f} "
        f"{percentile(a, 0.99) / percentile(b, 0.99):7.2f}{note}"
    )


def token_mode(args: argparse.Namespace) -> int:
    """Check with a token vs Check with the identical explicit subject."""
    import httpx

    from pdp.tokens import admin_cli

    with tempfile.TemporaryDirectory() as data:
        proc, target, http = start_server_http(
            args.bundle, data, ("--http-listen", "127.0.0.1:0", "--dev-keys")
        )
        try:
            secret = admin_cli.create_client(
                f"{data}/tokens.db", "bench", tenant="acme", roles=("editor",), scopes=("docs",)
            )
            resp = httpx.post(
                f"http://{http}/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=("bench", secret),
                timeout=10,
            )
            resp.raise_for_status()
            token = resp.json()["access_token"]
            # what the sidecar derives from the token's claims, spelled out by the caller
            subject = Entity(
                "user",
                "bench",
                {
                    "tenant": "acme",
                    "roles": frozenset({"editor"}),
                    "scopes": frozenset({"docs"}),
                    "client_id": "bench",
                },
            )
            explicit = check_request(subject, "read", RESOURCE)
            with_token = pdp_pb2.CheckRequest(
                subject_token=token, action="read", resource=explicit.resource
            )
            with grpc.insecure_channel(target) as ch:
                stub = pdp_pb2_grpc.AuthorizerStub(ch)
                a, b = stub.Check(explicit), stub.Check(with_token)
            assert (a.decision, list(a.rule_ids)) == (b.decision, list(b.rule_ids)), (a, b)
            print(
                f"both answer {pdp_pb2.Effect.Name(a.decision)} rules={list(a.rule_ids)}; "
                f"token {len(token)} bytes, request {with_token.ByteSize()} vs "
                f"{explicit.ByteSize()} bytes"
            )
            lat = latency(
                target,
                {
                    "check (explicit subject)": lambda s: s.Check(explicit),
                    "check (subject_token)": lambda s: s.Check(with_token),
                },
                args.calls,
            )
            print("\none client, latency (ms)      p50     p90     p99")
            for name, v in lat.items():
                print(_row(name, v))
            t, e = lat["check (subject_token)"], lat["check (explicit subject)"]
            print(_ratio("token/explicit ratio", t, e, "   (target <= 1.2)"))
            print("\nthroughput (calls/s)")
            for n in (8,):
                er = asyncio.run(throughput(target, lambda s: s.Check(explicit), n, args.seconds))
                tr = asyncio.run(throughput(target, lambda s: s.Check(with_token), n, args.seconds))
                print(
                    f"  {n:>2} clients: explicit {er:8.0f}  token {tr:8.0f}  ratio {tr / er:5.2f}"
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
            if proc.stdout is not None:
                proc.stdout.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", default="bundles/saas")
    ap.add_argument("--target", default="", help="use a running sidecar instead of starting one")
    ap.add_argument("--seconds", type=float, default=3.0, help="per throughput measurement")
    ap.add_argument("--calls", type=int, default=3000, help="latency samples per RPC")
    ap.add_argument(
        "--tokens", action="store_true", help="Check with a subject_token vs an explicit subject"
    )
    args = ap.parse_args(argv)
    if args.tokens:
        return token_mode(args)

    check = check_request(SUBJECT, "read", RESOURCE)
    echo = pdp_pb2.EchoRequest(payload=b"x" * check.ByteSize())
    batch = pdp_pb2.BatchCheckRequest(
        items=[pdp_pb2.BatchCheckItem(correlation_id=str(i), request=check) for i in range(100)]
    )
    proc = None
    with tempfile.TemporaryDirectory() as data:
        if args.target:
            target = args.target
        else:
            proc, target = start_server(args.bundle, data)
        try:
            with grpc.insecure_channel(target) as ch:
                r = pdp_pb2_grpc.AuthorizerStub(ch).Check(check)
            print(
                f"check answers {pdp_pb2.Effect.Name(r.decision)} "
                f"{pdp_pb2.Reason.Name(r.reason)} rules={list(r.rule_ids)}"
            )
            lat = latency(
                target,
                {"echo": lambda s: s.Echo(echo), "check": lambda s: s.Check(check)},
                args.calls,
            )
            print("\none client, latency (ms)      p50     p90     p99")
            for name, v in lat.items():
                print(
                    f"  {name:<26} {percentile(v, 0.5) * 1e3:7.3f} {percentile(v, 0.9) * 1e3:7.3f} "
                    f"{percentile(v, 0.99) * 1e3:7.3f}"
                )
            e, c = lat["echo"], lat["check"]
            print(
                f"  check/echo ratio           {percentile(c, 0.5) / percentile(e, 0.5):7.2f} "
                f"{percentile(c, 0.9) / percentile(e, 0.9):7.2f} "
                f"{percentile(c, 0.99) / percentile(e, 0.99):7.2f}   (targets p50 <= 1.15, "
                "p99 <= 1.5)"
            )
            print("\nthroughput (calls/s)")
            echo_rates = {}
            for n in (8, 32):
                er = asyncio.run(throughput(target, lambda s: s.Echo(echo), n, args.seconds))
                cr = asyncio.run(throughput(target, lambda s: s.Check(check), n, args.seconds))
                echo_rates[n] = er
                print(
                    f"  {n:>2} clients: echo {er:8.0f}  check {cr:8.0f}  ratio {cr / er:5.2f}"
                    "   (target >= 0.9)"
                )
            print("\nBatchCheck of 100 (decisions/s)")
            for n in (1, 8):
                br = asyncio.run(throughput(target, lambda s: s.BatchCheck(batch), n, args.seconds))
                floor = echo_rates[8]
                print(
                    f"  {n:>2} clients: {br * 100:9.0f} decisions/s = {br * 100 / floor:5.1f}x "
                    f"the 8-client echo call rate   (target >= 40x)"
                )
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)
                if proc.stdout is not None:
                    proc.stdout.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
