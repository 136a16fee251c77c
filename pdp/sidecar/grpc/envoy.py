"""Envoy's external authorization (`envoy.service.auth.v3.Authorization/Check`): the HTTP request
Envoy describes -> a bearer token verified as `subject_token` is, the route mapping
(pdp.sidecar.envoy_routes) -> Service.check -> an OK or a denied HTTP response. Fail closed: every
path that is not an ALLOW, an exception included, answers a denial.

  no bearer token                   401  WWW-Authenticate: Bearer realm="..."
  a token that does not verify      401  WWW-Authenticate: Bearer realm="...", error="invalid_token"
  a malformed path or bound id      400
  no route matches                  403
  the policy denies                 403 (404 when the deciding forbid says `as not_found`)
  anything failing on the way       403
  the policy allows                 OK, the subject and decision id headers set for the upstream
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import (
    attribute_context_pb2,
    external_auth_pb2,
    external_auth_pb2_grpc,
)
from envoy.type.v3 import http_status_pb2

from pdp.model import Entity, Request
from pdp.sidecar.envoy_routes import HttpRequest, MalformedPath, Routes, load_routes
from pdp.sidecar.grpc.servicers import SubjectFromToken
from pdp.sidecar.grpc.status import to_status
from pdp.sidecar.service import Service

log = logging.getLogger(__name__)

SERVICE_NAME = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name

# RFC 6750 section 2.1: `Bearer` then one b64token; anything else is no bearer token at all.
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*) *").fullmatch
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# INVARIANT: credentials never leave this module: not in the audit metadata, a log or a header
_CREDENTIALS = frozenset({"authorization", "proxy-authorization", "cookie"})

_OK = grpc.StatusCode.OK.value[0]
_UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.value[0]
_INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
_PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]
_INTERNAL = grpc.StatusCode.INTERNAL.value[0]


class NoBearerToken(Exception):
    """The request carries no `authorization: Bearer` header: a challenge, not an error."""


class EnvoyAuthorizer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Check: convert, authenticate, map, decide (Service.check: audit and metrics), convert."""

    def __init__(
        self, service: Service, routes: Routes, subject_from_token: SubjectFromToken
    ) -> None:
        self._service = service
        self._routes = routes
        self._subject_from_token = subject_from_token

    def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        try:
            return self._check(request.attributes.request.http)
        except Exception:  # INVARIANT: an error anywhere denies (fail closed)
            log.exception("envoy check failed: denied")
            return self._denied(403, _INTERNAL, "denied: internal error")

    def _check(
        self, http: attribute_context_pb2.AttributeContext.HttpRequest
    ) -> external_auth_pb2.CheckResponse:
        headers = _headers(http)
        try:
            subject = self._subject(headers.get("authorization"))
        except NoBearerToken:
            return self._challenge("")
        except Exception as exc:
            code, _ = to_status(exc)  # the one translation: what it would answer over gRPC
            if code is not grpc.StatusCode.UNAUTHENTICATED:
                raise
            return self._challenge("invalid_token")
        try:
            match = self._routes.match(HttpRequest(http.method, http.host, http.path, headers))
        except MalformedPath as exc:
            return self._denied(400, _INVALID_ARGUMENT, f"bad request: {exc}")
        if match is None:
            return self._denied(403, _PERMISSION_DENIED, "denied: no route")

        def metadata() -> Iterable[tuple[str, str]]:  # what the audit may copy (its allowlist)
            return [(k, v) for k, v in headers.items() if k not in _CREDENTIALS]

        decision, decision_id = self._service.check(
            Request(subject, match.action, match.resource, match.context), metadata=metadata
        )
        if decision.allowed:
            return self._allowed(subject, decision_id)
        extra = _set(self._routes.decision_header, decision_id)
        if decision.not_found:
            return self._denied(404, _PERMISSION_DENIED, "not found", extra)
        return self._denied(403, _PERMISSION_DENIED, "denied", extra)

    def _subject(self, authorization: str | None) -> Entity:
        if authorization is None or not authorization.lower().startswith("bearer "):
            raise NoBearerToken
        m = _BEARER(authorization)
        if m is None:
            raise _InvalidBearer
        return self._subject_from_token(m.group(1))

    def _allowed(self, subject: Entity, decision_id: str) -> external_auth_pb2.CheckResponse:
        out = external_auth_pb2.CheckResponse()
        out.status.code = _OK
        out.ok_response.headers.extend(
            [
                *_set(self._routes.subject_header, subject.id),
                *_set(self._routes.decision_header, decision_id),
            ]
        )
        return out

    def _challenge(self, error: str) -> external_auth_pb2.CheckResponse:
        value = f'Bearer realm="{self._routes.realm}"'
        if error:
            value += f', error="{error}"'
        return self._denied(
            401, _UNAUTHENTICATED, "unauthenticated", _set("www-authenticate", value)
        )

    def _denied(
        self,
        http_status: int,
        code: int,
        body: str,
        headers: Iterable[base_pb2.HeaderValueOption] = (),
    ) -> external_auth_pb2.CheckResponse:
        out = external_auth_pb2.CheckResponse()
        out.status.code = code
        out.status.message = body
        denied = out.denied_response
        denied.status.code = http_status_pb2.StatusCode.Value(_STATUS_NAMES[http_status])
        denied.headers.extend(headers)
        denied.body = body
        return out


class _InvalidBearer(PermissionError):
    """`Bearer` followed by something that is not one b64token: an invalid token."""


_STATUS_NAMES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}


def _set(name: str, value: str) -> list[base_pb2.HeaderValueOption]:
    """A header that replaces any the client sent under the same name; none for name ""."""
    if not name:
        return []
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE
        )
    ]


def _headers(http: attribute_context_pb2.AttributeContext.HttpRequest) -> Mapping[str, str]:
    """The request's headers, lowercase names: Envoy's `headers` map, or `header_map` when Envoy
    is set to send raw headers (repeated headers joined with `,`, as Envoy joins them)."""
    if http.headers:
        return {k.lower(): v for k, v in http.headers.items()}
    joined: dict[str, str] = {}
    for h in http.header_map.headers:
        value = h.value or h.raw_value.decode("utf-8", "replace")
        key = h.key.lower()
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    return joined


def add_envoy_authorizer(
    server: grpc.Server,
    service: Service,
    routes_file: Path | None,
    subject_from_token: SubjectFromToken | None,
) -> bool:
    """Serve Envoy's Authorization service on `server` when a routes file is configured (read
    once, here: a bad file stops the start). Without one it is not served, and an Envoy pointed
    here gets UNIMPLEMENTED, which it denies under `failure_mode_allow: false`."""
    if routes_file is None:
        return False
    if subject_from_token is None:
        raise ValueError("envoy_routes: needs token keys to verify the bearer tokens")
    routes = load_routes(routes_file)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        EnvoyAuthorizer(service, routes, subject_from_token), server
    )
    log.info("envoy ext_authz: %d routes from %s", len(routes.routes), routes_file)
    return True
