"""Server reflection, both versions: `grpc.reflection.v1alpha` (what grpcio-reflection ships) and
`grpc.reflection.v1` (what grpcurl and grpcui ask first).

The two protocols are the same messages with the same field numbers under another package name,
so one servicer answers both: v1 calls are decoded with the v1alpha message classes. grpcio-reflection
ships no v1 descriptor, and a client that lists services resolves each one, this one included, so
the v1 file descriptor is derived from the library's v1alpha one (package and type names
rewritten) rather than copied by hand.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1ALPHA_SERVICE = reflection.SERVICE_NAME
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
_V1ALPHA_PACKAGE = ".grpc.reflection.v1alpha."


def enable_reflection(service_names: Iterable[str], server: grpc.Server) -> None:
    """Serve reflection over `service_names` (and both reflection services) on `server`."""
    _register_v1_descriptor()
    servicer = reflection.ReflectionServicer((*service_names, V1ALPHA_SERVICE, V1_SERVICE))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        V1_SERVICE,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))


def _register_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return  # a second server in this process: already there
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = _V1_FILE
    proto.package = "grpc.reflection.v1"
    proto.ClearField("options")  # v1alpha's language options name v1alpha packages
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # messages and enums only: scalars have none
                field.type_name = _v1(field.type_name)
    for service in proto.service:
        for method in service.method:
            method.input_type = _v1(method.input_type)
            method.output_type = _v1(method.output_type)
    pool.AddSerializedFile(proto.SerializeToString())


def _v1(type_name: str) -> str:
    if type_name.startswith(_V1ALPHA_PACKAGE):
        return ".grpc.reflection.v1." + type_name.removeprefix(_V1ALPHA_PACKAGE)
    return type_name
