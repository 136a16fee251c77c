"""Why an admin call failed. Decision calls never raise: a failed Check is a deny (`Answer`).

ClientError                           `code` (a gRPC status name), `details`, `attempts`
├── Unauthenticated(PermissionError)   no bearer token, or one the sidecar does not accept
├── PermissionDenied(PermissionError)  a valid token without the scope, or outside its tenant
├── InvalidArgument(ValueError)        the sidecar refused the request: nothing changed
├── Unavailable(ConnectionError)       a read the sidecar could not serve (after retries)
├── DeadlineExceeded(TimeoutError)     a read with no answer within its deadline
└── OutcomeUnknown                     a write that may or may not have committed
"""

from __future__ import annotations

# The codes after which a write's fate is unknown: the request may have reached the sidecar and
# committed before the answer was lost (a timeout, a connection cut, a crash mid-call).
UNSETTLED = frozenset({"DEADLINE_EXCEEDED", "UNAVAILABLE", "CANCELLED", "UNKNOWN", "INTERNAL"})


class ClientError(Exception):
    """An admin call failed with gRPC status `code` (a name such as `UNAVAILABLE`)."""

    def __init__(self, code: str, details: str, attempts: int = 1) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details
        self.attempts = attempts


class Unauthenticated(ClientError, PermissionError):
    """No bearer token, or an invalid, expired or revoked one."""


class PermissionDenied(ClientError, PermissionError):
    """A valid token without the call's scope, or a tenant-bound token outside its tenant."""


class InvalidArgument(ClientError, ValueError):
    """The sidecar refused the request, naming the field: nothing was changed."""


class Unavailable(ClientError, ConnectionError):
    """A read the sidecar could not serve, after the retries its deadline allowed."""


class DeadlineExceeded(ClientError, TimeoutError):
    """A read that had no answer within its deadline."""


class OutcomeUnknown(ClientError):
    """A write whose answer was lost (`code` says how): it may have committed. The sidecar applies
    tuples as a set, so re-sending the same writes and deletes leaves the same tuples, but it can
    undo a change another writer made in between: re-send only tuples no one else writes, or
    read them back (ReadTuples) first."""


_BY_CODE: dict[str, type[ClientError]] = {
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
    "INVALID_ARGUMENT": InvalidArgument,
    "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
}


def error_of(code: str, details: str, attempts: int, *, write: bool) -> ClientError:
    """The exception for an admin call that failed with `code`."""
    if write and code in UNSETTLED:
        return OutcomeUnknown(code, details, attempts)
    return _BY_CODE.get(code, ClientError)(code, details, attempts)
