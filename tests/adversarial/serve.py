"""A real `pdp serve` in a subprocess, for the adversarial suite: ephemeral loopback ports, real
token keys and a real data directory; the factory stops (or kills) every process it started."""

from __future__ import annotations

import atexit
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.client import check_request
from pdp.model import Entity, RelationTuple
from pdp.sidecar.grpc.wire import tuple_message
from pdp.tokens import init_key_directory
from pdp.tokens.admin_cli import create_client

ISSUER = "https://pdp.adversarial.test"
AUDIENCE = "pdp"
READY_TIMEOUT = 30.0


class Authed:
    """A stub whose every call carries `authorization: Bearer <token>`."""

    def __init__(self, stub: Any, token: str) -> None:
        self._stub = stub
        self._metadata = (("authorization", f"Bearer {token}"),)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def call(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", 10)
            return method(request, metadata=self._metadata, **kwargs)

        return call


@dataclass
class Served:
    """One running `pdp serve`."""

    proc: subprocess.Popen[str]
    grpc_target: str
    http: str
    bundle: Path
    data_dir: Path
    log: Path
    ready_line: str = ""  # what it printed when it began serving
    channel: grpc.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(self.grpc_target)

    @property
    def authz(self) -> pdp_pb2_grpc.AuthorizerStub:
        return pdp_pb2_grpc.AuthorizerStub(self.channel)

    def admin(self, token: str) -> Any:
        return Authed(pdp_pb2_grpc.AdminStub(self.channel), token)

    def token(self, client_id: str, secret: str) -> str:
        """An access token from this server's own token endpoint (client credentials over HTTP)."""
        r = httpx.post(
            f"http://{self.http}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
            timeout=10,
        )
        r.raise_for_status()
        token: str = r.json()["access_token"]
        return token

    def check(
        self, subject: Entity, action: str, resource: Entity, **kw: Any
    ) -> pdp_pb2.CheckResponse:
        resp: pdp_pb2.CheckResponse = self.authz.Check(
            check_request(subject, action, resource, **kw), timeout=10
        )
        return resp

    def write(self, token: str, writes: Sequence[str] = (), deletes: Sequence[str] = ()) -> int:
        resp = self.admin(token).WriteTuples(
            pdp_pb2.WriteTuplesRequest(
                writes=[tuple_message(RelationTuple.parse(t)) for t in writes],
                deletes=[tuple_message(RelationTuple.parse(t)) for t in deletes],
            )
        )
        return int(resp.tuple_revision)

    def status(self, token: str) -> pdp_pb2.BundleStatusResponse:
        out: pdp_pb2.BundleStatusResponse = self.admin(token).BundleStatus(
            pdp_pb2.BundleStatusRequest()
        )
        return out

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: the graceful path."""
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._close_pipes()
        return code

    def kill(self) -> None:
        """SIGKILL: no drain, no flush, no cleanup. The process dies first, so a call in flight
        sees the death (UNAVAILABLE) rather than the test closing its own channel."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(20)
        self.channel.close()
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class ServeFactory:
    """Starts `pdp serve` processes sharing one key directory and token database, so a token or
    a client outlives a restart; `close()` kills whatever is still running."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.key_dir = root / "keys"
        self.token_db = root / "tokens.db"
        init_key_directory(self.key_dir)
        self._served: list[Served] = []
        self._procs: list[subprocess.Popen[str]] = []
        self._clients = 0
        # the last resort: a test interrupted past its own cleanup (a timeout) leaves no server
        atexit.register(self.close)

    def client(
        self,
        *,
        tenant: str = "acme",
        scopes: Sequence[str] = ("admin",),
        roles: Sequence[str] = (),
        client_id: str | None = None,
    ) -> tuple[str, str]:
        """A new OAuth client in the shared token database: (client_id, secret)."""
        self._clients += 1
        client_id = client_id or f"adv-client-{self._clients}"
        secret = create_client(
            self.token_db, client_id, tenant=tenant, scopes=tuple(scopes), roles=tuple(roles)
        )
        return client_id, secret

    def argv(self, bundle: Path, data_dir: Path, args: Sequence[str]) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pdp.sidecar.command",
            "--bundle",
            str(bundle),
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir),
            "--token-key-dir",
            str(self.key_dir),
            "--token-db",
            str(self.token_db),
            "--token-issuer",
            ISSUER,
            "--token-audience",
            AUDIENCE,
            "--log-level",
            "INFO",
            *args,
        ]

    def start(
        self,
        bundle: Path,
        *,
        data_dir: Path | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> Served:
        """Start and wait (with a deadline) for the `pdp: serving` line."""
        data_dir = data_dir or self.root / "data"
        log = self.root / f"serve-{len(self._served)}.log"
        proc = self.popen(bundle, data_dir=data_dir, args=args, env=env, log=log)
        line = _read_line(proc, READY_TIMEOUT)
        if "pdp: serving" not in line:
            proc.kill()
            proc.wait(10)
            raise RuntimeError(f"pdp serve did not start: {line!r}\n{log.read_text()[-3000:]}")
        grpc_target = line.split("grpc=")[1].split()[0]
        http = line.split("http=")[1].split()[0] if "http=" in line else ""
        served = Served(proc, grpc_target, http, bundle, data_dir, log, line.strip())
        self._served.append(served)
        return served

    def popen(
        self,
        bundle: Path,
        *,
        data_dir: Path | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> subprocess.Popen[str]:
        """The process only, not waited for (for tests of a server that must refuse to start)."""
        data_dir = data_dir or self.root / "data"
        log = log or self.root / f"popen-{time.monotonic_ns()}.log"
        err = log.open("w")
        try:
            proc = subprocess.Popen(
                self.argv(bundle, data_dir, args),
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        finally:
            err.close()
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        for served in self._served:
            served.channel.close()
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(20)
            if proc.stdout is not None:
                proc.stdout.close()


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line, or "" if the process exits or the deadline passes first."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(timeout=0.2):
                return proc.stdout.readline()
            if proc.poll() is not None:
                return ""
        return ""
    finally:
        sel.close()


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def code_of(call: Any) -> grpc.StatusCode:
    """The status code a call ends with (OK if it returns)."""
    try:
        call()
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def operator_token(factory: ServeFactory, served: Served) -> str:
    """A token of an operator's client: bound to no tenant, every admin scope."""
    return served.token(*factory.client(tenant="*", scopes=("admin",)))
