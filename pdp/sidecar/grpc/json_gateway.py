"""The HTTP/JSON API: the Authorizer's calls over HTTP, in the protobuf JSON mapping of the gRPC
messages (`POST /v1/check` takes a CheckRequest as JSON and answers a CheckResponse as JSON).

A route parses the body into the gRPC request message (protobuf's own JSON parser: an unknown or
mistyped field is an error naming it), then calls the very servicer method gRPC calls, with a
call context that turns an abort into an HTTP status. So an answer over HTTP is the gRPC answer
for the same request: the same validation, service object, decision cache, audit and
fail-closed rules, with no second conversion to drift. `GET /openapi.json` describes every route,
generated from the route table below and the messages' descriptors (pdp.sidecar.grpc.openapi).

A deny is a decision, not an HTTP error: `200` with `"decision": "EFFECT_DENY"`. HTTP errors are
for calls that got no decision: 400 a malformed body or field (named), 401 a bad subject token,
413 a body over the size limit, 503 no serving bundle or store, 500 anything unexpected (never
with internals in the message).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.sidecar.grpc.openapi import openapi_document
from pdp.sidecar.grpc.rpc_metrics import RpcMetrics
from pdp.sidecar.grpc.servicers import AuthorizerServicer
from pdp.sidecar.grpc.tracing import Tracer

# gRPC status -> HTTP status, as Google's API design guide maps them.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# Headers that never become call metadata (so never reach the audit stream, whatever its settings).
_PRIVATE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


@dataclass(frozen=True)
class JsonRoute:
    """One HTTP route: the Authorizer method it calls and what the OpenAPI document says of it."""

    path: str
    method: str  # the AuthorizerServicer method
    request: type[Message]
    response: type[Message]
    streamed: bool  # a server stream, answered as {"results": [...]}: every message, in order
    summary: str
    example: Mapping[str, Any]


_ALICE = {"type": "user", "id": "alice", "attributes": {"tenant": "acme"}}
_SPEC = {"type": "document", "id": "spec-1", "attributes": {"tenant": "acme", "owner": "alice"}}

ROUTES = (
    JsonRoute(
        "/v1/check",
        "Check",
        pdp_pb2.CheckRequest,
        pdp_pb2.CheckResponse,
        False,
        "May this subject do this action on this resource?",
        {"subject": _ALICE, "action": "read", "resource": _SPEC},
    ),
    JsonRoute(
        "/v1/batch-check",
        "BatchCheck",
        pdp_pb2.BatchCheckRequest,
        pdp_pb2.BatchCheckResponse,
        False,
        "Many checks in one call, answered in order, each its own decision or error.",
        {
            "items": [
                {
                    "correlationId": "1",
                    "request": {"subject": _ALICE, "action": "read", "resource": _SPEC},
                },
                {
                    "correlationId": "2",
                    "request": {"subject": _ALICE, "action": "delete", "resource": _SPEC},
                },
            ]
        },
    ),
    JsonRoute(
        "/v1/lookup-resources",
        "LookupResources",
        pdp_pb2.LookupResourcesRequest,
        pdp_pb2.LookupResourcesResponse,
        True,
        "Which resources of a type may this subject act on? (a page, resumable by cursor)",
        {"subject": _ALICE, "action": "read", "resourceType": "document", "limit": 100},
    ),
    JsonRoute(
        "/v1/lookup-subjects",
        "LookupSubjects",
        pdp_pb2.LookupSubjectsRequest,
        pdp_pb2.LookupSubjectsResponse,
        True,
        "Which subjects of a type may act on this resource?",
        {"resource": _SPEC, "action": "read", "subjectType": "user"},
    ),
    JsonRoute(
        "/v1/plan-resources",
        "PlanResources",
        pdp_pb2.PlanResourcesRequest,
        pdp_pb2.PlanResourcesResponse,
        False,
        "A filter over resource attributes selecting what this subject may act on.",
        {"subject": _ALICE, "action": "read", "resourceType": "document"},
    ),
)


class CallAborted(Exception):
    """What `HttpCallContext.abort` raises: the gRPC status the servicer chose."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class HttpCallContext:
    """The part of grpc.ServicerContext the Authorizer's methods use, for a call made over HTTP."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise CallAborted(code, details)

    def is_active(self) -> bool:
        return True

    def add_callback(self, _: Callable[[], None]) -> bool:
        return False


def json_routes(
    servicer: AuthorizerServicer,
    max_body_bytes: int,
    tracer: Tracer | None = None,
    rpc_metrics: RpcMetrics | None = None,
) -> list[BaseRoute]:
    """The HTTP/JSON routes over `servicer` (the gRPC server's own), and GET /openapi.json; each
    call in its span when `tracer` is on, as over gRPC."""
    document = json.dumps(openapi_document(ROUTES)).encode()

    async def openapi(_: HttpRequest) -> Response:
        return Response(document, media_type="application/json")

    routes: list[BaseRoute] = [Route("/openapi.json", openapi, methods=["GET"])]
    for route in ROUTES:
        routes.append(
            Route(
                route.path,
                _endpoint(servicer, route, max_body_bytes, tracer, rpc_metrics),
                methods=["POST"],
            )
        )
    return routes


def _endpoint(
    servicer: AuthorizerServicer,
    route: JsonRoute,
    max_body_bytes: int,
    tracer: Tracer | None,
    rpc_metrics: RpcMetrics | None,
) -> Callable[[HttpRequest], Any]:
    method = getattr(servicer, route.method)
    name = f"pdp.v1.Authorizer/{route.method}"
    if tracer is not None:  # the span covers a stream's every message
        method = _traced(method, name, route.streamed, tracer)

    def answer(message: Message, context: HttpCallContext) -> dict[str, Any]:
        return _call(method, message, context, route.streamed)

    call: Callable[[Message, HttpCallContext], dict[str, Any]] = answer
    if rpc_metrics is not None:  # counted once the answer is whole, a stream drained
        call = _counted(call, name, rpc_metrics)

    async def endpoint(http: HttpRequest) -> Response:
        body = await _body(http, max_body_bytes)
        if isinstance(body, Response):
            return body
        message = route.request()
        try:
            parsed = json.loads(body)
            if not isinstance(parsed, dict):
                raise json_format.ParseError(
                    f"a JSON object is expected, not {type(parsed).__name__}"
                )
            json_format.ParseDict(parsed, message)
        except (ValueError, json_format.ParseError) as exc:  # JSONDecodeError is a ValueError
            return _error(400, grpc.StatusCode.INVALID_ARGUMENT, f"body: {exc}")
        context = HttpCallContext(_metadata(http))
        try:
            answer = await run_in_threadpool(call, message, context)
        except CallAborted as exc:
            return _error(HTTP_STATUS.get(exc.code, 500), exc.code, exc.details)
        return JSONResponse(answer)

    return endpoint


def _call(
    method: Callable[[Message, HttpCallContext], Any],
    message: Message,
    context: HttpCallContext,
    streamed: bool,
) -> dict[str, Any]:
    if streamed:
        # the servicer may abort before its first message or between two: CallAborted either way
        return {"results": [_as_json(m) for m in method(message, context)]}
    return _as_json(method(message, context))


def _counted(
    method: Callable[[Message, HttpCallContext], dict[str, Any]],
    name: str,
    rpc_metrics: RpcMetrics,
) -> Callable[[Message, HttpCallContext], dict[str, Any]]:
    def counted(message: Message, context: HttpCallContext) -> dict[str, Any]:
        start, code = time.perf_counter(), "UNKNOWN"
        try:
            answer = method(message, context)
            code = "OK"
            return answer
        except CallAborted as exc:
            code = exc.code.name
            raise
        finally:
            rpc_metrics.record("http", name, code, time.perf_counter() - start)

    return counted


def _traced(
    method: Callable[[Message, HttpCallContext], Any], name: str, streamed: bool, tracer: Tracer
) -> Callable[[Message, HttpCallContext], Any]:
    def traced(message: Message, context: HttpCallContext) -> Any:
        def run() -> Any:
            return method(message, context)

        metadata = context.invocation_metadata()
        return tracer.stream(name, metadata, run) if streamed else tracer.call(name, metadata, run)

    return traced


def _as_json(message: Message) -> dict[str, Any]:
    # every field, defaults included, so `"decision": "EFFECT_DENY"` is always there to read
    out: dict[str, Any] = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True
    )
    return out


async def _body(http: HttpRequest, limit: int) -> str | Response:
    declared = http.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return _error(413, grpc.StatusCode.RESOURCE_EXHAUSTED, f"body: over {limit} bytes")
    chunks, size = [], 0
    async for chunk in http.stream():
        size += len(chunk)
        if size > limit:
            return _error(413, grpc.StatusCode.RESOURCE_EXHAUSTED, f"body: over {limit} bytes")
        chunks.append(chunk)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        return _error(400, grpc.StatusCode.INVALID_ARGUMENT, "body: not UTF-8 JSON")


def _metadata(http: HttpRequest) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in http.headers.items() if k not in _PRIVATE_HEADERS)


def _error(status: int, code: grpc.StatusCode, message: str) -> Response:
    return JSONResponse(
        {"code": code.value[0], "status": code.name, "message": message}, status_code=status
    )
