"""Admin authentication: a bearer token with the scope each `pdp.v1.Admin` call needs, the caller's
tenant carried into the call, and `subject_token` verification for Check."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.model import Entity
from pdp.sidecar.grpc.servicers import ADMIN_CALLER, SubjectFromToken
from pdp.sidecar.grpc.status import ScopeRequired, Unauthenticated, to_status
from pdp.tenancy import ANY_TENANT, Caller, TenantDenied
from pdp.tokens import VerifiedSubject, Verifier

# The scope each admin RPC needs (`admin` covers them all). An admin method missing here needs
# `admin` itself: a new RPC is closed until someone decides who may call it.
ADMIN_PREFIX = "/" + pdp_pb2.DESCRIPTOR.services_by_name["Admin"].full_name + "/"
ADMIN_SCOPES = {
    ADMIN_PREFIX + "WriteTuples": "tuples:write",
    ADMIN_PREFIX + "DeleteTuples": "tuples:write",
    ADMIN_PREFIX + "ReadTuples": "tuples:read",
    ADMIN_PREFIX + "Watch": "tuples:read",
    ADMIN_PREFIX + "SubscribeAudit": "audit:read",
    ADMIN_PREFIX + "BundleStatus": "audit:read",
}
# Calls whose answer spans every tenant: the audit stream shows every tenant's decisions.
TENANTLESS_ONLY = frozenset({ADMIN_PREFIX + "SubscribeAudit"})
_NO_VERIFIER = (
    "admin calls need a bearer token, and no token verifier is configured "
    "(start with token keys, or --insecure-admin for local development)"
)


class AdminAuth(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints
    """Bearer-token authentication and scope check on every `pdp.v1.Admin` call; other services
    (Check above all) pass through untouched. `verifier` None refuses every admin call."""

    def __init__(self, verifier: Verifier | None) -> None:
        self._verifier = verifier

    def authorize(self, method: str, authorization: str | None) -> VerifiedSubject:
        """The caller, or `Unauthenticated` / `InvalidToken` / `ScopeRequired`."""
        if self._verifier is None:
            raise Unauthenticated(_NO_VERIFIER)
        caller = self._verifier.verify_bearer(authorization)
        scope = ADMIN_SCOPES.get(method, "admin")
        if not caller.allows(scope):
            raise ScopeRequired(scope)
        if method in TENANTLESS_ONLY and caller.tenant != ANY_TENANT:
            # INVARIANT: nothing a tenant-bound credential reads spans other tenants
            raise TenantDenied(
                f"this call spans every tenant; it needs a credential bound to no tenant, "
                f"and this one is bound to `{caller.tenant}`"
            )
        return caller

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        method: str = details.method
        if handler is None or not method.startswith(ADMIN_PREFIX):
            return handler
        authorization = None
        for key, value in details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str):
                authorization = value
                break
        try:
            caller = self.authorize(method, authorization)
        except Exception as exc:
            return _refusal(handler, *to_status(exc))
        return _as_caller(handler, Caller.from_claims(caller.subject, caller.tenant))


def _as_caller(handler: Any, caller: Caller) -> Any:
    """`handler` with ADMIN_CALLER set to `caller` while it runs (in the worker thread).

    A streaming handler is a generator gRPC resumes later, outside this call: each step runs in
    a context that holds the caller, or a tenant-bound caller would be served as the default
    (tenantless) one (Admin.Watch filters by the caller's tenant)."""
    if handler.response_streaming:
        return _as_caller_streaming(handler, caller)
    behavior = handler.unary_unary

    def call(request: object, context: grpc.ServicerContext) -> Any:
        reset = ADMIN_CALLER.set(caller)
        try:
            return behavior(request, context)
        finally:
            ADMIN_CALLER.reset(reset)

    return grpc.unary_unary_rpc_method_handler(
        call,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _as_caller_streaming(handler: Any, caller: Caller) -> Any:
    behavior = handler.unary_stream

    def call(request: object, context: grpc.ServicerContext) -> Iterator[Any]:
        ctx = contextvars.copy_context()
        ctx.run(ADMIN_CALLER.set, caller)
        responses = ctx.run(behavior, request, context)
        while True:
            try:
                yield ctx.run(next, responses)
            except StopIteration:
                return

    return grpc.unary_stream_rpc_method_handler(
        call,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _refusal(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    """A handler of the same shape as `handler` that only answers `code`."""

    def refuse(_request: object, context: grpc.ServicerContext) -> None:
        context.abort(code, message)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
    return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)


def subjects_from(verifier: Verifier, entity_type: str = "user") -> SubjectFromToken:
    """`subject_token` -> the engine's subject entity. Verifies on every call (the verifier's own
    cache makes a hot token cost about a microsecond, and a revocation evicts it at once)."""
    entities: dict[VerifiedSubject, Entity] = {}

    def subject_from_token(token: str) -> Entity:
        subject = verifier.verify(token)  # raises InvalidToken: UNAUTHENTICATED, never a decision
        entity = entities.get(subject)  # a verified subject maps to one immutable entity
        if entity is None:
            if len(entities) >= 50_000:
                entities.clear()
            entity = entities[subject] = subject.to_entity(entity_type)
        return entity

    return subject_from_token
