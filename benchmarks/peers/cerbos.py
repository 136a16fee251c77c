"""The Cerbos PDP as a peer: its Linux binary from the npm package `@cerbos/cerbos-linux-x64`,
started on 127.0.0.1, called over gRPC (CheckResources) by the same per-call timing loop as ours.

    python -m benchmarks.peers.cerbos [--requests N] [--budget S]

Prints one JSON line: a list of results, one per scenario, Cerbos and (when the generated protobuf
code is importable) our own sidecar over gRPC on the same scenario. Stops every server it started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import cases, scenarios
from benchmarks.scenarios import Scenario
from pdp.model import Request

CACHE = Path(__file__).resolve().parents[1] / ".peers-venv" / "cerbos"
PACKAGE = "@cerbos/cerbos-linux-x64"


def cerbos_binary() -> tuple[Path, str]:
    binary = CACHE / "package" / "cerbos-linux-x64"
    if not binary.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "pack", PACKAGE, "--silent"],
            cwd=CACHE,
            check=True,
            timeout=300,
            capture_output=True,
        )
        tgz = next(CACHE.glob("*.tgz"))
        with tarfile.open(tgz) as tar:
            tar.extractall(CACHE, filter="data")
        binary.chmod(0o755)
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()[0]
    return binary, version


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _yaml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def rbac_policies(sc: Scenario) -> dict[str, str]:
    """One resource policy per type. Cerbos resource policies have no role inheritance, so each
    rule lists every role whose closure grants the action (the baseline's flattened table)."""
    d = sc.data
    closure: dict[str, set[tuple[str, str]]] = {}

    def grants(role: str) -> set[tuple[str, str]]:
        if role not in closure:
            out = set(d["grants"][role])
            for p in d["parents"][role]:
                out |= grants(p)
            closure[role] = out
        return closure[role]

    files = {}
    for t in d["types"]:
        rules = []
        for a in d["actions"]:
            roles = sorted(r for r in d["roles"] if (t, a) in grants(r))
            if roles:
                rules.append(
                    f"    - actions: [{a}]\n      effect: EFFECT_ALLOW\n"
                    f"      roles: {_yaml_list(roles)}\n"
                )
        files[f"{t}.yaml"] = (
            "apiVersion: api.cerbos.dev/v1\nresourcePolicy:\n  version: default\n"
            f"  resource: {t}\n  rules:\n" + "".join(rules)
        )
    return files


ABAC_POLICY = """apiVersion: api.cerbos.dev/v1
resourcePolicy:
  version: default
  resource: document
  rules:
    - name: tenant_isolation
      actions: ["*"]
      effect: EFFECT_DENY
      roles: ["*"]
      condition:
        match:
          expr: request.resource.attr.tenant != request.principal.attr.tenant
    - name: archived_is_read_only
      actions: [update, delete]
      effect: EFFECT_DENY
      roles: ["*"]
      condition:
        match:
          expr: request.resource.attr.archived == true
    - name: cleared_read
      actions: [read]
      effect: EFFECT_ALLOW
      roles: ["*"]
      condition:
        match:
          expr: request.principal.attr.clearance >= request.resource.attr.classification
    - name: owner_writes
      actions: [update, delete]
      effect: EFFECT_ALLOW
      roles: ["*"]
      condition:
        match:
          expr: request.resource.attr.owner == request.principal.id
"""


def _value(v: Any) -> Any:
    from google.protobuf import struct_pb2

    if isinstance(v, bool):
        return struct_pb2.Value(bool_value=v)
    if isinstance(v, int | float):
        return struct_pb2.Value(number_value=v)
    if isinstance(v, frozenset | set | list):
        lv = struct_pb2.ListValue()
        lv.extend(sorted(v))
        return struct_pb2.Value(list_value=lv)
    return struct_pb2.Value(string_value=str(v))


class CerbosServer:
    def __init__(self, binary: Path, policies: dict[str, str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cerbos-bench-"))
        (self.dir / "policies").mkdir()
        for name, text in policies.items():
            (self.dir / "policies" / name).write_text(text, encoding="utf-8")
        self.grpc_port, http_port = _port(), _port()
        (self.dir / "config.yaml").write_text(
            f'server:\n  httpListenAddr: "127.0.0.1:{http_port}"\n'
            f'  grpcListenAddr: "127.0.0.1:{self.grpc_port}"\n'
            f"storage:\n  driver: disk\n  disk:\n    directory: {self.dir / 'policies'}\n"
            "    watchForChanges: false\naudit:\n  enabled: false\n"
            "telemetry:\n  disabled: true\n",
            encoding="utf-8",
        )
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(binary), "server", f"--config={self.dir / 'config.yaml'}", "--log-level=error"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "CERBOS_NO_TELEMETRY": "1"},
        )
        self.target = f"127.0.0.1:{self.grpc_port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cerbos exited: {self.proc.stderr.read()[-500:]}")  # type: ignore[union-attr]
            try:
                with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("cerbos did not start listening within 30 s")
        self.setup_s = time.perf_counter() - start

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def cerbos_decider(target: str, kind: str) -> tuple[Callable[[Request], bool], Any]:
    import grpc
    from cerbos.effect.v1 import effect_pb2
    from cerbos.engine.v1 import engine_pb2
    from cerbos.request.v1 import request_pb2
    from cerbos.svc.v1 import svc_pb2_grpc

    channel = grpc.insecure_channel(target)
    stub = svc_pb2_grpc.CerbosServiceStub(channel)
    allow = effect_pb2.EFFECT_ALLOW

    def decide(req: Request) -> bool:
        if kind == "rbac":
            principal = engine_pb2.Principal(
                id=req.subject.id, roles=sorted(req.subject.attrs["roles"])
            )  # type: ignore[arg-type]
            resource = engine_pb2.Resource(kind=req.resource.type, id=req.resource.id)
        else:
            principal = engine_pb2.Principal(
                id=req.subject.id,
                roles=["user"],
                attr={k: _value(v) for k, v in req.subject.attrs.items()},
            )
            resource = engine_pb2.Resource(
                kind=req.resource.type,
                id=req.resource.id,
                attr={k: _value(v) for k, v in req.resource.attrs.items()},
            )
        resp = stub.CheckResources(
            request_pb2.CheckResourcesRequest(
                request_id="b",
                principal=principal,
                resources=[
                    request_pb2.CheckResourcesRequest.ResourceEntry(
                        actions=[req.action], resource=resource
                    )
                ],
            )
        )
        return resp.results[0].actions[req.action] == allow

    return decide, channel


