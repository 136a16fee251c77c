"""What the clients hand back: frozen values, never protobuf messages. A decision that failed is
still an `Answer` (a deny, saying why); only admin calls raise (pdp.client.errors)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pdp.engine.plan import Filter, PlanKind
from pdp.model import Entity, RelationTuple, TraceStep

CLIENT_ERROR = "client_error"  # the reason when the client, not the sidecar, decided


@dataclass(frozen=True, slots=True)
class Question:
    """One check for `batch_check`: a subject Entity or a `subject_token` (a bearer access token
    the sidecar verifies), an action and a resource, as `check` takes them."""

    subject: Entity | None
    action: str
    resource: Entity
    context: Mapping[str, Any] | None = None
    subject_token: str | None = None
    explain: bool = False
    min_tuple_revision: int = 0


@dataclass(frozen=True, slots=True)
class Answer:
    """A decision. `allowed` is True only when the sidecar allowed (or, with `fail_open`, when it
    could not be asked). When the client decided, `reason` is CLIENT_ERROR and `code` names the
    gRPC status: UNAUTHENTICATED (a bad subject token) and INVALID_ARGUMENT (a malformed request)
    are refusals of the request, DEADLINE_EXCEEDED and UNAVAILABLE mean no decision was made."""

    allowed: bool
    reason: str  # a `pdp.model.Reason` value, or CLIENT_ERROR
    rule_ids: tuple[str, ...] = ()
    decision_id: str = ""
    not_found: bool = False
    bundle_revision: str = ""
    tuple_revision: int = 0
    cached: bool = False
    error: str = ""  # `CODE: details`, when reason is CLIENT_ERROR
    trace: tuple[TraceStep, ...] = ()
    code: str = ""  # the gRPC status name, when reason is CLIENT_ERROR
    attempts: int = 1  # tries made (more than one after UNAVAILABLE: pdp.client.retry)

    @property
    def failed(self) -> bool:
        """The sidecar gave no decision: the client answered (see `code` and `error`)."""
        return self.reason == CLIENT_ERROR


@dataclass(frozen=True, slots=True)
class Listed:
    """A lookup's answer: the ids allowed, and whether that is all of them (`complete`); when it
    is not, `incomplete` says why (including an RPC failure or a stream cut short, after which
    only the ids already received are listed: each was allowed by the sidecar's Check)."""

    ids: tuple[str, ...]
    complete: bool
    incomplete: tuple[str, ...] = ()
    tuple_revision: int = 0
    cursor: str = ""  # pass back to resume after the last id received
    excluded: tuple[str, ...] = ()  # LookupSubjects: the known ids a `*` does not cover
    code: str = ""  # the gRPC status name, when the call failed
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class Planned:
    """PlanResources' answer: `kind` (pdp.engine.plan's ALWAYS_ALLOWED, ALWAYS_DENIED or
    CONDITIONAL) and the `filter` that the resources Check allows satisfy (pdp.engine.plan's
    tree: `to_sql` renders it). Fails closed: an RPC failure (INVALID_ARGUMENT naming what no
    filter can express, UNAUTHENTICATED, a timeout) or an answer the client cannot read is
    ALWAYS_DENIED with FALSE and a note, as is the sidecar's own fail-closed answer (stale
    tuples, no bundle, a planning error); `notes` is empty only when the plan is the policy's."""

    kind: PlanKind
    filter: Filter
    tuple_revision: int = 0
    notes: tuple[str, ...] = ()
    bundle_revision: str = ""
    code: str = ""  # the gRPC status name, when the call failed
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class TuplePage:
    """One page of ReadTuples: `next_page_token` is "" on the last."""

    tuples: tuple[RelationTuple, ...]
    next_page_token: str
    tuple_revision: int


@dataclass(frozen=True, slots=True)
class Change:
    """One committed write call, as Watch streams it: resume after `revision`."""

    revision: int
    writes: tuple[RelationTuple, ...]
    deletes: tuple[RelationTuple, ...]


@dataclass(frozen=True, slots=True)
class Rejected:
    """The most recent bundle the sidecar refused: each error `file:line:col: error[code]: ...`."""

    path: str
    rejected_at: float  # unix seconds
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A stored tuple row a start could not apply (`write` False: a delete)."""

    tuple: str
    write: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Status:
    """BundleStatus: the bundle served, the tuples and store followed (pdp.v1 BundleStatusResponse
    documents each field)."""

    serving: bool
    name: str
    revision: str
    path: str
    loaded_at: float | None  # unix seconds; None before any bundle loaded
    tuple_revision: int
    last_rejected: Rejected | None
    quarantined_tuples: int
    quarantined_examples: tuple[Quarantined, ...]
    store: str
    store_connected: bool
    store_revision: int
    store_seconds_since_contact: float
    store_error: str
    slice: str
