"""The composition root: builds the engine, the service (pdp.sidecar.service), audit, the store
and its follower, the reloader, the token runtime, the gRPC and HTTP servers, wires them together,
starts and stops them. Nothing here decides or converts: it only composes.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.bundle import Bundle, load_bundle
from pdp.bundle_signing import Verifier as BundleVerifier
from pdp.engine import Engine
from pdp.engine.slicing import Slice
from pdp.errors import Unavailable
from pdp.sidecar import audit
from pdp.sidecar.bundle_source import BundleSource, HttpBundleSource, redacted
from pdp.sidecar.config import Config
from pdp.sidecar.follower import Follower
from pdp.sidecar.grpc.auth import AdminAuth, subjects_from
from pdp.sidecar.grpc.decode_guard import DecodeGuard
from pdp.sidecar.grpc.envoy import add_envoy_authorizer
from pdp.sidecar.grpc.json_gateway import json_routes
from pdp.sidecar.grpc.process import add_process_identity
from pdp.sidecar.grpc.reflection import enable_reflection
from pdp.sidecar.grpc.rpc_metrics import RpcMetrics, RpcMetricsInterceptor
from pdp.sidecar.grpc.servicers import (
    SUBJECT_MODES,
    TOKEN_ONLY,
    AdminServicer,
    AuthorizerServicer,
    SubjectFromToken,
)
from pdp.sidecar.grpc.tracing import Tracer, TracingInterceptor, tracer_from_env
from pdp.sidecar.http import http_routes
from pdp.sidecar.metrics import Metrics
from pdp.sidecar.reloader import Reloader
from pdp.sidecar.service import Service
from pdp.sidecar.store import open_store
from pdp.sidecar.supervisor import Slot
from pdp.tokens import TokenRuntime, build_tokens

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    pdp_pb2.DESCRIPTOR.services_by_name["Authorizer"].full_name,
    pdp_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
)


# Token events reach the audit stream as identifiers only; these names are never copied even if a
# future event were to carry them.
_NEVER_AUDITED = frozenset(
    {"token", "access_token", "refresh_token", "subject_token", "secret", "client_secret", "key"}
)


def token_audit_hook(hub: audit.AuditHub) -> Callable[[str, dict[str, Any]], None]:
    def on_event(kind: str, fields: dict[str, Any]) -> None:
        kept = {k: v for k, v in fields.items() if k not in _NEVER_AUDITED}
        hub.event(audit.TOKEN, {"event": kind, "fields": kept})

    return on_event


def bundle_loader(cfg: Config) -> Callable[[Path], Bundle]:
    """How the sidecar loads a bundle: a stable read, the manifest checked, a signature demanded
    when a verify key is set (read once, here: a bad key file stops the start)."""
    verify = BundleVerifier.from_file(cfg.bundle_verify_key) if cfg.bundle_verify_key else None

    def load(path: Path) -> Bundle:
        return load_bundle(path, verify=verify, quiet_seconds=cfg.bundle_quiet_seconds)

    return load


def bundle_source(cfg: Config, load: Callable[[Path], Bundle], service: Service) -> BundleSource:
    """The bundle directory, watched, or the bundle URL, polled (pdp.sidecar.bundle_source)."""
    if not cfg.bundle_url:
        return Reloader(
            cfg.bundle, load=load, apply=service.apply_bundle, rejected=service.reject_bundle
        )
    if cfg.bundle_verify_key is None:
        log.warning(
            "INSECURE: bundles from %s are loaded unsigned: whoever can answer for that URL "
            "decides every check; set --bundle-verify-key",
            redacted(cfg.bundle_url),
        )
    return HttpBundleSource(
        cfg.bundle_url,
        cfg.bundle,
        load=load,
        apply=service.apply_bundle,
        rejected=service.reject_bundle,
        poll_seconds=cfg.bundle_poll_seconds,
    )


class CannotListen(Unavailable):
    """A listen address is busy (or not ours): `cannot listen on HOST:PORT: REASON`."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")
        self.address = address


def _per_process(path: Path | None, slot: Slot | None) -> Path | None:
    """Each of N processes writes and rotates an audit file of its own: `audit.p1.jsonl`."""
    if path is None or slot is None:
        return path
    return path.with_name(f"{path.stem}.p{slot.index}{path.suffix}")


