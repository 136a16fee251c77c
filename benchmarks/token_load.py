"""HTTP load generator for the token endpoint: client_credentials tokens/s and latency percentiles.

    .venv/bin/python -m benchmarks.token_load --duration 10 --concurrency 32 --procs 1
    .venv/bin/python -m benchmarks.token_load --target tokens      # the token app alone
    .venv/bin/python -m benchmarks.token_load --compare /tmp/tok_before --rounds 3
    .venv/bin/python -m benchmarks.token_load --url http://127.0.0.1:8181 --client-id ID \
        --client-secret SECRET

Without `--url` it starts its own server in a separate process, on an ephemeral port with a fresh
key directory, SQLite file and client (HTTP basic auth, secret stored as its SHA-256): by default
one `pdp serve` (`--target pdp`: the token app mounted in the sidecar's HTTP side, on uvicorn's
thread beside gRPC, with token events going to the audit hub), or with `--target tokens` the
token app alone on uvicorn's main thread (the setup an older run reported 3,845 tokens/s on).
`--compare DIR` runs the same load against the code in DIR (a `git worktree` of an older commit)
and the code here, alternating, and reports both from one run. Each server's cached verification
of a token seen before (`Verifier.verify`, a hit) is timed too.

The generator speaks HTTP/1.1 keep-alive over raw asyncio streams, so that the client is not the
bottleneck it would be with a full client library; each response's status and body are still
checked.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

HERE = Path(__file__).resolve().parent.parent  # the code tree this file is in


def _serve(state_dir: str, port: int, http: str) -> None:
    import uvicorn

    from pdp.tokens import TokenConfig, build_tokens

    runtime = build_tokens(
        TokenConfig(
            key_dir=Path(state_dir) / "keys",
            db_path=Path(state_dir) / "tokens.db",
            issuer=f"http://127.0.0.1:{port}",
            audience="pdp-load",
        )
    )
    # "auto" uses httptools and uvloop when installed (uvicorn[standard]), else h11 and asyncio.
    uvicorn.run(
        runtime.app(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="none",
        http=http,
        loop="auto",
        access_log=False,
    )


async def _worker(
    host: str, port: int, request: bytes, deadline: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if status != 200 or b"access_token" not in body:
                errors.append(status)
    finally:
        writer.close()


def _load_proc(
    url: str,
    client_id: str,
    secret: str,
    duration: float,
    concurrency: int,
    out: multiprocessing.Queue[tuple[list[float], list[int]]],
) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    body = urlencode({"grant_type": "client_credentials"}).encode()
    auth = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    request = (
        f"POST /oauth/token HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Basic {auth}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors: list[int] = []

    async def main() -> None:
        deadline = time.perf_counter() + duration
        await asyncio.gather(
            *(_worker(host, port, request, deadline, latencies, errors) for _ in range(concurrency))
        )

    asyncio.run(main())
    out.put((latencies, errors))


def _percentile(sorted_values: list[float], p: float) -> float:
    index = min(len(sorted_values) - 1, round(p / 100 * (len(sorted_values) - 1)))
    return sorted_values[index]


def run_load(
    url: str, client_id: str, secret: str, *, duration: float, concurrency: int, procs: int
) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[tuple[list[float], list[int]]] = ctx.Queue()
    workers = [
        ctx.Process(target=_load_proc, args=(url, client_id, secret, duration, concurrency, queue))
        for _ in range(procs)
    ]
    for w in workers:
        w.start()
    latencies: list[float] = []
    errors: list[int] = []
    for _ in workers:
        lat, err = queue.get()
        latencies += lat
        errors += err
    for w in workers:
        w.join()
    latencies.sort()
    ms = 1000.0
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "tokens_per_s": (len(latencies) - len(errors)) / duration,
        "p50_ms": _percentile(latencies, 50) * ms,
        "p90_ms": _percentile(latencies, 90) * ms,
        "p99_ms": _percentile(latencies, 99) * ms,
        "mean_ms": statistics.fmean(latencies) * ms,
    }


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), to report tokens per server CPU-second:
    a figure that holds up on a machine shared with other work, unlike wall-clock rate.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Timed in the server's own code tree: the public API both an old and a new tree have.
_VERIFY_BENCH = """
import sys, timeit
from pathlib import Path
from pdp.tokens import AccessTokenIssuer, KeyRing, Verifier
ring = KeyRing(Path(sys.argv[1]))
issuer = AccessTokenIssuer(ring, issuer="https://bench.example", audience="pdp-bench")
token = issuer.issue(subject="load", tenant="bench", client_id="load", scopes=("orders:read",))
verifier = Verifier(ring, issuer="https://bench.example", audience="pdp-bench")
verifier.verify(token.token)
n = 200_000
best = min(timeit.repeat(lambda: verifier.verify(token.token), number=n, repeat=5))
print(best / n * 1e6)
"""


@dataclass
class Server:
    """A token server this run started, and the code tree it runs from."""

    process: subprocess.Popen[bytes]
    url: str
    client_id: str
    secret: str
    state: tempfile.TemporaryDirectory[str]
    tree: Path

    def cached_verify_us(self) -> float:
        out = subprocess.run(
            [sys.executable, "-c", _VERIFY_BENCH, str(Path(self.state.name) / "keys")],
            cwd=self.tree,
            env=_env(self.tree),
            check=True,
            capture_output=True,
        )
        return float(out.stdout)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.state.cleanup()


def _env(tree: Path) -> dict[str, str]:
    # The tree first on the path: its `pdp` shadows the one installed (editable) in the venv.
    return {**os.environ, "PYTHONPATH": str(tree)}


def _server_command(target: str, state: Path, port: int, http: str, tree: Path) -> list[str]:
    if target == "tokens":
        return [
            sys.executable,
            "-m",
            "benchmarks.token_load",
            "--serve",
            str(state),
            "--port",
            str(port),
            "--http",
            http,
        ]
    return [
        sys.executable,
        "-m",
        "pdp.sidecar.command",
        "--bundle",
        str(tree / "bundles" / "saas"),
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        f"127.0.0.1:{port}",
        "--data-dir",
        str(state / "data"),
        "--token-key-dir",
        str(state / "keys"),
        "--token-db",
        str(state / "tokens.db"),
        "--token-issuer",
        f"http://127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]


def _own_server(http: str, target: str = "pdp", tree: Path = HERE) -> Server:
    from pdp.tokens import init_key_directory
    from pdp.tokens.admin_cli import create_client

    state = tempfile.TemporaryDirectory(prefix="pdp-token-load-")
    init_key_directory(Path(state.name) / "keys")
    secret = create_client(
        Path(state.name) / "tokens.db", "load", tenant="bench", scopes=("orders:read",)
    )
    port = _free_port()
    process = subprocess.Popen(
        _server_command(target, Path(state.name), port, http, tree),
        cwd=tree,
        env=_env(tree),
        stdout=subprocess.DEVNULL,  # `pdp serve` says where it serves; --json owns our stdout
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                state.cleanup()
                raise SystemExit("the token server did not start") from None
            time.sleep(0.05)
    return Server(process, url, "load", secret, state, tree)


def measure(server: Server, args: argparse.Namespace) -> dict[str, float]:
    """One load run against `server` (after a warm-up), with its CPU use and cached verify."""
    url, client_id, secret = server.url, server.client_id, server.secret
    if args.warmup > 0:
        run_load(url, client_id, secret, duration=args.warmup, concurrency=4, procs=1)
    cpu_before = _cpu_seconds(server.process.pid)
    result = run_load(
        url,
        client_id,
        secret,
        duration=args.duration,
        concurrency=args.concurrency,
        procs=args.procs,
    )
    cpu_after = _cpu_seconds(server.process.pid)
    if cpu_before is not None and cpu_after is not None and cpu_after > cpu_before:
        result["server_cpu_s"] = cpu_after - cpu_before
        result["tokens_per_server_cpu_s"] = result["requests"] / (cpu_after - cpu_before)
    result["cached_verify_us"] = server.cached_verify_us()
    return result


def _report(label: str, result: dict[str, float], args: argparse.Namespace) -> str:
    lines = [
        f"{label}client_credentials over HTTP: {result['tokens_per_s']:.0f} tokens/s "
        f"({result['requests']:.0f} requests, {result['errors']:.0f} errors, "
        f"{args.procs}x{args.concurrency} connections, {args.duration:.0f}s)",
        f"latency ms: p50 {result['p50_ms']:.2f}  p90 {result['p90_ms']:.2f}  "
        f"p99 {result['p99_ms']:.2f}  mean {result['mean_ms']:.2f}",
    ]
    if "tokens_per_server_cpu_s" in result:
        lines.append(
            f"server CPU: {result['server_cpu_s']:.2f}s -> "
            f"{result['tokens_per_server_cpu_s']:.0f} tokens per server CPU-second"
        )
    if "cached_verify_us" in result:
        lines.append(f"cached verify of a token seen before: {result['cached_verify_us']:.2f} us")
    return "\n".join(lines)


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median rate (its latencies belong to it), with every rate listed."""
    ranked = sorted(runs, key=lambda r: r["tokens_per_s"])
    chosen = dict(ranked[len(ranked) // 2])
    chosen["errors"] = sum(r["errors"] for r in runs)
    chosen["cached_verify_us"] = min(r["cached_verify_us"] for r in runs)
    return chosen


def run_rounds(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every target of every tree (`before` from `--compare`, then this one), alternating,
    `--rounds` times each, so that their figures come from one run; the median run of each."""
    trees = {"after": HERE}
    if args.compare:
        trees = {"before": Path(args.compare).resolve(), **trees}
    labels = {
        f"{name} {target}" if args.compare else target: (tree, target)
        for name, tree in trees.items()
        for target in args.target
    }
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
    for round_ in range(args.rounds):
        for label, (tree, target) in labels.items():
            server = _own_server(args.http, target, tree)
            try:
                result = measure(server, args)
            finally:
                server.stop()
            runs[label].append(result)
            report = _report(f"[{label}, round {round_ + 1}] ", result, args)
            print(report, file=sys.stderr if args.json else sys.stdout, flush=True)
    return {
        label: {**_median_run(results), "rates": [r["tokens_per_s"] for r in results]}
        for label, results in runs.items()
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="token_load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url")
    p.add_argument("--client-id")
    p.add_argument("--client-secret", default=os.environ.get("PDP_LOAD_CLIENT_SECRET"))
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=32, help="connections per process")
    p.add_argument("--procs", type=int, default=1, help="load-generating processes")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--target",
        nargs="+",
        default=["pdp"],
        choices=["pdp", "tokens"],
        help="own server: one `pdp serve`, or the token app alone on uvicorn (or both, in turn)",
    )
    p.add_argument(
        "--http",
        default="auto",
        choices=["auto", "h11", "httptools"],
        help="server HTTP parser (--target tokens only)",
    )
    p.add_argument("--compare", metavar="DIR", help="also run the code tree DIR, as `before`")
    p.add_argument("--rounds", type=int, default=1, help="runs of each target (and tree)")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        _serve(args.serve, args.port, args.http)
        return 0

    if args.url:
        if not (args.client_id and args.client_secret):
            p.error("--url needs --client-id and --client-secret (or PDP_LOAD_CLIENT_SECRET)")
        result = run_load(
            args.url,
            args.client_id,
            args.client_secret,
            duration=args.duration,
            concurrency=args.concurrency,
            procs=args.procs,
        )
        print(orjson.dumps(result).decode() if args.json else _report("", result, args))
        return 0 if result["errors"] == 0 else 1

    medians = run_rounds(args)
    if args.json:  # stdout is one JSON object (benchmarks.run reads it); the reports go to stderr
        print(orjson.dumps(next(iter(medians.values())) if len(medians) == 1 else medians).decode())
    else:
        for label, median in medians.items():
            rates = ", ".join(f"{r:.0f}" for r in median["rates"])
            print(_report(f"{label}, median of {rates} tokens/s: ", median, args))
    return 0 if all(m["errors"] == 0 for m in medians.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
