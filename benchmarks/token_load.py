"""HTTP load generator for the token endpoint: client_credentials tokens/s and latency percentiles.

    .venv/bin/python -m benchmarks.token_load --duration 10 --concurrency 32 --procs 1
    .venv/bin/python -m benchmarks.token_load --url http://127.0.0.1:8181 --client-id ID \
        --client-secret SECRET

Without `--url` it starts its own server (uvicorn, in a separate process) on an ephemeral port
with a fresh key directory, SQLite file and client. The generator speaks HTTP/1.1 keep-alive over
raw asyncio streams, so that the client is not the bottleneck it would be with a full client
library; each response's status and body are still checked.
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
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import orjson


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
        http=http,  # type: ignore[arg-type]
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


def _own_server(
    http: str,
) -> tuple[subprocess.Popen[bytes], str, str, str, tempfile.TemporaryDirectory[str]]:
    from pdp.tokens import init_key_directory
    from pdp.tokens.admin_cli import create_client

    state = tempfile.TemporaryDirectory(prefix="pdp-token-load-")
    init_key_directory(Path(state.name) / "keys")
    secret = create_client(
        Path(state.name) / "tokens.db", "load", tenant="bench", scopes=("orders:read",)
    )
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.token_load",
            "--serve",
            state.name,
            "--port",
            str(port),
            "--http",
            http,
        ]
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise SystemExit("the token server did not start") from None
            time.sleep(0.05)
    return server, url, "load", secret, state


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
        "--http",
        default="auto",
        choices=["auto", "h11", "httptools"],
        help="server HTTP parser (own server only)",
    )
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        _serve(args.serve, args.port, args.http)
        return 0

    server = state = None
    if args.url:
        if not (args.client_id and args.client_secret):
            p.error("--url needs --client-id and --client-secret (or PDP_LOAD_CLIENT_SECRET)")
        url, client_id, secret = args.url, args.client_id, args.client_secret
    else:
        server, url, client_id, secret, state = _own_server(args.http)
    try:
        if args.warmup > 0:
            run_load(url, client_id, secret, duration=args.warmup, concurrency=4, procs=1)
        cpu_before = _cpu_seconds(server.pid) if server is not None else None
        result = run_load(
            url,
            client_id,
            secret,
            duration=args.duration,
            concurrency=args.concurrency,
            procs=args.procs,
        )
        cpu_after = _cpu_seconds(server.pid) if server is not None else None
        if cpu_before is not None and cpu_after is not None and cpu_after > cpu_before:
            result["server_cpu_s"] = cpu_after - cpu_before
            result["tokens_per_server_cpu_s"] = result["requests"] / (cpu_after - cpu_before)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(10)
        if state is not None:
            state.cleanup()
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(
            f"client_credentials over HTTP: {result['tokens_per_s']:.0f} tokens/s "
            f"({result['requests']:.0f} requests, {result['errors']:.0f} errors, "
            f"{args.procs}x{args.concurrency} connections, {args.duration:.0f}s)\n"
            f"latency ms: p50 {result['p50_ms']:.2f}  p90 {result['p90_ms']:.2f}  "
            f"p99 {result['p99_ms']:.2f}  mean {result['mean_ms']:.2f}"
        )
        if "tokens_per_server_cpu_s" in result:
            print(
                f"server CPU: {result['server_cpu_s']:.2f}s -> "
                f"{result['tokens_per_server_cpu_s']:.0f} tokens per server CPU-second"
            )
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