def pdp_grpc_decider(
    sc: Scenario,
) -> tuple[Callable[[Request], bool], Callable[[], None], float, Callable[[], float]]:
    """Our sidecar on the same scenario, over gRPC, with the same loop. Raises if unavailable."""
    import grpc

    from benchmarks.grpc_load import start_server
    from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
    from pdp.client import check_request

    tmp = Path(tempfile.mkdtemp(prefix="pdp-peer-"))
    scenarios.write_bundle(tmp / "bundle", sc.name, sc.policy, sc.tuples)
    start = time.perf_counter()
    proc, target = start_server(str(tmp / "bundle"), str(tmp / "data"))
    setup = time.perf_counter() - start
    channel = grpc.insecure_channel(target)
    stub = pdp_pb2_grpc.AuthorizerStub(channel)
    allow = pdp_pb2.Effect.Value("EFFECT_ALLOW")

    def decide(req: Request) -> bool:
        r = stub.Check(check_request(req.subject, req.action, req.resource))
        return r.decision == allow

    # BatchCheck of 100 of the scenario's requests, in rotation: decisions per second.
    batches = [
        pdp_pb2.BatchCheckRequest(
            items=[
                pdp_pb2.BatchCheckItem(request=check_request(r.subject, r.action, r.resource))
                for r in sc.requests[k : k + 100]
            ]
        )
        for k in range(0, max(1, len(sc.requests) - 99), 100)
    ]

    def batch_rate() -> float:
        return 100 * throughput(lambda i: stub.BatchCheck(batches[i % len(batches)]), 8)

    def stop() -> None:
        channel.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)

    return decide, stop, setup, batch_rate


THROUGHPUT_SECONDS = 4.0


