"""The Python clients services use (docs/client.md): `Client` (blocking) and `AsyncClient`
(asyncio), with the same methods and results. Decisions fail closed: a failed call is a deny
saying why, never an exception. Admin calls raise pdp.client.errors.

    results  the values handed back (Answer, Listed, Planned, Status, ...)
    errors   why an admin call failed
    retry    which failures are tried again, and how often
    convert  the one translation to and from the wire, shared by both clients
    sync     Client;  aio  AsyncClient
"""

from pdp.client.aio import AsyncClient
from pdp.client.convert import answer, check_request, entity, struct, tuple_message
from pdp.client.errors import (
    ClientError,
    DeadlineExceeded,
    InvalidArgument,
    OutcomeUnknown,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from pdp.client.results import (
    CLIENT_ERROR,
    Answer,
    Change,
    Listed,
    Planned,
    Quarantined,
    Question,
    Rejected,
    Status,
    TuplePage,
)
from pdp.client.retry import Retry
from pdp.client.sync import Client

__all__ = [
    "CLIENT_ERROR",
    "Answer",
    "AsyncClient",
    "Change",
    "Client",
    "ClientError",
    "DeadlineExceeded",
    "InvalidArgument",
    "Listed",
    "OutcomeUnknown",
    "PermissionDenied",
    "Planned",
    "Quarantined",
    "Question",
    "Rejected",
    "Retry",
    "Status",
    "TuplePage",
    "Unauthenticated",
    "Unavailable",
    "answer",
    "check_request",
    "entity",
    "struct",
    "tuple_message",
]