def _interceptors(
    cfg: Config, tokens: TokenRuntime | None, tracer: Tracer | None, rpc_metrics: RpcMetrics
) -> list[grpc.ServerInterceptor]:
    # the decode guard first: it wraps what the others return, so garbage is refused
    # before anything else runs (AdminAuth still sees every call's metadata)
    interceptors: list[grpc.ServerInterceptor] = [DecodeGuard()]
    if tracer is not None:  # before AdminAuth: a refused admin call has its span too
        interceptors.append(TracingInterceptor(tracer))
    # inside the span, so a call's duration carries its trace as an exemplar; before AdminAuth,
    # so a refused admin call is counted with its code
    interceptors.append(RpcMetricsInterceptor(rpc_metrics))
    if cfg.insecure_admin:
        log.warning(
            "INSECURE: --insecure-admin is set: anyone who can reach %s may write tuples, "
            "read them and stream the audit log without a credential",
            cfg.listen,
        )
    else:
        interceptors.append(AdminAuth(tokens.verifier if tokens else None))
        if tokens is None:
            log.warning("no token keys configured: admin RPCs are refused")
    return interceptors


def _bind(hostport: str, *, shared: bool = False) -> socket.socket:
    """A listening socket; `shared`: with SO_REUSEPORT, for one of the processes of
    `--processes N` (pdp.sidecar.supervisor made sure the port is theirs alone)."""
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, int(port)))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise CannotListen(hostport, (exc.strerror or str(exc)).lower()) from exc
    return sock


