"""Stock clients: grpc.health.v1 and server reflection work without our proto file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
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


def _v1_call(
    channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    """One request over grpc.reflection.v1, the version grpcurl and grpcui ask first (its
    messages are v1alpha's, field for field)."""
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    (answer,) = list(call(iter([request]), timeout=10))
    return answer


def test_reflection_v1_answers_what_v1alpha_answers(app: App) -> None:
    with grpc.insecure_channel(app.grpc_target) as ch:
        listed = _v1_call(ch, reflection_pb2.ServerReflectionRequest(list_services=""))
        v1_services = {s.name for s in listed.list_services_response.service}
        assert v1_services == set(ProtoReflectionDescriptorDatabase(ch).get_services())
        assert {"grpc.reflection.v1.ServerReflection", "pdp.v1.Authorizer"} <= v1_services
        # a client resolves every listed service, the reflection services included
        for name in sorted(v1_services):
            found = _v1_call(
                ch, reflection_pb2.ServerReflectionRequest(file_containing_symbol=name)
            )
            assert found.WhichOneof("message_response") == "file_descriptor_response", name
            files = [
                descriptor_pb2.FileDescriptorProto.FromString(b)
                for b in found.file_descriptor_response.file_descriptor_proto
            ]
            package, _, service = name.rpartition(".")
            assert any(
                f.package == package and service in {s.name for s in f.service} for f in files
            ), name
        unknown = _v1_call(
            ch, reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Service")
        )
        assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
