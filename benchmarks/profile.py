"""`make profile`: the hot paths under py-spy, a flame graph (SVG) and a top-N text summary each.

    .venv/bin/python -m benchmarks.profile [--seconds 8] [--rate 200] [--only tokens_issue batchcheck]

Hot paths: engine decide on the RBAC, ABAC and ReBAC scenarios (cache off), the decision cache
(every call a hit), parsing the 10,000-rule bundle text, BatchCheck of 100 over a real gRPC
server (`pdp serve`) and client_credentials token issue over real HTTP (`pdp serve`).

Each path runs in a process of its own that first sets up (scenario, engine, server), then says
`ready`; only then does `py-spy record --pid` attach, so setup is never in the profile. A server
path is driven by a load generator in yet another process while the server is sampled. Samples
are aggregated by function (`--function`) and taken only from the thread holding the GIL
(`--gil`): a server's waiting threads (the gRPC pool's queue, the store's poller, conditions)
are not told from work by py-spy's idle test, and would otherwise fill half of its graph. Work
done with the GIL released (in OpenSSL, SQLite, grpc's C core) is therefore not in the graph.

Writes `benchmarks/results/profile/NAME.svg` and `NAME.txt` (self and total time per function,
self time per file), and `summary.txt` with the three largest self costs of every path (the
workload's own loop left out).
py-spy samples another process through ptrace: as root that just works; elsewhere it needs
`CAP_SYS_PTRACE` (or kernel.yama.ptrace_scope = 0).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import html
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "profile"
# The code tree profiled: the one this file is in (run it from a `git worktree` of a commit to
# profile that commit). Workloads and servers run with it as directory and first import path.
ROOT = HERE.parent
TOP = 15
READY = "profile: ready"


# -- the workloads, each in its own process -----------------------------------------------------


def _loop(step: Callable[[], object]) -> None:
    print(READY, flush=True)
    while True:  # until the parent terminates this process
        step()


def _decide(name: str, cache_ttl: float) -> Callable[[], object]:
    from benchmarks import cases, scenarios

    makers: dict[str, Callable[[], scenarios.Scenario]] = {
        "rbac": scenarios.rbac,
        "abac": scenarios.abac,
        "rebac": scenarios.rebac,
    }
    sc = makers[name]()
    engine, _ = cases.build_engine(sc, cache_ttl=cache_ttl)
    sc.check_answers(lambda r: engine.check(r).allowed, "pdp")  # right answers, and a full cache
    check, requests = engine.check, sc.requests

    def one_pass() -> None:
        for r in requests:
            check(r)

    return one_pass


def _parse() -> Callable[[], object]:
    from benchmarks.cases import many_rules_policy
    from policy_lang.parser import parse

    text = many_rules_policy(10_000)
    parse(text)  # the parser tables are built once per process: not the cost measured here
    return lambda: parse(text)


IN_PROCESS: dict[str, Callable[[], Callable[[], object]]] = {
    "decide_rbac": lambda: _decide("rbac", 0),
    "decide_abac": lambda: _decide("abac", 0),
    "decide_rebac": lambda: _decide("rebac", 0),
    "cache_rebac": lambda: _decide("rebac", 3600),
    "parse_10k_rules": _parse,
}


def _batches(n_batches: int = 64, size: int = 100) -> list[object]:
    """BatchCheck requests of `size` distinct checks each, against bundles/saas."""
    from benchmarks.grpc_load import RESOURCE, SUBJECT
    from pdp._proto.pdp.v1 import pdp_pb2
    from pdp.client import check_request
    from pdp.model import Entity

    ids = itertools.count()
    batches: list[object] = []
    for _ in range(n_batches):
        items = []
        for _ in range(size):
            i = next(ids)
            subject = Entity("user", f"u{i}", SUBJECT.attrs)
            resource = Entity("document", f"d{i % 997}", {**RESOURCE.attrs, "owner": f"u{i % 13}"})
            # actions the bundle knows: an unknown one is answered with a "did you mean" search
            check = check_request(subject, ("read", "update")[i % 2], resource)
            items.append(pdp_pb2.BatchCheckItem(correlation_id=str(i), request=check))
        batches.append(pdp_pb2.BatchCheckRequest(items=items))
    return batches


def _drive_batchcheck(target: str, seconds: float, clients: int = 8) -> None:
    import grpc

    from pdp._proto.pdp.v1 import pdp_pb2_grpc

    batches = _batches()

    async def main() -> int:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pdp_pb2_grpc.AuthorizerStub(channel)  # type: ignore[no-untyped-call]
            end = time.perf_counter() + seconds
            done = 0
            cycle = itertools.cycle(batches)

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < end:
                    await stub.BatchCheck(next(cycle))
                    done += 1

            await asyncio.gather(*(worker() for _ in range(clients)))
            return done

    done = asyncio.run(main())
    print(f"batchcheck: {done * 100 / seconds:.0f} decisions/s under the profiler", flush=True)


# -- servers and their load -----------------------------------------------------------------------


@dataclass
class Started:
    process: subprocess.Popen[str]
    pid: int
    driver: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def _serve_command(state: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pdp.sidecar.command",
        "--bundle",
        str(ROOT / "bundles" / "saas"),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(state / "data"),
        "--no-watch",
        "--log-level",
        "ERROR",
        *extra,
    ]


def _wait_line(process: subprocess.Popen[str], prefix: str) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith(prefix):
        process.kill()
        raise SystemExit(f"the profiled process did not start: {line!r}")
    return line


def _start_server(name: str, state: Path, seconds: float) -> Started:
    extra: list[str] = []
    secret = ""
    if name == "tokens_issue":
        from pdp.tokens import init_key_directory
        from pdp.tokens.admin_cli import create_client

        init_key_directory(state / "keys")
        secret = create_client(state / "tokens.db", "load", tenant="bench", scopes=("read",))
        extra = ["--http-listen", "127.0.0.1:0", "--token-key-dir", str(state / "keys")]
        extra += ["--token-db", str(state / "tokens.db"), "--token-issuer", "http://bench"]
    process = subprocess.Popen(
        _serve_command(state, extra),
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**_env(), "PYTHONUNBUFFERED": "1"},
    )
    line = _wait_line(process, "pdp: serving grpc=")
    load_seconds = str(seconds + 3)  # covers the profiler's start and the whole recording
    if name == "tokens_issue":
        url = "http://" + line.split("http=")[1].split()[0]
        driver = [sys.executable, "-m", "benchmarks.token_load", "--url", url]
        driver += ["--client-id", "load", "--duration", load_seconds, "--warmup", "0"]
        return Started(process, process.pid, driver, {"PDP_LOAD_CLIENT_SECRET": secret})
    target = line.split("grpc=")[1].split()[0]
    driver = [sys.executable, "-m", "benchmarks.profile", "--drive-batchcheck", target]
    return Started(process, process.pid, [*driver, "--seconds", load_seconds])


SERVERS = ("batchcheck", "tokens_issue")
PATHS = (*IN_PROCESS, *SERVERS)


@contextmanager
def started(name: str, seconds: float) -> Iterator[Started]:
    with tempfile.TemporaryDirectory(prefix="pdp-profile-") as state:
        if name in IN_PROCESS:
            process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.profile", "--workload", name],
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                env=_env(),
            )
            _wait_line(process, READY)
            run = Started(process, process.pid)
        else:
            run = _start_server(name, Path(state), seconds)
        try:
            yield run
        finally:
            run.process.send_signal(signal.SIGTERM)
            try:
                run.process.wait(15)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()
            if run.process.stdout is not None:
                run.process.stdout.close()


def record(name: str, seconds: float, rate: int, out: Path) -> Path:
    """Profile one hot path; returns its flame graph."""
    svg = out / f"{name}.svg"
    with started(name, seconds) as run:
        driver = None
        if run.driver:
            driver = subprocess.Popen(run.driver, cwd=ROOT, env={**_env(), **run.env})
            time.sleep(1.0)  # connections open and warm before sampling starts
        # --function: one frame per function, not per line; --nonblocking would skew less but
        # reads torn stacks now and then: the pause per sample costs little at this rate.
        subprocess.run(
            [py_spy(), "record", "--pid", str(run.pid), "--duration", str(int(seconds)),
             "--rate", str(rate), "--function", "--gil", "--format", "flamegraph", "-o", str(svg)],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        if driver is not None:
            driver.wait(seconds + 30)
    return svg


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def py_spy() -> str:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("py-spy is not installed: pip install -e '.[dev]'")
    return found


# -- reading a flame graph back -------------------------------------------------------------------

_FRAME = re.compile(
    r'<g><title>(?P<title>[^<]*)</title><rect [^>]*?y="(?P<y>[\d.]+)"[^>]*?'
    r'fg:x="(?P<x>\d+)" fg:w="(?P<w>\d+)"'
)
_SAMPLES = re.compile(r" \([\d,]+ samples?, [\d.]+%\)$")


@dataclass
class Frame:
    label: str
    x: int
    w: int
    parent: Frame | None = None
    children_w: int = 0


@dataclass
class Profile:
    total: int
    self_by_function: Counter[str]
    # the same, generated functions summed by kind: one decide function per (type, action) of
    # the bundle, each a small share, together the decision's cost
    self_by_cost: Counter[str]
    total_by_function: Counter[str]
    self_by_file: Counter[str]


def read_flamegraph(svg: Path) -> Profile:
    """Self and total samples per function from py-spy's SVG (each frame carries its sample
    offset `fg:x` and width `fg:w`; a frame's parent is the one a row below that spans it)."""
    rows: dict[float, list[Frame]] = {}
    for m in _FRAME.finditer(svg.read_text(encoding="utf-8")):
        label = _SAMPLES.sub("", html.unescape(m["title"]))
        rows.setdefault(float(m["y"]), []).append(Frame(label, int(m["x"]), int(m["w"])))
    depths = sorted(rows)
    total = sum(f.w for f in rows[depths[0]]) if depths else 0
    for upper, lower in itertools.pairwise(depths):
        parents = sorted(rows[upper], key=lambda f: f.x)
        starts = [f.x for f in parents]
        for frame in rows[lower]:
            parent = parents[bisect.bisect_right(starts, frame.x) - 1]
            frame.parent = parent
            parent.children_w += frame.w
    self_f: Counter[str] = Counter()
    self_cost: Counter[str] = Counter()
    total_f: Counter[str] = Counter()
    self_file: Counter[str] = Counter()
    for frame in itertools.chain.from_iterable(rows.values()):
        if frame.parent is None:  # "all"
            continue
        self_f[frame.label] += frame.w - frame.children_w
        self_cost[_cost_of(frame.label)] += frame.w - frame.children_w
        self_file[_file_of(frame.label)] += frame.w - frame.children_w
        ancestor: Frame | None = frame.parent
        recursive = False
        while ancestor is not None and not recursive:
            recursive = ancestor.label == frame.label
            ancestor = ancestor.parent
        if not recursive:  # a recursive call's samples are already in its outermost frame
            total_f[frame.label] += frame.w
    return Profile(total, self_f, self_cost, total_f, self_file)