class App:
    """Everything a running sidecar is made of, built from a `Config`."""

    def __init__(
        self,
        cfg: Config,
        *,
        subject_from_token: SubjectFromToken | None = None,
        extra_routes: Sequence[BaseRoute] = (),
        slot: Slot | None = None,
    ) -> None:
        self.cfg = cfg
        self.slot = slot
        load = bundle_loader(cfg)  # an unusable verify key stops here, before anything is opened
        held = Slice.of(cfg.slice_types, cfg.slice_tenants)
        self.engine = Engine(cache_ttl=cfg.cache_ttl, cache_size=cfg.cache_size, slice_=held)
        log.info("tuples held: %s", held.describe())
        self.audit = audit.AuditHub(cfg.audit)
        self.metrics = Metrics()
        # Durable tuple state, shared with every sidecar that opens the same store (other
        # processes on this data directory, or the fleet's PostgreSQL); none: memory only.
        self.store = (
            open_store(cfg.store, cfg.data_dir) if cfg.store or cfg.data_dir is not None else None
        )
        self.follower = Follower(self.store, self.engine) if self.store is not None else None
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self._set_serving(False)
        self.service = Service(
            self.engine,
            self.audit,
            self.metrics,
            self.store,
            self.follower,
            self._set_serving,
            quarantine_orphans=cfg.quarantine_orphans,
            consistency_wait=cfg.consistency_wait,
        )
        audit_file = _per_process(cfg.audit_file, slot)
        self.file_sink = (
            audit.FileSink(
                self.audit, audit_file, max_bytes=cfg.audit_max_bytes, backups=cfg.audit_backups
            )
            if audit_file is not None
            else None
        )
        self.tokens: TokenRuntime | None = None
        if cfg.tokens is not None:
            self.tokens = build_tokens(cfg.tokens, on_event=token_audit_hook(self.audit))
            if subject_from_token is None:
                subject_from_token = subjects_from(self.tokens.verifier)
        self.reloader = bundle_source(cfg, load, self.service)
        if cfg.subjects not in SUBJECT_MODES:
            raise ValueError(f"subjects: `{cfg.subjects}` is not one of {', '.join(SUBJECT_MODES)}")
        if cfg.subjects == TOKEN_ONLY and subject_from_token is None:
            raise ValueError("subjects: token-only needs token keys to verify subject tokens")
        self.authorizer = AuthorizerServicer(
            self.service, cfg.limits, subject_from_token, token_only=cfg.subjects == TOKEN_ONLY
        )
        self.admin = AdminServicer(self.service, cfg.limits)
        # Tracing is on only when OTEL_* asks for it; off, there is no interceptor and no cost.
        self.tracer = tracer_from_env()
        self.rpc_metrics = RpcMetrics(self.service.metrics_registry)
        interceptors = _interceptors(cfg, self.tokens, self.tracer, self.rpc_metrics)
        # Threaded server, measured faster than grpc.aio here (see benchmarks/grpc_load.py).
        # Each audit stream holds a worker, so the pool has room for every allowed subscriber.
        self.server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=cfg.workers + cfg.audit.max_subscribers,
                thread_name_prefix="grpc",
            ),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", cfg.limits.max_message_bytes),
                ("grpc.max_send_message_length", cfg.limits.max_message_bytes),
                # a second sidecar on the same port must fail to bind; the N processes of one
                # `pdp serve --processes N` share theirs (the supervisor holds it for them alone)
                ("grpc.so_reuseport", 1 if slot is not None else 0),
            ],
        )
        pdp_pb2_grpc.add_AuthorizerServicer_to_server(self.authorizer, self.server)
        pdp_pb2_grpc.add_AdminServicer_to_server(self.admin, self.server)
        add_envoy_authorizer(self.server, self.service, cfg.envoy_routes, subject_from_token)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_reflection((*SERVICE_NAMES, health.SERVICE_NAME), self.server)
        if slot is not None:
            add_process_identity(self.server, slot.index, slot.count)
        self.grpc_port = 0
        self.http_routes: list[BaseRoute] = [
            *http_routes(self.service),
            *json_routes(
                self.authorizer, cfg.limits.max_message_bytes, self.tracer, self.rpc_metrics
            ),
            *extra_routes,
        ]
        if self.tokens is not None:
            # /oauth/*, /.well-known/*; its lifespan does not run when mounted: see _maintain
            self.http_routes.append(Mount("", app=self.tokens.app()))
        self._maintenance: threading.Thread | None = None
        self.http_port = 0
        self._http: uvicorn.Server | None = None
        self._http_thread: threading.Thread | None = None
        self._http_sock: socket.socket | None = None
        self._stopped = threading.Event()
        if slot is None:  # a port in use stops the start here, before anything runs
            self._listen()

    def _listen(self) -> None:
        """Bind the gRPC and HTTP ports. A process of `--processes N` binds in `start`, once its
        bundle is loaded: the kernel sends it connections from its bind on, and a restarted one
        must not hold new connections waiting while it loads."""
        cfg, shared = self.cfg, self.slot is not None
        tcp = not cfg.listen.startswith("unix:")
        if tcp and not cfg.listen.endswith(":0") and not shared:
            # a plain bind first: it names the reason (busy, not a local address), and grpcio
            # would log a line of its own and raise a RuntimeError that names none
            _bind(cfg.listen).close()
        try:
            self.grpc_port = self.server.add_insecure_port(cfg.listen)
        except RuntimeError as exc:  # grpcio >= 1.50 raises where older ones returned 0
            raise CannotListen(cfg.listen, "the gRPC server could not bind it") from exc
        if self.grpc_port == 0 and tcp:
            raise CannotListen(cfg.listen, "the gRPC server could not bind it")
        if cfg.http_listen:
            self._http_sock = _bind(cfg.http_listen, shared=shared)
            self.http_port = self._http_sock.getsockname()[1]

    def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)

    @property
    def grpc_target(self) -> str:
        if self.cfg.listen.startswith("unix:"):
            return self.cfg.listen
        host = self.cfg.listen.rpartition(":")[0]
        return f"{host}:{self.grpc_port}"

    def start(self) -> None:
        # the durable overlay is replayed into the first bundle that loads (pdp.sidecar.writer)
        loaded = self.reloader.reload_now()
        if not loaded:
            # fail closed: serve, deny everything with NO_BUNDLE, report NOT_SERVING until fixed
            log.error(
                "no valid bundle at %s; every check is denied until one loads",
                redacted(self.cfg.bundle_url) if self.cfg.bundle_url else self.cfg.bundle,
            )
        if self.slot is not None:
            self._listen()  # before any thread starts: a refusal leaves nothing running
        if self.cfg.watch:
            self.reloader.start()
        if self.follower is not None:
            self.follower.start()
        if self.tokens is not None:
            self._maintenance = threading.Thread(
                target=self.tokens.maintain_until,
                args=(self._stopped,),
                name="token-maintenance",
                daemon=True,
            )
            self._maintenance.start()
        self.server.start()
        if self._http_sock is not None:
            app = Starlette(routes=self.http_routes)
            config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
            self._http = uvicorn.Server(config)
            sock = self._http_sock
            self._http_thread = threading.Thread(
                target=self._http.run, kwargs={"sockets": [sock]}, name="http", daemon=True
            )
            self._http_thread.start()

    def stop(self, grace: float | None = None) -> None:
        """Graceful: stop accepting, let in-flight calls finish, then flush the audit sinks."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.cfg.grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()
        self.admin.shutdown()  # audit streams would otherwise hold the drain open to the end
        self.server.stop(grace).wait()
        self.reloader.stop()
        if self._http is not None:
            self._http.should_exit = True
            if self._http_thread is not None:
                self._http_thread.join(5.0)
        if self._maintenance is not None:
            self._maintenance.join(5.0)
        if self.tokens is not None:
            self.tokens.close()  # after the HTTP side: no request may find the store closed
        if self.file_sink is not None:
            self.file_sink.close()
        self.audit.close()
        if self.follower is not None:
            self.follower.stop()
        if self.store is not None:
            self.store.close()
        if self.tracer is not None:
            self.tracer.shutdown()  # exports the spans still queued

    def run_until_signal(self, on_ready: Callable[[App], Any] = lambda _: None) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop gracefully."""
        stop = threading.Event()

        def handle(signum: int, _frame: object) -> None:
            log.info("signal %d: draining", signum)
            stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        self.start()
        on_ready(self)
        while not stop.wait(0.5):  # wake now and then: signal handlers run between waits
            pass
        self.stop()
