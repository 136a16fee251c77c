"""Stock clients: grpc.health.v1 and server reflection work without our proto file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from pdp.sidecar.app import App


def _health(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        return stub.Check(health_pb2.HealthCheckRequest(service=service)).status


def test_serving_with_a_valid_bundle(app: App) -> None:
    assert _health(app.grpc_target) == health_pb2.HealthCheckResponse.SERVING
    assert _health(app.grpc_target, "pdp.v1.Authorizer") == health_pb2.HealthCheckResponse.SERVING


def test_not_serving_without_a_valid_bundle(make_app: Callable[..., App], bundle_dir: Path) -> None:
    (bundle_dir / "policy.pdp").write_text("permit broken: read on nosuchtype\n")
    app = make_app()
    assert _health(app.grpc_target) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert app.engine.bundle is None


def test_reflection_lists_and_describes_services(app: App) -> None:
    with grpc.insecure_channel(app.grpc_target) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert {"pdp.v1.Authorizer", "pdp.v1.Admin", "grpc.health.v1.Health"} <= services
        pool = descriptor_pool.DescriptorPool(db)
        check = pool.FindServiceByName("pdp.v1.Authorizer").methods_by_name["Check"]
        assert check.input_type.fields_by_name["subject_token"].containing_oneof.name == (
            "principal"
        )