def _file_of(label: str) -> str:
    inner = label.rpartition(" (")[2].rstrip(")")
    return inner.rpartition(":")[0] or inner


# The kinds of function pdp.engine generates, by the start of their names (pdp.engine.codegen
# files them as `<pdp NAME DIGEST>`).
_GENERATED = ("cache_key", "decide", "has_role", "condition")


def _cost_of(label: str) -> str:
    name = _file_of(label).removeprefix("<pdp ").partition(" ")[0]
    if _file_of(label).startswith("<pdp "):
        kind = next((k for k in _GENERATED if name.startswith(k)), name)
        return f"{kind}_* (generated by pdp.engine)"
    return label


def _measured(label: str) -> bool:
    return not _file_of(label).startswith("benchmarks/")


def _share(n: int, total: int) -> str:
    return f"{100 * n / max(total, 1):5.1f}%"


def summary(name: str, profile: Profile, commit: str) -> str:
    lines = [f"{name}: {profile.total} samples, commit {commit}", "", "self time by function:"]
    lines += [
        f"  {_share(n, profile.total)}  {label}"
        for label, n in profile.self_by_function.most_common(TOP)
    ]
    lines += ["", "self time by function, generated functions summed by kind:"]
    lines += [
        f"  {_share(n, profile.total)}  {label}"
        for label, n in profile.self_by_cost.most_common(TOP)
    ]
    lines += ["", "total time by function (callees included):"]
    lines += [
        f"  {_share(n, profile.total)}  {label}"
        for label, n in profile.total_by_function.most_common(TOP)
    ]
    lines += ["", "self time by file:"]
    lines += [
        f"  {_share(n, profile.total)}  {label}"
        for label, n in profile.self_by_file.most_common(TOP)
    ]
    return "\n".join(lines) + "\n"


