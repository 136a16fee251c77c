"""`pdp.sidecar.v1.Process/Identify`: which of the processes of `pdp serve --processes N` a
connection reached (the kernel spreads connections over them, never the calls of one connection).

Served only when N > 1. Request `google.protobuf.Empty`; answer a `google.protobuf.Struct` of
`pid`, `index` (0..N-1) and `processes` (N). It tells nothing a caller could not guess; no admin
credential is asked for.
"""

from __future__ import annotations

import os
from typing import Any

import grpc
from google.protobuf.empty_pb2 import Empty
from google.protobuf.struct_pb2 import Struct

SERVICE = "pdp.sidecar.v1.Process"
IDENTIFY = f"/{SERVICE}/Identify"


def add_process_identity(server: grpc.Server, index: int, count: int) -> None:
    def identify(_request: Empty, _context: Any) -> Struct:
        out = Struct()
        out.update({"pid": os.getpid(), "index": index, "processes": count})
        return out

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Identify": grpc.unary_unary_rpc_method_handler(
                identify,
                request_deserializer=Empty.FromString,
                response_serializer=Struct.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