def throughput(
    call: Callable[[int], object], clients: int, seconds: float = THROUGHPUT_SECONDS
) -> float:
    """Calls per second with `clients` threads calling as fast as they can (the same client code
    for every server measured, so the client's own cost is the same on both sides)."""
    count = [0] * clients
    end = time.perf_counter() + seconds

    def worker(slot: int) -> None:
        i = slot
        while time.perf_counter() < end:
            call(i)
            i += clients
            count[slot] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(count) / (time.perf_counter() - t0)


def rates(decide: Callable[[Request], bool], sc: Scenario) -> dict[str, float]:
    requests = sc.requests
    return {
        f"calls_per_s_{n}": throughput(lambda i: decide(requests[i % len(requests)]), n)
        for n in (8, 32)
    }


def measure(decide: Callable[[Request], bool], sc: Scenario, budget: float) -> dict[str, Any]:
    agree = total = 0
    wrong: list[str] = []
    for req, want in zip(sc.requests, sc.expected, strict=True):
        total += 1
        if decide(req) == want:
            agree += 1
        elif len(wrong) < 3:
            wrong.append(f"{req.subject}:{req.action}:{req.resource} expected {want}")
    stats = cases.time_calls(
        decide, sc.requests, budget_s=budget, overhead_ns=cases.timer_overhead_ns()
    )
    return {"agree": agree, "checked": total, "of": len(sc.requests), "wrong": wrong, **stats}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--budget", type=float, default=3.0)
    args = ap.parse_args(argv)
    results: list[dict[str, Any]] = []
    try:
        binary, version = cerbos_binary()
    except Exception as exc:
        msg = f"could not install {PACKAGE}: {type(exc).__name__}: {exc}"[:300]
        print(
            json.dumps(
                [
                    {"peer": "cerbos", "scenario": s, "error": msg}
                    for s in ("rbac", "abac", "rebac_100000")
                ]
            )
        )
        return 0
    made = {
        "rbac": scenarios.rbac(n_requests=args.requests),
        "abac": scenarios.abac(n_requests=args.requests),
    }
    for name, sc in made.items():
        server = None
        try:
            policies = rbac_policies(sc) if name == "rbac" else {"document.yaml": ABAC_POLICY}
            server = CerbosServer(binary, policies)
            decide, channel = cerbos_decider(server.target, name)
            r = measure(decide, sc, args.budget)
            r.update(rates(decide, sc))
            channel.close()
            results.append(
                {
                    "peer": "cerbos (gRPC)",
                    "scenario": name,
                    "version": version,
                    "setup_s": server.setup_s,
                    "rss_delta_mb": server.rss_mb(),
                    **r,
                    "note": "resource policies + CEL; role inheritance flattened into "
                    "rule role lists (Cerbos resource policies have none)"
                    if name == "rbac"
                    else "4 rules, CEL conditions, deny rules",
                }
            )
        except Exception as exc:
            results.append(
                {
                    "peer": "cerbos (gRPC)",
                    "scenario": name,
                    "version": version,
                    "error": f"{type(exc).__name__}: {exc}"[:300],
                    "trace": traceback.format_exc(limit=3),
                }
            )
        finally:
            if server is not None:
                server.stop()
        stop = None
        try:
            decide, stop, setup, batch_rate = pdp_grpc_decider(sc)
            r = measure(decide, sc, args.budget)
            r.update(rates(decide, sc))
            r["batch_decisions_per_s"] = batch_rate()
            results.append(
                {
                    "peer": "pdp (gRPC)",
                    "scenario": name,
                    "version": "this commit",
                    "setup_s": setup,
                    "rss_delta_mb": None,
                    **r,
                    "note": "our sidecar (`pdp serve`) over gRPC, same client loop",
                }
            )
        except Exception as exc:
            results.append(
                {
                    "peer": "pdp (gRPC)",
                    "scenario": name,
                    "error": f"{type(exc).__name__}: {exc}"[:300],
                }
            )
        finally:
            if stop is not None:
                stop()
    results.append(
        {
            "peer": "cerbos (gRPC)",
            "scenario": "rebac_100000",
            "version": version,
            "error": "not applicable: Cerbos has no relationship store or graph walk; "
            "ReBAC would need the caller to resolve the relations first",
        }
    )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
