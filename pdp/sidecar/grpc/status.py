"""The one translation from internal exceptions to gRPC status codes, and the transport's own
exceptions: `RequestInvalid` names the offending field; `Unauthenticated` is a missing or unusable
credential; `ScopeRequired` a valid one without the scope the call needs. It maps the categories of
`pdp.errors`, not their leaves, so a new exception in a category needs no change here.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

from pdp import errors
from pdp.errors import InvalidRequest, Overloaded, PermissionDenied, Unavailable
from pdp.tokens.errors import InvalidToken

log = logging.getLogger(__name__)


class RequestInvalid(InvalidRequest):
    """A request field is missing, malformed or over a limit."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class Unauthenticated(errors.Unauthenticated):
    """No credential, or one this server cannot accept (UNAUTHENTICATED, never a decision)."""


class ScopeRequired(PermissionDenied):
    """A valid credential that lacks the scope the call needs: a deny (PERMISSION_DENIED)."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"this call needs the `{scope}` scope (or `admin`)")
        self.scope = scope


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one translation from internal exceptions to the wire."""
    if isinstance(exc, InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, Unavailable):  # e.g. the tuple store is down: retry later, elsewhere
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, PermissionDenied):  # known caller, no permission
        return grpc.StatusCode.PERMISSION_DENIED, str(exc)
    if isinstance(exc, InvalidToken):  # a short fixed reason, never the token itself
        return grpc.StatusCode.UNAUTHENTICATED, f"invalid token: {exc}"
    if isinstance(exc, PermissionError):  # what any other subject-token verifier raises
        return grpc.StatusCode.UNAUTHENTICATED, str(exc) or "invalid subject token"
    log.exception("internal error", exc_info=exc)
    # never echo internals (paths, values, secrets) to a caller
    return grpc.StatusCode.INTERNAL, "internal error"


def abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    code, message = to_status(exc)
    context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort always raises
