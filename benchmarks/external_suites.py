"""The sibling benchmark suites `benchmarks.run` also runs, each owned by its own module.

A suite runs in-process through its `suite(quick: bool) -> dict` entry point if its module defines
one, else as its command line in a subprocess, bounded in time. A suite that crashes or exits
non-zero is a failure of the run; one that is absent or cannot be imported is reported as skipped.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

EXTERNAL = ("grpc_load", "bench_tokens", "token_load", "audit_fanout", "lookup")


def commands(quick: bool) -> dict[str, list[str]]:
    """Each suite's command line (after `python`), in the order they run."""
    bench = ["--benchmark-max-time=0.1", "--benchmark-min-rounds=3"] if quick else []
    # audit_fanout fills 16 streams' transport windows (~40 s): --full only
    slow = {} if quick else {"audit_fanout": ["-m", "benchmarks.audit_fanout"]}
    return {
        **slow,
        "grpc_load": [
            "-m",
            "benchmarks.grpc_load",
            *(["--seconds", "1", "--calls", "500"] if quick else []),
        ],
        "bench_tokens": [
            "-m",
            "pytest",
            "benchmarks/bench_tokens.py",
            "-q",
            "-p",
            "no:cacheprovider",
            "--benchmark-only",
            "--benchmark-json={json}",
            *bench,
        ],
        "token_load": [
            "-m",
            "benchmarks.token_load",
            "--json",
            *(["--duration", "2", "--warmup", "0.5"] if quick else []),
        ],
    }


def run_suite(name: str, argv: list[str], quick: bool, failures: list[str]) -> dict[str, Any]:
    """One suite's result for the report; its failures are appended to `failures`."""
    if not (HERE / f"{name}.py").exists():
        return {"skipped": "not present"}
    started = time.perf_counter()
    print(f"{name}: running", flush=True)
    try:
        mod = importlib.import_module(f"benchmarks.{name}")
    except Exception as exc:  # e.g. generated protobuf code not built: not our crash
        skipped = {"skipped": f"not importable: {type(exc).__name__}: {exc}"}
        print(f"{name}: skipped ({skipped['skipped']})", flush=True)
        return skipped
    entry = getattr(mod, "suite", None)
    try:
        if entry is not None:
            return entry(quick=quick)  # type: ignore[no-any-return]
        return run_command(name, argv, started, failures)
    except subprocess.TimeoutExpired:
        failures.append(f"{name} timed out")
        return {"crashed": "timed out"}
    except Exception:
        failures.append(f"{name} crashed:\n{traceback.format_exc()}")
        return {"crashed": traceback.format_exc(limit=3)}


def run_command(name: str, argv: list[str], started: float, failures: list[str]) -> dict[str, Any]:
    """A suite without an entry point, as a subprocess: its output, and its statistics from the
    pytest-benchmark JSON it wrote or the JSON object on its last line of output."""
    json_out = RESULTS / f"{name}.json"
    argv = [a.replace("{json}", str(json_out)) for a in argv]
    proc = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=HERE.parent,
        check=False,
    )
    out: dict[str, Any] = {
        "command": " ".join(["python", *argv]),
        "seconds": time.perf_counter() - started,
        "output": proc.stdout[-4000:],
    }
    if proc.returncode != 0:
        out["stderr"] = proc.stderr[-3000:]
        failures.append(f"{name} exited {proc.returncode}: {proc.stderr[-500:]}")
    elif json_out.exists():
        out["stats"] = pytest_benchmark_stats(json_out)
    elif proc.stdout.strip().startswith("{"):
        out["stats"] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(proc.stdout[-1500:], flush=True)
    return out


def pytest_benchmark_stats(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [
        {
            "name": b["fullname"].split("::")[-1],
            "group": b.get("group"),
            "median_us": b["stats"]["median"] * 1e6,
            "iqr_us": b["stats"]["iqr"] * 1e6,
            "mean_us": b["stats"]["mean"] * 1e6,
            "rounds": b["stats"]["rounds"],
        }
        for b in data["benchmarks"]
    ]