def _commit() -> str:
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=8.0, help="sampling time per hot path")
    p.add_argument("--rate", type=int, default=200, help="samples per second")
    p.add_argument("--only", nargs="+", choices=PATHS, default=list(PATHS))
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--workload", choices=list(IN_PROCESS), help=argparse.SUPPRESS)
    p.add_argument("--drive-batchcheck", metavar="TARGET", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.workload:
        _loop(IN_PROCESS[args.workload]())
    if args.drive_batchcheck:
        _drive_batchcheck(args.drive_batchcheck, args.seconds)
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    commit = _commit()
    tops = [f"commit {commit}; {args.seconds:.0f} s at {args.rate} samples/s per hot path", ""]
    for name in args.only:
        svg = record(name, args.seconds, args.rate, args.out)
        profile = read_flamegraph(svg)
        text = summary(name, profile, commit)
        (args.out / f"{name}.txt").write_text(text, encoding="utf-8")
        print(text, flush=True)
        tops.append(f"{name} ({profile.total} samples), largest self costs:")
        # the workload's own loop (benchmarks/) is in the flame graph, not among the costs
        costs = [(f, n) for f, n in profile.self_by_cost.most_common() if _measured(f)]
        tops += [f"  {_share(n, profile.total)}  {label}" for label, n in costs[:3]]
    (args.out / "summary.txt").write_text("\n".join(tops) + "\n", encoding="utf-8")
    print(f"flame graphs and summaries in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
