"""The OpenAPI 3.1 document of the HTTP/JSON API, generated from its one source of truth: the route
table (pdp.sidecar.grpc.json_gateway.ROUTES) and the protobuf descriptors of the messages each
route takes and answers. A field added to the .proto appears here with no edit.

Schemas follow the protobuf JSON mapping: lowerCamelCase names (parsers accept the proto names
too), enums as their names, 64-bit integers as strings or numbers, `google.protobuf.Struct` as an
object of any JSON values.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

if TYPE_CHECKING:
    from pdp.sidecar.grpc.json_gateway import JsonRoute

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
}
_INT64 = {"type": ["string", "integer"], "format": "int64"}
# Well-known types have their own JSON forms.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
}
_ERROR = {
    "type": "object",
    "description": "A call that got no decision.",
    "properties": {
        "code": {"type": "integer", "description": "the gRPC status code"},
        "status": {"type": "string", "description": "its name, e.g. INVALID_ARGUMENT"},
        "message": {"type": "string", "description": "what went wrong, naming the field"},
    },
    "required": ["code", "status", "message"],
}
_ERRORS = {
    "400": "a malformed body or field (the message names it)",
    "401": "the subject_token is missing, invalid, expired or revoked",
    "413": "the body is over the size limit",
    "503": "no serving bundle, or the tuple store is unavailable",
}


def openapi_document(routes: Iterable[JsonRoute]) -> dict[str, Any]:
    routes = list(routes)
    schemas: dict[str, Any] = {"Error": _ERROR}
    paths: dict[str, Any] = {}
    for route in routes:
        _add_schema(route.request.DESCRIPTOR, schemas)
        _add_schema(route.response.DESCRIPTOR, schemas)
        answer: dict[str, Any] = _ref(route.response.DESCRIPTOR)
        if route.streamed:
            answer = {
                "type": "object",
                "description": "every message of the gRPC stream, in order",
                "properties": {"results": {"type": "array", "items": answer}},
            }
        errors = {
            status: {"description": text, "content": _json({"$ref": "#/components/schemas/Error"})}
            for status, text in _ERRORS.items()
        }
        paths[route.path] = {
            "post": {
                "operationId": route.method,
                "summary": route.summary,
                "description": f"The gRPC call pdp.v1.Authorizer/{route.method}, as JSON.",
                "requestBody": {
                    "required": True,
                    "content": _json(
                        _ref(route.request.DESCRIPTOR),
                        {"example": {"value": dict(route.example)}},
                    ),
                },
                "responses": {"200": {"description": "the answer", "content": _json(answer)}}
                | errors,
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pdp sidecar HTTP/JSON API",
            "version": "v1",
            "description": "The Authorizer's calls in the protobuf JSON mapping of its gRPC "
            "messages. A deny is a 200 with decision EFFECT_DENY.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _json(schema: dict[str, Any], examples: dict[str, Any] | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if examples:
        media["examples"] = examples
    return {"application/json": media}


def _ref(desc: Descriptor) -> dict[str, Any]:
    if desc.full_name in _WELL_KNOWN:
        return dict(_WELL_KNOWN[desc.full_name])
    return {"$ref": f"#/components/schemas/{_name(desc)}"}


def _name(desc: Descriptor) -> str:
    name: str = desc.full_name
    return name.removeprefix("pdp.v1.").replace(".", "_")


def _add_schema(desc: Descriptor, schemas: dict[str, Any]) -> None:
    """The schema of `desc` and of every message it reaches, once each (iterative: messages may
    refer to themselves, as PlanFilter does)."""
    pending = [desc]
    while pending:
        d = pending.pop()
        if d.full_name in _WELL_KNOWN or _name(d) in schemas:
            continue
        properties: dict[str, Any] = {}
        for field in d.fields:
            properties[field.json_name] = _field_schema(field, pending)
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        oneofs = [o for o in d.oneofs if not o.name.startswith("_")]
        if oneofs:
            schema["description"] = "; ".join(
                "at most one of " + ", ".join(f.json_name for f in o.fields) for o in oneofs
            )
        schemas[_name(d)] = schema


def _field_schema(field: FieldDescriptor, pending: list[Descriptor]) -> dict[str, Any]:
    msg = field.message_type
    if msg is not None and msg.GetOptions().map_entry:
        value = msg.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _single(value, pending)}
    one = _single(field, pending)
    if field.is_repeated:
        return {"type": "array", "items": one}
    return one


def _single(field: FieldDescriptor, pending: list[Descriptor]) -> dict[str, Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        pending.append(field.message_type)
        return _ref(field.message_type)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    if field.type in _SCALARS:
        return dict(_SCALARS[field.type])
    return dict(_INT64)  # int64, uint64, sint64, fixed64, sfixed64
