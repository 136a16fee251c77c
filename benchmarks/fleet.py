"""The fleet, measured: real `pdp serve` processes on a real PostgreSQL (started here from the
machine's binaries, see tests/postgres.py), the embedded SQLite store as the same-run baseline.

`python -m benchmarks.fleet [--writes N] [--tuples N]` (`make bench-fleet`) reports:
- propagation: a write acknowledged at sidecar A until sidecar B answers a check carrying its
  revision (B waits on its follower, so the time is when the change is applied at B), p50/p99
  over N writes; PostgreSQL (LISTEN/NOTIFY wake-up) and two processes on one SQLite file;
- write throughput: WriteTuples of 1 and of 100 tuples, one client, tuples/s;
- cold start: a new sidecar on a store already holding `--tuples` tuples, until serving, and its
  memory per tuple (RSS over an empty sidecar's), against the same tuples as bundle files.
`--demo` (`make fleet-demo`) starts PostgreSQL and three sidecars and shows a write at one seen at
the others. Results: benchmarks/results/fleet.json and benchmarks/FLEET.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import psycopg

from benchmarks.grpc_load import percentile
from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.client import check_request
from pdp.model import Entity, RelationTuple
from pdp.sidecar.grpc.wire import tuple_message
from tests.postgres import Postgres, running_postgres

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "saas"
OUT_JSON = ROOT / "benchmarks" / "results" / "fleet.json"
OUT_MD = ROOT / "benchmarks" / "FLEET.md"
READY_TIMEOUT = 300.0


class Sidecar:
    """One `pdp serve` with --insecure-admin (a benchmark on loopback, no tokens)."""

    def __init__(self, bundle: Path, data_dir: Path, store: str) -> None:
        argv = [
            sys.executable, "-m", "pdp.sidecar.command", "--bundle", str(bundle),
            "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), "--no-watch",
            "--insecure-admin", "--log-level", "ERROR", "--consistency-wait", "10",
        ]  # fmt: skip
        if store:
            argv += ["--store", store]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.start_seconds = time.perf_counter() - t0
        if "pdp: serving" not in line:
            self.proc.kill()
            raise SystemExit(f"pdp serve did not start: {line!r}")
        self.channel = grpc.insecure_channel(line.split("grpc=")[1].split()[0])
        self.authz = pdp_pb2_grpc.AuthorizerStub(self.channel)
        self.admin = pdp_pb2_grpc.AdminStub(self.channel)

    def write(self, writes: list[str]) -> int:
        resp = self.admin.WriteTuples(
            pdp_pb2.WriteTuplesRequest(
                writes=[tuple_message(RelationTuple.parse(t)) for t in writes]
            ),
            timeout=30,
        )
        return int(resp.tuple_revision)

    def check_at(self, who: str, doc: str, revision: int) -> pdp_pb2.CheckResponse:
        subject = Entity("user", who, {"tenant": "acme", "roles": frozenset()})
        resource = Entity("document", doc, {"tenant": "acme", "owner": "x", "classification": 0})
        resp: pdp_pb2.CheckResponse = self.authz.Check(
            check_request(subject, "read", resource, min_tuple_revision=revision), timeout=30
        )
        return resp

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.channel.close()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def sidecars(root: Path, store: str, n: int, bundle: Path = BUNDLE) -> Iterator[list[Sidecar]]:
    started: list[Sidecar] = []
    try:
        for i in range(n):
            data = root / f"data-{i}" if store else root / "shared-data"
            started.append(Sidecar(bundle, data, store))
        yield started
    finally:
        for s in started:
            s.stop()


def fresh_database(pg: Postgres) -> str:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg.dsn.rsplit("/", 1)[0] + f"/{name}"


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p90_ms": round(percentile(ordered, 0.90) * 1000, 3),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


def propagation(a: Sidecar, b: Sidecar, writes: int, tag: str) -> dict[str, float]:
    """A write acknowledged at A until B has applied it (B's check carries the revision)."""
    times = []
    for i in range(writes):
        revision = a.write([f"document:{tag}{i}#viewer@user:p{i}"])
        t0 = time.perf_counter()
        resp = b.check_at(f"p{i}", f"{tag}{i}", revision)
        times.append(time.perf_counter() - t0)
        if resp.decision != pdp_pb2.EFFECT_ALLOW:
            raise SystemExit(f"wrong answer at B for revision {revision}: {resp}")
    return summary_ms(times)


def write_throughput(a: Sidecar, per_call: int, seconds: float, tag: str) -> dict[str, float]:
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a.write([f"document:{tag}{calls}-{j}#viewer@user:w{j}" for j in range(per_call)])
        calls += 1
    elapsed = time.perf_counter() - t0
    return {
        "tuples_per_call": per_call,
        "calls_per_s": round(calls / elapsed, 1),
        "tuples_per_s": round(calls * per_call / elapsed, 1),
    }


def load_store(url: str, tuples: int) -> None:
    """`tuples` written tuples straight into an empty store (COPY), as a long-lived fleet has."""
    from pdp.sidecar.store.postgres import PostgresStore

    PostgresStore(url).close()  # its schema
    with psycopg.connect(url) as conn:
        with conn.cursor().copy("COPY pdp_overlay (tuple, present, revision) FROM STDIN") as copy:
            for i in range(tuples):
                copy.write_row((f"document:c{i}#viewer@user:u{i % 50_000}", True, 1))
        conn.execute("UPDATE pdp_head SET revision = 1")


def tuple_bundle(root: Path, tuples: int) -> Path:
    """The example bundle with `tuples` tuples in a bundle file: today's way to ship them."""
    dest = root / "bundle-with-tuples"
    shutil.copytree(BUNDLE, dest)
    with (dest / "tuples" / "many.jsonl").open("w") as f:
        for i in range(tuples):
            f.write(
                json.dumps(
                    {
                        "object": f"document:c{i}",
                        "relation": "viewer",
                        "subject": f"user:u{i % 50_000}",
                    }
                )
                + "\n"
            )
    return dest


def cold_start(pg: Postgres, root: Path, tuples: int) -> dict[str, Any]:
    url = fresh_database(pg)
    empty_url = fresh_database(pg)
    load_store(url, tuples)
    with sidecars(root / "empty", empty_url, 1) as (empty,):
        base_rss = empty.rss_bytes()
    with sidecars(root / "full", url, 1) as (full,):
        seconds, rss = full.start_seconds, full.rss_bytes()
        last = f"c{tuples - 1}"
        assert full.check_at(f"u{(tuples - 1) % 50_000}", last, 1).decision == pdp_pb2.EFFECT_ALLOW
    out: dict[str, Any] = {
        "tuples": tuples,
        "store_start_s": round(seconds, 2),
        "bytes_per_tuple": round((rss - base_rss) / tuples, 1),
    }
    bundle = tuple_bundle(root, tuples)
    with sidecars(root / "files", "", 1, bundle=bundle) as (from_files,):
        out["bundle_files_start_s"] = round(from_files.start_seconds, 2)
        out["bundle_files_bytes_per_tuple"] = round((from_files.rss_bytes() - base_rss) / tuples, 1)
    return out


def run(writes: int, tuples: int, throughput_seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {"writes": writes}
    root = Path(tempfile.mkdtemp(prefix="pdp-fleet-bench-"))
    try:
        with running_postgres() as pg:
            url = fresh_database(pg)
            with sidecars(root / "pg", url, 2) as (a, b):
                results["propagation_postgres"] = propagation(a, b, writes, "p")
                results["write_postgres_1"] = write_throughput(a, 1, throughput_seconds, "t")
                results["write_postgres_100"] = write_throughput(a, 100, throughput_seconds, "h")
            with sidecars(root / "sqlite", "", 2) as (a, b):  # two processes on one SQLite file
                results["propagation_sqlite"] = propagation(a, b, writes, "s")
                results["write_sqlite_1"] = write_throughput(a, 1, throughput_seconds, "t")
                results["write_sqlite_100"] = write_throughput(a, 100, throughput_seconds, "h")
            if tuples:
                results["cold_start"] = cold_start(pg, root, tuples)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Fleet benchmarks",
        "",
        "Real `pdp serve` processes on a real PostgreSQL 15 (loopback, 2 shared cores); the",
        "embedded SQLite store (two processes on one file) measured in the same run as the baseline.",
        "Produced by `make bench-fleet` (`python -m benchmarks.fleet`).",
        "",
        f"## Propagation: a write acknowledged at A until applied at B ({r['writes']} writes)",
        "",
        "| store | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for name in ("postgres", "sqlite"):
        p = r[f"propagation_{name}"]
        lines.append(f"| {name} | {p['p50_ms']} | {p['p90_ms']} | {p['p99_ms']} | {p['max_ms']} |")
    lines += [
        "",
        "## Write throughput (one client)",
        "",
        "| store | tuples per call | calls/s | tuples/s |",
        "|---|---|---|---|",
    ]
    for name in ("postgres", "sqlite"):
        for n in (1, 100):
            w = r[f"write_{name}_{n}"]
            lines.append(f"| {name} | {n} | {w['calls_per_s']} | {w['tuples_per_s']} |")
    if "cold_start" in r:
        c = r["cold_start"]
        lines += [
            "",
            f"## Cold start of a new sidecar with {c['tuples']:,} tuples",
            "",
            "| from | seconds to serving | bytes per tuple (RSS over an empty sidecar) |",
            "|---|---|---|",
            f"| PostgreSQL store | {c['store_start_s']} | {c['bytes_per_tuple']} |",
            f"| bundle files (baseline) | {c['bundle_files_start_s']} | {c['bundle_files_bytes_per_tuple']} |",
        ]
    return "\n".join(lines) + "\n"


def demo() -> None:
    """PostgreSQL and three sidecars on loopback: a write at one, seen at the others."""
    root = Path(tempfile.mkdtemp(prefix="pdp-fleet-demo-"))
    try:
        with running_postgres() as pg, sidecars(root, fresh_database(pg), 3) as fleet:
            print(f"PostgreSQL on 127.0.0.1:{pg.port}; sidecars A, B, C started")
            before = [s.check_at("demo", "demo-doc", 0).decision for s in fleet]
            print("before: user:demo read document:demo-doc ->", [_effect(d) for d in before])
            revision = fleet[0].write(["document:demo-doc#viewer@user:demo"])
            print(f"A wrote document:demo-doc#viewer@user:demo at revision {revision}")
            for name, s in zip("BC", fleet[1:], strict=True):
                t0 = time.perf_counter()
                resp = s.check_at("demo", "demo-doc", revision)
                print(
                    f"{name}: {_effect(resp.decision)} at tuple revision {resp.tuple_revision}"
                    f" ({(time.perf_counter() - t0) * 1000:.1f} ms after A's answer)"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _effect(value: int) -> str:
    return "ALLOW" if value == pdp_pb2.EFFECT_ALLOW else "DENY"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--tuples", type=int, default=1_000_000)
    parser.add_argument("--throughput-seconds", type=float, default=5.0)
    parser.add_argument("--demo", action="store_true")
    args = parser.parse_args()
    if args.demo:
        demo()
        return
    results = run(args.writes, args.tuples, args.throughput_seconds)
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(results, indent=2) + "\n")
    OUT_MD.write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
